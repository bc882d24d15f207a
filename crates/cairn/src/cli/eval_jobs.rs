//! Evaluation jobs from the command line (docs/GOVERNANCE.md#evaluation-jobs):
//! `cairn eval queue|jobs|cancel`, `cairn eval worker`, which claims the registry's jobs and
//! runs each suite's harness command on this machine, and `cairn eval run`, which runs a
//! command the user gives and submits what it writes.
//!
//! A harness is run without a shell, in its own working directory, with the version's files
//! pulled (and verified) into `model/` there. It learns where things are from placeholders in
//! its arguments and from environment variables:
//!
//! | placeholder   | variable                 | value |
//! |---------------|--------------------------|-------|
//! | `{model_dir}` | `CAIRN_EVAL_MODEL_DIR`   | the version's files |
//! | `{results}`   | `CAIRN_EVAL_RESULTS`     | where to write the results (`results.json` for the worker; `eval run --results` may name `.yaml` or `.csv`) |
//! | `{model}`     | `CAIRN_EVAL_MODEL`       | `namespace/name` |
//! | `{version}`   | `CAIRN_EVAL_VERSION`     | the version number |
//! | `{suite}`     | `CAIRN_EVAL_SUITE`       | the suite's name |
//! | `{dataset}`   | `CAIRN_EVAL_DATASET_URI` | the suite's dataset URI (empty if none) |
//!
//! The worker's own credentials (`CAIRN_TOKEN` and every other `CAIRN_*` variable) are
//! removed from the harness's environment.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cairn_api_types as api;
use cairn_client::Client;
use cairn_client::governance::EvalJobQuery;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

use super::UsageError;
use super::governance::{input_policy, read_results};
use crate::progress::Bars;
use crate::table;

/// The most of a harness's error output kept for the job's error message.
const STDERR_TAIL: usize = 1500;

/// What a harness is run with.
pub struct HarnessRun<'a> {
    /// Program and arguments, placeholders not yet replaced.
    pub command: &'a [String],
    /// Its working directory (created).
    pub workdir: &'a Path,
    /// The version's files, if pulled.
    pub model_dir: Option<&'a Path>,
    /// Where it writes its results.
    pub results: &'a Path,
    /// `namespace/name`.
    pub model: &'a str,
    /// Version number.
    pub version: i64,
    /// Suite name.
    pub suite: &'a str,
    /// The suite's dataset URI.
    pub dataset: &'a str,
    /// Time limit.
    pub timeout: Option<Duration>,
    /// A prefix for the lines it prints (`[job 0193…] `).
    pub label: &'a str,
}

/// Why a harness did not produce results.
#[derive(Debug)]
pub enum HarnessError {
    /// It could not be started (not found, not allowed …).
    Start(String),
    /// It exited unsuccessfully; the tail of its error output.
    Exit(String),
    /// It ran out of time.
    Timeout(u64),
    /// It was stopped from outside (job cancelled, worker stopping).
    Stopped(String),
}

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Start(m) | Self::Exit(m) | Self::Stopped(m) => f.write_str(m),
            Self::Timeout(s) => write!(f, "the harness ran longer than its {s} s limit and was stopped"),
        }
    }
}

impl HarnessRun<'_> {
    /// The command with its placeholders replaced.
    pub fn argv(&self) -> Result<Vec<String>, HarnessError> {
        let model_dir = self.model_dir.map(|p| p.display().to_string());
        let mut out = Vec::with_capacity(self.command.len());
        for arg in self.command {
            if arg.contains("{model_dir}") && model_dir.is_none() {
                return Err(HarnessError::Start(
                    "the command uses {model_dir}, but the version's files were not pulled (--no-pull)".into(),
                ));
            }
            out.push(
                arg.replace("{model_dir}", model_dir.as_deref().unwrap_or_default())
                    .replace("{results}", &self.results.display().to_string())
                    .replace("{model}", self.model)
                    .replace("{version}", &self.version.to_string())
                    .replace("{suite}", self.suite)
                    .replace("{dataset}", self.dataset),
            );
        }
        if out.first().is_none_or(String::is_empty) {
            return Err(HarnessError::Start("the harness command is empty".into()));
        }
        Ok(out)
    }

    /// Runs it to the end, or until `stop` says why it must stop. Its output is copied to
    /// stderr line by line; the tail of its error output is kept for the error message.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<Option<String>>) -> Result<(), HarnessError> {
        let argv = self.argv()?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(self.workdir).stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.stderr(Stdio::piped()).kill_on_drop(true);
        // Its own process group, so that stopping it stops what it started too.
        #[cfg(unix)]
        cmd.process_group(0);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("CAIRN_")) {
                cmd.env_remove(k);
            }
        }
        cmd.env("CAIRN_EVAL_RESULTS", self.results)
            .env("CAIRN_EVAL_MODEL", self.model)
            .env("CAIRN_EVAL_VERSION", self.version.to_string())
            .env("CAIRN_EVAL_SUITE", self.suite)
            .env("CAIRN_EVAL_DATASET_URI", self.dataset);
        if let Some(d) = self.model_dir {
            cmd.env("CAIRN_EVAL_MODEL_DIR", d);
        }
        let mut child = cmd.spawn().map_err(|e| HarnessError::Start(format!("cannot start {:?}: {e}", argv[0])))?;
        let out = forward(child.stdout.take(), self.label.to_owned(), 0);
        let err = forward(child.stderr.take(), self.label.to_owned(), STDERR_TAIL);
        let deadline = async {
            match self.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            status = child.wait() => Ok(status),
            () = deadline => Err(HarnessError::Timeout(self.timeout.map_or(0, |t| t.as_secs()))),
            why = async {
                loop {
                    if let Some(why) = stop.borrow_and_update().clone() {
                        return why;
                    }
                    if stop.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            } => Err(HarnessError::Stopped(why)),
        };
        if outcome.is_err() {
            // Stop it and everything it started, and wait, so no process outlives the job.
            kill_group(&child);
            let _ = child.kill().await;
        } else {
            // It exited; a process it left behind must not keep the job going.
            kill_group(&child);
        }
        let _ = out.await;
        let tail = err.await.unwrap_or_default();
        let status = outcome?.map_err(|e| HarnessError::Exit(format!("waiting for the harness failed: {e}")))?;
        if status.success() {
            return Ok(());
        }
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_owned(),
        };
        let tail = tail.trim();
        Err(HarnessError::Exit(if tail.is_empty() {
            format!("the harness {how}")
        } else {
            format!("the harness {how}: {tail}")
        }))
    }
}

/// Kills the process group the harness leads.
fn kill_group(child: &tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    #[cfg(not(unix))]
    let _ = child;
}

/// Copies a child's output to stderr, line by line with `label`, keeping the last `keep`
/// bytes of it.
fn forward(
    from: Option<impl AsyncRead + Unpin + Send + 'static>,
    label: String,
    keep: usize,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let Some(from) = from else { return String::new() };
        let mut lines = BufReader::new(from).lines();
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut kept = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{label}{line}");
            if keep > 0 {
                kept += line.len() + 1;
                tail.push_back(line);
                while kept > keep && tail.len() > 1 {
                    kept -= tail.pop_front().map_or(0, |l| l.len() + 1);
                }
            }
        }
        let text = tail.into_iter().collect::<Vec<_>>().join("\n");
        if text.len() > keep {
            text.chars().rev().take(keep).collect::<Vec<_>>().into_iter().rev().collect()
        } else {
            text
        }
    })
}

/// Reads what a harness wrote.
fn collect_results(path: &Path) -> Result<serde_json::Value, String> {
    if !path.exists() {
        return Err(format!("the harness exited successfully but wrote no results to {}", path.display()));
    }
    let policy = input_policy().map_err(|e| e.to_string())?;
    let results = read_results(path, &policy).map_err(|e| format!("the harness's results are unreadable: {e:#}"))?;
    if results.as_array().is_none_or(Vec::is_empty) {
        return Err(format!("the harness's results in {} hold no metrics", path.display()));
    }
    Ok(results)
}

/// Prints jobs as a table.
pub fn print_jobs(jobs: &[api::EvalJob]) {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                format!("{}:{}", j.model, j.version),
                j.suite.clone(),
                j.state.clone(),
                format!("{}/{}", j.attempts, j.max_attempts),
                j.priority.to_string(),
                j.worker.clone().unwrap_or_default(),
                j.error.chars().take(60).collect(),
            ]
        })
        .collect();
    print!("{}", table::render(&["ID", "VERSION", "SUITE", "STATE", "ATTEMPTS", "PRIORITY", "WORKER", "ERROR"], &rows));
}

/// Lists one page of jobs (`next_before` says where the next one starts).
pub async fn list(c: &Client, q: EvalJobQuery, json: bool) -> anyhow::Result<ExitCode> {
    let list = c.eval_jobs(&q).await?;
    if json {
        super::print_json(&list)?;
    } else {
        print_jobs(&list.jobs);
        if let Some(next) = &list.next_before {
            eprintln!("more: --before {next}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Flags of `cairn eval worker`.
#[derive(clap::Args, Debug)]
#[command(after_help = "The worker claims jobs one at a time (highest priority first), pulls the version's files, \
                        runs the suite's harness command with a renewed lease, and submits the results it writes. \
                        A harness that fails, times out or writes nothing fails the attempt; the registry retries \
                        it later, up to the job's attempts. A job cancelled meanwhile stops its harness. \
                        Exit codes: 0 ok (with --once/--drain: every job it ran succeeded); 1 a job failed or \
                        the server could not be reached; 2 a usage error.")]
pub struct WorkerArgs {
    /// Only jobs of this namespace (repeatable) [default: every namespace the account may run jobs in]
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Only jobs of this suite (repeatable)
    #[arg(long = "suite", value_name = "SUITE")]
    suites: Vec<String>,
    /// Programs this worker may run as harnesses, by name or path (repeatable); a job whose
    /// harness names another program fails on this worker
    #[arg(long = "allow-command", value_name = "PROGRAM", required_unless_present = "allow_any_command")]
    allow: Vec<String>,
    /// Run whatever program a suite names (only where everyone who may change suites is trusted
    /// to run code on this machine)
    #[arg(long)]
    allow_any_command: bool,
    /// This worker's name in the registry [default: the host name]
    #[arg(long)]
    name: Option<String>,
    /// Run at most one job, then exit
    #[arg(long, conflicts_with = "drain")]
    once: bool,
    /// Run jobs until none is left, then exit
    #[arg(long)]
    drain: bool,
    /// Seconds between claims while the queue is empty
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    poll_secs: u64,
    /// Seconds a claim lasts before the worker must renew it
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(10..=3600))]
    lease_secs: u64,
    /// Where jobs run (one directory per job) [default: a temporary directory]
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Do not pull the version's files (the harness fetches what it needs)
    #[arg(long)]
    no_pull: bool,
    /// Keep each job's directory after the job
    #[arg(long)]
    keep: bool,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// Whether `program` may run on a worker that allows `allowed`.
fn program_allowed(program: &str, allowed: &[String], any: bool) -> bool {
    any || allowed
        .iter()
        .any(|a| a == program || (!a.contains('/') && Path::new(program).file_name().is_some_and(|f| f == a.as_str())))
}

/// Runs `cairn eval worker`.
pub async fn worker(c: &Client, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let name = args.name.clone().unwrap_or_else(host_name);
    let root = match &args.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => std::env::temp_dir(),
    };
    let base = tempfile::Builder::new().prefix("cairn-eval-").tempdir_in(&root)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel::<Option<String>>(None);
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("stopping: the running job (if any) is given back to the queue");
        let _ = stop_tx.send(Some("the worker was stopped".into()));
    });
    eprintln!("worker {name} waiting for evaluation jobs");
    let claim = api::ClaimEvalJob {
        worker: name.clone(),
        namespaces: args.namespaces.clone(),
        suites: args.suites.clone(),
        lease_secs: Some(args.lease_secs),
    };
    let mut failed = false;
    loop {
        if stop_rx.borrow().is_some() {
            break;
        }
        let Some(claimed) = c.claim_eval_job(&claim).await? else {
            if args.once || args.drain {
                break;
            }
            let mut stop = stop_rx.clone();
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(args.poll_secs)) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let ok = run_job(c, &args, &name, base.path(), claimed, stop_rx.clone()).await?;
        failed |= !ok;
        if args.once {
            break;
        }
    }
    if args.keep {
        let kept = base.keep();
        eprintln!("job directories kept in {}", kept.display());
    }
    Ok(if failed && (args.once || args.drain) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs one claimed job to its end; whether it succeeded.
async fn run_job(
    c: &Client,
    args: &WorkerArgs,
    name: &str,
    base: &Path,
    claimed: api::ClaimedEvalJob,
    stop: tokio::sync::watch::Receiver<Option<String>>,
) -> anyhow::Result<bool> {
    let job = claimed.job;
    let label = format!("[{} {}:{} {}] ", &job.id[job.id.len().saturating_sub(8)..], job.model, job.version, job.suite);
    eprintln!("{label}claimed (attempt {} of {})", job.attempts, job.max_attempts);
    let def: cairn_core::evaluation::SuiteDef = match serde_json::from_value(claimed.suite) {
        Ok(d) => d,
        Err(e) => return give_up(c, &job, name, &label, &format!("the suite's definition is unreadable: {e}")).await,
    };
    let harness = def.harness.clone().unwrap_or_default();
    let Some(program) = harness.command.first() else {
        return give_up(c, &job, name, &label, "the suite names no harness command to run").await;
    };
    if !program_allowed(program, &args.allow, args.allow_any_command) {
        let msg = format!("worker {name} does not run {program:?} (its --allow-command list does not name it)");
        return give_up(c, &job, name, &label, &msg).await;
    }
    let dir = base.join(&job.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let model_dir = dir.join("model");
    let results = dir.join("results.json");
    let _ = std::fs::remove_file(&results);

    // Renew the lease while the job runs; a job no longer ours stops the harness.
    let (job_stop_tx, job_stop_rx) = tokio::sync::watch::channel::<Option<String>>(None);
    let beat = {
        let (c, id, name, secs) = (c.clone(), job.id.clone(), name.to_owned(), args.lease_secs);
        let mut outer = stop.clone();
        let tx = job_stop_tx.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs((secs / 3).max(3));
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = outer.changed() => {
                        let why = outer.borrow().clone();
                        let _ = tx.send(why);
                        return;
                    }
                }
                let req = api::EvalJobHeartbeat { worker: name.clone(), lease_secs: Some(secs) };
                match c.heartbeat_eval_job(&id, &req).await {
                    Ok(j) if j.state == "running" && j.worker.as_deref() == Some(name.as_str()) => {}
                    Ok(j) => {
                        let why = if j.state == "cancelled" {
                            format!("the job was cancelled: {}", j.error)
                        } else {
                            format!("the job is no longer this worker's (it is {})", j.state)
                        };
                        let _ = tx.send(Some(why));
                        return;
                    }
                    // The registry may be briefly away; the lease has room for that.
                    Err(e) => eprintln!("warning: renewing the lease of job {id} failed: {e}"),
                }
            }
        })
    };
    let started = Instant::now();
    let outcome: Result<serde_json::Value, String> = async {
        if !args.no_pull {
            super::pull::pull_into(c, &job.model, job.version, &model_dir, 4, &Bars::new(true))
                .await
                .map_err(|e| format!("pulling {}:{} failed: {e:#}", job.model, job.version))?;
        }
        let run = HarnessRun {
            command: &harness.command,
            workdir: &dir,
            model_dir: (!args.no_pull).then_some(model_dir.as_path()),
            results: &results,
            model: &job.model,
            version: job.version,
            suite: &job.suite,
            dataset: def.dataset.as_ref().map_or("", |d| d.uri.as_str()),
            timeout: harness.timeout_secs.map(Duration::from_secs),
            label: &label,
        };
        let mut stop_both = job_stop_rx.clone();
        run.run(stop_both.clone()).await.map_err(|e| e.to_string())?;
        if let Some(why) = stop_both.borrow_and_update().clone() {
            return Err(why);
        }
        collect_results(&results)
    }
    .await;
    beat.abort();
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let stopped = job_stop_rx.borrow().clone();
    match outcome {
        Ok(results) => {
            let config = serde_json::json!({
                "runner": "cairn eval worker",
                "worker": name,
                "job": job.id,
                "attempt": job.attempts,
                "harness": harness.command,
                "dataset": def.dataset,
                "duration_secs": started.elapsed().as_secs_f64(),
            });
            let req = api::CompleteEvalJob { worker: name.to_owned(), results, config };
            match c.complete_eval_job(&job.id, &req).await {
                Ok(done) => {
                    let verdict = if done.result.passed { "passes" } else { "FAILS" };
                    eprintln!("{label}done: {}:{} {verdict} suite {}", job.model, job.version, job.suite);
                    Ok(true)
                }
                Err(e) => {
                    eprintln!("{label}the results were not accepted: {e}");
                    Ok(false)
                }
            }
        }
        Err(why) => {
            if stopped.as_deref().is_some_and(|s| s.starts_with("the job ")) {
                // Cancelled or taken away: nothing to report, the job is not ours.
                eprintln!("{label}stopped: {why}");
                return Ok(false);
            }
            give_up(c, &job, name, &label, &why).await
        }
    }
}

/// Reports a failed attempt.
async fn give_up(c: &Client, job: &api::EvalJob, name: &str, label: &str, why: &str) -> anyhow::Result<bool> {
    eprintln!("{label}failed: {why}");
    let req = api::FailEvalJob { worker: name.to_owned(), error: why.to_owned() };
    match c.fail_eval_job(&job.id, &req).await {
        Ok(j) if j.state == "queued" => eprintln!("{label}it will be retried after {}", j.not_before),
        Ok(j) => eprintln!("{label}it is {} after {} attempts", j.state, j.attempts),
        Err(e) => eprintln!("{label}reporting the failure failed: {e}"),
    }
    Ok(false)
}

/// Flags of `cairn eval run`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Runs COMMAND (no shell) with the version's files pulled into a temporary directory, then \
                        submits the results it wrote to {results} ($CAIRN_EVAL_RESULTS) against the suite. \
                        Placeholders in COMMAND: {model_dir} {results} {model} {version} {suite} {dataset}. \
                        Exit codes: 0 the results pass the suite; 1 they fail it, the command failed, or the server \
                        could not be reached; 2 a usage or input error.")]
pub struct RunArgs {
    /// namespace/name:VERSION
    #[arg(value_name = "MODEL:VERSION")]
    pub reference: String,
    /// The suite to judge the results against
    #[arg(long)]
    suite: String,
    /// Where the command writes its results (.json, .yaml/.yml or .csv) [default: results.json in a temporary directory]
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
    /// Do not pull the version's files
    #[arg(long)]
    no_pull: bool,
    /// Stop the command after this many seconds
    #[arg(long, value_name = "SECS")]
    timeout_secs: Option<u64>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Runs `cairn eval run`; returns the result for the caller to print.
pub async fn run(c: &Client, args: RunArgs) -> anyhow::Result<api::EvalResult> {
    let (model, version) = super::governance::parse_version_ref(&args.reference)?;
    let number = c.get_version(&model, &version).await?.version;
    let namespace = model.split('/').next().unwrap_or_default();
    let suite = c.get_eval_suite(namespace, &args.suite).await?;
    let def: cairn_core::evaluation::SuiteDef =
        serde_json::from_value(suite.definition).context("the suite's definition is unreadable")?;
    let dir = tempfile::Builder::new().prefix("cairn-eval-run-").tempdir()?;
    let model_dir = dir.path().join("model");
    if !args.no_pull {
        super::pull::pull_into(c, &model, number, &model_dir, 4, &Bars::new(args.json)).await?;
    }
    let results = match &args.results {
        Some(r) => std::path::absolute(r)?,
        None => dir.path().join("results.json"),
    };
    let cwd = std::env::current_dir()?;
    let run = HarnessRun {
        command: &args.command,
        workdir: &cwd,
        model_dir: (!args.no_pull).then_some(model_dir.as_path()),
        results: &results,
        model: &model,
        version: number,
        suite: &args.suite,
        dataset: def.dataset.as_ref().map_or("", |d| d.uri.as_str()),
        timeout: args.timeout_secs.map(Duration::from_secs),
        label: "",
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel::<Option<String>>(None);
    let watcher = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(Some("interrupted".into()));
    });
    let started = Instant::now();
    let outcome = run.run(stop_rx).await;
    watcher.abort();
    outcome.map_err(|e| match e {
        HarnessError::Start(m) => anyhow::Error::new(UsageError(m)),
        other => anyhow::anyhow!("{other}; nothing was submitted"),
    })?;
    let results_json = collect_results(&results).map_err(|m| anyhow::anyhow!("{m}; nothing was submitted"))?;
    let config = serde_json::json!({
        "runner": "cairn eval run",
        "command": args.command,
        "dataset": def.dataset,
        "duration_secs": started.elapsed().as_secs_f64(),
    });
    let req = api::SubmitEvaluation { suite: args.suite.clone(), results: results_json, config };
    Ok(c.submit_evaluation(&model, &number.to_string(), &req).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_allowed_by_name_or_exact_path() {
        let allowed = vec!["python3".to_owned(), "/opt/eval/run.sh".to_owned()];
        assert!(program_allowed("python3", &allowed, false));
        assert!(program_allowed("/usr/bin/python3", &allowed, false));
        assert!(program_allowed("/opt/eval/run.sh", &allowed, false));
        assert!(!program_allowed("/tmp/run.sh", &allowed, false));
        assert!(!program_allowed("sh", &allowed, false));
        assert!(!program_allowed("python3-evil", &allowed, false));
        assert!(program_allowed("anything", &[], true));
    }

    #[test]
    fn placeholders_are_replaced_and_model_dir_needs_a_pull() {
        let cmd = vec!["eval".to_owned(), "--model={model_dir}".into(), "{results}".into(), "{model}:{version}".into()];
        let mut run = HarnessRun {
            command: &cmd,
            workdir: Path::new("/w"),
            model_dir: Some(Path::new("/w/model")),
            results: Path::new("/w/results.json"),
            model: "team/m",
            version: 3,
            suite: "s",
            dataset: "",
            timeout: None,
            label: "",
        };
        assert_eq!(run.argv().unwrap(), ["eval", "--model=/w/model", "/w/results.json", "team/m:3"]);
        run.model_dir = None;
        assert!(matches!(run.argv(), Err(HarnessError::Start(m)) if m.contains("--no-pull")));
    }
}
