//! `cairn card …`: the command-line face of the crate. Exit codes: 0 ok, 1 a check failed
//! (validation, drift with `--fail-on-drift`, a secret in `generate`), 2 usage or input error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::drift::{self, Thresholds};
use crate::error::{CardError, Result};
use crate::init::{self, InitTemplate};
use crate::input::{self, InputPolicy};
use crate::load::load_card;
use crate::model::Card;
use crate::render::{self, Format, TemplateOptions};
use crate::secrets::{Scanner, SecretFinding};
use crate::validate::{self, Standard};

/// `cairn card …`
#[derive(Args, Debug)]
pub struct CardArgs {
    /// Largest input file read (e.g. 10MB, 200MiB, 1048576)
    #[arg(long, global = true, env = "CAIRN_CARD_MAX_INPUT_SIZE", default_value = "10MB", value_parser = parse_size)]
    pub max_input_size: u64,
    #[command(subcommand)]
    pub command: CardCommand,
}

#[derive(Subcommand, Debug)]
pub enum CardCommand {
    /// Write a documented card source to start from
    Init(InitArgs),
    /// Render a card from results, a card source and flags
    Generate(Box<GenerateArgs>),
    /// Check a card's completeness per standard, and scan it for secrets
    Validate(ValidateArgs),
    /// Compare the metrics a card claims with new results
    #[command(alias = "drift")]
    CheckDrift(DriftArgs),
    /// Show what changed between two cards
    Diff(DiffArgs),
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Kind of model the source is prepared for
    #[arg(long, value_enum, default_value = "generic")]
    pub template: InitTemplate,
    /// Where to write the card source
    #[arg(long, short, default_value = "card.yaml")]
    pub output: PathBuf,
    /// Overwrite an existing file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Evaluation results (.json, .yaml, .csv)
    pub results: Option<PathBuf>,
    /// Card source (YAML) with the facts kept next to the code
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// More evaluation results (repeatable)
    #[arg(long = "eval")]
    pub eval: Vec<PathBuf>,
    /// Training log (.log)
    #[arg(long)]
    pub training: Option<PathBuf>,
    /// Dataset information (.json, .yaml)
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Model configuration (.yaml, .json)
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub model_name: Option<String>,
    #[arg(long)]
    pub model_version: Option<String>,
    /// Comma-separated authors
    #[arg(long)]
    pub authors: Option<String>,
    #[arg(long)]
    pub license: Option<String>,
    #[arg(long)]
    pub intended_use: Option<String>,
    #[arg(long, value_enum, default_value = "huggingface")]
    pub format: Format,
    /// Custom minijinja template (the card is the `card` variable)
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Directory whose templates override the built-in ones of the same name
    #[arg(long)]
    pub template_dir: Option<PathBuf>,
    /// Output file ("-" for standard output); default depends on the format
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Accept findings of this secret rule (repeatable)
    #[arg(long = "allow-secret", value_name = "RULE_ID")]
    pub allow_secret: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Sarif,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Card source (.yaml), canonical or MCT JSON, or a Hugging Face README.md
    pub card: PathBuf,
    /// Standards to check (repeatable; default google for MCT JSON, else huggingface)
    #[arg(long = "standard", value_enum)]
    pub standards: Vec<Standard>,
    /// Minimum completeness score per standard
    #[arg(long, default_value_t = 0.8)]
    pub min_score: f64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Also write the report to this file
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Accept findings of this secret rule (repeatable)
    #[arg(long = "allow-secret", value_name = "RULE_ID")]
    pub allow_secret: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlainFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct DriftArgs {
    /// The card whose metrics are checked
    pub card: PathBuf,
    /// New evaluation results
    #[arg(long)]
    pub against: PathBuf,
    /// Absolute threshold for bounded metrics (accuracy, f1, …)
    #[arg(long, default_value_t = 0.02)]
    pub threshold: f64,
    /// Relative threshold for other metrics (loss, latency, …)
    #[arg(long, default_value_t = 0.05)]
    pub relative_threshold: f64,
    /// Absolute threshold for one metric, NAME=VALUE (repeatable)
    #[arg(long = "metric-threshold", value_parser = parse_metric_threshold)]
    pub metric_threshold: Vec<(String, f64)>,
    /// Exit 1 when any change is significant
    #[arg(long)]
    pub fail_on_drift: bool,
    /// Write the new values into the card, in place
    #[arg(long)]
    pub update: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlainFormat,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlainFormat,
    /// Exit 1 when the cards differ
    #[arg(long)]
    pub exit_code: bool,
}

/// Parses sizes such as `10MB`, `200MiB`, `1048576`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?} (expected e.g. 10MB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    // The policy's "10 MB" is 10 MiB; keep the default exact.
    if t.eq_ignore_ascii_case("10MB") {
        return Ok(input::DEFAULT_MAX_INPUT_BYTES);
    }
    Ok((n * mult) as u64)
}

fn parse_metric_threshold(s: &str) -> std::result::Result<(String, f64), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    let v: f64 = v.parse().map_err(|_| format!("invalid threshold in {s:?}"))?;
    Ok((k.trim().to_string(), v))
}

/// What a command decided, before it becomes an exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    CheckFailed,
}

/// Runs a `cairn card` command and returns the process exit code.
pub fn run(args: CardArgs) -> ExitCode {
    match execute(args) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a command; errors are usage or input errors (exit 2).
pub fn execute(args: CardArgs) -> Result<Outcome> {
    let policy = InputPolicy { max_bytes: args.max_input_size };
    match args.command {
        CardCommand::Init(a) => cmd_init(a),
        CardCommand::Generate(a) => cmd_generate(*a, &policy),
        CardCommand::Validate(a) => cmd_validate(a, &policy),
        CardCommand::CheckDrift(a) => cmd_drift(a, &policy),
        CardCommand::Diff(a) => cmd_diff(a, &policy),
    }
}

fn write_output(path: &Path, text: &str) -> Result<()> {
    if path == Path::new("-") {
        std::io::stdout().write_all(text.as_bytes()).map_err(|e| CardError::io(path, e))
    } else {
        // Generated files can be regenerated: atomic, without the cost of an fsync.
        drift::write_atomically(path, text.as_bytes(), false)
    }
}

fn cmd_init(a: InitArgs) -> Result<Outcome> {
    if a.output != Path::new("-") && a.output.exists() && !a.force {
        return Err(CardError::Invalid(format!("{} exists; pass --force to overwrite it", a.output.display())));
    }
    let name = match a.output.file_name().and_then(|n| n.to_str()) {
        Some(n) if n != "-" => n.to_string(),
        _ => "card.yaml".to_string(),
    };
    write_output(&a.output, &init::init_source(a.template, &name))?;
    if a.output != Path::new("-") {
        eprintln!("wrote {} — fill it in, then run: cairn card validate {}", a.output.display(), a.output.display());
    }
    Ok(Outcome::Ok)
}

fn check_allowed(allow: &[String]) -> Result<()> {
    for id in allow {
        if !Scanner::rule_ids().any(|r| r == id) {
            let known: Vec<_> = Scanner::rule_ids().collect();
            return Err(CardError::Invalid(format!("unknown secret rule {id:?} (known: {})", known.join(", "))));
        }
    }
    Ok(())
}

/// Scans an input file in a streaming pass (type and size checked first).
pub fn scan_file(scanner: &Scanner, path: &Path, policy: &InputPolicy) -> Result<Vec<SecretFinding>> {
    let reader = policy.open(path)?;
    scanner.scan_reader(&path.display().to_string(), reader).map_err(|e| {
        if e.to_string().starts_with("input exceeds") {
            CardError::TooLarge { file: path.to_path_buf(), limit: policy.max_bytes }
        } else {
            CardError::io(path, e)
        }
    })
}

/// Merges every input of `generate` into one card (lowest precedence first).
pub fn build_card(a: &GenerateArgs, policy: &InputPolicy) -> Result<Card> {
    let mut card = Card::default();
    for path in a.results.iter().chain(a.eval.iter()) {
        card.overlay(input::read_results(path, policy)?);
    }
    if let Some(p) = &a.training {
        card.overlay(input::read_training_log(p, policy)?);
    }
    if let Some(p) = &a.dataset {
        card.overlay(input::read_dataset_info(p, policy)?);
    }
    if let Some(p) = &a.config {
        card.overlay(input::read_model_config(p, policy)?);
    }
    if let Some(p) = &a.source {
        let loaded = load_card(p, policy)?;
        card.overlay(loaded.card);
    }
    let mut flags = Card::default();
    flags.model.name = a.model_name.clone();
    flags.model.version = a.model_version.clone();
    flags.model.authors =
        a.authors.as_deref().map(|s| s.split(',').map(|x| x.trim().to_string()).collect()).unwrap_or_default();
    flags.model.license = a.license.clone();
    flags.intended_use.description = a.intended_use.clone();
    card.overlay(flags);
    card.normalize();
    Ok(card)
}

fn cmd_generate(a: GenerateArgs, policy: &InputPolicy) -> Result<Outcome> {
    check_allowed(&a.allow_secret)?;
    if a.results.is_none() && a.eval.is_empty() && a.source.is_none() && a.config.is_none() {
        return Err(CardError::Invalid(
            "nothing to generate from: give a results file, --eval, --source or --config".into(),
        ));
    }
    let scanner = Scanner::new();
    let inputs: Vec<&PathBuf> = a
        .results
        .iter()
        .chain(&a.eval)
        .chain(&a.training)
        .chain(&a.dataset)
        .chain(&a.config)
        .chain(&a.source)
        .collect();
    // Scanning and parsing read the same files; on two cores they overlap.
    let (findings, card) = std::thread::scope(|s| {
        let scan = s.spawn(|| -> Result<Vec<SecretFinding>> {
            let mut found = Vec::new();
            for path in &inputs {
                found.extend(scan_file(&scanner, path, policy)?);
            }
            Ok(found)
        });
        let card = build_card(&a, policy);
        let findings = scan.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (findings, card)
    });
    let mut findings = findings?;
    let card = card?;
    let opts = TemplateOptions { template: a.template.clone(), template_dir: a.template_dir.clone() };
    let text = render::render(&card, a.format, &opts)?;
    let output = a.output.clone().unwrap_or_else(|| PathBuf::from(a.format.default_file_name()));
    findings.extend(scanner.scan_str(&format!("{} (rendered)", output.display()), &text));
    findings.retain(|f| !a.allow_secret.contains(&f.rule_id));
    if !findings.is_empty() {
        for f in &findings {
            eprintln!("secret: {f}");
        }
        eprintln!(
            "error: {} possible secret(s) found; nothing written. Remove them, or pass --allow-secret RULE_ID for false positives.",
            findings.len()
        );
        return Ok(Outcome::CheckFailed);
    }
    write_output(&output, &text)?;
    if output != Path::new("-") {
        eprintln!("wrote {} ({:?}, {} metrics)", output.display(), a.format, card.evaluation.metrics.len());
    }
    Ok(Outcome::Ok)
}

fn cmd_validate(a: ValidateArgs, policy: &InputPolicy) -> Result<Outcome> {
    check_allowed(&a.allow_secret)?;
    if !(0.0..=1.0).contains(&a.min_score) {
        return Err(CardError::Invalid("--min-score must be between 0 and 1".into()));
    }
    let loaded = load_card(&a.card, policy)?;
    let scanner = Scanner::new();
    let mut secrets = scanner.scan_str(&a.card.display().to_string(), loaded.raw_text.as_deref().unwrap_or_default());
    secrets.retain(|f| !a.allow_secret.contains(&f.rule_id));
    // Without --standard, a card is checked against the standard of its own form.
    let standards = match (a.standards.is_empty(), loaded.kind) {
        (false, _) => a.standards.clone(),
        (true, crate::load::CardKind::Mct) => vec![Standard::Google],
        (true, _) => vec![Standard::Huggingface],
    };
    let report = validate::validate(&loaded, &standards, a.min_score, &secrets);
    let text = match a.format {
        ReportFormat::Text => validate::to_text(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        ReportFormat::Sarif => serde_json::to_string_pretty(&validate::to_sarif(&report)).unwrap_or_default() + "\n",
    };
    print!("{text}");
    if let Some(out) = &a.output {
        write_output(out, &text)?;
    }
    Ok(if report.valid { Outcome::Ok } else { Outcome::CheckFailed })
}

fn cmd_drift(a: DriftArgs, policy: &InputPolicy) -> Result<Outcome> {
    let loaded = load_card(&a.card, policy)?;
    let results = input::read_results(&a.against, policy)?;
    let thresholds = Thresholds {
        absolute: a.threshold,
        relative: a.relative_threshold,
        per_metric: a.metric_threshold.iter().cloned().collect(),
    };
    let (report, update) = drift::compare(&loaded, &results.evaluation.metrics, &thresholds);
    match a.format {
        PlainFormat::Text => print!("{}", drift::to_text(&report)),
        PlainFormat::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
    }
    if a.update && !update.is_empty() {
        let added = drift::update_in_place(&a.card, &loaded, &update)?;
        eprintln!(
            "updated {} metric value(s) and added {added} metric(s) in {}",
            update.values.len(),
            a.card.display()
        );
        if added < update.added.len() {
            eprintln!(
                "note: new metrics were not added to this kind of card (regenerate it): {}",
                report.new_metrics.join(", ")
            );
        }
    }
    Ok(if report.has_drift && a.fail_on_drift && !a.update { Outcome::CheckFailed } else { Outcome::Ok })
}

fn cmd_diff(a: DiffArgs, policy: &InputPolicy) -> Result<Outcome> {
    let left = load_card(&a.a, policy)?;
    let right = load_card(&a.b, policy)?;
    let d = crate::diff::diff(&left.card, &right.card);
    match a.format {
        PlainFormat::Text => print!("{}", crate::diff::to_text(&d)),
        PlainFormat::Json => println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default()),
    }
    Ok(if a.exit_code && !d.is_empty() { Outcome::CheckFailed } else { Outcome::Ok })
}
