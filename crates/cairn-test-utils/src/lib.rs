//! Test helpers (not published): start the real server on `127.0.0.1:0` with a temporary
//! data dir, on SQLite or on a fresh database of the test PostgreSQL.
//!
//! PostgreSQL tests run when `CAIRN_TEST_DATABASE_URL` is set (a role that may create
//! databases). When it is not set they print a SKIPPED line and pass — unless
//! `CAIRN_REQUIRE_ALL_TESTS=1` (CI), where a missing service fails the test.

use std::net::SocketAddr;
use std::str::FromStr;

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

/// Creates an empty database on the test server and returns its URL.
pub async fn fresh_postgres_database(base: &str) -> String {
    let opts = sqlx::postgres::PgConnectOptions::from_str(base).expect("CAIRN_TEST_DATABASE_URL is a valid URL");
    let mut conn = opts.connect().await.expect("connect to the test PostgreSQL");
    let mut suffix = [0u8; 8];
    rand::fill(&mut suffix);
    let name = format!("cairn_test_{}", hex::encode(suffix));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
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
        tweak(&mut settings);
        let store = cairn_server::serve::open_store(&settings).await.expect("open store");
        let state = AppState::new(store, settings).await.expect("app state");
        let app = build_router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Some(Self {
            url: format!("http://{addr}"),
            token,
            database_url,
            data_dir,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// A client with the admin key.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.token.clone())).expect("client")
    }

    /// A client with another key (or none).
    pub fn client_with(&self, token: Option<&str>) -> Client {
        Client::new(&self.url, token.map(str::to_owned)).expect("client")
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
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
