//! Webhooks and their delivery log as the store keeps them, on SQLite and PostgreSQL: which
//! hooks an event fans out to, claims that never hand one delivery to two workers, the
//! bookkeeping of failures, retries and giving up, redelivery, cascades, and the audit trail
//! (which never holds a secret).

use std::collections::BTreeSet;

use cairn_core::Namespace;
use cairn_store::audit::AuditQuery;
use cairn_store::webhook::{PING_EVENT, WEBHOOK_EVENTS};
use cairn_store::{AuditContext, DbOptions, Store, StoreError};
use cairn_test_utils::{Backend, database_url};
use serde_json::json;

const SECRET: &str = "whsec_test-secret-never-in-audit";

struct Fixture {
    store: Store,
    url: String,
    _dir: tempfile::TempDir,
}

async fn open(backend: Backend, test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(backend, dir.path(), test).await?;
    let opts = DbOptions { busy_timeout: std::time::Duration::from_secs(30), ..DbOptions::default() };
    let store = Store::open(&url, &opts).await.unwrap();
    Some(Fixture { store, url, _dir: dir })
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some(f) = super::open(cairn_test_utils::Backend::Sqlite, concat!("sqlite::", stringify!($name))).await {
                    super::$name(f).await;
                }
            }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some(f) = super::open(cairn_test_utils::Backend::Postgres, concat!("postgres::", stringify!($name))).await {
                    super::$name(f).await;
                }
            }
        )* }
    };
}

suite!(
    events_fan_out_to_subscribed_active_hooks_of_the_namespace_and_global_ones,
    concurrent_claims_never_share_a_delivery,
    failures_back_off_then_give_up,
    redelivery_starts_again,
    deleting_a_hook_or_its_namespace_removes_its_deliveries,
    changes_are_audited_without_the_secret,
    bad_subscriptions_are_refused,
);

fn ctx() -> AuditContext {
    AuditContext { actor: "user:alice".into(), ..AuditContext::default() }
}

fn ns(s: &str) -> Namespace {
    Namespace::parse(s).unwrap()
}

fn events(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn namespaces(store: &Store, names: &[&str]) {
    for n in names {
        store.create_namespace(&ctx(), &ns(n), "").await.unwrap();
    }
}

async fn pending_hooks(store: &Store, hooks: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for h in hooks {
        let page = store.list_deliveries(h, 1000, None).await.unwrap();
        out.extend(page.items.iter().filter(|d| d.status == "pending").map(|d| d.webhook_id.clone()));
    }
    out
}

async fn events_fan_out_to_subscribed_active_hooks_of_the_namespace_and_global_ones(f: Fixture) {
    let s = &f.store;
    namespaces(s, &["team", "other"]).await;
    let url = "https://hooks.example.org/cairn";
    let team = s.create_webhook(&ctx(), Some(&ns("team")), url, &events(&["version.approved"]), SECRET).await.unwrap();
    let team_all = s.create_webhook(&ctx(), Some(&ns("team")), url, &events(&["*"]), SECRET).await.unwrap();
    let team_other_event =
        s.create_webhook(&ctx(), Some(&ns("team")), url, &events(&["version.rejected"]), SECRET).await.unwrap();
    let inactive = s.create_webhook(&ctx(), Some(&ns("team")), url, &events(&["*"]), SECRET).await.unwrap();
    s.set_webhook_active(&ctx(), &inactive.id, false).await.unwrap();
    let other = s.create_webhook(&ctx(), Some(&ns("other")), url, &events(&["*"]), SECRET).await.unwrap();
    let global =
        s.create_webhook(&ctx(), None, url, &events(&["version.approved", "policy.violation"]), SECRET).await.unwrap();
    assert_eq!(team.namespace.as_deref(), Some("team"));
    assert_eq!(global.namespace, None);
    assert!(team.active && !s.get_webhook(&inactive.id).await.unwrap().active);

    let payload = json!({ "model": "team/m", "version": 3 });
    let n = s.enqueue_webhook_event(&ns("team"), "version.approved", &payload).await.unwrap();
    assert_eq!(n, 3);
    let all = [&team.id, &team_all.id, &team_other_event.id, &inactive.id, &other.id, &global.id].map(String::as_str);
    let got: BTreeSet<String> = pending_hooks(s, &all).await.into_iter().collect();
    let want: BTreeSet<String> = [&team.id, &team_all.id, &global.id].into_iter().cloned().collect();
    assert_eq!(got, want);
    let d = &s.list_deliveries(&team.id, 10, None).await.unwrap().items[0];
    assert_eq!((d.event.as_str(), &d.payload, d.attempts), ("version.approved", &payload, 0));

    // An event of another namespace reaches that namespace's hooks and the global one that
    // subscribes to it; unknown events (and `ping`) are refused.
    assert_eq!(s.enqueue_webhook_event(&ns("other"), "policy.violation", &json!({})).await.unwrap(), 2);
    assert_eq!(s.enqueue_webhook_event(&ns("other"), "evaluation.failed", &json!({})).await.unwrap(), 1);
    assert!(matches!(s.enqueue_webhook_event(&ns("team"), "nope", &json!({})).await, Err(StoreError::Invalid(_))));
    assert!(matches!(s.enqueue_webhook_event(&ns("team"), PING_EVENT, &json!({})).await, Err(StoreError::Invalid(_))));

    // Listings: a namespace's hooks; `None` lists the global ones.
    let listed: Vec<String> = s.list_webhooks(Some(&ns("team"))).await.unwrap().into_iter().map(|w| w.id).collect();
    assert_eq!(listed.len(), 4);
    let globals = s.list_webhooks(None).await.unwrap();
    assert_eq!(globals.len(), 1);
    assert_eq!(globals[0].events, events(&["version.approved", "policy.violation"]));

    // A ping reaches one hook, even an inactive one's log, and is claimed only while active.
    let ping = s.ping_webhook(&ctx(), &inactive.id).await.unwrap();
    assert_eq!((ping.event.as_str(), ping.status.as_str()), (PING_EVENT, "pending"));
    let claimed = s.claim_due_deliveries(s.now() + 1, 60_000, 100).await.unwrap();
    assert!(claimed.iter().all(|d| d.webhook_id != inactive.id));
    assert_eq!(claimed.len(), 3 + 2 + 1);
    assert!(claimed.iter().all(|d| d.secret == SECRET && d.url == url));
    assert!(!format!("{claimed:?}").contains(SECRET));
}

async fn concurrent_claims_never_share_a_delivery(f: Fixture) {
    let s = &f.store;
    namespaces(s, &["team"]).await;
    let hook =
        s.create_webhook(&ctx(), Some(&ns("team")), "https://a.example/h", &events(&["*"]), SECRET).await.unwrap();
    for i in 0..60 {
        s.enqueue_webhook_event(&ns("team"), WEBHOOK_EVENTS[i % WEBHOOK_EVENTS.len()], &json!({ "i": i }))
            .await
            .unwrap();
    }
    // Two replicas, four workers each, claiming small batches at the same time.
    let other = Store::open(&f.url, &DbOptions::default()).await.unwrap();
    let now = s.now() + 1;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 { s.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due_deliveries(now, 60_000, 3).await.unwrap();
                if batch.is_empty() {
                    break mine;
                }
                mine.extend(batch.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 60, "every delivery is handed out");
    assert_eq!(unique.len(), 60, "no delivery is handed out twice");
    // Until the lease runs out nobody gets them again; after it, they are due again.
    assert!(s.claim_due_deliveries(now + 59_000, 60_000, 100).await.unwrap().is_empty());
    assert_eq!(s.claim_due_deliveries(now + 60_000, 60_000, 100).await.unwrap().len(), 60);
    let page = s.list_deliveries(&hook.id, 25, None).await.unwrap();
    assert_eq!(page.items.len(), 25);
    // Pages are newest first and do not overlap.
    let mut ids: Vec<String> = page.items.iter().map(|d| d.id.clone()).collect();
    let mut next = page.next;
    while let Some(c) = next {
        let p = s.list_deliveries(&hook.id, 25, Some(&c)).await.unwrap();
        ids.extend(p.items.iter().map(|d| d.id.clone()));
        next = p.next;
    }
    assert_eq!(ids.len(), 60);
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    other.close().await;
}

async fn failures_back_off_then_give_up(f: Fixture) {
    let s = &f.store;
    namespaces(s, &["team"]).await;
    let hook =
        s.create_webhook(&ctx(), Some(&ns("team")), "https://a.example/h", &events(&["*"]), SECRET).await.unwrap();
    s.enqueue_webhook_event(&ns("team"), "version.promoted", &json!({})).await.unwrap();
    let t0 = s.now() + 1;
    let d = s.claim_due_deliveries(t0, 1000, 10).await.unwrap().remove(0);
    assert_eq!(d.attempts, 0);
    s.record_delivery_failure(&d.id, Some(503), "receiver answered 503", t0, Some(t0 + 10_000)).await.unwrap();
    let got = s.get_delivery(&hook.id, &d.id).await.unwrap();
    assert_eq!((got.status.as_str(), got.attempts, got.last_status), ("pending", 1, Some(503)));
    assert_eq!((got.next_attempt_at, got.last_error.as_str()), (t0 + 10_000, "receiver answered 503"));
    // Not due before its time.
    assert!(s.claim_due_deliveries(t0 + 9_999, 1000, 10).await.unwrap().is_empty());
    let d = s.claim_due_deliveries(t0 + 10_000, 1000, 10).await.unwrap().remove(0);
    assert_eq!(d.attempts, 1);
    let long = "x".repeat(5000);
    s.record_delivery_failure(&d.id, None, &long, t0 + 10_000, None).await.unwrap();
    let got = s.get_delivery(&hook.id, &d.id).await.unwrap();
    assert_eq!((got.status.as_str(), got.attempts, got.last_status), ("failed", 2, None));
    assert_eq!(got.last_error.len(), 1000);
    assert!(s.claim_due_deliveries(t0 + 10_000_000, 1000, 10).await.unwrap().is_empty());
    // A late outcome of a lease that ran out does not change a settled delivery.
    s.record_delivery_success(&d.id, 200, t0 + 20_000).await.unwrap();
    assert_eq!(s.get_delivery(&hook.id, &d.id).await.unwrap().status, "failed");

    s.enqueue_webhook_event(&ns("team"), "version.promoted", &json!({})).await.unwrap();
    let d = s.claim_due_deliveries(s.now() + 1, 1000, 10).await.unwrap().remove(0);
    s.record_delivery_success(&d.id, 204, t0 + 30_000).await.unwrap();
    let got = s.get_delivery(&hook.id, &d.id).await.unwrap();
    assert_eq!((got.status.as_str(), got.attempts, got.last_status), ("delivered", 1, Some(204)));
    assert_eq!(got.delivered_at, Some(t0 + 30_000));
}

async fn redelivery_starts_again(f: Fixture) {
    let s = &f.store;
    namespaces(s, &["team"]).await;
    let hook =
        s.create_webhook(&ctx(), Some(&ns("team")), "https://a.example/h", &events(&["*"]), SECRET).await.unwrap();
    let other = s.create_webhook(&ctx(), None, "https://a.example/h", &events(&["*"]), SECRET).await.unwrap();
    s.enqueue_webhook_event(&ns("team"), "version.submitted", &json!({})).await.unwrap();
    let now = s.now() + 1;
    let claimed = s.claim_due_deliveries(now, 1000, 10).await.unwrap();
    let d = claimed.iter().find(|d| d.webhook_id == hook.id).unwrap();
    s.record_delivery_failure(&d.id, Some(500), "boom", now, None).await.unwrap();
    // A delivery is redelivered only through its own hook.
    assert!(matches!(s.redeliver(&ctx(), &other.id, &d.id).await, Err(StoreError::NotFound(_))));
    let again = s.redeliver(&ctx(), &hook.id, &d.id).await.unwrap();
    assert_eq!((again.status.as_str(), again.attempts), ("pending", 0));
    assert!(again.next_attempt_at <= s.now());
    let claimed = s.claim_due_deliveries(s.now() + 1, 1000, 10).await.unwrap();
    assert!(claimed.iter().any(|c| c.id == d.id));
    let events = s
        .list_audit_events(&AuditQuery { action: Some("webhook.redeliver".into()), limit: 10, ..AuditQuery::default() })
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
    assert_eq!(events.items[0].target, format!("webhook:{}/delivery:{}", hook.id, d.id));
}

async fn deleting_a_hook_or_its_namespace_removes_its_deliveries(f: Fixture) {
    let s = &f.store;
    namespaces(s, &["team", "gone"]).await;
    let hook =
        s.create_webhook(&ctx(), Some(&ns("team")), "https://a.example/h", &events(&["*"]), SECRET).await.unwrap();
    let doomed =
        s.create_webhook(&ctx(), Some(&ns("gone")), "https://a.example/h", &events(&["*"]), SECRET).await.unwrap();
    s.enqueue_webhook_event(&ns("team"), "version.submitted", &json!({})).await.unwrap();
    s.enqueue_webhook_event(&ns("gone"), "version.submitted", &json!({})).await.unwrap();
    let deleted = s.delete_webhook(&ctx(), &hook.id).await.unwrap();
    assert_eq!(deleted.id, hook.id);
    assert!(matches!(s.get_webhook(&hook.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.list_deliveries(&hook.id, 10, None).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.delete_webhook(&ctx(), &hook.id).await, Err(StoreError::NotFound(_))));
    s.delete_namespace(&ctx(), &ns("gone")).await.unwrap();
    assert!(matches!(s.get_webhook(&doomed.id).await, Err(StoreError::NotFound(_))));
    // Nothing is left to claim.
    assert!(s.claim_due_deliveries(s.now() + 1, 1000, 10).await.unwrap().is_empty());
}

async fn changes_are_audited_without_the_secret(f: Fixture) {
    let s = &f.store;
    namespaces(s, &["team"]).await;
    let hook =
        s.create_webhook(&ctx(), Some(&ns("team")), "https://a.example/h", &events(&["*"]), SECRET).await.unwrap();
    s.set_webhook_active(&ctx(), &hook.id, false).await.unwrap();
    s.ping_webhook(&ctx(), &hook.id).await.unwrap();
    s.delete_webhook(&ctx(), &hook.id).await.unwrap();
    let page = s.list_audit_events(&AuditQuery { limit: 1000, ..AuditQuery::default() }).await.unwrap();
    let target = format!("webhook:{}", hook.id);
    let actions: Vec<&str> =
        page.items.iter().filter(|e| e.target == target).map(|e| e.action.as_str()).collect::<Vec<_>>();
    assert_eq!(actions, ["webhook.create", "webhook.update", "webhook.ping", "webhook.delete"]);
    for e in &page.items {
        let text = format!("{e:?}");
        assert!(!text.contains(SECRET), "the secret is in an audit event: {text}");
    }
    let created = page.items.iter().find(|e| e.action == "webhook.create").unwrap();
    assert!(created.after_state.as_deref().unwrap().contains("https://a.example/h"));
    assert_eq!(created.actor, "user:alice");
    let report = s.verify_audit_chain(vec![]).await.unwrap();
    assert!(report.ok(), "{report:?}");
}

async fn bad_subscriptions_are_refused(f: Fixture) {
    let s = &f.store;
    namespaces(s, &["team"]).await;
    let url = "https://a.example/h";
    for bad in [vec![], events(&["version.deleted"]), events(&[PING_EVENT]), events(&["*", "*"])] {
        let r = s.create_webhook(&ctx(), Some(&ns("team")), url, &bad, SECRET).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{bad:?}: {r:?}");
    }
    let r = s.create_webhook(&ctx(), Some(&ns("nowhere")), url, &events(&["*"]), SECRET).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    assert!(s.list_webhooks(Some(&ns("team"))).await.unwrap().is_empty());
}
