//! Reading decisions back out of the chain: [`Explanation`] reconstructs how one version got
//! where it is (who created and submitted it, what the policies found, which evaluations ran
//! with which values, who approved with which rationale, which exceptions applied) and
//! [`ComplianceReport`] summarises a period (activity, approvals, policy violations,
//! exceptions, access changes). Both are folds over audit records — fed from a verified
//! export or from the database — so they say only what the chain says.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::AuditRecord;

/// One lifecycle step of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The event's sequence number.
    pub seq: i64,
    /// When (ms).
    pub time: i64,
    /// Who.
    pub actor: String,
    /// The action (`version.submit`, `version.review.approve`, `version.promote`, …).
    pub action: String,
    /// The stage before.
    pub from: Option<String>,
    /// The stage after.
    pub to: Option<String>,
    /// The reason given.
    pub reason: Option<String>,
}

/// A review decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// The event's sequence number.
    pub seq: i64,
    /// When (ms).
    pub time: i64,
    /// The reviewer.
    pub actor: String,
    /// The version reviewed (`version:ns/name:3`).
    pub target: String,
    /// The gate (`staging`, `production`).
    pub gate: String,
    /// The role the reviewer acted in (`mrc`, `security`, `sre`).
    pub role: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// The rationale.
    pub rationale: String,
}

/// What one policy rule found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFinding {
    /// The policy's name.
    pub policy: String,
    /// The policy's version.
    pub policy_version: Option<i64>,
    /// The rule's id.
    pub rule: String,
    /// `pass`, `fail` or `error`.
    pub outcome: String,
    /// What was found (with the values compared).
    pub message: String,
    /// An approved exception waived a failure.
    pub waived: bool,
    /// The result blocked the transition.
    pub blocked: bool,
}

/// The policy results recorded with one lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCheck {
    /// The event's sequence number.
    pub seq: i64,
    /// When (ms).
    pub time: i64,
    /// The lifecycle action they were checked for.
    pub action: String,
    /// Whether the action went ahead.
    pub outcome: String,
    /// The findings.
    pub results: Vec<PolicyFinding>,
}

/// One metric of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricFinding {
    /// The metric.
    pub name: String,
    /// Its value, if reported.
    pub value: Option<f64>,
    /// Whether it met its thresholds.
    pub passed: bool,
    /// The sentence (`accuracy = 0.93 passes (≥ 0.9)`).
    pub message: String,
}

/// An evaluation result submitted for the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationStep {
    /// The event's sequence number.
    pub seq: i64,
    /// When (ms).
    pub time: i64,
    /// Who submitted it.
    pub actor: String,
    /// The suite.
    pub suite: String,
    /// Whether every threshold passed.
    pub passed: bool,
    /// Per metric (empty for events recorded before metrics were chained).
    pub metrics: Vec<MetricFinding>,
}

/// A policy exception's request or decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionStep {
    /// The event's sequence number.
    pub seq: i64,
    /// When (ms).
    pub time: i64,
    /// Who.
    pub actor: String,
    /// The version (`version:ns/name:3`).
    pub target: String,
    /// `policy.exception.request`, `.approve`, `.reject`, `.revoke`.
    pub action: String,
    /// The policy excepted.
    pub policy: Option<String>,
    /// The exception's status after the event.
    pub status: Option<String>,
    /// The justification.
    pub justification: Option<String>,
}

/// A refused lifecycle request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The event's sequence number.
    pub seq: i64,
    /// When (ms).
    pub time: i64,
    /// Who asked.
    pub actor: String,
    /// The version (`version:ns/name:3`).
    pub target: String,
    /// What was asked (`version.promote`).
    pub action: String,
    /// Why it was refused.
    pub reason: String,
    /// The policies and rules that blocked it (`policy/rule`).
    pub blocked_by: Vec<String>,
}

/// How one version got where it is, from its audit events alone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Explanation {
    /// `version:ns/name:N`.
    pub target: String,
    /// Events about the version read.
    pub events: u64,
    /// Events about the version whose details were erased or pruned (counted, not read).
    pub without_details: u64,
    /// The creation.
    pub created: Option<Step>,
    /// Every lifecycle step, in order.
    pub steps: Vec<Step>,
    /// Review decisions.
    pub reviews: Vec<Review>,
    /// Policy results recorded with lifecycle events.
    pub policy_checks: Vec<PolicyCheck>,
    /// Evaluation results submitted.
    pub evaluations: Vec<EvaluationStep>,
    /// Exceptions requested and decided.
    pub exceptions: Vec<ExceptionStep>,
    /// Refused requests.
    pub refusals: Vec<Refusal>,
    /// The promotion to production, if there was one (the last).
    pub production: Option<Step>,
}

fn after(r: &AuditRecord) -> Option<Value> {
    r.details.after.as_deref().and_then(|a| serde_json::from_str(a).ok())
}

fn before(r: &AuditRecord) -> Option<Value> {
    r.details.before.as_deref().and_then(|a| serde_json::from_str(a).ok())
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn findings(v: &Value) -> Vec<PolicyFinding> {
    v.get("policies")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|p| PolicyFinding {
                    policy: text(p, "policy").unwrap_or_default(),
                    policy_version: p.get("policy_version").and_then(Value::as_i64),
                    rule: text(p, "rule").unwrap_or_default(),
                    outcome: text(p, "outcome").unwrap_or_default(),
                    message: text(p, "message").unwrap_or_default(),
                    waived: p.get("waived").and_then(Value::as_bool).unwrap_or(false),
                    blocked: p.get("blocked").and_then(Value::as_bool).unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn review(r: &AuditRecord, a: &Value) -> Option<Review> {
    let rv = a.get("review").filter(|v| v.is_object())?;
    Some(Review {
        seq: r.seq,
        time: r.time,
        actor: r.details.actor.clone(),
        target: r.details.target.clone(),
        gate: text(rv, "gate").unwrap_or_default(),
        role: text(rv, "role").unwrap_or_default(),
        decision: text(rv, "decision").unwrap_or_default(),
        rationale: text(rv, "rationale").unwrap_or_default(),
    })
}

fn refusal(r: &AuditRecord, a: &Value) -> Option<Refusal> {
    let reason = text(a, "refused")?;
    let blocked_by = a
        .get("blocked_by")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|b| format!("{}/{}", text(b, "policy").unwrap_or_default(), text(b, "rule").unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Some(Refusal {
        seq: r.seq,
        time: r.time,
        actor: r.details.actor.clone(),
        target: r.details.target.clone(),
        action: r.action.clone(),
        reason,
        blocked_by,
    })
}

fn exception(r: &AuditRecord) -> ExceptionStep {
    let state = after(r).or_else(|| before(r)).unwrap_or(Value::Null);
    ExceptionStep {
        seq: r.seq,
        time: r.time,
        actor: r.details.actor.clone(),
        target: r.details.target.clone(),
        action: r.action.clone(),
        policy: text(&state, "policy"),
        status: text(&state, "status"),
        justification: text(&state, "justification"),
    }
}

impl Explanation {
    /// Starts an explanation of `version:ns/name:N`.
    pub fn new(target: impl Into<String>) -> Self {
        Self { target: target.into(), ..Self::default() }
    }

    /// Takes in one event (events about other targets are ignored).
    pub fn add(&mut self, r: &AuditRecord) {
        if r.details.target != self.target {
            return;
        }
        self.events += 1;
        if r.salt.is_none() {
            self.without_details += 1;
            return;
        }
        let a = after(r).unwrap_or(Value::Null);
        let b = before(r).unwrap_or(Value::Null);
        let step = || Step {
            seq: r.seq,
            time: r.time,
            actor: r.details.actor.clone(),
            action: r.action.clone(),
            from: text(&b, "stage"),
            to: text(&a, "stage"),
            reason: text(&a, "reason").or_else(|| text(&a, "refused")),
        };
        if r.action == "version.create" && r.outcome == "success" {
            self.created = Some(step());
        } else if r.action == "eval.result.submit" {
            let metrics = a
                .get("metrics")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .map(|m| MetricFinding {
                            name: text(m, "name").unwrap_or_default(),
                            value: m.get("value").and_then(Value::as_f64),
                            passed: m.get("passed").and_then(Value::as_bool).unwrap_or(false),
                            message: text(m, "message").unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.evaluations.push(EvaluationStep {
                seq: r.seq,
                time: r.time,
                actor: r.details.actor.clone(),
                suite: text(&a, "suite").unwrap_or_default(),
                passed: a.get("passed").and_then(Value::as_bool).unwrap_or(false),
                metrics,
            });
        } else if r.action.starts_with("policy.exception.") {
            self.exceptions.push(exception(r));
        } else if r.action.starts_with("version.") && (a.get("stage").is_some() || a.get("refused").is_some()) {
            let policies = findings(&a);
            if !policies.is_empty() {
                self.policy_checks.push(PolicyCheck {
                    seq: r.seq,
                    time: r.time,
                    action: r.action.clone(),
                    outcome: r.outcome.clone(),
                    results: policies,
                });
            }
            if r.outcome != "success" {
                if let Some(x) = refusal(r, &a) {
                    self.refusals.push(x);
                }
                return;
            }
            if let Some(rv) = review(r, &a) {
                self.reviews.push(rv);
            }
            let s = step();
            if s.to.as_deref() == Some("production") && s.from.as_deref() != Some("production") {
                self.production = Some(s.clone());
            }
            self.steps.push(s);
        }
    }

    /// The explanation as Markdown, for people.
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "# How {} was decided\n", self.target.trim_start_matches("version:"));
        let _ = writeln!(
            m,
            "Reconstructed from {} audit events about this version{}.\n",
            self.events,
            if self.without_details > 0 {
                format!(" ({} of them without details: erased or past retention)", self.without_details)
            } else {
                String::new()
            }
        );
        if let Some(c) = &self.created {
            let _ = writeln!(m, "- Created by {} at {} (event {}).", c.actor, iso(c.time), c.seq);
        }
        match &self.production {
            Some(p) => {
                let _ = writeln!(m, "- Promoted to production by {} at {} (event {}).", p.actor, iso(p.time), p.seq);
            }
            None => {
                let _ = writeln!(m, "- Never promoted to production.");
            }
        }
        if !self.steps.is_empty() {
            let _ = writeln!(
                m,
                "\n## Lifecycle\n\n| event | time | who | action | from | to | reason |\n|---|---|---|---|---|---|---|"
            );
            for s in &self.steps {
                row(
                    &mut m,
                    &[
                        &s.seq,
                        &iso(s.time),
                        &cell(&s.actor),
                        &cell(&s.action),
                        &cell(s.from.as_deref().unwrap_or("")),
                        &cell(s.to.as_deref().unwrap_or("")),
                        &cell(s.reason.as_deref().unwrap_or("")),
                    ],
                );
            }
        }
        if !self.reviews.is_empty() {
            let _ = writeln!(
                m,
                "\n## Reviews\n\n| event | time | reviewer | role | gate | decision | rationale |\n|---|---|---|---|---|---|---|"
            );
            for r in &self.reviews {
                row(
                    &mut m,
                    &[
                        &r.seq,
                        &iso(r.time),
                        &cell(&r.actor),
                        &cell(&r.role),
                        &cell(&r.gate),
                        &cell(&r.decision),
                        &cell(&r.rationale),
                    ],
                );
            }
        }
        if !self.policy_checks.is_empty() {
            let _ = writeln!(m, "\n## Policies\n");
            for c in &self.policy_checks {
                let _ = writeln!(m, "Checked for `{}` (event {}, {}):\n", c.action, c.seq, c.outcome);
                let _ = writeln!(m, "| policy | rule | outcome | finding |\n|---|---|---|---|");
                for f in &c.results {
                    let mut outcome = f.outcome.clone();
                    if f.waived {
                        outcome.push_str(" (waived by an exception)");
                    }
                    if f.blocked {
                        outcome.push_str(" (blocked)");
                    }
                    let version = f.policy_version.map(|v| format!(" v{v}")).unwrap_or_default();
                    let policy = format!("{}{version}", cell(&f.policy));
                    row(&mut m, &[&policy, &cell(&f.rule), &cell(&outcome), &cell(&f.message)]);
                }
                m.push('\n');
            }
        }
        if !self.evaluations.is_empty() {
            let _ = writeln!(m, "\n## Evaluations\n");
            for e in &self.evaluations {
                let verdict = if e.passed { "passed" } else { "failed" };
                let _ = writeln!(m, "- Suite `{}` {verdict} (event {}, by {}):", e.suite, e.seq, e.actor);
                for x in &e.metrics {
                    let _ = writeln!(m, "  - {}", x.message);
                }
            }
        }
        if !self.exceptions.is_empty() {
            let _ = writeln!(
                m,
                "\n## Exceptions\n\n| event | time | who | action | policy | status | justification |\n|---|---|---|---|---|---|---|"
            );
            for x in &self.exceptions {
                row(
                    &mut m,
                    &[
                        &x.seq,
                        &iso(x.time),
                        &cell(&x.actor),
                        &cell(&x.action),
                        &cell(x.policy.as_deref().unwrap_or("")),
                        &cell(x.status.as_deref().unwrap_or("")),
                        &cell(x.justification.as_deref().unwrap_or("")),
                    ],
                );
            }
        }
        if !self.refusals.is_empty() {
            let _ = writeln!(
                m,
                "\n## Refused requests\n\n| event | time | who | action | reason | blocked by |\n|---|---|---|---|---|---|"
            );
            for x in &self.refusals {
                row(
                    &mut m,
                    &[
                        &x.seq,
                        &iso(x.time),
                        &cell(&x.actor),
                        &cell(&x.action),
                        &cell(&x.reason),
                        &cell(&x.blocked_by.join(", ")),
                    ],
                );
            }
        }
        m
    }
}

/// Counts of one action in a period.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActionCount {
    /// The action.
    pub action: String,
    /// Succeeded.
    pub success: u64,
    /// Refused.
    pub denied: u64,
    /// Failed.
    pub failure: u64,
}

/// Counts of one actor in a period.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActorCount {
    /// The actor.
    pub actor: String,
    /// Events.
    pub events: u64,
    /// Of which refused.
    pub denied: u64,
}

/// A role granted or revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessChange {
    /// The event's sequence number.
    pub seq: i64,
    /// When (ms).
    pub time: i64,
    /// Who changed it.
    pub actor: String,
    /// `grant.create` or `grant.delete`.
    pub action: String,
    /// The account.
    pub username: String,
    /// The role.
    pub role: String,
    /// The namespace (none: global).
    pub namespace: Option<String>,
}

/// Who holds a role (at the time of the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleHolders {
    /// The role.
    pub role: String,
    /// `user` (global) or `user@namespace`.
    pub holders: Vec<String>,
}

/// A compliance report over a period.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ComplianceReport {
    /// Start of the period (ms, inclusive).
    pub since: Option<i64>,
    /// End of the period (ms, exclusive).
    pub until: Option<i64>,
    /// When the report was made (ms).
    pub generated_at: i64,
    /// The first and last events of the period.
    pub first_seq: Option<i64>,
    /// The last event of the period.
    pub last_seq: Option<i64>,
    /// Events in the period.
    pub events: u64,
    /// Of which refused.
    pub denied: u64,
    /// Events whose details were erased or pruned (counted under their action only).
    pub without_details: u64,
    /// Per action.
    pub activity: Vec<ActionCount>,
    /// Per actor.
    pub actors: Vec<ActorCount>,
    /// Review decisions.
    pub reviews: Vec<Review>,
    /// Promotions to production.
    pub promotions: Vec<Step>,
    /// Refused lifecycle requests (policy blocks, illegal transitions, missing approvals).
    pub policy_violations: Vec<Refusal>,
    /// Exceptions requested and decided.
    pub exceptions: Vec<ExceptionStep>,
    /// Roles granted and revoked.
    pub access_changes: Vec<AccessChange>,
    /// Who holds each role when the report is made (filled in by the server, not from the chain).
    pub roles: Vec<RoleHolders>,
}

/// Builds a [`ComplianceReport`] from the events of a period, in any number.
#[derive(Debug, Default)]
pub struct ReportBuilder {
    report: ComplianceReport,
    activity: BTreeMap<String, ActionCount>,
    actors: BTreeMap<String, ActorCount>,
}

impl ReportBuilder {
    /// A report over `[since, until)`.
    pub fn new(since: Option<i64>, until: Option<i64>, generated_at: i64) -> Self {
        Self {
            report: ComplianceReport { since, until, generated_at, ..ComplianceReport::default() },
            ..Self::default()
        }
    }

    /// Takes in one event of the period.
    pub fn add(&mut self, r: &AuditRecord) {
        let rep = &mut self.report;
        rep.events += 1;
        rep.first_seq.get_or_insert(r.seq);
        rep.last_seq = Some(r.seq);
        let c = self
            .activity
            .entry(r.action.clone())
            .or_insert_with(|| ActionCount { action: r.action.clone(), ..Default::default() });
        match r.outcome.as_str() {
            "success" => c.success += 1,
            "denied" => c.denied += 1,
            _ => c.failure += 1,
        }
        if r.outcome == "denied" {
            rep.denied += 1;
        }
        if r.salt.is_none() {
            rep.without_details += 1;
            return;
        }
        let a = self
            .actors
            .entry(r.details.actor.clone())
            .or_insert_with(|| ActorCount { actor: r.details.actor.clone(), ..Default::default() });
        a.events += 1;
        if r.outcome == "denied" {
            a.denied += 1;
        }
        let after_state = after(r).unwrap_or(Value::Null);
        if r.action.starts_with("version.") {
            if r.outcome == "success" {
                if let Some(rv) = review(r, &after_state) {
                    rep.reviews.push(rv);
                }
                let from = before(r).and_then(|b| text(&b, "stage"));
                let to = text(&after_state, "stage");
                if to.as_deref() == Some("production") && from.as_deref() != Some("production") {
                    rep.promotions.push(Step {
                        seq: r.seq,
                        time: r.time,
                        actor: r.details.actor.clone(),
                        action: format!("{} {}", r.action, r.details.target),
                        from,
                        to,
                        reason: text(&after_state, "reason"),
                    });
                }
            } else if let Some(x) = refusal(r, &after_state) {
                rep.policy_violations.push(x);
            }
        } else if r.action.starts_with("policy.exception.") {
            rep.exceptions.push(exception(r));
        } else if (r.action == "grant.create" || r.action == "grant.delete") && r.outcome == "success" {
            let g = if r.action == "grant.create" { after_state } else { before(r).unwrap_or(Value::Null) };
            rep.access_changes.push(AccessChange {
                seq: r.seq,
                time: r.time,
                actor: r.details.actor.clone(),
                action: r.action.clone(),
                username: text(&g, "username").unwrap_or_default(),
                role: text(&g, "role").unwrap_or_default(),
                namespace: text(&g, "namespace"),
            });
        }
    }

    /// The report.
    pub fn finish(mut self) -> ComplianceReport {
        self.report.activity = self.activity.into_values().collect();
        let mut actors: Vec<ActorCount> = self.actors.into_values().collect();
        actors.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.actor.cmp(&b.actor)));
        self.report.actors = actors;
        self.report
    }
}

impl ComplianceReport {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let period = format!(
            "{} to {}",
            self.since.map_or_else(|| "the start of the chain".to_owned(), iso),
            self.until.map_or_else(|| "now".to_owned(), iso)
        );
        let _ = writeln!(m, "# Compliance report: {period}\n");
        let _ = writeln!(
            m,
            "Generated {} from audit events {} to {} ({} events, {} refused{}).\n",
            iso(self.generated_at),
            self.first_seq.map_or("-".into(), |s| s.to_string()),
            self.last_seq.map_or("-".into(), |s| s.to_string()),
            self.events,
            self.denied,
            if self.without_details > 0 {
                format!(", {} without details: erased or past retention", self.without_details)
            } else {
                String::new()
            }
        );
        let _ = writeln!(m, "## Activity\n\n| action | succeeded | refused | failed |\n|---|---:|---:|---:|");
        for a in &self.activity {
            row(&mut m, &[&cell(&a.action), &a.success, &a.denied, &a.failure]);
        }
        let _ = writeln!(m, "\n## Actors\n\n| actor | events | refused |\n|---|---:|---:|");
        for a in &self.actors {
            row(&mut m, &[&cell(&a.actor), &a.events, &a.denied]);
        }
        let _ = writeln!(m, "\n## Approvals and rejections\n");
        if self.reviews.is_empty() {
            let _ = writeln!(m, "None in this period.");
        } else {
            let _ = writeln!(
                m,
                "| event | time | reviewer | version | role | gate | decision | rationale |\n|---|---|---|---|---|---|---|---|"
            );
            for r in &self.reviews {
                row(
                    &mut m,
                    &[
                        &r.seq,
                        &iso(r.time),
                        &cell(&r.actor),
                        &cell(r.target.trim_start_matches("version:")),
                        &cell(&r.role),
                        &cell(&r.gate),
                        &cell(&r.decision),
                        &cell(&r.rationale),
                    ],
                );
            }
        }
        let _ = writeln!(m, "\n## Promotions to production\n");
        if self.promotions.is_empty() {
            let _ = writeln!(m, "None in this period.");
        }
        for p in &self.promotions {
            let _ = writeln!(m, "- {} by {} at {} (event {})", p.action, p.actor, iso(p.time), p.seq);
        }
        let _ = writeln!(m, "\n## Policy violations and refused requests\n");
        if self.policy_violations.is_empty() {
            let _ = writeln!(m, "None in this period.");
        } else {
            let _ = writeln!(
                m,
                "| event | time | who | version | action | reason | blocked by |\n|---|---|---|---|---|---|---|"
            );
            for x in &self.policy_violations {
                row(
                    &mut m,
                    &[
                        &x.seq,
                        &iso(x.time),
                        &cell(&x.actor),
                        &cell(x.target.trim_start_matches("version:")),
                        &cell(&x.action),
                        &cell(&x.reason),
                        &cell(&x.blocked_by.join(", ")),
                    ],
                );
            }
        }
        let _ = writeln!(m, "\n## Exceptions\n");
        if self.exceptions.is_empty() {
            let _ = writeln!(m, "None in this period.");
        } else {
            let _ = writeln!(
                m,
                "| event | time | who | version | action | policy | status | justification |\n|---|---|---|---|---|---|---|---|"
            );
            for x in &self.exceptions {
                row(
                    &mut m,
                    &[
                        &x.seq,
                        &iso(x.time),
                        &cell(&x.actor),
                        &cell(x.target.trim_start_matches("version:")),
                        &cell(&x.action),
                        &cell(x.policy.as_deref().unwrap_or("")),
                        &cell(x.status.as_deref().unwrap_or("")),
                        &cell(x.justification.as_deref().unwrap_or("")),
                    ],
                );
            }
        }
        let _ = writeln!(m, "\n## Access\n\nRoles granted and revoked in this period:\n");
        if self.access_changes.is_empty() {
            let _ = writeln!(m, "None.");
        }
        for a in &self.access_changes {
            let verb = if a.action == "grant.create" { "granted" } else { "revoked" };
            let scope = a.namespace.as_deref().map(|n| format!(" in {n}")).unwrap_or_else(|| " globally".into());
            let _ = writeln!(
                m,
                "- {} {verb} {} to {}{scope} at {} (event {})",
                a.actor,
                a.role,
                a.username,
                iso(a.time),
                a.seq
            );
        }
        if !self.roles.is_empty() {
            let _ = writeln!(m, "\nWho holds each role now:\n\n| role | holders |\n|---|---|");
            for r in &self.roles {
                row(&mut m, &[&cell(&r.role), &cell(&r.holders.join(", "))]);
            }
        }
        m
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn iso(ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Writes one Markdown table row (cells already made safe with [`cell`] where needed).
fn row(m: &mut String, cells: &[&dyn std::fmt::Display]) {
    for c in cells {
        let _ = write!(m, "| {c} ");
    }
    m.push_str("|\n");
}

/// Text safe inside a Markdown table cell: one line, no column breaks.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{EventDetails, GENESIS};

    fn rec(
        seq: i64,
        action: &str,
        outcome: &str,
        actor: &str,
        target: &str,
        before: Option<&str>,
        after: Option<&str>,
    ) -> AuditRecord {
        let d = EventDetails {
            actor: actor.into(),
            key_id: None,
            target: target.into(),
            before: before.map(str::to_owned),
            after: after.map(str::to_owned),
            request_id: None,
            source_ip: None,
            user_agent: None,
        };
        AuditRecord::seal(&GENESIS, seq, 1_764_000_000_000 + seq * 1000, action.into(), outcome.into(), d)
    }

    const V: &str = "version:risk/fraud:3";

    fn story() -> Vec<AuditRecord> {
        vec![
            rec(1, "version.create", "success", "user:ci", V, None, Some(r#"{"number":3}"#)),
            rec(
                2,
                "eval.result.submit",
                "success",
                "service:eval",
                V,
                None,
                Some(
                    r#"{"id":"e1","suite":"release","passed":true,"metrics":[{"name":"auc","value":0.93,"passed":true,"message":"auc = 0.93 passes (≥ 0.9)"}]}"#,
                ),
            ),
            rec(
                3,
                "version.submit",
                "success",
                "user:olivia",
                V,
                Some(r#"{"stage":"draft"}"#),
                Some(r#"{"stage":"submitted","reason":"ready","policies":[]}"#),
            ),
            rec(
                4,
                "version.promote",
                "denied",
                "user:olivia",
                V,
                Some(r#"{"stage":"approved_prod"}"#),
                Some(
                    r#"{"refused":"policy fairness blocks","blocked_by":[{"policy":"fairness","rule":"gap"}],"policies":[{"policy":"fairness","policy_version":2,"rule":"gap","outcome":"fail","message":"gap = 0.08 fails (≤ 0.05)","waived":false,"blocked":true}]}"#,
                ),
            ),
            rec(
                5,
                "policy.exception.approve",
                "success",
                "user:rita",
                V,
                Some(r#"{"policy":"fairness","status":"requested"}"#),
                Some(r#"{"policy":"fairness","status":"approved","justification":"mitigated | by reweighting"}"#),
            ),
            rec(
                6,
                "version.review.approve",
                "success",
                "user:rita",
                V,
                Some(r#"{"stage":"submitted"}"#),
                Some(
                    r#"{"stage":"approved_staging","review":{"gate":"staging","role":"mrc","decision":"approve","rationale":"card and metrics reviewed"},"policies":[]}"#,
                ),
            ),
            rec(7, "model.update", "success", "user:olivia", "model:risk/fraud", None, None),
            rec(
                8,
                "version.promote",
                "success",
                "user:olivia",
                V,
                Some(r#"{"stage":"approved_prod"}"#),
                Some(
                    r#"{"stage":"production","reason":"go","policies":[{"policy":"fairness","policy_version":2,"rule":"gap","outcome":"fail","message":"gap = 0.08 fails (≤ 0.05)","waived":true,"blocked":false}]}"#,
                ),
            ),
            rec(
                9,
                "grant.create",
                "success",
                "user:admin",
                "grant:vic/viewer@risk",
                None,
                Some(
                    r#"{"id":"g1","username":"vic","role":"viewer","namespace":"risk","created_at":1,"created_by":"user:admin"}"#,
                ),
            ),
        ]
    }

    #[test]
    fn an_explanation_follows_the_version_through_its_events() {
        let mut e = Explanation::new(V);
        let mut events = story();
        let mut pruned = rec(10, "version.get", "success", "pruned", V, None, None);
        pruned.salt = None;
        events.push(pruned);
        events.iter().for_each(|r| e.add(r));
        assert_eq!((e.events, e.without_details), (8, 1), "events about other targets are left out");
        assert_eq!(e.created.as_ref().map(|c| c.actor.as_str()), Some("user:ci"));
        assert_eq!(
            e.steps.iter().map(|s| s.action.as_str()).collect::<Vec<_>>(),
            ["version.submit", "version.review.approve", "version.promote"]
        );
        assert_eq!(e.production.as_ref().map(|p| (p.seq, p.actor.as_str())), Some((8, "user:olivia")));
        assert_eq!(e.reviews.len(), 1);
        assert_eq!(e.reviews[0].rationale, "card and metrics reviewed");
        assert_eq!(e.refusals.len(), 1);
        assert_eq!(e.refusals[0].blocked_by, ["fairness/gap"]);
        assert_eq!(e.policy_checks.len(), 2);
        assert!(e.policy_checks[1].results[0].waived);
        assert_eq!(e.evaluations[0].metrics[0].value, Some(0.93));
        assert_eq!(e.exceptions[0].status.as_deref(), Some("approved"));
        let md = e.to_markdown();
        for needle in [
            "# How risk/fraud:3 was decided",
            "Promoted to production by user:olivia",
            "| user:rita | mrc | staging | approve | card and metrics reviewed |",
            "gap = 0.08 fails (≤ 0.05)",
            "(waived by an exception)",
            "auc = 0.93 passes (≥ 0.9)",
            "mitigated \\| by reweighting",
            "fairness/gap",
        ] {
            assert!(md.contains(needle), "{needle} missing from:\n{md}");
        }
    }

    #[test]
    fn a_report_counts_the_period_and_lists_what_auditors_ask_for() {
        let mut b = ReportBuilder::new(Some(0), None, 1_764_000_100_000);
        story().iter().for_each(|r| b.add(r));
        let r = b.finish();
        assert_eq!((r.events, r.denied, r.first_seq, r.last_seq), (9, 1, Some(1), Some(9)));
        let promote = r.activity.iter().find(|a| a.action == "version.promote").unwrap();
        assert_eq!((promote.success, promote.denied), (1, 1));
        assert_eq!(r.actors[0].actor, "user:olivia", "the busiest actor first");
        assert_eq!(r.reviews.len(), 1);
        assert_eq!(r.promotions.len(), 1);
        assert_eq!(r.policy_violations[0].reason, "policy fairness blocks");
        assert_eq!(r.exceptions.len(), 1);
        assert_eq!(r.access_changes[0].username, "vic");
        assert_eq!(r.access_changes[0].namespace.as_deref(), Some("risk"));
        let md = r.to_markdown();
        for needle in [
            "# Compliance report: 1970-01-01 00:00:00 UTC to now",
            "| version.promote | 1 | 1 | 0 |",
            "user:admin granted viewer to vic in risk",
            "policy fairness blocks",
        ] {
            assert!(md.contains(needle), "{needle} missing from:\n{md}");
        }
    }

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(iso(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(iso(1_767_225_600_000), "2026-01-01 00:00:00 UTC");
        assert_eq!(iso(951_782_400_000 + 3_661_000), "2000-02-29 01:01:01 UTC");
    }
}
