//! The storage suite, written once and run on SQLite and PostgreSQL.
//!
//! PostgreSQL cases run when `CAIRN_TEST_DATABASE_URL` is set (CI sets it and
//! `CAIRN_REQUIRE_ALL_TESTS=1`, so there they cannot skip).

use std::sync::Arc;

use cairn_core::{AliasName, ModelRef, TagKey, VersionSelector};
use cairn_store::audit::AuditQuery;
use cairn_store::model::{ListModels, ModelOrder, ModelPatch, NewModel};
use cairn_store::version::{ListVersions, NewVersion, VersionPatch};
use cairn_store::{AuditContext, DbOptions, Store, StoreError};
use cairn_test_utils::{Backend, database_url};

struct Fixture {
    store: Store,
    _dir: tempfile::TempDir,
}

async fn open(backend: Backend, test: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(backend, dir.path(), test).await?;
    let store = Store::open(&url, &DbOptions::default()).await.unwrap();
    Some(Fixture { store, _dir: dir })
}

fn ctx(who: &str) -> AuditContext {
    AuditContext { actor: format!("user:{who}"), request_id: Some(format!("req-{who}")), ..AuditContext::default() }
}

fn mref(s: &str) -> ModelRef {
    ModelRef::parse(s).unwrap()
}

fn new_model(s: &str) -> NewModel {
    NewModel { description: format!("about {s}"), ..NewModel::named(mref(s)) }
}

async fn audit_actions(store: &Store) -> Vec<(String, String)> {
    let page = store.list_audit_events(&AuditQuery { limit: 1000, ..AuditQuery::default() }).await.unwrap();
    page.items.into_iter().map(|e| (e.action, e.target)).collect()
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(f) = super::open(cairn_test_utils::Backend::Sqlite, concat!("sqlite::", stringify!($name))).await {
                        super::$name(f.store.clone()).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(f) = super::open(cairn_test_utils::Backend::Postgres, concat!("postgres::", stringify!($name))).await {
                        super::$name(f.store.clone()).await;
                    }
                }
            )*
        }
    };
}

suite!(
    models_round_trip_with_audit,
    names_are_unique,
    versions_are_gapless_under_concurrency,
    first_models_of_a_new_namespace_at_once,
    deleted_numbers_are_never_reused,
    aliases_move_and_resolve,
    tags_on_models_and_versions,
    listing_pages_sorts_and_filters,
    failed_changes_leave_no_trace,
    namespaces_lifecycle,
    secrets_are_created_once,
    ping_answers,
    a_created_version_reads_back_as_answered,
    a_version_created_with_files_reads_back_as_answered,
);

/// The creation answers (and audits) the version without reading it back: what it answers
/// must be exactly what a later read finds, with and without optional fields.
async fn a_created_version_reads_back_as_answered(store: Store) {
    store.create_model(&ctx("a"), &new_model("team/rb")).await.unwrap();
    let full = NewVersion {
        description: "fine-tuned".into(),
        source: "s3://bucket/run-7".into(),
        run_id: "run-7".into(),
        metadata: serde_json::json!({"f1": 0.91, "nested": {"k": [1, 2]}}),
        tags: [(TagKey::parse("task").unwrap(), "nlp".to_owned()), (TagKey::parse("team").unwrap(), "x".to_owned())]
            .into(),
        semver: Some(cairn_core::lifecycle::Semver::parse("1.4.2").unwrap()),
        code_commit: "ABCDEF0123456789ABCDEF0123456789ABCDEF01".into(),
        training_job: "job-3".into(),
        ..NewVersion::default()
    };
    for new in [NewVersion::default(), full] {
        let created = store.create_version(&ctx("a"), &mref("team/rb"), &new).await.unwrap();
        let read = store.get_version(&mref("team/rb"), &VersionSelector::Number(created.version)).await.unwrap();
        assert_eq!(created, read);
        let target = format!("version:team/rb:{}", created.version);
        let events = store
            .list_audit_events(&AuditQuery {
                action: Some("version.create".into()),
                target: Some(target),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        let after: serde_json::Value = serde_json::from_str(events.items[0].after_state.as_deref().unwrap()).unwrap();
        assert_eq!(after, serde_json::to_value(&read).unwrap(), "the audit event records the stored version");
    }
}

/// Readiness probes call this; it must work on both backends.
async fn ping_answers(store: Store) {
    store.ping().await.unwrap();
}

async fn models_round_trip_with_audit(store: Store) {
    let mut new = new_model("team/bert");
    new.tags.insert(TagKey::parse("task").unwrap(), "ner".into());
    let m = store.create_model(&ctx("alice"), &new).await.unwrap();
    assert_eq!(m.full_name(), "team/bert");
    assert_eq!(m.tags["task"], "ner");
    assert_eq!(m.latest_version, 0);
    assert_eq!(m.created_by, "user:alice");

    let got = store.get_model(&mref("team/bert")).await.unwrap();
    assert_eq!(got, m);

    let updated = store
        .update_model(
            &ctx("bob"),
            &mref("team/bert"),
            &ModelPatch { description: Some("new".into()), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(updated.description, "new");
    assert_eq!(updated.updated_by, "user:bob");
    assert_eq!(updated.created_by, "user:alice");

    store.delete_model(&ctx("carol"), &mref("team/bert")).await.unwrap();
    assert!(matches!(store.get_model(&mref("team/bert")).await, Err(StoreError::NotFound(_))));

    let actions = audit_actions(&store).await;
    assert_eq!(
        actions,
        vec![
            ("namespace.create".into(), "namespace:team".into()),
            ("model.create".into(), "model:team/bert".into()),
            ("model.update".into(), "model:team/bert".into()),
            ("model.delete".into(), "model:team/bert".into()),
        ]
    );
    // Before/after summaries and the request id are recorded.
    let events = store.list_audit_events(&AuditQuery { limit: 10, ..AuditQuery::default() }).await.unwrap().items;
    let update = &events[2];
    assert!(update.before_state.as_deref().unwrap().contains("about team/bert"));
    assert!(update.after_state.as_deref().unwrap().contains("\"new\""));
    assert_eq!(update.request_id.as_deref(), Some("req-bob"));
    assert_eq!(update.actor, "user:bob");
}

async fn names_are_unique(store: Store) {
    store.create_model(&ctx("a"), &new_model("team/x")).await.unwrap();
    let err = store.create_model(&ctx("a"), &new_model("team/x")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("team/x"));
    // Same name in another namespace is another model.
    store.create_model(&ctx("a"), &new_model("other/x")).await.unwrap();
}

/// The first models of a namespace created at once: every one succeeds, the namespace is
/// created (and audited) once.
async fn first_models_of_a_new_namespace_at_once(store: Store) {
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(
                async move { store.create_model(&ctx(&format!("w{i}")), &new_model(&format!("fresh/m{i}"))).await },
            )
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let creates = audit_actions(&store).await.into_iter().filter(|(a, _)| a == "namespace.create").count();
    assert_eq!(creates, 1);
    assert_eq!(store.get_namespace(&cairn_core::Namespace::parse("fresh").unwrap()).await.unwrap().model_count, 16);
}

async fn versions_are_gapless_under_concurrency(store: Store) {
    store.create_model(&ctx("a"), &new_model("team/busy")).await.unwrap();
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_version(
                    &ctx(&format!("w{i}")),
                    &mref("team/busy"),
                    &NewVersion { source: format!("s3://b/{i}"), ..NewVersion::default() },
                )
                .await
                .unwrap()
                .version
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=32).collect::<Vec<i64>>());
    let m = store.get_model(&mref("team/busy")).await.unwrap();
    assert_eq!(m.latest_version, 32);
    let creates = audit_actions(&store).await.into_iter().filter(|(a, _)| a == "version.create").count();
    assert_eq!(creates, 32);
}

async fn deleted_numbers_are_never_reused(store: Store) {
    store.create_model(&ctx("a"), &new_model("team/m")).await.unwrap();
    for _ in 0..3 {
        store.create_version(&ctx("a"), &mref("team/m"), &NewVersion::default()).await.unwrap();
    }
    store.delete_version(&ctx("a"), &mref("team/m"), &VersionSelector::Number(3)).await.unwrap();
    let v = store.create_version(&ctx("a"), &mref("team/m"), &NewVersion::default()).await.unwrap();
    assert_eq!(v.version, 4);
    let err = store.get_version(&mref("team/m"), &VersionSelector::Number(3)).await.unwrap_err();
    assert_eq!(err.to_string(), "model \"team/m\" has no version 3 (latest is 4)");
    let err = store.get_version(&mref("team/none"), &VersionSelector::Number(1)).await.unwrap_err();
    assert_eq!(err.to_string(), "model \"team/none\" does not exist");
}

async fn aliases_move_and_resolve(store: Store) {
    store.create_model(&ctx("a"), &new_model("team/m")).await.unwrap();
    for _ in 0..2 {
        store.create_version(&ctx("a"), &mref("team/m"), &NewVersion::default()).await.unwrap();
    }
    let champion = AliasName::parse("champion").unwrap();
    let a = store.set_alias(&ctx("a"), &mref("team/m"), &champion, 1).await.unwrap();
    assert_eq!(a.version, 1);
    let v = store.get_version(&mref("team/m"), &VersionSelector::Alias(champion.clone())).await.unwrap();
    assert_eq!(v.version, 1);
    assert_eq!(v.aliases, vec!["champion".to_string()]);
    let moved = store.set_alias(&ctx("b"), &mref("team/m"), &champion, 2).await.unwrap();
    assert_eq!(moved.version, 2);
    assert_eq!(moved.created_by, "user:a");
    assert_eq!(moved.updated_by, "user:b");
    let m = store.get_model(&mref("team/m")).await.unwrap();
    assert_eq!(m.aliases.get("champion"), Some(&2));
    assert!(matches!(store.set_alias(&ctx("a"), &mref("team/m"), &champion, 9).await, Err(StoreError::NotFound(_))));
    // Deleting the version removes the alias with it.
    store.delete_version(&ctx("a"), &mref("team/m"), &VersionSelector::Number(2)).await.unwrap();
    assert!(matches!(store.get_alias(&mref("team/m"), &champion).await, Err(StoreError::NotFound(_))));
    store.set_alias(&ctx("a"), &mref("team/m"), &champion, 1).await.unwrap();
    assert_eq!(store.list_aliases(&mref("team/m")).await.unwrap().len(), 1);
    store.delete_alias(&ctx("a"), &mref("team/m"), &champion).await.unwrap();
    assert!(store.list_aliases(&mref("team/m")).await.unwrap().is_empty());
    let actions: Vec<String> = audit_actions(&store).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(actions.iter().filter(|a| *a == "alias.set").count(), 3);
    assert_eq!(actions.iter().filter(|a| *a == "alias.delete").count(), 1);
}

async fn tags_on_models_and_versions(store: Store) {
    store.create_model(&ctx("a"), &new_model("team/m")).await.unwrap();
    let k = TagKey::parse("owner team").unwrap();
    store.set_model_tag(&ctx("a"), &mref("team/m"), &k, "x").await.unwrap();
    let m = store.set_model_tag(&ctx("a"), &mref("team/m"), &k, "y").await.unwrap();
    assert_eq!(m.tags.get("owner team").map(String::as_str), Some("y"));
    store.delete_model_tag(&ctx("a"), &mref("team/m"), &k).await.unwrap();
    assert!(matches!(store.delete_model_tag(&ctx("a"), &mref("team/m"), &k).await, Err(StoreError::NotFound(_))));

    store.create_version(&ctx("a"), &mref("team/m"), &NewVersion::default()).await.unwrap();
    let sel = VersionSelector::Number(1);
    let v = store.set_version_tag(&ctx("a"), &mref("team/m"), &sel, &k, "v1").await.unwrap();
    assert_eq!(v.tags["owner team"], "v1");
    let v = store
        .update_version(
            &ctx("a"),
            &mref("team/m"),
            &sel,
            &VersionPatch {
                description: Some("d".into()),
                metadata: Some(serde_json::json!({"f1": 0.9})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(v.metadata["f1"], 0.9);
    assert_eq!(v.tags["owner team"], "v1");
    store.delete_version_tag(&ctx("a"), &mref("team/m"), &sel, &k).await.unwrap();
    assert!(store.get_version(&mref("team/m"), &sel).await.unwrap().tags.is_empty());
    let too_long = "x".repeat(5001);
    assert!(matches!(
        store.set_model_tag(&ctx("a"), &mref("team/m"), &k, &too_long).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn listing_pages_sorts_and_filters(store: Store) {
    for (i, name) in ["nlp/bert", "nlp/gpt", "cv/resnet", "cv/yolo", "nlp/t5"].iter().enumerate() {
        let mut nm = new_model(name);
        nm.tags.insert(TagKey::parse("task").unwrap(), if name.starts_with("nlp") { "text" } else { "vision" }.into());
        nm.tags.insert(TagKey::parse("rank").unwrap(), i.to_string());
        store.create_model(&ctx("a"), &nm).await.unwrap();
    }
    // Pages of two, by name, follow the cursor to the end.
    let mut names = Vec::new();
    let mut after = None;
    loop {
        let page =
            store.list_models(&ListModels { limit: 2, after: after.clone(), ..ListModels::default() }).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|m| m.full_name()));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(names, ["cv/resnet", "cv/yolo", "nlp/bert", "nlp/gpt", "nlp/t5"]);
    // Descending by creation time.
    let page = store
        .list_models(&ListModels { limit: 10, order: ModelOrder::CreatedAt, descending: true, ..ListModels::default() })
        .await
        .unwrap();
    assert_eq!(page.items.first().unwrap().full_name(), "nlp/t5");
    // Filters: tags, LIKE (case-sensitive), ILIKE, AND.
    let f = |s: &str| Some(cairn_core::filter::parse(s).unwrap());
    let by = |filter| ListModels { filter, limit: 100, ..ListModels::default() };
    let names =
        |p: cairn_store::Page<cairn_store::model::Model>| p.items.iter().map(|m| m.full_name()).collect::<Vec<_>>();
    assert_eq!(names(store.list_models(&by(f("tags.task = 'vision'"))).await.unwrap()), ["cv/resnet", "cv/yolo"]);
    assert_eq!(names(store.list_models(&by(f("name LIKE 'b%'"))).await.unwrap()), ["nlp/bert"]);
    assert!(names(store.list_models(&by(f("name LIKE 'B%'"))).await.unwrap()).is_empty());
    assert_eq!(names(store.list_models(&by(f("name ILIKE 'B%'"))).await.unwrap()), ["nlp/bert"]);
    assert_eq!(names(store.list_models(&by(f("namespace = 'nlp' AND tags.rank = '4'"))).await.unwrap()), ["nlp/t5"]);
    // Underscore is a wildcard; a literal '%' in the data is matched only by an escape.
    assert_eq!(names(store.list_models(&by(f("name LIKE 't_'"))).await.unwrap()), ["nlp/t5"]);
    // A filter on an unknown field is refused.
    assert!(matches!(store.list_models(&by(f("colour = 'red'"))).await, Err(StoreError::Filter(_))));
    // Versions: filter by number and page newest first.
    for _ in 0..5 {
        store.create_version(&ctx("a"), &mref("nlp/bert"), &NewVersion::default()).await.unwrap();
    }
    let page = store
        .list_versions(
            &mref("nlp/bert"),
            &ListVersions { filter: f("version >= 2"), descending: true, limit: 3, ..ListVersions::default() },
        )
        .await
        .unwrap();
    assert_eq!(page.items.iter().map(|v| v.version).collect::<Vec<_>>(), [5, 4, 3]);
    let rest = store
        .list_versions(
            &mref("nlp/bert"),
            &ListVersions {
                filter: f("version >= 2"),
                descending: true,
                limit: 3,
                after: page.next,
                ..ListVersions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(|v| v.version).collect::<Vec<_>>(), [2]);
    assert!(rest.next.is_none());
    // Only the named model's versions; nothing matching is an empty page, and a model that
    // does not exist is not found (not an empty page).
    store.create_version(&ctx("a"), &mref("nlp/gpt"), &NewVersion::default()).await.unwrap();
    let gpt = store.list_versions(&mref("nlp/gpt"), &ListVersions { limit: 10, ..ListVersions::default() }).await;
    assert_eq!(gpt.unwrap().items.iter().map(|v| (v.model.as_str(), v.version)).collect::<Vec<_>>(), [("gpt", 1)]);
    let nothing = ListVersions { filter: f("version > 99"), limit: 10, ..ListVersions::default() };
    assert!(store.list_versions(&mref("nlp/bert"), &nothing).await.unwrap().items.is_empty());
    let ghost = store.list_versions(&mref("nlp/ghost"), &ListVersions { limit: 10, ..ListVersions::default() }).await;
    assert!(matches!(ghost, Err(StoreError::NotFound(_))), "{ghost:?}");
}

async fn failed_changes_leave_no_trace(store: Store) {
    store.create_model(&ctx("a"), &new_model("team/m")).await.unwrap();
    let before = audit_actions(&store).await.len();
    // Not an object: refused before anything is written.
    let bad = NewVersion { metadata: serde_json::json!([1, 2]), ..NewVersion::default() };
    assert!(matches!(store.create_version(&ctx("a"), &mref("team/m"), &bad).await, Err(StoreError::Invalid(_))));
    // A duplicate create rolls back, namespace creation included.
    assert!(store.create_model(&ctx("a"), &new_model("team/m")).await.is_err());
    // No version of a missing model.
    assert!(matches!(
        store.create_version(&ctx("a"), &mref("team/ghost"), &NewVersion::default()).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(audit_actions(&store).await.len(), before);
    assert_eq!(store.get_model(&mref("team/m")).await.unwrap().latest_version, 0);
    let v = store.create_version(&ctx("a"), &mref("team/m"), &NewVersion::default()).await.unwrap();
    assert_eq!(v.version, 1, "failed attempts must not consume numbers");
}

async fn namespaces_lifecycle(store: Store) {
    let ns = cairn_core::Namespace::parse("research").unwrap();
    store.create_namespace(&ctx("a"), &ns, "the lab").await.unwrap();
    assert!(matches!(store.create_namespace(&ctx("a"), &ns, "").await, Err(StoreError::Conflict(_))));
    store.create_model(&ctx("a"), &new_model("research/m")).await.unwrap();
    let got = store.get_namespace(&ns).await.unwrap();
    assert_eq!(got.model_count, 1);
    assert_eq!(got.description, "the lab");
    assert!(matches!(store.delete_namespace(&ctx("a"), &ns).await, Err(StoreError::Conflict(_))));
    store.delete_model(&ctx("a"), &mref("research/m")).await.unwrap();
    store.delete_namespace(&ctx("a"), &ns).await.unwrap();
    assert!(store.list_namespaces().await.unwrap().is_empty());
}

async fn secrets_are_created_once(store: Store) {
    let a = store.get_or_create_secret("k", || "first".into()).await.unwrap();
    let b = store.get_or_create_secret("k", || "second".into()).await.unwrap();
    assert_eq!(a, "first");
    assert_eq!(b, "first");
}

/// The same for a version created from files already stored (the MLflow-compatible API):
/// its files, scans and lineage go with the commit, checked before anything is sent.
async fn a_version_created_with_files_reads_back_as_answered(store: Store) {
    use cairn_core::manifest::{FileEntry, FilePath};
    use cairn_store::artifact::BlobProof;
    use cairn_store::scan::FileScan;
    store.create_model(&ctx("a"), &new_model("team/rf")).await.unwrap();
    let stored = "ab".repeat(32);
    store.blob_pending(&stored, 3).await.unwrap();
    store.blob_completed(&stored, BlobProof::None).await.unwrap();
    let file = |path: &str, digest: &str| FileEntry {
        path: FilePath::parse(path).unwrap(),
        size: 3,
        sha256: digest.to_owned(),
    };
    let files = vec![file("model/w.bin", &stored), file("MLmodel", &stored)];
    let scan = |path: &str| FileScan {
        path: path.to_owned(),
        digest: stored.clone(),
        format: "unknown".into(),
        status: "skipped".into(),
        max_severity: None,
        report: "{}".into(),
        scanner: "test 1".into(),
        scanned_at: 0,
    };
    let run = cairn_core::lineage::Upstream::Run(cairn_core::lineage::Run {
        platform: "mlflow".into(),
        id: "run-1".into(),
        uri: String::new(),
        params: Default::default(),
    });
    let new = NewVersion {
        source: "mlflow-artifacts:/0/run-1/artifacts/model".into(),
        run_id: "run-1".into(),
        tags: [(TagKey::parse("task").unwrap(), "nlp".to_owned())].into(),
        scans: vec![scan("model/w.bin"), scan("MLmodel")],
        // The same input twice is recorded once.
        lineage: vec![run.clone(), run],
        ..NewVersion::default()
    };
    let created = store.create_version_with_files(&ctx("a"), &mref("team/rf"), &new, files.clone()).await.unwrap();
    assert_eq!((created.file_count, created.size), (2, 6));
    let read = store.get_version(&mref("team/rf"), &VersionSelector::Number(created.version)).await.unwrap();
    assert_eq!(created, read);
    let events = store
        .list_audit_events(&AuditQuery {
            action: Some("version.create".into()),
            target: Some(format!("version:team/rf:{}", created.version)),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let mut after: serde_json::Value = serde_json::from_str(events.items[0].after_state.as_deref().unwrap()).unwrap();
    // With the scan and the lineage it was created with: one event for the one change.
    let fields = after.as_object_mut().unwrap();
    assert_eq!(
        fields.remove("scan"),
        Some(serde_json::json!({"scanner": "test 1", "files": 2, "incomplete": 0, "findings_by_severity": {}}))
    );
    assert_eq!(fields.remove("lineage"), Some(serde_json::json!([{"kind": "run", "name": "run-1", "ref": ""}])));
    assert_eq!(after, serde_json::to_value(&read).unwrap(), "the audit event records the stored version");
    let listed = store.version_files(&mref("team/rf"), &VersionSelector::Number(1)).await.unwrap();
    assert_eq!(listed.1.len(), 2, "{listed:?}");
    let (_, scans) = store.version_scans(&mref("team/rf"), &VersionSelector::Number(1)).await.unwrap();
    assert_eq!(scans.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), vec!["MLmodel", "model/w.bin"]);
    let (_, edges) = store.version_lineage(&mref("team/rf"), &VersionSelector::Number(1)).await.unwrap();
    assert_eq!(edges.iter().map(|e| (e.kind.as_str(), e.name.as_str())).collect::<Vec<_>>(), vec![("run", "run-1")]);

    // A scan of a file the version does not have, or of other bytes, is refused; a blob
    // never stored, or still being received, is missing (and named); a model that does not
    // exist is not found. Either way nothing is created and no number is used up.
    let pending = "12".repeat(32);
    store.blob_pending(&pending, 3).await.unwrap();
    for (model, scans, files, expected) in [
        ("team/rf", vec![scan("other.bin")], files.clone(), "invalid"),
        ("team/rf", vec![FileScan { digest: "cd".repeat(32), ..scan("MLmodel") }], files.clone(), "invalid"),
        ("team/rf", Vec::new(), vec![file("MLmodel", &"ef".repeat(32)), file("w.bin", &stored)], "missing ef"),
        ("team/rf", Vec::new(), vec![file("w.bin", &stored), file("x.bin", &pending)], "missing 12"),
        ("team/nope", Vec::new(), vec![file("w.bin", &stored)], "not found"),
    ] {
        let bad = NewVersion { scans, ..NewVersion::default() };
        let err = store.create_version_with_files(&ctx("a"), &mref(model), &bad, files).await.unwrap_err();
        let got = match &err {
            StoreError::Invalid(_) => "invalid".to_owned(),
            StoreError::MissingBlobs(m) if !m.contains(&stored) => format!("missing {}", &m[m.len() - 64..][..2]),
            StoreError::NotFound(_) => "not found".to_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(got, expected, "{err:?}");
    }
    let next = store.create_version(&ctx("a"), &mref("team/rf"), &NewVersion::default()).await.unwrap();
    assert_eq!(next.version, 2);
}
