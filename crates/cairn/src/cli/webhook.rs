//! `cairn webhook …`: signed HTTP callbacks for lifecycle events (docs/WEBHOOKS.md) — add,
//! list, remove, the delivery log, redelivery and a test ping.

use std::process::ExitCode;

use cairn_api_types as api;
use clap::{Args, Subcommand};

use super::{UsageError, client, print_json};
use crate::table;

/// `cairn webhook`.
#[derive(Args, Debug)]
pub struct WebhookArgs {
    #[command(subcommand)]
    command: WebhookCommand,
}

#[derive(Subcommand, Debug)]
enum WebhookCommand {
    /// Add a webhook; its signing secret is printed once and never again
    Add {
        /// The namespace whose events it receives (or --global)
        #[arg(required_unless_present = "global", conflicts_with = "global")]
        namespace: Option<String>,
        /// Receive the events of every namespace (needs a global grant)
        #[arg(long)]
        global: bool,
        /// Where deliveries are posted (http or https)
        #[arg(long)]
        url: String,
        /// An event to receive (repeatable): version.submitted, version.approved,
        /// version.rejected, version.promoted, policy.violation, evaluation.failed, or * for all
        #[arg(long = "event", value_name = "EVENT", required = true)]
        events: Vec<String>,
        /// Print JSON for scripts (the secret included)
        #[arg(long)]
        json: bool,
    },
    /// List a namespace's webhooks (or --global ones); never their secrets
    List {
        /// The namespace (or --global)
        #[arg(required_unless_present = "global", conflicts_with = "global")]
        namespace: Option<String>,
        /// The webhooks of every namespace
        #[arg(long)]
        global: bool,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Remove a webhook and its delivery log
    Remove {
        /// The webhook's id
        id: String,
    },
    /// A webhook's delivery log, newest first
    Deliveries {
        /// The webhook's id
        id: String,
        /// At most this many
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
    },
    /// Send a delivery again
    Redeliver {
        /// The webhook's id
        id: String,
        /// The delivery's id
        delivery: String,
    },
    /// Send a test `ping` delivery to a webhook
    Ping {
        /// The webhook's id
        id: String,
    },
}

/// Runs `cairn webhook …`.
pub async fn run(args: WebhookArgs) -> ExitCode {
    match run_inner(args).await {
        Ok(code) => code,
        Err(e) => super::fail(&e),
    }
}

async fn run_inner(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    let c = client()?;
    match args.command {
        WebhookCommand::Add { namespace, global, url, events, json } => {
            if namespace.is_none() && !global {
                return Err(UsageError("name a namespace or pass --global".into()).into());
            }
            let created = c.create_webhook(namespace.as_deref(), &api::CreateWebhook { url, events }).await?;
            if json {
                print_json(&created)?;
            } else {
                let w = &created.webhook;
                println!("Added webhook {} → {} ({})", w.id, w.url, w.events.join(", "));
                println!("Signing secret: {}", created.secret);
                eprintln!(
                    "warning: store the secret now (your receiver needs it to verify deliveries); it is never shown again"
                );
            }
        }
        WebhookCommand::List { namespace, global, json } => {
            let list = c.list_webhooks(if global { None } else { namespace.as_deref() }).await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .webhooks
                    .iter()
                    .map(|w| {
                        vec![
                            w.id.clone(),
                            w.namespace.clone().unwrap_or_else(|| "*".into()),
                            w.url.clone(),
                            w.events.join(","),
                            if w.active { "yes".into() } else { "no".into() },
                            w.created_by.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&["ID", "NAMESPACE", "URL", "EVENTS", "ACTIVE", "CREATED BY"], &rows));
            }
        }
        WebhookCommand::Remove { id } => {
            c.delete_webhook(&id).await?;
            println!("Removed webhook {id}");
        }
        WebhookCommand::Deliveries { id, limit, json } => {
            let page = c.list_webhook_deliveries(&id, Some(limit.clamp(1, 1000)), None).await?;
            if json {
                print_json(&page)?;
            } else {
                let rows: Vec<Vec<String>> = page
                    .deliveries
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.clone(),
                            d.event.clone(),
                            d.status.clone(),
                            d.attempts.to_string(),
                            d.last_status.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                            d.created_at.clone(),
                            d.last_error.chars().take(60).collect(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table::render(&["ID", "EVENT", "STATUS", "ATTEMPTS", "HTTP", "CREATED", "LAST ERROR"], &rows)
                );
            }
        }
        WebhookCommand::Redeliver { id, delivery } => {
            let d = c.redeliver_webhook(&id, &delivery).await?;
            println!("Delivery {} is queued again ({})", d.id, d.event);
        }
        WebhookCommand::Ping { id } => {
            let d = c.ping_webhook(&id).await?;
            println!("Queued ping delivery {}", d.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}
