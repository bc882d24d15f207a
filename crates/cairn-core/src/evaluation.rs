//! Evaluation suites: named sets of metrics with thresholds that have a direction, and the
//! pass/fail verdict of a set of results against them.
//!
//! A suite is defined per namespace (YAML or JSON, parsed by the server into [`SuiteDef`]):
//! ```yaml
//! description: Fraud model acceptance
//! test_type: effectiveness
//! metrics:
//!   - {name: accuracy, group: task, at_least: 0.9}
//!   - {name: toxicity, group: safety, at_most: 0.01}
//! dataset: {name: holdout-2026, uri: s3://data/holdout, digest: "sha256:…"}
//! harness: {command: ["python", "eval.py"], timeout_secs: 3600}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a suite tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TestType {
    /// Does it do its task (accuracy, F1 …).
    #[default]
    Effectiveness,
    /// Latency, throughput, memory.
    Performance,
    /// Disparities between groups.
    Bias,
    /// Fairness metrics (equalised odds …).
    Fairness,
    /// Harmful outputs (toxicity, jailbreaks …).
    Safety,
    /// Behaviour under perturbation or shift.
    Robustness,
}

/// How a metric is grouped in reports and cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MetricGroup {
    /// Task quality.
    #[default]
    Task,
    /// Bias and fairness.
    Bias,
    /// Safety.
    Safety,
    /// Robustness.
    Robustness,
}

/// One metric of a suite and its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// The metric's name in the results (`accuracy`).
    pub name: String,
    /// Its group.
    #[serde(default)]
    pub group: MetricGroup,
    /// Passes when the value is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    /// Passes when the value is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
}

/// The data a suite runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    /// Name.
    pub name: String,
    /// Where it lives.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    /// Its digest, if pinned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

/// How a worker runs the suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Harness {
    /// The command and its arguments (no shell).
    #[serde(default)]
    pub command: Vec<String>,
    /// Time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// A suite definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteDef {
    /// What it checks.
    #[serde(default)]
    pub description: String,
    /// What kind of test it is.
    #[serde(default)]
    pub test_type: TestType,
    /// The metrics and thresholds (at least one).
    pub metrics: Vec<MetricSpec>,
    /// The dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetRef>,
    /// The harness configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness: Option<Harness>,
}

/// Why a suite definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid evaluation suite: {0}")]
pub struct SuiteError(pub String);

impl SuiteDef {
    /// Checks the definition: 1–200 metrics with distinct names, each with at least one
    /// finite threshold, and `at_least ≤ at_most` when both are given.
    pub fn check(&self) -> Result<(), SuiteError> {
        if self.metrics.is_empty() || self.metrics.len() > 200 {
            return Err(SuiteError("a suite has between 1 and 200 metrics".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.metrics {
            if m.name.is_empty() || m.name.len() > 128 || m.name.chars().any(char::is_control) {
                return Err(SuiteError(format!("metric name {:?} must be 1–128 printable characters", m.name)));
            }
            if !seen.insert(m.name.as_str()) {
                return Err(SuiteError(format!("metric {:?} is listed twice", m.name)));
            }
            match (m.at_least, m.at_most) {
                (None, None) => {
                    return Err(SuiteError(format!("metric {:?} needs a threshold: at_least or at_most", m.name)));
                }
                (Some(a), _) | (_, Some(a)) if !a.is_finite() => {
                    return Err(SuiteError(format!("metric {:?} has a threshold that is not a finite number", m.name)));
                }
                (Some(lo), Some(hi)) if !hi.is_finite() || lo > hi => {
                    return Err(SuiteError(format!("metric {:?}: at_least {lo} is above at_most {hi}", m.name)));
                }
                _ => {}
            }
        }
        if self.description.len() > 2000 {
            return Err(SuiteError("description is at most 2000 characters".into()));
        }
        Ok(())
    }

    /// Judges `results` (metric name → value) against every threshold. A metric the results
    /// do not contain fails.
    pub fn judge(&self, results: &BTreeMap<String, f64>) -> Verdict {
        let metrics: Vec<MetricOutcome> = self
            .metrics
            .iter()
            .map(|m| {
                let value = results.get(&m.name).copied();
                let (passed, message) = match value {
                    None => (false, format!("{} is missing from the results", m.name)),
                    Some(v) if !v.is_finite() => (false, format!("{} is not a finite number", m.name)),
                    Some(v) => {
                        let low = m.at_least.is_none_or(|t| v >= t);
                        let high = m.at_most.is_none_or(|t| v <= t);
                        let bound = match (m.at_least, m.at_most) {
                            (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                            (Some(lo), None) => format!("≥ {lo}"),
                            (None, Some(hi)) => format!("≤ {hi}"),
                            (None, None) => String::new(),
                        };
                        let verdict = if low && high { "passes" } else { "fails" };
                        (low && high, format!("{} = {v} {verdict} ({bound})", m.name))
                    }
                };
                MetricOutcome {
                    name: m.name.clone(),
                    group: m.group,
                    value,
                    at_least: m.at_least,
                    at_most: m.at_most,
                    passed,
                    message,
                }
            })
            .collect();
        Verdict { passed: metrics.iter().all(|m| m.passed), metrics }
    }
}

/// One metric's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricOutcome {
    /// The metric.
    pub name: String,
    /// Its group.
    pub group: MetricGroup,
    /// The submitted value (absent: missing).
    pub value: Option<f64>,
    /// The lower bound, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    /// The upper bound, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
    /// Whether it is within its thresholds.
    pub passed: bool,
    /// A sentence saying so.
    pub message: String,
}

/// The verdict of a suite on a set of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Every metric passed.
    pub passed: bool,
    /// Per metric.
    pub metrics: Vec<MetricOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite() -> SuiteDef {
        serde_json::from_value(serde_json::json!({
            "description": "acceptance",
            "test_type": "safety",
            "metrics": [
                {"name": "accuracy", "at_least": 0.9},
                {"name": "toxicity", "group": "safety", "at_most": 0.01},
                {"name": "calibration", "at_least": 0.1, "at_most": 0.2}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn thresholds_have_a_direction() {
        let s = suite();
        s.check().unwrap();
        let r = |a: f64, t: f64, c: f64| {
            BTreeMap::from([("accuracy".to_owned(), a), ("toxicity".to_owned(), t), ("calibration".to_owned(), c)])
        };
        assert!(s.judge(&r(0.9, 0.01, 0.15)).passed, "bounds are inclusive");
        let v = s.judge(&r(0.89, 0.0, 0.15));
        assert!(!v.passed);
        assert!(!v.metrics[0].passed && v.metrics[1].passed);
        assert!(v.metrics[0].message.contains("fails"), "{}", v.metrics[0].message);
        assert!(!s.judge(&r(0.95, 0.011, 0.15)).passed);
        assert!(!s.judge(&r(0.95, 0.0, 0.25)).passed);
        assert!(!s.judge(&r(0.95, 0.0, f64::NAN)).passed);
        let mut missing = r(0.95, 0.0, 0.15);
        missing.remove("toxicity");
        let v = s.judge(&missing);
        assert!(!v.passed && v.metrics[1].value.is_none());
    }

    #[test]
    fn bad_definitions_are_refused() {
        let bad = [
            serde_json::json!({"metrics": []}),
            serde_json::json!({"metrics": [{"name": "a"}]}),
            serde_json::json!({"metrics": [{"name": "a", "at_least": 1}, {"name": "a", "at_most": 2}]}),
            serde_json::json!({"metrics": [{"name": "a", "at_least": 2, "at_most": 1}]}),
        ];
        for b in bad {
            let s: SuiteDef = serde_json::from_value(b.clone()).unwrap();
            assert!(s.check().is_err(), "{b}");
        }
        assert!(serde_json::from_value::<SuiteDef>(serde_json::json!({"metrics": [], "metricz": 1})).is_err());
        assert!(
            serde_json::from_value::<SuiteDef>(serde_json::json!({"metrics": [{"name": "a", "atleast": 1}]})).is_err()
        );
        assert!(serde_json::from_value::<SuiteDef>(serde_json::json!({"metrics": [], "test_type": "vibes"})).is_err());
    }
}
