//! The upload protocol of `docs/ARTIFACTS.md`: the part of it that needs both the database
//! (what was declared, which parts arrived, who completes a blob) and the blob store (the
//! bytes). Handlers in `routes::files` parse and authorise, then call in here.
//!
//! Wire part numbers start at 0; the blob store numbers parts from 1 (as S3 does).

use std::time::Duration;

use bytes::Bytes;
use cairn_api_types as api;
use cairn_blob::{BlobError, Digest, PartReceipt, UploadHandle};
use cairn_store::artifact::{BlobUpload, Upload};
use futures::Stream;

use crate::app::AppState;
use crate::error::ApiError;

/// The status of an upload, as the API shows it.
pub async fn status(state: &AppState, upload: &Upload) -> Result<api::UploadStatus, ApiError> {
    let needs = state.store.upload_blobs(&upload.id).await?;
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

/// Receives wire part `part` of blob `digest` (declared with `size` bytes) and completes the
/// blob when it was the last one missing.
pub async fn put_part<S>(
    state: &AppState,
    digest: &Digest,
    size: u64,
    part: u32,
    body: S,
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
        // Someone stored these bytes meanwhile: nothing to receive.
        return Ok(done(parts));
    }
    if parts == 1 {
        // A single-part blob needs no upload state: verify and publish in one go.
        state.store.blob_pending(&hex, size_i).await?;
        return match state.blobs.put(digest, size, body).await {
            Ok(()) => {
                state.store.blob_completed(&hex).await?;
                Ok(done(1))
            }
            Err(e) => {
                state.store.blob_failed(&hex).await?;
                Err(e.into())
            }
        };
    }
    let upload = blob_upload(state, digest, size).await?;
    if upload.state != "open" {
        return Err(ApiError::busy(format!(
            "blob {hex} is being assembled right now; ask for the upload's status and retry"
        )));
    }
    let handle = UploadHandle(upload.handle.clone());
    let receipt = match state.blobs.put_part(&handle, digest, size, part + 1, body).await {
        Ok(r) => r,
        Err(e @ (BlobError::SizeMismatch { .. } | BlobError::InvalidPart(_))) => return Err(e.into()),
        Err(e) => {
            // Another request may have assembled the blob (and closed this upload) while the
            // part was arriving: that is not a failure of the server, but a reason to re-check.
            let current = state.store.blob_upload(&hex).await?;
            if current.is_none_or(|u| u.state != "open" || u.handle != upload.handle) {
                return Err(ApiError::busy(format!(
                    "blob {hex} was completed or restarted while this part arrived; ask for the upload's status"
                )));
            }
            return Err(e.into());
        }
    };
    let received = state
        .store
        .record_part(&hex, i64::from(part), i64::try_from(receipt.size).unwrap_or(i64::MAX), &receipt.etag)
        .await?;
    let received = u32::try_from(received).unwrap_or(u32::MAX);
    if received < parts {
        return Ok(done(received));
    }
    complete(state, digest, size).await?;
    Ok(done(parts))
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
            state.store.blob_completed(&hex).await?;
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
