//! The lifecycle of versions as stored: their stage, the transitions that moved them, the
//! reviews given at approval gates, and the policy results each attempt produced.
//!
//! The rules (which transitions exist, who may approve) live in `cairn_core::lifecycle`; the
//! server decides, and this module writes the decision. Every write checks that the version
//! is still in the stage and review round the decision was made on (compare-and-set), so two
//! concurrent reviewers or promoters on any number of replicas cannot both win.

use cairn_core::ModelRef;
use cairn_core::lifecycle::{Gate, Stage};
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// One rule's result as it is stored (an element of `policy_evaluations.results`) and as
/// the lifecycle audit events record it (`cairn audit explain` reads them back): the rule's
/// policy, outcome and finding (the finding states the values compared).
#[derive(Serialize, Deserialize)]
struct Finding<S> {
    policy: S,
    policy_version: i64,
    rule: S,
    severity: S,
    action: S,
    outcome: S,
    message: S,
    waived: bool,
    blocked: bool,
}

fn policy_summary(results: &[PolicyResultRecord]) -> Vec<Finding<&str>> {
    results
        .iter()
        .map(|r| Finding {
            policy: r.policy.as_str(),
            policy_version: r.policy_version,
            rule: r.rule_id.as_str(),
            severity: r.severity.as_str(),
            action: r.action.as_str(),
            outcome: r.outcome.as_str(),
            message: r.message.as_str(),
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
    policies: Vec<Finding<&'a str>>,
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

/// Stores the results of one or more policy evaluations: one row per evaluation, its rules'
/// results in order as one JSON array.
pub(crate) async fn insert_policy_results(
    conn: &mut Conn<'_>,
    version_id: i64,
    results: &[PolicyResultRecord],
) -> Result<(), StoreError> {
    for evaluation in
        results.chunk_by(|a, b| a.evaluation == b.evaluation && a.target_stage == b.target_stage && a.at == b.at)
    {
        let first = &evaluation[0];
        let doc = serde_json::to_string(&policy_summary(evaluation))
            .map_err(|e| StoreError::Invalid(format!("policy results: {e}")))?;
        conn.execute(
            "INSERT INTO policy_evaluations (version_id, evaluation, target_stage, at, results) \
             VALUES ($1, $2, $3, $4, $5)",
            params![version_id, &first.evaluation, &first.target_stage, first.at, doc],
        )
        .await?;
    }
    Ok(())
}

/// One stored evaluation: id, evaluation, target stage, time, results (JSON).
type EvaluationRow = (i64, String, String, i64, String);

/// The results of a stored evaluation, in rule order.
fn evaluation_results(
    (_, evaluation, target_stage, at, results): EvaluationRow,
) -> Result<Vec<PolicyResultRecord>, StoreError> {
    let findings: Vec<Finding<String>> = serde_json::from_str(&results)
        .map_err(|e| StoreError::Invalid(format!("stored policy results of evaluation {evaluation}: {e}")))?;
    Ok(findings
        .into_iter()
        .map(|f| PolicyResultRecord {
            evaluation: evaluation.clone(),
            target_stage: target_stage.clone(),
            policy: f.policy,
            policy_version: f.policy_version,
            severity: f.severity,
            rule_id: f.rule,
            action: f.action,
            outcome: f.outcome,
            message: f.message,
            waived: f.waived,
            blocked: f.blocked,
            at,
        })
        .collect())
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
        let last: Option<EvaluationRow> = conn
            .fetch_optional(
                "SELECT id, evaluation, target_stage, at, results FROM policy_evaluations WHERE version_id = $1 \
                 ORDER BY id DESC LIMIT 1",
                params![v.id],
            )
            .await?;
        let Some(last) = last else { return Ok(Vec::new()) };
        Ok(evaluation_results(last)?.into_iter().filter(|r| r.outcome != "pass").take(1000).collect())
    }

    /// The policy results recorded for a version: evaluations newest first, each one's
    /// results in rule order (at most `limit` results; an evaluation may be cut short).
    pub async fn policy_results(
        &self,
        model: &ModelRef,
        selector: &cairn_core::VersionSelector,
        limit: usize,
    ) -> Result<Vec<PolicyResultRecord>, StoreError> {
        let limit = limit.clamp(1, 10_000);
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let v = find(&mut conn, model, selector).await?;
        let mut out = Vec::new();
        let mut before = i64::MAX;
        // A few evaluations at a time: each holds every rule of every policy in scope.
        while out.len() < limit {
            let rows: Vec<EvaluationRow> = conn
                .fetch_all(
                    "SELECT id, evaluation, target_stage, at, results FROM policy_evaluations \
                     WHERE version_id = $1 AND id < $2 ORDER BY id DESC LIMIT 8",
                    params![v.id, before],
                )
                .await?;
            let Some(last) = rows.last() else { break };
            before = last.0;
            for row in rows {
                let results = evaluation_results(row)?;
                let room = limit - out.len();
                out.extend(results.into_iter().take(room));
            }
        }
        Ok(out)
    }
}
