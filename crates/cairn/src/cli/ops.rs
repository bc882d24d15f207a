//! `cairn admin check-config` and `cairn admin maintenance …`: operating a deployment.
//!
//! `check-config` validates what `cairn serve` would start with — settings, certificate and
//! key files, the encryption and signing keys, and with `--connect` the database and the
//! blob store — without starting, binding or writing anything. `maintenance` switches the
//! read-only mode that every replica obeys (it is a row in the shared database).

use std::process::ExitCode;

use cairn_server::Settings;
use cairn_server::settings::redact_url;
use cairn_store::DbOptions;
use clap::Subcommand;

/// `cairn admin maintenance …`.
#[derive(Subcommand, Debug)]
pub enum MaintenanceCommand {
    /// Refuse writes on every replica (503 with Retry-After); reads and downloads keep working
    On {
        /// What clients are told, e.g. "backup until 02:00 UTC"
        #[arg(long, default_value = "maintenance by an administrator")]
        message: String,
    },
    /// Accept writes again
    Off,
    /// Show whether maintenance mode is on (exit 0 either way)
    Status,
}

/// Validates the settings as `cairn serve` would, and more. Exit 0 valid, 2 invalid.
pub fn check_config(settings: &Settings, connect: bool) -> ExitCode {
    let mut problems: Vec<String> = Vec::new();
    if let (Some(cert), Some(key)) = (&settings.tls_cert_file, &settings.tls_key_file)
        && let Err(e) = cairn_server::tls::server_config(cert, key)
    {
        problems.push(format!("{e:#}"));
    }
    let signing = settings.signing_key_path();
    match std::fs::read_to_string(&signing) {
        Ok(text) => {
            if let Err(e) = cairn_audit::SigningKey::from_pem(&text) {
                problems.push(format!("signing_key_file (CAIRN_SIGNING_KEY_FILE) {}: {e}", signing.display()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && settings.signing_key_file.is_some() => {
            problems.push(format!(
                "signing_key_file (CAIRN_SIGNING_KEY_FILE) {} does not exist; it is only generated at the default place",
                signing.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("signing_key_file (CAIRN_SIGNING_KEY_FILE) {}: {e}", signing.display())),
    }
    let url = settings.database_url();
    let url_ok = url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:");
    if !url_ok {
        problems.push(format!(
            "database_url (CAIRN_DATABASE_URL) '{}' must start with sqlite:// or postgres://",
            redact_url(&url)
        ));
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        // Opening the blob store reads the encryption key file and checks the URL. The
        // default local store is opened in a scratch directory, so checking creates nothing;
        // a configured one (S3, file://) is opened as is and, with --connect, reached.
        let scratch = tempfile::tempdir();
        let mut probe = settings.clone();
        if settings.blob_url.is_none() {
            match &scratch {
                Ok(dir) => probe.data_dir = dir.path().to_path_buf(),
                Err(e) => problems.push(format!("cannot make a scratch directory to check the blob store: {e}")),
            }
        }
        match cairn_server::app::open_blobs(&probe).await {
            Ok(blobs) => {
                if connect
                    && settings.blob_url.is_some()
                    && let Err(e) = blobs.ping().await
                {
                    problems.push(format!("blob store {} is not reachable: {e}", blobs.describe()));
                }
            }
            Err(e) => {
                problems.push(format!("{e:#} (blob_url CAIRN_BLOB_URL, encryption_key_file CAIRN_ENCRYPTION_KEY_FILE)"))
            }
        }
        if connect && url_ok && !new_sqlite_file(&url) {
            // Without migrations or writes: the check changes nothing it reaches.
            let opts = DbOptions { max_connections: 1, ..DbOptions::default() };
            let reachable = match cairn_store::Store::open_existing(&url, &opts).await {
                Ok(store) => {
                    let pinged = store.ping().await;
                    store.close().await;
                    pinged
                }
                Err(e) => Err(e),
            };
            if let Err(e) = reachable {
                problems.push(format!("database {} is not reachable: {e}", redact_url(&url)));
            }
        }
    });
    if problems.is_empty() {
        let scheme = if settings.tls_enabled() { "https" } else { "http" };
        println!("configuration OK");
        println!("  listen       {scheme}://{}", settings.listen);
        println!("  database     {}", redact_url(&url));
        println!(
            "  blob store   {}",
            settings.blob_url.as_deref().map_or_else(|| "local (data dir)".into(), redact_url)
        );
        println!("  data dir     {}", settings.data_dir.display());
        if new_sqlite_file(&url) {
            println!("  (the SQLite database does not exist yet: cairn serve creates it at first start)");
        }
        if !connect {
            println!("  (database and blob store not contacted; add --connect to check that they are reachable)");
        }
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        ExitCode::from(2)
    }
}

/// A SQLite URL whose file does not exist yet: `cairn serve` creates it at first start, so
/// there is nothing to reach (and connecting would create it).
fn new_sqlite_file(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return false;
    };
    let path = rest.split('?').next().unwrap_or(rest);
    path != ":memory:" && !std::path::Path::new(path).exists()
}

/// Switches or shows maintenance mode. Exit 0 done, 1 the database could not be reached.
pub fn maintenance(cmd: MaintenanceCommand, settings: &Settings) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let MaintenanceCommand::On { message } = &cmd
        && message.trim().is_empty()
    {
        return super::usage("maintenance on needs a --message that tells clients why writes are refused");
    }
    rt.block_on(async move {
        let url = settings.database_url();
        let store =
            match cairn_store::Store::open(&url, &DbOptions { max_connections: 1, ..DbOptions::default() }).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: cannot open database {}: {e}", redact_url(&url));
                    return ExitCode::from(1);
                }
            };
        let ctx = cairn_server::maintenance::admin_context();
        let result = match cmd {
            MaintenanceCommand::On { message } => store.set_maintenance(&ctx, Some(message.trim())).await,
            MaintenanceCommand::Off => store.set_maintenance(&ctx, None).await,
            MaintenanceCommand::Status => store.maintenance().await,
        };
        store.close().await;
        match result {
            Ok(Some(m)) => {
                let since = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(m.since) * 1_000_000)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                println!("maintenance mode is ON since {since} (by {}): {}", m.by, m.message);
                println!("every replica refuses writes within a second; reads and downloads keep working");
                ExitCode::SUCCESS
            }
            Ok(None) => {
                println!("maintenance mode is off: writes are accepted");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}
