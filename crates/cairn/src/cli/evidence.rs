//! `cairn evidence export|verify`: a version's evidence bundle (docs/AUDIT.md#evidence-bundles),
//! downloaded from the server, and checked offline with the registry's public key alone.
//!
//! Exit status of `verify`: 0 when every check passes; 1 when any fails (a changed byte, a
//! missing or extra member, a bad signature, a broken chain, an unsafe archive); 2 for a file
//! that is not there or a key that cannot be read.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::UsageError;

/// Arguments of `cairn evidence`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  cairn evidence export team/chat:3 -o chat-3.tar.gz\n  \
                        cairn evidence verify chat-3.tar.gz --public-key registry.pub")]
pub struct EvidenceArgs {
    #[command(subcommand)]
    command: EvidenceCommand,
}

#[derive(Subcommand, Debug)]
enum EvidenceCommand {
    /// Download a version's evidence bundle (needs audit.read: auditors and admins)
    Export {
        /// The version: namespace/name:N, namespace/name@alias or namespace/name:1.4.2
        reference: String,
        /// Where to write the bundle (default: NAMESPACE-NAME-N.evidence.tar.gz)
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Check a bundle offline: index signature, every member's digest, the manifest, the
    /// version's signature and the audit chain
    Verify {
        /// The bundle (.tar.gz)
        bundle: PathBuf,
        /// The registry's public key (PEM, from /.well-known/cairn/signing-keys); repeatable
        #[arg(long = "public-key", value_name = "KEY", required = true)]
        public_keys: Vec<PathBuf>,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

/// Runs `cairn evidence`.
pub async fn run(args: EvidenceArgs) -> ExitCode {
    let run = async {
        match args.command {
            EvidenceCommand::Export { reference, output } => export(&reference, output).await,
            EvidenceCommand::Verify { bundle, public_keys, json } => verify(bundle, &public_keys, json).await,
        }
    };
    match run.await {
        Ok(code) => code,
        Err(e) => super::fail(&e),
    }
}

async fn export(reference: &str, output: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let r = cairn_core::VersionRef::parse(reference).map_err(|e| UsageError(e.to_string()))?;
    let version = r.selector.to_string();
    let client = super::client()?;
    let mut download = client.evidence(&r.model.to_string(), &version).await?;
    let out = output.unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}-{}-{}.evidence.tar.gz",
            r.model.namespace,
            r.model.name,
            version.trim_start_matches('@')
        ))
    });
    // Written beside the target and renamed at the end: a cut download leaves no bundle.
    let partial = out.with_extension("part");
    let mut file = std::fs::File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?;
    let mut written = 0u64;
    while let Some(chunk) = download.chunk().await? {
        file.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    file.sync_all()?;
    if download.length.is_some_and(|l| l != written) {
        let _ = std::fs::remove_file(&partial);
        anyhow::bail!("the download was cut short ({written} of {} bytes)", download.length.unwrap_or(0));
    }
    std::fs::rename(&partial, &out)?;
    println!("Wrote {} ({written} bytes)", out.display());
    Ok(ExitCode::SUCCESS)
}

async fn verify(bundle: PathBuf, keys: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    if !bundle.is_file() {
        return Err(UsageError(format!("{} is not a file", bundle.display())).into());
    }
    let trusted = super::audit::read_public_keys(keys)?;
    let result = tokio::task::spawn_blocking(move || cairn_audit::evidence::verify_file(&bundle, &trusted))
        .await
        .context("the verifier stopped")?;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("FAILED: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": report.ok(), "model": report.model, "version": report.version, "digest": report.digest,
                "audit_events": report.audit_events, "problems": report.problems,
                "checks": report.checks.iter().map(|(c, ok)| serde_json::json!({"check": c, "passed": ok})).collect::<Vec<_>>(),
            }))?
        );
    } else {
        println!("{}:{} ({})", report.model, report.version, report.digest);
        for (check, passed) in &report.checks {
            println!("  {} {check}", if *passed { "ok  " } else { "FAIL" });
        }
        for p in &report.problems {
            println!("  problem: {p}");
        }
        println!(
            "{}: {} audit events about the version verified in the chain",
            if report.ok() { "VERIFIED" } else { "FAILED" },
            report.audit_events
        );
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
