//! Searching by card facts and stage over HTTP, on SQLite and PostgreSQL: cards attached
//! through `PUT …/card` (YAML sources, checked and made canonical by the server) are found by
//! `GET /api/v1/models?filter=…` and `GET …/versions?filter=…`, the licence whatever its
//! case; the negative forms of version facts on models mean "no version"; an unknown field
//! is refused with the fields there are.

use cairn_test_utils::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Creates `ns/name` with one draft version carrying a card with this licence and pipeline
/// tag (no card when both are `None`).
async fn model_with_card(s: &TestServer, full_name: &str, license: Option<&str>, pipeline_tag: Option<&str>) {
    let (st, m) = s.call(Method::POST, "/api/v1/models", Some(json!({"name": full_name}))).await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    let versions = format!("/api/v1/models/{full_name}/versions");
    let (st, v) = s.call(Method::POST, &versions, Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    if license.is_none() && pipeline_tag.is_none() {
        return;
    }
    let mut source = format!("model:\n  name: {full_name}\n  description: A model to search for.\n");
    if let Some(l) = license {
        source.push_str(&format!("  license: {l}\n"));
    }
    if let Some(p) = pipeline_tag {
        source.push_str(&format!("  pipeline_tag: {p}\n"));
    }
    let card = json!({"source_name": "card.yaml", "source": source});
    let (st, info) = s.call(Method::PUT, &format!("{versions}/1/card"), Some(card)).await;
    assert_eq!(st, StatusCode::OK, "{info}");
}

/// The full names `GET /api/v1/models?filter=…` lists (the filter percent-encoded).
async fn search(s: &TestServer, filter: &str) -> Vec<String> {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/models", s.url))
        .query(&[("filter", filter)])
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{filter}");
    let list: Value = resp.json().await.unwrap();
    list["models"].as_array().unwrap().iter().map(|m| m["full_name"].as_str().unwrap().to_owned()).collect()
}

async fn filters_find_card_facts(s: &TestServer) {
    let (st, v) = s.call(Method::POST, "/api/v1/namespaces", Some(json!({"name": "nlp"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    model_with_card(s, "nlp/bert", Some("MIT"), Some("text-classification")).await;
    model_with_card(s, "nlp/gpt", Some("apache-2.0"), Some("text-generation")).await;
    model_with_card(s, "nlp/t5", None, None).await;

    // The request the docs show, written out: license = 'mit'.
    let (st, list) = s.call(Method::GET, "/api/v1/models?filter=license%20%3D%20'mit'", None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let names: Vec<&str> =
        list["models"].as_array().unwrap().iter().map(|m| m["full_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["nlp/bert"]);

    assert_eq!(search(s, "license IN ('MIT', 'Apache-2.0')").await, ["nlp/bert", "nlp/gpt"]);
    assert_eq!(search(s, "license != 'mit'").await, ["nlp/gpt", "nlp/t5"]);
    assert_eq!(search(s, "task LIKE 'text-%' AND license IS NOT NULL").await, ["nlp/bert", "nlp/gpt"]);
    assert_eq!(search(s, "task IS NULL").await, ["nlp/t5"]);
    assert_eq!(search(s, "stage = 'draft'").await, ["nlp/bert", "nlp/gpt", "nlp/t5"]);
    assert!(search(s, "stage = 'production'").await.is_empty());

    // Versions: the card's facts, NULL without a card.
    let (st, list) =
        s.call(Method::GET, "/api/v1/models/nlp/gpt/versions?filter=license%20%3D%20'APACHE-2.0'", None).await;
    assert_eq!((st, list["versions"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{list}");
    let (st, list) = s.call(Method::GET, "/api/v1/models/nlp/t5/versions?filter=license%20IS%20NULL", None).await;
    assert_eq!((st, list["versions"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{list}");

    // A misspelt field is refused, naming the fields there are.
    let (st, err) = s.call(Method::GET, "/api/v1/models?filter=lisence%20%3D%20'mit'", None).await;
    assert_eq!((st, err["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_filter")), "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown model field 'lisence'") && message.contains("stage, license, task"), "{message}");
}

cairn_test_utils::both_backends!(filters_find_card_facts);
