//! Login sessions: cookie authentication (`cairn_session`), CSRF tokens, idle and absolute
//! expiry. [`authenticate_cookie`] is asked by [`crate::auth`] when a request carries no
//! `Authorization` header.

use axum::http::request::Parts;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Authenticates a request by its session cookie: `Ok(None)` when it has none.
pub async fn authenticate_cookie(_state: &AppState, _parts: &Parts) -> Result<Option<Caller>, ApiError> {
    Ok(None)
}
