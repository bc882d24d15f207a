//! `cairn admin`: accounts and role grants on a server (`users`, `grants`, through the API
//! with the stored credential, see [`super::users`]), integrity and maintenance of the
//! artifact store (fsck, gc, rotate-key), and backups (backup, restore; see [`backup`]).
//!
//! The maintenance commands talk to the database and the blob store directly, with the
//! settings of `cairn serve` (flags, `CAIRN_*`, `cairn.toml`), beside running servers or
//! without one. The work itself is in `cairn_server::maintenance`; this module parses, prints
//! and picks the exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_server::maintenance::{
    self, FsckReport, GcOptions, GcReport, MaintenanceError, Phase, Progress, RotateReport,
};
use cairn_server::{Settings, SettingsOverrides};
use clap::{Args, Subcommand};

#[path = "backup.rs"]
mod backup;

/// `cairn admin …`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// fsck, gc, rotate-key, backup, restore: directory for the SQLite database and local files [env: CAIRN_DATA_DIR] [default: ./cairn-data]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// fsck, gc, rotate-key, backup, restore: sqlite://PATH or postgres://USER@HOST/DB [env: CAIRN_DATABASE_URL]
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// fsck, gc, rotate-key, backup, restore: settings file [env: CAIRN_CONFIG] [default: ./cairn.toml when present]
    #[arg(long, global = true, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Accounts on the server: list, show, create, disable, enable, delete, set-password
    #[command(subcommand)]
    Users(super::users::UsersCommand),
    /// Role grants on the server: list, add, remove
    #[command(subcommand)]
    Grants(super::users::GrantsCommand),
    /// Data-subject requests (GDPR): export, rectify, erase, requests, inventory
    #[command(subcommand)]
    Gdpr(super::gdpr::GdprCommand),
    /// Re-hash every stored blob; report missing, corrupt and unknown (orphan) ones.
    /// Exit 1 if anything is missing or corrupt
    Fsck {
        /// Print the report as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Delete blobs that no version and no open upload uses, and orphan objects, once
    /// unused for longer than the grace period
    Gc {
        /// Seconds a blob must have been unused [default: twice upload_expiry_secs]; never
        /// less than upload_expiry_secs
        #[arg(long)]
        grace_secs: Option<u64>,
        /// Only report what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-encrypt every blob under the active (first) key of CAIRN_ENCRYPTION_KEY_FILE
    RotateKey,
    /// Back up the database, the blob inventory and (local blob store) the blobs, while
    /// servers run; blobs already in the backup are not copied again
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty data directory or database, then verify every blob and
    /// the audit chain
    Restore(backup::RestoreArgs),
    /// Validate the settings as `cairn serve` would, without starting or writing anything.
    /// Exit 2 and the setting's name when something is wrong
    CheckConfig {
        /// Also reach the database and the blob store
        #[arg(long)]
        connect: bool,
    },
    /// Read-only maintenance mode for every replica: on, off, status
    #[command(subcommand)]
    Maintenance(super::ops::MaintenanceCommand),
}

/// Runs an admin command on a multi-threaded runtime (blobs are hashed in parallel).
pub fn run(args: AdminArgs) -> ExitCode {
    let command = match args.command {
        AdminCommand::Users(cmd) => return super::users::run_users(cmd),
        AdminCommand::Grants(cmd) => return super::users::run_grants(cmd),
        AdminCommand::Gdpr(cmd) => return super::gdpr::run(cmd),
        other => other,
    };
    let args = AdminArgs { command, ..args };
    let flags =
        SettingsOverrides { data_dir: args.data_dir, database_url: args.database_url, ..SettingsOverrides::default() };
    let settings = match Settings::load(&flags, args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return super::usage(e),
    };
    let command = match args.command {
        AdminCommand::Backup(a) => {
            cairn_server::serve::init_logging(&settings);
            return backup::run_backup(a, &settings);
        }
        AdminCommand::Restore(a) => {
            cairn_server::serve::init_logging(&settings);
            return backup::run_restore(a, &settings);
        }
        AdminCommand::CheckConfig { connect } => return super::ops::check_config(&settings, connect),
        AdminCommand::Maintenance(cmd) => return super::ops::maintenance(cmd, &settings),
        other => other,
    };
    if matches!(command, AdminCommand::RotateKey) && settings.encryption_key_file.is_none() {
        return super::usage(
            "rotate-key needs an encryption key file: set CAIRN_ENCRYPTION_KEY_FILE (or encryption_key_file in \
             cairn.toml) to a file with the new key on its first line and the old keys below it",
        );
    }
    cairn_server::serve::init_logging(&settings);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        match execute(command, &settings).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                match e.downcast_ref::<MaintenanceError>() {
                    Some(MaintenanceError::GraceTooShort { .. }) => ExitCode::from(2),
                    _ => ExitCode::from(1),
                }
            }
        }
    })
}

async fn execute(command: AdminCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    // Checked before opening anything, so that a refused gc touches nothing.
    let gc = match &command {
        AdminCommand::Gc { grace_secs, dry_run } => {
            let mut opts = GcOptions::new(Duration::from_secs(settings.upload_expiry_secs));
            if let Some(g) = grace_secs {
                opts.grace = Duration::from_secs(*g);
            }
            opts.dry_run = *dry_run;
            if opts.grace < opts.upload_lifetime {
                return Err(MaintenanceError::GraceTooShort {
                    grace_secs: opts.grace.as_secs(),
                    lifetime_secs: opts.upload_lifetime.as_secs(),
                }
                .into());
            }
            Some(opts)
        }
        _ => None,
    };
    let store = cairn_server::serve::open_store(settings).await?;
    let blobs = cairn_server::app::open_blobs(settings).await?;
    let ctx = maintenance::admin_context();
    let meter = Meter::new();
    let progress = |p: Progress| meter.show(p);
    // The store is closed on every way out, a failed command's included: on PostgreSQL that
    // seals the audit events the command wrote before its connections go.
    let outcome = async {
        Ok::<_, anyhow::Error>(match (command, gc) {
            (AdminCommand::Fsck { json }, _) => {
                let report = maintenance::fsck(&store, &blobs, &progress).await;
                meter.clear();
                let report = report?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print_fsck(&report);
                }
                if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) }
            }
            (AdminCommand::Gc { .. }, Some(opts)) => {
                let report = maintenance::gc(&store, &blobs, &ctx, &opts, &progress).await;
                meter.clear();
                let report = report?;
                print_gc(&report);
                if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
            }
            (AdminCommand::RotateKey, _) => {
                let report = maintenance::rotate_keys(&store, &blobs, &ctx, &progress).await;
                meter.clear();
                let report = report?;
                print_rotate(&report);
                if report.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
            }
            (AdminCommand::Gc { .. }, None) => unreachable!("gc options are built above"),
            (AdminCommand::Users(_) | AdminCommand::Grants(_) | AdminCommand::Gdpr(_), _) => {
                unreachable!("run on the API in `run`")
            }
            (
                AdminCommand::Backup(_)
                | AdminCommand::Restore(_)
                | AdminCommand::CheckConfig { .. }
                | AdminCommand::Maintenance(_),
                _,
            ) => unreachable!("run in `run`"),
        })
    }
    .await;
    store.close().await;
    outcome
}

fn print_fsck(r: &FsckReport) {
    for p in &r.problems {
        let kind = serde_json::to_value(p.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let mut line = format!("{kind:<10} sha256:{} ({} bytes)", p.digest, p.size);
        if !p.reason.is_empty() {
            line.push_str(&format!(": {}", p.reason));
        }
        println!("{line}");
        for user in &p.used_by {
            println!("           used by {user}");
        }
    }
    let listed = r.missing + r.corrupt + r.unreadable + r.orphans;
    if listed > r.problems.len() as u64 {
        println!("… and {} more not listed", listed - r.problems.len() as u64);
    }
    println!(
        "checked {} blobs ({}); {} missing, {} corrupt, {} unreadable, {} orphans; {} skipped (being uploaded or deleted)",
        r.checked,
        human_bytes(r.checked_bytes),
        r.missing,
        r.corrupt,
        r.unreadable,
        r.orphans,
        r.skipped
    );
    if r.is_ok() {
        println!("ok");
    } else {
        println!(
            "PROBLEMS FOUND: the versions named above cannot be downloaded intact; push their files again to repair them"
        );
    }
}

fn print_gc(r: &GcReport) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb} {} unused blobs ({}) and {} orphan objects ({}); grace period {} s",
        r.blobs_deleted,
        human_bytes(r.blob_bytes),
        r.orphans_deleted,
        human_bytes(r.orphan_bytes),
        r.grace_secs
    );
    if r.resumed > 0 {
        println!("({} of them left over by an interrupted run)", r.resumed);
    }
    for f in &r.failures {
        println!("failed    sha256:{}: {}", f.digest, f.reason);
    }
    if r.failed > 0 {
        println!("{} deletions failed; run gc again to retry them", r.failed);
    }
}

fn print_rotate(r: &RotateReport) {
    println!(
        "re-encrypted {} blobs ({}) under key {}; {} already under it; {} skipped (being uploaded or deleted); {} missing",
        r.rotated,
        human_bytes(r.rotated_bytes),
        r.key_id.as_deref().unwrap_or("-"),
        r.current,
        r.skipped,
        r.missing
    );
    for f in &r.failures {
        println!("failed    sha256:{}: {}", f.digest, f.reason);
    }
    if r.failed > 0 {
        println!(
            "{} blobs could not be re-encrypted: keep the old keys in the key file (see cairn admin fsck)",
            r.failed
        );
    } else if r.missing > 0 {
        println!("missing blobs hold no key material; see cairn admin fsck");
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A one-line progress display on stderr, only when stderr is a terminal, at most ten
/// updates a second.
struct Meter {
    enabled: bool,
    last: Mutex<Option<Instant>>,
}

impl Meter {
    fn new() -> Self {
        Self { enabled: std::io::stderr().is_terminal(), last: Mutex::new(None) }
    }

    fn show(&self, p: Progress) {
        if !self.enabled {
            return;
        }
        let Ok(mut last) = self.last.lock() else { return };
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        *last = Some(Instant::now());
        let what = match p.phase {
            Phase::Verifying => "verified",
            Phase::Listing => "listed",
            Phase::Collecting => "collected",
            Phase::Rotating => "re-encrypted or checked",
        };
        eprint!("\r\x1b[2K{what} {} blobs, {}", p.done, human_bytes(p.bytes));
    }

    fn clear(&self) {
        if self.enabled && self.last.lock().is_ok_and(|l| l.is_some()) {
            eprint!("\r\x1b[2K");
        }
    }
}
