//! Scale-out: two replicas on one PostgreSQL database and one S3-compatible store behave as
//! one registry. The same workload runs twice — spread over two replicas at once, and on a
//! single server — and the outcomes must agree: gapless version numbers under concurrent
//! creation on both replicas, alias moves that all land, an upload whose parts go to
//! different replicas, a rate-limit budget and a lockout that hold on both, and one gapless
//! audit chain with the same events.

use std::collections::BTreeMap;

use cairn_test_utils::{Backend, BlobBackend, Storage, TestServer};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const VERSIONS: usize = 24;
const ALIAS_MOVES: usize = 20;
const BUDGET: u32 = 200;
/// Requests of the hammering principal: more than every replica's whole budget, since replicas
/// share counts once per flush interval and may together let through up to one budget each
/// (the bounded overshoot rate_limit.rs describes) when the requests come faster than that.
const HAMMER: usize = 2 * BUDGET as usize + 60;

/// What the workload observed; equal for one replica and for two.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    version_numbers: Vec<i64>,
    alias_moves_ok: usize,
    alias_target_requested: bool,
    upload_round_trip: bool,
    hammer_allowed_at_least_budget: bool,
    hammer_blocked_everywhere: bool,
    locked_everywhere: bool,
    chain_ok: bool,
    audit_gapless: bool,
    audit_actions: BTreeMap<String, usize>,
}

async fn call(url: &str, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{url}{path}")).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn workload(servers: &[&TestServer]) -> Outcome {
    let first = servers[0];
    let token = first.token.clone();
    let pick = |i: usize| servers[i % servers.len()].url.clone();
    let (st, v) = call(&first.url, &token, Method::POST, "/api/v1/models", Some(json!({"name": "scale/m"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // Versions created at once on every replica.
    let created = join_all((0..VERSIONS).map(|i| {
        let (url, token) = (pick(i), token.clone());
        async move {
            let body = json!({"source": format!("s3://bucket/run-{i}")});
            let (st, v) = call(&url, &token, Method::POST, "/api/v1/models/scale/m/versions", Some(body)).await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
            v["version"].as_i64().unwrap()
        }
    }))
    .await;
    let mut version_numbers = created;
    version_numbers.sort_unstable();

    // Alias moves at once on every replica: all land, the last one wins.
    let moves = join_all((0..ALIAS_MOVES).map(|i| {
        let (url, token) = (pick(i), token.clone());
        async move {
            let target = (i % VERSIONS) as i64 + 1;
            let (st, _) = call(
                &url,
                &token,
                Method::PUT,
                "/api/v1/models/scale/m/aliases/champion",
                Some(json!({"version": target})),
            )
            .await;
            st.is_success()
        }
    }))
    .await;
    let alias_moves_ok = moves.into_iter().filter(|ok| *ok).count();
    let (_, alias) = call(&pick(1), &token, Method::GET, "/api/v1/models/scale/m/aliases/champion", None).await;
    let target = alias["version"].as_i64().unwrap_or(0);
    let alias_target_requested = (0..ALIAS_MOVES).any(|i| (i % VERSIONS) as i64 + 1 == target);

    // One upload, its parts sent to alternating replicas, committed on another, read back
    // from each.
    let part = first.state.blobs.part_size() as usize;
    let data: Vec<u8> = (0..(2 * part + 1000) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let digest = hex::encode(Sha256::digest(&data));
    let declared = json!({"files": [{"path": "weights.bin", "size": data.len(), "sha256": digest}]});
    let (st, up) = call(&pick(0), &token, Method::POST, "/api/v1/models/scale/m/uploads", Some(declared)).await;
    assert_eq!(st, StatusCode::CREATED, "{up}");
    let id = up["upload_id"].as_str().unwrap().to_owned();
    for n in 0..3 {
        let chunk = data[n * part..((n + 1) * part).min(data.len())].to_vec();
        let resp = reqwest::Client::new()
            .put(format!("{}/api/v1/uploads/{id}/blobs/{digest}/parts/{n}", pick(n)))
            .bearer_auth(&token)
            .body(chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "part {n}");
    }
    let (st, committed) =
        call(&pick(1), &token, Method::POST, &format!("/api/v1/uploads/{id}/commit"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED, "{committed}");
    let n = committed["version"].as_i64().unwrap();
    let mut upload_round_trip = true;
    for s in servers {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/models/scale/m/versions/{n}/files/weights.bin", s.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        upload_round_trip &= resp.status() == StatusCode::OK && resp.bytes().await.unwrap().as_ref() == data.as_slice();
    }

    // A principal hammering every replica: at least its budget passes, then it is blocked
    // on all of them.
    let hammer = first.service_account("hammer", &[("viewer", None)]).await;
    let mut allowed = 0usize;
    for i in 0..HAMMER {
        if call(&pick(i), &hammer, Method::GET, "/api/v1/models", None).await.0 == StatusCode::OK {
            allowed += 1;
        }
    }
    for s in servers {
        s.state.rate_limits.flush().await.unwrap();
    }
    for s in servers {
        s.state.rate_limits.flush().await.unwrap();
    }
    eprintln!("hammer: {allowed} of {HAMMER} allowed over {} replica(s), budget {BUDGET}", servers.len());
    let mut hammer_blocked_everywhere = true;
    for s in servers {
        hammer_blocked_everywhere &=
            call(&s.url, &hammer, Method::GET, "/api/v1/models", None).await.0 == StatusCode::TOO_MANY_REQUESTS;
    }

    // Failed logins spread over the replicas lock the name on all of them.
    let (st, _) = call(
        &first.url,
        &token,
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": "victim", "password": "the right password 123"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    let login = |url: String, password: &'static str| async move {
        reqwest::Client::new()
            .post(format!("{url}/api/v1/auth/login"))
            .json(&json!({"username": "victim", "password": password}))
            .send()
            .await
            .unwrap()
            .status()
    };
    for i in 0..first.state.settings.auth_max_attempts as usize {
        assert_eq!(login(pick(i), "wrong").await, StatusCode::UNAUTHORIZED);
    }
    let mut locked_everywhere = true;
    for s in servers {
        locked_everywhere &= login(s.url.clone(), "the right password 123").await == StatusCode::TOO_MANY_REQUESTS;
    }

    // One chain, gapless, with the same events.
    let report = first.state.store.verify_audit_chain(vec![first.state.signing_key.public()]).await.unwrap();
    let head = first.state.store.audit_head().await.unwrap();
    let records = first.state.store.audit_records(0, None, 100_000).await.unwrap();
    let audit_gapless =
        records.iter().enumerate().all(|(i, r)| r.seq == i as i64 + 1) && records.len() as i64 == head.seq;
    let mut audit_actions = BTreeMap::new();
    for r in &records {
        // Each replica that sees the limit crossed records its own block.
        if r.action != "rate_limit.block" {
            *audit_actions.entry(r.action.clone()).or_insert(0) += 1;
        }
    }
    Outcome {
        version_numbers,
        alias_moves_ok,
        alias_target_requested,
        upload_round_trip,
        hammer_allowed_at_least_budget: allowed >= BUDGET as usize && allowed < HAMMER,
        hammer_blocked_everywhere,
        locked_everywhere,
        chain_ok: report.ok(),
        audit_gapless,
        audit_actions,
    }
}

fn limits(s: &mut cairn_server::Settings) {
    s.rate_limit_requests = BUDGET;
    s.rate_limit_window = 3600;
    s.rate_limit_block_secs = 3600;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_and_s3_behave_as_one() {
    let storage = Storage { blobs: BlobBackend::S3, encrypted: true };
    let Some(a) = TestServer::start_with_storage(Backend::Postgres, storage, "replicas_two", limits).await else {
        return;
    };
    let b = a.replica(|_| {}).await;
    let two = workload(&[&a, &b]).await;
    b.stop().await;
    a.stop().await;

    let single = TestServer::start_with_storage(Backend::Postgres, storage, "replicas_one", limits)
        .await
        .expect("PostgreSQL is there: the first run had it");
    let one = workload(&[&single]).await;
    single.stop().await;

    assert_eq!(one.version_numbers, (1..=VERSIONS as i64).collect::<Vec<_>>());
    assert_eq!(one.alias_moves_ok, ALIAS_MOVES);
    assert!(one.alias_target_requested && one.upload_round_trip && one.chain_ok && one.audit_gapless, "{one:?}");
    assert!(one.hammer_allowed_at_least_budget && one.hammer_blocked_everywhere && one.locked_everywhere, "{one:?}");
    assert_eq!(two, one, "two replicas must behave as one server");
}
