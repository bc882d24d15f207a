//! `cairn whoami` and `cairn keys …`: the caller, and API keys (create, list, rotate, revoke).

use std::process::ExitCode;

use cairn_api_types as api;
use cairn_client::KeyListOptions;
use clap::{Args, Subcommand};

use super::{UsageError, client, print_json};
use crate::{credentials, table};

/// Flags of `cairn whoami`.
#[derive(Args, Debug)]
pub struct WhoamiArgs {
    /// Print JSON for scripts
    #[arg(long)]
    json: bool,
}

/// `cairn keys`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create an API key; its token is printed once and never again
    Create {
        /// A label for the key ("ci", "laptop")
        #[arg(long)]
        name: String,
        /// Scope: read, write or admin (repeatable; at most the scopes of the key you use)
        #[arg(long = "scope", value_name = "SCOPE", required = true, value_parser = ["read", "write", "admin"])]
        scopes: Vec<String>,
        /// Restrict the key to this namespace (repeatable; default: wherever your roles reach)
        #[arg(long = "namespace", value_name = "NS")]
        namespaces: Vec<String>,
        /// Days until the key expires [default: the server's maximum, 90]
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Create the key for this service account (administrators only)
        #[arg(long = "for", value_name = "SERVICE_ACCOUNT")]
        for_account: Option<String>,
        /// Print JSON for scripts (the token included)
        #[arg(long)]
        json: bool,
    },
    /// List your API keys (never their tokens)
    List {
        /// Every account's keys (administrators)
        #[arg(long, conflicts_with = "username")]
        all: bool,
        /// This account's keys (administrators)
        #[arg(long)]
        username: Option<String>,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Replace a key by a new one with the same name, scopes and namespaces; the old one keeps
    /// working for the overlap. When it is the key this CLI uses, the new one is stored
    Rotate {
        /// The key's id (see `cairn keys list`)
        id: String,
        /// Seconds the old key keeps working (default 3600, at most 604800)
        #[arg(long)]
        overlap_secs: Option<u64>,
        /// Print JSON for scripts (the new token included)
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: it stops working at once
    Revoke {
        /// The key's id (see `cairn keys list`)
        id: String,
    },
}

/// Runs `cairn whoami`.
pub async fn whoami(args: WhoamiArgs) -> ExitCode {
    match show_whoami(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

fn roles_text(roles: &[api::RoleHeld]) -> String {
    if roles.is_empty() {
        return "(none)".into();
    }
    roles
        .iter()
        .map(|r| match &r.namespace {
            Some(ns) => format!("{} in {ns}", r.role),
            None => r.role.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn namespaces_text(ns: &[String]) -> String {
    if ns.is_empty() { "all".into() } else { ns.join(" ") }
}

async fn show_whoami(args: WhoamiArgs) -> anyhow::Result<()> {
    let c = client()?;
    let me = c.whoami().await?;
    if args.json {
        return print_json(&me);
    }
    println!("Server:      {}", c.base_url());
    println!("Account:     {} ({})", me.username, if me.kind == "service" { "service account" } else { "person" });
    println!("Roles:       {}", roles_text(&me.roles));
    match (&me.key_id, &me.session_id) {
        (Some(id), _) => {
            println!("API key:     {id}");
            println!("Scopes:      {}", me.scopes.join(" "));
            println!("Namespaces:  {}", namespaces_text(me.key_namespaces.as_deref().unwrap_or_default()));
            println!("Expires:     {}", me.key_expires_at.as_deref().unwrap_or("never"));
        }
        (None, Some(id)) => println!("Session:     {id}"),
        (None, None) => {}
    }
    let mfa = match (me.mfa_enabled, me.mfa_satisfied) {
        (true, _) => "enrolled",
        (false, true) => "not enrolled",
        (false, false) => "REQUIRED but not enrolled: only enrolment is allowed",
    };
    println!("MFA:         {mfa}");
    Ok(())
}

/// Runs `cairn keys …`.
pub async fn run(args: KeysArgs) -> ExitCode {
    match dispatch(args.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

fn print_created(k: &api::CreatedApiKey) {
    println!(
        "Created API key {} \"{}\" for {} (scopes: {}; namespaces: {}; expires {}).",
        k.id,
        k.name,
        k.username,
        k.scopes.join(" "),
        namespaces_text(&k.namespaces),
        k.expires_at.as_deref().unwrap_or("never")
    );
    println!("Its token is shown only this once; store it now:");
    println!("{}", k.token);
}

async fn dispatch(cmd: KeysCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        KeysCommand::Create { name, scopes, namespaces, expires_in_days, for_account, json } => {
            let key = c
                .create_key(&api::CreateApiKey {
                    name,
                    scopes,
                    expires_in_days,
                    username: for_account,
                    namespaces: (!namespaces.is_empty()).then_some(namespaces),
                })
                .await?;
            if json { print_json(&key)? } else { print_created(&key) }
        }
        KeysCommand::List { all, username, json } => {
            let list = c.list_keys(&KeyListOptions { username, all }).await?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .keys
                .iter()
                .map(|k| {
                    let last = match (&k.last_used_at, &k.last_used_ip) {
                        (Some(at), Some(ip)) => format!("{at} from {ip}"),
                        (Some(at), None) => at.clone(),
                        _ => "never".into(),
                    };
                    let mut status = k.status.clone();
                    if let Some(next) = &k.replaced_by {
                        status.push_str(&format!(" (replaced by {next})"));
                    }
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.username.clone(),
                        k.scopes.join(" "),
                        namespaces_text(&k.namespaces),
                        k.expires_at.clone().unwrap_or_else(|| "never".into()),
                        last,
                        status,
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &["ID", "NAME", "OWNER", "SCOPES", "NAMESPACES", "EXPIRES", "LAST USED", "STATUS"],
                    &rows
                )
            );
        }
        KeysCommand::Rotate { id, overlap_secs, json } => {
            // Asked before rotating: without overlap, the key in use stops at once.
            let current = c.whoami().await?.key_id;
            let r = c.rotate_key(&id, overlap_secs).await?;
            let in_use = current.as_deref() == Some(id.as_str());
            let stored = if in_use && !credentials::token_from_env() {
                Some(credentials::replace_token(&r.key.token)?)
            } else {
                None
            };
            if json {
                return print_json(&r);
            }
            println!(
                "Rotated API key {id}: it works until {}, then only the new key {} does.",
                r.previous.expires_at.as_deref().unwrap_or("-"),
                r.key.id
            );
            match stored {
                Some(path) => println!("The new key is the one this CLI uses now (stored in {}).", path.display()),
                None => {
                    if in_use {
                        eprintln!("note: CAIRN_TOKEN holds the old key; put the new one there");
                    }
                    print_created(&r.key);
                }
            }
        }
        KeysCommand::Revoke { id } => {
            if id.trim().is_empty() {
                anyhow::bail!(UsageError("give the id of the key to revoke".into()));
            }
            let current = c.whoami().await.ok().and_then(|me| me.key_id);
            c.revoke_key(&id).await?;
            println!("Revoked API key {id}.");
            if current.as_deref() == Some(id.as_str()) {
                eprintln!("note: that was the key this CLI uses; log in again with `cairn login`");
            }
        }
    }
    Ok(())
}
