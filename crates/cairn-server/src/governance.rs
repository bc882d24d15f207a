//! The governance service: what a version's facts are, which policies and evaluation gates
//! a transition must pass, and how a lifecycle request or a review becomes one stored,
//! audited change. Handlers in `routes::lifecycle` authorise and call these.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_core::lifecycle::{self, Action, Approval, Gate, Review, RiskTier, Stage};
use cairn_core::policy::{self, CompiledPolicy, Decision, PolicyDoc};
use cairn_core::{ModelRef, Role, VersionSelector};
use cairn_store::lifecycle::{LifecycleChange, LifecycleView, NewReview, PolicyResultRecord};
use cairn_store::model::Model;
use cairn_store::version::Version;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Everything known about one version that a decision needs.
pub struct Subject {
    /// The model.
    pub model_ref: ModelRef,
    /// Its row.
    pub model: Model,
    /// The version.
    pub version: Version,
    /// Its lifecycle.
    pub lifecycle: LifecycleView,
}

impl Subject {
    /// The model's risk tier.
    pub fn risk(&self) -> RiskTier {
        RiskTier::parse(&self.model.risk_tier).unwrap_or(RiskTier::High)
    }
}

/// Loads a version with its model and lifecycle.
pub async fn load(state: &AppState, model: &ModelRef, selector: &VersionSelector) -> Result<Subject, ApiError> {
    let (m, version) = tokio::try_join!(state.store.get_model(model), state.store.get_version(model, selector))?;
    let lifecycle = state.store.version_lifecycle(model, &VersionSelector::Number(version.version)).await?;
    Ok(Subject { model_ref: model.clone(), model: m, version, lifecycle })
}

/// The facts document policies are evaluated against (docs/POLICIES.md).
pub async fn facts(state: &AppState, s: &Subject, target: Stage) -> Result<Value, ApiError> {
    let sel = VersionSelector::Number(s.version.version);
    // Independent reads, at once: on PostgreSQL each is a round trip to the server.
    let (card, results, signatures, (_, recorded), (_, scans)) = tokio::try_join!(
        state.store.version_card(&s.model_ref, &sel),
        state.store.eval_results(&s.model_ref, &sel),
        state.store.version_signatures(&s.model_ref, &sel),
        state.store.version_lineage(&s.model_ref, &sel),
        state.store.version_scans(&s.model_ref, &sel),
    )?;
    let (card_json, completeness) = match &card {
        Some(c) => (
            serde_json::from_str::<Value>(&c.card).unwrap_or(Value::Null),
            serde_json::from_str::<Value>(&c.completeness).unwrap_or(Value::Null),
        ),
        None => (Value::Null, Value::Null),
    };
    // Metrics: the card's (an entry without dataset/split/slice qualifiers first, as search
    // reads them), then the latest evaluation result of each suite on top.
    let mut metrics: serde_json::Map<String, Value> =
        cairn_store::evaluation::card_metrics(&card_json).into_iter().map(|(k, v)| (k, json!(v))).collect();
    // What the card claims, before evaluation results are layered on: drift is measured
    // against it.
    let claimed = metrics.clone();
    let mut evaluations = serde_json::Map::new();
    for r in &results {
        let mut values = serde_json::Map::new();
        for m in r.metrics.as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (m.get("name").and_then(Value::as_str), m.get("value"))
                && !value.is_null()
            {
                values.insert(name.to_owned(), value.clone());
                metrics.insert(name.to_owned(), value.clone());
            }
        }
        evaluations.insert(
            r.suite.clone(),
            json!({"passed": r.passed, "metrics": values, "submitted_at": r.submitted_at, "submitted_by": r.submitted_by}),
        );
    }
    let drift = drift(&claimed, &results);
    let users: Vec<&str> = signatures.iter().filter(|s| s.kind == "user").map(|s| s.key_id.as_str()).collect();
    let mut datasets: Vec<Value> =
        card_json.pointer("/training/datasets").and_then(Value::as_array).cloned().unwrap_or_default();
    // Recorded lineage on top of what the card says.
    let mut runs: Vec<String> = if s.version.run_id.is_empty() { vec![] } else { vec![s.version.run_id.clone()] };
    let (mut base_models, mut code) = (Vec::new(), Vec::new());
    for e in &recorded {
        match e.kind.as_str() {
            "dataset" => {
                datasets.push(json!({"name": e.name, "version": e.reference, "uri": e.uri, "digest": e.digest}))
            }
            "run" => runs.push(format!("{}:{}", e.platform, e.name)),
            "code" => code.push(json!({"repository": e.name, "commit": e.reference})),
            _ if e.parent_version_id.is_some() => base_models.push(format!("{}:{}", e.name, e.reference)),
            _ if e.reference.is_empty() => base_models.push(e.name.clone()),
            _ => base_models.push(format!("{}@{}", e.name, e.reference)),
        }
    }
    let card_license = card_json.pointer("/model/license").and_then(Value::as_str);
    let scan = crate::scanning::facts(&scans, card_license);
    let v = &s.version;
    let mut facts = json!({
        "model": {
            "name": s.model_ref.to_string(),
            "namespace": s.model.namespace,
            "risk_tier": s.model.risk_tier,
            "team": s.model.team,
            "owners": s.model.owners,
            "tags": s.model.tags,
        },
        "version": {
            "number": v.version,
            "semver": v.semver,
            "stage": s.lifecycle.stage,
            "target_stage": target,
            "code_commit": v.code_commit,
            "training_job": v.training_job,
            "run_id": v.run_id,
            "tags": v.tags,
            "source": v.source,
            "digest": v.digest,
            "files": v.file_count,
            "size_bytes": v.size,
            "submitted_by": s.lifecycle.submitted_by,
        },
        "card": card_json,
        "card_completeness": completeness,
        "metrics": metrics,
        "evaluations": evaluations,
        "signatures": {
            "server": signatures.iter().any(|s| s.kind == "server"),
            "users": users,
            "count": signatures.len(),
        },
        "drift": drift,
        "lineage": {
            "datasets": datasets,
            "runs": runs,
            "code_commit": v.code_commit,
            "code": code,
            "training_job": v.training_job,
            "base_models": base_models,
        },
    });
    // Absent for a version never scanned, so rules on it fail closed.
    if let Some(scan) = scan {
        facts["scan"] = scan;
    }
    Ok(facts)
}

/// Drift between the card's claims and the latest evaluation: for every metric both name,
/// the claimed value, the latest measured one and their difference, and the largest absolute
/// difference (`0` when nothing can be compared).
fn drift(claimed: &serde_json::Map<String, Value>, results: &[cairn_store::evaluation::EvalResult]) -> Value {
    let mut latest: BTreeMap<&str, f64> = BTreeMap::new();
    for r in results {
        for m in r.metrics.as_array().into_iter().flatten() {
            if let (Some(name), Some(v)) =
                (m.get("name").and_then(Value::as_str), m.get("value").and_then(Value::as_f64))
            {
                latest.insert(name, v);
            }
        }
    }
    let mut metrics = serde_json::Map::new();
    let mut max = 0.0f64;
    for (name, claim) in claimed {
        let (Some(claim), Some(now)) = (claim.as_f64(), latest.get(name.as_str())) else { continue };
        let delta = now - claim;
        max = max.max(delta.abs());
        metrics.insert(name.clone(), json!({"card": claim, "latest": now, "delta": delta}));
    }
    json!({"metrics": metrics, "max_abs_delta": max})
}

/// The active policies, parsed and compiled once per (name, version): stored versions never
/// change, so only a version this replica has not seen is fetched and compiled.
pub async fn active_policies(state: &AppState) -> Result<Vec<(i64, Arc<CompiledPolicy>)>, ApiError> {
    let active = state.store.active_policy_versions().await?;
    let mut out = Vec::with_capacity(active.len());
    for (name, version) in active {
        let key = (name, version);
        let cached = state.policy_cache.lock().map_err(|_| ApiError::busy("policy cache poisoned"))?.get(&key).cloned();
        if let Some(c) = cached {
            out.push((version, c));
            continue;
        }
        let p = state.store.get_policy(&key.0, Some(version)).await?;
        // A stored document that no longer compiles fails closed: the transition is refused.
        let compiled: Arc<CompiledPolicy> = serde_json::from_value::<PolicyDoc>(p.document)
            .map_err(|e| e.to_string())
            .and_then(|d| d.compile().map(Arc::new).map_err(|e| e.to_string()))
            .map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "policy_error",
                    format!(
                        "active policy \"{}\" version {version} cannot be evaluated ({e}); deactivate or fix it",
                        key.0
                    ),
                )
            })?;
        if let Ok(mut cache) = state.policy_cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key, compiled.clone());
        }
        out.push((version, compiled));
    }
    Ok(out)
}

/// The outcome of checking a transition: the policy decision and the gate's other
/// blockers (required evaluation suites not passed).
pub struct Check {
    /// The policy decision.
    pub decision: Decision,
    /// Blockers other than policies.
    pub gate_blockers: Vec<String>,
    /// The evaluation id results are stored under.
    pub evaluation: String,
    /// The facts evaluated.
    pub facts: Value,
}

impl Check {
    /// Whether the transition must be refused.
    pub fn blocked(&self) -> bool {
        self.decision.blocked || !self.gate_blockers.is_empty()
    }

    /// The per-rule records to store.
    pub fn records(&self, target: Stage, now: i64) -> Vec<PolicyResultRecord> {
        self.decision
            .results
            .iter()
            .map(|r| PolicyResultRecord {
                evaluation: self.evaluation.clone(),
                target_stage: target.as_str().to_owned(),
                policy: r.policy.clone(),
                policy_version: r.policy_version,
                severity: r.severity.as_str().to_owned(),
                rule_id: r.rule_id.clone(),
                action: r.action.as_str().to_owned(),
                outcome: outcome_str(r.outcome).to_owned(),
                message: r.message.clone(),
                waived: r.waived,
                blocked: r.blocks(),
                at: now,
            })
            .chain(self.gate_blockers.iter().map(|b| PolicyResultRecord {
                evaluation: self.evaluation.clone(),
                target_stage: target.as_str().to_owned(),
                policy: "required-evaluations".into(),
                policy_version: 0,
                severity: "high".into(),
                rule_id: "suite-passed".into(),
                action: "block".into(),
                outcome: "fail".into(),
                message: b.clone(),
                waived: false,
                blocked: true,
                at: now,
            }))
            .collect()
    }

    /// A sentence naming what blocks.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> =
            self.decision.blocking().map(|r| format!("{}/{}: {}", r.policy, r.rule_id, r.message)).collect();
        parts.extend(self.gate_blockers.iter().cloned());
        parts.join("; ")
    }
}

fn outcome_str(o: policy::Outcome) -> &'static str {
    match o {
        policy::Outcome::Pass => "pass",
        policy::Outcome::Fail => "fail",
        policy::Outcome::Error => "error",
    }
}

/// Evaluates the active policies (or `only`) and the required evaluation suites for entry
/// into `target`.
pub async fn check(
    state: &AppState,
    s: &Subject,
    target: Stage,
    only: Option<(i64, Arc<CompiledPolicy>)>,
) -> Result<Check, ApiError> {
    let facts = facts(state, s, target).await?;
    let policies = match only {
        Some(p) => vec![p],
        None => active_policies(state).await?,
    };
    let now = state.now_ms();
    let exceptions = state.store.policy_exceptions(&s.model_ref, &VersionSelector::Number(s.version.version)).await?;
    let waived =
        |name: &str| exceptions.iter().any(|e| e.policy == name && e.status == "approved" && e.expires_at > now);
    let refs: Vec<(i64, &CompiledPolicy)> = policies.iter().map(|(v, p)| (*v, p.as_ref())).collect();
    let decision = policy::decide(&refs, &facts, &s.model.namespace, s.risk(), target, &waived);
    let mut gate_blockers = Vec::new();
    if matches!(target, Stage::ApprovedProd | Stage::Production) {
        let ns = s.model_ref.namespace.clone();
        for suite in state.store.list_eval_suites(&ns).await?.into_iter().filter(|s| s.required) {
            let passed =
                facts.pointer(&format!("/evaluations/{}/passed", suite.name.replace('~', "~0").replace('/', "~1")));
            match passed.and_then(Value::as_bool) {
                Some(true) => {}
                Some(false) => gate_blockers.push(format!("required evaluation suite \"{}\" failed", suite.name)),
                None => gate_blockers.push(format!("required evaluation suite \"{}\" has no results", suite.name)),
            }
        }
    }
    Ok(Check { decision, gate_blockers, evaluation: uuid::Uuid::now_v7().to_string(), facts })
}

/// The webhook payload describing a version.
fn event_payload(s: &Subject, from: Stage, to: Stage, caller: &Caller, reason: &str) -> Value {
    json!({
        "model": s.model_ref.to_string(),
        "version": s.version.version,
        "semver": s.version.semver,
        "digest": s.version.digest,
        "from": from,
        "to": to,
        "actor": caller.principal.username,
        "reason": reason,
    })
}

/// A refusal: recorded in the audit log with the policy results that caused it, then
/// returned to the caller.
async fn refuse(
    state: &AppState,
    caller: &Caller,
    s: &Subject,
    action: &str,
    error: ApiError,
    records: &[PolicyResultRecord],
) -> ApiError {
    if let Err(e) = state
        .store
        .record_lifecycle_refusal(&caller.audit, &s.model_ref, s.version.version, action, &error.message, records)
        .await
    {
        tracing::warn!(error = %e, "could not record a refused lifecycle request");
    }
    error
}

fn conflict(code: &'static str, message: String) -> ApiError {
    ApiError::new(axum::http::StatusCode::CONFLICT, code, message)
}

/// Runs a lifecycle action (submit, promote, deprecate, retire) on a loaded version.
pub async fn act(
    state: &AppState,
    caller: &Caller,
    s: &Subject,
    action: Action,
    reason: &str,
    keep_previous: bool,
) -> Result<LifecycleView, ApiError> {
    let from = s.lifecycle.stage;
    if matches!(action, Action::Deprecate | Action::Retire) && reason.trim().is_empty() {
        return Err(ApiError::invalid(format!("a reason is required to {action} a version")));
    }
    if reason.len() > 4000 {
        return Err(ApiError::invalid("reason must be at most 4000 bytes"));
    }
    // `promote` on a version whose gate approvals are complete (the gate's move was blocked
    // by a policy then) retries the gate.
    if action == Action::Promote
        && let Some(gate) = from.gate()
    {
        let approvals = approvals(&s.lifecycle, gate);
        let review = review_facts(s, gate, &approvals);
        if review.missing().is_empty() {
            return advance(state, caller, s, gate, None, reason).await;
        }
    }
    let to = match lifecycle::apply(from, action) {
        Ok(to) => to,
        Err(e) => {
            let err = conflict("illegal_transition", e.to_string());
            return Err(refuse(state, caller, s, action.as_str(), err, &[]).await);
        }
    };
    let check = check(state, s, to, None).await?;
    let records = check.records(to, state.now_ms());
    if check.blocked() {
        let err = conflict("policy_blocked", format!("cannot {action} to {to}: blocked by {}", check.summary()));
        return Err(refuse(state, caller, s, action.as_str(), err, &records).await);
    }
    let event = match (action, to) {
        (Action::Submit, _) => Some("version.submitted"),
        (Action::Promote, _) => Some("version.promoted"),
        _ => None,
    };
    let change = LifecycleChange {
        from,
        round: s.lifecycle.review_round,
        to: Some(to),
        action: action.as_str().to_owned(),
        reason: reason.to_owned(),
        submitter: (action == Action::Submit).then(|| caller.principal.username.clone()),
        review: None,
        policy_results: records,
        deprecate_previous: !keep_previous,
        events: event.map(|e| (e.to_owned(), event_payload(s, from, to, caller, reason))).into_iter().collect(),
    };
    Ok(state.store.apply_lifecycle_change(&caller.audit, &s.model_ref, s.version.version, &change).await?)
}

fn approvals(view: &LifecycleView, gate: Gate) -> Vec<Approval> {
    view.current_approvals(gate)
        .filter_map(|r| Some(Approval { approver: r.reviewer.clone(), role: Role::parse(&r.role)? }))
        .collect()
}

fn review_facts<'a>(s: &'a Subject, gate: Gate, approvals: &'a [Approval]) -> Review<'a> {
    Review { gate, risk: s.risk(), submitter: &s.lifecycle.submitted_by, owners: &s.model.owners, approvals }
}

/// Moves a version through a gate whose approvals are complete (policies permitting),
/// recording `review` (the approval that completed it) in the same transaction.
async fn advance(
    state: &AppState,
    caller: &Caller,
    s: &Subject,
    gate: Gate,
    review: Option<NewReview>,
    reason: &str,
) -> Result<LifecycleView, ApiError> {
    let from = s.lifecycle.stage;
    let to = gate.target();
    let check = check(state, s, to, None).await?;
    let records = check.records(to, state.now_ms());
    if check.blocked() {
        let message = format!(
            "the {gate} approvals are complete, but entering {to} is blocked by {}; fix it (or get an exception) \
             and run promote to retry",
            check.summary()
        );
        if let Some(review) = review {
            // The approval stands; the version stays where it is.
            let change = LifecycleChange {
                from,
                round: s.lifecycle.review_round,
                to: None,
                action: "approve".into(),
                reason: reason.to_owned(),
                submitter: None,
                review: Some(review),
                policy_results: records.clone(),
                deprecate_previous: false,
                events: Vec::new(),
            };
            state.store.apply_lifecycle_change(&caller.audit, &s.model_ref, s.version.version, &change).await?;
        }
        let err = conflict("policy_blocked", message);
        return Err(refuse(state, caller, s, "approve", err, &records).await);
    }
    let change = LifecycleChange {
        from,
        round: s.lifecycle.review_round,
        to: Some(to),
        action: "approve".into(),
        reason: reason.to_owned(),
        submitter: None,
        review,
        policy_results: records,
        deprecate_previous: false,
        events: vec![("version.approved".into(), event_payload(s, from, to, caller, reason))],
    };
    Ok(state.store.apply_lifecycle_change(&caller.audit, &s.model_ref, s.version.version, &change).await?)
}

/// Records a review (approve, reject, comment) given in `role`; an approval that completes
/// the gate moves the version on, a rejection sends it back for changes.
pub async fn review(
    state: &AppState,
    caller: &Caller,
    s: &Subject,
    decision: &str,
    role: &str,
    rationale: &str,
) -> Result<LifecycleView, ApiError> {
    let rationale = rationale.trim();
    if rationale.is_empty() || rationale.len() > 4000 {
        return Err(ApiError::invalid("a rationale (1–4000 bytes) is required with every review"));
    }
    let action = format!("review.{decision}");
    let Some(role) = Role::parse(role).filter(|r| matches!(r, Role::Mrc | Role::Security | Role::Sre)) else {
        return Err(ApiError::invalid(format!("role must be mrc, security or sre, not {role:?}")));
    };
    if !matches!(decision, "approve" | "reject" | "comment") {
        return Err(ApiError::invalid(format!("decision must be approve, reject or comment, not {decision:?}")));
    }
    let ns = s.model_ref.namespace.as_str();
    let holds =
        caller.principal.grants.iter().any(|g| g.role == role && g.namespace.as_deref().is_none_or(|n| n == ns));
    if !holds {
        let err = ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "not_a_reviewer",
            format!("'{}' does not hold the {role} role in namespace '{ns}' (or globally)", caller.principal.username),
        );
        return Err(refuse(state, caller, s, &action, err, &[]).await);
    }
    let from = s.lifecycle.stage;
    let Some(gate) = from.gate() else {
        let err = conflict(
            "illegal_transition",
            format!("version {} is {from}; only submitted and staging versions are reviewed", s.version.version),
        );
        return Err(refuse(state, caller, s, &action, err, &[]).await);
    };
    let me = caller.principal.username.clone();
    let new_review = NewReview {
        gate,
        reviewer: me.clone(),
        role: role.as_str().to_owned(),
        decision: decision.to_owned(),
        rationale: rationale.to_owned(),
    };
    let approvals = approvals(&s.lifecycle, gate);
    let facts = review_facts(s, gate, &approvals);
    match decision {
        "approve" => {
            if let Err(e) = facts.check_approver(&me, role) {
                let err = ApiError::new(axum::http::StatusCode::FORBIDDEN, "approval_refused", e.to_string());
                return Err(refuse(state, caller, s, &action, err, &[]).await);
            }
            let mut after = approvals.clone();
            after.push(Approval { approver: me, role });
            if review_facts(s, gate, &after).missing().is_empty() {
                return advance(state, caller, s, gate, Some(new_review), rationale).await;
            }
            let change = LifecycleChange {
                from,
                round: s.lifecycle.review_round,
                to: None,
                action: "approve".into(),
                reason: rationale.to_owned(),
                submitter: None,
                review: Some(new_review),
                policy_results: Vec::new(),
                deprecate_previous: false,
                events: Vec::new(),
            };
            Ok(state.store.apply_lifecycle_change(&caller.audit, &s.model_ref, s.version.version, &change).await?)
        }
        "reject" => {
            if me == s.lifecycle.submitted_by {
                let err = ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "approval_refused",
                    "the submitter cannot review their own submission",
                );
                return Err(refuse(state, caller, s, &action, err, &[]).await);
            }
            let to =
                lifecycle::apply(from, Action::Reject).map_err(|e| conflict("illegal_transition", e.to_string()))?;
            let change = LifecycleChange {
                from,
                round: s.lifecycle.review_round,
                to: Some(to),
                action: "reject".into(),
                reason: rationale.to_owned(),
                submitter: None,
                review: Some(new_review),
                policy_results: Vec::new(),
                deprecate_previous: false,
                events: vec![("version.rejected".into(), event_payload(s, from, to, caller, rationale))],
            };
            Ok(state.store.apply_lifecycle_change(&caller.audit, &s.model_ref, s.version.version, &change).await?)
        }
        _ => {
            let change = LifecycleChange {
                from,
                round: s.lifecycle.review_round,
                to: None,
                action: "comment".into(),
                reason: rationale.to_owned(),
                submitter: None,
                review: Some(new_review),
                policy_results: Vec::new(),
                deprecate_previous: false,
                events: Vec::new(),
            };
            Ok(state.store.apply_lifecycle_change(&caller.audit, &s.model_ref, s.version.version, &change).await?)
        }
    }
}

/// What a version waits for, in words, and what can be done next.
pub fn waiting(s: &Subject, view: &LifecycleView) -> (Option<Gate>, Option<String>, Vec<String>) {
    let gate = view.stage.gate();
    let waiting_for = gate.map(|g| {
        let approvals = approvals(view, g);
        let mut text = review_facts(s, g, &approvals).missing_text();
        if text == "complete" {
            text = "approvals complete; promote to retry the policies that blocked the gate".into();
        }
        text
    });
    let next = Action::ALL
        .iter()
        .filter(|a| lifecycle::apply(view.stage, **a).is_ok())
        .map(|a| a.as_str().to_owned())
        .collect();
    (gate, waiting_for, next)
}

/// Parses metric results given as `{"accuracy": 0.9}` or `[{name, value, …}]` into name →
/// value (qualified metrics keep the first value per name).
pub fn metric_values(results: &Value) -> Result<BTreeMap<String, f64>, ApiError> {
    let card = cairn_card::input::results_from_json(std::path::Path::new("results.json"), results.clone())
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let mut out = BTreeMap::new();
    for m in card.evaluation.metrics {
        out.entry(m.name).or_insert(m.value);
    }
    Ok(out)
}
