//! `/healthz` (the process is up) and `/readyz` (database, data directory and blob store
//! reachable, and not shutting down).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::AppState;

/// The unauthenticated probes.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        // Shutting down: the load balancer should send new requests elsewhere.
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })));
    }
    let db = state.store.ping().await;
    let data_dir = tokio::fs::metadata(&state.settings.data_dir).await;
    let blobs = state.blobs.ping().await;
    let ready = db.is_ok() && blobs.is_ok() && data_dir.as_ref().is_ok_and(|m| m.is_dir());
    if let Err(e) = &blobs {
        tracing::warn!(error = %e, "readiness: blob store unreachable");
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if let Err(e) = &db {
        tracing::warn!(error = %e, "readiness: database unreachable");
    }
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "database": if db.is_ok() { "ok" } else { "unreachable" },
            "data_dir": if data_dir.is_ok() { "ok" } else { "missing" },
            "blob_store": if blobs.is_ok() { "ok" } else { "unreachable" },
        })),
    )
}
