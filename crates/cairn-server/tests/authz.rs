//! The authorisation matrix: every API route (enumerated from the router's own OpenAPI
//! document) × every role, granted globally or in one namespace × a target inside and outside
//! that namespace × anonymous, checked against the permission table of `cairn-core`.
//!
//! A route is "allowed" when the answer is neither 401, 403, nor the 404 that hides a model or
//! namespace the caller may not see; every other answer (200, 201, 204, 400, 404 for a missing
//! sub-object, 409, …) means the request got past authorisation.

use std::collections::BTreeMap;

use cairn_core::{Permission, Role};
use cairn_test_utils::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const IN: &str = "alpha";
const OUT: &str = "beta";

async fn raw(
    s: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method.clone(), format!("{}{path}", s.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if path.contains("/parts/") {
        req = req.header("content-type", "application/octet-stream").body(b"x".to_vec());
    } else if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn admin(s: &TestServer, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    raw(s, method, path, Some(&s.token), Some(body)).await
}

/// Makes sure both namespaces hold model `m` with a version, a tag and the alias `prod`.
async fn ensure_fixtures(s: &TestServer) {
    for ns in [IN, OUT] {
        admin(s, Method::POST, "/api/v1/namespaces", json!({ "name": ns })).await;
        admin(s, Method::POST, "/api/v1/models", json!({ "name": format!("{ns}/m") })).await;
        let (_, model) = admin(s, Method::GET, &format!("/api/v1/models/{ns}/m"), Value::Null).await;
        let mut latest = model["latest_version"].as_i64().unwrap_or(0);
        let (st, _) = admin(s, Method::GET, &format!("/api/v1/models/{ns}/m/versions/{latest}"), Value::Null).await;
        if latest == 0 || st != StatusCode::OK {
            let (st, v) = admin(s, Method::POST, &format!("/api/v1/models/{ns}/m/versions"), json!({})).await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
            latest = v["version"].as_i64().unwrap();
        }
        admin(s, Method::PUT, &format!("/api/v1/models/{ns}/m/tags/k"), json!({ "value": "v" })).await;
        admin(s, Method::PUT, &format!("/api/v1/models/{ns}/m/versions/1/tags/k"), json!({ "value": "v" })).await;
        admin(s, Method::PUT, &format!("/api/v1/models/{ns}/m/aliases/prod"), json!({ "version": latest })).await;
    }
}

/// A caller of the matrix.
struct Who {
    label: String,
    role: Option<Role>,
    global: bool,
    token: Option<String>,
}

/// What the permission table says: may `who` use `permission` on `target`?
/// `target` is `Some(ns)` for a request about namespace `ns`, `None` for a global one;
/// `any_namespace` marks requests that need the permission in some namespace (uploads by id).
fn expected(permission: Permission, who: &Who, target: Option<&str>, any_namespace: bool) -> bool {
    if who.token.is_none() {
        return false;
    }
    let Some(roles) = permission.roles() else {
        return true;
    };
    let Some(role) = who.role else { return false };
    if !roles.contains(&role) {
        return false;
    }
    if who.global {
        return true;
    }
    // The role is granted in `IN` only.
    permission.is_namespaced() && (any_namespace || target == Some(IN))
}

fn got_through(status: StatusCode, body: &Value, target: Option<&str>) -> bool {
    if status == StatusCode::UNAUTHORIZED {
        return false;
    }
    // Other 403s (a wrong current password, a missing CSRF token) come from the handler,
    // after authorisation.
    if status == StatusCode::FORBIDDEN && body["error"]["code"] == "permission_denied" {
        return false;
    }
    if status == StatusCode::NOT_FOUND
        && let Some(ns) = target
    {
        let message = body["error"]["message"].as_str().unwrap_or("");
        let hidden = [format!("model \"{ns}/m\" does not exist"), format!("namespace \"{ns}\" does not exist")];
        if hidden.iter().any(|h| h == message) {
            return false;
        }
    }
    true
}

/// A request body that gets past validation, so that only authorisation decides. Every
/// route that takes a body must have one here: a new route fails this test until it does.
fn sample_body(method: &Method, template: &str, ns: Option<&str>, n: usize) -> Option<Value> {
    let ns = ns.unwrap_or(IN);
    let body = match (method.as_str(), template) {
        ("POST", "/api/v1/models") => json!({ "name": format!("{ns}/new-{n}") }),
        ("PATCH", "/api/v1/models/{namespace}/{name}") => json!({ "description": "changed" }),
        ("PUT", "/api/v1/models/{namespace}/{name}/tags/{key}") => json!({ "value": "v2" }),
        ("POST", "/api/v1/models/{namespace}/{name}/versions") => json!({}),
        ("PATCH", "/api/v1/models/{namespace}/{name}/versions/{version}") => json!({ "description": "changed" }),
        ("PUT", "/api/v1/models/{namespace}/{name}/versions/{version}/tags/{key}") => json!({ "value": "v2" }),
        ("PUT", "/api/v1/models/{namespace}/{name}/aliases/{alias}") => json!({ "version": 1 }),
        ("POST", "/api/v1/models/{namespace}/{name}/uploads") => json!({ "files": [] }),
        ("POST", "/api/v1/uploads/{upload_id}/commit") => json!({}),
        ("PUT", "/api/v1/uploads/{upload_id}/blobs/{sha256}/parts/{part}") => Value::Null,
        ("POST", "/api/v1/namespaces") => json!({ "name": format!("space-{n}") }),
        ("POST", "/api/v1/audit/prune") => json!({ "dry_run": true }),
        ("POST", "/api/v1/users") => json!({ "username": format!("made-{n}"), "kind": "service" }),
        ("POST", "/api/v1/keys") => json!({ "name": "matrix", "scopes": ["read"], "expires_in_days": 1 }),
        ("POST", "/api/v1/grants") => json!({ "username": "target", "role": "viewer", "namespace": OUT }),
        ("PATCH", "/api/v1/users/{username}") => json!({ "display_name": "Changed" }),
        ("PATCH", "/api/v1/privacy/subjects/{username}") => json!({ "email": "changed@example.org" }),
        ("POST", "/api/v1/users/{username}/password") => {
            json!({ "new_password": "an unusual passphrase of forty-two" })
        }
        ("POST", "/api/v1/keys/{key_id}/rotate") => json!({}),
        ("POST", "/api/v1/me/password") => {
            json!({ "current_password": "not the password", "new_password": "an unusual passphrase of forty-two" })
        }
        (
            "POST",
            "/api/v1/auth/logout" | "/api/v1/auth/logout-all" | "/api/v1/me/mfa/totp" | "/api/v1/audit/checkpoints",
        ) => {
            json!({})
        }
        ("POST", "/api/v1/auth/mfa") => json!({ "code": "000000" }),
        ("POST", "/api/v1/namespaces/{namespace}/webhooks" | "/api/v1/webhooks") => {
            json!({ "url": "https://93.184.215.14/hook", "events": ["*"] })
        }
        ("PATCH", "/api/v1/webhooks/{webhook_id}") => json!({ "active": true }),
        (
            "POST",
            "/api/v1/models/{namespace}/{name}/versions/{version}/submit"
            | "/api/v1/models/{namespace}/{name}/versions/{version}/promote"
            | "/api/v1/models/{namespace}/{name}/versions/{version}/deprecate"
            | "/api/v1/models/{namespace}/{name}/versions/{version}/retire",
        ) => json!({ "reason": "matrix" }),
        ("POST", "/api/v1/models/{namespace}/{name}/versions/{version}/reviews") => {
            json!({ "decision": "comment", "role": "mrc", "rationale": "matrix" })
        }
        ("POST", "/api/v1/models/{namespace}/{name}/versions/{version}/policy-check") => json!({}),
        ("POST", "/api/v1/models/{namespace}/{name}/versions/{version}/scan") => json!({}),
        ("PUT", "/api/v1/environments/{environment}") => json!({ "description": "matrix" }),
        ("POST", "/api/v1/environments/{environment}/deployments") => {
            json!({ "model": format!("{ns}/m"), "version": "1" })
        }
        ("POST", "/api/v1/environments/{environment}/rollback") => {
            json!({ "model": format!("{ns}/m"), "reason": "matrix" })
        }
        ("POST", "/api/v1/deployments/{id}/status") => json!({ "status": "failed" }),
        ("POST", "/api/v1/models/{namespace}/{name}/versions/{version}/eval-jobs") => json!({ "suite": "none" }),
        ("POST", "/api/v1/eval-jobs/claim" | "/api/v1/eval-jobs/{id}/heartbeat") => json!({ "worker": "matrix" }),
        ("POST", "/api/v1/eval-jobs/{id}/complete") => json!({ "worker": "matrix", "results": { "accuracy": 1.0 } }),
        ("POST", "/api/v1/eval-jobs/{id}/fail") => json!({ "worker": "matrix", "error": "matrix" }),
        ("POST", "/api/v1/eval-jobs/{id}/cancel") => json!({ "reason": "matrix" }),
        ("POST", "/api/v1/deployments/{id}/slo-reports") => json!({ "error_rate": 0.5 }),
        ("POST", "/api/v1/models/{namespace}/{name}/versions/{version}/lineage") => {
            json!({ "inputs": [{ "kind": "dataset", "name": "matrix" }] })
        }
        ("POST", "/api/v1/models/{namespace}/{name}/versions/{version}/exceptions") => {
            json!({ "policy": "none", "justification": "the matrix needs a justification" })
        }
        ("PUT", "/api/v1/models/{namespace}/{name}/versions/{version}/card") => {
            json!({ "source_name": "card.yaml", "source": "model:\n  name: m\n" })
        }
        ("POST", "/api/v1/models/{namespace}/{name}/versions/{version}/evaluations") => {
            json!({ "suite": "none", "results": { "accuracy": 1.0 } })
        }
        ("POST", "/api/v1/policies") => json!({
            "source": json!({
                "name": format!("matrix-{n}"), "severity": "low",
                "rules": [{ "id": "r", "action": "warn", "condition": { "field": "metrics.accuracy", "op": "exists" } }]
            }).to_string()
        }),
        ("PATCH", "/api/v1/policies/{name}/versions/{version}") => json!({ "status": "inactive" }),
        ("POST", "/api/v1/policy-exceptions/{id}/decision") => json!({ "status": "approved" }),
        ("PUT", "/api/v1/namespaces/{namespace}/eval-suites/{name}") => {
            json!({ "definition": { "metrics": [{ "name": "accuracy", "at_least": 0.5 }] } })
        }
        (
            "POST",
            "/api/v1/webhooks/{webhook_id}/ping" | "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        ) => {
            json!({})
        }
        (
            "POST" | "DELETE",
            "/api/v1/me/mfa/totp/confirm" | "/api/v1/me/mfa/totp" | "/api/v1/me/mfa/recovery-codes",
        ) => {
            json!({ "code": "000000" })
        }
        (m, _) if m == "GET" || m == "DELETE" => Value::Null,
        _ => return None,
    };
    Some(body)
}

/// Every operation of the API router: (method, path template, declared permission).
fn routes() -> Vec<(Method, String, Permission)> {
    let (_, doc) = cairn_server::app::api_router().split_for_parts();
    let doc = serde_json::to_value(&doc).unwrap();
    let by_name: BTreeMap<&str, Permission> = Permission::ALL.iter().map(|p| (p.as_str(), *p)).collect();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else { continue };
            let declared = op["x-cairn-permission"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} declares no x-cairn-permission: every route must"));
            let permission =
                *by_name.get(declared).unwrap_or_else(|| panic!("{method} {path}: unknown permission {declared}"));
            out.push((m, path.clone(), permission));
        }
    }
    out
}

async fn matrix(s: &TestServer) {
    ensure_fixtures(s).await;
    let (st, v) = admin(s, Method::POST, "/api/v1/users", json!({ "username": "target", "kind": "service" })).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // One service account per role and reach (global, or granted in IN), each with a key that
    // carries every scope, so that only roles decide; one account without any role; anonymous.
    let mut callers = vec![Who { label: "anonymous".into(), role: None, global: false, token: None }];
    let mut reaches: Vec<(Option<Role>, bool)> = vec![(None, false)];
    for role in Role::ALL {
        reaches.push((Some(role), true));
        reaches.push((Some(role), false));
    }
    for (role, global) in reaches {
        let label = match role {
            None => "no-role".to_owned(),
            Some(r) if global => format!("{r}-global"),
            Some(r) => format!("{r}-in-{IN}"),
        };
        let name = label.replace('_', "-");
        let (st, v) = admin(s, Method::POST, "/api/v1/users", json!({ "username": name, "kind": "service" })).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        if let Some(r) = role {
            let mut grant = json!({ "username": name, "role": r.as_str() });
            if !global {
                grant["namespace"] = json!(IN);
            }
            let (st, v) = admin(s, Method::POST, "/api/v1/grants", grant).await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
        }
        let (st, key) = admin(
            s,
            Method::POST,
            "/api/v1/keys",
            json!({ "name": "matrix", "scopes": ["read", "write", "admin"], "expires_in_days": 1, "username": name }),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{key}");
        callers.push(Who { label, role, global, token: Some(key["token"].as_str().unwrap().to_owned()) });
    }

    let routes = routes();
    assert!(routes.len() >= 35, "only {} routes found", routes.len());
    let mut mismatches = Vec::new();
    let mut checked = 0;
    let mut n = 0;
    for (method, template, permission) in &routes {
        // Requests whose body names the model (and so the namespace) are namespaced too.
        let namespaced = template.contains("{namespace}")
            || (method == Method::POST
                && (template == "/api/v1/models"
                    || template == "/api/v1/environments/{environment}/deployments"
                    || template == "/api/v1/environments/{environment}/rollback"));
        // Requests about an object by id need the permission in some namespace first.
        let any_namespace = template.starts_with("/api/v1/uploads/")
            || template.starts_with("/api/v1/deployments/")
            || template.starts_with("/api/v1/eval-jobs/");
        let targets: &[Option<&str>] = if namespaced { &[Some(IN), Some(OUT)] } else { &[None] };
        for &target in targets {
            for who in &callers {
                n += 1;
                let body = sample_body(method, template, target, n)
                    .unwrap_or_else(|| panic!("no sample body for {method} {template}: add one to sample_body"));
                let path = cairn_test_utils::concrete_path(template, target.unwrap_or(IN));
                let body = (!body.is_null()).then_some(body);
                let (status, answer) = raw(s, method.clone(), &path, who.token.as_deref(), body).await;
                let want = expected(*permission, who, target, any_namespace);
                let got = got_through(status, &answer, target);
                if want != got {
                    mismatches.push(format!(
                        "{method} {path} as {}: table says {}, server answered {status} {}",
                        who.label,
                        if want { "allow" } else { "deny" },
                        answer.to_string().chars().take(200).collect::<String>()
                    ));
                }
                if who.token.is_none() {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} anonymous");
                }
                checked += 1;
                if got && method == Method::DELETE && status.is_success() {
                    ensure_fixtures(s).await;
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {checked} checks disagree with the permission table:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn sqlite_authorisation_matrix() {
    let Some(s) = TestServer::start(Backend::Sqlite, "sqlite_authorisation_matrix").await else { return };
    matrix(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn postgres_authorisation_matrix() {
    let Some(s) = TestServer::start(Backend::Postgres, "postgres_authorisation_matrix").await else { return };
    matrix(&s).await;
    s.stop().await;
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Pushes a version with one file to `model` as the admin.
async fn push_file(s: &TestServer, model: &str, data: &[u8]) {
    let sha = sha256_hex(data);
    let files = json!({ "files": [{ "path": "weights.bin", "size": data.len(), "sha256": sha }] });
    let (st, up) = admin(s, Method::POST, &format!("/api/v1/models/{model}/uploads"), files).await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    let id = up["upload_id"].as_str().unwrap();
    if !up["blobs"][0]["present"].as_bool().unwrap() {
        let resp = reqwest::Client::new()
            .put(format!("{}/api/v1/uploads/{id}/blobs/{sha}/parts/0", s.url))
            .bearer_auth(&s.token)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    let (st, v) = admin(s, Method::POST, &format!("/api/v1/uploads/{id}/commit"), json!({ "aliases": ["prod"] })).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

/// `answer` with `from` replaced by `to` in its error message.
fn same_answer(answer: &Value, from: &str, to: &str) -> Value {
    let mut out = answer.clone();
    if let Some(m) = answer["error"]["message"].as_str() {
        out["error"]["message"] = json!(m.replace(from, to));
    }
    out
}

/// A service account holding `role` in `namespace`, and its key.
async fn member(s: &TestServer, name: &str, role: &str, namespace: &str) -> String {
    admin(s, Method::POST, "/api/v1/users", json!({ "username": name, "kind": "service" })).await;
    let (st, v) =
        admin(s, Method::POST, "/api/v1/grants", json!({ "username": name, "role": role, "namespace": namespace }))
            .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, key) = admin(
        s,
        Method::POST,
        "/api/v1/keys",
        json!({ "name": "k", "scopes": ["read", "write"], "expires_in_days": 1, "username": name }),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{key}");
    key["token"].as_str().unwrap().to_owned()
}

/// A model owner in one namespace cannot read, change or even detect the models of another:
/// every answer about them is the answer about a model that does not exist.
async fn namespaces_are_isolated(s: &TestServer) {
    ensure_fixtures(s).await;
    push_file(s, &format!("{OUT}/m"), b"the other team's weights").await;
    let owner = member(s, "owner-in", "model_owner", IN).await;
    let other = member(s, "owner-out", "model_owner", OUT).await;
    let (_, before) = admin(s, Method::GET, &format!("/api/v1/models/{OUT}/m"), Value::Null).await;

    // Reads and writes of the other namespace's model answer exactly as for a missing model.
    let model_routes: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "", None),
        (Method::GET, "/versions", None),
        (Method::GET, "/versions/2", None),
        (Method::GET, "/versions/2/files", None),
        (Method::GET, "/versions/2/files/weights.bin", None),
        (Method::GET, "/versions/2/manifest", None),
        (Method::GET, "/versions/2/archive", None),
        (Method::GET, "/aliases", None),
        (Method::GET, "/aliases/prod", None),
        (Method::PATCH, "", Some(json!({ "description": "mine now" }))),
        (Method::PUT, "/tags/k", Some(json!({ "value": "x" }))),
        (Method::DELETE, "/tags/k", None),
        (Method::PUT, "/aliases/prod", Some(json!({ "version": 1 }))),
        (Method::DELETE, "/aliases/prod", None),
        (Method::POST, "/versions", Some(json!({}))),
        (Method::DELETE, "/versions/1", None),
        (Method::POST, "/uploads", Some(json!({ "files": [] }))),
        (Method::DELETE, "", None),
    ];
    for (method, suffix, body) in model_routes {
        let real = raw(s, method.clone(), &format!("/api/v1/models/{OUT}/m{suffix}"), Some(&owner), body.clone()).await;
        let ghost =
            raw(s, method.clone(), &format!("/api/v1/models/{OUT}/ghost{suffix}"), Some(&owner), body.clone()).await;
        assert_eq!(real.0, StatusCode::NOT_FOUND, "{method} {suffix}: {}", real.1);
        assert_eq!(real.0, ghost.0, "{method} {suffix}");
        assert_eq!(
            same_answer(&real.1, &format!("{OUT}/m"), &format!("{OUT}/ghost")),
            ghost.1,
            "{method} {suffix}: the answer must not tell an existing model from a missing one"
        );
    }
    // The namespace itself is invisible too.
    let real = raw(s, Method::GET, &format!("/api/v1/namespaces/{OUT}"), Some(&owner), None).await;
    let ghost = raw(s, Method::GET, "/api/v1/namespaces/gamma", Some(&owner), None).await;
    assert_eq!(real.0, StatusCode::NOT_FOUND);
    assert_eq!(same_answer(&real.1, OUT, "gamma"), ghost.1);
    // Listings and searches show only what the caller may read.
    for query in ["", "?filter=name%20%3D%20%27m%27", "?filter=namespace%20%3D%20%27beta%27"] {
        let (st, v) = raw(s, Method::GET, &format!("/api/v1/models{query}"), Some(&owner), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let names: Vec<&str> =
            v["models"].as_array().unwrap().iter().map(|m| m["full_name"].as_str().unwrap()).collect();
        assert!(names.iter().all(|n| n.starts_with("alpha/")), "{query}: {names:?}");
    }
    let (_, v) = raw(s, Method::GET, "/api/v1/namespaces", Some(&owner), None).await;
    let spaces: Vec<&str> = v["namespaces"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(spaces, vec![IN]);
    // Creating a model there is refused, without a word about what exists.
    let (st, _) =
        raw(s, Method::POST, "/api/v1/models", Some(&owner), Some(json!({ "name": format!("{OUT}/new") }))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Uploads by id: another team's upload is as missing as one that never was.
    let data = b"other upload";
    let files = json!({ "files": [{ "path": "f", "size": data.len(), "sha256": sha256_hex(data) }] });
    let (st, up) = raw(s, Method::POST, &format!("/api/v1/models/{OUT}/m/uploads"), Some(&other), Some(files)).await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    let id = up["upload_id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/api/v1/uploads/{id}")),
        (Method::POST, format!("/api/v1/uploads/{id}/commit")),
        (Method::DELETE, format!("/api/v1/uploads/{id}")),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        let real = raw(s, method.clone(), &path, Some(&owner), body.clone()).await;
        let ghost = raw(s, method.clone(), &path.replace(id, "0190-missing"), Some(&owner), body).await;
        assert_eq!(real.0, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(same_answer(&real.1, id, "0190-missing"), ghost.1);
    }
    // Nothing changed, and the attempts to change it were recorded.
    let (_, after) = admin(s, Method::GET, &format!("/api/v1/models/{OUT}/m"), Value::Null).await;
    assert_eq!(before, after);
    let (_, v) = admin(s, Method::GET, &format!("/api/v1/audit/events?target=model:{OUT}/m"), Value::Null).await;
    let denied: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "denied" && e["actor"] == "service:owner-in")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(denied.len(), 9, "every refused change is audited: {denied:?}");
}

#[tokio::test]
async fn sqlite_namespaces_are_isolated() {
    let Some(s) = TestServer::start(Backend::Sqlite, "sqlite_namespaces_are_isolated").await else { return };
    namespaces_are_isolated(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn postgres_namespaces_are_isolated() {
    let Some(s) = TestServer::start(Backend::Postgres, "postgres_namespaces_are_isolated").await else { return };
    namespaces_are_isolated(&s).await;
    s.stop().await;
}
