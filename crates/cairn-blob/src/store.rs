//! [`BlobStore`]: the public face, tying backends, encryption and verification together.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use sha2::Digest as _;
use uuid::Uuid;

use crate::backend::{Backend, Location, Staging};
use crate::crypto::{HEADER_LEN, Header, KeyId, Keyring, SEGMENT_SIZE, SegmentCipher, encrypted_len};
use crate::read::{Layout, plaintext};
use crate::upload::{HandleData, InOrderHashes, PartEncoder, PartTaker};
use crate::{
    BlobConfig, BlobError, BlobInfo, BlobOptions, BlobReader, Digest, ListedBlob, PartReceipt, Result, UploadHandle,
    VerifyOutcome, local, s3,
};

/// Default part size for uploads.
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;

/// The blob store. Cheap to clone; all clones share one backend and key ring.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<Backend>,
    keyring: Option<Keyring>,
    part_size: u64,
    in_order: Arc<InOrderHashes>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("store", &self.describe()).finish()
    }
}

impl BlobStore {
    /// Open the store described by `cfg`, with S3 settings from the `AWS_*` environment.
    /// Creates the local directory if needed; does not contact S3 (see [`BlobStore::ping`]).
    pub async fn open(cfg: &BlobConfig) -> Result<Self> {
        Self::open_with(cfg, &BlobOptions::from_env()).await
    }

    /// Like [`BlobStore::open`] with explicit options (part size, S3 endpoint and credentials).
    pub async fn open_with(cfg: &BlobConfig, options: &BlobOptions) -> Result<Self> {
        let keyring = match &cfg.encryption_key_file {
            Some(path) => {
                let path = path.clone();
                Some(
                    tokio::task::spawn_blocking(move || Keyring::load(&path))
                        .await
                        .map_err(|e| BlobError::Config(format!("reading the encryption key file failed: {e}")))??,
                )
            }
            None => None,
        };
        let backend = match cfg.url.as_deref() {
            None => {
                let root = cfg.data_dir.join("blobs");
                tokio::fs::create_dir_all(&root).await?;
                Backend::Local(local::LocalBackend::new(root))
            }
            Some(url) if url.starts_with("file:") => {
                let parsed = url::Url::parse(url).map_err(|e| BlobError::Config(format!("blob URL {url:?}: {e}")))?;
                let root = parsed
                    .to_file_path()
                    .ok()
                    .filter(|p| p.is_absolute())
                    .ok_or_else(|| BlobError::Config(format!("blob URL {url:?}: use file:///absolute/dir")))?;
                tokio::fs::create_dir_all(&root).await?;
                Backend::Local(local::LocalBackend::new(root))
            }
            Some(url) if url.starts_with("s3://") => {
                Backend::S3(s3::S3Backend::open(&url["s3://".len()..], &options.s3)?)
            }
            Some(url) => {
                return Err(BlobError::Config(format!(
                    "blob URL {url:?} is not supported; use file:///absolute/dir or s3://bucket/prefix"
                )));
            }
        };
        let part_size = options.part_size.unwrap_or(DEFAULT_PART_SIZE);
        if part_size == 0 || !part_size.is_multiple_of(SEGMENT_SIZE) {
            return Err(BlobError::Config(format!("part size {part_size} must be a positive multiple of 64 KiB")));
        }
        if backend.is_s3() && part_size < s3::MIN_PART_SIZE {
            return Err(BlobError::Config(format!("part size {part_size} is below S3's minimum of 5 MiB")));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                backend: Arc::new(backend),
                keyring,
                part_size,
                in_order: Arc::new(InOrderHashes::default()),
            }),
        })
    }

    /// Where blobs live and whether they are encrypted; never contains secrets.
    pub fn describe(&self) -> String {
        let mut out = self.inner.backend.describe();
        if let Some(ring) = &self.inner.keyring {
            out.push_str(&format!(", encrypted (key id {}", ring.active().id()));
            if ring.len() > 1 {
                out.push_str(&format!(", {} older keys accepted for reading", ring.len() - 1));
            }
            out.push(')');
        }
        out
    }

    /// Check that the store is reachable and writable (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        self.inner.backend.ping().await
    }

    /// Plaintext bytes per upload part (the last part may be shorter).
    pub fn part_size(&self) -> u64 {
        self.inner.part_size
    }

    /// Parts in an upload of `size` bytes; an empty blob is one empty part.
    pub fn part_count(&self, size: u64) -> u32 {
        u32::try_from(size.div_ceil(self.inner.part_size).max(1)).unwrap_or(u32::MAX)
    }

    /// Plaintext offset and length of `part` (from 1).
    fn part_range(&self, size: u64, part: u32) -> (u64, u64) {
        let start = u64::from(part - 1) * self.inner.part_size;
        (start, (size - start).min(self.inner.part_size))
    }

    /// Stored size of a blob of `size` bytes written by this store.
    fn stored_len(&self, size: u64, encrypted: bool) -> u64 {
        if encrypted { encrypted_len(size, SEGMENT_SIZE) } else { size }
    }

    /// Size and key of a committed blob, or `None`.
    pub async fn stat(&self, d: &Digest) -> Result<Option<BlobInfo>> {
        Ok(self.inspect(Location::Blob(*d), d).await?.map(|(_, header)| match header {
            Inspected::Plain(size) => BlobInfo { size, key_id: None },
            Inspected::Encrypted(h) => BlobInfo { size: h.plaintext_size, key_id: Some(h.key_id.to_string()) },
        }))
    }

    /// Size and format of a stored object, read from its first bytes.
    async fn inspect(&self, loc: Location, d: &Digest) -> Result<Option<(u64, Inspected)>> {
        let Some(info) = self.inner.backend.head(loc).await? else { return Ok(None) };
        if info.size < HEADER_LEN {
            return Ok(Some((info.size, Inspected::Plain(info.size))));
        }
        let mut probe = Vec::with_capacity(HEADER_LEN as usize);
        let mut stream = self.inner.backend.read(loc, 0..HEADER_LEN).await?;
        while let Some(chunk) = stream.next().await {
            probe.extend_from_slice(&chunk?);
        }
        if !Header::has_magic(&probe) {
            return Ok(Some((info.size, Inspected::Plain(info.size))));
        }
        let header = Header::decode(&probe).map_err(|reason| BlobError::Corrupt { digest: *d, reason })?;
        if header.stored_len() != info.size {
            return Err(BlobError::Corrupt {
                digest: *d,
                reason: format!(
                    "stored object has {} bytes, its header says {} ({} bytes of plaintext)",
                    info.size,
                    header.stored_len(),
                    header.plaintext_size
                ),
            });
        }
        Ok(Some((info.size, Inspected::Encrypted(header))))
    }

    fn layout(&self, inspected: Inspected, d: &Digest) -> Result<Layout> {
        match inspected {
            Inspected::Plain(size) => Ok(Layout::Plain { size }),
            Inspected::Encrypted(header) => {
                let key = self
                    .inner
                    .keyring
                    .as_ref()
                    .and_then(|ring| ring.get(header.key_id))
                    .ok_or_else(|| BlobError::UnknownKey(header.key_id.to_string()))?;
                Ok(Layout::Encrypted(SegmentCipher::new(key.clone(), header, d)))
            }
        }
    }

    /// Begin an upload of blob `d` of `size` bytes in [`BlobStore::part_count`] parts.
    pub async fn start_upload(&self, d: &Digest, size: u64) -> Result<UploadHandle> {
        let parts = size.div_ceil(self.inner.part_size).max(1);
        if self.inner.backend.is_s3() && parts > u64::from(s3::MAX_PARTS) {
            return Err(BlobError::InvalidPart(format!(
                "a blob of {size} bytes needs {parts} parts of {} bytes; S3 allows at most {}",
                self.inner.part_size,
                s3::MAX_PARTS
            )));
        }
        if size.div_ceil(SEGMENT_SIZE) > u64::from(u32::MAX) {
            return Err(BlobError::InvalidPart(format!("a blob of {size} bytes is too large")));
        }
        let header = self.inner.keyring.as_ref().map(|ring| Header::new(ring.active().id(), size));
        let id = Uuid::new_v4();
        let staging = self.inner.backend.begin(id).await?;
        Ok(HandleData {
            v: 1,
            id,
            digest: d.to_hex(),
            size,
            multipart: staging.multipart,
            key_id: header.map(|h| h.key_id.to_string()),
            nonce: header.map(|h| hex::encode(h.nonce_prefix)),
        }
        .encode())
    }

    /// The cipher an upload was started with, if encrypted.
    fn upload_cipher(&self, data: &HandleData, d: &Digest) -> Result<Option<SegmentCipher>> {
        let (Some(key_id), Some(nonce)) = (&data.key_id, &data.nonce) else { return Ok(None) };
        let invalid = || BlobError::InvalidPart("malformed upload handle".into());
        let key_id = KeyId::parse(key_id).ok_or_else(invalid)?;
        let mut nonce_prefix = [0u8; 7];
        hex::decode_to_slice(nonce, &mut nonce_prefix).map_err(|_| invalid())?;
        let key = self
            .inner
            .keyring
            .as_ref()
            .and_then(|ring| ring.get(key_id))
            .ok_or_else(|| BlobError::UnknownKey(key_id.to_string()))?;
        let header = Header { key_id, nonce_prefix, segment_size: SEGMENT_SIZE, plaintext_size: data.size };
        Ok(Some(SegmentCipher::new(key.clone(), header, d)))
    }

    /// Store part `part` (from 1) of an upload. The body must hold exactly that part's bytes
    /// ([`BlobStore::part_size`], the last part the rest), else nothing of it is kept. Parts may
    /// come in any order and in parallel; uploading a part again replaces it.
    pub async fn put_part<S>(&self, h: &UploadHandle, d: &Digest, size: u64, part: u32, body: S) -> Result<PartReceipt>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        self.put_part_from(h, d, size, part, body.map_err(BlobError::Io)).await
    }

    async fn put_part_from<S>(
        &self,
        h: &UploadHandle,
        d: &Digest,
        size: u64,
        part: u32,
        mut body: S,
    ) -> Result<PartReceipt>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin,
    {
        let data = HandleData::decode(h)?;
        data.check(d, size)?;
        let count = self.part_count(size);
        if part == 0 || part > count {
            return Err(BlobError::InvalidPart(format!(
                "part {part} is out of range: this upload has parts 1..={count}"
            )));
        }
        let (start, len) = self.part_range(size, part);
        let cipher = self.upload_cipher(&data, d)?;
        let offset = match &cipher {
            None => start,
            Some(_) if part == 1 => 0,
            Some(c) => c.header().segment_offset(start / SEGMENT_SIZE),
        };
        let staging = Staging { id: data.id, multipart: data.multipart.clone() };
        let mut writer = self.inner.backend.open_part(&staging, part, offset).await?;
        let mut ticket = self.inner.in_order.begin(data.id, part);
        let mut encoder = PartEncoder::new(cipher, start, part == 1, part == count);
        let mut out = Vec::new();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            received += chunk.len() as u64;
            if received > len {
                return Err(BlobError::SizeMismatch { expected: len, actual: received });
            }
            ticket.update(&chunk);
            encoder.push(chunk, &mut out)?;
            for stored in out.drain(..) {
                writer.write(stored).await?;
            }
        }
        if received != len {
            return Err(BlobError::SizeMismatch { expected: len, actual: received });
        }
        encoder.finish(&mut out)?;
        for stored in out.drain(..) {
            writer.write(stored).await?;
        }
        let etag = writer.finish().await?;
        ticket.succeed(&etag);
        Ok(PartReceipt { part, size: len, etag })
    }

    /// Assemble the parts, verify size and digest, and publish the blob atomically. On a
    /// mismatch nothing becomes visible and the upload is discarded. If the blob already
    /// exists the upload is discarded and this succeeds (deduplication, idempotent retry).
    /// Receipts that do not fit the upload (a part missing or re-uploaded) fail with
    /// [`BlobError::InvalidPart`] and leave the upload in place, so it can be fixed and retried.
    pub async fn complete_upload(&self, h: &UploadHandle, d: &Digest, size: u64, parts: &[PartReceipt]) -> Result<()> {
        self.complete(h, d, size, parts, false).await
    }

    async fn complete(
        &self,
        h: &UploadHandle,
        d: &Digest,
        size: u64,
        parts: &[PartReceipt],
        replace: bool,
    ) -> Result<()> {
        let data = HandleData::decode(h)?;
        data.check(d, size)?;
        let staging = Staging { id: data.id, multipart: data.multipart.clone() };
        let mut parts = parts.to_vec();
        parts.sort_by_key(|p| p.part);
        let count = self.part_count(size);
        if parts.len() != count as usize {
            return Err(BlobError::InvalidPart(format!("expected receipts for {count} parts, got {}", parts.len())));
        }
        for (i, p) in parts.iter().enumerate() {
            let expected_part = i as u32 + 1;
            if p.part != expected_part {
                return Err(BlobError::InvalidPart(format!("receipt for part {expected_part} is missing or doubled")));
            }
            let (_, len) = self.part_range(size, expected_part);
            if p.size != len {
                return Err(BlobError::InvalidPart(format!(
                    "receipt for part {} says {} bytes; that part has {len}",
                    p.part, p.size
                )));
            }
        }
        if !replace && let Some(existing) = self.inner.backend.head(Location::Blob(*d)).await? {
            // Deduplicate, unless the existing object cannot be this blob at all (truncated or
            // overwritten), in which case the verified upload replaces it.
            let plausible = existing.size == size || existing.size == encrypted_len(size, SEGMENT_SIZE);
            if plausible {
                self.inner.in_order.forget(data.id);
                return self.inner.backend.discard(&staging).await;
            }
        }
        let streamed = self.inner.in_order.take(data.id, &parts);
        self.inner.backend.seal(&staging, &parts).await?;
        let result = self.verify_and_publish(&data, &staging, d, size, streamed).await;
        if result.is_err() {
            let _ = self.inner.backend.discard(&staging).await;
        }
        result
    }

    async fn verify_and_publish(
        &self,
        data: &HandleData,
        staging: &Staging,
        d: &Digest,
        size: u64,
        streamed: Option<Digest>,
    ) -> Result<()> {
        let cipher = self.upload_cipher(data, d)?;
        let loc = Location::Staging(data.id);
        let expected = self.stored_len(size, cipher.is_some());
        let stored = self.inner.backend.head(loc).await?.map(|i| i.size).unwrap_or(0);
        if stored != expected {
            return Err(BlobError::SizeMismatch { expected, actual: stored });
        }
        let actual = match streamed {
            Some(digest) => digest,
            None => {
                let layout = match cipher {
                    Some(c) => Layout::Encrypted(c),
                    None => Layout::Plain { size },
                };
                let mut hasher = sha2::Sha256::new();
                let mut stream = plaintext(self.inner.backend.clone(), loc, *d, layout, 0..size, false);
                while let Some(chunk) = stream.next().await {
                    hasher.update(&chunk?);
                }
                Digest::from_hasher(hasher)
            }
        };
        if actual != *d {
            return Err(BlobError::DigestMismatch { expected: *d, actual });
        }
        self.inner.backend.publish(staging, d).await
    }

    /// Drop an upload and everything staged for it; idempotent.
    pub async fn abort_upload(&self, h: &UploadHandle) -> Result<()> {
        let data = HandleData::decode(h)?;
        self.inner.in_order.forget(data.id);
        self.inner.backend.discard(&Staging { id: data.id, multipart: data.multipart }).await
    }

    /// Store a whole blob from one body, with the same verification and atomicity as an upload.
    /// If the blob already exists with this size, the body is not read; if the stored copy is
    /// damaged, the verified new one replaces it.
    pub async fn put<S>(&self, d: &Digest, size: u64, body: S) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let replace = match self.stat(d).await {
            Ok(Some(info)) if info.size == size => return Ok(()),
            Ok(None) => false,
            // The stored object and the caller disagree on the size, or the object is damaged:
            // the upload's own verification decides, and only a verified blob replaces it.
            Ok(Some(_)) | Err(BlobError::Corrupt { .. }) => true,
            Err(e) => return Err(e),
        };
        self.put_from(d, size, body.map_err(BlobError::Io), replace).await
    }

    async fn put_from<S>(&self, d: &Digest, size: u64, mut body: S, replace: bool) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Send + Unpin,
    {
        let handle = self.start_upload(d, size).await?;
        let mut leftover = None;
        let mut consumed = 0u64;
        let result = async {
            let mut receipts = Vec::new();
            for part in 1..=self.part_count(size) {
                let (_, len) = self.part_range(size, part);
                let taker =
                    PartTaker { body: &mut body, leftover: &mut leftover, remaining: len, consumed: &mut consumed };
                match self.put_part_from(&handle, d, size, part, taker).await {
                    Ok(receipt) => receipts.push(receipt),
                    Err(BlobError::SizeMismatch { .. }) => {
                        return Err(BlobError::SizeMismatch { expected: size, actual: consumed });
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut extra = leftover.take().map_or(0, |b| b.len() as u64);
            while let Some(chunk) = body.next().await {
                extra += chunk?.len() as u64;
            }
            if extra > 0 {
                return Err(BlobError::SizeMismatch { expected: size, actual: size + extra });
            }
            self.complete(&handle, d, size, &receipts, replace).await
        }
        .await;
        if result.is_err() {
            let _ = self.abort_upload(&handle).await;
        }
        result
    }

    /// Read a blob, or `range` of it (plaintext offsets, end exclusive), in bounded memory.
    ///
    /// A full read verifies the digest and never yields the final chunk of a blob whose
    /// content does not match (it yields [`BlobError::Corrupt`] instead). Encrypted reads fail
    /// at the first segment that does not authenticate; a range read decrypts only the
    /// segments it covers. A range outside the blob is [`BlobError::InvalidRange`].
    pub async fn get(&self, d: &Digest, range: Option<Range<u64>>) -> Result<BlobReader> {
        let (_, inspected) = self.inspect(Location::Blob(*d), d).await?.ok_or(BlobError::NotFound(*d))?;
        let layout = self.layout(inspected, d)?;
        let size = layout.plaintext_size();
        let (range, full) = match range {
            None => (0..size, true),
            Some(r) if r.start > r.end || r.end > size => return Err(BlobError::InvalidRange),
            Some(r) => {
                let full = r.start == 0 && r.end == size;
                (r, full)
            }
        };
        let stream = if range.is_empty() && !full {
            futures::stream::empty().boxed()
        } else {
            plaintext(self.inner.backend.clone(), Location::Blob(*d), *d, layout, range, full)
        };
        Ok(BlobReader { size, stream })
    }

    /// The file holding a committed blob's exact bytes, when there is one: a local store
    /// without encryption. Readers that need random access at file speed (the artifact
    /// scanner) read it directly; the bytes were verified when the blob was committed, and
    /// committed blobs never change. `None` for S3 and for encrypted stores.
    pub fn plaintext_file(&self, d: &Digest) -> Option<std::path::PathBuf> {
        match (&*self.inner.backend, &self.inner.keyring) {
            (Backend::Local(local), None) => Some(local.blob_path(d)),
            _ => None,
        }
    }

    /// A time-limited URL to download the blob directly from S3, when that serves the exact
    /// bytes: S3 without encryption. `None` for local stores and encrypted stores.
    pub async fn presign_get(&self, d: &Digest, ttl: Duration) -> Result<Option<String>> {
        if self.inner.keyring.is_some() {
            return Ok(None);
        }
        self.inner.backend.presign(d, ttl).await
    }

    /// Delete a blob; deleting a blob that is not there succeeds.
    pub async fn delete(&self, d: &Digest) -> Result<()> {
        self.inner.backend.delete(d).await
    }

    /// Every committed blob (never an upload in progress), in no particular order.
    pub fn list(&self) -> BoxStream<'static, Result<ListedBlob>> {
        self.inner.backend.list()
    }

    /// Read the whole blob back (decrypting if needed) and check it against its digest.
    pub async fn verify(&self, d: &Digest) -> Result<VerifyOutcome> {
        let reader = match self.get(d, None).await {
            Ok(r) => r,
            Err(BlobError::NotFound(_)) => return Ok(VerifyOutcome::Missing),
            Err(BlobError::Corrupt { reason, .. }) => return Ok(VerifyOutcome::Corrupt(reason)),
            Err(e) => return Err(e),
        };
        let mut stream = reader.stream;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(_) => {}
                Err(BlobError::NotFound(_)) => return Ok(VerifyOutcome::Missing),
                Err(BlobError::Corrupt { reason, .. }) => return Ok(VerifyOutcome::Corrupt(reason)),
                Err(e) => return Err(e),
            }
        }
        Ok(VerifyOutcome::Ok)
    }

    /// Re-encrypt a blob under the active key if it is stored under an older key or
    /// unencrypted. Returns whether it was rewritten. The content is verified on the way and
    /// the new object replaces the old one atomically.
    pub async fn rotate_key(&self, d: &Digest) -> Result<bool> {
        let ring = self.inner.keyring.as_ref().ok_or_else(|| {
            BlobError::Config("rotating keys needs an encryption key file (encryption_key_file)".into())
        })?;
        let (_, inspected) = self.inspect(Location::Blob(*d), d).await?.ok_or(BlobError::NotFound(*d))?;
        if let Inspected::Encrypted(header) = &inspected
            && header.key_id == ring.active().id()
        {
            return Ok(false);
        }
        let reader = self.get(d, None).await?;
        self.put_from(d, reader.size, reader.stream, true).await?;
        Ok(true)
    }

    /// Remove staging left behind by crashed or abandoned uploads, older than `older_than`.
    /// Returns how many staged uploads were removed. Only run it with an age well beyond
    /// any upload still in progress.
    pub async fn sweep_staging(&self, older_than: Duration) -> Result<u64> {
        self.inner.backend.sweep(older_than).await
    }
}

/// What the first bytes of a stored object say.
#[derive(Clone, Copy, Debug)]
enum Inspected {
    Plain(u64),
    Encrypted(Header),
}
