//! Backups of a registry, and restores from them, as `cairn admin backup` and
//! `cairn admin restore` run them (docs/BACKUP.md).
//!
//! A backup is a directory (or an `s3://bucket/prefix`) holding:
//!
//! ```text
//! manifest.json                       what the backup holds, written last: a backup without
//!                                     it never finished
//! snapshots/<id>/cairn.db             SQLite: a consistent copy (VACUUM INTO)
//! snapshots/<id>/tables/<table>.copy  PostgreSQL: each table in COPY text format, all read
//!                                     in one REPEATABLE READ snapshot
//! snapshots/<id>/blobs.jsonl          the blob inventory: {"digest":…,"size":…} per line
//! blobs/sha256/<xx>/<hex>             local blob store only: the stored objects, as stored
//!                                     (encrypted when the store encrypts)
//! ```
//!
//! In a directory every file is written under a temporary name, fsynced and renamed into
//! place, and in S3 every object appears whole when its upload completes, so a killed backup
//! never leaves a half file under a final name; the previous backup's manifest and
//! snapshot stay valid until the new manifest replaces them, and only then is the old
//! snapshot removed. Blobs are named by their digest, so a blob already in the destination
//! is not copied again: backups into the same destination are incremental.
//!
//! [`restore`] refuses (touching nothing) unless the target database and blob directory are
//! empty, checks every file of the backup against the manifest's SHA-256 before writing
//! anything, loads the metadata, copies the blobs back, and then re-hashes every blob
//! ([`crate::maintenance::fsck`]) and verifies the audit chain
//! ([`cairn_store::Store::verify_audit_chain`]) before it reports success.
//!
//! Nothing here prints or exits: the functions return reports, and the CLI picks the words
//! and the exit code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use cairn_audit::{PublicKey, Report, SigningKey};
use cairn_blob::{BlobError, Digest};
use cairn_store::backup::{InventoryEntry, PgImport, SqliteSnapshot, TableInfo, latest_migration};
use cairn_store::{Backend, DbOptions, Store, StoreError};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::maintenance::{self, FsckReport, MaintenanceError};
use crate::settings::{Settings, redact_url};

/// What `manifest.json` says it is.
pub const FORMAT: &str = "cairn-backup";
/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's name in a backup.
pub const MANIFEST: &str = "manifest.json";

const SNAPSHOTS: &str = "snapshots";
const BLOBS: &str = "blobs";
/// Files being written, renamed into place when complete; emptied at the start of a backup.
const PARTIAL: &str = ".partial";
const LOCK: &str = ".lock";
/// Blob inventory rows read per page.
const PAGE: i64 = 1000;
/// Blobs copied at once.
const PARALLEL_COPIES: usize = 4;
/// Bytes buffered before an S3 upload goes multipart, and the size of its parts.
const S3_PART: usize = 8 * 1024 * 1024;
/// Bytes read at once from a backup file.
const CHUNK: usize = 256 * 1024;
/// Longest line accepted in a blob inventory.
const MAX_INVENTORY_LINE: usize = 4096;
/// Largest manifest accepted.
const MAX_MANIFEST: usize = 64 * 1024 * 1024;

/// What can stop a backup or a restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The request cannot be carried out as asked (a target that is not empty, a backup of
    /// another backend, not a backup at all); nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// A file of the backup is missing, truncated or altered; nothing was restored from it.
    #[error("{0}")]
    Damaged(String),
    /// The source changed under the backup in a way it cannot paper over (a blob vanished).
    #[error("{0}")]
    Incomplete(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// Verification could not run.
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    /// The S3 destination failed.
    #[error("{0}")]
    Remote(String),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl BackupError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

fn remote(what: impl std::fmt::Display) -> impl FnOnce(object_store::Error) -> BackupError {
    let what = what.to_string();
    move |e| BackupError::Remote(format!("{what}: {e}"))
}

/// Where a backup goes or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Dir(PathBuf),
    /// A prefix in an S3 bucket, reached with the usual `AWS_*` variables.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix inside it (no leading or trailing `/`; may be empty).
        prefix: String,
    },
}

impl Location {
    /// `s3://bucket/prefix` or a directory path.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(BackupError::Refused("give a backup directory".into()));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let prefix = prefix.trim_matches('/');
            if bucket.is_empty() {
                return Err(BackupError::Refused(format!("{s}: an S3 location looks like s3://bucket/prefix")));
            }
            if ObjectPath::parse(prefix).is_err() {
                return Err(BackupError::Refused(format!("{s}: {prefix:?} is not a valid S3 prefix")));
            }
            return Ok(Self::S3 { bucket: bucket.to_owned(), prefix: prefix.to_owned() });
        }
        Ok(Self::Dir(PathBuf::from(s)))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(p) => write!(f, "{}", p.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// One file of a backup, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Path inside the backup, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content (hex).
    pub sha256: String,
}

/// One table of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The table.
    pub name: String,
    /// Its rows at the instant of the backup.
    pub rows: u64,
    /// PostgreSQL: the columns of the `COPY` file, in order (empty for SQLite).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// PostgreSQL: the `COPY` file (absent for SQLite, whose tables are in the one file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRef>,
}

/// The blobs a backup knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSummary {
    /// Where the blob store kept them: `local` or `s3`.
    pub store: String,
    /// The blob files are in the backup (`blobs/…`; local blob stores only).
    pub included: bool,
    /// The blob store encrypted blobs at rest (the key file is not in the backup).
    pub encrypted: bool,
    /// Blobs in the inventory.
    pub count: u64,
    /// Their plaintext bytes.
    pub bytes: u64,
    /// The inventory, JSON Lines of `{"digest":…,"size":…}`; its SHA-256 is the inventory's digest.
    pub inventory: FileRef,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The snapshot's id (a UTC time stamp).
    pub id: String,
    /// When the metadata snapshot was taken (RFC 3339).
    pub created_at: String,
    /// The Cairn release that wrote it.
    pub cairn_version: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The newest database migration the snapshot had.
    pub migration_version: i64,
    /// SQLite: the database copy (PostgreSQL keeps one file per table, in `tables`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<FileRef>,
    /// Every table with its row count.
    pub tables: Vec<TableEntry>,
    /// The blobs.
    pub blobs: BlobSummary,
}

/// Which step a backup or restore is at, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Copying the metadata (tables done of all).
    Metadata,
    /// Writing the blob inventory (blobs listed).
    Inventory,
    /// Copying blobs (blobs handled of all).
    Blobs,
    /// Checking the backup's files against the manifest (files checked of all).
    Checking,
    /// Re-hashing the restored blobs (blobs verified).
    Verifying,
    /// Verifying the restored audit chain.
    AuditChain,
}

/// How far a step has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepProgress {
    /// The step.
    pub step: Step,
    /// Items done.
    pub done: u64,
    /// Items in all, when known.
    pub total: Option<u64>,
    /// Bytes done.
    pub bytes: u64,
}

/// Told about progress; must be cheap.
pub type OnStep<'a> = &'a (dyn Fn(StepProgress) + Send + Sync);

/// What [`backup`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// Where the backup went.
    pub destination: String,
    /// The manifest written.
    pub manifest: Manifest,
    /// Bytes of metadata written (database copy or table files, and the inventory).
    pub metadata_bytes: u64,
    /// Blobs copied into the destination by this run.
    pub blobs_copied: u64,
    /// Their bytes as stored.
    pub bytes_copied: u64,
    /// Blobs already in the destination, not copied again.
    pub blobs_skipped: u64,
    /// Their bytes as stored.
    pub bytes_skipped: u64,
    /// Snapshots of earlier backups removed once this one was complete.
    pub snapshots_removed: u64,
    /// Wall time, in milliseconds.
    pub elapsed_ms: u64,
}

/// Where the trusted keys of the audit verification came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// Keys given by the caller (`--public-key`).
    Pinned,
    /// The signing key file of the settings.
    KeyFile,
    /// The restored database's own `signing_keys` table.
    Database,
}

/// A table of a restore: the rows the manifest promised and the rows loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    /// The table.
    pub name: String,
    /// Rows in the backup.
    pub expected: u64,
    /// Rows restored.
    pub restored: u64,
}

/// What [`restore`] did and found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreReport {
    /// Where the backup came from.
    pub source: String,
    /// Its manifest.
    pub manifest: Manifest,
    /// The database restored into (password hidden).
    pub database: String,
    /// Rows per table.
    pub tables: Vec<TableCheck>,
    /// Blobs copied into the blob store.
    pub blobs_copied: u64,
    /// Their bytes as stored.
    pub bytes_copied: u64,
    /// Every blob re-hashed.
    pub fsck: FsckReport,
    /// The audit chain verified.
    pub audit: Report,
    /// Where the keys that checkpoints were checked against came from.
    pub audit_keys: KeySource,
    /// Everything that failed verification; empty on success.
    pub problems: Vec<String>,
    /// Wall time, in milliseconds.
    pub elapsed_ms: u64,
}

impl RestoreReport {
    /// Every blob and the audit chain verified, every table complete.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The file of a `sqlite:` URL (`None` for other databases and in-memory ones).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// The directory of the local blob store the settings name, `None` for S3.
pub fn local_blob_root(settings: &Settings) -> Result<Option<PathBuf>> {
    match settings.blob_url.as_deref() {
        None => Ok(Some(settings.data_dir.join("blobs"))),
        Some(url) if url.starts_with("s3://") => Ok(None),
        Some(url) if url.starts_with("file:") => reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .filter(|p| p.is_absolute())
            .map(Some)
            .ok_or_else(|| BackupError::Refused(format!("blob URL {url:?}: use file:///absolute/dir"))),
        Some(url) => Err(BackupError::Refused(format!(
            "blob URL {url:?} is not supported; use file:///absolute/dir or s3://bucket/prefix"
        ))),
    }
}

/// Where a blob is, relative to a blob store's root ([`cairn_blob::object_key`]), for a
/// digest that [`parse_inventory_line`] or the database has checked.
fn blob_name(hex: &str) -> String {
    cairn_blob::object_key(&hex.parse::<Digest>().expect("inventory digests are checked when read"))
}

/// The directory of [`blob_name`].
fn blob_dir(hex: &str) -> String {
    let name = blob_name(hex);
    name.rsplit_once('/').map_or(name.clone(), |(dir, _)| dir.to_owned())
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

fn snapshot_id(now_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z");
    t.format(&format).unwrap_or_else(|_| now_ms.to_string())
}

fn rfc3339(now_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A backup location, opened.
enum Repo {
    Dir {
        root: PathBuf,
        /// Held while a backup writes, so that two cannot write into one directory at once.
        _lock: Option<std::fs::File>,
    },
    S3 {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        /// Where a database copy is made before it is uploaded.
        scratch: tempfile::TempDir,
    },
}

/// An S3 client for `bucket` from the `AWS_*` environment, as the blob store makes one.
fn s3_store(bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if std::env::var_os("AWS_REGION").is_none()
        && let Ok(region) = std::env::var("AWS_DEFAULT_REGION")
    {
        builder = builder.with_region(region);
    }
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")) {
        // Plain HTTP only to this machine, as for the blob store.
        let loopback = reqwest::Url::parse(&endpoint).ok().is_some_and(|u| match u.host_str() {
            Some("localhost") => true,
            Some(h) => h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
            None => false,
        });
        builder = builder.with_endpoint(&endpoint).with_allow_http(loopback);
    }
    let store = builder.build().map_err(|e| BackupError::Refused(format!("S3 settings for bucket {bucket}: {e}")))?;
    Ok(Arc::new(store))
}

impl Repo {
    /// Opens `location` to write a backup into: creates it, takes its lock and clears what an
    /// interrupted backup left half-written.
    async fn for_backup(location: &Location) -> Result<Self> {
        match location {
            Location::Dir(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || -> Result<Self> {
                    std::fs::create_dir_all(&root)
                        .map_err(BackupError::io(format!("cannot create the backup directory {}", root.display())))?;
                    let lock_path = root.join(LOCK);
                    let lock = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&lock_path)
                        .map_err(BackupError::io(format!("cannot open {}", lock_path.display())))?;
                    if lock.try_lock().is_err() {
                        return Err(BackupError::Refused(format!(
                            "another backup is writing into {} right now; wait for it to finish",
                            root.display()
                        )));
                    }
                    let partial = root.join(PARTIAL);
                    match std::fs::remove_dir_all(&partial) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(BackupError::io(format!("cannot clear {}", partial.display()))(e)),
                    }
                    std::fs::create_dir_all(&partial)
                        .map_err(BackupError::io(format!("cannot create {}", partial.display())))?;
                    Ok(Self::Dir { root, _lock: Some(lock) })
                })
                .await
                .map_err(|e| BackupError::Io { context: "backup task".into(), source: std::io::Error::other(e) })?
            }
            Location::S3 { bucket, prefix } => Self::s3(bucket, prefix),
        }
    }

    fn s3(bucket: &str, prefix: &str) -> Result<Self> {
        let scratch = tempfile::Builder::new()
            .prefix("cairn-backup-")
            .tempdir()
            .map_err(BackupError::io("cannot create a temporary directory"))?;
        Ok(Self::S3 { store: s3_store(bucket)?, prefix: prefix.to_owned(), scratch })
    }

    fn object(prefix: &str, name: &str) -> ObjectPath {
        if prefix.is_empty() { ObjectPath::from(name) } else { ObjectPath::from(format!("{prefix}/{name}")) }
    }

    /// Opens `location` to read a backup from.
    async fn for_restore(location: &Location) -> Result<Self> {
        match location {
            Location::Dir(root) => {
                if !root.is_dir() {
                    return Err(BackupError::Refused(format!("{} is not a directory", root.display())));
                }
                Ok(Self::Dir { root: root.clone(), _lock: None })
            }
            Location::S3 { bucket, prefix } => Self::s3(bucket, prefix),
        }
    }

    /// A local directory where a file can be made and then [`Repo::adopt`]ed.
    fn scratch(&self) -> PathBuf {
        match self {
            Self::Dir { root, .. } => root.join(PARTIAL),
            Self::S3 { scratch, .. } => scratch.path().to_path_buf(),
        }
    }

    /// Size of `name`, if present.
    async fn size(&self, name: &str) -> Result<Option<u64>> {
        match self {
            Self::Dir { root, .. } => match tokio::fs::metadata(root.join(name)).await {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(BackupError::io(format!("cannot read {name} in the backup"))(e)),
            },
            Self::S3 { store, prefix, .. } => match store.head(&Self::object(prefix, name)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(remote(format!("cannot read {name} in the backup"))(e)),
            },
        }
    }

    /// Reads `name` in chunks; `None` if absent.
    async fn open(&self, name: &str) -> Result<Option<RepoReader>> {
        match self {
            Self::Dir { root, .. } => match tokio::fs::File::open(root.join(name)).await {
                Ok(f) => Ok(Some(RepoReader::File(f))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(BackupError::io(format!("cannot read {name} in the backup"))(e)),
            },
            Self::S3 { store, prefix, .. } => match store.get(&Self::object(prefix, name)).await {
                Ok(got) => Ok(Some(RepoReader::Stream(got.into_stream()))),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(remote(format!("cannot read {name} in the backup"))(e)),
            },
        }
    }

    /// Reads a small file whole; `None` if absent.
    async fn read_small(&self, name: &str, max: usize) -> Result<Option<Vec<u8>>> {
        let Some(mut r) = self.open(name).await? else { return Ok(None) };
        let mut out = Vec::new();
        while let Some(chunk) = r.chunk(name).await? {
            out.extend_from_slice(&chunk);
            if out.len() > max {
                return Err(BackupError::Damaged(format!("{name} in the backup is larger than {max} bytes")));
            }
        }
        Ok(Some(out))
    }

    /// Starts writing `name`; it appears under that name only when [`RepoWriter::finish`]ed.
    async fn create(&self, name: &str) -> Result<RepoWriter> {
        match self {
            Self::Dir { root, .. } => {
                let tmp = root.join(PARTIAL).join(uuid::Uuid::new_v4().to_string());
                let file = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(BackupError::io(format!("cannot create {}", tmp.display())))?;
                Ok(RepoWriter {
                    name: name.to_owned(),
                    sink: Sink::File { file, tmp, dest: root.join(name) },
                    hasher: Sha256::new(),
                    bytes: 0,
                })
            }
            Self::S3 { store, prefix, .. } => Ok(RepoWriter {
                name: name.to_owned(),
                sink: Sink::S3(BufWriter::with_capacity(store.clone(), Self::object(prefix, name), S3_PART)),
                hasher: Sha256::new(),
                bytes: 0,
            }),
        }
    }

    /// Moves a complete local file from [`Repo::scratch`] to `name` (durably).
    async fn adopt(&self, local: &Path, name: &str) -> Result<()> {
        match self {
            Self::Dir { root, .. } => {
                let (local, dest) = (local.to_path_buf(), root.join(name));
                blocking(move || {
                    std::fs::File::open(&local)
                        .and_then(|f| f.sync_all())
                        .map_err(BackupError::io(format!("cannot sync {}", local.display())))?;
                    publish(&local, &dest)?;
                    sync_parent(&dest)
                })
                .await
            }
            Self::S3 { .. } => {
                self.upload(local, name).await?;
                tokio::fs::remove_file(local)
                    .await
                    .map_err(BackupError::io(format!("cannot remove {}", local.display())))
            }
        }
    }

    /// Streams a local file into `name`.
    async fn upload(&self, local: &Path, name: &str) -> Result<()> {
        let mut file =
            tokio::fs::File::open(local).await.map_err(BackupError::io(format!("cannot read {}", local.display())))?;
        let mut w = self.create(name).await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).await.map_err(BackupError::io(format!("cannot read {}", local.display())))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
        w.finish().await?;
        Ok(())
    }

    /// Copies a local blob file in as `name` unless a file of that size is there already;
    /// whether it copied. The directory entry is made durable by [`Repo::sync_dirs`].
    async fn put_blob(&self, src: &Path, size: u64, name: &str) -> Result<bool> {
        if self.size(name).await? == Some(size) {
            return Ok(false);
        }
        match self {
            Self::Dir { root, .. } => {
                let tmp = root.join(PARTIAL).join(uuid::Uuid::new_v4().to_string());
                let (src, dest) = (src.to_path_buf(), root.join(name));
                blocking(move || copy_durably(&src, &tmp, &dest)).await?;
                Ok(true)
            }
            Self::S3 { .. } => {
                self.upload(src, name).await?;
                Ok(true)
            }
        }
    }

    /// Makes the entries of `dirs` (relative) durable.
    async fn sync_dirs(&self, dirs: BTreeSet<String>) -> Result<()> {
        match self {
            Self::Dir { root, .. } => {
                let root = root.clone();
                blocking(move || {
                    for d in dirs {
                        sync_dir(&root.join(d))?;
                    }
                    Ok(())
                })
                .await
            }
            // An object is durable once its upload has completed.
            Self::S3 { .. } => Ok(()),
        }
    }

    /// Removes the snapshots other than `keep`; how many.
    async fn remove_snapshots_except(&self, keep: &str) -> Result<u64> {
        match self {
            Self::Dir { root, .. } => {
                let (dir, keep) = (root.join(SNAPSHOTS), keep.to_owned());
                blocking(move || {
                    let mut removed = 0;
                    let entries = match std::fs::read_dir(&dir) {
                        Ok(e) => e,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                        Err(e) => return Err(BackupError::io(format!("cannot list {}", dir.display()))(e)),
                    };
                    for entry in entries {
                        let entry = entry.map_err(BackupError::io(format!("cannot list {}", dir.display())))?;
                        if entry.file_name().to_string_lossy() == keep {
                            continue;
                        }
                        std::fs::remove_dir_all(entry.path())
                            .map_err(BackupError::io(format!("cannot remove {}", entry.path().display())))?;
                        removed += 1;
                    }
                    Ok(removed)
                })
                .await
            }
            Self::S3 { store, prefix, .. } => {
                let listing = store
                    .list_with_delimiter(Some(&Self::object(prefix, SNAPSHOTS)))
                    .await
                    .map_err(remote("cannot list the snapshots in the backup"))?;
                let mut removed = 0;
                for dir in listing.common_prefixes {
                    if dir.filename() == Some(keep) {
                        continue;
                    }
                    let objects: Vec<_> = store
                        .list(Some(&dir))
                        .try_collect()
                        .await
                        .map_err(remote(format!("cannot list {dir} in the backup")))?;
                    for object in objects {
                        store
                            .delete(&object.location)
                            .await
                            .map_err(remote(format!("cannot remove {} from the backup", object.location)))?;
                    }
                    removed += 1;
                }
                Ok(removed)
            }
        }
    }

    /// Copies blob `name` of the backup to `tmp` and renames it to `dest` (durably, but for
    /// the directory entry).
    async fn fetch_blob(&self, name: &str, tmp: &Path, dest: &Path) -> Result<u64> {
        match self {
            Self::Dir { root, .. } => {
                let (src, tmp, dest) = (root.join(name), tmp.to_path_buf(), dest.to_path_buf());
                blocking(move || copy_durably(&src, &tmp, &dest)).await
            }
            Self::S3 { .. } => {
                let Some(mut r) = self.open(name).await? else {
                    return Err(BackupError::Damaged(format!("{name} is missing from the backup")));
                };
                let mut out = tokio::fs::File::create(tmp)
                    .await
                    .map_err(BackupError::io(format!("cannot create {}", tmp.display())))?;
                let mut n = 0u64;
                while let Some(chunk) = r.chunk(name).await? {
                    n += chunk.len() as u64;
                    out.write_all(&chunk).await.map_err(BackupError::io(format!("cannot write {}", tmp.display())))?;
                }
                out.sync_all().await.map_err(BackupError::io(format!("cannot sync {}", tmp.display())))?;
                drop(out);
                let (tmp, dest) = (tmp.to_path_buf(), dest.to_path_buf());
                blocking(move || publish(&tmp, &dest)).await?;
                Ok(n)
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackupError::Io { context: "a file task failed".into(), source: std::io::Error::other(e) })?
}

/// Copies `src` to `tmp`, fsyncs it and renames it to `dest`, creating `dest`'s directory.
fn copy_durably(src: &Path, tmp: &Path, dest: &Path) -> Result<u64> {
    let n = std::fs::copy(src, tmp).map_err(BackupError::io(format!("cannot copy {}", src.display())))?;
    let synced = std::fs::OpenOptions::new().write(true).open(tmp).and_then(|f| f.sync_all());
    if let Err(e) = synced {
        let _ = std::fs::remove_file(tmp);
        return Err(BackupError::io(format!("cannot sync {}", tmp.display()))(e));
    }
    publish(tmp, dest)?;
    Ok(n)
}

/// Renames `from` to `to`, creating `to`'s directory.
fn publish(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(BackupError::io(format!("cannot create {}", parent.display())))?;
    }
    std::fs::rename(from, to).map_err(BackupError::io(format!("cannot move {} into place", to.display())))
}

fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) => sync_dir(p),
        None => Ok(()),
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BackupError::io(format!("cannot sync {}", dir.display())))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

enum RepoReader {
    File(tokio::fs::File),
    Stream(BoxStream<'static, object_store::Result<Bytes>>),
}

impl RepoReader {
    async fn chunk(&mut self, name: &str) -> Result<Option<Bytes>> {
        match self {
            Self::File(f) => {
                let mut buf = vec![0u8; CHUNK];
                let n = f.read(&mut buf).await.map_err(BackupError::io(format!("cannot read {name} in the backup")))?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(Bytes::from(buf)))
            }
            Self::Stream(s) => s.try_next().await.map_err(remote(format!("cannot read {name} in the backup"))),
        }
    }
}

/// Lines of a backup file, each at most `max` bytes.
struct Lines {
    name: String,
    reader: RepoReader,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    max: usize,
}

impl Lines {
    fn new(name: &str, reader: RepoReader, max: usize) -> Self {
        Self { name: name.to_owned(), reader, buf: Vec::new(), pos: 0, done: false, max }
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|b| *b == b'\n') {
                let line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 1;
                return Ok(Some(line));
            }
            if self.done {
                if self.pos < self.buf.len() {
                    let line = self.buf[self.pos..].to_vec();
                    self.pos = self.buf.len();
                    return Ok(Some(line));
                }
                return Ok(None);
            }
            if self.buf.len() - self.pos > self.max {
                return Err(BackupError::Damaged(format!("{} has a line longer than {} bytes", self.name, self.max)));
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            match self.reader.chunk(&self.name).await? {
                Some(c) => self.buf.extend_from_slice(&c),
                None => self.done = true,
            }
        }
    }
}

/// A file being written into a backup, hashed as it goes.
struct RepoWriter {
    name: String,
    sink: Sink,
    hasher: Sha256,
    bytes: u64,
}

enum Sink {
    File {
        file: tokio::fs::File,
        tmp: PathBuf,
        dest: PathBuf,
    },
    /// Buffered, then uploaded in parts; the object appears when the upload completes.
    S3(BufWriter),
}

impl RepoWriter {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        match &mut self.sink {
            Sink::File { file, tmp, .. } => {
                file.write_all(data).await.map_err(BackupError::io(format!("cannot write {}", tmp.display())))
            }
            Sink::S3(w) => {
                w.put(Bytes::copy_from_slice(data)).await.map_err(remote(format!("cannot write {}", self.name)))
            }
        }
    }

    /// Makes the file durable under its name; what the manifest records of it.
    async fn finish(self) -> Result<FileRef> {
        let sha256 = hex::encode(self.hasher.finalize());
        match self.sink {
            Sink::File { mut file, tmp, dest } => {
                file.flush().await.map_err(BackupError::io(format!("cannot write {}", tmp.display())))?;
                file.sync_all().await.map_err(BackupError::io(format!("cannot sync {}", tmp.display())))?;
                drop(file);
                blocking(move || {
                    publish(&tmp, &dest)?;
                    sync_parent(&dest)
                })
                .await?;
            }
            Sink::S3(mut w) => {
                // A failed upload leaves no object (an incomplete multipart upload at most,
                // which the bucket's lifecycle rule removes).
                w.shutdown().await.map_err(|e| BackupError::Remote(format!("cannot write {}: {e}", self.name)))?;
            }
        }
        Ok(FileRef { path: self.name, bytes: self.bytes, sha256 })
    }
}

/// Takes a consistent backup of the registry that `store` and `settings` describe into
/// `destination`, beside running servers. See the module docs for what it writes.
pub async fn backup(
    store: &Store,
    settings: &Settings,
    destination: &Location,
    progress: OnStep<'_>,
) -> Result<BackupReport> {
    let started = Instant::now();
    let blob_root = local_blob_root(settings)?;
    let latest = latest_migration(store.backend());
    let current = store.migration_version().await?;
    if current > latest {
        return Err(BackupError::Refused(format!(
            "the database is at migration {current}, newer than this build of cairn knows ({latest}); \
             back it up with the release that the servers run"
        )));
    }
    let repo = Repo::for_backup(destination).await?;
    let now = store.now();
    let id = snapshot_id(now);
    let dir = format!("{SNAPSHOTS}/{id}");

    let (migration_version, database, tables, inventory, count, bytes) = match store.backend() {
        Backend::Sqlite => {
            progress(StepProgress { step: Step::Metadata, done: 0, total: Some(1), bytes: 0 });
            let local = repo.scratch().join(format!("{}.db", uuid::Uuid::new_v4()));
            store.vacuum_into(&local).await?;
            let mut snap = SqliteSnapshot::open(&local).await?;
            let version = snap.migration_version().await?;
            let tables: Vec<TableEntry> = snap
                .table_rows()
                .await?
                .into_iter()
                .map(|(name, rows)| TableEntry { name, rows, columns: Vec::new(), file: None })
                .collect();
            let mut w = repo.create(&format!("{dir}/blobs.jsonl")).await?;
            let (count, bytes) = write_inventory(&mut w, progress, Snapshot::Sqlite(&mut snap)).await?;
            snap.close().await?;
            let inventory = w.finish().await?;
            let name = format!("{dir}/cairn.db");
            let db = hash_local(&local, &name).await?;
            repo.adopt(&local, &name).await?;
            progress(StepProgress { step: Step::Metadata, done: 1, total: Some(1), bytes: db.bytes });
            (version, Some(db), tables, inventory, count, bytes)
        }
        Backend::Postgres => {
            let mut export = store.begin_export().await?;
            let version = export.migration_version().await?;
            let infos = export.tables().await?;
            let total = Some(infos.len() as u64);
            let mut tables = Vec::with_capacity(infos.len());
            let mut written = 0;
            for (i, info) in infos.into_iter().enumerate() {
                let mut w = repo.create(&format!("{dir}/tables/{}.copy", info.name)).await?;
                let mut rows = 0u64;
                {
                    let mut data = std::pin::pin!(export.copy_out(&info).await?);
                    while let Some(chunk) = data.try_next().await? {
                        let chunk = chunk.as_ref();
                        rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                        w.write(chunk).await?;
                    }
                }
                let file = w.finish().await?;
                written += file.bytes;
                progress(StepProgress { step: Step::Metadata, done: i as u64 + 1, total, bytes: written });
                let TableInfo { name, columns } = info;
                tables.push(TableEntry { name, rows, columns, file: Some(file) });
            }
            let mut w = repo.create(&format!("{dir}/blobs.jsonl")).await?;
            let (count, bytes) = write_inventory(&mut w, progress, Snapshot::Postgres(&mut export)).await?;
            export.finish().await?;
            (version, None, tables, w.finish().await?, count, bytes)
        }
    };
    if migration_version > latest {
        return Err(BackupError::Refused(format!(
            "the database is at migration {migration_version}, newer than this build of cairn knows ({latest}); \
             back it up with the release that the servers run"
        )));
    }

    let mut report = BackupReport {
        destination: destination.to_string(),
        manifest: Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            id: id.clone(),
            created_at: rfc3339(now),
            cairn_version: env!("CARGO_PKG_VERSION").into(),
            backend: backend_name(store.backend()).into(),
            migration_version,
            database,
            tables,
            blobs: BlobSummary {
                store: if blob_root.is_some() { "local" } else { "s3" }.into(),
                included: blob_root.is_some(),
                encrypted: settings.encryption_key_file.is_some(),
                count,
                bytes,
                inventory,
            },
        },
        metadata_bytes: 0,
        blobs_copied: 0,
        bytes_copied: 0,
        blobs_skipped: 0,
        bytes_skipped: 0,
        snapshots_removed: 0,
        elapsed_ms: 0,
    };
    report.metadata_bytes = report.manifest.database.as_ref().map_or(0, |f| f.bytes)
        + report.manifest.tables.iter().filter_map(|t| t.file.as_ref()).map(|f| f.bytes).sum::<u64>()
        + report.manifest.blobs.inventory.bytes;

    if let Some(root) = &blob_root {
        copy_blobs_out(&repo, root, &mut report, progress).await?;
    }

    let mut manifest = serde_json::to_vec_pretty(&report.manifest)
        .map_err(|e| BackupError::Io { context: "cannot encode the manifest".into(), source: e.into() })?;
    manifest.push(b'\n');
    let mut w = repo.create(MANIFEST).await?;
    w.write(&manifest).await?;
    w.finish().await?;
    report.snapshots_removed = repo.remove_snapshots_except(&id).await?;
    report.elapsed_ms = millis(started);
    Ok(report)
}

/// The snapshot a blob inventory is read from.
enum Snapshot<'a> {
    Sqlite(&'a mut SqliteSnapshot),
    Postgres(&'a mut cairn_store::backup::PgExport),
}

impl Snapshot<'_> {
    async fn blobs_after(&mut self, after: &str) -> Result<Vec<InventoryEntry>, StoreError> {
        match self {
            Self::Sqlite(s) => s.blobs_after(after, PAGE).await,
            Self::Postgres(e) => e.blobs_after(after, PAGE).await,
        }
    }
}

/// Writes the snapshot's stored blobs as JSON Lines; their count and plaintext bytes.
async fn write_inventory(w: &mut RepoWriter, progress: OnStep<'_>, mut snapshot: Snapshot<'_>) -> Result<(u64, u64)> {
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut after = String::new();
    loop {
        let rows = snapshot.blobs_after(&after).await?;
        let Some(last) = rows.last() else { break };
        after.clone_from(&last.digest);
        let mut out = Vec::with_capacity(rows.len() * 100);
        for row in &rows {
            serde_json::to_writer(&mut out, row)
                .map_err(|e| BackupError::Io { context: "cannot encode the inventory".into(), source: e.into() })?;
            out.push(b'\n');
            count += 1;
            bytes += u64::try_from(row.size).unwrap_or(0);
        }
        w.write(&out).await?;
        progress(StepProgress { step: Step::Inventory, done: count, total: None, bytes });
    }
    Ok((count, bytes))
}

/// SHA-256 and size of a local file (which becomes `name` in the backup).
async fn hash_local(path: &Path, name: &str) -> Result<FileRef> {
    let (path, name) = (path.to_path_buf(), name.to_owned());
    blocking(move || {
        let mut f = std::fs::File::open(&path).map_err(BackupError::io(format!("cannot read {}", path.display())))?;
        let mut hasher = Sha256::new();
        let bytes = std::io::copy(&mut f, &mut HashWriter(&mut hasher))
            .map_err(BackupError::io(format!("cannot read {}", path.display())))?;
        Ok(FileRef { path: name, bytes, sha256: hex::encode(hasher.finalize()) })
    })
    .await
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies every blob of the inventory that the destination lacks, from the local blob
/// store at `root`, as stored.
async fn copy_blobs_out(repo: &Repo, root: &Path, report: &mut BackupReport, progress: OnStep<'_>) -> Result<()> {
    let inventory = &report.manifest.blobs.inventory;
    let total = Some(report.manifest.blobs.count);
    let Some(reader) = repo.open(&inventory.path).await? else {
        return Err(BackupError::Damaged(format!("{} vanished from the backup while it was written", inventory.path)));
    };
    let mut lines = Lines::new(&inventory.path, reader, MAX_INVENTORY_LINE);
    let dirs = Mutex::new(BTreeSet::new());
    let mut batch = Vec::with_capacity(PAGE as usize);
    let mut done = 0u64;
    loop {
        let line = lines.next().await?;
        if let Some(line) = &line {
            batch.push(parse_inventory_line(&inventory.path, line)?);
        }
        if batch.len() < PAGE as usize && line.is_some() {
            continue;
        }
        let mut copies = stream::iter(std::mem::take(&mut batch))
            .map(|entry| {
                let dirs = &dirs;
                async move {
                    let name = blob_name(&entry.digest);
                    let src = root.join(&name);
                    let stored = match tokio::fs::metadata(&src).await {
                        Ok(m) => m.len(),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Err(BackupError::Incomplete(format!(
                                "blob sha256:{} is in the database but not in the blob store {}: it was deleted \
                                 during the backup (run the backup again), or it is missing (see cairn admin fsck)",
                                entry.digest,
                                root.display()
                            )));
                        }
                        Err(e) => return Err(BackupError::io(format!("cannot read {}", src.display()))(e)),
                    };
                    let dest = format!("{BLOBS}/{name}");
                    let copied = repo.put_blob(&src, stored, &dest).await?;
                    if copied && let Ok(mut d) = dirs.lock() {
                        d.insert(format!("{BLOBS}/{}", blob_dir(&entry.digest)));
                    }
                    Ok::<_, BackupError>((copied, stored))
                }
            })
            .buffer_unordered(PARALLEL_COPIES);
        while let Some(result) = copies.next().await {
            let (copied, stored) = result?;
            if copied {
                report.blobs_copied += 1;
                report.bytes_copied += stored;
            } else {
                report.blobs_skipped += 1;
                report.bytes_skipped += stored;
            }
            done += 1;
            progress(StepProgress {
                step: Step::Blobs,
                done,
                total,
                bytes: report.bytes_copied + report.bytes_skipped,
            });
        }
        if line.is_none() {
            break;
        }
    }
    let mut dirs = dirs.into_inner().unwrap_or_default();
    if !dirs.is_empty() {
        dirs.insert(format!("{BLOBS}/sha256"));
        dirs.insert(BLOBS.to_owned());
    }
    repo.sync_dirs(dirs).await
}

fn parse_inventory_line(file: &str, line: &[u8]) -> Result<InventoryEntry> {
    let entry: InventoryEntry = serde_json::from_slice(line).map_err(|e| {
        BackupError::Damaged(format!("{file} in the backup is damaged: a line is not a blob entry ({e})"))
    })?;
    if entry.digest.parse::<Digest>().is_err() || entry.size < 0 {
        return Err(BackupError::Damaged(format!("{file} in the backup is damaged: {:?} is not a blob", entry.digest)));
    }
    Ok(entry)
}

/// Restores the backup at `source` into the (empty) database and blob store that `settings`
/// name, then verifies every blob and the audit chain. Checkpoints are checked against
/// `pinned` keys, or, without them, against the settings' signing key file if it exists,
/// else against the restored database's own key table (see [`RestoreReport::audit_keys`]).
///
/// Refuses with [`BackupError::Refused`] before changing anything when the target is not
/// empty or the backup does not fit it; fails with [`BackupError::Damaged`] before changing
/// anything when a file of the backup does not match the manifest. Problems found by the
/// final verification are in the report ([`RestoreReport::is_ok`]).
pub async fn restore(
    settings: &Settings,
    source: &Location,
    pinned: Vec<PublicKey>,
    progress: OnStep<'_>,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let repo = Repo::for_restore(source).await?;
    let manifest = read_manifest(&repo, source).await?;
    let url = settings.database_url();
    let backend = if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Backend::Postgres
    } else {
        return Err(BackupError::Refused("the database URL must start with sqlite:// or postgres://".into()));
    };
    check_fits(&manifest, backend, settings)?;
    let blob_root = local_blob_root(settings)?;
    check_empty(&url, backend, blob_root.as_deref()).await?;
    check_files(&repo, &manifest, progress).await?;

    let tables = match backend {
        Backend::Sqlite => restore_sqlite(&repo, &manifest, &url).await?,
        Backend::Postgres => restore_postgres(&repo, &manifest, &url, progress).await?,
    };
    let (mut blobs_copied, mut bytes_copied) = (0, 0);
    if let Some(root) = &blob_root {
        (blobs_copied, bytes_copied) = copy_blobs_in(&repo, &manifest, root, progress).await?;
    }

    let store = Store::open(&url, &DbOptions { max_connections: 4, ..DbOptions::default() }).await?;
    let result = verify_restored(&store, settings, pinned, progress).await;
    store.close().await;
    let (fsck, audit, audit_keys) = result?;
    let mut problems = Vec::new();
    for t in &tables {
        if t.expected != t.restored {
            problems.push(format!("table {} has {} rows, the backup has {}", t.name, t.restored, t.expected));
        }
    }
    if !fsck.is_ok() {
        problems.push(format!(
            "blobs: {} missing, {} corrupt, {} unreadable (under a key the key file lacks) of {} checked",
            fsck.missing, fsck.corrupt, fsck.unreadable, fsck.checked
        ));
    }
    if let Some(b) = &audit.first_break {
        problems.push(format!("audit chain broken at event {}: {}", b.seq, b.message));
    }
    Ok(RestoreReport {
        source: source.to_string(),
        manifest,
        database: redact_url(&url),
        tables,
        blobs_copied,
        bytes_copied,
        fsck,
        audit,
        audit_keys,
        problems,
        elapsed_ms: millis(started),
    })
}

async fn read_manifest(repo: &Repo, source: &Location) -> Result<Manifest> {
    let Some(raw) = repo.read_small(MANIFEST, MAX_MANIFEST).await? else {
        return Err(BackupError::Refused(format!(
            "{source} holds no {MANIFEST}: it is not a Cairn backup, or its first backup never finished"
        )));
    };
    let manifest: Manifest = serde_json::from_slice(&raw).map_err(|e| {
        BackupError::Damaged(format!("{MANIFEST} in {source} is damaged ({e}); restore from another backup"))
    })?;
    if manifest.format != FORMAT {
        return Err(BackupError::Refused(format!("{MANIFEST} in {source} is not a Cairn backup manifest")));
    }
    if manifest.format_version > FORMAT_VERSION {
        return Err(BackupError::Refused(format!(
            "{source} was written in backup format {}, newer than this build reads ({FORMAT_VERSION}); \
             restore with the Cairn release that wrote it ({})",
            manifest.format_version, manifest.cairn_version
        )));
    }
    Ok(manifest)
}

/// The backup suits the target's backend, migrations and blob store.
fn check_fits(manifest: &Manifest, backend: Backend, settings: &Settings) -> Result<()> {
    if manifest.backend != backend_name(backend) {
        return Err(BackupError::Refused(format!(
            "this is a backup of a {} database and the target is {}: restore into the same kind of database \
             (see docs/BACKUP.md for moving between them)",
            manifest.backend,
            backend_name(backend)
        )));
    }
    let latest = latest_migration(backend);
    if manifest.migration_version > latest {
        return Err(BackupError::Refused(format!(
            "the backup is at database migration {}, newer than this build of cairn knows ({latest}); restore it \
             with release {} or newer",
            manifest.migration_version, manifest.cairn_version
        )));
    }
    let local = local_blob_root(settings)?.is_some();
    match (manifest.blobs.included, local) {
        (true, false) => {
            return Err(BackupError::Refused(
                "the backup holds the files of a local blob store, and the target's blob store is S3: restore \
                 into a local blob store (leave CAIRN_BLOB_URL unset, or file:///dir)"
                    .into(),
            ));
        }
        (false, true) if manifest.blobs.count > 0 => {
            return Err(BackupError::Refused(
                "the backup holds no blob files (its blobs stayed in S3): set CAIRN_BLOB_URL to that S3 bucket, \
                 or to its replica"
                    .into(),
            ));
        }
        _ => {}
    }
    if manifest.blobs.encrypted && settings.encryption_key_file.is_none() {
        return Err(BackupError::Refused(
            "the backed-up blobs are encrypted at rest and no key file is set: set CAIRN_ENCRYPTION_KEY_FILE to \
             the key file of the server the backup came from (backups never contain it)"
                .into(),
        ));
    }
    Ok(())
}

/// The target database and blob directory hold nothing.
async fn check_empty(url: &str, backend: Backend, blob_root: Option<&Path>) -> Result<()> {
    match backend {
        Backend::Sqlite => {
            let db = sqlite_path(url)
                .ok_or_else(|| BackupError::Refused("restore needs a SQLite database file, not memory".into()))?;
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = db.clone().into_os_string();
                p.push(suffix);
                let p = PathBuf::from(p);
                if p.exists() {
                    return Err(BackupError::Refused(format!(
                        "{} exists: restore only into an empty data directory (move the old database away first)",
                        p.display()
                    )));
                }
            }
        }
        Backend::Postgres => {
            let tables = cairn_store::backup::postgres_tables(url, 5).await?;
            if !tables.is_empty() {
                return Err(BackupError::Refused(format!(
                    "database {} is not empty (it holds {}): restore only into a new, empty database",
                    redact_url(url),
                    tables.join(", ")
                )));
            }
        }
    }
    if let Some(root) = blob_root {
        let blobs = root.join("sha256");
        match std::fs::read_dir(&blobs) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(BackupError::Refused(format!(
                        "the blob directory {} is not empty: restore only into an empty data directory",
                        root.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::io(format!("cannot read {}", blobs.display()))(e)),
        }
    }
    Ok(())
}

/// Every file the manifest names is there, whole and unaltered, and every blob of the
/// inventory is in the backup (when blobs are included).
async fn check_files(repo: &Repo, manifest: &Manifest, progress: OnStep<'_>) -> Result<()> {
    let mut files: Vec<&FileRef> = manifest.database.iter().collect();
    files.extend(manifest.tables.iter().filter_map(|t| t.file.as_ref()));
    files.push(&manifest.blobs.inventory);
    if manifest.backend == "sqlite" && manifest.database.is_none() {
        return Err(BackupError::Damaged(format!("{MANIFEST} names no database file")));
    }
    if manifest.backend == "postgres" && manifest.tables.iter().any(|t| t.file.is_none()) {
        return Err(BackupError::Damaged(format!("{MANIFEST} names a table without its file")));
    }
    let total = Some(files.len() as u64);
    let mut checked_bytes = 0;
    for (i, file) in files.iter().enumerate() {
        let Some(mut r) = repo.open(&file.path).await? else {
            return Err(BackupError::Damaged(format!(
                "{} is missing from the backup: it cannot be restored; use another backup",
                file.path
            )));
        };
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = r.chunk(&file.path).await? {
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
        }
        expect_same(file, bytes, &hex::encode(hasher.finalize()))?;
        checked_bytes += bytes;
        progress(StepProgress { step: Step::Checking, done: i as u64 + 1, total, bytes: checked_bytes });
    }
    let inventory = &manifest.blobs.inventory;
    let Some(reader) = repo.open(&inventory.path).await? else {
        return Err(BackupError::Damaged(format!("{} is missing from the backup", inventory.path)));
    };
    let mut lines = Lines::new(&inventory.path, reader, MAX_INVENTORY_LINE);
    let (mut count, mut bytes) = (0u64, 0u64);
    while let Some(line) = lines.next().await? {
        let entry = parse_inventory_line(&inventory.path, &line)?;
        count += 1;
        bytes += u64::try_from(entry.size).unwrap_or(0);
        if manifest.blobs.included && repo.size(&format!("{BLOBS}/{}", blob_name(&entry.digest))).await?.is_none() {
            return Err(BackupError::Damaged(format!(
                "blob sha256:{} is missing from the backup: it cannot be restored whole; use another backup",
                entry.digest
            )));
        }
    }
    if (count, bytes) != (manifest.blobs.count, manifest.blobs.bytes) {
        return Err(BackupError::Damaged(format!(
            "{} lists {count} blobs ({bytes} bytes), the manifest {} ({} bytes)",
            inventory.path, manifest.blobs.count, manifest.blobs.bytes
        )));
    }
    Ok(())
}

fn expect_same(file: &FileRef, bytes: u64, sha256: &str) -> Result<()> {
    if bytes != file.bytes || sha256 != file.sha256 {
        return Err(BackupError::Damaged(format!(
            "{} in the backup is damaged: {bytes} bytes with SHA-256 {sha256}, the manifest says {} bytes with \
             SHA-256 {}; it cannot be restored; use another backup",
            file.path, file.bytes, file.sha256
        )));
    }
    Ok(())
}

/// Copies the database file into place: under a temporary name, checked (hash, SQLite's own
/// check, row counts), fsynced, then renamed.
async fn restore_sqlite(repo: &Repo, manifest: &Manifest, url: &str) -> Result<Vec<TableCheck>> {
    let file = manifest.database.as_ref().ok_or_else(|| BackupError::Damaged("no database file".into()))?;
    let db = sqlite_path(url).ok_or_else(|| BackupError::Refused("restore needs a SQLite database file".into()))?;
    let dir = db.parent().map(Path::to_path_buf).unwrap_or_default();
    create_private_dir(&dir)?;
    let tmp = dir.join(format!(
        ".{}.restoring-{}",
        db.file_name().unwrap_or_default().to_string_lossy(),
        uuid::Uuid::new_v4()
    ));
    let result = async {
        let Some(mut r) = repo.open(&file.path).await? else {
            return Err(BackupError::Damaged(format!("{} is missing from the backup", file.path)));
        };
        let mut out =
            tokio::fs::File::create(&tmp).await.map_err(BackupError::io(format!("cannot create {}", tmp.display())))?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = r.chunk(&file.path).await? {
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(BackupError::io(format!("cannot write {}", tmp.display())))?;
        }
        out.sync_all().await.map_err(BackupError::io(format!("cannot sync {}", tmp.display())))?;
        drop(out);
        expect_same(file, bytes, &hex::encode(hasher.finalize()))?;
        let mut snap = SqliteSnapshot::open(&tmp).await?;
        let problems = snap.check().await?;
        let rows = snap.table_rows().await?;
        snap.close().await?;
        if !problems.is_empty() {
            return Err(BackupError::Damaged(format!(
                "{} in the backup fails SQLite's check: {}",
                file.path,
                problems.join("; ")
            )));
        }
        Ok(compare_rows(manifest, rows))
    }
    .await;
    match result {
        Ok(tables) => {
            let (tmp, db2) = (tmp.clone(), db.clone());
            blocking(move || {
                std::fs::rename(&tmp, &db2)
                    .map_err(BackupError::io(format!("cannot move {} into place", db2.display())))?;
                sync_parent(&db2)
            })
            .await?;
            Ok(tables)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

fn compare_rows(manifest: &Manifest, rows: Vec<(String, u64)>) -> Vec<TableCheck> {
    let mut out: Vec<TableCheck> = manifest
        .tables
        .iter()
        .map(|t| TableCheck {
            name: t.name.clone(),
            expected: t.rows,
            restored: rows.iter().find(|(n, _)| *n == t.name).map_or(0, |(_, r)| *r),
        })
        .collect();
    for (name, restored) in rows {
        if !manifest.tables.iter().any(|t| t.name == name) {
            out.push(TableCheck { name, expected: 0, restored });
        }
    }
    out
}

/// Loads every table file in one transaction, checking each file's hash as it streams; any
/// mismatch abandons the whole transaction.
async fn restore_postgres(
    repo: &Repo,
    manifest: &Manifest,
    url: &str,
    progress: OnStep<'_>,
) -> Result<Vec<TableCheck>> {
    let mut import = match PgImport::begin(url, manifest.migration_version).await {
        Ok(i) => i,
        Err(StoreError::Conflict(msg)) => return Err(BackupError::Refused(msg)),
        Err(e) => return Err(e.into()),
    };
    let order: Vec<String> = import.tables().iter().map(|t| t.name.clone()).collect();
    let result = async {
        for t in &manifest.tables {
            if !order.contains(&t.name) {
                return Err(BackupError::Damaged(format!(
                    "the backup has table {} that migration {} does not create",
                    t.name, manifest.migration_version
                )));
            }
        }
        let mut checks = Vec::with_capacity(order.len());
        let total = Some(order.len() as u64);
        let mut loaded = 0u64;
        for (i, name) in order.iter().enumerate() {
            let Some(entry) = manifest.tables.iter().find(|t| &t.name == name) else {
                return Err(BackupError::Damaged(format!("the backup lacks table {name}")));
            };
            let file = entry.file.as_ref().ok_or_else(|| BackupError::Damaged(format!("no file for table {name}")))?;
            let Some(mut r) = repo.open(&file.path).await? else {
                return Err(BackupError::Damaged(format!("{} is missing from the backup", file.path)));
            };
            let mut copy = import.copy_in(name, &entry.columns).await?;
            let mut hasher = Sha256::new();
            let mut bytes = 0u64;
            let streamed = async {
                while let Some(chunk) = r.chunk(&file.path).await? {
                    hasher.update(&chunk);
                    bytes += chunk.len() as u64;
                    copy.send(&chunk).await?;
                }
                Ok::<_, BackupError>(())
            }
            .await;
            let sha256 = hex::encode(hasher.finalize());
            if let Err(e) = streamed.and_then(|()| expect_same(file, bytes, &sha256)) {
                let _ = copy.abort("the backup file is damaged").await;
                return Err(e);
            }
            let rows = copy.finish().await?;
            loaded += bytes;
            progress(StepProgress { step: Step::Metadata, done: i as u64 + 1, total, bytes: loaded });
            checks.push(TableCheck { name: name.clone(), expected: entry.rows, restored: rows });
        }
        if let Some(bad) = checks.iter().find(|c| c.expected != c.restored) {
            return Err(BackupError::Damaged(format!(
                "table {} loaded {} rows, the manifest says {}",
                bad.name, bad.restored, bad.expected
            )));
        }
        Ok(checks)
    }
    .await;
    match result {
        Ok(checks) => {
            import.finish().await?;
            Ok(checks)
        }
        Err(e) => {
            import.abandon().await;
            Err(e)
        }
    }
}

/// Copies every blob of the inventory from the backup into the local blob store at `root`.
async fn copy_blobs_in(repo: &Repo, manifest: &Manifest, root: &Path, progress: OnStep<'_>) -> Result<(u64, u64)> {
    let inventory = &manifest.blobs.inventory;
    let Some(reader) = repo.open(&inventory.path).await? else {
        return Err(BackupError::Damaged(format!("{} is missing from the backup", inventory.path)));
    };
    let staging = root.join(".staging");
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(BackupError::io(format!("cannot create {}", staging.display())))?;
    let mut lines = Lines::new(&inventory.path, reader, MAX_INVENTORY_LINE);
    let total = Some(manifest.blobs.count);
    let (mut copied, mut bytes) = (0u64, 0u64);
    let mut dirs = BTreeSet::new();
    let mut batch = Vec::with_capacity(PAGE as usize);
    loop {
        let line = lines.next().await?;
        if let Some(line) = &line {
            batch.push(parse_inventory_line(&inventory.path, line)?);
        }
        if batch.len() < PAGE as usize && line.is_some() {
            continue;
        }
        for entry in &batch {
            dirs.insert(blob_dir(&entry.digest));
        }
        let mut copies = stream::iter(std::mem::take(&mut batch))
            .map(|entry| {
                let staging = &staging;
                async move {
                    let name = blob_name(&entry.digest);
                    let tmp = staging.join(format!("restore-{}", uuid::Uuid::new_v4()));
                    repo.fetch_blob(&format!("{BLOBS}/{name}"), &tmp, &root.join(&name)).await
                }
            })
            .buffer_unordered(PARALLEL_COPIES);
        while let Some(n) = copies.next().await {
            copied += 1;
            bytes += n?;
            progress(StepProgress { step: Step::Blobs, done: copied, total, bytes });
        }
        if line.is_none() {
            break;
        }
    }
    if !dirs.is_empty() {
        let root = root.to_path_buf();
        blocking(move || {
            for d in dirs {
                sync_dir(&root.join(d))?;
            }
            sync_dir(&root.join("sha256"))
        })
        .await?;
    }
    Ok((copied, bytes))
}

/// Re-hashes every blob and verifies the audit chain of the restored registry.
async fn verify_restored(
    store: &Store,
    settings: &Settings,
    pinned: Vec<PublicKey>,
    progress: OnStep<'_>,
) -> Result<(FsckReport, Report, KeySource)> {
    let blobs = crate::app::open_blobs(settings).await.map_err(|e| BackupError::Io {
        context: "cannot open the blob store".into(),
        source: std::io::Error::other(e),
    })?;
    let on_fsck = |p: maintenance::Progress| {
        if p.phase == maintenance::Phase::Verifying {
            progress(StepProgress { step: Step::Verifying, done: p.done, total: None, bytes: p.bytes });
        }
    };
    let fsck = maintenance::fsck(store, &blobs, &on_fsck).await?;
    progress(StepProgress { step: Step::AuditChain, done: 0, total: None, bytes: 0 });
    let (keys, source) = if !pinned.is_empty() {
        (pinned, KeySource::Pinned)
    } else {
        let key_file = settings.signing_key_path();
        match std::fs::read_to_string(&key_file).ok().and_then(|t| SigningKey::from_pem(&t).ok()) {
            Some(key) => (vec![key.public()], KeySource::KeyFile),
            None => {
                let known = store.signing_keys().await?;
                (known.iter().filter_map(|k| PublicKey::parse(&k.public_key).ok()).collect(), KeySource::Database)
            }
        }
    };
    let audit = store.verify_audit_chain(keys).await?;
    Ok((fsck, audit, source))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(BackupError::io(format!("cannot create {}", dir.display())))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(BackupError::io(format!("cannot create {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_sort_by_time() {
        assert_eq!(snapshot_id(0), "19700101T000000.000Z");
        assert!(snapshot_id(1_700_000_000_123) < snapshot_id(1_700_000_000_124));
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite:///var/lib/cairn/cairn.db"), Some(PathBuf::from("/var/lib/cairn/cairn.db")));
        assert_eq!(sqlite_path("sqlite://./x.db?mode=rwc"), Some(PathBuf::from("./x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    #[test]
    fn inventory_lines_are_checked() {
        let good = format!("{{\"digest\":\"{}\",\"size\":3}}", "a".repeat(64));
        assert_eq!(parse_inventory_line("f", good.as_bytes()).unwrap().size, 3);
        assert!(parse_inventory_line("f", b"{\"digest\":\"../../etc\",\"size\":3}").is_err());
        assert!(parse_inventory_line("f", b"{\"digest\":").is_err());
    }

    #[tokio::test]
    async fn lines_split_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let text = "one\ntwo\n\nthree";
        std::fs::write(dir.path().join("f"), text).unwrap();
        let f = tokio::fs::File::open(dir.path().join("f")).await.unwrap();
        let mut lines = Lines::new("f", RepoReader::File(f), 100);
        let mut got = Vec::new();
        while let Some(l) = lines.next().await.unwrap() {
            got.push(String::from_utf8(l).unwrap());
        }
        assert_eq!(got, ["one", "two", "", "three"]);
    }
}
