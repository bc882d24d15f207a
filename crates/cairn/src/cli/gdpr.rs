//! `cairn admin gdpr …`: data-subject requests (docs/PRIVACY.md) — export, rectify, erase,
//! the request log and the personal-data inventory — through the server's API with the
//! stored credential (an administrator's).

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_api_types as api;
use clap::Subcommand;

use super::{UsageError, client, print_json};
use crate::table;

/// `cairn admin gdpr …`.
#[derive(Subcommand, Debug)]
pub enum GdprCommand {
    /// Export everything held about a person, as JSON (right of access and portability)
    Export {
        /// Login name
        username: String,
        /// Write the export to this file (created with mode 0600) instead of standard output
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Log the request as one for portability rather than access
        #[arg(long)]
        portability: bool,
    },
    /// Correct a person's shown name or contact address (right to rectification)
    Rectify {
        /// Login name
        username: String,
        /// The corrected shown name
        #[arg(long)]
        display_name: Option<String>,
        /// The corrected contact address
        #[arg(long)]
        email: Option<String>,
    },
    /// Erase a person: delete the account and pseudonymise the records and audit events
    /// naming them; the audit chain still verifies (right to erasure)
    Erase {
        /// Login name
        username: String,
        /// Confirm the erasure: it cannot be undone
        #[arg(long)]
        yes: bool,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// The log of data-subject requests, newest first
    Requests {
        /// Only requests about this person (login name, or erased:<user id>)
        #[arg(long)]
        subject: Option<String>,
        /// At most this many (1-1000)
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Every field of personal data the registry holds: where, category, legal basis, retention
    Inventory {
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
}

/// Runs `cairn admin gdpr …` on a fresh single-threaded runtime.
pub fn run(cmd: GdprCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(execute(cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

/// Writes `text` to a new file readable by its owner only (it holds personal data).
async fn execute(cmd: GdprCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        GdprCommand::Export { username, output, portability } => {
            let export = c.export_subject(&username, portability).await?;
            let text = serde_json::to_string_pretty(&export.data)?;
            match output {
                Some(path) => {
                    crate::credentials::write_private(&path, format!("{text}\n").as_bytes())?;
                    eprintln!("Wrote the data of {username} to {} (request {}).", path.display(), export.request_id);
                }
                None => println!("{text}"),
            }
        }
        GdprCommand::Rectify { username, display_name, email } => {
            if display_name.is_none() && email.is_none() {
                anyhow::bail!(UsageError("give --display-name, --email or both".into()));
            }
            let u = c.rectify_subject(&username, &api::RectifySubject { display_name, email }).await?;
            println!("Corrected {}: display name {:?}, email {:?}.", u.username, u.display_name, u.email);
        }
        GdprCommand::Erase { username, yes, json } => {
            if !yes {
                anyhow::bail!(UsageError(format!(
                    "erasing {username} deletes the account and pseudonymises every record naming it; \
                     this cannot be undone; pass --yes to confirm"
                )));
            }
            let e = c.erase_subject(&username).await?;
            if json {
                return print_json(&e);
            }
            println!("Erased {username}: now {} (request {}).", e.pseudonym, e.request_id);
            println!(
                "Deleted {} API keys, {} sessions, {} grants, {} counters; rewrote {} records; \
                 pseudonymised {} audit events.",
                e.api_keys_deleted,
                e.sessions_deleted,
                e.grants_deleted,
                e.counters_deleted,
                e.records_rewritten,
                e.erased_events.len()
            );
        }
        GdprCommand::Requests { subject, limit, json } => {
            let list = c.gdpr_requests(subject.as_deref(), Some(limit)).await?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .requests
                .iter()
                .map(|r| {
                    vec![
                        r.requested_at.clone(),
                        r.kind.clone(),
                        r.subject.clone(),
                        r.status.clone(),
                        r.requested_by.clone(),
                        r.note.clone(),
                    ]
                })
                .collect();
            print!("{}", table::render(&["REQUESTED", "KIND", "SUBJECT", "STATUS", "BY", "NOTE"], &rows));
        }
        GdprCommand::Inventory { json } => {
            let inv = c.privacy_inventory().await?;
            if json {
                return print_json(&inv);
            }
            let rows: Vec<Vec<String>> = inv
                .fields
                .iter()
                .map(|f| vec![f.field.clone(), f.location.clone(), f.category.clone(), f.retention.clone()])
                .collect();
            print!("{}", table::render(&["FIELD", "WHERE", "CATEGORY", "RETENTION"], &rows));
        }
    }
    Ok(())
}
