//! `cairn models …`: models, versions, aliases and tags on a server.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use cairn_api_types as api;
use cairn_client::{Client, ListOptions};
use clap::{Args, Subcommand};

use super::{client, parse_metadata, parse_tags};
use crate::table;

/// `cairn models`.
#[derive(Args, Debug)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Args, Debug, Clone)]
struct ListFlags {
    /// Search filter, e.g. "namespace = 'nlp' AND tags.task = 'ner'"
    #[arg(long)]
    filter: Option<String>,
    /// Sort: a field, prefixed with - for descending
    #[arg(long)]
    order_by: Option<String>,
    /// Page size (1-1000)
    #[arg(long)]
    limit: Option<usize>,
    /// Start at this page token (from a previous --json listing)
    #[arg(long)]
    page_token: Option<String>,
    /// Follow page tokens and list everything
    #[arg(long)]
    all: bool,
    /// Print JSON for scripts
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// List models
    List(ListFlags),
    /// Show one model
    Show {
        /// namespace/name
        model: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Create a model (its namespace is created when new)
    Create {
        /// namespace/name
        model: String,
        /// Description (Markdown)
        #[arg(long, default_value = "")]
        description: String,
        /// Tag as KEY=VALUE (repeatable)
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Risk tier (low, medium, high): decides which reviews a version needs
        #[arg(long, value_name = "TIER")]
        risk_tier: Option<String>,
        /// An owner, a user name (repeatable)
        #[arg(long = "owner", value_name = "USER")]
        owners: Vec<String>,
        /// The team responsible for the model
        #[arg(long)]
        team: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Change a model's description, risk tier, owners or team
    Update {
        /// namespace/name
        model: String,
        /// New description
        #[arg(long)]
        description: Option<String>,
        /// Risk tier (low, medium, high): decides which reviews a version needs
        #[arg(long, value_name = "TIER")]
        risk_tier: Option<String>,
        /// Replace the owners with these user names (repeatable)
        #[arg(long = "owner", value_name = "USER")]
        owners: Vec<String>,
        /// The team responsible for the model
        #[arg(long)]
        team: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a model and all its versions
    Delete {
        /// namespace/name
        model: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
    },
    /// Set tags on a model
    Tag {
        /// namespace/name
        model: String,
        /// KEY=VALUE pairs
        #[arg(required = true, value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// Remove tags from a model
    Untag {
        /// namespace/name
        model: String,
        /// Tag keys
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Versions of a model
    #[command(subcommand)]
    Versions(VersionsCommand),
    /// Aliases of a model (model@alias → version)
    #[command(subcommand)]
    Aliases(AliasesCommand),
}

#[derive(Subcommand, Debug)]
enum VersionsCommand {
    /// List the versions of a model (newest first)
    List {
        /// namespace/name
        model: String,
        #[command(flatten)]
        flags: ListFlags,
    },
    /// Create the next version
    Create {
        /// namespace/name
        model: String,
        /// Where the version came from (URI)
        #[arg(long, default_value = "")]
        source: String,
        /// Description
        #[arg(long, default_value = "")]
        description: String,
        /// Training run id
        #[arg(long, default_value = "")]
        run_id: String,
        /// Metadata as a JSON object, or @FILE to read it from a file
        #[arg(long)]
        metadata: Option<String>,
        /// Tag as KEY=VALUE (repeatable)
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Semantic version label (e.g. 1.4.2)
        #[arg(long, value_name = "X.Y.Z")]
        semver: Option<String>,
        /// The code commit the model was built from
        #[arg(long, value_name = "SHA")]
        code_commit: Option<String>,
        /// The training job that produced it
        #[arg(long, value_name = "ID")]
        training_job: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Change a version's description, semver label, code commit or training job
    Update {
        /// namespace/name:VERSION or namespace/name@ALIAS
        #[arg(value_name = "VERSION")]
        reference: String,
        /// New description
        #[arg(long)]
        description: Option<String>,
        /// Semantic version label (e.g. 1.4.2; "" removes it)
        #[arg(long, value_name = "X.Y.Z")]
        semver: Option<String>,
        /// The code commit the model was built from
        #[arg(long, value_name = "SHA")]
        code_commit: Option<String>,
        /// The training job that produced it
        #[arg(long, value_name = "ID")]
        training_job: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show a version: namespace/name:VERSION or namespace/name@ALIAS
    Show {
        /// namespace/name:3 or namespace/name@champion
        #[arg(value_name = "VERSION")]
        reference: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a version (its number is never reused)
    Delete {
        /// namespace/name:3
        #[arg(value_name = "VERSION")]
        reference: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AliasesCommand {
    /// List the aliases of a model
    List {
        /// namespace/name
        model: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Point namespace/name@ALIAS at a version
    Set {
        /// namespace/name@alias
        alias: String,
        /// Version number
        #[arg(value_name = "VERSION")]
        number: i64,
    },
    /// Remove namespace/name@ALIAS
    Delete {
        /// namespace/name@alias
        alias: String,
    },
}

/// Runs `cairn models …`.
pub async fn run(args: ModelsArgs) -> ExitCode {
    match dispatch(args.command).await {
        Ok(code) => code,
        Err(e) => super::fail(&e),
    }
}

/// `ns/name:3` or `ns/name@alias` → (`ns/name`, `3` | `@alias`).
fn split_version(s: &str) -> anyhow::Result<(String, String)> {
    if let Some((m, a)) = s.rsplit_once('@') {
        return Ok((m.to_owned(), format!("@{a}")));
    }
    if let Some((m, v)) = s.rsplit_once(':') {
        return Ok((m.to_owned(), v.to_owned()));
    }
    bail!("{s:?} must be written namespace/name:VERSION or namespace/name@ALIAS")
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn tags_text(tags: &BTreeMap<String, String>) -> String {
    tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

fn print_model(m: &api::Model) {
    println!("Model:       {}", m.full_name);
    println!("Description: {}", m.description);
    println!("Versions:    {} (latest number)", m.latest_version);
    println!("Tags:        {}", tags_text(&m.tags));
    let aliases: Vec<String> = m.aliases.iter().map(|(a, v)| format!("@{a} → {v}")).collect();
    println!("Aliases:     {}", aliases.join(", "));
    println!("Created:     {} by {}", m.created_at, m.created_by);
    println!("Updated:     {} by {}", m.updated_at, m.updated_by);
}

fn print_version(v: &api::Version) {
    println!("Model:       {}", v.model);
    println!("Version:     {}", v.version);
    println!("Stage:       {}", v.stage);
    if let Some(semver) = &v.semver {
        println!("Semver:      {semver}");
    }
    println!("Description: {}", v.description);
    println!("Source:      {}", v.source);
    println!("Run:         {}", v.run_id);
    println!("Tags:        {}", tags_text(&v.tags));
    println!("Aliases:     {}", v.aliases.iter().map(|a| format!("@{a}")).collect::<Vec<_>>().join(", "));
    println!("Metadata:    {}", v.metadata);
    println!("Created:     {} by {}", v.created_at, v.created_by);
}

fn options(f: &ListFlags) -> ListOptions {
    ListOptions {
        limit: f.limit,
        page_token: f.page_token.clone(),
        order_by: f.order_by.clone(),
        filter: f.filter.clone(),
    }
}

async fn dispatch(cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
    let c = client()?;
    match cmd {
        ModelsCommand::List(f) => {
            let mut opts = options(&f);
            let mut all = Vec::new();
            let mut next;
            loop {
                let page = c.list_models(&opts).await?;
                all.extend(page.models);
                next = page.next_page_token;
                match (&next, f.all) {
                    (Some(t), true) => opts.page_token = Some(t.clone()),
                    _ => break,
                }
            }
            if f.json {
                print_json(&api::ModelList { models: all, next_page_token: next })?;
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|m| {
                        vec![
                            m.full_name.clone(),
                            m.latest_version.to_string(),
                            tags_text(&m.tags),
                            m.updated_at.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&["MODEL", "LATEST", "TAGS", "UPDATED"], &rows));
                if let Some(t) = next {
                    eprintln!("(more results: --page-token {t}, or --all)");
                }
            }
        }
        ModelsCommand::Show { model, json } => {
            let m = c.get_model(&model).await?;
            if json { print_json(&m)? } else { print_model(&m) }
        }
        ModelsCommand::Create { model, description, tags, risk_tier, owners, team, json } => {
            let m = c
                .create_model(&api::CreateModel {
                    name: model,
                    description,
                    tags: parse_tags(&tags)?,
                    risk_tier,
                    team: team.unwrap_or_default(),
                    owners: (!owners.is_empty()).then_some(owners),
                })
                .await?;
            if json { print_json(&m)? } else { println!("Created model {}", m.full_name) }
        }
        ModelsCommand::Update { model, description, risk_tier, owners, team, json } => {
            let req = api::UpdateModel { description, risk_tier, team, owners: (!owners.is_empty()).then_some(owners) };
            if req.description.is_none() && req.risk_tier.is_none() && req.team.is_none() && req.owners.is_none() {
                return Ok(super::usage("nothing to change: give --description, --risk-tier, --owner or --team"));
            }
            let m = c.update_model(&model, &req).await?;
            if json { print_json(&m)? } else { println!("Updated model {}", m.full_name) }
        }
        ModelsCommand::Delete { model, yes } => {
            if !yes {
                return Ok(super::usage(format!("deleting {model} removes all its versions; pass --yes to confirm")));
            }
            c.delete_model(&model).await?;
            println!("Deleted model {model}");
        }
        ModelsCommand::Tag { model, tags } => {
            for (k, v) in parse_tags(&tags)? {
                c.set_model_tag(&model, &k, &v).await?;
            }
            println!("Tagged {model}");
        }
        ModelsCommand::Untag { model, keys } => {
            for k in keys {
                c.delete_model_tag(&model, &k).await?;
            }
            println!("Untagged {model}");
        }
        ModelsCommand::Versions(v) => return versions(&c, v).await,
        ModelsCommand::Aliases(a) => return aliases(&c, a).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn versions(c: &Client, cmd: VersionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VersionsCommand::List { model, flags } => {
            let mut opts = options(&flags);
            let mut all = Vec::new();
            let mut next;
            loop {
                let page = c.list_versions(&model, &opts).await?;
                all.extend(page.versions);
                next = page.next_page_token;
                match (&next, flags.all) {
                    (Some(t), true) => opts.page_token = Some(t.clone()),
                    _ => break,
                }
            }
            if flags.json {
                print_json(&api::VersionList { versions: all, next_page_token: next })?;
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            v.aliases.iter().map(|a| format!("@{a}")).collect::<Vec<_>>().join(" "),
                            v.source.clone(),
                            v.created_at.clone(),
                            v.created_by.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table::render(&["VERSION", "ALIASES", "SOURCE", "CREATED", "BY"], &rows));
                if let Some(t) = next {
                    eprintln!("(more results: --page-token {t}, or --all)");
                }
            }
        }
        VersionsCommand::Create {
            model,
            source,
            description,
            run_id,
            metadata,
            tags,
            semver,
            code_commit,
            training_job,
            json,
        } => {
            let metadata = parse_metadata(metadata.as_deref())?;
            let v = c
                .create_version(
                    &model,
                    &api::CreateVersion {
                        description,
                        source,
                        run_id,
                        metadata,
                        tags: parse_tags(&tags)?,
                        semver,
                        code_commit: code_commit.unwrap_or_default(),
                        training_job: training_job.unwrap_or_default(),
                        lineage: Vec::new(),
                    },
                )
                .await?;
            if json { print_json(&v)? } else { println!("Created {}:{}", v.model, v.version) }
        }
        VersionsCommand::Update { reference, description, semver, code_commit, training_job, json } => {
            let (model, version) = split_version(&reference)?;
            let req = api::UpdateVersion { description, metadata: None, semver, code_commit, training_job };
            if req.description.is_none()
                && req.semver.is_none()
                && req.code_commit.is_none()
                && req.training_job.is_none()
            {
                return Ok(super::usage(
                    "nothing to change: give --description, --semver, --code-commit or --training-job",
                ));
            }
            let v = c.update_version(&model, &version, &req).await?;
            if json { print_json(&v)? } else { println!("Updated {}:{}", v.model, v.version) }
        }
        VersionsCommand::Show { reference, json } => {
            let (model, v) = split_version(&reference)?;
            let v = c.get_version(&model, &v).await?;
            if json { print_json(&v)? } else { print_version(&v) }
        }
        VersionsCommand::Delete { reference, yes } => {
            if !yes {
                return Ok(super::usage(format!("pass --yes to delete {reference}")));
            }
            let (model, v) = split_version(&reference)?;
            c.delete_version(&model, &v).await?;
            println!("Deleted {reference}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn aliases(c: &Client, cmd: AliasesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AliasesCommand::List { model, json } => {
            let list = c.list_aliases(&model).await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .aliases
                    .iter()
                    .map(|a| {
                        vec![format!("@{}", a.alias), a.version.to_string(), a.updated_at.clone(), a.updated_by.clone()]
                    })
                    .collect();
                print!("{}", table::render(&["ALIAS", "VERSION", "MOVED", "BY"], &rows));
            }
        }
        AliasesCommand::Set { alias, number } => {
            let Some((model, name)) = alias.rsplit_once('@') else {
                return Ok(super::usage("write the alias as namespace/name@alias"));
            };
            let a = c.set_alias(model, name, number).await?;
            println!("{model}@{} → version {}", a.alias, a.version);
        }
        AliasesCommand::Delete { alias } => {
            let Some((model, name)) = alias.rsplit_once('@') else {
                return Ok(super::usage("write the alias as namespace/name@alias"));
            };
            c.delete_alias(model, name).await?;
            println!("Deleted {alias}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_version_refs() {
        assert_eq!(split_version("a/b:3").unwrap(), ("a/b".into(), "3".into()));
        assert_eq!(split_version("a/b@prod").unwrap(), ("a/b".into(), "@prod".into()));
        assert!(split_version("a/b").is_err());
        assert!(parse_tags(&["k=v=w".into()]).unwrap()["k"] == "v=w");
        assert!(parse_tags(&["novalue".into()]).is_err());
    }
}
