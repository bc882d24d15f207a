//! Deployments end to end on SQLite and PostgreSQL: environments with objectives, deployment
//! records through their statuses, a breaching SLO report that rolls back by itself and tells
//! the deployment tool through a signed webhook, rollbacks by hand, the production rule
//! (approved and signed versions only), bad input, permissions and the audit trail.

use std::time::{Duration, Instant};

use cairn_test_utils::TestServer;
use cairn_test_utils::receiver::{Receiver, verify};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn as_(s: &TestServer, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    s.call_as(Some(token), method, path, body).await
}

async fn wait_for_events(r: &Receiver, secret: &str, wanted: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<Value> = r.got().iter().map(|g| verify(g, secret)).collect();
        let names: Vec<&str> = got.iter().filter_map(|b| b["event"].as_str()).collect();
        if wanted.iter().all(|w| names.contains(w)) {
            return got;
        }
        assert!(Instant::now() < deadline, "webhooks received {names:?}, waiting for {wanted:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn record(s: &TestServer, token: &str, env: &str, body: Value) -> (StatusCode, Value) {
    as_(s, token, Method::POST, &format!("/api/v1/environments/{env}/deployments"), Some(body)).await
}

/// Takes version `n` of team/m through review to production (a low-risk model: one SRE
/// approval for staging, MRC and Security for production, from a reviewer who did not submit).
async fn to_production(s: &TestServer, reviewer: &str, n: i64) {
    let v = format!("/api/v1/models/team/m/versions/{n}");
    let review =
        |role: &str| json!({"decision": "approve", "role": role, "rationale": "reviewed for the deployment test"});
    let steps = [
        (s.token.as_str(), "submit", json!({})),
        (reviewer, "reviews", review("sre")),
        (s.token.as_str(), "promote", json!({})),
        (reviewer, "reviews", review("mrc")),
        (reviewer, "reviews", review("security")),
        (s.token.as_str(), "promote", json!({})),
    ];
    for (token, action, body) in steps {
        let (st, life) = as_(s, token, Method::POST, &format!("{v}/{action}"), Some(body)).await;
        assert_eq!(st, StatusCode::OK, "{action}: {life}");
    }
    let (_, got) = s.call(Method::GET, &v, None).await;
    assert_eq!(got["stage"], "production", "{got}");
}

async fn deploy_flow(s: &TestServer) {
    let admin = s.token.clone();
    let receiver = Receiver::start().await;
    for n in 1..=3 {
        s.push("team/m", &[("weights.bin", format!("weights {n}").as_bytes())]).await;
    }
    let (st, hook) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/team/webhooks",
            Some(json!({"url": receiver.url, "events": ["deployment.recorded", "deployment.rolled_back"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let sre = s.service_account("sam", &[("sre", Some("team"))]).await;
    let viewer = s.service_account("vera", &[("viewer", Some("team"))]).await;
    s.call(Method::POST, "/api/v1/namespaces", Some(json!({"name": "other"}))).await;
    let outsider = s.service_account("otto", &[("sre", Some("other"))]).await;

    // Environments: only an SRE with a global grant or an admin may shape them.
    let staging = json!({"description": "shared staging", "slo": {"max_error_rate": 0.05, "max_latency_p95_ms": 300}});
    let (st, _) = as_(s, &sre, Method::PUT, "/api/v1/environments/staging", Some(staging.clone())).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a namespace grant is not enough");
    let (st, env) = s.call(Method::PUT, "/api/v1/environments/staging", Some(staging)).await;
    assert_eq!(st, StatusCode::OK, "{env}");
    assert_eq!((env["auto_rollback"].as_bool(), env["production"].as_bool()), (Some(true), Some(false)));
    for (name, body) in [
        ("Prod EU", json!({})),
        ("prod", json!({"slo": {"max_error_rate": 2}})),
        ("prod", json!({"slo": {"max_latency_p95_ms": -1}})),
        ("prod", json!({"slo": {"p99": 1}})),
    ] {
        let (st, e) =
            s.call(Method::PUT, &format!("/api/v1/environments/{}", name.replace(' ', "%20")), Some(body)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{name}: {e}");
    }

    // Records, moved on by the deployment tool.
    let (st, d1) = record(s, &sre, "staging", json!({"model": "team/m", "version": "1", "status": "succeeded"})).await;
    assert_eq!(st, StatusCode::CREATED, "{d1}");
    let (st, d2) = record(
        s,
        &sre,
        "staging",
        json!({"model": "team/m", "version": "2", "strategy": "canary", "traffic_percent": 10, "config": {"replicas": 3}}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{d2}");
    assert_eq!((d2["status"].as_str(), d2["traffic_percent"].as_i64()), (Some("pending"), Some(10)));
    let id2 = d2["id"].as_i64().unwrap();
    for status in ["in_progress", "succeeded"] {
        let (st, d) =
            as_(s, &sre, Method::POST, &format!("/api/v1/deployments/{id2}/status"), Some(json!({"status": status})))
                .await;
        assert_eq!((st, d["status"].as_str()), (StatusCode::OK, Some(status)), "{d}");
    }
    let (st, e) =
        as_(s, &sre, Method::POST, &format!("/api/v1/deployments/{id2}/status"), Some(json!({"status": "pending"})))
            .await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    let (_, list) = s.call(Method::GET, "/api/v1/deployments?environment=staging", None).await;
    let statuses: Vec<&str> =
        list["deployments"].as_array().unwrap().iter().filter_map(|d| d["status"].as_str()).collect();
    assert_eq!(statuses, ["succeeded", "superseded"], "newest first; the success superseded version 1: {list}");

    // Within the objectives: nothing happens. Above them: version 2 is rolled back to 1.
    let (st, ok) = as_(
        s,
        &sre,
        Method::POST,
        &format!("/api/v1/deployments/{id2}/slo-reports"),
        Some(json!({"error_rate": 0.01})),
    )
    .await;
    assert_eq!((st, ok["breaches"].as_array().map(Vec::len)), (StatusCode::CREATED, Some(0)), "{ok}");
    assert!(ok.get("rollback").is_none());
    let (st, out) = as_(
        s,
        &sre,
        Method::POST,
        &format!("/api/v1/deployments/{id2}/slo-reports"),
        Some(json!({"error_rate": 0.09, "latency_p95_ms": 120})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{out}");
    assert_eq!(out["breaches"], json!(["error_rate 0.09 > 0.05"]));
    let rb = &out["rollback"];
    assert_eq!(
        (rb["version"].as_i64(), rb["rollback_of"].as_i64(), rb["status"].as_str()),
        (Some(1), Some(id2), Some("pending")),
        "{out}"
    );
    assert_eq!(rb["config"], json!({"replicas": 3}), "the rollback redeploys the configuration that ran");
    assert!(rb["reason"].as_str().unwrap().contains("SLO breached"), "{rb}");
    let (_, d2_now) = s.call(Method::GET, &format!("/api/v1/deployments/{id2}"), None).await;
    assert_eq!(d2_now["status"], "rolled_back");
    let got = wait_for_events(&receiver, &secret, &["deployment.recorded", "deployment.rolled_back"]).await;
    let rolled = got.iter().find(|b| b["event"] == "deployment.rolled_back").unwrap();
    assert_eq!(
        (rolled["data"]["deployment"]["version"].as_i64(), rolled["data"]["trigger"].as_str()),
        (Some(1), Some("slo")),
        "{rolled}"
    );
    assert_eq!(rolled["data"]["rolled_back"]["version"], 2);

    // By hand: to version 3, then back to what ran before (1), with the reason recorded.
    let (st, r3) = as_(
        s,
        &sre,
        Method::POST,
        "/api/v1/environments/staging/rollback",
        Some(json!({"model": "team/m", "to": "3", "reason": "try 3"})),
    )
    .await;
    assert_eq!((st, r3["version"].as_i64()), (StatusCode::CREATED, Some(3)), "{r3}");
    let (st, back) = as_(
        s,
        &sre,
        Method::POST,
        "/api/v1/environments/staging/rollback",
        Some(json!({"model": "team/m", "reason": "3 was worse"})),
    )
    .await;
    assert_eq!((st, back["version"].as_i64()), (StatusCode::CREATED, Some(1)), "{back}");
    let (st, e) = as_(
        s,
        &sre,
        Method::POST,
        "/api/v1/environments/staging/rollback",
        Some(json!({"model": "team/m", "to": "1", "reason": "again"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "version 1 runs already: {e}");
    let (st, _) = as_(
        s,
        &sre,
        Method::POST,
        "/api/v1/environments/staging/rollback",
        Some(json!({"model": "team/m", "reason": " "})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "a reason is required");

    // Production: only approved, signed versions.
    let (st, _) = s
        .call(
            Method::PUT,
            "/api/v1/environments/prod-eu",
            Some(json!({"production": true, "slo": {"max_latency_p95_ms": 250}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = record(s, &sre, "prod-eu", json!({"model": "team/m", "version": "3"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_approved")), "{e}");
    let reviewer = s.service_account("rex", &[("mrc", None), ("security", None), ("sre", None)]).await;
    to_production(s, &reviewer, 3).await;
    production_needs_valid_signatures(s, &sre).await;
    let (st, p) =
        record(s, &sre, "prod-eu", json!({"model": "team/m", "version": "@production", "status": "succeeded"})).await;
    assert_eq!((st, p["version"].as_i64()), (StatusCode::CREATED, Some(3)), "{p}");
    // A breach with nothing earlier to go back to keeps the report and says why.
    let pid = p["id"].as_i64().unwrap();
    let (st, out) = as_(
        s,
        &sre,
        Method::POST,
        &format!("/api/v1/deployments/{pid}/slo-reports"),
        Some(json!({"latency_p95_ms": 900})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{out}");
    assert!(out["not_rolled_back"].as_str().unwrap().contains("no earlier version"), "{out}");
    let (st, e) = as_(
        s,
        &sre,
        Method::POST,
        "/api/v1/environments/prod-eu/rollback",
        Some(json!({"model": "team/m", "to": "2", "reason": "x"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "version 2 never reached production: {e}");

    // Bad input.
    for body in [
        json!({"model": "team/m", "version": "1", "strategy": "canary"}),
        json!({"model": "team/m", "version": "1", "strategy": "canary", "traffic_percent": 100}),
        json!({"model": "team/m", "version": "1", "strategy": "rolling"}),
        json!({"model": "team/m", "version": "1", "traffic_percent": 50}),
        json!({"model": "team/m", "version": "1", "status": "rolled_back"}),
        json!({"model": "team/m", "version": "1", "config": [1, 2]}),
        json!({"model": "team/m", "version": "1", "colour": "red"}),
        json!({"model": "team/m", "version": "zero"}),
    ] {
        let (st, e) = record(s, &sre, "staging", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {e}");
    }
    let (st, _) = record(s, &sre, "nowhere", json!({"model": "team/m", "version": "1"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = record(s, &sre, "staging", json!({"model": "team/m", "version": "9"})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for report in [json!({}), json!({"error_rate": 1.5}), json!({"latency_p95_ms": -3}), json!({"p99": 1})] {
        let (st, e) =
            as_(s, &sre, Method::POST, &format!("/api/v1/deployments/{id2}/slo-reports"), Some(report.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{report}: {e}");
    }

    // Permissions: readers read, only SREs of the namespace (or admins) write; others see nothing.
    let (st, _) = record(s, &viewer, "staging", json!({"model": "team/m", "version": "1"})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = as_(s, &viewer, Method::GET, &format!("/api/v1/deployments/{id2}"), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = as_(
        s,
        &viewer,
        Method::POST,
        &format!("/api/v1/deployments/{id2}/slo-reports"),
        Some(json!({"error_rate": 0.5})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = as_(s, &outsider, Method::GET, &format!("/api/v1/deployments/{id2}"), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = as_(
        s,
        &outsider,
        Method::POST,
        &format!("/api/v1/deployments/{id2}/status"),
        Some(json!({"status": "failed"})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, list) = as_(s, &outsider, Method::GET, "/api/v1/deployments", None).await;
    assert_eq!((st, list["deployments"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{list}");
    let (st, _) = as_(
        s,
        &outsider,
        Method::POST,
        "/api/v1/environments/staging/rollback",
        Some(json!({"model": "team/m", "reason": "x"})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Every step is in the audit log.
    for action in
        ["environment.put", "deployment.record", "deployment.status", "deployment.slo_report", "deployment.rollback"]
    {
        let (_, ev) = s.call(Method::GET, &format!("/api/v1/audit/events?action={action}"), None).await;
        assert!(!ev["events"].as_array().unwrap().is_empty(), "{action}");
    }
    explained_and_reported(s, &viewer).await;
    let _ = admin;
}

/// Recording version 3 of team/m in prod-eu is refused as `not_signed`, saying `why`.
async fn refused(s: &TestServer, sre: &str, why: &str) {
    let (st, e) = record(s, sre, "prod-eu", json!({"model": "team/m", "version": "3"})).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_signed")), "{e}");
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{message}");
}

/// Version 3 of team/m (in production) may go to prod-eu only while the registry's signature
/// over it verifies, and every signature its pusher added too. Leaves it with a valid
/// signature of its pusher besides the registry's.
async fn production_needs_valid_signatures(s: &TestServer, sre: &str) {
    use cairn_audit::statement::{PushStatement, SignatureEnvelope};
    use cairn_store::Param;
    let store = &s.state.store;
    let of_v3 = "version_id = (SELECT v.id FROM versions v JOIN models m ON m.id = v.model_id \
                 WHERE m.full_name = 'team/m' AND v.number = 3)";

    // The registry's signature no longer matches its statement (its time changed).
    let edit = |from: &str, to: &str| {
        format!(
            "UPDATE version_signatures SET statement = replace(statement, '\"signed_at\":{from}', \
             '\"signed_at\":{to}') WHERE kind = 'server' AND {of_v3}"
        )
    };
    assert_eq!(cairn_test_utils::raw_sql(store, &edit("", "1"), vec![]).await, 1);
    refused(s, sre, "no valid signature of this registry").await;
    assert_eq!(cairn_test_utils::raw_sql(store, &edit("1", ""), vec![]).await, 1);

    // A signature of the pusher's over the version's manifest, then with its signature
    // replaced by the same key's signature over another manifest.
    let (_, v) = s.call(Method::GET, "/api/v1/models/team/m/versions/3", None).await;
    let key = cairn_audit::SigningKey::generate();
    let good = SignatureEnvelope::sign("user", &PushStatement::new("team/m", v["digest"].as_str().unwrap()), &key);
    let other =
        SignatureEnvelope::sign("user", &PushStatement::new("team/m", &format!("sha256:{}", "0".repeat(64))), &key);
    let added = cairn_test_utils::raw_sql(
        store,
        &format!(
            "INSERT INTO version_signatures (version_id, kind, statement, key_id, public_key, signature, created_at) \
             SELECT version_id, 'user', $1, $2, $3, $4, created_at FROM version_signatures \
             WHERE kind = 'server' AND {of_v3}"
        ),
        vec![
            Param::Text(good.statement.clone()),
            Param::Text(good.key_id.clone()),
            Param::Text(good.public_key.clone()),
            Param::Text(other.signature.clone()),
        ],
    )
    .await;
    assert_eq!(added, 1);
    refused(s, sre, &format!("pusher's signature by key {} is not valid", good.key_id)).await;
    let fixed = cairn_test_utils::raw_sql(
        store,
        &format!("UPDATE version_signatures SET signature = $1 WHERE kind = 'user' AND {of_v3}"),
        vec![Param::Text(good.signature.clone())],
    )
    .await;
    assert_eq!(fixed, 1);
    let (_, sigs) = s.call(Method::GET, "/api/v1/models/team/m/versions/3/signatures", None).await;
    assert!(sigs.to_string().contains(&good.key_id), "{sigs}");
}

/// How version 3 reached production, read back from a verified export of its events; and the
/// period's compliance report, which lists its approvals and its promotion.
async fn explained_and_reported(s: &TestServer, viewer: &str) {
    let http = reqwest::Client::new();
    let get = |path: &str, token: &str| http.get(format!("{}{path}", s.url)).bearer_auth(token.to_owned()).send();
    let resp = get("/api/v1/audit/export?target=version:team/m:3", &s.token).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let export = resp.bytes().await.unwrap();
    let (_, keys) = s.call(Method::GET, "/.well-known/cairn/signing-keys", None).await;
    let key = cairn_audit::PublicKey::parse(keys["keys"][0]["public_key"].as_str().unwrap()).unwrap();
    let mut e = cairn_audit::report::Explanation::new("version:team/m:3");
    let report = cairn_audit::export::verify_export_observing(&export[..], vec![key], &mut |r| e.add(r)).unwrap();
    assert!(report.ok(), "{report:?}");
    let roles: Vec<&str> = e.reviews.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(roles, ["sre", "mrc", "security"], "{e:?}");
    assert!(
        e.reviews.iter().all(|r| r.rationale == "reviewed for the deployment test" && r.actor == "service:rex"),
        "{:?}",
        e.reviews
    );
    let production = e.production.as_ref().expect("the promotion to production");
    assert_eq!((production.from.as_deref(), production.actor.as_str()), (Some("approved_prod"), "user:admin"));
    let actions: Vec<&str> = e.steps.iter().map(|st| st.action.as_str()).collect();
    assert_eq!(actions.first(), Some(&"version.submit"), "{actions:?}");
    assert!(e.created.is_some());

    let (st, r) = s.call(Method::GET, "/api/v1/audit/report", None).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let approvals = r["reviews"].as_array().unwrap().iter().filter(|x| x["target"] == "version:team/m:3").count();
    assert_eq!(approvals, 3, "{r}");
    assert!(r["promotions"].as_array().unwrap().iter().any(|p| p["action"] == "version.promote version:team/m:3"));
    let resp = get("/api/v1/audit/report?format=markdown", &s.token).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/markdown; charset=utf-8");
    let md = resp.text().await.unwrap();
    assert!(md.contains("## Approvals and rejections") && md.contains("reviewed for the deployment test"), "{md}");
    let (st, _) = s.call(Method::GET, "/api/v1/audit/report?format=xml", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.call(Method::GET, "/api/v1/audit/report?period=q3", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "unknown parameters are refused");
    assert_eq!(get("/api/v1/audit/report", viewer).await.unwrap().status(), StatusCode::FORBIDDEN);
}

cairn_test_utils::both_backends_delivering!(deploy_flow);
