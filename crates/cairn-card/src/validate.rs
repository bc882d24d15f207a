//! Validation: the rules in `rules/rules.yaml`, applied to a card, per standard.
//!
//! Rules are data; this module only knows how to evaluate each kind of `check`. A finding
//! names the rule, its severity, the field path, what is wrong and how to fix it. The
//! completeness score of a standard is the weighted share of its rules that pass
//! (error = 1, warning = 0.5, info = 0.25).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::load::LoadedCard;
use crate::model::is_fraction_metric;
use crate::secrets::SecretFinding;

/// The standards cards are validated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Standard {
    Huggingface,
    Google,
    EuAiAct,
    EuCra,
    Gdpr,
}

impl Standard {
    pub fn id(self) -> &'static str {
        match self {
            Standard::Huggingface => "huggingface",
            Standard::Google => "google",
            Standard::EuAiAct => "eu-ai-act",
            Standard::EuCra => "eu-cra",
            Standard::Gdpr => "gdpr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    fn weight(self) -> f64 {
        match self {
            Severity::Error => 1.0,
            Severity::Warning => 0.5,
            Severity::Info => 0.25,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One rule from `rules.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub standard: String,
    pub severity: Severity,
    pub check: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub section: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    pub message: String,
    pub fix: String,
}

/// The embedded rule table.
pub fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        serde_saphyr::from_str(include_str!("../rules/rules.yaml")).expect("embedded rules.yaml is valid (tested)")
    })
}

/// Rules that apply to one standard (its own and the common ones).
pub fn rules_for(standard: Standard) -> impl Iterator<Item = &'static Rule> {
    rules().iter().filter(move |r| r.standard == standard.id() || r.standard == "all")
}

/// A problem found in a card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule_id: String,
    pub severity: Severity,
    pub path: String,
    pub message: String,
    pub fix: String,
    /// Set for secret findings and for findings tied to a place in a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
}

/// The result for one standard.
#[derive(Debug, Clone, Serialize)]
pub struct StandardReport {
    pub standard: Standard,
    pub score: f64,
    pub passed: usize,
    pub total: usize,
    pub findings: Vec<Finding>,
}

/// The result of `validate`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub card: String,
    pub valid: bool,
    pub min_score: f64,
    pub standards: Vec<StandardReport>,
    pub secrets: Vec<Finding>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.standards
            .iter()
            .flat_map(|s| &s.findings)
            .chain(&self.secrets)
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
}

/// Looks up a dot path (`model.name`, `sections.user_interface`) in a card value.
pub fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, key| v.get(key))
}

/// Whether a value counts as filled in.
pub fn is_present(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => {
            let t = s.trim();
            !t.is_empty() && t != crate::hf::MISSING
        }
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// Which alternatives of a `a|b` path are missing (empty when one is present).
pub fn missing_paths(root: &Value, paths: &[String]) -> Vec<String> {
    paths.iter().filter(|p| !p.split('|').any(|alt| is_present(lookup(root, alt)))).cloned().collect()
}

/// SPDX ids (lower-case) and the extra license ids the Hugging Face Hub accepts.
const LICENSES: &[&str] = &[
    "0bsd",
    "afl-3.0",
    "agpl-3.0",
    "agpl-3.0-only",
    "agpl-3.0-or-later",
    "apache-2.0",
    "artistic-2.0",
    "bsd",
    "bsd-2-clause",
    "bsd-3-clause",
    "bsd-3-clause-clear",
    "bsl-1.0",
    "c-uda",
    "cc",
    "cc-by-2.0",
    "cc-by-2.5",
    "cc-by-3.0",
    "cc-by-4.0",
    "cc-by-nc-2.0",
    "cc-by-nc-3.0",
    "cc-by-nc-4.0",
    "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0",
    "cc-by-nd-4.0",
    "cc-by-sa-3.0",
    "cc-by-sa-4.0",
    "cc0-1.0",
    "cdla-permissive-1.0",
    "cdla-permissive-2.0",
    "cdla-sharing-1.0",
    "ecl-2.0",
    "epl-1.0",
    "epl-2.0",
    "etalab-2.0",
    "eupl-1.1",
    "eupl-1.2",
    "gfdl",
    "gpl",
    "gpl-2.0",
    "gpl-2.0-only",
    "gpl-2.0-or-later",
    "gpl-3.0",
    "gpl-3.0-only",
    "gpl-3.0-or-later",
    "isc",
    "lgpl",
    "lgpl-2.1",
    "lgpl-3.0",
    "lgpl-lr",
    "lppl-1.3c",
    "mit",
    "mit-0",
    "mpl-2.0",
    "ms-pl",
    "ncsa",
    "odbl",
    "odc-by",
    "ofl-1.1",
    "openrail",
    "openrail++",
    "osl-3.0",
    "pddl",
    "postgresql",
    "unlicense",
    "upl-1.0",
    "wtfpl",
    "zlib",
    "bigscience-bloom-rail-1.0",
    "bigscience-openrail-m",
    "creativeml-openrail-m",
    "bigcode-openrail-m",
    "llama2",
    "llama3",
    "llama3.1",
    "llama3.2",
    "llama3.3",
    "gemma",
    "apple-ascl",
    "deepfloyd-if-license",
    "intel-research",
    "other",
    "proprietary",
    "unknown",
];

fn text_of(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}

fn finding(rule: &Rule, path: String, message: String) -> Finding {
    Finding {
        rule_id: rule.id.clone(),
        severity: rule.severity,
        path,
        message,
        fix: rule.fix.clone(),
        line: None,
        column: None,
    }
}

/// Applies one rule; returns its findings (empty = passed).
fn check_rule(rule: &Rule, loaded: &LoadedCard, root: &Value) -> Vec<Finding> {
    let first = rule.paths.first().map(String::as_str).unwrap_or("");
    match rule.check.as_str() {
        "required" => {
            let missing = missing_paths(root, &rule.paths);
            if missing.is_empty() { vec![] } else { vec![finding(rule, missing.join(", "), rule.message.clone())] }
        }
        "min_length" => {
            let min = rule.value.as_ref().and_then(Value::as_u64).unwrap_or(0) as usize;
            match text_of(lookup(root, first)) {
                Some(s) if s.trim().chars().count() < min => {
                    vec![finding(
                        rule,
                        first.into(),
                        format!("{} ({} characters, at least {min} expected)", rule.message, s.trim().chars().count()),
                    )]
                }
                _ => vec![],
            }
        }
        "pattern" => {
            let re = rule.value.as_ref().and_then(Value::as_str).and_then(|p| regex::Regex::new(p).ok());
            match (text_of(lookup(root, first)), re) {
                (Some(s), Some(re)) if !re.is_match(s) => {
                    vec![finding(rule, first.into(), format!("{}: {s:?}", rule.message))]
                }
                _ => vec![],
            }
        }
        "one_of" => match text_of(lookup(root, first)) {
            Some(s) if rule.values.iter().any(|v| v.eq_ignore_ascii_case(s.trim())) => vec![],
            Some(s) => vec![finding(
                rule,
                first.into(),
                format!("{} ({s:?} is not one of {})", rule.message, rule.values.join(", ")),
            )],
            None => vec![finding(rule, first.into(), rule.message.clone())],
        },
        "not_one_of" => match text_of(lookup(root, first)) {
            Some(s) if rule.values.iter().any(|v| v.eq_ignore_ascii_case(s.trim())) => {
                vec![finding(rule, first.into(), rule.message.clone())]
            }
            _ => vec![],
        },
        "spdx" => match text_of(lookup(root, first)) {
            Some(s) if !LICENSES.contains(&s.trim().to_ascii_lowercase().as_str()) => {
                vec![finding(rule, first.into(), format!("{}: {s:?}", rule.message))]
            }
            _ => vec![],
        },
        "metric_range" => {
            let mut out = Vec::new();
            for (i, m) in loaded.card.evaluation.metrics.iter().enumerate() {
                let bounded = is_fraction_metric(&m.name.to_ascii_lowercase());
                let bad = !m.value.is_finite() || (bounded && !(0.0..=1.0).contains(&m.value));
                if bad {
                    out.push(finding(
                        rule,
                        format!("evaluation.metrics[{i}].value"),
                        format!("{}: {} = {}", rule.message, m.label(), m.value),
                    ));
                }
                if let Some([lo, hi]) = m.confidence_interval
                    && !(lo <= m.value && m.value <= hi)
                {
                    out.push(finding(
                        rule,
                        format!("evaluation.metrics[{i}].confidence_interval"),
                        format!(
                            "{}: {} = {} lies outside its confidence interval [{lo}, {hi}]",
                            rule.message,
                            m.label(),
                            m.value
                        ),
                    ));
                }
            }
            out
        }
        "dataset_refs" => {
            let known = loaded.card.dataset_names();
            let mut out = Vec::new();
            for (i, m) in loaded.card.evaluation.metrics.iter().enumerate() {
                if let Some(d) = &m.dataset
                    && !known.contains(d)
                {
                    out.push(finding(
                        rule,
                        format!("evaluation.metrics[{i}].dataset"),
                        format!("{}: {d:?} ({})", rule.message, m.label()),
                    ));
                }
            }
            out
        }
        "consistency" => match &loaded.body_metrics {
            None => vec![],
            Some(body) => {
                let body_index: std::collections::HashMap<&str, f64> =
                    body.iter().map(|(l, v)| (l.as_str(), *v)).collect();
                let labels: std::collections::HashSet<String> =
                    loaded.card.evaluation.metrics.iter().map(|m| m.label()).collect();
                let mut out = Vec::new();
                for m in &loaded.card.evaluation.metrics {
                    let label = m.label();
                    let in_body =
                        body_index.get(label.as_str()).is_some_and(|v| (v - m.value).abs() <= 1e-9 * v.abs().max(1.0));
                    if !in_body {
                        out.push(finding(
                            rule,
                            "evaluation.metrics".into(),
                            format!("{}: {label} = {} is in the metadata but not in the body", rule.message, m.value),
                        ));
                    }
                }
                for (label, v) in body {
                    if !labels.contains(label) {
                        out.push(finding(
                            rule,
                            "evaluation.metrics".into(),
                            format!("{}: {label} = {v} is in the body but not in the metadata", rule.message),
                        ));
                    }
                }
                out.truncate(50);
                out
            }
        },
        "placeholders" => {
            let text = loaded.raw_text.as_deref().unwrap_or_default();
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let lower = line.to_ascii_lowercase();
                if line.contains(crate::hf::MISSING)
                    || line.contains("[Model Name]")
                    || lower.contains("todo:")
                    || lower.contains("fixme")
                {
                    let mut f = finding(rule, String::new(), rule.message.clone());
                    f.line = Some(i as u64 + 1);
                    out.push(f);
                }
            }
            out.truncate(20);
            out
        }
        other => vec![finding(rule, String::new(), format!("unknown check kind {other:?} in the rule table"))],
    }
}

/// Validates a loaded card against the given standards.
pub fn validate(loaded: &LoadedCard, standards: &[Standard], min_score: f64, secrets: &[SecretFinding]) -> Report {
    let root = serde_json::to_value(&loaded.card).unwrap_or(Value::Null);
    let mut reports = Vec::new();
    for &standard in standards {
        let (mut total, mut passed_weight, mut passed) = (0.0, 0.0, 0usize);
        let mut findings = Vec::new();
        let mut count = 0;
        for rule in rules_for(standard) {
            count += 1;
            let w = rule.severity.weight();
            total += w;
            let f = check_rule(rule, loaded, &root);
            if f.is_empty() {
                passed_weight += w;
                passed += 1;
            }
            findings.extend(f);
        }
        findings.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.rule_id.cmp(&b.rule_id)));
        let score = if total > 0.0 { passed_weight / total } else { 1.0 };
        reports.push(StandardReport {
            standard,
            score: (score * 1000.0).round() / 1000.0,
            passed,
            total: count,
            findings,
        });
    }
    let secret_findings: Vec<Finding> = secrets
        .iter()
        .map(|s| Finding {
            rule_id: format!("SECRET:{}", s.rule_id),
            severity: Severity::Error,
            path: s.source.clone(),
            message: format!("possible {} ({} characters; value not shown)", s.description, s.length),
            fix: format!(
                "remove the secret and rotate it; if it is a false positive, pass --allow-secret {}",
                s.rule_id
            ),
            line: Some(s.line),
            column: Some(s.column),
        })
        .collect();
    let below = reports.iter().any(|r| r.score < min_score);
    let mut report =
        Report { card: loaded.source.clone(), valid: true, min_score, standards: reports, secrets: secret_findings };
    report.valid = !below && report.errors() == 0;
    report
}

/// Plain-text report for terminals and CI logs.
pub fn to_text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for s in &report.standards {
        let _ = writeln!(
            out,
            "{} — {}: completeness {:.0}% ({}/{} rules passed)",
            report.card,
            s.standard.id(),
            s.score * 100.0,
            s.passed,
            s.total
        );
        for f in &s.findings {
            let at = if f.path.is_empty() { String::new() } else { format!(" at {}", f.path) };
            let line = f.line.map(|l| format!(" (line {l})")).unwrap_or_default();
            let _ = writeln!(out, "  {:7} {}{at}{line}: {}", f.severity.as_str(), f.rule_id, f.message);
            let _ = writeln!(out, "          fix: {}", f.fix);
        }
    }
    for f in &report.secrets {
        let _ = writeln!(
            out,
            "  error   {} at {}:{}:{}: {}",
            f.rule_id,
            f.path,
            f.line.unwrap_or(0),
            f.column.unwrap_or(0),
            f.message
        );
        let _ = writeln!(out, "          fix: {}", f.fix);
    }
    let verdict = if report.valid { "valid" } else { "NOT valid" };
    let _ = writeln!(
        out,
        "{}: {verdict} ({} errors; minimum score {:.0}%)",
        report.card,
        report.errors(),
        report.min_score * 100.0
    );
    out
}

/// SARIF 2.1.0, for code-scanning dashboards.
pub fn to_sarif(report: &Report) -> Value {
    let all: Vec<&Finding> = report.standards.iter().flat_map(|s| &s.findings).chain(&report.secrets).collect();
    let mut rule_ids: Vec<&str> = all.iter().map(|f| f.rule_id.as_str()).collect();
    rule_ids.sort();
    rule_ids.dedup();
    let level = |s: Severity| match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    };
    let results: Vec<Value> = all
        .iter()
        .map(|f| {
            let mut region = serde_json::Map::new();
            if let Some(l) = f.line {
                region.insert("startLine".into(), l.into());
            }
            if let Some(c) = f.column {
                region.insert("startColumn".into(), c.into());
            }
            let mut location = serde_json::json!({"physicalLocation": {"artifactLocation": {"uri": report.card}}});
            if !region.is_empty() {
                location["physicalLocation"]["region"] = Value::Object(region);
            }
            serde_json::json!({
                "ruleId": f.rule_id,
                "level": level(f.severity),
                "message": {"text": format!("{}{} Fix: {}", f.message, if f.path.is_empty() { String::new() } else { format!(" ({})", f.path) }, f.fix)},
                "locations": [location],
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "cairn card validate",
                "informationUri": "https://github.com/cairn-registry/cairn",
                "rules": rule_ids.iter().map(|id| serde_json::json!({"id": id})).collect::<Vec<_>>(),
            }},
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_table_loads_and_ids_are_unique() {
        let ids: std::collections::BTreeSet<_> = rules().iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), rules().len());
        for r in rules() {
            assert!(
                [
                    "required",
                    "min_length",
                    "pattern",
                    "one_of",
                    "not_one_of",
                    "spdx",
                    "metric_range",
                    "dataset_refs",
                    "consistency",
                    "placeholders"
                ]
                .contains(&r.check.as_str()),
                "{}",
                r.id
            );
            assert!(["all", "huggingface", "google", "eu-ai-act", "eu-cra", "gdpr"].contains(&r.standard.as_str()));
        }
    }

    #[test]
    fn every_rule_path_exists_in_the_card_model() {
        // A full card has a value at every path: a typo in rules.yaml fails here.
        let full: Value = serde_json::to_value(crate::init::full_example_card()).expect("json");
        for r in rules() {
            for p in &r.paths {
                for alt in p.split('|') {
                    assert!(lookup(&full, alt).is_some(), "rule {} names unknown path {alt}", r.id);
                }
            }
        }
    }
}
