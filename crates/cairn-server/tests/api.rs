//! The native API over a real socket, on SQLite and PostgreSQL.

use cairn_api_types as api;
use cairn_test_utils::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;

async fn raw(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", server.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = resp.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        assert!(ct.starts_with("application/json"), "{status} {path}: not JSON ({ct}): {text}");
        serde_json::from_str(&text).unwrap()
    };
    (status, value)
}

async fn audit_count(server: &TestServer) -> usize {
    server.client().list_audit_events(&[("limit", "1000")]).await.unwrap().events.len()
}

cairn_test_utils::both_backends!(
    crud_through_the_client,
    bad_input_is_refused_and_changes_nothing,
    scopes_are_enforced_and_denials_audited,
    paging_with_signed_tokens
);

async fn crud_through_the_client(s: &TestServer) {
    let c = s.client();
    let me = c.whoami().await.unwrap();
    assert_eq!(me.username, "admin");
    let m = c
        .create_model(&api::CreateModel {
            name: "nlp/sentiment".into(),
            description: "classifies".into(),
            tags: [("task".to_string(), "text-classification".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(m.full_name, "nlp/sentiment");
    for i in 1..=3 {
        let v = c
            .create_version(
                "nlp/sentiment",
                &api::CreateVersion { source: format!("s3://models/{i}"), ..Default::default() },
            )
            .await
            .unwrap();
        assert_eq!(v.version, i);
    }
    c.set_alias("nlp/sentiment", "champion", 2).await.unwrap();
    let v = c.get_version("nlp/sentiment", "@champion").await.unwrap();
    assert_eq!(v.version, 2);
    assert_eq!(v.source, "s3://models/2");
    c.set_alias("nlp/sentiment", "champion", 3).await.unwrap();
    assert_eq!(c.get_version("nlp/sentiment", "@champion").await.unwrap().version, 3);
    let v = c.set_version_tag("nlp/sentiment", "3", "validated by", "qa team").await.unwrap();
    assert_eq!(v.tags["validated by"], "qa team");
    let m = c.set_model_tag("nlp/sentiment", "a/b", "slash").await.unwrap();
    assert_eq!(m.tags["a/b"], "slash");
    let m = c.get_model("nlp/sentiment").await.unwrap();
    assert_eq!(m.latest_version, 3);
    assert_eq!(m.aliases["champion"], 3);
    c.delete_version("nlp/sentiment", "1").await.unwrap();
    let err = c.get_version("nlp/sentiment", "1").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(err.to_string().contains("has no version 1 (latest is 3)"), "{err}");
    let list = c.list_versions("nlp/sentiment", &Default::default()).await.unwrap();
    assert_eq!(list.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2]);
    let ns = c.list_namespaces().await.unwrap();
    assert_eq!(ns.namespaces[0].name, "nlp");
    c.delete_model("nlp/sentiment").await.unwrap();
    assert_eq!(c.get_model("nlp/sentiment").await.unwrap_err().status(), Some(404));
    // Every change above is in the audit log, with the request id and actor.
    let events = c.list_audit_events(&[("target", "model:nlp/sentiment")]).await.unwrap().events;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["model.create", "model.tag.set", "model.delete"]);
    assert!(
        events
            .iter()
            .all(|e| e.actor == "user:admin" && e.request_id.is_some() && e.source_ip.as_deref() == Some("127.0.0.1"))
    );
}

async fn bad_input_is_refused_and_changes_nothing(s: &TestServer) {
    let t = Some(s.token.as_str());
    let (st, _) = raw(s, Method::POST, "/api/v1/models", t, Some(r#"{"name":"team/base"}"#)).await;
    assert_eq!(st, StatusCode::CREATED);
    let before = audit_count(s).await;
    let cases: Vec<(Method, &str, Option<String>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/v1/models",
            Some(r#"{"name":"Team/Bad Name"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::POST,
            "/api/v1/models",
            Some(r#"{"name":"team.x/y"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::POST,
            "/api/v1/models",
            Some(r#"{"name":"noslash"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::POST,
            "/api/v1/models",
            Some(r#"{"name":"team/a","colour":"red"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (Method::POST, "/api/v1/models", Some(r#"{"name":42}"#.into()), StatusCode::BAD_REQUEST, "invalid_argument"),
        (Method::POST, "/api/v1/models", Some(r#"{"name":"team/a""#.into()), StatusCode::BAD_REQUEST, "malformed_json"),
        (
            Method::POST,
            "/api/v1/models",
            Some(format!(r#"{{"name":"team/a","description":"{}"}}"#, "x".repeat(2 * 1024 * 1024))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Method::POST,
            "/api/v1/models",
            Some(r#"{"name":"team/base"}"#.into()),
            StatusCode::CONFLICT,
            "already_exists",
        ),
        (Method::POST, "/api/v1/models/team/ghost/versions", Some("{}".into()), StatusCode::NOT_FOUND, "not_found"),
        (
            Method::POST,
            "/api/v1/models/team/base/versions",
            Some(r#"{"metadata":[1]}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (Method::GET, "/api/v1/models/team/base/versions/0", None, StatusCode::BAD_REQUEST, "invalid_argument"),
        (Method::GET, "/api/v1/models/team/base/versions/7", None, StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/api/v1/models/team/base/versions/@nope", None, StatusCode::NOT_FOUND, "not_found"),
        (
            Method::PUT,
            "/api/v1/models/team/base/aliases/1abc",
            Some(r#"{"version":1}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/api/v1/models/team/base/aliases/prod",
            Some(r#"{"version":1}"#.into()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (Method::GET, "/api/v1/models?filter=name%20%3D%3D%20'x'", None, StatusCode::BAD_REQUEST, "invalid_filter"),
        (Method::GET, "/api/v1/models?filter=nme%20%3D%20'x'", None, StatusCode::BAD_REQUEST, "invalid_filter"),
        (Method::GET, "/api/v1/models?limit=0", None, StatusCode::BAD_REQUEST, "invalid_argument"),
        (Method::GET, "/api/v1/models?limit=abc", None, StatusCode::BAD_REQUEST, "invalid_argument"),
        (Method::GET, "/api/v1/models?sort=name", None, StatusCode::BAD_REQUEST, "invalid_argument"),
        (Method::GET, "/api/v1/models?order_by=colour", None, StatusCode::BAD_REQUEST, "invalid_argument"),
        (
            Method::GET,
            "/api/v1/models?page_token=eyJrZXkiOiJ4IiwiaWQiOjF9.AAAA",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_page_token",
        ),
        (Method::DELETE, "/api/v1/models", None, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (Method::GET, "/api/v1/nothing-here", None, StatusCode::NOT_FOUND, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let (st, v) = raw(s, method.clone(), path, t, body.as_deref()).await;
        assert_eq!(st, status, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // The filter error points at the offending token.
    let (_, v) = raw(s, Method::GET, "/api/v1/models?filter=name%20%3D%20'x'%20AMD%20y", t, None).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("AMD"), "{v}");
    assert_eq!(audit_count(s).await, before, "refused requests changed something");
    let models = s.client().list_models(&Default::default()).await.unwrap();
    assert_eq!(models.models.len(), 1);
}

async fn scopes_are_enforced_and_denials_audited(s: &TestServer) {
    let admin = s.client();
    admin.create_model(&api::CreateModel { name: "team/m".into(), ..Default::default() }).await.unwrap();
    // A CI service account that owns models everywhere, used through a read-only key.
    admin
        .create_user(&api::CreateUser {
            username: "ci".into(),
            password: None,
            is_admin: false,
            kind: Some("service".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    s.state.store.create_grant(&cairn_store::AuditContext::system(), "ci", "model_owner", None).await.unwrap();
    let key = admin
        .create_key(&api::CreateApiKey {
            name: "reader".into(),
            scopes: vec!["read".into()],
            expires_in_days: Some(1),
            username: Some("ci".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(key.token.starts_with("cairn_"));
    let reader = s.client_with(Some(&key.token));
    assert_eq!(reader.get_model("team/m").await.unwrap().full_name, "team/m");
    let err = reader.create_version("team/m", &Default::default()).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    let err = reader.list_audit_events(&[]).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    // A read key cannot mint a write key.
    let err = reader
        .create_key(&api::CreateApiKey {
            name: "x".into(),
            scopes: vec!["write".into()],
            expires_in_days: None,
            username: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    let denied = admin.list_audit_events(&[("action", "version.create")]).await.unwrap().events;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].outcome, "denied");
    assert_eq!(denied[0].key_id.as_deref(), Some(key.id.as_str()));
    // Wrong and missing keys.
    for token in [None, Some("cairn_wrong"), Some("")] {
        let (st, v) = raw(s, Method::GET, "/api/v1/models", token, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(v["error"]["code"], "unauthenticated");
    }
    // Non-admin users cannot create users.
    let err = reader
        .create_user(&api::CreateUser {
            username: "eve".into(),
            password: Some("long enough password".into()),
            is_admin: true,
            kind: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
}

async fn paging_with_signed_tokens(s: &TestServer) {
    let c = s.client();
    for i in 0..7 {
        c.create_model(&api::CreateModel { name: format!("team/m{i}"), ..Default::default() }).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut opts = cairn_client::ListOptions { limit: Some(3), order_by: Some("-name".into()), ..Default::default() };
    loop {
        let page = c.list_models(&opts).await.unwrap();
        seen.extend(page.models.into_iter().map(|m| m.name));
        match page.next_page_token {
            Some(t) => opts.page_token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, ["m6", "m5", "m4", "m3", "m2", "m1", "m0"]);
    // A token from one listing is refused by another.
    let first = c.list_models(&cairn_client::ListOptions { limit: Some(3), ..Default::default() }).await.unwrap();
    let token = first.next_page_token.unwrap();
    let err = c
        .list_models(&cairn_client::ListOptions {
            limit: Some(3),
            order_by: Some("created_at".into()),
            page_token: Some(token.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    // A token with a flipped character is refused.
    let mut tampered = token.into_bytes();
    tampered[2] = if tampered[2] == b'A' { b'B' } else { b'A' };
    let err = c
        .list_models(&cairn_client::ListOptions {
            limit: Some(3),
            page_token: Some(String::from_utf8(tampered).unwrap()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
}

/// Every route in the OpenAPI document (built from the router itself) refuses anonymous
/// callers with a JSON 401.
#[tokio::test]
async fn every_api_route_refuses_anonymous_callers() {
    let Some(s) = TestServer::start(Backend::Sqlite, "every_api_route_refuses_anonymous_callers").await else {
        return;
    };
    let (_, doc) = cairn_server::app::api_router().split_for_parts();
    let mut checked = 0;
    for (path, item) in &doc.paths.paths {
        let concrete = cairn_test_utils::concrete_path(path, "team");
        let ops = [
            (Method::GET, item.get.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::PUT, item.put.is_some()),
            (Method::PATCH, item.patch.is_some()),
            (Method::DELETE, item.delete.is_some()),
        ];
        for (method, present) in ops {
            if !present {
                continue;
            }
            let body = matches!(method, Method::POST | Method::PUT | Method::PATCH).then_some("{}");
            let (st, v) = raw(&s, method.clone(), &concrete, None, body).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {concrete}");
            assert_eq!(v["error"]["code"], "unauthenticated");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} routes found");
    // The OpenAPI document itself is behind authentication too.
    let (st, _) = raw(&s, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = raw(&s, Method::GET, "/api/v1/openapi.json", Some(&s.token), None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    // Probes are open.
    assert_eq!(raw(&s, Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
    let (st, v) = raw(&s, Method::GET, "/readyz", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["database"], "ok");
    s.stop().await;
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let Some(s) = TestServer::start(Backend::Sqlite, "responses_carry_a_request_id").await else {
        return;
    };
    let resp = reqwest::Client::new().get(format!("{}/healthz", s.url)).send().await.unwrap();
    let id = resp.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    let resp = reqwest::Client::new()
        .get(format!("{}/healthz", s.url))
        .header("x-request-id", "mine-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "mine-123");
    s.stop().await;
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let Some(s) = TestServer::start(Backend::Sqlite, "expired_keys_are_refused").await else {
        return;
    };
    let token = cairn_test_utils::random_token();
    let admin = s.state.store.find_api_key(&cairn_server::auth::hash_token(&s.token)).await.unwrap().unwrap();
    s.state
        .store
        .create_api_key(
            &cairn_store::AuditContext::system(),
            &cairn_store::user::NewApiKey {
                user_id: admin.account.user_id,
                name: "old".into(),
                token_hash: cairn_server::auth::hash_token(&token),
                scopes: "read".into(),
                expires_at: Some(1),
                namespaces: String::new(),
                bootstrap: false,
            },
        )
        .await
        .unwrap();
    let (st, v) = raw(&s, Method::GET, "/api/v1/me", Some(&token), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"));
    s.stop().await;
}
