//! Deployments (docs/DEPLOYMENTS.md): environments, the deployment records deployment tooling
//! writes, rollbacks (by hand, or triggered by a breaching SLO report), all audited and
//! announced to webhooks.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::deploy::{Measured, Slo, Status, Strategy, check_traffic};
use cairn_core::{ModelRef, NamespaceScope, Permission, VersionSelector};
use cairn_store::deploy::{Deployment, Environment, EnvironmentSpec, NewDeployment, PRODUCTION_STAGES};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{authorize, authorize_model};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(list_environments))
        .routes(routes!(get_environment, put_environment))
        .routes(routes!(record_deployment))
        .routes(routes!(rollback))
        .routes(routes!(list_deployments))
        .routes(routes!(get_deployment))
        .routes(routes!(set_status))
        .routes(routes!(report_slo))
}

fn slo_out(s: Slo) -> api::SloThresholds {
    api::SloThresholds {
        max_error_rate: s.max_error_rate,
        max_latency_p95_ms: s.max_latency_p95_ms,
        max_drift_score: s.max_drift_score,
    }
}

fn environment(e: Environment) -> api::Environment {
    api::Environment {
        name: e.name,
        description: e.description,
        production: e.production,
        slo: slo_out(e.slo),
        auto_rollback: e.auto_rollback,
        created_at: rfc3339(e.created_at),
        created_by: e.created_by,
        updated_at: rfc3339(e.updated_at),
        updated_by: e.updated_by,
    }
}

fn deployment(d: Deployment) -> api::Deployment {
    api::Deployment {
        id: d.id,
        environment: d.environment,
        model: d.model,
        version: d.version,
        strategy: d.strategy,
        traffic_percent: d.traffic_percent,
        config: serde_json::from_str(&d.config).unwrap_or(serde_json::Value::Null),
        status: d.status,
        reason: d.reason,
        rollback_of: d.rollback_of,
        created_at: rfc3339(d.created_at),
        created_by: d.created_by,
        updated_at: rfc3339(d.updated_at),
        updated_by: d.updated_by,
    }
}

/// The deployment environments.
#[utoipa::path(get, path = "/api/v1/environments", tag = "deployments",
    responses((status = 200, body = api::EnvironmentList)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn list_environments(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::EnvironmentList>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "environment.list", "environments").await?;
    caller.principal.require_mfa()?;
    let list = state.store.list_environments().await?;
    Ok(Json(api::EnvironmentList { environments: list.into_iter().map(environment).collect() }))
}

/// One environment.
#[utoipa::path(get, path = "/api/v1/environments/{environment}", tag = "deployments",
    params(("environment" = String, Path)),
    responses((status = 200, body = api::Environment), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn get_environment(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<api::Environment>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "environment.get", "environments").await?;
    caller.principal.require_mfa()?;
    Ok(Json(environment(state.store.get_environment(&name).await?)))
}

/// Create or replace an environment: whether it is a production environment (only approved,
/// signed versions), its service-level objectives, and whether a breach rolls back by itself.
#[utoipa::path(put, path = "/api/v1/environments/{environment}", tag = "deployments",
    params(("environment" = String, Path)), request_body = api::PutEnvironment,
    responses((status = 200, body = api::Environment), (status = 400, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("environment.manage"))))]
pub async fn put_environment(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<api::PutEnvironment>,
) -> ApiResult<Json<api::Environment>> {
    let target = format!("environment:{name}");
    authorize(&state, &caller, Permission::EnvironmentManage, None, "environment.put", &target).await?;
    let spec = EnvironmentSpec {
        description: body.description,
        production: body.production,
        slo: Slo {
            max_error_rate: body.slo.max_error_rate,
            max_latency_p95_ms: body.slo.max_latency_p95_ms,
            max_drift_score: body.slo.max_drift_score,
        },
        auto_rollback: body.auto_rollback,
    };
    Ok(Json(environment(state.store.put_environment(&caller.audit, &name, &spec).await?)))
}

/// Why version `v` may not go to a production environment for want of signatures, if
/// it may not: it needs a valid signature of this registry over its model, number and
/// manifest, and every signature its pusher added must still verify over its model and
/// manifest (they were checked when it was pushed; one that no longer verifies was changed
/// since).
async fn unsigned(
    state: &AppState,
    model: &ModelRef,
    v: &cairn_store::version::Version,
) -> Result<Option<String>, ApiError> {
    let number = v.version;
    let sigs = state.store.signatures_of(v).await?;
    let mut known = vec![state.signing_key.public().key_id()];
    if sigs.iter().any(|s| s.kind == "server" && s.key_id != known[0]) {
        known.extend(state.store.signing_keys().await?.into_iter().map(|k| k.key_id));
    }
    let server_signed = sigs.iter().filter(|s| s.kind == "server" && known.contains(&s.key_id)).any(|s| {
        let statement: serde_json::Value = serde_json::from_str(&s.statement).unwrap_or_default();
        s.verify_self().is_some()
            && statement["model"] == model.to_string().as_str()
            && statement["manifest_digest"] == v.digest.as_str()
            && statement["version"] == number
    });
    if !server_signed {
        return Ok(Some(format!("{model}:{number} has no valid signature of this registry")));
    }
    let name = model.to_string();
    for s in sigs.iter().filter(|s| s.kind != "server") {
        if let Err(why) = cairn_store::signatures::check_user_signature(s, &name, &v.digest) {
            return Ok(Some(format!(
                "{model}:{number}: its pusher's signature by key {} is not valid: {why}",
                s.key_id
            )));
        }
    }
    Ok(None)
}

/// Record that a version is being (or has been) deployed to an environment — by deployment
/// tooling. To a production environment only a version in `approved_prod` or `production`
/// with valid signatures (the registry's, and any its pusher added; 409 otherwise). Announced as
/// `deployment.recorded`.
#[utoipa::path(post, path = "/api/v1/environments/{environment}/deployments", tag = "deployments",
    params(("environment" = String, Path)), request_body = api::RecordDeployment,
    responses((status = 201, body = api::Deployment), (status = 400, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("deployment.write"))))]
pub async fn record_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path(env): Path<String>,
    ApiJson(body): ApiJson<api::RecordDeployment>,
) -> ApiResult<(StatusCode, Json<api::Deployment>)> {
    let model = ModelRef::parse(&body.model)?;
    authorize_model(&state, &caller, Permission::Deploy, &model, "deployment.record").await?;
    let selector = VersionSelector::parse(&body.version)?;
    let strategy = match body.strategy.as_deref() {
        None => Strategy::Direct,
        Some(s) => Strategy::parse(s)
            .ok_or_else(|| ApiError::invalid(format!("strategy must be direct, canary or blue_green (got {s:?})")))?,
    };
    let traffic_percent = check_traffic(strategy, body.traffic_percent).map_err(|e| ApiError::invalid(e.0))?;
    let status = match body.status.as_deref() {
        None => Status::Pending,
        Some(s) => match Status::parse(s) {
            Some(st @ (Status::Pending | Status::InProgress | Status::Succeeded)) => st,
            _ => {
                return Err(ApiError::invalid(format!(
                    "a new deployment is pending, in_progress or succeeded (got {s:?})"
                )));
            }
        },
    };
    let config = if body.config.is_null() { serde_json::json!({}) } else { body.config };
    if !config.is_object() || config.to_string().len() > 64 * 1024 {
        return Err(ApiError::invalid("config must be a JSON object of at most 64 KiB"));
    }
    let e = state.store.get_environment(&env).await?;
    if e.production {
        let v = state.store.get_version(&model, &selector).await?;
        if !PRODUCTION_STAGES.contains(&v.stage.as_str()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_approved",
                format!(
                    "{model}:{} is {}: only versions approved for production (approved_prod, production) may be \
                     deployed to the production environment \"{env}\"",
                    v.version, v.stage
                ),
            ));
        }
        if let Some(why) = unsigned(&state, &model, &v).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_signed",
                format!("{why}: it cannot go to the production environment \"{env}\""),
            ));
        }
    }
    let new = NewDeployment { strategy, traffic_percent, config, status };
    let d = state.store.record_deployment(&caller.audit, &env, &model, &selector, &new).await?;
    Ok((StatusCode::CREATED, Json(deployment(d))))
}

/// Roll back what runs of a model in an environment: to `to`, or to the version that ran
/// before. The current deployment becomes `rolled_back`; a new `pending` deployment of the
/// target records the decision (`rollback_of`), and `deployment.rolled_back` tells the
/// deployment tool. A production environment takes only approved, signed versions here too.
#[utoipa::path(post, path = "/api/v1/environments/{environment}/rollback", tag = "deployments",
    params(("environment" = String, Path)), request_body = api::Rollback,
    responses((status = 201, body = api::Deployment), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("deployment.write"))))]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(env): Path<String>,
    ApiJson(body): ApiJson<api::Rollback>,
) -> ApiResult<(StatusCode, Json<api::Deployment>)> {
    let model = ModelRef::parse(&body.model)?;
    authorize_model(&state, &caller, Permission::Deploy, &model, "deployment.rollback").await?;
    if body.reason.trim().is_empty() || body.reason.len() > 2000 {
        return Err(ApiError::invalid("a rollback needs a reason (at most 2000 bytes)"));
    }
    let to = body.to.as_deref().map(VersionSelector::parse).transpose()?;
    let e = state.store.get_environment(&env).await?;
    if e.production
        && let Some(sel) = &to
    {
        let v = state.store.get_version(&model, sel).await?;
        if let Some(why) = unsigned(&state, &model, &v).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_signed",
                format!("{why}: it cannot go to the production environment \"{env}\""),
            ));
        }
    }
    let d = state.store.rollback(&caller.audit, &env, &model, to.as_ref(), &body.reason).await?;
    Ok((StatusCode::CREATED, Json(deployment(d))))
}

/// Query of `GET /api/v1/deployments`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this environment.
    pub environment: Option<String>,
    /// Only this model (`namespace/name`).
    pub model: Option<String>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<usize>,
    /// Deployments older than this id (the `next_before` of the previous page).
    pub before: Option<i64>,
}

/// Deployment history, newest first, of the models the caller may read.
#[utoipa::path(get, path = "/api/v1/deployments", tag = "deployments", params(ListQuery),
    responses((status = 200, body = api::DeploymentList), (status = 400, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn list_deployments(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<api::DeploymentList>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "deployment.list", "deployments").await?;
    caller.principal.require_mfa()?;
    let limit = super::page_limit(q.limit)?;
    let model = q.model.as_deref().map(ModelRef::parse).transpose()?;
    if let Some(m) = &model {
        authorize_model(&state, &caller, Permission::ModelRead, m, "deployment.list").await?;
    }
    let rows = state.store.list_deployments(q.environment.as_deref(), model.as_ref(), limit, q.before).await?;
    let next_before = (rows.len() == limit).then(|| rows.last().map(|d| d.id)).flatten();
    let readable = caller.principal.namespaces_for(Permission::ModelRead);
    let deployments = rows.into_iter().filter(|d| readable.contains(&d.namespace)).map(deployment).collect();
    Ok(Json(api::DeploymentList { deployments, next_before }))
}

/// A deployment the caller may see (its model's namespace readable), after checking that the
/// caller holds `permission` somewhere at all.
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
    permission: Permission,
    action: &str,
) -> Result<Deployment, ApiError> {
    if caller.principal.namespaces_for(permission) == NamespaceScope::Only(Default::default()) {
        authorize(state, caller, permission, None, action, &format!("deployment:{id}")).await?;
    }
    let missing = || ApiError::not_found(format!("deployment {id} does not exist"));
    let n: i64 = id.parse().map_err(|_| missing())?;
    let d = state.store.get_deployment(n).await.map_err(|e| match e {
        cairn_store::StoreError::NotFound(_) => missing(),
        other => other.into(),
    })?;
    if caller.principal.check(Permission::ModelRead, Some(&d.namespace)).is_err() {
        return Err(missing());
    }
    authorize(state, caller, permission, Some(&d.namespace), action, &format!("deployment:{id}")).await?;
    Ok(d)
}

/// One deployment.
#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "deployments", params(("id" = i64, Path)),
    responses((status = 200, body = api::Deployment), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_deployment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Deployment>> {
    Ok(Json(deployment(visible(&state, &caller, &id, Permission::ModelRead, "deployment.get").await?)))
}

/// Move a deployment on: `pending` → `in_progress` → `succeeded` | `failed`. A success
/// supersedes what ran before it in the environment.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/status", tag = "deployments", params(("id" = i64, Path)),
    request_body = api::DeploymentStatus,
    responses((status = 200, body = api::Deployment), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("deployment.write"))))]
pub async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::DeploymentStatus>,
) -> ApiResult<Json<api::Deployment>> {
    let d = visible(&state, &caller, &id, Permission::Deploy, "deployment.status").await?;
    let status = Status::parse(&body.status)
        .ok_or_else(|| ApiError::invalid(format!("unknown deployment status {:?}", body.status)))?;
    if body.reason.len() > 2000 {
        return Err(ApiError::invalid("reason must be at most 2000 bytes"));
    }
    Ok(Json(deployment(state.store.set_deployment_status(&caller.audit, d.id, status, &body.reason).await?)))
}

/// Report what monitoring measured of a deployment. A report above the environment's
/// objectives about the deployment that runs rolls it back, when the environment says so.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/slo-reports", tag = "deployments", params(("id" = i64, Path)),
    request_body = api::SloReport,
    responses((status = 201, body = api::SloOutcome), (status = 400, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("deployment.write"))))]
pub async fn report_slo(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::SloReport>,
) -> ApiResult<(StatusCode, Json<api::SloOutcome>)> {
    let d = visible(&state, &caller, &id, Permission::Deploy, "deployment.slo_report").await?;
    let measured =
        Measured { error_rate: body.error_rate, latency_p95_ms: body.latency_p95_ms, drift_score: body.drift_score };
    measured.check().map_err(|e| ApiError::invalid(e.0))?;
    let out = state.store.report_slo(&caller.audit, d.id, &measured).await?;
    Ok((
        StatusCode::CREATED,
        Json(api::SloOutcome {
            report_id: out.report_id,
            breaches: out.breaches,
            rollback: out.rollback.map(deployment),
            not_rolled_back: out.not_rolled_back,
        }),
    ))
}
