//! Accounts, passwords and the API-key lifecycle over a real socket, on SQLite and
//! PostgreSQL: revocation, expiry and disabling take effect on the very next request (the
//! cache of verified keys does not let a dead key through), rotation overlaps, namespace
//! restrictions, the password policy, the last administrator, and the audit trail of every
//! change without a secret in it.

use std::time::{Duration, Instant};

use cairn_store::AuditContext;
use cairn_store::user::NewApiKey;
use cairn_test_utils::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(s: &TestServer, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method.clone(), format!("{}{path}", s.url)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn admin(s: &TestServer, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    call(s, &s.token, method, path, body).await
}

/// Creates an account through the API; panics unless it is created.
async fn create_user(s: &TestServer, body: Value) -> Value {
    let (st, v) = admin(s, Method::POST, "/api/v1/users", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

/// A service account holding `role` globally, and a key for it with every scope.
async fn service_with_key(s: &TestServer, name: &str, role: &str, extra: Value) -> (String, String) {
    create_user(s, json!({ "username": name, "kind": "service" })).await;
    s.state.store.create_grant(&AuditContext::system(), name, role, None).await.unwrap();
    let mut body = json!({ "name": "ci", "scopes": ["read", "write", "admin"], "username": name });
    if let Some(obj) = extra.as_object() {
        for (k, v) in obj {
            body[k] = v.clone();
        }
    }
    let (st, key) = admin(s, Method::POST, "/api/v1/keys", Some(body)).await;
    assert_eq!(st, StatusCode::CREATED, "{key}");
    (key["id"].as_str().unwrap().to_owned(), key["token"].as_str().unwrap().to_owned())
}

/// A key for a person, made the way their own login would make it (the store directly:
/// administrators may not mint keys for people).
async fn person_key(s: &TestServer, username: &str) -> String {
    let user = s.state.store.find_user(username).await.unwrap().unwrap();
    let token = cairn_server::auth::generate_token();
    s.state
        .store
        .create_api_key(
            &AuditContext::system(),
            &NewApiKey {
                user_id: user.id,
                name: "own".into(),
                token_hash: cairn_server::auth::hash_token(&token),
                scopes: "read write".into(),
                expires_at: Some(s.state.now_ms() + 86_400_000),
                namespaces: String::new(),
                bootstrap: false,
            },
        )
        .await
        .unwrap();
    token
}

/// Adds a live login session for `username` directly in the database; returns its row id.
async fn add_session(s: &TestServer, username: &str) -> String {
    let user = s.state.store.find_user(username).await.unwrap().unwrap();
    let id = format!("session-{}", cairn_test_utils::random_token());
    let now = s.state.now_ms();
    let mut tx = s.state.store.db().begin().await.unwrap();
    tx.conn()
        .execute(
            "INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $4, $5)",
            cairn_store::params![&id, cairn_test_utils::random_token(), &user.id, now, now + 3_600_000],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn session_revoked(s: &TestServer, id: &str) -> bool {
    let mut c = s.state.store.db().read().await.unwrap();
    let (revoked,): (Option<i64>,) =
        c.conn().fetch_one("SELECT revoked_at FROM sessions WHERE id = $1", cairn_store::params![id]).await.unwrap();
    revoked.is_some()
}

cairn_test_utils::both_backends!(
    revocation_and_expiry_take_effect_on_the_next_request,
    rotation_keeps_the_old_key_for_the_overlap_only,
    namespace_restricted_keys_stay_in_their_namespaces,
    disabling_an_account_stops_its_keys_and_sessions_at_once,
    password_policy_and_password_changes,
    keys_for_people_are_their_own,
    the_last_administrator_stays,
    users_are_listed_changed_and_deleted,
    keys_are_listed_without_secrets,
    every_change_is_audited_without_secrets,
    a_password_change_in_a_session_ends_the_other_sessions,
);

async fn revocation_and_expiry_take_effect_on_the_next_request(s: &TestServer) {
    let (id, token) = service_with_key(s, "ci", "model_owner", json!({})).await;
    // Used once, so that the key sits in the cache of verified keys.
    assert_eq!(call(s, &token, Method::GET, "/api/v1/models", None).await.0, StatusCode::OK);
    let (st, v) = admin(s, Method::DELETE, &format!("/api/v1/keys/{id}"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (st, v) = call(s, &token, Method::GET, "/api/v1/models", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a revoked key still worked: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("revoked"), "{v}");
    // Revoking again changes nothing.
    assert_eq!(admin(s, Method::DELETE, &format!("/api/v1/keys/{id}"), None).await.0, StatusCode::NO_CONTENT);

    // A key may revoke itself.
    let (_, own) =
        admin(s, Method::POST, "/api/v1/keys", Some(json!({ "name": "self", "scopes": ["read"], "username": "ci" })))
            .await;
    let own_token = own["token"].as_str().unwrap();
    assert_eq!(call(s, own_token, Method::GET, "/api/v1/me", None).await.0, StatusCode::OK);
    let path = format!("/api/v1/keys/{}", own["id"].as_str().unwrap());
    assert_eq!(call(s, own_token, Method::DELETE, &path, None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(s, own_token, Method::GET, "/api/v1/me", None).await.0, StatusCode::UNAUTHORIZED);

    // Expiry: a rotation without overlap ends the old key now.
    let (_, k) =
        admin(s, Method::POST, "/api/v1/keys", Some(json!({ "name": "short", "scopes": ["read"], "username": "ci" })))
            .await;
    let old = k["token"].as_str().unwrap();
    assert_eq!(call(s, old, Method::GET, "/api/v1/me", None).await.0, StatusCode::OK);
    let path = format!("/api/v1/keys/{}/rotate", k["id"].as_str().unwrap());
    let (st, rotated) = call(s, old, Method::POST, &path, Some(json!({ "overlap_secs": 0 }))).await;
    assert_eq!(st, StatusCode::CREATED, "{rotated}");
    let (st, v) = call(s, old, Method::GET, "/api/v1/me", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("expired"), "{v}");
    let new = rotated["key"]["token"].as_str().unwrap();
    assert_eq!(call(s, new, Method::GET, "/api/v1/me", None).await.0, StatusCode::OK);
    // Expiry is bounded by the server's maximum age.
    let (st, v) = admin(
        s,
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "name": "long", "scopes": ["read"], "username": "ci", "expires_in_days": 91 })),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("between 1 and 90"), "{v}");
}

async fn rotation_keeps_the_old_key_for_the_overlap_only(s: &TestServer) {
    let (id, old) = service_with_key(s, "ci", "viewer", json!({ "namespaces": ["alpha"], "expires_in_days": 5 })).await;
    let (_, me) = call(s, &old, Method::GET, "/api/v1/me", None).await;
    let old_expiry = me["key_expires_at"].as_str().unwrap().to_owned();
    let rotated_at = Instant::now();
    let (st, r) =
        call(s, &old, Method::POST, &format!("/api/v1/keys/{id}/rotate"), Some(json!({ "overlap_secs": 2 }))).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    // Same name, scopes and namespaces; a fresh expiry of the same length.
    assert_eq!(r["key"]["name"], "ci");
    assert_eq!(r["key"]["scopes"], json!(["read", "write", "admin"]));
    assert_eq!(r["key"]["namespaces"], json!(["alpha"]));
    assert_eq!(r["previous"]["replaced_by"], r["key"]["id"]);
    assert!(r["previous"]["expires_at"].as_str().unwrap() < old_expiry.as_str(), "{r}");
    let new = r["key"]["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    // Both work during the overlap …
    assert_eq!(call(s, &old, Method::GET, "/api/v1/me", None).await.0, StatusCode::OK);
    assert_eq!(call(s, &new, Method::GET, "/api/v1/me", None).await.0, StatusCode::OK);
    // … a key is rotated once …
    let (st, v) = call(s, &old, Method::POST, &format!("/api/v1/keys/{id}/rotate"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, _) = call(
        s,
        &new,
        Method::POST,
        &format!("/api/v1/keys/{}/rotate", r["key"]["id"].as_str().unwrap()),
        Some(json!({ "overlap_secs": 8 * 86_400 })),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "overlaps are at most 7 days");
    // … and the old key stops once the overlap is over.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _) = call(s, &old, Method::GET, "/api/v1/me", None).await;
        if st == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(st, StatusCode::OK);
        assert!(Instant::now() < deadline, "the old key outlived its overlap");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated_at.elapsed() >= Duration::from_millis(1500), "the old key died before its overlap ended");
    assert_eq!(call(s, &new, Method::GET, "/api/v1/me", None).await.0, StatusCode::OK);
}

async fn namespace_restricted_keys_stay_in_their_namespaces(s: &TestServer) {
    for m in ["alpha/m", "beta/m"] {
        let (st, v) = admin(s, Method::POST, "/api/v1/models", Some(json!({ "name": m }))).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (_, token) = service_with_key(s, "ci", "model_owner", json!({ "namespaces": ["alpha"] })).await;
    assert_eq!(call(s, &token, Method::GET, "/api/v1/models/alpha/m", None).await.0, StatusCode::OK);
    let (st, _) = call(s, &token, Method::POST, "/api/v1/models/alpha/m/versions", Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED);
    // Outside: refused, and not even visible.
    let (st, v) = call(s, &token, Method::GET, "/api/v1/models/beta/m", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _) = call(s, &token, Method::POST, "/api/v1/models/beta/m/versions", Some(json!({}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = call(s, &token, Method::GET, "/api/v1/models", None).await;
    let names: Vec<&str> =
        list["models"].as_array().unwrap().iter().map(|m| m["full_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha/m"]);
    // Nor anything global, however strong its scopes.
    assert_eq!(call(s, &token, Method::POST, "/api/v1/namespaces", Some(json!({"name": "x"}))).await.0.as_u16(), 403);
    let (_, me) = call(s, &token, Method::GET, "/api/v1/me", None).await;
    assert_eq!(me["key_namespaces"], json!(["alpha"]));
    // A restricted key makes only keys restricted as narrowly.
    let (st, _) =
        call(s, &token, Method::POST, "/api/v1/keys", Some(json!({ "name": "wide", "scopes": ["read"] }))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let body = json!({ "name": "other", "scopes": ["read"], "namespaces": ["beta"] });
    assert_eq!(call(s, &token, Method::POST, "/api/v1/keys", Some(body)).await.0, StatusCode::FORBIDDEN);
    let body = json!({ "name": "same", "scopes": ["read"], "namespaces": ["alpha"] });
    assert_eq!(call(s, &token, Method::POST, "/api/v1/keys", Some(body)).await.0, StatusCode::CREATED);
    let body = json!({ "name": "bad", "scopes": ["read"], "namespaces": ["Not A Namespace"] });
    assert_eq!(admin(s, Method::POST, "/api/v1/keys", Some(body)).await.0, StatusCode::BAD_REQUEST);
}

async fn disabling_an_account_stops_its_keys_and_sessions_at_once(s: &TestServer) {
    create_user(s, json!({ "username": "alice", "password": "a sturdy passphrase", "display_name": "Alice" })).await;
    s.state.store.create_grant(&AuditContext::system(), "alice", "viewer", None).await.unwrap();
    let key = person_key(s, "alice").await;
    let session = add_session(s, "alice").await;
    assert_eq!(call(s, &key, Method::GET, "/api/v1/models", None).await.0, StatusCode::OK);
    let (st, v) = admin(s, Method::PATCH, "/api/v1/users/alice", Some(json!({ "disabled": true }))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["disabled"], true);
    let (st, v) = call(s, &key, Method::GET, "/api/v1/models", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a disabled account's key still worked: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("disabled"), "{v}");
    assert!(session_revoked(s, &session).await, "disabling left a session alive");
    let (st, _) = admin(s, Method::PATCH, "/api/v1/users/alice", Some(json!({ "disabled": false }))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(call(s, &key, Method::GET, "/api/v1/models", None).await.0, StatusCode::OK);
    // Deleting ends the key too.
    let (st, v) = admin(s, Method::DELETE, "/api/v1/users/alice", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(call(s, &key, Method::GET, "/api/v1/models", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(admin(s, Method::GET, "/api/v1/users/alice", None).await.0, StatusCode::NOT_FOUND);
}

async fn password_policy_and_password_changes(s: &TestServer) {
    let cases = [
        ("bob", "short pw", "at least 12"),
        ("bob", "qwerty123456", "common"),
        ("bob", "Password1234!", "common"),
        ("bob", "i-am-Bob-the-builder", "user name"),
    ];
    for (username, password, rule) in cases {
        let (st, v) =
            admin(s, Method::POST, "/api/v1/users", Some(json!({ "username": username, "password": password }))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{password}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(rule), "{password}: {v}");
    }
    let (st, _) = admin(
        s,
        Method::POST,
        "/api/v1/users",
        Some(json!({ "username": "robot", "kind": "service", "password": "a sturdy passphrase" })),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "service accounts have no password");
    let bob = create_user(s, json!({ "username": "bob", "password": "first sturdy passphrase" })).await;
    assert!(bob["password_changed_at"].is_string(), "{bob}");
    let key = person_key(s, "bob").await;
    let before = s.state.store.password_hash(bob["id"].as_str().unwrap()).await.unwrap().unwrap();
    let session = add_session(s, "bob").await;

    // Wrong current password: refused, nothing changes.
    let body = json!({ "current_password": "not the password", "new_password": "second sturdy passphrase" });
    let (st, v) = call(s, &key, Method::POST, "/api/v1/me/password", Some(body)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let id = bob["id"].as_str().unwrap().to_owned();
    assert_eq!(s.state.store.password_hash(&id).await.unwrap().unwrap(), before);
    assert!(!session_revoked(s, &session).await);
    // The policy applies to changes too.
    let body = json!({ "current_password": "first sturdy passphrase", "new_password": "letmein12345" });
    let (st, v) = call(s, &key, Method::POST, "/api/v1/me/password", Some(body)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // The right one: changed, stored as argon2id, other sessions ended.
    let body = json!({ "current_password": "first sturdy passphrase", "new_password": "second sturdy passphrase" });
    let (st, v) = call(s, &key, Method::POST, "/api/v1/me/password", Some(body)).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let after = s.state.store.password_hash(&id).await.unwrap().unwrap();
    assert!(after.starts_with("$argon2id$") && after != before);
    assert!(cairn_server::auth::verify_password("second sturdy passphrase", &after));
    assert!(session_revoked(s, &session).await, "other sessions survived a password change");
    // An administrator sets one.
    let session = add_session(s, "bob").await;
    let (st, v) =
        admin(s, Method::POST, "/api/v1/users/bob/password", Some(json!({ "new_password": "QWERTY123456" }))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = admin(
        s,
        Method::POST,
        "/api/v1/users/bob/password",
        Some(json!({ "new_password": "third sturdy passphrase" })),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert!(cairn_server::auth::verify_password(
        "third sturdy passphrase",
        &s.state.store.password_hash(&id).await.unwrap().unwrap()
    ));
    assert!(session_revoked(s, &session).await);
    // Not for people other than administrators.
    let body = json!({ "new_password": "fourth sturdy passphrase" });
    assert_eq!(call(s, &key, Method::POST, "/api/v1/users/bob/password", Some(body)).await.0, StatusCode::FORBIDDEN);
}

async fn keys_for_people_are_their_own(s: &TestServer) {
    create_user(s, json!({ "username": "carol", "password": "a sturdy passphrase" })).await;
    let (st, v) =
        admin(s, Method::POST, "/api/v1/keys", Some(json!({ "name": "x", "scopes": ["read"], "username": "carol" })))
            .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an administrator minted a key for a person: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("service accounts"), "{v}");
    let denied = s.client().list_audit_events(&[("action", "api_key.create"), ("target", "user:carol")]).await.unwrap();
    assert_eq!(denied.events.len(), 1);
    assert_eq!(denied.events[0].outcome, "denied");
    // Carol makes her own, and may not make one for someone else.
    let own = person_key(s, "carol").await;
    let (st, v) =
        call(s, &own, Method::POST, "/api/v1/keys", Some(json!({ "name": "laptop", "scopes": ["read"] }))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["username"], "carol");
    let body = json!({ "name": "x", "scopes": ["read"], "username": "admin" });
    assert_eq!(call(s, &own, Method::POST, "/api/v1/keys", Some(body)).await.0, StatusCode::FORBIDDEN);
    // Nor revoke or rotate another account's key: to her, it does not exist.
    let (_, mine) = admin(s, Method::GET, "/api/v1/keys", None).await;
    let admin_key = mine["keys"][0]["id"].as_str().unwrap();
    let (st, _) = call(s, &own, Method::DELETE, &format!("/api/v1/keys/{admin_key}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(s, &own, Method::POST, &format!("/api/v1/keys/{admin_key}/rotate"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // An administrator may revoke a person's key but not rotate it (that would mint one).
    let (st, v) =
        admin(s, Method::POST, &format!("/api/v1/keys/{}/rotate", v["id"].as_str().unwrap()), Some(json!({}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
}

async fn the_last_administrator_stays(s: &TestServer) {
    let (st, v) = admin(s, Method::DELETE, "/api/v1/users/admin", None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (st, _) = admin(s, Method::PATCH, "/api/v1/users/admin", Some(json!({ "disabled": true }))).await;
    assert_eq!(st, StatusCode::CONFLICT);
    // The rule holds below the API too.
    let ctx = AuditContext::system();
    let err = s.state.store.delete_user(&ctx, "admin").await.unwrap_err();
    assert!(err.to_string().contains("last enabled administrator"), "{err}");
    let disable = cairn_store::user::UserChanges { disabled: Some(true), ..Default::default() };
    assert!(s.state.store.update_user(&ctx, "admin", &disable).await.is_err());
    // Nor can the last admin grant be revoked.
    let (_, grants) = admin(s, Method::GET, "/api/v1/grants?username=admin", None).await;
    let grant_id = grants["grants"][0]["id"].as_str().unwrap().to_owned();
    let (st, v) = admin(s, Method::DELETE, &format!("/api/v1/grants/{grant_id}"), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("last enabled administrator"), "{v}");
    // With a second administrator, one of them may go.
    create_user(s, json!({ "username": "root2", "password": "a sturdy passphrase", "is_admin": true })).await;
    let (st, v) = admin(s, Method::DELETE, "/api/v1/users/root2", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    assert!(s.state.store.find_user("admin").await.unwrap().unwrap().is_admin);
}

async fn users_are_listed_changed_and_deleted(s: &TestServer) {
    for i in 0..5 {
        create_user(s, json!({ "username": format!("svc{i}"), "kind": "service" })).await;
    }
    let dave = create_user(
        s,
        json!({ "username": "dave", "password": "a sturdy passphrase", "display_name": "Dave D.", "email": "dave@example.org" }),
    )
    .await;
    assert_eq!((dave["kind"].as_str(), dave["display_name"].as_str()), (Some("user"), Some("Dave D.")));
    s.state.store.create_grant(&AuditContext::system(), "dave", "model_owner", None).await.unwrap();
    let mut seen = Vec::new();
    let mut path = "/api/v1/users?limit=3".to_owned();
    loop {
        let (st, page) = admin(s, Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        assert!(page["users"].as_array().unwrap().len() <= 3);
        seen.extend(page["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_owned()));
        match page["next_page_token"].as_str() {
            Some(t) => path = format!("/api/v1/users?limit=3&page_token={t}"),
            None => break,
        }
    }
    assert_eq!(seen, ["admin", "dave", "svc0", "svc1", "svc2", "svc3", "svc4"]);
    let (_, d) = admin(s, Method::GET, "/api/v1/users/dave", None).await;
    assert_eq!(d["roles"], json!([{ "role": "model_owner" }]));
    assert_eq!(d["email"], "dave@example.org");
    assert_eq!(d["mfa_enabled"], false);
    let (_, a) = admin(s, Method::GET, "/api/v1/users/admin", None).await;
    assert_eq!((a["is_admin"].as_bool(), &a["roles"]), (Some(true), &json!([{ "role": "admin" }])));
    let (st, v) = admin(
        s,
        Method::PATCH,
        "/api/v1/users/dave",
        Some(json!({ "display_name": "David", "email": "david@example.org" })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!((v["display_name"].as_str(), v["email"].as_str()), (Some("David"), Some("david@example.org")));
    let (st, _) = admin(s, Method::PATCH, "/api/v1/users/dave", Some(json!({ "email": "not an address" }))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = admin(s, Method::PATCH, "/api/v1/users/dave", Some(json!({ "colour": "red" }))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = admin(s, Method::POST, "/api/v1/users", Some(json!({ "username": "dave", "kind": "service" }))).await;
    assert_eq!(st, StatusCode::CONFLICT);
    // Dave sees himself, not the others.
    let key = person_key(s, "dave").await;
    assert_eq!(call(s, &key, Method::GET, "/api/v1/users/dave", None).await.0, StatusCode::OK);
    assert_eq!(call(s, &key, Method::GET, "/api/v1/users/admin", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(s, &key, Method::GET, "/api/v1/users", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(s, &key, Method::DELETE, "/api/v1/users/svc0", None).await.0, StatusCode::FORBIDDEN);
    let (st, _) = admin(s, Method::DELETE, "/api/v1/users/dave", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(admin(s, Method::DELETE, "/api/v1/users/dave", None).await.0, StatusCode::NOT_FOUND);
}

async fn keys_are_listed_without_secrets(s: &TestServer) {
    let (id, token) = service_with_key(s, "ci", "viewer", json!({ "expires_in_days": 3 })).await;
    // A key close to expiry says so in every response.
    let resp = reqwest::Client::new().get(format!("{}/api/v1/me", s.url)).bearer_auth(&token).send().await.unwrap();
    let warning = resp.headers().get("warning").unwrap().to_str().unwrap().to_owned();
    assert!(warning.contains("expires in 2 day(s)") || warning.contains("expires in 3 day(s)"), "{warning}");
    assert!(resp.headers().get("cairn-key-expires").is_some());
    let me: Value = resp.json().await.unwrap();
    assert_eq!((me["kind"].as_str(), me["key_id"].as_str()), (Some("service"), Some(id.as_str())));
    assert_eq!(me["roles"], json!([{ "role": "viewer" }]));
    assert!(me["key_expires_at"].is_string());
    // Last use and address are recorded (off the request path: poll).
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (st, list) = call(s, &token, Method::GET, "/api/v1/keys", None).await;
        assert_eq!(st, StatusCode::OK, "{list}");
        if list["keys"][0]["last_used_ip"] == "127.0.0.1" {
            break list;
        }
        assert!(Instant::now() < deadline, "last use never recorded: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let k = &listed["keys"][0];
    assert_eq!(
        (k["id"].as_str(), k["username"].as_str(), k["status"].as_str()),
        (Some(id.as_str()), Some("ci"), Some("active"))
    );
    assert!(k["last_used_at"].is_string() && k["created_at"].is_string() && k["expires_at"].is_string());
    let text = listed.to_string();
    assert!(!text.contains(&token) && !text.contains(&cairn_server::auth::hash_token(&token)), "{text}");
    assert!(k.get("token").is_none() && k.get("token_hash").is_none());
    // Administrators list anyone's keys, or all; others only their own.
    let (_, of_ci) = admin(s, Method::GET, "/api/v1/keys?username=ci", None).await;
    assert_eq!(of_ci["keys"].as_array().unwrap().len(), 1);
    let (_, all) = admin(s, Method::GET, "/api/v1/keys?all=true", None).await;
    assert!(all["keys"].as_array().unwrap().len() >= 2, "{all}");
    assert_eq!(call(s, &token, Method::GET, "/api/v1/keys?all=true", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(s, &token, Method::GET, "/api/v1/keys?username=admin", None).await.0, StatusCode::FORBIDDEN);
    admin(s, Method::DELETE, &format!("/api/v1/keys/{id}"), None).await;
    let (_, of_ci) = admin(s, Method::GET, "/api/v1/keys?username=ci", None).await;
    assert_eq!(of_ci["keys"][0]["status"], "revoked");
    assert!(of_ci["keys"][0]["revoked_at"].is_string());
}

async fn every_change_is_audited_without_secrets(s: &TestServer) {
    let passwords = ["first sturdy passphrase", "second sturdy passphrase", "third sturdy passphrase"];
    create_user(s, json!({ "username": "erin", "password": passwords[0] })).await;
    let erin = person_key(s, "erin").await;
    let body = json!({ "current_password": passwords[0], "new_password": passwords[1] });
    assert_eq!(call(s, &erin, Method::POST, "/api/v1/me/password", Some(body)).await.0, StatusCode::NO_CONTENT);
    let body = json!({ "new_password": passwords[2] });
    assert_eq!(admin(s, Method::POST, "/api/v1/users/erin/password", Some(body)).await.0, StatusCode::NO_CONTENT);
    admin(s, Method::PATCH, "/api/v1/users/erin", Some(json!({ "display_name": "Erin" }))).await;
    admin(s, Method::PATCH, "/api/v1/users/erin", Some(json!({ "disabled": true }))).await;
    admin(s, Method::PATCH, "/api/v1/users/erin", Some(json!({ "disabled": false }))).await;
    let (id, token) = service_with_key(s, "ci", "viewer", json!({})).await;
    let (_, rotated) = call(s, &token, Method::POST, &format!("/api/v1/keys/{id}/rotate"), Some(json!({}))).await;
    let new_token = rotated["key"]["token"].as_str().unwrap().to_owned();
    admin(s, Method::DELETE, &format!("/api/v1/keys/{}", rotated["key"]["id"].as_str().unwrap()), None).await;
    assert_eq!(admin(s, Method::DELETE, "/api/v1/users/erin", None).await.0, StatusCode::NO_CONTENT);

    let events = s.client().list_audit_events(&[("limit", "1000")]).await.unwrap().events;
    let actions: Vec<&str> = events.iter().filter(|e| e.outcome == "success").map(|e| e.action.as_str()).collect();
    for action in [
        "user.create",
        "user.password",
        "user.update",
        "user.disable",
        "user.enable",
        "user.delete",
        "api_key.create",
        "api_key.rotate",
        "api_key.revoke",
    ] {
        assert!(actions.contains(&action), "no {action} event in {actions:?}");
    }
    let passwords_changed = events.iter().filter(|e| e.action == "user.password" && e.target == "user:erin").count();
    assert_eq!(passwords_changed, 2);
    let text = serde_json::to_string(&events).unwrap();
    for secret in passwords.iter().map(|p| p.to_string()).chain([
        token.clone(),
        new_token.clone(),
        erin.clone(),
        cairn_server::auth::hash_token(&token),
        cairn_server::auth::hash_token(&new_token),
        "$argon2".to_owned(),
    ]) {
        assert!(!text.contains(&secret), "a secret is in the audit log: {secret}");
    }
}

async fn a_password_change_in_a_session_ends_the_other_sessions(s: &TestServer) {
    let (old, new) = ("first sturdy passphrase", "second sturdy passphrase");
    create_user(s, json!({ "username": "fay", "password": old })).await;
    let anonymous = cairn_client::Client::new(&s.url, None).unwrap();
    let (here, _) = anonymous.login_password("fay", old, None).await.unwrap();
    let (elsewhere, _) = anonymous.login_password("fay", old, None).await.unwrap();
    assert_eq!(elsewhere.whoami().await.unwrap().username, "fay");
    let err = here.change_password("wrong", new).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    here.change_password(old, new).await.unwrap();
    // The session that made the change goes on; the other one ended.
    assert_eq!(here.whoami().await.unwrap().username, "fay");
    assert_eq!(elsewhere.whoami().await.unwrap_err().status(), Some(401));
    assert_eq!(anonymous.login_password("fay", old, None).await.unwrap_err().status(), Some(401));
    anonymous.login_password("fay", new, None).await.unwrap();
}
