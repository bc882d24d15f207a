//! What changed between two cards, section by section and metric by metric.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::model::Card;

/// One changed field (dot path) or metric.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldChange {
    pub section: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// The difference between two cards.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CardDiff {
    pub fields: Vec<FieldChange>,
    pub metrics: Vec<MetricChange>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricChange {
    pub metric: String,
    pub old: Option<f64>,
    pub new: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
}

impl CardDiff {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.metrics.is_empty()
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&p, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Compares two cards (both normalised first).
pub fn diff(a: &Card, b: &Card) -> CardDiff {
    let (mut a, mut b) = (a.clone(), b.clone());
    a.normalize();
    b.normalize();
    let mut out = CardDiff::default();
    let am: BTreeMap<_, _> = a.evaluation.metrics.iter().map(|m| (m.key(), m)).collect();
    let bm: BTreeMap<_, _> = b.evaluation.metrics.iter().map(|m| (m.key(), m)).collect();
    for key in am.keys().chain(bm.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (o, n) = (am.get(key), bm.get(key));
        let (ov, nv) = (o.map(|m| m.value), n.map(|m| m.value));
        if ov != nv {
            let label = o.or(n).map(|m| m.label()).unwrap_or_default();
            let delta = match (ov, nv) {
                (Some(x), Some(y)) => Some(((y - x) * 1e12).round() / 1e12),
                _ => None,
            };
            out.metrics.push(MetricChange { metric: label, old: ov, new: nv, delta });
        }
    }
    a.evaluation.metrics.clear();
    b.evaluation.metrics.clear();
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &serde_json::to_value(&a).unwrap_or_default(), &mut fa);
    flatten("", &serde_json::to_value(&b).unwrap_or_default(), &mut fb);
    for path in fa.keys().chain(fb.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (o, n) = (fa.get(path), fb.get(path));
        if o != n {
            let section = path.split('.').next().unwrap_or_default().to_string();
            out.fields.push(FieldChange { section, path: path.clone(), old: o.cloned(), new: n.cloned() });
        }
    }
    out
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}

/// Text rendering, grouped by section.
pub fn to_text(d: &CardDiff) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut section = "";
    for f in &d.fields {
        if f.section != section {
            section = &f.section;
            let _ = writeln!(out, "## {section}");
        }
        let _ = writeln!(out, "  {}: {} → {}", f.path, show(&f.old), show(&f.new));
    }
    if !d.metrics.is_empty() {
        let _ = writeln!(out, "## metrics");
        for m in &d.metrics {
            let s = |v: Option<f64>| v.map_or("(absent)".to_string(), |v| v.to_string());
            let delta = m.delta.map(|d| format!(" (Δ {d:+})")).unwrap_or_default();
            let _ = writeln!(out, "  {}: {} → {}{delta}", m.metric, s(m.old), s(m.new));
        }
    }
    if d.is_empty() {
        out.push_str("no differences\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Metric;

    #[test]
    fn reports_fields_and_metrics() {
        let mut a = Card::default();
        a.model.name = Some("m".into());
        a.evaluation.metrics = vec![Metric::new("accuracy", 0.9), Metric::new("f1", 0.8)];
        let mut b = a.clone();
        b.model.license = Some("mit".into());
        b.evaluation.metrics = vec![Metric::new("accuracy", 0.95)];
        let d = diff(&a, &b);
        assert_eq!(d.fields.len(), 1);
        assert_eq!(d.fields[0].path, "model.license");
        assert_eq!(d.metrics.len(), 2);
        assert!(diff(&a, &a).is_empty());
    }
}
