//! What the benchmarks under `bench/` share: an application served on loopback, on a fresh
//! database, set up the same way for every benchmark.

use std::net::SocketAddr;
use std::path::Path;

use cairn_server::{AppState, Settings};

/// Serves `router` on a free loopback port in the background; returns its base URL.
pub async fn serve_on_loopback(router: axum::Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Ok(format!("http://{addr}"))
}

/// The settings of a benchmark's application: its data in `dir`, a fresh database (a new
/// database on the PostgreSQL server `postgres`, or the SQLite file `{name}.db` in `dir`),
/// `token` as the administrator's API key, no rate limits and no periodic checkpoints, so
/// that only the work measured runs.
pub async fn settings(dir: &Path, name: &str, postgres: Option<&str>, token: &str) -> Settings {
    let database = match postgres {
        Some(base) => crate::fresh_postgres_database(base).await,
        None => format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
    };
    Settings {
        data_dir: dir.to_path_buf(),
        database_url: Some(database),
        bootstrap_admin_token: Some(token.to_owned()),
        bootstrap_admin_password: Some("bench-admin-password".into()),
        rate_limit_requests: 0,
        audit_checkpoint_secs: 0,
        ..Settings::default()
    }
}

/// Opens the store of `settings` and serves the whole application on loopback; returns its
/// base URL.
pub async fn start(settings: Settings) -> anyhow::Result<String> {
    let store = cairn_server::serve::open_store(&settings).await?;
    let state = AppState::new(store, settings).await?;
    Ok(serve_on_loopback(cairn_server::build_router(state)).await?)
}
