//! Integrity and maintenance of the artifact store, as `cairn admin` runs them: [`fsck`]
//! (re-hash every blob, find missing, corrupt and orphan objects), [`gc`] (remove blobs that
//! nothing references) and [`rotate_keys`] (re-encrypt every blob under the active key).
//!
//! Each is a plain function over a [`Store`] and a [`BlobStore`] that returns a report; it
//! prints nothing and exits nothing, so it runs the same beside a live server, without one,
//! or in a test. Memory stays bounded however many blobs there are: the database is read a
//! page at a time ([`Store::blobs_after`]), the blob store's listing is a stream, each blob
//! is read as a stream, and the lists in the reports stop at [`MAX_LISTED`] entries (their
//! counts do not).
//!
//! Garbage collection is safe beside running servers because of the bookkeeping in
//! `cairn_store::artifact`: every upload that relies on a blob refreshes its `last_used_at`,
//! and [`Store::gc_claim`] only takes blobs unused for longer than the grace period, with a
//! conditional `UPDATE`. As long as the grace period is at least the upload lifetime, an
//! upload that may still commit has touched every blob it relies on within the grace period,
//! so none of them can be claimed. [`gc`] therefore refuses a shorter grace period.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_blob::{BlobError, BlobStore, Digest, ListedBlob, VerifyOutcome};
use cairn_store::artifact::BlobRow;
use cairn_store::{AuditContext, Store, StoreError};
use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;

/// Entries kept in each list of a report; beyond this only the counts grow.
pub const MAX_LISTED: usize = 1000;

/// Database rows read per page.
const PAGE: i64 = 500;

/// Blobs verified or re-encrypted at once (each one a stream; the runtime spreads them over
/// its threads).
const PARALLEL_READS: usize = 4;

/// Deletions and database look-ups in flight at once.
const PARALLEL_SMALL: usize = 8;

/// The actor recorded in the audit log for changes made by `cairn admin`.
pub const ADMIN_ACTOR: &str = "system:admin-cli";

/// The audit context of `cairn admin`.
pub fn admin_context() -> AuditContext {
    AuditContext { actor: ADMIN_ACTOR.into(), ..AuditContext::default() }
}

/// What can stop a maintenance run (problems found in blobs are reported, not errors).
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The grace period of garbage collection is shorter than the upload lifetime.
    #[error(
        "a grace period of {grace_secs} s is shorter than the upload lifetime ({lifetime_secs} s, upload_expiry_secs): \
         garbage collection could delete blobs that an upload in progress is about to commit; \
         use a grace period of at least {lifetime_secs} s"
    )]
    GraceTooShort {
        /// The grace period asked for.
        grace_secs: u64,
        /// The upload lifetime it must not undercut.
        lifetime_secs: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob store failed (unreachable, misconfigured); not a problem with one blob.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A worker task panicked.
    #[error("a maintenance task failed: {0}")]
    Task(String),
}

/// Which step a run is at, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Re-hashing the blobs the database knows.
    Verifying,
    /// Reading the blob store's listing, looking for objects the database does not know.
    Listing,
    /// Deleting unreferenced blobs.
    Collecting,
    /// Re-encrypting blobs.
    Rotating,
}

/// How far a run has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The current step.
    pub phase: Phase,
    /// Items done in this step.
    pub done: u64,
    /// Bytes (of blob content) done in this step.
    pub bytes: u64,
}

/// Told about progress after every item; must be cheap.
pub type OnProgress<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// What is wrong with one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The database knows the blob as present, the blob store does not have it.
    Missing,
    /// The stored bytes do not hash to the digest, or do not decrypt.
    Corrupt,
    /// Encrypted with a key that the key file does not hold.
    Unreadable,
    /// An object in the blob store that the database does not know (not an error:
    /// `cairn admin gc` removes it once it is older than the grace period).
    Orphan,
}

/// One blob with a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// SHA-256 (hex).
    pub digest: String,
    /// Bytes: the blob's size for known blobs, the stored object's size for orphans.
    pub size: u64,
    /// Details, when there are any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The versions whose files are these bytes, as `ns/name:number path` (at most 100).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// What [`fsck`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// Blobs re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub checked_bytes: u64,
    /// Known blobs not checked because they are being uploaded or deleted right now.
    pub skipped: u64,
    /// Objects in the blob store's listing.
    pub listed: u64,
    /// Known blobs the blob store does not have.
    pub missing: u64,
    /// Blobs whose bytes are damaged.
    pub corrupt: u64,
    /// Blobs under a key that the key file does not hold.
    pub unreadable: u64,
    /// Objects the database does not know.
    pub orphans: u64,
    /// The problems, at most [`MAX_LISTED`] (the counts above are complete).
    pub problems: Vec<Problem>,
}

impl FsckReport {
    /// Nothing is missing, corrupt or unreadable (orphans are only waste).
    pub fn is_ok(&self) -> bool {
        self.missing == 0 && self.corrupt == 0 && self.unreadable == 0
    }

    fn push(&mut self, problem: Problem) {
        match problem.kind {
            ProblemKind::Missing => self.missing += 1,
            ProblemKind::Corrupt => self.corrupt += 1,
            ProblemKind::Unreadable => self.unreadable += 1,
            ProblemKind::Orphan => self.orphans += 1,
        }
        if self.problems.len() < MAX_LISTED {
            self.problems.push(problem);
        }
    }
}

/// Re-hashes every blob the database knows as present (decrypting when needed) and lists
/// the blob store, looking for objects the database does not know. Reads only.
pub async fn fsck(store: &Store, blobs: &BlobStore, progress: OnProgress<'_>) -> Result<FsckReport, MaintenanceError> {
    let mut report = FsckReport::default();
    let mut after = String::new();
    loop {
        let page = store.blobs_after(&after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after.clone_from(&last.digest);
        let mut present = Vec::with_capacity(page.len());
        for row in page {
            match (row.state.as_str(), row.digest.parse::<Digest>()) {
                ("present", Ok(digest)) => present.push((row, digest)),
                ("present", Err(e)) => report.push(Problem {
                    kind: ProblemKind::Corrupt,
                    digest: row.digest.clone(),
                    size: size_of(&row),
                    reason: format!("the database holds an invalid digest: {e}"),
                    used_by: store.blob_users(&row.digest).await?,
                }),
                _ => report.skipped += 1,
            }
        }
        let mut checks = stream::iter(present)
            .map(|(row, digest)| {
                let blobs = blobs.clone();
                async move {
                    let outcome = tokio::spawn(async move { blobs.verify(&digest).await })
                        .await
                        .map_err(|e| MaintenanceError::Task(e.to_string()))?;
                    Ok::<_, MaintenanceError>((row, outcome))
                }
            })
            .buffer_unordered(PARALLEL_READS);
        while let Some(checked) = checks.next().await {
            let (row, outcome) = checked?;
            let (kind, reason) = match outcome {
                Ok(VerifyOutcome::Ok) => (None, String::new()),
                Ok(VerifyOutcome::Missing) => (Some(ProblemKind::Missing), String::new()),
                Ok(VerifyOutcome::Corrupt(reason)) => (Some(ProblemKind::Corrupt), reason),
                Err(e @ BlobError::UnknownKey(_)) => (Some(ProblemKind::Unreadable), e.to_string()),
                Err(e) => return Err(e.into()),
            };
            report.checked += 1;
            report.checked_bytes += size_of(&row);
            if let Some(kind) = kind {
                let used_by = store.blob_users(&row.digest).await?;
                report.push(Problem { kind, size: size_of(&row), digest: row.digest, reason, used_by });
            }
            progress(Progress { phase: Phase::Verifying, done: report.checked, bytes: report.checked_bytes });
        }
    }
    let mut listed_bytes = 0;
    let mut unknown = blobs
        .list()
        .map_err(MaintenanceError::from)
        .map_ok(|object| async move {
            let known = store.blob(&object.digest.to_hex()).await?.is_some();
            Ok::<_, MaintenanceError>((object, known))
        })
        .try_buffer_unordered(PARALLEL_SMALL);
    while let Some((object, known)) = unknown.try_next().await? {
        report.listed += 1;
        listed_bytes += object.stored_size;
        if !known {
            report.push(Problem {
                kind: ProblemKind::Orphan,
                digest: object.digest.to_hex(),
                size: object.stored_size,
                reason: String::new(),
                used_by: Vec::new(),
            });
        }
        progress(Progress { phase: Phase::Listing, done: report.listed, bytes: listed_bytes });
    }
    Ok(report)
}

/// How [`gc`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Blobs unused for longer than this go (and orphan objects older than this).
    pub grace: Duration,
    /// How long an upload may stay uncommitted (`upload_expiry_secs`); `grace` may not be
    /// shorter.
    pub upload_lifetime: Duration,
    /// Only count what would go.
    pub dry_run: bool,
}

impl GcOptions {
    /// The default: a grace period of twice the upload lifetime.
    pub fn new(upload_lifetime: Duration) -> Self {
        Self { grace: upload_lifetime.saturating_mul(2), upload_lifetime, dry_run: false }
    }
}

/// A blob that could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// SHA-256 (hex).
    pub digest: String,
    /// What went wrong.
    pub reason: String,
}

/// What [`gc`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Nothing was deleted; the counts say what would have been.
    pub dry_run: bool,
    /// The grace period used, in seconds.
    pub grace_secs: u64,
    /// Unreferenced blobs deleted.
    pub blobs_deleted: u64,
    /// Their size in bytes (of content; encrypted objects are slightly larger on disk).
    pub blob_bytes: u64,
    /// Of those, deletions that an earlier, interrupted run had claimed and this run finished.
    pub resumed: u64,
    /// Objects the database did not know, deleted.
    pub orphans_deleted: u64,
    /// Their stored size in bytes.
    pub orphan_bytes: u64,
    /// Blobs whose deletion failed; the next run retries them.
    pub failed: u64,
    /// The failures, at most [`MAX_LISTED`].
    pub failures: Vec<Failure>,
}

impl GcReport {
    fn fail(&mut self, digest: &str, reason: impl std::fmt::Display) {
        self.failed += 1;
        if self.failures.len() < MAX_LISTED {
            self.failures.push(Failure { digest: digest.to_owned(), reason: reason.to_string() });
        }
    }
}

/// Removes blobs that no version and no open upload references and that nobody relied on
/// during the grace period, then objects in the blob store that the database does not know
/// and that are older than the grace period. Each deletion is audited as `blob.gc` (or
/// `blob.gc_orphan`), and the run as `maintenance.gc`, under `ctx`.
///
/// Refuses a grace period shorter than the upload lifetime (see the module docs).
pub async fn gc(
    store: &Store,
    blobs: &BlobStore,
    ctx: &AuditContext,
    opts: &GcOptions,
    progress: OnProgress<'_>,
) -> Result<GcReport, MaintenanceError> {
    if opts.grace < opts.upload_lifetime {
        return Err(MaintenanceError::GraceTooShort {
            grace_secs: opts.grace.as_secs(),
            lifetime_secs: opts.upload_lifetime.as_secs(),
        });
    }
    let mut report = GcReport { dry_run: opts.dry_run, grace_secs: opts.grace.as_secs(), ..GcReport::default() };
    let cutoff = store.now().saturating_sub(i64::try_from(opts.grace.as_millis()).unwrap_or(i64::MAX));
    let mut done = 0;
    let mut step = |report: &GcReport| {
        done += 1;
        progress(Progress { phase: Phase::Collecting, done, bytes: report.blob_bytes + report.orphan_bytes });
    };

    // Scan once: in a dry run for what a claim would take, otherwise for blobs that an
    // interrupted run claimed but did not delete (they stay `deleting`, which also blocks
    // new uploads of those bytes, until someone finishes them).
    let mut leftovers = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.blobs_after(&after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after.clone_from(&last.digest);
        for row in page {
            if row.state == "deleting" {
                if opts.dry_run {
                    report.resumed += 1;
                    report.blobs_deleted += 1;
                    report.blob_bytes += size_of(&row);
                } else {
                    leftovers.push(row);
                }
            } else if opts.dry_run && row.last_used_at < cutoff && would_claim(store, &row.digest).await? {
                report.blobs_deleted += 1;
                report.blob_bytes += size_of(&row);
                step(&report);
            }
        }
        if !leftovers.is_empty() {
            let rows = std::mem::take(&mut leftovers);
            report.resumed += rows.len() as u64;
            delete_claimed(store, blobs, ctx, rows, &mut report, &mut step).await?;
        }
    }
    if !opts.dry_run {
        loop {
            let claimed = store.gc_claim(cutoff, PAGE).await?;
            if claimed.is_empty() {
                break;
            }
            delete_claimed(store, blobs, ctx, claimed, &mut report, &mut step).await?;
        }
    }

    // Objects the database does not know: left by a crash between publishing and recording,
    // or by restoring an older database. The age check keeps uploads in flight safe.
    let mut orphans = blobs
        .list()
        .map_err(MaintenanceError::from)
        .try_filter(|object| std::future::ready(millis(object.last_modified) < cutoff))
        .map_ok(|object| async move {
            let known = store.blob(&object.digest.to_hex()).await?.is_some();
            Ok::<_, MaintenanceError>((object, known))
        })
        .try_buffer_unordered(PARALLEL_SMALL);
    while let Some((object, known)) = orphans.try_next().await? {
        if known {
            continue;
        }
        let hex = object.digest.to_hex();
        if !opts.dry_run {
            if let Err(e) = blobs.delete(&object.digest).await {
                report.fail(&hex, e);
                continue;
            }
            store.record_event(ctx, "blob.gc_orphan", &format!("blob:{hex}"), "success").await?;
            warn_if_adopted(store, &object).await?;
        }
        report.orphans_deleted += 1;
        report.orphan_bytes += object.stored_size;
        step(&report);
    }
    if !opts.dry_run {
        let outcome = if report.failed == 0 { "success" } else { "failure" };
        store.record_event(ctx, "maintenance.gc", "blobs", outcome).await?;
    }
    Ok(report)
}

/// Whether [`Store::gc_claim`] would take this old-enough blob: nothing references it.
/// Open uploads are covered by the age check: each refreshes the blobs it declares.
async fn would_claim(store: &Store, digest: &str) -> Result<bool, MaintenanceError> {
    Ok(store.blob_users(digest).await?.is_empty() && store.blob_upload(digest).await?.is_none())
}

/// Deletes claimed blobs from the blob store and forgets them; a failure leaves the row
/// claimed for the next run.
async fn delete_claimed(
    store: &Store,
    blobs: &BlobStore,
    ctx: &AuditContext,
    rows: Vec<BlobRow>,
    report: &mut GcReport,
    step: &mut impl FnMut(&GcReport),
) -> Result<(), MaintenanceError> {
    let mut deletions = stream::iter(rows)
        .map(|row| async move {
            let result = match row.digest.parse::<Digest>() {
                Ok(digest) => blobs.delete(&digest).await.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the database holds an invalid digest: {e}")),
            };
            (row, result)
        })
        .buffer_unordered(PARALLEL_SMALL);
    while let Some((row, result)) = deletions.next().await {
        if let Err(reason) = result {
            tracing::warn!(digest = %row.digest, %reason, "could not delete an unreferenced blob; the next gc retries");
            report.fail(&row.digest, reason);
            continue;
        }
        store.gc_forget(&row.digest).await?;
        store.record_event(ctx, "blob.gc", &format!("blob:{}", row.digest), "success").await?;
        report.blobs_deleted += 1;
        report.blob_bytes += size_of(&row);
        step(report);
    }
    Ok(())
}

/// An upload that reused an orphan object between our look-up and the deletion would now
/// rely on bytes that are gone. The window is a few milliseconds on an object older than
/// the grace period; say so loudly if it happened, so that fsck and a re-push can repair it.
async fn warn_if_adopted(store: &Store, object: &ListedBlob) -> Result<(), MaintenanceError> {
    let hex = object.digest.to_hex();
    if let Some(row) = store.blob(&hex).await? {
        tracing::warn!(
            digest = %hex,
            state = %row.state,
            "an upload adopted this orphan blob while gc deleted it; run `cairn admin fsck` and push the files again"
        );
    }
    Ok(())
}

/// What [`rotate_keys`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RotateReport {
    /// The active key's id, as the re-encrypted blobs record it (`None` if no blob was seen).
    pub key_id: Option<String>,
    /// Blobs re-encrypted under the active key.
    pub rotated: u64,
    /// Their size in bytes.
    pub rotated_bytes: u64,
    /// Blobs already under the active key.
    pub current: u64,
    /// Known blobs not touched because they are being uploaded or deleted right now.
    pub skipped: u64,
    /// Known blobs the blob store does not have (see `cairn admin fsck`).
    pub missing: u64,
    /// Blobs that could not be re-encrypted (corrupt, or under a key the file lacks).
    pub failed: u64,
    /// The failures, at most [`MAX_LISTED`].
    pub failures: Vec<Failure>,
}

/// Re-encrypts every blob the database knows as present under the active key of the blob
/// store's key file (blobs stored under an older key or unencrypted). Each rewrite is
/// audited as `blob.rotate_key`, the run as `maintenance.rotate_key` on `key:<id>`.
///
/// Servers must run with the new key file first, or they keep writing under the old key.
pub async fn rotate_keys(
    store: &Store,
    blobs: &BlobStore,
    ctx: &AuditContext,
    progress: OnProgress<'_>,
) -> Result<RotateReport, MaintenanceError> {
    let mut report = RotateReport::default();
    let mut done = 0;
    let mut after = String::new();
    loop {
        let page = store.blobs_after(&after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after.clone_from(&last.digest);
        let mut present = Vec::with_capacity(page.len());
        for row in page {
            match (row.state.as_str(), row.digest.parse::<Digest>()) {
                ("present", Ok(digest)) => present.push((row, digest)),
                ("present", Err(e)) => {
                    report.failed += 1;
                    push_capped(&mut report.failures, &row.digest, format!("invalid digest in the database: {e}"));
                }
                _ => report.skipped += 1,
            }
        }
        let mut rotations = stream::iter(present)
            .map(|(row, digest)| {
                let blobs = blobs.clone();
                async move {
                    let result = tokio::spawn(async move { blobs.rotate_key(&digest).await })
                        .await
                        .map_err(|e| MaintenanceError::Task(e.to_string()))?;
                    Ok::<_, MaintenanceError>((row, digest, result))
                }
            })
            .buffer_unordered(PARALLEL_READS);
        while let Some(rotated) = rotations.next().await {
            let (row, digest, result) = rotated?;
            match result {
                Ok(rewritten) => {
                    if rewritten {
                        store.record_event(ctx, "blob.rotate_key", &format!("blob:{}", row.digest), "success").await?;
                        report.rotated += 1;
                        report.rotated_bytes += size_of(&row);
                    } else {
                        report.current += 1;
                    }
                    if report.key_id.is_none() {
                        // The blob store does not name its active key; a blob under it does.
                        report.key_id = blobs.stat(&digest).await.ok().flatten().and_then(|info| info.key_id);
                    }
                }
                Err(BlobError::NotFound(_)) => report.missing += 1,
                Err(e @ (BlobError::Corrupt { .. } | BlobError::UnknownKey(_))) => {
                    report.failed += 1;
                    push_capped(&mut report.failures, &row.digest, e.to_string());
                }
                Err(e) => return Err(e.into()),
            }
            done += 1;
            progress(Progress { phase: Phase::Rotating, done, bytes: report.rotated_bytes });
        }
    }
    let target = format!("key:{}", report.key_id.as_deref().unwrap_or("unknown"));
    let outcome = if report.failed == 0 { "success" } else { "failure" };
    store.record_event(ctx, "maintenance.rotate_key", &target, outcome).await?;
    Ok(report)
}

fn push_capped(list: &mut Vec<Failure>, digest: &str, reason: String) {
    if list.len() < MAX_LISTED {
        list.push(Failure { digest: digest.to_owned(), reason });
    }
}

fn size_of(row: &BlobRow) -> u64 {
    u64::try_from(row.size).unwrap_or(0)
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
