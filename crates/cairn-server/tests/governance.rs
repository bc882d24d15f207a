//! The governance flow end to end over a real socket, on SQLite and PostgreSQL: a card on
//! every version, a policy that blocks a missing licence, a fix through a new version,
//! evaluations that must pass, MRC and Security approvals under the two-person rule (the
//! submitter's own approval refused), promotion that moves the `production` alias, and
//! signed webhooks for each step, checked by a receiver the way a real one would.

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
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())))
}

const V: &str = "/api/v1/models/risk/fraud/versions";

const CARD_NO_LICENCE: &str = "model:\n  name: fraud\n  description: Scores card transactions for fraud.\n";
const CARD: &str = "model:\n  name: fraud\n  description: Scores card transactions for fraud.\n  license: apache-2.0\n";

const LICENCE_POLICY: &str = r#"
name: licence-allow-list
description: A version is submitted only with an approved licence
severity: high
scope:
  stages: [submitted]
rules:
  - id: licence-present
    action: block
    message: "the card must name a licence (model.license)"
    condition: {field: card.model.license, op: exists}
  - id: licence-allowed
    action: block
    condition: {field: card.model.license, op: in, value: [apache-2.0, mit]}
  - id: has-semver
    action: warn
    condition: {field: version.semver, op: exists}
"#;

async fn events(s: &TestServer, query: &str) -> Vec<Value> {
    let (st, v) = call(s, &s.token, Method::GET, &format!("/api/v1/audit/events?{query}"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["events"].as_array().unwrap().clone()
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

async fn full_flow(s: &TestServer) {
    let receiver = Receiver::start().await;
    let admin = s.token.clone();
    let (st, v) = call(s, &admin, Method::POST, "/api/v1/namespaces", Some(json!({"name": "risk"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, hook) = call(
        s,
        &admin,
        Method::POST,
        "/api/v1/namespaces/risk/webhooks",
        Some(json!({"url": receiver.url, "events": ["*"]})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();

    // Olga owns the model and submits; she also reviews for MRC elsewhere. Rita reviews for
    // MRC and Security; Sven for Security; Sara is an SRE; Vic only reads.
    let olga = s.service_account("olga", &[("model_owner", Some("risk")), ("mrc", Some("risk"))]).await;
    let rita = s.service_account("rita", &[("mrc", Some("risk")), ("security", Some("risk"))]).await;
    let sven = s.service_account("sven", &[("security", None)]).await;
    let sara = s.service_account("sara", &[("sre", Some("risk"))]).await;
    let vic = s.service_account("vic", &[("viewer", Some("risk"))]).await;

    let (st, p) = call(s, &admin, Method::POST, "/api/v1/policies", Some(json!({"source": LICENCE_POLICY}))).await;
    assert_eq!(
        (st, p["version"].as_i64(), p["status"].as_str()),
        (StatusCode::CREATED, Some(1), Some("active")),
        "{p}"
    );
    let suite = json!({"definition": {"test_type": "effectiveness", "metrics": [
        {"name": "accuracy", "group": "task", "at_least": 0.9},
        {"name": "toxicity", "group": "safety", "at_most": 0.01}]}, "required": true});
    let (st, v) = call(s, &admin, Method::PUT, "/api/v1/namespaces/risk/eval-suites/acceptance", Some(suite)).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    let model = json!({"name": "risk/fraud", "risk_tier": "high", "owners": ["olga"], "team": "payments risk"});
    let (st, m) = call(s, &admin, Method::POST, "/api/v1/models", Some(model)).await;
    assert_eq!(
        (st, m["risk_tier"].as_str(), m["owners"].clone()),
        (StatusCode::CREATED, Some("high"), json!(["olga"])),
        "{m}"
    );
    // The owners cannot lower their own bar.
    let (st, v) = call(s, &olga, Method::PATCH, "/api/v1/models/risk/fraud", Some(json!({"risk_tier": "low"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");

    // Version 1 has a card without a licence: the policy blocks its submission.
    let (st, v1) = call(s, &olga, Method::POST, V, Some(json!({"semver": "1.0.0"}))).await;
    assert_eq!((st, v1["stage"].as_str()), (StatusCode::CREATED, Some("draft")), "{v1}");
    let card = json!({"source_name": "card.yaml", "source": CARD_NO_LICENCE});
    let (st, info) = call(s, &olga, Method::PUT, &format!("{V}/1/card"), Some(card)).await;
    assert_eq!(st, StatusCode::OK, "{info}");
    assert!(info["completeness"]["huggingface"].as_f64().unwrap() < 1.0, "{info}");
    let (st, err) = call(s, &olga, Method::POST, &format!("{V}/1/submit"), Some(json!({"reason": "ready"}))).await;
    assert_eq!((st, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("policy_blocked")), "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("licence-allow-list/licence-present"), "{message}");
    let (_, life) = call(s, &olga, Method::GET, &format!("{V}/1.0.0/lifecycle"), None).await;
    assert_eq!(life["stage"], "draft", "{life}");
    let blocked: Vec<&Value> =
        life["policy_results"].as_array().unwrap().iter().filter(|r| r["blocked"] == true).collect();
    assert_eq!(blocked.len(), 2, "both licence rules fail closed on a missing licence: {life}");
    assert!(
        !events(s, "action=version.submit&outcome=denied").await.is_empty(),
        "a blocked submission is in the audit log"
    );
    // A dry run says the same without recording anything.
    let (st, dry) = call(s, &vic, Method::POST, &format!("{V}/1/policy-check"), Some(json!({}))).await;
    assert_eq!(
        (st, dry["blocked"].as_bool(), dry["target"].as_str()),
        (StatusCode::OK, Some(true), Some("submitted")),
        "{dry}"
    );

    // The fix is a new version with a licence.
    let (st, v2) =
        call(s, &olga, Method::POST, V, Some(json!({"semver": "1.1.0", "code_commit": "a".repeat(40)}))).await;
    assert_eq!((st, v2["version"].as_i64()), (StatusCode::CREATED, Some(2)), "{v2}");
    let (st, dup) = call(s, &olga, Method::POST, V, Some(json!({"semver": "1.1.0"}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "labels are unique per model: {dup}");
    let card = json!({"source_name": "card.yaml", "source": CARD, "results": {"accuracy": 0.91}});
    let (st, v) = call(s, &olga, Method::PUT, &format!("{V}/2/card"), Some(card)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, life) =
        call(s, &olga, Method::POST, &format!("{V}/1.1.0/submit"), Some(json!({"reason": "licence added"}))).await;
    assert_eq!((st, life["stage"].as_str()), (StatusCode::OK, Some("submitted")), "{life}");
    assert_eq!(life["submitted_by"], "olga");
    // The card is frozen once submitted.
    let card = json!({"source_name": "card.yaml", "source": CARD});
    let (st, v) = call(s, &olga, Method::PUT, &format!("{V}/2/card"), Some(card)).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");

    // Staging gate: one reviewer who is not the submitter.
    let review = |decision: &str, role: &str| json!({"decision": decision, "role": role, "rationale": "reviewed the card and results"});
    let (st, v) = call(s, &vic, Method::POST, &format!("{V}/2/reviews"), Some(review("approve", "mrc"))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("permission_denied")), "{v}");
    let (st, v) = call(s, &olga, Method::POST, &format!("{V}/2/reviews"), Some(review("approve", "mrc"))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("approval_refused")), "{v}");
    let (st, life) = call(s, &sara, Method::POST, &format!("{V}/2/reviews"), Some(review("approve", "sre"))).await;
    assert_eq!((st, life["stage"].as_str()), (StatusCode::OK, Some("approved_staging")), "{life}");
    let (st, life) =
        call(s, &olga, Method::POST, &format!("{V}/2/promote"), Some(json!({"reason": "to staging"}))).await;
    assert_eq!((st, life["stage"].as_str()), (StatusCode::OK, Some("staging")), "{life}");
    assert_eq!(life["waiting_for"], "approval from mrc and security", "{life}");

    // Production gate on a high-risk model: MRC and Security, two different people, neither
    // the submitter nor an owner.
    let (st, v) = call(s, &olga, Method::POST, &format!("{V}/2/promote"), Some(json!({}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("illegal_transition")), "{v}");
    let (st, v) = call(s, &sara, Method::POST, &format!("{V}/2/reviews"), Some(review("approve", "sre"))).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("approval_refused")),
        "sre does not count: {v}"
    );
    let (st, v) = call(s, &sara, Method::POST, &format!("{V}/2/reviews"), Some(review("approve", "mrc"))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_a_reviewer")), "{v}");
    let (st, v) = call(s, &olga, Method::POST, &format!("{V}/2/reviews"), Some(review("approve", "mrc"))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("approval_refused")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("submitter"), "{v}");
    let (st, life) = call(s, &rita, Method::POST, &format!("{V}/2/reviews"), Some(review("approve", "mrc"))).await;
    assert_eq!((st, life["stage"].as_str()), (StatusCode::OK, Some("staging")), "{life}");
    assert_eq!(life["waiting_for"], "approval from security");
    let (st, v) = call(s, &rita, Method::POST, &format!("{V}/2/reviews"), Some(review("approve", "security"))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("approval_refused")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("two different people"), "{v}");
    let (st, v) = call(s, &rita, Method::POST, &format!("{V}/2/reviews"), Some(review("comment", "security"))).await;
    assert_eq!(st, StatusCode::OK, "comments are always welcome: {v}");
    // Sven completes the approvals, but the required evaluation suite has no results yet:
    // the approval stands, the version stays in staging.
    let (st, v) = call(s, &sven, Method::POST, &format!("{V}/2/reviews"), Some(review("approve", "security"))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("policy_blocked")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("acceptance"), "{v}");
    let (_, life) = call(s, &vic, Method::GET, &format!("{V}/2/lifecycle"), None).await;
    assert_eq!(life["stage"], "staging");
    let approvals = life["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["decision"] == "approve" && r["gate"] == "production")
        .count();
    assert_eq!(approvals, 2, "{life}");

    // Evaluations: a failing run, then a passing one; each flows into the card.
    let eval = |acc: f64| json!({"suite": "acceptance", "results": {"accuracy": acc, "toxicity": 0.001}, "config": {"gpu": "none"}});
    let (st, r) = call(s, &olga, Method::POST, &format!("{V}/2/evaluations"), Some(eval(0.85))).await;
    assert_eq!((st, r["passed"].as_bool()), (StatusCode::CREATED, Some(false)), "{r}");
    let (st, v) = call(s, &olga, Method::POST, &format!("{V}/2/promote"), Some(json!({}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("policy_blocked")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("failed"), "{v}");
    let (st, r) = call(s, &olga, Method::POST, &format!("{V}/2/evaluations"), Some(eval(0.93))).await;
    assert_eq!((st, r["passed"].as_bool()), (StatusCode::CREATED, Some(true)), "{r}");

    // The facts show drift between the card's claim (0.91) and the latest evaluation.
    let (st, dry) = call(s, &vic, Method::POST, &format!("{V}/2/policy-check"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{dry}");
    let delta = dry["facts"]["drift"]["metrics"]["accuracy"]["delta"].as_f64().unwrap();
    assert!((delta - 0.02).abs() < 1e-9, "{}", dry["facts"]["drift"]);
    assert_eq!(dry["facts"]["metrics"]["accuracy"], 0.93);

    // Promote retries the gate, then promotes to production and moves the alias.
    let (st, life) = call(s, &olga, Method::POST, &format!("{V}/2/promote"), Some(json!({"reason": "gate"}))).await;
    assert_eq!((st, life["stage"].as_str()), (StatusCode::OK, Some("approved_prod")), "{life}");
    let (st, life) = call(s, &sara, Method::POST, &format!("{V}/2/promote"), Some(json!({"reason": "release"}))).await;
    assert_eq!((st, life["stage"].as_str()), (StatusCode::OK, Some("production")), "{life}");
    let (st, prod) = call(s, &vic, Method::GET, "/api/v1/models/risk/fraud/versions/@production", None).await;
    assert_eq!(
        (st, prod["version"].as_i64(), prod["stage"].as_str()),
        (StatusCode::OK, Some(2), Some("production")),
        "{prod}"
    );
    let stages: Vec<&str> = life["transitions"].as_array().unwrap().iter().filter_map(|t| t["to"].as_str()).collect();
    assert_eq!(stages, ["submitted", "approved_staging", "staging", "approved_prod", "production"]);

    // The rendered card carries the licence and the latest evaluation.
    let resp = reqwest::Client::new()
        .get(format!("{}{V}/2/card?format=huggingface", s.url))
        .bearer_auth(&vic)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let readme = resp.text().await.unwrap();
    assert!(readme.starts_with("---\n") && readme.contains("apache-2.0"), "{readme}");
    assert!(readme.contains("0.93"), "evaluation results flow into the card: {readme}");
    let (st, diff) = call(s, &vic, Method::GET, &format!("{V}/2/card/diff?against=1"), None).await;
    assert_eq!(st, StatusCode::OK, "{diff}");
    assert!(diff["text"].as_str().unwrap().contains("license"), "{diff}");

    // Every step reached the webhook, signed.
    let got = wait_for_events(
        &receiver,
        &secret,
        &["policy.violation", "version.submitted", "version.approved", "version.promoted", "evaluation.failed"],
    )
    .await;
    let promoted: Vec<&Value> = got.iter().filter(|b| b["event"] == "version.promoted").collect();
    assert!(promoted.iter().any(|b| b["data"]["to"] == "production" && b["data"]["version"] == 2), "{promoted:?}");
    let violation = got.iter().find(|b| b["event"] == "policy.violation").unwrap();
    assert_eq!(violation["data"]["version"], 1, "{violation}");

    // Refused approvals and transitions are all on the record.
    let refused = events(s, "outcome=denied&limit=1000").await;
    let actions: Vec<&str> = refused.iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["version.submit", "version.review.approve", "version.promote", "version.review"] {
        assert!(actions.contains(&a), "no denied {a} in {actions:?}");
    }
}

/// Policies are versioned; a document applied again unchanged is not a new version; a
/// policy that would block is visible in a dry run before it is activated; an approved
/// exception waives it, one requested by the same person cannot be decided by them.
async fn policies_versions_and_exceptions(s: &TestServer) {
    let admin = s.token.clone();
    let sven = s.service_account("sven", &[("security", None)]).await;
    call(s, &admin, Method::POST, "/api/v1/models", Some(json!({"name": "risk/fraud"}))).await;
    call(s, &admin, Method::POST, V, Some(json!({}))).await;
    let (st, v) =
        call(s, &admin, Method::POST, "/api/v1/policies", Some(json!({"source": LICENCE_POLICY, "status": "draft"})))
            .await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::CREATED, Some("draft")), "{v}");
    let (st, v) =
        call(s, &admin, Method::POST, "/api/v1/policies", Some(json!({"source": LICENCE_POLICY, "status": "draft"})))
            .await;
    assert_eq!((st, v["version"].as_i64(), v["created"].as_bool()), (StatusCode::OK, Some(1), Some(false)), "{v}");
    let changed = LICENCE_POLICY.replace("severity: high", "severity: critical");
    let (st, v) = call(s, &admin, Method::POST, "/api/v1/policies", Some(json!({"source": changed}))).await;
    assert_eq!(
        (st, v["version"].as_i64(), v["status"].as_str()),
        (StatusCode::CREATED, Some(2), Some("active")),
        "{v}"
    );
    let (_, all) = call(s, &admin, Method::GET, "/api/v1/policies?all_versions=true", None).await;
    let statuses: Vec<(i64, &str)> = all["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["version"].as_i64().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [(1, "draft"), (2, "active")]);
    // Bad documents are refused with a clear message.
    for (bad, needle) in [
        ("name: x\nseverity: high\nrules: []\n", "rule"),
        (
            "name: x\nseverity: high\nrules:\n  - id: a\n    action: block\n    condition: {feild: a, op: exists}\n",
            "feild",
        ),
        ("{\"name\": \"x\", ", "JSON"),
    ] {
        let (st, v) = call(s, &admin, Method::POST, "/api/v1/policies", Some(json!({"source": bad}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{needle} in {v}");
    }
    let (st, v) = call(s, &sven, Method::POST, "/api/v1/policies", Some(json!({"source": LICENCE_POLICY}))).await;
    // Going back to the first document is a change against the latest: version 3.
    assert_eq!((st, v["version"].as_i64()), (StatusCode::CREATED, Some(3)), "security may apply policies: {v}");

    // The version has no card: submission is blocked until an exception is approved.
    let (st, _) = call(s, &admin, Method::POST, &format!("{V}/1/submit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let ask =
        json!({"policy": "licence-allow-list", "justification": "internal model, licence review pending", "days": 7});
    let (st, e) = call(s, &admin, Method::POST, &format!("{V}/1/exceptions"), Some(ask)).await;
    assert_eq!((st, e["status"].as_str()), (StatusCode::CREATED, Some("requested")), "{e}");
    let id = e["id"].as_str().unwrap();
    let (st, v) = call(
        s,
        &admin,
        Method::POST,
        &format!("/api/v1/policy-exceptions/{id}/decision"),
        Some(json!({"status": "approved"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the requester cannot approve their own exception: {v}");
    let (st, _) = call(s, &admin, Method::POST, &format!("{V}/1/submit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CONFLICT, "a requested exception waives nothing");
    let (st, v) = call(
        s,
        &sven,
        Method::POST,
        &format!("/api/v1/policy-exceptions/{id}/decision"),
        Some(json!({"status": "approved", "note": "ok for 7 days"})),
    )
    .await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("approved")), "{v}");
    let (st, life) = call(s, &admin, Method::POST, &format!("{V}/1/submit"), Some(json!({}))).await;
    assert_eq!((st, life["stage"].as_str()), (StatusCode::OK, Some("submitted")), "{life}");
    let waived = life["policy_results"].as_array().unwrap().iter().filter(|r| r["waived"] == true).count();
    assert!(waived >= 2, "the results say the policy was waived: {life}");
}

/// Illegal transitions are refused (and recorded) from every stage a version can be in.
async fn illegal_transitions_are_refused(s: &TestServer) {
    let admin = s.token.clone();
    call(s, &admin, Method::POST, "/api/v1/models", Some(json!({"name": "risk/fraud"}))).await;
    call(s, &admin, Method::POST, V, Some(json!({}))).await;
    for action in ["promote", "deprecate", "retire"] {
        let (st, v) = call(s, &admin, Method::POST, &format!("{V}/1/{action}"), Some(json!({"reason": "try"}))).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("illegal_transition")),
            "{action}: {v}"
        );
    }
    let (st, v) = call(
        s,
        &admin,
        Method::POST,
        &format!("{V}/1/reviews"),
        Some(json!({"decision": "approve", "role": "mrc", "rationale": "x"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the admin holds no reviewer role: {v}");
    let (st, v) = call(s, &admin, Method::POST, &format!("{V}/1/deprecate"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "deprecate needs a reason: {v}");
    let (st, v) =
        call(s, &admin, Method::POST, &format!("{V}/1/submit"), Some(json!({"reason": "go", "typo": 1}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "unknown fields are refused: {v}");
    let denied = events(s, "outcome=denied&action=version.promote").await;
    assert_eq!(denied.len(), 1, "{denied:?}");
}

cairn_test_utils::both_backends_delivering!(
    full_flow,
    policies_versions_and_exceptions,
    illegal_transitions_are_refused
);
