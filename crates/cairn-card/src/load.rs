//! Loading a card that already exists: a card source (YAML), canonical JSON, a Hugging
//! Face `README.md` with front matter, or a Model Card Toolkit JSON.

use std::path::Path;

use crate::error::{CardError, Result};
use crate::hf::{self, FrontMatter};
use crate::input::{InputPolicy, extension, parse_json, parse_yaml};
use crate::mct::MctCard;
use crate::model::{Card, Metric};

/// The kind of file a card was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardKind {
    Source,
    CanonicalJson,
    Mct,
    HuggingFace,
}

/// A card read from disk, with what validation needs beyond the facts.
#[derive(Debug, Clone)]
pub struct LoadedCard {
    pub source: String,
    pub kind: CardKind,
    pub card: Card,
    /// Metrics found in a Markdown body's results table: (label, value).
    pub body_metrics: Option<Vec<(String, f64)>>,
    pub raw_text: Option<String>,
}

/// The header of the results table our Markdown templates write.
pub const RESULTS_TABLE_HEADER: &str = "| Metric | Dataset | Split | Slice | Value |";

/// Reads a card in any supported form (size and type checked by `policy`).
pub fn load_card(path: &Path, policy: &InputPolicy) -> Result<LoadedCard> {
    let text = policy.read_to_string_with(path, &["yaml", "yml", "json", "md"])?;
    parse_card(path, text)
}

/// Parses a card held in memory (the server's uploads); `name`'s extension picks the form:
/// `.yaml`/`.yml` card source, `.json` canonical or MCT JSON, `.md` Hugging Face README.
pub fn parse_card(name: &Path, text: String) -> Result<LoadedCard> {
    let source = name.display().to_string();
    let mut loaded = match extension(name).as_deref() {
        Some("yaml") | Some("yml") => {
            let card: Card = parse_yaml(name, &text, 0)?;
            LoadedCard { source, kind: CardKind::Source, card, body_metrics: None, raw_text: None }
        }
        Some("json") => {
            let value: serde_json::Value = parse_json(name, &text)?;
            if value.get("model_details").is_some() || value.get("quantitative_analysis").is_some() {
                let mct: MctCard = parse_json(name, &text)?;
                LoadedCard { source, kind: CardKind::Mct, card: mct.into_card(), body_metrics: None, raw_text: None }
            } else {
                let card: Card = parse_json(name, &text)?;
                LoadedCard { source, kind: CardKind::CanonicalJson, card, body_metrics: None, raw_text: None }
            }
        }
        Some("md") => load_readme(name, &text)?,
        _ => {
            return Err(CardError::BadExtension { file: name.to_path_buf(), allowed: ".yaml .yml .json .md".into() });
        }
    };
    loaded.raw_text = Some(text);
    Ok(loaded)
}

fn load_readme(path: &Path, text: &str) -> Result<LoadedCard> {
    let Some((yaml, body)) = hf::split_front_matter(text) else {
        return Err(CardError::parse(
            path,
            Some(1),
            Some(1),
            "no YAML front matter: a Hugging Face card starts with a '---' block",
        ));
    };
    let fm: FrontMatter = parse_yaml(path, yaml, 1)?;
    let mut card = fm.into_card();
    read_body_sections(body, &mut card);
    let body_metrics = parse_results_table(body);
    Ok(LoadedCard {
        source: path.display().to_string(),
        kind: CardKind::HuggingFace,
        card,
        body_metrics,
        raw_text: None,
    })
}

/// Metrics from the results table in a Markdown body, if the body has one.
pub fn parse_results_table(body: &str) -> Option<Vec<(String, f64)>> {
    let mut lines = body.lines().skip_while(|l| l.trim() != RESULTS_TABLE_HEADER);
    lines.next()?;
    lines.next(); // the |---| separator
    let mut out = Vec::new();
    for line in lines {
        let line = line.trim();
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 5 {
            continue;
        }
        let opt = |s: &str| (!s.is_empty() && s != "—").then(|| s.replace("\\|", "|"));
        let value: f64 = match cells[4].split_whitespace().next().and_then(|v| v.parse().ok()) {
            Some(v) => v,
            None => continue,
        };
        let m = Metric {
            dataset: opt(cells[1]),
            split: opt(cells[2]),
            slice: opt(cells[3]),
            ..Metric::new(cells[0].replace("\\|", "|"), value)
        };
        out.push((m.label(), value));
    }
    Some(out)
}

/// Best-effort reading of the prose sections of a Hugging Face card body.
fn read_body_sections(body: &str, card: &mut Card) {
    let mut heading = String::new();
    let mut buf: Vec<&str> = Vec::new();
    let flush = |heading: &str, buf: &mut Vec<&str>, card: &mut Card| {
        let text = buf.join("\n").trim().to_string();
        buf.clear();
        if text.is_empty() || text == hf::MISSING || text.eq_ignore_ascii_case("more information needed") {
            return;
        }
        let bullets: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .map(|s| s.trim().to_string())
            .filter(|s| s != hf::MISSING)
            .collect();
        let prose =
            text.lines().filter(|l| !l.trim().starts_with("- ")).collect::<Vec<_>>().join("\n").trim().to_string();
        let set = |slot: &mut Option<String>| {
            if slot.is_none() && !prose.is_empty() {
                *slot = Some(prose.clone());
            }
        };
        match heading.to_ascii_lowercase().as_str() {
            "model description" => {
                set(&mut card.model.description);
                for b in &bullets {
                    if let Some(v) = b.strip_prefix("**Developed by:** ") {
                        card.model.authors = v.split(", ").map(str::to_string).collect();
                    } else if let Some(v) = b.strip_prefix("**Model version:** ") {
                        card.model.version = Some(v.to_string());
                    } else if let Some(v) = b.strip_prefix("**Model type:** ") {
                        card.model.model_type = Some(v.to_string());
                    }
                }
            }
            "intended use" | "direct use" | "intended uses & limitations" | "intended uses" => {
                set(&mut card.intended_use.description)
            }
            "out-of-scope use" => card.intended_use.out_of_scope = bullets,
            "bias, risks, and limitations" | "known limitations" => card.limitations.known = bullets,
            "caveats and recommendations" | "recommendations" => card.limitations.recommendations = bullets,
            "ethical considerations" => card.ethics.considerations = bullets,
            "bias risks" => card.ethics.bias_risks = bullets,
            "training procedure" => set(&mut card.training.procedure),
            // The paragraph under the title is the summary, as in the Hub's template.
            "@title" => set(&mut card.model.description),
            "preprocessing" => set(&mut card.training.preprocessing),
            _ => {}
        }
    };
    for line in body.lines() {
        if let Some(h) = line.trim_start().strip_prefix('#') {
            flush(&heading, &mut buf, card);
            heading =
                if h.starts_with(' ') { "@title".to_string() } else { h.trim_start_matches('#').trim().to_string() };
        } else {
            buf.push(line);
        }
    }
    flush(&heading, &mut buf, card);
}
