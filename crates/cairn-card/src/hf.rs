//! Hugging Face model cards: the YAML front matter (with `model-index`) in both directions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::input::OneOrMany;
use crate::model::{Card, Dataset, Metric};

/// Placeholder Hugging Face's own template uses for unfilled fields.
pub const MISSING: &str = "[More Information Needed]";
const UNSPECIFIED: &str = "unspecified";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FrontMatter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasets: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, rename = "model-index", skip_serializing_if = "Option::is_none")]
    pub model_index: Option<Vec<ModelIndex>>,
    /// Every other key is kept as it is.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ModelIndex {
    pub name: String,
    #[serde(default)]
    pub results: Vec<IndexResult>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IndexResult {
    pub task: IndexTask,
    pub dataset: IndexDataset,
    pub metrics: Vec<IndexMetric>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IndexTask {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IndexDataset {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IndexMetric {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<BTreeMap<String, String>>,
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// The model-index task type: the card's task, else its pipeline tag.
fn task_type(card: &Card) -> String {
    card.evaluation.task.clone().or_else(|| card.model.pipeline_tag.clone()).unwrap_or_else(|| "other".to_string())
}

/// Builds the front matter for a card (deterministic: the card is normalised first).
pub fn front_matter(card: &Card) -> FrontMatter {
    let ds_id = |name: &str| -> String {
        card.dataset_lookup(name).and_then(|d| d.id.clone()).unwrap_or_else(|| name.to_string())
    };
    let mut results: Vec<IndexResult> = Vec::new();
    for m in &card.evaluation.metrics {
        let dataset_name = m.dataset.clone().unwrap_or_else(|| UNSPECIFIED.to_string());
        let index_metric = IndexMetric {
            kind: m.name.clone(),
            value: serde_json::Value::from(m.value),
            name: m.slice.as_ref().map(|s| format!("{} ({s})", m.name)),
            args: m.slice.as_ref().map(|s| BTreeMap::from([("slice".to_string(), s.clone())])),
        };
        match results.iter_mut().find(|r| r.dataset.name == dataset_name && r.dataset.split == m.split) {
            Some(r) => r.metrics.push(index_metric),
            None => results.push(IndexResult {
                task: IndexTask { kind: task_type(card), name: None },
                dataset: IndexDataset { kind: ds_id(&dataset_name), name: dataset_name, split: m.split.clone() },
                metrics: vec![index_metric],
            }),
        }
    }
    let mut datasets: Vec<String> = card
        .training
        .datasets
        .iter()
        .chain(card.evaluation.datasets.iter())
        .map(|d| d.id.clone().unwrap_or_else(|| d.name.clone()))
        .collect();
    datasets.sort();
    datasets.dedup();
    let mut metric_names: Vec<String> = card.evaluation.metrics.iter().map(|m| m.name.clone()).collect();
    metric_names.sort();
    metric_names.dedup();
    let name = card.model.name.clone().unwrap_or_else(|| "model".to_string());
    FrontMatter {
        language: non_empty(card.model.language.clone()).map(OneOrMany::Many),
        license: card.model.license.clone(),
        library_name: card.model.library_name.clone(),
        tags: non_empty(card.model.tags.clone()),
        datasets: non_empty(datasets).map(OneOrMany::Many),
        metrics: non_empty(metric_names),
        base_model: card.model.base_model.clone().map(OneOrMany::One),
        pipeline_tag: card.model.pipeline_tag.clone(),
        model_name: None,
        model_index: (!results.is_empty()).then(|| vec![ModelIndex { name, results }]),
        extra: BTreeMap::new(),
    }
}

/// The front matter as YAML text (without the `---` fences).
pub fn front_matter_yaml(card: &Card) -> String {
    serde_saphyr::to_string(&front_matter(card)).unwrap_or_default()
}

/// Splits a README into (front matter YAML, body, number of lines before the YAML).
pub fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("---\n").or_else(|| text.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

impl FrontMatter {
    /// Converts front matter back into card facts.
    pub fn into_card(self) -> Card {
        let mut card = Card::default();
        card.model.language = self.language.map(OneOrMany::into_vec).unwrap_or_default();
        card.model.license = self.license;
        card.model.library_name = self.library_name;
        card.model.tags = self.tags.unwrap_or_default();
        card.model.base_model = self.base_model.map(|b| b.into_vec().join(", "));
        card.model.pipeline_tag = self.pipeline_tag;
        card.model.name = self.model_name;
        let hub_datasets = self.datasets.map(OneOrMany::into_vec).unwrap_or_default();
        card.training.datasets =
            hub_datasets.iter().map(|d| Dataset { name: d.clone(), ..Dataset::default() }).collect();
        for index in self.model_index.unwrap_or_default() {
            card.model.name.get_or_insert(index.name);
            for r in index.results {
                card.evaluation.task.get_or_insert(r.task.kind);
                let dataset = (r.dataset.name != UNSPECIFIED).then_some(r.dataset.name.clone());
                if let Some(name) = &dataset
                    && !card.evaluation.datasets.iter().any(|d| &d.name == name)
                {
                    let id = (r.dataset.kind != *name).then_some(r.dataset.kind.clone());
                    card.evaluation.datasets.push(Dataset { name: name.clone(), id, ..Dataset::default() });
                }
                for m in r.metrics {
                    let value = match &m.value {
                        serde_json::Value::Number(n) => n.as_f64(),
                        serde_json::Value::String(s) => s.split_whitespace().next().and_then(|v| v.parse().ok()),
                        _ => None,
                    };
                    let Some(value) = value else { continue };
                    card.evaluation.metrics.push(Metric {
                        name: m.kind,
                        value,
                        dataset: dataset.clone(),
                        split: r.dataset.split.clone(),
                        slice: m.args.and_then(|a| a.get("slice").cloned()),
                        ..Metric::default()
                    });
                }
            }
        }
        card
    }
}

impl Card {
    /// Finds a dataset by name or hub id.
    pub fn dataset_lookup(&self, name: &str) -> Option<&Dataset> {
        self.training
            .datasets
            .iter()
            .chain(self.evaluation.datasets.iter())
            .find(|d| d.name == name || d.id.as_deref() == Some(name))
    }
}
