//! Rendering cards with minijinja. The standard templates are embedded; an organisation
//! can override any of them (`--template-dir`) or render its own (`--template`), with the
//! card as context and the standard templates available to `include` as `cairn/<name>`.
//!
//! Templates run sandboxed: no filesystem access beyond the loader, a fuel limit against
//! runaway loops, HTML auto-escaping for `.html` templates.

use std::path::{Component, Path, PathBuf};

use minijinja::{AutoEscape, Environment, Value as JValue, context};
use serde::Serialize;

use crate::error::{CardError, Result};
use crate::hf::{self, MISSING};
use crate::load::RESULTS_TABLE_HEADER;
use crate::mct;
use crate::model::Card;
use crate::validate::{Standard, lookup, missing_paths, rules_for};

/// Output formats of `generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Hugging Face README.md with YAML front matter and model-index
    Huggingface,
    /// Google Model Card Toolkit JSON (schema v0.0.2)
    Google,
    /// EU AI Act technical documentation (Annex IV), Markdown
    EuAiAct,
    /// EU Cyber Resilience Act (and GDPR) documentation, Markdown
    EuCra,
    /// Self-contained, printable HTML
    Html,
    /// Canonical card JSON
    Json,
}

impl Format {
    /// The default output file name.
    pub fn default_file_name(self) -> &'static str {
        match self {
            Format::Huggingface => "README.md",
            Format::Google => "model_card.mct.json",
            Format::EuAiAct => "MODEL_CARD.eu-ai-act.md",
            Format::EuCra => "MODEL_CARD.eu-cra.md",
            Format::Html => "model_card.html",
            Format::Json => "model_card.json",
        }
    }

    fn template(self) -> Option<&'static str> {
        match self {
            Format::Huggingface => Some("huggingface.md.j2"),
            Format::EuAiAct => Some("eu-ai-act.md.j2"),
            Format::EuCra => Some("eu-cra.md.j2"),
            Format::Html => Some("card.html.j2"),
            Format::Google | Format::Json => None,
        }
    }
}

const BUILTIN: &[(&str, &str)] = &[
    ("huggingface.md.j2", include_str!("../templates/huggingface.md.j2")),
    ("mitchell.md.j2", include_str!("../templates/mitchell.md.j2")),
    ("eu-ai-act.md.j2", include_str!("../templates/eu-ai-act.md.j2")),
    ("eu-cra.md.j2", include_str!("../templates/eu-cra.md.j2")),
    ("card.html.j2", include_str!("../templates/card.html.j2")),
];

/// Fuel for one render: generous for cards, finite for hostile templates.
const FUEL: u64 = 5_000_000;
/// Largest template file read from disk.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// Where templates come from besides the built-in ones.
#[derive(Debug, Clone, Default)]
pub struct TemplateOptions {
    /// A custom template to render instead of the format's.
    pub template: Option<PathBuf>,
    /// A directory whose files override built-in templates of the same name.
    pub template_dir: Option<PathBuf>,
}

fn safe_relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    p.components().all(|c| matches!(c, Component::Normal(_))).then(|| p.to_path_buf())
}

fn read_template(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_TEMPLATE_BYTES {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

fn bullets(items: JValue) -> String {
    let Ok(iter) = items.try_iter() else { return String::new() };
    iter.map(|v| format!("- {v}")).collect::<Vec<_>>().join("\n")
}

fn concat(a: JValue, b: JValue) -> JValue {
    let mut out: Vec<JValue> = Vec::new();
    for v in [a, b] {
        if let Ok(iter) = v.try_iter() {
            out.extend(iter);
        }
    }
    JValue::from(out)
}

fn names(list: JValue) -> JValue {
    let Ok(iter) = list.try_iter() else { return JValue::from(Vec::<JValue>::new()) };
    JValue::from(iter.filter_map(|d| d.get_attr("name").ok()).filter(|v| !v.is_undefined()).collect::<Vec<_>>())
}

fn entries(map: JValue) -> JValue {
    let Ok(iter) = map.try_iter() else { return JValue::from(Vec::<JValue>::new()) };
    let pairs: Vec<JValue> = iter
        .map(|k| {
            let v = map.get_item(&k).unwrap_or_default();
            JValue::from(vec![k, v])
        })
        .collect();
    JValue::from(pairs)
}

fn is_safe_url(v: JValue) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("https://") || s.starts_with("http://"))
}

fn build_env(opts: &TemplateOptions) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    // Empty card sections are omitted from the context; chained lookups through them
    // yield undefined (rendered as the missing marker), not an error.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") || name.ends_with(".html.j2") || name.ends_with(".htm") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.add_function("bullets", bullets);
    env.add_function("concat", concat);
    env.add_function("names", names);
    env.add_function("entries", entries);
    env.add_test("safe_url", is_safe_url);
    env.add_global("missing", MISSING);
    let dir = opts.template_dir.clone();
    let custom_dir = opts.template.as_ref().and_then(|t| t.parent().map(Path::to_path_buf));
    env.set_loader(move |name| {
        if let Some(rest) = name.strip_prefix("cairn/") {
            return Ok(builtin(rest).map(str::to_string));
        }
        let Some(rel) = safe_relative(name) else { return Ok(None) };
        for d in [&dir, &custom_dir].into_iter().flatten() {
            if let Some(text) = read_template(&d.join(&rel)) {
                return Ok(Some(text));
            }
        }
        Ok(builtin(name).map(str::to_string))
    });
    env
}

/// One documented item of a regulation: its facts and gaps.
#[derive(Serialize)]
struct Item {
    section: String,
    title: String,
    rule_id: String,
    facts: Vec<Fact>,
    paths: Vec<String>,
    fix: String,
}

#[derive(Serialize)]
struct Fact {
    label: String,
    path: String,
    value: Option<String>,
}

fn display_value(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) => s.replace('\n', " "),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::Object(o) if o.contains_key("value") && o.contains_key("name") => {
                    let m: crate::model::Metric = serde_json::from_value(x.clone()).unwrap_or_default();
                    format!("{} = {}", m.label(), m.value)
                }
                Value::Object(o) => o.get("name").map(display_value).unwrap_or_else(|| x.to_string()),
                other => display_value(other),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k}: {}", display_value(v))).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

fn label_of(path: &str) -> String {
    let last = path.rsplit('.').next().unwrap_or(path);
    let mut s = last.replace('_', " ");
    if let Some(first) = s.get(..1) {
        s = first.to_uppercase() + &s[1..];
    }
    s
}

fn items(card_value: &serde_json::Value, standards: &[Standard]) -> Vec<Item> {
    standards
        .iter()
        .flat_map(|s| rules_for(*s))
        .filter(|r| r.section.is_some() && r.check == "required")
        .map(|r| {
            let facts = r
                .paths
                .iter()
                .map(|p| {
                    let found = p.split('|').find_map(|alt| {
                        let v = lookup(card_value, alt);
                        crate::validate::is_present(v)
                            .then(|| (alt.to_string(), display_value(v.unwrap_or(&serde_json::Value::Null))))
                    });
                    match found {
                        Some((path, value)) => Fact { label: label_of(&path), path, value: Some(value) },
                        None => Fact {
                            label: label_of(p.split('|').next().unwrap_or(p)),
                            path: p.replace('|', "` or `"),
                            value: None,
                        },
                    }
                })
                .collect();
            Item {
                section: r.section.clone().unwrap_or_default(),
                title: r.title.clone().unwrap_or_default(),
                rule_id: r.id.clone(),
                facts,
                paths: missing_paths(card_value, &r.paths).iter().map(|p| p.replace('|', "` or `")).collect(),
                fix: r.fix.clone(),
            }
        })
        .collect()
}

fn escape_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The Markdown results table (also parsed back by `validate` for consistency).
pub fn results_table(card: &Card) -> String {
    if card.evaluation.metrics.is_empty() {
        return MISSING.to_string();
    }
    let mut out = format!("{RESULTS_TABLE_HEADER}\n|---|---|---|---|---|\n");
    for m in &card.evaluation.metrics {
        let dash = |s: &Option<String>| s.as_deref().map(escape_cell).unwrap_or_else(|| "—".to_string());
        let ci = m.confidence_interval.map(|[lo, hi]| format!(" (95% CI {lo}–{hi})")).unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {}{ci} |\n",
            escape_cell(&m.name),
            dash(&m.dataset),
            dash(&m.split),
            dash(&m.slice),
            m.value
        ));
    }
    out.pop();
    out
}

/// The template context. Parts only some templates use are computed only for them
/// (custom templates get everything).
fn context_for(card: &Card, format: Format, custom: bool) -> JValue {
    let card_value = serde_json::to_value(card).unwrap_or_default();
    let regulatory = custom || matches!(format, Format::EuAiAct | Format::EuCra);
    let standards: &[Standard] = match format {
        Format::EuCra => &[Standard::EuCra, Standard::Gdpr],
        _ => &[Standard::EuAiAct],
    };
    let items = if regulatory { items(&card_value, standards) } else { Vec::new() };
    let gaps: Vec<&Item> = items.iter().filter(|i| !i.paths.is_empty()).collect();
    let filled = items.len() - gaps.len();
    let mut metric_names: Vec<&str> = card.evaluation.metrics.iter().map(|m| m.name.as_str()).collect();
    metric_names.sort();
    metric_names.dedup();
    let front_matter =
        if custom || format == Format::Huggingface { hf::front_matter_yaml(card) } else { String::new() };
    let mct = if custom { JValue::from_serialize(mct::from_card(card)) } else { JValue::UNDEFINED };
    context! {
        card => JValue::from_serialize(&card_value),
        front_matter => front_matter,
        results_table => results_table(card),
        metric_names => metric_names,
        items => JValue::from_serialize(&items),
        gaps => JValue::from_serialize(&gaps),
        filled => filled,
        mct => mct,
    }
}

/// Blank-line runs left by optional sections collapse to one, so diffs stay small.
fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut newlines = 0;
    for c in text.chars() {
        if c == '\n' {
            newlines += 1;
            if newlines > 2 {
                continue;
            }
        } else {
            newlines = 0;
        }
        out.push(c);
    }
    out
}

fn template_error(name: &str, e: minijinja::Error) -> CardError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    CardError::Template { name: name.to_string(), message }
}

/// Renders a card (normalised first) in a format, or through a custom template.
pub fn render(card: &Card, format: Format, opts: &TemplateOptions) -> Result<String> {
    let mut card = card.clone();
    card.normalize();
    if let Some(path) = &opts.template {
        let ok_ext = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| [".j2", ".jinja", ".jinja2", ".md", ".html", ".txt"].iter().any(|e| n.ends_with(e)));
        if !ok_ext {
            return Err(CardError::BadExtension {
                file: path.clone(),
                allowed: ".j2 .jinja .jinja2 .md .html .txt".into(),
            });
        }
        let meta = std::fs::metadata(path).map_err(|e| CardError::io(path, e))?;
        if meta.len() > MAX_TEMPLATE_BYTES {
            return Err(CardError::TooLarge { file: path.clone(), limit: MAX_TEMPLATE_BYTES });
        }
        let source = std::fs::read_to_string(path).map_err(|e| CardError::io(path, e))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("custom.j2").to_string();
        let env = build_env(opts);
        let tmpl = env.template_from_named_str(&name, &source).map_err(|e| template_error(&name, e))?;
        return tmpl.render(context_for(&card, format, true)).map_err(|e| template_error(&name, e));
    }
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&card).map_err(|e| CardError::Invalid(e.to_string()))?;
            s.push('\n');
            Ok(s)
        }
        Format::Google => {
            let mut s =
                serde_json::to_string_pretty(&mct::from_card(&card)).map_err(|e| CardError::Invalid(e.to_string()))?;
            s.push('\n');
            Ok(s)
        }
        _ => {
            let name = format.template().expect("markdown and html formats have templates");
            let env = build_env(opts);
            let tmpl = env.get_template(name).map_err(|e| template_error(name, e))?;
            let out = tmpl.render(context_for(&card, format, false)).map_err(|e| template_error(name, e))?;
            Ok(collapse_blank_lines(&out))
        }
    }
}
