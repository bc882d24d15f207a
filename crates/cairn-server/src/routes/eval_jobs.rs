//! Evaluation jobs (docs/GOVERNANCE.md#evaluation-jobs): queued when a version is submitted
//! (or by hand), claimed and run by `cairn eval worker` on the machines that have the data,
//! so evaluations happen by themselves without the registry executing anyone's code.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_api_types as api;
use cairn_core::{ModelRef, NamespaceScope, Permission, VersionSelector};
use cairn_store::eval_job::{Claim, DEFAULT_MAX_ATTEMPTS, EvalJob, JobFilter, NewJob};
use serde::Deserialize;
use utoipa::IntoParams;

use super::lifecycle::{eval_result, judged};
use super::{authorize, authorize_model, model_ref};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

/// The lease a worker gets unless it asks for another (seconds).
const DEFAULT_LEASE_SECS: u64 = 120;

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(queue_job))
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(claim_job))
        .routes(routes!(heartbeat))
        .routes(routes!(complete_job))
        .routes(routes!(fail_job))
        .routes(routes!(cancel_job))
}

fn job(j: EvalJob) -> api::EvalJob {
    api::EvalJob {
        id: j.id,
        model: j.model,
        version: j.version,
        suite: j.suite,
        priority: j.priority,
        state: j.state,
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        not_before: rfc3339(j.not_before),
        worker: j.worker,
        claimed_by: j.claimed_by,
        lease_until: j.lease_until.map(rfc3339),
        error: j.error,
        result_id: j.result_id,
        created_at: rfc3339(j.created_at),
        created_by: j.created_by,
        updated_at: rfc3339(j.updated_at),
        finished_at: j.finished_at.map(rfc3339),
    }
}

fn lease_ms(secs: Option<u64>) -> Result<i64, ApiError> {
    let secs = secs.unwrap_or(DEFAULT_LEASE_SECS);
    if !(10..=3600).contains(&secs) {
        return Err(ApiError::invalid(format!("lease_secs is between 10 and 3600 (got {secs})")));
    }
    Ok(i64::try_from(secs * 1000).unwrap_or(i64::MAX))
}

/// Queue a suite to run on a version. When the suite is already queued or running for the
/// version, that job is returned (200) instead of a new one (201).
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/eval-jobs", tag = "governance",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    request_body = api::QueueEvalJob,
    responses((status = 201, body = api::EvalJob), (status = 200, body = api::EvalJob),
        (status = 400, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn queue_job(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<api::QueueEvalJob>,
) -> ApiResult<(StatusCode, Json<api::EvalJob>)> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "eval.job.queue").await?;
    let selector = VersionSelector::parse(&version)?;
    if body.priority.abs() > 1_000_000 {
        return Err(ApiError::invalid("priority is between -1000000 and 1000000"));
    }
    let new = NewJob {
        suite: body.suite,
        priority: body.priority,
        max_attempts: body.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
    };
    let (j, created) = state.store.queue_eval_job(&caller.audit, &model, &selector, &new).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(job(j))))
}

/// Query of `GET /api/v1/eval-jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this model (`namespace/name`).
    pub model: Option<String>,
    /// Only this version of `model`.
    pub version: Option<i64>,
    /// Only in this state: queued, running, succeeded, failed, cancelled.
    pub state: Option<String>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<usize>,
    /// Jobs older than this id (the `next_before` of the previous page).
    pub before: Option<String>,
}

/// Evaluation jobs, newest first, of the namespaces the caller may read.
#[utoipa::path(get, path = "/api/v1/eval-jobs", tag = "governance", params(ListQuery),
    responses((status = 200, body = api::EvalJobList), (status = 400, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<api::EvalJobList>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "eval.job.list", "eval-jobs").await?;
    caller.principal.require_mfa()?;
    let limit = super::page_limit(q.limit)?;
    let model = q.model.as_deref().map(ModelRef::parse).transpose()?;
    if let Some(m) = &model {
        authorize_model(&state, &caller, Permission::ModelRead, m, "eval.job.list").await?;
    }
    if q.version.is_some() && model.is_none() {
        return Err(ApiError::invalid("version needs model"));
    }
    let readable = caller.principal.namespaces_for(Permission::ModelRead);
    let namespaces = match (&q.namespace, &readable) {
        (Some(ns), r) => Some(if r.contains(ns) { vec![ns.clone()] } else { Vec::new() }),
        (None, NamespaceScope::All) => None,
        (None, NamespaceScope::Only(set)) => Some(set.iter().cloned().collect()),
    };
    let filter = JobFilter { namespaces, model, version: q.version, state: q.state, before: q.before, limit };
    let rows = state.store.list_eval_jobs(&filter).await?;
    let next_before = (rows.len() == limit).then(|| rows.last().map(|j| j.id.clone())).flatten();
    Ok(Json(api::EvalJobList { jobs: rows.into_iter().map(job).collect(), next_before }))
}

/// A job the caller may see (its namespace readable; otherwise it does not exist), after
/// checking that the caller holds `permission` there.
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
    permission: Permission,
    action: &str,
) -> Result<EvalJob, ApiError> {
    let target = format!("eval-job:{id}");
    if caller.principal.namespaces_for(permission) == NamespaceScope::Only(Default::default()) {
        authorize(state, caller, permission, None, action, &target).await?;
    }
    let missing = || ApiError::not_found(format!("evaluation job {id} does not exist"));
    let j = state.store.get_eval_job(id).await.map_err(|e| match e {
        cairn_store::StoreError::NotFound(_) => missing(),
        other => other.into(),
    })?;
    if caller.principal.check(Permission::ModelRead, Some(&j.namespace)).is_err() {
        return Err(missing());
    }
    authorize(state, caller, permission, Some(&j.namespace), action, &target).await?;
    Ok(j)
}

/// One job.
#[utoipa::path(get, path = "/api/v1/eval-jobs/{id}", tag = "governance", params(("id" = String, Path)),
    responses((status = 200, body = api::EvalJob), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::EvalJob>> {
    Ok(Json(job(visible(&state, &caller, &id, Permission::ModelRead, "eval.job.get").await?)))
}

/// Claim the next job to run (highest priority, then oldest) in the namespaces the caller may
/// run evaluations in, under a lease the worker renews with heartbeats. 204 when there is
/// nothing to do. The answer carries the suite's definition: metrics, dataset, harness.
#[utoipa::path(post, path = "/api/v1/eval-jobs/claim", tag = "governance", request_body = api::ClaimEvalJob,
    responses((status = 200, body = api::ClaimedEvalJob), (status = 204, description = "Nothing to run"),
        (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("eval.run"))))]
pub async fn claim_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::ClaimEvalJob>,
) -> ApiResult<Response> {
    let scope = caller.principal.namespaces_for(Permission::EvalRun);
    if scope == NamespaceScope::Only(Default::default()) {
        authorize(&state, &caller, Permission::EvalRun, None, "eval.job.claim", "eval-jobs").await?;
    }
    if body.namespaces.len() > 100 || body.suites.len() > 100 {
        return Err(ApiError::invalid("at most 100 namespaces and 100 suites"));
    }
    let namespaces: Option<Vec<String>> = match (&scope, body.namespaces.is_empty()) {
        (NamespaceScope::All, true) => None,
        (_, false) => Some(body.namespaces.iter().filter(|n| scope.contains(n)).cloned().collect()),
        (NamespaceScope::Only(set), true) => Some(set.iter().cloned().collect()),
    };
    let claim = Claim {
        worker: &body.worker,
        namespaces: namespaces.as_deref(),
        suites: &body.suites,
        lease_ms: lease_ms(body.lease_secs)?,
    };
    let Some(j) = state.store.claim_eval_job(&caller.audit, &claim).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let ns = cairn_core::Namespace::parse(&j.namespace)?;
    let suite = state.store.get_eval_suite(&ns, &j.suite).await?;
    Ok(Json(api::ClaimedEvalJob { job: job(j), suite: suite.definition }).into_response())
}

/// Renew the lease on a running job. The job comes back as it is: when its state is no longer
/// `running` under this worker (cancelled, or its lease ran out and it was requeued), the
/// worker stops the harness and submits nothing.
#[utoipa::path(post, path = "/api/v1/eval-jobs/{id}/heartbeat", tag = "governance", params(("id" = String, Path)),
    request_body = api::EvalJobHeartbeat,
    responses((status = 200, body = api::EvalJob), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("eval.run"))))]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::EvalJobHeartbeat>,
) -> ApiResult<Json<api::EvalJob>> {
    visible(&state, &caller, &id, Permission::EvalRun, "eval.job.heartbeat").await?;
    let lease = lease_ms(body.lease_secs)?;
    Ok(Json(job(state.store.heartbeat_eval_job(&caller.audit, &id, &body.worker, lease).await?)))
}

/// Submit what the harness produced: stored as an evaluation result of the job's version,
/// judged against the suite, and the job ends `succeeded` (whether or not the results pass).
/// Only the worker that holds the job may; 409 otherwise (cancelled, lease lost).
#[utoipa::path(post, path = "/api/v1/eval-jobs/{id}/complete", tag = "governance", params(("id" = String, Path)),
    request_body = api::CompleteEvalJob,
    responses((status = 200, body = api::CompletedEvalJob), (status = 400, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("eval.run"))))]
pub async fn complete_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::CompleteEvalJob>,
) -> ApiResult<Json<api::CompletedEvalJob>> {
    let j = visible(&state, &caller, &id, Permission::EvalRun, "eval.job.complete").await?;
    let ns = cairn_core::Namespace::parse(&j.namespace)?;
    let new = judged(&state, &caller, &ns, j.suite.clone(), &body.results, body.config).await?;
    let (done, result) = state.store.complete_eval_job(&caller.audit, &id, &body.worker, &new).await?;
    Ok(Json(api::CompletedEvalJob { job: job(done), result: eval_result(result) }))
}

/// Report a failed attempt (the harness failed, timed out or wrote no results). The job is
/// queued again after a backoff until its attempts are used up, then fails for good
/// (`evaluation.failed` webhook event).
#[utoipa::path(post, path = "/api/v1/eval-jobs/{id}/fail", tag = "governance", params(("id" = String, Path)),
    request_body = api::FailEvalJob,
    responses((status = 200, body = api::EvalJob), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("eval.run"))))]
pub async fn fail_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::FailEvalJob>,
) -> ApiResult<Json<api::EvalJob>> {
    visible(&state, &caller, &id, Permission::EvalRun, "eval.job.fail").await?;
    let base_ms = i64::try_from(state.settings.eval_retry_base_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    Ok(Json(job(state.store.fail_eval_job(&caller.audit, &id, &body.worker, &body.error, base_ms).await?)))
}

/// Cancel a queued or running job. Its worker learns it at the next heartbeat and stops.
#[utoipa::path(post, path = "/api/v1/eval-jobs/{id}/cancel", tag = "governance", params(("id" = String, Path)),
    request_body = api::CancelEvalJob,
    responses((status = 200, body = api::EvalJob), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::CancelEvalJob>,
) -> ApiResult<Json<api::EvalJob>> {
    visible(&state, &caller, &id, Permission::ModelWrite, "eval.job.cancel").await?;
    if body.reason.len() > 2000 {
        return Err(ApiError::invalid("reason must be at most 2000 bytes"));
    }
    let reason = if body.reason.trim().is_empty() { "cancelled" } else { body.reason.trim() };
    Ok(Json(job(state.store.cancel_eval_job(&caller.audit, &id, reason).await?)))
}
