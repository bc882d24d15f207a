//! `cairn_server::maintenance` against a real server, on SQLite and PostgreSQL: fsck finds
//! damaged, missing and orphan blobs; gc removes only what nothing references and nobody
//! used within the grace period; rotate-key re-encrypts under the new key.
//!
//! Ageing is simulated, never waited for: `last_used_at` is moved back in the database and
//! the modification time of orphan files is moved back on disk, so gc runs with its real
//! grace period (twice the upload lifetime).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cairn_server::maintenance::{self, GcOptions, MaintenanceError, ProblemKind};
use cairn_store::audit::AuditQuery;
use cairn_test_utils::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const PART: usize = 64 * 1024;
const DAY_MS: i64 = 86_400_000;
const KEY_1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

async fn start(backend: Backend, test: &str) -> Option<TestServer> {
    TestServer::start_with(backend, test, |s| s.upload_part_size = PART as u64).await
}

/// A server whose blobs are encrypted with [`KEY_1`] (the key file is in the data dir).
async fn start_encrypted(backend: Backend, test: &str) -> Option<TestServer> {
    TestServer::start_with(backend, test, |s| {
        let keys = s.data_dir.join("keys.txt");
        std::fs::write(&keys, format!("{KEY_1}\n")).unwrap();
        s.encryption_key_file = Some(keys);
        s.upload_part_size = PART as u64;
    })
    .await
}

macro_rules! both {
    ($start:ident: $($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(s) = super::$start(cairn_test_utils::Backend::Sqlite, stringify!($name)).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(s) = super::$start(cairn_test_utils::Backend::Postgres, stringify!($name)).await {
                    super::$name(&s).await;
                    s.stop().await;
                }
            }
        )* }
    };
}

mod plain {
    use super::*;
    both!(start: fsck_of_a_clean_store_is_ok, fsck_names_damaged_missing_and_orphan_blobs, gc_removes_only_what_nothing_uses);
}

mod encrypted {
    use super::*;
    both!(start_encrypted: rotate_key_re_encrypts_every_blob);
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic bytes that differ per seed.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(u32::from(seed) % 31) as u8 ^ seed).collect()
}

async fn call(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url)).bearer_auth(&s.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
}

async fn download(s: &TestServer, path: &str) -> Vec<u8> {
    let resp = reqwest::Client::new().get(format!("{}{path}", s.url)).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.bytes().await.unwrap().to_vec()
}

fn blob_path(s: &TestServer, digest: &str) -> PathBuf {
    s.data_dir.path().join("blobs").join("sha256").join(&digest[..2]).join(digest)
}

/// Stores `data` in the blob store without telling the database: an orphan.
async fn put_orphan(s: &TestServer, data: &[u8]) -> String {
    let digest = sha(data);
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(data))]);
    s.state.blobs.put(&digest.parse().unwrap(), data.len() as u64, body).await.unwrap();
    digest
}

/// Moves a blob's `last_used_at` back by `days`.
async fn age_in_database(s: &TestServer, digest: &str, days: i64) {
    let then = s.state.store.now() - days * DAY_MS;
    let mut tx = s.state.store.db().begin().await.unwrap();
    let n = tx
        .conn()
        .execute("UPDATE blobs SET last_used_at = $1 WHERE digest = $2", cairn_store::params![then, digest])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(n, 1, "blob {digest} is not in the database");
}

/// Moves a stored object's modification time back by `days`.
fn age_on_disk(s: &TestServer, digest: &str, days: u64) {
    let f = std::fs::File::options().write(true).open(blob_path(s, digest)).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400)).unwrap();
}

fn no_progress(_: maintenance::Progress) {}

fn gc_options(s: &TestServer) -> GcOptions {
    GcOptions::new(Duration::from_secs(s.state.settings.upload_expiry_secs))
}

async fn fsck_of_a_clean_store_is_ok(s: &TestServer) {
    let big = bytes(PART * 2 + 5, 1);
    s.push("team/m", &[("w.bin", &big), ("config.json", b"{}")]).await;
    s.push("team/m", &[("w.bin", &big)]).await;
    let report = maintenance::fsck(&s.state.store, &s.state.blobs, &no_progress).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.checked, report.listed, report.orphans), (2, 2, 0), "{report:?}");
    assert_eq!(report.checked_bytes, big.len() as u64 + 2);
    assert!(report.problems.is_empty());
}

async fn fsck_names_damaged_missing_and_orphan_blobs(s: &TestServer) {
    let damaged = bytes(PART * 2 + 77, 2);
    let lost = bytes(300, 3);
    let fine = bytes(500, 4);
    s.push("team/m", &[("w.bin", &damaged), ("fine.bin", &fine)]).await;
    s.push("team/other", &[("data/lost.bin", &lost)]).await;
    let orphan = put_orphan(s, b"nobody knows me").await;

    let path = blob_path(s, &sha(&damaged));
    let mut raw = std::fs::read(&path).unwrap();
    raw[PART + 3] ^= 0x40;
    std::fs::write(&path, &raw).unwrap();
    std::fs::remove_file(blob_path(s, &sha(&lost))).unwrap();

    let seen = std::sync::atomic::AtomicU64::new(0);
    let on_progress = |_: maintenance::Progress| {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let report = maintenance::fsck(&s.state.store, &s.state.blobs, &on_progress).await.unwrap();
    assert!(!report.is_ok());
    assert_eq!((report.checked, report.corrupt, report.missing, report.orphans), (3, 1, 1, 1), "{report:?}");
    assert!(seen.load(std::sync::atomic::Ordering::Relaxed) >= 3);
    let find = |kind| report.problems.iter().find(|p| p.kind == kind).unwrap();
    let corrupt = find(ProblemKind::Corrupt);
    assert_eq!(corrupt.digest, sha(&damaged));
    assert_eq!(corrupt.used_by, ["team/m:1 w.bin"]);
    assert!(!corrupt.reason.is_empty());
    let missing = find(ProblemKind::Missing);
    assert_eq!(missing.digest, sha(&lost));
    assert_eq!(missing.used_by, ["team/other:1 data/lost.bin"]);
    assert_eq!(find(ProblemKind::Orphan).digest, orphan);
    // The report is what `cairn admin fsck --json` prints.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["problems"].as_array().unwrap().len(), 3, "{json}");
}

async fn gc_removes_only_what_nothing_uses(s: &TestServer) {
    let kept = bytes(PART + 9, 5); // referenced by version 1
    let gone = bytes(PART * 2 + 1, 6); // its version deleted, unused for 3 days
    let recent = bytes(700, 7); // its version deleted, but used a moment ago
    let held = bytes(800, 8); // only an open upload references it
    let stuck = bytes(900, 9); // claimed by a gc run that died before deleting it
    s.push("team/m", &[("kept.bin", &kept)]).await;
    s.push("team/m", &[("gone.bin", &gone)]).await;
    s.push("team/m", &[("recent.bin", &recent)]).await;
    s.push("team/m", &[("stuck.bin", &stuck)]).await;
    let open = s.upload("team/m", &[("held.bin", &held)]).await;
    for v in [2, 3, 4] {
        let (st, _) = call(s, Method::DELETE, &format!("/api/v1/models/team/m/versions/{v}"), None).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    }
    for d in [&kept, &gone, &stuck] {
        age_in_database(s, &sha(d), 3).await;
    }
    {
        let mut tx = s.state.store.db().begin().await.unwrap();
        tx.conn()
            .execute("UPDATE blobs SET state = 'deleting' WHERE digest = $1", cairn_store::params![sha(&stuck)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let old_orphan = put_orphan(s, b"left behind long ago").await;
    age_on_disk(s, &old_orphan, 3);
    let new_orphan = put_orphan(s, b"published a moment ago").await;

    // The grace period may not undercut the upload lifetime.
    let mut short = gc_options(s);
    short.grace = short.upload_lifetime - Duration::from_secs(1);
    let err = maintenance::gc(&s.state.store, &s.state.blobs, &maintenance::admin_context(), &short, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(err, MaintenanceError::GraceTooShort { .. }), "{err}");

    let ctx = maintenance::admin_context();
    let mut dry = gc_options(s);
    dry.dry_run = true;
    let report = maintenance::gc(&s.state.store, &s.state.blobs, &ctx, &dry, &no_progress).await.unwrap();
    assert_eq!((report.blobs_deleted, report.resumed, report.orphans_deleted), (2, 1, 1), "{report:?}");
    assert!(blob_path(s, &sha(&gone)).exists() && blob_path(s, &old_orphan).exists());

    // An upload is never open for longer than the grace period, so the blobs it relies on
    // were used within it; age this one anyway, to see that the reference alone protects it.
    // (The dry run above cannot see upload references and relies on that age, so it comes first.)
    age_in_database(s, &sha(&held), 3).await;

    let report = maintenance::gc(&s.state.store, &s.state.blobs, &ctx, &gc_options(s), &no_progress).await.unwrap();
    assert_eq!(
        (report.blobs_deleted, report.resumed, report.orphans_deleted, report.failed),
        (2, 1, 1, 0),
        "{report:?}"
    );
    assert_eq!(report.blob_bytes, (gone.len() + stuck.len()) as u64);
    assert_eq!(report.orphan_bytes, b"left behind long ago".len() as u64);
    for d in [sha(&gone), sha(&stuck), old_orphan] {
        assert!(!blob_path(s, &d).exists(), "{d} should be gone");
        assert!(s.state.store.blob(&d).await.unwrap().is_none());
    }
    for d in [sha(&kept), sha(&recent), sha(&held), new_orphan] {
        assert!(blob_path(s, &d).exists(), "{d} should be kept");
    }
    assert_eq!(download(s, "/api/v1/models/team/m/versions/1/files/kept.bin").await, kept);
    // The open upload still commits.
    let (st, v) = call(s, Method::POST, &format!("/api/v1/uploads/{open}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(download(s, "/api/v1/models/team/m/versions/5/files/held.bin").await, held);

    let events = |action: &str| AuditQuery { action: Some(action.into()), limit: 100, ..AuditQuery::default() };
    let deleted = s.state.store.list_audit_events(&events("blob.gc")).await.unwrap().items;
    assert_eq!(deleted.len(), 2);
    assert!(deleted.iter().all(|e| e.actor == maintenance::ADMIN_ACTOR));
    assert_eq!(s.state.store.list_audit_events(&events("blob.gc_orphan")).await.unwrap().items.len(), 1);
    assert_eq!(s.state.store.list_audit_events(&events("maintenance.gc")).await.unwrap().items.len(), 1);

    // Nothing left to do, and what is left is sound.
    let again = maintenance::gc(&s.state.store, &s.state.blobs, &ctx, &gc_options(s), &no_progress).await.unwrap();
    assert_eq!((again.blobs_deleted, again.orphans_deleted), (0, 0), "{again:?}");
    let fsck = maintenance::fsck(&s.state.store, &s.state.blobs, &no_progress).await.unwrap();
    assert!(fsck.is_ok() && fsck.orphans == 1, "{fsck:?}");
}

async fn rotate_key_re_encrypts_every_blob(s: &TestServer) {
    let big = bytes(PART * 3 + 11, 10);
    let small = bytes(40, 11);
    s.push("team/m", &[("w.bin", &big), ("s.bin", &small)]).await;
    let old_id = s.state.blobs.stat(&sha(&big).parse().unwrap()).await.unwrap().unwrap().key_id.unwrap();

    // A new key on the first line, the old one below it; the store is reopened to read it.
    let key_file = s.state.settings.encryption_key_file.clone().unwrap();
    std::fs::write(&key_file, format!("# rotated\n{KEY_2}\n{KEY_1}\n")).unwrap();
    let blobs = cairn_server::app::open_blobs(&s.state.settings).await.unwrap();
    let ctx = maintenance::admin_context();
    let report = maintenance::rotate_keys(&s.state.store, &blobs, &ctx, &no_progress).await.unwrap();
    assert_eq!((report.rotated, report.current, report.failed, report.missing), (2, 0, 0, 0), "{report:?}");
    let new_id = report.key_id.clone().unwrap();
    assert_ne!(new_id, old_id);
    for data in [&big, &small] {
        let digest = sha(data).parse().unwrap();
        assert_eq!(blobs.stat(&digest).await.unwrap().unwrap().key_id.as_deref(), Some(new_id.as_str()));
        let reader = blobs.get(&digest, None).await.unwrap();
        let read: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(reader.stream).await.unwrap();
        assert_eq!(read.concat(), *data);
    }

    // Once every blob is under the new key, the old one can go: reads still work.
    std::fs::write(&key_file, format!("{KEY_2}\n")).unwrap();
    let blobs = cairn_server::app::open_blobs(&s.state.settings).await.unwrap();
    let fsck = maintenance::fsck(&s.state.store, &blobs, &no_progress).await.unwrap();
    assert!(fsck.is_ok() && fsck.checked == 2, "{fsck:?}");
    let again = maintenance::rotate_keys(&s.state.store, &blobs, &ctx, &no_progress).await.unwrap();
    assert_eq!((again.rotated, again.current), (0, 2), "{again:?}");

    let q = AuditQuery { action: Some("maintenance.rotate_key".into()), limit: 10, ..AuditQuery::default() };
    let runs = s.state.store.list_audit_events(&q).await.unwrap().items;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].target, format!("key:{new_id}"));
}
