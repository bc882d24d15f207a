//! The two places bytes can live, behind one small enum. Backends move stored bytes (already
//! encrypted when encryption is on); hashing, encryption and verification live above them.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::{Digest, ListedBlob, PartReceipt, Result, local, s3};

/// A stored object: a committed blob, or the staging object of an upload.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Location {
    Blob(Digest),
    Staging(Uuid),
}

/// The staging side of an upload.
#[derive(Clone, Debug)]
pub(crate) struct Staging {
    pub id: Uuid,
    /// S3 multipart upload id.
    pub multipart: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct ObjectInfo {
    pub size: u64,
}

pub(crate) enum Backend {
    Local(local::LocalBackend),
    S3(s3::S3Backend),
}

pub(crate) enum PartWriter {
    Local(local::LocalPartWriter),
    S3(s3::S3PartWriter),
}

impl PartWriter {
    pub async fn write(&mut self, bytes: Bytes) -> Result<()> {
        match self {
            Self::Local(w) => w.write(bytes).await,
            Self::S3(w) => {
                w.write(bytes);
                Ok(())
            }
        }
    }

    /// Make the part durable and return its etag.
    pub async fn finish(self) -> Result<String> {
        match self {
            Self::Local(w) => w.finish().await,
            Self::S3(w) => w.finish().await,
        }
    }
}

impl Backend {
    pub fn describe(&self) -> String {
        match self {
            Self::Local(b) => b.describe(),
            Self::S3(b) => b.describe(),
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Self::S3(_))
    }

    pub async fn ping(&self) -> Result<()> {
        match self {
            Self::Local(b) => b.ping().await,
            Self::S3(b) => b.ping().await,
        }
    }

    pub async fn head(&self, loc: Location) -> Result<Option<ObjectInfo>> {
        match self {
            Self::Local(b) => b.head(loc).await,
            Self::S3(b) => b.head(loc).await,
        }
    }

    /// Stored bytes in `range` (never empty).
    pub async fn read(&self, loc: Location, range: Range<u64>) -> Result<BoxStream<'static, Result<Bytes>>> {
        debug_assert!(!range.is_empty());
        match self {
            Self::Local(b) => b.read(loc, range).await,
            Self::S3(b) => b.read(loc, range).await,
        }
    }

    pub async fn begin(&self, id: Uuid) -> Result<Staging> {
        match self {
            Self::Local(b) => b.begin(id).await,
            Self::S3(b) => b.begin(id).await,
        }
    }

    /// A writer for `part` whose stored bytes start at `offset` of the staging object. Any
    /// earlier upload of the same part stops counting now.
    pub async fn open_part(&self, staging: &Staging, part: u32, offset: u64) -> Result<PartWriter> {
        match self {
            Self::Local(b) => Ok(PartWriter::Local(b.open_part(staging, part, offset).await?)),
            Self::S3(b) => Ok(PartWriter::S3(b.open_part(staging, part).await?)),
        }
    }

    /// Check the receipts against what was stored and make the staging object whole.
    pub async fn seal(&self, staging: &Staging, parts: &[PartReceipt]) -> Result<()> {
        match self {
            Self::Local(b) => b.seal(staging, parts).await,
            Self::S3(b) => b.seal(staging, parts).await,
        }
    }

    /// Atomically make the sealed staging object the blob `digest`, then drop the staging.
    pub async fn publish(&self, staging: &Staging, digest: &Digest) -> Result<()> {
        match self {
            Self::Local(b) => b.publish(staging, digest).await,
            Self::S3(b) => b.publish(staging, digest).await,
        }
    }

    /// Remove everything of an upload; idempotent.
    pub async fn discard(&self, staging: &Staging) -> Result<()> {
        match self {
            Self::Local(b) => b.discard(staging).await,
            Self::S3(b) => b.discard(staging).await,
        }
    }

    pub async fn delete(&self, digest: &Digest) -> Result<()> {
        match self {
            Self::Local(b) => b.delete(digest).await,
            Self::S3(b) => b.delete(digest).await,
        }
    }

    pub fn list(&self) -> BoxStream<'static, Result<ListedBlob>> {
        match self {
            Self::Local(b) => b.list(),
            Self::S3(b) => b.list(),
        }
    }

    pub async fn sweep(&self, older_than: Duration) -> Result<u64> {
        match self {
            Self::Local(b) => b.sweep(older_than).await,
            Self::S3(b) => b.sweep(older_than).await,
        }
    }

    pub async fn presign(&self, digest: &Digest, ttl: Duration) -> Result<Option<String>> {
        match self {
            Self::Local(_) => Ok(None),
            Self::S3(b) => b.presign(digest, ttl).await.map(Some),
        }
    }
}

/// `sha256/<hex[0..2]>/<hex>`, the committed-blob name relative to the store root.
pub(crate) fn blob_name(digest: &Digest) -> String {
    let hex = digest.to_hex();
    format!("sha256/{}/{hex}", &hex[..2])
}

/// Parse `<xx>/<hex>` back into a digest, accepting only well-formed names.
pub(crate) fn parse_blob_name(dir: &str, file: &str) -> Option<Digest> {
    let digest: Digest = file.parse().ok()?;
    (file.get(..2) == Some(dir)).then_some(digest)
}
