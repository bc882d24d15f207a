//! `cairn-uicost`: what the web UI's pages cost the server when the registry holds 10,000
//! models, and what they cost beside the JSON API calls that carry the same data.
//!
//! 1. **Seeding.** One in-process application on loopback, on a fresh database (SQLite by
//!    default, a new PostgreSQL database with `--postgres`). 10,000 models across 20
//!    namespaces, each with a description, three tags and one version, created through the
//!    HTTP API with the administrator's token, 8 requests in flight. Every 25th model's
//!    first version gets the complete example card (`examples/card/card.yaml`, licence
//!    `apache-2.0` or `mit`), and every 50th is submitted, so the reviewers' inbox and the
//!    stage filter have something to show.
//! 2. **Logging in like a browser.** A viewer who is also an auditor (no second factor
//!    needed) logs in through `POST /ui/login` and sends the `cairn_session` cookie back. A
//!    reviewer (`mrc`, which requires MFA) logs in, enrols an authenticator on the account
//!    page and confirms it with a code, as the server asks, to reach the reviews inbox.
//! 3. **Measuring.** Each page: 20 warm-up requests, then `--requests` sequential `GET`s, each
//!    timed at the client from sending to the last byte of the body. Client and server share
//!    the process and the machine's cores, so a figure is the server's time plus the loopback
//!    round trip and the client's reading of the body. The JSON API equivalents are measured
//!    the same way with the administrator's bearer token, and each page is reported as a
//!    ratio over its API call: what rendering costs over the data it shows.
//!
//! It asserts nothing about speed: it reports. A page answering anything but `200` stops it,
//! since an error page would be measured instead.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Measures the web UI's pages on a registry of 10,000 models.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Models to create
    #[arg(long, default_value_t = 10_000)]
    models: usize,
    /// Versions per model
    #[arg(long, default_value_t = 1)]
    versions_per_model: usize,
    /// Namespaces the models are spread across
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    /// Measured requests per page (after 20 warm-up requests)
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Requests in flight while seeding
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Run on PostgreSQL: a server URL whose user may create databases
    #[arg(long)]
    postgres: Option<String>,
    /// Write the results as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

const WARM_UP: usize = 20;
const PASSWORD: &str = "a long enough password 42";
/// Every n-th model's first version gets a card, and every m-th is submitted.
const CARD_EVERY: usize = 25;
const SUBMIT_EVERY: usize = 50;
const TASKS: [&str; 5] = ["classification", "regression", "ner", "ranking", "detection"];
const DOMAINS: [&str; 6] = ["transactions", "support tickets", "product images", "search logs", "sensor", "claims"];
const CARD: &str = include_str!("../../../examples/card/card.yaml");

fn namespace(args: &Args, i: usize) -> String {
    format!("ns-{:02}", i % args.namespaces)
}

fn model_name(i: usize) -> String {
    format!("model-{i:05}")
}

/// The application under test and the administrator's way in.
struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// A call that must succeed.
    async fn ok(&self, method: Method, path: &str, body: Value) -> Result<Value> {
        let (status, v) = self.call(method, path, Some(body)).await?;
        ensure!(status.is_success(), "{path} answered {status}: {v}");
        Ok(v)
    }
}

async fn start(args: &Args, dir: &tempfile::TempDir, token: &str) -> Result<String> {
    let settings = cairn_test_utils::bench::settings(dir.path(), "cairn", args.postgres.as_deref(), token).await;
    cairn_test_utils::bench::start(settings).await
}

/// One model with its versions, card and submission.
async fn seed_model(api: &Api, args: &Args, i: usize) -> Result<()> {
    let (ns, name) = (namespace(args, i), model_name(i));
    // By the model's rank within its namespace, so that every namespace has every task.
    let task = TASKS[(i / args.namespaces) % TASKS.len()];
    let domain = DOMAINS[i % DOMAINS.len()];
    let framework = ["pytorch", "xgboost", "sklearn"][i % 3];
    let model = json!({
        "name": format!("{ns}/{name}"),
        "description": format!(
            "A {task} model over {domain} data, retrained weekly. Owned by team {} and used by the {} service.",
            i % 7, domain
        ),
        "tags": {"task": task, "team": format!("team-{}", i % 7), "framework": framework},
        "team": format!("team-{}", i % 7),
    });
    api.ok(Method::POST, "/api/v1/models", model).await?;
    for v in 1..=args.versions_per_model {
        let version = json!({
            "description": format!("Weekly retrain {v}"),
            "source": format!("s3://models/{ns}/{name}/{v}"),
            "run_id": format!("run-{i}-{v}"),
            "code_commit": format!("{:040x}", i * 1000 + v),
            "tags": {"dataset": format!("{domain}-2026-{:02}", v % 12 + 1)},
        });
        api.ok(Method::POST, &format!("/api/v1/models/{ns}/{name}/versions"), version).await?;
    }
    if i.is_multiple_of(CARD_EVERY) {
        let license = if (i / CARD_EVERY).is_multiple_of(2) { "apache-2.0" } else { "mit" };
        let source = CARD.replacen("  license: apache-2.0", &format!("  license: {license}"), 1);
        let card = json!({"source_name": "card.yaml", "source": source, "results": {"accuracy": 0.9, "f1": 0.88}});
        api.ok(Method::PUT, &format!("/api/v1/models/{ns}/{name}/versions/1/card"), card).await?;
    }
    if i.is_multiple_of(SUBMIT_EVERY) {
        let path = format!("/api/v1/models/{ns}/{name}/versions/1/submit");
        let life = api.ok(Method::POST, &path, json!({"reason": "ready for review"})).await?;
        ensure!(life["stage"] == "submitted", "{path}: not submitted: {life}");
    }
    Ok(())
}

async fn seed(api: &Api, args: &Args) -> Result<()> {
    for n in 0..args.namespaces {
        api.ok(Method::POST, "/api/v1/namespaces", json!({"name": format!("ns-{n:02}")})).await?;
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    futures::stream::iter(0..args.models)
        .map(|i| {
            let done = &done;
            async move {
                seed_model(api, args, i).await?;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n.is_multiple_of(2000) {
                    println!("  {n} models ({:.0} s)", started.elapsed().as_secs_f64());
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<()>()
        .await
}

/// A person with a password and these global roles.
async fn person(api: &Api, name: &str, roles: &[&str]) -> Result<()> {
    api.ok(Method::POST, "/api/v1/users", json!({"username": name, "password": PASSWORD, "kind": "user"})).await?;
    for role in roles {
        api.ok(Method::POST, "/api/v1/grants", json!({"username": name, "role": role})).await?;
    }
    Ok(())
}

/// A browser without JavaScript: a session cookie, no redirects followed.
struct Browser {
    http: reqwest::Client,
    url: String,
    cookie: String,
}

impl Browser {
    async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Result<(StatusCode, String)> {
        let body = form.iter().map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v))).collect::<Vec<_>>().join("&");
        let mut req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if !self.cookie.is_empty() {
            req = req.header("cookie", format!("cairn_session={}", self.cookie));
        }
        let resp = req.send().await?;
        let status = resp.status();
        for set in resp.headers().get_all("set-cookie") {
            let set = set.to_str()?;
            if let Some(value) = set.split(';').next().and_then(|c| c.strip_prefix("cairn_session=")) {
                value.clone_into(&mut self.cookie);
            }
        }
        Ok((status, resp.text().await?))
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, String)> {
        let req =
            self.http.get(format!("{}{path}", self.url)).header("cookie", format!("cairn_session={}", self.cookie));
        let resp = req.send().await?;
        Ok((resp.status(), resp.text().await?))
    }

    /// Logs in with the password; when the server asks for enrolment first, enrols an
    /// authenticator and confirms it with the current code.
    async fn log_in(http: &reqwest::Client, url: &str, name: &str) -> Result<Self> {
        let mut b = Self { http: http.clone(), url: url.to_owned(), cookie: String::new() };
        let form = [("username", name), ("password", PASSWORD), ("next", "/ui/models")];
        let (status, body) = b.post_form("/ui/login", &form).await?;
        ensure!(status == StatusCode::SEE_OTHER && !b.cookie.is_empty(), "login of {name}: {status}: {body}");
        let (status, account) = b.get("/ui/account").await?;
        ensure!(status == StatusCode::OK, "account page of {name}: {status}");
        // Only the roles that require MFA are asked to enrol; the others are in.
        let (status, _) = b.get("/ui/models").await?;
        if status == StatusCode::OK {
            return Ok(b);
        }
        ensure!(account.contains("id=\"mfa-enrol\""), "{name} is refused the models page but offered no enrolment");
        let (status, enrol) = b.post_form("/ui/account/mfa", &[("csrf", &csrf(&account)?)]).await?;
        ensure!(status == StatusCode::OK, "MFA enrolment of {name}: {status}: {enrol}");
        let secret = between(&enrol, "<code id=\"mfa-secret\">", "<").context("the enrolment page shows the secret")?;
        cairn_test_utils::totp::wait_for_fresh_step().await;
        let code = cairn_test_utils::totp::code(secret, 0);
        let (status, done) =
            b.post_form("/ui/account/mfa/confirm", &[("csrf", &csrf(&enrol)?), ("code", &code)]).await?;
        ensure!(status == StatusCode::OK, "MFA confirmation of {name}: {status}: {done}");
        Ok(b)
    }
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let at = s.find(open)? + open.len();
    let end = s[at..].find(close)? + at;
    Some(&s[at..end])
}

fn csrf(page: &str) -> Result<String> {
    between(page, "name=\"csrf\" value=\"", "\"").map(str::to_owned).context("a form with a CSRF token")
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Who asks for a page.
#[derive(Clone, Copy)]
enum Who {
    /// The viewer and auditor, with the session cookie.
    Viewer,
    /// The reviewer, with the session cookie.
    Reviewer,
    /// The administrator's bearer token (the JSON API).
    Token,
}

struct Measured {
    page: String,
    path: String,
    latencies: Vec<Duration>,
    bytes: usize,
    /// Models in a JSON list answer (to see that a search found something).
    items: Option<usize>,
}

impl Measured {
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    fn max(&self) -> f64 {
        self.latencies.last().map_or(0.0, Duration::as_secs_f64) * 1000.0
    }
}

struct Clients<'a> {
    api: &'a Api,
    viewer: &'a Browser,
    reviewer: &'a Browser,
}

async fn measure(c: &Clients<'_>, page: &str, path: &str, who: Who, requests: usize) -> Result<Measured> {
    let mut latencies = Vec::with_capacity(requests);
    let mut bytes = 0;
    let mut items = None;
    for n in 0..WARM_UP + requests {
        let req = match who {
            Who::Viewer | Who::Reviewer => {
                let b = if matches!(who, Who::Viewer) { c.viewer } else { c.reviewer };
                b.http.get(format!("{}{path}", b.url)).header("cookie", format!("cairn_session={}", b.cookie))
            }
            Who::Token => c.api.http.get(format!("{}{path}", c.api.url)).bearer_auth(&c.api.token),
        };
        let started = Instant::now();
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = started.elapsed();
        if status != StatusCode::OK {
            bail!("{path} answered {status}: {}", String::from_utf8_lossy(&body));
        }
        if n >= WARM_UP {
            latencies.push(took);
            bytes = bytes.max(body.len());
            if n + 1 == WARM_UP + requests && matches!(who, Who::Token) {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                items = v["models"].as_array().map(Vec::len);
            }
        }
    }
    latencies.sort();
    Ok(Measured { page: page.to_owned(), path: path.to_owned(), latencies, bytes, items })
}

/// The filter string the models page builds from its search fields (docs/SEARCH.md).
fn api_search(filter: &str) -> String {
    format!("/api/v1/models?limit=50&filter={}", urlencode(filter))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.models > 0 && args.namespaces > 0 && args.versions_per_model > 0 && args.requests > 0);
    let token = format!("cairn_bench_{}", "0123456789abcdef".repeat(3));
    let backend = if args.postgres.is_some() { "PostgreSQL" } else { "SQLite" };
    let dir = tempfile::tempdir()?;
    let url = start(&args, &dir, &token).await?;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let api = Api { http: http.clone(), url: url.clone(), token };

    println!(
        "seeding {} models × {} versions in {} namespaces ({backend}, {} in flight)",
        args.models, args.versions_per_model, args.namespaces, args.concurrency
    );
    let started = Instant::now();
    seed(&api, &args).await?;
    let seeding = started.elapsed().as_secs_f64();
    println!("seeded in {seeding:.1} s");

    person(&api, "vera", &["viewer", "auditor"]).await?;
    person(&api, "rhea", &["mrc"]).await?;
    let viewer = Browser::log_in(&http, &url, "vera").await?;
    let reviewer = Browser::log_in(&http, &url, "rhea").await?;
    let clients = Clients { api: &api, viewer: &viewer, reviewer: &reviewer };

    // A model with a card, submitted, in the first namespace.
    let (ns, name) = (namespace(&args, 0), model_name(0));
    let model_page = format!("/ui/models/{ns}/{name}");
    let version_page = format!("{model_page}/versions/1");
    let api_model = format!("/api/v1/models/{ns}/{name}");
    let api_version = format!("{api_model}/versions/1");
    let search_q = "(full_name ILIKE '%model-0042%' OR description ILIKE '%model-0042%')";
    let search_tag = "namespace = 'ns-07' AND tags.`task` = 'classification'";
    // (page, path, who, the API call it is compared with)
    let plan: Vec<(&str, String, Who, Option<&str>)> = vec![
        ("models, first page", "/ui/models".into(), Who::Viewer, Some("API: models, first 50")),
        ("models, text search", "/ui/models?q=model-0042".into(), Who::Viewer, Some("API: text search")),
        (
            "models, namespace + tag",
            "/ui/models?namespace=ns-07&tag=task%3Dclassification".into(),
            Who::Viewer,
            Some("API: namespace + tag"),
        ),
        ("models, licence", "/ui/models?license=apache-2.0".into(), Who::Viewer, Some("API: licence")),
        ("models, stage", "/ui/models?stage=submitted".into(), Who::Viewer, Some("API: stage")),
        ("model", model_page.clone(), Who::Viewer, Some("API: model")),
        ("version with card", version_page.clone(), Who::Viewer, Some("API: version")),
        ("reviews inbox (reviewer)", "/ui/reviews".into(), Who::Reviewer, None),
        ("audit", "/ui/audit".into(), Who::Viewer, None),
        ("account", "/ui/account".into(), Who::Viewer, None),
        ("API: models, first 50", "/api/v1/models?limit=50".into(), Who::Token, None),
        ("API: text search", api_search(search_q), Who::Token, None),
        ("API: namespace + tag", api_search(search_tag), Who::Token, None),
        ("API: licence", api_search("license = 'apache-2.0'"), Who::Token, None),
        ("API: stage", api_search("stage = 'submitted'"), Who::Token, None),
        ("API: model", api_model, Who::Token, None),
        ("API: version", api_version.clone(), Who::Token, None),
        ("API: card as HTML", format!("{api_version}/card?format=html"), Who::Token, None),
    ];

    println!("measuring {} sequential requests per page after {WARM_UP} warm-up requests", args.requests);
    let mut results = Vec::new();
    for (page, path, who, _) in &plan {
        results.push(measure(&clients, page, path, *who, args.requests).await?);
    }

    let find = |page: &str| results.iter().find(|m| m.page == page);
    println!();
    println!(
        "{backend}, {} models, {} requests per page; client-side latency on loopback (server time + loopback round trip)",
        args.models, args.requests
    );
    println!(
        "{:<26} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>7}",
        "page", "p50 ms", "p95 ms", "p99 ms", "max ms", "bytes", "÷ API p50", "models"
    );
    let mut rows = Vec::new();
    for (m, (_, _, _, api_page)) in results.iter().zip(&plan) {
        let ratio = api_page.and_then(find).map(|a| m.pct(0.5) / a.pct(0.5));
        println!(
            "{:<26} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>10} {:>7}",
            m.page,
            m.pct(0.5),
            m.pct(0.95),
            m.pct(0.99),
            m.max(),
            m.bytes,
            ratio.map_or_else(String::new, |r| format!("{r:.1}×")),
            m.items.map_or_else(String::new, |n| n.to_string())
        );
        rows.push(json!({
            "page": m.page, "path": m.path,
            "p50_ms": m.pct(0.5), "p95_ms": m.pct(0.95), "p99_ms": m.pct(0.99), "max_ms": m.max(),
            "bytes": m.bytes, "models": m.items, "compared_with": api_page, "ratio_p50": ratio,
        }));
    }
    let ui: Vec<&Measured> = results.iter().filter(|m| m.path.starts_with("/ui/")).collect();
    let slow: Vec<&str> = ui.iter().filter(|m| m.pct(0.95) >= 20.0).map(|m| m.page.as_str()).collect();
    let big: Vec<&str> = ui.iter().filter(|m| m.bytes > 100 * 1024).map(|m| m.page.as_str()).collect();
    println!();
    println!("pages at or over 20 ms p95: {}", if slow.is_empty() { "none".into() } else { slow.join(", ") });
    println!("pages over 100 KB: {}", if big.is_empty() { "none".into() } else { big.join(", ") });

    if let Some(path) = &args.json {
        let out = json!({
            "backend": backend,
            "models": args.models,
            "versions_per_model": args.versions_per_model,
            "namespaces": args.namespaces,
            "requests": args.requests,
            "seeding_secs": seeding,
            "pages": rows,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)?;
    }
    Ok(())
}
