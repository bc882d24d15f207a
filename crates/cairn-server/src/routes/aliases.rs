//! `/api/v1/models/{namespace}/{name}/aliases`: movable names for versions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::{AliasName, Permission};

use super::{authorize_model, model_ref};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert;
use crate::error::{ApiError, ApiJson, ApiResult};

/// List a model's aliases.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/aliases", tag = "aliases",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = api::AliasList), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn list_aliases(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Json<api::AliasList>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "alias.list").await?;
    let aliases = state.store.list_aliases(&model).await?;
    Ok(Json(api::AliasList { aliases: aliases.into_iter().map(convert::alias).collect() }))
}

/// Get an alias (use `…/versions/@{alias}` to get the version itself).
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/aliases/{alias}", tag = "aliases",
    params(("namespace" = String, Path), ("name" = String, Path), ("alias" = String, Path)),
    responses((status = 200, body = api::Alias), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_alias(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, alias)): Path<(String, String, String)>,
) -> ApiResult<Json<api::Alias>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "alias.get").await?;
    let alias = AliasName::parse(&alias)?;
    Ok(Json(convert::alias(state.store.get_alias(&model, &alias).await?)))
}

/// Point an alias at a version, creating or moving it.
#[utoipa::path(put, path = "/api/v1/models/{namespace}/{name}/aliases/{alias}", tag = "aliases",
    params(("namespace" = String, Path), ("name" = String, Path), ("alias" = String, Path)), request_body = api::SetAlias,
    responses((status = 200, body = api::Alias), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn set_alias(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, alias)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<api::SetAlias>,
) -> ApiResult<Json<api::Alias>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "alias.set").await?;
    let alias = AliasName::parse(&alias)?;
    if body.version < 1 {
        return Err(ApiError::invalid("version must be a positive version number"));
    }
    Ok(Json(convert::alias(state.store.set_alias(&caller.audit, &model, &alias, body.version).await?)))
}

/// Remove an alias.
#[utoipa::path(delete, path = "/api/v1/models/{namespace}/{name}/aliases/{alias}", tag = "aliases",
    params(("namespace" = String, Path), ("name" = String, Path), ("alias" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn delete_alias(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, alias)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "alias.delete").await?;
    let alias = AliasName::parse(&alias)?;
    state.store.delete_alias(&caller.audit, &model, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}
