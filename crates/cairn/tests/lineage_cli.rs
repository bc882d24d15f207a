//! `cairn push` with lineage flags, and `cairn lineage` (walks, add, remove, impact) against a
//! real server: what users type, what they read back, and the exit codes of bad input.

mod common;

use common::*;

use cairn_test_utils::{Backend, TestServer};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_with_lineage_then_walk_add_remove_and_impact() {
    let Some(s) = TestServer::start(Backend::Sqlite, "push_with_lineage_then_walk_add_remove_and_impact").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("weights.bin"), b"base").unwrap();
    let t = tmp.path();
    exits(&cairn(t, &s, &["models", "create", "team/base"]).await, 0);
    exits(&cairn(t, &s, &["models", "create", "team/chat"]).await, 0);
    exits(&cairn(t, &s, &["push", "team/base", dir.to_str().unwrap(), "-q", "--dataset", "web@v3"]).await, 0);

    // A typo in a flag fails before anything is uploaded (exit 2), and creates nothing.
    std::fs::write(dir.join("weights.bin"), b"chat").unwrap();
    let bad = cairn(t, &s, &["push", "team/chat", dir.to_str().unwrap(), "-q", "--base-model", "org/llm"]).await;
    assert!(exits(&bad, 2).contains("hf:org/name"), "{}", text(&bad));
    let bad =
        cairn(t, &s, &["push", "team/chat", dir.to_str().unwrap(), "-q", "--code", "https://git.example/r@abc"]).await;
    assert!(exits(&bad, 2).contains("--code"), "{}", text(&bad));
    let out = cairn(t, &s, &["models", "versions", "list", "team/chat", "--json"]).await;
    assert!(!exits(&out, 0).contains("\"version\": 1"), "nothing was pushed");

    let code = format!("https://git.example/org/chat@{SHA}");
    let out = cairn(
        t,
        &s,
        &[
            "push",
            "team/chat",
            dir.to_str().unwrap(),
            "-q",
            "--dataset",
            "name=ultrachat,version=2024-05,uri=s3://data/uc",
            "--run",
            "platform=mlflow,id=4f2a,param.lr=0.01",
            "--code",
            &code,
            "--base-model",
            "team/base:1",
            "--base-model",
            "hf:org/llm@main",
        ],
    )
    .await;
    exits(&out, 0);

    // Upstream as a tree: the chat model's inputs, then the base model's dataset.
    let out = cairn(t, &s, &["lineage", "team/chat:1"]).await;
    let tree = exits(&out, 0);
    assert!(tree.starts_with("team/chat:1  [draft]\n"), "{tree}");
    for want in [
        "dataset     ultrachat@2024-05",
        "run         mlflow:4f2a",
        "base model  team/base:1  [draft]",
        "hf:org/llm@main",
        "web@v3",
    ] {
        assert!(tree.contains(want), "{want} in\n{tree}");
    }
    // The base model's dataset sits one level deeper, under the base model.
    assert!(tree.contains("   └─ dataset     web@v3") || tree.contains("│  └─ dataset     web@v3"), "{tree}");
    let out = cairn(t, &s, &["lineage", "team/base:1", "--down", "--json"]).await;
    let g: serde_json::Value = serde_json::from_str(&exits(&out, 0)).unwrap();
    assert_eq!(g["direction"], "down");
    assert!(g["nodes"].as_array().unwrap().iter().any(|n| n["id"] == "version:team/chat:1"), "{g}");

    // Impact: both versions use the base model's dataset, nothing in production yet.
    let out = cairn(t, &s, &["lineage", "impact", "--dataset", "web"]).await;
    let said = exits(&out, 0);
    assert!(said.contains("2 version(s) affected by dataset:web") && said.contains("team/chat:1"), "{said}");
    let out = cairn(t, &s, &["lineage", "impact", "--dataset", "web", "--stage", "production"]).await;
    assert!(exits(&out, 0).contains("No version in production is affected"), "{}", text(&out));
    let out = cairn(t, &s, &["lineage", "impact"]).await;
    exits(&out, 2);

    // Add later (idempotent), then remove by id while still a draft.
    let out = cairn(t, &s, &["lineage", "add", "team/chat:1", "--dataset", "extra@1", "--json"]).await;
    let l: serde_json::Value = serde_json::from_str(&exits(&out, 0)).unwrap();
    assert_eq!(l["inputs"].as_array().unwrap().len(), 6);
    let id = l["inputs"][5]["id"].as_i64().unwrap().to_string();
    let out = cairn(t, &s, &["lineage", "add", "team/chat:1", "--dataset", "extra@1"]).await;
    assert!(exits(&out, 0).contains("now records 6 input(s)"), "{}", text(&out));
    exits(&cairn(t, &s, &["lineage", "remove", "team/chat:1", &id]).await, 0);
    let out = cairn(t, &s, &["lineage", "remove", "team/chat:1", &id]).await;
    exits(&out, 2);
    let out = cairn(t, &s, &["lineage", "add", "team/chat:1"]).await;
    exits(&out, 2);
    let out = cairn(t, &s, &["lineage", "team/chat", "--up"]).await;
    exits(&out, 2);
    s.stop().await;
}
