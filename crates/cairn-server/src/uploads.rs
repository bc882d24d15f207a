//! The upload protocol of `docs/ARTIFACTS.md`: the part of it that needs both the database
//! (what was declared, which parts arrived, who completes a blob) and the blob store (the
//! bytes). Handlers in `routes::files` parse and authorise, then call in here.
//!
//! Wire part numbers start at 0; the blob store numbers parts from 1 (as S3 does).

use std::time::Duration;

use axum::http::StatusCode;
use bytes::{Buf, Bytes};
use cairn_api_types as api;
use cairn_blob::{BlobError, Digest, PartReceipt, UploadHandle};
use cairn_store::artifact::{BlobProof, BlobUpload, ProofProgress, Upload};
use futures::{Stream, StreamExt};

use crate::app::AppState;
use crate::error::ApiError;

/// The status of an upload, as the API shows it to a caller who may read models in
/// `readable` (`None`: everywhere).
pub async fn status(
    state: &AppState,
    upload: &Upload,
    readable: Option<&[String]>,
) -> Result<api::UploadStatus, ApiError> {
    let needs = state.store.upload_blobs(&upload.id, readable).await?;
    let blobs = needs
        .into_iter()
        .map(|n| {
            let size = u64::try_from(n.size).unwrap_or(0);
            api::BlobStatus {
                parts: state.blobs.part_count(size),
                sha256: n.digest,
                size,
                present: n.present,
                parts_received: n.parts_received.into_iter().filter_map(|p| u32::try_from(p).ok()).collect(),
            }
        })
        .collect();
    Ok(api::UploadStatus {
        upload_id: upload.id.clone(),
        expires_at: upload.expires_at,
        part_size: state.blobs.part_size(),
        blobs,
    })
}

/// Reads and drops the body of a refused part, up to `limit` bytes (the largest part), so that
/// a client still sending it gets the answer instead of a connection cut in the middle of its
/// write. A longer body is left unread: the connection is closed on it.
pub(crate) async fn discard<S, E>(body: S, limit: u64)
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut body = std::pin::pin!(body);
    let mut read = 0u64;
    while read <= limit {
        match body.next().await {
            Some(Ok(chunk)) => read += chunk.len() as u64,
            _ => return,
        }
    }
}

/// The byte length of wire part `part` of a blob of `size` bytes, or `None` if there is no
/// such part.
pub fn part_len(part_size: u64, size: u64, part: u32) -> Option<u64> {
    let parts = if size == 0 { 1 } else { size.div_ceil(part_size) };
    if u64::from(part) >= parts {
        return None;
    }
    let start = u64::from(part) * part_size;
    Some((size - start).min(part_size))
}

/// Receives wire part `part` of blob `digest` (declared with `size` bytes) for `upload` and
/// completes the blob when it was the last one missing. A blob the server holds already, but
/// which the caller may not use (`readable`, see `Store::upload_blobs`), is not written again:
/// its parts are compared with the stored bytes until the upload has proven all of it.
#[allow(clippy::too_many_arguments)]
pub async fn put_part<S>(
    state: &AppState,
    upload: &Upload,
    readable: Option<&[String]>,
    digest: &Digest,
    size: u64,
    part: u32,
    body: S,
    continue_expected: bool,
) -> Result<api::PartAccepted, ApiError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
{
    let hex = digest.to_hex();
    let parts = state.blobs.part_count(size);
    let size_i = i64::try_from(size).map_err(|_| ApiError::invalid("size too large"))?;
    let done = |received: u32| api::PartAccepted {
        sha256: hex.clone(),
        part,
        parts_received: received,
        parts,
        complete: received == parts,
    };
    if state.store.blob(&hex).await?.is_some_and(|b| b.state == "present") {
        if state.store.blob_usable(&upload.id, &hex, readable).await? {
            // The caller may use the stored bytes: nothing to receive.
            return Ok(done(parts));
        }
        return prove_part(state, upload, digest, size, part, body).await;
    }
    if parts == 1 {
        // A single-part blob needs no upload state: verify and publish in one go.
        state.store.blob_pending(&hex, size_i).await?;
        return match state.blobs.put(digest, size, body).await {
            Ok(()) => {
                state.store.blob_completed(&hex, BlobProof::Upload(&upload.id)).await?;
                Ok(done(1))
            }
            Err(e) => {
                state.store.blob_failed(&hex).await?;
                Err(e.into())
            }
        };
    }
    let upload_state = blob_upload(state, digest, size).await?;
    if upload_state.state != "open" {
        // A client waiting for `100 Continue` has not sent the body: it gets the refusal
        // instead (reading the body would ask for it only to drop it).
        if !continue_expected {
            discard(body, state.blobs.part_size()).await;
        }
        return Err(ApiError::busy(format!(
            "blob {hex} is being assembled right now; ask for the upload's status and retry"
        )));
    }
    let handle = UploadHandle(upload_state.handle.clone());
    let receipt = match state.blobs.put_part(&handle, digest, size, part + 1, body).await {
        Ok(r) => r,
        Err(e @ (BlobError::SizeMismatch { .. } | BlobError::InvalidPart(_))) => return Err(e.into()),
        Err(e) => {
            // Another request may have assembled the blob (and closed this upload) while the
            // part was arriving: that is not a failure of the server, but a reason to re-check.
            let current = state.store.blob_upload(&hex).await?;
            if current.is_none_or(|u| u.state != "open" || u.handle != upload_state.handle) {
                return Err(ApiError::busy(format!(
                    "blob {hex} was completed or restarted while this part arrived; ask for the upload's status"
                )));
            }
            return Err(e.into());
        }
    };
    let received = state
        .store
        .record_part(&upload.id, &hex, i64::from(part), i64::try_from(receipt.size).unwrap_or(i64::MAX), &receipt.etag)
        .await?;
    let received = u32::try_from(received).unwrap_or(u32::MAX);
    if received < parts {
        return Ok(done(received));
    }
    complete(state, digest, size).await?;
    if !state.store.blob_usable(&upload.id, &hex, readable).await? {
        // Another upload sent some of the parts it was assembled from: this one has not
        // proven the bytes, and sends them again (they are compared, not stored).
        return Ok(api::PartAccepted { complete: false, parts_received: 0, ..done(parts) });
    }
    Ok(done(parts))
}

/// Wire part `part` of a stored blob that `upload` may not use yet, compared with the stored
/// bytes as it streams in (bounded memory; nothing is written). Whether it matched is told
/// only once every part has arrived, as a digest mismatch would be for new bytes.
async fn prove_part<S>(
    state: &AppState,
    upload: &Upload,
    digest: &Digest,
    size: u64,
    part: u32,
    mut body: S,
) -> Result<api::PartAccepted, ApiError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
{
    let hex = digest.to_hex();
    let parts = state.blobs.part_count(size);
    let part_size = state.blobs.part_size();
    let len = part_len(part_size, size, part).ok_or_else(|| ApiError::invalid(format!("there is no part {part}")))?;
    let start = u64::from(part) * part_size;
    let mut stored = state.blobs.get(digest, Some(start..start + len)).await?.stream;
    let mut pending = Bytes::new();
    let mut matched = true;
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(BlobError::Io)?;
        received += chunk.len() as u64;
        if received > len {
            return Err(BlobError::SizeMismatch { expected: len, actual: received }.into());
        }
        while matched && !chunk.is_empty() {
            if pending.is_empty() {
                match stored.next().await {
                    Some(next) => pending = next?,
                    None => matched = false,
                }
                continue;
            }
            let n = pending.len().min(chunk.len());
            if pending[..n] != chunk[..n] {
                matched = false;
            }
            pending.advance(n);
            chunk.advance(n);
        }
    }
    if received != len {
        return Err(BlobError::SizeMismatch { expected: len, actual: received }.into());
    }
    let progress = state.store.record_proof_part(&upload.id, &hex, i64::from(part), matched, i64::from(parts)).await?;
    match progress {
        ProofProgress::Receiving(n) => Ok(api::PartAccepted {
            sha256: hex,
            part,
            parts_received: u32::try_from(n).unwrap_or(u32::MAX),
            parts,
            complete: false,
        }),
        ProofProgress::Proven => {
            Ok(api::PartAccepted { sha256: hex, part, parts_received: parts, parts, complete: true })
        }
        ProofProgress::Mismatch => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "digest_mismatch",
            format!("the parts sent for blob {hex} do not hash to it; none of them was kept, send them again"),
        )),
    }
}

/// Finds or starts the upload of a blob. Two requests racing to start one both create a
/// handle; the database keeps one and the loser discards its own.
async fn blob_upload(state: &AppState, digest: &Digest, size: u64) -> Result<BlobUpload, ApiError> {
    let hex = digest.to_hex();
    if let Some(u) = state.store.blob_upload(&hex).await? {
        return Ok(u);
    }
    let handle = state.blobs.start_upload(digest, size).await?;
    let size_i = i64::try_from(size).unwrap_or(i64::MAX);
    if !state.store.insert_blob_upload(&hex, size_i, &handle.0).await? {
        state.blobs.abort_upload(&handle).await?;
    }
    state
        .store
        .blob_upload(&hex)
        .await?
        .ok_or_else(|| ApiError::busy(format!("the upload of blob {hex} just ended; retry")))
}

/// Assembles and verifies a blob whose parts have all arrived (if no other request is doing
/// it already).
pub async fn complete(state: &AppState, digest: &Digest, size: u64) -> Result<(), ApiError> {
    let hex = digest.to_hex();
    let parts = i64::from(state.blobs.part_count(size));
    let Some((handle, rows)) = state.store.claim_blob_completion(&hex, parts).await? else {
        return Ok(());
    };
    let receipts: Vec<PartReceipt> = rows
        .into_iter()
        .map(|r| PartReceipt {
            part: u32::try_from(r.part).unwrap_or(u32::MAX).saturating_add(1),
            size: u64::try_from(r.size).unwrap_or(0),
            etag: r.etag,
        })
        .collect();
    let handle = UploadHandle(handle);
    match state.blobs.complete_upload(&handle, digest, size, &receipts).await {
        Ok(()) => {
            let parts = i64::try_from(receipts.len()).unwrap_or(i64::MAX);
            state.store.blob_completed(&hex, BlobProof::Senders { parts }).await?;
            Ok(())
        }
        Err(BlobError::InvalidPart(reason)) => {
            // Receipts out of date (the same part sent twice at once): the bytes are fine,
            // but which copy is current is unknown, so ask for the parts again.
            tracing::info!(digest = %hex, %reason, "reopening a blob upload with stale part receipts");
            state.store.reopen_blob_upload(&hex).await?;
            Err(ApiError::busy(format!(
                "parts of blob {hex} were sent twice at the same time; ask for the upload's status and send the missing parts again"
            )))
        }
        Err(e) => {
            // Start clean: the next attempt uploads every part again.
            if let Err(abort) = state.blobs.abort_upload(&handle).await {
                tracing::warn!(error = %abort, digest = %hex, "could not discard a failed upload's parts");
            }
            state.store.blob_failed(&hex).await?;
            Err(e.into())
        }
    }
}

/// Housekeeping, run periodically: drops expired uploads (MLflow multipart uploads too),
/// abandons blob uploads without activity for the upload lifetime, and removes staging files
/// left by crashes.
pub async fn sweep(state: &AppState) -> Result<(), ApiError> {
    let expired = state.store.expire_uploads().await? + state.store.expire_multipart().await?;
    let lifetime_ms = i64::try_from(state.settings.upload_expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let stale = state.store.stale_blob_uploads(state.store.now() - lifetime_ms).await?;
    for u in &stale {
        match state.blobs.abort_upload(&UploadHandle(u.handle.clone())).await {
            Ok(()) | Err(BlobError::NotFound(_)) => state.store.delete_blob_upload(&u.digest, &u.handle).await?,
            Err(e) => tracing::warn!(error = %e, digest = %u.digest, "could not discard an abandoned upload"),
        }
    }
    let staging = state.blobs.sweep_staging(Duration::from_secs(state.settings.upload_expiry_secs)).await?;
    if expired + stale.len() as u64 + staging > 0 {
        tracing::info!(
            expired_uploads = expired,
            abandoned_blobs = stale.len(),
            staging_removed = staging,
            "swept uploads"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::part_len;

    #[test]
    fn part_lengths() {
        assert_eq!(part_len(10, 0, 0), Some(0));
        assert_eq!(part_len(10, 0, 1), None);
        assert_eq!(part_len(10, 10, 0), Some(10));
        assert_eq!(part_len(10, 10, 1), None);
        assert_eq!(part_len(10, 25, 0), Some(10));
        assert_eq!(part_len(10, 25, 2), Some(5));
        assert_eq!(part_len(10, 25, 3), None);
    }
}
