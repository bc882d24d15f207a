//! Versions (numbered 1, 2, 3 … per model, gapless, never reused), their tags, and aliases.

use std::collections::BTreeMap;

use cairn_audit::statement::SignatureEnvelope;
use cairn_core::filter::{self, FieldKind, FieldSpec, Filter, FilterSchema, MetricSpec, TagSpec};
use cairn_core::lifecycle::Semver;
use cairn_core::{AliasName, ModelRef, TagKey, VersionSelector};
use serde::Serialize;

use crate::db::{Backend, Conn, Param};
use crate::model::{dialect, find as find_model};
use crate::tag::{self, TagChange, VERSION_TAGS};
use crate::{AuditContext, Cursor, CursorKey, Page, Store, StoreError, audit, params};

/// A version as stored, with its tags and the aliases pointing at it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Version {
    /// Internal id.
    #[serde(skip)]
    pub id: i64,
    /// The model's namespace.
    pub namespace: String,
    /// The model's name.
    pub model: String,
    /// The version number.
    pub version: i64,
    /// Free text.
    pub description: String,
    /// Where the version came from (URI).
    pub source: String,
    /// The training run that produced it, if known.
    pub run_id: String,
    /// Free-form JSON metadata.
    pub metadata: serde_json::Value,
    /// `sha256:` + hex SHA-256 of the canonical manifest of its files.
    pub digest: String,
    /// How many files it has.
    pub file_count: i64,
    /// Total size of its files (bytes).
    pub size: i64,
    /// Key/value tags.
    pub tags: BTreeMap<String, String>,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
    /// Semantic version label (`1.4.2`), unique per model.
    pub semver: Option<String>,
    /// The code commit it was built from (40 hex digits), or empty.
    pub code_commit: String,
    /// The training job that produced it, or empty.
    pub training_job: String,
    /// Lifecycle stage (`draft`, `submitted`, … `retired`).
    pub stage: String,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by.
    pub created_by: String,
    /// Updated at (ms).
    pub updated_at: i64,
    /// Updated by.
    pub updated_by: String,
}

#[derive(Debug, sqlx::FromRow)]
struct VersionRow {
    id: i64,
    namespace: String,
    model: String,
    number: i64,
    description: String,
    source: String,
    run_id: String,
    metadata: String,
    digest: String,
    file_count: i64,
    size: i64,
    semver: Option<String>,
    code_commit: String,
    training_job: String,
    stage: String,
    created_at: i64,
    created_by: String,
    updated_at: i64,
    updated_by: String,
    tags: String,
    aliases: String,
}

impl VersionRow {
    fn into_version(self) -> Version {
        Version {
            id: self.id,
            namespace: self.namespace,
            model: self.model,
            version: self.number,
            description: self.description,
            source: self.source,
            run_id: self.run_id,
            metadata: serde_json::from_str(&self.metadata).unwrap_or(serde_json::Value::Null),
            digest: self.digest,
            file_count: self.file_count,
            size: self.size,
            tags: serde_json::from_str(&self.tags).unwrap_or_default(),
            aliases: {
                let mut a: Vec<String> = serde_json::from_str(&self.aliases).unwrap_or_default();
                a.sort();
                a
            },
            semver: self.semver,
            code_commit: self.code_commit,
            training_job: self.training_job,
            stage: self.stage,
            created_at: self.created_at,
            created_by: self.created_by,
            updated_at: self.updated_at,
            updated_by: self.updated_by,
        }
    }
}

/// The columns of a version with its tags (a JSON object) and aliases (a JSON array), so one
/// query answers a read; each backend spells the aggregation its own way.
const VERSION_COLUMNS: &str = "SELECT v.id, n.name AS namespace, m.name AS model, v.number, \
    v.description, v.source, v.run_id, v.metadata, v.digest, v.file_count, v.size, v.semver, v.code_commit, v.training_job, v.stage, v.created_at, v.created_by, v.updated_at, v.updated_by";
const VERSION_FROM: &str =
    " FROM versions v JOIN models m ON m.id = v.model_id JOIN namespaces n ON n.id = m.namespace_id";
const SQLITE_TAGS_ALIASES: &str = ", (SELECT json_group_object(t.key, t.value) FROM version_tags t WHERE t.version_id = v.id) \
    AS tags, (SELECT json_group_array(a.alias) FROM aliases a WHERE a.version_id = v.id) AS aliases";
const PG_TAGS_ALIASES: &str = ", (SELECT COALESCE(json_object_agg(t.key, t.value), '{}'::json)::text FROM version_tags t \
    WHERE t.version_id = v.id) AS tags, (SELECT COALESCE(json_agg(a.alias), '[]'::json)::text FROM aliases a \
    WHERE a.version_id = v.id) AS aliases";

/// `SELECT … FROM …` for versions on backend `b`; append `WHERE …`.
fn select_version(b: Backend) -> String {
    let agg = match b {
        Backend::Sqlite => SQLITE_TAGS_ALIASES,
        Backend::Postgres => PG_TAGS_ALIASES,
    };
    format!("{VERSION_COLUMNS}{agg}{VERSION_FROM}")
}

/// The fields a version filter may use.
pub const VERSION_FILTER: FilterSchema = FilterSchema {
    entity: "version",
    fields: &[
        FieldSpec::new("version", "v.number", FieldKind::Integer).aliases(&["version_number"]),
        FieldSpec::new("name", "m.name", FieldKind::Text),
        FieldSpec::new("namespace", "n.name", FieldKind::Text),
        FieldSpec::new("full_name", "m.full_name", FieldKind::Text),
        FieldSpec::new("source", "v.source", FieldKind::Text).aliases(&["source_path"]),
        FieldSpec::new("run_id", "v.run_id", FieldKind::Text),
        FieldSpec::new("description", "v.description", FieldKind::Text),
        FieldSpec::new("stage", "v.stage", FieldKind::Text).aliases(&["current_stage"]),
        FieldSpec::new("semver", "v.semver", FieldKind::Text).aliases(&["label"]),
        FieldSpec::new("code_commit", "v.code_commit", FieldKind::Text),
        FieldSpec::new("training_job", "v.training_job", FieldKind::Text),
        FieldSpec::new("risk_tier", "m.risk_tier", FieldKind::Text),
        // Facts of the version's card; NULL when it has none (see migration 0008).
        FieldSpec::new(
            "license",
            "(SELECT fc.license FROM version_cards fc WHERE fc.version_id = v.id)",
            FieldKind::TextIgnoreCase,
        )
        .aliases(&["licence"]),
        FieldSpec::new("task", "(SELECT fc.task FROM version_cards fc WHERE fc.version_id = v.id)", FieldKind::Text),
        FieldSpec::new("created_at", "v.created_at", FieldKind::Timestamp).aliases(&["creation_timestamp"]),
        FieldSpec::new("updated_at", "v.updated_at", FieldKind::Timestamp).aliases(&["last_updated_timestamp"]),
    ],
    tags: Some(TagSpec {
        table: "version_tags",
        owner_column: "version_id",
        outer_id: "v.id",
        key_column: "key",
        value_column: "value",
    }),
    // The version's latest measured value of each metric, else the value its card claims.
    metrics: Some(MetricSpec {
        from: "version_metrics fm",
        link: "fm.version_id = v.id",
        name_column: "fm.name",
        value_column: "fm.value",
    }),
};

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    /// Free text.
    pub description: String,
    /// Where it came from (URI).
    pub source: String,
    /// The run that produced it.
    pub run_id: String,
    /// Free-form JSON object.
    pub metadata: serde_json::Value,
    /// Initial tags.
    pub tags: BTreeMap<TagKey, String>,
    /// The pusher's own signatures over (model, manifest digest), checked before they are
    /// stored (see [`signatures`]).
    pub signatures: Vec<SignatureEnvelope>,
    /// Semantic version label, unique per model.
    pub semver: Option<Semver>,
    /// Code commit (40 hex digits) or empty.
    pub code_commit: String,
    /// Training job id or empty.
    pub training_job: String,
    /// Scan results of its files (see [`crate::scan`]), stored with it.
    pub scans: Vec<crate::scan::FileScan>,
    /// What it was made from (see [`crate::lineage`]), recorded with it.
    pub lineage: Vec<cairn_core::lineage::Upstream>,
}

/// What to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct VersionPatch {
    /// New description.
    pub description: Option<String>,
    /// New metadata (replaces the old object).
    pub metadata: Option<serde_json::Value>,
    /// New semantic version label (`Some(None)` removes it).
    pub semver: Option<Option<Semver>>,
    /// New code commit.
    pub code_commit: Option<String>,
    /// New training job id.
    pub training_job: Option<String>,
}

/// Checks a code commit (empty, or 40 hex digits) and a training job id.
fn check_lineage(code_commit: Option<&str>, training_job: Option<&str>) -> Result<(), StoreError> {
    if let Some(c) = code_commit
        && !c.is_empty()
        && !(c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(StoreError::Invalid(format!(
            "code_commit must be a full 40-hex-digit commit SHA, not {:?}",
            c.chars().take(50).collect::<String>()
        )));
    }
    if let Some(j) = training_job
        && (j.chars().count() > 200 || j.chars().any(char::is_control))
    {
        return Err(StoreError::Invalid(
            "training_job must be at most 200 characters, without control characters".into(),
        ));
    }
    Ok(())
}

fn semver_taken(model: &ModelRef, label: &Semver) -> impl FnOnce(StoreError) -> StoreError {
    let msg = format!("model \"{model}\" already has a version labelled {label}");
    move |e| if e.is_unique_violation() { StoreError::Conflict(msg) } else { e }
}

/// How to sort versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionOrder {
    /// By version number.
    #[default]
    Number,
    /// By creation time.
    CreatedAt,
    /// By last update.
    UpdatedAt,
    /// By semantic version precedence (unlabelled versions first).
    Semver,
}

/// A listing request.
#[derive(Debug, Clone, Default)]
pub struct ListVersions {
    /// A parsed filter.
    pub filter: Option<Filter>,
    /// Sort key.
    pub order: VersionOrder,
    /// Descending instead of ascending.
    pub descending: bool,
    /// Page size (1–1000).
    pub limit: usize,
    /// Continue after this row.
    pub after: Option<Cursor>,
}

/// An alias and the version it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Alias {
    /// The alias.
    pub alias: String,
    /// The version number it points at.
    pub version: i64,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by.
    pub created_by: String,
    /// Moved last at (ms).
    pub updated_at: i64,
    /// Moved last by.
    pub updated_by: String,
}

/// Loads a version by number or alias inside `conn`.
pub(crate) async fn find(
    conn: &mut Conn<'_>,
    model: &ModelRef,
    selector: &VersionSelector,
) -> Result<Version, StoreError> {
    let row: Option<VersionRow> = match selector {
        VersionSelector::Number(n) => {
            conn.fetch_optional(
                sqlx::AssertSqlSafe(format!(
                    "{} WHERE m.full_name = $1 AND v.number = $2",
                    select_version(conn.backend())
                )),
                params![model.to_string(), *n],
            )
            .await?
        }
        VersionSelector::Alias(a) => {
            conn.fetch_optional(
                sqlx::AssertSqlSafe(format!(
                    // Resolve the alias first, through its primary key: joining from the
                    // versions side makes SQLite walk every version of the model.
                    "{} WHERE v.id = (SELECT a.version_id FROM aliases a \
                     JOIN models am ON am.id = a.model_id WHERE am.full_name = $1 AND a.alias = $2)",
                    select_version(conn.backend())
                )),
                params![model.to_string(), a.as_str()],
            )
            .await?
        }
        VersionSelector::Label(l) => {
            conn.fetch_optional(
                sqlx::AssertSqlSafe(format!(
                    "{} WHERE m.full_name = $1 AND v.semver = $2",
                    select_version(conn.backend())
                )),
                params![model.to_string(), l.as_str()],
            )
            .await?
        }
    };
    let Some(row) = row else {
        // Say precisely what is missing: the model, or the version of an existing model.
        let m = find_model(conn, model).await?;
        return Err(StoreError::NotFound(match selector {
            VersionSelector::Number(n) if m.latest_version == 0 => {
                format!("model \"{model}\" has no version {n} (it has no versions yet)")
            }
            VersionSelector::Number(n) => {
                format!("model \"{model}\" has no version {n} (latest is {})", m.latest_version)
            }
            VersionSelector::Alias(a) => format!("model \"{model}\" has no alias \"{a}\""),
            VersionSelector::Label(l) => format!("model \"{model}\" has no version labelled {l}"),
        }));
    };
    Ok(row.into_version())
}

/// Inserts the next version of `model` with its tags inside a transaction; returns its id
/// and number.
pub(crate) async fn insert_version(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    model: &ModelRef,
    new: &NewVersion,
) -> Result<(i64, i64), StoreError> {
    insert_version_with_blobs(conn, ctx, now, model, new, None).await
}

/// `FROM … WHERE …` of the digests in the JSON array parameter `$p` whose blob is not stored
/// (`present`), as `d`: what the version insert's guard and the missing-blobs error both ask.
macro_rules! unstored_blobs {
    (postgres, $p:literal) => {
        concat!(
            "FROM jsonb_array_elements_text(",
            $p,
            "::jsonb) AS j(d) LEFT JOIN blobs b ON b.digest = j.d AND b.state = 'present' WHERE b.digest IS NULL"
        )
    };
    (sqlite, $p:literal) => {
        concat!(
            "FROM (SELECT value AS d FROM json_each(",
            $p,
            ")) j LEFT JOIN blobs b ON b.digest = j.d AND b.state = 'present' WHERE b.digest IS NULL"
        )
    };
}
pub(crate) use unstored_blobs;

/// The model's counter moves and the version is inserted with its new value in one call: one
/// statement on PostgreSQL (the update as a data-modifying CTE), two sent together on SQLite.
macro_rules! insert_version_sql {
    (postgres, $guard:expr) => {
        concat!(
            "WITH m AS (UPDATE models SET latest_version = latest_version + 1, updated_at = $1, updated_by = $2 \
             WHERE full_name = $3 RETURNING id, latest_version) \
             INSERT INTO versions (model_id, number, description, source, run_id, metadata, \
             created_at, created_by, updated_at, updated_by, semver, semver_key, code_commit, training_job, \
             stage, stage_changed_at) \
             SELECT m.id, m.latest_version, $4, $5, $6, $7, $1, $2, $1, $2, $8, $9, $10, $11, 'draft', $1 FROM m",
            $guard,
            " RETURNING id, number"
        )
    };
    (sqlite, $guard:expr) => {
        concat!(
            "UPDATE models SET latest_version = latest_version + 1, updated_at = $1, updated_by = $2 \
             WHERE full_name = $3; \
             INSERT INTO versions (model_id, number, description, source, run_id, metadata, \
             created_at, created_by, updated_at, updated_by, semver, semver_key, code_commit, training_job, \
             stage, stage_changed_at) \
             SELECT m.id, m.latest_version, $4, $5, $6, $7, $1, $2, $1, $2, $8, $9, $10, $11, 'draft', $1 \
             FROM models m WHERE m.full_name = $3",
            $guard,
            " RETURNING id, number"
        )
    };
}

/// [`insert_version`] of a version whose files are the blobs `blobs` (a JSON array of hex
/// digests): nothing is inserted unless every one of them is stored (`present`), checked in the
/// same statement, so that a version's files never refer to bytes that are not there. No row
/// back (`NotFound`) means the model does not exist or a blob is missing.
pub(crate) async fn insert_version_with_blobs(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    model: &ModelRef,
    new: &NewVersion,
    blobs: Option<String>,
) -> Result<(i64, i64), StoreError> {
    check_new(new)?;
    let metadata = if new.metadata.is_null() { "{}".to_owned() } else { new.metadata.to_string() };
    // No row back means the model does not exist (the update matched nothing), or a blob is
    // missing.
    let sql = match (conn.backend(), blobs.is_some()) {
        (Backend::Postgres, false) => insert_version_sql!(postgres, ""),
        (Backend::Sqlite, false) => insert_version_sql!(sqlite, ""),
        (Backend::Postgres, true) => insert_version_sql!(
            postgres,
            concat!(" WHERE NOT EXISTS (SELECT 1 ", unstored_blobs!(postgres, "$12"), ")")
        ),
        (Backend::Sqlite, true) => {
            insert_version_sql!(sqlite, concat!(" AND NOT EXISTS (SELECT 1 ", unstored_blobs!(sqlite, "$12"), ")"))
        }
    };
    let mut ps = params![
        now,
        &ctx.actor,
        model.to_string(),
        &new.description,
        &new.source,
        &new.run_id,
        metadata,
        new.semver.as_ref().map(|s| s.as_str().to_owned()),
        new.semver.as_ref().map(Semver::sort_key),
        new.code_commit.to_ascii_lowercase(),
        &new.training_job
    ];
    if let Some(b) = blobs {
        ps.push(Param::from(b));
    }
    let row: Option<(i64, i64)> = conn.fetch_optional(sql, ps).await.map_err(|e| match &new.semver {
        Some(l) => semver_taken(model, l)(e),
        None => e,
    })?;
    let Some((id, number)) = row else {
        return Err(model_missing(model));
    };
    defer_tags(conn, id, new).await?;
    Ok((id, number))
}

/// The error for a version of a model that does not exist.
pub(crate) fn model_missing(model: &ModelRef) -> StoreError {
    StoreError::NotFound(format!("model \"{model}\" does not exist"))
}

/// What a new version is checked for before anything is written.
pub(crate) fn check_new(new: &NewVersion) -> Result<(), StoreError> {
    check_metadata(&new.metadata)?;
    check_lineage(Some(&new.code_commit), Some(&new.training_job))?;
    for v in new.tags.values() {
        cairn_core::name::check_tag_value(v).map_err(|e| StoreError::Invalid(e.to_string()))?;
    }
    Ok(())
}

async fn defer_tags(conn: &mut Conn<'_>, id: i64, new: &NewVersion) -> Result<(), StoreError> {
    for (k, v) in &new.tags {
        conn.defer("INSERT INTO version_tags (version_id, key, value) VALUES ($1, $2, $3)", params![id, k.as_str(), v])
            .await?;
    }
    Ok(())
}

/// The version row at a predicted slot (SQLite, batched transactions; see `db::Writer`),
/// with its manifest's digest, file count and size:
/// the model's counter moves to the slot's number only if it was one below, and the number
/// is written only if the counter then holds it, the model still has its name and every
/// blob of `$15` (a JSON array of digests) is stored; otherwise it is NULL, which the
/// column refuses, and the whole group fails and is run again one by one. A taken id or
/// number fails on its key.
const INSERT_PREDICTED_VERSION: &str = concat!(
    "UPDATE models SET latest_version = $3, updated_at = $8, updated_by = $9 \
     WHERE id = $2 AND latest_version = $3 - 1; \
     INSERT INTO versions (id, model_id, number, description, source, run_id, metadata, \
     created_at, created_by, updated_at, updated_by, semver, semver_key, code_commit, training_job, \
     stage, stage_changed_at, digest, file_count, size) \
     SELECT $1, $2, CASE WHEN m.latest_version = $3 AND m.full_name = $10 AND NOT EXISTS (SELECT 1 ",
    unstored_blobs!(sqlite, "$15"),
    ") THEN $3 END, $4, $5, $6, $7, $8, $9, $8, $9, $11, $12, $13, $14, 'draft', $8, $16, $17, $18 \
     FROM (SELECT 1) LEFT JOIN models m ON m.id = $2"
);

/// Defers the insert of a version and its tags at `slot` (see [`INSERT_PREDICTED_VERSION`]),
/// its files being the blobs `blobs` (a JSON array of hex digests) and `created` the version
/// as it will be stored (its digest, file count and size are written with the row). The
/// caller has checked `new` ([`check_new`]) before it began the transaction.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn defer_predicted_version(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    model: &ModelRef,
    new: &NewVersion,
    slot: crate::db::VersionSlot,
    blobs: String,
    created: &Version,
) -> Result<(), StoreError> {
    let metadata = if new.metadata.is_null() { "{}".to_owned() } else { new.metadata.to_string() };
    conn.defer(
        INSERT_PREDICTED_VERSION,
        params![
            slot.id,
            slot.model_id,
            slot.number,
            &new.description,
            &new.source,
            &new.run_id,
            metadata,
            now,
            &ctx.actor,
            model.to_string(),
            new.semver.as_ref().map(|s| s.as_str().to_owned()),
            new.semver.as_ref().map(Semver::sort_key),
            new.code_commit.to_ascii_lowercase(),
            &new.training_job,
            blobs,
            &created.digest,
            created.file_count,
            created.size
        ],
    )
    .await?;
    defer_tags(conn, slot.id, new).await
}

/// The digest of a version without files (the schema's default for the column).
static EMPTY_MANIFEST_DIGEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    cairn_core::manifest::Manifest::new(Vec::new()).map(|m| m.digest()).unwrap_or_default()
});

/// The version [`insert_version`] stored, as [`find`] would read it back: no files (the empty
/// manifest), no aliases, in `draft`.
pub(crate) fn inserted(
    ctx: &AuditContext,
    now: i64,
    model: &ModelRef,
    id: i64,
    number: i64,
    new: &NewVersion,
) -> Version {
    Version {
        id,
        namespace: model.namespace.as_str().to_owned(),
        model: model.name.as_str().to_owned(),
        version: number,
        description: new.description.clone(),
        source: new.source.clone(),
        run_id: new.run_id.clone(),
        metadata: if new.metadata.is_null() { serde_json::json!({}) } else { new.metadata.clone() },
        digest: EMPTY_MANIFEST_DIGEST.clone(),
        file_count: 0,
        size: 0,
        tags: new.tags.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect(),
        aliases: Vec::new(),
        semver: new.semver.as_ref().map(|s| s.as_str().to_owned()),
        code_commit: new.code_commit.to_ascii_lowercase(),
        training_job: new.training_job.clone(),
        stage: "draft".to_owned(),
        created_at: now,
        created_by: ctx.actor.clone(),
        updated_at: now,
        updated_by: ctx.actor.clone(),
    }
}

/// What a `version.create` event records: the version, and the scan results and lineage it
/// was created with, which are part of the same change.
#[derive(Serialize)]
struct Created<'a> {
    #[serde(flatten)]
    version: &'a Version,
    #[serde(skip_serializing_if = "Option::is_none")]
    scan: Option<crate::scan::ScanSummary<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lineage: Vec<serde_json::Value>,
}

/// Stores the scan results (`scans`, of `files`) and the lineage a version just inserted was
/// created with, and the one `version.create` event that audits all of it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_created(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    model: &ModelRef,
    version: &Version,
    new: &NewVersion,
    scans: &[crate::scan::FileScan],
    files: &[cairn_core::manifest::FileEntry],
) -> Result<(), StoreError> {
    let scan = crate::scan::insert_for_files(conn, now, version.id, scans, files).await?;
    let lineage = crate::lineage::insert_new(conn, ctx, now, version.id, &new.lineage).await?;
    let event = Created { version, scan, lineage };
    audit::record(conn, ctx, now, "version.create", &target(model, version.version), None::<&()>, Some(&event)).await
}

pub(crate) fn target(model: &ModelRef, number: i64) -> String {
    format!("version:{model}:{number}")
}

fn check_metadata(m: &serde_json::Value) -> Result<(), StoreError> {
    if !(m.is_object() || m.is_null()) {
        return Err(StoreError::Invalid("metadata must be a JSON object".into()));
    }
    Ok(())
}

impl Store {
    /// Creates the next version of a model. Numbers are assigned under the model row's lock
    /// (PostgreSQL) or the single writer (SQLite), so concurrent creators on any number of
    /// server processes get 1, 2, 3 … with no gap and no repeat; a failed creation rolls the
    /// counter back with everything else.
    pub async fn create_version(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        new: &NewVersion,
    ) -> Result<Version, StoreError> {
        self.create_version_with_files(ctx, model, new, Vec::new()).await
    }

    /// Gets a version by number or alias.
    pub async fn get_version(&self, model: &ModelRef, selector: &VersionSelector) -> Result<Version, StoreError> {
        let mut c = self.db.read().await?;
        find(&mut c.conn(), model, selector).await
    }

    /// Changes a version's description or metadata.
    pub async fn update_version(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        patch: &VersionPatch,
    ) -> Result<Version, StoreError> {
        if let Some(m) = &patch.metadata {
            check_metadata(m)?;
        }
        check_lineage(patch.code_commit.as_deref(), patch.training_job.as_deref())?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find(&mut conn, model, selector).await?;
        conn.execute(
            "UPDATE versions SET description = COALESCE($1, description), metadata = COALESCE($2, metadata), \
             code_commit = COALESCE($3, code_commit), training_job = COALESCE($4, training_job), \
             updated_at = $5, updated_by = $6 WHERE id = $7",
            params![
                patch.description.clone(),
                patch.metadata.as_ref().map(|m| if m.is_null() { "{}".to_owned() } else { m.to_string() }),
                patch.code_commit.as_ref().map(|c| c.to_ascii_lowercase()),
                patch.training_job.clone(),
                now,
                &ctx.actor,
                before.id
            ],
        )
        .await?;
        if let Some(label) = &patch.semver {
            conn.execute(
                "UPDATE versions SET semver = $1, semver_key = $2 WHERE id = $3",
                params![label.as_ref().map(|s| s.as_str().to_owned()), label.as_ref().map(Semver::sort_key), before.id],
            )
            .await
            .map_err(|e| match label {
                Some(l) => semver_taken(model, l)(e),
                None => e,
            })?;
        }
        let after = find(&mut conn, model, &VersionSelector::Number(before.version)).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "version.update",
            &target(model, before.version),
            Some(&before),
            Some(&after),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes a version (its number is never given out again) and the aliases on it.
    pub async fn delete_version(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find(&mut conn, model, selector).await?;
        conn.execute("DELETE FROM versions WHERE id = $1", params![before.id]).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "version.delete",
            &target(model, before.version),
            Some(&before),
            None::<&()>,
        )
        .await?;
        tx.commit().await
    }

    /// Sets a tag on a version.
    pub async fn set_version_tag(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        key: &TagKey,
        value: &str,
    ) -> Result<Version, StoreError> {
        cairn_core::name::check_tag_value(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find(&mut conn, model, selector).await?;
        let change = TagChange {
            owner_id: before.id,
            target: &target(model, before.version),
            key,
            old: before.tags.get(key.as_str()).map(String::as_str),
            new: Some(value),
        };
        tag::write(&mut conn, ctx, now, &VERSION_TAGS, &change).await?;
        let after = find(&mut conn, model, &VersionSelector::Number(before.version)).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Removes a tag from a version.
    pub async fn delete_version_tag(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        selector: &VersionSelector,
        key: &TagKey,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find(&mut conn, model, selector).await?;
        let Some(old) = before.tags.get(key.as_str()) else {
            return Err(StoreError::NotFound(format!(
                "version {} of \"{model}\" has no tag \"{key}\"",
                before.version
            )));
        };
        let change =
            TagChange { owner_id: before.id, target: &target(model, before.version), key, old: Some(old), new: None };
        tag::write(&mut conn, ctx, now, &VERSION_TAGS, &change).await?;
        tx.commit().await
    }

    /// Lists the versions of one model.
    pub async fn list_versions(&self, model: &ModelRef, q: &ListVersions) -> Result<Page<Version>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        // The model by its name in the same query; only an empty page asks whether it exists.
        let page = self.versions_where(&mut conn, "m.full_name = $1", vec![Param::from(model.to_string())], q).await?;
        if page.items.is_empty() {
            find_model(&mut conn, model).await?;
        }
        Ok(page)
    }

    /// Lists the versions of every model in `namespaces` (all models when `None`).
    pub async fn search_versions(
        &self,
        namespaces: Option<&[String]>,
        q: &ListVersions,
    ) -> Result<Page<Version>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        match namespaces {
            None => self.versions_where(&mut conn, "1 = 1", Vec::new(), q).await,
            Some([]) => Ok(Page { items: Vec::new(), next: None }),
            Some(ns) => {
                let cond = format!("n.name IN {}", crate::page::placeholders(1, ns.len()));
                self.versions_where(&mut conn, &cond, ns.iter().map(Param::from).collect(), q).await
            }
        }
    }

    async fn versions_where(
        &self,
        conn: &mut Conn<'_>,
        scope: &str,
        mut params: Vec<Param>,
        q: &ListVersions,
    ) -> Result<Page<Version>, StoreError> {
        let limit = q.limit.clamp(1, 1000);
        let mut sql = format!("{} WHERE {scope}", select_version(self.backend()));
        if let Some(f) = &q.filter {
            let compiled = filter::compile(f, &VERSION_FILTER, dialect(self.backend()), params.len() + 1)?;
            sql.push_str(&format!(" AND ({})", compiled.sql));
            params.extend(compiled.params.into_iter().map(Param::from));
        }
        let col = match q.order {
            VersionOrder::Number => "v.number",
            VersionOrder::CreatedAt => "v.created_at",
            VersionOrder::UpdatedAt => "v.updated_at",
            VersionOrder::Semver => "COALESCE(v.semver_key, '')",
        };
        let (cmp, dir) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        if let Some(c) = &q.after {
            let key = match (&c.key, q.order) {
                (CursorKey::Text(t), VersionOrder::Semver) => Param::Text(t.clone()),
                (CursorKey::Int(k), o) if o != VersionOrder::Semver => Param::Int(*k),
                _ => return Err(StoreError::Invalid("page token does not belong to this listing".into())),
            };
            let a = params.len() + 1;
            sql.push_str(&format!(" AND ({col}, v.id) {cmp} (${a}, ${})", a + 1));
            params.push(key);
            params.push(Param::Int(c.id));
        }
        sql.push_str(&format!(" ORDER BY {col} {dir}, v.id {dir} LIMIT ${}", params.len() + 1));
        params.push(Param::Int(i64::try_from(limit + 1).unwrap_or(1001)));
        let rows: Vec<VersionRow> = conn.fetch_all(sqlx::AssertSqlSafe(sql), params).await?;
        let mut items: Vec<Version> = rows.into_iter().map(VersionRow::into_version).collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|v| Cursor {
                key: match q.order {
                    VersionOrder::Number => CursorKey::Int(v.version),
                    VersionOrder::CreatedAt => CursorKey::Int(v.created_at),
                    VersionOrder::UpdatedAt => CursorKey::Int(v.updated_at),
                    VersionOrder::Semver => CursorKey::Text(
                        v.semver
                            .as_deref()
                            .and_then(|l| Semver::parse(l).ok())
                            .map(|l| l.sort_key())
                            .unwrap_or_default(),
                    ),
                },
                id: v.id,
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Points an alias at a version, creating or moving it.
    pub async fn set_alias(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        alias: &AliasName,
        version: i64,
    ) -> Result<Alias, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let target_version = find(&mut conn, model, &VersionSelector::Number(version)).await?;
        let after = upsert_alias(&mut conn, ctx, now, model, alias, target_version.id).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Gets one alias.
    pub async fn get_alias(&self, model: &ModelRef, alias: &AliasName) -> Result<Alias, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        match alias_row(&mut conn, model, alias).await? {
            Some(a) => Ok(a),
            None => {
                find_model(&mut conn, model).await?;
                Err(StoreError::NotFound(format!("model \"{model}\" has no alias \"{alias}\"")))
            }
        }
    }

    /// Lists the aliases of a model, by name.
    pub async fn list_aliases(&self, model: &ModelRef) -> Result<Vec<Alias>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let m = find_model(&mut conn, model).await?;
        conn.fetch_all(
            "SELECT a.alias, v.number AS version, a.created_at, a.created_by, a.updated_at, a.updated_by \
             FROM aliases a JOIN versions v ON v.id = a.version_id WHERE a.model_id = $1 ORDER BY a.alias",
            params![m.id],
        )
        .await
    }

    /// Removes an alias.
    pub async fn delete_alias(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        alias: &AliasName,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let m = find_model(&mut conn, model).await?;
        let Some(before) = alias_row(&mut conn, model, alias).await? else {
            return Err(StoreError::NotFound(format!("model \"{model}\" has no alias \"{alias}\"")));
        };
        conn.execute("DELETE FROM aliases WHERE model_id = $1 AND alias = $2", params![m.id, alias.as_str()]).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "alias.delete",
            &format!("alias:{model}@{alias}"),
            Some(&before),
            None::<&()>,
        )
        .await?;
        tx.commit().await
    }
}

/// Points `alias` at the version with id `version_id` (creating or moving it), audited.
pub(crate) async fn upsert_alias(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    model: &ModelRef,
    alias: &AliasName,
    version_id: i64,
) -> Result<Alias, StoreError> {
    let before = alias_row(conn, model, alias).await?;
    conn.execute(
        "INSERT INTO aliases (model_id, alias, version_id, created_at, created_by, updated_at, updated_by) \
         SELECT model_id, $1, id, $2, $3, $2, $3 FROM versions WHERE id = $4 \
         ON CONFLICT (model_id, alias) DO UPDATE SET version_id = excluded.version_id, \
         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        params![alias.as_str(), now, &ctx.actor, version_id],
    )
    .await?;
    let after = alias_row(conn, model, alias)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("model \"{model}\" has no alias \"{alias}\"")))?;
    audit::record(conn, ctx, now, "alias.set", &format!("alias:{model}@{alias}"), before.as_ref(), Some(&after))
        .await?;
    Ok(after)
}

async fn alias_row(conn: &mut Conn<'_>, model: &ModelRef, alias: &AliasName) -> Result<Option<Alias>, StoreError> {
    conn.fetch_optional(
        "SELECT a.alias, v.number AS version, a.created_at, a.created_by, a.updated_at, a.updated_by \
         FROM aliases a JOIN versions v ON v.id = a.version_id JOIN models m ON m.id = a.model_id \
         WHERE m.full_name = $1 AND a.alias = $2",
        params![model.to_string(), alias.as_str()],
    )
    .await
}
