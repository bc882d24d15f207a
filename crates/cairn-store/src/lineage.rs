//! Lineage edges (`lineage_edges`): what each version was made from, and walks over them.
//!
//! Inputs arrive checked (`cairn_core::lineage`); a base model in this registry is resolved
//! here, inside the transaction, to the version it names (an alias or label becomes its
//! number), and refused if it would make the version its own ancestor. Every change is
//! audited in the same transaction. Walks go level by level, one indexed query per level over
//! the whole frontier (migration 0014's indexes), and expand each version once, so their cost
//! grows with what they return, not with the registry or the number of paths.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use cairn_core::lineage::{BaseModel, Direction, InputKind, Upstream};
use cairn_core::{ModelRef, VersionSelector};
use serde::Serialize;

use crate::db::{Conn, Param};
use crate::version::{Version, find as find_version, target};
use crate::{AuditContext, Store, StoreError, audit, params};

/// One recorded input of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageEdge {
    /// Its id (to remove it).
    pub id: i64,
    /// The version it is an input of (internal id).
    #[serde(skip)]
    pub version_id: i64,
    /// `dataset`, `run`, `code` or `base_model`.
    pub kind: String,
    /// Dataset name, run id, repository, or model (`ns/name` here, `hf:org/name` elsewhere).
    pub name: String,
    /// Dataset version, commit, base model version number or revision; may be empty.
    #[serde(rename = "ref")]
    pub reference: String,
    /// URI of a dataset or run.
    pub uri: String,
    /// Digest of a dataset.
    pub digest: String,
    /// Platform of a run.
    pub platform: String,
    /// Parameters of a run.
    pub params: BTreeMap<String, String>,
    /// The base model's version here (internal id), if it is one and still exists.
    #[serde(skip)]
    pub parent_version_id: Option<i64>,
    /// Recorded at (ms).
    pub created_at: i64,
    /// Recorded by.
    pub created_by: String,
}

/// Fields in the order of `EDGE_COLUMNS`: walks read rows as JSON arrays (see `fetch_rows`).
#[derive(sqlx::FromRow, serde::Deserialize)]
struct EdgeRow {
    id: i64,
    version_id: i64,
    kind: String,
    name: String,
    reference: String,
    uri: String,
    digest: String,
    platform: String,
    params: String,
    parent_version_id: Option<i64>,
    created_at: i64,
    created_by: String,
}

impl From<EdgeRow> for LineageEdge {
    fn from(r: EdgeRow) -> Self {
        Self {
            id: r.id,
            version_id: r.version_id,
            kind: r.kind,
            name: r.name,
            reference: r.reference,
            uri: r.uri,
            digest: r.digest,
            platform: r.platform,
            params: serde_json::from_str(&r.params).unwrap_or_default(),
            parent_version_id: r.parent_version_id,
            created_at: r.created_at,
            created_by: r.created_by,
        }
    }
}

/// The names `EDGE_COLUMNS` gives its columns, in order.
const EDGE_NAMES: [&str; 12] = [
    "id",
    "version_id",
    "kind",
    "name",
    "reference",
    "uri",
    "digest",
    "platform",
    "params",
    "parent_version_id",
    "created_at",
    "created_by",
];

const EDGE_COLUMNS: &str = "e.id, e.version_id, e.kind, e.name, e.ref AS reference, e.uri, e.digest, e.platform, \
                            e.params, e.parent_version_id, e.created_at, e.created_by";

/// A version met on a walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionNode {
    /// Internal id.
    #[serde(skip)]
    pub id: i64,
    /// The model's namespace.
    pub namespace: String,
    /// The model's full name.
    pub model: String,
    /// The version number.
    pub number: i64,
    /// Its lifecycle stage.
    pub stage: String,
    /// Its semantic version label.
    pub semver: Option<String>,
    /// Its manifest digest.
    pub digest: String,
}

/// What a walk found: the edges, and every version they touch.
#[derive(Debug, Clone, Default)]
pub struct LineageWalk {
    /// The version the walk started from, if it started from one.
    pub root: Option<VersionNode>,
    /// The edges, in the order they were recorded.
    pub edges: Vec<LineageEdge>,
    /// The versions at either end of an edge (and the root), by internal id.
    pub versions: BTreeMap<i64, VersionNode>,
    /// More edges than the limit were found; `edges` holds the `limit` nearest (fewest steps
    /// from the start, then in recording order).
    pub truncated: bool,
}

/// Where a downstream walk starts: from a version, or from every version with a given input.
#[derive(Debug, Clone)]
pub enum WalkFrom {
    /// A version (and the direction to walk).
    Version(ModelRef, VersionSelector, Direction),
    /// Every version that records this input (`ref` empty: any version of it); downstream.
    Input {
        /// Its kind.
        kind: InputKind,
        /// Dataset name, run id, repository or external model id.
        name: String,
        /// Dataset version, commit or revision; empty matches any.
        reference: String,
    },
}

/// The stored form of one input: kind, name, ref, uri, digest, platform, params, parent.
struct Row {
    kind: InputKind,
    name: String,
    reference: String,
    uri: String,
    digest: String,
    platform: String,
    params: String,
    parent: Option<i64>,
}

/// Turns a checked input into its row, resolving a base model here to its version.
async fn row(conn: &mut Conn<'_>, version_id: i64, up: &Upstream) -> Result<Row, StoreError> {
    up.check().map_err(|e| StoreError::Invalid(e.0))?;
    let mut r = Row {
        kind: up.kind(),
        name: String::new(),
        reference: String::new(),
        uri: String::new(),
        digest: String::new(),
        platform: String::new(),
        params: "{}".into(),
        parent: None,
    };
    match up {
        Upstream::Dataset(d) => {
            (r.name, r.reference, r.uri, r.digest) =
                (d.name.clone(), d.version.clone(), d.uri.clone(), d.digest.clone());
        }
        Upstream::Run(run) => {
            (r.name, r.platform, r.uri) = (run.id.clone(), run.platform.clone(), run.uri.clone());
            r.params = serde_json::to_string(&run.params).unwrap_or_else(|_| "{}".into());
        }
        Upstream::Code(c) => (r.name, r.reference) = (c.repository.clone(), c.commit.clone()),
        Upstream::BaseModel(BaseModel::External { id, revision }) => {
            (r.name, r.reference) = (id.clone(), revision.clone())
        }
        Upstream::BaseModel(BaseModel::Registry(vr)) => {
            let parent = find_version(conn, &vr.model, &vr.selector).await.map_err(|e| match e {
                StoreError::NotFound(m) => StoreError::Invalid(format!("base model {vr}: {m}")),
                other => other,
            })?;
            if parent.id == version_id {
                return Err(StoreError::Invalid(format!("base model {vr} is the version itself")));
            }
            // The parent must not already derive from this version: lineage stays acyclic.
            let (cycle,): (i64,) = conn
                .fetch_one(
                    "WITH RECURSIVE walk(vid) AS (SELECT CAST($1 AS BIGINT) UNION \
                     SELECT e.version_id FROM lineage_edges e JOIN walk w ON e.parent_version_id = w.vid) \
                     SELECT COUNT(*) FROM walk WHERE vid = $2",
                    params![version_id, parent.id],
                )
                .await?;
            if cycle > 0 {
                return Err(StoreError::Invalid(format!(
                    "base model {vr} already derives from this version: lineage cannot go in a circle"
                )));
            }
            (r.name, r.reference, r.parent) =
                (format!("{}/{}", parent.namespace, parent.model), parent.version.to_string(), Some(parent.id));
        }
    }
    Ok(r)
}

/// Records `inputs` for the version `version_id` inside the caller's transaction, with one
/// `version.lineage.add` event listing what was new; inputs it already has are skipped.
/// Returns how many were new.
pub(crate) async fn insert(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    version_id: i64,
    model: &ModelRef,
    number: i64,
    inputs: &[Upstream],
) -> Result<usize, StoreError> {
    check_count(inputs)?;
    let mut added = Vec::new();
    for up in inputs {
        let r = row(conn, version_id, up).await?;
        if conn.execute(INSERT_EDGE, edge_params(ctx, now, version_id, &r)).await? == 1 {
            added.push(serde_json::json!({"kind": r.kind.as_str(), "name": r.name, "ref": r.reference}));
        }
    }
    if !added.is_empty() {
        audit::record(conn, ctx, now, "version.lineage.add", &target(model, number), None::<&()>, Some(&added)).await?;
    }
    Ok(added.len())
}

/// Records the inputs of version `version_id`, just created (it has none yet), and returns
/// what its `version.create` event records of them (they are part of that change, not an
/// event of their own): a repeated input counts once, and the rows go with the transaction's
/// next call (`Conn::defer`).
pub(crate) async fn insert_new(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    version_id: i64,
    inputs: &[Upstream],
) -> Result<Vec<serde_json::Value>, StoreError> {
    check_count(inputs)?;
    let mut seen = HashSet::new();
    let mut added = Vec::new();
    for up in inputs {
        let r = row(conn, version_id, up).await?;
        if !seen.insert((r.kind.as_str(), r.name.clone(), r.reference.clone())) {
            continue;
        }
        added.push(serde_json::json!({"kind": r.kind.as_str(), "name": r.name, "ref": r.reference}));
        conn.defer(INSERT_EDGE, edge_params(ctx, now, version_id, &r)).await?;
    }
    Ok(added)
}

fn check_count(inputs: &[Upstream]) -> Result<(), StoreError> {
    if inputs.len() > cairn_core::lineage::MAX_INPUTS {
        return Err(StoreError::Invalid(format!(
            "at most {} lineage inputs may be recorded at once (got {})",
            cairn_core::lineage::MAX_INPUTS,
            inputs.len()
        )));
    }
    Ok(())
}

/// Inserts one input; an input the version has already is left as it is.
const INSERT_EDGE: &str = "INSERT INTO lineage_edges (version_id, kind, name, ref, uri, digest, platform, params, \
     parent_version_id, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (version_id, kind, name, ref) DO NOTHING";

fn edge_params(ctx: &AuditContext, now: i64, version_id: i64, r: &Row) -> Vec<Param> {
    params![
        version_id,
        r.kind.as_str(),
        &r.name,
        &r.reference,
        &r.uri,
        &r.digest,
        &r.platform,
        &r.params,
        r.parent,
        now,
        &ctx.actor
    ]
}

async fn edges_of(conn: &mut Conn<'_>, version_id: i64) -> Result<Vec<LineageEdge>, StoreError> {
    let rows: Vec<EdgeRow> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT {EDGE_COLUMNS} FROM lineage_edges e WHERE e.version_id = $1 ORDER BY e.id"
            )),
            params![version_id],
        )
        .await?;
    Ok(rows.into_iter().map(LineageEdge::from).collect())
}

/// One level of a walk: the edges of the versions `ids` (going up: their inputs; going down:
/// the edges naming them as base model), in the order they were recorded, at most `fetch`.
async fn edges_next_to(conn: &mut Conn<'_>, up: bool, ids: &[i64], fetch: usize) -> Result<Vec<EdgeRow>, StoreError> {
    let list = serde_json::to_string(ids).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let column = if up { "e.version_id" } else { "e.parent_version_id" };
    let among = in_json_ids(conn, column);
    let sql = format!("SELECT {EDGE_COLUMNS} FROM lineage_edges e WHERE {among} ORDER BY e.id LIMIT $2");
    fetch_edges(conn, &sql, vec![Param::Text(list), Param::Int(row_limit(fetch))]).await
}

/// The edges `sql` (selecting `EDGE_COLUMNS`) finds, in recording order.
async fn fetch_edges(conn: &mut Conn<'_>, sql: &str, params: Vec<Param>) -> Result<Vec<EdgeRow>, StoreError> {
    let mut rows: Vec<EdgeRow> = fetch_rows(conn, sql, &EDGE_NAMES, params).await?;
    rows.sort_unstable_by_key(|e| e.id);
    Ok(rows)
}

fn row_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs `sql`, whose columns are named `names`, and returns its rows. On SQLite they are
/// handed over as one JSON array of arrays that the database builds: sqlx's SQLite driver
/// copies every value of every row and passes each row between threads, a walk reads
/// thousands of rows of a dozen columns, and one text value costs a fraction of that (each row
/// deserialises as a sequence in column order). PostgreSQL builds such a document several
/// times slower than it sends the rows, so there the rows come as they are.
async fn fetch_rows<T: serde::de::DeserializeOwned + crate::db::Row>(
    conn: &mut Conn<'_>,
    sql: &str,
    names: &[&str],
    params: Vec<Param>,
) -> Result<Vec<T>, StoreError> {
    if conn.backend() == crate::db::Backend::Postgres {
        return conn.fetch_all(sqlx::AssertSqlSafe(sql.to_owned()), params).await;
    }
    let fields = names.iter().map(|n| format!("r.{n}")).collect::<Vec<_>>().join(", ");
    let outer = format!("SELECT json_group_array(json_array({fields})) FROM ({sql}) r");
    let (json,): (String,) = conn.fetch_one(sqlx::AssertSqlSafe(outer), params).await?;
    // Rows the database built that do not parse are a fault of this code, not of the request.
    serde_json::from_str(&json).map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
}

/// A condition: `column` is one of the integers of the JSON array in parameter `$1`. On
/// PostgreSQL the list becomes an array the index is searched with, one scan for all of them:
/// as a subquery (estimated at 100 rows whatever its length) it was joined by a loop of index
/// lookups, twice as slow for a walk's level of a few hundred versions.
fn in_json_ids(conn: &Conn<'_>, column: &str) -> String {
    match conn.backend() {
        crate::db::Backend::Sqlite => format!("{column} IN (SELECT value FROM json_each($1))"),
        crate::db::Backend::Postgres => {
            format!("{column} = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)::bigint))")
        }
    }
}

/// The versions `ids` as nodes of a walk, with their models' names. Each list of ids goes
/// as one JSON array parameter: SQLite binds parameters by name (a cost that grows with the
/// square of their number), and an impact query can name thousands of versions. The models
/// are read apart, once each: joined to every version, PostgreSQL looked a model up once per
/// version (3,000 lookups for 3,000 versions of a few hundred models, two thirds of the time).
async fn nodes(conn: &mut Conn<'_>, ids: &BTreeSet<i64>) -> Result<Vec<VersionNode>, StoreError> {
    let list = serde_json::to_string(ids).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let sql = format!(
        "SELECT v.id, v.model_id, v.number, v.stage, v.semver, v.digest FROM versions v WHERE {}",
        in_json_ids(conn, "v.id")
    );
    type VersionRow = (i64, i64, i64, String, Option<String>, String);
    let names = ["id", "model_id", "number", "stage", "semver", "digest"];
    let versions: Vec<VersionRow> = fetch_rows(conn, &sql, &names, vec![Param::Text(list)]).await?;
    let model_ids: BTreeSet<i64> = versions.iter().map(|v| v.1).collect();
    let list = serde_json::to_string(&model_ids).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let sql = format!(
        "SELECT m.id, n.name AS namespace, m.full_name AS model \
         FROM models m JOIN namespaces n ON n.id = m.namespace_id WHERE {}",
        in_json_ids(conn, "m.id")
    );
    let models: Vec<(i64, String, String)> =
        fetch_rows(conn, &sql, &["id", "namespace", "model"], vec![Param::Text(list)]).await?;
    let models: std::collections::HashMap<i64, (String, String)> =
        models.into_iter().map(|(id, namespace, model)| (id, (namespace, model))).collect();
    Ok(versions
        .into_iter()
        .filter_map(|(id, model_id, number, stage, semver, digest)| {
            // (A model deleted between the two reads takes its versions with it.)
            let (namespace, model) = models.get(&model_id)?.clone();
            Some(VersionNode { id, namespace, model, number, stage, semver, digest })
        })
        .collect())
}

/// Stages in which recorded inputs may still be removed: before anyone has reviewed them.
const EDITABLE_STAGES: [&str; 2] = ["draft", "changes_requested"];

impl Store {
    /// The inputs recorded for a version, in the order they were recorded.
    pub async fn version_lineage(
        &self,
        model: &ModelRef,
        selector: &VersionSelector,
    ) -> Result<(Version, Vec<LineageEdge>), StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let v = find_version(&mut conn, model, selector).await?;
        let edges = edges_of(&mut conn, v.id).await?;
        Ok((v, edges))
    }

    /// Records more inputs for an existing version (audited as `version.lineage.add`); inputs
    /// it already has are left as they are. Returns the version and all its inputs.
    pub async fn add_lineage(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        inputs: &[Upstream],
    ) -> Result<(Version, Vec<LineageEdge>), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let v = find_version(&mut conn, model, selector).await?;
        insert(&mut conn, ctx, now, v.id, model, v.version, inputs).await?;
        let edges = edges_of(&mut conn, v.id).await?;
        tx.commit().await?;
        Ok((v, edges))
    }

    /// Removes one recorded input (audited as `version.lineage.remove`). Only while the
    /// version is a draft or sent back for changes: once reviewers have seen its lineage, it
    /// stays as they saw it.
    pub async fn remove_lineage(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        edge_id: i64,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let v = find_version(&mut conn, model, selector).await?;
        let edge = edges_of(&mut conn, v.id).await?.into_iter().find(|e| e.id == edge_id).ok_or_else(|| {
            StoreError::NotFound(format!("version {model}:{} has no lineage input {edge_id}", v.version))
        })?;
        if !EDITABLE_STAGES.contains(&v.stage.as_str()) {
            return Err(StoreError::Conflict(format!(
                "version {model}:{} is {}: its lineage can be added to but no longer changed",
                v.version, v.stage
            )));
        }
        conn.execute("DELETE FROM lineage_edges WHERE id = $1", params![edge_id]).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "version.lineage.remove",
            &target(model, v.version),
            Some(&edge),
            None::<&()>,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Walks lineage up to `depth` steps, returning at most `limit` edges. Upstream from a
    /// version: its inputs, its base models' inputs, and so on. Downstream: the versions
    /// derived from it (or recording the input), theirs, and so on.
    pub async fn walk_lineage(&self, from: &WalkFrom, depth: u32, limit: usize) -> Result<LineageWalk, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let mut walk = LineageWalk::default();
        // Level by level: each level is one indexed query over the whole frontier (its ids as
        // one JSON array parameter), and a version is expanded once however many paths reach
        // it, so the cost follows the answer. A recursive query cannot remember what it has
        // visited: it walked an edge again for every path length that reached it.
        let (up, mut level) = match from {
            WalkFrom::Version(model, selector, direction) => {
                let v = find_version(&mut conn, model, selector).await?;
                walk.root = Some(VersionNode {
                    id: v.id,
                    namespace: v.namespace.clone(),
                    model: format!("{}/{}", v.namespace, v.model),
                    number: v.version,
                    stage: v.stage.clone(),
                    semver: v.semver.clone(),
                    digest: v.digest.clone(),
                });
                let up = matches!(direction, Direction::Up);
                (up, edges_next_to(&mut conn, up, &[v.id], limit.saturating_add(1)).await?)
            }
            // The versions recording the input, then what derives from them.
            WalkFrom::Input { kind, name, reference } => {
                let sql = format!(
                    "SELECT {EDGE_COLUMNS} FROM lineage_edges e \
                     WHERE e.kind = $1 AND e.name = $2 AND ($3 = '' OR e.ref = $3) ORDER BY e.id LIMIT $4"
                );
                let params = params![kind.as_str(), name, reference, row_limit(limit.saturating_add(1))];
                (false, fetch_edges(&mut conn, &sql, params).await?)
            }
        };
        let mut visited: HashSet<i64> = walk.root.iter().map(|r| r.id).collect();
        let mut seen_edges = HashSet::new();
        let mut found: Vec<EdgeRow> = Vec::new();
        for step in 1..=depth.max(1) {
            let mut frontier = Vec::new();
            for e in level {
                if !seen_edges.insert(e.id) {
                    continue;
                }
                if found.len() == limit {
                    walk.truncated = true;
                    break;
                }
                let next = if up { e.parent_version_id } else { Some(e.version_id) };
                if let Some(next) = next.filter(|n| visited.insert(*n)) {
                    frontier.push(next);
                }
                found.push(e);
            }
            if walk.truncated || frontier.is_empty() || step == depth {
                break;
            }
            level = edges_next_to(&mut conn, up, &frontier, limit - found.len() + 1).await?;
        }
        found.sort_unstable_by_key(|e| e.id);
        walk.edges = found.into_iter().map(LineageEdge::from).collect();
        let mut ids: BTreeSet<i64> =
            walk.edges.iter().flat_map(|e| [Some(e.version_id), e.parent_version_id]).flatten().collect();
        if let Some(r) = &walk.root {
            ids.remove(&r.id);
            walk.versions.insert(r.id, r.clone());
        }
        if !ids.is_empty() {
            walk.versions.extend(nodes(&mut conn, &ids).await?.into_iter().map(|n| (n.id, n)));
        }
        Ok(walk)
    }
}
