//! Google Model Card Toolkit JSON (schema v0.0.2) in both directions.

use serde::{Deserialize, Serialize};

use crate::model::{Card, Dataset, Metric};

pub const MCT_SCHEMA_VERSION: &str = "0.0.2";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MctCard {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    pub model_details: Details,
    pub model_parameters: Parameters,
    pub quantitative_analysis: Quantitative,
    pub considerations: Considerations,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overview: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documentation: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<Owner>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<License>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<Citation>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Owner {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Version {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct License {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_text: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Reference {
    pub reference: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Citation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    pub citation: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Parameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_architecture: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<McDataset>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct McDataset {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitive: Option<Sensitive>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Sensitive {
    pub sensitive_data: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Quantitative {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub performance_metrics: Vec<PerformanceMetric>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PerformanceMetric {
    #[serde(rename = "type")]
    pub kind: String,
    /// A string in schema v0.0.2; numbers are accepted when reading.
    pub value: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence_interval: Option<Interval>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Interval {
    pub lower_bound: serde_json::Value,
    pub upper_bound: serde_json::Value,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Described {
    pub description: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Risk {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mitigation_strategy: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Considerations {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<Described>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub use_cases: Vec<Described>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limitations: Vec<Described>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tradeoffs: Vec<Described>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ethical_considerations: Vec<Risk>,
}

fn described(v: &[String]) -> Vec<Described> {
    v.iter().map(|d| Described { description: d.clone() }).collect()
}

fn number_text(v: f64) -> serde_json::Value {
    serde_json::Value::String(format!("{v}"))
}

fn to_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The MCT slice of a metric: dataset, split and slice joined, as MCT has one slice field.
fn slice_of(m: &Metric) -> Option<String> {
    let parts: Vec<&str> = [&m.dataset, &m.split, &m.slice].iter().filter_map(|s| s.as_deref()).collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Renders a card as an MCT v0.0.2 document.
pub fn from_card(card: &Card) -> MctCard {
    let m = &card.model;
    let mut owners: Vec<Owner> = m.authors.iter().map(|a| Owner { name: a.clone(), contact: None }).collect();
    if let (Some(first), Some(contact)) = (owners.first_mut(), &m.contact) {
        first.contact = Some(contact.clone());
    }
    let licenses = m.license.iter().map(|l| License { identifier: Some(l.clone()), custom_text: None }).collect();
    let mut references = Vec::new();
    for url in [&m.repository, &m.paper].into_iter().flatten() {
        if url.starts_with("http://") || url.starts_with("https://") {
            references.push(Reference { reference: url.clone() });
        }
    }
    let data = card
        .training
        .datasets
        .iter()
        .map(|d| (d, "training"))
        .chain(card.evaluation.datasets.iter().map(|d| (d, "evaluation")))
        .map(|(d, role): (&Dataset, &str)| McDataset {
            name: d.name.clone(),
            link: d.link.clone().filter(|l| l.starts_with("http://") || l.starts_with("https://")),
            description: Some(match &d.description {
                Some(text) => format!("{role} data: {text}"),
                None => format!("{role} data"),
            }),
            sensitive: (!d.sensitive_data.is_empty()).then(|| Sensitive { sensitive_data: d.sensitive_data.clone() }),
        })
        .collect();
    let ethics = &card.ethics;
    let mut ethical: Vec<Risk> = ethics
        .bias_risks
        .iter()
        .chain(ethics.considerations.iter())
        .map(|r| Risk { name: r.clone(), mitigation_strategy: None })
        .collect();
    if !ethics.mitigations.is_empty() {
        let joined = ethics.mitigations.join("; ");
        for r in &mut ethical {
            r.mitigation_strategy = Some(joined.clone());
        }
    }
    MctCard {
        schema_version: Some(MCT_SCHEMA_VERSION.to_string()),
        model_details: Details {
            name: m.name.clone(),
            overview: m.description.clone(),
            documentation: card.intended_use.description.clone(),
            owners,
            version: m.version.as_ref().map(|v| Version { name: Some(v.clone()), date: m.date.clone() }),
            licenses,
            references,
            citations: m.citation.iter().map(|c| Citation { style: None, citation: c.clone() }).collect(),
        },
        model_parameters: Parameters {
            model_architecture: m.architecture.clone().or_else(|| m.model_type.clone()),
            data,
        },
        quantitative_analysis: Quantitative {
            performance_metrics: card
                .evaluation
                .metrics
                .iter()
                .map(|x| PerformanceMetric {
                    kind: x.name.clone(),
                    value: number_text(x.value),
                    slice: slice_of(x),
                    confidence_interval: x
                        .confidence_interval
                        .map(|[lo, hi]| Interval { lower_bound: number_text(lo), upper_bound: number_text(hi) }),
                })
                .collect(),
        },
        considerations: Considerations {
            users: described(&card.intended_use.primary_users),
            use_cases: described(
                &card
                    .intended_use
                    .primary_uses
                    .iter()
                    .chain(card.intended_use.downstream_uses.iter())
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
            limitations: described(&card.limitations.known),
            tradeoffs: described(&card.limitations.tradeoffs),
            ethical_considerations: ethical,
        },
    }
}

impl MctCard {
    /// Converts an MCT document back into card facts.
    pub fn into_card(self) -> Card {
        let mut card = Card::default();
        let d = self.model_details;
        card.model.name = d.name;
        card.model.description = d.overview;
        card.intended_use.description = d.documentation;
        card.model.authors = d.owners.iter().map(|o| o.name.clone()).collect();
        card.model.contact = d.owners.iter().find_map(|o| o.contact.clone());
        if let Some(v) = d.version {
            card.model.version = v.name;
            card.model.date = v.date;
        }
        card.model.license = d.licenses.into_iter().find_map(|l| l.identifier.or(l.custom_text));
        card.model.citation = d.citations.into_iter().next().map(|c| c.citation);
        card.model.repository = d.references.into_iter().next().map(|r| r.reference);
        card.model.architecture = self.model_parameters.model_architecture;
        for ds in self.model_parameters.data {
            let eval = ds.description.as_deref().is_some_and(|t| t.starts_with("evaluation"));
            let dataset = Dataset {
                name: ds.name,
                link: ds.link,
                sensitive_data: ds.sensitive.map(|s| s.sensitive_data).unwrap_or_default(),
                ..Dataset::default()
            };
            if eval {
                card.evaluation.datasets.push(dataset);
            } else {
                card.training.datasets.push(dataset);
            }
        }
        for pm in self.quantitative_analysis.performance_metrics {
            let Some(value) = to_number(&pm.value) else { continue };
            let mut parts =
                pm.slice.as_deref().map(|s| s.split('/').map(str::to_string).collect::<Vec<_>>()).unwrap_or_default();
            // Slices we wrote are dataset[/split[/slice]]; others are kept as the slice.
            let (dataset, split, slice) = match parts.len() {
                3 => (Some(parts.remove(0)), Some(parts.remove(0)), Some(parts.remove(0))),
                2 => (Some(parts.remove(0)), Some(parts.remove(0)), None),
                1 if card.dataset_lookup(&parts[0]).is_some() => (Some(parts.remove(0)), None, None),
                1 => (None, None, Some(parts.remove(0))),
                _ => (None, None, None),
            };
            let ci =
                pm.confidence_interval.and_then(|c| Some([to_number(&c.lower_bound)?, to_number(&c.upper_bound)?]));
            card.evaluation.metrics.push(Metric {
                name: pm.kind,
                value,
                dataset,
                split,
                slice,
                confidence_interval: ci,
                ..Metric::default()
            });
        }
        let c = self.considerations;
        card.intended_use.primary_users = c.users.into_iter().map(|x| x.description).collect();
        card.intended_use.primary_uses = c.use_cases.into_iter().map(|x| x.description).collect();
        card.limitations.known = c.limitations.into_iter().map(|x| x.description).collect();
        card.limitations.tradeoffs = c.tradeoffs.into_iter().map(|x| x.description).collect();
        for r in c.ethical_considerations {
            card.ethics.considerations.push(r.name);
            if let Some(m) = r.mitigation_strategy
                && !card.ethics.mitigations.contains(&m)
            {
                card.ethics.mitigations.push(m);
            }
        }
        card
    }
}
