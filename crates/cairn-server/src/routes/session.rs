//! Login, logout, sessions, MFA enrolment and lockouts (`/api/v1/auth/…`, `/api/v1/me/mfa/…`,
//! `/api/v1/lockouts`).

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// Routes that need no credential (logging in).
pub fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}

/// Routes behind authentication.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
