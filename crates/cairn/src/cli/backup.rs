//! `cairn admin backup` and `cairn admin restore`: parse, show progress, print the summary
//! and pick the exit code. The work is in `cairn_server::backup`.
//!
//! Exit codes: 0 done (restore: and verified); 1 the backup could not be completed, a file of
//! the backup is damaged, or the restored registry failed verification; 2 refused before
//! anything was changed (the target is not empty, not a backup, another backend).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use cairn_audit::PublicKey;
use cairn_server::Settings;
use cairn_server::backup::{self, BackupError, BackupReport, KeySource, Location, RestoreReport, Step, StepProgress};
use cairn_store::{DbOptions, Store};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::human_bytes;

/// `cairn admin backup`.
#[derive(Args, Debug)]
#[command(after_help = "Backs up the database and the blob inventory (and, for a local blob store, the blobs, \
                        copying only those not yet in DEST) while servers keep running. Encryption and signing \
                        keys are not included: back them up separately (docs/BACKUP.md).\n\nExit status: 0 done, \
                        1 failed (the previous backup in DEST stays usable), 2 refused.\n\nExamples:\n  \
                        cairn admin backup /srv/backups/cairn\n  \
                        cairn admin backup /srv/backups/cairn --json > backup-report.json\n  \
                        AWS_REGION=eu-west-1 cairn admin backup s3://acme-backups/cairn")]
pub struct BackupArgs {
    /// Backup directory (created if needed), or s3://bucket/prefix with the usual AWS_* variables;
    /// reuse it so that blobs are copied only once
    #[arg(value_name = "DIR|s3://BUCKET/PREFIX")]
    destination: String,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
    /// No progress display
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// `cairn admin restore`.
#[derive(Args, Debug)]
#[command(after_help = "Restores into an empty data directory (SQLite) or an empty PostgreSQL database, as \
                        --data-dir, --database-url and the blob settings name them, then re-hashes every blob and \
                        verifies the audit chain.\n\nExit status: 0 restored and verified, 1 a file of the backup \
                        is damaged or verification failed, 2 refused before anything was changed.\n\nExamples:\n  \
                        cairn admin restore /srv/backups/cairn --data-dir /var/lib/cairn-restored\n  \
                        cairn admin restore s3://acme-backups/cairn --data-dir /var/lib/cairn-restored\n  \
                        cairn admin restore /srv/backups/cairn --database-url postgres://cairn@db/cairn_new \
                        --public-key cairn-signing.pub")]
pub struct RestoreArgs {
    /// Backup directory, or s3://bucket/prefix with the usual AWS_* variables
    #[arg(value_name = "DIR|s3://BUCKET/PREFIX")]
    source: String,
    /// Trust audit checkpoints signed by this key (SPKI PEM, or the raw key in base64 or hex); repeatable
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
    /// No progress display
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Runs `cairn admin backup` with the settings of `cairn serve`.
pub fn run_backup(args: BackupArgs, settings: &Settings) -> ExitCode {
    let location = match Location::parse(&args.destination) {
        Ok(l) => l,
        Err(e) => return crate::cli::usage(e),
    };
    runtime(async move {
        let url = settings.database_url();
        if let Some(file) = backup::sqlite_path(&url)
            && !file.is_file()
        {
            return Err(BackupError::Refused(format!(
                "there is no database at {}: give the --data-dir or --database-url the server runs with",
                file.display()
            )));
        }
        // Without migrating or writing: the servers may run another release.
        let store = Store::open_existing(&url, &DbOptions { max_connections: 2, ..DbOptions::default() }).await?;
        let meter = Meter::new(args.quiet);
        let report = backup::backup(&store, settings, &location, &|p| meter.show(p)).await;
        meter.clear();
        store.close().await;
        let report = report?;
        if args.json {
            print_json(&report);
        } else {
            print_backup(&report);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `cairn admin restore` into the database and blob store of the settings.
pub fn run_restore(args: RestoreArgs, settings: &Settings) -> ExitCode {
    let location = match Location::parse(&args.source) {
        Ok(l) => l,
        Err(e) => return crate::cli::usage(e),
    };
    let mut pinned = Vec::new();
    for path in &args.public_keys {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return crate::cli::usage(format!("cannot read {}: {e}", path.display())),
        };
        match PublicKey::parse(text.trim()) {
            Ok(k) => pinned.push(k),
            Err(e) => return crate::cli::usage(format!("{} is not a public key: {e}", path.display())),
        }
    }
    runtime(async move {
        let meter = Meter::new(args.quiet);
        let report = backup::restore(settings, &location, pinned, &|p| meter.show(p)).await;
        meter.clear();
        let report = report?;
        if args.json {
            print_json(&report);
        } else {
            print_restore(&report);
        }
        Ok(if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

fn runtime(work: impl std::future::Future<Output = Result<ExitCode, BackupError>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                BackupError::Refused(_) => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode the report: {e}"),
    }
}

fn print_backup(r: &BackupReport) {
    let m = &r.manifest;
    let rows: u64 = m.tables.iter().map(|t| t.rows).sum();
    println!("backup {} of {} (migration {}) in {}", m.id, m.backend, m.migration_version, r.destination);
    println!("metadata:   {} tables, {rows} rows, {}", m.tables.len(), human_bytes(r.metadata_bytes));
    println!(
        "blobs:      {} in the inventory ({}), sha256 {}",
        m.blobs.count,
        human_bytes(m.blobs.bytes),
        m.blobs.inventory.sha256
    );
    if m.blobs.included {
        println!(
            "            {} copied ({}), {} already in the backup ({})",
            r.blobs_copied,
            human_bytes(r.bytes_copied),
            r.blobs_skipped,
            human_bytes(r.bytes_skipped)
        );
        if m.blobs.encrypted {
            println!("            copied as stored, encrypted: the encryption key file is not in the backup");
        }
    } else {
        println!("            not copied: they stay in the S3 bucket (keep it versioned or replicated)");
    }
    if r.snapshots_removed > 0 {
        println!("removed {} older snapshot(s)", r.snapshots_removed);
    }
    println!(
        "done in {:.1} s; keep the signing and encryption key files with it (not included)",
        r.elapsed_ms as f64 / 1000.0
    );
}

fn print_restore(r: &RestoreReport) {
    let m = &r.manifest;
    let rows: u64 = r.tables.iter().map(|t| t.restored).sum();
    println!(
        "restored backup {} ({} at migration {}, taken {}) into {}",
        m.id, m.backend, m.migration_version, m.created_at, r.database
    );
    println!("metadata:   {} tables, {rows} rows", r.tables.len());
    if m.blobs.included {
        println!("blobs:      {} copied ({})", r.blobs_copied, human_bytes(r.bytes_copied));
    } else {
        println!("blobs:      {} in the inventory, left in the S3 bucket", m.blobs.count);
    }
    let f = &r.fsck;
    println!(
        "verified:   {} blobs ({}): {} missing, {} corrupt, {} unreadable",
        f.checked,
        human_bytes(f.checked_bytes),
        f.missing,
        f.corrupt,
        f.unreadable
    );
    for p in f.problems.iter().take(20) {
        let kind = serde_json::to_value(p.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        println!("            {kind} sha256:{} {}", p.digest, p.used_by.join(", "));
    }
    let a = &r.audit;
    let keys = match r.audit_keys {
        KeySource::Pinned => "the keys given",
        KeySource::KeyFile => "the signing key file",
        KeySource::Database => "the database's own key table",
    };
    match &a.first_break {
        None => println!(
            "audit:      chain intact, {} events, {} checkpoints checked against {keys}",
            a.events, a.checkpoints
        ),
        Some(b) => println!("audit:      BROKEN at event {}: {}", b.seq, b.message),
    }
    if r.audit_keys == KeySource::Database {
        eprintln!(
            "warning: checkpoints were checked against keys stored in the restored database itself; pass \
             --public-key with the server's public key for a check that does not trust the backup"
        );
    }
    if r.is_ok() {
        println!("ok in {:.1} s", r.elapsed_ms as f64 / 1000.0);
    } else {
        for p in &r.problems {
            println!("FAILED: {p}");
        }
        println!(
            "VERIFICATION FAILED: the restored data is left in place for inspection; do not serve it. Remove it and \
             restore from another backup"
        );
    }
}

/// One progress line on stderr, when stderr is a terminal and not `--quiet`.
struct Meter {
    bar: ProgressBar,
    step: Mutex<Option<Step>>,
}

impl Meter {
    fn new(quiet: bool) -> Self {
        let target = if !quiet && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar, step: Mutex::new(None) }
    }

    fn show(&self, p: StepProgress) {
        let Ok(mut step) = self.step.lock() else { return };
        if *step != Some(p.step) {
            *step = Some(p.step);
            let template = if p.total.is_some() {
                "{prefix:>12.bold} [{bar:30}] {pos}/{len} {msg}"
            } else {
                "{spinner} {prefix:.bold} {pos} {msg}"
            };
            self.bar.set_style(
                ProgressStyle::with_template(template).expect("the templates are constants").progress_chars("=> "),
            );
            self.bar.set_prefix(match p.step {
                Step::Metadata => "metadata",
                Step::Inventory => "inventory",
                Step::Blobs => "blobs",
                Step::Checking => "checking",
                Step::Verifying => "verifying",
                Step::AuditChain => "audit chain",
            });
            self.bar.reset();
        }
        if let Some(total) = p.total {
            self.bar.set_length(total);
        }
        self.bar.set_position(p.done);
        self.bar.set_message(human_bytes(p.bytes));
    }

    fn clear(&self) {
        self.bar.finish_and_clear();
    }
}
