//! `cairn card …`: the offline card tool of `cairn-card` (init, generate, validate,
//! check-drift, diff of two files) plus the cards attached to versions on a server: `show`,
//! `attach` and `diff ns/name:V --against M`.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_card::cli::{DiffArgs, DriftArgs, GenerateArgs, InitArgs, PlainFormat, ValidateArgs};
use cairn_card::input::InputPolicy;
use cairn_client::CardFormat;
use clap::{Args, Subcommand, ValueEnum};

use super::governance::{fail, load_card, merge_results, parse_version_ref};
use super::{UsageError, client, print_json};

/// `cairn card`.
#[derive(Args, Debug)]
#[command(after_help = "Exit codes: 0 ok; 1 a check failed (validation, drift with --fail-on-drift, diff with \
                        --exit-code, a secret in generate) or the server could not be reached; 2 a usage or input \
                        error.")]
pub struct CardArgs {
    /// Largest input file read (e.g. 10MB, 200MiB, 1048576)
    #[arg(long, global = true, env = "CAIRN_CARD_MAX_INPUT_SIZE", default_value = "10MB", value_parser = cairn_card::cli::parse_size)]
    max_input_size: u64,
    #[command(subcommand)]
    command: CardCommand,
}

#[derive(Subcommand, Debug)]
enum CardCommand {
    /// Write a documented card source to start from
    Init(InitArgs),
    /// Render a card from results, a card source and flags
    Generate(Box<GenerateArgs>),
    /// Check a card's completeness per standard, and scan it for secrets
    Validate(ValidateArgs),
    /// Compare the metrics a card claims with new results
    #[command(alias = "drift")]
    CheckDrift(DriftArgs),
    /// Show what changed between two card files, or between two versions' cards on a server
    /// (`cairn card diff ns/name:V --against M`)
    Diff(CardDiffArgs),
    /// Show the card of a version on a server, rendered (evaluation results merged in)
    Show {
        /// namespace/name:VERSION
        #[arg(value_name = "MODEL:VERSION")]
        reference: String,
        /// The rendering
        #[arg(long, value_enum, default_value = "huggingface")]
        format: ServerFormat,
        /// Write it to this file instead of standard output
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Attach a card to a version on a server (replaceable while the version is a draft or
    /// has changes requested)
    Attach {
        /// namespace/name:VERSION
        #[arg(value_name = "MODEL:VERSION")]
        reference: String,
        /// Card source (.yaml), canonical JSON or a Hugging Face README.md
        card: PathBuf,
        /// Evaluation results to merge into the card (.json, .yaml, .csv; repeatable)
        #[arg(long = "eval", value_name = "RESULTS")]
        eval: Vec<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct CardDiffArgs {
    /// The old card file, or with --against the namespace/name:VERSION whose card is the new one
    a: String,
    /// The new card file (not with --against)
    #[arg(required_unless_present = "against", conflicts_with = "against")]
    b: Option<PathBuf>,
    /// Compare a version on the server with this version of the same model (number, @alias,
    /// semver label)
    #[arg(long, value_name = "VERSION")]
    against: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: PlainFormat,
    /// Exit 1 when the cards differ
    #[arg(long)]
    exit_code: bool,
}

/// Renderings the server offers.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ServerFormat {
    /// Hugging Face README.md with front matter
    Huggingface,
    /// Model Card Toolkit JSON
    Google,
    /// EU AI Act technical documentation
    EuAiAct,
    /// EU Cyber Resilience Act documentation
    EuCra,
    /// HTML
    Html,
    /// The canonical card (JSON)
    Json,
}

impl From<ServerFormat> for CardFormat {
    fn from(f: ServerFormat) -> Self {
        match f {
            ServerFormat::Huggingface => CardFormat::Huggingface,
            ServerFormat::Google => CardFormat::Google,
            ServerFormat::EuAiAct => CardFormat::EuAiAct,
            ServerFormat::EuCra => CardFormat::EuCra,
            ServerFormat::Html => CardFormat::Html,
            ServerFormat::Json => CardFormat::Json,
        }
    }
}

/// Runs `cairn card …`: offline commands directly, server ones on a small runtime.
pub fn run(args: CardArgs) -> ExitCode {
    let max_input_size = args.max_input_size;
    let offline = |command| cairn_card::cli::run(cairn_card::cli::CardArgs { max_input_size, command });
    use cairn_card::cli::CardCommand as Offline;
    match args.command {
        CardCommand::Init(a) => offline(Offline::Init(a)),
        CardCommand::Generate(a) => offline(Offline::Generate(a)),
        CardCommand::Validate(a) => offline(Offline::Validate(a)),
        CardCommand::CheckDrift(a) => offline(Offline::CheckDrift(a)),
        CardCommand::Diff(d) if d.against.is_none() => {
            let Some(b) = d.b else { return super::usage("give two card files, or one version and --against") };
            offline(Offline::Diff(DiffArgs { a: PathBuf::from(d.a), b, format: d.format, exit_code: d.exit_code }))
        }
        server => {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let policy = InputPolicy { max_bytes: max_input_size };
            match rt.block_on(remote(server, &policy)) {
                Ok(code) => code,
                Err(e) => fail(&e),
            }
        }
    }
}

async fn remote(cmd: CardCommand, policy: &InputPolicy) -> anyhow::Result<ExitCode> {
    match cmd {
        CardCommand::Show { reference, format, output } => {
            let (model, version) = parse_version_ref(&reference)?;
            let text = client()?.card(&model, &version, format.into()).await?;
            match output {
                Some(path) if path.as_os_str() != "-" => std::fs::write(&path, &text)
                    .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?,
                _ => print!("{text}"),
            }
        }
        CardCommand::Attach { reference, card, eval, json } => {
            let (model, version) = parse_version_ref(&reference)?;
            let mut put = load_card(&card, policy)?;
            put.results = merge_results(&eval, policy)?;
            let info = client()?.put_card(&model, &version, &put).await?;
            if json {
                print_json(&info)?;
            } else {
                println!("Attached {} to {reference} ({})", info.source_name, info.digest);
                print_completeness(&info);
            }
        }
        CardCommand::Diff(d) => {
            let (model, version) = parse_version_ref(&d.a)?;
            let against = d.against.unwrap_or_default();
            let diff = client()?.card_diff(&model, &version, &against).await?;
            match d.format {
                PlainFormat::Json => print_json(&diff)?,
                PlainFormat::Text => {
                    let text = diff.get("text").and_then(|t| t.as_str()).unwrap_or_default();
                    if text.trim().is_empty() { println!("No differences") } else { print!("{text}") }
                }
            }
            let empty =
                |k: &str| diff.pointer(&format!("/diff/{k}")).and_then(|v| v.as_array()).is_none_or(Vec::is_empty);
            if d.exit_code && !(empty("fields") && empty("metrics")) {
                return Ok(ExitCode::from(1));
            }
        }
        _ => unreachable!("offline commands are run by cairn-card"),
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of completeness per standard, and the number of findings.
pub fn print_completeness(info: &cairn_api_types::CardInfo) {
    if let Some(scores) = info.completeness.as_object() {
        let parts: Vec<String> =
            scores.iter().map(|(k, v)| format!("{k} {:.0}%", v.as_f64().unwrap_or_default() * 100.0)).collect();
        println!("Completeness: {}", parts.join(", "));
    }
    let findings = info.findings.as_array().map_or(0, Vec::len);
    if findings > 0 {
        println!("{findings} finding(s): see `cairn card show … --format json` or GET …/card/info");
    }
}
