//! Audit retention on SQLite and PostgreSQL: details of events past their action's
//! retention are pruned and the chain still verifies; the expired start of the chain is
//! removed up to a signed checkpoint that becomes the anchor; every pruning is an audited
//! event; a dry run changes nothing; and removing details or events behind the pruning's
//! back is still found.

use std::sync::Arc;

use cairn_audit::retention::{DAY_MS, PRUNE_ACTION, PRUNED_ACTOR, PruneRecord, RetentionPolicy};
use cairn_audit::{AuditRecord, BreakKind, Report, SigningKey};
use cairn_store::{AuditContext, DbOptions, Store, params};
use cairn_test_utils::raw_sql as sql;
use cairn_test_utils::{Backend, ManualClock, database_url};

const T0: i64 = 1_767_225_600_000; // 2026-01-01

struct Fixture {
    store: Store,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Sets the clock to `days` (and `ms`) after T0.
    fn at(&self, days: i64, ms: i64) {
        self.clock.set(T0 + days * DAY_MS + ms);
    }
}

async fn open(backend: Backend, test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(backend, dir.path(), test).await?;
    let clock = ManualClock::at(T0);
    let store = Store::open(&url, &DbOptions::default()).await.unwrap().with_clock(clock.clone());
    Some(Fixture { store, clock, _dir: dir })
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(f) = super::open(cairn_test_utils::Backend::Sqlite, concat!("sqlite::", stringify!($name))).await {
                        super::$name(f).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    expired_details_are_pruned_and_the_expired_start_removed,
    records_that_vouch_for_others_keep_their_details,
    removal_waits_for_a_checkpoint_among_the_expired_events,
    pruning_behind_the_registrys_back_is_found,
    a_moved_or_unvouched_anchor_is_found,
);

fn ctx(who: &str) -> AuditContext {
    AuditContext {
        actor: format!("user:{who}"),
        source_ip: Some("192.0.2.7".into()),
        user_agent: Some("cairn-test".into()),
        ..AuditContext::default()
    }
}

fn policy() -> RetentionPolicy {
    RetentionPolicy::parse(10, "auth.login=2").unwrap()
}

async fn login(store: &Store, who: &str) {
    store.record_event(&ctx(who), "auth.login", &format!("user:{who}"), "success").await.unwrap();
}

async fn records(store: &Store) -> Vec<AuditRecord> {
    store.audit_records(0, None, 100_000).await.unwrap()
}

async fn verify(store: &Store, key: &SigningKey) -> Report {
    store.verify_audit_chain(vec![key.public()]).await.unwrap()
}

fn first_break(r: &Report) -> Option<(i64, BreakKind)> {
    r.first_break.as_ref().map(|b| (b.seq, b.kind))
}

/// Day 0: three logins and a model (seq 1–4), checkpoint at 4. Day 1: two logins and a
/// denied delete (5–7), checkpoint at 7. Day 5: one login (8).
async fn history(f: &Fixture) -> SigningKey {
    let key = SigningKey::generate();
    let s = &f.store;
    f.at(0, 1_000);
    for who in ["alice", "bob", "carol"] {
        login(s, who).await;
    }
    s.record_event(&ctx("alice"), "model.create", "model:team/m", "success").await.unwrap();
    assert_eq!(s.checkpoint_audit_chain(&key).await.unwrap().unwrap().seq, 4);
    f.at(1, 1_000);
    login(s, "alice").await;
    login(s, "dave").await;
    s.record_event(&ctx("mallory"), "model.delete", "model:team/m", "denied").await.unwrap();
    assert_eq!(s.checkpoint_audit_chain(&key).await.unwrap().unwrap().seq, 7);
    f.at(5, 0);
    login(s, "erin").await;
    key
}

fn prune_record(r: &AuditRecord) -> PruneRecord {
    assert_eq!(r.action, PRUNE_ACTION);
    serde_json::from_str(r.details.after.as_deref().unwrap()).unwrap()
}

async fn expired_details_are_pruned_and_the_expired_start_removed(f: Fixture) {
    let s = &f.store;
    let key = history(&f).await;
    let before = records(s).await;

    // Day 3: the day-0 logins are past their two days; nothing is past ten days.
    f.at(3, 0);
    let dry = s.prune_audit(&ctx("admin"), &policy(), true).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.record.removed_events, 0);
    assert_eq!(dry.record.pruned_details.len(), 1);
    assert_eq!((dry.record.pruned_details[0].action.as_str(), dry.record.pruned_details[0].events), ("auth.login", 3));
    assert_eq!(records(s).await, before, "a dry run changes nothing");

    let done = s.prune_audit(&ctx("admin"), &policy(), false).await.unwrap();
    assert_eq!(done.record, dry.record);
    let after = records(s).await;
    assert_eq!(after.len(), 9, "the pruning is an event of its own");
    for r in &after[..3] {
        assert_eq!((r.details.actor.as_str(), r.details.target.as_str()), (PRUNED_ACTOR, ""));
        assert_eq!((r.salt.as_ref(), r.details.source_ip.as_ref()), (None, None));
        assert_eq!(r.action, "auth.login", "the chained fields stay");
    }
    assert_eq!(after[3].details.actor, "user:alice", "a model.create keeps its details for ten days");
    assert_eq!(after[4].details.actor, "user:alice", "a day-1 login is not two days old yet");
    let rec = prune_record(&after[8]);
    assert_eq!(after[8].details.actor, "user:admin");
    assert_eq!(rec.pruned_details[0].before, T0 + DAY_MS);
    assert_eq!(rec.retention, vec![("*".to_owned(), 10), ("auth.login".to_owned(), 2)]);
    let report = verify(s, &key).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.pruned, report.events), (3, 9));

    // Pruning again at once finds nothing and records nothing.
    let again = s.prune_audit(&ctx("admin"), &policy(), false).await.unwrap();
    assert!(!again.changed());
    assert_eq!(records(s).await.len(), 9);

    // Day 11: day 0 is past ten days: events 1–4 go, anchored at the checkpoint at 4; the
    // logins of days 1 and 5 lose their details.
    f.at(11, 0);
    let done = s.prune_audit(&ctx("admin"), &policy(), false).await.unwrap();
    assert_eq!((done.record.anchor_seq, done.record.removed_events), (4, 4));
    assert_eq!(done.record.pruned_details[0].events, 3);
    let head = s.audit_head().await.unwrap();
    assert_eq!((head.anchor_seq, head.anchor_hash.as_str()), (4, before[3].hash.as_str()));
    let kept = records(s).await;
    assert_eq!(kept.first().map(|r| r.seq), Some(5));
    assert_eq!(s.audit_checkpoints(0, i64::MAX, 10).await.unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(), [4, 7]);
    let report = verify(s, &key).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.first_seq, report.pruned), (Some(5), 3));
    let events = s
        .list_audit_events(&cairn_store::audit::AuditQuery {
            action: Some(PRUNE_ACTION.into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(events.len(), 2, "both prunings are in the chain");
}

async fn records_that_vouch_for_others_keep_their_details(f: Fixture) {
    let s = &f.store;
    let key = history(&f).await;
    f.at(3, 0);
    s.prune_audit(&ctx("admin"), &policy(), false).await.unwrap();
    // Everything is past a one-day retention by day 9, except the pruning record itself.
    f.at(9, 0);
    let short = RetentionPolicy::parse(30, "auth.*=1,model.*=1,audit.*=1").unwrap();
    s.prune_audit(&ctx("admin"), &short, false).await.unwrap();
    let rs = records(s).await;
    let first = rs.iter().find(|r| r.action == PRUNE_ACTION).unwrap();
    assert_eq!(first.details.actor, "user:admin", "a pruning record is never pruned");
    assert!(rs.iter().filter(|r| r.action != PRUNE_ACTION).all(|r| r.details.actor == PRUNED_ACTOR));
    let report = verify(s, &key).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.pruned, 8);
}

async fn removal_waits_for_a_checkpoint_among_the_expired_events(f: Fixture) {
    let s = &f.store;
    let key = SigningKey::generate();
    f.at(0, 0);
    login(s, "alice").await;
    login(s, "bob").await;
    f.at(20, 0);
    let out = s.prune_audit(&ctx("admin"), &policy(), false).await.unwrap();
    assert_eq!(out.record.removed_events, 0);
    assert!(out.note.as_deref().unwrap().contains("no signed checkpoint"), "{out:?}");
    assert_eq!(out.record.pruned_details[0].events, 2, "their details still go");
    // Once a checkpoint is signed and is itself past retention, the removal happens.
    assert_eq!(s.checkpoint_audit_chain(&key).await.unwrap().unwrap().seq, 3);
    f.at(31, 0);
    let out = s.prune_audit(&ctx("admin"), &policy(), false).await.unwrap();
    assert_eq!((out.record.anchor_seq, out.record.removed_events), (3, 3));
    let report = verify(s, &key).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.first_seq, Some(4));
}

async fn pruning_behind_the_registrys_back_is_found(f: Fixture) {
    let s = &f.store;
    let key = history(&f).await;
    f.at(11, 0);
    s.prune_audit(&ctx("admin"), &policy(), false).await.unwrap();
    assert!(verify(s, &key).await.ok());

    // Removing the details of an event that no pruning covers (the denied delete of day 1,
    // seq 7, kept for ten days), made to look pruned.
    sql(
        s,
        "UPDATE audit_events SET actor = $1, target = '', source_ip = NULL, user_agent = NULL, salt = NULL \
         WHERE seq = 7",
        params![PRUNED_ACTOR],
    )
    .await;
    assert_eq!(first_break(&verify(s, &key).await), Some((7, BreakKind::UnrecordedErasure)));
}

async fn a_moved_or_unvouched_anchor_is_found(f: Fixture) {
    let s = &f.store;
    let key = history(&f).await;
    f.at(11, 0);
    s.prune_audit(&ctx("admin"), &policy(), false).await.unwrap();
    // Deleting the checkpoint at the anchor leaves the start of the chain unvouched for.
    let cp = s.audit_checkpoints(4, 4, 1).await.unwrap().pop().unwrap();
    sql(s, "DELETE FROM audit_checkpoints WHERE seq = 4", vec![]).await;
    assert_eq!(first_break(&verify(s, &key).await), Some((5, BreakKind::UnverifiedAnchor)));
    sql(
        s,
        "INSERT INTO audit_checkpoints (seq, head, signed_at, key_id, signature) VALUES ($1, $2, $3, $4, $5)",
        params![cp.seq, &cp.head, cp.signed_at, &cp.key_id, &cp.signature],
    )
    .await;
    assert!(verify(s, &key).await.ok());
    // Someone deletes events 5 and 6 and points the anchor at event 6, where no checkpoint is.
    let six = s.audit_records(5, Some(6), 1).await.unwrap().pop().unwrap();
    sql(s, "DELETE FROM audit_events WHERE seq <= 6", vec![]).await;
    sql(s, "UPDATE audit_head SET anchor_seq = 6, anchor_hash = $1 WHERE id = 1", params![six.hash]).await;
    assert_eq!(first_break(&verify(s, &key).await), Some((7, BreakKind::UnverifiedAnchor)));
}
