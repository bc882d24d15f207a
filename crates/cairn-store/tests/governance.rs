//! Governance storage on SQLite and PostgreSQL: lifecycle changes are compare-and-set (of
//! racing reviewers on two replicas exactly one wins), promotion to production moves the
//! alias and deprecates the version it replaces, semantic version labels select and sort by
//! precedence, and policies keep their versions.

use std::sync::Arc;

use cairn_core::lifecycle::{Gate, Semver, Stage};
use cairn_core::{ModelRef, VersionSelector};
use cairn_store::lifecycle::{LifecycleChange, NewReview, PolicyResultRecord};
use cairn_store::model::NewModel;
use cairn_store::version::{ListVersions, NewVersion, VersionOrder};
use cairn_store::{AuditContext, Backend, Store, StoreError};

cairn_test_utils::store_suite!(
    racing_reviewers_on_two_replicas_one_wins,
    production_moves_the_alias_and_deprecates_the_previous,
    semver_labels_select_and_sort_by_precedence,
    policies_keep_their_versions,
    policy_results_are_kept_per_evaluation,
    migration_keeps_stored_policy_results,
);

fn ctx(who: &str) -> AuditContext {
    AuditContext { actor: format!("user:{who}"), ..AuditContext::default() }
}

fn mref(s: &str) -> ModelRef {
    ModelRef::parse(s).unwrap()
}

fn change(from: Stage, round: i64, to: Option<Stage>, action: &str) -> LifecycleChange {
    LifecycleChange {
        from,
        round,
        to,
        action: action.into(),
        reason: format!("{action} in a test"),
        submitter: None,
        review: None,
        policy_results: Vec::new(),
        deprecate_previous: true,
        events: Vec::new(),
    }
}

/// Walks version `n` from draft to `target` (one of the stages on the main path).
async fn walk(store: &Store, model: &ModelRef, n: i64, target: Stage, deprecate_previous: bool) {
    let path = [
        (Stage::Draft, Stage::Submitted, "submit"),
        (Stage::Submitted, Stage::ApprovedStaging, "approve"),
        (Stage::ApprovedStaging, Stage::Staging, "promote"),
        (Stage::Staging, Stage::ApprovedProd, "approve"),
        (Stage::ApprovedProd, Stage::Production, "promote"),
    ];
    for (from, to, action) in path {
        let round = i64::from(from != Stage::Draft);
        let mut c = change(from, round, Some(to), action);
        c.deprecate_previous = deprecate_previous;
        if from == Stage::Draft {
            c.submitter = Some("olga".into());
        }
        store.apply_lifecycle_change(&ctx("olga"), model, n, &c).await.unwrap();
        if to == target {
            return;
        }
    }
}

async fn racing_reviewers_on_two_replicas_one_wins(store: Store, url: String) {
    let model = mref("risk/fraud");
    store.create_model(&ctx("admin"), &NewModel::named(model.clone())).await.unwrap();
    store.create_version(&ctx("olga"), &model, &NewVersion::default()).await.unwrap();
    walk(&store, &model, 1, Stage::Submitted, true).await;
    let replica = cairn_test_utils::reopen_store(&url).await;
    let stores = Arc::new([store.clone(), replica]);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let stores = stores.clone();
        let model = model.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = change(Stage::Submitted, 1, Some(Stage::ApprovedStaging), "approve");
            c.review = Some(NewReview {
                gate: Gate::Staging,
                reviewer: format!("reviewer{i}"),
                role: "mrc".into(),
                decision: "approve".into(),
                rationale: "looks right".into(),
            });
            stores[i % 2].apply_lifecycle_change(&ctx(&format!("reviewer{i}")), &model, 1, &c).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(view) => {
                won += 1;
                assert_eq!(view.stage, Stage::ApprovedStaging);
            }
            Err(StoreError::Conflict(m)) => assert!(m.contains("changed meanwhile"), "{m}"),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one racing approval moves the version");
    let view = store.version_lifecycle(&model, &VersionSelector::Number(1)).await.unwrap();
    assert_eq!(view.reviews.len(), 1, "the losers left no review behind");
    assert_eq!(view.transitions.len(), 2, "submit and one approval");
}

async fn production_moves_the_alias_and_deprecates_the_previous(store: Store, _url: String) {
    let model = mref("risk/fraud");
    store.create_model(&ctx("admin"), &NewModel::named(model.clone())).await.unwrap();
    for _ in 0..3 {
        store.create_version(&ctx("olga"), &model, &NewVersion::default()).await.unwrap();
    }
    walk(&store, &model, 1, Stage::Production, true).await;
    let prod = store.get_version(&model, &VersionSelector::parse("@production").unwrap()).await.unwrap();
    assert_eq!((prod.version, prod.stage.as_str()), (1, "production"));

    walk(&store, &model, 2, Stage::Production, true).await;
    let prod = store.get_version(&model, &VersionSelector::parse("@production").unwrap()).await.unwrap();
    assert_eq!(prod.version, 2);
    let v1 = store.version_lifecycle(&model, &VersionSelector::Number(1)).await.unwrap();
    assert_eq!(v1.stage, Stage::Deprecated);
    let last = v1.transitions.last().unwrap();
    assert_eq!((last.action.as_str(), last.reason.as_str()), ("deprecate", "replaced in production by version 2"));

    // Told otherwise, the previous version stays in production.
    walk(&store, &model, 3, Stage::Production, false).await;
    let v2 = store.get_version(&model, &VersionSelector::Number(2)).await.unwrap();
    assert_eq!(v2.stage, "production");
    let prod = store.get_version(&model, &VersionSelector::parse("@production").unwrap()).await.unwrap();
    assert_eq!(prod.version, 3);

    // A stale decision (made on an old stage) changes nothing.
    let stale = change(Stage::ApprovedProd, 1, Some(Stage::Production), "promote");
    assert!(matches!(
        store.apply_lifecycle_change(&ctx("olga"), &model, 3, &stale).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn semver_labels_select_and_sort_by_precedence(store: Store, _url: String) {
    let model = mref("team/labels");
    store.create_model(&ctx("admin"), &NewModel::named(model.clone())).await.unwrap();
    for label in [Some("1.10.0"), Some("1.2.0"), None, Some("1.2.0-rc.1"), Some("0.9.0")] {
        let new = NewVersion { semver: label.map(|l| Semver::parse(l).unwrap()), ..NewVersion::default() };
        store.create_version(&ctx("olga"), &model, &new).await.unwrap();
    }
    let dup = NewVersion { semver: Some(Semver::parse("1.2.0").unwrap()), ..NewVersion::default() };
    assert!(matches!(store.create_version(&ctx("olga"), &model, &dup).await, Err(StoreError::Conflict(_))));
    let bad = NewVersion { code_commit: "abc".into(), ..NewVersion::default() };
    assert!(matches!(store.create_version(&ctx("olga"), &model, &bad).await, Err(StoreError::Invalid(_))));
    let v = store.get_version(&model, &VersionSelector::parse("1.2.0").unwrap()).await.unwrap();
    assert_eq!(v.version, 2);
    let missing = store.get_version(&model, &VersionSelector::parse("3.0.0").unwrap()).await.unwrap_err().to_string();
    assert!(missing.contains("no version labelled 3.0.0"), "{missing}");

    // Page through in semver order, one at a time.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let q = ListVersions { order: VersionOrder::Semver, limit: 1, after: after.clone(), ..ListVersions::default() };
        let page = store.list_versions(&model, &q).await.unwrap();
        seen.extend(page.items.iter().map(|v| v.semver.clone().unwrap_or_default()));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["", "0.9.0", "1.2.0-rc.1", "1.2.0", "1.10.0"]);
}

async fn policies_keep_their_versions(store: Store, _url: String) {
    let doc = |sev: &str| serde_json::json!({"name": "p", "severity": sev, "rules": []});
    let a = store.apply_policy(&ctx("sec"), "p", "low", &doc("low"), "a", "active").await.unwrap();
    assert_eq!((a.policy.version, a.created), (1, true));
    let same = store.apply_policy(&ctx("sec"), "p", "low", &doc("low"), "a", "active").await.unwrap();
    assert_eq!((same.policy.version, same.created), (1, false));
    let b = store.apply_policy(&ctx("sec"), "p", "high", &doc("high"), "b", "active").await.unwrap();
    assert_eq!(b.policy.version, 2);
    let active = store.list_policies(Some("active"), false).await.unwrap();
    assert_eq!(active.iter().map(|p| p.version).collect::<Vec<_>>(), [2], "one active version per policy");
    let back = store.set_policy_status(&ctx("sec"), "p", 1, "active").await.unwrap();
    assert_eq!(back.status, "active");
    let all = store.list_policies(None, true).await.unwrap();
    let statuses: Vec<_> = all.iter().map(|p| (p.version, p.status.as_str())).collect();
    assert_eq!(statuses, [(1, "active"), (2, "inactive")]);
    assert!(matches!(store.set_policy_status(&ctx("sec"), "p", 1, "on").await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.get_policy("p", Some(9)).await, Err(StoreError::NotFound(_))));
}

fn result(evaluation: &str, policy: &str, rule: &str, outcome: &str, at: i64) -> PolicyResultRecord {
    PolicyResultRecord {
        evaluation: evaluation.into(),
        target_stage: "submitted".into(),
        policy: policy.into(),
        policy_version: 3,
        severity: "high".into(),
        rule_id: rule.into(),
        action: "block".into(),
        outcome: outcome.into(),
        message: format!("{rule}: licence \"proprietary\" not in [\"apache-2.0\"] — ✗ {outcome}"),
        waived: outcome == "fail" && policy == "waived",
        blocked: outcome != "pass" && policy != "waived",
        at,
    }
}

fn rules(results: &[PolicyResultRecord]) -> Vec<(&str, &str, &str)> {
    results.iter().map(|r| (r.evaluation.as_str(), r.policy.as_str(), r.rule_id.as_str())).collect()
}

async fn policy_results_are_kept_per_evaluation(store: Store, _url: String) {
    let model = mref("risk/scored");
    store.create_model(&ctx("admin"), &NewModel::named(model.clone())).await.unwrap();
    store.create_version(&ctx("olga"), &model, &NewVersion::default()).await.unwrap();
    let first = [
        result("e1", "licence", "allowed", "pass", 10),
        result("licence", "licence", "declared", "fail", 10),
        result("e1", "waived", "accuracy", "fail", 10),
        result("e1", "zeta", "broken", "error", 10),
    ];
    // The second element belongs to another evaluation id: kept apart, in order.
    let refused = store.record_lifecycle_refusal(&ctx("olga"), &model, 1, "submit", "blocked", &first).await;
    refused.unwrap();
    let failures = store.last_policy_failures(&model, &VersionSelector::Number(1)).await.unwrap();
    assert_eq!(rules(&failures), [("e1", "waived", "accuracy"), ("e1", "zeta", "broken")]);
    assert_eq!(failures[0], first[2], "every field comes back as stored");
    assert_eq!(failures[1], first[3]);

    let mut submit = change(Stage::Draft, 0, Some(Stage::Submitted), "submit");
    submit.submitter = Some("olga".into());
    submit.policy_results =
        vec![result("e2", "licence", "allowed", "pass", 20), result("e2", "size", "max", "pass", 20)];
    store.apply_lifecycle_change(&ctx("olga"), &model, 1, &submit).await.unwrap();
    assert!(store.last_policy_failures(&model, &VersionSelector::Number(1)).await.unwrap().is_empty());

    // Evaluations newest first, each in rule order; the limit may cut one short.
    let all = store.policy_results(&model, &VersionSelector::Number(1), 100).await.unwrap();
    assert_eq!(
        rules(&all),
        [
            ("e2", "licence", "allowed"),
            ("e2", "size", "max"),
            ("e1", "waived", "accuracy"),
            ("e1", "zeta", "broken"),
            ("licence", "licence", "declared"),
            ("e1", "licence", "allowed"),
        ]
    );
    assert_eq!(all[3], first[3]);
    let three = store.policy_results(&model, &VersionSelector::Number(1), 3).await.unwrap();
    assert_eq!(rules(&three), rules(&all[..3]));
}

async fn migration_keeps_stored_policy_results(store: Store, url: String) {
    let model = mref("risk/legacy");
    store.create_model(&ctx("admin"), &NewModel::named(model.clone())).await.unwrap();
    let v = store.create_version(&ctx("olga"), &model, &NewVersion::default()).await.unwrap();
    // As an upgrade from a release that kept one row per rule: the old table with rows in it,
    // the new one gone, the migration forgotten; then reopen.
    let (id, boolean) = match store.backend() {
        Backend::Sqlite => ("INTEGER PRIMARY KEY", "INTEGER"),
        Backend::Postgres => ("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "BOOLEAN"),
    };
    let mut tx = store.db().begin().await.unwrap();
    let mut conn = tx.conn();
    conn.execute("DROP TABLE policy_evaluations", vec![]).await.unwrap();
    conn.execute("DELETE FROM _sqlx_migrations WHERE version = 20", vec![]).await.unwrap();
    let ddl = format!(
        "CREATE TABLE policy_results (id {id}, version_id BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE, \
         evaluation TEXT NOT NULL, target_stage TEXT NOT NULL, policy TEXT NOT NULL, policy_version BIGINT NOT NULL, \
         severity TEXT NOT NULL, rule_id TEXT NOT NULL, action TEXT NOT NULL, outcome TEXT NOT NULL, \
         message TEXT NOT NULL, waived {boolean} NOT NULL DEFAULT FALSE, blocked {boolean} NOT NULL DEFAULT FALSE, \
         at BIGINT NOT NULL)"
    );
    conn.execute(sqlx::AssertSqlSafe(ddl), vec![]).await.unwrap();
    let old = [
        result("e1", "licence", "allowed", "pass", 10),
        result("e1", "waived", "accuracy", "fail", 10),
        result("e1", "zeta", "broken", "error", 10),
        result("e2", "licence", "allowed", "fail", 20),
        result("e2", "size", "max", "pass", 20),
    ];
    for r in &old {
        conn.execute(
            "INSERT INTO policy_results (version_id, evaluation, target_stage, policy, policy_version, severity, \
             rule_id, action, outcome, message, waived, blocked, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            vec![
                v.id.into(),
                r.evaluation.clone().into(),
                r.target_stage.clone().into(),
                r.policy.clone().into(),
                r.policy_version.into(),
                r.severity.clone().into(),
                r.rule_id.clone().into(),
                r.action.clone().into(),
                r.outcome.clone().into(),
                r.message.clone().into(),
                r.waived.into(),
                r.blocked.into(),
                r.at.into(),
            ],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    store.close().await;
    let store = cairn_test_utils::reopen_store(&url).await;
    let all = store.policy_results(&model, &VersionSelector::Number(1), 100).await.unwrap();
    let expected: Vec<PolicyResultRecord> = old[3..].iter().chain(&old[..3]).cloned().collect();
    assert_eq!(all, expected, "every result, every field, evaluations newest first and rules in order");
    let failures = store.last_policy_failures(&model, &VersionSelector::Number(1)).await.unwrap();
    assert_eq!(failures, [old[3].clone()]);
    store.close().await;
}
