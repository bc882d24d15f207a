//! `/api/v1/models`: create, get, update, delete, list; model tags.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::lifecycle::RiskTier;
use cairn_core::{ModelRef, Permission, TagKey};
use cairn_store::model::{ListModels, ModelOrder, ModelPatch, NewModel};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{authorize, authorize_model, model_ref, page_limit, parse_order};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

/// Query of `GET /api/v1/models`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListModelsQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// `name` (default), `created_at` or `updated_at`; prefix `-` or add ` desc` for descending.
    pub order_by: Option<String>,
    /// A search filter, e.g. `namespace = 'nlp' AND tags.task = 'classification'` (see docs/SEARCH.md).
    pub filter: Option<String>,
}

pub(crate) fn parse_tags(tags: BTreeMap<String, String>) -> Result<BTreeMap<TagKey, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in tags {
        cairn_core::name::check_tag_value(&v)?;
        out.insert(TagKey::parse(&k)?, v);
    }
    Ok(out)
}

pub(crate) fn parse_risk_tier(s: &str) -> Result<RiskTier, ApiError> {
    RiskTier::parse(s).ok_or_else(|| ApiError::invalid(format!("risk_tier must be low, medium or high, not {s:?}")))
}

pub(crate) fn check_description(d: &str) -> Result<(), ApiError> {
    if d.len() > cairn_core::name::MAX_DESCRIPTION_LEN {
        return Err(ApiError::invalid(format!(
            "description must be at most {} bytes",
            cairn_core::name::MAX_DESCRIPTION_LEN
        )));
    }
    Ok(())
}

/// List models.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", params(ListModelsQuery),
    responses((status = 200, body = api::ModelList), (status = 400, body = api::ErrorBody), (status = 401, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListModelsQuery>,
) -> ApiResult<Json<api::ModelList>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "model.list", "models").await?;
    // The listing is filtered to what the caller may read; before MFA that is nothing.
    caller.principal.require_mfa()?;
    let namespaces = caller.principal.namespaces_for(Permission::ModelRead).into_list();
    let limit = page_limit(q.limit)?;
    let (field, descending) =
        parse_order(q.order_by.as_deref(), &["name", "created_at", "updated_at"], ("name", false))?;
    let order = match field.as_str() {
        "created_at" => ModelOrder::CreatedAt,
        "updated_at" => ModelOrder::UpdatedAt,
        _ => ModelOrder::Name,
    };
    let filter = q.filter.as_deref().filter(|f| !f.trim().is_empty()).map(cairn_core::filter::parse).transpose()?;
    let listing = format!("models|{field}|{descending}|{}", q.filter.as_deref().unwrap_or(""));
    let after = q.page_token.as_deref().map(|t| state.page_tokens.decode(&listing, t)).transpose()?;
    let page = state.store.list_models(&ListModels { filter, order, descending, limit, after, namespaces }).await?;
    Ok(Json(api::ModelList {
        models: page.items.into_iter().map(convert::model).collect(),
        next_page_token: page.next.map(|c| state.page_tokens.encode(&listing, &c)),
    }))
}

/// Create a model (and its namespace, if new).
#[utoipa::path(post, path = "/api/v1/models", tag = "models", request_body = api::CreateModel,
    responses((status = 201, body = api::Model), (status = 400, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn create_model(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::CreateModel>,
) -> ApiResult<(StatusCode, Json<api::Model>)> {
    let model = ModelRef::parse(&body.name)?;
    let ns = model.namespace.as_str();
    authorize(&state, &caller, Permission::ModelWrite, Some(ns), "model.create", &format!("model:{model}")).await?;
    check_description(&body.description)?;
    let risk_tier = body.risk_tier.as_deref().map(parse_risk_tier).transpose()?;
    // The creator owns a new model unless owners are named.
    let owners = body.owners.unwrap_or_else(|| vec![caller.principal.username.clone()]);
    let new = NewModel {
        model,
        description: body.description,
        tags: parse_tags(body.tags)?,
        risk_tier,
        team: body.team,
        owners,
    };
    let m = state.store.create_model(&caller.audit, &new).await?;
    Ok((StatusCode::CREATED, Json(convert::model(m))))
}

/// Get a model with its tags and aliases.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}", tag = "models",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = api::Model), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_model(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Json<api::Model>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "model.get").await?;
    Ok(Json(convert::model(state.store.get_model(&model).await?)))
}

/// Update a model's description, team, owners or risk tier (the risk tier needs `policy.manage`).
#[utoipa::path(patch, path = "/api/v1/models/{namespace}/{name}", tag = "models",
    params(("namespace" = String, Path), ("name" = String, Path)), request_body = api::UpdateModel,
    responses((status = 200, body = api::Model), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn update_model(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<api::UpdateModel>,
) -> ApiResult<Json<api::Model>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "model.update").await?;
    if let Some(d) = &body.description {
        check_description(d)?;
    }
    let risk_tier = body.risk_tier.as_deref().map(parse_risk_tier).transpose()?;
    if risk_tier.is_some() {
        // The risk tier decides how strict approvals are: the model's own team may not move it.
        authorize(&state, &caller, Permission::PolicyManage, None, "model.update", &format!("model:{model}")).await?;
    }
    let patch = ModelPatch { description: body.description, risk_tier, team: body.team, owners: body.owners };
    let m = state.store.update_model(&caller.audit, &model, &patch).await?;
    Ok(Json(convert::model(m)))
}

/// Delete a model with all its versions.
#[utoipa::path(delete, path = "/api/v1/models/{namespace}/{name}", tag = "models",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.delete"))))]
pub async fn delete_model(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelDelete, &model, "model.delete").await?;
    state.store.delete_model(&caller.audit, &model).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set a tag on a model.
#[utoipa::path(put, path = "/api/v1/models/{namespace}/{name}/tags/{key}", tag = "models",
    params(("namespace" = String, Path), ("name" = String, Path), ("key" = String, Path)), request_body = api::SetTag,
    responses((status = 200, body = api::Model), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn set_model_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, key)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<api::SetTag>,
) -> ApiResult<Json<api::Model>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "model.tag.set").await?;
    let key = TagKey::parse(&key)?;
    let m = state.store.set_model_tag(&caller.audit, &model, &key, &body.value).await?;
    Ok(Json(convert::model(m)))
}

/// Delete a tag from a model.
#[utoipa::path(delete, path = "/api/v1/models/{namespace}/{name}/tags/{key}", tag = "models",
    params(("namespace" = String, Path), ("name" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn delete_model_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, key)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "model.tag.delete").await?;
    let key = TagKey::parse(&key)?;
    state.store.delete_model_tag(&caller.audit, &model, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
