//! Blobs in an S3-compatible bucket, through `object_store`.
//!
//! `<prefix>/sha256/<hex[0..2]>/<hex>` holds committed blobs; an upload is an S3 multipart
//! upload on `<prefix>/staging/<upload id>`, invisible until completed. After completion and
//! verification the staging object is copied server-side to its final name (an atomic
//! publish: S3 never shows a half-copied object) and deleted.
//!
//! `object_store`'s part API takes the whole part as an in-memory payload, so each part in
//! flight holds one part (16 MiB by default, plus 16 bytes per 64 KiB when encrypted) in memory.
//! At most [`PARTS_IN_MEMORY`] parts are held at once, across all uploads: the server's memory
//! stays bounded whatever the number of clients, and a part beyond that waits (its body unread)
//! until one has gone to S3.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, PutPayloadMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::backend::{Location, ObjectInfo, Staging, blob_name, parse_blob_name};
use crate::{BlobError, Digest, ListedBlob, PartReceipt, Result, S3Options};

/// S3 refuses more parts than this in one upload.
pub(crate) const MAX_PARTS: u32 = 10_000;
/// S3's minimum size of every part but the last.
pub(crate) const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// Parts held in memory at once on their way to S3, across all uploads of one store (32 MiB
/// with the default part size of 16 MiB).
pub(crate) const PARTS_IN_MEMORY: usize = 2;

/// A part in memory is a list of blocks of this size. One allocation of a whole part would
/// raise glibc's mmap threshold above it, after which such parts come from the heap and are
/// not given back: the server's RSS then grows far past the parts it holds.
const PART_BLOCK: usize = 1024 * 1024;

pub(crate) struct S3Backend {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    in_memory: Arc<Semaphore>,
}

pub(crate) struct S3PartWriter {
    store: Arc<AmazonS3>,
    path: Path,
    multipart: String,
    part: u32,
    /// The request's chunks are copied into blocks of [`PART_BLOCK`] rather than kept, because
    /// each may pin a larger read buffer of the HTTP server.
    payload: PutPayloadMut,
    _turn: OwnedSemaphorePermit,
}

impl S3PartWriter {
    pub fn write(&mut self, bytes: Bytes) {
        self.payload.extend_from_slice(&bytes);
    }

    pub async fn finish(self) -> Result<String> {
        let idx = (self.part - 1) as usize;
        let id = self.store.put_part(&self.path, &self.multipart, idx, self.payload.freeze()).await.map_err(backend)?;
        Ok(id.content_id)
    }
}

impl S3Backend {
    /// `bucket_and_prefix` is what follows `s3://`.
    pub fn open(bucket_and_prefix: &str, options: &S3Options) -> Result<Self> {
        let (bucket, prefix) = bucket_and_prefix.split_once('/').unwrap_or((bucket_and_prefix, ""));
        let prefix = prefix.trim_matches('/').to_string();
        if bucket.is_empty() {
            return Err(BlobError::Config(
                "an S3 blob URL looks like s3://bucket/prefix; the bucket is missing".into(),
            ));
        }
        if Path::parse(&prefix).is_err() {
            return Err(BlobError::Config(format!("S3 prefix {prefix:?} is not a valid object path")));
        }
        let mut builder = if options.from_env { AmazonS3Builder::from_env() } else { AmazonS3Builder::new() };
        builder = builder.with_bucket_name(bucket);
        if let Some(region) = &options.region {
            builder = builder.with_region(region);
        } else if options.from_env
            && std::env::var_os("AWS_REGION").is_none()
            && let Ok(region) = std::env::var("AWS_DEFAULT_REGION")
        {
            builder = builder.with_region(region);
        }
        if let Some(v) = &options.access_key_id {
            builder = builder.with_access_key_id(v);
        }
        if let Some(v) = &options.secret_access_key {
            builder = builder.with_secret_access_key(v);
        }
        if let Some(v) = &options.session_token {
            builder = builder.with_token(v);
        }
        let endpoint = options.endpoint.clone().or_else(|| {
            options
                .from_env
                .then(|| std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).ok())?
        });
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint);
            if is_loopback(endpoint) {
                builder = builder.with_allow_http(true);
            }
        }
        let store = builder.build().map_err(|e| BlobError::Config(format!("S3 settings: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix,
            in_memory: Arc::new(Semaphore::new(PARTS_IN_MEMORY)),
        })
    }

    pub fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3 {}", self.bucket)
        } else {
            format!("s3 {}/{}", self.bucket, self.prefix)
        }
    }

    fn path(&self, rest: &str) -> Path {
        if self.prefix.is_empty() { Path::from(rest) } else { Path::from(format!("{}/{rest}", self.prefix)) }
    }

    fn location(&self, loc: Location) -> Path {
        match loc {
            Location::Blob(d) => self.path(&blob_name(&d)),
            Location::Staging(id) => self.staging_path(id),
        }
    }

    fn staging_path(&self, id: Uuid) -> Path {
        self.path(&format!("staging/{id}"))
    }

    pub async fn ping(&self) -> Result<()> {
        let probe = self.path(&format!("staging/ping-{}", Uuid::new_v4()));
        self.store.put(&probe, PutPayload::from_static(b"ping")).await.map_err(backend)?;
        self.store.delete(&probe).await.map_err(backend)?;
        Ok(())
    }

    pub async fn head(&self, loc: Location) -> Result<Option<ObjectInfo>> {
        match self.store.head(&self.location(loc)).await {
            Ok(meta) => Ok(Some(ObjectInfo { size: meta.size })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    pub async fn read(&self, loc: Location, range: Range<u64>) -> Result<BoxStream<'static, Result<Bytes>>> {
        let options = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
        match self.store.get_opts(&self.location(loc), options).await {
            Ok(result) => Ok(result.into_stream().map_err(backend).boxed()),
            Err(object_store::Error::NotFound { .. }) => Err(match loc {
                Location::Blob(d) => BlobError::NotFound(d),
                Location::Staging(id) => BlobError::InvalidPart(format!("upload {id} has no staged object")),
            }),
            Err(e) => Err(backend(e)),
        }
    }

    pub async fn begin(&self, id: Uuid) -> Result<Staging> {
        let multipart = self.store.create_multipart(&self.staging_path(id)).await.map_err(backend)?;
        Ok(Staging { id, multipart: Some(multipart) })
    }

    /// A writer for part `part`, once it is this part's turn to be held in memory.
    pub async fn open_part(&self, staging: &Staging, part: u32) -> Result<S3PartWriter> {
        let multipart = staging
            .multipart
            .clone()
            .ok_or_else(|| BlobError::InvalidPart("upload handle has no S3 multipart upload id".into()))?;
        let turn = self.in_memory.clone().acquire_owned().await.map_err(|_| BlobError::Backend("closed".into()))?;
        Ok(S3PartWriter {
            store: self.store.clone(),
            path: self.staging_path(staging.id),
            multipart,
            part,
            payload: PutPayloadMut::new().with_block_size(PART_BLOCK),
            _turn: turn,
        })
    }

    pub async fn seal(&self, staging: &Staging, parts: &[PartReceipt]) -> Result<()> {
        let multipart = staging
            .multipart
            .as_ref()
            .ok_or_else(|| BlobError::InvalidPart("upload handle has no S3 multipart upload id".into()))?;
        let ids = parts.iter().map(|p| PartId { content_id: p.etag.clone() }).collect();
        let path = self.staging_path(staging.id);
        match self.store.complete_multipart(&path, multipart, ids).await {
            Ok(_) => Ok(()),
            // A retried completion whose first attempt completed the multipart upload but died
            // before publishing: the staged object is there, and verification decides.
            Err(_) if self.head(Location::Staging(staging.id)).await?.is_some() => Ok(()),
            Err(e) => Err(BlobError::InvalidPart(format!("S3 refused to complete the upload: {e}"))),
        }
    }

    pub async fn publish(&self, staging: &Staging, digest: &Digest) -> Result<()> {
        let from = self.staging_path(staging.id);
        self.store.copy(&from, &self.path(&blob_name(digest))).await.map_err(backend)?;
        self.store.delete(&from).await.map_err(backend)?;
        Ok(())
    }

    pub async fn discard(&self, staging: &Staging) -> Result<()> {
        let path = self.staging_path(staging.id);
        if let Some(multipart) = &staging.multipart {
            // Fails once the upload was completed or aborted; that is the state we want anyway.
            let _ = self.store.abort_multipart(&path, multipart).await;
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    pub async fn delete(&self, digest: &Digest) -> Result<()> {
        match self.store.delete(&self.path(&blob_name(digest))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    pub fn list(&self) -> BoxStream<'static, Result<ListedBlob>> {
        let root = self.path("sha256");
        let depth = root.parts().count();
        self.store
            .list(Some(&root))
            .map_err(backend)
            .try_filter_map(move |meta| async move {
                let parts: Vec<_> = meta.location.parts().skip(depth).collect();
                let digest = match parts.as_slice() {
                    [dir, file] => parse_blob_name(dir.as_ref(), file.as_ref()),
                    _ => None,
                };
                Ok(digest.map(|digest| ListedBlob {
                    digest,
                    stored_size: meta.size,
                    last_modified: SystemTime::from(meta.last_modified),
                }))
            })
            .boxed()
    }

    /// Delete completed-but-unpublished staging objects. Multipart uploads that were never
    /// completed are not listable through `object_store`; a bucket lifecycle rule
    /// (`AbortIncompleteMultipartUpload`) removes those.
    pub async fn sweep(&self, older_than: Duration) -> Result<u64> {
        let now = SystemTime::now();
        let mut stale = self.store.list(Some(&self.path("staging")));
        let mut removed = 0;
        while let Some(meta) = stale.next().await {
            let meta = meta.map_err(backend)?;
            let modified = SystemTime::from(meta.last_modified);
            if now.duration_since(modified).unwrap_or_default() >= older_than {
                match self.store.delete(&meta.location).await {
                    Ok(()) => removed += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(backend(e)),
                }
            }
        }
        Ok(removed)
    }

    pub async fn presign(&self, digest: &Digest, ttl: Duration) -> Result<String> {
        let url =
            self.store.signed_url(http::Method::GET, &self.path(&blob_name(digest)), ttl).await.map_err(backend)?;
        Ok(url.to_string())
    }
}

fn backend(e: object_store::Error) -> BlobError {
    BlobError::Backend(e.to_string())
}

fn is_loopback(endpoint: &str) -> bool {
    match url::Url::parse(endpoint).ok().and_then(|u| u.host().map(|h| h.to_owned())) {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_endpoints_may_use_plain_http() {
        assert!(super::is_loopback("http://127.0.0.1:9000"));
        assert!(super::is_loopback("http://localhost:9000"));
        assert!(super::is_loopback("http://[::1]:9000"));
        assert!(!super::is_loopback("http://minio.internal:9000"));
        assert!(!super::is_loopback("http://10.0.0.1"));
    }
}
