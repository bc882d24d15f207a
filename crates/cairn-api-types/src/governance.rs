//! Governance on the wire: the lifecycle of versions, reviews, policies and their results,
//! policy exceptions, cards attached to versions, evaluation suites and results
//! (docs/GOVERNANCE.md, docs/POLICIES.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST …/versions/{version}/{submit|promote|deprecate|retire}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRequest {
    /// Why (recorded with the transition; required for deprecate and retire).
    #[serde(default)]
    pub reason: String,
    /// On promotion to production: keep the version it replaces in production instead of
    /// deprecating it (default false).
    #[serde(default)]
    pub keep_previous: bool,
}

/// Body of `POST …/versions/{version}/reviews`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// `approve`, `reject` (→ changes_requested) or `comment`.
    pub decision: String,
    /// The reviewer role the decision is given in: `mrc`, `security` or `sre`. The caller must
    /// hold it in the model's namespace or globally.
    pub role: String,
    /// Why (required).
    pub rationale: String,
}

/// A recorded transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    /// From this stage.
    pub from: String,
    /// To this stage.
    pub to: String,
    /// What moved it.
    pub action: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: String,
}

/// A recorded review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Review {
    /// Review round (each submission starts one).
    pub round: i64,
    /// `staging` or `production`.
    pub gate: String,
    /// Reviewer.
    pub reviewer: String,
    /// Role.
    pub role: String,
    /// `approve`, `reject` or `comment`.
    pub decision: String,
    /// Rationale.
    pub rationale: String,
    /// When.
    pub at: String,
}

/// One rule's result of a policy evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyResult {
    /// Evaluation id (one per attempted transition or dry run).
    pub evaluation: String,
    /// The stage the version was to enter.
    pub target_stage: String,
    /// Policy name.
    pub policy: String,
    /// Policy version.
    pub policy_version: i64,
    /// Severity.
    pub severity: String,
    /// Rule id.
    pub rule_id: String,
    /// `block`, `warn` or `notify`.
    pub action: String,
    /// `pass`, `fail` or `error`.
    pub outcome: String,
    /// What was found.
    pub message: String,
    /// Waived by an approved exception.
    pub waived: bool,
    /// Blocked the transition.
    pub blocked: bool,
}

/// Where a version is in its lifecycle and what it waits for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Lifecycle {
    /// `namespace/name`.
    pub model: String,
    /// Version number.
    pub version: i64,
    /// Current stage.
    pub stage: String,
    /// The model's risk tier.
    pub risk_tier: String,
    /// Who submitted it last.
    pub submitted_by: String,
    /// Current review round.
    pub review_round: i64,
    /// The approval gate it waits at (`staging`, `production`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// What the gate still needs, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// The actions possible from here (`submit`, `promote`, …; reviews not included).
    pub next_actions: Vec<String>,
    /// Every transition, oldest first.
    pub transitions: Vec<Transition>,
    /// Every review, oldest first.
    pub reviews: Vec<Review>,
    /// The rules that did not pass in the last policy evaluation (failed, errored or waived);
    /// every result is at `…/policy-results`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_results: Vec<PolicyResult>,
}

/// Body of `POST …/versions/{version}/policy-check`: a dry run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyCheckRequest {
    /// The stage to check entry to (default: where the next action would take it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Evaluate this policy document (YAML or JSON) instead of the active policies (what
    /// `cairn policy test` sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// The answer to a dry run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyCheck {
    /// The stage checked.
    pub target: String,
    /// Whether entering it would be blocked.
    pub blocked: bool,
    /// Other blockers than policies (missing required evaluations …).
    pub gate_blockers: Vec<String>,
    /// Per rule.
    pub results: Vec<PolicyResult>,
    /// The facts the rules saw.
    #[schema(value_type = Object)]
    pub facts: serde_json::Value,
}

/// Body of `POST /api/v1/policies`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyPolicy {
    /// The policy document, YAML or JSON (docs/POLICIES.md).
    pub source: String,
    /// `active` (default), `draft` or `inactive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A stored policy version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// Version.
    pub version: i64,
    /// `draft`, `active` or `inactive`.
    pub status: String,
    /// Severity.
    pub severity: String,
    /// The parsed document.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// The source as applied.
    pub source: String,
    /// `sha256:` of the source.
    pub digest: String,
    /// Created.
    pub created_at: String,
    /// By.
    pub created_by: String,
    /// Status changed.
    pub updated_at: String,
    /// By.
    pub updated_by: String,
    /// In the answer to an apply: whether a new version was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// Policies.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyList {
    /// By name, then version.
    pub policies: Vec<Policy>,
}

/// Body of `PATCH /api/v1/policies/{name}/versions/{version}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPolicyStatus {
    /// `draft`, `active` or `inactive`.
    pub status: String,
}

/// Body of `POST …/versions/{version}/exceptions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestException {
    /// The policy to waive.
    pub policy: String,
    /// Why (10–4000 characters).
    pub justification: String,
    /// How long it lasts, in days (1–365, default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

/// Body of `POST /api/v1/policy-exceptions/{id}/decision`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideException {
    /// `approved`, `rejected` or `revoked`.
    pub status: String,
    /// A note.
    #[serde(default)]
    pub note: String,
}

/// A policy exception.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyException {
    /// Id.
    pub id: String,
    /// `namespace/name`.
    pub model: String,
    /// Version number.
    pub version: i64,
    /// The waived policy.
    pub policy: String,
    /// Why.
    pub justification: String,
    /// `requested`, `approved`, `rejected` or `revoked`.
    pub status: String,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: String,
    /// Who decided.
    pub decided_by: String,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// Note.
    pub decision_note: String,
    /// Until.
    pub expires_at: String,
}

/// Exceptions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyExceptionList {
    /// Newest first.
    pub exceptions: Vec<PolicyException>,
}

/// Body of `PUT …/versions/{version}/card`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutCard {
    /// The card source's file name, which says its form: `card.yaml`, `card.json`,
    /// `README.md` (a Hugging Face card).
    pub source_name: String,
    /// The card source.
    pub source: String,
    /// Evaluation results to merge into the card: `{"accuracy": 0.93}` or a list of
    /// `{name, value, dataset?, split?, slice?}` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub results: Option<serde_json::Value>,
}

/// A version's card: source, completeness and findings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CardInfo {
    /// Source file name.
    pub source_name: String,
    /// `sha256:` of the source.
    pub digest: String,
    /// Completeness score per standard (0–1).
    #[schema(value_type = Object)]
    pub completeness: serde_json::Value,
    /// Validation and secret-scan findings.
    #[schema(value_type = Vec<Object>)]
    pub findings: serde_json::Value,
    /// When.
    pub created_at: String,
    /// By.
    pub created_by: String,
}

/// Body of `PUT /api/v1/namespaces/{namespace}/eval-suites/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEvalSuite {
    /// The suite definition (docs/GOVERNANCE.md): metrics with `at_least`/`at_most`
    /// thresholds and groups, test type, dataset, harness.
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
    /// Whether versions of the namespace must pass it before production.
    #[serde(default)]
    pub required: bool,
}

/// An evaluation suite.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvalSuite {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Required before production.
    pub required: bool,
    /// Definition.
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
    /// Updated.
    pub updated_at: String,
    /// By.
    pub updated_by: String,
}

/// Suites.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvalSuiteList {
    /// By name.
    pub suites: Vec<EvalSuite>,
}

/// Body of `POST …/versions/{version}/evaluations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitEvaluation {
    /// The suite to judge the results against.
    pub suite: String,
    /// `{"accuracy": 0.93}` or a list of `{name, value, …}` records.
    #[schema(value_type = Object)]
    pub results: serde_json::Value,
    /// What it ran with (dataset, harness, hardware …).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

/// A stored evaluation result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvalResult {
    /// Id.
    pub id: String,
    /// Suite.
    pub suite: String,
    /// Every threshold passed.
    pub passed: bool,
    /// Per metric: name, group, value, thresholds, passed, message.
    #[schema(value_type = Vec<Object>)]
    pub metrics: serde_json::Value,
    /// Configuration.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// By.
    pub submitted_by: String,
    /// When.
    pub submitted_at: String,
}

/// Evaluation results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvalResultList {
    /// Oldest first.
    pub results: Vec<EvalResult>,
}

/// An evaluation job: a suite to run on a version (docs/GOVERNANCE.md#evaluation-jobs).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvalJob {
    /// Id.
    pub id: String,
    /// `namespace/name`.
    pub model: String,
    /// Version number.
    pub version: i64,
    /// The suite to run.
    pub suite: String,
    /// Higher runs first.
    pub priority: i64,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Claims so far.
    pub attempts: i64,
    /// Claims allowed.
    pub max_attempts: i64,
    /// A failed attempt is retried from then on.
    pub not_before: String,
    /// The worker running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The account that worker runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// Until when the worker holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    /// Why the last attempt failed, or why it was cancelled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The evaluation result it produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_id: Option<String>,
    /// Created.
    pub created_at: String,
    /// By (`system` when queued by a submission).
    pub created_by: String,
    /// Last change.
    pub updated_at: String,
    /// Ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// Evaluation jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvalJobList {
    /// The jobs.
    pub jobs: Vec<EvalJob>,
    /// Pass as `before` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// Body of `POST …/versions/{version}/eval-jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueEvalJob {
    /// The suite to run (of the model's namespace).
    pub suite: String,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: i64,
    /// Claims allowed, 1–20 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
}

/// Body of `POST /api/v1/eval-jobs/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimEvalJob {
    /// The worker's name (host, pod …), 1–128 characters.
    pub worker: String,
    /// Only jobs of these namespaces (default: every namespace the caller may run jobs in).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only these suites (default: any).
    #[serde(default)]
    pub suites: Vec<String>,
    /// How long the lease lasts before it must be renewed, 10–3600 s (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
}

/// A claimed job and the suite to run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimedEvalJob {
    /// The job, now `running` under the caller's lease.
    pub job: EvalJob,
    /// The suite's definition: metrics, dataset, harness.
    #[schema(value_type = Object)]
    pub suite: serde_json::Value,
}

/// Body of `POST /api/v1/eval-jobs/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalJobHeartbeat {
    /// The worker's name, as it claimed the job.
    pub worker: String,
    /// How long the renewed lease lasts, 10–3600 s (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
}

/// Body of `POST /api/v1/eval-jobs/{id}/complete`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteEvalJob {
    /// The worker's name, as it claimed the job.
    pub worker: String,
    /// `{"accuracy": 0.93}` or a list of `{name, value, …}` records.
    #[schema(value_type = Object)]
    pub results: serde_json::Value,
    /// What it ran with (dataset, harness, hardware …).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

/// A completed job and the evaluation result it stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompletedEvalJob {
    /// The job, now `succeeded`.
    pub job: EvalJob,
    /// The result, judged against the suite.
    pub result: EvalResult,
}

/// Body of `POST /api/v1/eval-jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailEvalJob {
    /// The worker's name, as it claimed the job.
    pub worker: String,
    /// What went wrong (at most 2000 characters are kept).
    pub error: String,
}

/// Body of `POST /api/v1/eval-jobs/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelEvalJob {
    /// Why (at most 2000 bytes).
    #[serde(default)]
    pub reason: String,
}
