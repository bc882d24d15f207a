//! `cairn eval …`: evaluation suites of a namespace (metrics with thresholds) and the
//! results submitted for a version (docs/GOVERNANCE.md).

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_api_types as api;
use cairn_client::governance::EvalJobQuery;
use clap::{Args, Subcommand};

use super::governance::{fail, input_policy, parse_version_ref, read_results};
use super::{UsageError, client, print_json};
use crate::table;

/// `cairn eval`.
#[derive(Args, Debug)]
#[command(after_help = "Exit codes: 0 ok; 1 a submitted result fails its suite's thresholds (the failing metrics \
                        are printed), or the server could not be reached; 2 a usage or input error.")]
pub struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Subcommand, Debug)]
enum EvalCommand {
    /// Evaluation suites of a namespace
    #[command(subcommand)]
    Suite(SuiteCommand),
    /// Submit evaluation results for a version; they are judged against the suite's thresholds
    Submit {
        /// namespace/name:VERSION
        #[arg(value_name = "MODEL:VERSION")]
        reference: String,
        /// Results: .json, .yaml/.yml or .csv (read as `cairn card generate` reads them)
        results: PathBuf,
        /// The suite to judge them against
        #[arg(long)]
        suite: String,
        /// What the evaluation ran with, as a JSON object (dataset, harness, hardware …)
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Queue a suite to run on a version by an evaluation worker
    Queue {
        /// namespace/name:VERSION
        #[arg(value_name = "MODEL:VERSION")]
        reference: String,
        /// The suite to run
        #[arg(long)]
        suite: String,
        /// Higher runs first
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// Attempts before the job fails for good (1–20) [default: 3]
        #[arg(long)]
        max_attempts: Option<i64>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Evaluation jobs, newest first
    Jobs {
        /// Only this namespace
        #[arg(long)]
        namespace: Option<String>,
        /// Only this model (namespace/name) or version (namespace/name:N)
        #[arg(long, value_name = "MODEL[:N]")]
        model: Option<String>,
        /// Only in this state: queued, running, succeeded, failed, cancelled
        #[arg(long)]
        state: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Jobs older than this id (the next page)
        #[arg(long)]
        before: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running job (its worker stops the harness)
    Cancel {
        /// The job's id
        id: String,
        /// Why
        #[arg(long, default_value = "")]
        reason: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Claim evaluation jobs and run their suites' harness commands on this machine
    Worker(super::eval_jobs::WorkerArgs),
    /// Run an evaluation command for a version and submit the results it writes
    Run(super::eval_jobs::RunArgs),
    /// The evaluation results of a version, oldest first
    List {
        /// namespace/name:VERSION
        #[arg(value_name = "MODEL:VERSION")]
        reference: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SuiteCommand {
    /// Create or replace a suite from a YAML or JSON definition
    Put {
        /// Namespace
        namespace: String,
        /// Suite name (a-z, 0-9, '-' and '_')
        name: String,
        /// The definition: metrics with at_least/at_most thresholds (.yaml, .yml or .json)
        file: PathBuf,
        /// Versions of the namespace must pass it before production
        #[arg(long)]
        required: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// The suites of a namespace
    List {
        /// Namespace
        namespace: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// Runs `cairn eval …`.
pub async fn run(args: EvalArgs) -> ExitCode {
    match eval(args.command).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Reads a suite definition (YAML or JSON by extension) as JSON.
fn read_suite(file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let policy = input_policy()?;
    let text = policy.read_to_string(file).map_err(|e| UsageError(e.to_string()))?;
    let value: serde_json::Value = match cairn_card::input::extension(file).as_deref() {
        Some("json") => cairn_card::input::parse_json(file, &text),
        Some("yaml" | "yml") => cairn_card::input::parse_yaml(file, &text, 0),
        _ => return Err(UsageError(format!("{}: a suite definition is .yaml, .yml or .json", file.display())).into()),
    }
    .map_err(|e| UsageError(e.to_string()))?;
    if !value.is_object() {
        return Err(UsageError(format!("{}: a suite definition is a mapping with `metrics`", file.display())).into());
    }
    Ok(value)
}

fn num(v: Option<&serde_json::Value>) -> String {
    v.and_then(serde_json::Value::as_f64).map(|f| f.to_string()).unwrap_or_else(|| "-".into())
}

fn print_metrics(r: &api::EvalResult) {
    let rows: Vec<Vec<String>> = r
        .metrics
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                m.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
                m.get("group").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
                num(m.get("value")),
                num(m.get("at_least")),
                num(m.get("at_most")),
                if m.get("passed").and_then(|v| v.as_bool()) == Some(true) { "pass".into() } else { "FAIL".into() },
            ]
        })
        .collect();
    print!("{}", table::render(&["METRIC", "GROUP", "VALUE", "AT LEAST", "AT MOST", "RESULT"], &rows));
}

/// Prints a submitted result; exit 1 when it fails its suite.
fn report(reference: &str, r: &api::EvalResult, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_json(r)?;
    } else {
        print_metrics(r);
        if r.passed {
            println!("{reference} passes suite {}", r.suite);
        }
    }
    if !r.passed {
        let failed: Vec<String> = r
            .metrics
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m.get("passed").and_then(|v| v.as_bool()) != Some(true))
            .map(|m| m.get("message").and_then(|v| v.as_str()).unwrap_or_default().to_owned())
            .collect();
        eprintln!("error: {reference} fails suite {}: {}", r.suite, failed.join("; "));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn eval(cmd: EvalCommand) -> anyhow::Result<ExitCode> {
    let c = client()?;
    match cmd {
        EvalCommand::Suite(SuiteCommand::Put { namespace, name, file, required, json }) => {
            let definition = read_suite(&file)?;
            let s = c.put_eval_suite(&namespace, &name, &api::PutEvalSuite { definition, required }).await?;
            if json {
                print_json(&s)?;
            } else {
                let req = if s.required { " (required before production)" } else { "" };
                println!("Stored evaluation suite {}/{}{req}", s.namespace, s.name);
            }
        }
        EvalCommand::Suite(SuiteCommand::List { namespace, json }) => {
            let list = c.list_eval_suites(&namespace).await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .suites
                    .iter()
                    .map(|s| {
                        let metrics = s.definition.get("metrics").and_then(|m| m.as_array()).map_or(0, Vec::len);
                        vec![
                            s.name.clone(),
                            if s.required { "yes".into() } else { "no".into() },
                            metrics.to_string(),
                            s.updated_at.clone(),
                            s.updated_by.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&["SUITE", "REQUIRED", "METRICS", "UPDATED", "BY"], &rows));
            }
        }
        EvalCommand::Submit { reference, results, suite, config, json } => {
            let (model, version) = parse_version_ref(&reference)?;
            let config = match config {
                Some(text) => {
                    let v: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| UsageError(format!("--config is not valid JSON: {e}")))?;
                    if !v.is_object() {
                        return Err(UsageError("--config must be a JSON object".into()).into());
                    }
                    v
                }
                None => serde_json::Value::Null,
            };
            let results = read_results(&results, &input_policy()?)?;
            let r = c.submit_evaluation(&model, &version, &api::SubmitEvaluation { suite, results, config }).await?;
            return report(&reference, &r, json);
        }
        EvalCommand::Queue { reference, suite, priority, max_attempts, json } => {
            let (model, version) = parse_version_ref(&reference)?;
            let j = c.queue_eval_job(&model, &version, &api::QueueEvalJob { suite, priority, max_attempts }).await?;
            if json {
                print_json(&j)?;
            } else {
                println!("Job {} runs suite {} on {}:{} ({})", j.id, j.suite, j.model, j.version, j.state);
            }
        }
        EvalCommand::Jobs { namespace, model, state, limit, before, json } => {
            let (model, version) = match model {
                Some(m) if m.contains(':') => {
                    let (m, v) = parse_version_ref(&m)?;
                    let n =
                        v.parse::<i64>().map_err(|_| UsageError(format!("--model {m}:{v}: give a version number")))?;
                    (Some(m), Some(n))
                }
                other => (other, None),
            };
            let q = EvalJobQuery { namespace, model, version, state, limit: Some(limit), before };
            return super::eval_jobs::list(&c, q, json).await;
        }
        EvalCommand::Cancel { id, reason, json } => {
            let j = c.cancel_eval_job(&id, &api::CancelEvalJob { reason }).await?;
            if json {
                print_json(&j)?;
            } else {
                println!("Job {} is {}", j.id, j.state);
            }
        }
        EvalCommand::Worker(args) => return super::eval_jobs::worker(&c, args).await,
        EvalCommand::Run(args) => {
            let (json, reference) = (args.json, args.reference.clone());
            let r = super::eval_jobs::run(&c, args).await?;
            return report(&reference, &r, json);
        }
        EvalCommand::List { reference, json } => {
            let (model, version) = parse_version_ref(&reference)?;
            let list = c.evaluations(&model, &version).await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .results
                    .iter()
                    .map(|r| {
                        let failed = r
                            .metrics
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|m| m.get("passed").and_then(|v| v.as_bool()) != Some(true))
                            .filter_map(|m| m.get("name").and_then(|v| v.as_str()))
                            .collect::<Vec<_>>()
                            .join(",");
                        vec![
                            r.id.clone(),
                            r.suite.clone(),
                            if r.passed { "pass".into() } else { "FAIL".into() },
                            failed,
                            r.submitted_at.clone(),
                            r.submitted_by.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&["ID", "SUITE", "RESULT", "FAILED", "SUBMITTED", "BY"], &rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
