//! Environments, deployment records, rollbacks and SLO reports (docs/DEPLOYMENTS.md).
//!
//! Every change is one transaction with its audit event and, for deployments and rollbacks,
//! the webhook deliveries that tell deployment tooling (`deployment.recorded`,
//! `deployment.rolled_back`). Whether a version may go to a production environment at all
//! (its stage, its signature) is checked by the server before it calls in; the store checks
//! the stage again inside the transaction, so a version withdrawn meanwhile cannot slip in.

use cairn_core::deploy::{Measured, Slo, Status, Strategy, check_environment_name};
use cairn_core::{ModelRef, VersionSelector};
use serde::Serialize;
use serde_json::{Value, json};

use crate::db::Conn;
use crate::version::find as find_version;
use crate::{AuditContext, Store, StoreError, audit, params, webhook};

/// Stages a version may be in to be recorded as deployed to a production environment.
pub const PRODUCTION_STAGES: [&str; 2] = ["approved_prod", "production"];
/// Stages a version may be in to be rolled back to in a production environment: also
/// `deprecated`, which is what the version production ran before becomes on promotion.
pub const ROLLBACK_STAGES: [&str; 3] = ["approved_prod", "production", "deprecated"];

/// An environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Environment {
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    pub description: String,
    /// Only approved, signed versions may be deployed here.
    pub production: bool,
    pub slo: Slo,
    /// A breaching SLO report rolls the deployment back by itself.
    pub auto_rollback: bool,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
}

#[derive(sqlx::FromRow)]
struct EnvRow {
    id: i64,
    name: String,
    description: String,
    production: bool,
    slo: String,
    auto_rollback: bool,
    created_at: i64,
    created_by: String,
    updated_at: i64,
    updated_by: String,
}

impl From<EnvRow> for Environment {
    fn from(r: EnvRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            description: r.description,
            production: r.production,
            slo: serde_json::from_str(&r.slo).unwrap_or_default(),
            auto_rollback: r.auto_rollback,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        }
    }
}

/// What an environment is made of (creation and replacement).
#[derive(Debug, Clone, Default)]
pub struct EnvironmentSpec {
    pub description: String,
    pub production: bool,
    pub slo: Slo,
    pub auto_rollback: bool,
}

/// A deployment record.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Deployment {
    pub id: i64,
    pub environment: String,
    /// `namespace/name`.
    pub model: String,
    #[serde(skip)]
    pub namespace: String,
    pub version: i64,
    pub strategy: String,
    pub traffic_percent: i64,
    /// JSON object: the configuration deployed.
    pub config: String,
    pub status: String,
    pub reason: String,
    /// The deployment this one rolled back.
    pub rollback_of: Option<i64>,
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
    pub updated_by: String,
}

const DEPLOYMENT_SELECT: &str = "SELECT d.id, e.name AS environment, m.full_name AS model, n.name AS namespace, \
     d.number AS version, d.strategy, d.traffic_percent, d.config, d.status, d.reason, d.rollback_of, d.created_at, \
     d.created_by, d.updated_at, d.updated_by FROM deployments d JOIN environments e ON e.id = d.environment_id \
     JOIN models m ON m.id = d.model_id JOIN namespaces n ON n.id = m.namespace_id";

/// What to record.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub strategy: Strategy,
    pub traffic_percent: i64,
    pub config: Value,
    pub status: Status,
}

/// A stored SLO report and what it led to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloOutcome {
    pub report_id: i64,
    pub measured: Measured,
    /// The objectives breached (`error_rate 0.09 > 0.05`).
    pub breaches: Vec<String>,
    /// The rollback it triggered, if any.
    pub rollback: Option<Deployment>,
    /// Why a breach did not roll back although the environment rolls back automatically.
    pub not_rolled_back: Option<String>,
}

fn deployment_target(d: &Deployment) -> String {
    format!("deployment:{}:{}:{}", d.environment, d.model, d.id)
}

async fn env_by_name(conn: &mut Conn<'_>, name: &str) -> Result<Environment, StoreError> {
    let row: Option<EnvRow> = conn
        .fetch_optional(
            "SELECT id, name, description, production, slo, auto_rollback, created_at, created_by, updated_at, \
             updated_by FROM environments WHERE name = $1",
            params![name],
        )
        .await?;
    row.map(Environment::from).ok_or_else(|| StoreError::NotFound(format!("environment \"{name}\" does not exist")))
}

async fn deployment_by_id(conn: &mut Conn<'_>, id: i64) -> Result<Deployment, StoreError> {
    conn.fetch_optional(sqlx::AssertSqlSafe(format!("{DEPLOYMENT_SELECT} WHERE d.id = $1")), params![id])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("deployment {id} does not exist")))
}

/// The deployment that runs (or is about to run) `model_id` in `env_id`: the newest active one.
async fn current(conn: &mut Conn<'_>, env_id: i64, model_id: i64) -> Result<Option<Deployment>, StoreError> {
    conn.fetch_optional(
        sqlx::AssertSqlSafe(format!(
            "{DEPLOYMENT_SELECT} WHERE d.environment_id = $1 AND d.model_id = $2 \
             AND d.status IN ('pending', 'in_progress', 'succeeded') ORDER BY d.id DESC LIMIT 1"
        )),
        params![env_id, model_id],
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn insert_deployment(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    env: &Environment,
    model: &ModelRef,
    selector: &VersionSelector,
    new: &NewDeployment,
    reason: &str,
    rollback_of: Option<i64>,
) -> Result<Deployment, StoreError> {
    let v = find_version(conn, model, selector).await?;
    let allowed: &[&str] = if rollback_of.is_some() { &ROLLBACK_STAGES } else { &PRODUCTION_STAGES };
    if env.production && !allowed.contains(&v.stage.as_str()) {
        return Err(StoreError::Conflict(format!(
            "{model}:{} is {}: only versions in {} may go to the production environment \"{}\"",
            v.version,
            v.stage,
            allowed.join(", "),
            env.name
        )));
    }
    let (model_id,): (i64,) = conn.fetch_one("SELECT model_id FROM versions WHERE id = $1", params![v.id]).await?;
    let (id,): (i64,) = conn
        .fetch_one(
            "INSERT INTO deployments (environment_id, model_id, version_id, number, strategy, traffic_percent, config, \
             status, reason, rollback_of, created_at, created_by, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $11, $12) RETURNING id",
            params![
                env.id,
                model_id,
                v.id,
                v.version,
                new.strategy.as_str(),
                new.traffic_percent,
                new.config.to_string(),
                new.status.as_str(),
                reason,
                rollback_of,
                now,
                &ctx.actor
            ],
        )
        .await?;
    let d = deployment_by_id(conn, id).await?;
    if new.status == Status::Succeeded {
        supersede(conn, ctx, now, &d).await?;
    }
    Ok(d)
}

/// When `d` succeeds, the deployments it replaced in its environment are superseded.
async fn supersede(conn: &mut Conn<'_>, ctx: &AuditContext, now: i64, d: &Deployment) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE deployments SET status = 'superseded', updated_at = $1, updated_by = $2 \
         WHERE environment_id = (SELECT environment_id FROM deployments WHERE id = $3) \
         AND model_id = (SELECT model_id FROM deployments WHERE id = $3) AND id < $3 \
         AND status IN ('pending', 'in_progress', 'succeeded')",
        params![now, &ctx.actor, d.id],
    )
    .await?;
    Ok(())
}

fn payload(d: &Deployment, extra: Value) -> Value {
    let mut p = json!({
        "deployment": {"id": d.id, "environment": d.environment, "model": d.model, "version": d.version,
                       "strategy": d.strategy, "traffic_percent": d.traffic_percent, "status": d.status,
                       "reason": d.reason, "rollback_of": d.rollback_of,
                       "config": serde_json::from_str::<Value>(&d.config).unwrap_or(Value::Null)},
    });
    if let (Some(o), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    p
}

/// Rolls the current deployment of `model` in `env` back to `to` (or to the version that ran
/// before it), inside the caller's transaction: the current one becomes `rolled_back`, a new
/// `pending` deployment of the target is recorded with `rollback_of`, audited, and
/// `deployment.rolled_back` goes to the namespace's webhooks.
#[allow(clippy::too_many_arguments)]
async fn rollback_in(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    env: &Environment,
    model: &ModelRef,
    to: Option<&VersionSelector>,
    reason: &str,
    trigger: &str,
) -> Result<Deployment, StoreError> {
    let (model_id,): (i64,) = conn
        .fetch_optional("SELECT id FROM models WHERE full_name = $1", params![model.to_string()])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("model \"{model}\" does not exist")))?;
    let Some(cur) = current(conn, env.id, model_id).await? else {
        return Err(StoreError::Conflict(format!(
            "nothing of {model} is deployed in \"{}\": there is nothing to roll back",
            env.name
        )));
    };
    let target = match to {
        Some(sel) => sel.clone(),
        None => {
            // The newest earlier deployment of another version that went live.
            let prev: Option<(i64,)> = conn
                .fetch_optional(
                    "SELECT number FROM deployments WHERE environment_id = $1 AND model_id = $2 AND id < $3 \
                     AND number <> $4 AND status IN ('succeeded', 'superseded', 'rolled_back') \
                     AND version_id IS NOT NULL ORDER BY id DESC LIMIT 1",
                    params![env.id, model_id, cur.id, cur.version],
                )
                .await?;
            let Some((n,)) = prev else {
                return Err(StoreError::Conflict(format!(
                    "no earlier version of {model} ran in \"{}\": say which version to roll back to",
                    env.name
                )));
            };
            VersionSelector::Number(n)
        }
    };
    conn.execute(
        "UPDATE deployments SET status = 'rolled_back', updated_at = $1, updated_by = $2, reason = $3 WHERE id = $4",
        params![now, &ctx.actor, reason, cur.id],
    )
    .await?;
    let new = NewDeployment {
        strategy: Strategy::Direct,
        traffic_percent: 100,
        config: cur_config(&cur),
        status: Status::Pending,
    };
    let d = insert_deployment(conn, ctx, now, env, model, &target, &new, reason, Some(cur.id)).await?;
    if d.version == cur.version {
        return Err(StoreError::Conflict(format!("{model}:{} is what runs in \"{}\" already", d.version, env.name)));
    }
    let summary = json!({"from": cur.version, "to": d.version, "trigger": trigger, "reason": reason});
    audit::record(conn, ctx, now, "deployment.rollback", &deployment_target(&d), Some(&cur), Some(&summary)).await?;
    webhook::enqueue(
        conn,
        now,
        model.namespace.as_str(),
        "deployment.rolled_back",
        &payload(&d, json!({"rolled_back": {"id": cur.id, "version": cur.version}, "trigger": trigger})),
    )
    .await?;
    Ok(d)
}

/// A rollback redeploys the configuration that ran with the version it replaces.
fn cur_config(cur: &Deployment) -> Value {
    serde_json::from_str(&cur.config).unwrap_or_else(|_| json!({}))
}

impl Store {
    /// Creates or replaces an environment (audited as `environment.put`).
    pub async fn put_environment(
        &self,
        ctx: &AuditContext,
        name: &str,
        spec: &EnvironmentSpec,
    ) -> Result<Environment, StoreError> {
        check_environment_name(name).map_err(|e| StoreError::Invalid(e.0))?;
        spec.slo.check().map_err(|e| StoreError::Invalid(e.0))?;
        if spec.description.len() > 2000 {
            return Err(StoreError::Invalid("an environment's description is at most 2000 bytes".into()));
        }
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = env_by_name(&mut conn, name).await.ok();
        let slo = serde_json::to_string(&spec.slo).unwrap_or_else(|_| "{}".into());
        if before.is_some() {
            conn.execute(
                "UPDATE environments SET description = $1, production = $2, slo = $3, auto_rollback = $4, \
                 updated_at = $5, updated_by = $6 WHERE name = $7",
                params![&spec.description, spec.production, slo, spec.auto_rollback, now, &ctx.actor, name],
            )
            .await?;
        } else {
            conn.execute(
                "INSERT INTO environments (name, description, production, slo, auto_rollback, created_at, created_by, \
                 updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $7)",
                params![name, &spec.description, spec.production, slo, spec.auto_rollback, now, &ctx.actor],
            )
            .await?;
        }
        let env = env_by_name(&mut conn, name).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "environment.put",
            &format!("environment:{name}"),
            before.as_ref(),
            Some(&env),
        )
        .await?;
        tx.commit().await?;
        Ok(env)
    }

    /// Every environment, by name.
    pub async fn list_environments(&self) -> Result<Vec<Environment>, StoreError> {
        let rows: Vec<EnvRow> = self
            .db
            .read()
            .await?
            .conn()
            .fetch_all(
                "SELECT id, name, description, production, slo, auto_rollback, created_at, created_by, updated_at, \
                 updated_by FROM environments ORDER BY name",
                vec![],
            )
            .await?;
        Ok(rows.into_iter().map(Environment::from).collect())
    }

    /// One environment.
    pub async fn get_environment(&self, name: &str) -> Result<Environment, StoreError> {
        env_by_name(&mut self.db.read().await?.conn(), name).await
    }

    /// Records a deployment of a version to an environment (audited as `deployment.record`,
    /// announced as `deployment.recorded`).
    pub async fn record_deployment(
        &self,
        ctx: &AuditContext,
        environment: &str,
        model: &ModelRef,
        selector: &VersionSelector,
        new: &NewDeployment,
    ) -> Result<Deployment, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let env = env_by_name(&mut conn, environment).await?;
        let d = insert_deployment(&mut conn, ctx, now, &env, model, selector, new, "", None).await?;
        audit::record(&mut conn, ctx, now, "deployment.record", &deployment_target(&d), None::<&()>, Some(&d)).await?;
        webhook::enqueue(&mut conn, now, model.namespace.as_str(), "deployment.recorded", &payload(&d, json!({})))
            .await?;
        tx.commit().await?;
        Ok(d)
    }

    /// One deployment.
    pub async fn get_deployment(&self, id: i64) -> Result<Deployment, StoreError> {
        deployment_by_id(&mut self.db.read().await?.conn(), id).await
    }

    /// Moves a deployment on (`pending` → `in_progress` → `succeeded` | `failed`), audited as
    /// `deployment.status`; a success supersedes what ran before it.
    pub async fn set_deployment_status(
        &self,
        ctx: &AuditContext,
        id: i64,
        status: Status,
        reason: &str,
    ) -> Result<Deployment, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = deployment_by_id(&mut conn, id).await?;
        let from = Status::parse(&before.status).unwrap_or(Status::Failed);
        if !from.may_become(status) {
            return Err(StoreError::Conflict(format!("deployment {id} is {from}: it cannot become {status}")));
        }
        conn.execute(
            "UPDATE deployments SET status = $1, reason = $2, updated_at = $3, updated_by = $4 WHERE id = $5",
            params![status.as_str(), reason, now, &ctx.actor, id],
        )
        .await?;
        let after = deployment_by_id(&mut conn, id).await?;
        if status == Status::Succeeded {
            supersede(&mut conn, ctx, now, &after).await?;
        }
        audit::record(
            &mut conn,
            ctx,
            now,
            "deployment.status",
            &deployment_target(&after),
            Some(&before),
            Some(&after),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// The deployment history, newest first: of one environment and/or one model, at most
    /// `limit`, before the deployment `before` when paging.
    pub async fn list_deployments(
        &self,
        environment: Option<&str>,
        model: Option<&ModelRef>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Deployment>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        if let Some(e) = environment {
            env_by_name(&mut conn, e).await?;
        }
        conn.fetch_all(
            sqlx::AssertSqlSafe(format!(
                "{DEPLOYMENT_SELECT} WHERE ($1 = '' OR e.name = $1) AND ($2 = '' OR m.full_name = $2) AND d.id < $3 \
                 ORDER BY d.id DESC LIMIT $4"
            )),
            params![
                environment.unwrap_or(""),
                model.map(ToString::to_string).unwrap_or_default(),
                before.unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(100)
            ],
        )
        .await
    }

    /// Rolls back what runs of `model` in `environment` (see `rollback_in`), by hand.
    pub async fn rollback(
        &self,
        ctx: &AuditContext,
        environment: &str,
        model: &ModelRef,
        to: Option<&VersionSelector>,
        reason: &str,
    ) -> Result<Deployment, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let env = env_by_name(&mut conn, environment).await?;
        let d = rollback_in(&mut conn, ctx, now, &env, model, to, reason, "manual").await?;
        tx.commit().await?;
        Ok(d)
    }

    /// Stores an SLO report about a deployment (audited as `deployment.slo_report`). When it
    /// breaches the environment's objectives, the deployment is what runs, and the
    /// environment rolls back automatically, the rollback happens in the same transaction.
    pub async fn report_slo(&self, ctx: &AuditContext, id: i64, measured: &Measured) -> Result<SloOutcome, StoreError> {
        measured.check().map_err(|e| StoreError::Invalid(e.0))?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let d = deployment_by_id(&mut conn, id).await?;
        let env = env_by_name(&mut conn, &d.environment).await?;
        let breaches = env.slo.breaches(measured);
        let (report_id,): (i64,) = conn
            .fetch_one(
                "INSERT INTO slo_reports (deployment_id, measured, breaches, reported_at, reported_by) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                params![
                    id,
                    serde_json::to_string(measured).unwrap_or_default(),
                    serde_json::to_string(&breaches).unwrap_or_default(),
                    now,
                    &ctx.actor
                ],
            )
            .await?;
        let summary = json!({"report": report_id, "measured": measured, "breaches": breaches});
        audit::record(
            &mut conn,
            ctx,
            now,
            "deployment.slo_report",
            &deployment_target(&d),
            None::<&()>,
            Some(&summary),
        )
        .await?;
        let model = ModelRef::parse(&d.model).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let (model_id,): (i64,) = conn.fetch_one("SELECT model_id FROM deployments WHERE id = $1", params![id]).await?;
        let is_current = current(&mut conn, env.id, model_id).await?.is_some_and(|c| c.id == d.id);
        let (mut rollback, mut not_rolled_back) = (None, None);
        if !breaches.is_empty() && env.auto_rollback && is_current {
            let reason = format!("SLO breached: {}", breaches.join(", "));
            match rollback_in(&mut conn, ctx, now, &env, &model, None, &reason, "slo").await {
                Ok(r) => rollback = Some(r),
                // Nothing to go back to: the report stands, and says so.
                Err(StoreError::Conflict(why)) => not_rolled_back = Some(why),
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok(SloOutcome { report_id, measured: *measured, breaches, rollback, not_rolled_back })
    }
}
