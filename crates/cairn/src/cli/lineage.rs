//! `cairn lineage`: what a version was made from and what was made from it
//! (docs/SUPPLY_CHAIN.md).
//!
//! - `cairn lineage ns/name:3 [--up|--down] [--depth N]`: the graph as a tree;
//! - `cairn lineage add ns/name:3 --dataset … --base-model … --run … --code …`;
//! - `cairn lineage remove ns/name:3 ID` (while the version is a draft);
//! - `cairn lineage impact --dataset imagenet --stage production`: the versions affected.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use cairn_api_types as api;
use cairn_client::lineage::{GraphQuery, ImpactQuery};
use cairn_core::VersionRef;
use cairn_core::lineage::{BaseModel, Upstream};
use clap::{Args, Subcommand};

use super::UsageError;

/// Lineage inputs as flags, shared by `cairn push` and `cairn lineage add`.
#[derive(Args, Debug, Default, Clone)]
pub struct LineageFlags {
    /// A dataset it was trained on: NAME[@VERSION], or name=…,version=…,uri=…,digest=sha256:… (repeatable)
    #[arg(long = "dataset", value_name = "DATASET")]
    pub datasets: Vec<String>,
    /// A model it derives from: namespace/name:N or namespace/name@alias here, or hf:org/name[@revision] / https://… elsewhere (repeatable)
    #[arg(long = "base-model", value_name = "MODEL")]
    pub base_models: Vec<String>,
    /// The training run: PLATFORM:ID (mlflow:4f2a…), or platform=…,id=…,uri=…,param.NAME=VALUE (repeatable)
    #[arg(long = "run", value_name = "RUN")]
    pub runs: Vec<String>,
    /// The code: REPOSITORY@COMMIT with the full commit id (repeatable)
    #[arg(long = "code", value_name = "REPO@COMMIT")]
    pub code: Vec<String>,
}

impl LineageFlags {
    /// The inputs on the wire, each checked here first so a typo fails before any upload.
    pub fn inputs(&self) -> Result<Vec<api::LineageInput>, UsageError> {
        let bad = |flag: &str, e: cairn_core::lineage::LineageError| UsageError(format!("--{flag}: {e}"));
        let mut out = Vec::new();
        for d in &self.datasets {
            out.push(wire(Upstream::parse_dataset(d).map_err(|e| bad("dataset", e))?));
        }
        for r in &self.runs {
            out.push(wire(Upstream::parse_run(r).map_err(|e| bad("run", e))?));
        }
        for c in &self.code {
            out.push(wire(Upstream::parse_code(c).map_err(|e| bad("code", e))?));
        }
        for m in &self.base_models {
            out.push(wire(Upstream::parse_base_model(m).map_err(|e| bad("base-model", e))?));
        }
        Ok(out)
    }

    fn is_empty(&self) -> bool {
        self.datasets.is_empty() && self.base_models.is_empty() && self.runs.is_empty() && self.code.is_empty()
    }
}

fn wire(up: Upstream) -> api::LineageInput {
    match up {
        Upstream::Dataset(d) => {
            api::LineageInput::Dataset { name: d.name, version: d.version, uri: d.uri, digest: d.digest }
        }
        Upstream::Run(r) => api::LineageInput::Run { platform: r.platform, id: r.id, uri: r.uri, params: r.params },
        Upstream::Code(c) => api::LineageInput::Code { repository: c.repository, commit: c.commit },
        Upstream::BaseModel(BaseModel::Registry(r)) => {
            api::LineageInput::BaseModel { model: r.to_string(), revision: String::new() }
        }
        Upstream::BaseModel(BaseModel::External { id, revision }) => {
            api::LineageInput::BaseModel { model: id, revision }
        }
    }
}

/// Arguments of `cairn lineage`.
#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  cairn lineage team/chat:3                 # what it was made from\n  \
                  cairn lineage team/llm:7 --down --depth 3  # what derives from it\n  \
                  cairn lineage add team/chat:3 --dataset ultrachat@2024-05 --base-model team/llm:7\n  \
                  cairn lineage impact --dataset ultrachat --stage production"
)]
pub struct LineageArgs {
    #[command(subcommand)]
    command: Option<LineageCommand>,
    /// The version: namespace/name:N, namespace/name@alias or namespace/name:1.4.2
    #[arg(required = true)]
    reference: Option<String>,
    /// Walk upstream: what the version was made from (the default)
    #[arg(long, conflicts_with = "down")]
    up: bool,
    /// Walk downstream: the versions derived from it
    #[arg(long)]
    down: bool,
    /// Steps to walk, 1 to 50
    #[arg(long, default_value_t = cairn_core::lineage::DEFAULT_DEPTH)]
    depth: u32,
    /// Print the graph as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum LineageCommand {
    /// Record inputs of an existing version (those already recorded are kept)
    Add {
        /// The version: namespace/name:N or namespace/name@alias
        reference: String,
        #[command(flatten)]
        inputs: LineageFlags,
        /// Print the version's inputs as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a recorded input by its id (only while the version is a draft or sent back for changes)
    Remove {
        /// The version: namespace/name:N or namespace/name@alias
        reference: String,
        /// The input's id (`cairn lineage … --json` shows it)
        id: i64,
    },
    /// Which versions a dataset, run, commit or model affects, through any number of base-model steps
    Impact(ImpactArgs),
}

#[derive(Args, Debug)]
#[command(disable_version_flag = true)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["dataset", "run", "code", "base_model", "version"])))]
struct ImpactArgs {
    /// A dataset: NAME or NAME@VERSION
    #[arg(long)]
    dataset: Option<String>,
    /// A training run: PLATFORM:ID
    #[arg(long)]
    run: Option<String>,
    /// A commit: REPOSITORY@COMMIT
    #[arg(long)]
    code: Option<String>,
    /// A model outside this registry: hf:org/name[@revision]
    #[arg(long)]
    base_model: Option<String>,
    /// A version here: namespace/name:N or namespace/name@alias
    #[arg(long)]
    version: Option<String>,
    /// Only versions in this stage (e.g. production)
    #[arg(long)]
    stage: Option<String>,
    /// Steps to walk, 1 to 50
    #[arg(long, default_value_t = cairn_core::lineage::DEFAULT_DEPTH)]
    depth: u32,
    /// Print the answer as JSON
    #[arg(long)]
    json: bool,
}

/// Runs `cairn lineage`.
pub async fn run(args: LineageArgs) -> ExitCode {
    match lineage(args).await {
        Ok(code) => code,
        Err(e) => super::fail(&e),
    }
}

fn reference(s: &str) -> Result<(String, String), UsageError> {
    let r = VersionRef::parse(s).map_err(|e| UsageError(e.to_string()))?;
    let version = r.selector.to_string();
    Ok((r.model.to_string(), version))
}

async fn lineage(args: LineageArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(LineageCommand::Add { reference: r, inputs, json }) => {
            if inputs.is_empty() {
                return Err(UsageError("say what to record: --dataset, --base-model, --run or --code".into()).into());
            }
            let (model, version) = reference(&r)?;
            let wire = inputs.inputs()?;
            let client = super::client()?;
            let answer = client.add_lineage(&model, &version, wire).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{}:{} now records {} input(s):", answer.model, answer.version, answer.inputs.len());
                for e in &answer.inputs {
                    println!("  {:>5}  {}", e.id, describe(e));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(LineageCommand::Remove { reference: r, id }) => {
            let (model, version) = reference(&r)?;
            super::client()?.remove_lineage(&model, &version, id).await?;
            println!("Removed input {id} of {r}");
            Ok(ExitCode::SUCCESS)
        }
        Some(LineageCommand::Impact(a)) => impact(a).await,
        None => {
            let r = args.reference.unwrap_or_default();
            let (model, version) = reference(&r)?;
            let direction = if args.down { "down" } else { "up" };
            let q = GraphQuery { direction: Some(direction.into()), depth: Some(args.depth) };
            let g = super::client()?.lineage_graph(&model, &version, &q).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&g)?);
            } else {
                print!("{}", render_tree(&g));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn impact(a: ImpactArgs) -> anyhow::Result<ExitCode> {
    let q = ImpactQuery {
        dataset: a.dataset,
        run: a.run,
        code: a.code,
        base_model: a.base_model,
        version: a.version,
        stage: a.stage.clone(),
        depth: Some(a.depth),
    };
    let answer = super::client()?.lineage_impact(&q).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let stage = a.stage.map(|s| format!(" in {s}")).unwrap_or_default();
    if answer.versions.is_empty() {
        println!("No version{stage} is affected by {}.", answer.source);
    } else {
        let rows: Vec<Vec<String>> = answer
            .versions
            .iter()
            .map(|v| {
                vec![
                    format!("{}:{}", v.model, v.version),
                    v.semver.clone().unwrap_or_default(),
                    v.stage.clone(),
                    v.depth.to_string(),
                ]
            })
            .collect();
        println!("{} version(s){stage} affected by {}:", answer.versions.len(), answer.source);
        print!("{}", crate::table::render(&["VERSION", "SEMVER", "STAGE", "STEPS"], &rows));
    }
    if answer.hidden > 0 {
        println!("{} more in namespaces you may not read.", answer.hidden);
    }
    if answer.truncated {
        println!("(the walk stopped at its limit: there may be more)");
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(e: &api::LineageEdge) -> String {
    let at = |name: &str, r: &str| if r.is_empty() { name.to_owned() } else { format!("{name}@{r}") };
    match e.kind.as_str() {
        "dataset" => {
            let mut s = format!("dataset     {}", at(&e.name, &e.reference));
            if !e.uri.is_empty() {
                s.push_str(&format!("  {}", e.uri));
            }
            if !e.digest.is_empty() {
                s.push_str(&format!("  {}", e.digest));
            }
            s
        }
        "run" => format!("run         {}:{}", e.platform, e.name),
        "code" => format!("code        {}", at(&e.name, &e.reference)),
        _ if e.from.starts_with("version:") => format!("base model  {}:{}", e.name, e.reference),
        _ => format!("base model  {}", at(&e.name, &e.reference)),
    }
}

fn node_label(n: &api::LineageNode) -> String {
    match n.kind.as_str() {
        "version" => {
            let mut s = format!("{}:{}", n.model.as_deref().unwrap_or("?"), n.version.unwrap_or_default());
            if let Some(sv) = &n.semver {
                s.push_str(&format!(" ({sv})"));
            }
            if let Some(st) = &n.stage {
                s.push_str(&format!("  [{st}]"));
            }
            s
        }
        "hidden" => "(a version in a namespace you may not read)".into(),
        _ => n.id.clone(),
    }
}

/// The graph as an indented tree from its root; a version met twice is printed once.
pub fn render_tree(g: &api::LineageGraph) -> String {
    let nodes: BTreeMap<&str, &api::LineageNode> = g.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let up = g.direction == "up";
    let mut children: BTreeMap<&str, Vec<&api::LineageEdge>> = BTreeMap::new();
    for e in &g.edges {
        let key = if up { e.to.as_str() } else { e.from.as_str() };
        children.entry(key).or_default().push(e);
    }
    let mut out = String::new();
    let Some(root) = g.root.as_deref() else { return out };
    out.push_str(&nodes.get(root).map_or_else(|| root.to_owned(), |n| node_label(n)));
    out.push('\n');
    let mut printed = BTreeSet::from([root]);
    fn walk<'a>(
        at: &'a str,
        prefix: &str,
        up: bool,
        children: &BTreeMap<&'a str, Vec<&'a api::LineageEdge>>,
        nodes: &BTreeMap<&'a str, &'a api::LineageNode>,
        printed: &mut BTreeSet<&'a str>,
        out: &mut String,
    ) {
        let list = children.get(at).cloned().unwrap_or_default();
        for (i, e) in list.iter().enumerate() {
            let last = i + 1 == list.len();
            let next = if up { e.from.as_str() } else { e.to.as_str() };
            let label = match nodes.get(next) {
                Some(n) if n.kind == "version" || n.kind == "hidden" => {
                    let rel = if up { e.kind.replace('_', " ") } else { "derived".into() };
                    format!("{rel}  {}", node_label(n))
                }
                _ => describe(e),
            };
            let again = !printed.insert(next) && children.contains_key(next);
            out.push_str(&format!(
                "{prefix}{}{label}{}\n",
                if last { "└─ " } else { "├─ " },
                if again { "  (shown above)" } else { "" }
            ));
            if !again {
                let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
                walk(next, &deeper, up, children, nodes, printed, out);
            }
        }
    }
    walk(root, "", up, &children, &nodes, &mut printed, &mut out);
    if g.truncated {
        out.push_str("(the walk stopped at its limit: there may be more)\n");
    }
    out
}
