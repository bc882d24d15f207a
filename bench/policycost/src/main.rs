//! `cairn-policycost`: what evaluating policies adds to a lifecycle transition.
//!
//! 1. **Submissions with 0 and with 50 active policies.** One process serves two identical
//!    applications on loopback, each on its own database (SQLite by default, PostgreSQL with
//!    `--postgres`). The second has 50 active policies of 5 rules each (licence allow-list,
//!    metric thresholds, a regular expression, a number comparison, a length check), all in
//!    scope and passing, so every rule is evaluated and every result stored. Each round
//!    creates fresh draft versions with a card in both, then submits them (`POST
//!    …/versions/{n}/submit`), alternating between the applications; the best round of each
//!    is reported. The difference in mean latency is what 50 policies add.
//! 2. **The evaluator alone**: `cairn_core::policy::decide` over the same 50 policies and a
//!    realistic facts document, in-process.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use cairn_core::lifecycle::{RiskTier, Stage};
use cairn_core::policy::{CompiledPolicy, PolicyDoc, decide};
use clap::Parser;
use serde_json::{Value, json};

/// Measures what 50 active policies add to a lifecycle transition.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Versions submitted per application per round
    #[arg(long, default_value_t = 300)]
    versions: usize,
    /// Rounds (the best of each application is reported)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Active policies in the second application
    #[arg(long, default_value_t = 50)]
    policies: usize,
    /// Evaluations of the in-process evaluator benchmark
    #[arg(long, default_value_t = 20_000)]
    evaluations: usize,
    /// Run on PostgreSQL: a server URL whose user may create databases
    #[arg(long)]
    postgres: Option<String>,
    /// Write the results as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

const CARD: &str =
    "model:\n  name: m\n  description: A benchmark model.\n  license: apache-2.0\n  tags: [bench, fraud]\n";

fn policy(i: usize) -> String {
    json!({
        "name": format!("bench-{i:02}"),
        "severity": "high",
        "scope": {"stages": ["submitted", "approved_staging", "staging", "approved_prod", "production"]},
        "rules": [
            {"id": "licence", "action": "block",
             "condition": {"field": "card.model.license", "op": "in", "value": ["apache-2.0", "mit", "bsd-3-clause"]}},
            {"id": "accuracy", "action": "block",
             "condition": {"field": "metrics.accuracy", "op": "greater_than_or_equal", "value": 0.5}},
            {"id": "name", "action": "warn",
             "condition": {"field": "model.name", "op": "matches_regex", "value": "^bench/[a-z]+$"}},
            {"id": "number", "action": "block",
             "condition": {"field": "version.number", "op": "greater_than", "value": 0}},
            {"id": "tags", "action": "notify",
             "condition": {"all": [
                 {"field": "card.model.tags", "op": "length_less_than", "value": 100},
                 {"not": {"field": "card.model.tags", "op": "contains", "value": "forbidden"}}]}}
        ]
    })
    .to_string()
}

struct App {
    url: String,
    _dir: tempfile::TempDir,
    next_version: usize,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
    method: reqwest::Method,
    body: Value,
) -> Result<Value> {
    let resp = client.request(method, format!("{url}{path}")).bearer_auth(token).json(&body).send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    ensure!(status.is_success(), "{path} answered {status}: {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn app(args: &Args, token: &str, name: &str, policies: usize) -> Result<App> {
    let dir = tempfile::tempdir()?;
    let settings = cairn_test_utils::bench::settings(dir.path(), name, args.postgres.as_deref(), token).await;
    let url = cairn_test_utils::bench::start(settings).await?;
    let client = reqwest::Client::new();
    post(&client, &url, token, "/api/v1/models", reqwest::Method::POST, json!({"name": "bench/m"})).await?;
    for i in 0..policies {
        post(&client, &url, token, "/api/v1/policies", reqwest::Method::POST, json!({"source": policy(i)})).await?;
    }
    Ok(App { url, _dir: dir, next_version: 1 })
}

/// Creates `n` draft versions with a card; returns their numbers.
async fn prepare(client: &reqwest::Client, app: &mut App, token: &str, n: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let v = app.next_version;
        app.next_version += 1;
        post(client, &app.url, token, "/api/v1/models/bench/m/versions", reqwest::Method::POST, json!({})).await?;
        let card = json!({"source_name": "card.yaml", "source": CARD, "results": {"accuracy": 0.9}});
        post(client, &app.url, token, &format!("/api/v1/models/bench/m/versions/{v}/card"), reqwest::Method::PUT, card)
            .await?;
        out.push(v);
    }
    Ok(out)
}

/// Submits each version once, sequentially; returns (mean, p50, p99) in ms.
async fn submit_all(client: &reqwest::Client, app: &App, token: &str, versions: &[usize]) -> Result<(f64, f64, f64)> {
    let mut lat: Vec<Duration> = Vec::with_capacity(versions.len());
    for v in versions {
        let t = Instant::now();
        let life = post(
            client,
            &app.url,
            token,
            &format!("/api/v1/models/bench/m/versions/{v}/submit"),
            reqwest::Method::POST,
            json!({"reason": "bench"}),
        )
        .await?;
        lat.push(t.elapsed());
        ensure!(life["stage"] == "submitted", "not submitted: {life}");
    }
    let mean = lat.iter().map(Duration::as_secs_f64).sum::<f64>() / lat.len() as f64 * 1000.0;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    Ok((mean, pct(0.5), pct(0.99)))
}

fn evaluator(args: &Args) -> Result<(f64, usize)> {
    let compiled: Vec<CompiledPolicy> = (0..args.policies)
        .map(|i| PolicyDoc::parse(&policy(i)).and_then(PolicyDoc::compile))
        .collect::<Result<_, _>>()?;
    let refs: Vec<(i64, &CompiledPolicy)> = compiled.iter().map(|p| (1, p)).collect();
    let facts = json!({
        "model": {"name": "bench/m", "namespace": "bench", "risk_tier": "high", "owners": ["olga"], "tags": {}},
        "version": {"number": 7, "semver": "1.4.2", "stage": "draft", "target_stage": "submitted", "tags": {}},
        "card": {"model": {"name": "m", "license": "apache-2.0", "tags": ["bench", "fraud"]},
                 "evaluation": {"metrics": [{"name": "accuracy", "value": 0.9}]}},
        "metrics": {"accuracy": 0.9},
        "evaluations": {},
        "signatures": {"server": true, "users": [], "count": 1},
    });
    let started = Instant::now();
    let mut rules = 0;
    for _ in 0..args.evaluations {
        let d = decide(&refs, &facts, "bench", RiskTier::High, Stage::Submitted, &|_| false);
        ensure!(!d.blocked, "the benchmark policies must pass");
        rules = d.results.len();
    }
    Ok((started.elapsed().as_secs_f64() / args.evaluations as f64 * 1e6, rules))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let token = format!("cairn_bench_{}", "0123456789abcdef".repeat(3));
    let backend = if args.postgres.is_some() { "PostgreSQL" } else { "SQLite" };
    let client = reqwest::Client::new();
    let mut none = app(&args, &token, "none", 0).await?;
    let mut many = app(&args, &token, "many", args.policies).await?;
    println!("submit with 0 and {} active policies ({backend}), {} versions per round", args.policies, args.versions);
    let (mut best_none, mut best_many) = ((f64::MAX, 0.0, 0.0), (f64::MAX, 0.0, 0.0));
    for round in 1..=args.rounds {
        let a = prepare(&client, &mut none, &token, args.versions).await?;
        let b = prepare(&client, &mut many, &token, args.versions).await?;
        let r0 = submit_all(&client, &none, &token, &a).await?;
        let r1 = submit_all(&client, &many, &token, &b).await?;
        println!(
            "  round {round}: 0 policies {:.3} ms mean (p50 {:.3}, p99 {:.3}); {} policies {:.3} ms mean (p50 {:.3}, p99 {:.3})",
            r0.0, r0.1, r0.2, args.policies, r1.0, r1.1, r1.2
        );
        if r0.0 < best_none.0 {
            best_none = r0;
        }
        if r1.0 < best_many.0 {
            best_many = r1;
        }
    }
    let added = best_many.0 - best_none.0;
    println!(
        "best: 0 policies {:.3} ms, {} policies {:.3} ms: policies add {added:.3} ms per transition (target < 5 ms), ratio {:.2}",
        best_none.0,
        args.policies,
        best_many.0,
        best_many.0 / best_none.0
    );
    let (micros, rules) = evaluator(&args)?;
    println!("evaluator alone: {} policies, {rules} rule results, {micros:.1} µs per evaluation", args.policies);
    if let Some(path) = &args.json {
        let out = json!({
            "backend": backend,
            "policies": args.policies,
            "versions_per_round": args.versions,
            "submit_ms_no_policies": {"mean": best_none.0, "p50": best_none.1, "p99": best_none.2},
            "submit_ms_with_policies": {"mean": best_many.0, "p50": best_many.1, "p99": best_many.2},
            "added_ms": added,
            "evaluator_us": micros,
            "rule_results": rules,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)?;
    }
    Ok(())
}
