//! Model files over the real HTTP API: the upload protocol of docs/ARTIFACTS.md, downloads,
//! and the bad inputs each step must refuse without losing anything — one suite, run on SQLite
//! and PostgreSQL, with model files in a local directory or on S3, encrypted at rest or not.
//!
//! Every size derives from the server's part size (the smallest its storage allows: 64 KiB
//! locally, 5 MiB on S3), so every run exercises multi-part blobs.

use cairn_core::{FileEntry, FilePath, Manifest};
use cairn_test_utils::{Backend, Storage, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The encryption segment: ranges across it decrypt two segments.
const SEGMENT: usize = 64 * 1024;

async fn start(backend: Backend, storage: Storage, test: &str) -> Option<TestServer> {
    let part = storage.min_part_size();
    TestServer::start_with_storage(backend, storage, test, |s| {
        s.upload_part_size = part;
        s.max_upload_bytes = 16 * part;
    })
    .await
}

/// The part size the server was configured with.
fn part_size(s: &TestServer) -> usize {
    s.state.settings.upload_part_size as usize
}

/// Generates, for each case, one test per environment: `<environment>::<case>`. `all` runs
/// on every environment, `local` only where model files are in a local directory.
macro_rules! matrix {
    (@on $env:ident: $db:ident, $blobs:ident, encrypted = $encrypted:literal; $($name:ident),*) => {
        mod $env { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                use cairn_test_utils::{Backend, BlobBackend, Storage};
                let storage = Storage { blobs: BlobBackend::$blobs, encrypted: $encrypted };
                let test = concat!(stringify!($env), "::", stringify!($name));
                if let Some(s) = super::start(Backend::$db, storage, test).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
        )* }
    };
    (all: $($name:ident),* $(,)?) => {
        matrix!(@on sqlite: Sqlite, Local, encrypted = false; $($name),*);
        matrix!(@on postgres: Postgres, Local, encrypted = false; $($name),*);
        matrix!(@on sqlite_encrypted: Sqlite, Local, encrypted = true; $($name),*);
        matrix!(@on sqlite_s3: Sqlite, S3, encrypted = false; $($name),*);
        matrix!(@on postgres_s3_encrypted: Postgres, S3, encrypted = true; $($name),*);
    };
}

matrix!(
    all:
    push_download_and_dedup,
    bad_declarations_are_refused,
    bad_parts_keep_nothing,
    commit_needs_every_blob,
    uploads_belong_to_their_creator,
    corrupt_blob_is_never_served_whole,
    concurrent_pushes_of_the_same_files,
    stored_bytes_are_reused_only_by_readers_or_senders,
    parts_wait_while_their_blob_is_assembled,
);

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic bytes that differ per seed.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(u32::from(seed) % 31) as u8 ^ seed).collect()
}

async fn call(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    call_as(s, &s.token, method, path, body).await
}

async fn call_as(s: &TestServer, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
}

async fn put_part(s: &TestServer, upload: &str, digest: &str, part: usize, data: Vec<u8>) -> (StatusCode, Value) {
    put_part_as(s, &s.token, upload, digest, part, data).await
}

/// Sends a part the server must refuse from its headers alone. The server may answer and close
/// the connection before the client has written the body, so the client sees either the
/// refusal or a write error; either way it must not be a success. Returns the refusal when the
/// client got to read it.
async fn refused_part(req: reqwest::RequestBuilder) -> Option<(StatusCode, Value)> {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            Some((status, resp.json().await.unwrap_or(Value::Null)))
        }
        Err(e) => {
            assert!(e.is_request() && !e.is_timeout(), "the server should refuse the part, not fail: {e:?}");
            None
        }
    }
}

fn part_request(s: &TestServer, upload: &str, digest: &str, part: usize, data: Vec<u8>) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .put(format!("{}/api/v1/uploads/{upload}/blobs/{digest}/parts/{part}", s.url))
        .bearer_auth(&s.token)
        .body(data)
}

async fn make_model(s: &TestServer, name: &str) {
    let (st, v) = call(s, Method::POST, "/api/v1/models", Some(json!({"name": name}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

fn declare(files: &[(&str, &[u8])]) -> Value {
    json!({"files": files.iter().map(|(p, d)| json!({"path": p, "size": d.len(), "sha256": sha(d)})).collect::<Vec<_>>()})
}

fn manifest_digest(files: &[(&str, &[u8])]) -> String {
    let entries = files
        .iter()
        .map(|(p, d)| FileEntry { path: FilePath::parse(p).unwrap(), size: d.len() as u64, sha256: sha(d) })
        .collect();
    Manifest::new(entries).unwrap().digest()
}

/// Uploads every part the status says is missing, in reverse order (the server must not
/// care about order).
async fn upload_missing(s: &TestServer, status: &Value, files: &[(&str, &[u8])]) {
    upload_missing_racing(s, status, files, false).await;
}

/// [`upload_missing`], for a client racing another one over the same blobs: `busy` answers
/// (the other client is assembling the blob) are expected.
async fn upload_missing_racing(s: &TestServer, status: &Value, files: &[(&str, &[u8])], racing: bool) {
    let id = status["upload_id"].as_str().unwrap();
    let part_size = status["part_size"].as_u64().unwrap() as usize;
    for blob in status["blobs"].as_array().unwrap() {
        if blob["present"].as_bool().unwrap() {
            continue;
        }
        let digest = blob["sha256"].as_str().unwrap();
        let data = files.iter().find(|(_, d)| sha(d) == digest).unwrap().1;
        let have: Vec<u64> = blob["parts_received"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
        let parts = blob["parts"].as_u64().unwrap() as usize;
        for n in (0..parts).rev() {
            if have.contains(&(n as u64)) {
                continue;
            }
            let chunk = data[(n * part_size).min(data.len())..((n + 1) * part_size).min(data.len())].to_vec();
            let (st, v) = put_part(s, id, digest, n, chunk).await;
            assert!(st == StatusCode::OK || (racing && v["error"]["code"] == "busy"), "{st} {v}");
        }
    }
}

async fn download(s: &TestServer, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{}{path}", s.url)).bearer_auth(&s.token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn push_download_and_dedup(s: &TestServer) {
    make_model(s, "team/bert").await;
    let part = part_size(s);
    let big = bytes(part * 3 + 1234, 1);
    let files: Vec<(&str, &[u8])> = vec![
        ("config.json", b"{\"a\":1}"),
        ("weights/model.bin", &big),
        ("empty.txt", b""),
        ("weights/dup.bin", b"{\"a\":1}"),
    ];
    let (st, status) = call(s, Method::POST, "/api/v1/models/team/bert/uploads", Some(declare(&files))).await;
    assert_eq!(st, StatusCode::CREATED, "{status}");
    assert_eq!(status["part_size"], part);
    let blobs = status["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 3, "identical files are one blob: {status}");
    let big_status = blobs.iter().find(|b| b["sha256"] == sha(&big)).unwrap();
    assert_eq!(big_status["parts"], 4);
    assert_eq!(big_status["present"], false);
    let id = status["upload_id"].as_str().unwrap().to_owned();

    // One part, then the status reports it; the rest follows out of order.
    let (st, v) = put_part(s, &id, &sha(&big), 1, big[part..2 * part].to_vec()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["complete"], false);
    let (_, again) = call(s, Method::GET, &format!("/api/v1/uploads/{id}"), None).await;
    let b = again["blobs"].as_array().unwrap().iter().find(|b| b["sha256"] == sha(&big)).unwrap().clone();
    assert_eq!(b["parts_received"], json!([1]));
    upload_missing(s, &again, &files).await;

    let commit = json!({"description": "first", "tags": {"stage": "dev"}, "aliases": ["champion"]});
    let (st, v) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(commit.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["digest"], manifest_digest(&files));
    assert_eq!(v["file_count"], 4);
    assert_eq!(v["size"], (big.len() + 14) as u64);
    assert_eq!(v["aliases"], json!(["champion"]));
    assert_eq!(v["tags"]["stage"], "dev");
    // A retried commit answers with the same version instead of making another.
    let (st, v2) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(commit)).await;
    assert_eq!(st, StatusCode::OK, "{v2}");
    assert_eq!(v2["version"], 1);

    // Files, manifest, downloads.
    let (st, listing) = call(s, Method::GET, "/api/v1/models/team/bert/versions/@champion/files", None).await;
    assert_eq!(st, StatusCode::OK);
    let paths: Vec<&str> = listing["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["config.json", "empty.txt", "weights/dup.bin", "weights/model.bin"]);
    let resp = download(s, "/api/v1/models/team/bert/versions/1/manifest", &[]).await;
    let manifest = resp.bytes().await.unwrap();
    assert_eq!(format!("sha256:{}", sha(&manifest)), manifest_digest(&files));
    for (path, data) in &files {
        let resp = download(s, &format!("/api/v1/models/team/bert/versions/1/files/{path}"), &[]).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["etag"], format!("\"{}\"", sha(data)).as_str());
        assert_eq!(resp.headers()["content-length"], data.len().to_string().as_str());
        assert_eq!(resp.bytes().await.unwrap().as_ref(), *data, "{path}");
    }
    let file = "/api/v1/models/team/bert/versions/@champion/files/weights/model.bin";
    // Ranges across an encryption segment boundary and across a part boundary.
    for first in [SEGMENT - 6, part - 6, 2 * part - 6] {
        let last = first + 15;
        let resp = download(s, file, &[("range", &format!("bytes={first}-{last}"))]).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(resp.headers()["content-range"], format!("bytes {first}-{last}/{}", big.len()).as_str());
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &big[first..=last]);
    }
    let resp = download(s, file, &[("range", "bytes=-10")]).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &big[big.len() - 10..]);
    let resp = download(s, file, &[("range", &format!("bytes={}-", big.len()))]).await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(resp.headers()["content-range"], format!("bytes */{}", big.len()).as_str());
    let etag = format!("\"{}\"", sha(&big));
    let resp = download(s, file, &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    for missing in
        ["/api/v1/models/team/bert/versions/1/files/nope", "/api/v1/models/team/bert/versions/9/files/config.json"]
    {
        assert_eq!(download(s, missing, &[]).await.status(), StatusCode::NOT_FOUND, "{missing}");
    }
    assert_eq!(
        download(s, "/api/v1/models/team/bert/versions/1/files/weights%5Cconfig.json", &[]).await.status(),
        StatusCode::BAD_REQUEST
    );

    // The same tree again: nothing to send, a new version with the same digest.
    let (st, status) = call(s, Method::POST, "/api/v1/models/team/bert/uploads", Some(declare(&files))).await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(status["blobs"].as_array().unwrap().iter().all(|b| b["present"] == true), "{status}");
    let id = status["upload_id"].as_str().unwrap();
    let (st, v) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(v["version"], 2);
    assert_eq!(v["digest"], manifest_digest(&files));
    // A version made without files has the empty manifest.
    let (_, v) = call(s, Method::POST, "/api/v1/models/team/bert/versions", Some(json!({}))).await;
    assert_eq!(v["digest"], manifest_digest(&[]));
    assert_eq!(v["file_count"], 0);
}

async fn bad_declarations_are_refused(s: &TestServer) {
    make_model(s, "team/m").await;
    let url = "/api/v1/models/team/m/uploads";
    let d = sha(b"x");
    for path in ["../x", "/etc/passwd", "a\\b", "a\u{0}b", "a//b", "a/./b", ".", "C:\\x", ""] {
        let (st, v) =
            call(s, Method::POST, url, Some(json!({"files": [{"path": path, "size": 1, "sha256": d}]}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_path", "{path:?}: {v}");
    }
    for files in [
        json!([{"path": "a", "size": 1, "sha256": d}, {"path": "a", "size": 1, "sha256": d}]),
        json!([{"path": "README.md", "size": 1, "sha256": d}, {"path": "readme.md", "size": 1, "sha256": d}]),
        json!([{"path": "a", "size": 1, "sha256": d}, {"path": "a/b", "size": 1, "sha256": d}]),
    ] {
        let (st, v) = call(s, Method::POST, url, Some(json!({ "files": files }))).await;
        assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_path")), "{v}");
    }
    for body in [
        json!({"files": [{"path": "a", "size": 1, "sha256": "XYZ"}]}),
        json!({"files": [{"path": "a", "size": 1, "sha256": d}, {"path": "b", "size": 2, "sha256": d}]}),
        json!({"files": [{"path": "a", "size": -1, "sha256": d}]}),
        json!({"files": [{"path": "a", "size": 1, "sha256": d, "mode": 7}]}),
        json!({"fils": []}),
    ] {
        let (st, v) = call(s, Method::POST, url, Some(body.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let huge = s.state.settings.max_upload_bytes + 1;
    let (st, v) =
        call(s, Method::POST, url, Some(json!({"files": [{"path": "huge", "size": huge, "sha256": d}]}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")), "{v}");
    let (st, _) = call(s, Method::POST, "/api/v1/models/team/nope/uploads", Some(json!({"files": []}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Nothing was recorded by any of these.
    let (_, events) = call(s, Method::GET, "/api/v1/audit/events?action=upload.create", None).await;
    assert_eq!(events["events"].as_array().map_or(0, Vec::len), 0, "{events}");
}

async fn bad_parts_keep_nothing(s: &TestServer) {
    make_model(s, "team/m").await;
    let part = part_size(s);
    let big = bytes(part * 2 + 10, 7);
    let small = b"small file".to_vec();
    let files: Vec<(&str, &[u8])> = vec![("big", &big), ("small", &small)];
    let (_, status) = call(s, Method::POST, "/api/v1/models/team/m/uploads", Some(declare(&files))).await;
    let id = status["upload_id"].as_str().unwrap();
    let (bd, sd) = (sha(&big), sha(&small));

    // Wrong length (Content-Length is honest, the part is not the declared size).
    if let Some((st, v)) = refused_part(part_request(s, id, &bd, 0, big[..part - 1].to_vec())).await {
        assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_part")), "{v}");
    }
    let longer = big[2 * part..].iter().chain(b"extra").copied().collect();
    if let Some((st, v)) = refused_part(part_request(s, id, &bd, 2, longer)).await {
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    }
    // No such part, undeclared digest, bad digest.
    let (st, v) = put_part(s, id, &bd, 3, vec![0; 10]).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_part")), "{v}");
    let (st, _) = put_part(s, id, &sha(b"other"), 0, b"other".to_vec()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = put_part(s, id, "not-a-digest", 0, b"other".to_vec()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // A Content-Range that does not match the part.
    let req = part_request(s, id, &bd, 1, big[part..2 * part].to_vec())
        .header("content-range", format!("bytes 0-{}/{}", part - 1, big.len()));
    if let Some((st, v)) = refused_part(req).await {
        assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_part")), "{v}");
    }
    // A body that breaks off halfway: the server must not keep the part.
    let half = big[..part / 2].to_vec();
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(half), Err(std::io::Error::other("cut"))]);
    let sent = reqwest::Client::new()
        .put(format!("{}/api/v1/uploads/{id}/blobs/{bd}/parts/0", s.url))
        .bearer_auth(&s.token)
        .header("content-length", part.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    if let Ok(resp) = sent {
        assert_ne!(resp.status(), StatusCode::OK);
    }
    let (_, st_now) = call(s, Method::GET, &format!("/api/v1/uploads/{id}"), None).await;
    for b in st_now["blobs"].as_array().unwrap() {
        assert_eq!(b["parts_received"], json!([]), "{st_now}");
        assert_eq!(b["present"], false);
    }

    // Bytes that do not hash to the declared digest: single-part and multi-part.
    let (st, v) = put_part(s, id, &sd, 0, b"SMALL FILE".to_vec()).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("digest_mismatch")), "{v}");
    let mut wrong = big.clone();
    wrong[part + 5] ^= 1;
    for n in 0..3 {
        let chunk = wrong[n * part..((n + 1) * part).min(wrong.len())].to_vec();
        let (st, v) = put_part(s, id, &bd, n, chunk).await;
        if n < 2 {
            assert_eq!(st, StatusCode::OK, "{v}");
        } else {
            assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("digest_mismatch")));
        }
    }
    let (_, after) = call(s, Method::GET, &format!("/api/v1/uploads/{id}"), None).await;
    for b in after["blobs"].as_array().unwrap() {
        assert_eq!((b["present"].as_bool(), b["parts_received"].clone()), (Some(false), json!([])), "{after}");
    }
    assert!(s.state.blobs.stat(&bd.parse().unwrap()).await.unwrap().is_none());
    assert!(s.state.blobs.stat(&sd.parse().unwrap()).await.unwrap().is_none());
    // The honest bytes still go through afterwards.
    upload_missing(s, &after, &files).await;
    let (st, v) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

async fn commit_needs_every_blob(s: &TestServer) {
    make_model(s, "team/m").await;
    let (a, b) = (b"first".to_vec(), b"second".to_vec());
    let files: Vec<(&str, &[u8])> = vec![("a", &a), ("b", &b)];
    let (_, status) = call(s, Method::POST, "/api/v1/models/team/m/uploads", Some(declare(&files))).await;
    let id = status["upload_id"].as_str().unwrap();
    put_part(s, id, &sha(&a), 0, a.clone()).await;
    let (st, v) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("missing_blobs")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&sha(&b)));
    let (_, model) = call(s, Method::GET, "/api/v1/models/team/m", None).await;
    assert_eq!(model["latest_version"], 0, "a refused commit uses no version number: {model}");
    // Bad commit fields are refused before anything happens.
    let (st, _) =
        call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({"aliases": ["Bad Alias"]}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    put_part(s, id, &sha(&b), 0, b.clone()).await;
    let (st, v) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], 1);
    // Abandoning: the upload is gone.
    let (_, status) = call(s, Method::POST, "/api/v1/models/team/m/uploads", Some(declare(&files))).await;
    let id = status["upload_id"].as_str().unwrap();
    let (st, _) = call(s, Method::DELETE, &format!("/api/v1/uploads/{id}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(s, Method::GET, &format!("/api/v1/uploads/{id}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

async fn uploads_belong_to_their_creator(s: &TestServer) {
    make_model(s, "team/m").await;
    let (st, v) = call(s, Method::POST, "/api/v1/users", Some(json!({"username": "bob", "kind": "service"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // Bob owns models in the namespace too: only the upload's creator may continue it.
    let ctx = cairn_store::AuditContext::system();
    s.state.store.create_grant(&ctx, "bob", "model_owner", Some("team")).await.unwrap();
    let (st, key) = call(
        s,
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": "bob-key", "username": "bob", "scopes": ["read", "write"]})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{key}");
    let bob = key["token"].as_str().unwrap();
    let data = b"admin's file".to_vec();
    let (_, status) = call(s, Method::POST, "/api/v1/models/team/m/uploads", Some(declare(&[("f", &data)]))).await;
    let id = status["upload_id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/api/v1/uploads/{id}")),
        (Method::POST, format!("/api/v1/uploads/{id}/commit")),
        (Method::DELETE, format!("/api/v1/uploads/{id}")),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        let (st, v) = call_as(s, bob, method.clone(), &path, body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    // Read-only keys cannot upload.
    let (_, key) =
        call(s, Method::POST, "/api/v1/keys", Some(json!({"name": "ro", "username": "bob", "scopes": ["read"]}))).await;
    let ro = key["token"].as_str().unwrap();
    let (st, _) = call_as(s, ro, Method::POST, "/api/v1/models/team/m/uploads", Some(declare(&[("f", &data)]))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call_as(s, "cairn_nonsense", Method::GET, "/api/v1/models/team/m/versions/1/files", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

async fn concurrent_pushes_of_the_same_files(s: &TestServer) {
    make_model(s, "team/m").await;
    let big = bytes(part_size(s) * 4, 3);
    let small = b"config".to_vec();
    let files: Vec<(&str, &[u8])> = vec![("w.bin", &big), ("c.json", &small)];
    let push = || async {
        let (st, status) = call(s, Method::POST, "/api/v1/models/team/m/uploads", Some(declare(&files))).await;
        assert_eq!(st, StatusCode::CREATED);
        let id = status["upload_id"].as_str().unwrap().to_owned();
        // Both send every part, whatever the other did (as two clients starting together would).
        let part_size = status["part_size"].as_u64().unwrap() as usize;
        for (_, data) in &files {
            let d = sha(data);
            for n in 0..data.len().div_ceil(part_size).max(1) {
                let chunk = data[n * part_size..((n + 1) * part_size).min(data.len())].to_vec();
                let (st, v) = put_part(s, &id, &d, n, chunk).await;
                assert!(st == StatusCode::OK || v["error"]["code"] == "busy", "{st} {v}");
            }
        }
        let started = std::time::Instant::now();
        let mut last = (StatusCode::OK, Value::Null, Value::Null);
        // Assembling an encrypted blob on S3 in a debug build takes seconds: allow a minute.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let (st, v) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
            if st == StatusCode::CREATED {
                return v;
            }
            // The other client may be assembling a blob; finish what is missing and retry.
            let (_, status) = call(s, Method::GET, &format!("/api/v1/uploads/{id}"), None).await;
            upload_missing_racing(s, &status, &files, true).await;
            last = (st, v, status);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "commit never succeeded in {:?}; last answer {} {}, upload {}",
            started.elapsed(),
            last.0,
            last.1,
            last.2
        );
    };
    let (a, b) = tokio::join!(push(), push());
    let mut numbers = [a["version"].as_i64().unwrap(), b["version"].as_i64().unwrap()];
    numbers.sort();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(a["digest"], b["digest"]);
    for v in 1..=2 {
        let resp = download(s, &format!("/api/v1/models/team/m/versions/{v}/files/w.bin"), &[]).await;
        assert_eq!(resp.bytes().await.unwrap().as_ref(), big.as_slice());
    }
    let listed: Vec<_> = futures::StreamExt::collect::<Vec<_>>(s.state.blobs.list()).await;
    assert_eq!(listed.len(), 2, "each distinct file is stored once");
}

/// A user with write access in `grants`' namespaces (`model_owner`, or `viewer` for reading),
/// and a read/write key for them.
async fn user_with_key(s: &TestServer, name: &str, grants: &[(&str, &str)]) -> String {
    let (st, v) = call(s, Method::POST, "/api/v1/users", Some(json!({"username": name, "kind": "service"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let ctx = cairn_store::AuditContext::system();
    for (role, namespace) in grants {
        s.state.store.create_grant(&ctx, name, role, Some(namespace)).await.unwrap();
    }
    let (st, key) = call(
        s,
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": format!("{name}-key"), "username": name, "scopes": ["read", "write"]})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{key}");
    key["token"].as_str().unwrap().to_owned()
}

async fn put_part_as(
    s: &TestServer,
    token: &str,
    upload: &str,
    digest: &str,
    part: usize,
    data: Vec<u8>,
) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}/api/v1/uploads/{upload}/blobs/{digest}/parts/{part}", s.url))
        .bearer_auth(token)
        .body(data)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// Knowing a digest is not enough to put someone else's bytes in a version: a stored blob is
/// reused without its bytes only by callers who may read a version holding it. Anyone else
/// sees it as missing and sends it; the server compares what arrives with what it holds,
/// stores nothing twice, and accepts the version only once every byte matched.
async fn stored_bytes_are_reused_only_by_readers_or_senders(s: &TestServer) {
    make_model(s, "team-a/secret").await;
    make_model(s, "team-b/copy").await;
    let ps = part_size(s);
    let big = bytes(ps * 2 + ps / 3, 21);
    let small = b"team-a's private config".to_vec();
    let files: Vec<(&str, &[u8])> = vec![("weights.bin", &big), ("config.json", &small)];
    let (st, status) = call(s, Method::POST, "/api/v1/models/team-a/secret/uploads", Some(declare(&files))).await;
    assert_eq!(st, StatusCode::CREATED, "{status}");
    upload_missing(s, &status, &files).await;
    let id = status["upload_id"].as_str().unwrap();
    let (st, v) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // Carol writes in team-b only. To her the stored blobs look exactly like absent ones.
    let carol = user_with_key(s, "carol", &[("model_owner", "team-b")]).await;
    let never_stored = bytes(ps + 100, 22);
    let mut with_unknown = files.clone();
    with_unknown.push(("unknown.bin", &never_stored));
    let (st, status) =
        call_as(s, &carol, Method::POST, "/api/v1/models/team-b/copy/uploads", Some(declare(&with_unknown))).await;
    assert_eq!(st, StatusCode::CREATED, "{status}");
    let up = status["upload_id"].as_str().unwrap().to_owned();
    for blob in status["blobs"].as_array().unwrap() {
        assert_eq!(blob["present"], false, "{blob}");
        assert_eq!(blob["parts_received"], json!([]), "{blob}");
    }
    let (st, v) = call_as(s, &carol, Method::POST, &format!("/api/v1/uploads/{up}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    for d in [sha(&big), sha(&small), sha(&never_stored)] {
        assert!(message.contains(&d), "every digest is reported missing alike: {message}");
    }

    // Wrong bytes of the right length: refused once the blob's parts have all arrived, and
    // none of them is kept.
    let (big_d, small_d) = (sha(&big), sha(&small));
    let mut forged = big.clone();
    forged[ps + 7] ^= 1;
    let chunk = |data: &[u8], n: usize| data[n * ps..((n + 1) * ps).min(data.len())].to_vec();
    for n in 0..2 {
        let (st, v) = put_part_as(s, &carol, &up, &big_d, n, chunk(&forged, n)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["complete"], false, "{v}");
    }
    let (st, v) = put_part_as(s, &carol, &up, &big_d, 2, chunk(&forged, 2)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "digest_mismatch", "{v}");
    let mut forged_small = small.clone();
    forged_small[0] ^= 1;
    let (st, v) = put_part_as(s, &carol, &up, &small_d, 0, forged_small).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (_, status) = call_as(s, &carol, Method::GET, &format!("/api/v1/uploads/{up}"), None).await;
    for blob in status["blobs"].as_array().unwrap() {
        assert_eq!(blob["present"], false, "{blob}");
        assert_eq!(blob["parts_received"], json!([]), "{blob}");
    }
    // A body of the wrong length is refused at once.
    let (st, v) = put_part_as(s, &carol, &up, &big_d, 0, big[..ps - 1].to_vec()).await;
    assert!(st.is_client_error(), "{st} {v}");

    // The right bytes, in any order: proven, and stored only once.
    for n in [1, 2, 0] {
        let (st, v) = put_part_as(s, &carol, &up, &big_d, n, chunk(&big, n)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["complete"], n == 0, "{v}");
    }
    let (st, v) = put_part_as(s, &carol, &up, &small_d, 0, small.clone()).await;
    assert_eq!((st, &v["complete"]), (StatusCode::OK, &json!(true)), "{v}");
    // New bytes in several parts, sent partly in an earlier upload of the same account (a
    // push that was interrupted and re-run): stored, and proven by the account that sent them.
    let unknown_d = sha(&never_stored);
    let only_unknown: Vec<(&str, &[u8])> = vec![("unknown.bin", &never_stored)];
    let (st, earlier) =
        call_as(s, &carol, Method::POST, "/api/v1/models/team-b/copy/uploads", Some(declare(&only_unknown))).await;
    assert_eq!(st, StatusCode::CREATED, "{earlier}");
    let earlier = earlier["upload_id"].as_str().unwrap();
    let (st, v) = put_part_as(s, &carol, earlier, &unknown_d, 0, chunk(&never_stored, 0)).await;
    assert_eq!((st, &v["complete"]), (StatusCode::OK, &json!(false)), "{v}");
    let (_, status) = call_as(s, &carol, Method::GET, &format!("/api/v1/uploads/{up}"), None).await;
    let unknown = status["blobs"].as_array().unwrap().iter().find(|b| b["sha256"] == unknown_d.as_str()).unwrap();
    assert_eq!(unknown["parts_received"], json!([0]), "{unknown}");
    let (st, v) = put_part_as(s, &carol, &up, &unknown_d, 1, chunk(&never_stored, 1)).await;
    assert_eq!((st, &v["complete"]), (StatusCode::OK, &json!(true)), "{v}");
    let (_, status) = call_as(s, &carol, Method::GET, &format!("/api/v1/uploads/{up}"), None).await;
    for blob in status["blobs"].as_array().unwrap() {
        assert_eq!(blob["present"], true, "{blob}");
    }
    let (st, v) = call_as(s, &carol, Method::POST, &format!("/api/v1/uploads/{up}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/models/team-b/copy/versions/1/files/weights.bin", s.url))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), big.as_slice());
    let listed: Vec<_> = futures::StreamExt::collect::<Vec<_>>(s.state.blobs.list()).await;
    assert_eq!(listed.len(), 3, "each distinct file is stored once");

    // Dave may read team-a: he reuses its bytes without sending them.
    let dave = user_with_key(s, "dave", &[("model_owner", "team-b"), ("viewer", "team-a")]).await;
    let (st, status) =
        call_as(s, &dave, Method::POST, "/api/v1/models/team-b/copy/uploads", Some(declare(&files))).await;
    assert_eq!(st, StatusCode::CREATED, "{status}");
    for blob in status["blobs"].as_array().unwrap() {
        assert_eq!(blob["present"], true, "{blob}");
    }
    let up = status["upload_id"].as_str().unwrap();
    let (st, v) = call_as(s, &dave, Method::POST, &format!("/api/v1/uploads/{up}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

/// Whether any file under the local blob store's staging area contains `needle`.
fn staged_contains(s: &TestServer, needle: &[u8]) -> bool {
    fn walk(dir: &std::path::Path, needle: &[u8]) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else { return false };
        entries.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p, needle)
            } else {
                std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            }
        })
    }
    walk(&s.data_dir.path().join("blobs").join(".staging"), needle)
}

async fn set_blob_upload_state(s: &TestServer, digest: &str, state: &str) {
    let mut tx = s.state.store.db().begin().await.unwrap();
    tx.conn()
        .execute("UPDATE blob_uploads SET state = $1 WHERE digest = $2", cairn_store::params![state, digest])
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// While a blob is being assembled and verified, no part of it may be written: a part sent
/// then (a retry, or wrong bytes on purpose) is refused with `busy` and changes nothing.
async fn parts_wait_while_their_blob_is_assembled(s: &TestServer) {
    make_model(s, "team/m").await;
    let ps = part_size(s);
    let data = bytes(ps * 2 + 10, 31);
    let files: Vec<(&str, &[u8])> = vec![("w.bin", &data)];
    let (_, status) = call(s, Method::POST, "/api/v1/models/team/m/uploads", Some(declare(&files))).await;
    let id = status["upload_id"].as_str().unwrap();
    let d = sha(&data);
    let (st, v) = put_part(s, id, &d, 0, data[..ps].to_vec()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    set_blob_upload_state(s, &d, "completing").await;
    let (st, v) = put_part(s, id, &d, 1, vec![0xAA; ps]).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "busy", "{v}");
    // A client that waits for `100 Continue` before sending the body gets the refusal
    // without being asked for the body.
    let path = format!("/api/v1/uploads/{id}/blobs/{d}/parts/1");
    assert!(answer_before_body(s, &path, ps, "").await.starts_with("HTTP/1.1 409"), "busy, body not asked for");
    let range = format!("Content-Range: bytes 0-{}/{}\r\n", ps - 1, data.len());
    assert!(
        answer_before_body(s, &path, ps, &range).await.starts_with("HTTP/1.1 400"),
        "a wrong Content-Range is refused without the body too"
    );
    // Not a byte of it reached the staged blob (visible where staging is plain local files).
    assert!(!staged_contains(s, &[0xAA; 4096]), "a part refused during assembly was written");
    set_blob_upload_state(s, &d, "open").await;
    let (_, status) = call(s, Method::GET, &format!("/api/v1/uploads/{id}"), None).await;
    assert_eq!(status["blobs"][0]["parts_received"], json!([0]), "the refused part was not recorded");
    upload_missing(s, &status, &files).await;
    let (st, v) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let resp = download(s, "/api/v1/models/team/m/versions/1/files/w.bin", &[]).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());
}

/// Sends the headers of a part upload of `len` bytes with `Expect: 100-continue` (and
/// `extra` headers), never the body, and returns the first line the server answers within
/// 5 s: a refusal, or `HTTP/1.1 100 Continue` if the server asked for the body.
async fn answer_before_body(s: &TestServer, path: &str, len: usize, extra: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = s.url.strip_prefix("http://").unwrap().to_owned();
    let mut c = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\n{extra}Connection: close\r\n\r\n",
        s.token
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("no answer within 5 s: the server waits for a body it should not need")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
}

async fn corrupt_blob_is_never_served_whole(s: &TestServer) {
    make_model(s, "team/m").await;
    let part = part_size(s);
    let data = bytes(part * 2 + 77, 9);
    let files: Vec<(&str, &[u8])> = vec![("w.bin", &data)];
    let (_, status) = call(s, Method::POST, "/api/v1/models/team/m/uploads", Some(declare(&files))).await;
    upload_missing(s, &status, &files).await;
    let id = status["upload_id"].as_str().unwrap();
    let (st, _) = call(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let d = sha(&data);
    let stored = s.stored_blob_path(&d);
    let mut raw = std::fs::read(&stored).unwrap();
    // The object is stored where and how this storage should: encrypted, or exactly the bytes.
    if s.storage.encrypted {
        assert!(raw.starts_with(b"CAIRNENC") && raw.len() > data.len(), "not encrypted at rest");
        let body = &raw[s.stored_blob_header_len()..];
        assert!(body[..4096] != data[..4096], "plaintext at rest");
    } else {
        assert!(raw == data, "stored object differs from the blob");
    }
    raw[s.stored_blob_header_len() + part + 3] ^= 0x40;
    std::fs::write(&stored, &raw).unwrap();
    let resp = download(s, "/api/v1/models/team/m/versions/1/files/w.bin", &[]).await;
    // Either the connection is cut (an error here) or the body stops short: never all of it.
    if let Ok(body) = resp.bytes().await {
        assert!(body.len() < data.len(), "a corrupt blob was served whole ({} bytes)", body.len());
    }
}

/// A slow part upload outlives the request timeout that stops other slow requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_parts_get_a_longer_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(s) = TestServer::start_with(Backend::Sqlite, "slow_parts_get_a_longer_deadline", |st| {
        st.upload_part_size = 64 * 1024;
        st.request_timeout_secs = 1;
    })
    .await
    else {
        return;
    };
    make_model(&s, "team/slow").await;
    let data = bytes(1000, 5);
    let (_, status) = call(&s, Method::POST, "/api/v1/models/team/slow/uploads", Some(declare(&[("f", &data)]))).await;
    let id = status["upload_id"].as_str().unwrap();
    let host = s.url.strip_prefix("http://").unwrap().to_owned();
    // Sends headers and half the body, waits 1.5 s, sends the rest; returns the status line.
    let slow = |head: String, body: Vec<u8>| {
        let host = host.clone();
        async move {
            let mut c = tokio::net::TcpStream::connect(&host).await.unwrap();
            c.write_all(head.as_bytes()).await.unwrap();
            c.write_all(&body[..body.len() / 2]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let _ = c.write_all(&body[body.len() / 2..]).await;
            let mut out = Vec::new();
            let _ = c.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_owned()
        }
    };
    let auth = format!("Authorization: Bearer {}\r\nConnection: close\r\n", s.token);
    let json = br#"{"name": "team/other"}"#.to_vec();
    let head = format!(
        "POST /api/v1/models HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    );
    assert!(slow(head, json).await.starts_with("HTTP/1.1 408"), "an ordinary request is cut at its timeout");
    let head = format!(
        "PUT /api/v1/uploads/{id}/blobs/{}/parts/0 HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {}\r\n\r\n",
        sha(&data),
        data.len()
    );
    assert!(slow(head, data.clone()).await.starts_with("HTTP/1.1 200"), "a part upload is not");
    s.stop().await;
}

/// Expired uploads and abandoned parts are swept; fresh ones are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_removes_expired_uploads_and_their_parts() {
    let Some(s) = TestServer::start_with(Backend::Sqlite, "the_sweeper_removes_expired_uploads", |st| {
        st.upload_part_size = 64 * 1024;
    })
    .await
    else {
        return;
    };
    make_model(&s, "team/swept").await;
    let old = bytes(3 * 64 * 1024, 1);
    let fresh = bytes(3 * 64 * 1024, 2);
    let (_, status) = call(&s, Method::POST, "/api/v1/models/team/swept/uploads", Some(declare(&[("f", &old)]))).await;
    let old_id = status["upload_id"].as_str().unwrap().to_owned();
    let (st, _) = put_part(&s, &old_id, &sha(&old), 0, old[..64 * 1024].to_vec()).await;
    assert_eq!(st, StatusCode::OK);
    let (_, status) =
        call(&s, Method::POST, "/api/v1/models/team/swept/uploads", Some(declare(&[("g", &fresh)]))).await;
    let fresh_id = status["upload_id"].as_str().unwrap().to_owned();
    let (st, _) = put_part(&s, &fresh_id, &sha(&fresh), 0, fresh[..64 * 1024].to_vec()).await;
    assert_eq!(st, StatusCode::OK);
    let staging = s.data_dir.path().join("blobs").join(".staging");
    let entries = || std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries(), 2, "one staging area per blob upload");

    // Age the first upload and its blob upload past their lifetime.
    let mut tx = s.state.store.db().begin().await.unwrap();
    let mut conn = tx.conn();
    conn.execute("UPDATE uploads SET expires_at = 0 WHERE id = $1", cairn_store::params![old_id.as_str()])
        .await
        .unwrap();
    conn.execute("UPDATE blob_uploads SET updated_at = 0 WHERE digest = $1", cairn_store::params![sha(&old)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    cairn_server::uploads::sweep(&s.state).await.unwrap();

    let (st, _) = call(&s, Method::GET, &format!("/api/v1/uploads/{old_id}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "the expired upload is gone");
    assert!(s.state.store.blob_upload(&sha(&old)).await.unwrap().is_none(), "its parts are forgotten");
    assert_eq!(entries(), 1, "and their bytes removed");
    let (st, status) = call(&s, Method::GET, &format!("/api/v1/uploads/{fresh_id}"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(status["blobs"][0]["parts_received"], json!([0]), "the fresh upload keeps its part");
    s.stop().await;
}

/// With `CAIRN_BLOB_PRESIGN` on an unencrypted S3 store, a download answers `302` to a
/// presigned URL that serves the bytes; on an encrypted store it streams through the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_redirect_to_presigned_urls_on_s3() {
    use cairn_test_utils::BlobBackend;
    for encrypted in [false, true] {
        let storage = Storage { blobs: BlobBackend::S3, encrypted };
        let part = storage.min_part_size();
        let Some(s) = TestServer::start_with_storage(Backend::Sqlite, storage, "presigned", |st| {
            st.upload_part_size = part;
            st.blob_presign = true;
        })
        .await
        else {
            return;
        };
        make_model(&s, "team/m").await;
        let data = bytes(1000, 4);
        let files: Vec<(&str, &[u8])> = vec![("w.bin", &data)];
        let (_, status) = call(&s, Method::POST, "/api/v1/models/team/m/uploads", Some(declare(&files))).await;
        upload_missing(&s, &status, &files).await;
        let id = status["upload_id"].as_str().unwrap();
        let (st, _) = call(&s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
        assert_eq!(st, StatusCode::CREATED);
        let url = format!("{}/api/v1/models/team/m/versions/1/files/w.bin", s.url);
        let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let resp = no_follow.get(&url).bearer_auth(&s.token).send().await.unwrap();
        if encrypted {
            assert_eq!(resp.status(), StatusCode::OK, "encrypted blobs are never presigned");
        } else {
            assert_eq!(resp.status(), StatusCode::FOUND);
            let location = resp.headers()["location"].to_str().unwrap().to_owned();
            assert!(location.contains("X-Amz-Signature="), "{location}");
            // The presigned URL needs no Cairn credentials.
            let direct = reqwest::get(&location).await.unwrap();
            assert_eq!(direct.status(), StatusCode::OK);
            assert_eq!(direct.bytes().await.unwrap().as_ref(), data.as_slice());
        }
        let followed = reqwest::Client::new().get(&url).bearer_auth(&s.token).send().await.unwrap();
        assert_eq!(followed.bytes().await.unwrap().as_ref(), data.as_slice());
        s.stop().await;
    }
}
