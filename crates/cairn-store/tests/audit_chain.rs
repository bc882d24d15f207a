//! The audit hash chain as the store keeps it, on SQLite and PostgreSQL: a busy registry
//! verifies, concurrent writers on two store instances leave one gapless chain, every kind of
//! tampering through raw SQL is found where it happened, legacy rows are sealed on open,
//! versions carry signatures, and checkpoints are one per sequence number.
//!
//! Tampering is done as someone with write access to the database but without the signing
//! key would do it: with plain SQL, and with `cairn_audit` to compute self-consistent digests
//! and hashes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_audit::chain::{EventDetails, parse_hash};
use cairn_audit::statement::{PushStatement, SignatureEnvelope, VERSION_TYPE, VersionStatement};
use cairn_audit::{AuditRecord, BreakKind, Checkpoint, GENESIS, Report, SigningKey};
use cairn_core::{AliasName, ModelRef, TagKey, VersionSelector};
use cairn_store::audit::{AuditEvent, AuditQuery, ChainHead};
use cairn_store::model::{ModelPatch, NewModel};
use cairn_store::version::NewVersion;
use cairn_store::{AuditContext, DbOptions, Store, StoreError, params};
use cairn_test_utils::raw_sql as sql;
use cairn_test_utils::{Backend, database_url};

struct Fixture {
    store: Store,
    url: String,
    _dir: tempfile::TempDir,
}

/// Generous lock waits: two store instances share one SQLite file in some tests, each with
/// its own writer.
fn options() -> DbOptions {
    DbOptions { busy_timeout: std::time::Duration::from_secs(30), ..DbOptions::default() }
}

async fn open(backend: Backend, test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(backend, dir.path(), test).await?;
    let store = Store::open(&url, &options()).await.unwrap();
    Some(Fixture { store, url, _dir: dir })
}

/// Another store on the same database: a second replica.
async fn replica(f: &Fixture) -> Store {
    Store::open(&f.url, &options()).await.unwrap()
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(f) = super::open(cairn_test_utils::Backend::Sqlite, concat!("sqlite::", stringify!($name))).await {
                        super::$name(f).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(f) = super::open(cairn_test_utils::Backend::Postgres, concat!("postgres::", stringify!($name))).await {
                        super::$name(f).await;
                    }
                }
            )*
        }
    };
}

suite!(
    a_busy_registry_verifies,
    concurrent_writers_on_two_replicas_leave_one_gapless_chain,
    an_edited_detail_is_found,
    an_edited_chained_field_is_found,
    a_nulled_hash_or_digest_is_found,
    a_deleted_event_is_found,
    a_forged_event_is_found,
    reordered_events_are_found,
    events_stored_out_of_order_verify,
    a_truncated_end_is_found_up_to_the_last_checkpoint,
    a_rechained_history_contradicts_the_checkpoint,
    checkpoints_forged_with_another_key_are_untrusted,
    a_tampered_checkpoint_signature_is_found,
    legacy_events_are_sealed_on_open,
    legacy_events_sealed_by_concurrent_writers_keep_one_chain,
    verifying_while_replicas_append_and_checkpoint_finds_no_break,
    versions_carry_server_and_user_signatures,
    bad_user_signatures_are_refused_without_a_trace,
    checkpoints_are_one_per_sequence_number,
    events_join_the_chain_with_nobody_reading,
    a_read_right_after_a_write_sees_its_events,
    versions_created_by_two_replicas_in_turn_get_the_next_numbers,
    one_bad_version_among_concurrent_ones_fails_alone,
);

fn ctx(who: &str) -> AuditContext {
    AuditContext {
        actor: format!("user:{who}"),
        request_id: Some(format!("req-{who}")),
        source_ip: Some("192.0.2.7".into()),
        user_agent: Some("cairn-test".into()),
        ..AuditContext::default()
    }
}

fn mref(s: &str) -> ModelRef {
    ModelRef::parse(s).unwrap()
}

fn new_model(s: &str) -> NewModel {
    NewModel { description: format!("about {s}"), ..NewModel::named(mref(s)) }
}

async fn head(store: &Store) -> ChainHead {
    store.audit_head().await.unwrap()
}

async fn records(store: &Store) -> Vec<AuditRecord> {
    store.audit_records(0, None, 100_000).await.unwrap()
}

async fn all_events(store: &Store) -> Vec<AuditEvent> {
    let mut q = AuditQuery { limit: 7, ..AuditQuery::default() };
    let mut out = Vec::new();
    loop {
        let page = store.list_audit_events(&q).await.unwrap();
        out.extend(page.items);
        match page.next {
            Some(next) => q.after = Some(next),
            None => return out,
        }
    }
}

async fn verify(store: &Store, trusted: &[&SigningKey]) -> Report {
    store.verify_audit_chain(trusted.iter().map(|k| k.public()).collect()).await.unwrap()
}

fn first_break(r: &Report) -> Option<(i64, BreakKind)> {
    r.first_break.as_ref().map(|b| (b.seq, b.kind))
}

async fn set_head(store: &Store, seq: i64, hash: &str) {
    sql(store, "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", params![seq, hash]).await;
}

fn seqs(rs: &[AuditRecord]) -> Vec<i64> {
    rs.iter().map(|r| r.seq).collect()
}

/// Asserts the stored chain is 1..=head, gapless, ends at the head, and verifies.
async fn assert_intact(store: &Store, trusted: &[&SigningKey]) -> Report {
    let h = head(store).await;
    let rs = records(store).await;
    assert_eq!(seqs(&rs), (1..=h.seq).collect::<Vec<_>>(), "sequence numbers are 1..=head, gapless");
    assert_eq!(rs.last().map(|r| r.hash.clone()), (h.seq > 0).then(|| h.hash.clone()));
    let report = verify(store, trusted).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, u64::try_from(h.seq).unwrap());
    assert_eq!(report.last_seq, h.seq);
    report
}

// ---------------------------------------------------------------------------------------------
// A busy registry

async fn a_busy_registry_verifies(f: Fixture) {
    let store = &f.store;
    let key = SigningKey::generate();
    let champion = AliasName::parse("champion").unwrap();
    let stage = TagKey::parse("stage").unwrap();
    for name in ["team/a", "team/b", "other/c", "team/gone"] {
        let m = mref(name);
        store.create_model(&ctx("alice"), &new_model(name)).await.unwrap();
        store.set_model_tag(&ctx("alice"), &m, &TagKey::parse("task").unwrap(), "ner").await.unwrap();
        for i in 0..4 {
            let mut new = NewVersion { source: format!("s3://b/{name}/{i}"), ..NewVersion::default() };
            new.tags.insert(stage.clone(), "candidate".into());
            store.create_version(&ctx("ci"), &m, &new).await.unwrap();
        }
        store.set_version_tag(&ctx("bob"), &m, &VersionSelector::Number(2), &stage, "prod").await.unwrap();
        store.delete_version_tag(&ctx("bob"), &m, &VersionSelector::Number(3), &stage).await.unwrap();
        store.set_alias(&ctx("bob"), &m, &champion, 2).await.unwrap();
        store.set_alias(&ctx("carol"), &m, &champion, 4).await.unwrap();
        store
            .update_model(&ctx("carol"), &m, &ModelPatch { description: Some("better".into()), ..Default::default() })
            .await
            .unwrap();
        if name == "team/a" {
            // Checkpoints in the middle of the history, not only at its end.
            store.checkpoint_audit_chain(&key).await.unwrap().unwrap();
        }
    }
    store.delete_alias(&ctx("carol"), &mref("team/b"), &champion).await.unwrap();
    store.delete_version(&ctx("carol"), &mref("team/b"), &VersionSelector::Number(1)).await.unwrap();
    store.delete_model(&ctx("carol"), &mref("team/gone")).await.unwrap();
    for i in 0..5 {
        store.record_event(&ctx("mallory"), "model.delete", &format!("model:team/x{i}"), "denied").await.unwrap();
    }
    // A refused change writes nothing.
    assert!(store.create_model(&ctx("alice"), &new_model("team/a")).await.is_err());
    let cp = store.checkpoint_audit_chain(&key).await.unwrap().unwrap();

    let h = head(store).await;
    assert!(h.seq >= 50, "a busy registry: {} events", h.seq);
    assert_eq!(cp.seq, h.seq);
    let report = assert_intact(store, &[&key]).await;
    assert_eq!(report.head, h.hash);
    assert_eq!((report.checkpoints, report.unsigned_tail), (2, 0));
    // Without trusted keys the checkpoints cannot be vouched for.
    assert_eq!(first_break(&verify(store, &[]).await).map(|b| b.1), Some(BreakKind::UntrustedKey));

    // The listing shows the chained events, in chain order, with their chain hashes.
    let rs = records(store).await;
    let events = all_events(store).await;
    assert_eq!(events.len(), rs.len());
    for (e, r) in events.iter().zip(&rs) {
        assert_eq!(
            (e.id, &e.hash, e.occurred_at, &e.action, &e.outcome),
            (r.seq, &r.hash, r.time, &r.action, &r.outcome)
        );
        assert_eq!((&e.actor, &e.target, &e.after_state), (&r.details.actor, &r.details.target, &r.details.after));
    }
    let denied_only = AuditQuery { outcome: Some("denied".into()), limit: 100, ..AuditQuery::default() };
    let denied = store.list_audit_events(&denied_only).await.unwrap().items;
    assert_eq!(denied.len(), 5);
    assert!(denied.iter().all(|e| e.actor == "user:mallory" && e.action == "model.delete"));
    // Reading a window of the chain.
    assert_eq!(seqs(&store.audit_records(10, Some(20), 100).await.unwrap()), (11..=20).collect::<Vec<_>>());
    assert_eq!(seqs(&store.audit_records(10, None, 3).await.unwrap()), vec![11, 12, 13]);
}

// ---------------------------------------------------------------------------------------------
// Concurrency

async fn concurrent_writers_on_two_replicas_leave_one_gapless_chain(f: Fixture) {
    const TASKS: usize = 8;
    const EACH: usize = 25;
    let stores = [f.store.clone(), replica(&f).await];
    stores[0].create_model(&ctx("a"), &new_model("team/busy")).await.unwrap();
    let before = head(&stores[0]).await.seq;

    // A reader verifying while the writers run must never see a break.
    let writing = Arc::new(AtomicBool::new(true));
    let verifier = {
        let store = stores[1].clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut runs = 0;
            while writing.load(Ordering::Relaxed) {
                let report = store.verify_audit_chain(vec![]).await.unwrap();
                assert!(report.ok(), "verified while writers run: {report:?}");
                runs += 1;
            }
            runs
        })
    };
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = stores[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut numbers = Vec::new();
            for i in 0..EACH {
                let new = NewVersion { source: format!("s3://b/{t}/{i}"), ..NewVersion::default() };
                numbers.push(
                    store.create_version(&ctx(&format!("w{t}")), &mref("team/busy"), &new).await.unwrap().version,
                );
            }
            numbers
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.extend(t.await.unwrap());
    }
    writing.store(false, Ordering::Relaxed);
    assert!(verifier.await.unwrap() > 0);
    numbers.sort_unstable();
    let total = i64::try_from(TASKS * EACH).unwrap();
    assert_eq!(numbers, (1..=total).collect::<Vec<_>>());

    let h = head(&stores[0]).await;
    assert_eq!(h.seq, before + total);
    assert_eq!(head(&stores[1]).await, h);
    for store in &stores {
        assert_intact(store, &[]).await;
    }
    let created: Vec<String> = records(&stores[0])
        .await
        .into_iter()
        .filter(|r| r.action == "version.create")
        .map(|r| r.details.target)
        .collect();
    assert_eq!(created.len(), TASKS * EACH);
    // Chain order is commit order, which is version order for one model.
    let expected: Vec<String> = (1..=total).map(|n| format!("version:team/busy:{n}")).collect();
    assert_eq!(created, expected);
}

// ---------------------------------------------------------------------------------------------
// Tampering. Each case starts from a fresh chain of 20 events with a checkpoint at event 10.

const CHECKPOINT_AT: i64 = 10;
const EVENTS: i64 = 20;

/// Writes events 1..=20, signs a checkpoint at 10, and checks that all of it verifies.
async fn chain_with_checkpoint(store: &Store) -> SigningKey {
    store.create_model(&ctx("alice"), &new_model("team/m")).await.unwrap();
    let mut i = 0;
    while head(store).await.seq < CHECKPOINT_AT {
        store.record_event(&ctx("mallory"), "model.delete", &format!("model:team/m{i}"), "denied").await.unwrap();
        i += 1;
    }
    let key = SigningKey::generate();
    let cp = store.checkpoint_audit_chain(&key).await.unwrap().unwrap();
    assert_eq!(cp.seq, CHECKPOINT_AT);
    while head(store).await.seq < EVENTS {
        store.create_version(&ctx("ci"), &mref("team/m"), &NewVersion::default()).await.unwrap();
    }
    let report = assert_intact(store, &[&key]).await;
    assert_eq!((report.checkpoints, report.unsigned_tail), (1, 10));
    key
}

async fn record(store: &Store, seq: i64) -> AuditRecord {
    store.audit_records(seq - 1, Some(seq), 1).await.unwrap().pop().unwrap()
}

async fn an_edited_detail_is_found(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    sql(store, "UPDATE audit_events SET actor = 'user:alice' WHERE seq = 5", vec![]).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((5, BreakKind::Edited)));
    sql(store, "UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 5", vec![]).await;
    assert_intact(store, &[&key]).await;
    // After the checkpoint too: the details digest does not need a signature to catch it.
    sql(store, "UPDATE audit_events SET source_ip = '10.0.0.1' WHERE seq = 15", vec![]).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((15, BreakKind::Edited)));
}

async fn an_edited_chained_field_is_found(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    sql(store, "UPDATE audit_events SET occurred_at = occurred_at + 1 WHERE seq = 7", vec![]).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((7, BreakKind::Mismatch)));
    sql(store, "UPDATE audit_events SET occurred_at = occurred_at - 1 WHERE seq = 7", vec![]).await;
    assert_intact(store, &[&key]).await;
    sql(store, "UPDATE audit_events SET action = 'version.delete' WHERE seq = 15", vec![]).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((15, BreakKind::Mismatch)));
    sql(store, "UPDATE audit_events SET action = 'version.create' WHERE seq = 15", vec![]).await;
    assert_intact(store, &[&key]).await;
    sql(store, "UPDATE audit_events SET outcome = 'success' WHERE seq = 8", vec![]).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((8, BreakKind::Mismatch)));
}

/// Emptying a column that only verification reads is a break at that event, not an error
/// while reading the chain.
async fn a_nulled_hash_or_digest_is_found(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    let hash = record(store, 12).await.hash;
    sql(store, "UPDATE audit_events SET hash = NULL WHERE seq = 12", vec![]).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((12, BreakKind::Mismatch)));
    sql(store, "UPDATE audit_events SET hash = $1 WHERE seq = 12", params![hash]).await;
    assert_intact(store, &[&key]).await;
    sql(store, "UPDATE audit_events SET details_digest = NULL WHERE seq = 4", vec![]).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((4, BreakKind::Edited)));
}

async fn a_deleted_event_is_found(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    assert_eq!(sql(store, "DELETE FROM audit_events WHERE seq = 6", vec![]).await, 1);
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((6, BreakKind::Missing)));
}

async fn a_forged_event_is_found(f: Fixture) {
    const AT: i64 = 4;
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    let prev = record(store, AT - 1).await;
    // Make room at AT. The unique index on seq is checked row by row, so go through
    // negative numbers.
    sql(store, "UPDATE audit_events SET seq = -(seq + 1) WHERE seq >= $1", params![AT]).await;
    sql(store, "UPDATE audit_events SET seq = -seq WHERE seq < 0", vec![]).await;
    // The forged event is consistent in itself and with the event before it.
    let details = EventDetails {
        actor: "user:alice".into(),
        key_id: None,
        target: "model:team/other".into(),
        before: Some("{}".into()),
        after: None,
        request_id: None,
        source_ip: None,
        user_agent: None,
    };
    let forged = AuditRecord::seal(
        &parse_hash(&prev.hash).unwrap(),
        AT,
        prev.time,
        "model.delete".into(),
        "success".into(),
        details,
    );
    let d = &forged.details;
    sql(
        store,
        "INSERT INTO audit_events (seq, occurred_at, actor, key_id, action, target, outcome, before_state, \
         after_state, request_id, source_ip, user_agent, salt, details_digest, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        params![
            forged.seq,
            forged.time,
            &d.actor,
            d.key_id.clone(),
            &forged.action,
            &d.target,
            &forged.outcome,
            d.before.clone(),
            d.after.clone(),
            d.request_id.clone(),
            d.source_ip.clone(),
            d.user_agent.clone(),
            forged.salt.clone(),
            &forged.details_digest,
            &forged.hash
        ],
    )
    .await;
    let h = head(store).await;
    set_head(store, h.seq + 1, &h.hash).await;
    assert_eq!(record(store, AT).await, forged);
    // The forged event itself checks out; the genuine one after it no longer follows.
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((AT + 1, BreakKind::Mismatch)));
}

async fn reordered_events_are_found(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    let (a, b) = (record(store, 12).await, record(store, 13).await);
    sql(store, "UPDATE audit_events SET seq = -1 WHERE seq = 12", vec![]).await;
    sql(store, "UPDATE audit_events SET seq = 12 WHERE seq = 13", vec![]).await;
    sql(store, "UPDATE audit_events SET seq = 13 WHERE seq = -1", vec![]).await;
    assert_eq!(record(store, 12).await.hash, b.hash);
    assert_eq!(record(store, 13).await.hash, a.hash);
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((12, BreakKind::Mismatch)));
}

/// Rows the database keeps out of sequence order (rewritten in place, as an `UPDATE`, a
/// vacuum or a restore leaves them) verify: the verifier puts events in sequence order itself
/// rather than relying on the order the database returns them in.
async fn events_stored_out_of_order_verify(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    // Events 1–5 rewritten with the values they have: PostgreSQL puts the new row versions
    // after the others; SQLite, under new row ids, at the end of the table.
    let rewrite = match store.backend() {
        cairn_store::Backend::Postgres => "UPDATE audit_events SET seq = seq WHERE seq <= 5",
        cairn_store::Backend::Sqlite => "UPDATE audit_events SET id = id + 1000000 WHERE seq <= 5",
    };
    assert_eq!(sql(store, rewrite, vec![]).await, 5);
    // With statistics, PostgreSQL reads a table this small from start to end, not by index.
    sql(store, "ANALYZE audit_events", vec![]).await;
    // The table as stored is out of order now (every column read, so that no index covers it).
    let stored: Vec<(i64, Option<String>)> = store
        .db()
        .read()
        .await
        .unwrap()
        .conn()
        .fetch_all("SELECT seq, after_state FROM audit_events", vec![])
        .await
        .unwrap();
    let stored: Vec<i64> = stored.into_iter().map(|(seq, _)| seq).collect();
    assert!(stored.windows(2).any(|w| w[0] > w[1]), "still in order: {stored:?}");
    let report = assert_intact(store, &[&key]).await;
    assert_eq!((report.events, report.checkpoints), (EVENTS as u64, 1));
    // Pages of records (export, reports) come in order and within their bounds.
    let page = |after, until, limit| async move { seqs(&store.audit_records(after, until, limit).await.unwrap()) };
    assert_eq!(page(0, Some(8), 100).await, (1..=8).collect::<Vec<_>>());
    assert_eq!(page(3, Some(8), 2).await, vec![4, 5]);
    assert_eq!(page(2, Some(4), 2).await, vec![3, 4]);
    assert_eq!(page(8, Some(8), 5).await, Vec::<i64>::new());
    assert_eq!(page(17, None, 10).await, vec![18, 19, 20]);
}

async fn a_truncated_end_is_found_up_to_the_last_checkpoint(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    // The end removed, the head left alone: the head vouches for the missing events.
    assert_eq!(sql(store, "DELETE FROM audit_events WHERE seq > 15", vec![]).await, 5);
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((16, BreakKind::Truncated)));

    // Events after the last checkpoint are vouched for by the head row alone, which is not
    // signed: whoever also rewrites audit_head can remove them undetectably. That is the
    // limit of the guarantee, and why checkpoints should be signed often; the report shows
    // how many events are unsigned.
    set_head(store, 15, &record(store, 15).await.hash).await;
    let report = verify(store, &[&key]).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.last_seq, report.checkpoints, report.unsigned_tail), (15, 1, 5));

    // Removing events a checkpoint covers is found however consistent the head is made.
    assert_eq!(sql(store, "DELETE FROM audit_events WHERE seq > 7", vec![]).await, 8);
    set_head(store, 7, &record(store, 7).await.hash).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((8, BreakKind::Truncated)));
}

/// Edits the events from `from` on with `edit`, then re-seals them and every later event with
/// fresh salts, digests and hashes, and points `audit_head` at the new end: everything an
/// attacker without the signing key can do to make the chain consistent again.
async fn rewrite_history(store: &Store, from: i64, edit: impl Fn(&mut AuditRecord)) {
    let rs = records(store).await;
    let mut prev = if from == 1 { GENESIS } else { parse_hash(&rs[usize::try_from(from - 2).unwrap()].hash).unwrap() };
    let mut last = None;
    for mut r in rs.into_iter().filter(|r| r.seq >= from) {
        edit(&mut r);
        let sealed = AuditRecord::seal(&prev, r.seq, r.time, r.action, r.outcome, r.details);
        sql(
            store,
            "UPDATE audit_events SET occurred_at = $1, action = $2, outcome = $3, actor = $4, target = $5, \
             salt = $6, details_digest = $7, hash = $8 WHERE seq = $9",
            params![
                sealed.time,
                &sealed.action,
                &sealed.outcome,
                &sealed.details.actor,
                &sealed.details.target,
                sealed.salt.clone(),
                &sealed.details_digest,
                &sealed.hash,
                sealed.seq
            ],
        )
        .await;
        prev = parse_hash(&sealed.hash).unwrap();
        last = Some(sealed);
    }
    let last = last.unwrap();
    set_head(store, last.seq, &last.hash).await;
}

async fn a_rechained_history_contradicts_the_checkpoint(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    let original = records(store).await;
    rewrite_history(store, 5, |r| r.details.actor = "user:alice".into()).await;
    let rewritten = records(store).await;
    assert_eq!(rewritten[4].details.actor, "user:alice");
    assert_ne!(rewritten[9].hash, original[9].hash);
    // Every event and the head are consistent again; only the signature over event 10 is not.
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((CHECKPOINT_AT, BreakKind::CheckpointMismatch)));
}

async fn checkpoints_forged_with_another_key_are_untrusted(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    rewrite_history(store, 3, |r| r.details.target = "model:team/elsewhere".into()).await;
    let forger = SigningKey::generate();
    assert_eq!(sql(store, "DELETE FROM audit_checkpoints", vec![]).await, 1);
    for seq in [CHECKPOINT_AT, EVENTS] {
        let cp = Checkpoint::sign(&forger, seq, &record(store, seq).await.hash, store.now());
        sql(
            store,
            "INSERT INTO audit_checkpoints (seq, head, signed_at, key_id, signature) VALUES ($1, $2, $3, $4, $5)",
            params![cp.seq, &cp.head, cp.signed_at, &cp.key_id, &cp.signature],
        )
        .await;
    }
    // The forgery is consistent: only trusting the right key exposes it.
    let report = verify(store, &[&forger]).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.checkpoints, 2);
    let report = verify(store, &[&key]).await;
    assert_eq!(first_break(&report), Some((CHECKPOINT_AT, BreakKind::UntrustedKey)));
}

async fn a_tampered_checkpoint_signature_is_found(f: Fixture) {
    let store = &f.store;
    let key = chain_with_checkpoint(store).await;
    let cp = store.last_audit_checkpoint().await.unwrap().unwrap();
    // A real signature by the right key, over another statement.
    let other = Checkpoint::sign(&key, cp.seq, &record(store, cp.seq - 1).await.hash, cp.signed_at);
    sql(store, "UPDATE audit_checkpoints SET signature = $1 WHERE seq = $2", params![&other.signature, cp.seq]).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((CHECKPOINT_AT, BreakKind::BadSignature)));
    sql(store, "UPDATE audit_checkpoints SET signature = $1 WHERE seq = $2", params![&cp.signature, cp.seq]).await;
    assert_intact(store, &[&key]).await;
    // The signature covers the time too.
    sql(store, "UPDATE audit_checkpoints SET signed_at = signed_at - 1000 WHERE seq = $1", params![cp.seq]).await;
    assert_eq!(first_break(&verify(store, &[&key]).await), Some((CHECKPOINT_AT, BreakKind::BadSignature)));
}

// ---------------------------------------------------------------------------------------------
// Events written before the chain existed

/// Writes an event as the store did before the chain: no seq, salt, digest or hash.
async fn insert_legacy_event(store: &Store, actor: &str, action: &str, time: i64) {
    sql(
        store,
        "INSERT INTO audit_events (occurred_at, actor, action, target, outcome, after_state) \
         VALUES ($1, $2, $3, 'model:team/old', 'success', '{\"legacy\":true}')",
        params![time, actor, action],
    )
    .await;
}

async fn legacy_events_are_sealed_on_open(f: Fixture) {
    let store = &f.store;
    assert_eq!(head(store).await.seq, 0);
    let t = store.now() - 60_000;
    insert_legacy_event(store, "user:old1", "model.create", t).await;
    insert_legacy_event(store, "user:old2", "model.update", t + 1).await;
    insert_legacy_event(store, "user:old3", "model.update", t + 2).await;
    // (Looked at directly: reading the chain through the store seals them on PostgreSQL.)
    assert_eq!(unsealed(store).await, 3, "not sealed before the store is opened again");

    let reopened = replica(&f).await;
    let report = assert_intact(&reopened, &[]).await;
    assert_eq!(report.events, 3);
    let rs = records(&reopened).await;
    let actors: Vec<&str> = rs.iter().map(|r| r.details.actor.as_str()).collect();
    assert_eq!(actors, ["user:old1", "user:old2", "user:old3"], "sealed in the order they were written");
    assert!(rs.iter().all(|r| r.salt.is_some() && r.details.after.as_deref() == Some("{\"legacy\":true}")));

    // New events continue the chain; sealing is done once, so opening again changes nothing.
    reopened.create_model(&ctx("alice"), &new_model("team/new")).await.unwrap();
    insert_legacy_event(&reopened, "user:late", "model.update", t + 3).await;
    let again = replica(&f).await;
    let report = assert_intact(&again, &[]).await;
    let rs2 = records(&again).await;
    assert_eq!(rs2.last().unwrap().details.actor, "user:late");
    assert_eq!(report.events, rs.len() as u64 + 3);
    assert_eq!(&rs2[..3], &rs[..]);
    let once_more = replica(&f).await;
    assert_eq!(records(&once_more).await, rs2);
    assert_eq!(head(&once_more).await, head(&again).await);
}

/// Replicas upgraded at the same moment: each one opening the database seals the pre-chain
/// rows, while the others already write. Each row must be sealed exactly once.
async fn legacy_events_sealed_by_concurrent_writers_keep_one_chain(f: Fixture) {
    let t = f.store.now() - 60_000;
    for i in 0..50 {
        insert_legacy_event(&f.store, &format!("user:old{i}"), "model.update", t + i).await;
    }
    let url = f.url.clone();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let store = Store::open(&url, &options()).await.unwrap();
            for j in 0..2 {
                store.record_event(&ctx(&format!("w{i}-{j}")), "test.write", "target:x", "success").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = assert_intact(&f.store, &[]).await;
    assert_eq!(report.events, 58, "50 old events and 8 new ones, each once");
    let rs = records(&f.store).await;
    let old: Vec<String> = rs.iter().filter(|r| r.action == "model.update").map(|r| r.details.actor.clone()).collect();
    assert_eq!(old, (0..50).map(|i| format!("user:old{i}")).collect::<Vec<_>>(), "in the order they were written");
    assert!(rs[..50].iter().all(|r| r.action == "model.update"), "before every new event");
}

/// A verifier running while another replica appends events and signs checkpoints sees a
/// consistent chain (a checkpoint newer than the head it started from is not a truncation).
async fn verifying_while_replicas_append_and_checkpoint_finds_no_break(f: Fixture) {
    let key = Arc::new(SigningKey::generate());
    let writer = replica(&f).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = {
        let (key, stop) = (key.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writer.record_event(&ctx("w"), "test.write", &format!("target:{n}"), "success").await.unwrap();
                writer.checkpoint_audit_chain(&key).await.unwrap();
                n += 1;
                // Paced, so the chain each verification reads stays short however fast
                // the writer is: the point is appends during verification, not volume.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            n
        })
    };
    for _ in 0..40 {
        let report = f.store.verify_audit_chain(vec![key.public()]).await.unwrap();
        assert!(report.ok(), "{:?}", report.first_break);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(task.await.unwrap() > 0);
}

// ---------------------------------------------------------------------------------------------
// Version signatures

async fn versions_carry_server_and_user_signatures(f: Fixture) {
    let server_key = Arc::new(SigningKey::generate());
    let store = f.store.clone().with_signer(server_key.clone());
    let model = mref("team/signed");
    store.create_model(&ctx("alice"), &new_model("team/signed")).await.unwrap();
    let v1 = store.create_version(&ctx("alice"), &model, &NewVersion::default()).await.unwrap();

    let sigs = store.version_signatures(&model, &VersionSelector::Number(1)).await.unwrap();
    assert_eq!(sigs.len(), 1);
    let server = &sigs[0];
    assert_eq!(server.kind, "server");
    assert_eq!(server.verify_self(), Some(server_key.public()));
    assert!(server_key.public().verify(server.statement.as_bytes(), &server.signature));
    let statement: VersionStatement = serde_json::from_str(&server.statement).unwrap();
    assert_eq!(
        (statement.r#type.as_str(), statement.model.as_str(), statement.version, statement.manifest_digest.as_str()),
        (VERSION_TYPE, "team/signed", 1, v1.digest.as_str())
    );

    // A version without files has the empty manifest, so the pusher knows its digest.
    let user_key = SigningKey::generate();
    let mine = SignatureEnvelope::sign("user", &PushStatement::new("team/signed", &v1.digest), &user_key);
    let new = NewVersion { signatures: vec![mine.clone()], ..NewVersion::default() };
    let v2 = store.create_version(&ctx("alice"), &model, &new).await.unwrap();
    assert_eq!(v2.digest, v1.digest);
    let sigs = store.version_signatures(&model, &VersionSelector::Number(2)).await.unwrap();
    assert_eq!(sigs.len(), 2);
    assert_eq!(sigs[1], mine);
    let statement: VersionStatement = serde_json::from_str(&sigs[0].statement).unwrap();
    assert_eq!((sigs[0].kind.as_str(), statement.version), ("server", 2));
    assert_eq!(sigs[0].verify_self(), Some(server_key.public()));

    // Without a signer, only the pusher's signatures are kept.
    let v3 = f.store.create_version(&ctx("alice"), &model, &new).await.unwrap();
    assert_eq!(store.version_signatures(&model, &VersionSelector::Number(v3.version)).await.unwrap(), vec![mine]);
    assert_intact(&store, &[]).await;
}

async fn bad_user_signatures_are_refused_without_a_trace(f: Fixture) {
    let store = f.store.clone().with_signer(Arc::new(SigningKey::generate()));
    let model = mref("team/signed");
    store.create_model(&ctx("alice"), &new_model("team/signed")).await.unwrap();
    let digest = store.create_version(&ctx("alice"), &model, &NewVersion::default()).await.unwrap().digest;
    let user_key = SigningKey::generate();
    let sign =
        |model: &str, digest: &str| SignatureEnvelope::sign("user", &PushStatement::new(model, digest), &user_key);

    let good = sign("team/signed", &digest);
    let mut bad_signature = good.clone();
    bad_signature.signature = sign("team/other", &digest).signature;
    let mut as_server = good.clone();
    as_server.kind = "server".into();
    let mut other_key = good.clone();
    other_key.public_key = SigningKey::generate().public().to_pem();
    let cases = [
        ("another model", sign("team/other", &digest)),
        ("another manifest", sign("team/signed", &format!("sha256:{}", "0".repeat(64)))),
        ("a signature over something else", bad_signature),
        ("a key that did not sign it", other_key),
        ("the server's kind", as_server),
    ];
    let before = head(&store).await;
    for (why, sig) in cases {
        let new = NewVersion { signatures: vec![good.clone(), sig], ..NewVersion::default() };
        let err = store.create_version(&ctx("alice"), &model, &new).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{why}: {err:?}");
        assert!(err.to_string().contains("signature 2"), "{why}: {err}");
        assert_eq!(store.get_model(&model).await.unwrap().latest_version, 1, "{why}: no version");
        assert!(matches!(store.get_version(&model, &VersionSelector::Number(2)).await, Err(StoreError::NotFound(_))));
        assert_eq!(head(&store).await, before, "{why}: no audit event");
    }
    let new = NewVersion { signatures: vec![good], ..NewVersion::default() };
    let v = store.create_version(&ctx("alice"), &model, &new).await.unwrap();
    assert_eq!(v.version, 2, "the number was not used up by the refusals");
    assert_intact(&store, &[]).await;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

async fn checkpoints_are_one_per_sequence_number(f: Fixture) {
    const ROUNDS: i64 = 10;
    let key = SigningKey::generate();
    let store = f.store.clone();
    assert_eq!(store.checkpoint_audit_chain(&key).await.unwrap(), None, "nothing to sign yet");
    assert_eq!(store.last_audit_checkpoint().await.unwrap(), None);

    store.create_model(&ctx("alice"), &new_model("team/m")).await.unwrap();
    let first = store.checkpoint_audit_chain(&key).await.unwrap().unwrap();
    let h = head(&store).await;
    assert_eq!((first.seq, &first.head), (h.seq, &h.hash));
    assert!(first.verify(&key.public()));
    // No new events: the same checkpoint, not a new signature.
    assert_eq!(store.checkpoint_audit_chain(&key).await.unwrap(), Some(first.clone()));
    assert_eq!(store.last_audit_checkpoint().await.unwrap(), Some(first.clone()));
    assert_eq!(store.audit_checkpoints(0, i64::MAX, 100).await.unwrap(), vec![first.clone()]);

    let other = replica(&f).await;
    let key = Arc::new(key);
    for i in 0..ROUNDS {
        store.record_event(&ctx("bob"), "model.read", &format!("model:team/m{i}"), "denied").await.unwrap();
        let racers: Vec<_> = [store.clone(), other.clone(), store.clone(), other.clone()]
            .into_iter()
            .map(|s| {
                let key = key.clone();
                tokio::spawn(async move { s.checkpoint_audit_chain(&key).await.unwrap().unwrap() })
            })
            .collect();
        let mut got = Vec::new();
        for r in racers {
            got.push(r.await.unwrap());
        }
        let h = head(&store).await;
        assert!(got.iter().all(|cp| *cp == got[0]), "every racer returns the one stored checkpoint: {got:?}");
        assert_eq!((got[0].seq, &got[0].head), (h.seq, &h.hash));
    }
    let cps = store.audit_checkpoints(0, i64::MAX, 100).await.unwrap();
    assert_eq!(cps.len(), usize::try_from(ROUNDS + 1).unwrap());
    let cp_seqs: Vec<i64> = cps.iter().map(|c| c.seq).collect();
    assert_eq!(cp_seqs, (first.seq..=first.seq + ROUNDS).collect::<Vec<_>>());
    let report = assert_intact(&other, &[key.as_ref()]).await;
    assert_eq!((report.checkpoints, report.unsigned_tail), (u64::try_from(ROUNDS).unwrap() + 1, 0));
}

// ---------------------------------------------------------------------------------------------
// Sealing after the commit (PostgreSQL seals in the background; SQLite as it writes)

/// Events committed but not sealed yet, looked at directly (reading the chain through the
/// store would seal them first).
async fn unsealed(store: &Store) -> i64 {
    let (n,): (i64,) = store
        .db()
        .read()
        .await
        .unwrap()
        .conn()
        .fetch_one("SELECT COUNT(*) FROM audit_events WHERE seq IS NULL", vec![])
        .await
        .unwrap();
    n
}

/// A write is answered without waiting for the chain, and its events are sealed all the same
/// although nothing reads the chain.
async fn events_join_the_chain_with_nobody_reading(f: Fixture) {
    let store = &f.store;
    for i in 0..20 {
        store.record_event(&ctx(&format!("u{i}")), "test.write", "target:x", "success").await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while unsealed(store).await > 0 {
        assert!(std::time::Instant::now() < deadline, "events still unsealed after 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let report = assert_intact(store, &[]).await;
    assert_eq!(report.events, 20);
}

/// Whoever reads the chain right after a write answered sees that write's events: the head,
/// the listing, the records and verification, from this replica and from another one.
async fn a_read_right_after_a_write_sees_its_events(f: Fixture) {
    let other = replica(&f).await;
    for i in 1..=25_i64 {
        let who = format!("r{i}");
        f.store.record_event(&ctx(&who), "test.write", &format!("target:{i}"), "success").await.unwrap();
        let reader = if i % 2 == 0 { &f.store } else { &other };
        assert_eq!(head(reader).await.seq, i, "the head after write {i}");
        let page = reader
            .list_audit_events(&AuditQuery { actor: Some(format!("user:{who}")), limit: 10, ..AuditQuery::default() })
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1, "write {i} is listed");
        let last = reader.audit_records(i - 1, None, 10).await.unwrap();
        assert_eq!(seqs(&last), [i]);
        assert_eq!(last[0].details.actor, format!("user:{who}"));
    }
    let report = verify(&other, &[]).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, 25);
}

/// Versions created in turn through two replicas (on SQLite, two writers on one file, as two
/// server processes would be). On SQLite each replica predicts the next version's number and
/// id from the last one it created (batched creation, see `db::Writer`), so after the other
/// replica's version its guess is taken: the version must still be created, with the next
/// number, read back as answered, and the chain must verify.
async fn versions_created_by_two_replicas_in_turn_get_the_next_numbers(f: Fixture) {
    let stores = [f.store.clone(), replica(&f).await];
    stores[0].create_model(&ctx("a"), &new_model("team/turns")).await.unwrap();
    for i in 0..6_i64 {
        let store = &stores[usize::from(i % 3 == 2)];
        let new = NewVersion { source: format!("s3://b/{i}"), ..NewVersion::default() };
        let v = store.create_version(&ctx("a"), &mref("team/turns"), &new).await.unwrap();
        assert_eq!(v.version, i + 1);
        let other = &stores[usize::from(i % 3 != 2)];
        assert_eq!(other.get_version(&mref("team/turns"), &VersionSelector::Number(v.version)).await.unwrap(), v);
    }
    assert_eq!(stores[1].get_model(&mref("team/turns")).await.unwrap().latest_version, 6);
    let report = stores[0].verify_audit_chain(vec![]).await.unwrap();
    assert!(report.ok(), "{report:?}");
}

/// Concurrent creators of one model, two of which ask for the same semantic version: exactly
/// one of those two is refused, with a conflict, and nothing else fails or leaves a gap (on
/// SQLite they share batched commit groups, which fail as a whole and are then run again one
/// by one).
async fn one_bad_version_among_concurrent_ones_fails_alone(f: Fixture) {
    f.store.create_model(&ctx("a"), &new_model("team/labels")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16_u32 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let label = if i == 5 || i == 11 { "2.0.0".to_owned() } else { format!("1.{i}.0") };
            let new = NewVersion {
                semver: Some(cairn_core::lifecycle::Semver::parse(&label).unwrap()),
                ..NewVersion::default()
            };
            store.create_version(&ctx(&format!("w{i}")), &mref("team/labels"), &new).await
        }));
    }
    let (mut numbers, mut refused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => numbers.push(v.version),
            Err(StoreError::Conflict(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 1, "one of the two creators of 2.0.0 is refused");
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=15).collect::<Vec<i64>>(), "the others get 1..15, no gap");
    let report = f.store.verify_audit_chain(vec![]).await.unwrap();
    assert!(report.ok(), "{report:?}");
}
