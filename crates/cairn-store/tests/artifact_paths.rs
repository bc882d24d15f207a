//! The MLflow artifact tree's directories on SQLite, on PostgreSQL, and on a PostgreSQL
//! database whose collation is ICU's `en-US`: a directory holds exactly the paths that begin
//! with it and a `/`, whatever the collation orders between `/` and `0` — listing it, listing
//! it with scan results, and deleting it touch nothing beside it.

use cairn_store::tracking::ArtifactFile;
use cairn_store::{AuditContext, DbOptions, Store, StoreError};
use cairn_test_utils::{Backend, database_url, postgres_base_url};

async fn sqlite(dir: &tempfile::TempDir) -> Store {
    let url = database_url(Backend::Sqlite, dir.path(), "sqlite").await.unwrap();
    Store::open(&url, &DbOptions::default()).await.unwrap()
}

#[tokio::test]
async fn directories_hold_only_their_own_paths_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    directories_hold_only_their_own_paths(sqlite(&dir).await).await;
}

#[tokio::test]
async fn directories_hold_only_their_own_paths_on_postgres() {
    let Some(base) = postgres_base_url("artifact_paths::postgres") else { return };
    let url = cairn_test_utils::fresh_postgres_database(&base).await;
    directories_hold_only_their_own_paths(Store::open(&url, &DbOptions::default()).await.unwrap()).await;
    cairn_test_utils::drop_test_database(&url).await;
}

#[tokio::test]
async fn directories_hold_only_their_own_paths_on_postgres_with_an_icu_collation() {
    let Some(base) = postgres_base_url("artifact_paths::postgres_icu") else { return };
    let url = cairn_test_utils::fresh_postgres_database_icu(&base).await;
    let store = Store::open(&url, &DbOptions::default()).await.unwrap();
    // The database really orders these as people read them, not as bytes: the range the
    // queries use would take in `m+1/…` and `m~/…` without their own byte order.
    let mut c = store.db().read().await.unwrap();
    let (in_range,): (bool,) = c
        .conn()
        .fetch_one("SELECT $1 >= $2 AND $1 < $3", cairn_store::params!["0/r/m+1/x", "0/r/m/", "0/r/m0"])
        .await
        .unwrap();
    drop(c);
    assert!(in_range, "the test database's collation is not the one this test needs");
    directories_hold_only_their_own_paths(store).await;
    cairn_test_utils::drop_test_database(&url).await;
}

async fn directories_hold_only_their_own_paths(store: Store) {
    let ctx = AuditContext { actor: "user:alice".into(), ..AuditContext::default() };
    let digest = "ab".repeat(32);
    store.blob_pending(&digest, 3).await.unwrap();
    store.blob_completed(&digest, cairn_store::artifact::BlobProof::None).await.unwrap();
    let paths = [
        "0/r/m/a.bin",
        "0/r/m/sub/b.bin",
        "0/r/m+1/c.bin",
        "0/r/m~/d.bin",
        "0/r/m-x/e.bin",
        "0/r/m.bak",
        "0/r/m#/f.bin",
        "0/r/M/g.bin",
        "0/r/m0/h.bin",
    ];
    for path in paths {
        let file = ArtifactFile { path: path.into(), digest: digest.clone(), size: 3 };
        store.put_artifact(&ctx, &file).await.unwrap();
    }
    let listed = |files: Vec<ArtifactFile>| files.into_iter().map(|f| f.path).collect::<Vec<_>>();
    let under = listed(store.artifacts_under("0/r/m", 100).await.unwrap());
    assert_eq!(under, ["0/r/m/a.bin", "0/r/m/sub/b.bin"]);
    let with_scans = store.artifacts_under_with_scans("0/r/m", 100, "cairn-scan/1").await.unwrap();
    let with_scans: Vec<String> = with_scans.into_iter().map(|(f, _)| f.path).collect();
    assert_eq!(with_scans, ["0/r/m/a.bin", "0/r/m/sub/b.bin"]);
    // In byte order, capital letters first.
    assert_eq!(
        listed(store.artifacts_under("0/r", 100).await.unwrap()),
        [
            "0/r/M/g.bin",
            "0/r/m#/f.bin",
            "0/r/m+1/c.bin",
            "0/r/m-x/e.bin",
            "0/r/m.bak",
            "0/r/m/a.bin",
            "0/r/m/sub/b.bin",
            "0/r/m0/h.bin",
            "0/r/m~/d.bin"
        ]
    );

    // Deleting the directory deletes its two files and nothing beside it.
    assert_eq!(store.delete_artifacts(&ctx, "0/r/m").await.unwrap(), 2);
    let left = listed(store.artifacts_under("0/r", 100).await.unwrap());
    assert_eq!(left.len(), paths.len() - 2, "{left:?}");
    assert!(left.iter().all(|p| !p.starts_with("0/r/m/")), "{left:?}");
    assert!(matches!(store.delete_artifacts(&ctx, "0/r/m").await, Err(StoreError::NotFound(_))));
    store.close().await;
}
