//! `cairn scan`: artifact scanning of a local directory or file (offline, the same scanner the
//! server runs at commit), or the stored results of a version on a server (`ns/name:3`,
//! `--rescan` to scan it again there).
//!
//! Exit status: 0 when nothing at or above `--fail-on` was found and every file could be read
//! to the end; 1 otherwise; 2 for input that cannot be read.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_api_types as api;
use cairn_scan::{FileSource, Scanner, Severity};
use cairn_server::scanning;
use clap::Args;

use super::UsageError;

/// Arguments of `cairn scan`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  cairn scan ./my-model\n  cairn scan model.pkl --json\n  \
                        cairn scan vision/resnet:3\n  cairn scan vision/resnet@champion --rescan --fail-on high")]
pub struct ScanArgs {
    /// A directory or file to scan here, or a version on the server (namespace/name:N or namespace/name@alias)
    pub target: String,
    /// Fail (exit 1) on findings of this severity or worse: low, medium, high, critical
    #[arg(long, default_value = "low")]
    pub fail_on: Severity,
    /// Print the results as JSON
    #[arg(long)]
    pub json: bool,
    /// For a version on the server: scan its files again there (needs write access) instead of showing the stored results
    #[arg(long)]
    pub rescan: bool,
}

pub async fn run(args: ScanArgs) -> ExitCode {
    match scan(&args).await {
        Ok(code) => code,
        Err(e) => super::fail(&e),
    }
}

async fn scan(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let local = Path::new(&args.target);
    let result = if local.exists() {
        if args.rescan {
            return Err(UsageError("--rescan is for a version on a server, not a local path".into()).into());
        }
        let path = local.to_path_buf();
        tokio::task::spawn_blocking(move || scan_local(&path)).await.context("the scanner stopped")??
    } else {
        let (model, version) = parse_reference(&args.target)?;
        let client = super::client()?;
        if args.rescan {
            client.rescan_version(&model, &version).await?
        } else {
            client.version_scan(&model, &version).await?
        }
    };
    if args.json {
        super::print_json(&result)?;
    } else {
        print(&result);
    }
    let worst = result.summary.max_severity.as_deref().and_then(|s| s.parse::<Severity>().ok());
    let failed = worst.is_some_and(|w| w >= args.fail_on) || result.summary.incomplete > 0 || !result.summary.scanned;
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Arguments of `cairn sbom`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  cairn sbom vision/resnet:3 -o resnet-3.cdx.json\n  cairn sbom vision/resnet@champion"
)]
pub struct SbomArgs {
    /// The version: namespace/name:N or namespace/name@alias
    #[arg(value_name = "VERSION")]
    pub reference: String,
    /// Write it to this file instead of standard output
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
}

/// `cairn sbom`: a version's CycloneDX 1.6 ML-BOM.
pub async fn sbom(args: SbomArgs) -> ExitCode {
    let run = async {
        let (model, version) = parse_reference(&args.reference)?;
        let bom = super::client()?.get_sbom(&model, &version).await?;
        match &args.output {
            Some(path) => std::fs::write(path, &bom).with_context(|| format!("cannot write {}", path.display()))?,
            None => println!("{}", String::from_utf8_lossy(&bom)),
        }
        anyhow::Ok(ExitCode::SUCCESS)
    };
    match run.await {
        Ok(code) => code,
        Err(e) => super::fail(&e),
    }
}

/// `ns/name:3` or `ns/name@alias` → (`ns/name`, `3` | `@alias`).
fn parse_reference(s: &str) -> Result<(String, String), UsageError> {
    let bad = || {
        UsageError(format!(
            "{s:?} is neither a file or directory here nor a version (namespace/name:VERSION or namespace/name@ALIAS)"
        ))
    };
    let (model, version) = match (s.split_once('@'), s.split_once(':')) {
        (Some((m, a)), _) if !a.is_empty() => (m, format!("@{a}")),
        (_, Some((m, v))) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => (m, v.to_owned()),
        _ => return Err(bad()),
    };
    match model.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((model.to_owned(), version))
        }
        _ => Err(bad()),
    }
}

/// Scans a file, or every file under a directory (as `cairn push` would send them).
fn scan_local(path: &Path) -> anyhow::Result<api::VersionScan> {
    let scanner = Scanner::new();
    let files: Vec<(String, std::path::PathBuf)> = if path.is_dir() {
        let walk = crate::tree::walk(path).map_err(|e| UsageError(format!("{e:#}")))?;
        walk.files.into_iter().map(|f| (f.path.as_str().to_owned(), f.disk)).collect()
    } else {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        vec![(name, path.to_path_buf())]
    };
    let mut results = Vec::with_capacity(files.len());
    for (name, disk) in files {
        let src = FileSource::open(&disk).with_context(|| format!("cannot read {}", disk.display()))?;
        let (sha256, _) = crate::tree::hash_file(&disk, |_| {})?;
        let report = scanner.scan(&name, &src);
        results.push(scanning::result(name, sha256, report, cairn_scan::SCANNER.to_owned(), String::new()));
    }
    let mut summary = scanning::summarize(&results);
    summary.scanned = true;
    Ok(api::VersionScan {
        namespace: String::new(),
        name: path.display().to_string(),
        version: 0,
        digest: String::new(),
        summary,
        files: results,
    })
}

/// A one-line summary, for `cairn push`.
pub fn one_line(scan: &api::VersionScan, reference: &str) -> String {
    let s = &scan.summary;
    if s.clean {
        return format!("Scan: {} file(s), nothing found", s.files);
    }
    let counts: Vec<String> = ["critical", "high", "medium", "low"]
        .iter()
        .filter_map(|k| s.findings.get(*k).map(|n| format!("{n} {k}")))
        .collect();
    let files: Vec<&str> =
        scan.files.iter().filter(|f| !f.findings.is_empty()).map(|f| f.path.as_str()).take(3).collect();
    let mut line = format!("Scan: findings ({}) in {}", counts.join(", "), files.join(", "));
    if s.incomplete > 0 {
        line.push_str(&format!("; {} file(s) could not be read to the end", s.incomplete));
    }
    line.push_str(&format!("; details: cairn scan {reference}"));
    line
}

fn print(scan: &api::VersionScan) {
    let width = scan.files.iter().map(|f| f.path.len()).max().unwrap_or(0).min(60);
    for f in &scan.files {
        let note = match (&f.license, &f.error) {
            (Some(l), _) => format!(" ({l})"),
            (_, Some(e)) => format!(" ({e})"),
            _ => String::new(),
        };
        let verdict = if f.findings.is_empty() { "ok" } else { "FINDINGS" };
        println!("{:<width$}  {:<11}  {:<10}  {verdict}{note}", f.path, f.format, f.status);
        for x in &f.findings {
            let at = x.location.as_deref().map(|l| format!(" [{l}]")).unwrap_or_default();
            println!("    {:<8} {}: {}{at}", x.severity.to_uppercase(), x.rule, x.message);
        }
    }
    let s = &scan.summary;
    if !s.scanned {
        println!(
            "not scanned: the server had artifact scanning switched off when this version was committed (try --rescan)"
        );
        return;
    }
    let counts: Vec<String> = ["critical", "high", "medium", "low"]
        .iter()
        .filter_map(|k| s.findings.get(*k).map(|n| format!("{n} {k}")))
        .collect();
    println!(
        "{} file(s), {} skipped, {} incomplete; findings: {}; licences: {}",
        s.files,
        s.skipped,
        s.incomplete,
        if counts.is_empty() { "none".to_owned() } else { counts.join(", ") },
        if s.licenses.is_empty() { "none found".to_owned() } else { s.licenses.join(", ") }
    );
}
