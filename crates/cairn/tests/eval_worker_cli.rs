//! Evaluation jobs end to end with the real binary: submitting a version queues its required
//! suite; `cairn eval worker`, running as a service account with the evaluator role, claims
//! it, pulls the version, runs the suite's harness without the worker's credentials, and
//! submits what it wrote. A harness that fails is retried until its attempts are used up; a
//! program the worker does not allow, a timeout and missing results fail the attempt; a
//! cancelled job stops its running harness; `cairn eval run` runs a command and submits.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

use cairn_test_utils::{Backend, TestServer};
use reqwest::Method;

cairn_test_utils::both_backends!(submitted_versions_are_evaluated_by_the_worker);

/// Writes a suite definition whose harness runs `sh -c SCRIPT`.
fn suite_file(dir: &Path, name: &str, script: &str, timeout: Option<u64>) -> String {
    let harness = serde_json::json!({"command": ["sh", "-c", script], "timeout_secs": timeout});
    let def = serde_json::json!({
        "description": "acceptance",
        "metrics": [{"name": "accuracy", "at_least": 0.9}],
        "dataset": {"name": "holdout", "uri": "s3://data/holdout"},
        "harness": harness,
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, def.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `cairn ARGS` with another account's key.
async fn cairn_with(cwd: &Path, s: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    let (cwd, args): (std::path::PathBuf, Vec<String>) =
        (cwd.to_path_buf(), args.iter().map(|a| a.to_string()).collect());
    let server = Some((s.url.clone(), token.to_owned()));
    tokio::task::spawn_blocking(move || run_as(&cwd, server, &args)).await.unwrap()
}

async fn jobs(s: &TestServer, query: &str) -> Vec<serde_json::Value> {
    let (st, v) = s.call(Method::GET, &format!("/api/v1/eval-jobs?{query}"), None).await;
    assert_eq!(st, 200, "{v}");
    v["jobs"].as_array().unwrap().clone()
}

async fn submitted_versions_are_evaluated_by_the_worker(s: &TestServer) {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    s.push("team/m", &[("weights.bin", b"the weights")]).await;
    // The harness checks that the version's files are there, records its environment, and
    // writes its results where it is told.
    let script = "test \"$(cat \"$CAIRN_EVAL_MODEL_DIR/weights.bin\")\" = 'the weights' && env > env.txt && \
                  printf '{\"accuracy\": 0.95, \"f1\": 0.9}' > {results}";
    let file = suite_file(t, "acc", script, Some(60));
    exits(&cairn(t, s, &["eval", "suite", "put", "team", "acc", &file, "--required"]).await, 0);
    exits(&cairn(t, s, &["submit", "team/m:1"]).await, 0);
    let queued = jobs(s, "model=team/m&version=1").await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!((queued[0]["suite"].as_str(), queued[0]["state"].as_str()), (Some("acc"), Some("queued")));
    let out = cairn(t, s, &["eval", "jobs", "--model", "team/m"]).await;
    assert!(exits(&out, 0).contains("queued") && text(&out).contains("team/m:1"), "{}", text(&out));

    // A viewer may not claim; an evaluator may, and may not push.
    let viewer = s.service_account("peek", &[("viewer", Some("team"))]).await;
    let out = cairn_with(t, s, &viewer, &["eval", "worker", "--once", "--allow-command", "sh"]).await;
    assert!(exits(&out, 1).contains("permission"), "{}", text(&out));
    let bot = s.service_account("evalbot", &[("evaluator", Some("team"))]).await;
    let (st, _) =
        s.call_as(Some(&bot), Method::POST, "/api/v1/models/team/m/versions", Some(serde_json::json!({}))).await;
    assert_eq!(st, 403);

    // Without an allow-list the worker does not start.
    exits(&cairn_with(t, s, &bot, &["eval", "worker", "--once"]).await, 2);
    let work = t.join("work");
    let w = work.to_str().unwrap();
    let out = cairn_with(
        t,
        s,
        &bot,
        &["eval", "worker", "--once", "--allow-command", "sh", "--name", "bot1", "--workdir", w, "--keep"],
    )
    .await;
    assert!(exits(&out, 0).contains("passes suite acc"), "{}", text(&out));
    let done = jobs(s, "model=team/m&version=1").await;
    assert_eq!(done[0]["state"], "succeeded", "{done:?}");
    assert_eq!((done[0]["worker"].as_str(), done[0]["claimed_by"].as_str()), (Some("bot1"), Some("service:evalbot")));
    let out = cairn(t, s, &["eval", "list", "team/m:1", "--json"]).await;
    let results: serde_json::Value = serde_json::from_str(&exits(&out, 0)).unwrap();
    let r = &results["results"][0];
    assert_eq!((r["suite"].as_str(), r["passed"].as_bool()), (Some("acc"), Some(true)));
    assert_eq!(
        (r["config"]["runner"].as_str(), r["config"]["worker"].as_str()),
        (Some("cairn eval worker"), Some("bot1"))
    );
    assert_eq!(r["config"]["dataset"]["uri"], "s3://data/holdout");
    assert_eq!(r["submitted_by"], "evalbot");

    // The harness saw where things are, and none of the worker's credentials.
    let env_file = walk(&work).into_iter().find(|p| p.ends_with("env.txt")).expect("the harness's env.txt kept");
    let env = std::fs::read_to_string(env_file).unwrap();
    assert!(env.contains("CAIRN_EVAL_MODEL=team/m") && env.contains("CAIRN_EVAL_VERSION=1"), "{env}");
    assert!(env.contains("CAIRN_EVAL_DATASET_URI=s3://data/holdout"), "{env}");
    assert!(!env.contains("CAIRN_TOKEN") && !env.contains("CAIRN_URL") && !env.contains(&bot), "{env}");

    // The whole road is in the audit trail.
    let (_, events) = s.call(Method::GET, "/api/v1/audit/events?limit=1000", None).await;
    let actions: Vec<&str> = events["events"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["eval.job.queue", "eval.job.claim", "eval.result.submit", "eval.job.complete"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

async fn retrying_server(test: &str) -> Option<TestServer> {
    TestServer::start_with(Backend::Sqlite, test, |st| st.eval_retry_base_secs = 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_then_fail_for_good() {
    let Some(s) = retrying_server("failed_attempts_are_retried_then_fail_for_good").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    s.push("team/m", &[("weights.bin", b"w")]).await;
    let suites = [
        ("boom", "echo starting; echo 'cannot load the model' >&2; exit 3", None),
        ("slow", "sleep 30", Some(1)),
        ("silent", "true", None),
        ("bad", "printf 'not json' > {results}", None),
    ];
    for (name, script, timeout) in suites {
        let file = suite_file(t, name, script, timeout);
        exits(&cairn(t, &s, &["eval", "suite", "put", "team", name, &file]).await, 0);
    }
    let mut py =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(t.join("boom.json")).unwrap()).unwrap();
    py["harness"]["command"] = serde_json::json!(["python3", "-c", "print(1)"]);
    std::fs::write(t.join("py.json"), py.to_string()).unwrap();
    exits(&cairn(t, &s, &["eval", "suite", "put", "team", "py", t.join("py.json").to_str().unwrap()]).await, 0);

    let out = cairn(t, &s, &["eval", "queue", "team/m:1", "--suite", "boom", "--max-attempts", "2", "--json"]).await;
    let boom: serde_json::Value = serde_json::from_str(&exits(&out, 0)).unwrap();
    // Queuing the same suite again gives the same job.
    let out = cairn(t, &s, &["eval", "queue", "team/m:1", "--suite", "boom", "--json"]).await;
    let again: serde_json::Value = serde_json::from_str(&exits(&out, 0)).unwrap();
    assert_eq!(again["id"], boom["id"]);
    for name in ["slow", "silent", "bad", "py"] {
        exits(&cairn(t, &s, &["eval", "queue", "team/m:1", "--suite", name, "--max-attempts", "1"]).await, 0);
    }
    exits(&cairn(t, &s, &["eval", "queue", "team/m:1", "--suite", "nope"]).await, 2);
    exits(&cairn(t, &s, &["eval", "queue", "team/m:1", "--suite", "boom", "--max-attempts", "0"]).await, 2);

    let out = cairn(t, &s, &["eval", "worker", "--drain", "--allow-command", "sh", "--poll-secs", "1"]).await;
    let said = exits(&out, 1);
    assert!(said.contains("cannot load the model"), "the harness's output is shown: {said}");

    let all = jobs(&s, "model=team/m").await;
    let by_suite = |n: &str| all.iter().find(|j| j["suite"] == n).unwrap().clone();
    let b = by_suite("boom");
    assert_eq!((b["state"].as_str(), b["attempts"].as_i64()), (Some("failed"), Some(2)), "{b}");
    let err = b["error"].as_str().unwrap();
    assert!(err.contains("status 3") && err.contains("cannot load the model"), "{err}");
    assert!(by_suite("slow")["error"].as_str().unwrap().contains("1 s limit"), "{:?}", by_suite("slow"));
    assert!(by_suite("silent")["error"].as_str().unwrap().contains("wrote no results"));
    assert!(by_suite("bad")["error"].as_str().unwrap().contains("unreadable"), "{:?}", by_suite("bad"));
    let py = by_suite("py");
    assert!(py["error"].as_str().unwrap().contains("does not run \"python3\""), "{py}");
    assert!(all.iter().all(|j| j["state"] == "failed"), "{all:?}");
    let (_, results) = s.call(Method::GET, "/api/v1/models/team/m/versions/1/evaluations", None).await;
    assert_eq!(results["results"].as_array().unwrap().len(), 0, "nothing submitted: {results}");
    let out = cairn(t, &s, &["eval", "jobs", "--state", "failed", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&exits(&out, 0)).unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 5);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_stops_its_running_harness() {
    let Some(s) = TestServer::start(Backend::Sqlite, "a_cancelled_job_stops_its_running_harness").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().to_path_buf();
    s.push("team/m", &[("weights.bin", b"w")]).await;
    let file =
        suite_file(&t, "slow", "echo started > started.txt; sleep 120; printf '{\"accuracy\": 1}' > {results}", None);
    exits(&cairn(&t, &s, &["eval", "suite", "put", "team", "slow", &file]).await, 0);
    exits(&cairn(&t, &s, &["eval", "queue", "team/m:1", "--suite", "slow"]).await, 0);
    let work = t.join("work");
    let (url, token, w) = (s.url.clone(), s.token.clone(), work.to_str().unwrap().to_owned());
    let cwd = t.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let args: Vec<String> =
            ["eval", "worker", "--once", "--allow-command", "sh", "--lease-secs", "10", "--workdir", &w, "--keep"]
                .iter()
                .map(|a| a.to_string())
                .collect();
        let started = Instant::now();
        (run_as(&cwd, Some((url, token)), &args), started.elapsed())
    });
    // Wait for the harness to run, then cancel the job.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !walk(&work).iter().any(|p| p.ends_with("started.txt")) {
        assert!(Instant::now() < deadline, "the harness never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = jobs(&s, "model=team/m").await[0]["id"].as_str().unwrap().to_owned();
    let out = cairn(&t, &s, &["eval", "cancel", &id, "--reason", "wrong data"]).await;
    assert!(exits(&out, 0).contains("cancelled"), "{}", text(&out));
    let (out, took) = worker.await.unwrap();
    let said = exits(&out, 1);
    assert!(said.contains("cancelled: wrong data"), "{said}");
    assert!(took < Duration::from_secs(60), "the harness was stopped, not waited for: {took:?}");
    let job = &jobs(&s, "model=team/m").await[0];
    assert_eq!((job["state"].as_str(), job["error"].as_str()), (Some("cancelled"), Some("wrong data")));
    let (_, results) = s.call(Method::GET, "/api/v1/models/team/m/versions/1/evaluations", None).await;
    assert_eq!(results["results"].as_array().unwrap().len(), 0, "{results}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_run_submits_what_the_command_writes() {
    let Some(s) = TestServer::start(Backend::Sqlite, "eval_run_submits_what_the_command_writes").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    s.push("team/m", &[("weights.bin", b"w")]).await;
    let file = suite_file(t, "acc", "true", None);
    exits(&cairn(t, &s, &["eval", "suite", "put", "team", "acc", &file]).await, 0);

    let pass = "test -f {model_dir}/weights.bin && printf '{\"accuracy\": 0.97}' > {results}";
    let out = cairn(t, &s, &["eval", "run", "team/m:1", "--suite", "acc", "--", "sh", "-c", pass]).await;
    assert!(exits(&out, 0).contains("team/m:1 passes suite acc"), "{}", text(&out));
    // Results in a file the user names, as CSV, below the threshold: submitted, exit 1.
    let csv = t.join("out.csv");
    let fail = format!("printf 'metric,value\\naccuracy,0.5\\n' > {}", csv.display());
    let out = cairn(
        t,
        &s,
        &["eval", "run", "team/m:1", "--suite", "acc", "--results", csv.to_str().unwrap(), "--", "sh", "-c", &fail],
    )
    .await;
    assert!(exits(&out, 1).contains("fails suite acc"), "{}", text(&out));
    // A failing command submits nothing.
    let out = cairn(t, &s, &["eval", "run", "team/m:1", "--suite", "acc", "--", "sh", "-c", "exit 4"]).await;
    assert!(exits(&out, 1).contains("nothing was submitted"), "{}", text(&out));
    // {model_dir} without the files is a usage error; so is an unknown suite.
    let out =
        cairn(t, &s, &["eval", "run", "team/m:1", "--suite", "acc", "--no-pull", "--", "ls", "{model_dir}"]).await;
    exits(&out, 2);
    exits(&cairn(t, &s, &["eval", "run", "team/m:1", "--suite", "nope", "--", "true"]).await, 2);
    let (_, results) = s.call(Method::GET, "/api/v1/models/team/m/versions/1/evaluations", None).await;
    let got: Vec<(bool, &str)> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["passed"].as_bool().unwrap(), r["config"]["runner"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(true, "cairn eval run"), (false, "cairn eval run")]);
    s.stop().await;
}
