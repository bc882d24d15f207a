//! Webhooks end to end, on SQLite and PostgreSQL: a receiver on 127.0.0.1 gets signed
//! deliveries (the test checks the HMAC itself), failures are retried with backoff and given
//! up after the last attempt, redelivery works, bad input and other namespaces are refused,
//! the secret is shown once and never again, and private destinations are refused by default.

use std::time::{Duration, Instant};

use cairn_test_utils::TestServer;
use cairn_test_utils::receiver::{Receiver, verify};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(s: &TestServer, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn admin(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    call(s, &s.token, method, path, body).await
}

/// Short retries, so that backoff and giving up fit in a test.
fn short_retries(st: &mut cairn_server::Settings) {
    st.webhook_retry_base_secs = 1;
    st.webhook_max_attempts = 3;
}

async fn create_hook(s: &TestServer, ns: &str, url: &str, events: Value) -> (String, String) {
    admin(s, Method::POST, "/api/v1/namespaces", Some(json!({ "name": ns }))).await;
    let (st, v) = admin(
        s,
        Method::POST,
        &format!("/api/v1/namespaces/{ns}/webhooks"),
        Some(json!({ "url": url, "events": events })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (v["id"].as_str().unwrap().to_owned(), secret)
}

async fn deliveries(s: &TestServer, hook: &str) -> Vec<Value> {
    let (st, v) = admin(s, Method::GET, &format!("/api/v1/webhooks/{hook}/deliveries"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

async fn wait_status(s: &TestServer, hook: &str, delivery: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = deliveries(s, hook).await;
        let d = all.iter().find(|d| d["id"] == delivery).cloned().unwrap();
        if d["status"] == status {
            return d;
        }
        assert!(Instant::now() < deadline, "delivery never became {status}: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

cairn_test_utils::both_backends_delivering!(
    tweak = short_retries;
    a_ping_arrives_signed,
    failures_are_retried_with_backoff_then_delivered,
    permanent_failure_gives_up_and_redelivery_works
);

// These need no receiver: they run on the default settings (private destinations refused).
cairn_test_utils::both_backends!(bad_input_is_refused, other_namespaces_are_refused, the_secret_is_shown_once);

async fn a_ping_arrives_signed(s: &TestServer) {
    let r = Receiver::start().await;
    let (hook, secret) = create_hook(s, "team", &r.url, json!(["version.approved"])).await;
    let (st, d) = admin(s, Method::POST, &format!("/api/v1/webhooks/{hook}/ping"), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{d}");
    let got = r.wait_for(1).await;
    let body = verify(&got[0], &secret);
    assert_eq!(body["event"], "ping");
    assert_eq!(body["id"], d["id"]);
    assert_eq!(body["data"]["webhook_id"], hook.as_str());
    assert!(body["created_at"].is_i64());
    let done = wait_status(s, &hook, d["id"].as_str().unwrap(), "delivered").await;
    assert_eq!((done["attempts"].as_i64(), done["last_status"].as_i64()), (Some(1), Some(204)));

    // An event raised by the store reaches the subscribed hook, signed the same way.
    let n = s
        .state
        .store
        .enqueue_webhook_event(&cairn_core::Namespace::parse("team").unwrap(), "version.approved", &json!({ "v": 1 }))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let got = r.wait_for(2).await;
    let body = verify(&got[1], &secret);
    assert_eq!((body["event"].as_str(), &body["data"]), (Some("version.approved"), &json!({ "v": 1 })));
    // A deactivated hook gets nothing.
    let (st, v) = admin(s, Method::PATCH, &format!("/api/v1/webhooks/{hook}"), Some(json!({ "active": false }))).await;
    assert_eq!((st, v["active"].as_bool()), (StatusCode::OK, Some(false)));
    let ns = cairn_core::Namespace::parse("team").unwrap();
    assert_eq!(s.state.store.enqueue_webhook_event(&ns, "version.approved", &json!({})).await.unwrap(), 0);
}

async fn failures_are_retried_with_backoff_then_delivered(s: &TestServer) {
    let r = Receiver::start().await;
    r.fail_next(2);
    let (hook, secret) = create_hook(s, "team", &r.url, json!(["*"])).await;
    let (_, d) = admin(s, Method::POST, &format!("/api/v1/webhooks/{hook}/ping"), None).await;
    let id = d["id"].as_str().unwrap();
    let done = wait_status(s, &hook, id, "delivered").await;
    assert_eq!(done["attempts"], 3, "{done}");
    let got = r.got();
    assert_eq!(got.len(), 3);
    // Every attempt is the same delivery, freshly signed; the waits double (1 s, then 2 s).
    for g in &got {
        assert_eq!(verify(g, &secret)["id"], id);
    }
    let first_wait = got[1].at - got[0].at;
    let second_wait = got[2].at - got[1].at;
    assert!(first_wait >= Duration::from_millis(900), "{first_wait:?}");
    assert!(second_wait >= Duration::from_millis(1900), "{second_wait:?}");
}

async fn permanent_failure_gives_up_and_redelivery_works(s: &TestServer) {
    let r = Receiver::start().await;
    r.fail_next(usize::MAX);
    let (hook, secret) = create_hook(s, "team", &r.url, json!(["*"])).await;
    let (_, d) = admin(s, Method::POST, &format!("/api/v1/webhooks/{hook}/ping"), None).await;
    let id = d["id"].as_str().unwrap();
    let failed = wait_status(s, &hook, id, "failed").await;
    assert_eq!((failed["attempts"].as_i64(), failed["last_status"].as_i64()), (Some(3), Some(500)), "{failed}");
    assert!(failed["last_error"].as_str().unwrap().contains("500"), "{failed}");
    assert_eq!(r.got().len(), 3, "max attempts is 3");

    r.fail_next(0);
    let (st, again) = admin(s, Method::POST, &format!("/api/v1/webhooks/{hook}/deliveries/{id}/redeliver"), None).await;
    assert_eq!((st, again["status"].as_str()), (StatusCode::ACCEPTED, Some("pending")), "{again}");
    let done = wait_status(s, &hook, id, "delivered").await;
    assert_eq!(done["attempts"], 1);
    verify(&r.got()[3], &secret);
    let (st, _) = admin(s, Method::POST, &format!("/api/v1/webhooks/{hook}/deliveries/nope/redeliver"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

async fn bad_input_is_refused(s: &TestServer) {
    admin(s, Method::POST, "/api/v1/namespaces", Some(json!({ "name": "team" }))).await;
    let create = |url: &str, events: Value| json!({ "url": url, "events": events });
    for (body, why) in [
        (create("https://93.184.215.14/hook", json!(["version.exploded"])), "unknown event"),
        (create("https://93.184.215.14/hook", json!(["ping"])), "ping cannot be subscribed to"),
        (create("https://93.184.215.14/hook", json!([])), "no event"),
        (create("ftp://93.184.215.14/hook", json!(["*"])), "scheme"),
        (create("https://u:p@93.184.215.14/hook", json!(["*"])), "credentials"),
        // With the default settings private destinations are refused.
        (create("http://127.0.0.1:9/hook", json!(["*"])), "loopback"),
        (create("http://localhost:9/hook", json!(["*"])), "a name for loopback"),
        (create("http://169.254.169.254/latest/meta-data", json!(["*"])), "cloud metadata"),
        (create("http://10.0.0.1/hook", json!(["*"])), "RFC 1918"),
        (create("http://[fd00::1]/hook", json!(["*"])), "unique local"),
    ] {
        let (st, v) = admin(s, Method::POST, "/api/v1/namespaces/team/webhooks", Some(body)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{why}: {v}");
    }
    let (st, v) =
        admin(s, Method::POST, "/api/v1/namespaces/team/webhooks", Some(create("http://127.0.0.1/x", json!(["*"]))))
            .await;
    assert!(v["error"]["message"].as_str().unwrap().contains("CAIRN_WEBHOOK_ALLOW_PRIVATE_NETWORKS"), "{st} {v}");
    let (st, _) = admin(s, Method::GET, "/api/v1/namespaces/team/webhooks", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = admin(
        s,
        Method::POST,
        "/api/v1/namespaces/nowhere/webhooks",
        Some(create("https://93.184.215.14/h", json!(["*"]))),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// A service account holding `role` in `namespace`, and its key.
async fn member(s: &TestServer, name: &str, role: &str, namespace: &str) -> String {
    admin(s, Method::POST, "/api/v1/users", Some(json!({ "username": name, "kind": "service" }))).await;
    let (st, v) = admin(
        s,
        Method::POST,
        "/api/v1/grants",
        Some(json!({ "username": name, "role": role, "namespace": namespace })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, key) = admin(
        s,
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "name": "k", "scopes": ["read", "write"], "expires_in_days": 1, "username": name })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{key}");
    key["token"].as_str().unwrap().to_owned()
}

async fn other_namespaces_are_refused(s: &TestServer) {
    let (hook, _) = create_hook(s, "beta", "https://93.184.215.14/hook", json!(["*"])).await;
    admin(s, Method::POST, "/api/v1/namespaces", Some(json!({ "name": "alpha" }))).await;
    let owner = member(s, "alpha-owner", "model_owner", "alpha").await;
    let viewer = member(s, "beta-viewer", "viewer", "beta").await;
    // The owner of alpha manages alpha's hooks…
    let (st, v) = call(
        s,
        &owner,
        Method::POST,
        "/api/v1/namespaces/alpha/webhooks",
        Some(json!({ "url": "https://93.184.215.14/a", "events": ["version.promoted"] })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // …and nothing of beta's: a hook of beta and a hook that does not exist answer alike.
    let (st_real, real) = call(s, &owner, Method::GET, &format!("/api/v1/webhooks/{hook}"), None).await;
    let (st_none, none) = call(s, &owner, Method::GET, "/api/v1/webhooks/0190-none", None).await;
    assert_eq!((st_real, st_none), (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN), "{real} {none}");
    assert!(!real.to_string().contains("beta"), "{real}");
    for (method, path) in [
        (Method::DELETE, format!("/api/v1/webhooks/{hook}")),
        (Method::POST, format!("/api/v1/webhooks/{hook}/ping")),
        (Method::GET, format!("/api/v1/webhooks/{hook}/deliveries")),
        (Method::GET, "/api/v1/namespaces/beta/webhooks".to_owned()),
        (Method::GET, "/api/v1/webhooks".to_owned()),
    ] {
        let (st, v) = call(s, &owner, method.clone(), &path, None).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {v}");
    }
    // A global hook needs a global grant.
    let (st, _) = call(
        s,
        &owner,
        Method::POST,
        "/api/v1/webhooks",
        Some(json!({ "url": "https://93.184.215.14/g", "events": ["*"] })),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A viewer of beta may not manage beta's hooks.
    let (st, _) = call(s, &viewer, Method::GET, &format!("/api/v1/webhooks/{hook}"), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // The admin can, and sees a missing hook as missing.
    let (st, _) = admin(s, Method::GET, "/api/v1/webhooks/0190-none", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = admin(s, Method::DELETE, &format!("/api/v1/webhooks/{hook}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = admin(s, Method::GET, &format!("/api/v1/webhooks/{hook}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

async fn the_secret_is_shown_once(s: &TestServer) {
    let (hook, secret) = create_hook(s, "team", "https://93.184.215.14/hook", json!(["*"])).await;
    let (st, g) =
        admin(s, Method::POST, "/api/v1/webhooks", Some(json!({ "url": "https://93.184.215.14/g", "events": ["*"] })))
            .await;
    assert_eq!(st, StatusCode::CREATED, "{g}");
    assert!(g.get("namespace").is_none());
    let global_secret = g["secret"].as_str().unwrap().to_owned();
    admin(s, Method::POST, &format!("/api/v1/webhooks/{hook}/ping"), None).await;
    admin(s, Method::PATCH, &format!("/api/v1/webhooks/{hook}"), Some(json!({ "active": false }))).await;
    let mut seen = String::new();
    for path in [
        format!("/api/v1/webhooks/{hook}"),
        "/api/v1/namespaces/team/webhooks".to_owned(),
        "/api/v1/webhooks".to_owned(),
        format!("/api/v1/webhooks/{hook}/deliveries"),
        "/api/v1/audit/events?limit=1000".to_owned(),
    ] {
        let (st, v) = admin(s, Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        seen.push_str(&v.to_string());
    }
    assert!(seen.contains("webhook.create") && seen.contains(&hook), "the listings show the hook");
    let (_, one) = admin(s, Method::GET, &format!("/api/v1/webhooks/{hook}"), None).await;
    assert!(one.get("secret").is_none(), "{one}");
    assert!(!seen.contains(&secret) && !seen.contains(&global_secret), "a secret leaked: {seen}");
    assert!(!seen.contains("whsec_"), "a secret leaked");
}
