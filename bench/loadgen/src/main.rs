//! `cairn-bench`: starts a registry server, measures start-to-ready, drives it with N
//! concurrent clients through seven metadata operations, and reports ops/s, p50/p99 and the
//! server's memory. `--mlflow` runs the same operations against an MLflow server in the same
//! run and prints the ratios.
//!
//! `--cairn-api native` (the default) drives Cairn through its own REST API;
//! `--cairn-api mlflow` drives it through its MLflow-compatible API with exactly the requests
//! MLflow gets (plus `Authorization: Bearer`), adds the same artifact transfer through the
//! `mlflow-artifacts` API on both, samples each server's memory (its whole process tree) for
//! the whole run, and checks the targets (≥ 30× MLflow's ops/s, a lower p99, ≤ 1/10 of its RSS).
//!
//! Loopback only; every phase is bounded by an operation count and a time cap.

mod sha256;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

/// Throughput target: Cairn's ops/s at least this many times MLflow's.
const TARGET_THROUGHPUT: f64 = 30.0;
/// Memory target: MLflow's peak RSS at least this many times Cairn's.
const TARGET_MEMORY: f64 = 10.0;

#[derive(Parser, Debug)]
#[command(about = "Load generator for Cairn's registry API, optionally side by side with MLflow")]
struct Args {
    /// The `cairn` binary to benchmark (build it with --release)
    #[arg(long, default_value = "target/release/cairn")]
    cairn: PathBuf,
    /// Which of Cairn's APIs to drive: its own (`native`) or its MLflow-compatible one
    /// (`mlflow`: the same requests as MLflow gets, plus the artifact transfer)
    #[arg(long, value_enum, default_value_t = CairnApi::Native)]
    cairn_api: CairnApi,
    /// Concurrent clients
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Operations in the create-model phase
    #[arg(long, default_value_t = 4_000)]
    models: u64,
    /// Versions to create in the create-version phase
    #[arg(long, default_value_t = 100_000)]
    versions: u64,
    /// How many models (`m-0` … ) the versions are spread over, round robin; 1 puts them all
    /// on one model, the worst case for gapless numbering
    #[arg(long, default_value_t = 1)]
    version_models: u64,
    /// Operations per read phase (get-version, resolve-alias); set-alias and the two searches
    /// run a fifth of this (`--cairn-api native`) or half of it (`--cairn-api mlflow`)
    #[arg(long, default_value_t = 50_000)]
    reads: u64,
    /// Time cap per phase, seconds
    #[arg(long, default_value_t = 60)]
    max_secs: u64,
    /// Files in the artifact transfer (`--cairn-api mlflow` only; 0 skips it)
    #[arg(long, default_value_t = 16)]
    files: usize,
    /// Size of each transferred file, MiB
    #[arg(long, default_value_t = 16)]
    file_mib: usize,
    /// Also run the same phases against `mlflow server` from this Python (a venv with mlflow)
    #[arg(long)]
    mlflow: Option<PathBuf>,
    /// `--workers` of `mlflow server`
    #[arg(long, default_value_t = 2)]
    mlflow_workers: u32,
    /// Scale factor for the MLflow run's operation counts (it is much slower)
    #[arg(long, default_value_t = 0.05)]
    mlflow_scale: f64,
    /// Write the results as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only the MLflow side (to check it alone)
    #[arg(long, requires = "mlflow")]
    mlflow_only: bool,
    /// `CAIRN_RATE_LIMIT_REQUESTS` of the Cairn server: 0 (the default here) turns rate
    /// limiting off, which the load of one client key would otherwise trip; a huge value
    /// measures the limiter's cost without refusals
    #[arg(long, default_value_t = 0)]
    rate_limit_requests: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CairnApi {
    Native,
    Mlflow,
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
    /// Sent as `Authorization: Bearer` when set (Cairn, whichever API).
    token: Option<String>,
    http: reqwest::Client,
    /// The `source` (and `run_id`) of every created version.
    source: String,
    run_id: String,
}

impl Target {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<Value> {
        let resp = r.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            bail!("{status}: {}", text.chars().take(300).collect::<String>());
        }
        Ok(if body.is_empty() { Value::Null } else { serde_json::from_slice(&body)? })
    }

    /// Model names: Cairn's native API `bench/m-3`, the MLflow API `bench.m-3`.
    fn model(&self, n: &str) -> String {
        match self.api {
            Api::Cairn => format!("bench/{n}"),
            Api::Mlflow => format!("bench.{n}"),
        }
    }

    async fn create_model(&self, n: &str, task: &str) -> Result<()> {
        let name = self.model(n);
        let r = match self.api {
            Api::Cairn => {
                self.req(reqwest::Method::POST, "/api/v1/models").json(&json!({"name": name, "tags": {"task": task}}))
            }
            Api::Mlflow => self
                .req(reqwest::Method::POST, "/api/2.0/mlflow/registered-models/create")
                .json(&json!({"name": name, "tags": [{"key": "task", "value": task}]})),
        };
        self.send(r).await.map(drop)
    }

    async fn create_version(&self, n: &str) -> Result<()> {
        let name = self.model(n);
        let r = match self.api {
            Api::Cairn => self
                .req(reqwest::Method::POST, &format!("/api/v1/models/{name}/versions"))
                .json(&json!({"source": self.source, "run_id": self.run_id})),
            Api::Mlflow => {
                let mut body = json!({"name": name, "source": self.source});
                if !self.run_id.is_empty() {
                    body["run_id"] = json!(self.run_id);
                }
                self.req(reqwest::Method::POST, "/api/2.0/mlflow/model-versions/create").json(&body)
            }
        };
        self.send(r).await.map(drop)
    }

    async fn set_alias(&self, n: &str, alias: &str, version: u64) -> Result<()> {
        let name = self.model(n);
        let r = match self.api {
            Api::Cairn => self
                .req(reqwest::Method::PUT, &format!("/api/v1/models/{name}/aliases/{alias}"))
                .json(&json!({"version": version})),
            Api::Mlflow => self
                .req(reqwest::Method::POST, "/api/2.0/mlflow/registered-models/alias")
                .json(&json!({"name": name, "alias": alias, "version": version.to_string()})),
        };
        self.send(r).await.map(drop)
    }

    async fn get_version(&self, n: &str, version: u64) -> Result<()> {
        let name = self.model(n);
        let r = match self.api {
            Api::Cairn => self.req(reqwest::Method::GET, &format!("/api/v1/models/{name}/versions/{version}")),
            Api::Mlflow => self
                .req(reqwest::Method::GET, "/api/2.0/mlflow/model-versions/get")
                .query(&[("name", name.as_str()), ("version", &version.to_string())]),
        };
        self.send(r).await.map(drop)
    }

    async fn resolve_alias(&self, n: &str, alias: &str) -> Result<()> {
        let name = self.model(n);
        let r = match self.api {
            Api::Cairn => self.req(reqwest::Method::GET, &format!("/api/v1/models/{name}/versions/@{alias}")),
            Api::Mlflow => self
                .req(reqwest::Method::GET, "/api/2.0/mlflow/registered-models/alias")
                .query(&[("name", name.as_str()), ("alias", alias)]),
        };
        self.send(r).await.map(drop)
    }

    /// The first page (20) of one model's versions.
    async fn search_versions(&self, n: &str) -> Result<usize> {
        let name = self.model(n);
        Ok(match self.api {
            Api::Cairn => self
                .send(
                    self.req(reqwest::Method::GET, &format!("/api/v1/models/{name}/versions"))
                        .query(&[("limit", "20")]),
                )
                .await?["versions"]
                .as_array()
                .map_or(0, Vec::len),
            Api::Mlflow => {
                let filter = format!("name='{name}'");
                self.send(
                    self.req(reqwest::Method::GET, "/api/2.0/mlflow/model-versions/search")
                        .query(&[("filter", filter.as_str()), ("max_results", "20")]),
                )
                .await?["model_versions"]
                    .as_array()
                    .map_or(0, Vec::len)
            }
        })
    }

    async fn search_models(&self, task: &str) -> Result<usize> {
        Ok(match self.api {
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
        })
    }

    /// `PUT /api/2.0/mlflow-artifacts/artifacts/{path}`.
    async fn put_artifact(&self, path: &str, data: &'static [u8]) -> Result<()> {
        let r = self
            .req(reqwest::Method::PUT, &format!("/api/2.0/mlflow-artifacts/artifacts/{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data);
        self.send(r).await.map(drop)
    }

    /// `GET /api/2.0/mlflow-artifacts/artifacts/{path}`, streamed through SHA-256: (bytes, digest).
    async fn get_artifact(&self, path: &str) -> Result<(u64, [u8; 32])> {
        let mut resp =
            self.req(reqwest::Method::GET, &format!("/api/2.0/mlflow-artifacts/artifacts/{path}")).send().await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            bail!("{status}: {}", body.chars().take(300).collect::<String>());
        }
        let mut h = sha256::Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        Ok((n, h.finish()))
    }

    /// MLflow 3 accepts an `mlflow-artifacts:` version source only inside the artifact root of
    /// the run named by `run_id`: create a run in the Default experiment, upload one small file
    /// under its artifacts, and make that directory the source of every version.
    async fn setup_mlflow_source(&mut self) -> Result<()> {
        let created = self
            .send(self.req(reqwest::Method::POST, "/api/2.0/mlflow/runs/create").json(&json!({
                "experiment_id": "0", "run_name": "bench-source", "start_time": 0,
            })))
            .await;
        let run = created.and_then(|v| {
            let info = &v["run"]["info"];
            let run_id = info["run_id"].as_str().context("runs/create: no run_id")?.to_owned();
            let uri = info["artifact_uri"].as_str().context("runs/create: no artifact_uri")?;
            let path =
                artifact_path(uri).with_context(|| format!("run artifact_uri {uri} is not mlflow-artifacts:"))?;
            Ok((format!("{path}/model"), format!("{}/model", uri.trim_end_matches('/')), run_id))
        });
        let (root, source, run_id) = run.unwrap_or_else(|e| {
            eprintln!("{}: {e:#}; versions use mlflow-artifacts:/0/bench/src, no run_id", self.base);
            ("0/bench/src".to_owned(), "mlflow-artifacts:/0/bench/src".to_owned(), String::new())
        });
        let file: &'static [u8] = Box::leak(pseudo_random(4096, 0xC0FFEE).into_boxed_slice());
        self.put_artifact(&format!("{root}/model.bin"), file).await.context("setup: upload the version source")?;
        self.source = source;
        self.run_id = run_id;
        Ok(())
    }
}

/// `mlflow-artifacts:/0/abc/artifacts` or `mlflow-artifacts://host:port/0/abc/artifacts` →
/// `0/abc/artifacts`.
fn artifact_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let rest = match rest.strip_prefix("//") {
        Some(authority_and_path) => &authority_and_path[authority_and_path.find('/')?..],
        None => rest,
    };
    Some(rest.trim_matches('/').to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateModel,
    CreateVersion,
    GetVersion,
    SetAlias,
    ResolveAlias,
    SearchVersions,
    SearchModels,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::CreateModel => "create-model",
            Self::CreateVersion => "create-version",
            Self::GetVersion => "get-version",
            Self::SetAlias => "set-alias",
            Self::ResolveAlias => "resolve-alias",
            Self::SearchVersions => "search-versions",
            Self::SearchModels => "search-models",
        }
    }
}

/// Where the versions are: `k` models `m-0` … `m-{k-1}`, at least `per` versions each.
#[derive(Clone, Copy)]
struct Layout {
    k: u64,
    per: u64,
}

async fn run_op(t: &Target, op: Op, i: u64, lay: Layout) -> Result<()> {
    let task = if i.is_multiple_of(2) { "nlp" } else { "vision" };
    let m = format!("m-{}", i % lay.k);
    // Spread reads over a model's versions without two consecutive requests on the same one.
    let v = 1 + (i / lay.k * 7919) % lay.per.max(1);
    match op {
        Op::CreateModel => t.create_model(&format!("m-{i}"), task).await,
        Op::CreateVersion => t.create_version(&m).await,
        Op::GetVersion => t.get_version(&m, v).await,
        Op::SetAlias => t.set_alias(&m, "champion", v).await,
        Op::ResolveAlias => t.resolve_alias(&m, "champion").await,
        Op::SearchVersions => t.search_versions(&m).await.map(drop),
        Op::SearchModels => t.search_models(task).await.map(drop),
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
    /// Successful operations per second.
    fn rate(&self) -> f64 {
        self.ops.saturating_sub(self.errors) as f64 / self.secs
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx].as_secs_f64() * 1000.0
}

/// Runs `total` operations over `clients` tasks (or until the time cap), timing each.
async fn phase(t: &Target, op: Op, total: u64, clients: usize, cap: Duration, lay: Layout) -> PhaseResult {
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
                let r = run_op(&t, op, i, lay).await;
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
    eprintln!("  {} {}: {} ops in {secs:.1} s", t.base, op.name(), lat.len());
    PhaseResult {
        op: op.name(),
        ops: lat.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
    }
}

/// Deterministic incompressible bytes (xorshift64*).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[derive(Debug, Clone, Default)]
struct TransferResult {
    files: usize,
    mib: f64,
    up_secs: f64,
    down_secs: f64,
    uploaded: usize,
    verified: usize,
    errors: u64,
}

impl TransferResult {
    fn up_mib_s(&self) -> f64 {
        if self.up_secs > 0.0 { self.uploaded as f64 * self.mib / self.files as f64 / self.up_secs } else { 0.0 }
    }
    fn down_mib_s(&self) -> f64 {
        if self.down_secs > 0.0 { self.verified as f64 * self.mib / self.files as f64 / self.down_secs } else { 0.0 }
    }
}

/// The files of the transfer, made once and shared by both systems: (content, SHA-256).
type Files = Arc<Vec<(&'static [u8], [u8; 32])>>;

fn make_files(n: usize, mib: usize) -> Files {
    Arc::new(
        (0..n)
            .map(|i| {
                let data: &'static [u8] = Box::leak(pseudo_random(mib << 20, 0x5EED + i as u64).into_boxed_slice());
                (data, sha256::digest(data))
            })
            .collect(),
    )
}

/// Uploads every file with `clients` concurrent PUTs, then downloads them all the same way and
/// compares their SHA-256 with the original's. Each direction stops starting files after `cap`.
async fn transfer(t: &Target, files: &Files, clients: usize, cap: Duration) -> TransferResult {
    let n = files.len();
    let mut res = TransferResult {
        files: n,
        mib: files.iter().map(|f| f.0.len()).sum::<usize>() as f64 / 1048576.0,
        ..Default::default()
    };
    for download in [false, true] {
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients.min(n) {
            let (t, next, files) = (t.clone(), next.clone(), files.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut err) = (0usize, 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= files.len() || start.elapsed() > cap {
                        break;
                    }
                    let path = format!("0/bench/xfer/f-{i}.bin");
                    let (data, digest) = files[i];
                    let r = if download {
                        t.get_artifact(&path).await.and_then(|(len, got)| {
                            if len == data.len() as u64 && got == digest {
                                Ok(())
                            } else {
                                bail!("{path}: {len} bytes, SHA-256 {}", sha256::hex(&got))
                            }
                        })
                    } else {
                        t.put_artifact(&path, data).await
                    };
                    match r {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            err += 1;
                            eprintln!("{} {path}: {e:#}", if download { "download" } else { "upload" });
                        }
                    }
                }
                (ok, err)
            }));
        }
        let (mut ok, mut err) = (0, 0);
        for task in tasks {
            let (o, e) = task.await.unwrap_or((0, 1));
            ok += o;
            err += e;
        }
        let secs = start.elapsed().as_secs_f64();
        res.errors += err;
        if download {
            (res.verified, res.down_secs) = (ok, secs);
        } else {
            (res.uploaded, res.up_secs) = (ok, secs);
        }
    }
    res
}

/// Kills the child it owns when dropped; a group leader takes its whole process group along
/// (MLflow's server forks uvicorn workers and job runners that would outlive it otherwise).
struct Proc(Child, bool);

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = self.0.id();
        if self.1 && pgid > 1 {
            // `--` is required: procps-ng's kill reads `-KILL -12345` as `kill(-1, SIGKILL)`
            // (only the first digit of a negative pid is taken), which kills every process.
            let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{pgid}")]).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The 1-minute load average.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `kB` field of a /proc file, in MiB.
fn proc_field_mib(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resident and peak memory of a process, in MiB, from /proc.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (proc_field_mib(&status, "VmRSS:"), proc_field_mib(&status, "VmHWM:"))
}

/// `root` and every process below it: its descendants by parent, and the members of its
/// process group if it leads one (MLflow's server, its uvicorn workers and job runners).
fn tree_pids(root: u32) -> Vec<u32> {
    let mut parent = HashMap::new();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may contain spaces): state ppid pgrp …
        let mut rest = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().skip(1)).into_iter().flatten();
        let ppid = rest.next().and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        let pgrp = rest.next().and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        parent.insert(pid, ppid);
        if pid == root || pgrp == root {
            out.push(pid);
        }
    }
    for &pid in parent.keys() {
        let mut p = pid;
        for _ in 0..64 {
            match parent.get(&p) {
                Some(&pp) if pp == root => {
                    out.push(pid);
                    break;
                }
                Some(&pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The most memory a process tree held at once, sampled.
#[derive(Debug, Clone, Copy, Default)]
struct MemPeak {
    /// Largest sum of RSS over the tree at one sample.
    rss_mib: f64,
    /// Largest sum of PSS (shared pages split between the processes sharing them).
    pss_mib: f64,
    /// Most processes in the tree at one sample.
    procs: usize,
    samples: u64,
}

/// Samples the summed RSS of a process tree every 100 ms (PSS every second) until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<MemPeak>,
}

impl Sampler {
    fn start(root: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = MemPeak::default();
            while !flag.load(Ordering::Relaxed) {
                let pids = tree_pids(root);
                let rss: f64 = pids.iter().map(|p| rss_mib(*p).0).sum();
                if peak.samples.is_multiple_of(10) {
                    let pss: f64 = pids
                        .iter()
                        .map(|p| {
                            let s = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
                            proc_field_mib(&s, "Pss:")
                        })
                        .sum();
                    peak.pss_mib = peak.pss_mib.max(pss);
                }
                peak.rss_mib = peak.rss_mib.max(rss);
                peak.procs = peak.procs.max(pids.len());
                peak.samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        Self { stop, handle }
    }

    fn finish(self) -> MemPeak {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
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

fn start_cairn(bin: &Path, data: &Path, port: u16, rate_limit: u32) -> Result<Proc> {
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
    /// The machine's load average (1 min) when the server started and when the run ended.
    load: (f64, f64),
    api: &'static str,
    ready_first_ms: f64,
    ready_restart_ms: Option<f64>,
    phases: Vec<PhaseResult>,
    /// RSS right after the create-version phase, and the server's own VmHWM then.
    rss_mib: f64,
    hwm_mib: f64,
    /// Sampled over the whole run, from start to the end of the transfer.
    peak: MemPeak,
    versions: u64,
    transfer: Option<TransferResult>,
}

struct Counts {
    models: u64,
    versions: u64,
    reads: u64,
}

struct Driven {
    phases: Vec<PhaseResult>,
    rss: f64,
    hwm: f64,
    made: u64,
    transfer: Option<TransferResult>,
}

async fn drive(t: &mut Target, args: &Args, c: &Counts, pid: u32, files: Option<&Files>) -> Result<Driven> {
    let cap = Duration::from_secs(args.max_secs);
    let k = args.version_models.clamp(1, c.models.max(1));
    let mlflow_api = t.api == Api::Mlflow;
    if mlflow_api {
        t.setup_mlflow_source().await?;
    } else {
        (t.source, t.run_id) = ("s3://bench/weights".into(), "r1".into());
    }
    let small = if mlflow_api { c.reads / 2 } else { c.reads / 5 };
    let mut phases = Vec::new();
    let cm = phase(t, Op::CreateModel, c.models.max(k), args.clients, cap, Layout { k, per: 1 }).await;
    phases.push(cm);
    let cv = phase(t, Op::CreateVersion, c.versions, args.clients, cap, Layout { k, per: 1 }).await;
    let made = cv.ops - cv.errors;
    phases.push(cv);
    let (rss, hwm) = tree_rss_mib(pid);
    let lay = Layout { k, per: (made / k).max(1) };
    // Every model that has versions gets its alias before anything resolves it.
    for m in 0..k {
        t.set_alias(&format!("m-{m}"), "champion", 1).await.context("setup: set the alias")?;
    }
    phases.push(phase(t, Op::GetVersion, c.reads, args.clients, cap, lay).await);
    phases.push(phase(t, Op::SetAlias, small, args.clients, cap, lay).await);
    phases.push(phase(t, Op::ResolveAlias, c.reads, args.clients, cap, lay).await);
    phases.push(phase(t, Op::SearchVersions, small, args.clients, cap, lay).await);
    phases.push(phase(t, Op::SearchModels, small, args.clients, cap, lay).await);
    let transfer = match files {
        Some(f) if mlflow_api => Some(transfer(t, f, args.clients, cap * 2).await),
        _ => None,
    };
    Ok(Driven { phases, rss, hwm, made, transfer })
}

async fn run_cairn(args: &Args, http: &reqwest::Client, files: Option<&Files>) -> Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let load0 = loadavg();
    let t0 = Instant::now();
    let mut server = start_cairn(&args.cairn, dir.path(), port, args.rate_limit_requests)?;
    let mut sampler = Sampler::start(server.0.id());
    let ready_first = wait_ready(http, &format!("{base}/readyz"), t0, Duration::from_secs(30)).await?;
    let mut ready_restart = None;
    if args.cairn_api == CairnApi::Native {
        sampler.finish();
        drop(server);
        let t0 = Instant::now();
        server = start_cairn(&args.cairn, dir.path(), port, args.rate_limit_requests)?;
        sampler = Sampler::start(server.0.id());
        ready_restart = Some(wait_ready(http, &format!("{base}/readyz"), t0, Duration::from_secs(30)).await?);
    }
    let api = if args.cairn_api == CairnApi::Mlflow { Api::Mlflow } else { Api::Cairn };
    let mut t = Target {
        api,
        base,
        token: Some(TOKEN.into()),
        http: http.clone(),
        source: String::new(),
        run_id: String::new(),
    };
    let counts = Counts { models: args.models, versions: args.versions, reads: args.reads };
    let d = drive(&mut t, args, &counts, server.0.id(), files).await?;
    let mut peak = sampler.finish();
    // One process: its own high-water mark is exact, the samples may miss a short peak.
    peak.rss_mib = peak.rss_mib.max(rss_mib(server.0.id()).1);
    Ok(RunResult {
        system: "cairn",
        load: (load0, loadavg()),
        api: if api == Api::Mlflow { "mlflow" } else { "native" },
        ready_first_ms: ready_first.as_secs_f64() * 1000.0,
        ready_restart_ms: ready_restart.map(|d| d.as_secs_f64() * 1000.0),
        phases: d.phases,
        rss_mib: d.rss,
        hwm_mib: d.hwm,
        peak,
        versions: d.made,
        transfer: d.transfer,
    })
}

async fn run_mlflow(args: &Args, python: &Path, http: &reqwest::Client, files: Option<&Files>) -> Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let start = |dir: &Path| -> Result<Proc> {
        let db = format!("sqlite:///{}", dir.join("mlflow.db").display());
        let child = Command::new(python)
            .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--backend-store-uri", &db, "--workers", &args.mlflow_workers.to_string()])
            .arg("--serve-artifacts")
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start mlflow server")?;
        Ok(Proc(child, true))
    };
    let load0 = loadavg();
    let t0 = Instant::now();
    let mut server = start(dir.path())?;
    let mut sampler = Sampler::start(server.0.id());
    let ready_first = wait_ready(http, &format!("{base}/health"), t0, Duration::from_secs(120)).await?;
    eprintln!("  mlflow server ready at {base} after {:.1} s", ready_first.as_secs_f64());
    let mut ready_restart = None;
    if args.cairn_api == CairnApi::Native {
        sampler.finish();
        drop(server);
        // Wait until the port is free again, so the restart is measured against the new server.
        let t0 = Instant::now();
        while http.get(format!("{base}/health")).send().await.is_ok() && t0.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t0 = Instant::now();
        server = start(dir.path())?;
        sampler = Sampler::start(server.0.id());
        ready_restart = Some(wait_ready(http, &format!("{base}/health"), t0, Duration::from_secs(120)).await?);
    }
    let mut t = Target {
        api: Api::Mlflow,
        base,
        token: None,
        http: http.clone(),
        source: String::new(),
        run_id: String::new(),
    };
    let s = |n: u64| ((n as f64 * args.mlflow_scale) as u64).max(50);
    let counts = Counts { models: s(args.models), versions: s(args.versions), reads: s(args.reads) };
    let d = drive(&mut t, args, &counts, server.0.id(), files).await?;
    let peak = sampler.finish();
    Ok(RunResult {
        system: "mlflow",
        load: (load0, loadavg()),
        api: "mlflow",
        ready_first_ms: ready_first.as_secs_f64() * 1000.0,
        ready_restart_ms: ready_restart.map(|d| d.as_secs_f64() * 1000.0),
        phases: d.phases,
        rss_mib: d.rss,
        hwm_mib: d.hwm,
        peak,
        versions: d.made,
        transfer: d.transfer,
    })
}

/// Memory of every process in a server's tree, summed.
fn tree_rss_mib(root: u32) -> (f64, f64) {
    tree_pids(root).iter().map(|p| rss_mib(*p)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn print(r: &RunResult) {
    let restart = r.ready_restart_ms.map_or(String::new(), |ms| format!(", {ms:.0} ms (restart)"));
    println!(
        "\n{} ({} API): start to ready {:.0} ms (first start){restart}; RSS {:.1} MiB after {} versions; \
         peak RSS over the run {:.1} MiB (PSS {:.1} MiB, {} processes); load average {:.1} at start, {:.1} at end",
        r.system,
        r.api,
        r.ready_first_ms,
        r.rss_mib,
        r.versions,
        r.peak.rss_mib,
        r.peak.pss_mib,
        r.peak.procs,
        r.load.0,
        r.load.1
    );
    println!("{:<16} {:>8} {:>7} {:>10} {:>9} {:>9}", "operation", "ops", "errors", "ops/s", "p50 ms", "p99 ms");
    for p in &r.phases {
        println!("{:<16} {:>8} {:>7} {:>10.0} {:>9.2} {:>9.2}", p.op, p.ops, p.errors, p.rate(), p.p50_ms, p.p99_ms);
    }
    if let Some(x) = &r.transfer {
        println!(
            "transfer: {} files, {:.0} MiB: upload {:.1} MiB/s ({} ok), download {:.1} MiB/s ({} verified by SHA-256), {} errors",
            x.files,
            x.mib,
            x.up_mib_s(),
            x.uploaded,
            x.down_mib_s(),
            x.verified,
            x.errors
        );
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

/// Prints the side-by-side table and the targets; returns them as JSON.
fn compare(c: &RunResult, m: &RunResult) -> Value {
    println!(
        "\n{:<16} {:>11} {:>8} {:>8} | {:>11} {:>8} {:>8} | {:>9} {:>8} | {:>5} {:>5}",
        "operation",
        "cairn ops/s",
        "p50 ms",
        "p99 ms",
        "mlflow op/s",
        "p50 ms",
        "p99 ms",
        "ops/s c/m",
        "p99 m/c",
        "≥30×",
        "p99<"
    );
    let mut ops = Vec::new();
    let mut all = true;
    for (a, b) in c.phases.iter().zip(&m.phases) {
        let thr = a.rate() / b.rate();
        let lat = b.p99_ms / a.p99_ms;
        let clean = a.errors == 0 && b.errors == 0;
        let (thr_ok, lat_ok) = (thr >= TARGET_THROUGHPUT && clean, a.p99_ms < b.p99_ms && clean);
        all &= thr_ok && lat_ok;
        println!(
            "{:<16} {:>11.0} {:>8.2} {:>8.2} | {:>11.1} {:>8.1} {:>8.1} | {:>8.1}× {:>7.1}× | {:>5} {:>5}{}",
            a.op,
            a.rate(),
            a.p50_ms,
            a.p99_ms,
            b.rate(),
            b.p50_ms,
            b.p99_ms,
            thr,
            lat,
            yes(thr_ok),
            yes(lat_ok),
            if clean { String::new() } else { format!("  (errors: cairn {}, mlflow {})", a.errors, b.errors) }
        );
        ops.push(json!({
            "op": a.op, "cairn_ops_per_sec": a.rate(), "mlflow_ops_per_sec": b.rate(),
            "cairn_p99_ms": a.p99_ms, "mlflow_p99_ms": b.p99_ms,
            "throughput_ratio": thr, "p99_ratio": lat, "cairn_errors": a.errors, "mlflow_errors": b.errors,
            "throughput_target_met": thr_ok, "p99_target_met": lat_ok,
        }));
    }
    let mem = m.peak.rss_mib / c.peak.rss_mib;
    let mem_ok = mem >= TARGET_MEMORY;
    println!(
        "\npeak RSS over the run: cairn {:.1} MiB, mlflow {:.1} MiB summed over {} processes (PSS {:.1} MiB): \
         mlflow/cairn {:.1}× (target ≥ {TARGET_MEMORY}×: {})",
        c.peak.rss_mib,
        m.peak.rss_mib,
        m.peak.procs,
        m.peak.pss_mib,
        mem,
        yes(mem_ok)
    );
    let mut transfer = Value::Null;
    if let (Some(a), Some(b)) = (&c.transfer, &m.transfer) {
        println!(
            "artifacts ({} × {:.0} MiB): upload cairn {:.1} MiB/s vs mlflow {:.1} MiB/s ({:.1}×), \
             download cairn {:.1} MiB/s vs mlflow {:.1} MiB/s ({:.1}×); verified {}/{} and {}/{}",
            a.files,
            a.mib / a.files.max(1) as f64,
            a.up_mib_s(),
            b.up_mib_s(),
            a.up_mib_s() / b.up_mib_s(),
            a.down_mib_s(),
            b.down_mib_s(),
            a.down_mib_s() / b.down_mib_s(),
            a.verified,
            a.files,
            b.verified,
            b.files
        );
        transfer = json!({
            "files": a.files, "mib": a.mib,
            "cairn_upload_mib_per_sec": a.up_mib_s(), "mlflow_upload_mib_per_sec": b.up_mib_s(),
            "cairn_download_mib_per_sec": a.down_mib_s(), "mlflow_download_mib_per_sec": b.down_mib_s(),
            "cairn_verified": a.verified, "mlflow_verified": b.verified,
            "cairn_errors": a.errors, "mlflow_errors": b.errors,
        });
    }
    println!("all targets met: {}", yes(all && mem_ok));
    json!({
        "operations": ops,
        "memory": {"cairn_peak_rss_mib": c.peak.rss_mib, "mlflow_peak_rss_mib": m.peak.rss_mib,
                   "mlflow_peak_pss_mib": m.peak.pss_mib, "mlflow_processes": m.peak.procs,
                   "ratio": mem, "target_met": mem_ok},
        "transfer": transfer,
        "all_targets_met": all && mem_ok,
    })
}

fn to_json(r: &RunResult) -> Value {
    json!({
        "system": r.system,
        "api": r.api,
        "load_average": [r.load.0, r.load.1],
        "ready_first_ms": r.ready_first_ms,
        "ready_restart_ms": r.ready_restart_ms,
        "rss_mib_after_versions": r.rss_mib,
        "hwm_mib_after_versions": r.hwm_mib,
        "peak_rss_mib": r.peak.rss_mib,
        "peak_pss_mib": r.peak.pss_mib,
        "peak_processes": r.peak.procs,
        "versions": r.versions,
        "phases": r.phases.iter().map(|p| json!({
            "op": p.op, "ops": p.ops, "errors": p.errors, "secs": p.secs,
            "ops_per_sec": p.rate(), "p50_ms": p.p50_ms, "p99_ms": p.p99_ms,
        })).collect::<Vec<_>>(),
        "transfer": r.transfer.as_ref().map(|x| json!({
            "files": x.files, "mib": x.mib, "upload_secs": x.up_secs, "download_secs": x.down_secs,
            "upload_mib_per_sec": x.up_mib_s(), "download_mib_per_sec": x.down_mib_s(),
            "uploaded": x.uploaded, "verified": x.verified, "errors": x.errors,
        })),
    })
}

async fn run(args: Args) -> Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build()?;
    println!(
        "{} clients; {} models, {} versions over {} model(s), {} reads per read phase; cairn API: {:?}; \
         cairn rate limit: {}",
        args.clients,
        args.models,
        args.versions,
        args.version_models,
        args.reads,
        args.cairn_api,
        match args.rate_limit_requests {
            0 => "off".to_owned(),
            n => format!("{n} requests per window"),
        }
    );
    let files = (args.cairn_api == CairnApi::Mlflow && args.files > 0).then(|| make_files(args.files, args.file_mib));
    let mut runs = Vec::new();
    let mut cairn = None;
    if !args.mlflow_only {
        let c = run_cairn(&args, &http, files.as_ref()).await?;
        print(&c);
        runs.push(to_json(&c));
        cairn = Some(c);
    }
    let mut comparison = Value::Null;
    if let Some(py) = &args.mlflow {
        let ml = run_mlflow(&args, py, &http, files.as_ref()).await?;
        print(&ml);
        runs.push(to_json(&ml));
        if let Some(cairn) = &cairn {
            comparison = compare(cairn, &ml);
            if let Some(restart) = ml.ready_restart_ms {
                println!(
                    "start to ready (restart): {:.0} ms vs {restart:.0} ms",
                    cairn.ready_restart_ms.unwrap_or(0.0)
                );
            } else {
                println!("start to ready (first start): {:.0} ms vs {:.0} ms", cairn.ready_first_ms, ml.ready_first_ms);
            }
        }
    }
    if let Some(path) = &args.json {
        let out = json!({"cairn_api": format!("{:?}", args.cairn_api).to_lowercase(), "runs": runs, "comparison": comparison});
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // On SIGINT or SIGTERM the run is dropped, and with it the servers it started.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}
