//! MLflow tracking objects behind the MLflow-compatible API (docs/MLFLOW.md): experiments,
//! runs (params, metrics, tags, dataset inputs), MLflow 3 logged models, and the proxied
//! artifact tree whose files are blobs of the blob store.
//!
//! Every experiment belongs to a Cairn namespace; callers authorise against it before they
//! call in here. Every change is audited in its own transaction, like the rest of the store.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::db::Conn;
use crate::page::placeholders;
use crate::{AuditContext, Param, Store, StoreError, audit, params};

/// An experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    /// MLflow's experiment id (`0` is `Default`).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The Cairn namespace that governs it.
    pub namespace: String,
    /// `mlflow-artifacts:/<id>`.
    pub artifact_location: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    /// Created at (ms).
    pub created_at: i64,
    /// Updated at (ms).
    pub updated_at: i64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A metric value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// Key.
    pub key: String,
    /// Value.
    pub value: f64,
    /// When it was measured (ms).
    pub timestamp: i64,
    /// Training step.
    pub step: i64,
}

/// A run with its data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// 32 hex digits.
    pub id: String,
    /// Its experiment.
    pub experiment_id: i64,
    /// Its experiment's namespace, which governs it.
    pub namespace: String,
    /// Display name.
    pub name: String,
    /// Who ran it.
    pub user_id: String,
    /// `RUNNING`, `SCHEDULED`, `FINISHED`, `FAILED` or `KILLED`.
    pub status: String,
    /// Started at (ms).
    pub start_time: i64,
    /// Ended at (ms).
    pub end_time: Option<i64>,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    /// `mlflow-artifacts:/<experiment>/<run>/artifacts`.
    pub artifact_uri: String,
    /// Parameters.
    pub params: BTreeMap<String, String>,
    /// The latest value of each metric.
    pub metrics: Vec<Metric>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Dataset inputs (MLflow `DatasetInput` JSON objects).
    pub inputs: Vec<serde_json::Value>,
}

/// An MLflow 3 logged model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedModel {
    /// `m-` + 32 hex digits.
    pub id: String,
    /// Its experiment.
    pub experiment_id: i64,
    /// Name given at logging.
    pub name: String,
    /// Where its files are (`mlflow-artifacts:/…`).
    pub artifact_location: String,
    /// `LOGGED_MODEL_PENDING`, `LOGGED_MODEL_READY` or `LOGGED_MODEL_UPLOAD_FAILED`.
    pub status: String,
    /// Free text.
    pub status_message: String,
    /// Flavor or type.
    pub model_type: String,
    /// The run that logged it.
    pub source_run_id: String,
    /// Created at (ms).
    pub created_at: i64,
    /// Updated at (ms).
    pub updated_at: i64,
    /// Created by.
    pub created_by: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Parameters.
    pub params: BTreeMap<String, String>,
}

/// A file of the artifact tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ArtifactFile {
    /// Normalised path (first segment: the experiment id).
    pub path: String,
    /// Hex SHA-256 of its bytes (the blob).
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
}

/// What a run-search clause looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunField {
    /// `metrics.<key>` (the latest value).
    Metric,
    /// `params.<key>`.
    Param,
    /// `tags.<key>`.
    Tag,
    /// `attributes.<name>`: `status`, `run_name`, `start_time`, `end_time`, `run_id`.
    Attribute,
}

/// One clause of a run search (MLflow's run filters have only `AND`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunClause {
    /// Kind of field.
    pub field: RunField,
    /// Metric, param or tag key, or attribute name.
    pub key: String,
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`, `LIKE` or `ILIKE`.
    pub op: String,
    /// The value (numbers for metrics and time attributes).
    pub value: Param,
}

/// A run search.
#[derive(Debug, Clone, Default)]
pub struct RunSearch {
    /// Experiments to search (already authorised).
    pub experiment_ids: Vec<i64>,
    /// Clauses, all of which must hold.
    pub clauses: Vec<RunClause>,
    /// `active`, `deleted` or both (`None`).
    pub lifecycle_stage: Option<String>,
    /// Order by: (`metric`|`param`|`tag`|`attribute`, key, descending).
    pub order_by: Vec<(RunField, String, bool)>,
    /// Page size.
    pub limit: usize,
    /// Rows to skip.
    pub offset: usize,
}

fn experiment_target(id: i64) -> String {
    format!("mlflow-experiment:{id}")
}

fn run_target(id: &str) -> String {
    format!("mlflow-run:{id}")
}

fn logged_model_target(id: &str) -> String {
    format!("mlflow-logged-model:{id}")
}

fn artifact_target(path: &str) -> String {
    format!("mlflow-artifact:{path}")
}

async fn kv(conn: &mut Conn<'_>, sql: &'static str, owner: Param) -> Result<BTreeMap<String, String>, StoreError> {
    let rows: Vec<(String, String)> = conn.fetch_all(sql, vec![owner]).await?;
    Ok(rows.into_iter().collect())
}

type ExperimentRow = (i64, String, String, String, String, i64, i64);

const SELECT_EXPERIMENT: &str =
    "SELECT id, name, namespace, artifact_location, lifecycle_stage, created_at, updated_at FROM mlflow_experiments";

async fn experiment_from(conn: &mut Conn<'_>, row: ExperimentRow) -> Result<Experiment, StoreError> {
    let (id, name, namespace, artifact_location, lifecycle_stage, created_at, updated_at) = row;
    let tags =
        kv(conn, "SELECT key, value FROM mlflow_experiment_tags WHERE experiment_id = $1 ORDER BY key", Param::Int(id))
            .await?;
    Ok(Experiment { id, name, namespace, artifact_location, lifecycle_stage, created_at, updated_at, tags })
}

async fn find_experiment(conn: &mut Conn<'_>, id: i64) -> Result<Option<Experiment>, StoreError> {
    let row: Option<ExperimentRow> =
        conn.fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_EXPERIMENT} WHERE id = $1")), params![id]).await?;
    match row {
        Some(r) => Ok(Some(experiment_from(conn, r).await?)),
        None => Ok(None),
    }
}

/// A run's parameters, tags and dataset inputs as three JSON arrays built by the database
/// (`[[key, value], …]` twice, then the inputs' JSON texts in order), as select-list items
/// over `mlflow_runs r`.
macro_rules! run_extras {
    (sqlite) => {
        "(SELECT json_group_array(json_array(key, value)) FROM mlflow_params WHERE run_id = r.id) AS params, \
         (SELECT json_group_array(json_array(key, value)) FROM mlflow_run_tags WHERE run_id = r.id) AS tags, \
         (SELECT json_group_array(input ORDER BY name, digest) FROM mlflow_run_inputs WHERE run_id = r.id) AS inputs"
    };
    (postgres) => {
        "(SELECT COALESCE(json_agg(json_build_array(key, value)), '[]')::text FROM mlflow_params \
         WHERE run_id = r.id) AS params, \
         (SELECT COALESCE(json_agg(json_build_array(key, value)), '[]')::text FROM mlflow_run_tags \
         WHERE run_id = r.id) AS tags, \
         (SELECT COALESCE(json_agg(input ORDER BY name, digest), '[]')::text FROM mlflow_run_inputs \
         WHERE run_id = r.id) AS inputs"
    };
}

/// Run `$1` with its experiment's namespace and its [`run_extras!`]. A run's experiment is
/// never deleted while it exists (the foreign key cascades), so the join finds it.
macro_rules! select_run {
    ($dialect:tt) => {
        concat!(
            "SELECT r.id, r.experiment_id, e.namespace, r.name, r.user_id, r.status, r.start_time, r.end_time, \
             r.lifecycle_stage, r.artifact_uri, ",
            run_extras!($dialect),
            " FROM mlflow_runs r JOIN mlflow_experiments e ON e.id = r.experiment_id WHERE r.id = $1"
        )
    };
}

fn select_run(backend: crate::db::Backend) -> &'static str {
    match backend {
        crate::db::Backend::Sqlite => select_run!(sqlite),
        crate::db::Backend::Postgres => select_run!(postgres),
    }
}

/// The row of [`select_run`].
#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    experiment_id: i64,
    namespace: String,
    name: String,
    user_id: String,
    status: String,
    start_time: i64,
    end_time: Option<i64>,
    lifecycle_stage: String,
    artifact_uri: String,
    params: String,
    tags: String,
    inputs: String,
}

/// Key/value pairs from a `[[key, value], …]` array of [`select_run`].
fn pairs(json: &str) -> Result<BTreeMap<String, String>, StoreError> {
    let pairs: Vec<(String, String)> = serde_json::from_str(json)
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(format!("a run's key/value pairs: {e}").into())))?;
    Ok(pairs.into_iter().collect())
}

async fn find_run(conn: &mut Conn<'_>, id: &str) -> Result<Run, StoreError> {
    let Some(r) = conn.fetch_optional::<RunRow>(select_run(conn.backend()), params![id]).await? else {
        return Err(StoreError::NotFound(format!("Run with id={id} not found")));
    };
    // The metrics on their own: a float does not survive a JSON round trip in every case
    // (infinities), and as columns of the run's row they would repeat its params and tags.
    let metrics: Vec<(String, f64, i64, i64)> = conn
        .fetch_all(
            "SELECT key, value, timestamp, step FROM mlflow_latest_metrics WHERE run_id = $1 ORDER BY key",
            params![id],
        )
        .await?;
    let metrics =
        metrics.into_iter().map(|(key, value, timestamp, step)| Metric { key, value, timestamp, step }).collect();
    let inputs: Vec<String> = serde_json::from_str(&r.inputs)
        .map_err(|e| StoreError::Database(sqlx::Error::Decode(format!("a run's inputs: {e}").into())))?;
    Ok(Run {
        params: pairs(&r.params)?,
        tags: pairs(&r.tags)?,
        inputs: inputs.into_iter().filter_map(|s| serde_json::from_str(&s).ok()).collect(),
        metrics,
        id: r.id,
        experiment_id: r.experiment_id,
        namespace: r.namespace,
        name: r.name,
        user_id: r.user_id,
        status: r.status,
        start_time: r.start_time,
        end_time: r.end_time,
        lifecycle_stage: r.lifecycle_stage,
        artifact_uri: r.artifact_uri,
    })
}

type LoggedModelRow = (String, i64, String, String, String, String, String, String, i64, String, i64);

const SELECT_LOGGED_MODEL: &str = "SELECT id, experiment_id, name, artifact_location, status, status_message, \
    model_type, source_run_id, created_at, created_by, updated_at FROM mlflow_logged_models";

async fn logged_model_from(conn: &mut Conn<'_>, row: LoggedModelRow) -> Result<LoggedModel, StoreError> {
    let (
        id,
        experiment_id,
        name,
        artifact_location,
        status,
        status_message,
        model_type,
        source_run_id,
        created_at,
        created_by,
        updated_at,
    ) = row;
    let tags =
        kv(conn, "SELECT key, value FROM mlflow_logged_model_tags WHERE model_id = $1 ORDER BY key", Param::from(&id))
            .await?;
    let params = kv(
        conn,
        "SELECT key, value FROM mlflow_logged_model_params WHERE model_id = $1 ORDER BY key",
        Param::from(&id),
    )
    .await?;
    Ok(LoggedModel {
        id,
        experiment_id,
        name,
        artifact_location,
        status,
        status_message,
        model_type,
        source_run_id,
        created_at,
        updated_at,
        created_by,
        tags,
        params,
    })
}

async fn find_logged_model(conn: &mut Conn<'_>, id: &str) -> Result<LoggedModel, StoreError> {
    let row: Option<LoggedModelRow> =
        conn.fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_LOGGED_MODEL} WHERE id = $1")), params![id]).await?;
    match row {
        Some(r) => logged_model_from(conn, r).await,
        None => Err(StoreError::NotFound(format!("Logged model with ID '{id}' not found."))),
    }
}

/// Upserts key/value rows (`table` has columns owner, key, value with a primary key on the
/// first two).
async fn upsert_kv(
    conn: &mut Conn<'_>,
    table: &'static str,
    owner_col: &'static str,
    owner: Param,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    conn.execute(
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} ({owner_col}, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT ({owner_col}, key) DO UPDATE SET value = excluded.value"
        )),
        vec![owner, Param::from(key), Param::from(value)],
    )
    .await?;
    Ok(())
}

/// What a batch of run data holds.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// Metrics (history rows).
    pub metrics: Vec<(Metric, Option<String>)>,
    /// Parameters (a key already set must keep its value).
    pub params: Vec<(String, String)>,
    /// Tags (overwrite).
    pub tags: Vec<(String, String)>,
}

/// Records `file` in the artifact tree (replacing a file at the same path), audited; its
/// blob must be present, and is marked as relied on now.
async fn record_artifact(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    file: &ArtifactFile,
) -> Result<(), StoreError> {
    let present: Option<(String,)> = conn
        .fetch_optional("SELECT state FROM blobs WHERE digest = $1 AND state = 'present'", params![&file.digest])
        .await?;
    if present.is_none() {
        return Err(StoreError::MissingBlobs(format!("blob {} is not stored", file.digest)));
    }
    conn.execute("UPDATE blobs SET last_used_at = $1 WHERE digest = $2", params![now, &file.digest]).await?;
    let before: Option<ArtifactFile> = conn
        .fetch_optional("SELECT path, digest, size FROM mlflow_artifacts WHERE path = $1", params![&file.path])
        .await?;
    conn.execute(
        "INSERT INTO mlflow_artifacts (path, digest, size, created_at, created_by) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (path) DO UPDATE SET digest = excluded.digest, size = excluded.size, \
         created_at = excluded.created_at, created_by = excluded.created_by",
        params![&file.path, &file.digest, file.size, now, &ctx.actor],
    )
    .await?;
    audit::record(conn, ctx, now, "mlflow.artifact.put", &artifact_target(&file.path), before.as_ref(), Some(file))
        .await
}

impl Store {
    /// Creates an experiment in `namespace`; its artifacts live under `mlflow-artifacts:/<id>`.
    pub async fn create_experiment(
        &self,
        ctx: &AuditContext,
        name: &str,
        namespace: &str,
        tags: &[(String, String)],
    ) -> Result<Experiment, StoreError> {
        let now = self.now();
        for _ in 0..5 {
            let mut tx = self.db.begin().await?;
            let mut conn = tx.conn();
            if conn
                .fetch_optional::<(i64,)>("SELECT id FROM mlflow_experiments WHERE name = $1", params![name])
                .await?
                .is_some()
            {
                return Err(StoreError::Conflict(format!("Experiment '{name}' already exists.")));
            }
            let (id,): (i64,) =
                conn.fetch_one("SELECT COALESCE(MAX(id), 0) + 1 FROM mlflow_experiments", vec![]).await?;
            let inserted = conn
                .execute(
                    "INSERT INTO mlflow_experiments (id, name, namespace, artifact_location, lifecycle_stage, \
                     created_at, created_by, updated_at) VALUES ($1, $2, $3, $4, 'active', $5, $6, $5)",
                    params![id, name, namespace, format!("mlflow-artifacts:/{id}"), now, &ctx.actor],
                )
                .await;
            match inserted {
                Err(e) if e.is_unique_violation() => continue,
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            for (k, v) in tags {
                upsert_kv(&mut conn, "mlflow_experiment_tags", "experiment_id", Param::Int(id), k, v).await?;
            }
            let created = find_experiment(&mut conn, id).await?.ok_or_else(|| StoreError::NotFound(name.into()))?;
            audit::record(
                &mut conn,
                ctx,
                now,
                "mlflow.experiment.create",
                &experiment_target(id),
                None::<&()>,
                Some(&created),
            )
            .await?;
            tx.commit().await?;
            return Ok(created);
        }
        Err(StoreError::Busy("many experiments are being created at once; retry".into()))
    }

    /// An experiment by id.
    pub async fn get_experiment(&self, id: i64) -> Result<Option<Experiment>, StoreError> {
        let mut c = self.db.read().await?;
        find_experiment(&mut c.conn(), id).await
    }

    /// An experiment by name.
    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Option<Experiment>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let row: Option<ExperimentRow> = conn
            .fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_EXPERIMENT} WHERE name = $1")), params![name])
            .await?;
        match row {
            Some(r) => Ok(Some(experiment_from(&mut conn, r).await?)),
            None => Ok(None),
        }
    }

    /// Experiments in `namespaces` (all when `None`) whose lifecycle stage is `stage` (any when
    /// `None`), by id, `limit` after id `after`; `name_like` is a `LIKE` pattern.
    pub async fn list_experiments(
        &self,
        namespaces: Option<&[String]>,
        stage: Option<&str>,
        name_like: Option<&str>,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Experiment>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let mut sql = format!("{SELECT_EXPERIMENT} WHERE id > $1");
        let mut ps: Vec<Param> = vec![Param::Int(after.unwrap_or(-1))];
        if let Some(ns) = namespaces {
            if ns.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(&format!(" AND namespace IN {}", placeholders(ps.len() + 1, ns.len())));
            ps.extend(ns.iter().map(Param::from));
        }
        if let Some(s) = stage {
            sql.push_str(&format!(" AND lifecycle_stage = ${}", ps.len() + 1));
            ps.push(Param::from(s));
        }
        if let Some(p) = name_like {
            sql.push_str(&format!(" AND name LIKE ${} ESCAPE '\\'", ps.len() + 1));
            ps.push(Param::from(p));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", ps.len() + 1));
        ps.push(Param::Int(i64::try_from(limit).unwrap_or(1000)));
        let rows: Vec<ExperimentRow> = conn.fetch_all(sqlx::AssertSqlSafe(sql), ps).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(experiment_from(&mut conn, r).await?);
        }
        Ok(out)
    }

    /// Sets an experiment tag.
    pub async fn set_experiment_tag(
        &self,
        ctx: &AuditContext,
        id: i64,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        upsert_kv(&mut conn, "mlflow_experiment_tags", "experiment_id", Param::Int(id), key, value).await?;
        conn.execute("UPDATE mlflow_experiments SET updated_at = $1 WHERE id = $2", params![now, id]).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "mlflow.experiment.tag.set",
            &experiment_target(id),
            None::<&()>,
            Some(&serde_json::json!({ "key": key, "value": value })),
        )
        .await?;
        tx.commit().await
    }

    /// Renames an experiment (`name`) or marks it `deleted`/`active` (`stage`).
    pub async fn update_experiment(
        &self,
        ctx: &AuditContext,
        id: i64,
        name: Option<&str>,
        stage: Option<&str>,
    ) -> Result<Experiment, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find_experiment(&mut conn, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("No Experiment with id={id} exists")))?;
        if let Some(n) = name {
            conn.execute("UPDATE mlflow_experiments SET name = $1, updated_at = $2 WHERE id = $3", params![n, now, id])
                .await
                .map_err(|e| {
                    if e.is_unique_violation() {
                        StoreError::Conflict(format!("Experiment '{n}' already exists."))
                    } else {
                        e
                    }
                })?;
        }
        if let Some(s) = stage {
            conn.execute(
                "UPDATE mlflow_experiments SET lifecycle_stage = $1, updated_at = $2 WHERE id = $3",
                params![s, now, id],
            )
            .await?;
        }
        let after = find_experiment(&mut conn, id).await?.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "mlflow.experiment.update",
            &experiment_target(id),
            Some(&before),
            Some(&after),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Creates a run.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_run(
        &self,
        ctx: &AuditContext,
        experiment_id: i64,
        name: &str,
        user_id: &str,
        start_time: i64,
        tags: &[(String, String)],
    ) -> Result<Run, StoreError> {
        let now = self.now();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let artifact_uri = format!("mlflow-artifacts:/{experiment_id}/{id}/artifacts");
        conn.execute(
            "INSERT INTO mlflow_runs (id, experiment_id, name, user_id, status, start_time, lifecycle_stage, \
             artifact_uri, created_by) VALUES ($1, $2, $3, $4, 'RUNNING', $5, 'active', $6, $7)",
            params![&id, experiment_id, name, user_id, start_time, &artifact_uri, &ctx.actor],
        )
        .await?;
        for (k, v) in tags {
            upsert_kv(&mut conn, "mlflow_run_tags", "run_id", Param::from(&id), k, v).await?;
        }
        let run = find_run(&mut conn, &id).await?;
        audit::record(&mut conn, ctx, now, "mlflow.run.create", &run_target(&id), None::<&()>, Some(&run)).await?;
        tx.commit().await?;
        Ok(run)
    }

    /// A run with its params, latest metrics, tags and inputs.
    pub async fn get_run(&self, id: &str) -> Result<Run, StoreError> {
        let mut c = self.db.read().await?;
        find_run(&mut c.conn(), id).await
    }

    /// Changes a run's status, end time, name or lifecycle stage.
    pub async fn update_run(
        &self,
        ctx: &AuditContext,
        id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        name: Option<&str>,
        stage: Option<&str>,
    ) -> Result<Run, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find_run(&mut conn, id).await?;
        conn.execute(
            "UPDATE mlflow_runs SET status = COALESCE($1, status), end_time = COALESCE($2, end_time), \
             name = COALESCE($3, name), lifecycle_stage = COALESCE($4, lifecycle_stage) WHERE id = $5",
            params![status, end_time, name, stage, id],
        )
        .await?;
        if let Some(n) = name {
            upsert_kv(&mut conn, "mlflow_run_tags", "run_id", Param::from(id), "mlflow.runName", n).await?;
        }
        let after = find_run(&mut conn, id).await?;
        let summary = |r: &Run| serde_json::json!({"status": r.status, "end_time": r.end_time, "name": r.name, "lifecycle_stage": r.lifecycle_stage});
        audit::record(
            &mut conn,
            ctx,
            now,
            "mlflow.run.update",
            &run_target(id),
            Some(&summary(&before)),
            Some(&summary(&after)),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Logs metrics, params and tags of a run in one transaction. A param already logged
    /// with another value is refused (MLflow's rule: params are immutable).
    pub async fn log_run_data(&self, ctx: &AuditContext, run_id: &str, data: &RunData) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let state: Option<(String,)> =
            conn.fetch_optional("SELECT lifecycle_stage FROM mlflow_runs WHERE id = $1", params![run_id]).await?;
        match state {
            None => return Err(StoreError::NotFound(format!("Run with id={run_id} not found"))),
            Some((s,)) if s != "active" => {
                return Err(StoreError::Invalid(format!(
                    "The run {run_id} must be in the 'active' state. Current state is {s}."
                )));
            }
            Some(_) => {}
        }
        for (k, v) in &data.params {
            let old: Option<(String,)> = conn
                .fetch_optional("SELECT value FROM mlflow_params WHERE run_id = $1 AND key = $2", params![run_id, k])
                .await?;
            match old {
                Some((o,)) if &o != v => {
                    return Err(StoreError::Invalid(format!(
                        "Changing param values is not allowed. Param with key='{k}' was already logged with value='{o}' \
                         for run ID='{run_id}'. Attempted logging new value '{v}'."
                    )));
                }
                Some(_) => {}
                None => {
                    conn.execute(
                        "INSERT INTO mlflow_params (run_id, key, value) VALUES ($1, $2, $3)",
                        params![run_id, k, v],
                    )
                    .await?;
                }
            }
        }
        for (m, model_id) in &data.metrics {
            conn.execute(
                "INSERT INTO mlflow_metrics (run_id, key, value, timestamp, step, model_id) VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    Param::from(run_id),
                    Param::from(&m.key),
                    Param::Real(m.value),
                    Param::Int(m.timestamp),
                    Param::Int(m.step),
                    Param::from(model_id.clone()),
                ],
            )
            .await?;
            // The latest value is the one with the highest (step, timestamp), as MLflow does.
            conn.execute(
                "INSERT INTO mlflow_latest_metrics (run_id, key, value, timestamp, step) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp, \
                 step = excluded.step WHERE excluded.step > mlflow_latest_metrics.step \
                 OR (excluded.step = mlflow_latest_metrics.step AND excluded.timestamp >= mlflow_latest_metrics.timestamp)",
                vec![
                    Param::from(run_id),
                    Param::from(&m.key),
                    Param::Real(m.value),
                    Param::Int(m.timestamp),
                    Param::Int(m.step),
                ],
            )
            .await?;
        }
        for (k, v) in &data.tags {
            upsert_kv(&mut conn, "mlflow_run_tags", "run_id", Param::from(run_id), k, v).await?;
            if k == "mlflow.runName" {
                conn.execute("UPDATE mlflow_runs SET name = $1 WHERE id = $2", params![v, run_id]).await?;
            }
        }
        let summary = serde_json::json!({
            "metrics": data.metrics.iter().map(|(m, _)| &m.key).collect::<Vec<_>>(),
            "params": data.params.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "tags": data.tags.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        });
        audit::record(&mut conn, ctx, now, "mlflow.run.log", &run_target(run_id), None::<&()>, Some(&summary)).await?;
        tx.commit().await
    }

    /// Deletes a run tag.
    pub async fn delete_run_tag(&self, ctx: &AuditContext, run_id: &str, key: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let n =
            conn.execute("DELETE FROM mlflow_run_tags WHERE run_id = $1 AND key = $2", params![run_id, key]).await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("No tag with name: {key} in run with id {run_id}")));
        }
        audit::record(
            &mut conn,
            ctx,
            now,
            "mlflow.run.tag.delete",
            &run_target(run_id),
            Some(&serde_json::json!({ "key": key })),
            None::<&()>,
        )
        .await?;
        tx.commit().await
    }

    /// Records dataset inputs of a run (each a `DatasetInput` JSON object, identified by its
    /// dataset's name and digest; logging one again replaces it).
    pub async fn log_run_inputs(
        &self,
        ctx: &AuditContext,
        run_id: &str,
        inputs: &[(String, String, serde_json::Value)],
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        find_run(&mut conn, run_id).await?;
        for (name, digest, input) in inputs {
            conn.execute(
                "INSERT INTO mlflow_run_inputs (run_id, digest, name, input) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (run_id, name, digest) DO UPDATE SET input = excluded.input",
                params![run_id, digest, name, input.to_string()],
            )
            .await?;
        }
        let summary: Vec<_> = inputs.iter().map(|(n, d, _)| serde_json::json!({"name": n, "digest": d})).collect();
        audit::record(&mut conn, ctx, now, "mlflow.run.inputs", &run_target(run_id), None::<&()>, Some(&summary))
            .await?;
        tx.commit().await
    }

    /// The history of one metric of a run, by step and time.
    pub async fn metric_history(&self, run_id: &str, key: &str, limit: usize) -> Result<Vec<Metric>, StoreError> {
        let mut c = self.db.read().await?;
        let rows: Vec<(String, f64, i64, i64)> = c
            .conn()
            .fetch_all(
                "SELECT key, value, timestamp, step FROM mlflow_metrics WHERE run_id = $1 AND key = $2 \
                 ORDER BY step, timestamp LIMIT $3",
                params![run_id, key, i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        Ok(rows.into_iter().map(|(key, value, timestamp, step)| Metric { key, value, timestamp, step }).collect())
    }

    /// Searches runs; returns one row more than `limit` when there are more.
    pub async fn search_runs(&self, q: &RunSearch) -> Result<Vec<Run>, StoreError> {
        if q.experiment_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut ps: Vec<Param> = q.experiment_ids.iter().map(|&i| Param::Int(i)).collect();
        // The page's ids, then each run in one call: its params, tags and inputs in the select
        // list of a sorted listing would be computed for every row sorted, not only the page's.
        let mut sql = format!("SELECT r.id FROM mlflow_runs r WHERE r.experiment_id IN {}", placeholders(1, ps.len()));
        if let Some(s) = &q.lifecycle_stage {
            sql.push_str(&format!(" AND r.lifecycle_stage = ${}", ps.len() + 1));
            ps.push(Param::from(s));
        }
        for c in &q.clauses {
            let n = ps.len() + 1;
            let op = match c.op.as_str() {
                "ILIKE" => "LIKE",
                o => o,
            };
            let (lhs, rhs) = if c.op == "ILIKE" {
                ("lower(x.value)".to_owned(), format!("lower(${n})"))
            } else {
                ("x.value".to_owned(), format!("${n}"))
            };
            let cond = match c.field {
                RunField::Metric => format!(
                    "EXISTS (SELECT 1 FROM mlflow_latest_metrics x WHERE x.run_id = r.id AND x.key = ${} AND x.value {op} {rhs})",
                    n + 1
                ),
                RunField::Param => format!(
                    "EXISTS (SELECT 1 FROM mlflow_params x WHERE x.run_id = r.id AND x.key = ${} AND {lhs} {op} {rhs})",
                    n + 1
                ),
                RunField::Tag => format!(
                    "EXISTS (SELECT 1 FROM mlflow_run_tags x WHERE x.run_id = r.id AND x.key = ${} AND {lhs} {op} {rhs})",
                    n + 1
                ),
                RunField::Attribute => {
                    let col = match c.key.as_str() {
                        "status" => "r.status",
                        "run_name" => "r.name",
                        "start_time" => "r.start_time",
                        "end_time" => "r.end_time",
                        "run_id" => "r.id",
                        "user_id" => "r.user_id",
                        other => {
                            return Err(StoreError::Invalid(format!("Invalid attribute key '{other}' specified.")));
                        }
                    };
                    let l = if c.op == "ILIKE" { format!("lower({col})") } else { col.to_owned() };
                    format!("{l} {op} {rhs}")
                }
            };
            sql.push_str(" AND ");
            sql.push_str(&cond);
            ps.push(c.value.clone());
            if c.field != RunField::Attribute {
                ps.push(Param::from(&c.key));
            }
        }
        let mut order = Vec::new();
        for (field, key, desc) in &q.order_by {
            let dir = if *desc { "DESC" } else { "ASC" };
            let expr = match field {
                RunField::Attribute => match key.as_str() {
                    "start_time" => "r.start_time".to_owned(),
                    "end_time" => "r.end_time".to_owned(),
                    "run_name" => "r.name".to_owned(),
                    "status" => "r.status".to_owned(),
                    other => return Err(StoreError::Invalid(format!("Invalid order_by attribute '{other}'."))),
                },
                RunField::Metric | RunField::Param | RunField::Tag => {
                    let table = match field {
                        RunField::Metric => "mlflow_latest_metrics",
                        RunField::Param => "mlflow_params",
                        _ => "mlflow_run_tags",
                    };
                    let n = ps.len() + 1;
                    ps.push(Param::from(key));
                    format!("(SELECT o.value FROM {table} o WHERE o.run_id = r.id AND o.key = ${n})")
                }
            };
            // Missing values sort last either way, as MLflow does.
            order.push(format!("CASE WHEN {expr} IS NULL THEN 1 ELSE 0 END, {expr} {dir}"));
        }
        order.push("r.start_time DESC".to_owned());
        order.push("r.id".to_owned());
        sql.push_str(&format!(" ORDER BY {} LIMIT ${} OFFSET ${}", order.join(", "), ps.len() + 1, ps.len() + 2));
        ps.push(Param::Int(i64::try_from(q.limit + 1).unwrap_or(i64::MAX)));
        ps.push(Param::Int(i64::try_from(q.offset).unwrap_or(i64::MAX)));
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let ids: Vec<(String,)> = conn.fetch_all(sqlx::AssertSqlSafe(sql), ps).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id,) in ids {
            match find_run(&mut conn, &id).await {
                Ok(run) => out.push(run),
                // Deleted since the page's ids were read.
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Creates a logged model (status pending) under an experiment.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_logged_model(
        &self,
        ctx: &AuditContext,
        experiment_id: i64,
        name: &str,
        model_type: &str,
        source_run_id: &str,
        tags: &[(String, String)],
        params_in: &[(String, String)],
    ) -> Result<LoggedModel, StoreError> {
        let now = self.now();
        let id = format!("m-{}", uuid::Uuid::new_v4().simple());
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let location = format!("mlflow-artifacts:/{experiment_id}/models/{id}/artifacts");
        conn.execute(
            "INSERT INTO mlflow_logged_models (id, experiment_id, name, artifact_location, status, model_type, \
             source_run_id, created_at, created_by, updated_at) \
             VALUES ($1, $2, $3, $4, 'LOGGED_MODEL_PENDING', $5, $6, $7, $8, $7)",
            params![&id, experiment_id, name, &location, model_type, source_run_id, now, &ctx.actor],
        )
        .await?;
        for (k, v) in tags {
            upsert_kv(&mut conn, "mlflow_logged_model_tags", "model_id", Param::from(&id), k, v).await?;
        }
        for (k, v) in params_in {
            upsert_kv(&mut conn, "mlflow_logged_model_params", "model_id", Param::from(&id), k, v).await?;
        }
        let model = find_logged_model(&mut conn, &id).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "mlflow.logged_model.create",
            &logged_model_target(&id),
            None::<&()>,
            Some(&model),
        )
        .await?;
        tx.commit().await?;
        Ok(model)
    }

    /// A logged model.
    pub async fn get_logged_model(&self, id: &str) -> Result<LoggedModel, StoreError> {
        let mut c = self.db.read().await?;
        find_logged_model(&mut c.conn(), id).await
    }

    /// Sets a logged model's status (finalize).
    pub async fn finalize_logged_model(
        &self,
        ctx: &AuditContext,
        id: &str,
        status: &str,
    ) -> Result<LoggedModel, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find_logged_model(&mut conn, id).await?;
        conn.execute(
            "UPDATE mlflow_logged_models SET status = $1, updated_at = $2 WHERE id = $3",
            params![status, now, id],
        )
        .await?;
        let after = find_logged_model(&mut conn, id).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "mlflow.logged_model.finalize",
            &logged_model_target(id),
            Some(&serde_json::json!({"status": before.status})),
            Some(&serde_json::json!({"status": after.status})),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Sets tags (`Some` value) or deletes them (`None`) on a logged model, or logs params.
    pub async fn update_logged_model(
        &self,
        ctx: &AuditContext,
        id: &str,
        tags: &[(String, Option<String>)],
        params_in: &[(String, String)],
    ) -> Result<LoggedModel, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        find_logged_model(&mut conn, id).await?;
        for (k, v) in tags {
            match v {
                Some(v) => upsert_kv(&mut conn, "mlflow_logged_model_tags", "model_id", Param::from(id), k, v).await?,
                None => {
                    let n = conn
                        .execute(
                            "DELETE FROM mlflow_logged_model_tags WHERE model_id = $1 AND key = $2",
                            params![id, k],
                        )
                        .await?;
                    if n == 0 {
                        return Err(StoreError::NotFound(format!("No tag with key {k:?} on logged model {id}")));
                    }
                }
            }
        }
        for (k, v) in params_in {
            upsert_kv(&mut conn, "mlflow_logged_model_params", "model_id", Param::from(id), k, v).await?;
        }
        conn.execute("UPDATE mlflow_logged_models SET updated_at = $1 WHERE id = $2", params![now, id]).await?;
        let after = find_logged_model(&mut conn, id).await?;
        let summary = serde_json::json!({"tags": tags, "params": params_in.iter().map(|(k, _)| k).collect::<Vec<_>>()});
        audit::record(
            &mut conn,
            ctx,
            now,
            "mlflow.logged_model.update",
            &logged_model_target(id),
            None::<&()>,
            Some(&summary),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Logged models of some experiments, newest first, `limit + 1` rows after `offset`.
    pub async fn search_logged_models(
        &self,
        experiment_ids: &[i64],
        source_run_id: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<LoggedModel>, StoreError> {
        if experiment_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut ps: Vec<Param> = experiment_ids.iter().map(|&i| Param::Int(i)).collect();
        let mut sql = format!("{SELECT_LOGGED_MODEL} WHERE experiment_id IN {}", placeholders(1, ps.len()));
        if let Some(r) = source_run_id {
            sql.push_str(&format!(" AND source_run_id = ${}", ps.len() + 1));
            ps.push(Param::from(r));
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id LIMIT ${} OFFSET ${}", ps.len() + 1, ps.len() + 2));
        ps.push(Param::Int(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
        ps.push(Param::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let rows: Vec<LoggedModelRow> = conn.fetch_all(sqlx::AssertSqlSafe(sql), ps).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(logged_model_from(&mut conn, r).await?);
        }
        Ok(out)
    }

    /// Records an artifact file whose blob is present (replacing a file at the same path).
    pub async fn put_artifact(&self, ctx: &AuditContext, file: &ArtifactFile) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        record_artifact(&mut tx.conn(), ctx, now, file).await?;
        tx.commit().await
    }

    /// One artifact file.
    pub async fn get_artifact(&self, path: &str) -> Result<Option<ArtifactFile>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn().fetch_optional("SELECT path, digest, size FROM mlflow_artifacts WHERE path = $1", params![path]).await
    }

    /// The files under directory `dir` (no trailing slash), by path, at most `limit`.
    pub async fn artifacts_under(&self, dir: &str, limit: usize) -> Result<Vec<ArtifactFile>, StoreError> {
        // `dir/` ≤ path < `dir0` ('0' follows '/', byte by byte): an index range, no LIKE
        // escaping.
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let path = crate::db::bytewise(&conn, "path");
        let sql = format!(
            "SELECT path, digest, size FROM mlflow_artifacts WHERE {path} >= $1 AND {path} < $2 ORDER BY {path} LIMIT $3"
        );
        conn.fetch_all(
            sqlx::AssertSqlSafe(sql),
            params![format!("{dir}/"), format!("{dir}0"), i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await
    }

    /// Deletes the file `path` or every file under directory `path`; answers how many.
    pub async fn delete_artifacts(&self, ctx: &AuditContext, path: &str) -> Result<u64, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let column = crate::db::bytewise(&conn, "path");
        let sql = format!("DELETE FROM mlflow_artifacts WHERE path = $1 OR ({column} >= $2 AND {column} < $3)");
        let n = conn.execute(sqlx::AssertSqlSafe(sql), params![path, format!("{path}/"), format!("{path}0")]).await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("artifact {path} does not exist")));
        }
        audit::record(
            &mut conn,
            ctx,
            now,
            "mlflow.artifact.delete",
            &artifact_target(path),
            Some(&serde_json::json!({ "files": n })),
            None::<&()>,
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Starts a multipart upload of the artifact `path` in `num_parts` parts.
    pub async fn create_multipart(
        &self,
        ctx: &AuditContext,
        path: &str,
        num_parts: i64,
        expires_at: i64,
    ) -> Result<MultipartUpload, StoreError> {
        let now = self.now();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute(
            "INSERT INTO mlflow_multipart_uploads (id, path, num_parts, created_at, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![&id, path, num_parts, now, &ctx.actor, expires_at],
        )
        .await?;
        let upload = MultipartUpload { id: id.clone(), path: path.to_owned(), num_parts, expires_at };
        audit::record(
            &mut conn,
            ctx,
            now,
            "mlflow.artifact.multipart.create",
            &artifact_target(path),
            None::<&()>,
            Some(&upload),
        )
        .await?;
        tx.commit().await?;
        Ok(upload)
    }

    /// An open multipart upload that has not expired.
    pub async fn get_multipart(&self, id: &str) -> Result<MultipartUpload, StoreError> {
        let mut c = self.db.read().await?;
        let row: Option<(String, String, i64, i64)> = c
            .conn()
            .fetch_optional(
                "SELECT id, path, num_parts, expires_at FROM mlflow_multipart_uploads WHERE id = $1 AND expires_at > $2",
                params![id, self.now()],
            )
            .await?;
        row.map(|(id, path, num_parts, expires_at)| MultipartUpload { id, path, num_parts, expires_at })
            .ok_or_else(|| StoreError::NotFound(format!("multipart upload {id} does not exist or has expired")))
    }

    /// Records a received part (its bytes are the present blob `digest`); a part sent again
    /// replaces the earlier one.
    pub async fn put_multipart_part(&self, id: &str, part: i64, digest: &str, size: i64) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute(
            "INSERT INTO mlflow_multipart_parts (upload_id, part_number, digest, size) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (upload_id, part_number) DO UPDATE SET digest = excluded.digest, size = excluded.size",
            params![id, part, digest, size],
        )
        .await?;
        tx.commit().await
    }

    /// The parts received so far, by part number.
    pub async fn multipart_parts(&self, id: &str) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_all(
                "SELECT part_number, digest, size FROM mlflow_multipart_parts WHERE upload_id = $1 ORDER BY part_number",
                params![id],
            )
            .await
    }

    /// Ends a multipart upload (completed or aborted); `file` is the joined file when it
    /// completed, recorded in the artifact tree in the same transaction.
    pub async fn finish_multipart(
        &self,
        ctx: &AuditContext,
        id: &str,
        file: Option<&ArtifactFile>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let n = conn.execute("DELETE FROM mlflow_multipart_uploads WHERE id = $1", params![id]).await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("multipart upload {id} does not exist or has ended")));
        }
        match file {
            Some(f) => record_artifact(&mut conn, ctx, now, f).await?,
            None => {
                audit::record(
                    &mut conn,
                    ctx,
                    now,
                    "mlflow.artifact.multipart.abort",
                    &format!("mlflow-multipart:{id}"),
                    None::<&()>,
                    None::<&()>,
                )
                .await?;
            }
        }
        tx.commit().await
    }

    /// Forgets multipart uploads that expired; their part blobs become collectable.
    pub async fn expire_multipart(&self) -> Result<u64, StoreError> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .conn()
            .execute("DELETE FROM mlflow_multipart_uploads WHERE expires_at <= $1", params![self.now()])
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// An open multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MultipartUpload {
    /// Its id (32 hex digits).
    pub id: String,
    /// The artifact path it will write.
    pub path: String,
    /// How many parts the client announced.
    pub num_parts: i64,
    /// When it expires (ms).
    pub expires_at: i64,
}
