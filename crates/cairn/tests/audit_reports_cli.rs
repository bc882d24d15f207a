//! `cairn audit explain`, `cairn audit report` and `cairn audit prune` against a real server:
//! a version refused by a policy, evaluated, and excepted is explained from the verified
//! chain (online and from a saved export, with the key pinned), a wrong key refuses to
//! explain anything (exit 1), the period report lists the violation and the exception in JSON
//! and Markdown, and a pruning is refused to a non-administrator and reports the retention.

mod common;

use common::*;

use cairn_api_types as api;
use cairn_test_utils::{Backend, TestServer};
use serde_json::Value;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_report_and_prune() {
    let Some(s) = TestServer::start(Backend::Sqlite, "cli_explain_report_and_prune").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let files = t.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("weights.bin"), b"weights").unwrap();
    let card = write(t, "card.yaml", "model:\n  name: m\n  license: apache-2.0\n");
    exits(&cairn(t, &s, &["models", "create", "team/m"]).await, 0);
    exits(&cairn(t, &s, &["push", "team/m", files.to_str().unwrap(), "--card", &card, "-q"]).await, 0);
    let policy = write(
        t,
        "policy.yaml",
        "name: mit-only\nseverity: high\nscope:\n  stages: [submitted]\nrules:\n  - id: licence-mit\n    action: \
         block\n    condition:\n      field: card.model.license\n      op: in\n      value: [mit]\n",
    );
    exits(&cairn(t, &s, &["policy", "apply", &policy]).await, 0);
    exits(&cairn(t, &s, &["submit", "team/m:1", "--reason", "ready"]).await, 1);
    let suite = write(t, "suite.yaml", "metrics:\n  - {name: accuracy, group: task, at_least: 0.9}\n");
    exits(&cairn(t, &s, &["eval", "suite", "put", "team", "quality", &suite]).await, 0);
    let good = write(t, "good.json", r#"{"accuracy": 0.95}"#);
    exits(&cairn(t, &s, &["eval", "submit", "team/m:1", &good, "--suite", "quality"]).await, 0);
    let just = "apache-2.0 is approved by legal";
    exits(
        &cairn(t, &s, &["exception", "request", "team/m:1", "--policy", "mit-only", "--justification", just]).await,
        0,
    );

    // The server's key, pinned; and a key that is not the server's.
    let keys = s.client().signing_keys().await.unwrap();
    let key = write(t, "server.pub", &keys.keys[0].public_key);
    let other = write(t, "other.pub", &cairn_audit::SigningKey::generate().public().to_pem());

    let out = cairn(t, &s, &["audit", "explain", "team/m:1", "--public-key", &key]).await;
    let md = exits(&out, 0);
    if std::env::var_os("CAIRN_SHOW_EXPLAIN").is_some() {
        eprintln!("{md}");
    }
    for needle in [
        "# How team/m:1 was decided",
        "Created by user:admin",
        "Never promoted to production.",
        "## Refused requests",
        "mit-only",
        "## Policies",
        "licence-mit",
        "accuracy = 0.95 passes",
        "policy.exception.request",
        just,
        "Verified: ",
    ] {
        assert!(md.contains(needle), "{needle} missing from:\n{md}");
    }
    assert!(!md.contains("warning: the signing key is not pinned"), "{md}");

    let out = cairn(t, &s, &["audit", "explain", "team/m:1", "--json"]).await;
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    exits(&out, 0);
    assert!(text(&out).contains("not pinned"), "without --public-key the CLI says what it trusted");
    assert_eq!(j["verification"]["first_break"], Value::Null);
    assert_eq!(j["explanation"]["refusals"][0]["blocked_by"][0], "mit-only/licence-mit");
    assert_eq!(j["explanation"]["evaluations"][0]["metrics"][0]["value"], 0.95);
    assert_eq!(j["explanation"]["exceptions"][0]["justification"], just);

    let out = cairn(t, &s, &["audit", "explain", "team/m:1", "--public-key", &other]).await;
    assert!(exits(&out, 1).contains("no explanation"), "{}", text(&out));
    exits(&cairn(t, &s, &["audit", "explain", "team/m:9"]).await, 2);
    exits(&cairn(t, &s, &["audit", "explain", "team"]).await, 2);

    // Offline, from an export saved earlier.
    exits(&cairn(t, &s, &["audit", "export", "-o", "audit.jsonl", "-q"]).await, 0);
    let out = run(t, &["audit", "explain", "team/m:1", "--file", "audit.jsonl", "--public-key", &key]);
    assert!(exits(&out, 0).contains("accuracy = 0.95 passes"), "{}", text(&out));
    exits(&run(t, &["audit", "explain", "team/m@champion", "--file", "audit.jsonl"]), 2);
    exits(&run(t, &["audit", "explain", "team/m:1", "--file", "missing.jsonl"]), 2);

    // The report over the whole period, both ways.
    let out = cairn(t, &s, &["audit", "report", "--format", "json"]).await;
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    exits(&out, 0);
    assert_eq!(r["policy_violations"][0]["target"], "version:team/m:1");
    assert_eq!(r["policy_violations"][0]["blocked_by"][0], "mit-only/licence-mit");
    assert_eq!(r["exceptions"][0]["justification"], just);
    assert!(r["roles"].as_array().unwrap().iter().any(|x| x["role"] == "admin"), "{r}");
    assert!(r["events"].as_u64().unwrap() >= 6);
    let out = cairn(t, &s, &["audit", "report", "--since", "2020-01-01T00:00:00Z", "-o", "report.md"]).await;
    exits(&out, 0);
    let md = std::fs::read_to_string(t.join("report.md")).unwrap();
    assert!(md.starts_with("# Compliance report: 2020-01-01 00:00:00 UTC to now"), "{md}");
    assert!(md.contains("| version.submit | 0 | 1 | 0 |") && md.contains(just), "{md}");
    // A period in the future holds nothing; a reversed one is refused.
    let out = cairn(t, &s, &["audit", "report", "--format", "json", "--since", "2099-01-01T00:00:00Z"]).await;
    let empty: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(empty["events"], 0);
    let out =
        cairn(t, &s, &["audit", "report", "--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"]).await;
    assert!(exits(&out, 2).contains("since must be before until"), "{}", text(&out));

    // Pruning: nothing is past seven years; a viewer may not prune.
    let out = cairn(t, &s, &["audit", "prune", "--dry-run"]).await;
    let said = exits(&out, 0);
    assert!(said.contains("Would prune the details of 0 event(s)") && said.contains("Retention: *=2555d"), "{said}");
    let out = cairn(t, &s, &["audit", "prune", "--json"]).await;
    let p: api::AuditPrune = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((p.dry_run, p.removed_events, p.anchor_seq), (false, 0, 0));
    let viewer = s.service_account("vera", &[("viewer", None)]).await;
    let out = run_as(t, Some((s.url.clone(), viewer)), &["audit".into(), "prune".into()]);
    exits(&out, 1);
    s.stop().await;
}
