//! The bundled SQLite is built the way `.cargo/config.toml` says: without global memory
//! statistics, whose process-wide mutex every allocation and free would otherwise take
//! (rows decoded on the async side contend with the worker thread producing the next ones).
//! The build setting lives outside the code, so a test keeps it from being lost quietly.

use sqlx::Connection;

#[tokio::test]
async fn bundled_sqlite_keeps_no_global_memory_statistics() {
    let mut c = sqlx::SqliteConnection::connect("sqlite::memory:").await.unwrap();
    let options: Vec<(String,)> = sqlx::query_as("PRAGMA compile_options").fetch_all(&mut c).await.unwrap();
    let options: Vec<String> = options.into_iter().map(|(o,)| o).collect();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "SQLite was built with memory statistics on; LIBSQLITE3_FLAGS from .cargo/config.toml was not applied: {options:?}"
    );
    // sqlx hands connections between threads: the flag must not have replaced this one.
    assert!(options.iter().any(|o| o == "THREADSAFE=1"), "THREADSAFE=1 missing: {options:?}");
}
