//! Evaluation jobs (docs/GOVERNANCE.md#evaluation-jobs): a suite to run on a version, so that
//! evaluations happen by themselves without the registry running anyone's code.
//!
//! - **Queued** when a version is submitted, for each required suite of its namespace that
//!   names a harness command and that the version has not passed yet, or by hand.
//!   At most one job per version and suite is queued or running (a unique index says so).
//! - **Claimed** by a worker (`cairn eval worker`) under a lease: the highest priority first,
//!   then the oldest. A worker that stops renewing its lease loses the job; the next claim
//!   puts it back in the queue (or fails it when its attempts are used up).
//! - **Completed** with results, stored as an evaluation result in the same transaction, or
//!   **failed**: queued again after a backoff (`base × 2^(attempt−1)`, at most an hour) until
//!   `max_attempts`, then failed for good with an `evaluation.failed` webhook event.
//! - **Cancelled** by hand, queued or running; a running worker learns it at its next
//!   heartbeat and stops the harness.
//!
//! Every change of state is one transaction with its audit event (`eval.job.*`). Renewing a
//! lease changes no state and is not audited.

use cairn_core::{ModelRef, VersionSelector};
use serde::Serialize;

use crate::db::{Conn, Param};
use crate::evaluation::{EvalResult, NewEvalResult, insert_result};
use crate::page::placeholders;
use crate::version::{Version, find, target};
use crate::{AuditContext, Store, StoreError, audit, params};

/// The states of a job.
pub const STATES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];
/// Attempts a job gets unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;
/// The most attempts a job may be given.
pub const MAX_ATTEMPTS: i64 = 20;
/// The longest wait before a failed job is retried (ms).
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// An evaluation job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EvalJob {
    /// Its id.
    pub id: String,
    /// The model's namespace.
    pub namespace: String,
    /// `namespace/name`.
    pub model: String,
    /// The version number.
    pub version: i64,
    /// The suite to run.
    pub suite: String,
    /// Higher runs first.
    pub priority: i64,
    /// One of [`STATES`].
    pub state: String,
    /// Claims so far.
    pub attempts: i64,
    /// Claims allowed.
    pub max_attempts: i64,
    /// Not claimed again before then (ms): the backoff after a failure.
    pub not_before: i64,
    /// The worker holding it (the name it gave), while running.
    pub worker: Option<String>,
    /// The account that worker runs as.
    pub claimed_by: Option<String>,
    /// Until when the worker holds it (ms).
    pub lease_until: Option<i64>,
    /// Why the last attempt failed.
    pub error: String,
    /// The evaluation result it produced.
    pub result_id: Option<String>,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by (`system` when queued by a submission).
    pub created_by: String,
    /// Last change (ms).
    pub updated_at: i64,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
}

const SELECT_JOB: &str = "SELECT j.id, n.name AS namespace, m.full_name AS model, v.number AS version, j.suite, \
    j.priority, j.state, j.attempts, j.max_attempts, j.not_before, j.worker, j.claimed_by, j.lease_until, j.error, \
    j.result_id, j.created_at, j.created_by, j.updated_at, j.finished_at FROM eval_jobs j \
    JOIN versions v ON v.id = j.version_id JOIN models m ON m.id = v.model_id JOIN namespaces n ON n.id = j.namespace_id";

/// A job to queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The suite (it must exist in the model's namespace).
    pub suite: String,
    /// Higher runs first.
    pub priority: i64,
    /// Claims allowed (1–[`MAX_ATTEMPTS`]).
    pub max_attempts: i64,
}

/// What a worker asks for.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// The worker's name (host, pod …).
    pub worker: &'a str,
    /// The namespaces it may and wants to run jobs of (`None`: every one).
    pub namespaces: Option<&'a [String]>,
    /// Only these suites (empty: any).
    pub suites: &'a [String],
    /// How long the lease lasts (ms).
    pub lease_ms: i64,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only in these namespaces (`None`: every one).
    pub namespaces: Option<Vec<String>>,
    /// Only of this model.
    pub model: Option<ModelRef>,
    /// Only of this version of `model`.
    pub version: Option<i64>,
    /// Only in this state.
    pub state: Option<String>,
    /// Only older than this job id (paging; ids sort by creation).
    pub before: Option<String>,
    /// At most this many (1–1000).
    pub limit: usize,
}

fn job_target(j: &EvalJob) -> String {
    format!("eval-job:{}:{}:{}", j.model, j.version, j.id)
}

async fn get_in(conn: &mut Conn<'_>, id: &str) -> Result<EvalJob, StoreError> {
    conn.fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_JOB} WHERE j.id = $1")), params![id])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("evaluation job \"{id}\" does not exist")))
}

/// The wait before the next attempt after `attempts` failed ones.
pub fn backoff_ms(attempts: i64, base_ms: i64) -> i64 {
    let shift = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    base_ms.max(0).saturating_mul(1_i64 << shift).min(MAX_BACKOFF_MS)
}

/// Queues `job` for version `v` unless the same suite is already queued or running for it;
/// returns the job and whether it is new. Audited as `eval.job.queue`.
async fn queue_in(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    model: &ModelRef,
    v: &Version,
    job: &NewJob,
    why: &str,
) -> Result<(EvalJob, bool), StoreError> {
    let active: Option<(String,)> = conn
        .fetch_optional(
            "SELECT id FROM eval_jobs WHERE version_id = $1 AND suite = $2 AND state IN ('queued', 'running')",
            params![v.id, &job.suite],
        )
        .await?;
    if let Some((id,)) = active {
        return Ok((get_in(conn, &id).await?, false));
    }
    let id = uuid::Uuid::now_v7().to_string();
    conn.execute(
        "INSERT INTO eval_jobs (id, version_id, namespace_id, suite, priority, state, attempts, max_attempts, \
         not_before, created_at, created_by, updated_at) \
         VALUES ($1, $2, (SELECT m.namespace_id FROM versions v JOIN models m ON m.id = v.model_id WHERE v.id = $2), \
         $3, $4, 'queued', 0, $5, $6, $6, $7, $6)",
        params![&id, v.id, &job.suite, job.priority, job.max_attempts, now, &ctx.actor],
    )
    .await?;
    let stored = get_in(conn, &id).await?;
    audit::record(
        conn,
        ctx,
        now,
        "eval.job.queue",
        &target(model, v.version),
        None::<&()>,
        Some(&serde_json::json!({
            "id": id, "suite": job.suite, "priority": job.priority, "max_attempts": job.max_attempts, "why": why,
        })),
    )
    .await?;
    Ok((stored, true))
}

/// Queues the required suites with a harness that version `v` has not passed yet (called when
/// it is submitted, in that transaction).
pub(crate) async fn queue_required(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    model: &ModelRef,
    v: &Version,
) -> Result<Vec<EvalJob>, StoreError> {
    let suites: Vec<(String, String)> = conn
        .fetch_all(
            "SELECT s.name, s.definition FROM eval_suites s JOIN models m ON m.namespace_id = s.namespace_id \
             JOIN versions v ON v.model_id = m.id WHERE v.id = $1 AND s.required ORDER BY s.name",
            params![v.id],
        )
        .await?;
    let mut queued = Vec::new();
    for (name, definition) in suites {
        let runnable = serde_json::from_str::<cairn_core::evaluation::SuiteDef>(&definition)
            .ok()
            .and_then(|d| d.harness)
            .is_some_and(|h| !h.command.is_empty());
        if !runnable {
            continue;
        }
        let passed: Option<(String,)> = conn
            .fetch_optional(
                "SELECT id FROM eval_results WHERE version_id = $1 AND suite = $2 AND passed LIMIT 1",
                params![v.id, &name],
            )
            .await?;
        if passed.is_some() {
            continue;
        }
        let job = NewJob { suite: name, priority: 0, max_attempts: DEFAULT_MAX_ATTEMPTS };
        let (j, new) = queue_in(conn, ctx, now, model, v, &job, "required suite, version submitted").await?;
        if new {
            queued.push(j);
        }
    }
    Ok(queued)
}

/// Puts jobs whose worker stopped renewing the lease back in the queue, or fails them when
/// their attempts are used up (audited as `eval.job.expire`, by the system).
async fn expire_leases(conn: &mut Conn<'_>, now: i64) -> Result<(), StoreError> {
    let expired: Vec<EvalJob> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "{SELECT_JOB} WHERE j.state = 'running' AND j.lease_until < $1 ORDER BY j.id LIMIT 100"
            )),
            params![now],
        )
        .await?;
    for j in expired {
        let last = j.attempts >= j.max_attempts;
        let state = if last { "failed" } else { "queued" };
        let error = format!(
            "worker {} stopped renewing its lease (attempt {} of {})",
            j.worker.as_deref().unwrap_or("?"),
            j.attempts,
            j.max_attempts
        );
        let n = conn
            .execute(
                "UPDATE eval_jobs SET state = $1, error = $2, worker = NULL, lease_until = NULL, not_before = $3, \
                 updated_at = $3, finished_at = $4 WHERE id = $5 AND state = 'running' AND lease_until < $3",
                params![state, &error, now, last.then_some(now), &j.id],
            )
            .await?;
        if n == 1 {
            if last {
                let payload = serde_json::json!({
                    "model": j.model, "version": j.version, "suite": j.suite, "job": j.id, "error": error,
                });
                crate::webhook::enqueue(conn, now, &j.namespace, "evaluation.failed", &payload).await?;
            }
            audit::record(
                conn,
                &AuditContext::system(),
                now,
                "eval.job.expire",
                &job_target(&j),
                Some(&serde_json::json!({"state": "running", "worker": j.worker, "claimed_by": j.claimed_by})),
                Some(&serde_json::json!({"state": state, "error": error})),
            )
            .await?;
        }
    }
    Ok(())
}

/// The job `id`, checked to be held by `worker` running as `ctx.actor`.
async fn held(conn: &mut Conn<'_>, ctx: &AuditContext, id: &str, worker: &str) -> Result<EvalJob, StoreError> {
    let j = get_in(conn, id).await?;
    if j.state != "running" {
        return Err(StoreError::Conflict(format!("evaluation job {id} is {}, not running", j.state)));
    }
    if j.worker.as_deref() != Some(worker) || j.claimed_by.as_deref() != Some(ctx.actor.as_str()) {
        return Err(StoreError::Conflict(format!(
            "evaluation job {id} is held by worker {} ({}), not by {worker} ({})",
            j.worker.as_deref().unwrap_or("?"),
            j.claimed_by.as_deref().unwrap_or("?"),
            ctx.actor
        )));
    }
    Ok(j)
}

impl Store {
    /// Queues `job` for a version by hand (audited as `eval.job.queue`); returns the job already
    /// queued or running for that version and suite instead, if there is one (`false`).
    pub async fn queue_eval_job(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        job: &NewJob,
    ) -> Result<(EvalJob, bool), StoreError> {
        if !(1..=MAX_ATTEMPTS).contains(&job.max_attempts) {
            return Err(StoreError::Invalid(format!("max_attempts is between 1 and {MAX_ATTEMPTS}")));
        }
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let v = find(&mut conn, model, selector).await?;
        let suite: Option<(i64,)> = conn
            .fetch_optional(
                "SELECT s.id FROM eval_suites s JOIN namespaces n ON n.id = s.namespace_id WHERE n.name = $1 AND s.name = $2",
                params![model.namespace.as_str(), &job.suite],
            )
            .await?;
        if suite.is_none() {
            return Err(StoreError::NotFound(format!(
                "namespace \"{}\" has no evaluation suite \"{}\"",
                model.namespace, job.suite
            )));
        }
        let out = queue_in(&mut conn, ctx, now, model, &v, job, "queued by hand").await?;
        tx.commit().await?;
        Ok(out)
    }

    /// One job.
    pub async fn get_eval_job(&self, id: &str) -> Result<EvalJob, StoreError> {
        let mut c = self.db.read().await?;
        get_in(&mut c.conn(), id).await
    }

    /// Jobs, newest first.
    pub async fn list_eval_jobs(&self, f: &JobFilter) -> Result<Vec<EvalJob>, StoreError> {
        let mut sql = format!("{SELECT_JOB} WHERE 1 = 1");
        let mut params: Vec<Param> = Vec::new();
        if let Some(list) = &f.namespaces {
            if list.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND n.name IN ");
            sql.push_str(&placeholders(params.len() + 1, list.len()));
            params.extend(list.iter().map(Param::from));
        }
        if let Some(m) = &f.model {
            params.push(Param::from(m.to_string()));
            sql.push_str(&format!(" AND m.full_name = ${}", params.len()));
        }
        if let Some(v) = f.version {
            params.push(Param::from(v));
            sql.push_str(&format!(" AND v.number = ${}", params.len()));
        }
        if let Some(s) = &f.state {
            if !STATES.contains(&s.as_str()) {
                return Err(StoreError::Invalid(format!("unknown job state {s:?}; one of {}", STATES.join(", "))));
            }
            params.push(Param::from(s.clone()));
            sql.push_str(&format!(" AND j.state = ${}", params.len()));
        }
        if let Some(b) = &f.before {
            params.push(Param::from(b.clone()));
            sql.push_str(&format!(" AND j.id < ${}", params.len()));
        }
        params.push(Param::from(i64::try_from(f.limit.clamp(1, 1000)).unwrap_or(1000)));
        sql.push_str(&format!(" ORDER BY j.id DESC LIMIT ${}", params.len()));
        let mut c = self.db.read().await?;
        c.conn().fetch_all(sqlx::AssertSqlSafe(sql), params).await
    }

    /// Gives the next job a worker may run to it, under a lease (audited as `eval.job.claim`),
    /// or `None` when there is nothing to do. Jobs whose lease ran out are requeued first.
    pub async fn claim_eval_job(&self, ctx: &AuditContext, claim: &Claim<'_>) -> Result<Option<EvalJob>, StoreError> {
        if claim.worker.is_empty() || claim.worker.len() > 128 || claim.worker.chars().any(char::is_control) {
            return Err(StoreError::Invalid("a worker name is 1–128 printable characters".into()));
        }
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        expire_leases(&mut conn, now).await?;
        let mut sql = format!("{SELECT_JOB} WHERE j.state = 'queued' AND j.not_before <= $1");
        let mut params: Vec<Param> = vec![Param::from(now)];
        if let Some(list) = claim.namespaces {
            if list.is_empty() {
                tx.commit().await?;
                return Ok(None);
            }
            sql.push_str(" AND n.name IN ");
            sql.push_str(&placeholders(params.len() + 1, list.len()));
            params.extend(list.iter().map(Param::from));
        }
        if !claim.suites.is_empty() {
            sql.push_str(" AND j.suite IN ");
            sql.push_str(&placeholders(params.len() + 1, claim.suites.len()));
            params.extend(claim.suites.iter().map(Param::from));
        }
        sql.push_str(" ORDER BY j.priority DESC, j.created_at, j.id LIMIT 1");
        // Another worker may take the candidate first (PostgreSQL): then try the next one.
        for _ in 0..8 {
            let candidate: Option<EvalJob> =
                conn.fetch_optional(sqlx::AssertSqlSafe(sql.clone()), params.clone()).await?;
            let Some(j) = candidate else {
                tx.commit().await?;
                return Ok(None);
            };
            let taken = conn
                .execute(
                    "UPDATE eval_jobs SET state = 'running', attempts = attempts + 1, worker = $1, claimed_by = $2, \
                     lease_until = $3, updated_at = $4 WHERE id = $5 AND state = 'queued'",
                    params![claim.worker, &ctx.actor, now.saturating_add(claim.lease_ms), now, &j.id],
                )
                .await?;
            if taken == 1 {
                let got = get_in(&mut conn, &j.id).await?;
                audit::record(
                    &mut conn,
                    ctx,
                    now,
                    "eval.job.claim",
                    &job_target(&got),
                    Some(&serde_json::json!({"state": "queued"})),
                    Some(&serde_json::json!({"state": "running", "worker": claim.worker, "attempt": got.attempts})),
                )
                .await?;
                tx.commit().await?;
                return Ok(Some(got));
            }
        }
        tx.commit().await?;
        Err(StoreError::Busy("other workers keep taking the jobs first; try again".into()))
    }

    /// Renews the lease of a job its worker still runs. Returns the job as it is: a job that
    /// was cancelled (or lost its lease) meanwhile is returned unchanged, and its worker stops.
    pub async fn heartbeat_eval_job(
        &self,
        ctx: &AuditContext,
        id: &str,
        worker: &str,
        lease_ms: i64,
    ) -> Result<EvalJob, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute(
            "UPDATE eval_jobs SET lease_until = $1 WHERE id = $2 AND state = 'running' AND worker = $3 AND claimed_by = $4",
            params![now.saturating_add(lease_ms), id, worker, &ctx.actor],
        )
        .await?;
        let j = get_in(&mut conn, id).await?;
        tx.commit().await?;
        Ok(j)
    }

    /// Stores the results a worker produced as an evaluation result of the job's version, and
    /// ends the job (`succeeded`, whether or not the results pass the suite), in one
    /// transaction (audited as `eval.result.submit` and `eval.job.complete`).
    pub async fn complete_eval_job(
        &self,
        ctx: &AuditContext,
        id: &str,
        worker: &str,
        result: &NewEvalResult,
    ) -> Result<(EvalJob, EvalResult), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let j = held(&mut conn, ctx, id, worker).await?;
        if result.suite != j.suite {
            return Err(StoreError::Invalid(format!("job {id} runs suite {}, not {}", j.suite, result.suite)));
        }
        let model = ModelRef::parse(&j.model).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let v = find(&mut conn, &model, &VersionSelector::Number(j.version)).await?;
        let stored = insert_result(&mut conn, ctx, now, &model, &v, result).await?;
        conn.execute(
            "UPDATE eval_jobs SET state = 'succeeded', result_id = $1, lease_until = NULL, error = '', \
             updated_at = $2, finished_at = $2 WHERE id = $3",
            params![&stored.id, now, id],
        )
        .await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "eval.job.complete",
            &job_target(&j),
            Some(&serde_json::json!({"state": "running", "worker": worker})),
            Some(&serde_json::json!({"state": "succeeded", "result": stored.id, "passed": stored.passed})),
        )
        .await?;
        let done = get_in(&mut conn, id).await?;
        tx.commit().await?;
        Ok((done, stored))
    }

    /// Records that an attempt failed (the harness exited non-zero, timed out, wrote no
    /// results …): the job is queued again after `backoff_ms(attempts, base_ms)`, or fails
    /// for good with an `evaluation.failed` webhook event when its attempts are used up.
    /// Audited as `eval.job.fail`.
    pub async fn fail_eval_job(
        &self,
        ctx: &AuditContext,
        id: &str,
        worker: &str,
        error: &str,
        base_ms: i64,
    ) -> Result<EvalJob, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let j = held(&mut conn, ctx, id, worker).await?;
        let error: String = error.chars().filter(|c| !c.is_control() || *c == '\n').take(2000).collect();
        let last = j.attempts >= j.max_attempts;
        let (state, not_before) =
            if last { ("failed", now) } else { ("queued", now + backoff_ms(j.attempts, base_ms)) };
        conn.execute(
            "UPDATE eval_jobs SET state = $1, error = $2, worker = NULL, lease_until = NULL, not_before = $3, \
             updated_at = $4, finished_at = $5 WHERE id = $6",
            params![state, &error, not_before, now, last.then_some(now), id],
        )
        .await?;
        if last {
            let payload = serde_json::json!({
                "model": j.model, "version": j.version, "suite": j.suite, "job": j.id, "error": error,
            });
            crate::webhook::enqueue(&mut conn, now, &j.namespace, "evaluation.failed", &payload).await?;
        }
        audit::record(
            &mut conn,
            ctx,
            now,
            "eval.job.fail",
            &job_target(&j),
            Some(&serde_json::json!({"state": "running", "worker": worker, "attempt": j.attempts})),
            Some(&serde_json::json!({
                "state": state, "error": error, "retry_at": (!last).then_some(not_before),
            })),
        )
        .await?;
        let done = get_in(&mut conn, id).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Cancels a queued or running job (audited as `eval.job.cancel`). A running worker
    /// learns it at its next heartbeat and stops; what it submits afterwards is refused.
    pub async fn cancel_eval_job(&self, ctx: &AuditContext, id: &str, reason: &str) -> Result<EvalJob, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let j = get_in(&mut conn, id).await?;
        let n = conn
            .execute(
                "UPDATE eval_jobs SET state = 'cancelled', lease_until = NULL, error = $1, updated_at = $2, \
                 finished_at = $2 WHERE id = $3 AND state IN ('queued', 'running')",
                params![reason, now, id],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("evaluation job {id} is {} already", j.state)));
        }
        audit::record(
            &mut conn,
            ctx,
            now,
            "eval.job.cancel",
            &job_target(&j),
            Some(&serde_json::json!({"state": j.state, "worker": j.worker})),
            Some(&serde_json::json!({"state": "cancelled", "reason": reason})),
        )
        .await?;
        let done = get_in(&mut conn, id).await?;
        tx.commit().await?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff_ms(1, 30_000), 30_000);
        assert_eq!(backoff_ms(2, 30_000), 60_000);
        assert_eq!(backoff_ms(3, 30_000), 120_000);
        assert_eq!(backoff_ms(12, 30_000), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(1_000, 30_000), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(3, 0), 0);
    }
}
