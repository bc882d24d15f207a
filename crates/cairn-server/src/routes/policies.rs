//! `/api/v1/policies`, `/api/v1/policy-exceptions` and the evaluation suites of namespaces
//! (docs/POLICIES.md, docs/GOVERNANCE.md).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::policy::PolicyDoc;
use cairn_core::{Namespace, Permission};
use cairn_store::policy::PolicyRecord;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::authorize;
use super::lifecycle::exception;
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_policies, apply_policy))
        .routes(routes!(get_policy))
        .routes(routes!(set_policy_status))
        .routes(routes!(pending_exceptions))
        .routes(routes!(decide_exception))
        .routes(routes!(list_suites))
        .routes(routes!(get_suite, put_suite, delete_suite))
}

fn policy(p: PolicyRecord, created: Option<bool>) -> api::Policy {
    api::Policy {
        name: p.name,
        version: p.version,
        status: p.status,
        severity: p.severity,
        document: p.document,
        source: p.source,
        digest: p.digest,
        created_at: rfc3339(p.created_at),
        created_by: p.created_by,
        updated_at: rfc3339(p.updated_at),
        updated_by: p.updated_by,
        created,
    }
}

/// Query of `GET /api/v1/policies`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PoliciesQuery {
    /// Only this status: `draft`, `active` or `inactive`.
    pub status: Option<String>,
    /// Every version, not only the latest of each policy.
    #[serde(default)]
    pub all_versions: bool,
}

/// List policies (the latest version of each by default).
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", params(PoliciesQuery),
    responses((status = 200, body = api::PolicyList)),
    extensions(("x-cairn-permission" = json!("policy.read"))))]
pub async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PoliciesQuery>,
) -> ApiResult<Json<api::PolicyList>> {
    authorize(&state, &caller, Permission::PolicyRead, None, "policy.list", "policies").await?;
    let list = state.store.list_policies(q.status.as_deref(), q.all_versions).await?;
    Ok(Json(api::PolicyList { policies: list.into_iter().map(|p| policy(p, None)).collect() }))
}

/// Apply a policy document (YAML or JSON): a changed document becomes a new version; the
/// same document only changes its status. Activating a version deactivates the others.
#[utoipa::path(post, path = "/api/v1/policies", tag = "policies", request_body = api::ApplyPolicy,
    responses((status = 201, body = api::Policy), (status = 200, body = api::Policy, description = "Unchanged document"),
        (status = 400, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("policy.manage"))))]
pub async fn apply_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::ApplyPolicy>,
) -> ApiResult<(StatusCode, Json<api::Policy>)> {
    authorize(&state, &caller, Permission::PolicyManage, None, "policy.apply", "policies").await?;
    let doc = PolicyDoc::parse(&body.source).map_err(|e| ApiError::invalid(e.to_string()))?;
    // Compiling checks the regular expressions too; what is stored always compiles.
    doc.clone().compile().map_err(|e| ApiError::invalid(e.to_string()))?;
    let document = serde_json::to_value(&doc).map_err(|e| ApiError::invalid(e.to_string()))?;
    let status = body.status.as_deref().unwrap_or("active");
    let applied = state
        .store
        .apply_policy(&caller.audit, &doc.name, doc.severity.as_str(), &document, &body.source, status)
        .await?;
    let code = if applied.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((code, Json(policy(applied.policy, Some(applied.created)))))
}

/// Query of `GET /api/v1/policies/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PolicyQuery {
    /// A version (default: the latest).
    pub version: Option<i64>,
}

/// One policy.
#[utoipa::path(get, path = "/api/v1/policies/{name}", tag = "policies", params(("name" = String, Path), PolicyQuery),
    responses((status = 200, body = api::Policy), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("policy.read"))))]
pub async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PolicyQuery>,
) -> ApiResult<Json<api::Policy>> {
    authorize(&state, &caller, Permission::PolicyRead, None, "policy.get", "policies").await?;
    Ok(Json(policy(state.store.get_policy(&name, q.version).await?, None)))
}

/// Set the status of a policy version (`active` deactivates the policy's other versions).
#[utoipa::path(patch, path = "/api/v1/policies/{name}/versions/{version}", tag = "policies",
    params(("name" = String, Path), ("version" = i64, Path)), request_body = api::SetPolicyStatus,
    responses((status = 200, body = api::Policy), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("policy.manage"))))]
pub async fn set_policy_status(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, i64)>,
    ApiJson(body): ApiJson<api::SetPolicyStatus>,
) -> ApiResult<Json<api::Policy>> {
    authorize(&state, &caller, Permission::PolicyManage, None, "policy.status", &format!("policy:{name}")).await?;
    Ok(Json(policy(state.store.set_policy_status(&caller.audit, &name, version, &body.status).await?, None)))
}

/// Exceptions waiting for a decision, oldest first.
#[utoipa::path(get, path = "/api/v1/policy-exceptions", tag = "policies",
    responses((status = 200, body = api::PolicyExceptionList)),
    extensions(("x-cairn-permission" = json!("policy.manage"))))]
pub async fn pending_exceptions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<api::PolicyExceptionList>> {
    authorize(&state, &caller, Permission::PolicyManage, None, "policy.exception.list", "policy-exceptions").await?;
    let list = state.store.pending_policy_exceptions(500).await?;
    Ok(Json(api::PolicyExceptionList { exceptions: list.into_iter().map(exception).collect() }))
}

/// Approve, reject or revoke an exception. The requester cannot decide their own.
#[utoipa::path(post, path = "/api/v1/policy-exceptions/{id}/decision", tag = "policies",
    params(("id" = String, Path)), request_body = api::DecideException,
    responses((status = 200, body = api::PolicyException), (status = 403, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("policy.manage"))))]
pub async fn decide_exception(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::DecideException>,
) -> ApiResult<Json<api::PolicyException>> {
    let target = format!("policy-exception:{id}");
    authorize(&state, &caller, Permission::PolicyManage, None, "policy.exception.decide", &target).await?;
    match state
        .store
        .decide_policy_exception(&caller.audit, &id, &body.status, &caller.principal.username, &body.note)
        .await
    {
        Ok(e) => Ok(Json(exception(e))),
        Err(e @ cairn_store::StoreError::Forbidden(_)) => {
            super::record_denied(&state, &caller, "policy.exception.decide", &target).await;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

fn suite(s: cairn_store::evaluation::EvalSuite) -> api::EvalSuite {
    api::EvalSuite {
        namespace: s.namespace,
        name: s.name,
        required: s.required,
        definition: s.definition,
        updated_at: rfc3339(s.updated_at),
        updated_by: s.updated_by,
    }
}

fn suite_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(ApiError::invalid("a suite name is 1–64 of a-z, 0-9, '-' and '_'")) }
}

/// The evaluation suites of a namespace.
#[utoipa::path(get, path = "/api/v1/namespaces/{namespace}/eval-suites", tag = "policies",
    params(("namespace" = String, Path)),
    responses((status = 200, body = api::EvalSuiteList)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn list_suites(
    State(state): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> ApiResult<Json<api::EvalSuiteList>> {
    let ns = Namespace::parse(&namespace)?;
    authorize(&state, &caller, Permission::ModelRead, Some(ns.as_str()), "eval.suite.list", &format!("namespace:{ns}"))
        .await?;
    Ok(Json(api::EvalSuiteList { suites: state.store.list_eval_suites(&ns).await?.into_iter().map(suite).collect() }))
}

/// One evaluation suite.
#[utoipa::path(get, path = "/api/v1/namespaces/{namespace}/eval-suites/{name}", tag = "policies",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = api::EvalSuite), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_suite(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Json<api::EvalSuite>> {
    let ns = Namespace::parse(&namespace)?;
    authorize(
        &state,
        &caller,
        Permission::ModelRead,
        Some(ns.as_str()),
        "eval.suite.get",
        &format!("suite:{ns}/{name}"),
    )
    .await?;
    Ok(Json(suite(state.store.get_eval_suite(&ns, &name).await?)))
}

/// Create or replace an evaluation suite: metrics with `at_least`/`at_most` thresholds,
/// grouped as task, bias, safety and robustness, with the dataset and harness it runs with.
/// A `required` suite must pass before a version enters approved_prod or production.
#[utoipa::path(put, path = "/api/v1/namespaces/{namespace}/eval-suites/{name}", tag = "policies",
    params(("namespace" = String, Path), ("name" = String, Path)), request_body = api::PutEvalSuite,
    responses((status = 200, body = api::EvalSuite), (status = 400, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("policy.manage"))))]
pub async fn put_suite(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<api::PutEvalSuite>,
) -> ApiResult<Json<api::EvalSuite>> {
    let ns = Namespace::parse(&namespace)?;
    authorize(&state, &caller, Permission::PolicyManage, None, "eval.suite.put", &format!("suite:{ns}/{name}")).await?;
    suite_name(&name)?;
    let def: cairn_core::evaluation::SuiteDef = serde_json::from_value(body.definition)
        .map_err(|e| ApiError::invalid(format!("invalid evaluation suite: {e}")))?;
    def.check().map_err(|e| ApiError::invalid(e.to_string()))?;
    let definition = serde_json::to_value(&def).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(Json(suite(state.store.put_eval_suite(&caller.audit, &ns, &name, body.required, &definition).await?)))
}

/// Delete an evaluation suite (results submitted against it stay).
#[utoipa::path(delete, path = "/api/v1/namespaces/{namespace}/eval-suites/{name}", tag = "policies",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("policy.manage"))))]
pub async fn delete_suite(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let ns = Namespace::parse(&namespace)?;
    authorize(&state, &caller, Permission::PolicyManage, None, "eval.suite.delete", &format!("suite:{ns}/{name}"))
        .await?;
    state.store.delete_eval_suite(&caller.audit, &ns, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
