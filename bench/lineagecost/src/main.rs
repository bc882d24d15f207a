//! `cairn-lineagecost`: how fast lineage walks are over a registry of 100,000 versions (the
//! supply-chain issue's target: a 10-level query under 50 ms).
//!
//! 1. **Fill** a fresh database through the store: `--models` models of `--versions-per-model`
//!    versions. Each version records three inputs (a dataset from a pool of 500, a training
//!    run, a code commit) and derives from the version before it; every tenth version also
//!    derives from a version of another model, so the graph is a DAG with merges, not a set of
//!    chains.
//! 2. **Store walks** (`Store::walk_lineage`, the query the API runs): 10 levels up from a
//!    version at least 20 deep, 10 levels down from an early version, and the impact of a
//!    dataset (its ~200 direct users and everything derived from them, 10 levels).
//! 3. **Over HTTP, side by side**: the server's graph (`GET …/lineage/graph?depth=10`) against
//!    what a client of a registry without graph queries must do — fetch a version's inputs,
//!    then each base model's, one request per version, 10 levels (`GET …/lineage`).
//!
//! 4. **A line that merges checkpoints** (`--merge-versions` versions of one model, each
//!    derived from the five before it): 50 levels down from its first version and up from its
//!    last, through the store, and — side by side, on the same database — the recursive query
//!    walks used before (`UNION` over (edge, version, depth) rows), which walks an edge again
//!    for every path length that reaches it.
//!
//! Each measurement runs `--queries` times on random starting points; p50, p95 and max are
//! reported in milliseconds.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use cairn_core::lineage::{BaseModel, Code, Dataset, Direction, InputKind, Run, Upstream};
use cairn_core::{ModelName, ModelRef, Namespace, VersionRef, VersionSelector};
use cairn_store::lineage::WalkFrom;
use cairn_store::model::NewModel;
use cairn_store::version::NewVersion;
use cairn_store::{AuditContext, Store};
use clap::Parser;
use serde_json::{Value, json};

/// Times lineage walks over 100,000 versions.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Models to create
    #[arg(long, default_value_t = 1000)]
    models: usize,
    /// Versions per model
    #[arg(long, default_value_t = 100)]
    versions_per_model: usize,
    /// Walks per measurement
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Models filled at once (each task fills its own models in order)
    #[arg(long, default_value_t = 4)]
    fill_tasks: usize,
    /// Run on PostgreSQL: a server URL whose user may create databases
    #[arg(long)]
    postgres: Option<String>,
    /// Versions of the merging line (each derived from the five before it)
    #[arg(long, default_value_t = 1000)]
    merge_versions: usize,
    /// Walk this database as it is instead of filling a new one: one an earlier run with the
    /// same counts filled and left behind (a `postgres://…/cairn_test_…` or `sqlite://…` URL),
    /// to compare query changes on the same data without filling again
    #[arg(long)]
    database: Option<String>,
    /// Write the results as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

const DATASETS: usize = 500;
const TOKEN: &str = "bench-lineage-token-0123456789abcdef0123456789";

fn model_ref(m: usize) -> ModelRef {
    ModelRef::new(
        Namespace::parse(&format!("team-{}", m % 10)).unwrap(),
        ModelName::parse(&format!("model-{m}")).unwrap(),
    )
}

/// A small deterministic generator (xorshift64*), so every run walks from the same points.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// The inputs of version `v` (1-based) of model `m`; `stride` is the model it crosses over to.
fn inputs(m: usize, v: usize, stride: usize) -> Vec<Upstream> {
    let mut out = vec![
        Upstream::Dataset(Dataset {
            name: format!("corpus-{}", (m * 7 + v) % DATASETS),
            version: format!("v{}", v % 3),
            uri: format!("s3://data/corpus-{}", (m * 7 + v) % DATASETS),
            digest: String::new(),
        }),
        Upstream::Run(Run {
            platform: "sagemaker".into(),
            id: format!("job-{m}-{v}"),
            uri: String::new(),
            params: [("lr".to_owned(), "0.001".to_owned()), ("epochs".to_owned(), (v % 5).to_string())].into(),
        }),
        Upstream::Code(Code {
            repository: "https://git.example/org/train".into(),
            commit: format!("{:040x}", m * 1000 + v),
        }),
    ];
    let base = |m: usize, v: usize| {
        Upstream::BaseModel(BaseModel::Registry(VersionRef {
            model: model_ref(m),
            selector: VersionSelector::Number(i64::try_from(v).unwrap()),
        }))
    };
    if v > 1 {
        out.push(base(m, v - 1));
    }
    // Every tenth version merges in an earlier version of a model filled before this one.
    if v.is_multiple_of(10) && m >= stride && v > 5 {
        out.push(base(m - stride, v - 5));
    }
    out
}

async fn fill(store: &Store, models: usize, per_model: usize, tasks: usize) -> Result<()> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let ctx = AuditContext { actor: "user:bench".into(), ..AuditContext::default() };
            for m in (t..models).step_by(tasks) {
                store.create_model(&ctx, &NewModel::named(model_ref(m))).await?;
                for v in 1..=per_model {
                    let new = NewVersion { lineage: inputs(m, v, tasks), ..NewVersion::default() };
                    store.create_version(&ctx, &model_ref(m), &new).await?;
                }
                if t == 0 && m.is_multiple_of(tasks * 20) {
                    eprint!("\r{m} of {models} models");
                }
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    eprintln!();
    Ok(())
}

fn merge_model() -> ModelRef {
    ModelRef::new(Namespace::parse("merges").unwrap(), ModelName::parse("line").unwrap())
}

/// The merging line: version `v` derives from versions `v-5` … `v-1`.
async fn fill_merges(store: &Store, versions: usize) -> Result<()> {
    let ctx = AuditContext { actor: "user:bench".into(), ..AuditContext::default() };
    store.create_model(&ctx, &NewModel::named(merge_model())).await?;
    for v in 1..=versions {
        let lineage = (v.saturating_sub(5).max(1)..v)
            .map(|p| {
                Upstream::BaseModel(BaseModel::Registry(VersionRef {
                    model: merge_model(),
                    selector: VersionSelector::Number(i64::try_from(p).unwrap()),
                }))
            })
            .collect();
        store.create_version(&ctx, &merge_model(), &NewVersion { lineage, ..NewVersion::default() }).await?;
    }
    Ok(())
}

/// The recursive query walks used before (down from version `first`), run `times` on the
/// database directly over one connection opened beforehand: the time of each run, its rows,
/// and how many distinct edges they name.
async fn recursive_walk(database_url: &str, first: i64, depth: i64, times: usize) -> Result<(Vec<f64>, i64, i64)> {
    const SQL: &str = "WITH RECURSIVE walk(eid, next, depth) AS (\
        SELECT e.id, e.version_id, 1 FROM lineage_edges e WHERE e.parent_version_id = $1 UNION \
        SELECT e.id, e.version_id, w.depth + 1 FROM lineage_edges e JOIN walk w ON e.parent_version_id = w.next \
        WHERE w.depth < $2) SELECT (SELECT COUNT(*) FROM walk), COUNT(DISTINCT eid) FROM walk";
    let (mut ms, mut counts) = (Vec::new(), (0, 0));
    if database_url.starts_with("sqlite:") {
        let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(database_url).await?;
        for _ in 0..times {
            let started = Instant::now();
            counts = sqlx::query_as(SQL).bind(first).bind(depth).fetch_one(&mut c).await?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    } else {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(database_url).await?;
        for _ in 0..times {
            let started = Instant::now();
            counts = sqlx::query_as(SQL).bind(first).bind(depth).fetch_one(&mut c).await?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok((ms, counts.0, counts.1))
}

#[derive(Debug)]
struct Stats {
    p50: f64,
    p95: f64,
    max: f64,
    mean_edges: f64,
}

fn stats(mut ms: Vec<f64>, edges: &[usize]) -> Stats {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    Stats {
        p50: at(0.5),
        p95: at(0.95),
        max: *ms.last().unwrap_or(&0.0),
        mean_edges: edges.iter().sum::<usize>() as f64 / edges.len().max(1) as f64,
    }
}

fn show(name: &str, s: &Stats) -> Value {
    println!(
        "{name:<44} p50 {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms  ({:.0} edges on average)",
        s.p50, s.p95, s.max, s.mean_edges
    );
    json!({"p50_ms": s.p50, "p95_ms": s.p95, "max_ms": s.max, "mean_edges": s.mean_edges})
}

async fn time_walks(store: &Store, make: impl Fn(&mut Rng) -> WalkFrom, queries: usize) -> Result<Stats> {
    time_walks_depth(store, make, queries, 10).await
}

async fn time_walks_depth(
    store: &Store,
    make: impl Fn(&mut Rng) -> WalkFrom,
    queries: usize,
    depth: u32,
) -> Result<Stats> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ms, mut edges) = (Vec::new(), Vec::new());
    for _ in 0..queries {
        let from = make(&mut rng);
        let started = Instant::now();
        let walk = store.walk_lineage(&from, depth, 10_000).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        edges.push(walk.edges.len());
    }
    Ok(stats(ms, &edges))
}

/// A client walking up 10 levels one request per version, as it must without graph queries.
async fn client_walk(http: &reqwest::Client, url: &str, m: usize, v: i64) -> Result<usize> {
    let mut frontier = vec![(model_ref(m).to_string(), v)];
    let mut seen = std::collections::HashSet::new();
    let mut edges = 0;
    for _ in 0..10 {
        let mut next = Vec::new();
        for (model, number) in frontier {
            if !seen.insert((model.clone(), number)) {
                continue;
            }
            let l: Value = http
                .get(format!("{url}/api/v1/models/{model}/versions/{number}/lineage"))
                .bearer_auth(TOKEN)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            for e in l["inputs"].as_array().into_iter().flatten() {
                edges += 1;
                if e["kind"] == "base_model" && e["from"].as_str().is_some_and(|f| f.starts_with("version:")) {
                    next.push((
                        e["name"].as_str().unwrap_or_default().to_owned(),
                        e["ref"].as_str().unwrap_or("0").parse()?,
                    ));
                }
            }
        }
        frontier = next;
    }
    Ok(edges)
}

/// `url` without its password, to print.
fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut settings = match &args.database {
        Some(_) => cairn_test_utils::bench::settings(dir.path(), "lineage", None, TOKEN).await,
        None => cairn_test_utils::bench::settings(dir.path(), "lineage", args.postgres.as_deref(), TOKEN).await,
    };
    if let Some(url) = &args.database {
        settings.database_url = Some(url.clone());
    }
    let url = settings.database_url.clone().unwrap_or_default();
    let backend = if url.starts_with("postgres") { "postgresql" } else { "sqlite" };
    let store = cairn_server::serve::open_store(&settings).await?;
    let total = args.models * args.versions_per_model;
    let fill_secs = if args.database.is_some() {
        println!("{backend}: walking the database given, filled before");
        0.0
    } else {
        let started = Instant::now();
        fill(&store, args.models, args.versions_per_model, args.fill_tasks).await?;
        let fill_secs = started.elapsed().as_secs_f64();
        println!("{backend}: filled {} models, {total} versions in {fill_secs:.0} s", args.models);
        println!("  (database: {})", redact_password(&url));
        fill_secs
    };

    let (models, per) = (args.models, args.versions_per_model);
    let pick = |rng: &mut Rng, lo: usize, hi: usize| (rng.below(models), lo + rng.below(hi - lo + 1));
    let mut out = json!({"backend": backend, "versions": total, "fill_secs": fill_secs});
    let up = time_walks(
        &store,
        |r| {
            let (m, v) = pick(r, 20.min(per), per);
            WalkFrom::Version(model_ref(m), VersionSelector::Number(v as i64), Direction::Up)
        },
        args.queries,
    )
    .await?;
    out["store_up_10"] = show("store: 10 levels up", &up);
    let down = time_walks(
        &store,
        |r| {
            let (m, v) = pick(r, 1, 50.min(per));
            WalkFrom::Version(model_ref(m), VersionSelector::Number(v as i64), Direction::Down)
        },
        args.queries,
    )
    .await?;
    out["store_down_10"] = show("store: 10 levels down", &down);
    let impact = time_walks(
        &store,
        |r| WalkFrom::Input {
            kind: InputKind::Dataset,
            name: format!("corpus-{}", r.below(DATASETS)),
            reference: String::new(),
        },
        args.queries,
    )
    .await?;
    out["store_impact_dataset_10"] = show("store: impact of a dataset, 10 levels", &impact);

    // The merging line: many paths of different lengths to every version.
    let n = args.merge_versions;
    if args.database.is_none() {
        fill_merges(&store, n).await?;
    }
    let line = |v: usize, d: Direction| WalkFrom::Version(merge_model(), VersionSelector::Number(v as i64), d);
    let down50 = time_walks_depth(&store, |_| line(1, Direction::Down), args.queries.min(50), 50).await?;
    out["merges_down_50"] = show("merging line: 50 levels down from v1", &down50);
    let up50 = time_walks_depth(&store, |_| line(n, Direction::Up), args.queries.min(50), 50).await?;
    out["merges_up_50"] = show("merging line: 50 levels up from the last", &up50);
    let first: i64 = store.get_version(&merge_model(), &VersionSelector::Number(1)).await?.id;
    let (old_ms, old_rows, old_edges) = recursive_walk(&url, first, 50, args.queries.min(10)).await?;
    let old = stats(old_ms, &[usize::try_from(old_edges).unwrap_or(0)]);
    out["merges_down_50_recursive_query"] = show("  the recursive query used before, same walk", &old);
    println!("  (it produced {old_rows} rows for {old_edges} distinct edges)");
    out["merges_recursive_rows"] = json!(old_rows);
    println!("recursive query / store walk (p50): {:.1}x", old.p50 / down50.p50);

    // Over HTTP: the same application the server runs.
    let state = cairn_server::AppState::new(store.clone(), settings).await?;
    let url = cairn_test_utils::bench::serve_on_loopback(cairn_server::build_router(state)).await?;
    let http = reqwest::Client::new();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut graph_ms, mut graph_edges, mut walk_ms, mut walk_edges) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.queries {
        let (m, v) = pick(&mut rng, 20.min(per), per);
        let started = Instant::now();
        let g: Value = http
            .get(format!("{url}/api/v1/models/{}/versions/{v}/lineage/graph?direction=up&depth=10", model_ref(m)))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        graph_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        graph_edges.push(g["edges"].as_array().map_or(0, Vec::len));
        let started = Instant::now();
        walk_edges.push(client_walk(&http, &url, m, v as i64).await?);
        walk_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let graph = stats(graph_ms, &graph_edges);
    let walk = stats(walk_ms, &walk_edges);
    out["http_graph_up_10"] = show("HTTP: graph endpoint, 10 levels up", &graph);
    out["http_client_walk_up_10"] = show("HTTP: client walk, one request per version", &walk);
    let ratio = walk.p50 / graph.p50;
    println!("client walk / graph endpoint (p50): {ratio:.1}x");
    out["client_walk_over_graph_p50"] = json!(ratio);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
