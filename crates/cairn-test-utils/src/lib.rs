//! Test helpers (not published): start the real server on `127.0.0.1:0` with a temporary
//! data dir, on SQLite or on a fresh database of the test PostgreSQL.
//!
//! Model files are kept in a local directory by default; [`Storage`] chooses S3 (an
//! S3-compatible server embedded in the test process, reached with explicit settings, never the
//! `AWS_*` environment) and encryption at rest (a fresh key file in the data dir).
//!
//! PostgreSQL tests run when `CAIRN_TEST_DATABASE_URL` is set (a role that may create
//! databases). When it is not set they print a SKIPPED line and pass — unless
//! `CAIRN_REQUIRE_ALL_TESTS=1` (CI), where a missing service fails the test.

pub mod bench;
pub mod receiver;
pub mod totp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use cairn_blob::test_support::{ENCRYPTION_HEADER_LEN, S3_MIN_PART_SIZE, S3TestServer, object_key};
use cairn_blob::{BlobOptions, BlobStore};
use cairn_client::Client;
use cairn_server::{AppState, Settings, build_router};
use sqlx::ConnectOptions;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's data dir.
    Sqlite,
    /// A fresh database on `CAIRN_TEST_DATABASE_URL`.
    Postgres,
}

/// Where a test server keeps model files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlobBackend {
    /// The directory `blobs` in the data dir.
    #[default]
    Local,
    /// A bucket of an S3-compatible server (`s3s-fs`) embedded in the test process.
    S3,
}

/// How a test server stores model files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Storage {
    /// Local directory or S3.
    pub blobs: BlobBackend,
    /// Encrypt at rest, with a fresh random key in a key file in the data dir.
    pub encrypted: bool,
}

impl Storage {
    /// A local directory, unencrypted: what [`TestServer::start`] uses.
    pub const LOCAL: Self = Self { blobs: BlobBackend::Local, encrypted: false };

    /// The smallest part size this storage accepts: 64 KiB (the encryption segment) locally,
    /// 5 MiB on S3.
    pub fn min_part_size(self) -> u64 {
        match self.blobs {
            BlobBackend::Local => 64 * 1024,
            BlobBackend::S3 => S3_MIN_PART_SIZE,
        }
    }
}

/// Whether every test must run (CI): then a missing service is a failure, not a skip.
pub fn require_all() -> bool {
    std::env::var("CAIRN_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1")
}

/// The test PostgreSQL URL, or `None` after printing why the test is skipped.
pub fn postgres_base_url(test: &str) -> Option<String> {
    match std::env::var("CAIRN_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(!require_all(), "{test}: CAIRN_TEST_DATABASE_URL is not set but CAIRN_REQUIRE_ALL_TESTS=1");
            eprintln!("SKIPPED {test}: set CAIRN_TEST_DATABASE_URL to run it on PostgreSQL");
            None
        }
    }
}

/// The prefix of every database the tests create.
const TEST_DB_PREFIX: &str = "cairn_test_";

/// Test databases older than this are dropped by the next test process that creates one
/// (unless something is still connected to them). A run of the whole suite leaves a few
/// hundred (most store tests do not drop theirs), several GB: an hour keeps them for a look
/// after a failure, and the next run clears them.
const TEST_DB_MAX_AGE_SECS: u64 = 3600;

/// When a test database was created, from its name (`cairn_test_<unix secs>_<random>`);
/// `None` for a name in an older format, which carried no time.
fn test_database_created(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(TEST_DB_PREFIX)?;
    let (secs, random) = rest.split_once('_')?;
    (!random.is_empty()).then_some(())?;
    secs.parse().ok()
}

/// Whether the sweep may drop `name`: a test database that is old, or whose name does not
/// say when it was made (left by an older version of these helpers).
fn test_database_is_stale(name: &str, now: u64) -> bool {
    name.starts_with(TEST_DB_PREFIX)
        && test_database_created(name).is_none_or(|t| now.saturating_sub(t) > TEST_DB_MAX_AGE_SECS)
}

/// A name the tests made, safe to splice into `DROP DATABASE`.
fn is_test_database_name(name: &str) -> bool {
    name.starts_with(TEST_DB_PREFIX) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Drops, once per process, the test databases that earlier runs left behind (a test that
/// panics, or never stops its server, leaves its database). A database still in use is
/// refused by PostgreSQL and kept; errors are ignored.
async fn sweep_stale_test_databases(conn: &mut sqlx::PgConnection) {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let names: Vec<(String,)> = sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'cairn\\_test\\_%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    let now = unix_now();
    for (name,) in names.into_iter().filter(|(n,)| is_test_database_name(n) && test_database_is_stale(n, now)) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&mut *conn).await;
    }
}

/// Drops the test database at `url` (one [`fresh_postgres_database`] made), closing any
/// connection still open to it. Errors are ignored: the next sweep retries.
pub async fn drop_test_database(url: &str) {
    let Ok(opts) = sqlx::postgres::PgConnectOptions::from_str(url) else { return };
    let Some(name) = opts.get_database().map(str::to_owned) else { return };
    if !is_test_database_name(&name) {
        return;
    }
    // Connected to the server's base database, never to the one being dropped.
    let base =
        std::env::var("CAIRN_TEST_DATABASE_URL").ok().and_then(|b| sqlx::postgres::PgConnectOptions::from_str(&b).ok());
    let Some(base) = base.filter(|b| b.get_database() != Some(name.as_str())) else { return };
    let Ok(mut conn) = base.connect().await else { return };
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await;
}

/// Creates an empty database on the test server and returns its URL.
pub async fn fresh_postgres_database(base: &str) -> String {
    fresh_postgres_database_with(base, "").await
}

/// [`fresh_postgres_database`] whose text collation is ICU's `en-US` instead of the server's
/// default: strings sort as people read them, punctuation apart from bytes (`+` and `~` come
/// between `/` and `0`), as on many production servers.
pub async fn fresh_postgres_database_icu(base: &str) -> String {
    fresh_postgres_database_with(base, " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'").await
}

async fn fresh_postgres_database_with(base: &str, options: &'static str) -> String {
    let opts = sqlx::postgres::PgConnectOptions::from_str(base).expect("CAIRN_TEST_DATABASE_URL is a valid URL");
    let mut conn = opts.connect().await.expect("connect to the test PostgreSQL");
    sweep_stale_test_databases(&mut conn).await;
    let mut suffix = [0u8; 8];
    rand::fill(&mut suffix);
    let name = format!("{TEST_DB_PREFIX}{}_{}", unix_now(), hex::encode(suffix));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}{options}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    // The same URL with the new database name.
    let (head, tail) = match base.split_once('?') {
        Some((h, t)) => (h.to_owned(), format!("?{t}")),
        None => (base.to_owned(), String::new()),
    };
    let prefix = match head.rfind('/') {
        Some(i) if i > head.find("://").map_or(0, |s| s + 2) => head[..i].to_owned(),
        _ => head,
    };
    format!("{prefix}/{name}{tail}")
}

/// The database URL for a test on `backend`, or `None` when the test must be skipped.
pub async fn database_url(backend: Backend, dir: &std::path::Path, test: &str) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!("sqlite://{}", dir.join("cairn.db").display())),
        Backend::Postgres => {
            let base = postgres_base_url(test)?;
            Some(fresh_postgres_database(&base).await)
        }
    }
}

/// A random admin token of the right shape.
pub fn random_token() -> String {
    let mut b = [0u8; 24];
    rand::fill(&mut b);
    format!("cairn_test_{}", hex::encode(b))
}

/// A running server for one test.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// An admin API key.
    pub token: String,
    /// The database URL it runs on.
    pub database_url: String,
    /// The data dir (deleted when the server is dropped).
    pub data_dir: TempDir,
    /// The server's state (to reach the store directly).
    pub state: AppState,
    /// How model files are stored.
    pub storage: Storage,
    /// The S3 server holding the model files, when [`Storage::blobs`] is S3.
    pub s3: Option<S3TestServer>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `backend`, or returns `None` (after a SKIPPED line) when the
    /// backend is not available.
    pub async fn start(backend: Backend, test: &str) -> Option<Self> {
        Self::start_with(backend, test, |_| {}).await
    }

    /// Like [`TestServer::start`], with a chance to change the settings first.
    pub async fn start_with(backend: Backend, test: &str, tweak: impl FnOnce(&mut Settings)) -> Option<Self> {
        Self::start_with_storage(backend, Storage::LOCAL, test, tweak).await
    }

    /// Like [`TestServer::start_with`], keeping model files as `storage` says. `tweak` sees the
    /// settings with `blob_url` and `encryption_key_file` already set for `storage`.
    pub async fn start_with_storage(
        backend: Backend,
        storage: Storage,
        test: &str,
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<Self> {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let database_url = database_url(backend, data_dir.path(), test).await?;
        let token = random_token();
        let mut settings = Settings {
            data_dir: data_dir.path().to_path_buf(),
            database_url: Some(database_url.clone()),
            bootstrap_admin_token: Some(token.clone()),
            bootstrap_admin_password: Some("test-admin-password".into()),
            db_max_connections: 8,
            ..Settings::default()
        };
        let s3 = match storage.blobs {
            BlobBackend::Local => None,
            BlobBackend::S3 => Some(S3TestServer::start().await.expect("start the embedded S3 server")),
        };
        if let Some(s3) = &s3 {
            settings.blob_url = Some(s3.url("blobs"));
        }
        if storage.encrypted {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            let path = data_dir.path().join("encryption.key");
            std::fs::write(&path, format!("{}\n", hex::encode(key))).expect("write the key file");
            settings.encryption_key_file = Some(path);
        }
        tweak(&mut settings);
        let store = cairn_server::serve::open_store(&settings).await.expect("open store");
        // The blob settings the server would read, with S3 reached explicitly instead of
        // through the process environment, which parallel tests share.
        let options = BlobOptions {
            part_size: Some(settings.upload_part_size),
            s3: s3.as_ref().map(S3TestServer::options).unwrap_or_default(),
        };
        let blobs = BlobStore::open_with(&cairn_server::app::blob_config(&settings), &options)
            .await
            .expect("open the blob store");
        let state = AppState::with_blobs(store, settings, blobs).await.expect("app state");
        let (url, tx, task) = serve(state.clone()).await;
        Some(Self { url, token, database_url, data_dir, state, storage, s3, shutdown: Some(tx), task: Some(task) })
    }

    /// Starts a second server on this one's database, blob store and signing key, as another
    /// replica behind a load balancer runs: nothing is shared but what is in the database
    /// and the blob store. `tweak` may change its settings first.
    pub async fn replica(&self, tweak: impl FnOnce(&mut Settings)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = (*self.state.settings).clone();
        settings.data_dir = data_dir.path().to_path_buf();
        settings.signing_key_file = Some(self.state.settings.signing_key_path());
        tweak(&mut settings);
        let store = cairn_server::serve::open_store(&settings).await.expect("open store");
        let options = BlobOptions {
            part_size: Some(self.state.blobs.part_size()),
            s3: self.s3.as_ref().map(S3TestServer::options).unwrap_or_default(),
        };
        let mut config = cairn_server::app::blob_config(&settings);
        // Local files live under the first server's data dir; both use that directory.
        config.data_dir = self.data_dir.path().to_path_buf();
        let blobs = BlobStore::open_with(&config, &options).await.expect("open the blob store");
        let state = AppState::with_blobs(store, settings, blobs).await.expect("app state");
        let (url, tx, task) = serve(state.clone()).await;
        Self {
            url,
            token: self.token.clone(),
            database_url: self.database_url.clone(),
            data_dir,
            state,
            storage: self.storage,
            s3: None,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Calls the API with the admin key: the status and the answer as JSON (a string when
    /// the answer is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call_as(Some(&self.token), method, path, body).await
    }

    /// Like [`TestServer::call`], with another API key (or none).
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut req = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send the request");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("read the answer");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    /// Creates a service account with these grants (role, and namespace or `None` for a global
    /// grant) and returns a read/write API key of it that expires in a day.
    pub async fn service_account(&self, name: &str, grants: &[(&str, Option<&str>)]) -> String {
        use reqwest::{Method, StatusCode};
        let (st, v) = self
            .call(Method::POST, "/api/v1/users", Some(serde_json::json!({"username": name, "kind": "service"})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        for (role, ns) in grants {
            let mut g = serde_json::json!({"username": name, "role": role});
            if let Some(ns) = ns {
                g["namespace"] = serde_json::json!(ns);
            }
            let (st, v) = self.call(Method::POST, "/api/v1/grants", Some(g)).await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
        }
        let key = serde_json::json!({"name": "t", "scopes": ["read", "write"], "expires_in_days": 1, "username": name});
        let (st, key) = self.call(Method::POST, "/api/v1/keys", Some(key)).await;
        assert_eq!(st, StatusCode::CREATED, "{key}");
        key["token"].as_str().expect("the new key").to_owned()
    }

    /// Declares `files` (path, bytes) as a new version of `model` (created when missing) and
    /// sends every part the server asks for, with the admin key; returns the upload id,
    /// uncommitted.
    pub async fn upload(&self, model: &str, files: &[(&str, &[u8])]) -> String {
        use reqwest::{Method, StatusCode};
        use sha2::Digest as _;
        let sha = |d: &[u8]| hex::encode(sha2::Sha256::digest(d));
        let (st, _) = self.call(Method::POST, "/api/v1/models", Some(serde_json::json!({"name": model}))).await;
        assert!(st == StatusCode::CREATED || st == StatusCode::CONFLICT, "create {model}: {st}");
        let declared: Vec<serde_json::Value> =
            files.iter().map(|(p, d)| serde_json::json!({"path": p, "size": d.len(), "sha256": sha(d)})).collect();
        let (st, status) = self
            .call(
                Method::POST,
                &format!("/api/v1/models/{model}/uploads"),
                Some(serde_json::json!({"files": declared})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{status}");
        let id = status["upload_id"].as_str().expect("an upload id").to_owned();
        let part = usize::try_from(self.state.blobs.part_size()).expect("a part size that fits in memory");
        for blob in status["blobs"].as_array().expect("the upload's blobs") {
            if blob["present"].as_bool() == Some(true) {
                continue;
            }
            let digest = blob["sha256"].as_str().expect("a digest");
            let data = files.iter().find(|(_, d)| sha(d) == digest).expect("a declared file").1;
            for n in 0..blob["parts"].as_u64().expect("a part count") as usize {
                let chunk = data[(n * part).min(data.len())..((n + 1) * part).min(data.len())].to_vec();
                let resp = reqwest::Client::new()
                    .put(format!("{}/api/v1/uploads/{id}/blobs/{digest}/parts/{n}", self.url))
                    .bearer_auth(&self.token)
                    .body(chunk)
                    .send()
                    .await
                    .expect("send a part");
                assert_eq!(resp.status(), StatusCode::OK, "part {n} of {digest}");
            }
        }
        id
    }

    /// Pushes `files` as the next version of `model` and returns the version as JSON.
    pub async fn push(&self, model: &str, files: &[(&str, &[u8])]) -> serde_json::Value {
        let id = self.upload(model, files).await;
        let (st, v) = self
            .call(reqwest::Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(serde_json::json!({})))
            .await;
        assert_eq!(st, reqwest::StatusCode::CREATED, "{v}");
        v
    }

    /// A client with the admin key.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.token.clone())).expect("client")
    }

    /// A client with another key (or none).
    pub fn client_with(&self, token: Option<&str>) -> Client {
        Client::new(&self.url, token.map(str::to_owned)).expect("client")
    }

    /// The file that holds the stored object of the blob with this SHA-256 (hex), in the
    /// local blob directory or in the embedded S3 server's directory.
    pub fn stored_blob_path(&self, sha256: &str) -> PathBuf {
        let digest = sha256.parse().expect("a SHA-256 in hex");
        match &self.s3 {
            None => self.data_dir.path().join("blobs").join(object_key(&digest)),
            Some(s3) => s3.object_path(&format!("blobs/{}", object_key(&digest))),
        }
    }

    /// Bytes at the start of every stored object before the blob's content (encrypted or not):
    /// the encryption header, or nothing.
    pub fn stored_blob_header_len(&self) -> usize {
        if self.storage.encrypted { ENCRYPTION_HEADER_LEN as usize } else { 0 }
    }

    /// Stops the server, waiting for in-flight requests.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.state.store.close().await;
        if self.database_url.starts_with("postgres") {
            drop_test_database(&self.database_url).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `state` on a fresh loopback port until the sender is used or dropped.
async fn serve(state: AppState) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let app = build_router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // As `cairn serve` does (serve.rs): no Nagle delay on responses written in pieces.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    (format!("http://{addr}"), tx, task)
}

/// A request path for an API route template: `{namespace}` becomes `namespace`, the other
/// parameters of model routes name model `m`, version 1, alias `prod`, tag `k`, file
/// `dir/file.bin`, upload `0190`, part 0 of blob `aaaa…`; any other parameter (ids, user
/// names) becomes `x1`, which names nothing.
pub fn concrete_path(template: &str, namespace: &str) -> String {
    let path = template
        .replace("{namespace}", namespace)
        .replace("{name}", "m")
        .replace("{version}", "1")
        .replace("{alias}", "prod")
        .replace("{key}", "k")
        .replace("{path}", "dir/file.bin")
        .replace("{upload_id}", "0190")
        .replace("{sha256}", &"a".repeat(64))
        .replace("{part}", "0");
    let mut out = String::new();
    let mut rest = path.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push_str("x1");
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// Runs each named `async fn(&TestServer)` of the calling test file as two tests,
/// `sqlite::NAME` and `postgres::NAME`, each on a fresh [`TestServer`] that is stopped
/// afterwards (the PostgreSQL one skips, saying so, when no database is configured).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $crate::both_backends_with!($crate::TestServer::start: $($name),*);
    };
}

/// Like [`both_backends!`], with the server started by `start` (an
/// `async fn(Backend, &str) -> Option<TestServer>` in scope of the calling module's parent,
/// e.g. one that changes settings).
#[macro_export]
macro_rules! both_backends_with {
    ($start:path: $($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                #[allow(unused_imports)]
                use super::*;
                if let Some(s) = $start($crate::Backend::Sqlite, stringify!($name)).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                #[allow(unused_imports)]
                use super::*;
                if let Some(s) = $start($crate::Backend::Postgres, stringify!($name)).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
        )* }
    };
}

/// A fresh store for a storage test: a temporary SQLite file or a fresh PostgreSQL
/// database (`None`, after saying so, when PostgreSQL is not configured). Keep the returned
/// directory alive as long as the store.
pub async fn open_store(backend: Backend, test: &str) -> Option<(cairn_store::Store, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = database_url(backend, dir.path(), test).await?;
    let store = reopen_store(&url).await;
    Some((store, url, dir))
}

/// Another store on the database at `url`, with the options of [`open_store`]: a replica
/// beside the first, or the same database opened again (after an upgrade, say).
pub async fn reopen_store(url: &str) -> cairn_store::Store {
    let opts = cairn_store::DbOptions { busy_timeout: std::time::Duration::from_secs(30), ..Default::default() };
    cairn_store::Store::open(url, &opts).await.expect("open the store")
}

/// Runs each named `async fn(Store, String)` (the store and its database URL, to open
/// replicas) of the calling test file as `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some((store, url, _dir)) = $crate::open_store($crate::Backend::Sqlite, concat!("sqlite::", stringify!($name))).await {
                    super::$name(store, url).await;
                }
            }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some((store, url, _dir)) = $crate::open_store($crate::Backend::Postgres, concat!("postgres::", stringify!($name))).await {
                    let database = url.clone();
                    super::$name(store, url).await;
                    $crate::drop_test_database(&database).await;
                }
            }
        )* }
    };
}

/// Runs `f` on a fresh server whose webhooks may reach this machine (the tests' receivers
/// listen on 127.0.0.1) and are polled every 20 ms, with settings `tweak` changes on top and
/// the webhook delivery worker running; stops both afterwards.
pub async fn run_delivering(
    backend: Backend,
    test: &str,
    tweak: impl FnOnce(&mut Settings),
    f: impl AsyncFnOnce(&TestServer),
) {
    let Some(s) = TestServer::start_with(backend, test, |st| {
        st.webhook_allow_private_networks = true;
        st.webhook_poll_ms = 20;
        tweak(st);
    })
    .await
    else {
        return;
    };
    let config = cairn_server::webhooks::WorkerConfig::from_settings(&s.state.settings);
    let worker = cairn_server::webhooks::Worker::spawn(s.state.store.clone(), config);
    f(&s).await;
    worker.stop().await;
    s.stop().await;
}

/// Like [`both_backends!`], with webhook deliveries running ([`run_delivering`]):
/// `sqlite_delivery::NAME` and `postgres_delivery::NAME`. `tweak = f;` names a
/// `fn(&mut Settings)` of the calling file that adjusts the settings further.
#[macro_export]
macro_rules! both_backends_delivering {
    (tweak = $tweak:ident; $($name:ident),* $(,)?) => {
        mod sqlite_delivery { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::run_delivering($crate::Backend::Sqlite, stringify!($name), super::$tweak, super::$name).await
            }
        )* }
        mod postgres_delivery { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::run_delivering($crate::Backend::Postgres, stringify!($name), super::$tweak, super::$name).await
            }
        )* }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite_delivery { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::run_delivering($crate::Backend::Sqlite, stringify!($name), |_| {}, super::$name).await
            }
        )* }
        mod postgres_delivery { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::run_delivering($crate::Backend::Postgres, stringify!($name), |_| {}, super::$name).await
            }
        )* }
    };
}

/// A clock the test moves by hand (milliseconds since the Unix epoch).
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: i64) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::atomic::AtomicI64::new(ms)))
    }

    /// Sets it to `ms`.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves it on by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl cairn_store::Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Runs one statement behind the store's back, as someone with write access to the database
/// would (tampering tests). On PostgreSQL it runs on a pooled connection in autocommit, not
/// through the store's transactions, which would seal rows left with a NULL `seq`.
pub async fn raw_sql(store: &cairn_store::Store, statement: &str, params: Vec<cairn_store::Param>) -> u64 {
    let statement = sqlx::AssertSqlSafe(statement.to_owned());
    match store.backend() {
        cairn_store::Backend::Postgres => {
            store.db().read().await.unwrap().conn().execute(statement, params).await.unwrap()
        }
        cairn_store::Backend::Sqlite => {
            let mut tx = store.db().begin().await.unwrap();
            let n = tx.conn().execute(statement, params).await.unwrap();
            tx.commit().await.unwrap();
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_test_databases_are_old_or_undated_and_only_ours() {
        let now = 1_800_000_000;
        assert!(!test_database_is_stale(&format!("cairn_test_{now}_0011aabb"), now));
        assert!(!test_database_is_stale(&format!("cairn_test_{}_0011aabb", now - 3600), now));
        assert!(test_database_is_stale(&format!("cairn_test_{}_0011aabb", now - 2 * 3600), now));
        assert!(test_database_is_stale("cairn_test_0011aabbccddeeff", now), "the older format says no time");
        assert!(!test_database_is_stale("cairn", now));
        assert!(!test_database_is_stale("cairn_prod", now));
        assert_eq!(test_database_created("cairn_test_1700000000_ab"), Some(1_700_000_000));
        assert_eq!(test_database_created("cairn_test_1700000000_"), None);
    }
}
