//! `cairn submit|approve|reject|comment|promote|deprecate|retire|lifecycle`: moving a version
//! through its lifecycle and reviewing it (docs/GOVERNANCE.md), and the helpers the other
//! governance commands (`policy`, `exception`, `eval`, `card` on a server) share.
//!
//! Exit codes: 0 done; 1 refused by a policy (`policy_blocked`), not permitted, or the server
//! could not be reached; 2 a usage error or a request the server refused as invalid (an
//! illegal transition, a missing reason, an unknown version …).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_api_types as api;
use cairn_client::{Client, ClientError, LifecycleAction};
use clap::{Args, ValueEnum};

use super::{UsageError, client, print_json};
use crate::table;

/// Help shown under every lifecycle command.
const EXIT_CODES: &str = "Exit codes: 0 done; 1 blocked by a policy (the blocking rules are printed), not permitted, \
                          or the server could not be reached; 2 a usage error or a request the server refused (an \
                          illegal transition, a missing reason, an unknown version).";

/// A reviewer role.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    /// Model risk committee
    Mrc,
    /// Security
    Security,
    /// Site reliability engineering
    Sre,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Mrc => "mrc",
            Self::Security => "security",
            Self::Sre => "sre",
        }
    }
}

/// `cairn submit`.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct SubmitArgs {
    /// namespace/name:VERSION (a number, @alias or semver label)
    #[arg(value_name = "MODEL:VERSION")]
    reference: String,
    /// Why (recorded with the transition)
    #[arg(long, default_value = "")]
    reason: String,
    /// Print the lifecycle as JSON
    #[arg(long)]
    json: bool,
}

/// `cairn approve|reject|comment`.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct ReviewArgs {
    /// namespace/name:VERSION (a number, @alias or semver label)
    #[arg(value_name = "MODEL:VERSION")]
    reference: String,
    /// The reviewer role you act in (you must hold it in the model's namespace or globally)
    #[arg(long = "as", value_enum, value_name = "ROLE")]
    role: Role,
    /// Rationale (required)
    #[arg(long, short = 'm', value_name = "TEXT")]
    message: String,
    /// Print the lifecycle as JSON
    #[arg(long)]
    json: bool,
}

/// `cairn promote`.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct PromoteArgs {
    /// namespace/name:VERSION (a number, @alias or semver label)
    #[arg(value_name = "MODEL:VERSION")]
    reference: String,
    /// Why (recorded with the transition)
    #[arg(long, default_value = "")]
    reason: String,
    /// On promotion to production, keep the version it replaces in production instead of
    /// deprecating it
    #[arg(long)]
    keep_previous: bool,
    /// Print the lifecycle as JSON
    #[arg(long)]
    json: bool,
}

/// `cairn deprecate|retire`.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct WithdrawArgs {
    /// namespace/name:VERSION (a number, @alias or semver label)
    #[arg(value_name = "MODEL:VERSION")]
    reference: String,
    /// Why (required)
    #[arg(long)]
    reason: String,
    /// Print the lifecycle as JSON
    #[arg(long)]
    json: bool,
}

/// `cairn lifecycle`.
#[derive(Args, Debug)]
pub struct LifecycleArgs {
    /// namespace/name:VERSION (a number, @alias or semver label)
    #[arg(value_name = "MODEL:VERSION")]
    reference: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// What a lifecycle command asks for.
#[derive(Debug)]
pub enum LifecycleCommand {
    /// `cairn submit`.
    Submit(SubmitArgs),
    /// `cairn approve`.
    Approve(ReviewArgs),
    /// `cairn reject`.
    Reject(ReviewArgs),
    /// `cairn comment`.
    Comment(ReviewArgs),
    /// `cairn promote`.
    Promote(PromoteArgs),
    /// `cairn deprecate`.
    Deprecate(WithdrawArgs),
    /// `cairn retire`.
    Retire(WithdrawArgs),
    /// `cairn lifecycle`.
    Show(LifecycleArgs),
}

/// Runs a lifecycle command.
pub async fn run(cmd: LifecycleCommand) -> ExitCode {
    match run_inner(cmd).await {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

async fn run_inner(cmd: LifecycleCommand) -> anyhow::Result<ExitCode> {
    let c = client()?;
    let act = |a: LifecycleAction, reference: String, reason: String, keep_previous: bool, json: bool| {
        let c = c.clone();
        async move {
            let (model, version) = parse_version_ref(&reference)?;
            let req = api::LifecycleRequest { reason, keep_previous };
            let l = c.lifecycle_action(&model, &version, a, &req).await?;
            if json {
                print_json(&l)?;
            } else {
                println!("{}:{} is now {}", l.model, l.version, l.stage);
                print_waiting(&l);
            }
            anyhow::Ok(ExitCode::SUCCESS)
        }
    };
    match cmd {
        LifecycleCommand::Submit(a) => act(LifecycleAction::Submit, a.reference, a.reason, false, a.json).await,
        LifecycleCommand::Promote(a) => {
            act(LifecycleAction::Promote, a.reference, a.reason, a.keep_previous, a.json).await
        }
        LifecycleCommand::Deprecate(a) => act(LifecycleAction::Deprecate, a.reference, a.reason, false, a.json).await,
        LifecycleCommand::Retire(a) => act(LifecycleAction::Retire, a.reference, a.reason, false, a.json).await,
        LifecycleCommand::Approve(a) => review(&c, "approve", a).await,
        LifecycleCommand::Reject(a) => review(&c, "reject", a).await,
        LifecycleCommand::Comment(a) => review(&c, "comment", a).await,
        LifecycleCommand::Show(a) => {
            let (model, version) = parse_version_ref(&a.reference)?;
            let l = c.lifecycle(&model, &version).await?;
            if a.json {
                print_json(&l)?
            } else {
                print_lifecycle(&l)
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn review(c: &Client, decision: &str, a: ReviewArgs) -> anyhow::Result<ExitCode> {
    let (model, version) = parse_version_ref(&a.reference)?;
    if a.message.trim().is_empty() {
        return Err(UsageError("give a rationale with -m".into()).into());
    }
    let req =
        api::ReviewRequest { decision: decision.to_owned(), role: a.role.as_str().to_owned(), rationale: a.message };
    let l = c.review(&model, &version, &req).await?;
    if a.json {
        print_json(&l)?;
    } else {
        let done = match decision {
            "approve" => "Approved",
            "reject" => "Requested changes to",
            _ => "Commented on",
        };
        println!("{done} {}:{} as {}; it is now {}", l.model, l.version, a.role.as_str(), l.stage);
        print_waiting(&l);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_waiting(l: &api::Lifecycle) {
    if let Some(w) = &l.waiting_for {
        match &l.gate {
            Some(g) => println!("Waiting at the {g} gate for: {w}"),
            None => println!("Waiting for: {w}"),
        }
    }
    if !l.next_actions.is_empty() {
        println!("Next: {}", l.next_actions.join(", "));
    }
}

fn print_lifecycle(l: &api::Lifecycle) {
    println!("Version:     {}:{}", l.model, l.version);
    println!("Stage:       {}", l.stage);
    println!("Risk tier:   {}", l.risk_tier);
    if !l.submitted_by.is_empty() {
        println!("Submitted:   by {} (review round {})", l.submitted_by, l.review_round);
    }
    if let Some(g) = &l.gate {
        println!("Gate:        {g}");
    }
    if let Some(w) = &l.waiting_for {
        println!("Waiting for: {w}");
    }
    let next = if l.next_actions.is_empty() { "none".to_owned() } else { l.next_actions.join(", ") };
    println!("Next:        {next}");
    println!();
    println!("History:");
    if l.transitions.is_empty() {
        println!("  (no transitions yet)");
    } else {
        let rows: Vec<Vec<String>> = l
            .transitions
            .iter()
            .map(|t| {
                vec![t.at.clone(), t.from.clone(), t.to.clone(), t.action.clone(), t.actor.clone(), t.reason.clone()]
            })
            .collect();
        print!("{}", table::render(&["AT", "FROM", "TO", "ACTION", "BY", "REASON"], &rows));
    }
    if !l.reviews.is_empty() {
        println!();
        println!("Reviews:");
        let rows: Vec<Vec<String>> = l
            .reviews
            .iter()
            .map(|r| {
                vec![
                    r.round.to_string(),
                    r.gate.clone(),
                    r.reviewer.clone(),
                    r.role.clone(),
                    r.decision.clone(),
                    r.rationale.clone(),
                    r.at.clone(),
                ]
            })
            .collect();
        print!("{}", table::render(&["ROUND", "GATE", "REVIEWER", "ROLE", "DECISION", "RATIONALE", "AT"], &rows));
    }
    if !l.policy_results.is_empty() {
        println!();
        println!("Last policy evaluation (entering {}):", l.policy_results[0].target_stage);
        print_policy_results(&l.policy_results);
    }
}

/// A table of rule results.
pub fn print_policy_results(results: &[api::PolicyResult]) {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let outcome = if r.waived {
                format!("{} (waived)", r.outcome)
            } else if r.blocked {
                format!("{} (blocks)", r.outcome)
            } else {
                r.outcome.clone()
            };
            vec![
                format!("{} v{}", r.policy, r.policy_version),
                r.rule_id.clone(),
                r.severity.clone(),
                r.action.clone(),
                outcome,
                r.message.clone(),
            ]
        })
        .collect();
    print!("{}", table::render(&["POLICY", "RULE", "SEVERITY", "ACTION", "OUTCOME", "MESSAGE"], &rows));
}

/// Prints an error of a governance command and picks the exit code: 1 when a policy blocked
/// the request (the server's message names the rules), otherwise as [`super::fail`].
pub fn fail(e: &anyhow::Error) -> ExitCode {
    if let Some(ClientError::Api { code, message, .. }) = e.downcast_ref::<ClientError>()
        && code == "policy_blocked"
    {
        eprintln!("error: {message}");
        eprintln!(
            "hint: `cairn policy check` shows every rule's result; `cairn exception request` asks for a policy to be waived"
        );
        return ExitCode::from(1);
    }
    super::fail(e)
}

/// `ns/name:VERSION` (a number, `@alias` or a semver label) or `ns/name@alias` →
/// (`ns/name`, `VERSION`).
pub fn parse_version_ref(s: &str) -> Result<(String, String), UsageError> {
    let bad = || {
        UsageError(format!(
            "{s:?} must be written namespace/name:VERSION (a number, @alias or semver label such as 1.4.2) or \
             namespace/name@ALIAS"
        ))
    };
    let (model, version) = if let Some((m, v)) = s.split_once(':') {
        (m, v.to_owned())
    } else if let Some((m, a)) = s.split_once('@') {
        (m, format!("@{a}"))
    } else {
        return Err(bad());
    };
    let version_ok = !version.is_empty()
        && version != "@"
        && !version.contains(['/', ':', ' '])
        && version.bytes().all(|b| b.is_ascii_graphic());
    match model.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') && version_ok => {
            Ok((model.to_owned(), version))
        }
        _ => Err(bad()),
    }
}

/// Reads a small text file (a policy document, a suite definition), refusing one larger
/// than `limit` bytes without reading all of it.
pub fn read_limited(path: &Path, limit: u64, what: &str) -> anyhow::Result<String> {
    let file = std::fs::File::open(path).map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > limit {
        return Err(UsageError(format!(
            "{} is larger than {} KiB, the most a {what} may be",
            path.display(),
            limit / 1024
        ))
        .into());
    }
    Ok(text)
}

/// The file policy the `cairn card` commands read inputs under (`CAIRN_CARD_MAX_INPUT_SIZE`,
/// default 10 MB).
pub fn input_policy() -> anyhow::Result<cairn_card::input::InputPolicy> {
    let mut policy = cairn_card::input::InputPolicy::default();
    if let Ok(size) = std::env::var("CAIRN_CARD_MAX_INPUT_SIZE") {
        policy.max_bytes =
            cairn_card::cli::parse_size(&size).map_err(|e| UsageError(format!("CAIRN_CARD_MAX_INPUT_SIZE: {e}")))?;
    }
    Ok(policy)
}

/// Reads evaluation results (`.json`, `.yaml`/`.yml`, `.csv`) into the records the server
/// takes: `[{name, value, dataset?, split?, slice?}]`.
pub fn read_results(path: &Path, policy: &cairn_card::input::InputPolicy) -> anyhow::Result<serde_json::Value> {
    let card = cairn_card::input::read_results(path, policy).map_err(|e| UsageError(e.to_string()))?;
    let records: Vec<serde_json::Value> = card
        .evaluation
        .metrics
        .iter()
        .map(|m| {
            let mut r = serde_json::json!({"name": m.name, "value": m.value});
            for (k, v) in [("dataset", &m.dataset), ("split", &m.split), ("slice", &m.slice)] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    r[k] = serde_json::Value::String(v.to_owned());
                }
            }
            r
        })
        .collect();
    Ok(serde_json::Value::Array(records))
}

/// Reads a card file and checks that it parses, before anything is sent.
pub fn load_card(path: &Path, policy: &cairn_card::input::InputPolicy) -> anyhow::Result<api::PutCard> {
    // The server takes at most 1 MiB of card source.
    let policy = cairn_card::input::InputPolicy { max_bytes: policy.max_bytes.min(1024 * 1024) };
    let loaded = cairn_card::load::load_card(path, &policy)
        .map_err(|e| UsageError(format!("the card {} is not valid: {e}", path.display())))?;
    let source_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no file name", path.display()))?;
    let source = loaded.raw_text.with_context(|| format!("{}: the card's text was not kept", path.display()))?;
    Ok(api::PutCard { source_name, source, results: None })
}

/// Reads several results files into one list of records (the server merges them into the
/// card; on the same metric, dataset, split and slice a later file wins).
pub fn merge_results(
    files: &[std::path::PathBuf],
    policy: &cairn_card::input::InputPolicy,
) -> anyhow::Result<Option<serde_json::Value>> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut all = Vec::new();
    for f in files {
        if let serde_json::Value::Array(records) = read_results(f, policy)? {
            all.extend(records);
        }
    }
    Ok(Some(serde_json::Value::Array(all)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_references() {
        let ok = |s: &str| parse_version_ref(s).map_err(|e| e.0);
        assert_eq!(ok("a/b:3").unwrap(), ("a/b".into(), "3".into()));
        assert_eq!(ok("a/b:1.4.2").unwrap(), ("a/b".into(), "1.4.2".into()));
        assert_eq!(ok("a/b:@prod").unwrap(), ("a/b".into(), "@prod".into()));
        assert_eq!(ok("a/b@prod").unwrap(), ("a/b".into(), "@prod".into()));
        for bad in ["a/b", "a/b:", "a/b@", "b:3", "/b:3", "a/b/c:3", "a/b:1/2", "a/b:1 2"] {
            assert!(ok(bad).is_err(), "{bad}");
        }
    }
}
