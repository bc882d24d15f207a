//! `cairn`: the server, the command-line client and the offline card tool in one binary.
//!
//! Exit codes: 0 success; 1 a check failed or the server could not be reached; 2 a usage
//! or input error (including a request the server refused as invalid).

mod cli;
mod credentials;
mod progress;
mod prompt;
mod table;
mod tree;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::governance::LifecycleCommand;

#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    version,
    about = "A security-first registry for machine-learning models, with model cards as code",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry server (SQLite and ./cairn-data by default)
    Serve(cli::serve::ServeArgs),
    /// Store the server URL and an API key for the other commands (given, or made by logging in with a password)
    Login(cli::login::LoginArgs),
    /// Forget the stored server URL and API key
    Logout,
    /// Show who the stored credential belongs to: account, roles, key, MFA
    Whoami(cli::keys::WhoamiArgs),
    /// Your API keys: create, list, rotate, revoke
    Keys(cli::keys::KeysArgs),
    /// Models, versions, aliases and tags on a server
    Models(cli::models::ModelsArgs),
    /// Upload a directory as the next version of a model (resumable)
    Push(Box<cli::push::PushArgs>),
    /// Download a version's files into a directory (resumable, verified)
    Pull(cli::pull::PullArgs),
    /// Model cards as code: init, generate, validate, check drift, diff (offline); show, attach and diff a version's card on a server
    Card(cli::card::CardArgs),
    /// Accounts and grants; check, clean up and re-key model files (fsck, gc, rotate-key); backup, restore; check-config; maintenance mode
    Admin(cli::admin::AdminArgs),
    /// The hash-chained audit log: list, export, verify (a file or the live database), checkpoint, status
    Audit(cli::audit::AuditArgs),
    /// Check a version's signatures and that a directory (or the server's copy) holds exactly its files
    Verify(cli::verify::VerifyArgs),
    /// Scan model files for unsafe pickles, Keras Lambda layers, malformed safetensors/GGUF/ONNX, secrets and licences (a local path offline, or a version on the server)
    Scan(cli::scan::ScanArgs),
    /// Evidence bundles: export a version's signed bundle, verify one offline
    Evidence(cli::evidence::EvidenceArgs),
    /// Deployment environments and their service-level objectives: list, show, put
    Env(cli::deploy::EnvArgs),
    /// Deployment records: record, status, report (SLO), list
    Deploy(cli::deploy::DeployArgs),
    /// Roll a model back in an environment, to a given version or the one that ran before
    Rollback(cli::deploy::RollbackArgs),
    /// Lineage: what a version was made from (--up), what derives from it (--down), impact of a dataset or model; add and remove inputs
    Lineage(cli::lineage::LineageArgs),
    /// A version's software bill of materials: CycloneDX 1.6 ML-BOM (JSON) with its files, datasets, base model and licences
    Sbom(cli::scan::SbomArgs),
    /// Webhooks for lifecycle events: add, list, remove, deliveries, redeliver, ping
    Webhook(cli::webhook::WebhookArgs),
    /// Submit a draft version for review (active policies are checked first)
    Submit(cli::governance::SubmitArgs),
    /// Approve a version waiting at an approval gate, in a reviewer role you hold
    Approve(cli::governance::ReviewArgs),
    /// Request changes to a version waiting at an approval gate
    Reject(cli::governance::ReviewArgs),
    /// Comment on a version under review without deciding
    Comment(cli::governance::ReviewArgs),
    /// Promote an approved version to staging or production
    Promote(cli::governance::PromoteArgs),
    /// Withdraw a version from production
    Deprecate(cli::governance::WithdrawArgs),
    /// Retire a deprecated version
    Retire(cli::governance::WithdrawArgs),
    /// Show a version's stage, what it waits for, its history, reviews and last policy results
    Lifecycle(cli::governance::LifecycleArgs),
    /// Policies that gate lifecycle stages: apply, list, show, status, test, check
    Policy(cli::policy::PolicyArgs),
    /// Exceptions that waive a policy for one version: request, list, approve, reject, revoke
    Exception(cli::policy::ExceptionArgs),
    /// Evaluation suites and results: suite put/list, submit, list
    Eval(cli::eval::EvalArgs),
    /// Make an Ed25519 key pair to sign pushes with (`cairn push --sign-key`)
    Keygen(cli::verify::KeygenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Card(args) => cli::card::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Admin(args) => cli::admin::run(args),
        Command::Keygen(args) => cli::verify::keygen(args),
        other => {
            // Pushes, pulls and verifications hash and move bytes on several files at once.
            let rt = match &other {
                Command::Push(_) | Command::Pull(_) | Command::Verify(_) => {
                    tokio::runtime::Builder::new_multi_thread().enable_all().build()
                }
                _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
            };
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(async move {
                match other {
                    Command::Login(args) => cli::login::run(args).await,
                    Command::Logout => cli::login::logout(),
                    Command::Whoami(args) => cli::keys::whoami(args).await,
                    Command::Keys(args) => cli::keys::run(args).await,
                    Command::Models(args) => cli::models::run(args).await,
                    Command::Push(args) => cli::push::run(*args).await,
                    Command::Pull(args) => cli::pull::run(args).await,
                    Command::Audit(args) => cli::audit::run(args).await,
                    Command::Verify(args) => cli::verify::run(args).await,
                    Command::Scan(args) => cli::scan::run(args).await,
                    Command::Sbom(args) => cli::scan::sbom(args).await,
                    Command::Lineage(args) => cli::lineage::run(args).await,
                    Command::Env(args) => cli::deploy::env(args).await,
                    Command::Evidence(args) => cli::evidence::run(args).await,
                    Command::Deploy(args) => cli::deploy::deploy(args).await,
                    Command::Rollback(args) => cli::deploy::rollback(args).await,
                    Command::Webhook(args) => cli::webhook::run(args).await,
                    Command::Submit(a) => cli::governance::run(LifecycleCommand::Submit(a)).await,
                    Command::Approve(a) => cli::governance::run(LifecycleCommand::Approve(a)).await,
                    Command::Reject(a) => cli::governance::run(LifecycleCommand::Reject(a)).await,
                    Command::Comment(a) => cli::governance::run(LifecycleCommand::Comment(a)).await,
                    Command::Promote(a) => cli::governance::run(LifecycleCommand::Promote(a)).await,
                    Command::Deprecate(a) => cli::governance::run(LifecycleCommand::Deprecate(a)).await,
                    Command::Retire(a) => cli::governance::run(LifecycleCommand::Retire(a)).await,
                    Command::Lifecycle(a) => cli::governance::run(LifecycleCommand::Show(a)).await,
                    Command::Policy(args) => cli::policy::run(args).await,
                    Command::Exception(args) => cli::policy::run_exception(args).await,
                    Command::Eval(args) => cli::eval::run(args).await,
                    Command::Serve(_) | Command::Card(_) | Command::Admin(_) | Command::Keygen(_) => {
                        unreachable!("handled above")
                    }
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
