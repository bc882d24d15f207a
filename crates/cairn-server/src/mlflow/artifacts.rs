//! MLflow's proxied artifact API (`mlflow_artifacts.proto`) on Cairn's blob store.
//!
//! The artifact tree (`mlflow-artifacts:/…`) maps paths to blobs: an upload is spooled to a
//! temporary file while its SHA-256 is computed, stored once per content, and recorded
//! under its path. The first segment of a path is an experiment id, and the experiment's
//! namespace decides who may read and write under it. Registering a model version freezes
//! the files under its source into the version's manifest; `_versions/<ns>/<model>/<n>/…`
//! serves those frozen files, read-only, and is what `get-download-uri` answers.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_blob::Digest;
use cairn_core::{FileEntry, FilePath, ModelRef, Permission, VersionSelector};
use cairn_store::artifact::BlobProof;
use cairn_store::tracking::ArtifactFile;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Args, MlflowError, MlflowResult, empty};
use crate::app::AppState;
use crate::auth::Caller;
use crate::routes::authorize_model;

/// Read-only view of registered versions' files.
const VERSIONS_ROOT: &str = "_versions";

/// Most files one listing or one registration reads.
const MAX_FILES: usize = 100_000;

pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let upload_limit = usize::try_from(state.settings.max_upload_bytes).unwrap_or(usize::MAX);
    let mut r = Router::new();
    for prefix in ["/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts"] {
        r = r
            .route(&format!("{prefix}/artifacts"), get(list))
            .route(
                &format!("{prefix}/artifacts/{{*path}}"),
                get(download).put(upload).delete(delete).layer(DefaultBodyLimit::max(upload_limit)),
            )
            .route(&format!("{prefix}/mpu/create/{{*path}}"), post(mpu_create))
            .route(&format!("{prefix}/mpu/complete/{{*path}}"), post(mpu_complete))
            .route(&format!("{prefix}/mpu/abort/{{*path}}"), post(mpu_abort));
    }
    r
}

/// The directory under which version `n` of `model` is served.
pub(crate) fn version_dir(model: &ModelRef, n: i64) -> String {
    format!("{VERSIONS_ROOT}/{}/{}/{n}", model.namespace, model.name)
}

/// Checks and normalises an artifact path: relative, `/`-separated, no `.`/`..` segments,
/// no empty segments, no backslashes or control characters.
fn clean(path: &str) -> MlflowResult<String> {
    let p = path.trim_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    FilePath::parse(p).map_err(|e| MlflowError::invalid(format!("Invalid artifact path {path:?}: {e}")))?;
    Ok(p.to_owned())
}

/// What a path is under.
enum Scope {
    /// An experiment's tree (writable).
    Experiment(i64),
    /// A registered version's frozen files (read-only).
    Version(ModelRef, i64, String),
}

fn scope_of(path: &str) -> MlflowResult<Scope> {
    let mut segs = path.splitn(2, '/');
    let first = segs.next().unwrap_or_default();
    if first == VERSIONS_ROOT {
        let rest = segs.next().unwrap_or_default();
        let mut parts = rest.splitn(4, '/');
        let (Some(ns), Some(name), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(MlflowError::not_found(format!("no artifacts at {path}")));
        };
        let model = crate::routes::model_ref(ns, name)?;
        let n: i64 = n.parse().map_err(|_| MlflowError::not_found(format!("no artifacts at {path}")))?;
        return Ok(Scope::Version(model, n, parts.next().unwrap_or_default().to_owned()));
    }
    match first.parse::<i64>() {
        Ok(id) if id >= 0 => Ok(Scope::Experiment(id)),
        _ => Err(MlflowError::not_found(format!(
            "no artifacts at {path}: artifact paths start with an experiment id (mlflow-artifacts:/<experiment>/…)"
        ))),
    }
}

/// The experiment whose artifact tree `path` is in, if it is in one.
pub(crate) fn experiment_of(path: &str) -> Option<i64> {
    match scope_of(path) {
        Ok(Scope::Experiment(id)) => Some(id),
        _ => None,
    }
}

/// Authorises `permission` on an experiment through its namespace; an experiment the caller
/// may not read is reported missing.
pub(crate) async fn authorize_experiment(
    state: &AppState,
    caller: &Caller,
    id: i64,
    permission: Permission,
) -> MlflowResult<cairn_store::tracking::Experiment> {
    let exp = state
        .store
        .get_experiment(id)
        .await?
        .ok_or_else(|| MlflowError::not_found(format!("No Experiment with id={id} exists")))?;
    authorize_in_experiment(state, caller, id, &exp.namespace, permission).await?;
    Ok(exp)
}

/// [`authorize_experiment`] for experiment `id` whose namespace is already known (read with
/// the run or logged model in it).
pub(crate) async fn authorize_in_experiment(
    state: &AppState,
    caller: &Caller,
    id: i64,
    namespace: &str,
    permission: Permission,
) -> MlflowResult<()> {
    let target = format!("mlflow-experiment:{id}");
    if caller.principal.check(Permission::ModelRead, Some(namespace)).is_err() && caller.principal.mfa_satisfied {
        if permission.is_change() {
            crate::routes::record_denied(state, caller, "mlflow.experiment", &target).await;
        }
        return Err(MlflowError::not_found(format!("No Experiment with id={id} exists")));
    }
    crate::routes::authorize(state, caller, permission, Some(namespace), "mlflow.experiment", &target).await?;
    Ok(())
}

/// Authorises `permission` on an artifact path.
pub(crate) async fn authorize_path(
    state: &AppState,
    caller: &Caller,
    path: &str,
    permission: Permission,
) -> MlflowResult<()> {
    match scope_of(path)? {
        Scope::Experiment(id) => authorize_experiment(state, caller, id, permission).await.map(|_| ()),
        Scope::Version(model, _, _) => {
            if permission != Permission::ModelRead {
                return Err(MlflowError::denied("the files of a registered version cannot be changed"));
            }
            authorize_model(state, caller, Permission::ModelRead, &model, "version.files").await?;
            Ok(())
        }
    }
}

/// The files under `dir` of the artifact tree, as version files relative to it, each with
/// the stored scan result it can reuse (none when scanning is off).
pub(crate) async fn files_under(
    state: &AppState,
    dir: &str,
) -> MlflowResult<Vec<(FileEntry, Option<cairn_store::scan::FileScan>)>> {
    let files = if state.settings.scan_artifacts {
        state.store.artifacts_under_with_scans(dir, MAX_FILES + 1, cairn_scan::SCANNER).await?
    } else {
        state.store.artifacts_under(dir, MAX_FILES + 1).await?.into_iter().map(|f| (f, None)).collect()
    };
    if files.len() > MAX_FILES {
        return Err(MlflowError::invalid(format!("more than {MAX_FILES} files under {dir}")));
    }
    files
        .into_iter()
        .map(|(f, scan)| {
            let rel = f.path.strip_prefix(dir).unwrap_or(&f.path).trim_start_matches('/').to_owned();
            Ok((super::registry::file_entry(&rel, f.size, &f.digest)?, scan))
        })
        .collect()
}

/// `(relative path, size, digest)` of the files under `path` (a directory) in either scope.
async fn listing_files(state: &AppState, path: &str) -> MlflowResult<Vec<(String, i64, String)>> {
    match scope_of(path)? {
        Scope::Experiment(_) => Ok(state
            .store
            .artifacts_under(path, MAX_FILES)
            .await?
            .into_iter()
            .map(|f| (f.path[path.len() + 1..].to_owned(), f.size, f.digest))
            .collect()),
        Scope::Version(model, n, sub) => {
            let Ok((_, files)) = state.store.version_files(&model, &VersionSelector::Number(n)).await else {
                return Ok(Vec::new());
            };
            let prefix = if sub.is_empty() { String::new() } else { format!("{sub}/") };
            Ok(files
                .into_iter()
                .filter_map(|f| {
                    let p = f.path.as_str();
                    p.strip_prefix(&prefix).map(|rel| (rel.to_owned(), i64::try_from(f.size).unwrap_or(0), f.sha256))
                })
                .collect())
        }
    }
}

/// The file at `path`, in either scope.
async fn find_file(state: &AppState, path: &str) -> MlflowResult<Option<ArtifactFile>> {
    match scope_of(path)? {
        Scope::Experiment(_) => Ok(state.store.get_artifact(path).await?),
        Scope::Version(model, n, sub) => {
            if sub.is_empty() {
                return Ok(None);
            }
            match state.store.version_file(&model, &VersionSelector::Number(n), &sub).await {
                Ok((_, f)) => Ok(Some(ArtifactFile {
                    path: path.to_owned(),
                    digest: f.sha256,
                    size: i64::try_from(f.size).unwrap_or(0),
                })),
                Err(cairn_store::StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// `GET …/artifacts?path=dir`: the direct children of a directory; `{}` for a file or
/// nothing, as MLflow answers (the client tells files from directories by it).
async fn list(State(state): State<AppState>, caller: Caller, args: Args) -> MlflowResult<axum::Json<Value>> {
    let path = clean(&args.opt_str("path")?.unwrap_or_default())?;
    if path.is_empty() {
        // The root lists the experiments the caller may read.
        let ids: Vec<Value> = state
            .store
            .list_experiments(None, Some("active"), None, None, 1000)
            .await?
            .into_iter()
            .filter(|e| caller.principal.check(Permission::ModelRead, Some(&e.namespace)).is_ok())
            .map(|e| json!({"path": e.id.to_string(), "is_dir": true}))
            .collect();
        return Ok(axum::Json(json!({ "files": ids })));
    }
    authorize_path(&state, &caller, &path, Permission::ModelRead).await?;
    let files = listing_files(&state, &path).await?;
    if files.is_empty() {
        return Ok(empty());
    }
    let mut entries: Vec<Value> = Vec::new();
    let mut last_dir: Option<String> = None;
    for (rel, size, _) in &files {
        match rel.split_once('/') {
            Some((dir, _)) => {
                if last_dir.as_deref() != Some(dir) {
                    entries.push(json!({"path": dir, "is_dir": true}));
                    last_dir = Some(dir.to_owned());
                }
            }
            None => entries.push(json!({"path": rel, "is_dir": false, "file_size": size})),
        }
    }
    Ok(axum::Json(json!({ "files": entries })))
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "txt" | "yaml" | "yml" | "md" | "log" | "py" | "csv" => "text/plain",
        "json" => "application/json",
        _ if path.ends_with("MLmodel") => "text/plain",
        _ => "application/octet-stream",
    }
}

async fn download(State(state): State<AppState>, caller: Caller, Path(raw): Path<String>) -> MlflowResult<Response> {
    let path = clean(&raw)?;
    authorize_path(&state, &caller, &path, Permission::ModelRead).await?;
    let file =
        find_file(&state, &path).await?.ok_or_else(|| MlflowError::not_found(format!("Artifact {path} not found")))?;
    let digest: Digest =
        file.digest.parse().map_err(|_| MlflowError::invalid(format!("stored digest of {path} is not valid")))?;
    let reader = state.blobs.get(&digest, None).await?;
    let stream = reader.stream.map_err(|e| {
        tracing::error!(error = %e, "artifact download aborted: the stored bytes failed verification");
        std::io::Error::other(e.to_string())
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(reader.size));
    // Served as a download, never rendered (MLflow does the same against stored XSS).
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", file.digest)) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    body: Body,
) -> MlflowResult<Response> {
    let path = clean(&raw)?;
    if path.is_empty() || !path.contains('/') {
        return Err(MlflowError::invalid("upload to a file path under an experiment: <experiment>/<path>"));
    }
    authorize_path(&state, &caller, &path, Permission::ModelWrite).await?;
    let (digest, size) = store_body(&state, body).await?;
    state.store.put_artifact(&caller.audit, &ArtifactFile { path, digest, size }).await?;
    Ok(StatusCode::OK.into_response())
}

/// A temporary file under the data directory, removed when dropped.
async fn spool_file(state: &AppState) -> MlflowResult<(tempfile::TempPath, tokio::fs::File)> {
    let dir = state.settings.data_dir.join("tmp");
    tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
    let path = tempfile::NamedTempFile::new_in(&dir).map_err(internal)?.into_temp_path();
    let file = tokio::fs::File::create(&path).await.map_err(internal)?;
    Ok((path, file))
}

/// Spools a stream to a temporary file while hashing it (the blob store is keyed by the
/// digest, known only at the end; memory stays bounded whatever the size), then stores it
/// as a blob once. Answers the digest (hex) and size.
async fn store_stream<S>(state: &AppState, mut stream: S) -> MlflowResult<(String, i64)>
where
    S: futures::Stream<Item = Result<bytes::Bytes, MlflowError>> + Unpin,
{
    let max = state.settings.max_upload_bytes;
    let (spool, mut file) = spool_file(state).await?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > max {
            return Err(MlflowError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_PARAMETER_VALUE",
                format!("the file is larger than this server accepts ({max} bytes)"),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    drop(file);
    let digest = Digest::from_bytes(hasher.finalize().into());
    let hex = digest.to_hex();
    let size_i = i64::try_from(size).map_err(|_| MlflowError::invalid("file too large"))?;
    if state.store.blob(&hex).await?.is_none_or(|b| b.state != "present") {
        state.store.blob_pending(&hex, size_i).await?;
        let f = tokio::fs::File::open(&spool).await.map_err(internal)?;
        match state.blobs.put(&digest, size, file_stream(f)).await {
            Ok(()) => state.store.blob_completed(&hex, BlobProof::None).await?,
            Err(e) => {
                state.store.blob_failed(&hex).await?;
                return Err(e.into());
            }
        }
    }
    drop(spool);
    Ok((hex, size_i))
}

/// [`store_stream`] of a request body.
async fn store_body(state: &AppState, body: Body) -> MlflowResult<(String, i64)> {
    let stream = body.into_data_stream().map_err(|e| MlflowError::invalid(format!("the upload was interrupted: {e}")));
    store_stream(state, stream).await
}

/// A file as a stream of chunks.
fn file_stream(
    f: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin + 'static {
    futures::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
    .boxed()
}

fn internal(e: impl std::fmt::Display) -> MlflowError {
    tracing::error!(error = %e, "artifact upload failed");
    MlflowError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error storing the artifact")
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> MlflowResult<axum::Json<Value>> {
    let path = clean(&raw)?;
    if path.is_empty() {
        return Err(MlflowError::invalid("name the artifact to delete"));
    }
    authorize_path(&state, &caller, &path, Permission::ModelWrite).await?;
    state.store.delete_artifacts(&caller.audit, &path).await?;
    Ok(empty())
}

/// Most parts of one multipart upload (S3's limit).
const MAX_PARTS: i64 = 10_000;

/// The signature of a part URL: HMAC-SHA256 over (upload, part, expiry) with a key shared by
/// every replica. The client sends parts to these URLs without credentials, as to S3.
fn part_signature(state: &AppState, upload_id: &str, part: i64, expires: i64) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(state.csrf_key.bytes()).expect("HMAC takes any key");
    mac.update(format!("mlflow-multipart-part|{upload_id}|{part}|{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The server's own base URL as the client reached it (`X-Forwarded-Proto: https` behind a
/// TLS-terminating proxy).
fn base_url(headers: &axum::http::HeaderMap) -> MlflowResult<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)))
        .ok_or_else(|| MlflowError::invalid("a multipart upload needs the Host header"))?;
    let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "https");
    Ok(format!("{}://{host}", if https { "https" } else { "http" }))
}

/// The artifact path a multipart upload writes: the directory in the URL and the base name
/// of the client's local file (`path` in the body).
fn multipart_target(dir: &str, args: &Args) -> MlflowResult<String> {
    let local = args.str("path")?;
    let name = local.rsplit(['/', '\\']).next().unwrap_or_default();
    let dir = clean(dir)?;
    let path = clean(&format!("{dir}/{name}"))?;
    if name.is_empty() || dir.is_empty() {
        return Err(MlflowError::invalid("Invalid path"));
    }
    Ok(path)
}

async fn mpu_create(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    headers: axum::http::HeaderMap,
    args: Args,
) -> MlflowResult<axum::Json<Value>> {
    let path = multipart_target(&raw, &args)?;
    authorize_path(&state, &caller, &path, Permission::ModelWrite).await?;
    let num_parts = args.opt_i64("num_parts")?.unwrap_or(1);
    if !(1..=MAX_PARTS).contains(&num_parts) {
        return Err(MlflowError::invalid(format!("num_parts must be between 1 and {MAX_PARTS}")));
    }
    let lifetime = i64::try_from(state.settings.upload_expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    let expires = state.now_ms().saturating_add(lifetime);
    let upload = state.store.create_multipart(&caller.audit, &path, num_parts, expires).await?;
    let base = base_url(&headers)?;
    let credentials: Vec<Value> = (1..=num_parts)
        .map(|n| {
            let sig = part_signature(&state, &upload.id, n, expires);
            json!({
                "url": format!("{base}/api/2.0/mlflow-artifacts/mpu/part/{}/{n}?expires={expires}&signature={sig}", upload.id),
                "part_number": n,
                "headers": {},
            })
        })
        .collect();
    Ok(axum::Json(json!({ "upload_id": upload.id, "credentials": credentials })))
}

#[derive(serde::Deserialize)]
struct PartQuery {
    expires: i64,
    signature: String,
}

/// `PUT …/mpu/part/{upload}/{n}?expires=…&signature=…`: one part, authorised by its URL.
async fn mpu_part(
    State(state): State<AppState>,
    Path((upload_id, part)): Path<(String, i64)>,
    axum::extract::Query(q): axum::extract::Query<PartQuery>,
    body: Body,
) -> MlflowResult<Response> {
    use subtle::ConstantTimeEq;
    let expected = part_signature(&state, &upload_id, part, q.expires);
    let valid: bool = expected.as_bytes().ct_eq(q.signature.as_bytes()).into();
    if !valid || q.expires <= state.now_ms() {
        return Err(MlflowError::denied("this part URL is not valid (or has expired)"));
    }
    let upload = state.store.get_multipart(&upload_id).await?;
    if !(1..=upload.num_parts).contains(&part) {
        return Err(MlflowError::invalid(format!("part {part} is not part of this upload")));
    }
    let (digest, size) = store_body(&state, body).await?;
    state.store.put_multipart_part(&upload_id, part, &digest, size).await?;
    let mut resp = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// The open upload a complete or abort request names, checked against the path in its URL
/// and authorised for writing there.
async fn open_multipart(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    args: &Args,
) -> MlflowResult<(String, cairn_store::tracking::MultipartUpload)> {
    let path = multipart_target(raw, args)?;
    let upload = state.store.get_multipart(&args.str("upload_id")?).await?;
    if upload.path != path {
        return Err(MlflowError::invalid("this upload writes another path"));
    }
    authorize_path(state, caller, &path, Permission::ModelWrite).await?;
    Ok((path, upload))
}

async fn mpu_complete(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    args: Args,
) -> MlflowResult<axum::Json<Value>> {
    let (path, upload) = open_multipart(&state, &caller, &raw, &args).await?;
    let stored = state.store.multipart_parts(&upload.id).await?;
    let numbers: Vec<i64> = stored.iter().map(|(n, _, _)| *n).collect();
    if numbers != (1..=upload.num_parts).collect::<Vec<_>>() {
        return Err(MlflowError::invalid(format!(
            "the upload has parts {numbers:?} of 1..={}: send the missing parts first",
            upload.num_parts
        )));
    }
    // The client's list must name the parts the server has, with their ETags.
    let listed = args.0.get("parts").and_then(Value::as_array).cloned().unwrap_or_default();
    for (n, digest, _) in &stored {
        let etag = listed
            .iter()
            .find(|p| p.get("part_number").and_then(Value::as_i64) == Some(*n))
            .and_then(|p| p.get("etag").and_then(Value::as_str))
            .map(|e| e.trim_matches('"').to_owned());
        if etag.as_deref() != Some(digest.as_str()) {
            return Err(MlflowError::invalid(format!("part {n}: the ETag does not match the part received")));
        }
    }
    // Join the parts (each read and verified from the blob store) into the file's blob.
    let blobs = state.blobs.clone();
    let parts: Vec<String> = stored.into_iter().map(|(_, d, _)| d).collect();
    let joined = futures::stream::iter(parts)
        .then(move |d| {
            let blobs = blobs.clone();
            async move {
                let digest: Digest = d.parse().map_err(|_| MlflowError::invalid("stored part digest is not valid"))?;
                let reader = blobs.get(&digest, None).await?;
                Ok::<_, MlflowError>(reader.stream.map_err(MlflowError::from))
            }
        })
        .try_flatten()
        .boxed();
    let (digest, size) = store_stream(&state, joined).await?;
    state.store.finish_multipart(&caller.audit, &upload.id, Some(&ArtifactFile { path, digest, size })).await?;
    Ok(empty())
}

async fn mpu_abort(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    args: Args,
) -> MlflowResult<axum::Json<Value>> {
    let (_, upload) = open_multipart(&state, &caller, &raw, &args).await?;
    state.store.finish_multipart(&caller.audit, &upload.id, None).await?;
    Ok(empty())
}

/// Routes that carry their own authorisation (signed part URLs): outside the credential check.
pub(super) fn signed_routes(state: &AppState) -> Router<AppState> {
    let upload_limit = usize::try_from(state.settings.max_upload_bytes).unwrap_or(usize::MAX);
    Router::new().route(
        "/api/2.0/mlflow-artifacts/mpu/part/{upload}/{part}",
        axum::routing::put(mpu_part).layer(DefaultBodyLimit::max(upload_limit)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined() {
        assert_eq!(clean("/0/run/artifacts/a.txt").unwrap(), "0/run/artifacts/a.txt");
        for bad in ["0/../etc/passwd", "0/./a", "0//a", "0/a\\..\\b", "0/a\0b", "../x"] {
            assert!(clean(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(scope_of("12/x").unwrap(), Scope::Experiment(12)));
        assert!(matches!(scope_of("_versions/ns/m/3/f").unwrap(), Scope::Version(_, 3, ref s) if s == "f"));
        assert!(scope_of("etc/passwd").is_err());
        assert!(scope_of("-1/x").is_err());
    }
}
