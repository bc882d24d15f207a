//! `cairn-bench`: starts a registry server, measures start-to-ready, drives it with N
//! concurrent clients through five operations, and reports ops/s, p50/p99 and the server's
//! memory. `--mlflow` runs the same operations against an MLflow server through its REST API
//! in the same run and prints the ratios.
//!
//! Loopback only; every phase is bounded by an operation count and a time cap.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Load generator for Cairn's registry API, optionally side by side with MLflow")]
struct Args {
    /// The `cairn` binary to benchmark (build it with --release)
    #[arg(long, default_value = "target/release/cairn")]
    cairn: PathBuf,
    /// Concurrent clients
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Operations per write phase (create-model)
    #[arg(long, default_value_t = 4_000)]
    models: u64,
    /// Versions to create in the create-version phase (RSS is read after it)
    #[arg(long, default_value_t = 100_000)]
    versions: u64,
    /// Operations per read phase
    #[arg(long, default_value_t = 50_000)]
    reads: u64,
    /// Time cap per phase, seconds
    #[arg(long, default_value_t = 60)]
    max_secs: u64,
    /// Also run the same phases against `mlflow server` from this Python (a venv with mlflow)
    #[arg(long)]
    mlflow: Option<PathBuf>,
    /// Scale factor for the MLflow run's operation counts (it is much slower)
    #[arg(long, default_value_t = 0.05)]
    mlflow_scale: f64,
    /// Write the results as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// `CAIRN_RATE_LIMIT_REQUESTS` of the Cairn server: 0 (the default here) turns rate
    /// limiting off, which the load of one client key would otherwise trip; a huge value
    /// measures the limiter's cost without refusals
    #[arg(long, default_value_t = 0)]
    rate_limit_requests: u32,
}

/// Which API the client speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Cairn,
    Mlflow,
}

#[derive(Clone)]
struct Target {
    api: Api,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Target {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        if self.api == Api::Cairn { r.bearer_auth(&self.token) } else { r }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<Value> {
        let resp = r.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(if body.is_empty() { Value::Null } else { serde_json::from_slice(&body)? })
    }

    /// Model names: Cairn `bench/m-3`, MLflow `bench.m-3`.
    fn model(&self, n: &str) -> String {
        match self.api {
            Api::Cairn => format!("bench/{n}"),
            Api::Mlflow => format!("bench.{n}"),
        }
    }

    async fn create_model(&self, n: &str, task: &str) -> Result<()> {
        let name = self.model(n);
        match self.api {
            Api::Cairn => {
                self.send(
                    self.req(reqwest::Method::POST, "/api/v1/models")
                        .json(&json!({"name": name, "tags": {"task": task}})),
                )
                .await?
            }
            Api::Mlflow => {
                self.send(
                    self.req(reqwest::Method::POST, "/api/2.0/mlflow/registered-models/create")
                        .json(&json!({"name": name, "tags": [{"key": "task", "value": task}]})),
                )
                .await?
            }
        };
        Ok(())
    }

    async fn create_version(&self, n: &str) -> Result<()> {
        let name = self.model(n);
        match self.api {
            Api::Cairn => {
                self.send(
                    self.req(reqwest::Method::POST, &format!("/api/v1/models/{name}/versions"))
                        .json(&json!({"source": "s3://bench/weights", "run_id": "r1"})),
                )
                .await?
            }
            Api::Mlflow => {
                self.send(
                    self.req(reqwest::Method::POST, "/api/2.0/mlflow/model-versions/create")
                        .json(&json!({"name": name, "source": "s3://bench/weights", "run_id": "r1"})),
                )
                .await?
            }
        };
        Ok(())
    }

    async fn set_alias(&self, n: &str, alias: &str, version: u64) -> Result<()> {
        let name = self.model(n);
        match self.api {
            Api::Cairn => {
                self.send(
                    self.req(reqwest::Method::PUT, &format!("/api/v1/models/{name}/aliases/{alias}"))
                        .json(&json!({"version": version})),
                )
                .await?
            }
            Api::Mlflow => {
                self.send(
                    self.req(reqwest::Method::POST, "/api/2.0/mlflow/registered-models/alias")
                        .json(&json!({"name": name, "alias": alias, "version": version.to_string()})),
                )
                .await?
            }
        };
        Ok(())
    }

    async fn get_version(&self, n: &str, version: u64) -> Result<()> {
        let name = self.model(n);
        match self.api {
            Api::Cairn => {
                self.send(self.req(reqwest::Method::GET, &format!("/api/v1/models/{name}/versions/{version}"))).await?
            }
            Api::Mlflow => {
                self.send(
                    self.req(reqwest::Method::GET, "/api/2.0/mlflow/model-versions/get")
                        .query(&[("name", name.as_str()), ("version", &version.to_string())]),
                )
                .await?
            }
        };
        Ok(())
    }

    async fn resolve_alias(&self, n: &str, alias: &str) -> Result<()> {
        let name = self.model(n);
        match self.api {
            Api::Cairn => {
                self.send(self.req(reqwest::Method::GET, &format!("/api/v1/models/{name}/versions/@{alias}"))).await?
            }
            Api::Mlflow => {
                self.send(
                    self.req(reqwest::Method::GET, "/api/2.0/mlflow/registered-models/alias")
                        .query(&[("name", name.as_str()), ("alias", alias)]),
                )
                .await?
            }
        };
        Ok(())
    }

    async fn search(&self, task: &str) -> Result<usize> {
        let v = match self.api {
            Api::Cairn => {
                let filter = format!("tags.task = '{task}' AND name LIKE 'm-1%'");
                self.send(
                    self.req(reqwest::Method::GET, "/api/v1/models")
                        .query(&[("filter", filter.as_str()), ("limit", "20")]),
                )
                .await?["models"]
                    .as_array()
                    .map_or(0, Vec::len)
            }
            Api::Mlflow => {
                let filter = format!("tags.task = '{task}' AND name LIKE 'bench.m-1%'");
                self.send(
                    self.req(reqwest::Method::GET, "/api/2.0/mlflow/registered-models/search")
                        .query(&[("filter", filter.as_str()), ("max_results", "20")]),
                )
                .await?["registered_models"]
                    .as_array()
                    .map_or(0, Vec::len)
            }
        };
        Ok(v)
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    CreateModel,
    CreateVersion,
    GetVersion,
    ResolveAlias,
    Search,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::CreateModel => "create-model",
            Self::CreateVersion => "create-version",
            Self::GetVersion => "get-version",
            Self::ResolveAlias => "resolve-alias",
            Self::Search => "search",
        }
    }
}

#[derive(Debug, Clone)]
struct PhaseResult {
    op: &'static str,
    ops: u64,
    errors: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl PhaseResult {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Runs `total` operations over `clients` tasks (or until the time cap), timing each.
async fn phase(t: &Target, op: Op, total: u64, clients: usize, cap: Duration, versions: u64) -> PhaseResult {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (t, next, errors) = (t.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || start.elapsed() > cap {
                    break;
                }
                let t0 = Instant::now();
                let r = match op {
                    Op::CreateModel => {
                        t.create_model(&format!("m-{i}"), if i % 2 == 0 { "nlp" } else { "vision" }).await
                    }
                    Op::CreateVersion => t.create_version("hot").await,
                    Op::GetVersion => t.get_version("hot", 1 + (i * 7919) % versions.max(1)).await,
                    Op::ResolveAlias => t.resolve_alias("hot", "champion").await,
                    Op::Search => t.search(if i % 2 == 0 { "nlp" } else { "vision" }).await.map(|_| ()),
                };
                lat.push(t0.elapsed());
                if let Err(e) = r
                    && errors.fetch_add(1, Ordering::Relaxed) < 3
                {
                    eprintln!("{}: {e:#}", op.name());
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await.unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        let idx = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[idx].as_secs_f64() * 1000.0
    };
    PhaseResult {
        op: op.name(),
        ops: lat.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

/// Kills the child it owns when dropped; a group leader takes its whole process group along
/// (MLflow's server forks uvicorn workers and job runners that would outlive it otherwise).
struct Proc(Child, bool);

impl Drop for Proc {
    fn drop(&mut self) {
        if self.1 {
            let _ = Command::new("kill").args(["-KILL", &format!("-{}", self.0.id())]).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident and peak memory of a process, in MiB, from /proc.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Polls `url` until it answers 2xx; returns the time since `since`.
async fn wait_ready(http: &reqwest::Client, url: &str, since: Instant, cap: Duration) -> Result<Duration> {
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > cap {
            bail!("{url} not ready after {cap:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

const TOKEN: &str = "cairn_bench_0123456789abcdefghijklmnopqrstuvwxyz";

fn start_cairn(bin: &PathBuf, data: &std::path::Path, port: u16, rate_limit: u32) -> Result<Proc> {
    let child = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .env("CAIRN_BOOTSTRAP_ADMIN_TOKEN", TOKEN)
        .env("CAIRN_BOOTSTRAP_ADMIN_PASSWORD", "bench admin password")
        .env("CAIRN_LOG", "warn")
        .env("CAIRN_RATE_LIMIT_REQUESTS", rate_limit.to_string())
        .env_remove("CAIRN_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(Proc(child, false))
}

struct RunResult {
    system: &'static str,
    ready_first_ms: f64,
    ready_restart_ms: f64,
    phases: Vec<PhaseResult>,
    rss_mib: f64,
    peak_mib: f64,
    versions: u64,
}

struct Counts {
    models: u64,
    versions: u64,
    reads: u64,
}

async fn drive(t: &Target, args: &Args, c: &Counts, pid: u32) -> Result<(Vec<PhaseResult>, f64, f64, u64)> {
    let cap = Duration::from_secs(args.max_secs);
    t.create_model("hot", "nlp").await.context("setup: create the hot model")?;
    let mut phases = Vec::new();
    phases.push(phase(t, Op::CreateModel, c.models, args.clients, cap, 0).await);
    let cv = phase(t, Op::CreateVersion, c.versions, args.clients, cap, 0).await;
    let made = cv.ops - cv.errors;
    phases.push(cv);
    let (rss, peak) = rss_mib(pid);
    t.set_alias("hot", "champion", made.max(1)).await.context("setup: set the alias")?;
    phases.push(phase(t, Op::GetVersion, c.reads, args.clients, cap, made).await);
    phases.push(phase(t, Op::ResolveAlias, c.reads, args.clients, cap, made).await);
    phases.push(phase(t, Op::Search, c.reads / 5, args.clients, cap, made).await);
    Ok((phases, rss, peak, made))
}

async fn run_cairn(args: &Args, http: &reqwest::Client) -> Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    let first = start_cairn(&args.cairn, dir.path(), port, args.rate_limit_requests)?;
    let ready_first = wait_ready(http, &format!("{base}/readyz"), t0, Duration::from_secs(30)).await?;
    drop(first);
    let t0 = Instant::now();
    let server = start_cairn(&args.cairn, dir.path(), port, args.rate_limit_requests)?;
    let ready_restart = wait_ready(http, &format!("{base}/readyz"), t0, Duration::from_secs(30)).await?;
    let t = Target { api: Api::Cairn, base, token: TOKEN.into(), http: http.clone() };
    let counts = Counts { models: args.models, versions: args.versions, reads: args.reads };
    let (phases, rss, peak, made) = drive(&t, args, &counts, server.0.id()).await?;
    Ok(RunResult {
        system: "cairn",
        ready_first_ms: ready_first.as_secs_f64() * 1000.0,
        ready_restart_ms: ready_restart.as_secs_f64() * 1000.0,
        phases,
        rss_mib: rss,
        peak_mib: peak,
        versions: made,
    })
}

async fn run_mlflow(args: &Args, python: &PathBuf, http: &reqwest::Client) -> Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let start = |dir: &std::path::Path| -> Result<Proc> {
        let db = format!("sqlite:///{}", dir.join("mlflow.db").display());
        let child = Command::new(python)
            .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--backend-store-uri", &db, "--workers", "2"])
            .arg("--default-artifact-root")
            .arg(dir.join("artifacts"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start mlflow server")?;
        Ok(Proc(child, true))
    };
    let t0 = Instant::now();
    let first = start(dir.path())?;
    let ready_first = wait_ready(http, &format!("{base}/health"), t0, Duration::from_secs(120)).await?;
    drop(first);
    // Wait until the port is free again, so the restart is measured against the new server.
    let t0 = Instant::now();
    while http.get(format!("{base}/health")).send().await.is_ok() && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let server = start(dir.path())?;
    let ready_restart = wait_ready(http, &format!("{base}/health"), t0, Duration::from_secs(120)).await?;
    let t = Target { api: Api::Mlflow, base, token: String::new(), http: http.clone() };
    let s = |n: u64| ((n as f64 * args.mlflow_scale) as u64).max(50);
    let counts = Counts { models: s(args.models), versions: s(args.versions), reads: s(args.reads) };
    let (phases, _, _, made) = drive(&t, args, &counts, server.0.id()).await?;
    // MLflow's server is a process tree (launcher, gunicorn/uvicorn workers): sum it.
    let (rss, peak) = tree_rss_mib(server.0.id());
    Ok(RunResult {
        system: "mlflow",
        ready_first_ms: ready_first.as_secs_f64() * 1000.0,
        ready_restart_ms: ready_restart.as_secs_f64() * 1000.0,
        phases,
        rss_mib: rss,
        peak_mib: peak,
        versions: made,
    })
}

/// Memory of every process in a process group (the server and all it forked).
fn tree_rss_mib(pgid: u32) -> (f64, f64) {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may contain spaces): state ppid pgrp …
        let group = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
        if group == Some(pgid) {
            pids.push(pid);
        }
    }
    pids.iter().map(|p| rss_mib(*p)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn print(r: &RunResult) {
    println!(
        "\n{}: start to ready {:.0} ms (first start), {:.0} ms (restart); RSS {:.1} MiB (peak {:.1}) after {} versions",
        r.system, r.ready_first_ms, r.ready_restart_ms, r.rss_mib, r.peak_mib, r.versions
    );
    println!("{:<15} {:>8} {:>7} {:>10} {:>9} {:>9}", "operation", "ops", "errors", "ops/s", "p50 ms", "p99 ms");
    for p in &r.phases {
        println!("{:<15} {:>8} {:>7} {:>10.0} {:>9.2} {:>9.2}", p.op, p.ops, p.errors, p.rate(), p.p50_ms, p.p99_ms);
    }
}

fn to_json(r: &RunResult) -> Value {
    json!({
        "system": r.system,
        "ready_first_ms": r.ready_first_ms,
        "ready_restart_ms": r.ready_restart_ms,
        "rss_mib": r.rss_mib,
        "peak_rss_mib": r.peak_mib,
        "versions": r.versions,
        "phases": r.phases.iter().map(|p| json!({
            "op": p.op, "ops": p.ops, "errors": p.errors, "secs": p.secs,
            "ops_per_sec": p.rate(), "p50_ms": p.p50_ms, "p99_ms": p.p99_ms,
        })).collect::<Vec<_>>(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build()?;
    println!(
        "{} clients; {} models, {} versions, {} reads per read phase; cairn rate limit: {}",
        args.clients,
        args.models,
        args.versions,
        args.reads,
        match args.rate_limit_requests {
            0 => "off".to_owned(),
            n => format!("{n} requests per window"),
        }
    );
    let cairn = run_cairn(&args, &http).await?;
    print(&cairn);
    let mut out = vec![to_json(&cairn)];
    if let Some(py) = &args.mlflow {
        let ml = run_mlflow(&args, py, &http).await?;
        print(&ml);
        println!("\nratio cairn/mlflow (throughput; higher is better for cairn)");
        for (c, m) in cairn.phases.iter().zip(&ml.phases) {
            println!("{:<15} {:>8.1}x   p50 {:.2} ms vs {:.2} ms", c.op, c.rate() / m.rate(), c.p50_ms, m.p50_ms);
        }
        println!(
            "memory: {:.1} MiB vs {:.1} MiB; start to ready: {:.0} ms vs {:.0} ms",
            cairn.rss_mib, ml.rss_mib, cairn.ready_restart_ms, ml.ready_restart_ms
        );
        out.push(to_json(&ml));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
