//! Operating a server, on SQLite and PostgreSQL: `/metrics` (who may read it, what it
//! counts), read-only maintenance mode (writes refused on every replica, reads kept), and
//! readiness while shutting down.

use std::time::{Duration, Instant};

use cairn_test_utils::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const METRICS_TOKEN: &str = "a-metrics-token-of-at-least-32-characters";

async fn start(backend: Backend, test: &str) -> Option<TestServer> {
    TestServer::start_with(backend, test, |s| {
        s.metrics_token = Some(METRICS_TOKEN.into());
        s.upload_part_size = 64 * 1024;
    })
    .await
}

/// `GET /metrics` with this bearer token (or none): status and body.
async fn scrape(s: &TestServer, token: Option<&str>) -> (StatusCode, String, String) {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", s.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

/// The value of the sample whose name and labels are exactly `series` (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn metrics_need_the_token_or_an_administrator(s: &TestServer) {
    let (st, _, body) = scrape(s, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains("cairn_"), "{body}");
    let (st, _, _) = scrape(s, Some("a-wrong-token-of-at-least-32-characters!!")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let reader = s.service_account("metrics-reader", &[("viewer", None)]).await;
    let (st, _, body) = scrape(s, Some(&reader)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let (st, ctype, body) = scrape(s, Some(METRICS_TOKEN)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    let (st, _, _) = scrape(s, Some(&s.token)).await;
    assert_eq!(st, StatusCode::OK, "an administrator's key reads metrics too");
}

async fn metrics_count_requests_by_route_bytes_and_the_pool(s: &TestServer) {
    let payload = vec![7u8; 200_000];
    s.push("metrics/counted-model", &[("weights.bin", &payload)]).await;
    for _ in 0..3 {
        let (st, _) = s.call(Method::GET, "/api/v1/models/metrics/counted-model", None).await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, _) = s.call(Method::GET, "/api/v1/models/metrics/no-such-model", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, _, text) = scrape(s, Some(METRICS_TOKEN)).await;
    let route = "/api/v1/models/{namespace}/{name}";
    let ok = format!("cairn_http_requests_total{{method=\"GET\",route=\"{route}\",status=\"200\"}}");
    let missing = format!("cairn_http_requests_total{{method=\"GET\",route=\"{route}\",status=\"404\"}}");
    assert_eq!(sample(&text, &ok), 3.0, "{text}");
    assert_eq!(sample(&text, &missing), 1.0, "{text}");
    // Labels carry route templates, never names from requests.
    assert!(!text.contains("counted-model") && !text.contains("no-such-model"), "{text}");
    let bucket =
        format!("cairn_http_request_duration_seconds_count{{method=\"GET\",route=\"{route}\",status=\"200\"}}");
    assert_eq!(sample(&text, &bucket), 3.0, "{text}");
    // The upload's body was counted in, the answers out.
    assert!(sample(&text, "cairn_http_request_body_bytes_total") >= payload.len() as f64, "{text}");
    assert!(sample(&text, "cairn_http_response_body_bytes_total") > 0.0, "{text}");
    let parts = "cairn_http_requests_total{method=\"PUT\",route=\"/api/v1/uploads/{upload_id}/blobs/{sha256}/parts/{part}\",status=\"200\"}";
    assert_eq!(sample(&text, parts), 4.0, "200 kB in 64 KiB parts: {text}");
    assert_eq!(sample(&text, "cairn_uploads_in_flight"), 0.0, "{text}");
    // The scrape itself is in flight while it renders.
    assert_eq!(sample(&text, "cairn_http_requests_in_flight"), 1.0, "{text}");
    let max = sample(&text, "cairn_db_pool_connections{state=\"max\"}");
    assert!(max >= 8.0, "{text}");
    assert!(sample(&text, "cairn_db_pool_connections{state=\"idle\"}") <= max, "{text}");
    let head = s.state.store.audit_head().await.unwrap().seq;
    assert!(head > 0);
    assert_eq!(sample(&text, "cairn_audit_chain_head_seq"), head as f64, "{text}");
    assert_eq!(sample(&text, "cairn_maintenance_mode"), 0.0, "{text}");
}

async fn metrics_count_login_failures_and_lockouts(s: &TestServer) {
    let login = |password: &'static str| {
        let url = format!("{}/api/v1/auth/login", s.url);
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"username": "admin", "password": password}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let attempts = s.state.settings.auth_max_attempts;
    for _ in 0..attempts {
        assert_eq!(login("not the password").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login("not the password").await, StatusCode::TOO_MANY_REQUESTS, "locked after {attempts}");
    let (_, _, text) = scrape(s, Some(METRICS_TOKEN)).await;
    assert_eq!(sample(&text, "cairn_login_failures_total"), f64::from(attempts), "{text}");
    assert_eq!(sample(&text, "cairn_lockouts_total"), 1.0, "{text}");
}

async fn metrics_count_blob_store_failures(s: &TestServer) {
    let data = b"a file whose stored object goes missing".to_vec();
    s.push("metrics/broken", &[("f.txt", &data)]).await;
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&data))
    };
    std::fs::remove_file(s.stored_blob_path(&digest)).unwrap();
    let (st, body) = s.call(Method::GET, "/api/v1/models/metrics/broken/versions/1/files/f.txt", None).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let (_, _, text) = scrape(s, Some(METRICS_TOKEN)).await;
    assert_eq!(sample(&text, "cairn_blob_store_errors_total"), 1.0, "{text}");
}

async fn rate_limit_rejections_are_counted(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, "metrics_rate_limit", |s| {
        s.metrics_token = Some(METRICS_TOKEN.into());
        s.rate_limit_requests = 3;
        s.rate_limit_window = 3600;
        s.rate_limit_block_secs = 3600;
    })
    .await
    else {
        return;
    };
    let mut limited = 0;
    for _ in 0..6 {
        if s.call(Method::GET, "/api/v1/models", None).await.0 == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert!(limited >= 2, "{limited}");
    let (st, _, text) = scrape(&s, Some(METRICS_TOKEN)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(sample(&text, "cairn_rate_limit_rejections_total{by=\"principal\"}"), f64::from(limited), "{text}");
    s.stop().await;
}

/// Waits until the server answers `write` with `want` (maintenance switches reach a
/// replica within a second).
async fn wait_for_write_status(s: &TestServer, want: StatusCode) -> (StatusCode, Value, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = reqwest::Client::new()
            .patch(format!("{}/api/v1/models/ops/kept", s.url))
            .bearer_auth(&s.token)
            .json(&json!({"description": "changed"}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == want {
            return (status, body, retry);
        }
        assert_ne!(
            want,
            StatusCode::SERVICE_UNAVAILABLE,
            "a write was accepted more than a second after maintenance mode was switched on: {body}"
        );
        assert!(Instant::now() < deadline, "still {status} after 5 s: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn maintenance_mode_refuses_writes_and_keeps_reads(s: &TestServer) {
    let data = b"weights kept readable during maintenance".to_vec();
    s.push("ops/kept", &[("w.bin", &data)]).await;
    let ctx = cairn_server::maintenance::admin_context();
    let on = s.state.store.set_maintenance(&ctx, Some("backup until 02:00 UTC")).await.unwrap();
    assert_eq!(on.unwrap().message, "backup until 02:00 UTC");

    // A replica's view may be up to a second old; after that every write is refused.
    tokio::time::sleep(cairn_server::maintenance_mode::REFRESH + Duration::from_millis(100)).await;
    let (_, body, retry) = wait_for_write_status(s, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["error"]["code"], "maintenance", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("backup until 02:00 UTC"), "{body}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() > 0));
    // Nothing changed, reads and downloads work, new pushes are refused.
    let (st, model) = s.call(Method::GET, "/api/v1/models/ops/kept", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_ne!(model["description"], "changed", "{model}");
    let file = reqwest::Client::new()
        .get(format!("{}/api/v1/models/ops/kept/versions/1/files/w.bin", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.bytes().await.unwrap().as_ref(), data.as_slice());
    let (st, _) = s.call(Method::POST, "/api/v1/models", Some(json!({"name": "ops/new"}))).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    // Signing in still works (people need a session to read).
    let login = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", s.url))
        .json(&json!({"username": "admin", "password": "test-admin-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    // MLflow clients get MLflow's error shape; their searches sent as POST still work.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/2.0/mlflow/registered-models/create", s.url))
        .bearer_auth(&s.token)
        .json(&json!({"name": "ops.mlflow-new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error_code"], "TEMPORARILY_UNAVAILABLE", "{body}");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/2.0/mlflow/runs/search", s.url))
        .bearer_auth(&s.token)
        .json(&json!({"experiment_ids": ["0"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, _, text) = scrape(s, Some(METRICS_TOKEN)).await;
    assert_eq!(sample(&text, "cairn_maintenance_mode"), 1.0, "{text}");

    s.state.store.set_maintenance(&ctx, None).await.unwrap();
    let (_, body, _) = wait_for_write_status(s, StatusCode::OK).await;
    assert_eq!(body["description"], "changed", "{body}");
    // Both switches are in the audit trail, by the administrator's command.
    let events = s
        .state
        .store
        .list_audit_events(&cairn_store::audit::AuditQuery {
            target: Some("server".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"server.maintenance_on") && actions.contains(&"server.maintenance_off"), "{actions:?}");
    assert!(events.iter().all(|e| e.actor == cairn_server::maintenance::ADMIN_ACTOR));
}

async fn readiness_fails_while_draining(s: &TestServer) {
    let ready = || async { reqwest::get(format!("{}/readyz", s.url)).await.unwrap().status() };
    assert_eq!(ready().await, StatusCode::OK);
    s.state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(ready().await, StatusCode::SERVICE_UNAVAILABLE);
    // Still serving: the process is up and requests are answered.
    assert_eq!(reqwest::get(format!("{}/healthz", s.url)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(s.call(Method::GET, "/api/v1/models", None).await.0, StatusCode::OK);
    s.state.draining.store(false, std::sync::atomic::Ordering::Relaxed);
}

async fn all(backend: Backend, test: &str) {
    let Some(s) = start(backend, test).await else { return };
    metrics_need_the_token_or_an_administrator(&s).await;
    metrics_count_requests_by_route_bytes_and_the_pool(&s).await;
    metrics_count_blob_store_failures(&s).await;
    maintenance_mode_refuses_writes_and_keeps_reads(&s).await;
    readiness_fails_while_draining(&s).await;
    metrics_count_login_failures_and_lockouts(&s).await;
    s.stop().await;
    rate_limit_rejections_are_counted(backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_sqlite() {
    all(Backend::Sqlite, "ops_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_postgres() {
    all(Backend::Postgres, "ops_postgres").await;
}
