//! Model files: the upload protocol (`/api/v1/models/{ns}/{name}/uploads`,
//! `/api/v1/uploads/{id}/…`) and downloads (`…/versions/{v}/files`, `…/manifest`). The
//! protocol is described in `docs/ARTIFACTS.md`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_api_types as api;
use cairn_blob::Digest;
use cairn_core::{
    AliasName, FileEntry, FilePath, Manifest, ManifestError, NamespaceScope, Permission, VersionSelector,
};
use cairn_store::artifact::Upload;
use futures::{StreamExt, TryStreamExt};

use super::versions::new_version;
use super::{authorize, authorize_model, model_ref};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert;
use crate::error::{ApiError, ApiResult};
use crate::uploads;

/// Largest declaration body (100,000 files with long paths fit).
const MAX_DECLARATION_BYTES: usize = 64 * 1024 * 1024;

fn file_error(e: ManifestError) -> ApiError {
    match e {
        ManifestError::Path { .. } | ManifestError::Clash(..) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.to_string())
        }
        other => ApiError::invalid(other.to_string()),
    }
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    Digest::from_str(s).map_err(|_| ApiError::invalid(format!("{s:?} is not a SHA-256 (64 lower-case hex characters)")))
}

/// Loads an upload the caller may continue: its creator, or an administrator. Anyone else
/// gets the same answer as for an upload that does not exist.
async fn own_upload(state: &AppState, caller: &Caller, id: &str, audit_action: &str) -> Result<Upload, ApiError> {
    let missing = || ApiError::not_found(format!("upload {id} does not exist (it may have expired)"));
    // A caller who may write nowhere is refused before anything is looked up.
    if caller.principal.namespaces_for(Permission::ModelWrite) == NamespaceScope::Only(Default::default()) {
        authorize(state, caller, Permission::ModelWrite, None, audit_action, &format!("upload:{id}")).await?;
    }
    if id.len() > 64 {
        return Err(missing());
    }
    let upload = state.store.get_upload(id).await?;
    if upload.created_by != caller.principal.actor() && !caller.principal.is_admin() {
        return Err(missing());
    }
    // Its creator may since have lost the right to write in the namespace.
    authorize(state, caller, Permission::ModelWrite, Some(&upload.namespace), audit_action, &format!("upload:{id}"))
        .await?;
    Ok(upload)
}

/// The namespaces whose models the caller may read (`None`: all). An upload may reuse stored
/// bytes without sending them only if a version in one of them holds those bytes.
fn readable(caller: &Caller) -> Option<Vec<String>> {
    caller.principal.namespaces_for(Permission::ModelRead).into_list()
}

fn open_upload(upload: &Upload, now: i64) -> Result<(), ApiError> {
    if upload.state != "open" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("upload {} is already committed", upload.id),
        ));
    }
    if upload.expires_at <= now {
        return Err(ApiError::not_found(format!("upload {} has expired", upload.id)));
    }
    Ok(())
}

/// The body of a declaration, read strictly (the shared wire type tolerates unknown fields
/// so that clients survive newer servers; a server must refuse what it does not know).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Declaration {
    files: Vec<DeclaredFile>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclaredFile {
    path: String,
    size: u64,
    sha256: String,
}

/// Declare the files of a new version and learn which bytes the server still needs.
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/uploads", tag = "files",
    params(("namespace" = String, Path), ("name" = String, Path)), request_body = api::UploadRequest,
    responses((status = 201, body = api::UploadStatus), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 413, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn create_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    body: Body,
) -> ApiResult<(StatusCode, Json<api::UploadStatus>)> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "upload.create").await?;
    let bytes = axum::body::to_bytes(body, MAX_DECLARATION_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a file declaration may be at most {MAX_DECLARATION_BYTES} bytes"),
        )
    })?;
    let req: Declaration =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &req.files {
        if let Some(prev) = sizes.insert(&f.sha256, f.size)
            && prev != f.size
        {
            return Err(ApiError::invalid(format!(
                "sha256 {} is declared with two sizes ({prev} and {}); the same bytes have one size",
                f.sha256, f.size
            )));
        }
    }
    let entries = req
        .files
        .iter()
        .map(|f| Ok(FileEntry { path: FilePath::parse(&f.path)?, size: f.size, sha256: f.sha256.clone() }))
        .collect::<Result<Vec<_>, ManifestError>>()
        .map_err(file_error)?;
    let manifest = Manifest::new(entries).map_err(file_error)?;
    let max = state.settings.max_upload_bytes;
    if manifest.total_size() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "this push declares {} bytes; the server accepts at most {max} (CAIRN_MAX_UPLOAD_BYTES)",
                manifest.total_size()
            ),
        ));
    }
    let expiry_ms = i64::try_from(state.settings.upload_expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let upload = state.store.create_upload(&caller.audit, &model, &manifest, state.now_ms() + expiry_ms).await?;
    Ok((StatusCode::CREATED, Json(uploads::status(&state, &upload, readable(&caller).as_deref()).await?)))
}

/// What an upload still needs.
#[utoipa::path(get, path = "/api/v1/uploads/{upload_id}", tag = "files",
    params(("upload_id" = String, Path)),
    responses((status = 200, body = api::UploadStatus), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn get_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::UploadStatus>> {
    let upload = own_upload(&state, &caller, &id, "upload.get").await?;
    Ok(Json(uploads::status(&state, &upload, readable(&caller).as_deref()).await?))
}

/// Abandon an upload.
#[utoipa::path(delete, path = "/api/v1/uploads/{upload_id}", tag = "files",
    params(("upload_id" = String, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn delete_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let upload = own_upload(&state, &caller, &id, "upload.delete").await?;
    state.store.delete_upload(&caller.audit, &upload.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Parses `Content-Range: bytes first-last/size`.
fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// Send one part of a blob (bytes `n × part_size` up to the next part or the end).
#[utoipa::path(put, path = "/api/v1/uploads/{upload_id}/blobs/{sha256}/parts/{part}", tag = "files",
    params(("upload_id" = String, Path), ("sha256" = String, Path), ("part" = u32, Path, description = "Part number, from 0")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = api::PartAccepted), (status = 400, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody), (status = 422, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn put_part(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, sha256, part)): Path<(String, String, u32)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<api::PartAccepted>> {
    let upload = own_upload(&state, &caller, &id, "upload.part").await?;
    open_upload(&upload, state.now_ms())?;
    let digest = parse_digest(&sha256)?;
    let Some(size) = state.store.upload_declares(&upload.id, &sha256).await? else {
        return Err(ApiError::not_found(format!("upload {id} did not declare a file with sha256 {sha256}")));
    };
    let size = u64::try_from(size).unwrap_or(0);
    let part_size = state.blobs.part_size();
    let Some(len) = uploads::part_len(part_size, size, part) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_part",
            format!(
                "a blob of {size} bytes has {} parts, numbered from 0; there is no part {part}",
                state.blobs.part_count(size)
            ),
        ));
    };
    // Without Content-Length (chunked), the blob store still refuses a body of the wrong length.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared
        && declared != len
    {
        if declared <= part_size && !expects_continue(&headers) {
            uploads::discard(body.into_data_stream(), part_size).await;
        }
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_part",
            format!("part {part} of this blob is {len} bytes, but Content-Length says {declared}"),
        ));
    }
    if let Some(v) = headers.get(header::CONTENT_RANGE) {
        let start = u64::from(part) * part_size;
        let expected = (start, (start + len).saturating_sub(1), size);
        match v.to_str().ok().and_then(content_range) {
            Some(r) if r == expected || (len == 0 && r.0 == 0 && r.2 == 0) => {}
            _ => {
                if !expects_continue(&headers) {
                    uploads::discard(body.into_data_stream(), part_size).await;
                }
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_part",
                    format!(
                        "Content-Range must be 'bytes {}-{}/{}' for part {part}",
                        expected.0, expected.1, expected.2
                    ),
                ));
            }
        }
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let readable = readable(&caller);
    Ok(Json(
        uploads::put_part(
            &state,
            &upload,
            readable.as_deref(),
            &digest,
            size,
            part,
            Box::pin(stream),
            expects_continue(&headers),
        )
        .await?,
    ))
}

/// The client waits for `100 Continue` before sending the body: a refusal needs no body read
/// (reading it would ask for the body only to refuse it).
fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Create the next version from an upload whose bytes have all arrived.
#[utoipa::path(post, path = "/api/v1/uploads/{upload_id}/commit", tag = "files",
    params(("upload_id" = String, Path)), request_body = api::CommitRequest,
    responses((status = 201, body = api::Version), (status = 200, body = api::Version, description = "Already committed: the same version"),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn commit_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    crate::error::ApiJson(body): crate::error::ApiJson<api::CommitRequest>,
) -> ApiResult<(StatusCode, Json<api::Version>)> {
    let upload = own_upload(&state, &caller, &id, "version.create").await?;
    let mut new = new_version(body.description, body.source, body.run_id, body.metadata, body.tags)?;
    new.semver = super::versions::parse_semver(body.semver.as_deref())?;
    new.code_commit = body.code_commit;
    new.training_job = body.training_job;
    new.lineage = super::lineage::inputs(&caller, body.lineage)?;
    new.signatures = body.signatures.into_iter().map(convert::signature_in).collect();
    let aliases = body.aliases.iter().map(|a| AliasName::parse(a)).collect::<Result<Vec<_>, _>>()?;
    let readable = readable(&caller);
    if upload.state == "open" {
        // Blobs whose parts all arrived but whose assembly was interrupted: finish them now.
        for need in state.store.upload_blobs(&upload.id, readable.as_deref()).await? {
            let size = u64::try_from(need.size).unwrap_or(0);
            if !need.present && need.parts_received.len() as u64 == u64::from(state.blobs.part_count(size)) {
                uploads::complete(&state, &parse_digest(&need.digest)?, size).await?;
            }
        }
        // Scanned before the transaction, stored in it: the version never exists unscanned.
        new.scans = crate::scanning::scan_files(&state, &state.store.upload_files(&upload.id).await?).await?;
    }
    let (version, created) =
        state.store.commit_upload(&caller.audit, &upload.id, &new, &aliases, readable.as_deref()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(convert::version(version))))
}

/// The files of a version and its digest.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/files", tag = "files",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number or @alias")),
    responses((status = 200, body = api::VersionFiles), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<api::VersionFiles>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.files").await?;
    let (v, files) = state.store.version_files(&model, &VersionSelector::parse(&version)?).await?;
    Ok(Json(api::VersionFiles {
        digest: v.digest,
        files: files
            .into_iter()
            .map(|f| api::FileInfo { path: f.path.as_str().to_owned(), size: f.size, sha256: f.sha256 })
            .collect(),
    }))
}

/// The canonical manifest of a version: the bytes whose SHA-256 is its digest.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/manifest", tag = "files",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number or @alias")),
    responses((status = 200, content_type = "application/json", body = String), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_manifest(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.manifest").await?;
    let (v, files) = state.store.version_files(&model, &VersionSelector::parse(&version)?).await?;
    let manifest = Manifest::new(files).map_err(|e| ApiError::invalid(e.to_string()))?;
    if manifest.digest() != v.digest {
        tracing::error!(model = %model, version = v.version, "stored files do not match the version digest");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "integrity",
            "the stored file list does not match this version's digest; the database was changed outside Cairn",
        ));
    }
    let mut resp = manifest.canonical_json().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", v.digest)) {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    Ok(resp)
}

/// Download a whole version as one tar archive (POSIX pax format), streamed.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/archive", tag = "files",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number or @alias")),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn download_archive(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.download").await?;
    let (v, files) = state.store.version_files(&model, &VersionSelector::parse(&version)?).await?;
    let len = crate::tar::archive_len(files.iter().map(|f| (f.path.as_str(), f.size)));
    let mtime = u64::try_from(v.created_at / 1000).unwrap_or(0);
    let blobs = state.blobs.clone();
    let entries = futures::stream::iter(files).then(move |f| {
        let blobs = blobs.clone();
        async move {
            let digest = parse_digest(&f.sha256).map_err(|e| std::io::Error::other(e.message))?;
            let reader = blobs.get(&digest, None).await.map_err(std::io::Error::other)?;
            let header = bytes::Bytes::from(crate::tar::file_header(f.path.as_str(), f.size, mtime));
            let pad = bytes::Bytes::from(vec![0u8; crate::tar::padding(f.size)]);
            let data = reader.stream.map_err(|e| {
                tracing::error!(error = %e, "archive aborted: the stored bytes failed verification");
                std::io::Error::other(e.to_string())
            });
            Ok::<_, std::io::Error>(
                futures::stream::once(async { Ok(header) }).chain(data).chain(futures::stream::once(async { Ok(pad) })),
            )
        }
    });
    let trailer = futures::stream::once(async { Ok(bytes::Bytes::from(crate::tar::trailer())) });
    let body = entries.try_flatten().chain(trailer);
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let filename = format!("{}-{}-v{}.tar", v.namespace, v.model, v.version);
    if let Ok(cd) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, cd);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", v.digest)) {
        h.insert(header::ETAG, etag);
    }
    Ok(resp)
}

/// A parsed `Range` header: `None` means "serve everything".
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(v) = headers.get(header::RANGE) else { return Ok(None) };
    let Some(spec) = v.to_str().ok().and_then(|s| s.trim().strip_prefix("bytes=")) else {
        return Ok(None); // Unknown units: ignore the header, as RFC 9110 allows.
    };
    if spec.contains(',') {
        return Ok(None); // Several ranges: serve the whole file instead.
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() { size } else { b.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(size) };
        start..end
    };
    if range.start >= size || range.start >= range.end {
        return Err(());
    }
    Ok(Some(range))
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag)))
}

/// Download one file of a version. Supports `Range` (one range) and `If-None-Match`.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/files/{path}", tag = "files",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number or @alias"),
        ("path" = String, Path, description = "The file's path in the version, '/'-separated")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 206, description = "The requested range"),
        (status = 302, description = "Redirect to a presigned URL (CAIRN_BLOB_PRESIGN)"), (status = 304, description = "Not modified"),
        (status = 404, body = api::ErrorBody), (status = 416, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn download_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.download").await?;
    FilePath::parse(&path).map_err(file_error)?;
    let (_, file) = state.store.version_file(&model, &VersionSelector::parse(&version)?, &path).await?;
    let etag = format!("\"{}\"", file.sha256);
    let etag_value = HeaderValue::from_str(&etag).map_err(|_| ApiError::invalid("bad digest"))?;
    if etag_matches(&headers, &etag) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, etag_value);
        return Ok(r);
    }
    let digest = parse_digest(&file.sha256)?;
    let range = match parse_range(&headers, file.size) {
        Ok(r) => r,
        Err(()) => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "invalid_range",
                format!("the file has {} bytes; ask for one range within it", file.size),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", file.size)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    if state.settings.blob_presign
        && let Some(url) = state.blobs.presign_get(&digest, Duration::from_secs(300)).await?
    {
        let mut r = StatusCode::FOUND.into_response();
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_str(&url).map_err(|_| ApiError::invalid("bad url"))?);
        return Ok(r);
    }
    let reader = state.blobs.get(&digest, range.clone()).await?;
    let (status, len) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
        None => (StatusCode::OK, reader.size),
    };
    let stream = reader.stream.map_err(|e| {
        tracing::error!(error = %e, "download aborted: the stored bytes failed verification");
        std::io::Error::other(e.to_string())
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ETAG, etag_value);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(r) = &range
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end - 1, file.size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(range: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        m
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(parse_range(&h("bytes=0-0"), 10), Ok(Some(0..1)));
        assert_eq!(parse_range(&h("bytes=2-"), 10), Ok(Some(2..10)));
        assert_eq!(parse_range(&h("bytes=-3"), 10), Ok(Some(7..10)));
        assert_eq!(parse_range(&h("bytes=5-100"), 10), Ok(Some(5..10)));
        assert_eq!(parse_range(&h("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(&h("items=0-1"), 10), Ok(None));
        assert_eq!(parse_range(&h("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(&h("bytes=5-2"), 10), Err(()));
        assert_eq!(parse_range(&h("bytes=-0"), 10), Err(()));
        assert_eq!(parse_range(&h("bytes=x-1"), 10), Err(()));
        assert_eq!(parse_range(&h("bytes=0-"), 0), Err(()));
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 0-9/20"), Some((0, 9, 20)));
        assert_eq!(content_range("bytes */20"), None);
        assert_eq!(content_range("items 0-9/20"), None);
    }

    #[test]
    fn etags() {
        let mut m = HeaderMap::new();
        m.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\", \"b\""));
        assert!(etag_matches(&m, "\"b\""));
        assert!(!etag_matches(&m, "\"c\""));
        m.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(etag_matches(&m, "\"c\""));
    }
}
