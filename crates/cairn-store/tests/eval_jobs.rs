//! Evaluation jobs on SQLite and PostgreSQL: a submission queues the required suites that
//! name a harness (once, and not those already passed); workers claim by priority, each job
//! exactly once also when several workers on two replicas race; a lost lease puts the job back
//! and uses up an attempt; a failure is retried after a doubling backoff, then fails for good
//! with a webhook event; completing stores the result in the same transaction; only the
//! holder may complete or fail a job; cancelled jobs refuse results; every change is audited.

use std::collections::BTreeSet;
use std::sync::Arc;

use cairn_core::lifecycle::Stage;
use cairn_core::{ModelRef, Namespace, VersionSelector};
use cairn_store::eval_job::{Claim, JobFilter, NewJob};
use cairn_store::evaluation::NewEvalResult;
use cairn_store::lifecycle::LifecycleChange;
use cairn_store::model::NewModel;
use cairn_store::version::NewVersion;
use cairn_store::{AuditContext, Store, StoreError};
use cairn_test_utils::ManualClock;
use serde_json::json;

cairn_test_utils::store_suite!(
    submission_queues_required_suites_with_a_harness_once,
    claims_follow_priority_and_racing_workers_take_each_job_once,
    lost_leases_and_failures_are_retried_then_fail_for_good,
    only_the_holder_completes_and_cancelled_jobs_refuse_results,
);

const T0: i64 = 1_780_000_000_000;

fn ctx(who: &str) -> AuditContext {
    AuditContext { actor: format!("user:{who}"), ..AuditContext::default() }
}

fn harness_suite(command: bool) -> serde_json::Value {
    let mut s = json!({"metrics": [{"name": "accuracy", "at_least": 0.9}]});
    if command {
        s["harness"] = json!({"command": ["python3", "eval.py"], "timeout_secs": 60});
    }
    s
}

/// A model `team/m` with `versions` versions, suites `acc` (required, with a harness),
/// `manual` (required, no harness) and `extra` (optional, with a harness).
async fn setup(store: &Store, versions: i64) -> ModelRef {
    let model = ModelRef::parse("team/m").unwrap();
    store.create_model(&ctx("admin"), &NewModel::named(model.clone())).await.unwrap();
    let ns = Namespace::parse("team").unwrap();
    store.put_eval_suite(&ctx("sec"), &ns, "acc", true, &harness_suite(true)).await.unwrap();
    store.put_eval_suite(&ctx("sec"), &ns, "manual", true, &harness_suite(false)).await.unwrap();
    store.put_eval_suite(&ctx("sec"), &ns, "extra", false, &harness_suite(true)).await.unwrap();
    for _ in 0..versions {
        store.create_version(&ctx("olga"), &model, &NewVersion::default()).await.unwrap();
    }
    model
}

fn change(from: Stage, round: i64, to: Stage, action: &str) -> LifecycleChange {
    LifecycleChange {
        from,
        round,
        to: Some(to),
        action: action.into(),
        reason: format!("{action} in a test"),
        submitter: (to == Stage::Submitted).then(|| "olga".to_owned()),
        review: None,
        policy_results: Vec::new(),
        deprecate_previous: true,
        events: Vec::new(),
    }
}

async fn submit(store: &Store, model: &ModelRef, n: i64) {
    let round = store.version_lifecycle(model, &VersionSelector::Number(n)).await.unwrap().review_round;
    let from = store.version_lifecycle(model, &VersionSelector::Number(n)).await.unwrap().stage;
    store
        .apply_lifecycle_change(&ctx("olga"), model, n, &change(from, round, Stage::Submitted, "submit"))
        .await
        .unwrap();
}

fn claim<'a>(worker: &'a str, suites: &'a [String]) -> Claim<'a> {
    Claim { worker, namespaces: None, suites, lease_ms: 60_000 }
}

fn result(suite: &str, passed: bool) -> NewEvalResult {
    NewEvalResult {
        suite: suite.into(),
        passed,
        metrics: json!([{"name": "accuracy", "value": if passed { 0.95 } else { 0.5 }, "passed": passed}]),
        config: json!({}),
        submitted_by: "evaluator".into(),
    }
}

async fn jobs(store: &Store, model: &ModelRef, version: Option<i64>) -> Vec<cairn_store::eval_job::EvalJob> {
    let f = JobFilter { model: Some(model.clone()), version, limit: 100, ..Default::default() };
    store.list_eval_jobs(&f).await.unwrap()
}

async fn audit(store: &Store) -> Vec<cairn_audit::AuditRecord> {
    store.audit_records(0, None, 100_000).await.unwrap()
}

async fn audit_actions(store: &Store) -> Vec<String> {
    audit(store).await.into_iter().map(|e| e.action).collect()
}

async fn submission_queues_required_suites_with_a_harness_once(store: Store, _url: String) {
    let model = setup(&store, 2).await;
    // Version 2 already passed the suite: nothing to run for it.
    store.submit_eval_result(&ctx("bob"), &model, &VersionSelector::Number(2), &result("acc", true)).await.unwrap();
    submit(&store, &model, 1).await;
    submit(&store, &model, 2).await;
    let v1 = jobs(&store, &model, Some(1)).await;
    assert_eq!(v1.len(), 1, "only the required suite with a harness: {v1:?}");
    assert_eq!((v1[0].suite.as_str(), v1[0].state.as_str(), v1[0].created_by.as_str()), ("acc", "queued", "user:olga"));
    assert_eq!((v1[0].attempts, v1[0].max_attempts), (0, 3));
    assert!(jobs(&store, &model, Some(2)).await.is_empty(), "a passed suite is not queued again");

    // Sent back and resubmitted while the job is still queued: no second job.
    let lc = store.version_lifecycle(&model, &VersionSelector::Number(1)).await.unwrap();
    let back = change(Stage::Submitted, lc.review_round, Stage::ChangesRequested, "reject");
    store.apply_lifecycle_change(&ctx("mia"), &model, 1, &back).await.unwrap();
    submit(&store, &model, 1).await;
    assert_eq!(jobs(&store, &model, Some(1)).await.len(), 1);

    // By hand: the same suite returns the active job; another suite is a new one.
    let same = NewJob { suite: "acc".into(), priority: 5, max_attempts: 3 };
    let (j, created) = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(1), &same).await.unwrap();
    assert!(!created);
    assert_eq!(j.id, v1[0].id);
    let extra = NewJob { suite: "extra".into(), priority: 0, max_attempts: 1 };
    let (_, created) = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(1), &extra).await.unwrap();
    assert!(created);
    let missing = NewJob { suite: "nope".into(), priority: 0, max_attempts: 3 };
    let e = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(1), &missing).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound(ref m) if m.contains("nope")), "{e}");
    let bad = NewJob { suite: "acc".into(), priority: 0, max_attempts: 0 };
    let e = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(1), &bad).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");

    let actions = audit_actions(&store).await;
    assert_eq!(actions.iter().filter(|a| *a == "eval.job.queue").count(), 2, "{actions:?}");
    let submit_event = audit(&store).await.into_iter().find(|e| e.action == "version.submit").unwrap();
    let after = submit_event.details.after.unwrap_or_default();
    assert!(after.contains("\"eval_jobs\":[\"acc\"]"), "{after}");
}

async fn claims_follow_priority_and_racing_workers_take_each_job_once(store: Store, url: String) {
    let model = setup(&store, 12).await;
    let mut queued = Vec::new();
    for n in 1..=12 {
        let job = NewJob { suite: "extra".into(), priority: if n == 7 { 10 } else { 0 }, max_attempts: 3 };
        let (j, _) = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(n), &job).await.unwrap();
        queued.push(j.id);
    }
    // A worker limited to another suite finds nothing; an empty namespace list neither.
    let other = vec!["acc".to_owned()];
    assert!(store.claim_eval_job(&ctx("w"), &claim("w0", &other)).await.unwrap().is_none());
    let none: Vec<String> = Vec::new();
    let c = Claim { worker: "w0", namespaces: Some(&none), suites: &[], lease_ms: 60_000 };
    assert!(store.claim_eval_job(&ctx("w"), &c).await.unwrap().is_none());
    let e = store.claim_eval_job(&ctx("w"), &claim("", &[])).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");

    // Highest priority first, then the oldest.
    let first = store.claim_eval_job(&ctx("w"), &claim("w0", &[])).await.unwrap().unwrap();
    assert_eq!((first.version, first.state.as_str(), first.attempts), (7, "running", 1));
    assert_eq!((first.worker.as_deref(), first.claimed_by.as_deref()), (Some("w0"), Some("user:w")));
    let second = store.claim_eval_job(&ctx("w"), &claim("w0", &[])).await.unwrap().unwrap();
    assert_eq!(second.version, 1);

    // Eight workers on two replicas race for the other ten jobs: each is taken exactly once.
    let replica = cairn_test_utils::reopen_store(&url).await;
    let stores = Arc::new([store.clone(), replica]);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let stores = stores.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("w{i}");
            let mut got = Vec::new();
            loop {
                match stores[i % 2].claim_eval_job(&ctx("w"), &claim(&name, &[])).await {
                    Ok(Some(j)) => got.push(j.id),
                    Ok(None) => return got,
                    Err(StoreError::Busy(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut taken = Vec::new();
    for t in tasks {
        taken.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<&String> = taken.iter().collect();
    assert_eq!((taken.len(), distinct.len()), (10, 10), "{taken:?}");
    let all = jobs(&store, &model, None).await;
    assert!(all.iter().all(|j| j.state == "running" && j.attempts == 1), "{all:?}");
    let claims = audit_actions(&store).await.iter().filter(|a| *a == "eval.job.claim").count();
    assert_eq!(claims, 12);
}

async fn lost_leases_and_failures_are_retried_then_fail_for_good(store: Store, _url: String) {
    let clock = ManualClock::at(T0);
    let store = store.with_clock(clock.clone());
    let model = setup(&store, 2).await;
    let hook = store
        .create_webhook(
            &ctx("admin"),
            Some(&Namespace::parse("team").unwrap()),
            "https://hooks.example/x",
            &["evaluation.failed".to_owned()],
            "a-secret-of-some-length",
        )
        .await
        .unwrap();
    let job = NewJob { suite: "extra".into(), priority: 0, max_attempts: 2 };
    let (j, _) = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(1), &job).await.unwrap();

    // A worker takes it and goes silent; the lease runs out.
    let c = store.claim_eval_job(&ctx("w"), &claim("lost", &[])).await.unwrap().unwrap();
    assert_eq!(c.lease_until, Some(T0 + 60_000));
    clock.advance(30_000);
    let renewed = store.heartbeat_eval_job(&ctx("w"), &j.id, "lost", 60_000).await.unwrap();
    assert_eq!(renewed.lease_until, Some(T0 + 90_000), "a heartbeat renews the lease");
    // Another account's heartbeat changes nothing.
    let other = store.heartbeat_eval_job(&ctx("mallory"), &j.id, "lost", 600_000).await.unwrap();
    assert_eq!(other.lease_until, Some(T0 + 90_000));
    clock.advance(60_001);
    let again = store.claim_eval_job(&ctx("w"), &claim("w2", &[])).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts, again.worker.as_deref()), (j.id.as_str(), 2, Some("w2")));
    assert!(again.error.contains("lost") && again.error.contains("lease"), "{}", again.error);
    // The silent worker comes back: the job is no longer its own.
    let e = store.complete_eval_job(&ctx("w"), &j.id, "lost", &result("extra", true)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(ref m) if m.contains("w2")), "{e}");

    // The second attempt fails: it was the last one, so the job fails for good.
    let done = store.fail_eval_job(&ctx("w"), &j.id, "w2", "harness exited with status 3\u{7}", 30_000).await.unwrap();
    assert_eq!((done.state.as_str(), done.error.as_str()), ("failed", "harness exited with status 3"));
    assert!(done.finished_at.is_some());
    let deliveries = store.list_deliveries(&hook.id, 100, None).await.unwrap().items;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!((deliveries[0].event.as_str(), &deliveries[0].payload["job"]), ("evaluation.failed", &json!(j.id)));
    assert_eq!(deliveries[0].payload["error"], "harness exited with status 3");

    // With attempts left, a failure waits for its backoff: 30 s, then 60 s.
    let job = NewJob { suite: "extra".into(), priority: 0, max_attempts: 3 };
    let (k, _) = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(2), &job).await.unwrap();
    store.claim_eval_job(&ctx("w"), &claim("w3", &[])).await.unwrap().unwrap();
    let retry = store.fail_eval_job(&ctx("w"), &k.id, "w3", "no results", 30_000).await.unwrap();
    assert_eq!((retry.state.as_str(), retry.not_before), ("queued", clock.now() + 30_000));
    assert!(store.claim_eval_job(&ctx("w"), &claim("w3", &[])).await.unwrap().is_none(), "not before its backoff");
    clock.advance(30_000);
    store.claim_eval_job(&ctx("w"), &claim("w3", &[])).await.unwrap().unwrap();
    let retry = store.fail_eval_job(&ctx("w"), &k.id, "w3", "no results", 30_000).await.unwrap();
    assert_eq!(retry.not_before, clock.now() + 60_000);

    let actions = audit_actions(&store).await;
    for a in ["eval.job.queue", "eval.job.claim", "eval.job.expire", "eval.job.fail"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
    // The expiry is the system's doing, not the next claimant's.
    let expire = audit(&store).await.into_iter().find(|e| e.action == "eval.job.expire").unwrap();
    assert_eq!(expire.details.actor, "system");
}

trait Now {
    fn now(&self) -> i64;
}

impl Now for Arc<ManualClock> {
    fn now(&self) -> i64 {
        cairn_store::Clock::now_ms(self.as_ref())
    }
}

async fn only_the_holder_completes_and_cancelled_jobs_refuse_results(store: Store, _url: String) {
    let model = setup(&store, 2).await;
    let job = NewJob { suite: "acc".into(), priority: 0, max_attempts: 3 };
    let (j, _) = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(1), &job).await.unwrap();
    store.claim_eval_job(&ctx("w"), &claim("w1", &[])).await.unwrap().unwrap();

    // Another worker name, or the same name under another account, may not.
    for (who, worker) in [("w", "w9"), ("mallory", "w1")] {
        let e = store.complete_eval_job(&ctx(who), &j.id, worker, &result("acc", true)).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        let e = store.fail_eval_job(&ctx(who), &j.id, worker, "x", 0).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    }
    // Results for another suite are refused.
    let e = store.complete_eval_job(&ctx("w"), &j.id, "w1", &result("extra", true)).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");

    let (done, stored) = store.complete_eval_job(&ctx("w"), &j.id, "w1", &result("acc", true)).await.unwrap();
    assert_eq!((done.state.as_str(), done.result_id.as_deref()), ("succeeded", Some(stored.id.as_str())));
    let results = store.eval_results(&model, &VersionSelector::Number(1)).await.unwrap();
    assert_eq!(results.len(), 1);
    assert!(results[0].passed);
    // Done is done: no second completion, no cancellation.
    let e = store.complete_eval_job(&ctx("w"), &j.id, "w1", &result("acc", true)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    let e = store.cancel_eval_job(&ctx("olga"), &j.id, "late").await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(ref m) if m.contains("succeeded")), "{e}");

    // A running job is cancelled: its heartbeat shows it, and its results are refused.
    let (k, _) = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(2), &job).await.unwrap();
    store.claim_eval_job(&ctx("w"), &claim("w1", &[])).await.unwrap().unwrap();
    let c = store.cancel_eval_job(&ctx("olga"), &k.id, "wrong dataset").await.unwrap();
    assert_eq!((c.state.as_str(), c.error.as_str()), ("cancelled", "wrong dataset"));
    let hb = store.heartbeat_eval_job(&ctx("w"), &k.id, "w1", 60_000).await.unwrap();
    assert_eq!(hb.state, "cancelled");
    let e = store.complete_eval_job(&ctx("w"), &k.id, "w1", &result("acc", true)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(ref m) if m.contains("cancelled")), "{e}");
    assert!(store.eval_results(&model, &VersionSelector::Number(2)).await.unwrap().is_empty());
    // A cancelled job no longer blocks queuing the suite again.
    let (again, created) = store.queue_eval_job(&ctx("olga"), &model, &VersionSelector::Number(2), &job).await.unwrap();
    assert!(created && again.id != k.id);

    // Listing: by state, newest first, paged.
    let f = JobFilter { state: Some("cancelled".into()), limit: 10, ..Default::default() };
    assert_eq!(store.list_eval_jobs(&f).await.unwrap().len(), 1);
    let f = JobFilter { state: Some("bogus".into()), limit: 10, ..Default::default() };
    assert!(matches!(store.list_eval_jobs(&f).await, Err(StoreError::Invalid(_))));
    let page1 = store.list_eval_jobs(&JobFilter { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(page1[0].id, again.id);
    let page2 = store
        .list_eval_jobs(&JobFilter { limit: 2, before: Some(page1[1].id.clone()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].id, j.id);

    let actions = audit_actions(&store).await;
    for a in ["eval.job.complete", "eval.result.submit", "eval.job.cancel"] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}
