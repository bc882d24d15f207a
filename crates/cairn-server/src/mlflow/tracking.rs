//! The part of MLflow's tracking API (`service.proto`) that logging and registering models
//! goes through: experiments, runs (params, metrics, tags, inputs, outputs) and MLflow 3's
//! logged models. Each experiment belongs to a Cairn namespace (`ns.anything` → `ns`,
//! otherwise `default`); reading needs `model.read` there and writing `model.write`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use cairn_core::{Namespace, Permission};
use cairn_store::tracking::{Experiment, LoggedModel, Metric, Run, RunClause, RunData, RunField, RunSearch};
use cairn_store::{Cursor, CursorKey, Param};
use serde_json::{Value, json};

use super::artifacts::{authorize_experiment, authorize_in_experiment};
use super::{Args, MlflowError, MlflowResult, check_key_value, empty, kv_list, pairs_of};
use crate::app::AppState;
use crate::auth::Caller;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/experiments/create", post(create_experiment))
        .route("/experiments/get", get(get_experiment))
        .route("/experiments/get-by-name", get(get_experiment_by_name))
        .route("/experiments/search", get(search_experiments).post(search_experiments))
        .route("/experiments/update", post(update_experiment))
        .route("/experiments/delete", post(delete_experiment))
        .route("/experiments/restore", post(restore_experiment))
        .route("/experiments/set-experiment-tag", post(set_experiment_tag))
        .route("/runs/create", post(create_run))
        .route("/runs/get", get(get_run))
        .route("/runs/update", post(update_run))
        .route("/runs/delete", post(delete_run))
        .route("/runs/restore", post(restore_run))
        .route("/runs/search", post(search_runs).get(search_runs))
        .route("/runs/log-metric", post(log_metric))
        .route("/runs/log-parameter", post(log_param))
        .route("/runs/set-tag", post(set_tag))
        .route("/runs/delete-tag", post(delete_tag))
        .route("/runs/log-batch", post(log_batch))
        .route("/runs/log-inputs", post(log_inputs))
        .route("/runs/outputs", post(log_outputs))
        .route("/runs/log-model", post(log_model))
        .route("/metrics/get-history", get(metric_history))
        .route("/logged-models", post(create_logged_model))
        .route("/logged-models/search", post(search_logged_models))
        .route("/logged-models/{id}", get(get_logged_model).patch(finalize_logged_model))
        .route("/logged-models/{id}/tags", axum::routing::patch(set_logged_model_tags))
        .route("/logged-models/{id}/tags/{key}", axum::routing::delete(delete_logged_model_tag))
        .route("/logged-models/{id}/params", post(log_logged_model_params))
}

/// `GET /api/3.0/mlflow/server-info`: what the client may try: multipart uploads through the
/// server (parts to signed URLs of Cairn itself); no presigned transfers to the storage.
pub(super) async fn server_info(_caller: Caller) -> Json<Value> {
    Json(json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": true,
        "multipart_downloads_enabled": false,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "features_enabled": {}
    }))
}

/// The namespace an experiment name belongs to.
fn experiment_namespace(name: &str) -> String {
    match name.split_once('.') {
        Some((ns, _)) if Namespace::parse(ns).is_ok() => ns.to_owned(),
        _ => "default".to_owned(),
    }
}

fn experiment_json(e: &Experiment) -> Value {
    json!({
        "experiment_id": e.id.to_string(),
        "name": e.name,
        "artifact_location": e.artifact_location,
        "lifecycle_stage": e.lifecycle_stage,
        "creation_time": e.created_at,
        "last_update_time": e.updated_at,
        "tags": kv_list(&e.tags),
    })
}

fn run_info_json(r: &Run) -> Value {
    let mut info = json!({
        "run_uuid": r.id,
        "run_id": r.id,
        "experiment_id": r.experiment_id.to_string(),
        "run_name": r.name,
        "user_id": r.user_id,
        "status": r.status,
        "start_time": r.start_time,
        "artifact_uri": r.artifact_uri,
        "lifecycle_stage": r.lifecycle_stage,
    });
    if let Some(end) = r.end_time {
        info["end_time"] = json!(end);
    }
    info
}

fn metric_json(m: &Metric) -> Value {
    json!({"key": m.key, "value": number(m.value), "timestamp": m.timestamp, "step": m.step})
}

/// JSON has no NaN or infinities: MLflow's JSON carries them as strings.
fn number(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

fn run_json(r: &Run) -> Value {
    let mut inputs = json!({});
    if !r.inputs.is_empty() {
        inputs["dataset_inputs"] = json!(r.inputs);
    }
    json!({
        "info": run_info_json(r),
        "data": {
            "metrics": r.metrics.iter().map(metric_json).collect::<Vec<_>>(),
            "params": kv_list(&r.params),
            "tags": kv_list(&r.tags),
        },
        "inputs": inputs,
    })
}

fn logged_model_json(m: &LoggedModel) -> Value {
    json!({
        "info": {
            "model_id": m.id,
            "experiment_id": m.experiment_id.to_string(),
            "name": m.name,
            "creation_timestamp_ms": m.created_at,
            "last_updated_timestamp_ms": m.updated_at,
            "artifact_uri": m.artifact_location,
            "status": m.status,
            "status_message": m.status_message,
            "model_type": m.model_type,
            "source_run_id": m.source_run_id,
            "tags": kv_list(&m.tags),
        },
        "data": { "params": kv_list(&m.params) },
    })
}

fn experiment_id(args: &Args) -> MlflowResult<i64> {
    let raw = args.str("experiment_id")?;
    raw.trim().parse().map_err(|_| MlflowError::invalid(format!("Invalid experiment id {raw:?}")))
}

fn check_name(name: &str, what: &str) -> MlflowResult<()> {
    if name.trim().is_empty() || name.len() > 500 || name.chars().any(char::is_control) {
        return Err(MlflowError::invalid(format!(
            "Invalid {what} name {:?}: 1 to 500 bytes, no control characters",
            name.chars().take(60).collect::<String>()
        )));
    }
    Ok(())
}

/// Runs need their experiment's permission; a run the caller may not see is missing.
async fn run_for(state: &AppState, caller: &Caller, args: &Args, permission: Permission) -> MlflowResult<Run> {
    let id = args.str_any(&["run_id", "run_uuid"])?;
    load_run(state, caller, &id, permission).await
}

async fn load_run(state: &AppState, caller: &Caller, id: &str, permission: Permission) -> MlflowResult<Run> {
    let run = state.store.get_run(id).await?;
    authorize_in_experiment(state, caller, run.experiment_id, &run.namespace, permission).await.map_err(|e| {
        if e.code == "RESOURCE_DOES_NOT_EXIST" {
            MlflowError::not_found(format!("Run with id={id} not found"))
        } else {
            e
        }
    })?;
    Ok(run)
}

async fn logged_model_for(
    state: &AppState,
    caller: &Caller,
    id: &str,
    permission: Permission,
) -> MlflowResult<LoggedModel> {
    let m = state.store.get_logged_model(id).await?;
    authorize_experiment(state, caller, m.experiment_id, permission).await.map_err(|e| {
        if e.code == "RESOURCE_DOES_NOT_EXIST" {
            MlflowError::not_found(format!("Logged model with ID '{id}' not found."))
        } else {
            e
        }
    })?;
    Ok(m)
}

async fn create_experiment(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    check_name(&name, "experiment")?;
    if args.opt_str("artifact_location")?.is_some_and(|l| !l.is_empty()) {
        return Err(MlflowError::invalid(
            "artifact_location is chosen by Cairn (mlflow-artifacts:/<experiment id>): leave it out",
        ));
    }
    let ns = experiment_namespace(&name);
    crate::routes::authorize(
        &state,
        &caller,
        Permission::ModelWrite,
        Some(&ns),
        "mlflow.experiment.create",
        &format!("mlflow-experiment:{name}"),
    )
    .await?;
    let tags = args.pairs("tags")?;
    let e = state.store.create_experiment(&caller.audit, &name, &ns, &tags).await.map_err(|e| match e {
        cairn_store::StoreError::Conflict(m) => MlflowError::exists(m),
        other => other.into(),
    })?;
    Ok(Json(json!({ "experiment_id": e.id.to_string() })))
}

async fn get_experiment(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let id = experiment_id(&args)?;
    let e = authorize_experiment(&state, &caller, id, Permission::ModelRead).await?;
    Ok(Json(json!({ "experiment": experiment_json(&e) })))
}

async fn get_experiment_by_name(
    State(state): State<AppState>,
    caller: Caller,
    args: Args,
) -> MlflowResult<Json<Value>> {
    let name = args.str("experiment_name")?;
    let missing = || MlflowError::not_found(format!("Could not find experiment with name '{name}'"));
    let e = state.store.get_experiment_by_name(&name).await?.ok_or_else(missing)?;
    authorize_experiment(&state, &caller, e.id, Permission::ModelRead)
        .await
        .map_err(|err| if err.code == "RESOURCE_DOES_NOT_EXIST" { missing() } else { err })?;
    Ok(Json(json!({ "experiment": experiment_json(&e) })))
}

/// The namespaces whose experiments the caller may read (`None`: all).
fn readable(caller: &Caller) -> MlflowResult<Option<Vec<String>>> {
    caller.principal.require_mfa().map_err(crate::error::ApiError::from)?;
    Ok(caller.principal.namespaces_for(Permission::ModelRead).into_list())
}

fn view_stage(view: Option<String>) -> MlflowResult<Option<&'static str>> {
    match view.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("") | Some("ACTIVE_ONLY") | Some("1") => Ok(Some("active")),
        Some("DELETED_ONLY") | Some("2") => Ok(Some("deleted")),
        Some("ALL") | Some("3") => Ok(None),
        Some(other) => Err(MlflowError::invalid(format!("Invalid view_type '{other}'"))),
    }
}

/// Offset paging with signed tokens.
fn offset_of(state: &AppState, listing: &str, args: &Args) -> MlflowResult<usize> {
    match args.opt_str("page_token")?.filter(|t| !t.is_empty()) {
        None => Ok(0),
        Some(t) => match state.page_tokens.decode(listing, &t) {
            Ok(Cursor { key: CursorKey::Int(n), .. }) => Ok(usize::try_from(n).unwrap_or(0)),
            _ => Err(MlflowError::invalid("Invalid page token, could not base64-decode")),
        },
    }
}

fn token_for(state: &AppState, listing: &str, offset: usize) -> String {
    state.page_tokens.encode(listing, &Cursor { key: CursorKey::Int(i64::try_from(offset).unwrap_or(0)), id: 0 })
}

fn max_results(args: &Args, default: i64) -> MlflowResult<usize> {
    let n = args.opt_i64("max_results")?.unwrap_or(default);
    if !(1..=50_000).contains(&n) {
        return Err(MlflowError::invalid(format!("Invalid value {n} for parameter 'max_results'")));
    }
    Ok(usize::try_from(n.min(1000)).unwrap_or(1000))
}

async fn search_experiments(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let namespaces = readable(&caller)?;
    let stage = view_stage(args.opt_str("view_type")?)?;
    let limit = max_results(&args, 1000)?;
    // Filters on experiments: `name = '…'`, `name LIKE '…'` (what the client's search UIs send).
    let name_like = match args.opt_str("filter")?.filter(|f| !f.trim().is_empty()) {
        None => None,
        Some(f) => Some(experiment_name_filter(&f)?),
    };
    let listing = format!("mlflow-experiments|{stage:?}|{name_like:?}");
    let after = match args.opt_str("page_token")?.filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match state.page_tokens.decode(&listing, &t) {
            Ok(c) => Some(c.id),
            Err(_) => return Err(MlflowError::invalid("Invalid page token, could not base64-decode")),
        },
    };
    let mut found =
        state.store.list_experiments(namespaces.as_deref(), stage, name_like.as_deref(), after, limit + 1).await?;
    let next = (found.len() > limit).then(|| {
        found.truncate(limit);
        found.last().map(|e| state.page_tokens.encode(&listing, &Cursor { key: CursorKey::Int(0), id: e.id }))
    });
    let mut out = json!({ "experiments": found.iter().map(experiment_json).collect::<Vec<_>>() });
    if let Some(Some(t)) = next {
        out["next_page_token"] = json!(t);
    }
    Ok(Json(out))
}

/// `name = 'x'` or `name LIKE 'x%'` (with `attribute.` prefixes) as a `LIKE` pattern.
fn experiment_name_filter(f: &str) -> MlflowResult<String> {
    let parsed = cairn_core::filter::parse(f)
        .map_err(|e| MlflowError::invalid(format!("Invalid filter '{f}': {}", e.message)))?;
    use cairn_core::filter::{Filter, Literal, Op, Target};
    if let Filter::Compare(c) = &parsed
        && let Target::Field(field) = &c.target
        && field.rsplit('.').next().is_some_and(|f| f.eq_ignore_ascii_case("name"))
        && let [Literal::Text(v)] = c.values.as_slice()
    {
        return match c.op {
            Op::Eq => Ok(v.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")),
            Op::Like => Ok(v.clone()),
            _ => Err(MlflowError::invalid("experiments can be filtered by name = '…' or name LIKE '…'")),
        };
    }
    Err(MlflowError::invalid("experiments can be filtered by name = '…' or name LIKE '…'"))
}

async fn update_experiment(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let id = experiment_id(&args)?;
    let new_name = args.str("new_name")?;
    check_name(&new_name, "experiment")?;
    let e = authorize_experiment(&state, &caller, id, Permission::ModelWrite).await?;
    if experiment_namespace(&new_name) != e.namespace {
        return Err(MlflowError::invalid(format!(
            "a rename keeps the experiment in namespace '{}': the new name must start with '{}.'",
            e.namespace, e.namespace
        )));
    }
    state.store.update_experiment(&caller.audit, id, Some(&new_name), None).await.map_err(|e| match e {
        cairn_store::StoreError::Conflict(m) => MlflowError::exists(m),
        other => other.into(),
    })?;
    Ok(empty())
}

async fn delete_experiment(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let id = experiment_id(&args)?;
    if id == 0 {
        return Err(MlflowError::invalid("Cannot delete the default experiment '0'"));
    }
    authorize_experiment(&state, &caller, id, Permission::ModelDelete).await?;
    state.store.update_experiment(&caller.audit, id, None, Some("deleted")).await?;
    Ok(empty())
}

async fn restore_experiment(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let id = experiment_id(&args)?;
    authorize_experiment(&state, &caller, id, Permission::ModelDelete).await?;
    state.store.update_experiment(&caller.audit, id, None, Some("active")).await?;
    Ok(empty())
}

async fn set_experiment_tag(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let id = experiment_id(&args)?;
    let (key, value) = key_value(&args)?;
    authorize_experiment(&state, &caller, id, Permission::ModelWrite).await?;
    state.store.set_experiment_tag(&caller.audit, id, &key, &value).await?;
    Ok(empty())
}

/// Adjective-noun names for runs created without one, as MLflow gives.
fn run_name() -> String {
    const A: [&str; 12] =
        ["amber", "brisk", "calm", "deft", "eager", "fleet", "gentle", "hardy", "keen", "lucid", "merry", "nimble"];
    const N: [&str; 12] =
        ["auk", "bear", "crane", "dove", "eel", "finch", "gull", "hare", "ibis", "jay", "kite", "lynx"];
    let r: u32 = rand::random();
    format!("{}-{}-{}", A[(r % 12) as usize], N[((r / 12) % 12) as usize], r % 1000)
}

async fn create_run(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let exp_id = match args.opt_str("experiment_id")?.filter(|s| !s.is_empty()) {
        Some(s) => s.trim().parse().map_err(|_| MlflowError::invalid(format!("Invalid experiment id {s:?}")))?,
        None => 0,
    };
    let exp = authorize_experiment(&state, &caller, exp_id, Permission::ModelWrite).await?;
    if exp.lifecycle_stage != "active" {
        return Err(MlflowError::invalid(format!("The experiment {exp_id} must be in the 'active' state.")));
    }
    let mut tags = args.pairs("tags")?;
    let name = match args.opt_str("run_name")?.filter(|s| !s.is_empty()) {
        Some(n) => n,
        None => tags.iter().find(|(k, _)| k == "mlflow.runName").map(|(_, v)| v.clone()).unwrap_or_else(run_name),
    };
    check_name(&name, "run")?;
    if !tags.iter().any(|(k, _)| k == "mlflow.runName") {
        tags.push(("mlflow.runName".into(), name.clone()));
    }
    // Who ran it is the authenticated caller, whatever the client claims.
    let user = caller.principal.username.clone();
    let start = args.opt_i64("start_time")?.unwrap_or_else(|| state.now_ms());
    let run = state.store.create_run(&caller.audit, exp_id, &name, &user, start, &tags).await?;
    Ok(Json(json!({ "run": run_json(&run) })))
}

async fn get_run(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelRead).await?;
    let mut out = run_json(&run);
    let outputs = run_outputs(&state, &run).await?;
    if !outputs.is_empty() {
        out["outputs"] = json!({ "model_outputs": outputs });
    }
    Ok(Json(json!({ "run": out })))
}

/// The logged models a run produced.
async fn run_outputs(state: &AppState, run: &Run) -> MlflowResult<Vec<Value>> {
    let models = state.store.search_logged_models(&[run.experiment_id], Some(&run.id), 100, 0).await?;
    Ok(models.iter().map(|m| json!({"model_id": m.id, "step": 0})).collect())
}

const RUN_STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

async fn update_run(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelWrite).await?;
    let status = args.opt_str("status")?.filter(|s| !s.is_empty());
    if let Some(s) = &status
        && !RUN_STATUSES.contains(&s.as_str())
    {
        return Err(MlflowError::invalid(format!("Invalid run status {s:?}")));
    }
    let name = args.opt_str("run_name")?.filter(|s| !s.is_empty());
    if let Some(n) = &name {
        check_name(n, "run")?;
    }
    let end = args.opt_i64("end_time")?;
    let run = state.store.update_run(&caller.audit, &run.id, status.as_deref(), end, name.as_deref(), None).await?;
    Ok(Json(json!({ "run_info": run_info_json(&run) })))
}

async fn delete_run(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelDelete).await?;
    state.store.update_run(&caller.audit, &run.id, None, None, None, Some("deleted")).await?;
    Ok(empty())
}

async fn restore_run(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelDelete).await?;
    state.store.update_run(&caller.audit, &run.id, None, None, None, Some("active")).await?;
    Ok(empty())
}

fn metric_of(v: &Value, now: i64) -> MlflowResult<(Metric, Option<String>)> {
    let args = Args(v.as_object().cloned().unwrap_or_default());
    let key = args.str("key")?;
    check_key_value(&key, "")?;
    let value =
        args.opt_f64("value")?.ok_or_else(|| MlflowError::invalid("Missing value for required parameter 'value'."))?;
    if value.is_nan() {
        return Err(MlflowError::invalid(format!("metric {key:?}: NaN values are not stored; log a number")));
    }
    let timestamp = args.opt_i64("timestamp")?.unwrap_or(now);
    let step = args.opt_i64("step")?.unwrap_or(0);
    Ok((Metric { key, value, timestamp, step }, args.opt_str("model_id")?.filter(|s| !s.is_empty())))
}

/// The checked `key` and `value` of a request (a missing value is empty).
fn key_value(args: &Args) -> MlflowResult<(String, String)> {
    let key = args.str("key")?;
    let value = args.opt_str("value")?.unwrap_or_default();
    check_key_value(&key, &value)?;
    Ok((key, value))
}

async fn log_metric(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelWrite).await?;
    let m = metric_of(&Value::Object(args.0.clone()), state.now_ms())?;
    state.store.log_run_data(&caller.audit, &run.id, &RunData { metrics: vec![m], ..RunData::default() }).await?;
    Ok(empty())
}

async fn log_param(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelWrite).await?;
    let params = vec![key_value(&args)?];
    state.store.log_run_data(&caller.audit, &run.id, &RunData { params, ..RunData::default() }).await?;
    Ok(empty())
}

async fn set_tag(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelWrite).await?;
    let tags = vec![key_value(&args)?];
    state.store.log_run_data(&caller.audit, &run.id, &RunData { tags, ..RunData::default() }).await?;
    Ok(empty())
}

async fn delete_tag(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelWrite).await?;
    let key = args.str("key")?;
    state.store.delete_run_tag(&caller.audit, &run.id, &key).await?;
    Ok(empty())
}

async fn log_batch(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelWrite).await?;
    let now = state.now_ms();
    let metrics = match args.0.get("metrics") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= 1000 => a.iter().map(|m| metric_of(m, now)).collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => {
            return Err(MlflowError::invalid("A batch logging request can have at most 1000 metrics"));
        }
        Some(_) => return Err(MlflowError::invalid("Invalid value for parameter 'metrics': expected a list")),
    };
    let params = pairs_of(args.0.get("params"), "params")?;
    let tags = pairs_of(args.0.get("tags"), "tags")?;
    if params.len() > 100 {
        return Err(MlflowError::invalid("A batch logging request can have at most 100 params"));
    }
    state.store.log_run_data(&caller.audit, &run.id, &RunData { metrics, params, tags }).await?;
    Ok(empty())
}

async fn log_inputs(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelWrite).await?;
    let datasets = match args.0.get("datasets") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= 100 => a.clone(),
        Some(_) => return Err(MlflowError::invalid("'datasets' must be a list of at most 100 dataset inputs")),
    };
    let mut inputs = Vec::with_capacity(datasets.len());
    for d in datasets {
        let ds = d.get("dataset").ok_or_else(|| MlflowError::invalid("each dataset input needs a 'dataset'"))?;
        let name = ds.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let digest = ds.get("digest").and_then(Value::as_str).unwrap_or_default().to_owned();
        if name.is_empty() || digest.is_empty() {
            return Err(MlflowError::invalid("a dataset needs a name and a digest"));
        }
        if d.to_string().len() > 1 << 20 {
            return Err(MlflowError::invalid(format!("dataset {name:?} is described in more than 1 MiB")));
        }
        inputs.push((name, digest, d));
    }
    state.store.log_run_inputs(&caller.audit, &run.id, &inputs).await?;
    Ok(empty())
}

/// `runs/outputs`: which logged models a run produced. Cairn links them by the logged
/// model's `source_run_id`; this checks they belong to the run's experiment.
async fn log_outputs(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelWrite).await?;
    if let Some(Value::Array(models)) = args.0.get("models") {
        for m in models.iter().take(100) {
            if let Some(id) = m.get("model_id").and_then(Value::as_str) {
                let lm = state.store.get_logged_model(id).await?;
                if lm.experiment_id != run.experiment_id {
                    return Err(MlflowError::invalid(format!("logged model {id} belongs to another experiment")));
                }
            }
        }
    }
    Ok(empty())
}

/// MLflow 2's `runs/log-model`: records the model's metadata as the run's
/// `mlflow.log-model.history` tag.
async fn log_model(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelWrite).await?;
    let model_json = args.str("model_json")?;
    let parsed: Value =
        serde_json::from_str(&model_json).map_err(|e| MlflowError::invalid(format!("model_json: {e}")))?;
    let mut history: Vec<Value> =
        run.tags.get("mlflow.log-model.history").and_then(|h| serde_json::from_str(h).ok()).unwrap_or_default();
    history.push(parsed);
    let value = Value::Array(history).to_string();
    check_key_value("mlflow.log-model.history", &value)?;
    let tags = vec![("mlflow.log-model.history".to_owned(), value)];
    state.store.log_run_data(&caller.audit, &run.id, &RunData { tags, ..RunData::default() }).await?;
    Ok(empty())
}

async fn metric_history(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let run = run_for(&state, &caller, &args, Permission::ModelRead).await?;
    let key = args.str("metric_key")?;
    let limit = usize::try_from(args.opt_i64("max_results")?.unwrap_or(25_000).clamp(1, 25_000)).unwrap_or(25_000);
    let history = state.store.metric_history(&run.id, &key, limit).await?;
    Ok(Json(json!({ "metrics": history.iter().map(metric_json).collect::<Vec<_>>() })))
}

/// Parses MLflow's run filter: clauses joined by `AND`, each `<kind>.<key> <op> <value>`.
fn run_clauses(filter: &str) -> MlflowResult<Vec<RunClause>> {
    use cairn_core::filter::{Filter, Literal, Op, Target};
    let bad = |why: &str| MlflowError::invalid(format!("Invalid filter '{filter}': {why}"));
    // The shared grammar knows `tags.` and `metrics.` but not `params.`: spell those as tags
    // with a marker first, then sort them out.
    let marked = mark_prefixes(filter);
    let parsed = cairn_core::filter::parse(&marked).map_err(|e| bad(&e.message))?;
    let items = match parsed {
        Filter::And(v) => v,
        Filter::Compare(c) => vec![Filter::Compare(c)],
        _ => return Err(bad("run filters take only AND")),
    };
    let mut out = Vec::new();
    for item in items {
        let Filter::Compare(c) = item else {
            return Err(bad("run filters take only AND"));
        };
        let (field, key) = match &c.target {
            Target::Tag(k) => match k.split_once('\u{1}') {
                Some(("m", key)) => (RunField::Metric, key.to_owned()),
                Some(("p", key)) => (RunField::Param, key.to_owned()),
                _ => (RunField::Tag, k.clone()),
            },
            Target::Metric(k) => (RunField::Metric, k.clone()),
            Target::Field(f) => {
                let f = f.strip_prefix("attributes.").or_else(|| f.strip_prefix("attribute.")).unwrap_or(f);
                let f = match f {
                    "run_name" | "status" | "start_time" | "end_time" | "run_id" | "user_id" => f,
                    "run_uuid" => "run_id",
                    other => return Err(bad(&format!("unknown attribute '{other}'"))),
                };
                (RunField::Attribute, f.to_owned())
            }
        };
        let op = match c.op {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            _ => return Err(bad("operators are = != < <= > >= LIKE ILIKE")),
        };
        let [lit] = c.values.as_slice() else {
            return Err(bad("one value per comparison"));
        };
        let numeric = field == RunField::Metric || matches!(key.as_str(), "start_time" | "end_time");
        let value = match (lit, numeric) {
            (Literal::Number(n), true) => Param::Real(n.parse().map_err(|_| bad("not a number"))?),
            (Literal::Text(_), true) => return Err(bad("metrics and times compare with numbers")),
            (Literal::Text(t), false) => Param::from(t.as_str()),
            (Literal::Number(_), false) => return Err(bad("params, tags and attributes compare with quoted strings")),
        };
        if numeric && matches!(op, "LIKE" | "ILIKE") {
            return Err(bad("LIKE compares text"));
        }
        if !numeric && field != RunField::Attribute && matches!(op, "<" | "<=" | ">" | ">=") {
            return Err(bad("params and tags compare with = != LIKE ILIKE"));
        }
        let value = match (value, key.as_str()) {
            (Param::Real(r), "start_time" | "end_time") => Param::Int(r as i64),
            (v, _) => v,
        };
        out.push(RunClause { field, key, op: op.to_owned(), value });
    }
    Ok(out)
}

/// `metrics.x` → ``tags.`m\x01x` ``, `params.x` → ``tags.`p\x01x` `` (also the singular and
/// backquoted spellings), outside quoted strings.
fn mark_prefixes(filter: &str) -> String {
    let mut out = String::with_capacity(filter.len() + 16);
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            out.push(c);
            i += 1;
            continue;
        }
        let at_word_start = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == '.');
        if at_word_start {
            let rest: String = chars[i..].iter().take(8).collect::<String>().to_ascii_lowercase();
            let found = [("metrics.", 'm'), ("metric.", 'm'), ("params.", 'p'), ("param.", 'p')]
                .into_iter()
                .find(|(p, _)| rest.starts_with(p));
            if let Some((prefix, marker)) = found {
                i += prefix.len();
                let key: String = if chars.get(i) == Some(&'`') {
                    let end = chars[i + 1..].iter().position(|&c| c == '`').map_or(chars.len(), |p| i + 1 + p);
                    let k: String = chars[i + 1..end.min(chars.len())].iter().collect();
                    i = (end + 1).min(chars.len());
                    k
                } else {
                    let start = i;
                    while i < chars.len() && (chars[i].is_alphanumeric() || "_-./:".contains(chars[i])) {
                        i += 1;
                    }
                    chars[start..i].iter().collect()
                };
                out.push_str(&format!("tags.`{marker}\u{1}{}`", key.replace('`', "")));
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn run_order(raw: &str) -> MlflowResult<(RunField, String, bool)> {
    let mut parts = raw.split_whitespace();
    let field = parts.next().unwrap_or_default();
    let desc = match parts.next().map(str::to_ascii_uppercase).as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => return Err(MlflowError::invalid(format!("Invalid order_by direction '{other}'"))),
    };
    let (kind, key) = field.split_once('.').unwrap_or(("attributes", field));
    let key = key.trim_matches('`').to_owned();
    let kind = match kind {
        "metrics" | "metric" => RunField::Metric,
        "params" | "param" => RunField::Param,
        "tags" | "tag" => RunField::Tag,
        "attributes" | "attribute" | "attr" | "run" => RunField::Attribute,
        other => return Err(MlflowError::invalid(format!("Invalid order_by entity '{other}'"))),
    };
    Ok((kind, key, desc))
}

async fn search_runs(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let mut ids = Vec::new();
    for raw in args.list("experiment_ids")? {
        let id: i64 = raw.trim().parse().map_err(|_| MlflowError::invalid(format!("Invalid experiment id {raw:?}")))?;
        authorize_experiment(&state, &caller, id, Permission::ModelRead).await?;
        ids.push(id);
    }
    let filter = args.opt_str("filter")?.unwrap_or_default();
    let clauses = if filter.trim().is_empty() { Vec::new() } else { run_clauses(&filter)? };
    let order_by = args.list("order_by")?.iter().map(|o| run_order(o)).collect::<Result<Vec<_>, _>>()?;
    let stage = view_stage(args.opt_str("run_view_type")?)?;
    let limit = max_results(&args, 1000)?;
    let listing = format!("mlflow-runs|{ids:?}|{filter}|{order_by:?}|{stage:?}");
    let offset = offset_of(&state, &listing, &args)?;
    let q =
        RunSearch { experiment_ids: ids, clauses, lifecycle_stage: stage.map(str::to_owned), order_by, limit, offset };
    let mut runs = state.store.search_runs(&q).await?;
    let more = runs.len() > limit;
    runs.truncate(limit);
    let mut out = json!({ "runs": runs.iter().map(run_json).collect::<Vec<_>>() });
    if more {
        out["next_page_token"] = json!(token_for(&state, &listing, offset + limit));
    }
    Ok(Json(out))
}

async fn create_logged_model(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let exp_id = experiment_id(&args)?;
    authorize_experiment(&state, &caller, exp_id, Permission::ModelWrite).await?;
    let name = args.opt_str("name")?.filter(|n| !n.is_empty()).unwrap_or_else(run_name);
    check_name(&name, "logged model")?;
    let source_run = args.opt_str("source_run_id")?.unwrap_or_default();
    if !source_run.is_empty() {
        let run = load_run(&state, &caller, &source_run, Permission::ModelWrite).await?;
        if run.experiment_id != exp_id {
            return Err(MlflowError::invalid(format!("run {source_run} belongs to another experiment")));
        }
    }
    let model_type = args.opt_str("model_type")?.unwrap_or_default();
    let m = state
        .store
        .create_logged_model(
            &caller.audit,
            exp_id,
            &name,
            &model_type,
            &source_run,
            &args.pairs("tags")?,
            &args.pairs("params")?,
        )
        .await?;
    Ok(Json(json!({ "model": logged_model_json(&m) })))
}

async fn get_logged_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> MlflowResult<Json<Value>> {
    let m = logged_model_for(&state, &caller, &id, Permission::ModelRead).await?;
    Ok(Json(json!({ "model": logged_model_json(&m) })))
}

async fn finalize_logged_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    args: Args,
) -> MlflowResult<Json<Value>> {
    logged_model_for(&state, &caller, &id, Permission::ModelWrite).await?;
    let status = args.str("status")?;
    if !["LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED", "LOGGED_MODEL_PENDING"].contains(&status.as_str()) {
        return Err(MlflowError::invalid(format!("Invalid logged model status {status:?}")));
    }
    let m = state.store.finalize_logged_model(&caller.audit, &id, &status).await?;
    Ok(Json(json!({ "model": logged_model_json(&m) })))
}

async fn set_logged_model_tags(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    args: Args,
) -> MlflowResult<Json<Value>> {
    logged_model_for(&state, &caller, &id, Permission::ModelWrite).await?;
    let tags: Vec<(String, Option<String>)> = args.pairs("tags")?.into_iter().map(|(k, v)| (k, Some(v))).collect();
    state.store.update_logged_model(&caller.audit, &id, &tags, &[]).await?;
    Ok(empty())
}

async fn delete_logged_model_tag(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, key)): Path<(String, String)>,
) -> MlflowResult<Json<Value>> {
    logged_model_for(&state, &caller, &id, Permission::ModelWrite).await?;
    state.store.update_logged_model(&caller.audit, &id, &[(key, None)], &[]).await?;
    Ok(empty())
}

async fn log_logged_model_params(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    args: Args,
) -> MlflowResult<Json<Value>> {
    logged_model_for(&state, &caller, &id, Permission::ModelWrite).await?;
    state.store.update_logged_model(&caller.audit, &id, &[], &args.pairs("params")?).await?;
    Ok(empty())
}

async fn search_logged_models(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let mut ids = Vec::new();
    for raw in args.list("experiment_ids")? {
        let id: i64 = raw.trim().parse().map_err(|_| MlflowError::invalid(format!("Invalid experiment id {raw:?}")))?;
        authorize_experiment(&state, &caller, id, Permission::ModelRead).await?;
        ids.push(id);
    }
    // Filters the client sends: `name = '…'` (and `source_run_id = '…'`).
    let filter = args.opt_str("filter")?.unwrap_or_default();
    let (mut name, mut run) = (None, None);
    if !filter.trim().is_empty() {
        use cairn_core::filter::{Filter, Literal, Op, Target};
        let parsed = cairn_core::filter::parse(&filter)
            .map_err(|e| MlflowError::invalid(format!("Invalid filter '{filter}': {}", e.message)))?;
        let items = match parsed {
            Filter::And(v) => v,
            other => vec![other],
        };
        for item in items {
            match item {
                Filter::Compare(c) if c.op == Op::Eq => match (&c.target, c.values.as_slice()) {
                    (Target::Field(f), [Literal::Text(v)]) if f == "name" => name = Some(v.clone()),
                    (Target::Field(f), [Literal::Text(v)]) if f == "source_run_id" => run = Some(v.clone()),
                    _ => {
                        return Err(MlflowError::invalid(
                            "logged models can be filtered by name = '…' and source_run_id = '…'",
                        ));
                    }
                },
                _ => {
                    return Err(MlflowError::invalid(
                        "logged models can be filtered by name = '…' and source_run_id = '…'",
                    ));
                }
            }
        }
    }
    let limit = max_results(&args, 100)?;
    let listing = format!("mlflow-logged-models|{ids:?}|{filter}");
    let offset = offset_of(&state, &listing, &args)?;
    // Name filtering happens on the page; the run filter in SQL.
    let mut models = state.store.search_logged_models(&ids, run.as_deref(), limit, offset).await?;
    let more = models.len() > limit;
    models.truncate(limit);
    if let Some(n) = &name {
        models.retain(|m| &m.name == n);
    }
    if models.is_empty() && !more {
        return Ok(empty());
    }
    let mut out = json!({ "models": models.iter().map(logged_model_json).collect::<Vec<_>>() });
    if more {
        out["next_page_token"] = json!(token_for(&state, &listing, offset + limit));
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_filters_parse() {
        let c = run_clauses("metrics.acc > 0.5 AND params.lr = '0.1' AND tags.team = 'nlp'").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!((c[0].field, c[0].key.as_str(), c[0].op.as_str()), (RunField::Metric, "acc", ">"));
        assert_eq!(c[0].value, Param::Real(0.5));
        assert_eq!((c[1].field, c[1].key.as_str()), (RunField::Param, "lr"));
        assert_eq!((c[2].field, c[2].key.as_str()), (RunField::Tag, "team"));
        let c = run_clauses("attributes.status = 'FINISHED' AND metrics.`my loss` <= 2").unwrap();
        assert_eq!((c[0].field, c[0].key.as_str()), (RunField::Attribute, "status"));
        assert_eq!((c[1].field, c[1].key.as_str()), (RunField::Metric, "my loss"));
        // Inside quotes nothing is rewritten.
        let c = run_clauses("tags.note = 'metrics.acc'").unwrap();
        assert_eq!(c[0].value, Param::from("metrics.acc"));
        assert!(run_clauses("metrics.acc > 'x'").is_err());
        assert!(run_clauses("params.lr > '1'").is_err());
        assert!(run_clauses("metrics.a > 1 OR metrics.b > 1").is_err());
        assert!(run_clauses("attributes.secret = 'x'").is_err());
    }

    #[test]
    fn experiments_belong_to_namespaces() {
        assert_eq!(experiment_namespace("nlp.sentiment"), "nlp");
        assert_eq!(experiment_namespace("Default"), "default");
        assert_eq!(experiment_namespace("/Users/someone@example.com/x"), "default");
        assert_eq!(experiment_name_filter("name = 'a_b'").unwrap(), "a\\_b");
        assert_eq!(experiment_name_filter("name LIKE 'nlp.%'").unwrap(), "nlp.%");
        assert!(experiment_name_filter("tags.x = 'y'").is_err());
    }

    #[test]
    fn non_finite_metrics_are_strings() {
        assert_eq!(number(f64::NAN), json!("NaN"));
        assert_eq!(number(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(number(0.25), json!(0.25));
    }
}
