//! MLflow's model registry (`model_registry.proto`) on Cairn's models, versions and aliases.
//!
//! Each handler authorises exactly as the native handler of the same operation does (the
//! same permission, the same "other namespaces look missing" rule, denied attempts audited),
//! then calls the same store method, so what is written is indistinguishable from a native
//! write, audit record included.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use cairn_core::filter::{Filter, Literal, Op, Target};
use cairn_core::lifecycle::{Action, Stage};
use cairn_core::{AliasName, FileEntry, FilePath, ModelRef, Permission, TagKey, VersionSelector};
use cairn_store::Cursor;
use cairn_store::model::{ListModels, ModelOrder, ModelPatch, NewModel};
use cairn_store::version::{ListVersions, Version, VersionOrder};
use serde_json::{Value, json};

use super::{Args, MlflowError, MlflowResult, artifacts, empty, kv_list, mlflow_name, model_ref};
use crate::app::AppState;
use crate::auth::Caller;
use crate::routes::models::{check_description, parse_tags};
use crate::routes::versions::new_version;
use crate::routes::{authorize, authorize_model};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/registered-models/create", post(create_registered_model))
        .route("/registered-models/rename", post(rename_registered_model))
        .route("/registered-models/update", axum::routing::patch(update_registered_model))
        .route("/registered-models/delete", axum::routing::delete(delete_registered_model))
        .route("/registered-models/get", get(get_registered_model))
        .route("/registered-models/search", get(search_registered_models))
        .route("/registered-models/get-latest-versions", get(get_latest_versions).post(get_latest_versions))
        .route("/registered-models/set-tag", post(set_registered_model_tag))
        .route("/registered-models/delete-tag", axum::routing::delete(delete_registered_model_tag))
        .route("/registered-models/alias", post(set_alias).delete(delete_alias).get(get_version_by_alias))
        .route("/model-versions/create", post(create_model_version))
        .route("/model-versions/update", axum::routing::patch(update_model_version))
        .route("/model-versions/transition-stage", post(transition_stage))
        .route("/model-versions/delete", axum::routing::delete(delete_model_version))
        .route("/model-versions/get", get(get_model_version))
        .route("/model-versions/search", get(search_model_versions))
        .route("/model-versions/get-download-uri", get(get_download_uri))
        .route("/model-versions/set-tag", post(set_model_version_tag))
        .route("/model-versions/delete-tag", axum::routing::delete(delete_model_version_tag))
}

/// MLflow's legacy stage of a Cairn lifecycle stage.
pub(crate) fn mlflow_stage(stage: &str) -> &'static str {
    match stage {
        "staging" | "approved_prod" => "Staging",
        "production" => "Production",
        "deprecated" | "retired" => "Archived",
        _ => "None",
    }
}

/// The Cairn stages that show as an MLflow stage.
fn cairn_stages(mlflow: &str) -> Option<&'static [&'static str]> {
    match mlflow.to_ascii_lowercase().as_str() {
        "none" => Some(&["draft", "submitted", "changes_requested", "approved_staging"]),
        "staging" => Some(&["staging", "approved_prod"]),
        "production" => Some(&["production"]),
        "archived" => Some(&["deprecated", "retired"]),
        _ => None,
    }
}

fn version_number(args: &Args) -> MlflowResult<i64> {
    let raw = args.str("version")?;
    match raw.trim().parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(MlflowError::invalid(format!("Parameter 'version' must be a positive version number, not {raw:?}"))),
    }
}

/// A model version as MLflow shows it.
pub(crate) fn model_version_json(v: &Version, with_aliases: bool) -> Value {
    let mut o = json!({
        "name": mlflow_name(&v.namespace, &v.model),
        "version": v.version.to_string(),
        "creation_timestamp": v.created_at,
        "last_updated_timestamp": v.updated_at,
        "user_id": v.created_by.strip_prefix("user:").unwrap_or(&v.created_by),
        "current_stage": mlflow_stage(&v.stage),
        "description": v.description,
        "source": v.source,
        "run_id": v.run_id,
        "status": "READY",
        "run_link": "",
    });
    if !v.tags.is_empty() {
        o["tags"] = kv_list(&v.tags);
    }
    if with_aliases && !v.aliases.is_empty() {
        o["aliases"] = json!(v.aliases);
    }
    if let Some(id) = v.metadata.pointer("/mlflow/model_id").and_then(Value::as_str) {
        o["model_id"] = json!(id);
    }
    o
}

fn registered_model_json(m: &cairn_store::model::Model, latest: Option<Vec<Value>>) -> Value {
    let mut o = json!({
        "name": mlflow_name(&m.namespace, &m.name),
        "creation_timestamp": m.created_at,
        "last_updated_timestamp": m.updated_at,
        "user_id": m.created_by.strip_prefix("user:").unwrap_or(&m.created_by),
    });
    if !m.description.is_empty() {
        o["description"] = json!(m.description);
    }
    if !m.tags.is_empty() {
        o["tags"] = kv_list(&m.tags);
    }
    if !m.aliases.is_empty() {
        o["aliases"] =
            Value::Array(m.aliases.iter().map(|(a, v)| json!({"alias": a, "version": v.to_string()})).collect());
    }
    if let Some(latest) = latest.filter(|l| !l.is_empty()) {
        o["latest_versions"] = Value::Array(latest);
    }
    o
}

/// The newest version in each MLflow stage (`stages` empty: every stage).
async fn latest_versions(state: &AppState, model: &ModelRef, stages: &[String]) -> MlflowResult<Vec<Value>> {
    let wanted: Vec<&str> = if stages.is_empty() {
        vec!["None", "Staging", "Production", "Archived"]
    } else {
        stages.iter().map(String::as_str).collect()
    };
    let mut out = Vec::new();
    for stage in wanted {
        let Some(cairn) = cairn_stages(stage) else {
            return Err(MlflowError::invalid(format!(
                "Invalid Model Version stage: {stage}. Value must be one of None, Staging, Production, Archived."
            )));
        };
        let values = cairn.iter().map(|s| Literal::Text((*s).to_owned())).collect();
        let filter = Filter::Compare(cairn_core::filter::Comparison {
            target: Target::Field("stage".into()),
            op: Op::In,
            values,
            position: 0,
        });
        let q =
            ListVersions { filter: Some(filter), order: VersionOrder::Number, descending: true, limit: 1, after: None };
        if let Some(v) = state.store.list_versions(model, &q).await?.items.into_iter().next() {
            out.push(model_version_json(&v, false));
        }
    }
    out.sort_by_key(|v| v["version"].as_str().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0));
    Ok(out)
}

async fn create_registered_model(
    State(state): State<AppState>,
    caller: Caller,
    args: Args,
) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let model = model_ref(&name)?;
    let ns = model.namespace.as_str();
    authorize(&state, &caller, Permission::ModelWrite, Some(ns), "model.create", &format!("model:{model}")).await?;
    let description = args.opt_str("description")?.unwrap_or_default();
    check_description(&description)?;
    let tags = parse_tags(args.pairs("tags")?.into_iter().collect())?;
    let new = NewModel {
        model,
        description,
        tags,
        risk_tier: None,
        team: String::new(),
        owners: vec![caller.principal.username.clone()],
    };
    let m = state.store.create_model(&caller.audit, &new).await.map_err(|e| match e {
        cairn_store::StoreError::Conflict(_) => {
            MlflowError::exists(format!("Registered Model (name={name}) already exists."))
        }
        other => other.into(),
    })?;
    Ok(Json(json!({ "registered_model": registered_model_json(&m, None) })))
}

/// Loads a model the caller may use with `permission`, answering MLflow's "not found".
async fn model_for(
    state: &AppState,
    caller: &Caller,
    name: &str,
    permission: Permission,
    action: &str,
) -> MlflowResult<ModelRef> {
    let model = model_ref(name)?;
    authorize_model(state, caller, permission, &model, action).await.map_err(|e| {
        if e.status == axum::http::StatusCode::NOT_FOUND {
            MlflowError::not_found(format!("Registered Model with name={name} not found"))
        } else {
            e.into()
        }
    })?;
    Ok(model)
}

fn model_missing(name: &str) -> impl FnOnce(cairn_store::StoreError) -> MlflowError + '_ {
    move |e| match e {
        cairn_store::StoreError::NotFound(_) => {
            MlflowError::not_found(format!("Registered Model with name={name} not found"))
        }
        other => other.into(),
    }
}

fn version_missing<'a>(name: &'a str, version: i64) -> impl FnOnce(cairn_store::StoreError) -> MlflowError + 'a {
    move |e| match e {
        cairn_store::StoreError::NotFound(_) => {
            MlflowError::not_found(format!("Model Version (name={name}, version={version}) not found"))
        }
        other => other.into(),
    }
}

async fn get_registered_model(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let model = model_for(&state, &caller, &name, Permission::ModelRead, "model.get").await?;
    let m = state.store.get_model(&model).await.map_err(model_missing(&name))?;
    let latest = latest_versions(&state, &model, &[]).await?;
    Ok(Json(json!({ "registered_model": registered_model_json(&m, Some(latest)) })))
}

async fn rename_registered_model(
    State(state): State<AppState>,
    caller: Caller,
    args: Args,
) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let new_name = args.str("new_name")?;
    let from = model_for(&state, &caller, &name, Permission::ModelDelete, "model.rename").await?;
    let to = model_ref(&new_name)?;
    // The new name's namespace must take the model too.
    authorize(
        &state,
        &caller,
        Permission::ModelWrite,
        Some(to.namespace.as_str()),
        "model.rename",
        &format!("model:{to}"),
    )
    .await?;
    let m = state.store.rename_model(&caller.audit, &from, &to).await.map_err(|e| match e {
        cairn_store::StoreError::Conflict(_) => {
            MlflowError::exists(format!("Registered Model (name={new_name}) already exists."))
        }
        other => model_missing(&name)(other),
    })?;
    Ok(Json(json!({ "registered_model": registered_model_json(&m, None) })))
}

async fn update_registered_model(
    State(state): State<AppState>,
    caller: Caller,
    args: Args,
) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let model = model_for(&state, &caller, &name, Permission::ModelWrite, "model.update").await?;
    let description = args.opt_str("description")?;
    if let Some(d) = &description {
        check_description(d)?;
    }
    let patch = ModelPatch { description, ..ModelPatch::default() };
    let m = state.store.update_model(&caller.audit, &model, &patch).await.map_err(model_missing(&name))?;
    Ok(Json(json!({ "registered_model": registered_model_json(&m, None) })))
}

async fn delete_registered_model(
    State(state): State<AppState>,
    caller: Caller,
    args: Args,
) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let model = model_for(&state, &caller, &name, Permission::ModelDelete, "model.delete").await?;
    state.store.delete_model(&caller.audit, &model).await.map_err(model_missing(&name))?;
    Ok(empty())
}

async fn set_registered_model_tag(
    State(state): State<AppState>,
    caller: Caller,
    args: Args,
) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let key = TagKey::parse(&args.str("key")?)?;
    let value = args.opt_str("value")?.unwrap_or_default();
    let model = model_for(&state, &caller, &name, Permission::ModelWrite, "model.tag.set").await?;
    state.store.set_model_tag(&caller.audit, &model, &key, &value).await.map_err(model_missing(&name))?;
    Ok(empty())
}

async fn delete_registered_model_tag(
    State(state): State<AppState>,
    caller: Caller,
    args: Args,
) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let key = TagKey::parse(&args.str("key")?)?;
    let model = model_for(&state, &caller, &name, Permission::ModelWrite, "model.tag.delete").await?;
    state.store.delete_model_tag(&caller.audit, &model, &key).await?;
    Ok(empty())
}

fn parse_alias(raw: &str) -> MlflowResult<AliasName> {
    AliasName::parse(raw).map_err(|e| MlflowError::invalid(format!("invalid alias {raw:?}: {e}")))
}

async fn set_alias(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let alias = parse_alias(&args.str("alias")?)?;
    let version = version_number(&args)?;
    let model = model_for(&state, &caller, &name, Permission::ModelWrite, "alias.set").await?;
    state.store.set_alias(&caller.audit, &model, &alias, version).await.map_err(version_missing(&name, version))?;
    Ok(empty())
}

async fn delete_alias(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let alias = parse_alias(&args.str("alias")?)?;
    let model = model_for(&state, &caller, &name, Permission::ModelWrite, "alias.delete").await?;
    state.store.delete_alias(&caller.audit, &model, &alias).await.map_err(|e| match e {
        cairn_store::StoreError::NotFound(_) => {
            MlflowError::invalid(format!("Registered model alias {alias} not found."))
        }
        other => other.into(),
    })?;
    Ok(empty())
}

async fn get_version_by_alias(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let alias = parse_alias(&args.str("alias")?)?;
    let model = model_for(&state, &caller, &name, Permission::ModelRead, "version.get").await?;
    let v = state.store.get_version(&model, &VersionSelector::Alias(alias.clone())).await.map_err(|e| match e {
        // MLflow answers a missing alias with INVALID_PARAMETER_VALUE, not a 404.
        cairn_store::StoreError::NotFound(_) => {
            MlflowError::invalid(format!("Registered model alias {alias} not found."))
        }
        other => other.into(),
    })?;
    Ok(Json(json!({ "model_version": model_version_json(&v, true) })))
}

async fn get_latest_versions(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let model = model_for(&state, &caller, &name, Permission::ModelRead, "version.list").await?;
    state.store.get_model(&model).await.map_err(model_missing(&name))?;
    let latest = latest_versions(&state, &model, &args.list("stages")?).await?;
    Ok(Json(json!({ "model_versions": latest })))
}

/// Where an MLflow `source` keeps its files in the artifact tree, if it is one of ours:
/// `mlflow-artifacts:/<path>`, `models:/m-<id>` (a logged model), `runs:/<run>/<path>`.
pub(crate) async fn source_dir(state: &AppState, source: &str) -> MlflowResult<Option<String>> {
    if let Some(rest) = source.strip_prefix("models:/")
        && rest.starts_with("m-")
        && !rest.contains('/')
    {
        let lm = state.store.get_logged_model(rest).await?;
        return Ok(lm.artifact_location.strip_prefix("mlflow-artifacts:/").map(|p| p.trim_matches('/').to_owned()));
    }
    if let Some(rest) = source.strip_prefix("runs:/") {
        let (run_id, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let run = state.store.get_run(run_id).await?;
        let root = run.artifact_uri.strip_prefix("mlflow-artifacts:/").unwrap_or("").trim_matches('/').to_owned();
        return Ok(Some(if sub.trim_matches('/').is_empty() {
            root
        } else {
            format!("{root}/{}", sub.trim_matches('/'))
        }));
    }
    let rest = source.strip_prefix("mlflow-artifacts:").map(|r| {
        // `mlflow-artifacts://host:port/path` names this server too.
        if let Some(h) = r.strip_prefix("//") { h.split_once('/').map_or("", |(_, p)| p) } else { r }
    });
    Ok(rest.map(|p| p.trim_matches('/').to_owned()))
}

async fn create_model_version(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let source = args.str("source")?;
    let model = model_for(&state, &caller, &name, Permission::ModelWrite, "version.create").await?;
    let mut run_id = args.opt_str("run_id")?.unwrap_or_default();
    let model_id = args.opt_str("model_id")?.filter(|s| !s.is_empty());
    let description = args.opt_str("description")?.unwrap_or_default();
    let tags = args.pairs("tags")?;
    // The experiment the caller was found to be allowed to read, if any.
    let mut readable = None;
    // A logged model names its run: the version is linked to it (lineage).
    if let Some(id) = &model_id {
        let lm = state.store.get_logged_model(id).await?;
        artifacts::authorize_experiment(&state, &caller, lm.experiment_id, Permission::ModelRead).await?;
        readable = Some(lm.experiment_id);
        if run_id.is_empty() {
            run_id.clone_from(&lm.source_run_id);
        }
    }
    let mut metadata = serde_json::Map::new();
    let mut run_metrics = std::collections::BTreeMap::new();
    let mut lineage = Vec::new();
    if !run_id.is_empty() {
        // The run's params and latest metrics travel with the version.
        if let Ok(run) = state.store.get_run(&run_id).await {
            artifacts::authorize_in_experiment(
                &state,
                &caller,
                run.experiment_id,
                &run.namespace,
                Permission::ModelRead,
            )
            .await?;
            readable = Some(run.experiment_id);
            let metrics: serde_json::Map<String, Value> =
                run.metrics.iter().map(|m| (m.key.clone(), json!(m.value))).collect();
            run_metrics = run.metrics.iter().map(|m| (m.key.clone(), m.value)).collect();
            metadata.insert(
                "run".into(),
                json!({"run_id": run.id, "experiment_id": run.experiment_id.to_string(), "name": run.name,
                       "params": run.params, "metrics": metrics}),
            );
            // And the run is recorded as the version's training run (lineage), with the
            // parameters a lineage run may keep.
            let mut r = cairn_core::lineage::Run {
                platform: "mlflow".into(),
                id: run.id.clone(),
                uri: String::new(),
                params: run.params.clone(),
            };
            r.keep_valid_params();
            lineage.push(cairn_core::lineage::Upstream::Run(r));
        }
    }
    if let Some(id) = &model_id {
        metadata.insert("model_id".into(), json!(id));
    }
    let mut new =
        new_version(description, source.clone(), run_id, json!({ "mlflow": metadata }), tags.into_iter().collect())?;
    new.training_job = String::new();
    new.lineage = lineage;
    // Files uploaded under the source become the version's files, frozen in its manifest.
    let files = match source_dir(&state, &source).await? {
        Some(dir) if !dir.is_empty() => {
            // Usually in the run's own artifacts, whose experiment was authorised above.
            if readable.is_none() || artifacts::experiment_of(&dir) != readable {
                artifacts::authorize_path(&state, &caller, &dir, Permission::ModelRead).await?;
            }
            artifacts::files_under(&state, &dir).await?
        }
        _ => Vec::new(),
    };
    let v = if files.is_empty() {
        state.store.create_version(&caller.audit, &model, &new).await
    } else {
        new.scans = crate::scanning::scan_files_looked_up(&state, &files).await?;
        let files = files.into_iter().map(|(f, _)| f).collect();
        state.store.create_version_with_files(&caller.audit, &model, &new, files).await
    }
    .map_err(model_missing(&name))?;
    if !run_metrics.is_empty() {
        run_evaluation(&state, &caller, &model, &v, run_metrics).await?;
    }
    Ok(Json(json!({ "model_version": model_version_json(&v, true) })))
}

/// The evaluation suite that takes the metrics of the run a version was registered from.
pub(crate) const RUN_SUITE: &str = "mlflow-run";

/// When the namespace defines the evaluation suite `mlflow-run`, the run's latest metrics
/// are the version's result for it, judged against the suite's thresholds, so that gates
/// requiring the suite see MLflow-logged metrics (docs/MLFLOW.md).
async fn run_evaluation(
    state: &AppState,
    caller: &Caller,
    model: &ModelRef,
    v: &Version,
    metrics: std::collections::BTreeMap<String, f64>,
) -> MlflowResult<()> {
    let suite = match state.store.get_eval_suite(&model.namespace, RUN_SUITE).await {
        Ok(s) => s,
        Err(cairn_store::StoreError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let def: cairn_core::evaluation::SuiteDef = serde_json::from_value(suite.definition)
        .map_err(|e| MlflowError::invalid(format!("the {RUN_SUITE} suite cannot be read: {e}")))?;
    let verdict = def.judge(&metrics);
    let new = cairn_store::evaluation::NewEvalResult {
        suite: RUN_SUITE.to_owned(),
        passed: verdict.passed,
        metrics: serde_json::to_value(&verdict.metrics).unwrap_or_default(),
        config: json!({ "mlflow_run_id": v.run_id }),
        submitted_by: caller.principal.username.clone(),
    };
    state.store.submit_eval_result(&caller.audit, model, &VersionSelector::Number(v.version), &new).await?;
    Ok(())
}

async fn get_model_version(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let n = version_number(&args)?;
    let model = model_for(&state, &caller, &name, Permission::ModelRead, "version.get").await?;
    let v = state.store.get_version(&model, &VersionSelector::Number(n)).await.map_err(version_missing(&name, n))?;
    Ok(Json(json!({ "model_version": model_version_json(&v, true) })))
}

async fn update_model_version(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let n = version_number(&args)?;
    let model = model_for(&state, &caller, &name, Permission::ModelWrite, "version.update").await?;
    let description = args.opt_str("description")?;
    if let Some(d) = &description {
        check_description(d)?;
    }
    let patch = cairn_store::version::VersionPatch { description, ..Default::default() };
    let v = state
        .store
        .update_version(&caller.audit, &model, &VersionSelector::Number(n), &patch)
        .await
        .map_err(version_missing(&name, n))?;
    Ok(Json(json!({ "model_version": model_version_json(&v, true) })))
}

async fn delete_model_version(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let n = version_number(&args)?;
    let model = model_for(&state, &caller, &name, Permission::ModelDelete, "version.delete").await?;
    state
        .store
        .delete_version(&caller.audit, &model, &VersionSelector::Number(n))
        .await
        .map_err(version_missing(&name, n))?;
    Ok(empty())
}

async fn set_model_version_tag(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let n = version_number(&args)?;
    let key = TagKey::parse(&args.str("key")?)?;
    let value = args.opt_str("value")?.unwrap_or_default();
    let model = model_for(&state, &caller, &name, Permission::ModelWrite, "version.tag.set").await?;
    state
        .store
        .set_version_tag(&caller.audit, &model, &VersionSelector::Number(n), &key, &value)
        .await
        .map_err(version_missing(&name, n))?;
    Ok(empty())
}

async fn delete_model_version_tag(
    State(state): State<AppState>,
    caller: Caller,
    args: Args,
) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let n = version_number(&args)?;
    let key = TagKey::parse(&args.str("key")?)?;
    let model = model_for(&state, &caller, &name, Permission::ModelWrite, "version.tag.delete").await?;
    state.store.delete_version_tag(&caller.audit, &model, &VersionSelector::Number(n), &key).await?;
    Ok(empty())
}

async fn get_download_uri(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let n = version_number(&args)?;
    let model = model_for(&state, &caller, &name, Permission::ModelRead, "version.files").await?;
    let v = state.store.get_version(&model, &VersionSelector::Number(n)).await.map_err(version_missing(&name, n))?;
    // A version with files is served from its own manifest: what was registered, whatever
    // happens to the artifact tree later. Other sources are answered as they were given.
    let uri = if v.file_count > 0 {
        format!("mlflow-artifacts:/{}", artifacts::version_dir(&model, n))
    } else {
        v.source.clone()
    };
    Ok(Json(json!({ "artifact_uri": uri })))
}

async fn transition_stage(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    let name = args.str("name")?;
    let n = version_number(&args)?;
    let stage = args.str("stage")?;
    let archive_existing = args.opt_bool("archive_existing_versions")?.unwrap_or(false);
    let model = model_for(&state, &caller, &name, Permission::VersionPromote, "version.promote").await?;
    let selector = VersionSelector::Number(n);
    let s = crate::governance::load(&state, &model, &selector).await.map_err(|e| {
        if e.status == axum::http::StatusCode::NOT_FOUND {
            MlflowError::not_found(format!("Model Version (name={name}, version={n}) not found"))
        } else {
            e.into()
        }
    })?;
    let target = cairn_stages(&stage).ok_or_else(|| {
        MlflowError::invalid(format!(
            "Invalid Model Version stage: {stage}. Value must be one of None, Staging, Production, Archived."
        ))
    })?;
    let current = s.lifecycle.stage;
    if target.contains(&current.as_str()) {
        // Already there: nothing to do, as MLflow.
        let v = state.store.get_version(&model, &selector).await?;
        return Ok(Json(json!({ "model_version": model_version_json(&v, true) })));
    }
    let reason = format!("MLflow stage transition to {stage}");
    let action = match (target[0], current) {
        ("staging", Stage::ApprovedStaging) | ("production", Stage::ApprovedProd) => Action::Promote,
        ("deprecated", Stage::Production) => Action::Deprecate,
        ("deprecated", Stage::Deprecated) => Action::Retire,
        ("staging" | "production", _) => {
            let gate = if target[0] == "staging" { "staging" } else { "production" };
            let msg = format!(
                "Cairn moves version {n} of {name} to {stage} only through its lifecycle: it is {current} now, and \
                 reaching {gate} needs it submitted for review and approved by the reviewer roles of the {gate} gate \
                 (see the version's lifecycle in Cairn); after that this transition promotes it"
            );
            crate::routes::record_denied(&state, &caller, "version.promote", &format!("version:{model}:{n}")).await;
            return Err(MlflowError::denied(msg));
        }
        _ => {
            return Err(MlflowError::denied(format!(
                "version {n} of {name} is {current}: Cairn's lifecycle does not move it to {stage} (versions go \
                 forward only: production → Archived (deprecated) → retired)"
            )));
        }
    };
    // `archive_existing_versions` is MLflow's "the previous production version is archived":
    // Cairn deprecates it unless told to keep it.
    governance_act(&state, &caller, &s, action, &reason, !archive_existing && action == Action::Promote).await?;
    let v = state.store.get_version(&model, &selector).await?;
    Ok(Json(json!({ "model_version": model_version_json(&v, true) })))
}

async fn governance_act(
    state: &AppState,
    caller: &Caller,
    s: &crate::governance::Subject,
    action: Action,
    reason: &str,
    keep_previous: bool,
) -> MlflowResult<()> {
    crate::governance::act(state, caller, s, action, reason, keep_previous).await?;
    Ok(())
}

/// Rewrites MLflow's `name` (`ns.model`) comparisons into Cairn's `full_name` (`ns/model`).
fn rewrite_names(f: Filter) -> Filter {
    match f {
        Filter::And(v) => Filter::And(v.into_iter().map(rewrite_names).collect()),
        Filter::Or(v) => Filter::Or(v.into_iter().map(rewrite_names).collect()),
        // MLflow's `tags.k != 'v'` also holds for entities without the tag (its client
        // filters prompts out with `tag.mlflow.prompt.is_prompt != 'true'` on every search).
        Filter::Compare(c) if matches!(c.target, Target::Tag(_)) && c.op == Op::Ne => {
            let missing = cairn_core::filter::Comparison {
                target: c.target.clone(),
                op: Op::IsNull,
                values: Vec::new(),
                position: c.position,
            };
            Filter::Or(vec![Filter::Compare(missing), Filter::Compare(c)])
        }
        Filter::Compare(mut c) => {
            if let Target::Field(field) = &c.target {
                let bare = field.rsplit('.').next().unwrap_or(field).to_ascii_lowercase();
                if bare == "name" {
                    let pattern = matches!(c.op, Op::Like | Op::ILike | Op::NotLike | Op::NotILike);
                    c.target = Target::Field("full_name".into());
                    c.values = c
                        .values
                        .into_iter()
                        .map(|l| match l {
                            Literal::Text(t) => Literal::Text(cairn_full_name(&t, pattern)),
                            other => other,
                        })
                        .collect();
                }
            }
            Filter::Compare(c)
        }
    }
}

/// `ns.model` → `ns/model`; `model` → `default/model`. In a `LIKE` pattern the first dot
/// becomes the slash, and a pattern without a dot is left alone.
fn cairn_full_name(mlflow: &str, pattern: bool) -> String {
    match mlflow.split_once('.') {
        Some((ns, rest)) if !ns.is_empty() => format!("{ns}/{rest}"),
        _ if pattern => mlflow.to_owned(),
        _ => format!("default/{mlflow}"),
    }
}

fn parse_filter(raw: Option<String>) -> MlflowResult<Option<Filter>> {
    let Some(raw) = raw.filter(|f| !f.trim().is_empty()) else {
        return Ok(None);
    };
    let f = cairn_core::filter::parse(&raw)
        .map_err(|e| MlflowError::invalid(format!("Invalid filter '{raw}': {}", e.message)))?;
    Ok(Some(rewrite_names(f)))
}

fn order_key(args: &Args, allowed: &[(&str, &str)], default: &str) -> MlflowResult<(String, bool)> {
    let orders = args.list("order_by")?;
    let Some(first) = orders.first() else {
        return Ok((default.to_owned(), false));
    };
    let mut parts = first.split_whitespace();
    let field = parts.next().unwrap_or_default();
    let field = field.strip_prefix("attribute.").or_else(|| field.strip_prefix("attributes.")).unwrap_or(field);
    let desc = match parts.next().map(str::to_ascii_uppercase).as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => return Err(MlflowError::invalid(format!("Invalid order_by direction '{other}'"))),
    };
    let Some((_, ours)) = allowed.iter().find(|(theirs, _)| *theirs == field) else {
        let names: Vec<&str> = allowed.iter().map(|(t, _)| *t).collect();
        return Err(MlflowError::invalid(format!(
            "Invalid order_by clause '{first}': order by one of {}",
            names.join(", ")
        )));
    };
    Ok(((*ours).to_owned(), desc))
}

fn max_results(args: &Args, default: i64, most: i64) -> MlflowResult<usize> {
    let n = args.opt_i64("max_results")?.unwrap_or(default);
    if n < 1 || n > most {
        return Err(MlflowError::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied. It must be between 1 and {most}."
        )));
    }
    Ok(usize::try_from(n.min(1000)).unwrap_or(1000))
}

fn readable_namespaces(caller: &Caller) -> MlflowResult<Option<Vec<String>>> {
    caller.principal.require_mfa().map_err(crate::error::ApiError::from)?;
    Ok(caller.principal.namespaces_for(Permission::ModelRead).into_list())
}

fn page_after(state: &AppState, listing: &str, args: &Args) -> MlflowResult<Option<Cursor>> {
    args.opt_str("page_token")?
        .filter(|t| !t.is_empty())
        .map(|t| state.page_tokens.decode(listing, &t))
        .transpose()
        .map_err(|_| MlflowError::invalid("Invalid page token, could not base64-decode"))
}

async fn search_registered_models(
    State(state): State<AppState>,
    caller: Caller,
    args: Args,
) -> MlflowResult<Json<Value>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "model.list", "models").await?;
    let namespaces = readable_namespaces(&caller)?;
    let limit = max_results(&args, 100, 1000)?;
    let (field, descending) = order_key(
        &args,
        &[("name", "name"), ("creation_timestamp", "created_at"), ("last_updated_timestamp", "updated_at")],
        "name",
    )?;
    let order = match field.as_str() {
        "created_at" => ModelOrder::CreatedAt,
        "updated_at" => ModelOrder::UpdatedAt,
        _ => ModelOrder::Name,
    };
    let raw_filter = args.opt_str("filter")?;
    let listing = format!("mlflow-models|{field}|{descending}|{}", raw_filter.as_deref().unwrap_or(""));
    let filter = parse_filter(raw_filter)?;
    let after = page_after(&state, &listing, &args)?;
    let page = state.store.list_models(&ListModels { filter, order, descending, limit, after, namespaces }).await?;
    let mut out = json!({
        "registered_models": page.items.iter().map(|m| registered_model_json(m, None)).collect::<Vec<_>>(),
    });
    if let Some(c) = page.next {
        out["next_page_token"] = json!(state.page_tokens.encode(&listing, &c));
    }
    Ok(Json(out))
}

async fn search_model_versions(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<Json<Value>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "version.list", "versions").await?;
    let namespaces = readable_namespaces(&caller)?;
    let limit = max_results(&args, 1000, 200_000)?;
    let (field, descending) = order_key(
        &args,
        &[
            ("version_number", "version"),
            ("name", "version"),
            ("creation_timestamp", "created_at"),
            ("last_updated_timestamp", "updated_at"),
        ],
        "version",
    )?;
    // Without an order, newest versions first, as MLflow lists them.
    let descending = descending || args.list("order_by")?.is_empty();
    let order = match field.as_str() {
        "created_at" => VersionOrder::CreatedAt,
        "updated_at" => VersionOrder::UpdatedAt,
        _ => VersionOrder::Number,
    };
    let raw_filter = args.opt_str("filter")?;
    let listing = format!("mlflow-versions|{field}|{descending}|{}", raw_filter.as_deref().unwrap_or(""));
    let filter = parse_filter(raw_filter)?;
    let after = page_after(&state, &listing, &args)?;
    // `name = '…'` (what the client sends nearly always) reads one model's versions by its
    // index instead of searching every version.
    let (one, filter) = one_model(filter);
    let q = ListVersions { filter, order, descending, limit, after };
    let page = match one {
        Some(model) => {
            if caller.principal.check(Permission::ModelRead, Some(model.namespace.as_str())).is_err() {
                cairn_store::Page { items: Vec::new(), next: None }
            } else {
                match state.store.list_versions(&model, &q).await {
                    Err(cairn_store::StoreError::NotFound(_)) => cairn_store::Page { items: Vec::new(), next: None },
                    other => other?,
                }
            }
        }
        None => state.store.search_versions(namespaces.as_deref(), &q).await?,
    };
    let mut out = json!({
        "model_versions": page.items.iter().map(|v| model_version_json(v, true)).collect::<Vec<_>>(),
    });
    if let Some(c) = page.next {
        out["next_page_token"] = json!(state.page_tokens.encode(&listing, &c));
    }
    Ok(Json(out))
}

/// Splits `full_name = 'ns/model'` off a filter (alone or one clause of a top-level `AND`):
/// the model, and what is left of the filter.
fn one_model(filter: Option<Filter>) -> (Option<ModelRef>, Option<Filter>) {
    let is_name = |f: &Filter| match f {
        Filter::Compare(c) if c.op == Op::Eq && matches!(&c.target, Target::Field(n) if n == "full_name") => {
            match c.values.as_slice() {
                [Literal::Text(t)] => ModelRef::parse(t).ok(),
                _ => None,
            }
        }
        _ => None,
    };
    match filter {
        Some(f) => {
            if let Some(m) = is_name(&f) {
                return (Some(m), None);
            }
            match f {
                Filter::And(items) => {
                    let Some(i) = items.iter().position(|c| is_name(c).is_some()) else {
                        return (None, Some(Filter::And(items)));
                    };
                    let model = is_name(&items[i]);
                    let mut rest = items;
                    rest.remove(i);
                    let rest = match rest.len() {
                        0 => None,
                        1 => rest.pop(),
                        _ => Some(Filter::And(rest)),
                    };
                    (model, rest)
                }
                other => (None, Some(other)),
            }
        }
        None => (None, None),
    }
}

/// Checks a relative file path of a version.
pub(crate) fn file_entry(path: &str, size: i64, digest: &str) -> MlflowResult<FileEntry> {
    Ok(FileEntry {
        path: FilePath::parse(path).map_err(|e| MlflowError::invalid(format!("artifact path {path:?}: {e}")))?,
        size: u64::try_from(size).unwrap_or(0),
        sha256: digest.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_clause_picks_one_model() {
        let (m, rest) = one_model(parse_filter(Some("name = 'nlp.bert'".into())).unwrap());
        assert_eq!(m.unwrap().to_string(), "nlp/bert");
        assert!(rest.is_none());
        let (m, rest) =
            one_model(parse_filter(Some("version_number > 2 AND name = 'nlp.bert' AND tags.k = 'v'".into())).unwrap());
        assert_eq!(m.unwrap().to_string(), "nlp/bert");
        assert!(matches!(rest, Some(Filter::And(ref v)) if v.len() == 2), "{rest:?}");
        let (m, rest) = one_model(parse_filter(Some("name LIKE 'nlp.%'".into())).unwrap());
        assert!(m.is_none() && rest.is_some());
        let (m, _) = one_model(parse_filter(Some("name = 'a.b' OR name = 'c.d'".into())).unwrap());
        assert!(m.is_none(), "only a top-level AND narrows to one model");
    }

    #[test]
    fn stages_map_onto_the_lifecycle() {
        assert_eq!(mlflow_stage("draft"), "None");
        assert_eq!(mlflow_stage("approved_staging"), "None");
        assert_eq!(mlflow_stage("staging"), "Staging");
        assert_eq!(mlflow_stage("approved_prod"), "Staging");
        assert_eq!(mlflow_stage("production"), "Production");
        assert_eq!(mlflow_stage("retired"), "Archived");
        for (m, c) in
            [("None", "draft"), ("Staging", "staging"), ("Production", "production"), ("Archived", "deprecated")]
        {
            assert!(cairn_stages(m).unwrap().contains(&c));
            assert_eq!(mlflow_stage(c), m);
        }
        assert!(cairn_stages("Shipping").is_none());
        assert!(cairn_stages("production").is_some(), "stages are case-insensitive, as MLflow's");
    }

    #[test]
    fn filters_speak_mlflow_names() {
        let f = parse_filter(Some("name = 'nlp.bert' AND tags.k = 'v'".into())).unwrap().unwrap();
        let text = format!("{f:?}");
        assert!(text.contains("full_name") && text.contains("nlp/bert"), "{text}");
        let f = parse_filter(Some("name LIKE 'nlp.%'".into())).unwrap().unwrap();
        assert!(format!("{f:?}").contains("nlp/%"));
        let f = parse_filter(Some("name = 'iris'".into())).unwrap().unwrap();
        assert!(format!("{f:?}").contains("default/iris"));
        let f = parse_filter(Some("tag.`mlflow.prompt.is_prompt` != 'true'".into())).unwrap().unwrap();
        assert!(matches!(&f, Filter::Or(v) if v.len() == 2), "untagged models pass a tag inequality: {f:?}");
        let f = parse_filter(Some("name LIKE '%iris%'".into())).unwrap().unwrap();
        assert!(format!("{f:?}").contains("\"%iris%\""));
        assert!(parse_filter(Some("name = ".into())).is_err());
        assert!(parse_filter(Some("  ".into())).unwrap().is_none());
    }
}
