//! Searching by lifecycle stage and card facts, on SQLite and PostgreSQL: the version fields
//! `stage`, `semver`, `license` and `task`; the model fields `risk_tier` and `team`, and
//! `stage`, `license` and `task`, which a model has when any of its versions does (their
//! negative forms: when none does); licences compared without regard to case; paging with
//! such filters; and migration 0008 filling the card facts of cards stored before it.

use cairn_core::filter::parse;
use cairn_core::lifecycle::{RiskTier, Semver, Stage};
use cairn_core::{ModelRef, VersionSelector};
use cairn_store::evaluation::VersionCard;
use cairn_store::lifecycle::LifecycleChange;
use cairn_store::model::{ListModels, NewModel};
use cairn_store::version::{ListVersions, NewVersion};
use cairn_store::{AuditContext, Backend, Cursor, Store, StoreError};

cairn_test_utils::store_suite!(
    models_match_when_any_version_does,
    versions_match_their_own_stage_and_card,
    paging_follows_a_filter_on_version_facts,
    migration_fills_the_facts_of_older_cards,
);

fn ctx(who: &str) -> AuditContext {
    AuditContext { actor: format!("user:{who}"), ..AuditContext::default() }
}

fn mref(s: &str) -> ModelRef {
    ModelRef::parse(s).unwrap()
}

/// A stored card whose canonical JSON says these things (`None`: the card does not say).
fn card(license: Option<&str>, pipeline_tag: Option<&str>, evaluation_task: Option<&str>) -> VersionCard {
    let mut json = serde_json::json!({"schema": "cairn.card/v1", "model": {"name": "m"}});
    if let Some(l) = license {
        json["model"]["license"] = l.into();
    }
    if let Some(p) = pipeline_tag {
        json["model"]["pipeline_tag"] = p.into();
    }
    if let Some(t) = evaluation_task {
        json["evaluation"] = serde_json::json!({"task": t});
    }
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

/// Walks version `n` from draft along the main path until it reaches `target`.
async fn walk(store: &Store, model: &ModelRef, n: i64, target: Stage) {
    let path = [
        (Stage::Draft, Stage::Submitted, "submit"),
        (Stage::Submitted, Stage::ApprovedStaging, "approve"),
        (Stage::ApprovedStaging, Stage::Staging, "promote"),
        (Stage::Staging, Stage::ApprovedProd, "approve"),
        (Stage::ApprovedProd, Stage::Production, "promote"),
    ];
    for (from, to, action) in path {
        let change = LifecycleChange {
            from,
            round: i64::from(from != Stage::Draft),
            to: Some(to),
            action: action.into(),
            reason: format!("{action} in a test"),
            submitter: (from == Stage::Draft).then(|| "olga".to_owned()),
            review: None,
            policy_results: Vec::new(),
            deprecate_previous: true,
            events: Vec::new(),
        };
        store.apply_lifecycle_change(&ctx("olga"), model, n, &change).await.unwrap();
        if to == target {
            return;
        }
    }
}

/// One version: its label, its card (if any) and the stage it is walked to.
struct V {
    semver: Option<&'static str>,
    card: Option<VersionCard>,
    stage: Stage,
}

/// The registry the tests search (models by name, versions by number):
///
/// | model | risk, team | versions: stage, card licence / task |
/// |---|---|---|
/// | cv/empty | low, "" | none |
/// | cv/resnet | low, vision | 1 draft, no card |
/// | cv/yolo | low, vision | 1 deprecated, card without licence, evaluation task object-detection; 2 production, GPL-3.0-only, no task |
/// | nlp/bert | high, text | 1 production, Apache-2.0, text-classification (1.0.0); 2 submitted, MIT, text-classification (1.1.0); 3 draft, no card |
/// | nlp/gpt | medium, text | 1 staging, mit, text-generation |
async fn registry(store: &Store) {
    let models: [(&str, RiskTier, &str, Vec<V>); 5] = [
        ("cv/empty", RiskTier::Low, "", vec![]),
        ("cv/resnet", RiskTier::Low, "vision", vec![V { semver: None, card: None, stage: Stage::Draft }]),
        (
            "cv/yolo",
            RiskTier::Low,
            "vision",
            vec![
                // Promoting version 2 to production deprecates version 1.
                V { semver: None, card: Some(card(None, None, Some("object-detection"))), stage: Stage::Production },
                V { semver: None, card: Some(card(Some("GPL-3.0-only"), None, None)), stage: Stage::Production },
            ],
        ),
        (
            "nlp/bert",
            RiskTier::High,
            "text",
            vec![
                V {
                    semver: Some("1.0.0"),
                    card: Some(card(Some("Apache-2.0"), Some("text-classification"), Some("sentiment"))),
                    stage: Stage::Production,
                },
                V {
                    semver: Some("1.1.0"),
                    card: Some(card(Some("MIT"), Some("text-classification"), None)),
                    stage: Stage::Submitted,
                },
                V { semver: None, card: None, stage: Stage::Draft },
            ],
        ),
        (
            "nlp/gpt",
            RiskTier::Medium,
            "text",
            vec![V {
                semver: None,
                card: Some(card(Some("mit"), Some("text-generation"), None)),
                stage: Stage::Staging,
            }],
        ),
    ];
    for (name, risk, team, versions) in models {
        let model = mref(name);
        let new = NewModel { risk_tier: Some(risk), team: team.into(), ..NewModel::named(model.clone()) };
        store.create_model(&ctx("admin"), &new).await.unwrap();
        for v in versions {
            let new = NewVersion { semver: v.semver.map(|s| Semver::parse(s).unwrap()), ..NewVersion::default() };
            let created = store.create_version(&ctx("olga"), &model, &new).await.unwrap();
            let number = VersionSelector::Number(created.version);
            if let Some(c) = &v.card {
                store.set_version_card(&ctx("olga"), &model, &number, c).await.unwrap();
            }
            if v.stage != Stage::Draft {
                walk(store, &model, created.version, v.stage).await;
            }
        }
    }
}

async fn models(store: &Store, filter: &str) -> Vec<String> {
    let q = ListModels { filter: Some(parse(filter).unwrap()), limit: 100, ..ListModels::default() };
    let page = store.list_models(&q).await.unwrap_or_else(|e| panic!("{filter}: {e}"));
    page.items.iter().map(|m| m.full_name()).collect()
}

async fn versions(store: &Store, model: &str, filter: &str) -> Vec<i64> {
    let q = ListVersions { filter: Some(parse(filter).unwrap()), limit: 100, ..ListVersions::default() };
    let page = store.list_versions(&mref(model), &q).await.unwrap_or_else(|e| panic!("{filter}: {e}"));
    page.items.iter().map(|v| v.version).collect()
}

/// Asserts the models each filter lists, in name order.
async fn expect_models(store: &Store, cases: &[(&str, &[&str])]) {
    for (filter, want) in cases {
        assert_eq!(models(store, filter).await, *want, "models where {filter}");
    }
}

async fn models_match_when_any_version_does(store: Store, _url: String) {
    registry(&store).await;
    let all: &[&str] = &["cv/empty", "cv/resnet", "cv/yolo", "nlp/bert", "nlp/gpt"];
    assert_eq!(models(&store, "name LIKE '%'").await, all);
    expect_models(
        &store,
        &[
            // Stage: a model has every stage one of its versions is in; the negative forms
            // hold when none is (so a model without versions has them all).
            ("stage = 'production'", &["cv/yolo", "nlp/bert"]),
            ("stage != 'production'", &["cv/empty", "cv/resnet", "nlp/gpt"]),
            ("stage <> 'draft'", &["cv/empty", "cv/yolo", "nlp/gpt"]),
            ("stage IN ('staging', 'submitted')", &["nlp/bert", "nlp/gpt"]),
            ("stage NOT IN ('draft', 'production')", &["cv/empty", "nlp/gpt"]),
            ("stage LIKE 'dep%'", &["cv/yolo"]),
            ("stage NOT LIKE 'dep%'", &["cv/empty", "cv/resnet", "nlp/bert", "nlp/gpt"]),
            ("stage LIKE 'PROD%'", &[]),
            ("stage ILIKE 'PROD%'", &["cv/yolo", "nlp/bert"]),
            ("stage IS NULL", &["cv/empty"]),
            ("stage IS NOT NULL", &["cv/resnet", "cv/yolo", "nlp/bert", "nlp/gpt"]),
            ("current_stage = 'staging'", &["nlp/gpt"]),
            // Licence: compared without regard to case, from the cards of any version.
            ("license = 'mit'", &["nlp/bert", "nlp/gpt"]),
            ("license = 'MIT'", &["nlp/bert", "nlp/gpt"]),
            ("licence = 'apache-2.0'", &["nlp/bert"]),
            ("license != 'mit'", &["cv/empty", "cv/resnet", "cv/yolo"]),
            ("license != 'mit' AND license IS NOT NULL", &["cv/yolo"]),
            ("license IN ('gpl-3.0-only', 'APACHE-2.0')", &["cv/yolo", "nlp/bert"]),
            ("license NOT IN ('MIT', 'apache-2.0')", &["cv/empty", "cv/resnet", "cv/yolo"]),
            ("license LIKE 'gpl%'", &["cv/yolo"]),
            ("license LIKE 'Gpl-_.0%'", &["cv/yolo"]),
            ("license NOT LIKE 'GPL%'", &["cv/empty", "cv/resnet", "nlp/bert", "nlp/gpt"]),
            ("license ILIKE 'A%'", &["nlp/bert"]),
            ("license IS NULL", &["cv/empty", "cv/resnet"]),
            ("license IS NOT NULL", &["cv/yolo", "nlp/bert", "nlp/gpt"]),
            // Task: the pipeline tag, or else the evaluation's task; compared as written.
            ("task = 'text-classification'", &["nlp/bert"]),
            ("task = 'Text-Classification'", &[]),
            ("task = 'sentiment'", &[]),
            ("task = 'object-detection'", &["cv/yolo"]),
            ("task != 'text-generation'", &["cv/empty", "cv/resnet", "cv/yolo", "nlp/bert"]),
            ("task IN ('object-detection', 'text-generation')", &["cv/yolo", "nlp/gpt"]),
            ("task NOT IN ('object-detection')", &["cv/empty", "cv/resnet", "nlp/bert", "nlp/gpt"]),
            ("task LIKE 'text-%'", &["nlp/bert", "nlp/gpt"]),
            ("task IS NULL", &["cv/empty", "cv/resnet"]),
            ("task IS NOT NULL", &["cv/yolo", "nlp/bert", "nlp/gpt"]),
            // Risk tier and team are the model's own.
            ("risk_tier = 'high'", &["nlp/bert"]),
            ("risk_tier != 'low'", &["nlp/bert", "nlp/gpt"]),
            ("risk_tier IN ('medium', 'high')", &["nlp/bert", "nlp/gpt"]),
            ("risk_tier NOT IN ('low')", &["nlp/bert", "nlp/gpt"]),
            ("risk_tier LIKE 'l%'", &["cv/empty", "cv/resnet", "cv/yolo"]),
            ("risk_tier IS NULL", &[]),
            ("team = 'vision'", &["cv/resnet", "cv/yolo"]),
            ("team != 'vision'", &["cv/empty", "nlp/bert", "nlp/gpt"]),
            ("team IN ('text', '')", &["cv/empty", "nlp/bert", "nlp/gpt"]),
            ("team LIKE 'vis%'", &["cv/resnet", "cv/yolo"]),
            ("team IS NULL", &[]),
            // Each comparison looks at the versions on its own: bert's production version is
            // Apache-2.0, its MIT version only submitted, and it still matches both.
            ("stage = 'production' AND license = 'mit'", &["nlp/bert"]),
            ("stage = 'staging' OR task = 'object-detection'", &["cv/yolo", "nlp/gpt"]),
            ("namespace = 'nlp' AND stage != 'production' AND license = 'MIT'", &["nlp/gpt"]),
        ],
    )
    .await;

    // An unknown field is refused, naming the fields there are.
    let q = ListModels { filter: Some(parse("licensee = 'mit'").unwrap()), limit: 10, ..ListModels::default() };
    match store.list_models(&q).await {
        Err(StoreError::Filter(e)) => {
            assert!(e.message.contains("unknown model field 'licensee'"), "{e}");
            assert!(e.message.contains("risk_tier, team, stage, license, task"), "{e}");
        }
        other => panic!("expected a filter error, got {other:?}"),
    }
}

async fn versions_match_their_own_stage_and_card(store: Store, _url: String) {
    registry(&store).await;
    for (filter, want) in [
        ("stage = 'production'", &[1][..]),
        ("stage != 'draft'", &[1, 2]),
        ("stage IN ('draft', 'submitted')", &[2, 3]),
        ("stage NOT IN ('production')", &[2, 3]),
        ("stage LIKE 'sub%'", &[2]),
        ("stage IS NULL", &[]),
        ("semver = '1.1.0'", &[2]),
        // A version without a label (or card) has NULL there, which `!=` and `NOT IN` skip.
        ("semver != '1.0.0'", &[2]),
        ("semver IN ('1.0.0', '1.1.0')", &[1, 2]),
        ("semver NOT IN ('1.0.0')", &[2]),
        ("semver LIKE '1.%'", &[1, 2]),
        ("semver IS NULL", &[3]),
        ("license = 'MIT'", &[2]),
        ("license = 'apache-2.0'", &[1]),
        ("license != 'mit'", &[1]),
        ("license IN ('mit', 'APACHE-2.0')", &[1, 2]),
        ("license NOT IN ('mit')", &[1]),
        ("license LIKE 'APACHE%'", &[1]),
        ("license NOT LIKE 'apache%'", &[2]),
        ("license IS NULL", &[3]),
        ("license IS NOT NULL", &[1, 2]),
        ("task = 'text-classification'", &[1, 2]),
        ("task != 'text-classification'", &[]),
        ("task IN ('text-classification', 'x')", &[1, 2]),
        ("task NOT IN ('x')", &[1, 2]),
        ("task LIKE 'text%'", &[1, 2]),
        ("task IS NULL", &[3]),
        // Unlike models, one version must hold both.
        ("stage = 'production' AND license = 'mit'", &[]),
        ("stage = 'submitted' AND license = 'mit'", &[2]),
        ("risk_tier = 'high'", &[1, 2, 3]),
    ] {
        assert_eq!(versions(&store, "nlp/bert", filter).await, want, "versions of nlp/bert where {filter}");
    }
    for (filter, want) in [
        ("stage = 'deprecated'", &[1][..]),
        ("stage = 'production'", &[2]),
        // A card without a licence, and one without a task.
        ("license IS NULL", &[1]),
        ("license = 'gpl-3.0-ONLY'", &[2]),
        ("task = 'object-detection'", &[1]),
        ("task IS NULL", &[2]),
    ] {
        assert_eq!(versions(&store, "cv/yolo", filter).await, want, "versions of cv/yolo where {filter}");
    }
    let q = ListVersions { filter: Some(parse("pipeline = 'x'").unwrap()), limit: 10, ..ListVersions::default() };
    match store.list_versions(&mref("nlp/bert"), &q).await {
        Err(StoreError::Filter(e)) => assert!(e.message.contains("stage, semver, "), "{e}"),
        other => panic!("expected a filter error, got {other:?}"),
    }
}

async fn paging_follows_a_filter_on_version_facts(store: Store, _url: String) {
    registry(&store).await;
    // Models, two a page, ascending and descending.
    for (descending, want) in [
        (false, ["cv/resnet", "cv/yolo", "nlp/bert", "nlp/gpt"]),
        (true, ["nlp/gpt", "nlp/bert", "cv/yolo", "cv/resnet"]),
    ] {
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut after: Option<Cursor> = None;
        loop {
            let q = ListModels {
                filter: Some(parse("license IS NOT NULL OR stage = 'draft'").unwrap()),
                limit: 2,
                descending,
                after: after.take(),
                ..ListModels::default()
            };
            let page = store.list_models(&q).await.unwrap();
            pages += 1;
            seen.extend(page.items.iter().map(|m| m.full_name()));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, want, "descending: {descending}");
        assert_eq!(pages, 2, "four models, two a page");
    }
    // Versions, one a page.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let q = ListVersions {
            filter: Some(parse("license != 'apache-2.0' OR stage != 'production'").unwrap()),
            limit: 1,
            after: after.take(),
            ..ListVersions::default()
        };
        let page = store.list_versions(&mref("nlp/bert"), &q).await.unwrap();
        assert!(page.items.len() <= 1);
        seen.extend(page.items.iter().map(|v| v.version));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, [2, 3]);
}

/// Removes migration 0008 (its columns and its record) so that opening the store applies
/// it again to the cards already stored, as an upgrade from an older release does.
async fn unapply_card_facts(store: &Store, broken_card_of: i64) {
    let mut tx = store.db().begin().await.unwrap();
    let mut conn = tx.conn();
    let undo: &[&str] = match store.backend() {
        Backend::Sqlite => &[
            "DROP INDEX version_cards_license",
            "DROP INDEX version_cards_task",
            "ALTER TABLE version_cards DROP COLUMN license",
            "ALTER TABLE version_cards DROP COLUMN task",
        ],
        Backend::Postgres => &["ALTER TABLE version_cards DROP COLUMN license, DROP COLUMN task"],
    };
    for sql in undo {
        conn.execute(*sql, vec![]).await.unwrap();
    }
    conn.execute("DELETE FROM _sqlx_migrations WHERE version = 8", vec![]).await.unwrap();
    // A card that is not JSON must not stop the upgrade; it just has no facts.
    let n = conn
        .execute("UPDATE version_cards SET card = 'not json {' WHERE version_id = $1", vec![broken_card_of.into()])
        .await
        .unwrap();
    assert_eq!(n, 1);
    tx.commit().await.unwrap();
}

async fn migration_fills_the_facts_of_older_cards(store: Store, url: String) {
    registry(&store).await;
    let gpt = store.get_version(&mref("nlp/gpt"), &VersionSelector::Number(1)).await.unwrap();
    unapply_card_facts(&store, gpt.id).await;
    store.close().await;
    let store = cairn_test_utils::reopen_store(&url).await;
    expect_models(
        &store,
        &[
            ("license = 'mit'", &["nlp/bert"]),
            ("license IN ('gpl-3.0-only', 'APACHE-2.0')", &["cv/yolo", "nlp/bert"]),
            ("license IS NULL", &["cv/empty", "cv/resnet", "nlp/gpt"]),
            ("task = 'object-detection'", &["cv/yolo"]),
            ("task LIKE 'text-%'", &["nlp/bert"]),
            ("task IS NULL", &["cv/empty", "cv/resnet", "nlp/gpt"]),
        ],
    )
    .await;
    assert_eq!(versions(&store, "nlp/bert", "license = 'MIT'").await, [2]);
    assert_eq!(versions(&store, "cv/yolo", "task IS NULL").await, [2]);
    store.close().await;
}
