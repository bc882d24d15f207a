//! The lifecycle of versions as stored: their stage, the transitions that moved them, the
//! reviews given at approval gates, and the policy results each attempt produced.
//!
//! The rules (which transitions exist, who may approve) live in `cairn_core::lifecycle`; the
//! server decides, and this module writes the decision. Every write checks that the version
//! is still in the stage and review round the decision was made on (compare-and-set), so two
//! concurrent reviewers or promoters on any number of replicas cannot both win.

use cairn_core::ModelRef;
use cairn_core::lifecycle::{Gate, Stage};
use serde::Serialize;

use crate::db::Conn;
use crate::version::{find, target, upsert_alias};
use crate::{AuditContext, Store, StoreError, audit, params};

/// One recorded move of a version between stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TransitionRecord {
    /// From this stage.
    pub from_stage: String,
    /// To this stage.
    pub to_stage: String,
    /// What caused it: submit, approve, reject, promote, deprecate, retire.
    pub action: String,
    /// Who (`user:alice`).
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When (ms).
    pub at: i64,
}

/// A review decision at an approval gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ReviewRecord {
    /// The review round (each submission starts a new one).
    pub round: i64,
    /// `staging` or `production`.
    pub gate: String,
    /// The reviewer's account name.
    pub reviewer: String,
    /// The role the review was given in.
    pub role: String,
    /// `approve`, `reject` or `comment`.
    pub decision: String,
    /// The reviewer's rationale.
    pub rationale: String,
    /// When (ms).
    pub at: i64,
}

/// One rule's result in a policy evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PolicyResultRecord {
    /// The evaluation this result belongs to (one per attempted transition or dry run).
    pub evaluation: String,
    /// The stage the version was to enter.
    pub target_stage: String,
    /// The policy's name.
    pub policy: String,
    /// The policy's version.
    pub policy_version: i64,
    /// The policy's severity.
    pub severity: String,
    /// The rule's id.
    pub rule_id: String,
    /// `block`, `warn` or `notify`.
    pub action: String,
    /// `pass`, `fail` or `error`.
    pub outcome: String,
    /// What was found.
    pub message: String,
    /// Whether an approved exception waived a failure.
    pub waived: bool,
    /// Whether this result blocked the transition.
    pub blocked: bool,
    /// When (ms).
    pub at: i64,
}

/// The lifecycle of one version.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleView {
    /// Internal id of the version.
    #[serde(skip)]
    pub version_id: i64,
    /// The version number.
    pub version: i64,
    /// The current stage.
    pub stage: Stage,
    /// Since when (ms).
    pub stage_changed_at: i64,
    /// The account that last submitted it (empty before the first submission).
    pub submitted_by: String,
    /// The current review round.
    pub review_round: i64,
    /// Every transition, oldest first.
    pub transitions: Vec<TransitionRecord>,
    /// Every review, oldest first.
    pub reviews: Vec<ReviewRecord>,
}

impl LifecycleView {
    /// The approvals that count at `gate` now: this round's, at that gate.
    pub fn current_approvals(&self, gate: Gate) -> impl Iterator<Item = &ReviewRecord> {
        self.reviews
            .iter()
            .filter(move |r| r.round == self.review_round && r.gate == gate.as_str() && r.decision == "approve")
    }
}

/// A review to record.
#[derive(Debug, Clone)]
pub struct NewReview {
    /// The gate.
    pub gate: Gate,
    /// Reviewer's account name.
    pub reviewer: String,
    /// Reviewer role.
    pub role: String,
    /// `approve`, `reject` or `comment`.
    pub decision: String,
    /// Rationale (required).
    pub rationale: String,
}

/// A decided lifecycle change, written in one transaction.
#[derive(Debug, Clone)]
pub struct LifecycleChange {
    /// The version's current stage, as the decision saw it.
    pub from: Stage,
    /// The review round the decision saw.
    pub round: i64,
    /// The new stage, or `None` to only record a review.
    pub to: Option<Stage>,
    /// The transition's action name (`submit`, `approve`, `reject`, `promote`, …).
    pub action: String,
    /// The reason given.
    pub reason: String,
    /// A submission: starts a new review round and records the submitter.
    pub submitter: Option<String>,
    /// A review recorded with the change.
    pub review: Option<NewReview>,
    /// Policy results of the evaluation that allowed the change.
    pub policy_results: Vec<PolicyResultRecord>,
    /// On promotion to production: move the `production` alias here, and deprecate the
    /// version it pointed at (unless `false`).
    pub deprecate_previous: bool,
    /// Webhook events to raise with the change: (event, payload).
    pub events: Vec<(String, serde_json::Value)>,
}

/// The audit action of a lifecycle change.
/// Policy results as the lifecycle event records them: each rule's policy, outcome and
/// finding (the finding states the values compared).
/// One rule's finding as the lifecycle audit events record it (`cairn audit explain` reads
/// them back).
#[derive(Serialize)]
struct Finding<'a> {
    policy: &'a str,
    policy_version: i64,
    rule: &'a str,
    severity: &'a str,
    action: &'a str,
    outcome: &'a str,
    message: &'a str,
    waived: bool,
    blocked: bool,
}

fn policy_summary(results: &[PolicyResultRecord]) -> Vec<Finding<'_>> {
    results
        .iter()
        .map(|r| Finding {
            policy: &r.policy,
            policy_version: r.policy_version,
            rule: &r.rule_id,
            severity: &r.severity,
            action: &r.action,
            outcome: &r.outcome,
            message: &r.message,
            waived: r.waived,
            blocked: r.blocked,
        })
        .collect()
}

/// What a lifecycle audit event records after the change. A struct rather than a JSON value:
/// with 50 policies it carries 250 findings, serialised straight into the event.
#[derive(Serialize)]
struct LifecycleAfter<'a> {
    stage: &'a str,
    round: i64,
    reason: &'a str,
    review: Option<serde_json::Value>,
    deprecated: Option<i64>,
    policy_results: usize,
    /// What the policies found, so the decision can be reconstructed from the chain alone.
    policies: Vec<Finding<'a>>,
    eval_jobs: Vec<&'a str>,
}

fn audit_action(change: &LifecycleChange) -> String {
    match (&change.review, change.to) {
        (Some(r), _) => format!("version.review.{}", r.decision),
        (None, _) => format!("version.{}", change.action),
    }
}

pub(crate) async fn view(conn: &mut Conn<'_>, version_id: i64, number: i64) -> Result<LifecycleView, StoreError> {
    let (stage, stage_changed_at, submitted_by, review_round): (String, i64, String, i64) = conn
        .fetch_one(
            "SELECT stage, stage_changed_at, submitted_by, review_round FROM versions WHERE id = $1",
            params![version_id],
        )
        .await?;
    let transitions: Vec<TransitionRecord> = conn
        .fetch_all(
            "SELECT from_stage, to_stage, action, actor, reason, at FROM version_transitions \
             WHERE version_id = $1 ORDER BY id",
            params![version_id],
        )
        .await?;
    let reviews: Vec<ReviewRecord> = conn
        .fetch_all(
            "SELECT round, gate, reviewer, role, decision, rationale, at FROM approvals WHERE version_id = $1 ORDER BY id",
            params![version_id],
        )
        .await?;
    Ok(LifecycleView {
        version_id,
        version: number,
        stage: Stage::parse(&stage)
            .ok_or_else(|| StoreError::Invalid(format!("unknown stage {stage:?} in the database")))?,
        stage_changed_at,
        submitted_by,
        review_round,
        transitions,
        reviews,
    })
}

#[allow(clippy::too_many_arguments)]
async fn insert_transition(
    conn: &mut Conn<'_>,
    version_id: i64,
    from: Stage,
    to: Stage,
    action: &str,
    actor: &str,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO version_transitions (version_id, from_stage, to_stage, action, actor, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        params![version_id, from.as_str(), to.as_str(), action, actor, reason, now],
    )
    .await?;
    Ok(())
}

/// Rows per multi-row insert of policy results on SQLite (13 parameters each). sqlx looks
/// each SQLite parameter up by name, a cost that grows with the square of the parameters in
/// a statement; there small batches are fastest.
const SQLITE_RESULT_ROWS_PER_INSERT: usize = 10;

/// `INSERT INTO policy_results … VALUES ($1, …, $13), ($14, …)` for `rows` rows.
fn insert_results_sql(rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::from(
        "INSERT INTO policy_results (version_id, evaluation, target_stage, policy, policy_version, severity, \
         rule_id, action, outcome, message, waived, blocked, at) VALUES ",
    );
    for i in 0..rows {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for k in 1..=13 {
            let _ = write!(sql, "{}${}", if k == 1 { "" } else { ", " }, i * 13 + k);
        }
        sql.push(')');
    }
    sql
}

pub(crate) async fn insert_policy_results(
    conn: &mut Conn<'_>,
    version_id: i64,
    results: &[PolicyResultRecord],
) -> Result<(), StoreError> {
    if results.is_empty() {
        return Ok(());
    }
    if let Conn::Postgres(pg, _) = conn {
        // One statement whatever the number of results: a column per array, unpacked in
        // order by the database.
        let col = |f: fn(&PolicyResultRecord) -> &str| results.iter().map(|r| f(r).to_owned()).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO policy_results (version_id, evaluation, target_stage, policy, policy_version, severity, \
             rule_id, action, outcome, message, waived, blocked, at) \
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::boolean[], $12::boolean[], $13::bigint[])",
        )
        .bind(version_id)
        .bind(col(|r| &r.evaluation))
        .bind(col(|r| &r.target_stage))
        .bind(col(|r| &r.policy))
        .bind(results.iter().map(|r| r.policy_version).collect::<Vec<_>>())
        .bind(col(|r| &r.severity))
        .bind(col(|r| &r.rule_id))
        .bind(col(|r| &r.action))
        .bind(col(|r| &r.outcome))
        .bind(col(|r| &r.message))
        .bind(results.iter().map(|r| r.waived).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.blocked).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.at).collect::<Vec<_>>())
        .execute(&mut **pg)
        .await?;
        return Ok(());
    }
    static FULL_CHUNK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    for chunk in results.chunks(SQLITE_RESULT_ROWS_PER_INSERT) {
        let sql = if chunk.len() == SQLITE_RESULT_ROWS_PER_INSERT {
            FULL_CHUNK.get_or_init(|| insert_results_sql(SQLITE_RESULT_ROWS_PER_INSERT)).clone()
        } else {
            insert_results_sql(chunk.len())
        };
        let mut params = Vec::with_capacity(chunk.len() * 13);
        for r in chunk {
            params.extend(params![
                version_id,
                &r.evaluation,
                &r.target_stage,
                &r.policy,
                r.policy_version,
                &r.severity,
                &r.rule_id,
                &r.action,
                &r.outcome,
                &r.message,
                r.waived,
                r.blocked,
                r.at
            ]);
        }
        conn.execute(sqlx::AssertSqlSafe(sql), params).await?;
    }
    Ok(())
}

impl Store {
    /// The lifecycle of a version: stage, transitions and reviews.
    pub async fn version_lifecycle(
        &self,
        model: &ModelRef,
        selector: &cairn_core::VersionSelector,
    ) -> Result<LifecycleView, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let v = find(&mut conn, model, selector).await?;
        view(&mut conn, v.id, v.version).await
    }

    /// Writes a decided lifecycle change: the stage (if it moves), the transition, the
    /// review, the policy results, the production alias and the deprecation of the version it
    /// replaces, the webhook events and the audit record — all in one transaction, and only
    /// if the version is still in the stage and round the decision was made on.
    pub async fn apply_lifecycle_change(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        number: i64,
        change: &LifecycleChange,
    ) -> Result<LifecycleView, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let version = find(&mut conn, model, &cairn_core::VersionSelector::Number(number)).await?;
        let before = view(&mut conn, version.id, number).await?;
        let to = change.to.unwrap_or(change.from);
        let new_round = i64::from(change.submitter.is_some());
        // The compare-and-set: a concurrent change makes this touch no row.
        let moved = conn
            .execute(
                "UPDATE versions SET stage = $1, stage_changed_at = CASE WHEN $1 = stage THEN stage_changed_at ELSE $2 END, \
                 review_round = review_round + $3, submitted_by = COALESCE($4, submitted_by), \
                 updated_at = $2, updated_by = $5 WHERE id = $6 AND stage = $7 AND review_round = $8",
                params![
                    to.as_str(),
                    now,
                    new_round,
                    change.submitter.clone(),
                    &ctx.actor,
                    version.id,
                    change.from.as_str(),
                    change.round
                ],
            )
            .await?;
        if moved == 0 {
            return Err(StoreError::Conflict(format!(
                "version {number} of \"{model}\" changed meanwhile (it is now {}, review round {}); reload and retry",
                before.stage, before.review_round
            )));
        }
        if let Some(r) = &change.review {
            conn.execute(
                "INSERT INTO approvals (version_id, round, gate, reviewer, role, decision, rationale, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                params![
                    version.id,
                    change.round,
                    r.gate.as_str(),
                    &r.reviewer,
                    &r.role,
                    &r.decision,
                    &r.rationale,
                    now
                ],
            )
            .await?;
        }
        if change.to.is_some_and(|t| t != change.from) {
            insert_transition(&mut conn, version.id, change.from, to, &change.action, &ctx.actor, &change.reason, now)
                .await?;
        }
        insert_policy_results(&mut conn, version.id, &change.policy_results).await?;
        let mut replaced = None;
        if change.to == Some(Stage::Production) {
            let previous: Option<(i64, i64, String)> = conn
                .fetch_optional(
                    "SELECT v.id, v.number, v.stage FROM aliases a JOIN versions v ON v.id = a.version_id \
                     JOIN models m ON m.id = a.model_id WHERE m.full_name = $1 AND a.alias = 'production'",
                    params![model.to_string()],
                )
                .await?;
            let alias = cairn_core::AliasName::parse("production").map_err(|e| StoreError::Invalid(e.to_string()))?;
            upsert_alias(&mut conn, ctx, now, model, &alias, version.id).await?;
            if let Some((prev_id, prev_number, prev_stage)) = previous
                && prev_id != version.id
                && change.deprecate_previous
                && prev_stage == Stage::Production.as_str()
            {
                conn.execute(
                    "UPDATE versions SET stage = $1, stage_changed_at = $2, updated_at = $2, updated_by = $3 WHERE id = $4",
                    params![Stage::Deprecated.as_str(), now, &ctx.actor, prev_id],
                )
                .await?;
                let reason = format!("replaced in production by version {number}");
                insert_transition(
                    &mut conn,
                    prev_id,
                    Stage::Production,
                    Stage::Deprecated,
                    "deprecate",
                    &ctx.actor,
                    &reason,
                    now,
                )
                .await?;
                audit::record(
                    &mut conn,
                    ctx,
                    now,
                    "version.deprecate",
                    &target(model, prev_number),
                    Some(&serde_json::json!({"stage": "production"})),
                    Some(&serde_json::json!({"stage": "deprecated", "reason": reason})),
                )
                .await?;
                replaced = Some(prev_number);
            }
        }
        for (event, payload) in &change.events {
            crate::webhook::enqueue(&mut conn, now, model.namespace.as_str(), event, payload).await?;
        }
        // A submission queues the required suites a worker can run (docs/GOVERNANCE.md).
        let queued = if change.to == Some(Stage::Submitted) && change.from != Stage::Submitted {
            crate::eval_job::queue_required(&mut conn, ctx, now, model, &version).await?
        } else {
            Vec::new()
        };
        let after = view(&mut conn, version.id, number).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            &audit_action(change),
            &target(model, number),
            Some(&serde_json::json!({"stage": before.stage, "round": before.review_round})),
            Some(&LifecycleAfter {
                stage: after.stage.as_str(),
                round: after.review_round,
                reason: &change.reason,
                review: change.review.as_ref().map(|r| {
                    serde_json::json!({
                        "gate": r.gate.as_str(), "role": r.role, "decision": r.decision, "rationale": r.rationale,
                    })
                }),
                deprecated: replaced,
                policy_results: change.policy_results.len(),
                policies: policy_summary(&change.policy_results),
                eval_jobs: queued.iter().map(|j| j.suite.as_str()).collect(),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Records a refused lifecycle request (illegal transition, unauthorised approval, a
    /// policy block) with its reason, and the policy results that blocked it, in one
    /// transaction: refusals are part of the record.
    pub async fn record_lifecycle_refusal(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        number: i64,
        action: &str,
        reason: &str,
        policy_results: &[PolicyResultRecord],
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let version = find(&mut conn, model, &cairn_core::VersionSelector::Number(number)).await?;
        insert_policy_results(&mut conn, version.id, policy_results).await?;
        let blocked: Vec<_> = policy_results
            .iter()
            .filter(|r| r.blocked)
            .map(|r| serde_json::json!({"policy": r.policy, "rule": r.rule_id}))
            .collect();
        if !blocked.is_empty() {
            let payload = serde_json::json!({
                "model": model.to_string(), "version": number, "action": action, "reason": reason, "blocked_by": blocked,
            });
            crate::webhook::enqueue(&mut conn, now, model.namespace.as_str(), "policy.violation", &payload).await?;
        }
        audit::record_outcome(
            &mut conn,
            ctx,
            now,
            &format!("version.{action}"),
            &target(model, number),
            "denied",
            Some(&serde_json::json!({"stage": version.stage})),
            Some(&serde_json::json!({"refused": reason, "blocked_by": blocked, "policies": policy_summary(policy_results)})),
        )
        .await?;
        tx.commit().await
    }

    /// The rules that did not pass in the version's latest policy evaluation (failures,
    /// errors, waived failures), in rule order: what a person looking at the version needs.
    pub async fn last_policy_failures(
        &self,
        model: &ModelRef,
        selector: &cairn_core::VersionSelector,
    ) -> Result<Vec<PolicyResultRecord>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let v = find(&mut conn, model, selector).await?;
        conn.fetch_all(
            "SELECT evaluation, target_stage, policy, policy_version, severity, rule_id, action, outcome, message, \
             waived, blocked, at FROM policy_results WHERE version_id = $1 AND outcome <> 'pass' AND evaluation = \
             (SELECT evaluation FROM policy_results WHERE version_id = $1 ORDER BY id DESC LIMIT 1) ORDER BY id LIMIT 1000",
            params![v.id],
        )
        .await
    }

    /// The policy results recorded for a version, newest evaluation first (at most `limit`).
    pub async fn policy_results(
        &self,
        model: &ModelRef,
        selector: &cairn_core::VersionSelector,
        limit: usize,
    ) -> Result<Vec<PolicyResultRecord>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let v = find(&mut conn, model, selector).await?;
        conn.fetch_all(
            "SELECT evaluation, target_stage, policy, policy_version, severity, rule_id, action, outcome, message, \
             waived, blocked, at FROM policy_results WHERE version_id = $1 ORDER BY id DESC LIMIT $2",
            params![v.id, i64::try_from(limit.clamp(1, 10_000)).unwrap_or(1000)],
        )
        .await
    }
}
