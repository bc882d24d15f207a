//! Content-addressed blob storage for Cairn's model files.
//!
//! A blob is a byte string named by the SHA-256 [`Digest`] of its plaintext. [`BlobStore`] keeps
//! blobs in a local directory or in an S3-compatible bucket (through `object_store`), takes them
//! in as resumable multi-part uploads (parts in any order, in parallel, retried), hashes while
//! streaming, and publishes a blob only after its size and digest have been verified — atomically,
//! so a reader or a listing never sees a partial or wrong blob, even if the process is killed
//! mid-write. With a key file it encrypts at rest (AES-256-GCM, STREAM construction over 64 KiB
//! segments); range reads of encrypted blobs decrypt only the segments they need.
//!
//! Main types: [`BlobStore`] (cheap to clone), [`BlobConfig`] (what `cairn serve` reads from
//! `CAIRN_BLOB_URL`, `CAIRN_DATA_DIR`, `CAIRN_ENCRYPTION_KEY_FILE`), [`BlobError`].
//!
//! What this crate does not do: it knows nothing of models, versions or the database. Which
//! blobs are referenced, who may read them and when an unreferenced blob may be deleted is the
//! caller's business; the upload handle is opaque and the caller persists it.
//!
//! With the feature `test-support`, [`test_support`] starts an S3-compatible server inside a test
//! process, so that S3 is tested without any external service. It is for tests only.
//!
//! The stored layout, the encryption format and what an attacker holding the disk can and
//! cannot learn are described in the crate's `README.md`.
//!
//! ```no_run
//! # async fn demo() -> cairn_blob::Result<()> {
//! use cairn_blob::{BlobConfig, BlobStore, Digest};
//! use futures::TryStreamExt;
//!
//! let store = BlobStore::open(&BlobConfig::local("./cairn-data")).await?;
//! let data = bytes::Bytes::from_static(b"weights");
//! let digest = Digest::of(&data);
//! store.put(&digest, data.len() as u64, futures::stream::iter([Ok(data)])).await?;
//! let reader = store.get(&digest, None).await?;
//! let chunks: Vec<bytes::Bytes> = reader.stream.try_collect().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod backend;
mod crypto;
mod digest;
mod local;
mod read;
mod s3;
mod store;
#[cfg(feature = "test-support")]
pub mod test_support;
mod upload;

use std::path::PathBuf;

/// Where the committed blob `digest` is stored, relative to the store's root (the local blob
/// directory, or the prefix of `s3://bucket/prefix`): `sha256/<hex[0..2]>/<hex>`. Tools that
/// copy stored objects as they are (backups) rely on it.
pub fn object_key(digest: &Digest) -> String {
    backend::blob_name(digest)
}

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use digest::{Digest, ParseDigestError};
pub use store::{BlobStore, DEFAULT_PART_SIZE};

/// Everything that can go wrong with a blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No committed blob has this digest.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// The data was longer or shorter than declared.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Bytes declared.
        expected: u64,
        /// Bytes received (or stored).
        actual: u64,
    },
    /// The uploaded bytes do not hash to the declared digest; nothing was stored.
    #[error("digest mismatch: the uploaded bytes hash to {actual}, not the declared {expected}; nothing was stored")]
    DigestMismatch {
        /// The digest the upload was started for.
        expected: Digest,
        /// The digest of the bytes that arrived.
        actual: Digest,
    },
    /// The stored object is damaged (or was tampered with); it must not be served.
    #[error("blob {digest} is corrupt: {reason}")]
    Corrupt {
        /// The damaged blob.
        digest: Digest,
        /// What was found wrong.
        reason: String,
    },
    /// A range that does not lie within the blob.
    #[error("invalid range: it must lie within the blob and not end before it starts")]
    InvalidRange,
    /// A part number, part body, receipt list or upload handle that does not fit the upload.
    #[error("invalid upload part: {0}")]
    InvalidPart(String),
    /// The store's settings are wrong (URL, key file, part size); the message says what to change.
    #[error("blob store configuration: {0}")]
    Config(String),
    /// The blob is encrypted with a key that the configured key file does not hold.
    #[error(
        "blob is encrypted with key id {0}, which the configured encryption key file does not contain (or no key file is configured); add that key on a later line of the key file"
    )]
    UnknownKey(String),
    /// A local file-system error.
    #[error("blob storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The object store (S3) failed or is unreachable.
    #[error("object store error: {0}")]
    Backend(String),
}

/// Result of every fallible operation of this crate.
pub type Result<T> = std::result::Result<T, BlobError>;

/// Where and how blobs are stored.
#[derive(Clone, Debug)]
pub struct BlobConfig {
    /// `None` → a local directory `<data_dir>/blobs`; `file:///abs/dir` → that directory;
    /// `s3://bucket/prefix` → S3 with credentials and endpoint from the usual `AWS_*` variables.
    pub url: Option<String>,
    /// Cairn's data directory.
    pub data_dir: PathBuf,
    /// Encrypt at rest with the keys in this file (first line active, later lines older keys).
    pub encryption_key_file: Option<PathBuf>,
}

impl BlobConfig {
    /// A local, unencrypted store under `<data_dir>/blobs`.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self { url: None, data_dir: data_dir.into(), encryption_key_file: None }
    }
}

/// Settings beyond [`BlobConfig`], for tests and embedders; [`BlobStore::open`] uses
/// [`BlobOptions::from_env`].
#[derive(Clone, Debug, Default)]
pub struct BlobOptions {
    /// Part size for uploads; default 16 MiB. Must be a multiple of 64 KiB (the encryption
    /// segment), and at least 5 MiB on S3 (S3's minimum for all but the last part).
    pub part_size: Option<u64>,
    /// How to reach S3 when the URL is `s3://…`.
    pub s3: S3Options,
}

impl BlobOptions {
    /// S3 settings from the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, and whatever
    /// else `object_store` reads (instance metadata, web identity).
    pub fn from_env() -> Self {
        Self { part_size: None, s3: S3Options { from_env: true, ..S3Options::default() } }
    }
}

/// Explicit S3 settings; each overrides the environment when `from_env` is set.
#[derive(Clone, Default)]
pub struct S3Options {
    /// Start from the `AWS_*` environment variables.
    pub from_env: bool,
    /// Endpoint of an S3-compatible service, e.g. `http://127.0.0.1:9000`. Plain HTTP is
    /// allowed only for loopback endpoints.
    pub endpoint: Option<String>,
    /// AWS region, e.g. `us-east-1`.
    pub region: Option<String>,
    /// Static credentials; without them `object_store` uses the environment's provider chain.
    pub access_key_id: Option<String>,
    /// Never shown by `Debug`.
    pub secret_access_key: Option<String>,
    /// Temporary-credential session token; never shown by `Debug`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("from_env", &self.from_env)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What [`BlobStore::stat`] knows about a committed blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Plaintext size in bytes.
    pub size: u64,
    /// Id of the key the blob is encrypted with (16 hex), `None` if stored unencrypted.
    pub key_id: Option<String>,
}

/// An upload in progress; opaque, persisted by the caller (e.g. in the database) so that any
/// replica can continue it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UploadHandle(pub String);

/// Proof that a part was stored; pass all of them to [`BlobStore::complete_upload`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartReceipt {
    /// Part number, from 1.
    pub part: u32,
    /// Plaintext bytes in the part.
    pub size: u64,
    /// Identifies this upload of the part; a re-uploaded part gets a new one.
    pub etag: String,
}

/// A blob being read.
pub struct BlobReader {
    /// Total plaintext size of the blob (not of the range).
    pub size: u64,
    /// The requested bytes, in bounded memory.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader").field("size", &self.size).finish_non_exhaustive()
    }
}

/// What [`BlobStore::verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Present, and its content hashes to its digest.
    Ok,
    /// No such blob.
    Missing,
    /// Present but damaged; the reason says how.
    Corrupt(String),
}

/// One committed blob, as [`BlobStore::list`] yields them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedBlob {
    /// The blob's name.
    pub digest: Digest,
    /// Bytes the stored object occupies (plaintext size plus encryption overhead, if any).
    pub stored_size: u64,
    /// When the stored object was last written (published or re-encrypted).
    pub last_modified: std::time::SystemTime,
}
