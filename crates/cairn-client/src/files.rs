//! Model files: the upload protocol (declare, send parts, commit, abort) and downloads, as
//! described in `docs/ARTIFACTS.md`.
//!
//! Nothing here holds a whole file or a whole part in memory: a part is streamed from its
//! file (open, seek, take) and a download is handed to the caller chunk by chunk.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cairn_api_types as api;
use cairn_core::manifest::FilePath;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, ReadBuf};

use crate::{Client, ClientError, model_path, seg};

/// How many parts a blob of `size` bytes has: `max(1, ceil(size / part_size))`.
///
/// ```
/// assert_eq!(cairn_client::part_count(0, 16), 1);
/// assert_eq!(cairn_client::part_count(16, 16), 1);
/// assert_eq!(cairn_client::part_count(17, 16), 2);
/// ```
pub fn part_count(size: u64, part_size: u64) -> u64 {
    if part_size == 0 { 1 } else { size.div_ceil(part_size).max(1) }
}

/// The bytes part `n` of a blob of `size` bytes covers, or `None` past the last part.
/// An empty blob has one empty part.
pub fn part_range(size: u64, part_size: u64, n: u64) -> Option<Range<u64>> {
    if n >= part_count(size, part_size) {
        return None;
    }
    let start = n * part_size;
    Some(start..(start + part_size).min(size))
}

/// Called with the number of bytes that just went out (or came in).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// One part to send: which blob, which part, and where its bytes are on disk.
#[derive(Debug, Clone, Copy)]
pub struct PartSpec<'a> {
    /// The upload.
    pub upload_id: &'a str,
    /// SHA-256 of the blob, lower-case hex.
    pub sha256: &'a str,
    /// Size of the whole blob.
    pub blob_size: u64,
    /// The part's number, from 0.
    pub part: u64,
    /// The part size the server announced.
    pub part_size: u64,
}

/// A download in progress: the response body, read chunk by chunk.
#[derive(Debug)]
pub struct Download {
    resp: reqwest::Response,
    /// The offset in the file of the first byte of the body: the requested start when the
    /// server honoured the range (206), 0 when it sent the whole file (200).
    pub offset: u64,
    /// How many bytes the body holds, if the server said.
    pub length: Option<u64>,
    /// The file's total size, from `Content-Range` or `Content-Length`.
    pub total: Option<u64>,
}

impl Download {
    /// The next chunk of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        Ok(self.resp.chunk().await?)
    }
}

/// An `AsyncRead` that reports how many bytes it has produced.
struct Counting<R> {
    inner: R,
    progress: Option<Progress>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0
            && let Some(p) = &self.progress
        {
            p(n as u64);
        }
        res
    }
}

fn io_error(path: &Path, source: std::io::Error) -> ClientError {
    ClientError::Io { path: path.display().to_string(), source }
}

fn version_path(model: &str, version: &str) -> String {
    format!("{}/versions/{}", model_path(model), seg(version))
}

/// Parses `bytes a-b/size` into (a, size).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = if total == "*" { None } else { Some(total.parse().ok()?) };
    Some((a.parse().ok()?, b.parse().ok()?, total))
}

impl Client {
    /// `POST /api/v1/models/{ns}/{name}/uploads`: declares the files of a version to be.
    pub async fn create_upload(&self, model: &str, req: &api::UploadRequest) -> Result<api::UploadStatus, ClientError> {
        self.write(Method::POST, &format!("{}/uploads", model_path(model)), req).await
    }

    /// `GET /api/v1/uploads/{upload_id}`: what the server holds of an upload.
    pub async fn upload_status(&self, upload_id: &str) -> Result<api::UploadStatus, ClientError> {
        self.get(&format!("/api/v1/uploads/{}", seg(upload_id))).await
    }

    /// `PUT /api/v1/uploads/{upload_id}/blobs/{sha256}/parts/{n}`: sends one part, streamed
    /// from `file` (the part's bytes are read at their offset, never held whole in memory).
    /// `progress` is told about every chunk that goes out.
    pub async fn put_part(
        &self,
        spec: PartSpec<'_>,
        file: &Path,
        progress: Option<Progress>,
    ) -> Result<api::PartAccepted, ClientError> {
        let Some(range) = part_range(spec.blob_size, spec.part_size, spec.part) else {
            return Err(ClientError::Usage(format!(
                "a blob of {} bytes has no part {} (part size {})",
                spec.blob_size, spec.part, spec.part_size
            )));
        };
        let len = range.end - range.start;
        let mut f = tokio::fs::File::open(file).await.map_err(|e| io_error(file, e))?;
        let on_disk = f.metadata().await.map_err(|e| io_error(file, e))?.len();
        if on_disk != spec.blob_size {
            return Err(ClientError::Usage(format!(
                "{} changed since it was hashed: it now has {on_disk} bytes, not {}",
                file.display(),
                spec.blob_size
            )));
        }
        f.seek(SeekFrom::Start(range.start)).await.map_err(|e| io_error(file, e))?;
        let reader = Counting { inner: f.take(len), progress };
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024));
        let path = format!("/api/v1/uploads/{}/blobs/{}/parts/{}", seg(spec.upload_id), seg(spec.sha256), spec.part);
        let mut req = self
            .http
            .put(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len)
            .body(body);
        if len > 0 {
            req = req.header(CONTENT_RANGE, format!("bytes {}-{}/{}", range.start, range.end - 1, spec.blob_size));
        }
        req = self.authorised(req);
        let resp = self.check(req.send().await?).await?;
        Ok(resp.json().await?)
    }

    /// `POST /api/v1/uploads/{upload_id}/commit`: creates the version. Committing the same
    /// upload again returns the same version, so a lost answer can be retried.
    pub async fn commit_upload(&self, upload_id: &str, req: &api::CommitRequest) -> Result<api::Version, ClientError> {
        self.write(Method::POST, &format!("/api/v1/uploads/{}/commit", seg(upload_id)), req).await
    }

    /// `DELETE /api/v1/uploads/{upload_id}`: abandons an upload.
    pub async fn abort_upload(&self, upload_id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/api/v1/uploads/{}", seg(upload_id))).await
    }

    /// `GET …/versions/{v}/files`: the files of a version and its digest. `version` is a
    /// number or `@alias`.
    pub async fn list_version_files(&self, model: &str, version: &str) -> Result<api::VersionFiles, ClientError> {
        self.get(&format!("{}/files", version_path(model, version))).await
    }

    /// `GET …/versions/{v}/manifest`: the canonical manifest bytes (small: a line per file).
    pub async fn get_manifest(&self, model: &str, version: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{}/manifest", self.base, version_path(model, version));
        let resp = self.check(self.authorised(self.http.get(url)).send().await?).await?;
        Ok(resp.bytes().await?.to_vec())
    }

    /// `GET …/versions/{v}/evidence`: starts the download of the version's evidence bundle
    /// (tar.gz), read with [`Download::chunk`].
    pub async fn evidence(&self, model: &str, version: &str) -> Result<Download, ClientError> {
        let url = format!("{}{}/evidence", self.base, version_path(model, version));
        let resp = self.check(self.authorised(self.http.get(url)).send().await?).await?;
        let length = resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        Ok(Download { resp, offset: 0, length, total: length })
    }

    /// `GET …/versions/{v}/sbom`: the version's CycloneDX 1.6 ML-BOM, as served.
    pub async fn get_sbom(&self, model: &str, version: &str) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{}/sbom", self.base, version_path(model, version));
        let resp = self.check(self.authorised(self.http.get(url)).send().await?).await?;
        Ok(resp.bytes().await?.to_vec())
    }

    /// `GET …/versions/{v}/files/{path}`: starts a download, from byte `from` when it is
    /// not 0 (`Range: bytes=from-`). Check [`Download::offset`]: a server may answer a
    /// range request with the whole file.
    pub async fn download_file(
        &self,
        model: &str,
        version: &str,
        path: &FilePath,
        from: u64,
    ) -> Result<Download, ClientError> {
        let encoded: Vec<String> = path.as_str().split('/').map(seg).collect();
        let url = format!("{}{}/files/{}", self.base, version_path(model, version), encoded.join("/"));
        let mut req = self.authorised(self.http.get(url));
        if from > 0 {
            req = req.header(RANGE, format!("bytes={from}-"));
        }
        let resp = self.check(req.send().await?).await?;
        let header = |name| resp.headers().get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok());
        let length = header(CONTENT_LENGTH).and_then(|v| v.parse().ok());
        if resp.status() == StatusCode::PARTIAL_CONTENT {
            let Some((start, end, total)) = header(CONTENT_RANGE).and_then(parse_content_range) else {
                return Err(ClientError::Protocol("a 206 answer without a valid Content-Range".into()));
            };
            if start != from || end < start {
                return Err(ClientError::Protocol(format!(
                    "asked for bytes from {from}, the server sent bytes {start}-{end}"
                )));
            }
            return Ok(Download { resp, offset: start, length, total });
        }
        Ok(Download { resp, offset: 0, length, total: length })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_boundaries() {
        const P: u64 = 16 * 1024 * 1024;
        assert_eq!(part_count(0, P), 1);
        assert_eq!(part_range(0, P, 0), Some(0..0));
        assert_eq!(part_range(0, P, 1), None);
        assert_eq!(part_count(1, P), 1);
        assert_eq!(part_count(P - 1, P), 1);
        assert_eq!(part_count(P, P), 1);
        assert_eq!(part_range(P, P, 0), Some(0..P));
        assert_eq!(part_range(P, P, 1), None);
        assert_eq!(part_count(P + 1, P), 2);
        assert_eq!(part_range(P + 1, P, 1), Some(P..P + 1));
        // The example of docs/ARTIFACTS.md: 4,404,019,200 bytes in 263 parts.
        assert_eq!(part_count(4_404_019_200, P), 263);
        assert_eq!(part_range(4_404_019_200, P, 262), Some(262 * P..4_404_019_200));
        // Parts tile the blob exactly, whatever the sizes.
        for (size, ps) in [(0u64, 1u64), (1, 1), (10, 3), (9, 3), (1000, 7), (5, 100)] {
            let mut next = 0;
            for n in 0..part_count(size, ps) {
                let r = part_range(size, ps, n).unwrap();
                assert_eq!(r.start, next);
                assert!(r.end - r.start <= ps);
                assert!(r.end > r.start || size == 0);
                next = r.end;
            }
            assert_eq!(next, size);
        }
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 9, Some(10))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("5-9/10"), None);
    }

    #[tokio::test]
    async fn counting_reader_reports_every_byte() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let seen = Arc::new(AtomicU64::new(0));
        let s = seen.clone();
        let mut r = Counting {
            inner: &b"hello, world"[..],
            progress: Some(Arc::new(move |n| {
                s.fetch_add(n, Ordering::Relaxed);
            })),
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello, world");
        assert_eq!(seen.load(Ordering::Relaxed), 12);
    }
}
