//! Accounts (`/api/v1/users`): create, list, change, disable, delete; passwords.

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The account routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
