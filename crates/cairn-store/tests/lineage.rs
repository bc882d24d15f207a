//! Lineage as the store keeps it, on SQLite and PostgreSQL: inputs recorded with a version or
//! later (idempotently, audited, in the version's transaction), base models resolved and kept
//! acyclic, removal rules, and walks up, down and from an input, with depth and size limits.

use cairn_core::lineage::{BaseModel, Code, Dataset, Direction, InputKind, Run, Upstream};
use cairn_core::{AliasName, ModelRef, VersionRef, VersionSelector};
use cairn_store::audit::AuditQuery;
use cairn_store::lineage::{LineageWalk, WalkFrom};
use cairn_store::model::NewModel;
use cairn_store::version::NewVersion;
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

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some(f) = super::open(cairn_test_utils::Backend::Sqlite, concat!("sqlite::", stringify!($name))).await {
                    super::$name(f.store.clone()).await;
                }
            }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some(f) = super::open(cairn_test_utils::Backend::Postgres, concat!("postgres::", stringify!($name))).await {
                    super::$name(f.store.clone()).await;
                }
            }
        )* }
    };
}

suite!(
    inputs_are_recorded_with_the_version_and_later,
    a_bad_input_creates_nothing,
    lineage_never_goes_in_a_circle,
    removal_and_deleted_parents,
    a_version_reached_by_several_paths_is_walked_once,
    walks_up_down_and_from_inputs,
    a_walk_names_each_version_and_its_model,
);

fn ctx() -> AuditContext {
    AuditContext { actor: "user:alice".into(), ..AuditContext::default() }
}

fn mref(s: &str) -> ModelRef {
    ModelRef::parse(s).unwrap()
}

fn num(n: i64) -> VersionSelector {
    VersionSelector::Number(n)
}

fn dataset(name: &str, version: &str) -> Upstream {
    Upstream::Dataset(Dataset { name: name.into(), version: version.into(), ..Dataset::default() })
}

fn base(r: &str) -> Upstream {
    Upstream::BaseModel(BaseModel::Registry(VersionRef::parse(r).unwrap()))
}

async fn model(store: &Store, name: &str) {
    store.create_model(&ctx(), &NewModel::named(mref(name))).await.unwrap();
}

async fn version(store: &Store, name: &str, lineage: Vec<Upstream>) -> Result<i64, StoreError> {
    let new = NewVersion { lineage, ..NewVersion::default() };
    store.create_version(&ctx(), &mref(name), &new).await.map(|v| v.version)
}

async fn lineage_events(store: &Store) -> Vec<(String, String)> {
    let page = store.list_audit_events(&AuditQuery { limit: 1000, ..AuditQuery::default() }).await.unwrap();
    page.items.into_iter().filter(|e| e.action.starts_with("version.lineage")).map(|e| (e.action, e.target)).collect()
}

/// The lineage a `version.create` event of `target` records (`None`: no such event).
async fn created_with(store: &Store, target: &str) -> Option<serde_json::Value> {
    let page = store.list_audit_events(&AuditQuery { limit: 1000, ..AuditQuery::default() }).await.unwrap();
    let created = page.items.into_iter().find(|e| e.action == "version.create" && e.target == target)?;
    let after: serde_json::Value = serde_json::from_str(created.after_state.as_deref()?).unwrap();
    Some(after["lineage"].clone())
}

async fn inputs_are_recorded_with_the_version_and_later(store: Store) {
    model(&store, "team/base").await;
    model(&store, "team/chat").await;
    version(&store, "team/base", vec![]).await.unwrap();
    version(&store, "team/base", vec![dataset("web", "v3")]).await.unwrap();
    store.set_alias(&ctx(), &mref("team/base"), &AliasName::parse("champion").unwrap(), 2).await.unwrap();

    let run = Upstream::Run(Run {
        platform: "mlflow".into(),
        id: "4f2a".into(),
        uri: String::new(),
        params: [("lr".to_owned(), "0.01".to_owned())].into(),
    });
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let code = Upstream::Code(Code { repository: "https://git.example/org/chat".into(), commit: commit.into() });
    let n = version(&store, "team/chat", vec![dataset("ultrachat", "2024-05"), run, code, base("team/base@champion")])
        .await
        .unwrap();
    let (v, edges) = store.version_lineage(&mref("team/chat"), &num(n)).await.unwrap();
    assert_eq!(v.version, 1);
    let kinds: Vec<&str> = edges.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["dataset", "run", "code", "base_model"]);
    // The alias is resolved to the number it pointed at when recorded.
    let b = &edges[3];
    assert_eq!((b.name.as_str(), b.reference.as_str()), ("team/base", "2"));
    assert!(b.parent_version_id.is_some());
    assert_eq!(edges[1].params["lr"], "0.01");
    assert_eq!(edges[0].created_by, "user:alice");
    let chat_events = || async {
        lineage_events(&store).await.into_iter().filter(|(_, t)| t == "version:team/chat:1").collect::<Vec<_>>()
    };
    // Audited as part of the version's creation, in its `version.create` event.
    assert_eq!(chat_events().await, []);
    assert_eq!(
        created_with(&store, "version:team/chat:1").await,
        Some(serde_json::json!([
            {"kind": "dataset", "name": "ultrachat", "ref": "2024-05"},
            {"kind": "run", "name": "4f2a", "ref": ""},
            {"kind": "code", "name": "https://git.example/org/chat", "ref": commit},
            {"kind": "base_model", "name": "team/base", "ref": "2"},
        ]))
    );
    assert_eq!(created_with(&store, "version:team/base:1").await, Some(serde_json::Value::Null), "no inputs, no list");

    // Moving the alias later does not rewrite history.
    store.set_alias(&ctx(), &mref("team/base"), &AliasName::parse("champion").unwrap(), 1).await.unwrap();
    let (_, again) = store.version_lineage(&mref("team/chat"), &num(1)).await.unwrap();
    assert_eq!(again[3].reference, "2");

    // Recording the same inputs again changes nothing and records no event; a new one is added.
    let (_, after) = store
        .add_lineage(&ctx(), &mref("team/chat"), &num(1), &[dataset("ultrachat", "2024-05"), base("team/base:2")])
        .await
        .unwrap();
    assert_eq!(after.len(), 4);
    assert_eq!(chat_events().await.len(), 0);
    let external = Upstream::BaseModel(BaseModel::External { id: "hf:org/llm".into(), revision: "main".into() });
    let (_, after) = store.add_lineage(&ctx(), &mref("team/chat"), &num(1), &[external]).await.unwrap();
    assert_eq!(after.len(), 5);
    assert_eq!(
        (after[4].name.as_str(), after[4].reference.as_str(), after[4].parent_version_id),
        ("hf:org/llm", "main", None)
    );
    assert_eq!(chat_events().await, [("version.lineage.add".to_owned(), "version:team/chat:1".to_owned())]);
}

async fn a_bad_input_creates_nothing(store: Store) {
    model(&store, "team/m").await;
    // A base model that does not exist: the version is not created and its number not used.
    let e = version(&store, "team/m", vec![dataset("ok", ""), base("team/nothing:1")]).await.unwrap_err();
    assert!(matches!(&e, StoreError::Invalid(m) if m.contains("team/nothing")), "{e}");
    // An input that fails the rules (the store checks again whatever the caller did).
    let bad = Upstream::Dataset(Dataset { name: "d".into(), digest: "sha256:nothex".into(), ..Dataset::default() });
    assert!(matches!(version(&store, "team/m", vec![bad]).await, Err(StoreError::Invalid(_))));
    let too_many: Vec<Upstream> = (0..101).map(|i| dataset(&format!("d{i}"), "")).collect();
    assert!(matches!(version(&store, "team/m", too_many).await, Err(StoreError::Invalid(_))));
    assert_eq!(store.get_model(&mref("team/m")).await.unwrap().latest_version, 0);
    assert_eq!(version(&store, "team/m", vec![]).await.unwrap(), 1);
    assert!(lineage_events(&store).await.is_empty());
    // Adding later is all or nothing too.
    let e = store.add_lineage(&ctx(), &mref("team/m"), &num(1), &[dataset("fine", ""), base("team/m:9")]).await;
    assert!(e.is_err());
    assert!(store.version_lineage(&mref("team/m"), &num(1)).await.unwrap().1.is_empty());
}

async fn lineage_never_goes_in_a_circle(store: Store) {
    model(&store, "team/a").await;
    version(&store, "team/a", vec![]).await.unwrap();
    version(&store, "team/a", vec![base("team/a:1")]).await.unwrap();
    version(&store, "team/a", vec![base("team/a:2")]).await.unwrap();
    for (at, parent) in [(1, "team/a:3"), (1, "team/a:2"), (2, "team/a:3"), (2, "team/a:2")] {
        let e = store.add_lineage(&ctx(), &mref("team/a"), &num(at), &[base(parent)]).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::Invalid(m) if m.contains("circle") || m.contains("itself")),
            "{at} <- {parent}: {e}"
        );
    }
    // A second parent that is not a descendant is fine (a merge of two lines).
    version(&store, "team/a", vec![]).await.unwrap();
    store.add_lineage(&ctx(), &mref("team/a"), &num(3), &[base("team/a:4")]).await.unwrap();
}

async fn removal_and_deleted_parents(store: Store) {
    model(&store, "team/a").await;
    version(&store, "team/a", vec![]).await.unwrap();
    version(&store, "team/a", vec![base("team/a:1"), dataset("d", "1")]).await.unwrap();
    let (_, edges) = store.version_lineage(&mref("team/a"), &num(2)).await.unwrap();
    let d = edges.iter().find(|e| e.kind == "dataset").unwrap().id;
    let e = store.remove_lineage(&ctx(), &mref("team/a"), &num(1), d).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "an input of another version is not found: {e}");
    store.remove_lineage(&ctx(), &mref("team/a"), &num(2), d).await.unwrap();
    assert_eq!(store.version_lineage(&mref("team/a"), &num(2)).await.unwrap().1.len(), 1);
    assert!(lineage_events(&store).await.contains(&("version.lineage.remove".into(), "version:team/a:2".into())));
    // Deleting the parent keeps what it was, without the link.
    store.delete_version(&ctx(), &mref("team/a"), &num(1)).await.unwrap();
    let (_, edges) = store.version_lineage(&mref("team/a"), &num(2)).await.unwrap();
    assert_eq!(
        (edges[0].name.as_str(), edges[0].reference.as_str(), edges[0].parent_version_id),
        ("team/a", "1", None)
    );
}

async fn a_version_reached_by_several_paths_is_walked_once(store: Store) {
    // 1 ← 2 ← 3 ← 4 and 1 ← 3, 1 ← 4, 2 ← 4: versions reached by paths of different lengths.
    model(&store, "team/d").await;
    version(&store, "team/d", vec![dataset("root-data", "v1")]).await.unwrap();
    version(&store, "team/d", vec![base("team/d:1")]).await.unwrap();
    version(&store, "team/d", vec![base("team/d:2"), base("team/d:1")]).await.unwrap();
    version(&store, "team/d", vec![base("team/d:3"), base("team/d:2"), base("team/d:1")]).await.unwrap();
    let from = |n: i64, d: Direction| WalkFrom::Version(mref("team/d"), num(n), d);
    let ids = |w: &LineageWalk| {
        let mut ids: Vec<i64> = w.edges.iter().map(|e| e.id).collect();
        ids.dedup();
        ids
    };
    let up = store.walk_lineage(&from(4, Direction::Up), 10, 100).await.unwrap();
    assert_eq!(up.edges.len(), 7, "every edge once: {:?}", up.edges);
    assert_eq!(ids(&up).len(), 7);
    assert!(up.edges.windows(2).all(|w| w[0].id < w[1].id), "in recording order");
    let down = store.walk_lineage(&from(1, Direction::Down), 10, 100).await.unwrap();
    assert_eq!(down.edges.len(), 6);
    assert_eq!(ids(&down).len(), 6);
    let input = WalkFrom::Input { kind: InputKind::Dataset, name: "root-data".into(), reference: String::new() };
    let impact = store.walk_lineage(&input, 10, 100).await.unwrap();
    assert_eq!(impact.edges.len(), 7);
    assert_eq!(impact.versions.values().map(|v| v.number).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // One step down from 1 reaches 2, 3 and 4 directly.
    assert_eq!(store.walk_lineage(&from(1, Direction::Down), 1, 100).await.unwrap().edges.len(), 3);
}

async fn walks_up_down_and_from_inputs(store: Store) {
    // A line of 15 versions, each fine-tuned from the one before on a dataset of its own.
    model(&store, "team/line").await;
    for i in 1..=15 {
        let mut inputs = vec![dataset(&format!("d{i}"), "v1")];
        if i > 1 {
            inputs.push(base(&format!("team/line:{}", i - 1)));
        }
        version(&store, "team/line", inputs).await.unwrap();
    }
    let from = |n: i64, d: Direction| WalkFrom::Version(mref("team/line"), num(n), d);

    // Up 10 steps from 15: the inputs of 15 … 6 (a dataset and a base model each).
    let up = store.walk_lineage(&from(15, Direction::Up), 10, 10_000).await.unwrap();
    assert_eq!(up.edges.len(), 20);
    assert!(!up.truncated);
    let numbers: Vec<i64> = up.versions.values().map(|v| v.number).collect();
    assert_eq!(numbers, (5..=15).collect::<Vec<_>>(), "15 and the ten before it");
    assert_eq!(up.root.as_ref().unwrap().number, 15);
    // One step: its own inputs only.
    assert_eq!(store.walk_lineage(&from(15, Direction::Up), 1, 10_000).await.unwrap().edges.len(), 2);

    // Down 3 steps from 1: the base-model edges to 2, 3, 4.
    let down = store.walk_lineage(&from(1, Direction::Down), 3, 10_000).await.unwrap();
    let children: Vec<i64> = down.edges.iter().map(|e| down.versions[&e.version_id].number).collect();
    assert_eq!(children, [2, 3, 4]);
    assert!(down.edges.iter().all(|e| e.kind == "base_model"));

    // From a dataset: the version recording it (step 1), then what derives from it.
    let input =
        |name: &str, r: &str| WalkFrom::Input { kind: InputKind::Dataset, name: name.into(), reference: r.into() };
    let w = store.walk_lineage(&input("d10", ""), 3, 10_000).await.unwrap();
    let mut reached: Vec<i64> = w.edges.iter().map(|e| w.versions[&e.version_id].number).collect();
    reached.sort_unstable();
    assert_eq!(reached, [10, 11, 12]);
    assert_eq!(store.walk_lineage(&input("d10", "v1"), 50, 10_000).await.unwrap().edges.len(), 6, "10 and 11…15");
    assert!(store.walk_lineage(&input("d10", "v2"), 50, 10_000).await.unwrap().edges.is_empty());
    assert!(store.walk_lineage(&input("nothing", ""), 50, 10_000).await.unwrap().edges.is_empty());

    // The size limit: the nearest edges and a flag — here the inputs of 15, 14 and one of 13.
    let capped = store.walk_lineage(&from(15, Direction::Up), 50, 5).await.unwrap();
    assert_eq!(capped.edges.len(), 5);
    assert!(capped.truncated);
    let mut near: Vec<i64> = capped.edges.iter().map(|e| capped.versions[&e.version_id].number).collect();
    near.sort_unstable();
    assert_eq!(near, [13, 14, 14, 15, 15]);
    // Exactly the limit is not truncated.
    let exact = store.walk_lineage(&from(15, Direction::Up), 2, 4).await.unwrap();
    assert_eq!((exact.edges.len(), exact.truncated), (4, false));

    // A missing version is not found, not an empty walk.
    assert!(matches!(store.walk_lineage(&from(99, Direction::Up), 3, 10).await, Err(StoreError::NotFound(_))));
}

async fn a_walk_names_each_version_and_its_model(store: Store) {
    // Versions of three models in two namespaces, derived across them: each node of a walk
    // carries its own model's namespace and name (read apart from the versions), its number,
    // stage and digest.
    for m in ["team/base", "lab/tuned", "lab/distilled"] {
        model(&store, m).await;
    }
    version(&store, "team/base", vec![dataset("corpus", "v1")]).await.unwrap();
    version(&store, "team/base", vec![dataset("corpus", "v2")]).await.unwrap();
    version(&store, "lab/tuned", vec![base("team/base:2")]).await.unwrap();
    version(&store, "lab/distilled", vec![base("lab/tuned:1"), base("team/base:1")]).await.unwrap();
    let input = WalkFrom::Input { kind: InputKind::Dataset, name: "corpus".into(), reference: String::new() };
    let w = store.walk_lineage(&input, 10, 100).await.unwrap();
    let mut nodes: Vec<(String, String, i64)> =
        w.versions.values().map(|v| (v.namespace.clone(), v.model.clone(), v.number)).collect();
    nodes.sort();
    let want =
        [("lab", "lab/distilled", 1), ("lab", "lab/tuned", 1), ("team", "team/base", 1), ("team", "team/base", 2)];
    assert_eq!(nodes, want.map(|(n, m, v)| (n.to_owned(), m.to_owned(), v)));
    for node in w.versions.values() {
        let model = mref(&node.model);
        let v = store.get_version(&model, &num(node.number)).await.unwrap();
        assert_eq!((node.stage.as_str(), node.digest.as_str()), (v.stage.as_str(), v.digest.as_str()), "{node:?}");
    }
    // Every edge's ends are among the nodes.
    assert!(
        w.edges.iter().all(|e| w.versions.contains_key(&e.version_id)
            && e.parent_version_id.is_none_or(|p| w.versions.contains_key(&p)))
    );
    // Up from the last: the same names, from the other direction.
    let up =
        store.walk_lineage(&WalkFrom::Version(mref("lab/distilled"), num(1), Direction::Up), 10, 100).await.unwrap();
    let mut models: Vec<&str> = up.versions.values().map(|v| v.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    assert_eq!(models, ["lab/distilled", "lab/tuned", "team/base"]);
}
