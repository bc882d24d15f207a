//! `cairn env`, `cairn deploy` and `cairn rollback` against a real server: environments,
//! records moved through their statuses, an SLO report that rolls back, a rollback by hand,
//! and the exit codes of bad input.

mod common;

use common::*;

use cairn_test_utils::{Backend, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_deployments_reports_and_rollbacks() {
    let Some(s) = TestServer::start(Backend::Sqlite, "environments_deployments_reports_and_rollbacks").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    exits(&cairn(t, &s, &["models", "create", "team/m"]).await, 0);
    for n in 1..=2 {
        std::fs::write(dir.join("weights.bin"), format!("weights {n}")).unwrap();
        exits(&cairn(t, &s, &["push", "team/m", dir.to_str().unwrap(), "-q"]).await, 0);
    }
    let out = cairn(t, &s, &["env", "put", "staging", "--max-error-rate", "0.05"]).await;
    assert!(exits(&out, 0).contains("Environment staging saved"), "{}", text(&out));
    let out = cairn(t, &s, &["env", "put", "Bad Name"]).await;
    exits(&out, 2);
    let out = cairn(t, &s, &["env", "list"]).await;
    assert!(exits(&out, 0).contains("staging") && text(&out).contains("0.05"), "{}", text(&out));

    let out = cairn(t, &s, &["deploy", "record", "team/m:1", "--env", "staging", "--status", "succeeded"]).await;
    assert!(exits(&out, 0).contains("team/m:1 in staging (direct): succeeded"), "{}", text(&out));
    let out = cairn(
        t,
        &s,
        &[
            "deploy",
            "record",
            "team/m:2",
            "--env",
            "staging",
            "--strategy",
            "canary",
            "--traffic",
            "20",
            "--config",
            "{\"replicas\": 2}",
            "--json",
        ],
    )
    .await;
    let d: serde_json::Value = serde_json::from_str(&exits(&out, 0)).unwrap();
    let id = d["id"].as_i64().unwrap().to_string();
    assert_eq!((d["traffic_percent"].as_i64(), d["config"]["replicas"].as_i64()), (Some(20), Some(2)));
    let out = cairn(t, &s, &["deploy", "record", "team/m:2", "--env", "staging", "--strategy", "canary"]).await;
    exits(&out, 2);
    let out = cairn(t, &s, &["deploy", "record", "team/m", "--env", "staging"]).await;
    exits(&out, 2);
    let out = cairn(t, &s, &["deploy", "status", &id, "succeeded"]).await;
    assert!(exits(&out, 0).contains("succeeded"), "{}", text(&out));
    let out = cairn(t, &s, &["deploy", "status", &id, "pending"]).await;
    exits(&out, 2);

    // A breach rolls back to version 1 by itself.
    let out = cairn(t, &s, &["deploy", "report", &id, "--error-rate", "0.2"]).await;
    let said = exits(&out, 0);
    assert!(
        said.contains("objectives breached (error_rate 0.2 > 0.05)")
            && said.contains("Rolled back: ")
            && said.contains("team/m:1"),
        "{said}"
    );
    let out = cairn(t, &s, &["deploy", "report", &id]).await;
    exits(&out, 2);
    // By hand, to version 2 again, then back.
    let out =
        cairn(t, &s, &["rollback", "team/m", "--env", "staging", "--to", "2", "--reason", "fixed upstream"]).await;
    assert!(exits(&out, 0).contains("team/m:2"), "{}", text(&out));
    let out = cairn(t, &s, &["rollback", "team/m", "--env", "staging"]).await;
    assert!(exits(&out, 0).contains("team/m:1"), "{}", text(&out));
    let out = cairn(t, &s, &["rollback", "team/m", "--env", "nowhere"]).await;
    exits(&out, 2);
    let out = cairn(t, &s, &["deploy", "list", "--env", "staging"]).await;
    let list = exits(&out, 0);
    assert_eq!(list.lines().count(), 5, "{list}");
    assert!(list.lines().next().unwrap().contains("team/m:1") && list.contains("rolled_back"), "{list}");
    s.stop().await;
}
