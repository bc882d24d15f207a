//! Data-subject requests over HTTP, on SQLite and PostgreSQL: administrators export,
//! rectify and erase a person and read the request log; everyone else is refused on every
//! privacy route; after an erasure the audit chain verifies with the erased events counted,
//! and the person's name is gone from the audit log the API serves.

use cairn_test_utils::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

cairn_test_utils::both_backends!(requests_are_served_to_administrators_and_logged, privacy_routes_refuse_everyone_else);

async fn call(s: &TestServer, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null))
}

async fn admin(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    call(s, method, path, &s.token, body).await
}

/// A service account `name` (with `role` granted globally, if any) and a key for it.
async fn account(s: &TestServer, name: &str, role: Option<&str>) -> String {
    let (st, v) = admin(s, Method::POST, "/api/v1/users", Some(json!({ "username": name, "kind": "service" }))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    if let Some(r) = role {
        let (st, v) = admin(s, Method::POST, "/api/v1/grants", Some(json!({ "username": name, "role": r }))).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, key) = admin(
        s,
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "name": "k", "scopes": ["read", "write", "admin"], "expires_in_days": 1, "username": name })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{key}");
    key["token"].as_str().unwrap().to_owned()
}

async fn requests_are_served_to_administrators_and_logged(s: &TestServer) {
    // A service account: administrators may make keys for it, so it can act over the API.
    let carol_account = json!({
        "username": "carol", "kind": "service", "display_name": "Carol C.", "email": "carol@example.org"
    });
    let (st, v) = admin(s, Method::POST, "/api/v1/users", Some(carol_account)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, key) = admin(
        s,
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "name": "carol's key", "scopes": ["read", "write"], "expires_in_days": 1, "username": "carol" })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{key}");
    let carol = key["token"].as_str().unwrap().to_owned();
    let (st, v) =
        admin(s, Method::POST, "/api/v1/grants", Some(json!({ "username": "carol", "role": "model_owner" }))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(s, Method::POST, "/api/v1/models", &carol, Some(json!({ "name": "team/forecast" }))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // The inventory.
    let (st, inv) = admin(s, Method::GET, "/api/v1/privacy/inventory", None).await;
    assert_eq!(st, StatusCode::OK, "{inv}");
    assert!(inv["fields"].as_array().unwrap().iter().any(|f| f["location"] == "users.email"));

    // Export: her data, never a secret.
    let (st, export) = admin(s, Method::GET, "/api/v1/privacy/subjects/carol", None).await;
    assert_eq!(st, StatusCode::OK, "{export}");
    let d = &export["data"];
    assert_eq!(d["account"]["email"], "carol@example.org");
    assert_eq!(d["api_keys"][0]["name"], "carol's key");
    assert_eq!(d["authored"]["models"][0]["name"], "team/forecast");
    let text = export.to_string();
    assert!(!text.contains(&carol), "the export holds her token");
    assert!(["\"token_hash\"", "\"password_hash\"", "\"totp_secret\""].iter().all(|k| !text.contains(k)), "{text}");
    let (st, _) = admin(s, Method::GET, "/api/v1/privacy/subjects/carol?purpose=portability", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = admin(s, Method::GET, "/api/v1/privacy/subjects/carol?purpose=gossip", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = admin(s, Method::GET, "/api/v1/privacy/subjects/nobody", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Rectification.
    let (st, u) =
        admin(s, Method::PATCH, "/api/v1/privacy/subjects/carol", Some(json!({ "email": "carol@new.example.org" })))
            .await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["email"], "carol@new.example.org");
    let (st, _) =
        admin(s, Method::PATCH, "/api/v1/privacy/subjects/carol", Some(json!({ "email": "not an address" }))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, events) = admin(s, Method::GET, "/api/v1/audit/events?action=gdpr.rectify", None).await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");

    // Erasure: yourself and the last administrator are refused.
    let (st, v) = admin(s, Method::DELETE, "/api/v1/privacy/subjects/admin", None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, erased) = admin(s, Method::DELETE, "/api/v1/privacy/subjects/carol", None).await;
    assert_eq!(st, StatusCode::OK, "{erased}");
    let pseudonym = erased["pseudonym"].as_str().unwrap().to_owned();
    assert!(pseudonym.starts_with("erased:"));
    assert_eq!(erased["api_keys_deleted"], 1);
    let listed = erased["erased_events"].as_array().unwrap().len() as u64;
    assert!(listed >= 4, "{erased}");
    // Her key stops working at once.
    let (st, _) = call(s, Method::GET, "/api/v1/models", &carol, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = admin(s, Method::GET, "/api/v1/users/carol", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // The chain verifies, with exactly her events erased.
    let report = s.state.store.verify_audit_chain(vec![]).await.unwrap();
    assert!(report.ok(), "{:?}", report.first_break);
    assert_eq!(report.erased, listed);
    let (_, chain) = admin(s, Method::GET, "/api/v1/audit/events?limit=1000", None).await;
    let text = chain.to_string();
    assert!(!text.contains("carol"), "the audit log still names her: {text}");
    let (_, model) = admin(s, Method::GET, "/api/v1/models/team/forecast", None).await;
    assert_eq!(model["created_by"], pseudonym);

    // The request log, with every request and its status.
    let (st, log) = admin(s, Method::GET, "/api/v1/privacy/requests", None).await;
    assert_eq!(st, StatusCode::OK, "{log}");
    let mut seen: Vec<(String, String, String)> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let subject = if r["subject"] == pseudonym { "CAROL" } else { r["subject"].as_str().unwrap() };
            (r["kind"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned(), subject.to_owned())
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String, String)> = [
        ("access", "completed", "CAROL"),
        ("erasure", "completed", "CAROL"),
        ("portability", "completed", "CAROL"),
        ("rectification", "completed", "CAROL"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(seen, want, "{log}");
    let (_, mine) = admin(s, Method::GET, &format!("/api/v1/privacy/requests?subject={pseudonym}"), None).await;
    assert_eq!(mine["requests"].as_array().unwrap().len(), 4);

    // The last administrator: refused, and the refusal is logged.
    let other = account(s, "second-admin", Some("admin")).await;
    let (st, _) = call(s, Method::DELETE, "/api/v1/privacy/subjects/second-admin", &other, None).await;
    assert_eq!(st, StatusCode::CONFLICT, "yourself");
    let (st, _) = admin(s, Method::DELETE, "/api/v1/privacy/subjects/second-admin", None).await;
    assert_eq!(st, StatusCode::OK, "another administrator remains");
    let (st, v) = admin(s, Method::PATCH, "/api/v1/users/admin", Some(json!({ "display_name": "Root" }))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let report = s.state.store.verify_audit_chain(vec![]).await.unwrap();
    assert!(report.ok(), "{:?}", report.first_break);
}

async fn privacy_routes_refuse_everyone_else(s: &TestServer) {
    account(s, "dave", None).await;
    let routes: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/api/v1/privacy/subjects/dave", None),
        (Method::PATCH, "/api/v1/privacy/subjects/dave", Some(json!({ "email": "x@example.org" }))),
        (Method::DELETE, "/api/v1/privacy/subjects/dave", None),
        (Method::GET, "/api/v1/privacy/requests", None),
    ];
    for role in [None, Some("viewer"), Some("model_owner"), Some("mrc"), Some("security"), Some("sre"), Some("auditor")]
    {
        let name = format!("as-{}", role.unwrap_or("nobody")).replace('_', "-");
        let token = account(s, &name, role).await;
        for (method, path, body) in &routes {
            let (st, v) = call(s, method.clone(), path, &token, body.clone()).await;
            assert!(st == StatusCode::FORBIDDEN || st == StatusCode::NOT_FOUND, "{method} {path} as {name}: {st} {v}");
        }
        let (st, _) = call(s, Method::GET, "/api/v1/privacy/inventory", &token, None).await;
        let want = if role == Some("auditor") { StatusCode::OK } else { StatusCode::FORBIDDEN };
        assert_eq!(st, want, "inventory as {name}");
    }
    // Nothing happened to dave, and no request was logged.
    let (st, _) = admin(s, Method::GET, "/api/v1/users/dave", None).await;
    assert_eq!(st, StatusCode::OK);
    let (_, log) = admin(s, Method::GET, "/api/v1/privacy/requests", None).await;
    assert_eq!(log["requests"], json!([]));
}
