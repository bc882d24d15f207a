//! `cairn-backupcost`: how long `cairn admin backup` and `cairn admin restore` take on a
//! SQLite registry of 100,000 versions (the target of the operations issue: a backup of
//! 100,000 versions' metadata in under 10 s).
//!
//! 1. **Filling.** A fresh SQLite database in a temporary directory, filled through
//!    `cairn_store` (the server's own repository layer, so every row, index and audit event is
//!    what the API would have written): `--models` models across 10 namespaces, each with
//!    `--versions-per-model` versions carrying a description, a metadata object and two tags.
//!    No files: this measures metadata, as the target does.
//! 2. **Measuring.** The release binary, as an administrator runs it, each command timed from
//!    start to exit: `cairn admin backup DIR` (the first, full backup), the same again (the
//!    incremental case, which rewrites the metadata and copies no blob), then
//!    `cairn admin restore DIR` into an empty data directory, which includes re-hashing the
//!    blobs and verifying the whole audit chain.
//!
//! It asserts nothing about speed: it reports, and exits non-zero only if a command fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cairn_core::{ModelName, ModelRef, Namespace, TagKey};
use cairn_store::model::NewModel;
use cairn_store::version::NewVersion;
use cairn_store::{AuditContext, DbOptions, Store};
use clap::Parser;
use serde_json::{Value, json};

/// Times `cairn admin backup` and `restore` on a SQLite registry of 100,000 versions.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Models to create
    #[arg(long, default_value_t = 1000)]
    models: usize,
    /// Versions per model
    #[arg(long, default_value_t = 100)]
    versions_per_model: usize,
    /// The cairn binary to time [default: `cairn` next to this program]
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Work in this directory instead of a temporary one (kept afterwards)
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let cairn = match args.cairn {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("cairn"),
    };
    if !cairn.is_file() {
        bail!("{} does not exist: build it with `cargo build --release -p cairn`, or pass --cairn", cairn.display());
    }
    let temp = tempfile::tempdir()?;
    let work = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let data = work.join("data");
    std::fs::create_dir_all(&data)?;
    let url = format!("sqlite://{}", data.join("cairn.db").display());

    let started = Instant::now();
    let versions = fill(&url, args.models, args.versions_per_model).await?;
    println!(
        "filled {} models, {versions} versions in {:.1} s ({})",
        args.models,
        started.elapsed().as_secs_f64(),
        url
    );
    let db_bytes = std::fs::metadata(data.join("cairn.db")).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(data.join("cairn.db-wal")).map(|m| m.len()).unwrap_or(0);
    println!("database: {:.1} MiB (with its WAL)", db_bytes as f64 / 1048576.0);

    let backup = work.join("backup");
    let backup_arg = backup.to_str().context("a UTF-8 work directory")?;
    let (first, report) = time(&cairn, &data, &url, &["backup", backup_arg, "--json", "--quiet"])?;
    let rows: u64 =
        report["manifest"]["tables"].as_array().map_or(0, |t| t.iter().filter_map(|t| t["rows"].as_u64()).sum());
    println!(
        "backup (full):        {first:>6.2} s  ({rows} rows, {:.1} MiB of metadata)",
        report["metadata_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
    );
    let (second, _) = time(&cairn, &data, &url, &["backup", backup_arg, "--json", "--quiet"])?;
    println!("backup (incremental): {second:>6.2} s");

    let restored = work.join("restored");
    std::fs::create_dir_all(&restored)?;
    let restored_url = format!("sqlite://{}", restored.join("cairn.db").display());
    let (restore, report) = time(&cairn, &restored, &restored_url, &["restore", backup_arg, "--json", "--quiet"])?;
    println!(
        "restore + verify:     {restore:>6.2} s  ({} audit events verified)",
        report["audit"]["events"].as_u64().unwrap_or(0)
    );
    if let Some(dir) = &args.dir {
        println!("kept {}", dir.display());
    }
    Ok(())
}

/// Fills the database; the number of versions made.
async fn fill(url: &str, models: usize, per_model: usize) -> Result<usize> {
    let store = Store::open(url, &DbOptions::default()).await?;
    let ctx = AuditContext { actor: "user:bench".into(), ..AuditContext::default() };
    let mut made = 0;
    for m in 0..models {
        let model =
            ModelRef::new(Namespace::parse(&format!("team-{}", m % 10))?, ModelName::parse(&format!("model-{m}"))?);
        store.create_model(&ctx, &NewModel::named(model.clone())).await?;
        for v in 0..per_model {
            let new = NewVersion {
                description: format!("version {v} of model {m}, trained on the nightly snapshot"),
                source: format!("s3://training/runs/{m}/{v}"),
                run_id: format!("run-{m}-{v}"),
                metadata: json!({"accuracy": 0.9 + (v % 10) as f64 / 100.0, "epochs": v % 50}),
                tags: [
                    (TagKey::parse("stage")?, "candidate".to_owned()),
                    (TagKey::parse("dataset")?, format!("ds-{}", v % 7)),
                ]
                .into_iter()
                .collect(),
                ..NewVersion::default()
            };
            store.create_version(&ctx, &model, &new).await?;
            made += 1;
        }
        if (m + 1) % 100 == 0 {
            eprint!("\r{} of {models} models", m + 1);
        }
    }
    eprintln!();
    store.close().await;
    Ok(made)
}

/// Runs `cairn admin ARGS` on a data dir; wall seconds and the JSON report.
fn time(cairn: &Path, data: &Path, url: &str, args: &[&str]) -> Result<(f64, Value)> {
    let mut cmd = Command::new(cairn);
    cmd.arg("admin").args(args).arg("--data-dir").arg(data).arg("--database-url").arg(url).env("CAIRN_LOG", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") && k != "CAIRN_LOG" {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("cannot run {}", cairn.display()))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "cairn admin {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report = serde_json::from_slice(&out.stdout).context("the report is not JSON")?;
    Ok((secs, report))
}
