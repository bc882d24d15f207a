//! `cairn policy …` (apply, list, show, status, test, check) and `cairn exception …`
//! (request, list, approve, reject, revoke): the policies that gate lifecycle stages
//! (docs/POLICIES.md) and the exceptions that waive one for one version.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_api_types as api;
use cairn_client::Client;
use clap::{Args, Subcommand, ValueEnum};

use super::governance::{fail, parse_version_ref, print_policy_results, read_limited};
use super::{client, print_json};
use crate::table;

/// The largest policy document read (the server refuses larger ones too).
const MAX_POLICY_BYTES: u64 = 256 * 1024;

/// A policy version's status.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PolicyStatus {
    /// Stored, not evaluated
    Draft,
    /// Evaluated on every transition it is scoped to (deactivates the policy's other versions)
    Active,
    /// Kept for the record, not evaluated
    Inactive,
}

impl PolicyStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }
}

/// `cairn policy`.
#[derive(Args, Debug)]
#[command(after_help = "Exit codes: 0 ok (for test and check: nothing blocks); 1 a dry run would block, or the \
                        server could not be reached; 2 a usage error or a document the server refused.")]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Store a policy document (YAML or JSON, at most 256 KiB): a changed document becomes a
    /// new version, the same document only changes status
    Apply {
        /// The policy document
        file: PathBuf,
        /// Status of the version (default active)
        #[arg(long, value_enum)]
        status: Option<PolicyStatus>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List policies (the latest version of each)
    List {
        /// Only this status
        #[arg(long, value_enum)]
        status: Option<PolicyStatus>,
        /// Every version, not only the latest
        #[arg(long)]
        all_versions: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show a policy and its source
    #[command(disable_version_flag = true)]
    Show {
        /// Policy name
        name: String,
        /// A version (default the latest)
        #[arg(long)]
        version: Option<i64>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Set the status of a policy version
    #[command(disable_version_flag = true)]
    Status {
        /// Policy name
        name: String,
        /// Policy version
        version: i64,
        /// New status
        #[arg(value_enum)]
        status: PolicyStatus,
    },
    /// Dry run of a policy document against a version (nothing is stored); exit 1 when it
    /// would block
    #[command(disable_version_flag = true)]
    Test {
        /// The policy document
        file: PathBuf,
        /// namespace/name:VERSION to evaluate it against
        #[arg(long = "version", value_name = "MODEL:VERSION")]
        reference: String,
        /// The stage to check entry to (default: where the version's next action leads)
        #[arg(long, value_name = "STAGE")]
        target: Option<String>,
        /// Print JSON (with the facts the rules saw)
        #[arg(long)]
        json: bool,
    },
    /// Dry run of the active policies against a version; exit 1 when they would block
    Check {
        /// namespace/name:VERSION
        #[arg(value_name = "MODEL:VERSION")]
        reference: String,
        /// The stage to check entry to (default: where the version's next action leads)
        #[arg(long, value_name = "STAGE")]
        target: Option<String>,
        /// Print JSON (with the facts the rules saw)
        #[arg(long)]
        json: bool,
    },
}

/// Runs `cairn policy …`.
pub async fn run(args: PolicyArgs) -> ExitCode {
    match policy(args.command).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn print_policy_rows(policies: &[api::Policy]) {
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.version.to_string(),
                p.status.clone(),
                p.severity.clone(),
                p.updated_at.clone(),
                p.updated_by.clone(),
            ]
        })
        .collect();
    print!("{}", table::render(&["NAME", "VERSION", "STATUS", "SEVERITY", "UPDATED", "BY"], &rows));
}

async fn policy(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let c = client()?;
    match cmd {
        PolicyCommand::Apply { file, status, json } => {
            let source = read_limited(&file, MAX_POLICY_BYTES, "policy document")?;
            let p = c.apply_policy(&api::ApplyPolicy { source, status: status.map(|s| s.as_str().to_owned()) }).await?;
            if json {
                print_json(&p)?;
            } else if p.created == Some(false) {
                println!("Policy {} version {} is unchanged ({})", p.name, p.version, p.status);
            } else {
                println!("Applied policy {} as version {} ({})", p.name, p.version, p.status);
            }
        }
        PolicyCommand::List { status, all_versions, json } => {
            let list = c.list_policies(status.map(PolicyStatus::as_str), all_versions).await?;
            if json { print_json(&list)? } else { print_policy_rows(&list.policies) }
        }
        PolicyCommand::Show { name, version, json } => {
            let p = c.get_policy(&name, version).await?;
            if json {
                print_json(&p)?;
            } else {
                println!("Policy:   {} version {}", p.name, p.version);
                println!("Status:   {} (by {} at {})", p.status, p.updated_by, p.updated_at);
                println!("Severity: {}", p.severity);
                println!("Digest:   {}", p.digest);
                println!("Created:  {} by {}", p.created_at, p.created_by);
                println!();
                println!("{}", p.source.trim_end());
            }
        }
        PolicyCommand::Status { name, version, status } => {
            let p = c.set_policy_status(&name, version, status.as_str()).await?;
            println!("Policy {} version {} is {}", p.name, p.version, p.status);
        }
        PolicyCommand::Test { file, reference, target, json } => {
            let source = read_limited(&file, MAX_POLICY_BYTES, "policy document")?;
            return check(&c, &reference, api::PolicyCheckRequest { target, policy: Some(source) }, json).await;
        }
        PolicyCommand::Check { reference, target, json } => {
            return check(&c, &reference, api::PolicyCheckRequest { target, policy: None }, json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn check(c: &Client, reference: &str, req: api::PolicyCheckRequest, json: bool) -> anyhow::Result<ExitCode> {
    let (model, version) = parse_version_ref(reference)?;
    let r = c.policy_check(&model, &version, &req).await?;
    if json {
        print_json(&r)?;
    } else {
        if r.results.is_empty() {
            println!("No policy applies to {reference} entering {}", r.target);
        } else {
            print_policy_results(&r.results);
        }
        for b in &r.gate_blockers {
            println!("blocker: {b}");
        }
        if r.blocked {
            println!("{reference} would be BLOCKED from entering {}", r.target);
        } else {
            println!("{reference} may enter {}", r.target);
        }
    }
    Ok(if r.blocked { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `cairn exception`.
#[derive(Args, Debug)]
pub struct ExceptionArgs {
    #[command(subcommand)]
    command: ExceptionCommand,
}

#[derive(Subcommand, Debug)]
enum ExceptionCommand {
    /// Ask for one policy to be waived for a version; it counts once someone else with
    /// policy.manage approves it
    Request {
        /// namespace/name:VERSION
        #[arg(value_name = "MODEL:VERSION")]
        reference: String,
        /// The policy to waive
        #[arg(long)]
        policy: String,
        /// Why (10–4000 characters)
        #[arg(long)]
        justification: String,
        /// How long it lasts, in days (1–365, default 30)
        #[arg(long)]
        days: Option<u32>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// A version's exceptions, or without a version the ones waiting for a decision
    List {
        /// namespace/name:VERSION
        #[arg(value_name = "MODEL:VERSION")]
        reference: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Approve an exception (not your own)
    Approve(DecideArgs),
    /// Reject an exception
    Reject(DecideArgs),
    /// Revoke an approved exception
    Revoke(DecideArgs),
}

#[derive(Args, Debug)]
struct DecideArgs {
    /// The exception's id
    id: String,
    /// A note kept with the decision
    #[arg(long, default_value = "")]
    note: String,
}

/// Runs `cairn exception …`.
pub async fn run_exception(args: ExceptionArgs) -> ExitCode {
    match exception(args.command).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

async fn exception(cmd: ExceptionCommand) -> anyhow::Result<ExitCode> {
    let c = client()?;
    let decide = |status: &'static str, a: DecideArgs| {
        let c = c.clone();
        async move {
            let e =
                c.decide_exception(&a.id, &api::DecideException { status: status.to_owned(), note: a.note }).await?;
            println!("Exception {} ({} on {}:{}) is {}", e.id, e.policy, e.model, e.version, e.status);
            anyhow::Ok(ExitCode::SUCCESS)
        }
    };
    match cmd {
        ExceptionCommand::Request { reference, policy, justification, days, json } => {
            let (model, version) = parse_version_ref(&reference)?;
            let e =
                c.request_exception(&model, &version, &api::RequestException { policy, justification, days }).await?;
            if json {
                print_json(&e)?;
            } else {
                println!(
                    "Requested exception {} from {} for {}:{} (until {})",
                    e.id, e.policy, e.model, e.version, e.expires_at
                );
                println!("It counts once someone else with policy.manage runs `cairn exception approve {}`", e.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        ExceptionCommand::List { reference, json } => {
            let list = match reference {
                Some(r) => {
                    let (model, version) = parse_version_ref(&r)?;
                    c.version_exceptions(&model, &version).await?
                }
                None => c.pending_exceptions().await?,
            };
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .exceptions
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.clone(),
                            format!("{}:{}", e.model, e.version),
                            e.policy.clone(),
                            e.status.clone(),
                            e.requested_by.clone(),
                            e.expires_at.clone(),
                            e.justification.chars().take(60).collect(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(
                        &["ID", "VERSION", "POLICY", "STATUS", "REQUESTED BY", "EXPIRES", "JUSTIFICATION"],
                        &rows
                    )
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ExceptionCommand::Approve(a) => decide("approved", a).await,
        ExceptionCommand::Reject(a) => decide("rejected", a).await,
        ExceptionCommand::Revoke(a) => decide("revoked", a).await,
    }
}
