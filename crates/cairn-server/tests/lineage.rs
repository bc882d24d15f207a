//! Lineage through the server, on SQLite and PostgreSQL: inputs recorded in the commit of a
//! push or later, walks up and down, impact queries, policy facts and the ML-BOM fed from it,
//! bad input refused with a clear error, and nothing shown across namespaces the caller may
//! not read.

use cairn_test_utils::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

async fn commit(s: &TestServer, model: &str, file: &[u8], lineage: Value) -> (StatusCode, Value) {
    let id = s.upload(model, &[("model.bin", file)]).await;
    s.call(Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({"lineage": lineage}))).await
}

fn node<'a>(g: &'a Value, id: &str) -> &'a Value {
    g["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("{id} in {g}"))
}

async fn recorded_at_push_walked_and_fed_to_policies(s: &TestServer) {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (st, base) = commit(
        s,
        "team/base",
        b"base weights",
        json!([{"kind": "dataset", "name": "web", "version": "v3", "uri": "s3://data/web", "digest": digest}]),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{base}");
    s.call(Method::PUT, "/api/v1/models/team/base/aliases/champion", Some(json!({"version": 1}))).await;
    let (st, chat) = commit(
        s,
        "team/chat",
        b"chat weights",
        json!([
            {"kind": "dataset", "name": "ultrachat", "version": "2024-05"},
            {"kind": "run", "platform": "mlflow", "id": "4f2a", "params": {"lr": "0.01"}},
            {"kind": "code", "repository": "https://git.example/org/chat", "commit": SHA.to_uppercase()},
            {"kind": "base_model", "model": "team/base@champion"},
            {"kind": "base_model", "model": "hf:org/llm", "revision": "main"},
        ]),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{chat}");

    // The inputs as recorded: the alias resolved to its number, the commit in lower case.
    let (st, l) = s.call(Method::GET, "/api/v1/models/team/chat/versions/1/lineage", None).await;
    assert_eq!(st, StatusCode::OK, "{l}");
    let inputs = l["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 5, "{l}");
    assert_eq!(inputs[2]["ref"], SHA);
    assert_eq!((inputs[3]["name"].as_str(), inputs[3]["ref"].as_str()), (Some("team/base"), Some("1")));
    assert_eq!(inputs[3]["from"], "version:team/base:1");
    assert_eq!(inputs[4]["from"], "model:hf:org/llm@main");
    assert_eq!(inputs[0]["recorded_by"], "user:admin");

    // Upstream: the version's inputs, then its base model's.
    let (st, g) = s.call(Method::GET, "/api/v1/models/team/chat/versions/1/lineage/graph?direction=up", None).await;
    assert_eq!(st, StatusCode::OK, "{g}");
    assert_eq!(g["root"], "version:team/chat:1");
    assert_eq!(g["edges"].as_array().unwrap().len(), 6, "{g}");
    assert_eq!(node(&g, "version:team/base:1")["depth"], 1);
    assert_eq!(node(&g, "dataset:web@v3")["depth"], 2);
    assert_eq!(node(&g, "dataset:web@v3")["digest"], digest);
    assert_eq!(node(&g, "run:mlflow:4f2a")["depth"], 1);
    // One step only: the base model's own dataset is out of reach.
    let (_, g1) = s.call(Method::GET, "/api/v1/models/team/chat/versions/1/lineage/graph?depth=1", None).await;
    assert_eq!(g1["edges"].as_array().unwrap().len(), 5, "{g1}");

    // Downstream from the base, and impact of its dataset.
    let (_, down) =
        s.call(Method::GET, "/api/v1/models/team/base/versions/@champion/lineage/graph?direction=down", None).await;
    assert_eq!(node(&down, "version:team/chat:1")["depth"], 1, "{down}");
    let (st, imp) = s.call(Method::GET, "/api/v1/lineage/impact?dataset=web", None).await;
    assert_eq!(st, StatusCode::OK, "{imp}");
    let found: Vec<(String, i64)> = imp["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (format!("{}:{}", v["model"].as_str().unwrap(), v["version"]), v["depth"].as_i64().unwrap()))
        .collect();
    assert_eq!(found, [("team/base:1".to_owned(), 1), ("team/chat:1".to_owned(), 2)], "{imp}");
    assert_eq!(imp["source"], "dataset:web");
    let (_, prod) = s.call(Method::GET, "/api/v1/lineage/impact?dataset=web&stage=production", None).await;
    assert_eq!(prod["versions"], json!([]), "both are drafts: {prod}");
    let (_, ext) = s.call(Method::GET, "/api/v1/lineage/impact?base_model=hf:org/llm", None).await;
    assert_eq!(ext["versions"][0]["model"], "team/chat", "{ext}");
    let (_, from_v) = s.call(Method::GET, "/api/v1/lineage/impact?version=team/base:1&stage=draft", None).await;
    assert_eq!(from_v["versions"].as_array().unwrap().len(), 1, "{from_v}");

    // Policies see recorded lineage next to the card's.
    let policy = "name: lineage-known\nseverity: high\nrules:\n  - id: base\n    action: block\n    condition: {field: lineage.base_models, op: contains, value: 'team/base:1'}\n  - id: data\n    action: block\n    condition: {field: lineage.datasets, op: length_greater_than, value: 0}\n";
    let (st, check) =
        s.call(Method::POST, "/api/v1/models/team/chat/versions/1/policy-check", Some(json!({"policy": policy}))).await;
    assert_eq!(st, StatusCode::OK, "{check}");
    assert_eq!(check["blocked"], false, "{check}");
    assert_eq!(check["facts"]["lineage"]["runs"], json!(["mlflow:4f2a"]));
    assert_eq!(check["facts"]["lineage"]["base_models"], json!(["team/base:1", "hf:org/llm@main"]));
    let (_, check) =
        s.call(Method::POST, "/api/v1/models/team/base/versions/1/policy-check", Some(json!({"policy": policy}))).await;
    assert_eq!(check["blocked"], true, "team/base has no base model: {check}");

    // The ML-BOM lists the recorded dataset (with its hash) and base models.
    let (st, bom) = s.call(Method::GET, "/api/v1/models/team/chat/versions/1/sbom", None).await;
    assert_eq!(st, StatusCode::OK, "{bom}");
    let names: Vec<&str> = bom["components"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    for want in ["ultrachat", "team/base", "hf:org/llm"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let (_, base_bom) = s.call(Method::GET, "/api/v1/models/team/base/versions/1/sbom", None).await;
    assert_eq!(base_bom["components"][0]["hashes"][0], json!({"alg": "SHA-256", "content": "ab".repeat(32)}));

    // Every change is in the audit log: lineage pushed with a version in its version.create event.
    let (_, ev) = s.call(Method::GET, "/api/v1/audit/events?action=version.create", None).await;
    let with_lineage: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["after"]["lineage"].as_array().is_some_and(|l| !l.is_empty()))
        .filter_map(|e| e["target"].as_str())
        .collect();
    assert!(with_lineage.contains(&"version:team/chat:1") && with_lineage.contains(&"version:team/base:1"), "{ev}");
}

async fn added_later_removed_only_from_drafts(s: &TestServer) {
    s.push("team/m", &[("a.bin", b"a")]).await;
    s.push("team/m", &[("b.bin", b"b")]).await;
    let path = "/api/v1/models/team/m/versions/2/lineage";
    let add = json!({"inputs": [{"kind": "base_model", "model": "team/m:1"}, {"kind": "dataset", "name": "d"}]});
    let (st, l) = s.call(Method::POST, path, Some(add.clone())).await;
    assert_eq!(st, StatusCode::OK, "{l}");
    assert_eq!(l["inputs"].as_array().unwrap().len(), 2);
    // A retry is harmless.
    let (_, again) = s.call(Method::POST, path, Some(add)).await;
    assert_eq!(again["inputs"], l["inputs"]);
    // Version 1 cannot now derive from version 2.
    let (st, e) = s
        .call(
            Method::POST,
            "/api/v1/models/team/m/versions/1/lineage",
            Some(json!({"inputs": [{"kind": "base_model", "model": "team/m:2"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("circle"), "{e}");

    let id = l["inputs"][1]["id"].as_i64().unwrap();
    let (st, _) = s.call(Method::DELETE, &format!("{path}/{id}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.call(Method::DELETE, &format!("{path}/{id}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Once submitted, reviewers see the lineage as it is: it can grow, not shrink.
    let (st, v) = s.call(Method::POST, "/api/v1/models/team/m/versions/2/submit", Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let base = l["inputs"][0]["id"].as_i64().unwrap();
    let (st, e) = s.call(Method::DELETE, &format!("{path}/{base}"), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    let (st, _) = s
        .call(Method::POST, path, Some(json!({"inputs": [{"kind": "dataset", "name": "late", "version": "1"}]})))
        .await;
    assert_eq!(st, StatusCode::OK);
}

async fn bad_input_is_refused_clearly(s: &TestServer) {
    s.push("team/m", &[("a.bin", b"a")]).await;
    let path = "/api/v1/models/team/m/versions/1/lineage";
    let bad = [
        (json!({"inputs": [{"kind": "weights", "name": "x"}]}), "unknown variant"),
        (json!({"inputs": [{"kind": "dataset", "name": "x", "colour": "red"}]}), "unknown field"),
        (json!({"inputs": [{"kind": "dataset", "name": ""}]}), "dataset name"),
        (json!({"inputs": [{"kind": "dataset", "name": "x", "digest": "sha256:xyz"}]}), "algorithm:hex"),
        (json!({"inputs": [{"kind": "code", "repository": "r", "commit": "abc"}]}), "full commit"),
        (json!({"inputs": [{"kind": "run", "platform": "ML Flow", "id": "1"}]}), "platform"),
        (json!({"inputs": [{"kind": "base_model", "model": "org/llm"}]}), "hf:org/name"),
        (json!({"inputs": [{"kind": "base_model", "model": "team/m:1", "revision": "main"}]}), "revision"),
        (json!({"inputs": [{"kind": "base_model", "model": "team/m:7"}]}), "no version 7"),
        (json!({"inputs": [{"kind": "base_model", "model": "team/m:1"}]}), "itself"),
    ];
    for (body, says) in bad {
        let (st, e) = s.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(e["error"]["message"].as_str().unwrap_or("").contains(says), "{body}: {e}");
    }
    let many: Vec<Value> = (0..101).map(|i| json!({"kind": "dataset", "name": format!("d{i}")})).collect();
    let (st, _) = s.call(Method::POST, path, Some(json!({"inputs": many}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, l) = s.call(Method::GET, path, None).await;
    assert_eq!(l["inputs"], json!([]), "nothing was recorded");
    // A push whose lineage is bad creates no version.
    let (st, e) = commit(s, "team/m", b"new", json!([{"kind": "base_model", "model": "team/none:1"}])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    let (_, m) = s.call(Method::GET, "/api/v1/models/team/m", None).await;
    assert_eq!(m["latest_version"], 1);

    for q in ["direction=sideways", "depth=0", "depth=51", "colour=red"] {
        let (st, e) = s.call(Method::GET, &format!("{path}/graph?{q}"), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {e}");
    }
    for q in ["", "dataset=a&run=mlflow:1", "dataset=a&stage=shipped", "run=nocolon", "base_model=team/m:1"] {
        let (st, e) = s.call(Method::GET, &format!("/api/v1/lineage/impact?{q}"), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {e}");
    }
    let (st, _) = s.call(Method::GET, "/api/v1/models/team/m/versions/9/lineage/graph", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

async fn other_namespaces_stay_hidden(s: &TestServer) {
    // A secret base model in a namespace the reader and writer below may not read.
    commit(s, "vault/secret", b"secret", json!([{"kind": "dataset", "name": "shared"}])).await;
    commit(
        s,
        "team/open",
        b"open",
        json!([{"kind": "dataset", "name": "shared"}, {"kind": "base_model", "model": "vault/secret:1"}]),
    )
    .await;
    let reader = s.service_account("rhea", &[("viewer", Some("team"))]).await;
    let writer = s.service_account("wade", &[("model_owner", Some("team"))]).await;

    let (st, g) =
        s.call_as(Some(&reader), Method::GET, "/api/v1/models/team/open/versions/1/lineage/graph", None).await;
    assert_eq!(st, StatusCode::OK, "{g}");
    assert!(!g.to_string().contains("vault"), "nothing names the hidden version: {g}");
    assert_eq!(node(&g, "hidden:1")["kind"], "hidden");
    assert_eq!(node(&g, "dataset:shared")["depth"], 1);

    let (_, imp) = s.call_as(Some(&reader), Method::GET, "/api/v1/lineage/impact?dataset=shared", None).await;
    assert_eq!(imp["hidden"], 1, "{imp}");
    assert_eq!(imp["versions"].as_array().unwrap().len(), 1, "{imp}");
    assert!(!imp.to_string().contains("vault"), "{imp}");
    let (st, _) = s.call_as(Some(&reader), Method::GET, "/api/v1/lineage/impact?version=vault/secret:1", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A reader cannot record; a writer cannot point at what they cannot see.
    let body = json!({"inputs": [{"kind": "dataset", "name": "x"}]});
    let (st, _) =
        s.call_as(Some(&reader), Method::POST, "/api/v1/models/team/open/versions/1/lineage", Some(body)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let body = json!({"inputs": [{"kind": "base_model", "model": "vault/secret:1"}]});
    let (st, e) =
        s.call_as(Some(&writer), Method::POST, "/api/v1/models/team/open/versions/1/lineage", Some(body)).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(e["error"]["message"], "model \"vault/secret\" does not exist");
}

mod lineage {
    use super::*;
    cairn_test_utils::both_backends!(
        recorded_at_push_walked_and_fed_to_policies,
        added_later_removed_only_from_drafts,
        bad_input_is_refused_clearly,
        other_namespaces_stay_hidden,
    );
}
