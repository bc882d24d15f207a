//! `cairn-opscost`: what one `/metrics` scrape costs when the registry holds 100,000 models.
//!
//! One in-process application on loopback on a fresh database (SQLite by default, a new
//! PostgreSQL database with `--postgres`). `--models` models across 20 namespaces are created
//! through the HTTP API with the administrator's token, `--concurrency` requests in flight;
//! the requests counted by the metrics are real ones. Then `/metrics` is read 20 times to
//! warm up and `--requests` times sequentially with the metrics token, each timed at the
//! client from sending to the last byte. It reports percentiles and the body size, and
//! asserts nothing about speed.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::Parser;
use futures::StreamExt;
use serde_json::json;

/// Measures `/metrics` on a registry of many models.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Models to create
    #[arg(long, default_value_t = 100_000)]
    models: usize,
    /// Measured scrapes (after 20 warm-up scrapes)
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Requests in flight while seeding
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Run on PostgreSQL: a server URL whose user may create databases
    #[arg(long)]
    postgres: Option<String>,
}

const METRICS_TOKEN: &str = "opscost-metrics-token-0123456789abcdef";

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let token = cairn_test_utils::random_token();
    let mut settings = cairn_test_utils::bench::settings(dir.path(), "cairn", args.postgres.as_deref(), &token).await;
    settings.metrics_token = Some(METRICS_TOKEN.into());
    let url = cairn_test_utils::bench::start(settings).await?;
    let http = reqwest::Client::new();

    let seeding = Instant::now();
    let created = futures::stream::iter(0..args.models)
        .map(|i| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let body = json!({"name": format!("ns-{:02}/model-{i:06}", i % 20), "description": "a model"});
                let resp = http.post(format!("{url}/api/v1/models")).bearer_auth(&token).json(&body).send().await?;
                ensure!(resp.status().is_success(), "creating model {i}: {}", resp.status());
                Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<Result<()>>>()
        .await;
    for r in created {
        r?;
    }
    eprintln!("seeded {} models in {:.1} s", args.models, seeding.elapsed().as_secs_f64());

    let scrape = || async {
        let started = Instant::now();
        let resp = http.get(format!("{url}/metrics")).bearer_auth(METRICS_TOKEN).send().await?;
        ensure!(resp.status().is_success(), "/metrics answered {}", resp.status());
        let body = resp.bytes().await?;
        Ok::<_, anyhow::Error>((started.elapsed(), body.len()))
    };
    for _ in 0..20 {
        scrape().await?;
    }
    let mut times = Vec::with_capacity(args.requests);
    let mut size = 0;
    for _ in 0..args.requests {
        let (t, n) = scrape().await?;
        times.push(t);
        size = n;
    }
    times.sort();
    let backend = if args.postgres.is_some() { "postgres" } else { "sqlite" };
    println!(
        "{}",
        json!({
            "backend": backend,
            "models": args.models,
            "scrapes": args.requests,
            "p50_ms": percentile(&times, 0.50),
            "p95_ms": percentile(&times, 0.95),
            "p99_ms": percentile(&times, 0.99),
            "max_ms": percentile(&times, 1.0),
            "body_bytes": size,
        })
    );
    Ok(())
}
