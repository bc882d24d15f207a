//! Lineage (docs/SUPPLY_CHAIN.md): the inputs recorded for a version, walks up and down the
//! graph, and impact queries ("which production versions were trained on dataset X?").
//!
//! A walk only passes through versions the caller may read. A version in another namespace
//! is shown as a `hidden` node — that something is there, not what — and the walk does not
//! continue past it; impact answers count such versions without naming them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::lineage::{self, BaseModel, Code, Dataset, Direction, InputKind, Run, Upstream};
use cairn_core::{Permission, VersionRef, VersionSelector};
use cairn_store::lineage::{LineageEdge, LineageWalk, VersionNode, WalkFrom};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{authorize, authorize_model, hidden_model, model_ref};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

/// Most edges a walk returns.
pub const WALK_LIMIT: usize = 10_000;

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(get_lineage, add_lineage))
        .routes(routes!(remove_lineage))
        .routes(routes!(lineage_graph))
        .routes(routes!(impact))
}

/// Turns wire inputs into checked ones. A base model in this registry must be readable by the
/// caller: one they may not see is answered as if it did not exist.
pub(crate) fn inputs(caller: &Caller, wire: Vec<api::LineageInput>) -> Result<Vec<Upstream>, ApiError> {
    if wire.len() > lineage::MAX_INPUTS {
        return Err(ApiError::invalid(format!(
            "at most {} lineage inputs may be recorded at once (got {})",
            lineage::MAX_INPUTS,
            wire.len()
        )));
    }
    wire.into_iter()
        .map(|i| {
            let up = match i {
                api::LineageInput::Dataset { name, version, uri, digest } => {
                    Upstream::Dataset(Dataset { name, version, uri, digest })
                }
                api::LineageInput::Run { platform, id, uri, params } => {
                    Upstream::Run(Run { platform, id, uri, params })
                }
                api::LineageInput::Code { repository, commit } => {
                    Upstream::Code(Code { repository, commit: commit.to_ascii_lowercase() })
                }
                api::LineageInput::BaseModel { model, revision } => {
                    let parsed = Upstream::parse_base_model(&model).map_err(|e| ApiError::invalid(e.0))?;
                    match parsed {
                        Upstream::BaseModel(BaseModel::External { id, .. }) => {
                            Upstream::BaseModel(BaseModel::External { id, revision })
                        }
                        registry if revision.is_empty() => registry,
                        _ => {
                            return Err(ApiError::invalid(format!(
                                "base model {model}: a revision applies only to a model outside this registry"
                            )));
                        }
                    }
                }
            };
            up.check().map_err(|e| ApiError::invalid(e.0))?;
            if let Upstream::BaseModel(BaseModel::Registry(r)) = &up
                && !readable(caller, r.model.namespace.as_str())
            {
                return Err(hidden_model(&r.model));
            }
            Ok(up)
        })
        .collect()
}

fn readable(caller: &Caller, namespace: &str) -> bool {
    caller.principal.check(Permission::ModelRead, Some(namespace)).is_ok()
}

fn version_node_id(v: &VersionNode) -> String {
    format!("version:{}:{}", v.model, v.number)
}

/// The node an edge comes from, when it is not a version of this registry.
fn input_node(e: &LineageEdge) -> api::LineageNode {
    let (kind, id) = match e.kind.as_str() {
        "dataset" if e.reference.is_empty() => ("dataset", format!("dataset:{}", e.name)),
        "dataset" => ("dataset", format!("dataset:{}@{}", e.name, e.reference)),
        "run" => ("run", format!("run:{}:{}", e.platform, e.name)),
        "code" => ("code", format!("code:{}@{}", e.name, e.reference)),
        _ if e.reference.is_empty() => ("model", format!("model:{}", e.name)),
        _ => ("model", format!("model:{}@{}", e.name, e.reference)),
    };
    api::LineageNode {
        id,
        kind: kind.into(),
        depth: 0,
        model: None,
        version: None,
        stage: None,
        semver: None,
        digest: (!e.digest.is_empty()).then(|| e.digest.clone()),
        name: Some(e.name.clone()),
        reference: (!e.reference.is_empty()).then(|| e.reference.clone()),
    }
}

fn version_node(v: &VersionNode, depth: u32) -> api::LineageNode {
    api::LineageNode {
        id: version_node_id(v),
        kind: "version".into(),
        depth,
        model: Some(v.model.clone()),
        version: Some(v.number),
        stage: Some(v.stage.clone()),
        semver: v.semver.clone(),
        digest: Some(v.digest.clone()),
        name: None,
        reference: None,
    }
}

fn edge_out(e: &LineageEdge, from: String, to: String) -> api::LineageEdge {
    api::LineageEdge {
        id: e.id,
        kind: e.kind.clone(),
        name: e.name.clone(),
        reference: e.reference.clone(),
        uri: e.uri.clone(),
        digest: e.digest.clone(),
        platform: e.platform.clone(),
        params: e.params.clone(),
        from,
        to,
        recorded_at: rfc3339(e.created_at),
        recorded_by: e.created_by.clone(),
    }
}

/// Builds the answer from what the store found, walking it again breadth-first from the
/// start so that depths are shortest distances and nothing past an unreadable version shows.
fn graph(caller: &Caller, walk: &LineageWalk, direction: Direction, depth: u32) -> api::LineageGraph {
    let mut nodes: BTreeMap<String, api::LineageNode> = BTreeMap::new();
    let mut edges = Vec::new();
    let mut hidden: HashMap<i64, String> = HashMap::new();
    let mut seen: HashSet<i64> = HashSet::new();
    let mut queue: VecDeque<(i64, u32)> = VecDeque::new();
    // Edges by the version they lead away from in this direction.
    let mut by_version: HashMap<i64, Vec<&LineageEdge>> = HashMap::new();
    for e in &walk.edges {
        let key = match direction {
            Direction::Up => Some(e.version_id),
            Direction::Down => e.parent_version_id,
        };
        if let Some(k) = key {
            by_version.entry(k).or_default().push(e);
        }
    }
    let mut visit =
        |vid: i64, d: u32, nodes: &mut BTreeMap<String, api::LineageNode>, queue: &mut VecDeque<(i64, u32)>| {
            if let Some(h) = hidden.get(&vid) {
                return Some(h.clone());
            }
            let v = walk.versions.get(&vid)?;
            if !readable(caller, &v.namespace) {
                let id = format!("hidden:{}", hidden.len() + 1);
                hidden.insert(vid, id.clone());
                nodes.insert(
                    id.clone(),
                    api::LineageNode {
                        id: id.clone(),
                        kind: "hidden".into(),
                        depth: d,
                        model: None,
                        version: None,
                        stage: None,
                        semver: None,
                        digest: None,
                        name: None,
                        reference: None,
                    },
                );
                return Some(id);
            }
            if seen.insert(vid) {
                nodes.insert(version_node_id(v), version_node(v, d));
                if d < depth {
                    queue.push_back((vid, d));
                }
            }
            Some(version_node_id(v))
        };
    let root = match &walk.root {
        Some(r) => {
            visit(r.id, 0, &mut nodes, &mut queue);
            Some(version_node_id(r))
        }
        None => {
            // An impact walk: the versions recording the input are its first step.
            for e in walk.edges.iter().filter(|e| e.kind != "base_model" || e.parent_version_id.is_none()) {
                let from = input_node(e);
                let from_id = from.id.clone();
                nodes.entry(from_id.clone()).or_insert(from);
                if let Some(to) = visit(e.version_id, 1, &mut nodes, &mut queue) {
                    edges.push(edge_out(e, from_id, to));
                }
            }
            None
        }
    };
    while let Some((vid, d)) = queue.pop_front() {
        let Some(v) = walk.versions.get(&vid) else { continue };
        let here = version_node_id(v);
        for e in by_version.get(&vid).into_iter().flatten() {
            match direction {
                Direction::Up => {
                    let from = match e.parent_version_id {
                        Some(p) if walk.versions.contains_key(&p) => visit(p, d + 1, &mut nodes, &mut queue),
                        _ => None,
                    };
                    let from = from.unwrap_or_else(|| {
                        let mut n = input_node(e);
                        n.depth = d + 1;
                        let id = n.id.clone();
                        nodes.entry(id.clone()).or_insert(n);
                        id
                    });
                    let mut out = edge_out(e, from.clone(), here.clone());
                    if from.starts_with("hidden:") {
                        out.name.clear();
                        out.reference.clear();
                    }
                    edges.push(out);
                }
                Direction::Down => {
                    if let Some(to) = visit(e.version_id, d + 1, &mut nodes, &mut queue) {
                        let mut out = edge_out(e, here.clone(), to.clone());
                        if to.starts_with("hidden:") {
                            out.params.clear();
                            out.uri.clear();
                        }
                        edges.push(out);
                    }
                }
            }
        }
    }
    let mut nodes: Vec<api::LineageNode> = nodes.into_values().collect();
    nodes.sort_by(|a, b| a.depth.cmp(&b.depth).then_with(|| a.id.cmp(&b.id)));
    api::LineageGraph { direction: direction.as_str().into(), depth, root, nodes, edges, truncated: walk.truncated }
}

fn version_lineage(v: &cairn_store::version::Version, edges: &[LineageEdge]) -> api::VersionLineage {
    let model = format!("{}/{}", v.namespace, v.model);
    let to = format!("version:{model}:{}", v.version);
    api::VersionLineage {
        version: v.version,
        inputs: edges
            .iter()
            .map(|e| {
                let from = match (e.kind.as_str(), e.parent_version_id) {
                    ("base_model", Some(_)) => format!("version:{}:{}", e.name, e.reference),
                    _ => input_node(e).id,
                };
                edge_out(e, from, to.clone())
            })
            .collect(),
        model,
    }
}

/// The inputs recorded for a version: datasets, runs, code and base models.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/lineage", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)")),
    responses((status = 200, body = api::VersionLineage), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn get_lineage(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<api::VersionLineage>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.lineage").await?;
    let (v, edges) = state.store.version_lineage(&model, &VersionSelector::parse(&version)?).await?;
    Ok(Json(version_lineage(&v, &edges)))
}

/// Record more inputs of a version (audited as `version.lineage.add`). Inputs it already has
/// are left as they are, so a retry changes nothing. A base model here must be readable by
/// the caller and must not derive from this version.
#[utoipa::path(post, path = "/api/v1/models/{namespace}/{name}/versions/{version}/lineage", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)")),
    request_body = api::AddLineage,
    responses((status = 200, body = api::VersionLineage), (status = 400, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn add_lineage(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<api::AddLineage>,
) -> ApiResult<Json<api::VersionLineage>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "version.lineage.add").await?;
    let ups = inputs(&caller, body.inputs)?;
    let (v, edges) = state.store.add_lineage(&caller.audit, &model, &VersionSelector::parse(&version)?, &ups).await?;
    Ok(Json(version_lineage(&v, &edges)))
}

/// Remove a recorded input (audited as `version.lineage.remove`); only while the version is a
/// draft or sent back for changes (409 otherwise).
#[utoipa::path(delete, path = "/api/v1/models/{namespace}/{name}/versions/{version}/lineage/{id}", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)"), ("id" = i64, Path)),
    responses((status = 204), (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.write"))))]
pub async fn remove_lineage(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version, id)): Path<(String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelWrite, &model, "version.lineage.remove").await?;
    // Parsed after authorisation, so a caller without access learns nothing from the answer.
    let id: i64 = id.parse().map_err(|_| ApiError::not_found(format!("no lineage input {id:?}")))?;
    state.store.remove_lineage(&caller.audit, &model, &VersionSelector::parse(&version)?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of a lineage walk.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    /// `up` (what the version was made from, default) or `down` (what was made from it).
    pub direction: Option<String>,
    /// Steps to walk, 1 to 50 (default 10).
    pub depth: Option<u32>,
}

fn direction(s: Option<&str>) -> Result<Direction, ApiError> {
    match s {
        None => Ok(Direction::Up),
        Some(s) => Direction::parse(s)
            .ok_or_else(|| ApiError::invalid(format!("direction must be 'up' or 'down' (got {s:?})"))),
    }
}

/// The lineage graph around a version: upstream (its inputs, its base models' inputs, …) or
/// downstream (the versions derived from it, theirs, …), up to `depth` steps.
#[utoipa::path(get, path = "/api/v1/models/{namespace}/{name}/versions/{version}/lineage/graph", tag = "versions",
    params(("namespace" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "A number, @alias or semver label (1.4.2)"), GraphQuery),
    responses((status = 200, body = api::LineageGraph), (status = 400, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("model.read"))))]
pub async fn lineage_graph(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, version)): Path<(String, String, String)>,
    ApiQuery(q): ApiQuery<GraphQuery>,
) -> ApiResult<Json<api::LineageGraph>> {
    let model = model_ref(&namespace, &name)?;
    authorize_model(&state, &caller, Permission::ModelRead, &model, "version.lineage").await?;
    let direction = direction(q.direction.as_deref())?;
    let depth = lineage::depth(q.depth).map_err(|e| ApiError::invalid(e.0))?;
    let from = WalkFrom::Version(model, VersionSelector::parse(&version)?, direction);
    let walk = state.store.walk_lineage(&from, depth, WALK_LIMIT).await?;
    Ok(Json(graph(&caller, &walk, direction, depth)))
}

/// Query of an impact search: exactly one of `dataset`, `run`, `code`, `base_model`, `version`.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImpactQuery {
    /// A dataset: `name` or `name@version`.
    pub dataset: Option<String>,
    /// A run: `platform:id`.
    pub run: Option<String>,
    /// A commit: `repository@commit`.
    pub code: Option<String>,
    /// A model outside this registry: `hf:org/name` (or with `@revision`).
    pub base_model: Option<String>,
    /// A version here: `ns/name:3` or `ns/name@alias`.
    pub version: Option<String>,
    /// Only versions in this lifecycle stage (e.g. `production`).
    pub stage: Option<String>,
    /// Steps to walk, 1 to 50 (default 10).
    pub depth: Option<u32>,
}

/// Impact analysis: the versions trained on a dataset, produced by a run, built from a
/// commit, or derived (through any number of base-model steps, up to `depth`) from a version
/// or an external model — optionally only those in one stage, e.g. `production`. Versions the
/// caller may not read are counted in `hidden`, not named.
#[utoipa::path(get, path = "/api/v1/lineage/impact", tag = "versions", params(ImpactQuery),
    responses((status = 200, body = api::Impact), (status = 400, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn impact(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ImpactQuery>,
) -> ApiResult<Json<api::Impact>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "lineage.impact", "lineage").await?;
    caller.principal.require_mfa()?;
    let depth = lineage::depth(q.depth).map_err(|e| ApiError::invalid(e.0))?;
    if let Some(s) = &q.stage
        && cairn_core::lifecycle::Stage::parse(s).is_none()
    {
        return Err(ApiError::invalid(format!("unknown stage {s:?}")));
    }
    let asked = [&q.dataset, &q.run, &q.code, &q.base_model, &q.version].iter().filter(|o| o.is_some()).count();
    if asked != 1 {
        return Err(ApiError::invalid("say what to analyse: exactly one of dataset, run, code, base_model or version"));
    }
    let bad = |e: lineage::LineageError| ApiError::invalid(e.0);
    let (from, source) = if let Some(d) = &q.dataset {
        let Upstream::Dataset(d) = Upstream::parse_dataset(d).map_err(bad)? else { unreachable!() };
        let node = if d.version.is_empty() {
            format!("dataset:{}", d.name)
        } else {
            format!("dataset:{}@{}", d.name, d.version)
        };
        (WalkFrom::Input { kind: InputKind::Dataset, name: d.name, reference: d.version }, node)
    } else if let Some(r) = &q.run {
        let Upstream::Run(r) = Upstream::parse_run(r).map_err(bad)? else { unreachable!() };
        let node = format!("run:{}:{}", r.platform, r.id);
        (WalkFrom::Input { kind: InputKind::Run, name: r.id, reference: String::new() }, node)
    } else if let Some(c) = &q.code {
        let Upstream::Code(c) = Upstream::parse_code(c).map_err(bad)? else { unreachable!() };
        let node = format!("code:{}@{}", c.repository, c.commit);
        (WalkFrom::Input { kind: InputKind::Code, name: c.repository, reference: c.commit }, node)
    } else if let Some(m) = &q.base_model {
        match Upstream::parse_base_model(m).map_err(bad)? {
            Upstream::BaseModel(BaseModel::External { id, revision }) => {
                let node = format!("model:{m}");
                (WalkFrom::Input { kind: InputKind::BaseModel, name: id, reference: revision }, node)
            }
            _ => {
                return Err(ApiError::invalid("base_model is for models outside this registry; use version=ns/name:N"));
            }
        }
    } else {
        let r = VersionRef::parse(q.version.as_deref().unwrap_or_default())?;
        authorize_model(&state, &caller, Permission::ModelRead, &r.model, "lineage.impact").await?;
        let node = format!("version:{r}");
        (WalkFrom::Version(r.model, r.selector, Direction::Down), node)
    };
    let walk = state.store.walk_lineage(&from, depth, WALK_LIMIT).await?;
    let g = graph(&caller, &walk, Direction::Down, depth);
    let root = g.root.clone();
    let hidden = g.nodes.iter().filter(|n| n.kind == "hidden").count();
    let versions = g
        .nodes
        .into_iter()
        .filter(|n| n.kind == "version" && Some(&n.id) != root.as_ref())
        .filter(|n| q.stage.is_none() || n.stage == q.stage)
        .map(|n| api::ImpactedVersion {
            model: n.model.unwrap_or_default(),
            version: n.version.unwrap_or_default(),
            stage: n.stage.unwrap_or_default(),
            semver: n.semver,
            depth: n.depth,
        })
        .collect();
    Ok(Json(api::Impact { source, versions, hidden, truncated: walk.truncated }))
}
