//! Role grants (`/api/v1/grants`): who holds which role, globally or in one namespace.
//! Only global administrators grant and revoke; an account may list its own grants.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::{Namespace, Permission, Role};
use cairn_store::grant::GrantRecord;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::authorize;
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

/// The grant routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_grants, create_grant)).routes(routes!(delete_grant))
}

fn grant(g: GrantRecord) -> api::RoleGrant {
    api::RoleGrant {
        id: g.id,
        username: g.username,
        role: g.role,
        namespace: g.namespace,
        created_at: rfc3339(g.created_at),
        created_by: g.created_by,
    }
}

/// Filters of a grant listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    /// Only this account's grants (any account may list its own).
    pub username: Option<String>,
    /// Only grants in this namespace; `-` for global grants only.
    pub namespace: Option<String>,
}

/// List role grants.
#[utoipa::path(get, path = "/api/v1/grants", tag = "account", params(GrantsQuery),
    responses((status = 200, body = api::RoleGrantList), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("grant.manage"))))]
pub async fn list_grants(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<GrantsQuery>,
) -> ApiResult<Json<api::RoleGrantList>> {
    let own = q.username.as_deref() == Some(caller.principal.username.as_str());
    let permission = if own { Permission::SelfBasic } else { Permission::GrantManage };
    authorize(&state, &caller, permission, None, "grant.list", "grants").await?;
    let namespace = q.namespace.as_deref().map(|n| if n == "-" { "" } else { n });
    let grants = state.store.list_grants(q.username.as_deref(), namespace).await?;
    Ok(Json(api::RoleGrantList { grants: grants.into_iter().map(grant).collect() }))
}

/// Grant a role to an account, globally or in one namespace.
#[utoipa::path(post, path = "/api/v1/grants", tag = "account", request_body = api::CreateRoleGrant,
    responses((status = 201, body = api::RoleGrant), (status = 400, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("grant.manage"))))]
pub async fn create_grant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::CreateRoleGrant>,
) -> ApiResult<(StatusCode, Json<api::RoleGrant>)> {
    let target = format!("grant:{}/{}", body.username, body.role);
    authorize(&state, &caller, Permission::GrantManage, None, "grant.create", &target).await?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        ApiError::invalid(format!("unknown role '{}'; use one of: {}", body.role, names.join(", ")))
    })?;
    let namespace = body.namespace.as_deref().map(Namespace::parse).transpose()?;
    let g = state
        .store
        .create_grant(&caller.audit, &body.username, role.as_str(), namespace.as_ref().map(Namespace::as_str))
        .await?;
    // Verified keys are cached briefly: drop them so the change applies at once here.
    state.keys.clear();
    Ok((StatusCode::CREATED, Json(grant(g))))
}

/// Revoke a role grant.
#[utoipa::path(delete, path = "/api/v1/grants/{grant_id}", tag = "account", params(("grant_id" = String, Path)),
    responses((status = 204), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("grant.manage"))))]
pub async fn delete_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    authorize(&state, &caller, Permission::GrantManage, None, "grant.delete", &format!("grant:{id}")).await?;
    if id.len() > 64 {
        return Err(ApiError::not_found(format!("grant \"{id}\" does not exist")));
    }
    state.store.delete_grant(&caller.audit, &id).await?;
    state.keys.clear();
    Ok(StatusCode::NO_CONTENT)
}
