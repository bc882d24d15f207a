//! Searching by metric values (`metrics.accuracy > 0.9`), on SQLite and PostgreSQL: a
//! version's value of a metric is the latest evaluation result that measured it, else what its
//! card claims (an entry without dataset, split or slice first); a model matches when any of
//! its versions does; replacing a card replaces its claims but not what was measured; and
//! migration 0017 fills the values of versions stored before it with the same rules.

use cairn_core::filter::parse;
use cairn_core::{ModelRef, VersionSelector};
use cairn_store::evaluation::{NewEvalResult, VersionCard};
use cairn_store::model::{ListModels, NewModel};
use cairn_store::version::{ListVersions, NewVersion};
use cairn_store::{AuditContext, Store, StoreError};
use serde_json::{Value, json};

cairn_test_utils::store_suite!(
    versions_and_models_match_measured_else_claimed_values,
    migration_fills_the_metrics_of_older_versions,
);

fn ctx() -> AuditContext {
    AuditContext { actor: "user:olga".into(), ..AuditContext::default() }
}

fn mref(s: &str) -> ModelRef {
    ModelRef::parse(s).unwrap()
}

/// A stored card claiming these metric entries.
fn card(metrics: Value) -> VersionCard {
    let json = json!({"schema": "cairn.card/v1", "model": {"name": "m"}, "evaluation": {"metrics": metrics}});
    VersionCard {
        source_name: "card.json".into(),
        source: json.to_string(),
        digest: format!("sha256:{}", "0".repeat(64)),
        card: json.to_string(),
        completeness: "{}".into(),
        findings: "[]".into(),
        created_at: 0,
        created_by: String::new(),
    }
}

async fn measure(store: &Store, model: &str, n: i64, values: &[(&str, Option<f64>)]) {
    let metrics: Vec<Value> = values.iter().map(|(k, v)| json!({"name": k, "value": v, "passed": true})).collect();
    let r = NewEvalResult {
        suite: "adhoc".into(),
        passed: true,
        metrics: Value::Array(metrics),
        config: json!({}),
        submitted_by: "olga".into(),
    };
    store.submit_eval_result(&ctx(), &mref(model), &VersionSelector::Number(n), &r).await.unwrap();
}

/// nlp/bert 1: card accuracy 0.95 (after a sliced 0.5); 2: card 0.85, measured 0.93 and f1 0.8;
/// 3: nothing. cv/yolo 1: card map 0.6 on coco only. nlp/gpt: no versions.
async fn registry(store: &Store) {
    for m in ["nlp/bert", "cv/yolo", "nlp/gpt"] {
        store.create_model(&ctx(), &NewModel::named(mref(m))).await.unwrap();
    }
    for _ in 0..3 {
        store.create_version(&ctx(), &mref("nlp/bert"), &NewVersion::default()).await.unwrap();
    }
    store.create_version(&ctx(), &mref("cv/yolo"), &NewVersion::default()).await.unwrap();
    let sliced = json!([
        {"name": "accuracy", "value": 0.5, "slice": "short texts"},
        {"name": "accuracy", "value": 0.95},
        {"name": "accuracy", "value": 0.1}
    ]);
    store.set_version_card(&ctx(), &mref("nlp/bert"), &VersionSelector::Number(1), &card(sliced)).await.unwrap();
    let claimed = json!([{"name": "accuracy", "value": 0.85}, {"name": "latency_ms", "value": 12}]);
    store.set_version_card(&ctx(), &mref("nlp/bert"), &VersionSelector::Number(2), &card(claimed)).await.unwrap();
    measure(store, "nlp/bert", 2, &[("accuracy", Some(0.93)), ("f1", Some(0.8)), ("recall", None)]).await;
    let map = json!([{"name": "map", "value": 0.6, "dataset": "coco"}]);
    store.set_version_card(&ctx(), &mref("cv/yolo"), &VersionSelector::Number(1), &card(map)).await.unwrap();
}

async fn models(store: &Store, filter: &str) -> Vec<String> {
    let q = ListModels { filter: Some(parse(filter).unwrap()), limit: 100, ..ListModels::default() };
    let page = store.list_models(&q).await.unwrap_or_else(|e| panic!("{filter}: {e}"));
    page.items.iter().map(|m| m.full_name()).collect()
}

async fn versions(store: &Store, model: &str, filter: &str) -> Vec<i64> {
    let q = ListVersions { filter: Some(parse(filter).unwrap()), limit: 100, ..ListVersions::default() };
    let page = store.list_versions(&mref(model), &q).await.unwrap_or_else(|e| panic!("{filter}: {e}"));
    let mut got: Vec<i64> = page.items.iter().map(|v| v.version).collect();
    got.sort_unstable();
    got
}

async fn expect(store: &Store) {
    for (filter, want) in [
        ("metrics.accuracy > 0.9", &[1, 2][..]),
        ("metrics.accuracy >= 0.94", &[1]),
        ("metrics.accuracy = 0.93", &[2]),
        ("metrics.accuracy < 0.9", &[]),
        ("metrics.accuracy != 0.95", &[2]),
        ("metrics.accuracy IS NULL", &[3]),
        ("metrics.accuracy IS NOT NULL", &[1, 2]),
        ("metrics.f1 IN (0.8, 0.9)", &[2]),
        ("metrics.f1 NOT IN (0.8)", &[]),
        ("metrics.latency_ms <= 12", &[2]),
        ("metrics.recall IS NULL", &[1, 2, 3]),
        ("metrics.accuracy > 0.9 AND metrics.f1 IS NULL", &[1]),
        ("metrics.accuracy > 0.94 OR metrics.latency_ms < 20", &[1, 2]),
    ] {
        assert_eq!(versions(store, "nlp/bert", filter).await, want, "versions where {filter}");
    }
    for (filter, want) in [
        ("metrics.accuracy > 0.9", &["nlp/bert"][..]),
        ("metrics.map < 0.7", &["cv/yolo"]),
        ("metrics.map > 0.7", &[]),
        ("metrics.accuracy IS NULL", &["cv/yolo", "nlp/gpt"]),
        ("metrics.accuracy > 0.9 AND namespace = 'nlp'", &["nlp/bert"]),
    ] {
        assert_eq!(models(store, filter).await, want, "models where {filter}");
    }
}

async fn versions_and_models_match_measured_else_claimed_values(store: Store, _url: String) {
    registry(&store).await;
    expect(&store).await;

    // A newer measurement wins over an older one.
    measure(&store, "nlp/bert", 2, &[("accuracy", Some(0.5))]).await;
    assert_eq!(versions(&store, "nlp/bert", "metrics.accuracy > 0.9").await, [1]);
    assert_eq!(versions(&store, "nlp/bert", "metrics.accuracy = 0.5").await, [2]);

    // A replaced card replaces its claims (gone ones go), but not what was measured.
    let fewer = json!([{"name": "accuracy", "value": 0.7}]);
    store.set_version_card(&ctx(), &mref("nlp/bert"), &VersionSelector::Number(2), &card(fewer)).await.unwrap();
    assert_eq!(versions(&store, "nlp/bert", "metrics.accuracy = 0.5").await, [2]);
    assert_eq!(versions(&store, "nlp/bert", "metrics.latency_ms IS NULL").await, [1, 2, 3]);
    let other = json!([{"name": "accuracy", "value": 0.7}]);
    store.set_version_card(&ctx(), &mref("nlp/bert"), &VersionSelector::Number(1), &card(other)).await.unwrap();
    assert_eq!(versions(&store, "nlp/bert", "metrics.accuracy = 0.7").await, [1]);

    // Bad values are refused with the filter's error.
    let q = ListVersions { filter: Some(parse("metrics.accuracy > 'high'").unwrap()), limit: 10, ..Default::default() };
    let e = store.list_versions(&mref("nlp/bert"), &q).await.unwrap_err();
    assert!(matches!(e, StoreError::Filter(ref f) if f.message.contains("holds numbers")), "{e}");
}

async fn migration_fills_the_metrics_of_older_versions(store: Store, url: String) {
    registry(&store).await;
    // As an upgrade from a release without the table: drop it, forget the migration, reopen.
    // (Read first: dropping the table locks the versions it refers to until the commit.)
    let bert3 = store.get_version(&mref("nlp/bert"), &VersionSelector::Number(3)).await.unwrap();
    let mut tx = store.db().begin().await.unwrap();
    let mut conn = tx.conn();
    conn.execute("DROP TABLE version_metrics", vec![]).await.unwrap();
    conn.execute("DELETE FROM _sqlx_migrations WHERE version = 17", vec![]).await.unwrap();
    // A result whose metrics are not JSON must not stop it.
    conn.execute(
        "INSERT INTO eval_results (id, version_id, suite, passed, metrics, config, submitted_by, submitted_at) \
         VALUES ('broken', $1, 'adhoc', FALSE, 'not json [', '{}', 'olga', 0)",
        vec![bert3.id.into()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    store.close().await;
    let store = cairn_test_utils::reopen_store(&url).await;
    expect(&store).await;
    store.close().await;
}
