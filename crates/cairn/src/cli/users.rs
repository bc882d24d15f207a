//! `cairn admin users …` and `cairn admin grants …`: accounts and role grants, through the
//! server's API with the stored credential (an administrator's).

use std::process::ExitCode;

use cairn_api_types as api;
use cairn_client::Client;
use clap::Subcommand;

use super::{UsageError, client, print_json};
use crate::{prompt, table};

/// `cairn admin users …`.
#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// List accounts
    List {
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Show one account
    Show {
        /// Login name
        username: String,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Create an account: a person (asked for a password) or a service account (--service)
    Create {
        /// Login name: lower-case letters, digits, '-', '_', '.'
        username: String,
        /// A service account: no password, never logs in, uses API keys (`cairn keys create --for`)
        #[arg(long)]
        service: bool,
        /// Shown name
        #[arg(long)]
        display_name: Option<String>,
        /// Contact address
        #[arg(long)]
        email: Option<String>,
        /// Grant the global admin role
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input instead of a prompt
        #[arg(long, conflicts_with_all = ["service", "no_password"])]
        password_stdin: bool,
        /// Create a person without a password (set one later with set-password)
        #[arg(long, conflicts_with = "service")]
        no_password: bool,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: its sessions end and its API keys stop working at once
    Disable {
        /// Login name
        username: String,
    },
    /// Enable a disabled account
    Enable {
        /// Login name
        username: String,
    },
    /// Delete an account with its API keys, grants and sessions
    Delete {
        /// Login name
        username: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
    },
    /// Set a person's password (their sessions end)
    SetPassword {
        /// Login name
        username: String,
        /// Read the password from the first line of standard input instead of a prompt
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `cairn admin grants …`.
#[derive(Subcommand, Debug)]
pub enum GrantsCommand {
    /// List role grants
    List {
        /// Only this account's grants
        #[arg(long)]
        username: Option<String>,
        /// Only grants in this namespace ('-' for global grants only)
        #[arg(long)]
        namespace: Option<String>,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Grant a role: viewer, model_owner, mrc, security, sre, auditor or admin
    Add {
        /// Login name
        username: String,
        /// The role
        role: String,
        /// Grant it in this namespace only (default: everywhere)
        #[arg(long)]
        namespace: Option<String>,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Revoke a role grant by its id (see `cairn admin grants list`)
    Remove {
        /// The grant's id
        grant_id: String,
    },
}

/// Runs on a fresh single-threaded runtime (the admin command has no runtime of its own).
fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

/// Runs `cairn admin users …`.
pub fn run_users(cmd: UsersCommand) -> ExitCode {
    block_on(users(cmd))
}

/// Runs `cairn admin grants …`.
pub fn run_grants(cmd: GrantsCommand) -> ExitCode {
    block_on(grants(cmd))
}

fn roles_text(roles: &[api::RoleHeld]) -> String {
    roles
        .iter()
        .map(|r| match &r.namespace {
            Some(ns) => format!("{}@{ns}", r.role),
            None => r.role.clone(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_user(u: &api::User) {
    println!("Username:     {}", u.username);
    println!("Kind:         {}", if u.kind == "service" { "service account" } else { "person" });
    println!("Display name: {}", u.display_name);
    println!("Email:        {}", u.email);
    println!("Roles:        {}", roles_text(&u.roles));
    println!("MFA:          {}", if u.mfa_enabled { "enrolled" } else { "not enrolled" });
    println!("Disabled:     {}", if u.disabled { "yes" } else { "no" });
    println!("Password set: {}", u.password_changed_at.as_deref().unwrap_or("never"));
    println!("Created:      {}", u.created_at);
}

async fn all_users(c: &Client) -> anyhow::Result<Vec<api::User>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = c.list_users(Some(1000), token.as_deref()).await?;
        out.extend(page.users);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

async fn users(cmd: UsersCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        UsersCommand::List { json } => {
            let users = all_users(&c).await?;
            if json {
                return print_json(&api::UserList { users, next_page_token: None });
            }
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    vec![
                        u.username.clone(),
                        u.kind.clone(),
                        u.display_name.clone(),
                        roles_text(&u.roles),
                        if u.mfa_enabled { "yes" } else { "no" }.into(),
                        if u.disabled { "disabled" } else { "active" }.into(),
                        u.created_at.clone(),
                    ]
                })
                .collect();
            print!("{}", table::render(&["USERNAME", "KIND", "NAME", "ROLES", "MFA", "STATUS", "CREATED"], &rows));
        }
        UsersCommand::Show { username, json } => {
            let u = c.get_user(&username).await?;
            if json { print_json(&u)? } else { print_user(&u) }
        }
        UsersCommand::Create { username, service, display_name, email, admin, password_stdin, no_password, json } => {
            let password =
                if service || no_password { None } else { Some(prompt::new_password(password_stdin, &username)?) };
            let u = c
                .create_user(&api::CreateUser {
                    username,
                    password,
                    is_admin: admin,
                    kind: Some(if service { "service" } else { "user" }.into()),
                    display_name,
                    email,
                })
                .await?;
            if json {
                print_json(&u)?;
            } else {
                let what = if u.kind == "service" { "service account" } else { "account" };
                println!("Created {what} {}{}", u.username, if u.is_admin { " (administrator)" } else { "" });
            }
        }
        UsersCommand::Disable { username } => {
            c.update_user(&username, &api::UpdateUser { disabled: Some(true), ..Default::default() }).await?;
            println!("Disabled {username}: its sessions ended and its API keys no longer work.");
        }
        UsersCommand::Enable { username } => {
            c.update_user(&username, &api::UpdateUser { disabled: Some(false), ..Default::default() }).await?;
            println!("Enabled {username}.");
        }
        UsersCommand::Delete { username, yes } => {
            if !yes {
                anyhow::bail!(UsageError(format!(
                    "deleting {username} removes its API keys, grants and sessions; pass --yes to confirm"
                )));
            }
            c.delete_user(&username).await?;
            println!("Deleted {username}.");
        }
        UsersCommand::SetPassword { username, password_stdin } => {
            let password = prompt::new_password(password_stdin, &username)?;
            c.set_user_password(&username, &password).await?;
            println!("Password of {username} set; its sessions ended.");
        }
    }
    Ok(())
}

async fn grants(cmd: GrantsCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        GrantsCommand::List { username, namespace, json } => {
            let list = c.list_grants(username.as_deref(), namespace.as_deref()).await?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .grants
                .iter()
                .map(|g| {
                    vec![
                        g.id.clone(),
                        g.username.clone(),
                        g.role.clone(),
                        g.namespace.clone().unwrap_or_else(|| "(global)".into()),
                        g.created_at.clone(),
                        g.created_by.clone(),
                    ]
                })
                .collect();
            print!("{}", table::render(&["ID", "USERNAME", "ROLE", "NAMESPACE", "GRANTED", "BY"], &rows));
        }
        GrantsCommand::Add { username, role, namespace, json } => {
            let g = c.create_grant(&api::CreateRoleGrant { username, role, namespace }).await?;
            if json {
                print_json(&g)?;
            } else {
                let place = g.namespace.as_deref().map(|n| format!(" in {n}")).unwrap_or_else(|| " globally".into());
                println!("Granted {} to {}{place} (grant {}).", g.role, g.username, g.id);
            }
        }
        GrantsCommand::Remove { grant_id } => {
            c.delete_grant(&grant_id).await?;
            println!("Removed grant {grant_id}.");
        }
    }
    Ok(())
}
