//! `/api/v1/namespaces`: the teams that own models.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::{Namespace, Permission};

use super::authorize;
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert;
use crate::error::{ApiError, ApiJson, ApiResult};

/// List namespaces.
#[utoipa::path(get, path = "/api/v1/namespaces", tag = "namespaces",
    responses((status = 200, body = api::NamespaceList)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn list_namespaces(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::NamespaceList>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "namespace.list", "namespaces").await?;
    caller.principal.require_mfa()?;
    let visible = caller.principal.namespaces_for(Permission::ModelRead);
    let mut all = state.store.list_namespaces().await?;
    all.retain(|n| visible.contains(&n.name));
    Ok(Json(api::NamespaceList { namespaces: all.into_iter().map(convert::namespace).collect() }))
}

/// Create a namespace.
#[utoipa::path(post, path = "/api/v1/namespaces", tag = "namespaces", request_body = api::CreateNamespace,
    responses((status = 201, body = api::Namespace), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("namespace.create"))))]
pub async fn create_namespace(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::CreateNamespace>,
) -> ApiResult<(StatusCode, Json<api::Namespace>)> {
    authorize(
        &state,
        &caller,
        Permission::NamespaceCreate,
        None,
        "namespace.create",
        &format!("namespace:{}", body.name),
    )
    .await?;
    let name = Namespace::parse(&body.name)?;
    super::models::check_description(&body.description)?;
    let ns = state.store.create_namespace(&caller.audit, &name, &body.description).await?;
    Ok((StatusCode::CREATED, Json(convert::namespace(ns))))
}

/// Get a namespace.
#[utoipa::path(get, path = "/api/v1/namespaces/{namespace}", tag = "namespaces",
    params(("namespace" = String, Path)),
    responses((status = 200, body = api::Namespace), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_namespace(
    State(state): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> ApiResult<Json<api::Namespace>> {
    let name = Namespace::parse(&namespace)?;
    // A namespace the caller may not read answers like one that does not exist.
    if caller.principal.check(Permission::ModelRead, Some(name.as_str())).is_err() {
        authorize(&state, &caller, Permission::SelfBasic, None, "namespace.get", "namespace").await?;
        return Err(ApiError::not_found(format!("namespace \"{name}\" does not exist")));
    }
    Ok(Json(convert::namespace(state.store.get_namespace(&name).await?)))
}

/// Delete an empty namespace.
#[utoipa::path(delete, path = "/api/v1/namespaces/{namespace}", tag = "namespaces",
    params(("namespace" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("namespace.delete"))))]
pub async fn delete_namespace(
    State(state): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> ApiResult<StatusCode> {
    authorize(
        &state,
        &caller,
        Permission::NamespaceDelete,
        None,
        "namespace.delete",
        &format!("namespace:{namespace}"),
    )
    .await?;
    let name = Namespace::parse(&namespace)?;
    state.store.delete_namespace(&caller.audit, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
