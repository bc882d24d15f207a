//! `/api/v1/models/{namespace}/{name}/versions`: create, get (by number or `@alias`),
//! update, delete, list; version tags.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::lifecycle::Semver;
use cairn_core::{Permission, TagKey, VersionSelector};
use cairn_store::version::{ListVersions, NewVersion, VersionOrder, VersionPatch};
use serde::Deserialize;
use utoipa::IntoParams;

use super::models::{check_description, parse_tags};
use super::{authorize_model, model_ref, page_limit, parse_order};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

/// Query of `GET …/versions`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListVersionsQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// `version` (default, newest first), `created_at`, `updated_at` or `semver` (by semantic version
    /// precedence); prefix `-` or add ` desc`/` asc`.
    pub order_by: Option<String>,
    /// A search filter, e.g. `version > 3 AND tags.stage = 'candidate'` (see docs/SEARCH.md).
    pub filter: Option<String>,
}

const SOURCE_MAX: usize = 4096;

/// Checks what a caller gives for a new version.
pub(crate) fn new_version(
    description: String,
    source: String,
    run_id: String,
    metadata: serde_json::Value,
    tags: std::collections::BTreeMap<String, String>,
) -> Result<NewVersion, ApiError> {
    check_description(&description)?;
    if source.len() > SOURCE_MAX || run_id.len() > 256 {
        return Err(ApiError::invalid(format!("source must be at most {SOURCE_MAX} bytes and run_id at most 256")));
    }
    if !(metadata.is_object() || metadata.is_null()) {
        return Err(ApiError::invalid("metadata must be a JSON object"));
    }
    Ok(NewVersion { description, source, run_id, metadata, tags: parse_tags(tags)?, ..NewVersion::default() })
}

/// Parses an optional semantic version label.
pub(crate) fn parse_semver(label: Option<&str>) -> Result<Option<Semver>, ApiError> {
    label.filter(|l| !l.is_empty()).map(|l| Semver::parse(l).map_err(ApiError::invalid)).transpose()
}

/// List the versions of a model.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ListVersionsQuery),
    responses((status = 200, body = api::VersionList), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<ListVersionsQuery>,
) -> ApiResult<Json<api::VersionList>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.list").await?;
    let limit = page_limit(q.limit)?;
    let (field, descending) =
        parse_order(q.order_by.as_deref(), &["version", "created_at", "updated_at", "semver"], ("version", true))?;
    let order = match field.as_str() {
        "created_at" => VersionOrder::CreatedAt,
        "updated_at" => VersionOrder::UpdatedAt,
        "semver" => VersionOrder::Semver,
        _ => VersionOrder::Number,
    };
    let filter = q.filter.as_deref().filter(|f| !f.trim().is_empty()).map(cairn_core::filter::parse).transpose()?;
    let listing = format!("versions|{model}|{field}|{descending}|{}", q.filter.as_deref().unwrap_or(""));
    let after = q.page_token.as_deref().map(|t| state.page_tokens.decode(&listing, t)).transpose()?;
    let page = state.store.list_versions(&model, &ListVersions { filter, order, descending, limit, after }).await?;
    Ok(Json(api::VersionList {
        versions: page.items.into_iter().map(convert::version).collect(),
        next_page_token: page.next.map(|c| state.page_tokens.encode(&listing, &c)),
    }))
}

/// Create the next version of a model (numbered 1, 2, 3 …).
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path)), request_body = api::CreateVersion,
    responses((status = 201, body = api::Version), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn create_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<api::CreateVersion>,
) -> ApiResult<(StatusCode, Json<api::Version>)> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "version.create").await?;
    let mut new = new_version(body.description, body.source, body.run_id, body.metadata, body.tags)?;
    new.semver = parse_semver(body.semver.as_deref())?;
    new.code_commit = body.code_commit;
    new.training_job = body.training_job;
    new.lineage = super::lineage::inputs(&caller, body.lineage)?;
    let v = state.store.create_version(&caller.audit, &model, &new).await?;
    Ok((StatusCode::CREATED, Json(convert::version(v))))
}

/// Get a version by number (`3`) or through an alias (`@champion`).
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)")),
    responses((status = 200, body = api::Version), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<api::Version>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.get").await?;
    let selector = VersionSelector::parse(&version)?;
    Ok(Json(convert::version(state.store.get_version(&model, &selector).await?)))
}

/// The signatures of a version: the server's, made when it was committed (over model,
/// number, manifest digest and time), then any the pusher added. Check them with
/// `cairn verify` and the keys at `/.well-known/cairn/signing-keys`.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/signatures", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)")),
    responses((status = 200, body = api::VersionSignatures), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_signatures(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<api::VersionSignatures>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.signatures").await?;
    let selector = VersionSelector::parse(&version)?;
    let v = state.store.get_version(&model, &selector).await?;
    let signatures = state.store.signatures_of(&v).await?;
    Ok(Json(api::VersionSignatures {
        model: model.to_string(),
        version: v.version,
        digest: v.digest,
        signatures: signatures.into_iter().map(convert::signature).collect(),
    }))
}

/// Update a version's description or metadata.
#[utoipa::path(patch, path = "/api/v1/models/{namespace}/{name}/versions/{version}", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::UpdateVersion,
    responses((status = 200, body = api::Version), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn update_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<api::UpdateVersion>,
) -> ApiResult<Json<api::Version>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "version.update").await?;
    let selector = VersionSelector::parse(&version)?;
    if let Some(d) = &body.description {
        check_description(d)?;
    }
    if body.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(ApiError::invalid("metadata must be a JSON object"));
    }
    let semver = match body.semver.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(l) => Some(parse_semver(Some(l))?),
    };
    let patch = VersionPatch {
        description: body.description,
        metadata: body.metadata,
        semver,
        code_commit: body.code_commit,
        training_job: body.training_job,
    };
    Ok(Json(convert::version(state.store.update_version(&caller.audit, &model, &selector, &patch).await?)))
}

/// Delete a version; its number is never given out again.
#[utoipa::path(delete, path = "/api/v1/models/{namespace}/{name}/versions/{version}", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.delete"))))]
pub async fn delete_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelDelete, &model, "version.delete").await?;
    let selector = VersionSelector::parse(&version)?;
    state.store.delete_version(&caller.audit, &model, &selector).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set a tag on a version.
#[utoipa::path(put, path = "/api/v1/models/{namespace}/{name}/versions/{version}/tags/{key}", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path), ("key" = String, Path)),
    request_body = api::SetTag,
    responses((status = 200, body = api::Version), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn set_version_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version, key)): Path<(String, String, String, String)>,
    ApiJson(body): ApiJson<api::SetTag>,
) -> ApiResult<Json<api::Version>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "version.tag.set").await?;
    let selector = VersionSelector::parse(&version)?;
    let key = TagKey::parse(&key)?;
    Ok(Json(convert::version(state.store.set_version_tag(&caller.audit, &model, &selector, &key, &body.value).await?)))
}

/// Delete a tag from a version.
#[utoipa::path(delete, path = "/api/v1/models/{namespace}/{name}/versions/{version}/tags/{key}", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn delete_version_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version, key)): Path<(String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "version.tag.delete").await?;
    let selector = VersionSelector::parse(&version)?;
    let key = TagKey::parse(&key)?;
    state.store.delete_version_tag(&caller.audit, &model, &selector, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
