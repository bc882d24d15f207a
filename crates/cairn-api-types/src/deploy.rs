//! Deployments on the wire (docs/DEPLOYMENTS.md): environments, deployment records,
//! rollbacks and SLO reports.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Service-level objectives: a report above any of them breaches.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SloThresholds {
    /// Highest acceptable error rate (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Highest acceptable 95th-percentile latency (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_p95_ms: Option<f64>,
    /// Highest acceptable drift score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drift_score: Option<f64>,
}

/// Body of `PUT /api/v1/environments/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEnvironment {
    #[serde(default)]
    pub description: String,
    /// Only versions approved for production (`approved_prod`, `production`) with a valid
    /// server signature may be deployed here.
    #[serde(default)]
    pub production: bool,
    #[serde(default)]
    pub slo: SloThresholds,
    /// Roll back by itself when an SLO report breaches (default true).
    #[serde(default = "yes")]
    pub auto_rollback: bool,
}

fn yes() -> bool {
    true
}

/// An environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    pub name: String,
    pub description: String,
    pub production: bool,
    pub slo: SloThresholds,
    pub auto_rollback: bool,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

/// Answer of `GET /api/v1/environments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentList {
    pub environments: Vec<Environment>,
}

/// Body of `POST /api/v1/environments/{name}/deployments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordDeployment {
    /// `namespace/name`.
    pub model: String,
    /// A number, `@alias` or semver label.
    pub version: String,
    /// `direct` (default), `canary` or `blue_green`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// A canary's share of the traffic (1–99); the other strategies take 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_percent: Option<i64>,
    /// The configuration deployed (a JSON object, at most 64 KiB).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// `pending` (default), `in_progress` or `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A deployment record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    pub id: i64,
    pub environment: String,
    /// `namespace/name`.
    pub model: String,
    pub version: i64,
    pub strategy: String,
    pub traffic_percent: i64,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// `pending`, `in_progress`, `succeeded`, `failed`, `rolled_back` or `superseded`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The deployment this one rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<i64>,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

/// A page of deployment history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentList {
    pub deployments: Vec<Deployment>,
    /// Pass as `before` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// Body of `POST /api/v1/deployments/{id}/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentStatus {
    /// `in_progress`, `succeeded` or `failed`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
}

/// Body of `POST /api/v1/environments/{name}/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// `namespace/name`.
    pub model: String,
    /// The version to go back to (number, `@alias`, label); default: the one that ran before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why (recorded and sent to the webhook).
    pub reason: String,
}

/// Body of `POST /api/v1/deployments/{id}/slo-reports`: what monitoring measured.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SloReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_score: Option<f64>,
}

/// Answer to an SLO report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SloOutcome {
    pub report_id: i64,
    /// The objectives breached (`error_rate 0.09 > 0.05`); empty when none.
    pub breaches: Vec<String>,
    /// The rollback the breach triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Deployment>,
    /// Why a breach did not roll back (nothing earlier ran there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_rolled_back: Option<String>,
}
