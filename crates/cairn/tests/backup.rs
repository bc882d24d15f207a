//! `cairn admin backup` and `cairn admin restore`, the real binary beside a real server, on
//! SQLite and PostgreSQL: a populated registry is backed up while the server runs and takes
//! writes, restored into an empty place, served again and compared item by item (models,
//! versions, manifests, aliases, tags, users, grants, audit events, file bytes). A second
//! backup copies no blob; a non-empty target is refused (exit 2) and left alone; a corrupted
//! blob fails the restore's verification (exit 1); a truncated or missing metadata file is
//! reported before anything is written (exit 1). Blobs in S3 and blobs encrypted at rest
//! are covered on SQLite.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_test_utils::{Backend, BlobBackend, Storage, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");
/// Small parts, so that a few hundred KiB make several.
const PART: u64 = 64 * 1024;

/// A server to talk to: its URL and an administrator's API key.
#[derive(Clone)]
struct Api {
    url: String,
    token: String,
}

impl Api {
    fn of(s: &TestServer) -> Self {
        Self { url: s.url.clone(), token: s.token.clone() }
    }
}

/// Where a `cairn admin` command points: a data dir, a database, and the blob settings.
#[derive(Clone)]
struct Target {
    data_dir: PathBuf,
    database_url: String,
    env: Vec<(String, String)>,
}

impl Target {
    fn of(s: &TestServer) -> Self {
        let mut env = Vec::new();
        if let Some(s3) = &s.s3 {
            env.push(("CAIRN_BLOB_URL".into(), s3.url("blobs")));
            env.extend(aws_env(s));
        }
        if let Some(key) = &s.state.settings.encryption_key_file {
            env.push(("CAIRN_ENCRYPTION_KEY_FILE".into(), key.display().to_string()));
        }
        Self { data_dir: s.data_dir.path().to_path_buf(), database_url: s.database_url.clone(), env }
    }

    /// An empty place to restore into, with the blob settings and keys of `like`.
    fn empty_like(like: &Target, dir: &Path, database_url: String) -> Self {
        let database_url = if database_url.starts_with("sqlite:") {
            format!("sqlite://{}", dir.join("cairn.db").display())
        } else {
            database_url
        };
        Self { data_dir: dir.to_path_buf(), database_url, env: like.env.clone() }
    }
}

/// The `AWS_*` variables that reach the S3 server embedded in `s`.
fn aws_env(s: &TestServer) -> Vec<(String, String)> {
    let s3 = s.s3.as_ref().expect("a server with S3 storage");
    let o = s3.options();
    vec![
        ("AWS_ENDPOINT_URL".into(), s3.endpoint().to_owned()),
        ("AWS_ACCESS_KEY_ID".into(), o.access_key_id.unwrap_or_default()),
        ("AWS_SECRET_ACCESS_KEY".into(), o.secret_access_key.unwrap_or_default()),
        ("AWS_REGION".into(), o.region.unwrap_or_default()),
    ]
}

/// `cairn admin ARGS` on `t`, with nothing from the environment or a stray `cairn.toml` in
/// the way (off the async workers, which serve the server's requests).
async fn admin(t: &Target, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(&t.data_dir)
        .arg("--database-url")
        .arg(&t.database_url)
        .current_dir(&t.data_dir)
        .env("CAIRN_LOG", "warn");
    for (k, _) in std::env::vars() {
        if (k.starts_with("CAIRN_") && k != "CAIRN_LOG") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in &t.env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

/// The CLI's client commands against `api`.
async fn client_cli(api: &Api, args: &[&str]) -> Output {
    let config = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("CAIRN_CONFIG_DIR", config.path()).env("CAIRN_URL", &api.url).env("CAIRN_TOKEN", &api.token);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn json_ok(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// Bytes that differ at every offset.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31).wrapping_add(i >> 8) as u8) ^ seed).collect()
}

async fn call(api: &Api, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().request(method.clone(), format!("{}{path}", api.url)).bearer_auth(&api.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// Models, versions with files (shared blobs, a multi-part file), aliases, tags, users and
/// grants, and the audit events they leave.
async fn populate(server: &TestServer) {
    let s = &Api::of(server);
    let work = tempfile::tempdir().unwrap();
    for (i, (model, versions)) in [("team/alpha", 3u8), ("team/beta", 2), ("vision/gamma", 1)].into_iter().enumerate() {
        call(
            s,
            Method::POST,
            "/api/v1/models",
            Some(json!({"name": model, "description": format!("the {model} model")})),
        )
        .await;
        for v in 1..=versions {
            let dir = work.path().join(format!("{}-{v}", model.replace('/', "-")));
            std::fs::create_dir_all(dir.join("nested")).unwrap();
            std::fs::write(dir.join("config.json"), b"{\"layers\": 4}\n").unwrap(); // shared by every version
            std::fs::write(dir.join("weights.bin"), pattern(200 * 1024 + usize::from(v), v + 16 * i as u8)).unwrap();
            std::fs::write(dir.join("nested/notes.txt"), format!("{model} version {v}\n")).unwrap();
            let mut args = vec!["push", model, dir.to_str().unwrap(), "--quiet", "--tag"];
            let tag = format!("step={v}");
            args.push(&tag);
            if v == versions {
                args.extend(["--alias", "champion"]);
            }
            let out = client_cli(s, &args).await;
            assert!(out.status.success(), "{}", text(&out));
        }
        call(s, Method::PUT, &format!("/api/v1/models/{model}/tags/owner"), Some(json!({"value": "ml-team"}))).await;
    }
    call(s, Method::PUT, "/api/v1/models/team/alpha/aliases/stable", Some(json!({"version": 1}))).await;
    server.service_account("ci-bot", &[("model_owner", Some("team")), ("viewer", None)]).await;
    call(
        s,
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": "reviewer", "password": "a long and unusual passphrase"})),
    )
    .await;
}

/// Everything a user can see of the registry, by item: model, versions, files, aliases.
async fn registry(s: &Api) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let models = call(s, Method::GET, "/api/v1/models?limit=1000", None).await;
    for m in models["models"].as_array().unwrap() {
        let name = m["full_name"].as_str().unwrap().to_owned();
        if name.starts_with("busy/") {
            continue; // written during the backup: in it or not, either is consistent
        }
        out.push((format!("model {name}"), m.clone()));
        let versions = call(s, Method::GET, &format!("/api/v1/models/{name}/versions?limit=1000"), None).await;
        for v in versions["versions"].as_array().unwrap() {
            let n = v["version"].as_i64().unwrap();
            out.push((format!("version {name}:{n}"), v.clone()));
            let files = call(s, Method::GET, &format!("/api/v1/models/{name}/versions/{n}/files"), None).await;
            out.push((format!("files {name}:{n}"), files.clone()));
            for f in files["files"].as_array().unwrap() {
                let path = f["path"].as_str().unwrap();
                let bytes = download(s, &format!("/api/v1/models/{name}/versions/{n}/files/{path}")).await;
                assert_eq!(hex::encode(Sha256::digest(&bytes)), f["sha256"].as_str().unwrap(), "{name}:{n} {path}");
                out.push((format!("bytes {name}:{n} {path}"), Value::String(hex::encode(Sha256::digest(&bytes)))));
            }
        }
        let aliases = call(s, Method::GET, &format!("/api/v1/models/{name}/aliases"), None).await;
        out.push((format!("aliases {name}"), aliases));
    }
    let mut users = call(s, Method::GET, "/api/v1/users?limit=1000", None).await;
    // Logging in and API key use move these on every server.
    for u in users["users"].as_array_mut().unwrap() {
        if let Some(o) = u.as_object_mut() {
            o.retain(|k, _| !k.contains("last_") && !k.contains("login"));
        }
    }
    out.push(("users".into(), users));
    out.push(("grants".into(), call(s, Method::GET, "/api/v1/grants", None).await));
    out
}

async fn download(s: &Api, path: &str) -> Vec<u8> {
    let resp = reqwest::Client::new().get(format!("{}{path}", s.url)).bearer_auth(&s.token).send().await.unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap().to_vec();
    assert_eq!(status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&bytes));
    bytes
}

/// The first `n` audit events, oldest first.
async fn audit_events(s: &Api, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    while events.len() < n {
        let mut path = "/api/v1/audit/events?limit=1000".to_owned();
        if let Some(t) = &token {
            path.push_str(&format!("&page_token={t}"));
        }
        let page = call(s, Method::GET, &path, None).await;
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    events.truncate(n);
    events
}

/// Rows of `table` in a backup report's manifest.
fn rows(report: &Value, table: &str) -> u64 {
    report["manifest"]["tables"].as_array().unwrap().iter().find(|t| t["name"] == table).unwrap()["rows"]
        .as_u64()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A database URL for a restore target: a fresh PostgreSQL database, or SQLite in `dir`.
async fn empty_database(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("cairn.db").display()),
        Backend::Postgres => {
            let base = std::env::var("CAIRN_TEST_DATABASE_URL").expect("checked by TestServer::start");
            cairn_test_utils::fresh_postgres_database(&base).await
        }
    }
}

/// Serves the registry restored into `dir` and `database_url`, with the blob store settings
/// of `like` (for S3: the same bucket of the same embedded server) and a new admin key.
async fn serve_restored(like: &TestServer, dir: &Path, database_url: &str) -> Api {
    let token = cairn_test_utils::random_token();
    let settings = cairn_server::Settings {
        data_dir: dir.to_path_buf(),
        database_url: Some(database_url.to_owned()),
        bootstrap_admin_token: Some(token.clone()),
        blob_url: like.state.settings.blob_url.clone(),
        encryption_key_file: like.state.settings.encryption_key_file.clone(),
        upload_part_size: like.state.settings.upload_part_size,
        ..cairn_server::Settings::default()
    };
    let store = cairn_server::serve::open_store(&settings).await.unwrap();
    let blobs = match like.s3 {
        Some(_) => like.state.blobs.clone(),
        None => cairn_server::app::open_blobs(&settings).await.unwrap(),
    };
    let state = cairn_server::AppState::with_blobs(store, settings, blobs).await.unwrap();
    let url = cairn_test_utils::bench::serve_on_loopback(cairn_server::build_router(state)).await.unwrap();
    Api { url, token }
}

/// Puts the server's signing key where the restored server will look for it, as the
/// restore procedure says (keys are never in a backup).
fn place_signing_key(from: &TestServer, data_dir: &Path) {
    let key = from.state.settings.signing_key_path();
    std::fs::create_dir_all(data_dir.join("keys")).unwrap();
    std::fs::copy(key, data_dir.join("keys/signing.pem")).unwrap();
}

async fn round_trip(backend: Backend, storage: Storage, test: &str) {
    let Some(s) = TestServer::start_with_storage(backend, storage, test, |st| {
        st.upload_part_size = if storage.blobs == BlobBackend::S3 { storage.min_part_size() } else { PART };
    })
    .await
    else {
        return;
    };
    populate(&s).await;
    let original = Api::of(&s);
    let before = registry(&original).await;
    let source = Target::of(&s);
    let work = tempfile::tempdir().unwrap();
    let backup_dir = work.path().join("backup");
    let backup_arg = backup_dir.to_str().unwrap().to_owned();

    // Online: the server keeps taking writes while the backup runs.
    let busy = Arc::new(AtomicBool::new(true));
    let writer = {
        let (url, token, busy) = (s.url.clone(), s.token.clone(), busy.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while busy.load(Ordering::Relaxed) {
                let r = http
                    .post(format!("{url}/api/v1/models"))
                    .bearer_auth(&token)
                    .json(&json!({"name": format!("busy/m{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                i += 1;
            }
            i
        })
    };
    let first = json_ok(&admin(&source, &["backup", &backup_arg, "--json"]).await);
    busy.store(false, Ordering::Relaxed);
    let written_meanwhile = writer.await.unwrap();
    assert!(written_meanwhile > 0, "the server took writes during the backup");

    let blobs = first["manifest"]["blobs"]["count"].as_u64().unwrap();
    // config.json is shared: 6 versions hold 3 files each, 13 distinct blobs.
    assert_eq!(blobs, 13, "{first}");
    let local = storage.blobs == BlobBackend::Local;
    assert_eq!(first["manifest"]["blobs"]["included"], local, "{first}");
    assert_eq!(first["blobs_copied"].as_u64().unwrap(), if local { blobs } else { 0 }, "{first}");
    assert_eq!(first["blobs_skipped"], 0, "{first}");
    assert_eq!(rows(&first, "versions"), 6, "{first}");
    assert!(backup_dir.join("manifest.json").is_file());

    // Incremental: nothing new to copy.
    let second = json_ok(&admin(&source, &["backup", &backup_arg, "--json"]).await);
    assert_eq!(second["blobs_copied"], 0, "{second}");
    assert_eq!(second["blobs_skipped"].as_u64().unwrap(), if local { blobs } else { 0 }, "{second}");
    assert_eq!(second["snapshots_removed"], 1, "{second}");
    let snapshots = std::fs::read_dir(backup_dir.join("snapshots")).unwrap().count();
    assert_eq!(snapshots, 1, "only the newest snapshot is kept");
    let events_in_backup = usize::try_from(rows(&second, "audit_events")).unwrap();

    // Restore into an empty place and serve it.
    let restored_dir = work.path().join("restored");
    std::fs::create_dir_all(&restored_dir).unwrap();
    place_signing_key(&s, &restored_dir);
    let target = Target::empty_like(&source, &restored_dir, empty_database(backend, &restored_dir).await);
    let report = json_ok(&admin(&target, &["restore", &backup_arg, "--json"]).await);
    assert_eq!(report["problems"], json!([]), "{report}");
    assert_eq!(report["fsck"]["checked"].as_u64().unwrap(), blobs, "{report}");
    assert_eq!(report["audit"]["events"].as_u64().unwrap(), events_in_backup as u64, "{report}");
    assert_eq!(report["audit_keys"], "key_file", "{report}");
    assert_eq!(report["blobs_copied"].as_u64().unwrap(), if local { blobs } else { 0 }, "{report}");

    let restored = serve_restored(&s, &restored_dir, &target.database_url).await;
    let after = registry(&restored).await;
    assert_eq!(before.len(), after.len(), "the same items");
    for ((what, a), (what_after, b)) in before.iter().zip(&after) {
        assert_eq!(what, what_after);
        assert_eq!(a, b, "{what} differs after the restore");
    }
    let original_events = audit_events(&original, events_in_backup).await;
    let restored_events = audit_events(&restored, events_in_backup).await;
    assert_eq!(original_events.len(), events_in_backup);
    assert_eq!(original_events, restored_events, "the audit events up to the backup");
    // New rows get fresh ids after the restore.
    call(&restored, Method::POST, "/api/v1/models", Some(json!({"name": "team/after-restore"}))).await;
    let files = work.path().join("after-restore");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("w.bin"), pattern(5000, 99)).unwrap();
    let out =
        client_cli(&restored, &["push", "team/after-restore", files.to_str().unwrap(), "--quiet", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let version: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(version["version"], 1, "{version}");
    drop(restored);

    // A target that is not empty is refused and left alone.
    let db_file = restored_dir.join("cairn.db");
    let size_before = std::fs::metadata(&db_file).ok().map(|m| m.len());
    let out = admin(&target, &["restore", &backup_arg]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("empty"), "{}", text(&out));
    assert_eq!(std::fs::metadata(&db_file).ok().map(|m| m.len()), size_before);

    // A truncated metadata file: reported before anything is written.
    let truncated = work.path().join("truncated");
    copy_dir(&backup_dir, &truncated);
    let manifest: Value = serde_json::from_slice(&std::fs::read(truncated.join("manifest.json")).unwrap()).unwrap();
    let file = match backend {
        Backend::Sqlite => manifest["database"]["path"].as_str().unwrap().to_owned(),
        Backend::Postgres => {
            manifest["tables"].as_array().unwrap().iter().find(|t| t["name"] == "versions").unwrap()["file"]["path"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let bytes = std::fs::read(truncated.join(&file)).unwrap();
    std::fs::write(truncated.join(&file), &bytes[..bytes.len() / 2]).unwrap();
    let empty_dir = work.path().join("empty-1");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let empty = Target::empty_like(&source, &empty_dir, empty_database(backend, &empty_dir).await);
    let out = admin(&empty, &["restore", truncated.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("damaged") && text(&out).contains(&file), "{}", text(&out));
    assert!(!empty_dir.join("cairn.db").exists(), "nothing written");
    assert!(!empty_dir.join("blobs").join("sha256").exists(), "nothing written");
    // …and the target is still empty: the intact backup restores into it.
    let out = admin(&empty, &["restore", &backup_arg, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A missing metadata file.
    std::fs::remove_file(truncated.join(&file)).unwrap();
    let empty_dir = work.path().join("empty-2");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let empty = Target::empty_like(&source, &empty_dir, empty_database(backend, &empty_dir).await);
    let out = admin(&empty, &["restore", truncated.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("missing") && text(&out).contains(&file), "{}", text(&out));

    // Not a backup at all.
    let out = admin(&empty, &["restore", empty_dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("manifest.json"), "{}", text(&out));

    if local {
        // A corrupted blob in the backup: restored, but verification fails and says which.
        let corrupt = work.path().join("corrupt");
        copy_dir(&backup_dir, &corrupt);
        let digest = hex::encode(Sha256::digest(b"{\"layers\": 4}\n"));
        let blob = corrupt.join("blobs/sha256").join(&digest[..2]).join(&digest);
        let mut raw = std::fs::read(&blob).unwrap();
        let at = raw.len() - 2;
        raw[at] ^= 0x01;
        std::fs::write(&blob, &raw).unwrap();
        let empty_dir = work.path().join("empty-3");
        std::fs::create_dir_all(&empty_dir).unwrap();
        let empty = Target::empty_like(&source, &empty_dir, empty_database(backend, &empty_dir).await);
        let out = admin(&empty, &["restore", corrupt.to_str().unwrap()]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("corrupt") && text(&out).contains(&digest), "{}", text(&out));
        assert!(text(&out).contains("VERIFICATION FAILED"), "{}", text(&out));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_round_trip_on_sqlite() {
    round_trip(Backend::Sqlite, Storage::LOCAL, "backup_restore_round_trip_on_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_round_trip_on_postgres() {
    round_trip(Backend::Postgres, Storage::LOCAL, "backup_restore_round_trip_on_postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_with_blobs_in_s3() {
    round_trip(
        Backend::Sqlite,
        Storage { blobs: BlobBackend::S3, encrypted: false },
        "backup_restore_with_blobs_in_s3",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_encrypted_blobs() {
    round_trip(
        Backend::Sqlite,
        Storage { blobs: BlobBackend::Local, encrypted: true },
        "backup_restore_encrypted_blobs",
    )
    .await;
}

/// Encrypted blobs are restored only with the key file (never in the backup): without it the
/// restore is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_of_encrypted_blobs_needs_the_key_file() {
    let storage = Storage { blobs: BlobBackend::Local, encrypted: true };
    let s = TestServer::start_with_storage(
        Backend::Sqlite,
        storage,
        "restore_of_encrypted_blobs_needs_the_key_file",
        |_| {},
    )
    .await
    .unwrap();
    call(&Api::of(&s), Method::POST, "/api/v1/models", Some(json!({"name": "team/x"}))).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("w.bin"), pattern(1000, 7)).unwrap();
    let out = client_cli(&Api::of(&s), &["push", "team/x", dir.to_str().unwrap(), "--quiet"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let source = Target::of(&s);
    let backup = work.path().join("backup");
    let report = json_ok(&admin(&source, &["backup", backup.to_str().unwrap(), "--json"]).await);
    assert_eq!(report["manifest"]["blobs"]["encrypted"], true, "{report}");
    let stored = std::fs::read(s.stored_blob_path(&hex::encode(Sha256::digest(pattern(1000, 7))))).unwrap();
    let digest = hex::encode(Sha256::digest(pattern(1000, 7)));
    let copied = std::fs::read(backup.join("blobs/sha256").join(&digest[..2]).join(&digest)).unwrap();
    assert_eq!(stored, copied, "blobs are copied as stored (encrypted)");
    assert_ne!(copied, pattern(1000, 7));

    let restored = work.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    let target = Target {
        data_dir: restored.clone(),
        database_url: format!("sqlite://{}", restored.join("cairn.db").display()),
        env: Vec::new(),
    };
    let out = admin(&target, &["restore", backup.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("CAIRN_ENCRYPTION_KEY_FILE"), "{}", text(&out));
    assert!(!restored.join("cairn.db").exists());
    s.stop().await;
}

/// A backup into S3 (`s3://bucket/prefix`, reached with the usual `AWS_*` variables) of a
/// registry with a local blob store: the blobs are uploaded once, the second backup uploads
/// none, the restore from S3 compares equal, and a truncated object is reported before
/// anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_into_s3_and_restore_from_it() {
    let test = "backup_into_s3_and_restore_from_it";
    let s = TestServer::start_with(Backend::Sqlite, test, |st| st.upload_part_size = PART).await.unwrap();
    // The embedded S3 server of a second server, which keeps its own blobs elsewhere in it.
    let holder = TestServer::start_with_storage(
        Backend::Sqlite,
        Storage { blobs: BlobBackend::S3, encrypted: false },
        test,
        |_| {},
    )
    .await
    .unwrap();
    let s3 = holder.s3.as_ref().unwrap();
    populate(&s).await;
    let original = Api::of(&s);
    let before = registry(&original).await;
    let mut source = Target::of(&s);
    source.env.extend(aws_env(&holder));
    let destination = s3.url("backups/nightly");

    let first = json_ok(&admin(&source, &["backup", &destination, "--json"]).await);
    assert_eq!(first["blobs_copied"], 13, "{first}");
    assert!(s3.object_path("backups/nightly/manifest.json").is_file());
    let second = json_ok(&admin(&source, &["backup", &destination, "--json"]).await);
    assert_eq!((&second["blobs_copied"], &second["blobs_skipped"]), (&json!(0), &json!(13)), "{second}");
    assert_eq!(second["snapshots_removed"], 1, "{second}");

    let work = tempfile::tempdir().unwrap();
    let restored_dir = work.path().join("restored");
    std::fs::create_dir_all(&restored_dir).unwrap();
    place_signing_key(&s, &restored_dir);
    let target = Target::empty_like(&source, &restored_dir, empty_database(Backend::Sqlite, &restored_dir).await);
    let report = json_ok(&admin(&target, &["restore", &destination, "--json"]).await);
    assert_eq!(report["problems"], json!([]), "{report}");
    assert_eq!(report["blobs_copied"], 13, "{report}");
    let restored = serve_restored(&s, &restored_dir, &target.database_url).await;
    assert_eq!(before, registry(&restored).await);

    let database = second["manifest"]["database"]["path"].as_str().unwrap();
    let object = s3.object_path(&format!("backups/nightly/{database}"));
    let bytes = std::fs::read(&object).unwrap();
    std::fs::write(&object, &bytes[..bytes.len() / 3]).unwrap();
    let empty_dir = work.path().join("empty");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let empty = Target::empty_like(&source, &empty_dir, empty_database(Backend::Sqlite, &empty_dir).await);
    let out = admin(&empty, &["restore", &destination]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("damaged") && text(&out).contains(database), "{}", text(&out));
    assert!(!empty_dir.join("cairn.db").exists(), "nothing written");
    s.stop().await;
}
