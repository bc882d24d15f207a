//! `cairn login` and `cairn logout`.
//!
//! `cairn login` stores the server URL and an API key (mode 0600). The key is given (flag,
//! stdin, `CAIRN_TOKEN`), or — with `--password` — made for this CLI: log in with the
//! password (and a TOTP code when the account has MFA), create a key with the session, and
//! end the session again. The password is read from a prompt without echo or from stdin,
//! never from a flag.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cairn_api_types as api;
use cairn_client::Client;
use clap::Args;

use super::UsageError;
use crate::credentials::{self, Credentials};
use crate::prompt;

/// Flags of `cairn login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Server URL [default: $CAIRN_URL, else http://127.0.0.1:8080]
    #[arg(long)]
    url: Option<String>,
    /// API key (prefer --token-stdin or the prompt: flags end up in shell history)
    #[arg(long, conflicts_with_all = ["token_stdin", "password"])]
    token: Option<String>,
    /// Read the API key from standard input
    #[arg(long, conflicts_with = "password")]
    token_stdin: bool,
    /// Log in with your password (and a TOTP code if you use MFA); a new API key for this CLI
    /// is created and stored
    #[arg(long)]
    password: bool,
    /// With --password: the account [default: asked]
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// With --password: read the password from the first line of standard input (and a TOTP
    /// code, when needed, from the second)
    #[arg(long, requires = "password")]
    password_stdin: bool,
    /// With --password: days until the new key expires [default: the server's maximum, 90]
    #[arg(long, requires = "password")]
    expires_in_days: Option<u32>,
}

/// Verifies the key against the server, then stores URL and key (mode 0600).
pub async fn run(args: LoginArgs) -> ExitCode {
    match login(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let url = args
        .url
        .clone()
        .or_else(|| std::env::var("CAIRN_URL").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    if args.password {
        return login_with_password(&url, &args).await;
    }
    let token = if let Some(t) = args.token {
        t
    } else if args.token_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the API key from stdin")?;
        line.trim().to_owned()
    } else if let Ok(t) = std::env::var("CAIRN_TOKEN") {
        t
    } else {
        anyhow::bail!(
            "give the API key with --token-stdin (e.g. `echo $KEY | cairn login --token-stdin`), CAIRN_TOKEN or --token, or log in with --password"
        );
    };
    if token.is_empty() {
        anyhow::bail!("the API key is empty");
    }
    let client =
        Client::new(&url, Some(token.clone()))?.with_warning_handler(std::sync::Arc::new(super::print_warning));
    let me = client.whoami().await?;
    let path = credentials::save(&Credentials { url: Some(url.clone()), token: Some(token) })?;
    println!("Logged in to {url} as {} (scopes: {}).", me.username, me.scopes.join(" "));
    println!("Credentials saved to {} (readable only by you).", path.display());
    Ok(())
}

/// The name of the key `cairn login --password` creates: `cairn-cli@<host>`.
fn key_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).take(60).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "this-machine".into());
    format!("cairn-cli@{host}")
}

async fn login_with_password(url: &str, args: &LoginArgs) -> anyhow::Result<()> {
    let username = match &args.username {
        Some(u) => u.clone(),
        None if args.password_stdin => bail!(UsageError("with --password-stdin, give --username".into())),
        None => prompt::visible("Username: ")?,
    };
    let password =
        if args.password_stdin { prompt::stdin_line("the password")? } else { prompt::secret("Password: ")? };
    let anonymous = Client::new(url, None)?;
    let (mut session, mut info) = anonymous.login_password(&username, &password, None).await.map_err(|e| {
        if e.code() == Some("locked") {
            anyhow::Error::new(e).context("too many failed attempts")
        } else {
            anyhow::Error::new(e)
        }
    })?;
    if info.needs_code() {
        let code = if args.password_stdin {
            prompt::stdin_line("the TOTP code")?
        } else {
            prompt::visible("Code from your authenticator app: ")?
        };
        let verified = session.verify_mfa(code.trim()).await;
        match verified {
            Ok((s, i)) => (session, info) = (s, i),
            Err(e) => {
                let _ = session.logout_session().await;
                return Err(e.into());
            }
        }
    }
    let outcome = make_key(&session, &info, args.expires_in_days).await;
    // The session was only needed to make the key.
    if let Err(e) = session.logout_session().await {
        eprintln!("warning: could not end the login session: {e}");
    }
    let key = outcome?;
    let path = credentials::save(&Credentials { url: Some(url.to_owned()), token: Some(key.token.clone()) })?;
    println!(
        "Logged in to {url} as {} with a new API key {} \"{}\" (scopes: {}; expires {}).",
        info.username,
        key.id,
        key.name,
        key.scopes.join(" "),
        key.expires_at.as_deref().unwrap_or("never")
    );
    println!("Credentials saved to {} (readable only by you).", path.display());
    Ok(())
}

async fn make_key(
    session: &Client,
    info: &cairn_client::PasswordLogin,
    expires_in_days: Option<u32>,
) -> anyhow::Result<api::CreatedApiKey> {
    if info.mfa_required && !info.mfa_enrolled {
        bail!(
            "'{}' must enrol in multi-factor authentication before using the CLI: enrol in the web UI (or at /api/v1/me/mfa/totp), then log in again",
            info.username
        );
    }
    // Read and write; admin only for those who hold the admin role.
    let me = session.whoami().await?;
    let mut scopes = vec!["read".to_owned(), "write".to_owned()];
    if me.is_admin {
        scopes.push("admin".into());
    }
    Ok(session
        .create_key(&api::CreateApiKey { name: key_name(), scopes, expires_in_days, ..Default::default() })
        .await?)
}

/// Removes the stored credentials.
pub fn logout() -> ExitCode {
    match credentials::remove() {
        Ok(true) => {
            println!("Logged out.");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("Not logged in.");
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(&e),
    }
}
