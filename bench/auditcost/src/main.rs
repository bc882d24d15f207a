//! `cairn-auditcost`: what the hash-chained audit log costs, and how fast it verifies.
//!
//! 1. **Create-version with and without chaining.** One process serves two identical
//!    applications on loopback, each on its own database (SQLite by default, PostgreSQL with
//!    `--postgres`). Rounds alternate between them; while the second one runs, audit events
//!    are written as they were before the chain existed (no sequence number, no hashes, no
//!    head row: `cairn_store::audit::set_unchained_for_benchmarks`). Both get the same
//!    requests: `POST …/versions` (each writes a version and its audit event), N clients.
//! 2. **Verification speed.** A chain of `--verify-events` events is written straight into
//!    a fresh database (sealed exactly as the server seals them), then verified from the
//!    database (`Store::verify_audit_chain`, as `cairn audit verify` does) and from a JSON
//!    Lines export (`verify_export`, as `cairn audit verify --file` does); writing that export
//!    (as `cairn audit export` does) is timed too.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use cairn_audit::chain::{EventDetails, GENESIS, parse_hash};
use cairn_audit::{AuditRecord, SigningKey};
use cairn_store::audit::set_unchained_for_benchmarks;
use cairn_store::{DbOptions, Store, params};
use clap::Parser;
use futures::TryStreamExt as _;
use serde_json::json;

/// Measures the audit chain's cost on create-version and its verification speed.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Versions created per measured run
    #[arg(long, default_value_t = 4_000)]
    requests: usize,
    /// Concurrent clients
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Rounds (each runs both applications; the best run of each is reported)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Events in the chain to verify (0 skips the verification benchmark)
    #[arg(long, default_value_t = 300_000)]
    verify_events: usize,
    /// Run on PostgreSQL: a server URL whose user may create databases
    #[arg(long)]
    postgres: Option<String>,
    /// Write the results as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
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
    let target = format!("{url}/api/v1/models/bench/m/versions");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, target, token) = (client.clone(), next.clone(), target.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let resp = client.post(&target).bearer_auth(&token).json(&json!({})).send().await?;
                ensure!(resp.status().is_success(), "POST answered {}", resp.status());
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

async fn database(args: &Args, dir: &std::path::Path, name: &str) -> Result<String> {
    Ok(match &args.postgres {
        Some(base) => cairn_test_utils::fresh_postgres_database(base).await,
        None => format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
    })
}

async fn app(args: &Args, token: &str, name: &str) -> Result<(String, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let settings = cairn_test_utils::bench::settings(dir.path(), name, args.postgres.as_deref(), token).await;
    let url = cairn_test_utils::bench::start(settings).await?;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{url}/api/v1/models"))
        .bearer_auth(token)
        .json(&json!({ "name": "bench/m" }))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "create model: {}", resp.text().await?);
    Ok((url, dir))
}

/// Writes `n` chained events straight into `store`'s database, 10,000 per transaction.
async fn write_chain(store: &Store, n: usize) -> Result<()> {
    let mut prev = GENESIS;
    let mut seq = 0i64;
    let mut last = String::new();
    while (seq as usize) < n {
        let mut tx = store.db().begin().await?;
        let mut conn = tx.conn();
        for _ in 0..10_000.min(n - seq as usize) {
            seq += 1;
            let details = EventDetails {
                actor: format!("user:u{}", seq % 50),
                key_id: Some("0190c0de-0000-7000-8000-000000000000".into()),
                target: format!("version:team/model-{}:{}", seq % 1000, seq % 7 + 1),
                before: None,
                after: Some(format!(
                    r#"{{"id":{seq},"description":"a version","digest":"sha256:{}"}}"#,
                    "ab".repeat(32)
                )),
                request_id: Some(format!("req-{seq}")),
                source_ip: Some("10.0.0.7".into()),
                user_agent: Some("cairn/0.1".into()),
            };
            let r = AuditRecord::seal(
                &prev,
                seq,
                1_700_000_000_000 + seq,
                "version.create".into(),
                "success".into(),
                details,
            );
            prev = parse_hash(&r.hash).unwrap_or(prev);
            let d = &r.details;
            conn.execute(
                "INSERT INTO audit_events (seq, occurred_at, actor, key_id, action, target, outcome, before_state, \
                 after_state, request_id, source_ip, user_agent, salt, details_digest, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                params![
                    r.seq,
                    r.time,
                    &d.actor,
                    d.key_id.clone(),
                    &r.action,
                    &d.target,
                    &r.outcome,
                    d.before.clone(),
                    d.after.clone(),
                    d.request_id.clone(),
                    d.source_ip.clone(),
                    d.user_agent.clone(),
                    r.salt.clone(),
                    &r.details_digest,
                    &r.hash
                ],
            )
            .await?;
            last.clone_from(&r.hash);
        }
        conn.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", params![seq, &last]).await?;
        tx.commit().await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let token = format!("cairn_bench_{}", "0123456789abcdef".repeat(3));
    let backend = if args.postgres.is_some() { "PostgreSQL" } else { "SQLite" };
    let (chained, _d1) = app(&args, &token, "chained").await?;
    let (unchained, _d2) = app(&args, &token, "unchained").await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let measure = |which: usize, n: usize| {
        let (client, token) = (client.clone(), token.clone());
        let url = if which == 0 { chained.clone() } else { unchained.clone() };
        let concurrency = args.concurrency;
        async move {
            set_unchained_for_benchmarks(which == 1);
            let r = run(&client, &url, &token, n, concurrency).await;
            set_unchained_for_benchmarks(false);
            r
        }
    };
    measure(0, 500).await?;
    measure(1, 500).await?;
    let mut best = [(0.0f64, 0.0f64, 0.0f64); 2];
    for round in 0..args.rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let r = measure(which, args.requests).await?;
            println!(
                "round {}: {:<18} {:>8.0} ops/s  p50 {:.2} ms  p99 {:.2} ms",
                round + 1,
                if which == 0 { "chained" } else { "unchained" },
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
    println!("| create-version, {backend}, {} clients | ops/s | p50 ms | p99 ms |", args.concurrency);
    println!("|---|---|---|---|");
    println!("| audit events chained (as served) | {:.0} | {:.2} | {:.2} |", best[0].0, best[0].1, best[0].2);
    println!("| audit events unchained | {:.0} | {:.2} | {:.2} |", best[1].0, best[1].1, best[1].2);
    println!();
    println!("chained ÷ unchained: {ratio:.3} (chaining costs {:.1}% of throughput)", (1.0 - ratio) * 100.0);

    let mut verify = json!(null);
    if args.verify_events > 0 {
        let dir = tempfile::tempdir()?;
        let url = database(&args, dir.path(), "verify").await?;
        let store = Store::open(&url, &DbOptions::default()).await?;
        let t = Instant::now();
        write_chain(&store, args.verify_events).await?;
        println!("\nwrote {} chained events in {:.1} s", args.verify_events, t.elapsed().as_secs_f64());
        let key = SigningKey::generate();
        store.checkpoint_audit_chain(&key).await?;
        let t = Instant::now();
        let report = store.verify_audit_chain(vec![key.public()]).await?;
        let db_secs = t.elapsed().as_secs_f64();
        ensure!(report.ok() && report.events as usize == args.verify_events, "verification failed: {report:?}");
        let export_path = dir.path().join("audit.jsonl");
        let t = Instant::now();
        let stream = cairn_server::audit_export::export(store.clone(), &key, Default::default()).await?;
        let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(&export_path).await?);
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.try_next().await? {
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file).await?;
        let export_secs = t.elapsed().as_secs_f64();
        let size = std::fs::metadata(&export_path)?.len();
        let t = Instant::now();
        let input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&export_path)?);
        let report = cairn_audit::export::verify_export(input, vec![key.public()])?;
        let file_secs = t.elapsed().as_secs_f64();
        ensure!(report.ok(), "export verification failed: {report:?}");
        let n = args.verify_events as f64;
        println!("\n| verify {} events, {backend} | seconds | events/s |", args.verify_events);
        println!("|---|---|---|");
        println!("| from the database (`cairn audit verify`) | {db_secs:.2} | {:.0} |", n / db_secs);
        println!(
            "| from a {:.0} MB export (`cairn audit verify --file`) | {file_secs:.2} | {:.0} |",
            size as f64 / 1e6,
            n / file_secs
        );
        println!("| writing that export (`cairn audit export`) | {export_secs:.2} | {:.0} |", n / export_secs);
        verify = json!({ "events": args.verify_events, "db_events_per_sec": n / db_secs, "file_events_per_sec": n / file_secs, "export_events_per_sec": n / export_secs, "export_bytes": size });
    }
    if let Some(path) = &args.json {
        let out = json!({
            "backend": backend, "requests": args.requests, "concurrency": args.concurrency, "rounds": args.rounds,
            "chained": { "ops_per_sec": best[0].0, "p50_ms": best[0].1, "p99_ms": best[0].2 },
            "unchained": { "ops_per_sec": best[1].0, "p50_ms": best[1].1, "p99_ms": best[1].2 },
            "ratio": ratio, "verify": verify,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)?;
    }
    Ok(())
}
