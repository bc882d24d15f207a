//! The governance routes of one version: lifecycle actions, reviews, policy checks and
//! results, exceptions, its card and its evaluation results (docs/GOVERNANCE.md).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_api_types as api;
use cairn_core::lifecycle::{Action, Stage};
use cairn_core::policy::PolicyDoc;
use cairn_core::{ModelRef, Permission, VersionSelector};
use cairn_store::evaluation::{NewEvalResult, VersionCard};
use cairn_store::lifecycle::{LifecycleView, PolicyResultRecord};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{authorize_model, model_ref};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::governance::{self, Subject};

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_lifecycle))
        .routes(routes!(submit))
        .routes(routes!(promote))
        .routes(routes!(deprecate))
        .routes(routes!(retire))
        .routes(routes!(create_review))
        .routes(routes!(policy_check))
        .routes(routes!(list_policy_results))
        .routes(routes!(list_exceptions, request_exception))
        .routes(routes!(get_card, put_card))
        .routes(routes!(get_card_info))
        .routes(routes!(card_diff))
        .routes(routes!(list_evaluations, submit_evaluation))
}

type VersionPath = Path<(String, String, String)>;

async fn subject(
    state: &AppState,
    caller: &Caller,
    (namespace, name, version): (String, String, String),
    permission: Permission,
    action: &str,
) -> Result<Subject, ApiError> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(state, caller, permission, &model, action).await?;
    let selector = VersionSelector::parse(&version)?;
    governance::load(state, &model, &selector).await
}

pub(crate) fn policy_result(r: PolicyResultRecord) -> api::PolicyResult {
    api::PolicyResult {
        evaluation: r.evaluation,
        target_stage: r.target_stage,
        policy: r.policy,
        policy_version: r.policy_version,
        severity: r.severity,
        rule_id: r.rule_id,
        action: r.action,
        outcome: r.outcome,
        message: r.message,
        waived: r.waived,
        blocked: r.blocked,
    }
}

async fn lifecycle_answer(state: &AppState, s: &Subject, view: LifecycleView) -> ApiResult<Json<api::Lifecycle>> {
    let (gate, waiting_for, next_actions) = governance::waiting(s, &view);
    let policy_results: Vec<_> = state
        .store
        .last_policy_failures(&s.model_ref, &VersionSelector::Number(view.version))
        .await?
        .into_iter()
        .map(policy_result)
        .collect();
    Ok(Json(api::Lifecycle {
        model: s.model_ref.to_string(),
        version: view.version,
        stage: view.stage.as_str().to_owned(),
        risk_tier: s.model.risk_tier.clone(),
        submitted_by: view.submitted_by.clone(),
        review_round: view.review_round,
        gate: gate.map(|g| g.as_str().to_owned()),
        waiting_for,
        next_actions,
        transitions: view
            .transitions
            .into_iter()
            .map(|t| api::Transition {
                from: t.from_stage,
                to: t.to_stage,
                action: t.action,
                actor: t.actor,
                reason: t.reason,
                at: rfc3339(t.at),
            })
            .collect(),
        reviews: view
            .reviews
            .into_iter()
            .map(|r| api::Review {
                round: r.round,
                gate: r.gate,
                reviewer: r.reviewer,
                role: r.role,
                decision: r.decision,
                rationale: r.rationale,
                at: rfc3339(r.at),
            })
            .collect(),
        policy_results,
    }))
}

/// The lifecycle of a version: stage, what it waits for, transitions, reviews and the last
/// policy results.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/lifecycle", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label")),
    responses((status = 200, body = api::Lifecycle), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_lifecycle(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
) -> ApiResult<Json<api::Lifecycle>> {
    let s = subject(&state, &caller, p, Permission::ModelRead, "version.lifecycle").await?;
    let view = s.lifecycle.clone();
    lifecycle_answer(&state, &s, view).await
}

async fn act(
    state: AppState,
    caller: Caller,
    p: (String, String, String),
    action: Action,
    permission: Permission,
    body: api::LifecycleRequest,
) -> ApiResult<Json<api::Lifecycle>> {
    let s = subject(&state, &caller, p, permission, &format!("version.{action}")).await?;
    let view = governance::act(&state, &caller, &s, action, &body.reason, body.keep_previous).await?;
    lifecycle_answer(&state, &s, view).await
}

/// Submit a draft (or a version with changes requested) for review. Active policies scoped
/// to `submitted` are evaluated first; a blocking rule refuses with `409 policy_blocked`.
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/submit", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::LifecycleRequest,
    responses((status = 200, body = api::Lifecycle), (status = 409, body = api::ErrorBody, description = "Illegal transition or blocked by a policy")),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiJson(body): ApiJson<api::LifecycleRequest>,
) -> ApiResult<Json<api::Lifecycle>> {
    act(state, caller, p, Action::Submit, Permission::ModelWrite, body).await
}

/// Promote an approved version: approved_staging → staging, approved_prod → production
/// (moving the `production` alias and deprecating the version it pointed at unless
/// `keep_previous`). On a version whose gate approvals are complete but whose gate a policy
/// blocked, retries the gate.
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/promote", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::LifecycleRequest,
    responses((status = 200, body = api::Lifecycle), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("version.promote"))))]
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiJson(body): ApiJson<api::LifecycleRequest>,
) -> ApiResult<Json<api::Lifecycle>> {
    act(state, caller, p, Action::Promote, Permission::VersionPromote, body).await
}

/// Withdraw a version from production (a reason is required).
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/deprecate", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::LifecycleRequest,
    responses((status = 200, body = api::Lifecycle), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("version.promote"))))]
pub async fn deprecate(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiJson(body): ApiJson<api::LifecycleRequest>,
) -> ApiResult<Json<api::Lifecycle>> {
    act(state, caller, p, Action::Deprecate, Permission::VersionPromote, body).await
}

/// Retire a deprecated version (a reason is required).
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/retire", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::LifecycleRequest,
    responses((status = 200, body = api::Lifecycle), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("version.promote"))))]
pub async fn retire(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiJson(body): ApiJson<api::LifecycleRequest>,
) -> ApiResult<Json<api::Lifecycle>> {
    act(state, caller, p, Action::Retire, Permission::VersionPromote, body).await
}

/// Approve, reject or comment on a version waiting at an approval gate, in a reviewer role
/// the caller holds. The approval that completes a gate moves the version on.
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/reviews", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::ReviewRequest,
    responses((status = 200, body = api::Lifecycle), (status = 403, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("version.review"))))]
pub async fn create_review(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiJson(body): ApiJson<api::ReviewRequest>,
) -> ApiResult<Json<api::Lifecycle>> {
    let s = subject(&state, &caller, p, Permission::VersionReview, "version.review").await?;
    let view = governance::review(&state, &caller, &s, &body.decision, &body.role, &body.rationale).await?;
    lifecycle_answer(&state, &s, view).await
}

/// A dry run: what would block this version from entering `target` (default: the stage its
/// next action leads to)? Nothing is stored.
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/policy-check", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::PolicyCheckRequest,
    responses((status = 200, body = api::PolicyCheck), (status = 400, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn policy_check(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiJson(body): ApiJson<api::PolicyCheckRequest>,
) -> ApiResult<Json<api::PolicyCheck>> {
    let s = subject(&state, &caller, p, Permission::ModelRead, "version.policy_check").await?;
    let target = match body.target.as_deref() {
        Some(t) => Stage::parse(t).ok_or_else(|| ApiError::invalid(format!("unknown stage {t:?}")))?,
        None => default_target(s.lifecycle.stage),
    };
    let only = match &body.policy {
        Some(text) => {
            let doc = PolicyDoc::parse(text).map_err(|e| ApiError::invalid(e.to_string()))?;
            Some((0, std::sync::Arc::new(doc.compile().map_err(|e| ApiError::invalid(e.to_string()))?)))
        }
        None => None,
    };
    let check = governance::check(&state, &s, target, only).await?;
    let blocked = check.blocked();
    let results = check.records(target, state.now_ms()).into_iter().map(policy_result).collect();
    Ok(Json(api::PolicyCheck {
        target: target.as_str().to_owned(),
        blocked,
        gate_blockers: check.gate_blockers,
        results,
        facts: check.facts,
    }))
}

/// Where the next step of a version in `stage` leads.
fn default_target(stage: Stage) -> Stage {
    if let Some(gate) = stage.gate() {
        return gate.target();
    }
    Action::ALL
        .iter()
        .find_map(|a| cairn_core::lifecycle::apply(stage, *a).ok().filter(|s| *s != Stage::ChangesRequested))
        .unwrap_or(stage)
}

/// Query of `GET …/policy-results`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// At most this many rule results (default 200, at most 10000); the oldest evaluation
    /// listed may be cut short.
    pub limit: Option<usize>,
}

/// The policy results recorded for a version by its transitions and refusals: evaluations
/// newest first, each one's rules in order.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/policy-results", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path), ResultsQuery),
    responses((status = 200, body = Vec<api::PolicyResult>), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn list_policy_results(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiQuery(q): ApiQuery<ResultsQuery>,
) -> ApiResult<Json<Vec<api::PolicyResult>>> {
    let s = subject(&state, &caller, p, Permission::ModelRead, "version.policy_results").await?;
    let rows = state
        .store
        .policy_results(&s.model_ref, &VersionSelector::Number(s.version.version), q.limit.unwrap_or(200))
        .await?;
    Ok(Json(rows.into_iter().map(policy_result).collect()))
}

pub(crate) fn exception(e: cairn_store::policy::PolicyException) -> api::PolicyException {
    api::PolicyException {
        id: e.id,
        model: e.model,
        version: e.version,
        policy: e.policy,
        justification: e.justification,
        status: e.status,
        requested_by: e.requested_by,
        requested_at: rfc3339(e.requested_at),
        decided_by: e.decided_by,
        decided_at: e.decided_at.map(rfc3339),
        decision_note: e.decision_note,
        expires_at: rfc3339(e.expires_at),
    }
}

/// The policy exceptions of a version.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/exceptions", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = api::PolicyExceptionList)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn list_exceptions(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
) -> ApiResult<Json<api::PolicyExceptionList>> {
    let s = subject(&state, &caller, p, Permission::ModelRead, "version.exceptions").await?;
    let list = state.store.policy_exceptions(&s.model_ref, &VersionSelector::Number(s.version.version)).await?;
    Ok(Json(api::PolicyExceptionList { exceptions: list.into_iter().map(exception).collect() }))
}

/// Ask for an exception: one policy waived for this version, with a justification, until it
/// expires; it counts once someone with `policy.manage` other than the requester approves it.
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/exceptions", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::RequestException,
    responses((status = 201, body = api::PolicyException), (status = 400, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn request_exception(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiJson(body): ApiJson<api::RequestException>,
) -> ApiResult<(StatusCode, Json<api::PolicyException>)> {
    let s = subject(&state, &caller, p, Permission::ModelWrite, "policy.exception.request").await?;
    let days = body.days.unwrap_or(30);
    if !(1..=365).contains(&days) {
        return Err(ApiError::invalid("days must be between 1 and 365"));
    }
    let expires = state.now_ms() + i64::from(days) * 86_400_000;
    let e = state
        .store
        .request_policy_exception(
            &caller.audit,
            &s.model_ref,
            &VersionSelector::Number(s.version.version),
            &body.policy,
            &body.justification,
            &caller.principal.username,
            expires,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(exception(e))))
}

/// Query of `GET …/card`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CardQuery {
    /// `huggingface` (README.md), `google` (Model Card Toolkit JSON), `eu-ai-act`, `eu-cra`,
    /// `html` or `json` (canonical); default `json`.
    pub format: Option<String>,
}

fn card_format(f: Option<&str>) -> Result<cairn_card::render::Format, ApiError> {
    use cairn_card::render::Format;
    Ok(match f.unwrap_or("json") {
        "huggingface" | "hf" => Format::Huggingface,
        "google" | "mct" => Format::Google,
        "eu-ai-act" => Format::EuAiAct,
        "eu-cra" => Format::EuCra,
        "html" => Format::Html,
        "json" => Format::Json,
        other => {
            return Err(ApiError::invalid(format!(
                "unknown card format {other:?}: use huggingface, google, eu-ai-act, eu-cra, html or json"
            )));
        }
    })
}

/// The card with the evaluation results submitted since merged in.
async fn current_card(state: &AppState, s: &Subject) -> Result<cairn_card::Card, ApiError> {
    let sel = VersionSelector::Number(s.version.version);
    let Some(stored) = state.store.version_card(&s.model_ref, &sel).await? else {
        return Err(ApiError::not_found(format!("version {} of \"{}\" has no card", s.version.version, s.model_ref)));
    };
    let mut card: cairn_card::Card = serde_json::from_str(&stored.card).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("stored card unreadable: {e}"))
    })?;
    for r in state.store.eval_results(&s.model_ref, &sel).await? {
        let metrics = r
            .metrics
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some(cairn_card::Metric::new(m.get("name")?.as_str()?, m.get("value")?.as_f64()?)));
        card.upsert_metrics(metrics.collect::<Vec<_>>());
    }
    Ok(card)
}

/// The version's model card, rendered (with evaluation results submitted later merged in).
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/card", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path), CardQuery),
    responses((status = 200, description = "The card in the format asked for"), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_card(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiQuery(q): ApiQuery<CardQuery>,
) -> ApiResult<Response> {
    let format = card_format(q.format.as_deref())?;
    let s = subject(&state, &caller, p, Permission::ModelRead, "version.card").await?;
    let card = current_card(&state, &s).await?;
    let text = tokio::task::spawn_blocking(move || {
        cairn_card::render::render(&card, format, &cairn_card::render::TemplateOptions::default())
    })
    .await
    .map_err(|_| ApiError::busy("the renderer stopped"))?
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    use cairn_card::render::Format;
    let content_type = match format {
        Format::Google | Format::Json => "application/json",
        Format::Html => "text/html; charset=utf-8",
        _ => "text/markdown; charset=utf-8",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

fn card_info(c: VersionCard) -> api::CardInfo {
    api::CardInfo {
        source_name: c.source_name,
        digest: c.digest,
        completeness: serde_json::from_str(&c.completeness).unwrap_or_default(),
        findings: serde_json::from_str(&c.findings).unwrap_or_default(),
        created_at: rfc3339(c.created_at),
        created_by: c.created_by,
    }
}

/// The card's source digest, completeness per standard and validation findings.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/card/info", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = api::CardInfo), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_card_info(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
) -> ApiResult<Json<api::CardInfo>> {
    let s = subject(&state, &caller, p, Permission::ModelRead, "version.card").await?;
    let sel = VersionSelector::Number(s.version.version);
    let Some(c) = state.store.version_card(&s.model_ref, &sel).await? else {
        return Err(ApiError::not_found(format!("version {} of \"{}\" has no card", s.version.version, s.model_ref)));
    };
    Ok(Json(card_info(c)))
}

/// Most card source accepted (bytes).
const MAX_CARD_BYTES: usize = 1024 * 1024;

/// Attach (or, in draft and changes_requested, replace) the version's card. The source is
/// parsed, checked for leaked secrets (refused with 422) and validated against every
/// standard; completeness and findings are stored with it.
#[utoipa::path(put, path = "/api/v1/models/{namespace}/{name}/versions/{version}/card", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::PutCard,
    responses((status = 200, body = api::CardInfo), (status = 400, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 422, body = api::ErrorBody, description = "The card contains a secret")),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn put_card(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiJson(body): ApiJson<api::PutCard>,
) -> ApiResult<Json<api::CardInfo>> {
    let s = subject(&state, &caller, p, Permission::ModelWrite, "version.card.set").await?;
    if body.source.len() > MAX_CARD_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "a card source is at most 1 MiB",
        ));
    }
    let name = body.source_name.clone();
    if name.contains('/') || name.contains('\\') || name.len() > 128 {
        return Err(ApiError::invalid("source_name is a plain file name such as card.yaml"));
    }
    let source = body.source.clone();
    let results = body.results.clone();
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(source.as_bytes())));
    let built = tokio::task::spawn_blocking(move || -> Result<VersionCard, ApiError> {
        let secrets = cairn_card::secrets::Scanner::shared().scan_str(&name, &source);
        if !secrets.is_empty() {
            let found: Vec<String> = secrets.iter().map(|f| f.to_string()).collect();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "secret_found",
                format!("the card contains what looks like a secret; remove it and rotate it: {}", found.join("; ")),
            ));
        }
        let mut loaded = cairn_card::load::parse_card(std::path::Path::new(&name), source.clone())
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        if let Some(r) = results {
            let from = cairn_card::input::results_from_json(std::path::Path::new("results.json"), r)
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            loaded.card.upsert_metrics(from.evaluation.metrics);
        }
        use cairn_card::validate::Standard;
        let standards = [Standard::Huggingface, Standard::Google, Standard::EuAiAct, Standard::EuCra, Standard::Gdpr];
        let report = cairn_card::validate::validate(&loaded, &standards, 0.0, &[]);
        let completeness: serde_json::Map<String, serde_json::Value> =
            report.standards.iter().map(|r| (r.standard.id().to_owned(), serde_json::json!(r.score))).collect();
        let findings: Vec<_> = report.standards.iter().flat_map(|r| r.findings.iter().cloned()).collect();
        let card = serde_json::to_string(&loaded.card).map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(VersionCard {
            source_name: name,
            source,
            digest,
            card,
            completeness: serde_json::Value::Object(completeness).to_string(),
            findings: serde_json::to_string(&findings).unwrap_or_else(|_| "[]".into()),
            created_at: 0,
            created_by: String::new(),
        })
    })
    .await
    .map_err(|_| ApiError::busy("the card checker stopped"))??;
    let stored = state
        .store
        .set_version_card(&caller.audit, &s.model_ref, &VersionSelector::Number(s.version.version), &built)
        .await?;
    Ok(Json(card_info(stored)))
}

/// Query of `GET …/card/diff`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The other version (number, @alias or label); required.
    pub against: Option<String>,
}

/// What changed in the card between `against` and this version (fields and metrics).
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/card/diff", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path), DiffQuery),
    responses((status = 200, description = "The card diff (JSON)"), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn card_diff(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let model: ModelRef = model_ref(&p.0, &p.1)?;
    let s = subject(&state, &caller, p, Permission::ModelRead, "version.card.diff").await?;
    let Some(against) = q.against.as_deref() else {
        return Err(ApiError::invalid("give the version to compare with: ?against=N"));
    };
    let other = governance::load(&state, &model, &VersionSelector::parse(against)?).await?;
    let (a, b) = (current_card(&state, &other).await?, current_card(&state, &s).await?);
    let diff = cairn_card::diff::diff(&a, &b);
    Ok(Json(serde_json::json!({
        "from": other.version.version,
        "to": s.version.version,
        "diff": serde_json::to_value(&diff).unwrap_or_default(),
        "text": cairn_card::diff::to_text(&diff),
    })))
}

pub(super) fn eval_result(r: cairn_store::evaluation::EvalResult) -> api::EvalResult {
    api::EvalResult {
        id: r.id,
        suite: r.suite,
        passed: r.passed,
        metrics: r.metrics,
        config: r.config,
        submitted_by: r.submitted_by,
        submitted_at: rfc3339(r.submitted_at),
    }
}

/// The evaluation results of a version, oldest first.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/evaluations", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = api::EvalResultList)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn list_evaluations(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
) -> ApiResult<Json<api::EvalResultList>> {
    let s = subject(&state, &caller, p, Permission::ModelRead, "version.evaluations").await?;
    let rows = state.store.eval_results(&s.model_ref, &VersionSelector::Number(s.version.version)).await?;
    Ok(Json(api::EvalResultList { results: rows.into_iter().map(eval_result).collect() }))
}

/// Submit evaluation results for a version; they are judged against the suite's thresholds
/// (a failure raises `evaluation.failed`), flow into the rendered card and the policy facts.
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/evaluations", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)), request_body = api::SubmitEvaluation,
    responses((status = 201, body = api::EvalResult), (status = 400, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn submit_evaluation(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): VersionPath,
    ApiJson(body): ApiJson<api::SubmitEvaluation>,
) -> ApiResult<(StatusCode, Json<api::EvalResult>)> {
    let s = subject(&state, &caller, p, Permission::ModelWrite, "eval.result.submit").await?;
    let new = judged(&state, &caller, &s.model_ref.namespace, body.suite, &body.results, body.config).await?;
    let stored = state
        .store
        .submit_eval_result(&caller.audit, &s.model_ref, &VersionSelector::Number(s.version.version), &new)
        .await?;
    Ok((StatusCode::CREATED, Json(eval_result(stored))))
}

/// Results judged against the suite `suite` of `namespace`, ready to store.
pub(super) async fn judged(
    state: &AppState,
    caller: &Caller,
    namespace: &cairn_core::Namespace,
    suite: String,
    results: &serde_json::Value,
    config: serde_json::Value,
) -> Result<NewEvalResult, ApiError> {
    let stored = state.store.get_eval_suite(namespace, &suite).await?;
    let def: cairn_core::evaluation::SuiteDef = serde_json::from_value(stored.definition).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("stored suite unreadable: {e}"))
    })?;
    if !(config.is_object() || config.is_null()) {
        return Err(ApiError::invalid("config must be a JSON object"));
    }
    let values = governance::metric_values(results)?;
    let verdict = def.judge(&values);
    Ok(NewEvalResult {
        suite,
        passed: verdict.passed,
        metrics: serde_json::to_value(&verdict.metrics).unwrap_or_default(),
        config: if config.is_null() { serde_json::json!({}) } else { config },
        submitted_by: caller.principal.username.clone(),
    })
}
