//! `/api/v1/audit/…`: the hash-chained record of every change, its signed checkpoints and
//! its export (auditors and administrators); `/.well-known/cairn/signing-keys` (public).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Response, StatusCode, header};
use cairn_api_types as api;
use cairn_core::Permission;
use cairn_store::audit::AuditQuery;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{authorize, page_limit};
use crate::app::AppState;
use crate::audit_export::{self, ExportFilter};
use crate::auth::Caller;
use crate::convert;
use crate::error::{ApiError, ApiQuery, ApiResult};

/// The audit routes behind authentication.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(chain))
        .routes(routes!(list_checkpoints, create_checkpoint))
        .routes(routes!(export))
        .routes(routes!(prune))
        .routes(routes!(report))
}

/// The routes anyone may call.
pub fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(signing_keys))
}

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
    /// Only this outcome (`success`, `denied`, `failure`).
    pub outcome: Option<String>,
    /// Only events at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only events before this time (RFC 3339).
    pub until: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// Parses an RFC 3339 time into ms since the epoch.
pub(crate) fn parse_time(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).map_err(|e| {
        ApiError::invalid(format!("{field} must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"))
    })?;
    Ok(Some(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)))
}

/// List audit events in chain order (oldest first).
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
    let since = parse_time("since", q.since.as_deref())?;
    let until = parse_time("until", q.until.as_deref())?;
    let listing = format!(
        "audit|{}|{}|{}|{}|{}|{}",
        q.actor.as_deref().unwrap_or(""),
        q.action.as_deref().unwrap_or(""),
        q.target.as_deref().unwrap_or(""),
        q.outcome.as_deref().unwrap_or(""),
        since.map(|t| t.to_string()).unwrap_or_default(),
        until.map(|t| t.to_string()).unwrap_or_default(),
    );
    let after = q.page_token.as_deref().map(|t| state.page_tokens.decode(&listing, t)).transpose()?;
    let page = state
        .store
        .list_audit_events(&AuditQuery {
            actor: q.actor,
            action: q.action,
            target: q.target,
            outcome: q.outcome,
            since,
            until,
            limit,
            after,
        })
        .await?;
    Ok(Json(api::AuditEventList {
        events: page.items.into_iter().map(convert::audit_event).collect(),
        next_page_token: page.next.map(|c| state.page_tokens.encode(&listing, &c)),
    }))
}

/// Where the audit chain stands: its head, its anchor and the newest signed checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/chain", tag = "audit",
    responses((status = 200, body = api::AuditChain), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("audit.read"))))]
pub async fn chain(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::AuditChain>> {
    authorize(&state, &caller, Permission::AuditRead, None, "audit.chain", "audit").await?;
    let head = state.store.audit_head().await?;
    let last = state.store.last_audit_checkpoint().await?;
    Ok(Json(api::AuditChain {
        head_seq: head.seq,
        head_hash: head.hash,
        anchor_seq: head.anchor_seq,
        anchor_hash: head.anchor_hash,
        last_checkpoint: last.map(convert::checkpoint),
        signing_key_id: state.signing_key.public().key_id(),
    }))
}

/// Query of `GET /api/v1/audit/checkpoints`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsQuery {
    /// Only checkpoints after this event (the `next_after_seq` of the previous page).
    pub after_seq: Option<i64>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
}

/// List signed checkpoints, oldest first.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit", params(CheckpointsQuery),
    responses((status = 200, body = api::CheckpointList), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("audit.read"))))]
pub async fn list_checkpoints(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CheckpointsQuery>,
) -> ApiResult<Json<api::CheckpointList>> {
    authorize(&state, &caller, Permission::AuditRead, None, "audit.checkpoints", "audit").await?;
    let limit = page_limit(q.limit)?;
    let mut cps =
        state.store.audit_checkpoints(q.after_seq.unwrap_or(0).saturating_add(1), i64::MAX, limit + 1).await?;
    let next_after_seq = if cps.len() > limit {
        cps.truncate(limit);
        cps.last().map(|c| c.seq)
    } else {
        None
    };
    Ok(Json(api::CheckpointList { checkpoints: cps.into_iter().map(convert::checkpoint).collect(), next_after_seq }))
}

/// Sign a checkpoint of the current head now (or return the newest one when it already
/// covers the head).
#[utoipa::path(post, path = "/api/v1/audit/checkpoints", tag = "audit",
    responses((status = 200, body = api::Checkpoint), (status = 403, body = api::ErrorBody),
        (status = 409, description = "the chain is empty", body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("audit.read"))))]
pub async fn create_checkpoint(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::Checkpoint>> {
    authorize(&state, &caller, Permission::AuditRead, None, "audit.checkpoint", "audit").await?;
    let cp = state
        .store
        .checkpoint_audit_chain(&state.signing_key)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "conflict", "the audit chain is empty"))?;
    Ok(Json(convert::checkpoint(cp)))
}

/// Query of `GET /api/v1/audit/export`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// First event to export in full (default: the first).
    pub from_seq: Option<i64>,
    /// Last event to export in full (default: the head).
    pub to_seq: Option<i64>,
    /// Only events of this actor in full.
    pub actor: Option<String>,
    /// Only this action in full.
    pub action: Option<String>,
    /// Only this target in full.
    pub target: Option<String>,
    /// Only this outcome in full.
    pub outcome: Option<String>,
    /// Only events at or after this time (RFC 3339) in full.
    pub since: Option<String>,
    /// Only events before this time (RFC 3339) in full.
    pub until: Option<String>,
}

/// Export the chain as JSON Lines that `cairn audit verify --file` checks offline. The
/// export runs from a signed checkpoint (or the start) to a signed checkpoint (the head is
/// checkpointed first); events outside the filter are included redacted, so the chain stays
/// whole. Streamed: any range fits.
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", params(ExportQuery),
    responses((status = 200, description = "JSON Lines (application/x-ndjson)", content_type = "application/x-ndjson", body = String),
        (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("audit.read"))))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response<Body>> {
    authorize(&state, &caller, Permission::AuditRead, None, "audit.export", "audit").await?;
    let filter = ExportFilter {
        from_seq: q.from_seq,
        to_seq: q.to_seq,
        actor: q.actor,
        action: q.action,
        target: q.target,
        outcome: q.outcome,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
    };
    let stream = audit_export::export(state.store.clone(), &state.signing_key, filter).await?;
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(resp)
}

/// The keys the registry signs audit checkpoints and versions with (public, no credential
/// needed): give them to auditors, and pin them with `cairn audit verify --public-key`.
#[utoipa::path(get, path = "/.well-known/cairn/signing-keys", tag = "audit", security(()),
    responses((status = 200, body = api::SigningKeys)))]
pub async fn signing_keys(State(state): State<AppState>) -> ApiResult<Json<api::SigningKeys>> {
    let current = state.signing_key.public().key_id();
    let keys = state
        .store
        .signing_keys()
        .await?
        .into_iter()
        .map(|k| api::SigningKeyInfo {
            current: k.key_id == current,
            key_id: k.key_id,
            algorithm: "ed25519".into(),
            public_key: k.public_key,
            first_seen: convert::rfc3339(k.first_seen),
        })
        .collect();
    Ok(Json(api::SigningKeys { keys }))
}

/// Apply the retention rules now (the server also does so every `CAIRN_AUDIT_PRUNE_SECS`):
/// events past their action's retention lose their details, and the start of the chain
/// older than the longest retention is removed up to a signed checkpoint, which becomes the
/// chain's anchor. Audited as `audit.prune` in the same transaction. Administrators only.
#[utoipa::path(post, path = "/api/v1/audit/prune", tag = "audit", request_body = api::AuditPruneRequest,
    responses((status = 200, body = api::AuditPrune), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("server.admin"))))]
pub async fn prune(
    State(state): State<AppState>,
    caller: Caller,
    crate::error::ApiJson(body): crate::error::ApiJson<api::AuditPruneRequest>,
) -> ApiResult<Json<api::AuditPrune>> {
    authorize(&state, &caller, Permission::ServerAdmin, None, "audit.prune", "audit").await?;
    let policy = state.settings.audit_retention_policy().map_err(|e| internal(e.to_string()))?;
    let out = state.store.prune_audit(&caller.audit, &policy, body.dry_run).await?;
    Ok(Json(prune_view(out)))
}

/// The API view of a pruning.
pub(crate) fn prune_view(out: cairn_store::retention::PruneOutcome) -> api::AuditPrune {
    api::AuditPrune {
        dry_run: out.dry_run,
        anchor_seq: out.record.anchor_seq,
        removed_events: out.record.removed_events,
        pruned_details: out
            .record
            .pruned_details
            .into_iter()
            .map(|p| api::PrunedAction { action: p.action, before: convert::rfc3339(p.before), events: p.events })
            .collect(),
        retention: out
            .record
            .retention
            .into_iter()
            .map(|(actions, days)| api::RetentionRule { actions, days })
            .collect(),
        note: out.note,
    }
}

/// Query of `GET /api/v1/audit/report`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Start of the period (RFC 3339, inclusive; default: the start of the chain).
    pub since: Option<String>,
    /// End of the period (RFC 3339, exclusive; default: now).
    pub until: Option<String>,
    /// `json` (default) or `markdown`.
    pub format: Option<String>,
}

/// A compliance report over a period, from the audit chain: activity per action and actor,
/// review decisions, promotions to production, refused requests and policy violations,
/// exceptions, roles granted and revoked — and who holds each role now.
#[utoipa::path(get, path = "/api/v1/audit/report", tag = "audit", params(ReportQuery),
    responses((status = 200, body = Object, description = "the report (JSON), or Markdown with format=markdown"),
        (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("audit.read"))))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> ApiResult<Response<Body>> {
    authorize(&state, &caller, Permission::AuditRead, None, "audit.report", "audit").await?;
    let markdown = match q.format.as_deref() {
        None | Some("json") => false,
        Some("markdown" | "md") => true,
        Some(other) => return Err(ApiError::invalid(format!("format must be json or markdown, not {other:?}"))),
    };
    let since = parse_time("since", q.since.as_deref())?;
    let until = parse_time("until", q.until.as_deref())?;
    if let (Some(a), Some(b)) = (since, until)
        && a >= b
    {
        return Err(ApiError::invalid("since must be before until"));
    }
    let report = state.store.compliance_report(since, until).await?;
    let (body, content_type) = if markdown {
        (report.to_markdown(), "text/markdown; charset=utf-8")
    } else {
        (serde_json::to_string(&report).map_err(|e| internal(e.to_string()))?, "application/json")
    };
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}
