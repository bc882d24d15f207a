//! `cairn-authcost`: what authentication costs on the hot path.
//!
//! One process runs the same application twice on loopback, on one SQLite database: once as
//! `cairn serve` runs it (every request's API key verified: header parsed, token hashed, the
//! short-lived key cache consulted, the principal built, the permission checked), and once with
//! authentication replaced by a layer that hands every request a fixed, already verified
//! caller. Both get the same requests (`GET` of one version, 8 clients), in alternating rounds;
//! the report gives the throughput of each and their ratio.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use axum::extract::Request;
use axum::middleware::{self, Next};
use cairn_server::auth::{self, Caller, Credential};
use cairn_server::{AppState, Settings};
use clap::Parser;
use serde_json::json;

/// Measures the cost of authentication on get-version.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Requests per measured run
    #[arg(long, default_value_t = 40_000)]
    requests: usize,
    /// Concurrent clients
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Rounds (each runs both servers; the best run of each is reported)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write the results as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

async fn serve(app: axum::Router) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Ok(format!("http://{addr}"))
}

/// One measured run: ops/s, p50 and p99 in ms.
async fn run(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    n: usize,
    concurrency: usize,
) -> Result<(f64, f64, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let target = format!("{url}/api/v1/models/bench/m/versions/1");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, target, token) = (client.clone(), next.clone(), target.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let resp = client.get(&target).bearer_auth(&token).send().await?;
                ensure!(resp.status().is_success(), "GET answered {}", resp.status());
                resp.bytes().await?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all: Vec<Duration> = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    Ok((all.len() as f64 / secs, pct(0.5), pct(0.99)))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let token = format!("cairn_bench_{}", "0123456789abcdef".repeat(3));
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        bootstrap_admin_token: Some(token.clone()),
        bootstrap_admin_password: Some("bench-admin-password".into()),
        rate_limit_requests: 0,
        ..Settings::default()
    };
    let store = cairn_server::serve::open_store(&settings).await?;
    let state = AppState::new(store, settings).await?;

    // The caller the second application hands every request: the bootstrap key's, verified once.
    let key = state.store.find_api_key(&auth::hash_token(&token)).await?.context("bootstrap key missing")?;
    let (parts, ()) = axum::http::Request::new(()).into_parts();
    let credential = Credential {
        scopes: cairn_core::Scope::ALL.into_iter().collect(),
        key_namespaces: None,
        key_id: Some(key.key_id.clone()),
        session_id: None,
        mfa_satisfied: true,
    };
    let fixed: Caller = auth::caller_for(&parts, &key.account, credential);
    let inject = middleware::from_fn(move |mut req: Request, next: Next| {
        let caller = fixed.clone();
        async move {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    });

    let with_auth = serve(cairn_server::build_router(state.clone())).await?;
    let without_auth = serve(cairn_server::app::build_router_with_auth(state.clone(), inject)).await?;

    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    for (path, body) in [
        ("/api/v1/models", json!({ "name": "bench/m" })),
        ("/api/v1/models/bench/m/versions", json!({ "description": "the version every request reads" })),
    ] {
        let resp = client.post(format!("{with_auth}{path}")).bearer_auth(&token).json(&body).send().await?;
        ensure!(resp.status().is_success(), "{path}: {}", resp.text().await?);
    }
    // Warm both (connection pools, caches, the page cache of the database).
    run(&client, &with_auth, &token, 2_000, args.concurrency).await?;
    run(&client, &without_auth, &token, 2_000, args.concurrency).await?;

    let mut best = [(0.0f64, 0.0f64, 0.0f64); 2];
    for round in 0..args.rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let url = if which == 0 { &with_auth } else { &without_auth };
            let r = run(&client, url, &token, args.requests, args.concurrency).await?;
            println!(
                "round {}: {:<22} {:>9.0} ops/s  p50 {:.2} ms  p99 {:.2} ms",
                round + 1,
                if which == 0 { "with authentication" } else { "without authentication" },
                r.0,
                r.1,
                r.2
            );
            if r.0 > best[which].0 {
                best[which] = r;
            }
        }
    }
    let ratio = best[0].0 / best[1].0;
    println!();
    println!("| get-version, {} clients | ops/s | p50 ms | p99 ms |", args.concurrency);
    println!("|---|---|---|---|");
    println!("| API key verified (as served) | {:.0} | {:.2} | {:.2} |", best[0].0, best[0].1, best[0].2);
    println!("| authentication replaced by a fixed caller | {:.0} | {:.2} | {:.2} |", best[1].0, best[1].1, best[1].2);
    println!();
    println!("with ÷ without: {ratio:.3} (authentication costs {:.1}% of throughput)", (1.0 - ratio) * 100.0);
    if let Some(path) = &args.json {
        let out = json!({
            "requests": args.requests, "concurrency": args.concurrency, "rounds": args.rounds,
            "with_auth": { "ops_per_sec": best[0].0, "p50_ms": best[0].1, "p99_ms": best[0].2 },
            "without_auth": { "ops_per_sec": best[1].0, "p50_ms": best[1].1, "p99_ms": best[1].2 },
            "ratio": ratio,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)?;
    }
    Ok(())
}
