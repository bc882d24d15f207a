//! Pieces of the upload path: the handle's content, the per-part encoder, the in-order hasher
//! that spares a read-back, and the splitter that feeds a one-shot body to parts.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use uuid::Uuid;

use crate::crypto::{SEGMENT_SIZE, SegmentCipher};
use crate::{BlobError, Digest, PartReceipt, Result, UploadHandle};

/// What an [`UploadHandle`] carries: enough for any replica to continue the upload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct HandleData {
    pub v: u8,
    pub id: Uuid,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<String>,
    /// Key id and nonce prefix (hex) when the upload is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

impl HandleData {
    pub fn encode(&self) -> UploadHandle {
        let json = serde_json::to_vec(self).expect("handle data serializes");
        UploadHandle(format!("cb1.{}", hex::encode(json)))
    }

    pub fn decode(handle: &UploadHandle) -> Result<Self> {
        let invalid = || BlobError::InvalidPart("malformed upload handle".into());
        let hex_part = handle.0.strip_prefix("cb1.").ok_or_else(invalid)?;
        let json = hex::decode(hex_part).map_err(|_| invalid())?;
        let data: Self = serde_json::from_slice(&json).map_err(|_| invalid())?;
        if data.v != 1 {
            return Err(invalid());
        }
        Ok(data)
    }

    /// The handle must belong to the blob the caller names.
    pub fn check(&self, digest: &Digest, size: u64) -> Result<()> {
        if self.digest != digest.to_hex() || self.size != size {
            return Err(BlobError::InvalidPart(format!(
                "the upload handle was started for blob {} of {} bytes, not {digest} of {size} bytes",
                self.digest, self.size
            )));
        }
        Ok(())
    }
}

/// Turns a part's plaintext into its stored bytes: unchanged, or header (part 1) and sealed
/// segments, each sealed at the index its plaintext offset gives.
pub(crate) struct PartEncoder {
    cipher: Option<SegmentCipher>,
    next_index: u64,
    is_last_part: bool,
    pending: Vec<u8>,
    header_due: bool,
}

impl PartEncoder {
    pub fn new(cipher: Option<SegmentCipher>, part_start: u64, is_first_part: bool, is_last_part: bool) -> Self {
        let header_due = is_first_part && cipher.is_some();
        Self { cipher, next_index: part_start / SEGMENT_SIZE, is_last_part, pending: Vec::new(), header_due }
    }

    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) -> Result<()> {
        let Some(cipher) = &self.cipher else {
            out.push(chunk);
            return Ok(());
        };
        if self.header_due {
            self.header_due = false;
            out.push(Bytes::copy_from_slice(&cipher.header().encode()));
        }
        let segment = SEGMENT_SIZE as usize;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let take = (segment - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == segment {
                self.seal_pending(out)?;
            }
        }
        Ok(())
    }

    pub fn finish(mut self, out: &mut Vec<Bytes>) -> Result<()> {
        if self.cipher.is_none() {
            return Ok(());
        }
        if self.header_due {
            self.push(Bytes::new(), out)?;
        }
        let cipher = self.cipher.as_ref().expect("checked above");
        // The final part ends with the blob's last segment, which may be short or even empty
        // (an empty blob still has one authenticated segment).
        if !self.pending.is_empty() || (self.is_last_part && self.next_index < cipher.header().segment_count()) {
            self.seal_pending(out)?;
        }
        Ok(())
    }

    fn seal_pending(&mut self, out: &mut Vec<Bytes>) -> Result<()> {
        let cipher = self.cipher.as_ref().expect("only called when encrypting");
        let mut sealed = Vec::with_capacity(self.pending.len() + 16);
        sealed.append(&mut self.pending);
        cipher.seal(self.next_index, &mut sealed)?;
        self.next_index += 1;
        out.push(Bytes::from(sealed));
        Ok(())
    }
}

/// Hashes an upload's parts while they stream in, as long as they arrive in order on this
/// process, so completion can skip reading the staged object back. Anything unusual (a gap,
/// a re-upload of a hashed part, another replica) makes completion fall back to the read-back.
#[derive(Default)]
pub(crate) struct InOrderHashes {
    uploads: Mutex<HashMap<Uuid, InOrder>>,
}

struct InOrder {
    next_part: u32,
    hasher: sha2::Sha256,
    /// Hash of the etags of the hashed parts, in order (a list could grow to 10 000 entries).
    etags: sha2::Sha256,
    hashed_parts: usize,
    busy: bool,
    poisoned: bool,
}

/// Bound on uploads tracked at once; beyond it uploads simply use the read-back.
const MAX_TRACKED: usize = 4096;

impl InOrderHashes {
    /// A hasher to feed with `part`'s plaintext, if it is the next one in order.
    pub fn begin(self: &Arc<Self>, id: Uuid, part: u32) -> HashTicket {
        let mut map = self.uploads.lock().expect("hash map lock");
        if !map.contains_key(&id) && part == 1 && map.len() < MAX_TRACKED {
            map.insert(
                id,
                InOrder {
                    next_part: 1,
                    hasher: sha2::Sha256::new(),
                    etags: sha2::Sha256::new(),
                    hashed_parts: 0,
                    busy: false,
                    poisoned: false,
                },
            );
        }
        let hasher = match map.get_mut(&id) {
            Some(s) if !s.poisoned && !s.busy && s.next_part == part => {
                s.busy = true;
                Some(s.hasher.clone())
            }
            Some(s) => {
                if part < s.next_part || (part == s.next_part && s.busy) {
                    s.poisoned = true; // the same bytes may be written twice, differently
                }
                None
            }
            None => None,
        };
        HashTicket { owner: self.clone(), id, part, hasher, done: false }
    }

    /// The digest of the whole upload, if every part was hashed in order and the receipts are
    /// exactly those parts.
    pub fn take(&self, id: Uuid, parts: &[PartReceipt]) -> Option<Digest> {
        let state = self.uploads.lock().expect("hash map lock").remove(&id)?;
        let complete = !state.poisoned
            && !state.busy
            && state.hashed_parts == parts.len()
            && state.etags.finalize() == etag_chain(parts.iter().map(|p| p.etag.as_str())).finalize();
        complete.then(|| Digest::from_hasher(state.hasher))
    }

    pub fn forget(&self, id: Uuid) {
        self.uploads.lock().expect("hash map lock").remove(&id);
    }
}

fn add_etag(chain: &mut sha2::Sha256, etag: &str) {
    chain.update((etag.len() as u64).to_be_bytes());
    chain.update(etag.as_bytes());
}

fn etag_chain<'a>(etags: impl Iterator<Item = &'a str>) -> sha2::Sha256 {
    let mut chain = sha2::Sha256::new();
    for etag in etags {
        add_etag(&mut chain, etag);
    }
    chain
}

pub(crate) struct HashTicket {
    owner: Arc<InOrderHashes>,
    id: Uuid,
    part: u32,
    hasher: Option<sha2::Sha256>,
    done: bool,
}

impl HashTicket {
    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
    }

    /// The part was stored whole with this etag.
    pub fn succeed(mut self, etag: &str) {
        self.done = true;
        let Some(hasher) = self.hasher.take() else { return };
        let mut map = self.owner.uploads.lock().expect("hash map lock");
        if let Some(s) = map.get_mut(&self.id) {
            s.busy = false;
            if s.next_part == self.part {
                s.hasher = hasher;
                s.next_part += 1;
                s.hashed_parts += 1;
                add_etag(&mut s.etags, etag);
            }
        }
    }
}

impl Drop for HashTicket {
    fn drop(&mut self) {
        // A failed or cancelled part frees its turn; the part can be uploaded again.
        if !self.done && self.hasher.is_some() {
            let mut map = self.owner.uploads.lock().expect("hash map lock");
            if let Some(s) = map.get_mut(&self.id) {
                s.busy = false;
            }
        }
    }
}

/// Yields exactly the next `remaining` bytes of a body, keeping any excess for the next part.
pub(crate) struct PartTaker<'a, S> {
    pub body: &'a mut S,
    pub leftover: &'a mut Option<Bytes>,
    pub remaining: u64,
    pub consumed: &'a mut u64,
}

impl<S> PartTaker<'_, S> {
    fn cut(&mut self, mut chunk: Bytes) -> Bytes {
        if chunk.len() as u64 > self.remaining {
            let rest = chunk.split_off(self.remaining as usize);
            *self.leftover = Some(rest);
        }
        self.remaining -= chunk.len() as u64;
        *self.consumed += chunk.len() as u64;
        chunk
    }
}

impl<S, E> Stream for PartTaker<'_, S>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
{
    type Item = std::result::Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if let Some(chunk) = self.leftover.take() {
            return Poll::Ready(Some(Ok(self.cut(chunk))));
        }
        match self.body.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(self.cut(chunk)))),
            other => other,
        }
    }
}
