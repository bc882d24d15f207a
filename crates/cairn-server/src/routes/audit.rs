//! `/api/v1/audit/events`: the record of every change (administrators only).

use axum::Json;
use axum::extract::State;
use cairn_api_types as api;
use cairn_core::Permission;
use cairn_store::audit::AuditQuery;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{authorize, page_limit};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert;
use crate::error::{ApiQuery, ApiResult};

/// Query of `GET /api/v1/audit/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditEventsQuery {
    /// Only events of this actor (`user:alice`).
    pub actor: Option<String>,
    /// Only this action (`model.create`).
    pub action: Option<String>,
    /// Only this target (`model:team/x`).
    pub target: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// List audit events, oldest first.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", params(AuditEventsQuery),
    responses((status = 200, body = api::AuditEventList), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("audit.read"))))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditEventsQuery>,
) -> ApiResult<Json<api::AuditEventList>> {
    authorize(&state, &caller, Permission::AuditRead, None, "audit.list", "audit").await?;
    let limit = page_limit(q.limit)?;
    let listing = format!(
        "audit|{}|{}|{}",
        q.actor.as_deref().unwrap_or(""),
        q.action.as_deref().unwrap_or(""),
        q.target.as_deref().unwrap_or("")
    );
    let after = q.page_token.as_deref().map(|t| state.page_tokens.decode(&listing, t)).transpose()?;
    let page = state
        .store
        .list_audit_events(&AuditQuery {
            actor: q.actor,
            action: q.action,
            target: q.target,
            limit,
            after,
            ..AuditQuery::default()
        })
        .await?;
    Ok(Json(api::AuditEventList {
        events: page.items.into_iter().map(convert::audit_event).collect(),
        next_page_token: page.next.map(|c| state.page_tokens.encode(&listing, &c)),
    }))
}
