//! Artifact scan results, one row per file of a version (`file_scans`). They are written in
//! the transaction that creates the version (summarised in its `version.create` audit event),
//! or by a rescan that replaces them (a `version.rescan` event with the same summary: counts,
//! not the findings). The scanning itself happens
//! in the server (`cairn-scan`), before the transaction, so the database never waits on it.

use cairn_core::{ModelRef, VersionSelector};
use serde::{Deserialize, Serialize};

use crate::db::Conn;
use crate::version::{Version, find as find_version, target};
use crate::{AuditContext, Store, StoreError, audit, params};

/// One file's scan result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct FileScan {
    /// Path in the version.
    pub path: String,
    /// SHA-256 of the file, as in `version_files`.
    pub digest: String,
    /// What the file was read as (`pickle`, `safetensors`, …).
    pub format: String,
    /// `scanned`, `skipped` or `incomplete`.
    pub status: String,
    /// The worst finding, if any.
    pub max_severity: Option<String>,
    /// The scanner's JSON report for the file.
    pub report: String,
    /// Scanner and rule-set version.
    pub scanner: String,
    /// When the bytes were scanned (ms): set by the store for a new result (0), kept for a
    /// result reused from an earlier version.
    pub scanned_at: i64,
}

/// What the audit event of a scan records: counts, not the findings themselves.
#[derive(Serialize)]
pub(crate) struct ScanSummary<'a> {
    scanner: &'a str,
    files: usize,
    incomplete: usize,
    findings_by_severity: std::collections::BTreeMap<&'a str, usize>,
}

fn summary(scans: &[FileScan]) -> ScanSummary<'_> {
    let mut by = std::collections::BTreeMap::new();
    for s in scans {
        if let Some(sev) = s.max_severity.as_deref() {
            *by.entry(sev).or_insert(0) += 1;
        }
    }
    ScanSummary {
        scanner: scans.first().map_or("", |s| s.scanner.as_str()),
        files: scans.len(),
        incomplete: scans.iter().filter(|s| s.status == "incomplete").count(),
        findings_by_severity: by,
    }
}

/// Stores `scans` for the version `version_id` just created with `files`, and returns what
/// its `version.create` event records of them (the scan is part of that change, not an
/// event of its own): a scan of a path or digest not among `files` is refused before
/// anything is sent, and the rows go with the transaction's next call (`Conn::defer`).
pub(crate) async fn insert_for_files<'a>(
    conn: &mut Conn<'_>,
    now: i64,
    version_id: i64,
    scans: &'a [FileScan],
    files: &[cairn_core::manifest::FileEntry],
) -> Result<Option<ScanSummary<'a>>, StoreError> {
    if scans.is_empty() {
        return Ok(None);
    }
    let by_path: std::collections::HashMap<&str, &str> =
        files.iter().map(|f| (f.path.as_str(), f.sha256.as_str())).collect();
    for s in scans {
        if by_path.get(s.path.as_str()) != Some(&s.digest.as_str()) {
            return Err(StoreError::Invalid(format!(
                "a scan result for {:?} does not match a file of the version",
                s.path
            )));
        }
    }
    for s in scans {
        conn.defer(
            "INSERT INTO file_scans (version_id, path, digest, format, status, max_severity, report, scanner, scanned_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            params![
                version_id,
                &s.path,
                &s.digest,
                &s.format,
                &s.status,
                s.max_severity.clone(),
                &s.report,
                &s.scanner,
                if s.scanned_at > 0 { s.scanned_at } else { now }
            ],
        )
        .await?;
    }
    Ok(Some(summary(scans)))
}

/// Stores `scans` for the version `version_id` (rows for paths the version does not have are
/// refused), with an event `action` summarising them. Runs inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    version_id: i64,
    model: &ModelRef,
    number: i64,
    scans: &[FileScan],
    action: &str,
) -> Result<(), StoreError> {
    if scans.is_empty() {
        return Ok(());
    }
    for s in scans {
        let inserted = conn
            .execute(
                "INSERT INTO file_scans (version_id, path, digest, format, status, max_severity, report, scanner, scanned_at) \
                 SELECT $1, path, digest, $3, $4, $5, $6, $7, $8 FROM version_files \
                 WHERE version_id = $1 AND path = $2 AND digest = $9",
                params![
                    version_id,
                    &s.path,
                    &s.format,
                    &s.status,
                    s.max_severity.clone(),
                    &s.report,
                    &s.scanner,
                    if s.scanned_at > 0 { s.scanned_at } else { now },
                    &s.digest
                ],
            )
            .await?;
        if inserted != 1 {
            return Err(StoreError::Invalid(format!(
                "a scan result for {:?} does not match a file of the version",
                s.path
            )));
        }
    }
    audit::record(conn, ctx, now, action, &target(model, number), None::<&()>, Some(&summary(scans))).await
}

impl Store {
    /// The scan results of a version's files, sorted by path; empty when it was never scanned.
    pub async fn version_scans(
        &self,
        model: &ModelRef,
        selector: &VersionSelector,
    ) -> Result<(Version, Vec<FileScan>), StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let version = find_version(&mut conn, model, selector).await?;
        let mut rows: Vec<FileScan> = conn
            .fetch_all(
                "SELECT path, digest, format, status, max_severity, report, scanner, scanned_at \
                 FROM file_scans WHERE version_id = $1",
                params![version.id],
            )
            .await?;
        rows.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((version, rows))
    }

    /// A stored result for the same bytes at the same path from the same scanner, which a new
    /// version can reuse instead of reading the file again. Incomplete results are never
    /// reused: what stopped the read may have been passing.
    pub async fn reusable_scan(&self, digest: &str, path: &str, scanner: &str) -> Result<Option<FileScan>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_optional(
                "SELECT path, digest, format, status, max_severity, report, scanner, scanned_at \
                 FROM file_scans WHERE digest = $1 AND path = $2 AND scanner = $3 AND status <> 'incomplete' LIMIT 1",
                params![digest, path, scanner],
            )
            .await
    }

    /// The files of the MLflow artifact tree under directory `dir` (at most `limit`, by path),
    /// each with the result of `scanner` it can reuse, as [`Store::reusable_scan`] finds it for
    /// its path relative to `dir`: in one call, however many files there are.
    pub async fn artifacts_under_with_scans(
        &self,
        dir: &str,
        limit: usize,
        scanner: &str,
    ) -> Result<Vec<(crate::tracking::ArtifactFile, Option<FileScan>)>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            path: String,
            digest: String,
            size: i64,
            scan_format: Option<String>,
            scan_status: Option<String>,
            scan_max_severity: Option<String>,
            scan_report: Option<String>,
            scan_scanned_at: Option<i64>,
        }
        // `dir/` ≤ path < `dir0` ('0' follows '/', byte by byte): an index range, no LIKE
        // escaping.
        let prefix = format!("{dir}/");
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let path = crate::db::bytewise(&conn, "a.path");
        let sql = format!(
            "SELECT a.path, a.digest, a.size, s.format AS scan_format, s.status AS scan_status, \
             s.max_severity AS scan_max_severity, s.report AS scan_report, s.scanned_at AS scan_scanned_at \
             FROM mlflow_artifacts a LEFT JOIN file_scans s ON s.path = substr(a.path, length($1) + 1) \
             AND s.version_id = (SELECT x.version_id FROM file_scans x WHERE x.digest = a.digest \
             AND x.path = substr(a.path, length($1) + 1) AND x.scanner = $3 AND x.status <> 'incomplete' LIMIT 1) \
             WHERE {path} >= $1 AND {path} < $2 ORDER BY {path} LIMIT $4"
        );
        let rows: Vec<Row> = conn
            .fetch_all(
                sqlx::AssertSqlSafe(sql),
                params![&prefix, format!("{dir}0"), scanner, i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let scan = match (r.scan_format, r.scan_status, r.scan_report, r.scan_scanned_at) {
                    (Some(format), Some(status), Some(report), Some(scanned_at)) => Some(FileScan {
                        path: r.path[prefix.len()..].to_owned(),
                        digest: r.digest.clone(),
                        format,
                        status,
                        max_severity: r.scan_max_severity,
                        report,
                        scanner: scanner.to_owned(),
                        scanned_at,
                    }),
                    _ => None,
                };
                (crate::tracking::ArtifactFile { path: r.path, digest: r.digest, size: r.size }, scan)
            })
            .collect())
    }

    /// Replaces a version's scan results (a rescan with a newer scanner, or of a version
    /// committed before scanning), audited as `version.rescan`.
    pub async fn replace_scans(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        scans: &[FileScan],
    ) -> Result<Version, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let version = find_version(&mut conn, model, selector).await?;
        conn.execute("DELETE FROM file_scans WHERE version_id = $1", params![version.id]).await?;
        insert(&mut conn, ctx, now, version.id, model, version.version, scans, "version.rescan").await?;
        tx.commit().await?;
        Ok(version)
    }
}
