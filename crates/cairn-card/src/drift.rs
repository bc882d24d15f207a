//! Drift: compare the metrics a card claims with new results, and optionally write the new
//! values into the card in place (atomically, keeping everything else byte for byte).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CardError, Result};
use crate::load::{CardKind, LoadedCard};
use crate::model::{Card, Metric, is_fraction_metric};

/// Scores compared by absolute difference too, although they are not fractions: ROUGE and
/// BLEU as most libraries report them, and R² (at most 1, possibly negative).
const ABSOLUTE_SCORES: &[&str] = &["bleu", "rouge", "rouge1", "rouge2", "rougel", "r2"];

/// Thresholds: `absolute` for bounded metrics, `relative` for the rest (loss, latency …),
/// and per-metric absolute overrides.
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub absolute: f64,
    pub relative: f64,
    pub per_metric: BTreeMap<String, f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { absolute: 0.02, relative: 0.05, per_metric: BTreeMap::new() }
    }
}

impl Thresholds {
    /// (threshold, relative?) for a metric name.
    pub fn for_metric(&self, name: &str) -> (f64, bool) {
        if let Some(t) = self.per_metric.get(name) {
            return (*t, false);
        }
        let lower = name.to_ascii_lowercase();
        if is_fraction_metric(&lower) || ABSOLUTE_SCORES.contains(&lower.as_str()) || lower.starts_with("final_acc") {
            (self.absolute, false)
        } else {
            (self.relative, true)
        }
    }
}

/// One metric's change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub metric: String,
    pub old_value: f64,
    pub new_value: f64,
    pub delta: f64,
    pub threshold: f64,
    pub relative: bool,
    pub significant: bool,
}

/// The result of `check-drift`.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub card: String,
    pub has_drift: bool,
    pub significant_changes: usize,
    pub changes: Vec<Change>,
    /// Metrics in the new results that the card does not claim.
    pub new_metrics: Vec<String>,
    /// Metrics the card claims that the new results do not contain.
    pub missing_metrics: Vec<String>,
}

/// Index of the old metric a new one corresponds to: same key, else the only metric of
/// that name when one side has no dataset/split/slice.
fn match_metric(
    old: &[Metric],
    index: &std::collections::HashMap<(&str, &str, &str, &str), usize>,
    new: &Metric,
) -> Option<usize> {
    if let Some(&i) = index.get(&new.key_ref()) {
        return Some(i);
    }
    let same: Vec<usize> = old.iter().enumerate().filter(|(_, m)| m.name == new.name).map(|(i, _)| i).take(2).collect();
    let unscoped = |m: &Metric| m.dataset.is_none() && m.split.is_none() && m.slice.is_none();
    (same.len() == 1 && (unscoped(new) || unscoped(&old[same[0]]))).then(|| same[0])
}

/// What `--update` writes: new values for existing metrics (by index), and metrics to add.
#[derive(Debug, Default, Clone)]
pub struct Update {
    pub values: BTreeMap<usize, f64>,
    pub added: Vec<Metric>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.added.is_empty()
    }
}

/// Compares claimed metrics with new ones. Returns the report and the update that would
/// make the card match the results.
pub fn compare(card: &LoadedCard, new: &[Metric], thresholds: &Thresholds) -> (DriftReport, Update) {
    let old = &card.card.evaluation.metrics;
    let mut changes = Vec::new();
    let mut updates = BTreeMap::new();
    let mut new_metrics = Vec::new();
    let mut added = Vec::new();
    let mut matched = vec![false; old.len()];
    let index = old.iter().enumerate().map(|(i, m)| (m.key_ref(), i)).collect();
    for n in new {
        let Some(i) = match_metric(old, &index, n) else {
            new_metrics.push(n.label());
            added.push(n.clone());
            continue;
        };
        matched[i] = true;
        let o = &old[i];
        let delta = n.value - o.value;
        let (threshold, relative) = thresholds.for_metric(&o.name);
        let size =
            if relative { if o.value == 0.0 { delta.abs() } else { (delta / o.value).abs() } } else { delta.abs() };
        let significant = size > threshold + 1e-12;
        if delta != 0.0 {
            updates.insert(i, n.value);
        }
        changes.push(Change {
            metric: o.label(),
            old_value: o.value,
            new_value: n.value,
            delta: (delta * 1e12).round() / 1e12,
            threshold,
            relative,
            significant,
        });
    }
    let missing_metrics = old.iter().zip(&matched).filter(|(_, m)| !**m).map(|(o, _)| o.label()).collect();
    let significant_changes = changes.iter().filter(|c| c.significant).count();
    let report = DriftReport {
        card: card.source.clone(),
        has_drift: significant_changes > 0,
        significant_changes,
        changes,
        new_metrics,
        missing_metrics,
    };
    (report, Update { values: updates, added })
}

/// Text report.
pub fn to_text(r: &DriftReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in &r.changes {
        let kind = if c.relative {
            format!("{:.1}% relative", c.threshold * 100.0)
        } else {
            format!("{} absolute", c.threshold)
        };
        let verdict = if c.significant {
            "SIGNIFICANT"
        } else if c.delta == 0.0 {
            "unchanged"
        } else {
            "within threshold"
        };
        let _ = writeln!(
            out,
            "{}: {} → {} (Δ {:+}) threshold {kind}: {verdict}",
            c.metric, c.old_value, c.new_value, c.delta
        );
    }
    for m in &r.new_metrics {
        let _ = writeln!(out, "{m}: new in the results (not in the card)");
    }
    for m in &r.missing_metrics {
        let _ = writeln!(out, "{m}: in the card but not in the results");
    }
    let _ = writeln!(
        out,
        "{}: {} ({} of {} compared metrics changed significantly)",
        r.card,
        if r.has_drift { "DRIFT" } else { "no significant drift" },
        r.significant_changes,
        r.changes.len()
    );
    out
}

fn char_to_byte(text: &str, char_offset: usize) -> usize {
    text.char_indices().nth(char_offset).map_or(text.len(), |(b, _)| b)
}

#[derive(Deserialize)]
struct SpanMetric {
    name: String,
    value: serde_saphyr::Spanned<f64>,
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    split: Option<String>,
    #[serde(default)]
    slice: Option<String>,
}

#[derive(Deserialize, Default)]
struct SpanEvaluation {
    #[serde(default)]
    metrics: Option<serde_saphyr::Spanned<Vec<serde_saphyr::Spanned<SpanMetric>>>>,
}

#[derive(Deserialize)]
struct SpanSource {
    #[serde(default)]
    evaluation: SpanEvaluation,
}

/// Replaces YAML scalars at the given spans; edits go from the end so offsets stay valid.
fn replace_spans(text: &str, mut edits: Vec<(usize, usize, String)>) -> String {
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = text.to_string();
    for (start_char, len_chars, replacement) in edits {
        let start = char_to_byte(text, start_char);
        let end = char_to_byte(text, start_char + len_chars);
        out.replace_range(start..end, &replacement);
    }
    out
}

fn yaml_value_edits(
    path: &Path,
    yaml: &str,
    old: &[Metric],
    updates: &BTreeMap<usize, f64>,
    line_offset: u64,
) -> Result<Vec<(usize, usize, String)>> {
    let spanned: SpanSource = crate::input::parse_yaml(path, yaml, line_offset)?;
    let mut edits = Vec::new();
    let items = spanned.evaluation.metrics.as_ref().map(|m| m.value.as_slice()).unwrap_or_default();
    for sm in items.iter().map(|s| &s.value) {
        let key = Metric {
            name: sm.name.clone(),
            dataset: sm.dataset.clone(),
            split: sm.split.clone(),
            slice: sm.slice.clone(),
            ..Metric::default()
        }
        .key();
        if let Some((i, _)) = old.iter().enumerate().find(|(_, m)| m.key() == key)
            && let Some(v) = updates.get(&i)
        {
            let span = sm.value.referenced.span();
            edits.push((span.offset(), span.len(), format!("{v}")));
        }
    }
    Ok(edits)
}

fn line_start_char(text: &str, line: u64) -> usize {
    let mut chars = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            return chars;
        }
        chars += l.chars().count();
    }
    chars
}

fn flow_item(m: &Metric) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

/// Edits that add metrics to a card source: before the first existing item, in place of
/// an empty `[]`, or as a new `evaluation:` block at the end when there is none.
fn yaml_addition_edits(path: &Path, yaml: &str, added: &[Metric]) -> Result<Vec<(usize, usize, String)>> {
    if added.is_empty() {
        return Ok(vec![]);
    }
    let spanned: SpanSource = crate::input::parse_yaml(path, yaml, 0)?;
    let lines: Vec<&str> = yaml.lines().collect();
    let indent_of = |line: u64| lines.get(line as usize - 1).map_or(0, |l| l.len() - l.trim_start().len());
    match &spanned.evaluation.metrics {
        Some(seq) if !seq.value.is_empty() => {
            let first = &seq.value[0].referenced;
            let indent = " ".repeat(indent_of(first.line()));
            let dash_line = lines.get(first.line() as usize - 1).is_some_and(|l| l.trim_start().starts_with('-'));
            if !dash_line {
                return Err(CardError::Invalid(format!(
                    "{}: cannot add metrics to a flow-style list; add them by hand",
                    path.display()
                )));
            }
            let text: String = added.iter().map(|m| format!("{indent}- {}\n", flow_item(m))).collect();
            Ok(vec![(line_start_char(yaml, first.line()), 0, text)])
        }
        Some(seq) => {
            let loc = seq.referenced;
            let start = loc.span().offset();
            let rest: String = yaml.chars().skip(start).take(64).collect();
            if !rest.starts_with('[') {
                return Err(CardError::Invalid(format!(
                    "{}: cannot add metrics here; add them by hand",
                    path.display()
                )));
            }
            let len = rest.find(']').map_or(2, |i| rest[..=i].chars().count());
            let indent = " ".repeat(indent_of(loc.line()) + 2);
            let text: String = added.iter().map(|m| format!("\n{indent}- {}", flow_item(m))).collect();
            Ok(vec![(start, len, text)])
        }
        None if !yaml.lines().any(|l| l.starts_with("evaluation:")) => {
            let mut text = String::new();
            if !yaml.ends_with('\n') && !yaml.is_empty() {
                text.push('\n');
            }
            text.push_str("evaluation:\n  metrics:\n");
            for m in added {
                text.push_str(&format!("    - {}\n", flow_item(m)));
            }
            Ok(vec![(yaml.chars().count(), 0, text)])
        }
        None => Err(CardError::Invalid(format!(
            "{}: evaluation has no metrics list to add to; add `metrics: []` under it",
            path.display()
        ))),
    }
}

/// Writes new metric values (and new metrics, where the format allows) into the card
/// file, atomically (temporary file + rename). Returns how many metrics were added.
pub fn update_in_place(path: &Path, loaded: &LoadedCard, update: &Update) -> Result<usize> {
    let updates = &update.values;
    let text = loaded.raw_text.clone().unwrap_or_default();
    let old = &loaded.card.evaluation.metrics;
    let mut added = update.added.len();
    let updated = match loaded.kind {
        CardKind::Source => {
            let mut edits = yaml_value_edits(path, &text, old, updates, 0)?;
            edits.extend(yaml_addition_edits(path, &text, &update.added)?);
            replace_spans(&text, edits)
        }
        CardKind::CanonicalJson => {
            let mut card = loaded.card.clone();
            for (i, v) in updates {
                card.evaluation.metrics[*i].value = *v;
            }
            card.upsert_metrics(update.added.iter().cloned());
            card.normalize();
            serde_json::to_string_pretty(&card).map_err(|e| CardError::Invalid(e.to_string()))? + "\n"
        }
        CardKind::Mct => {
            let mut value: serde_json::Value = crate::input::parse_json(path, &text)?;
            let mut card = loaded.card.clone();
            for (i, v) in updates {
                card.evaluation.metrics[*i].value = *v;
            }
            if let Some(pm) =
                value.pointer_mut("/quantitative_analysis/performance_metrics").and_then(|v| v.as_array_mut())
            {
                for (entry, m) in pm.iter_mut().zip(card.evaluation.metrics.iter()) {
                    entry["value"] = serde_json::Value::String(format!("{}", m.value));
                }
                let mut extra = Card::default();
                extra.evaluation.metrics = update.added.clone();
                let rendered = crate::mct::from_card(&extra).quantitative_analysis.performance_metrics;
                pm.extend(rendered.iter().filter_map(|m| serde_json::to_value(m).ok()));
            } else {
                added = 0;
            }
            serde_json::to_string_pretty(&value).map_err(|e| CardError::Invalid(e.to_string()))? + "\n"
        }
        CardKind::HuggingFace => {
            // model-index entries group metrics by dataset; new ones need a regenerate.
            added = 0;
            update_readme(path, &text, loaded, updates)?
        }
    };
    write_atomically(path, updated.as_bytes(), true)?;
    Ok(added)
}

#[derive(Deserialize)]
struct SpanIndexMetric {
    #[serde(rename = "type")]
    kind: String,
    value: serde_saphyr::Spanned<f64>,
    #[serde(default)]
    args: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct SpanIndexDataset {
    name: String,
    #[serde(default)]
    split: Option<String>,
}

#[derive(Deserialize)]
struct SpanIndexResult {
    dataset: SpanIndexDataset,
    metrics: Vec<SpanIndexMetric>,
}

#[derive(Deserialize)]
struct SpanIndex {
    #[serde(default)]
    results: Vec<SpanIndexResult>,
}

#[derive(Deserialize)]
struct SpanFrontMatter {
    #[serde(default, rename = "model-index")]
    model_index: Vec<SpanIndex>,
}

fn update_readme(path: &Path, text: &str, loaded: &LoadedCard, updates: &BTreeMap<usize, f64>) -> Result<String> {
    let Some((yaml, _body)) = crate::hf::split_front_matter(text) else {
        return Err(CardError::Invalid(format!("{}: no front matter to update", path.display())));
    };
    // `yaml` is a slice of `text`; spans are in characters from the start of `yaml`.
    let yaml_start_bytes = yaml.as_ptr() as usize - text.as_ptr() as usize;
    let yaml_start_chars = text[..yaml_start_bytes].chars().count();
    let fm: SpanFrontMatter = crate::input::parse_yaml(path, yaml, 1)?;
    let old = &loaded.card.evaluation.metrics;
    let mut edits = Vec::new();
    for index in &fm.model_index {
        for r in &index.results {
            for m in &r.metrics {
                let dataset = (r.dataset.name != "unspecified").then(|| r.dataset.name.clone());
                let slice = m.args.as_ref().and_then(|a| a.get("slice").cloned());
                let key = Metric {
                    name: m.kind.clone(),
                    dataset,
                    split: r.dataset.split.clone(),
                    slice,
                    ..Metric::default()
                }
                .key();
                if let Some((i, _)) = old.iter().enumerate().find(|(_, o)| o.key() == key)
                    && let Some(v) = updates.get(&i)
                {
                    let span = m.value.referenced.span();
                    edits.push((yaml_start_chars + span.offset(), span.len(), format!("{v}")));
                }
            }
        }
    }
    let mut out = replace_spans(text, edits);
    // The body's results table is regenerated from the updated metrics.
    let mut card = loaded.card.clone();
    for (i, v) in updates {
        card.evaluation.metrics[*i].value = *v;
    }
    card.normalize();
    if let Some(start) = out.find(crate::load::RESULTS_TABLE_HEADER) {
        let rest = &out[start..];
        let mut end = start;
        for line in rest.split_inclusive('\n') {
            if !line.trim_start().starts_with('|') {
                break;
            }
            end += line.len();
        }
        let table = crate::render::results_table(&card) + "\n";
        out.replace_range(start..end, &table);
    }
    Ok(out)
}

/// Writes a file by writing a temporary file beside it and renaming it over the target:
/// readers see the old file or the new one, never half of one. `durable` adds an fsync
/// before the rename (for edits of a file that cannot be regenerated, such as a card source).
pub fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| CardError::io(path, e))?;
    tmp.write_all(bytes).map_err(|e| CardError::io(path, e))?;
    if durable {
        tmp.as_file().sync_all().map_err(|e| CardError::io(path, e))?;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(path).map_err(|e| CardError::io(path, e.error))?;
    Ok(())
}
