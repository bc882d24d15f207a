//! `/api/v1/privacy/…`: data-subject requests under the GDPR (docs/PRIVACY.md) — the
//! inventory of personal data, a person's data export (access, portability), rectification,
//! erasure and the request log. Administrators only (`user.manage`); the inventory also for
//! auditors (`audit.read`). Each change is one store call, audited in its transaction.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::Permission;
use cairn_store::StoreError;
use cairn_store::gdpr::{self, RequestKind};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{authorize, page_limit};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

/// The privacy routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(inventory))
        .routes(routes!(export_subject, rectify_subject, erase_subject))
        .routes(routes!(list_requests))
}

fn target(username: &str) -> String {
    format!("user:{username}")
}

/// Every field of personal data the registry holds: where, what kind, why, how long.
#[utoipa::path(get, path = "/api/v1/privacy/inventory", tag = "privacy",
    responses((status = 200, body = api::PersonalDataInventory), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("audit.read"))))]
pub async fn inventory(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::PersonalDataInventory>> {
    authorize(&state, &caller, Permission::AuditRead, None, "gdpr.inventory", "privacy").await?;
    let fields = gdpr::personal_data_inventory()
        .iter()
        .map(|f| api::PersonalDataField {
            field: f.field.to_owned(),
            location: f.location.to_owned(),
            category: f.category.to_owned(),
            legal_basis: f.legal_basis.to_owned(),
            retention: f.retention.to_owned(),
        })
        .collect();
    Ok(Json(api::PersonalDataInventory { fields }))
}

/// Query of `GET /api/v1/privacy/subjects/{username}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `access` (default) or `portability`: which right the export answers, as logged.
    pub purpose: Option<String>,
}

/// Export everything held about a person (access and portability). Logged and audited as
/// `gdpr.export`.
#[utoipa::path(get, path = "/api/v1/privacy/subjects/{username}", tag = "privacy",
    params(("username" = String, Path), ExportQuery),
    responses((status = 200, body = api::PersonalDataExport), (status = 400, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn export_subject(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Json<api::PersonalDataExport>> {
    authorize(&state, &caller, Permission::UserManage, None, "gdpr.export", &target(&username)).await?;
    let kind = match q.purpose.as_deref() {
        None | Some("access") => RequestKind::Access,
        Some("portability") => RequestKind::Portability,
        Some(other) => {
            return Err(ApiError::invalid(format!("purpose must be 'access' or 'portability', not '{other}'")));
        }
    };
    let export = state.store.personal_data(&caller.audit, &username, kind).await?;
    Ok(Json(api::PersonalDataExport { request_id: export.request_id, data: export.data }))
}

/// Correct a person's shown name or contact address (rectification). Logged and audited as
/// `gdpr.rectify`.
#[utoipa::path(patch, path = "/api/v1/privacy/subjects/{username}", tag = "privacy",
    params(("username" = String, Path)), request_body = api::RectifySubject,
    responses((status = 200, body = api::User), (status = 400, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn rectify_subject(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<api::RectifySubject>,
) -> ApiResult<Json<api::User>> {
    authorize(&state, &caller, Permission::UserManage, None, "gdpr.rectify", &target(&username)).await?;
    if let Some(n) = &body.display_name {
        super::users::check_display_name(n)?;
    }
    if let Some(e) = &body.email {
        super::users::check_email(e)?;
    }
    let after =
        state.store.rectify(&caller.audit, &username, body.display_name.as_deref(), body.email.as_deref()).await?;
    Ok(Json(super::users::user(after)))
}

/// Erase a person: the account with its keys, sessions and grants is deleted, and the audit
/// events and records naming them are pseudonymised (`erased:<user id>`) so that the audit
/// chain still verifies. Refused for yourself and for the last enabled administrator.
#[utoipa::path(delete, path = "/api/v1/privacy/subjects/{username}", tag = "privacy",
    params(("username" = String, Path)),
    responses((status = 200, body = api::ErasureResult), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn erase_subject(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<api::ErasureResult>> {
    authorize(&state, &caller, Permission::UserManage, None, "gdpr.erase", &target(&username)).await?;
    if username == caller.principal.username {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "you cannot erase your own account"));
    }
    let e = state.store.erase(&caller.audit, &username).await.map_err(|e| match e {
        StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        other => other.into(),
    })?;
    state.keys.clear();
    Ok(Json(api::ErasureResult {
        request_id: e.request_id,
        subject_id: e.subject_id,
        pseudonym: e.pseudonym,
        erased_events: e.erased_events,
        api_keys_deleted: e.api_keys_deleted,
        sessions_deleted: e.sessions_deleted,
        grants_deleted: e.grants_deleted,
        counters_deleted: e.counters_deleted,
        records_rewritten: e.records_rewritten,
    }))
}

/// Query of `GET /api/v1/privacy/requests`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RequestsQuery {
    /// Only requests about this person (login name, or `erased:<user id>`).
    pub subject: Option<String>,
    /// At most this many, 1–1000 (default 100).
    pub limit: Option<usize>,
}

/// The log of data-subject requests, newest first, with their status.
#[utoipa::path(get, path = "/api/v1/privacy/requests", tag = "privacy", params(RequestsQuery),
    responses((status = 200, body = api::GdprRequestList), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn list_requests(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RequestsQuery>,
) -> ApiResult<Json<api::GdprRequestList>> {
    authorize(&state, &caller, Permission::UserManage, None, "gdpr.requests", "privacy").await?;
    let limit = page_limit(q.limit)?;
    let rows = state.store.list_gdpr_requests(q.subject.as_deref(), limit).await?;
    Ok(Json(api::GdprRequestList {
        requests: rows
            .into_iter()
            .map(|r| api::GdprRequest {
                id: r.id,
                kind: r.kind,
                subject: r.subject,
                subject_id: r.subject_id,
                status: r.status,
                requested_by: r.requested_by,
                requested_at: rfc3339(r.requested_at),
                completed_at: r.completed_at.map(rfc3339),
                note: r.note,
            })
            .collect(),
    }))
}
