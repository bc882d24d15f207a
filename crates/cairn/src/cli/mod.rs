//! The subcommands.

pub mod admin;
pub mod audit;
pub mod card;
pub mod deploy;
pub mod eval;
pub mod eval_jobs;
pub mod evidence;
pub mod gdpr;
pub mod governance;
pub mod keys;
pub mod lineage;
pub mod login;
pub mod models;
pub mod ops;
pub mod policy;
pub mod pull;
pub mod push;
pub mod scan;
pub mod serve;
pub mod users;
pub mod verify;
pub mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use cairn_client::{Client, ClientError};

use crate::credentials;

/// Input the user can fix (a bad reference, a directory that cannot be pushed): exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Prints an error and picks the exit code: 2 when the input was refused (by us or by the
/// server), 1 otherwise.
pub fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    if e.downcast_ref::<UsageError>().is_some() {
        return ExitCode::from(2);
    }
    match e.downcast_ref::<ClientError>().and_then(ClientError::status) {
        Some(s) if (400..500).contains(&s) && s != 401 && s != 403 => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// A usage error (exit 2).
pub fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// A client for the configured server (`CAIRN_URL`/`CAIRN_TOKEN`, else `cairn login`). A
/// warning the server sends about the key (it expires soon) is printed once on stderr.
pub fn client() -> anyhow::Result<Client> {
    let (url, token) = credentials::resolve()?;
    Ok(Client::new(&url, token)?.with_warning_handler(Arc::new(print_warning)))
}

/// Prints a `Warning` header's text (`299 cairn "…"`) on stderr, once per run.
pub fn print_warning(header: &str) {
    static SHOWN: AtomicBool = AtomicBool::new(false);
    if SHOWN.swap(true, Ordering::Relaxed) {
        return;
    }
    let text = header.split_once('"').map_or(header, |(_, rest)| rest.trim_end_matches('"'));
    eprintln!("warning: {text}");
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `KEY=VALUE` pairs.
pub fn parse_tags(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!(UsageError(format!("tag {p:?} must be written KEY=VALUE")));
        };
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// `--metadata`: a JSON object, or `@FILE` holding one; absent is `null`.
pub fn parse_metadata(arg: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let Some(m) = arg else { return Ok(serde_json::Value::Null) };
    let text = match m.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?,
        None => m.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| UsageError(format!("--metadata is not valid JSON: {e}")).into())
}
