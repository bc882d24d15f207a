//! `cairn login` and `cairn logout`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::Context;
use cairn_client::Client;
use clap::Args;

use crate::credentials::{self, Credentials};

/// Flags of `cairn login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Server URL [default: $CAIRN_URL, else http://127.0.0.1:8080]
    #[arg(long)]
    url: Option<String>,
    /// API key (prefer --token-stdin or the prompt: flags end up in shell history)
    #[arg(long, conflicts_with = "token_stdin")]
    token: Option<String>,
    /// Read the API key from standard input
    #[arg(long)]
    token_stdin: bool,
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
        .or_else(|| std::env::var("CAIRN_URL").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
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
            "give the API key with --token-stdin (e.g. `echo $KEY | cairn login --token-stdin`), CAIRN_TOKEN or --token"
        );
    };
    if token.is_empty() {
        anyhow::bail!("the API key is empty");
    }
    let client = Client::new(&url, Some(token.clone()))?;
    let me = client.whoami().await?;
    let path = credentials::save(&Credentials { url: Some(url.clone()), token: Some(token) })?;
    println!("Logged in to {url} as {} (scopes: {}).", me.username, me.scopes.join(" "));
    println!("Credentials saved to {} (readable only by you).", path.display());
    Ok(())
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
