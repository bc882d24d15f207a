//! Scanning a version's files (`cairn-scan`) before the version is committed, so a version is
//! never visible without its scan results: reading each blob through a bounded window on a
//! blocking thread (straight from its file on a local unencrypted store), reusing results for bytes already scanned at the same path, and turning
//! stored results into the API's answer and the policy engine's `scan` facts.

use std::io;
use std::sync::OnceLock;

use cairn_api_types as api;
use cairn_blob::{BlobStore, Digest};
use cairn_core::FileEntry;
use cairn_scan::{FileReport, Scanner, Status};
use cairn_store::scan::FileScan;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::ApiError;

/// Files scanned at once: each holds one blocking thread and a read window of at most 4 MiB.
const CONCURRENCY: usize = 2;

fn scanner() -> &'static Scanner {
    static SCANNER: OnceLock<Scanner> = OnceLock::new();
    SCANNER.get_or_init(Scanner::new)
}

/// A blob read at offsets, from a blocking thread.
struct BlobSource {
    blobs: BlobStore,
    digest: Digest,
    size: u64,
    rt: tokio::runtime::Handle,
}

impl cairn_scan::Source for BlobSource {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let end = offset.saturating_add(buf.len() as u64).min(self.size);
        self.rt.block_on(async {
            let reader = self.blobs.get(&self.digest, Some(offset..end)).await.map_err(io::Error::other)?;
            let mut stream = reader.stream;
            let mut n = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(io::Error::other)?;
                let take = chunk.len().min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&chunk[..take]);
                n += take;
            }
            Ok(n)
        })
    }
}

fn stored(path: String, digest: String, report: &FileReport) -> FileScan {
    FileScan {
        path,
        digest,
        format: report.format.as_str().to_string(),
        status: status_str(report.status).to_string(),
        max_severity: report.max_severity().map(|s| s.as_str().to_string()),
        report: serde_json::to_string(report).unwrap_or_else(|_| "{}".into()),
        scanner: cairn_scan::SCANNER.to_string(),
        scanned_at: 0,
    }
}

/// Scans `files` (whose blobs are in the store) and returns one result per file; nothing
/// when scanning is switched off. A file whose blob is missing is left out: the commit that
/// follows refuses the version anyway.
pub async fn scan_files(state: &AppState, files: &[FileEntry]) -> Result<Vec<FileScan>, ApiError> {
    if !state.settings.scan_artifacts {
        return Ok(Vec::new());
    }
    let started = std::time::Instant::now();
    let results: Vec<Option<FileScan>> = futures::stream::iter(files.iter().cloned())
        .map(|f| scan_one(state, f, true))
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let results: Vec<FileScan> = results.into_iter().flatten().collect();
    tracing::debug!(files = results.len(), ms = started.elapsed().as_millis() as u64, "scanned a version's files");
    Ok(results)
}

/// [`scan_files`] for files whose reusable results were looked up with them: a file with one
/// is not read again, a file without one is scanned.
pub async fn scan_files_looked_up(
    state: &AppState,
    files: &[(FileEntry, Option<FileScan>)],
) -> Result<Vec<FileScan>, ApiError> {
    if !state.settings.scan_artifacts {
        return Ok(Vec::new());
    }
    let results: Vec<Option<FileScan>> = futures::stream::iter(files.iter().cloned())
        .map(|(f, known)| async move {
            match known {
                Some(scan) => Ok(Some(scan)),
                None => scan_one(state, f, false).await,
            }
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(results.into_iter().flatten().collect())
}

/// Scans one file again, ignoring stored results (a rescan).
pub async fn rescan_file(state: &AppState, f: &FileEntry) -> Result<Option<FileScan>, ApiError> {
    scan_one(state, f.clone(), false).await
}

async fn scan_one(state: &AppState, f: FileEntry, reuse: bool) -> Result<Option<FileScan>, ApiError> {
    let path = f.path.as_str().to_string();
    if reuse && let Some(previous) = state.store.reusable_scan(&f.sha256, &path, cairn_scan::SCANNER).await? {
        return Ok(Some(previous));
    }
    let Ok(digest) = f.sha256.parse::<Digest>() else { return Ok(None) };
    match state.blobs.stat(&digest).await {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(None),
        Err(e) => {
            // Never a silent pass: the file counts as unread, so `scan.clean` is false until a
            // rescan reads it.
            let mut report = FileReport::skipped();
            report.fail(format!("the blob could not be read: {e}"));
            return Ok(Some(stored(path, f.sha256, &report)));
        }
    }
    let src = BlobSource { blobs: state.blobs.clone(), digest, size: f.size, rt: tokio::runtime::Handle::current() };
    let file = state.blobs.plaintext_file(&digest);
    let name = path.clone();
    let report = tokio::task::spawn_blocking(move || {
        // A local, unencrypted store: read the blob's file directly (at file speed); else
        // through the store, a window at a time.
        match file
            .and_then(|p| cairn_scan::FileSource::open(&p).ok())
            .filter(|f| cairn_scan::Source::len(f) == src.size)
        {
            Some(local) => scanner().scan(&name, &local),
            None => scanner().scan(&name, &src),
        }
    })
    .await
    .map_err(|e| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the scanner stopped: {e}"))
    })?;
    Ok(Some(stored(path, f.sha256, &report)))
}

fn report_of(s: &FileScan) -> FileReport {
    serde_json::from_str(&s.report).unwrap_or_else(|_| {
        let mut r = FileReport::skipped();
        r.fail("the stored report could not be read");
        r
    })
}

/// Totals over results.
pub fn summarize(files: &[api::FileScanResult]) -> api::ScanSummary {
    let mut s = api::ScanSummary { scanned: !files.is_empty(), files: files.len() as u64, ..Default::default() };
    let mut worst: Option<cairn_scan::Severity> = None;
    for f in files {
        match f.status.as_str() {
            "skipped" => s.skipped += 1,
            "incomplete" => s.incomplete += 1,
            _ => {}
        }
        for x in &f.findings {
            *s.findings.entry(x.severity.clone()).or_insert(0) += 1;
            worst = worst.max(x.severity.parse().ok());
        }
        if let Some(l) = &f.license
            && !s.licenses.contains(l)
        {
            s.licenses.push(l.clone());
        }
    }
    s.max_severity = worst.map(|w| w.as_str().to_string());
    s.clean = s.scanned && s.findings.is_empty() && s.incomplete == 0;
    s
}

/// Totals over stored results.
pub fn summary(scans: &[FileScan]) -> api::ScanSummary {
    summarize(&scans.iter().map(file_result).collect::<Vec<_>>())
}

/// The API's view of one file's report.
pub fn result(path: String, sha256: String, r: FileReport, scanner: String, scanned_at: String) -> api::FileScanResult {
    api::FileScanResult {
        path,
        sha256,
        format: r.format.as_str().to_string(),
        status: status_str(r.status).to_string(),
        max_severity: r.max_severity().map(|s| s.as_str().to_string()),
        findings: r
            .findings
            .into_iter()
            .map(|f| api::ScanFinding {
                rule: f.rule,
                severity: f.severity.as_str().to_string(),
                message: f.message,
                subject: f.subject,
                location: f.location,
            })
            .collect(),
        imports: r.imports,
        license: r.license,
        error: r.error,
        scanner,
        scanned_at,
    }
}

/// The API's view of one stored result.
pub fn file_result(s: &FileScan) -> api::FileScanResult {
    result(s.path.clone(), s.digest.clone(), report_of(s), s.scanner.clone(), crate::convert::rfc3339(s.scanned_at))
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Scanned => "scanned",
        Status::Skipped => "skipped",
        Status::Incomplete => "incomplete",
    }
}

/// The `scan` facts policies read (docs/POLICIES.md), or `None` for a version never scanned
/// (so rules on `scan` fail closed). `card_license` is the card's licence, mapped to SPDX and
/// added to `scan.licenses`.
pub fn facts(scans: &[FileScan], card_license: Option<&str>) -> Option<Value> {
    if scans.is_empty() {
        return None;
    }
    let s = summary(scans);
    let mut findings = Vec::new();
    let mut incomplete = Vec::new();
    for scan in scans {
        let r = report_of(scan);
        if r.status == Status::Incomplete {
            incomplete.push(json!(scan.path));
        }
        for f in r.findings {
            findings.push(json!({
                "path": scan.path, "rule": f.rule, "severity": f.severity.as_str(), "subject": f.subject,
            }));
        }
    }
    let mut licenses = s.licenses.clone();
    if let Some(l) = card_license.and_then(cairn_scan::license::from_card)
        && !licenses.contains(&l)
    {
        licenses.push(l);
    }
    let count = |sev: &str| s.findings.get(sev).copied().unwrap_or(0);
    Some(json!({
        "clean": s.clean,
        "max_severity": s.max_severity,
        "critical": count("critical"),
        "high": count("high"),
        "medium": count("medium"),
        "low": count("low"),
        "findings": findings,
        "incomplete": incomplete,
        "licenses": licenses,
        "files": s.files,
        "scanner": scans[0].scanner,
    }))
}
