//! Exports after a pruning, on SQLite and PostgreSQL: the pruning record is always written in
//! full, so an export filtered to pruned events still verifies offline; an export after the
//! start of the chain was removed starts at the new anchor with its checkpoint.

use cairn_audit::SigningKey;
use cairn_audit::retention::{DAY_MS, RetentionPolicy};
use cairn_server::audit_export::{ExportFilter, export};
use cairn_store::{AuditContext, DbOptions, Store};
use cairn_test_utils::{Backend, database_url};
use futures::StreamExt as _;

const T0: i64 = 1_767_225_600_000;

fn ctx(who: &str) -> AuditContext {
    AuditContext { actor: format!("user:{who}"), source_ip: Some("192.0.2.9".into()), ..AuditContext::default() }
}

async fn exported(store: &Store, key: &SigningKey, filter: ExportFilter) -> Vec<u8> {
    let mut stream = std::pin::pin!(export(store.clone(), key, filter).await.unwrap());
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

async fn exports_after_pruning(backend: Backend, test: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = database_url(backend, dir.path(), test).await else { return };
    let clock = cairn_test_utils::ManualClock::at(T0);
    let store = Store::open(&url, &DbOptions::default()).await.unwrap().with_clock(clock.clone());
    let key = SigningKey::generate();
    for who in ["alice", "bob", "carol"] {
        store.record_event(&ctx(who), "auth.login", &format!("user:{who}"), "success").await.unwrap();
    }
    store.record_event(&ctx("alice"), "model.create", "model:team/m", "success").await.unwrap();
    store.checkpoint_audit_chain(&key).await.unwrap();
    clock.set(T0 + 5 * DAY_MS);
    store.record_event(&ctx("dave"), "auth.login", "user:dave", "success").await.unwrap();
    store.record_event(&ctx("dave"), "model.update", "model:team/m", "success").await.unwrap();
    store.checkpoint_audit_chain(&key).await.unwrap();

    // Day 7: the day-0 logins lose their details.
    clock.set(T0 + 7 * DAY_MS);
    let policy = RetentionPolicy::parse(30, "auth.login=2").unwrap();
    let out = store.prune_audit(&ctx("admin"), &policy, false).await.unwrap();
    assert_eq!(out.record.pruned_details[0].events, 3);
    for filter in [
        ExportFilter::default(),
        ExportFilter { action: Some("auth.login".into()), ..ExportFilter::default() },
        ExportFilter { actor: Some("pruned".into()), ..ExportFilter::default() },
    ] {
        let bytes = exported(&store, &key, filter.clone()).await;
        let report = cairn_audit::export::verify_export(&bytes[..], vec![key.public()]).unwrap();
        assert!(report.ok(), "{filter:?}: {report:?}");
        assert_eq!(report.pruned, 3, "{filter:?}");
    }

    // Day 40: everything is past thirty days; it goes up to the checkpoint the exports above
    // signed at the head (the first pruning's own event, 7).
    clock.set(T0 + 40 * DAY_MS);
    let out = store.prune_audit(&ctx("admin"), &policy, false).await.unwrap();
    assert_eq!((out.record.anchor_seq, out.record.removed_events), (7, 7));
    let bytes = exported(&store, &key, ExportFilter::default()).await;
    let report = cairn_audit::export::verify_export(&bytes[..], vec![key.public()]).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.first_seq, Some(8));
    let other = SigningKey::generate();
    let report = cairn_audit::export::verify_export(&bytes[..], vec![other.public()]).unwrap();
    assert!(!report.ok(), "the anchor is vouched for by the registry's key only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_after_pruning_on_sqlite() {
    exports_after_pruning(Backend::Sqlite, "exports_after_pruning_on_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_after_pruning_on_postgres() {
    exports_after_pruning(Backend::Postgres, "exports_after_pruning_on_postgres").await;
}
