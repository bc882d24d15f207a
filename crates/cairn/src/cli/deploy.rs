//! `cairn env`, `cairn deploy` and `cairn rollback` (docs/DEPLOYMENTS.md): environments,
//! deployment records, their status and SLO reports, and rollbacks.

use std::process::ExitCode;

use cairn_api_types as api;
use cairn_client::deploy::DeploymentQuery;
use cairn_core::VersionRef;
use clap::{Args, Subcommand};

use super::UsageError;

/// Arguments of `cairn env`.
#[derive(Args, Debug)]
pub struct EnvArgs {
    #[command(subcommand)]
    command: EnvCommand,
}

#[derive(Subcommand, Debug)]
enum EnvCommand {
    /// List the environments
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one environment
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Create or replace an environment (needs environment.manage)
    Put {
        /// The name: lower-case letters, digits, '-', '_' (e.g. prod-eu)
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Only versions approved for production with a valid server signature may be deployed here
        #[arg(long)]
        production: bool,
        /// Service-level objective: highest error rate (0-1)
        #[arg(long, value_name = "RATE")]
        max_error_rate: Option<f64>,
        /// Service-level objective: highest p95 latency in ms
        #[arg(long, value_name = "MS")]
        max_latency_p95_ms: Option<f64>,
        /// Service-level objective: highest drift score
        #[arg(long, value_name = "SCORE")]
        max_drift_score: Option<f64>,
        /// Do not roll back by itself when an SLO report breaches
        #[arg(long)]
        no_auto_rollback: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `cairn deploy`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  cairn deploy record team/chat:3 --env staging\n  \
                        cairn deploy record team/chat:3 --env prod-eu --strategy canary --traffic 10 --config @deploy.json\n  \
                        cairn deploy status 42 succeeded\n  cairn deploy report 42 --error-rate 0.08\n  \
                        cairn deploy list --env prod-eu")]
pub struct DeployArgs {
    #[command(subcommand)]
    command: DeployCommand,
}

#[derive(Subcommand, Debug)]
enum DeployCommand {
    /// Record a deployment of a version to an environment (deployment tooling; needs deployment.write)
    Record {
        /// The version: namespace/name:N, namespace/name@alias or namespace/name:1.4.2
        reference: String,
        #[arg(long = "env", value_name = "ENVIRONMENT")]
        environment: String,
        /// direct, canary or blue_green
        #[arg(long, default_value = "direct")]
        strategy: String,
        /// A canary's share of the traffic (1-99)
        #[arg(long = "traffic", value_name = "PERCENT")]
        traffic_percent: Option<i64>,
        /// The configuration deployed: a JSON object, or @FILE
        #[arg(long)]
        config: Option<String>,
        /// pending (default), in_progress or succeeded
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Move a deployment on: in_progress, succeeded or failed
    Status {
        id: i64,
        status: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Report what monitoring measured; a breach of the environment's objectives rolls back
    Report {
        id: i64,
        #[arg(long)]
        error_rate: Option<f64>,
        #[arg(long)]
        latency_p95_ms: Option<f64>,
        #[arg(long)]
        drift_score: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// Deployment history, newest first
    List {
        #[arg(long = "env", value_name = "ENVIRONMENT")]
        environment: Option<String>,
        /// namespace/name
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `cairn rollback`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  cairn rollback team/chat --env prod-eu\n  cairn rollback team/chat --env prod-eu --to 7 --reason \"latency regression\""
)]
pub struct RollbackArgs {
    /// namespace/name
    model: String,
    #[arg(long = "env", value_name = "ENVIRONMENT")]
    environment: String,
    /// The version to go back to (default: the one that ran before)
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    /// Why (recorded and sent to the deployment tool's webhook)
    #[arg(long, default_value = "rolled back by hand with cairn rollback")]
    reason: String,
    #[arg(long)]
    json: bool,
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints `v` as JSON, or `text` for people.
fn show<T: serde::Serialize>(json: bool, v: &T, text: String) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    println!("{text}");
    Ok(())
}

fn line(d: &api::Deployment) -> String {
    let mut s = format!("#{} {}:{} in {} ({}", d.id, d.model, d.version, d.environment, d.strategy);
    if d.strategy == "canary" {
        s.push_str(&format!(" {}%", d.traffic_percent));
    }
    s.push_str(&format!("): {}", d.status));
    if let Some(r) = d.rollback_of {
        s.push_str(&format!(", rolls back #{r}"));
    }
    if !d.reason.is_empty() {
        s.push_str(&format!(" — {}", d.reason));
    }
    s
}

/// Runs `cairn env`.
pub async fn env(args: EnvArgs) -> ExitCode {
    let run = async {
        let client = super::client()?;
        match args.command {
            EnvCommand::List { json } => {
                let list = client.environments().await?;
                if json {
                    return print_json(&list);
                }
                let rows: Vec<Vec<String>> = list
                    .environments
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.clone(),
                            if e.production { "yes".into() } else { "no".into() },
                            serde_json::to_string(&e.slo).unwrap_or_default(),
                            if e.auto_rollback { "on".into() } else { "off".into() },
                        ]
                    })
                    .collect();
                print!("{}", crate::table::render(&["NAME", "PRODUCTION", "SLO", "AUTO-ROLLBACK"], &rows));
                Ok(())
            }
            EnvCommand::Show { name, json } => {
                let e = client.environment(&name).await?;
                if json {
                    print_json(&e)
                } else {
                    println!("{}{}", e.name, if e.production { " (production)" } else { "" });
                    println!("  slo: {}", serde_json::to_string(&e.slo)?);
                    println!("  auto-rollback: {}", if e.auto_rollback { "on" } else { "off" });
                    Ok(())
                }
            }
            EnvCommand::Put {
                name,
                description,
                production,
                max_error_rate,
                max_latency_p95_ms,
                max_drift_score,
                no_auto_rollback,
                json,
            } => {
                let req = api::PutEnvironment {
                    description,
                    production,
                    slo: api::SloThresholds { max_error_rate, max_latency_p95_ms, max_drift_score },
                    auto_rollback: !no_auto_rollback,
                };
                let e = client.put_environment(&name, &req).await?;
                show(json, &e, format!("Environment {} saved", e.name))
            }
        }
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

/// Runs `cairn deploy`.
pub async fn deploy(args: DeployArgs) -> ExitCode {
    let run = async {
        match args.command {
            DeployCommand::Record { reference, environment, strategy, traffic_percent, config, status, json } => {
                let r = VersionRef::parse(&reference).map_err(|e| UsageError(e.to_string()))?;
                let config = super::parse_metadata(config.as_deref())?;
                let version = r.selector.to_string();
                let req = api::RecordDeployment {
                    model: r.model.to_string(),
                    version,
                    strategy: Some(strategy),
                    traffic_percent,
                    config,
                    status,
                };
                let d = super::client()?.record_deployment(&environment, &req).await?;
                show(json, &d, format!("Recorded {}", line(&d)))
            }
            DeployCommand::Status { id, status, reason, json } => {
                let d = super::client()?.set_deployment_status(id, &api::DeploymentStatus { status, reason }).await?;
                show(json, &d, line(&d))
            }
            DeployCommand::Report { id, error_rate, latency_p95_ms, drift_score, json } => {
                let out = super::client()?
                    .report_slo(id, &api::SloReport { error_rate, latency_p95_ms, drift_score })
                    .await?;
                if json {
                    return print_json(&out);
                }
                if out.breaches.is_empty() {
                    println!("Report {} recorded: within the objectives", out.report_id);
                } else {
                    println!("Report {} recorded: objectives breached ({})", out.report_id, out.breaches.join(", "));
                }
                if let Some(r) = &out.rollback {
                    println!("Rolled back: {}", line(r));
                }
                if let Some(why) = &out.not_rolled_back {
                    println!("Not rolled back: {why}");
                }
                Ok(())
            }
            DeployCommand::List { environment, model, limit, json } => {
                let q = DeploymentQuery { environment, model, limit: Some(limit), before: None };
                let list = super::client()?.deployments(&q).await?;
                if json {
                    return print_json(&list);
                }
                for d in &list.deployments {
                    println!("{}  {}", d.created_at, line(d));
                }
                Ok(())
            }
        }
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

/// Runs `cairn rollback`.
pub async fn rollback(args: RollbackArgs) -> ExitCode {
    let run = async {
        let req = api::Rollback { model: args.model, to: args.to, reason: args.reason };
        let d = super::client()?.rollback(&args.environment, &req).await?;
        show(args.json, &d, format!("Rolling back: {}", line(&d)))
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
