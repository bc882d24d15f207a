//! The card model: one struct that every input is merged into and every renderer reads.
//!
//! Ordering is deterministic by construction: maps are `BTreeMap`s, and metric and dataset
//! lists are sorted by [`Card::normalize`], so the same facts always render to the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The schema marker written into card sources and canonical JSON.
pub const CARD_SCHEMA: &str = "cairn.card/v1";

fn is_empty_str(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(|s| s.trim().is_empty())
}

/// A model card: the facts about one model version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Card {
    /// Always [`CARD_SCHEMA`]; optional in hand-written sources.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub schema: Option<String>,
    pub model: ModelDetails,
    #[serde(skip_serializing_if = "IntendedUse::is_empty")]
    pub intended_use: IntendedUse,
    #[serde(skip_serializing_if = "Factors::is_empty")]
    pub factors: Factors,
    #[serde(skip_serializing_if = "Training::is_empty")]
    pub training: Training,
    #[serde(skip_serializing_if = "Evaluation::is_empty")]
    pub evaluation: Evaluation,
    #[serde(skip_serializing_if = "Ethics::is_empty")]
    pub ethics: Ethics,
    #[serde(skip_serializing_if = "Limitations::is_empty")]
    pub limitations: Limitations,
    #[serde(skip_serializing_if = "Environment::is_empty")]
    pub environment: Environment,
    #[serde(skip_serializing_if = "Regulatory::is_empty")]
    pub regulatory: Regulatory,
    /// Free-form extra sections: title → Markdown text.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sections: BTreeMap<String, String>,
}

/// Who made the model, what it is, and under which terms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelDetails {
    #[serde(skip_serializing_if = "is_empty_str")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub contact: Option<String>,
    /// An SPDX identifier (lower-case forms such as `apache-2.0` are accepted).
    #[serde(skip_serializing_if = "is_empty_str")]
    pub license: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub date: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub model_type: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub base_model: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub framework: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub library_name: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub pipeline_tag: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub language: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub paper: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub citation: Option<String>,
}

/// What the model is for, and what it is not for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntendedUse {
    #[serde(skip_serializing_if = "is_empty_str")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub primary_uses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub primary_users: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downstream_uses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub out_of_scope: Vec<String>,
}

impl IntendedUse {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Mitchell et al.'s "factors": groups, instrumentation and environments that matter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Factors {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relevant: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evaluation: Vec<String>,
}

impl Factors {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A dataset the model was trained or evaluated on.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dataset {
    pub name: String,
    /// A hub id such as `imdb` or `org/dataset`, when there is one.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub license: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub size: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sensitive_data: Vec<String>,
}

/// How the model was trained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Training {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<Dataset>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub preprocessing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    /// Final values read from training logs (for example `loss`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub final_metrics: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub procedure: Option<String>,
}

impl Training {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One measured number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub dataset: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub split: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub slice: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence_interval: Option<[f64; 2]>,
    /// How many result rows were averaged into `value` (CSV inputs with repeated rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub description: Option<String>,
}

/// The identity of a metric: name, dataset, split and slice.
pub type MetricKey = (String, String, String, String);

impl Metric {
    /// Builds a metric with only a name and a value.
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Metric { name: name.into(), value, ..Metric::default() }
    }

    /// The key two metrics are matched on (drift, diff, merge).
    pub fn key(&self) -> MetricKey {
        (
            self.name.clone(),
            self.dataset.clone().unwrap_or_default(),
            self.split.clone().unwrap_or_default(),
            self.slice.clone().unwrap_or_default(),
        )
    }

    /// The key without allocating, for sorting and lookups.
    pub fn key_ref(&self) -> (&str, &str, &str, &str) {
        (
            self.name.as_str(),
            self.dataset.as_deref().unwrap_or_default(),
            self.split.as_deref().unwrap_or_default(),
            self.slice.as_deref().unwrap_or_default(),
        )
    }

    /// A readable label: `accuracy [imdb/test/female]`.
    pub fn label(&self) -> String {
        let scope: Vec<&str> = [&self.dataset, &self.split, &self.slice].iter().filter_map(|s| s.as_deref()).collect();
        if scope.is_empty() { self.name.clone() } else { format!("{} [{}]", self.name, scope.join("/")) }
    }
}

/// How the model was evaluated, and the numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Evaluation {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<Dataset>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub procedure: Option<String>,
}

impl Evaluation {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Ethical considerations (Mitchell et al.) and bias analysis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ethics {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub considerations: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bias_risks: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mitigations: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sensitive_attributes: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fairness_metrics: BTreeMap<String, f64>,
}

impl Ethics {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Caveats and recommendations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limitations {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub known: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tradeoffs: Vec<String>,
}

impl Limitations {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Compute and carbon facts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Environment {
    #[serde(skip_serializing_if = "is_empty_str")]
    pub hardware: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours_used: Option<f64>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub cloud_provider: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub compute_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub co2_eq_kg: Option<f64>,
}

impl Environment {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Facts that regulators ask for (EU AI Act Annex IV, CRA, GDPR).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Regulatory {
    /// `minimal`, `limited`, `high` or `unacceptable` (EU AI Act).
    #[serde(skip_serializing_if = "is_empty_str")]
    pub risk_classification: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub intended_purpose: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub deployment_context: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub interaction_with_other_systems: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub hardware_requirements: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub user_instructions: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub design_choices: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub system_architecture: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub computational_resources: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub data_governance: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub human_oversight: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub predetermined_changes: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub validation_procedures: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub cybersecurity: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub risk_management: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub lifecycle_changes: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub harmonised_standards: Vec<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub declaration_of_conformity: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub post_market_monitoring: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub vulnerability_handling: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub security_updates: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub support_period: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub sbom: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub lawful_basis: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub personal_data: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub retention: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub right_to_erasure: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub data_protection_contact: Option<String>,
    #[serde(skip_serializing_if = "is_empty_str")]
    pub dpia: Option<String>,
}

impl Regulatory {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn dedup_strings(v: &mut Vec<String>) {
    v.retain(|s| !s.trim().is_empty());
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

fn merge_datasets(into: &mut Vec<Dataset>, from: Vec<Dataset>) {
    for d in from {
        match into.iter_mut().find(|x| x.name == d.name) {
            Some(existing) => {
                let Dataset { name: _, id, description, link, license, size, sensitive_data } = d;
                existing.id = id.or(existing.id.take());
                existing.description = description.or(existing.description.take());
                existing.link = link.or(existing.link.take());
                existing.license = license.or(existing.license.take());
                existing.size = size.or(existing.size.take());
                if !sensitive_data.is_empty() {
                    existing.sensitive_data = sensitive_data;
                }
            }
            None => into.push(d),
        }
    }
}

impl Card {
    /// Puts the card in canonical form: schema set, metrics and datasets sorted, list
    /// duplicates removed (first occurrence kept, order of lists otherwise preserved).
    pub fn normalize(&mut self) {
        self.schema = Some(CARD_SCHEMA.to_string());
        dedup_strings(&mut self.model.authors);
        dedup_strings(&mut self.model.language);
        dedup_strings(&mut self.model.tags);
        self.training.datasets.sort_by(|a, b| a.name.cmp(&b.name));
        self.training.datasets.dedup_by(|a, b| a.name == b.name);
        self.evaluation.datasets.sort_by(|a, b| a.name.cmp(&b.name));
        self.evaluation.datasets.dedup_by(|a, b| a.name == b.name);
        self.evaluation.metrics.sort_by(|a, b| {
            let (ka, kb) = (a.key_ref(), b.key_ref());
            (ka.1, ka.2, ka.3, ka.0).cmp(&(kb.1, kb.2, kb.3, kb.0))
        });
        self.evaluation.metrics.dedup_by(|a, b| a.key_ref() == b.key_ref());
        // `epochs` is a field of its own; a config's hyperparameters often repeat it.
        if let Some(e) = self.training.hyperparameters.get("epochs").and_then(serde_json::Value::as_u64)
            && self.training.epochs.is_none_or(|x| x == e)
        {
            self.training.epochs = Some(e);
            self.training.hyperparameters.remove("epochs");
        }
    }

    /// Adds metrics; a metric with the same key as an existing one replaces it.
    pub fn upsert_metrics(&mut self, metrics: impl IntoIterator<Item = Metric>) {
        // Indexed by key: results files can hold tens of thousands of metrics.
        let mut index: std::collections::HashMap<MetricKey, usize> =
            self.evaluation.metrics.iter().enumerate().map(|(i, m)| (m.key(), i)).collect();
        for m in metrics {
            match index.get(&m.key()) {
                Some(&i) => self.evaluation.metrics[i] = m,
                None => {
                    index.insert(m.key(), self.evaluation.metrics.len());
                    self.evaluation.metrics.push(m);
                }
            }
        }
    }

    /// Names of every dataset the card mentions (training and evaluation).
    pub fn dataset_names(&self) -> std::collections::BTreeSet<String> {
        self.training
            .datasets
            .iter()
            .chain(self.evaluation.datasets.iter())
            .flat_map(|d| std::iter::once(d.name.clone()).chain(d.id.clone()))
            .collect()
    }

    /// Overlays `top` onto `self`: every field set in `top` wins; lists and maps set in
    /// `top` replace the ones here, except metrics and datasets, which are merged by key.
    pub fn overlay(&mut self, top: Card) {
        let mut base = serde_json::to_value(&*self).unwrap_or_default();
        let mut top_value = serde_json::to_value(&top).unwrap_or_default();
        // Metrics and datasets are merged by key below, not replaced wholesale.
        for path in [["evaluation", "metrics"], ["evaluation", "datasets"], ["training", "datasets"]] {
            if let Some(obj) = top_value.get_mut(path[0]).and_then(|v| v.as_object_mut()) {
                obj.remove(path[1]);
            }
        }
        overlay_value(&mut base, top_value);
        let metrics = std::mem::take(&mut self.evaluation.metrics);
        let eval_ds = std::mem::take(&mut self.evaluation.datasets);
        let train_ds = std::mem::take(&mut self.training.datasets);
        if let Ok(mut merged) = serde_json::from_value::<Card>(base) {
            merged.evaluation.metrics = metrics;
            merged.evaluation.datasets = eval_ds;
            merged.training.datasets = train_ds;
            *self = merged;
        }
        self.upsert_metrics(top.evaluation.metrics);
        merge_datasets(&mut self.evaluation.datasets, top.evaluation.datasets);
        merge_datasets(&mut self.training.datasets, top.training.datasets);
    }
}

fn overlay_value(base: &mut serde_json::Value, top: serde_json::Value) {
    use serde_json::Value;
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => overlay_value(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, t) => *slot = t,
    }
}

/// Metrics whose values are fractions in [0, 1] (lower-case names).
const FRACTION_METRICS: &[&str] = &[
    "accuracy",
    "acc",
    "precision",
    "recall",
    "f1",
    "f1_score",
    "f1_macro",
    "f1_micro",
    "f1_weighted",
    "auc",
    "roc_auc",
    "pr_auc",
    "average_precision",
    "map",
    "iou",
    "miou",
    "specificity",
    "sensitivity",
    "balanced_accuracy",
    "exact_match",
];

/// Whether a metric (by lower-case name) is a fraction in [0, 1]: validation checks the range,
/// drift compares such metrics by absolute difference.
#[must_use]
pub fn is_fraction_metric(lower_name: &str) -> bool {
    FRACTION_METRICS.contains(&lower_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_sorts_metrics_and_is_idempotent() {
        let mut card = Card::default();
        card.evaluation.metrics = vec![
            Metric { dataset: Some("b".into()), ..Metric::new("f1", 0.5) },
            Metric::new("accuracy", 0.9),
            Metric { dataset: Some("a".into()), ..Metric::new("z", 0.1) },
        ];
        card.normalize();
        let names: Vec<_> = card.evaluation.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["accuracy", "z", "f1"]);
        let once = card.clone();
        card.normalize();
        assert_eq!(once, card);
    }

    #[test]
    fn overlay_keeps_base_fields_and_merges_metrics() {
        let mut base = Card::default();
        base.model.name = Some("base".into());
        base.model.license = Some("mit".into());
        base.evaluation.metrics = vec![Metric::new("accuracy", 0.9), Metric::new("f1", 0.8)];
        let mut top = Card::default();
        top.model.name = Some("top".into());
        top.evaluation.metrics = vec![Metric::new("accuracy", 0.95)];
        base.overlay(top);
        assert_eq!(base.model.name.as_deref(), Some("top"));
        assert_eq!(base.model.license.as_deref(), Some("mit"));
        assert_eq!(base.evaluation.metrics.len(), 2);
        assert_eq!(base.evaluation.metrics[0].value, 0.95);
    }
}
