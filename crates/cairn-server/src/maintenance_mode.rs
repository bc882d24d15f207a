//! Read-only maintenance mode: while it is on (`cairn admin maintenance on`, a row every
//! replica reads), reads and downloads work and every write is answered `503` with the
//! administrator's message and `Retry-After`.
//!
//! Each replica reads the flag at most once per [`REFRESH`] and only when a write arrives,
//! so reads cost nothing and a switch reaches every replica within a second. Signing in and
//! out stays possible (people need a session to read), and so do the MLflow searches that
//! the MLflow protocol sends as `POST`.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn_store::server_flags::Maintenance;

use crate::app::AppState;
use crate::error::ApiError;

/// How stale a replica's view of the flag may be.
pub const REFRESH: Duration = Duration::from_secs(1);

/// What clients are told to wait before writing again.
const RETRY_AFTER_SECS: u64 = 60;

/// A replica's cached view of the maintenance flag.
#[derive(Debug, Default)]
pub struct MaintenanceGate {
    cached: RwLock<Option<(Instant, Option<Maintenance>)>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl MaintenanceGate {
    /// The flag as last read (without reading it again).
    pub fn current(&self) -> Option<Maintenance> {
        self.cached.read().ok().and_then(|c| c.as_ref().and_then(|(_, m)| m.clone()))
    }

    /// The flag, read again when the cached view is older than [`REFRESH`]. A database that
    /// cannot be read keeps the last view (writes then fail on their own).
    pub async fn fresh(&self, store: &cairn_store::Store) -> Option<Maintenance> {
        if let Some(m) = self.if_fresh() {
            return m;
        }
        let _one_reader = self.refreshing.lock().await;
        if let Some(m) = self.if_fresh() {
            return m;
        }
        match store.maintenance().await {
            Ok(m) => {
                if let Ok(mut c) = self.cached.write() {
                    *c = Some((Instant::now(), m.clone()));
                }
                m
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the maintenance flag");
                self.current()
            }
        }
    }

    fn if_fresh(&self) -> Option<Option<Maintenance>> {
        let c = self.cached.read().ok()?;
        let (at, m) = c.as_ref()?;
        (at.elapsed() < REFRESH).then(|| m.clone())
    }
}

/// Whether a request changes something: every method but GET, HEAD and OPTIONS, except
/// signing in and out and the MLflow searches sent as `POST`.
fn is_write(method: &Method, path: &str) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    const SESSION: &[&str] = &[
        "/api/v1/auth/login",
        "/api/v1/auth/mfa",
        "/api/v1/auth/logout",
        "/api/v1/auth/logout-all",
        "/ui/login",
        "/ui/mfa",
        "/ui/logout",
    ];
    if SESSION.contains(&path) {
        return false;
    }
    let mlflow = path.strip_prefix("/api/2.0/mlflow/").or_else(|| path.strip_prefix("/ajax-api/2.0/mlflow/"));
    !matches!(mlflow, Some("experiments/search" | "runs/search" | "logged-models/search"))
}

/// Middleware on every route: refuses writes while maintenance mode is on.
pub async fn refuse_writes(State(state): State<AppState>, req: Request, next: Next) -> Response<Body> {
    if !is_write(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    match state.maintenance.fresh(&state.store).await {
        None => next.run(req).await,
        Some(m) => {
            let message = format!(
                "Cairn is in read-only maintenance mode: {}. Reads and downloads work; try writing again later",
                m.message
            );
            let path = req.uri().path();
            let mut resp = if path.starts_with("/api/2.0/mlflow") || path.starts_with("/ajax-api/2.0/mlflow") {
                crate::mlflow::MlflowError::new(StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE", message)
                    .into_response()
            } else {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "maintenance", message).into_response()
            };
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sessions_and_mlflow_searches_are_not_writes() {
        for (m, p) in [
            (Method::GET, "/api/v1/models"),
            (Method::HEAD, "/api/v1/models/a/b/versions/1/files/w.bin"),
            (Method::POST, "/api/v1/auth/login"),
            (Method::POST, "/ui/logout"),
            (Method::POST, "/api/2.0/mlflow/runs/search"),
            (Method::POST, "/ajax-api/2.0/mlflow/logged-models/search"),
        ] {
            assert!(!is_write(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::POST, "/api/v1/models"),
            (Method::PUT, "/api/v1/uploads/x/parts/1"),
            (Method::DELETE, "/api/v1/models/a/b"),
            (Method::PATCH, "/api/v1/models/a/b"),
            (Method::POST, "/api/2.0/mlflow/registered-models/create"),
            (Method::POST, "/api/2.0/mlflow/runs/search/x"),
            (Method::PUT, "/api/2.0/mlflow-artifacts/artifacts/1/a.txt"),
            (Method::POST, "/ui/models/a/b/versions/1/review"),
        ] {
            assert!(is_write(&m, p), "{m} {p}");
        }
    }
}
