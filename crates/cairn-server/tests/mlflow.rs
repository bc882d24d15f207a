//! The MLflow-compatible API with the real MLflow client (`mlflow==3.17.2`), on SQLite and
//! PostgreSQL: the scenario scripts in `tests/mlflow/` (registry, stage transitions through
//! Cairn's gates, tracking, artifacts byte for byte, the sklearn log → register → alias →
//! load flow, authentication and hidden namespaces), then checks over HTTP of what the
//! client cannot show: that MLflow writes land in the native registry and audit log, HTTP
//! Basic credentials, and MLflow's error shape.
//!
//! Needs `CAIRN_TEST_MLFLOW_PYTHON`, the python of the venv `.ci/setup-mlflow-python.sh`
//! makes. Unset: the tests print SKIPPED and pass, unless `CAIRN_REQUIRE_ALL_TESTS=1`.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;

use cairn_test_utils::{Backend, TestServer, require_all};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn python() -> Option<PathBuf> {
    match std::env::var_os("CAIRN_TEST_MLFLOW_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                !require_all(),
                "CAIRN_REQUIRE_ALL_TESTS=1 but CAIRN_TEST_MLFLOW_PYTHON is unset: run .ci/setup-mlflow-python.sh and export it"
            );
            println!(
                "SKIPPED: set CAIRN_TEST_MLFLOW_PYTHON (see .ci/setup-mlflow-python.sh) to run the MLflow client tests"
            );
            None
        }
    }
}

/// Runs one scenario script; `token` None runs without credentials.
async fn scenario(py: &PathBuf, s: &TestServer, token: Option<&str>, args: &[&str]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mlflow");
    // The scripts and the client write temporary files; they go in a directory removed
    // when the scenario ends, not in the machine's temporary directory.
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(py);
    cmd.current_dir(&dir)
        .args(args)
        .env("TMPDIR", tmp.path())
        .env("MLFLOW_TRACKING_URI", &s.url)
        .env("CAIRN_MLFLOW_TARGET", "cairn")
        .env("CAIRN_MLFLOW_PREFIX", "t1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // MLflow's telemetry would reach out to the network, and its thread rewrites the
        // environment while `requests` iterates it (a KeyError seen in CI).
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD");
    match token {
        Some(t) => cmd.env("MLFLOW_TRACKING_TOKEN", t),
        None => cmd.env_remove("MLFLOW_TRACKING_TOKEN"),
    };
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().expect("run python");
    drop(tmp);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("ok {}", args[1])),
        "{} {} failed:\nstdout: {stdout}\nstderr: {}",
        args[0],
        args[1],
        String::from_utf8_lossy(&out.stderr)
    );
}

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

async fn start(backend: Backend, test: &str) -> Option<TestServer> {
    TestServer::start_with(backend, test, |settings| {
        // The scripts make a few hundred requests with one key.
        settings.rate_limit_requests = 100_000;
    })
    .await
}

async fn client_scenarios(backend: Backend) {
    let Some(py) = python() else { return };
    let Some(s) = start(backend, "mlflow_client").await else { return };
    let admin = s.token.clone();

    for (script, name) in [
        ("registry.py", "registry"),
        ("registry.py", "stages"),
        ("tracking.py", "tracking"),
        ("artifacts.py", "artifacts"),
        ("artifacts.py", "multipart"),
    ] {
        scenario(&py, &s, Some(&admin), &[script, name]).await;
    }
    let (_, mpu) =
        call(&s, &admin, Method::GET, "/api/v1/audit/events?action=mlflow.artifact.multipart.create", None).await;
    assert_eq!(mpu["events"].as_array().map(Vec::len), Some(1), "the 12 MB file went up in parts: {mpu}");
    // The namespace's `mlflow-run` suite takes the metrics of the run a version comes from.
    let suite = json!({"definition": {"test_type": "effectiveness", "metrics": [
        {"name": "train_acc", "group": "task", "at_least": 0.5}]}, "required": false});
    let (st, v) = call(&s, &admin, Method::PUT, "/api/v1/namespaces/t1/eval-suites/mlflow-run", Some(suite)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    scenario(&py, &s, Some(&admin), &["flow.py", "flow"]).await;

    // What the flow registered through MLflow is an ordinary Cairn version: its files frozen
    // in a signed manifest, its run's params and metrics attached, audited.
    let (st, versions) = call(&s, &admin, Method::GET, "/api/v1/models/t1/flow-iris/versions", None).await;
    assert_eq!(st, StatusCode::OK, "{versions}");
    let v1 = versions["versions"].as_array().unwrap().iter().find(|v| v["version"] == 1).expect("version 1").clone();
    assert!(v1["file_count"].as_u64().unwrap() >= 3, "the logged model's files are the version's: {v1}");
    assert!(v1["source"].as_str().unwrap().starts_with("models:/m-"), "{v1}");
    assert_eq!(v1["run_id"].as_str().unwrap().len(), 32, "the run is the version's lineage: {v1}");
    assert!(v1["metadata"]["mlflow"]["run"]["params"].is_object(), "{v1}");
    // The run is recorded as lineage too, with its parameters: walks and impact queries find it.
    let (st, lineage) = call(&s, &admin, Method::GET, "/api/v1/models/t1/flow-iris/versions/1/lineage", None).await;
    assert_eq!(st, StatusCode::OK, "{lineage}");
    let run = &lineage["inputs"][0];
    assert_eq!((run["kind"].as_str(), run["platform"].as_str()), (Some("run"), Some("mlflow")), "{lineage}");
    assert_eq!(run["name"], v1["run_id"]);
    assert_eq!(run["params"], v1["metadata"]["mlflow"]["run"]["params"], "{lineage}");
    let run_ref = format!("mlflow:{}", v1["run_id"].as_str().unwrap());
    let (_, impact) = call(&s, &admin, Method::GET, &format!("/api/v1/lineage/impact?run={run_ref}"), None).await;
    assert_eq!(impact["versions"][0]["model"], "t1/flow-iris", "{impact}");
    let (st, files) = call(&s, &admin, Method::GET, "/api/v1/models/t1/flow-iris/versions/1/files", None).await;
    assert_eq!(st, StatusCode::OK);
    let paths: Vec<&str> = files["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"MLmodel"), "{paths:?}");
    let (st, sig) = call(&s, &admin, Method::GET, "/api/v1/models/t1/flow-iris/versions/1/signatures", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sig["signatures"][0]["kind"], "server", "{sig}");
    // Its files were scanned before it was committed: the scikit-learn model MLflow saved (a
    // skops zip), its MLmodel and environment files; nothing found, nothing left unread.
    let (st, scan) = call(&s, &admin, Method::GET, "/api/v1/models/t1/flow-iris/versions/1/scan", None).await;
    assert_eq!(st, StatusCode::OK, "{scan}");
    assert_eq!(
        (
            scan["summary"]["scanned"].as_bool(),
            scan["summary"]["clean"].as_bool(),
            scan["summary"]["incomplete"].as_u64()
        ),
        (Some(true), Some(true), Some(0)),
        "{scan}"
    );
    let format = |path: &str| {
        let f = scan["files"].as_array().unwrap().iter().find(|f| f["path"] == path);
        f.map(|f| (f["format"].as_str().unwrap().to_owned(), f["status"].as_str().unwrap().to_owned()))
    };
    assert_eq!(format("MLmodel"), Some(("text".into(), "scanned".into())), "{scan}");
    let model = scan["files"].as_array().unwrap().iter().find(|f| f["path"].as_str().unwrap().starts_with("model."));
    assert!(
        model.is_some_and(|m| m["status"] == "scanned" && m["format"] != "other"),
        "the model file is read: {scan}"
    );
    let (st, evals) = call(&s, &admin, Method::GET, "/api/v1/models/t1/flow-iris/versions/1/evaluations", None).await;
    assert_eq!(st, StatusCode::OK, "{evals}");
    let run_result = &evals["results"][0];
    assert_eq!(
        (run_result["suite"].as_str(), run_result["passed"].as_bool()),
        (Some("mlflow-run"), Some(true)),
        "{evals}"
    );
    assert_eq!(run_result["config"]["mlflow_run_id"], v1["run_id"], "{evals}");
    let (st, events) =
        call(&s, &admin, Method::GET, "/api/v1/audit/events?action=version.create&target=version:t1/flow-iris:1", None)
            .await;
    assert_eq!(st, StatusCode::OK, "{events}");
    assert_eq!(events["events"].as_array().map(Vec::len), Some(1), "{events}");
    // The event records the training run as the version's lineage, and the scan of the files
    // it froze from the run's artifacts: one event for the one change.
    let created = &events["events"][0]["after"];
    assert_eq!(created["lineage"], json!([{"kind": "run", "name": v1["run_id"], "ref": ""}]), "{created}");
    assert!(created["scan"]["files"].as_u64().is_some_and(|n| n > 0), "{created}");

    // Stage transitions go through the same gates as native promotions: approve natively,
    // then MLflow's transition to Production promotes.
    let (st, v) = call(&s, &admin, Method::POST, "/api/v1/models", Some(json!({"name": "t1/gated"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(&s, &admin, Method::POST, "/api/v1/models/t1/gated/versions", Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let reviewer =
        s.service_account("rev", &[("mrc", Some("t1")), ("security", Some("t1")), ("sre", Some("t1"))]).await;
    let base = "/api/v1/models/t1/gated/versions/1";
    let (st, v) = call(&s, &admin, Method::POST, &format!("{base}/submit"), Some(json!({"reason": "ready"}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let review = |role: &str| json!({"decision": "approve", "role": role, "rationale": "checked"});
    let (st, v) = call(&s, &reviewer, Method::POST, &format!("{base}/reviews"), Some(review("sre"))).await;
    assert_eq!((st, v["stage"].as_str()), (StatusCode::OK, Some("approved_staging")), "{v}");
    let (st, v) = call(&s, &admin, Method::POST, &format!("{base}/promote"), Some(json!({}))).await;
    assert_eq!((st, v["stage"].as_str()), (StatusCode::OK, Some("staging")), "{v}");
    for role in ["mrc", "security"] {
        let (st, v) = call(&s, &reviewer, Method::POST, &format!("{base}/reviews"), Some(review(role))).await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    scenario(&py, &s, Some(&admin), &["registry.py", "stages-approved", "t1.gated", "1"]).await;
    let (_, life) = call(&s, &admin, Method::GET, &format!("{base}/lifecycle"), None).await;
    let actions: Vec<&str> =
        life["transitions"].as_array().unwrap().iter().map(|t| t["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"promote") && actions.contains(&"deprecate"), "{life}");

    // Credentials and namespaces: none → UNAUTHENTICATED; a reader of t1 who cannot see
    // `hidden` gets PERMISSION_DENIED on writes and "does not exist" for the hidden model.
    scenario(&py, &s, None, &["auth.py", "unauthenticated"]).await;
    let (st, v) = call(&s, &admin, Method::POST, "/api/v1/models", Some(json!({"name": "hidden/secret"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(&s, &admin, Method::POST, "/api/v1/models/hidden/secret/versions", Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let viewer = s.service_account("viewer", &[("viewer", Some("t1"))]).await;
    scenario(&py, &s, Some(&viewer), &["auth.py", "denied", "hidden.secret"]).await;
    let (_, denied) =
        call(&s, &admin, Method::GET, "/api/v1/audit/events?outcome=denied&actor=service:viewer", None).await;
    assert!(!denied["events"].as_array().map(Vec::is_empty).unwrap_or(true), "refusals are audited: {denied}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_client_sqlite() {
    client_scenarios(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_client_postgres() {
    client_scenarios(Backend::Postgres).await;
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

async fn raw(
    s: &TestServer,
    auth: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())))
}

/// Over plain HTTP: Basic credentials, MLflow's error shape, the name mapping, and that the
/// registry is the native one.
async fn http_contract(backend: Backend) {
    let Some(s) = start(backend, "mlflow_http").await else { return };
    let bearer_header = format!("Bearer {}", s.token);
    let bearer = Some(bearer_header.as_str());

    // A person with a password and no MFA may use HTTP Basic; a wrong password is refused
    // and counted towards the lockout.
    let (st, v) = call(&s, &s.token, Method::POST, "/api/v1/namespaces", Some(json!({"name": "team"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(
        &s,
        &s.token,
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": "pat", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(
        &s,
        &s.token,
        Method::POST,
        "/api/v1/grants",
        Some(json!({"username": "pat", "role": "model_owner", "namespace": "team"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let good = basic("pat", "correct horse battery");
    let (st, v) = raw(
        &s,
        Some(&good),
        Method::POST,
        "/api/2.0/mlflow/registered-models/create",
        Some(json!({"name": "team.clf"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["registered_model"]["name"], "team.clf");
    assert!(v["registered_model"]["creation_timestamp"].is_i64(), "{v}");
    let (st, v) =
        raw(&s, Some(&basic("pat", "wrong")), Method::GET, "/api/2.0/mlflow/registered-models/get?name=team.clf", None)
            .await;
    assert_eq!((st, v["error_code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")), "{v}");
    let (_, fails) =
        call(&s, &s.token, Method::GET, "/api/v1/audit/events?action=auth.login&outcome=failure", None).await;
    assert_eq!(fails["events"].as_array().map(Vec::len), Some(1), "{fails}");
    let (st, v) = raw(&s, None, Method::GET, "/api/2.0/mlflow/registered-models/search", None).await;
    assert_eq!((st, v["error_code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")), "{v}");
    // An API key works as the Basic password too, but only under its own user's name.
    let (st, v) = raw(
        &s,
        Some(&basic("admin", &s.token)),
        Method::GET,
        "/api/2.0/mlflow/registered-models/get?name=team.clf",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = raw(
        &s,
        Some(&basic("pat", &s.token)),
        Method::GET,
        "/api/2.0/mlflow/registered-models/get?name=team.clf",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // The model is the native `team/clf`, created by pat and audited.
    let (st, m) = call(&s, &s.token, Method::GET, "/api/v1/models/team/clf", None).await;
    assert_eq!((st, m["created_by"].as_str()), (StatusCode::OK, Some("user:pat")), "{m}");
    let (_, ev) =
        call(&s, &s.token, Method::GET, "/api/v1/audit/events?action=model.create&target=model:team/clf", None).await;
    assert_eq!(ev["events"].as_array().map(Vec::len), Some(1), "{ev}");

    // MLflow's errors and codes, also under /ajax-api.
    let (st, v) = raw(
        &s,
        bearer,
        Method::POST,
        "/ajax-api/2.0/mlflow/registered-models/create",
        Some(json!({"name": "team.clf"})),
    )
    .await;
    assert_eq!((st, v["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("RESOURCE_ALREADY_EXISTS")), "{v}");
    assert_eq!(v["message"], "Registered Model (name=team.clf) already exists.");
    let (st, v) = raw(&s, bearer, Method::GET, "/api/2.0/mlflow/registered-models/get?name=team.nope", None).await;
    assert_eq!((st, v["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("RESOURCE_DOES_NOT_EXIST")), "{v}");
    let (st, v) = raw(
        &s,
        bearer,
        Method::POST,
        "/api/2.0/mlflow/registered-models/create",
        Some(json!({"name": "Team.Bad Name"})),
    )
    .await;
    assert_eq!((st, v["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")), "{v}");
    let (st, v) = raw(&s, bearer, Method::POST, "/api/2.0/mlflow/registered-models/create", Some(json!({}))).await;
    assert_eq!((st, v["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")), "{v}");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/2.0/mlflow/registered-models/create", s.url))
        .header("authorization", bearer_header.as_str())
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error_code"].is_string(), "malformed JSON gets MLflow's shape: {v}");
    let (st, v) = raw(&s, bearer, Method::GET, "/api/2.0/mlflow/registered-models/search?max_results=5000", None).await;
    assert_eq!((st, v["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")), "{v}");
    let (st, v) =
        raw(&s, bearer, Method::GET, "/api/2.0/mlflow/registered-models/search?page_token=forged", None).await;
    assert_eq!((st, v["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")), "{v}");
    // A name without a dot lives in `default`, and keeps its MLflow name.
    let (st, v) =
        raw(&s, bearer, Method::POST, "/api/2.0/mlflow/registered-models/create", Some(json!({"name": "plain"}))).await;
    assert_eq!((st, v["registered_model"]["name"].as_str()), (StatusCode::OK, Some("plain")), "{v}");
    let (st, _) = call(&s, &s.token, Method::GET, "/api/v1/models/default/plain", None).await;
    assert_eq!(st, StatusCode::OK);

    // Artifacts outside any experiment, or in a version's frozen files, cannot be written.
    let put = |path: &str| {
        reqwest::Client::new()
            .put(format!("{}/api/2.0/mlflow-artifacts/artifacts/{path}", s.url))
            .header("authorization", bearer_header.as_str())
            .body("x")
    };
    let resp = put("999/run/artifacts/a.txt").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = put("etc/passwd").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = put("_versions/team/clf/1/MLmodel").send().await.unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    // A registered version keeps its files when the artifact tree changes, and the blob
    // collector leaves the tree's blobs alone.
    let resp = put("0/r1/artifacts/model/MLmodel").body("flavors: {}\n").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (st, v) = raw(
        &s,
        bearer,
        Method::POST,
        "/api/2.0/mlflow/model-versions/create",
        Some(json!({"name": "team.clf", "source": "mlflow-artifacts:/0/r1/artifacts/model"})),
    )
    .await;
    assert_eq!((st, v["model_version"]["version"].as_str()), (StatusCode::OK, Some("1")), "{v}");
    let (st, v) =
        raw(&s, bearer, Method::GET, "/api/2.0/mlflow/model-versions/get-download-uri?name=team.clf&version=1", None)
            .await;
    assert_eq!(
        (st, v["artifact_uri"].as_str()),
        (StatusCode::OK, Some("mlflow-artifacts:/_versions/team/clf/1")),
        "{v}"
    );
    let (st, v) =
        raw(&s, bearer, Method::DELETE, "/api/2.0/mlflow-artifacts/artifacts/0/r1/artifacts/model/MLmodel", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) =
        raw(&s, bearer, Method::GET, "/api/2.0/mlflow-artifacts/artifacts?path=0/r1/artifacts/model", None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({})), "deleted from the tree");
    let (st, v) =
        raw(&s, bearer, Method::GET, "/api/2.0/mlflow-artifacts/artifacts?path=_versions/team/clf/1", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["files"], json!([{"path": "MLmodel", "is_dir": false, "file_size": 12}]), "{v}");
    let got = reqwest::Client::new()
        .get(format!("{}/api/2.0/mlflow-artifacts/artifacts/_versions/team/clf/1/MLmodel", s.url))
        .header("authorization", bearer_header.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.text().await.unwrap(), "flavors: {}\n");
    let resp = put("0/r2/artifacts/kept.bin").body("keep me").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let kept = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"keep me"));
    let claimed = s.state.store.gc_claim(i64::MAX, 10_000).await.unwrap();
    assert!(!claimed.iter().any(|b| b.digest == kept), "an artifact's blob is in use");
    // Multipart: parts go to signed URLs without credentials; a forged or foreign signature,
    // a part outside the upload, and completing with parts missing are refused.
    let (st, v) = raw(
        &s,
        bearer,
        Method::POST,
        "/api/2.0/mlflow-artifacts/mpu/create/0/r3/artifacts",
        Some(json!({"path": "/home/someone/local/weights.bin", "num_parts": 2})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let upload_id = v["upload_id"].as_str().unwrap().to_owned();
    let urls: Vec<String> =
        v["credentials"].as_array().unwrap().iter().map(|c| c["url"].as_str().unwrap().to_owned()).collect();
    assert_eq!(urls.len(), 2);
    assert!(urls[0].starts_with(&format!("{}/api/2.0/mlflow-artifacts/mpu/part/{upload_id}/1?", s.url)), "{urls:?}");
    let http = reqwest::Client::new();
    let forged = urls[0].replace("signature=", "signature=0");
    assert_eq!(http.put(&forged).body("a").send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let swapped = urls[1].replace(&format!("{upload_id}/2"), &format!("{upload_id}/1"));
    assert_eq!(
        http.put(&swapped).body("a").send().await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "a URL signs one part"
    );
    let part1 = http.put(&urls[0]).body("first part, ").send().await.unwrap();
    assert_eq!(part1.status(), StatusCode::OK);
    let etag1 = part1.headers()["etag"].to_str().unwrap().to_owned();
    let complete =
        |parts: Value| json!({"path": "/home/someone/local/weights.bin", "upload_id": upload_id, "parts": parts});
    let (st, v) = raw(
        &s,
        bearer,
        Method::POST,
        "/api/2.0/mlflow-artifacts/mpu/complete/0/r3/artifacts",
        Some(complete(json!([{"part_number": 1, "etag": etag1}]))),
    )
    .await;
    assert_eq!((st, v["error_code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")), "{v}");
    let part2 = http.put(&urls[1]).body("second part").send().await.unwrap();
    let etag2 = part2.headers()["etag"].to_str().unwrap().to_owned();
    let (st, v) = raw(
        &s,
        bearer,
        Method::POST,
        "/api/2.0/mlflow-artifacts/mpu/complete/0/r3/artifacts",
        Some(complete(json!([{"part_number": 1, "etag": etag1}, {"part_number": 2, "etag": etag2}]))),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let got = http
        .get(format!("{}/api/2.0/mlflow-artifacts/artifacts/0/r3/artifacts/weights.bin", s.url))
        .header("authorization", bearer_header.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), "first part, second part");
    // The upload is over: its URLs no longer take parts.
    assert_eq!(http.put(&urls[0]).body("late").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let (st, v) = raw(&s, bearer, Method::GET, "/api/3.0/mlflow/server-info", None).await;
    assert_eq!((st, v["multipart_downloads_enabled"].as_bool()), (StatusCode::OK, Some(false)), "{v}");
    s.stop().await;
}

#[tokio::test]
async fn mlflow_http_sqlite() {
    http_contract(Backend::Sqlite).await;
}

#[tokio::test]
async fn mlflow_http_postgres() {
    http_contract(Backend::Postgres).await;
}

/// A version registered from an artifact source reuses the stored scan of each unchanged file
/// (looked up with the listing of the source), reads a changed file again, never reuses an
/// incomplete result, and takes nothing from a sibling directory whose name starts the same.
async fn versions_from_a_source_reuse_scans(backend: Backend) {
    let Some(s) = start(backend, "mlflow_scan_reuse").await else { return };
    let auth = format!("Bearer {}", s.token);
    let put = |path: &str, body: &'static [u8]| {
        reqwest::Client::new()
            .put(format!("{}/api/2.0/mlflow-artifacts/artifacts/{path}", s.url))
            .header("authorization", auth.as_str())
            .body(body)
            .send()
    };
    for (path, body) in [
        ("0/r1/artifacts/model/MLmodel", &b"flavors: {}\n"[..]),
        ("0/r1/artifacts/model/README.md", b"# first\n"),
        ("0/r1/artifacts/model/weights.pkl", b"\x80\x04\xff."),
        ("0/r1/artifacts/model-b/other.txt", b"not the model's\n"),
    ] {
        assert_eq!(put(path, body).await.unwrap().status(), StatusCode::OK, "{path}");
    }
    let (st, v) = raw(
        &s,
        Some(&auth),
        Method::POST,
        "/api/2.0/mlflow/registered-models/create",
        Some(json!({"name": "team.clf"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let scanned_at = |scan: &Value| -> std::collections::BTreeMap<String, (String, String)> {
        scan["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let status = f["status"].as_str().unwrap().to_owned();
                (f["path"].as_str().unwrap().to_owned(), (status, f["scanned_at"].to_string()))
            })
            .collect()
    };
    let mut scans = Vec::new();
    for n in 1..=3 {
        if n == 3 {
            assert_eq!(put("0/r1/artifacts/model/README.md", b"# changed\n").await.unwrap().status(), StatusCode::OK);
        }
        // Scan times are in milliseconds: a new scan is told from a reused one by its time.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let (st, v) = raw(
            &s,
            Some(&auth),
            Method::POST,
            "/api/2.0/mlflow/model-versions/create",
            Some(json!({"name": "team.clf", "source": "mlflow-artifacts:/0/r1/artifacts/model"})),
        )
        .await;
        assert_eq!((st, v["model_version"]["version"].as_str()), (StatusCode::OK, Some(n.to_string().as_str())), "{v}");
        let (st, scan) =
            call(&s, &s.token, Method::GET, &format!("/api/v1/models/team/clf/versions/{n}/scan"), None).await;
        assert_eq!(st, StatusCode::OK, "{scan}");
        scans.push(scanned_at(&scan));
    }
    let paths: Vec<&str> = scans[0].keys().map(String::as_str).collect();
    assert_eq!(paths, ["MLmodel", "README.md", "weights.pkl"], "only the source directory's files");
    assert_eq!(scans[0]["weights.pkl"].0, "incomplete");
    assert_eq!(scans[1]["MLmodel"], scans[0]["MLmodel"], "unchanged: reused");
    assert_eq!(scans[1]["README.md"], scans[0]["README.md"], "unchanged: reused");
    assert_ne!(scans[1]["weights.pkl"], scans[0]["weights.pkl"], "incomplete: read again");
    assert_eq!(scans[2]["MLmodel"], scans[0]["MLmodel"], "unchanged: reused");
    assert_ne!(scans[2]["README.md"], scans[1]["README.md"], "changed: read again");
    s.stop().await;
}

#[tokio::test]
async fn mlflow_scan_reuse_sqlite() {
    versions_from_a_source_reuse_scans(Backend::Sqlite).await;
}

#[tokio::test]
async fn mlflow_scan_reuse_postgres() {
    versions_from_a_source_reuse_scans(Backend::Postgres).await;
}
