//! Turning stored bytes back into plaintext: decrypting segments, checking lengths and, for a
//! full read, the digest — holding back the final chunk until the digest has matched, so a
//! corrupt blob is never delivered complete.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use sha2::Digest as _;
use tokio::sync::mpsc;

use crate::backend::{Backend, Location};
use crate::crypto::{SegmentCipher, TAG_LEN};
use crate::{BlobError, Digest, Result};

/// How a stored object maps to plaintext.
#[derive(Clone)]
pub(crate) enum Layout {
    Plain { size: u64 },
    Encrypted(SegmentCipher),
}

impl Layout {
    pub fn plaintext_size(&self) -> u64 {
        match self {
            Self::Plain { size } => *size,
            Self::Encrypted(c) => c.header().plaintext_size,
        }
    }
}

/// Chunks in flight between the reading task and the consumer.
const CHANNEL_DEPTH: usize = 4;

/// Plaintext bytes `range` of the object at `loc`. With `verify_digest` (only meaningful for
/// the whole blob) the content is hashed and the last chunk withheld unless it matches `digest`.
pub(crate) fn plaintext(
    backend: Arc<Backend>,
    loc: Location,
    digest: Digest,
    layout: Layout,
    range: Range<u64>,
    verify_digest: bool,
) -> BoxStream<'static, Result<Bytes>> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let mut out = Output { tx, hasher: verify_digest.then(sha2::Sha256::new), held: None, closed: false };
        let result = match &layout {
            Layout::Plain { .. } => read_plain(&backend, loc, &digest, range, &mut out).await,
            Layout::Encrypted(cipher) => read_encrypted(&backend, loc, &digest, cipher, range, &mut out).await,
        };
        match result {
            Ok(()) => out.finish(&digest).await,
            Err(e) => {
                let _ = out.tx.send(Err(e)).await;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
}

struct Output {
    tx: mpsc::Sender<Result<Bytes>>,
    hasher: Option<sha2::Sha256>,
    held: Option<Bytes>,
    closed: bool,
}

impl Output {
    async fn emit(&mut self, chunk: Bytes) {
        if chunk.is_empty() || self.closed {
            return;
        }
        let chunk = match &mut self.hasher {
            Some(h) => {
                h.update(&chunk);
                match self.held.replace(chunk) {
                    Some(previous) => previous,
                    None => return,
                }
            }
            None => chunk,
        };
        if self.tx.send(Ok(chunk)).await.is_err() {
            self.closed = true; // the reader was dropped; stop quietly
        }
    }

    async fn finish(mut self, digest: &Digest) {
        if let Some(h) = self.hasher.take() {
            let actual = Digest::from_hasher(h);
            if actual != *digest {
                let reason = format!("content hashes to {actual}");
                let _ = self.tx.send(Err(BlobError::Corrupt { digest: *digest, reason })).await;
                return;
            }
            if let Some(last) = self.held.take() {
                let _ = self.tx.send(Ok(last)).await;
            }
        }
    }
}

async fn read_plain(
    backend: &Backend,
    loc: Location,
    digest: &Digest,
    range: Range<u64>,
    out: &mut Output,
) -> Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    let expected = range.end - range.start;
    let mut stream = backend.read(loc, range).await?;
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        got += chunk.len() as u64;
        if got > expected {
            break;
        }
        out.emit(chunk).await;
        if out.closed {
            return Ok(());
        }
    }
    if got != expected {
        return Err(BlobError::Corrupt {
            digest: *digest,
            reason: format!("stored object returned {got} bytes where {expected} were expected"),
        });
    }
    Ok(())
}

async fn read_encrypted(
    backend: &Backend,
    loc: Location,
    digest: &Digest,
    cipher: &SegmentCipher,
    range: Range<u64>,
    out: &mut Output,
) -> Result<()> {
    let header = *cipher.header();
    let segment = header.segment_size;
    let first = range.start / segment;
    let last = if range.end == 0 { 0 } else { (range.end - 1) / segment };
    let stored = header.segment_offset(first)..header.segment_offset(last) + header.segment_plain_len(last) + TAG_LEN;
    let mut stream = backend.read(loc, stored).await?;
    let mut buf = BytesMut::new();
    let mut index = first;
    let mut sealed = Vec::with_capacity((segment + TAG_LEN) as usize);
    while index <= last {
        let need = (header.segment_plain_len(index) + TAG_LEN) as usize;
        while buf.len() < need {
            match stream.next().await {
                Some(chunk) => buf.extend_from_slice(&chunk?),
                None => {
                    return Err(BlobError::Corrupt {
                        digest: *digest,
                        reason: format!("stored object ends inside segment {index}"),
                    });
                }
            }
        }
        sealed.clear();
        sealed.extend_from_slice(&buf[..need]);
        buf.advance(need);
        cipher.open(index, &mut sealed, digest)?;
        let seg_start = index * segment;
        let from = range.start.saturating_sub(seg_start) as usize;
        let to = ((range.end - seg_start) as usize).min(sealed.len());
        if from < to {
            out.emit(Bytes::copy_from_slice(&sealed[from..to])).await;
        }
        if out.closed {
            return Ok(());
        }
        index += 1;
    }
    Ok(())
}
