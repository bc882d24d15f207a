//! Models: `namespace/name`, description, tags, and the counter that numbers versions.

use std::collections::BTreeMap;

use cairn_core::filter::{self, Dialect, FieldKind, FieldSpec, Filter, FilterSchema, MetricSpec, Related, TagSpec};
use cairn_core::lifecycle::RiskTier;
use cairn_core::{ModelRef, TagKey};
use serde::Serialize;

use crate::db::{Backend, Conn, Param};
use crate::page::placeholders;
use crate::tag::{self, MODEL_TAGS, TagChange};
use crate::{AuditContext, Cursor, CursorKey, Page, Store, StoreError, audit, namespace, params};

/// A model as stored, with its tags and aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Model {
    /// Internal id.
    #[serde(skip)]
    pub id: i64,
    /// The namespace.
    pub namespace: String,
    /// The name inside the namespace.
    pub name: String,
    /// Free text (Markdown).
    pub description: String,
    /// The highest version number ever assigned (0 before the first version).
    pub latest_version: i64,
    /// Key/value tags.
    pub tags: BTreeMap<String, String>,
    /// Alias → version number.
    pub aliases: BTreeMap<String, i64>,
    /// `low`, `medium` or `high`: how strict the approvals for production are.
    pub risk_tier: String,
    /// The team or group responsible (free text).
    pub team: String,
    /// The accounts that own the model (sorted).
    pub owners: Vec<String>,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by.
    pub created_by: String,
    /// Updated at (ms).
    pub updated_at: i64,
    /// Updated by.
    pub updated_by: String,
}

impl Model {
    /// `namespace/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, sqlx::FromRow)]
struct ModelRow {
    id: i64,
    namespace: String,
    name: String,
    description: String,
    latest_version: i64,
    risk_tier: String,
    team: String,
    created_at: i64,
    created_by: String,
    updated_at: i64,
    updated_by: String,
}

impl ModelRow {
    fn into_model(self) -> Model {
        Model {
            id: self.id,
            namespace: self.namespace,
            name: self.name,
            description: self.description,
            latest_version: self.latest_version,
            tags: BTreeMap::new(),
            aliases: BTreeMap::new(),
            risk_tier: self.risk_tier,
            team: self.team,
            owners: Vec::new(),
            created_at: self.created_at,
            created_by: self.created_by,
            updated_at: self.updated_at,
            updated_by: self.updated_by,
        }
    }
}

const SELECT_MODEL: &str = "SELECT m.id, n.name AS namespace, m.name, m.description, \
    m.latest_version, m.risk_tier, m.team, m.created_at, m.created_by, m.updated_at, m.updated_by \
    FROM models m JOIN namespaces n ON n.id = m.namespace_id";

/// Any version of the model, for fields that hold when one of its versions does.
const ANY_VERSION: Related = Related { from: "versions fv", link: "fv.model_id = m.id" };

/// The card of any version of the model (versions without a card have no card facts).
const ANY_VERSION_CARD: Related =
    Related { from: "versions fv JOIN version_cards fc ON fc.version_id = fv.id", link: "fv.model_id = m.id" };

/// The fields a model filter may use. `stage`, `license` and `task` are facts of versions:
/// a model has them when any of its versions does, and their negative forms (`!=`, `NOT IN`,
/// `NOT LIKE`, `IS NULL`) mean that none does (see [`Related`] and docs/SEARCH.md).
pub const MODEL_FILTER: FilterSchema = FilterSchema {
    entity: "model",
    fields: &[
        FieldSpec::new("name", "m.name", FieldKind::Text),
        FieldSpec::new("namespace", "n.name", FieldKind::Text),
        FieldSpec::new("full_name", "m.full_name", FieldKind::Text),
        FieldSpec::new("description", "m.description", FieldKind::Text),
        FieldSpec::new("latest_version", "m.latest_version", FieldKind::Integer),
        FieldSpec::new("risk_tier", "m.risk_tier", FieldKind::Text),
        FieldSpec::new("team", "m.team", FieldKind::Text),
        // Facts of the model's versions: a model has them when any of its versions does.
        FieldSpec::new("stage", "fv.stage", FieldKind::Text).aliases(&["current_stage"]).of_any(ANY_VERSION),
        FieldSpec::new("license", "fc.license", FieldKind::TextIgnoreCase)
            .aliases(&["licence"])
            .of_any(ANY_VERSION_CARD),
        FieldSpec::new("task", "fc.task", FieldKind::Text).of_any(ANY_VERSION_CARD),
        FieldSpec::new("created_at", "m.created_at", FieldKind::Timestamp).aliases(&["creation_timestamp"]),
        FieldSpec::new("updated_at", "m.updated_at", FieldKind::Timestamp).aliases(&["last_updated_timestamp"]),
    ],
    tags: Some(TagSpec {
        table: "model_tags",
        owner_column: "model_id",
        outer_id: "m.id",
        key_column: "key",
        value_column: "value",
    }),
    // A model has a metric when any of its versions does (`metrics.accuracy > 0.9`: some
    // version measured above 0.9).
    metrics: Some(MetricSpec {
        from: "version_metrics fm JOIN versions fmv ON fmv.id = fm.version_id",
        link: "fmv.model_id = m.id",
        name_column: "fm.name",
        value_column: "fm.value",
    }),
};

/// How to sort models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelOrder {
    /// By `namespace/name`.
    #[default]
    Name,
    /// By creation time.
    CreatedAt,
    /// By last update.
    UpdatedAt,
}

/// A listing request.
#[derive(Debug, Clone, Default)]
pub struct ListModels {
    /// A parsed filter.
    pub filter: Option<Filter>,
    /// Sort key.
    pub order: ModelOrder,
    /// Descending instead of ascending.
    pub descending: bool,
    /// Page size (1–1000).
    pub limit: usize,
    /// Continue after this row.
    pub after: Option<Cursor>,
    /// Only models in these namespaces (`None`: all), e.g. the ones the caller may read.
    pub namespaces: Option<Vec<String>>,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewModel {
    /// `namespace/name`.
    pub model: ModelRef,
    /// Free text.
    pub description: String,
    /// Initial tags.
    pub tags: BTreeMap<TagKey, String>,
    /// Risk tier (default low).
    pub risk_tier: Option<RiskTier>,
    /// Team or group (free text).
    pub team: String,
    /// Owners: existing account names.
    pub owners: Vec<String>,
}

impl NewModel {
    /// A model with only a name.
    pub fn named(model: ModelRef) -> Self {
        Self {
            model,
            description: String::new(),
            tags: BTreeMap::new(),
            risk_tier: None,
            team: String::new(),
            owners: Vec::new(),
        }
    }
}

/// What to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ModelPatch {
    /// New description.
    pub description: Option<String>,
    /// New risk tier.
    pub risk_tier: Option<RiskTier>,
    /// New team.
    pub team: Option<String>,
    /// New owners (replaces the list).
    pub owners: Option<Vec<String>>,
}

/// At most this many owners per model.
pub const MAX_OWNERS: usize = 32;

/// Replaces the owners of model `id`: every name must be an existing account.
async fn set_owners(conn: &mut Conn<'_>, id: i64, owners: &[String]) -> Result<(), StoreError> {
    let mut wanted: Vec<&str> = owners.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.len() > MAX_OWNERS {
        return Err(StoreError::Invalid(format!("a model has at most {MAX_OWNERS} owners")));
    }
    if !wanted.is_empty() {
        let ph = placeholders(1, wanted.len());
        let found: Vec<(String,)> = conn
            .fetch_all(
                sqlx::AssertSqlSafe(format!("SELECT username FROM users WHERE username IN {ph}")),
                wanted.iter().map(|w| Param::Text((*w).to_owned())).collect(),
            )
            .await?;
        if let Some(missing) = wanted.iter().find(|w| !found.iter().any(|(f,)| f == *w)) {
            return Err(StoreError::Invalid(format!("owner \"{missing}\" is not an account")));
        }
    }
    conn.execute("DELETE FROM model_owners WHERE model_id = $1", params![id]).await?;
    for w in wanted {
        conn.execute("INSERT INTO model_owners (model_id, username) VALUES ($1, $2)", params![id, w]).await?;
    }
    Ok(())
}

fn check_team(team: &str) -> Result<(), StoreError> {
    if team.chars().count() > 200 || team.chars().any(char::is_control) {
        return Err(StoreError::Invalid("team must be at most 200 characters, without control characters".into()));
    }
    Ok(())
}

pub(crate) fn dialect(b: Backend) -> Dialect {
    match b {
        Backend::Sqlite => Dialect::Sqlite,
        Backend::Postgres => Dialect::Postgres,
    }
}

/// Loads a model row by name inside `conn`.
pub(crate) async fn find(conn: &mut Conn<'_>, model: &ModelRef) -> Result<Model, StoreError> {
    let row: Option<ModelRow> = conn
        .fetch_optional(
            sqlx::AssertSqlSafe(format!("{SELECT_MODEL} WHERE m.full_name = $1")),
            params![model.to_string()],
        )
        .await?;
    let mut m = row.ok_or_else(|| StoreError::NotFound(format!("model \"{model}\" does not exist")))?.into_model();
    attach(conn, std::slice::from_mut(&mut m)).await?;
    Ok(m)
}

/// Fills tags and aliases of a batch of models.
async fn attach(conn: &mut Conn<'_>, models: &mut [Model]) -> Result<(), StoreError> {
    if models.is_empty() {
        return Ok(());
    }
    let ids: Vec<Param> = models.iter().map(|m| Param::Int(m.id)).collect();
    let ph = placeholders(1, ids.len());
    let tags: Vec<(i64, String, String)> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT model_id, key, value FROM model_tags WHERE model_id IN {ph} ORDER BY model_id, key"
            )),
            ids.clone(),
        )
        .await?;
    let aliases: Vec<(i64, String, i64)> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT a.model_id, a.alias, v.number FROM aliases a \
                 JOIN versions v ON v.id = a.version_id WHERE a.model_id IN {ph}"
            )),
            ids,
        )
        .await?;
    let owners: Vec<(i64, String)> = conn
        .fetch_all(
            sqlx::AssertSqlSafe(format!(
                "SELECT model_id, username FROM model_owners WHERE model_id IN {ph} ORDER BY model_id, username"
            )),
            models.iter().map(|m| Param::Int(m.id)).collect(),
        )
        .await?;
    let index: BTreeMap<i64, usize> = models.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
    for (id, o) in owners {
        if let Some(&i) = index.get(&id) {
            models[i].owners.push(o);
        }
    }
    for (id, k, v) in tags {
        if let Some(&i) = index.get(&id) {
            models[i].tags.insert(k, v);
        }
    }
    for (id, a, n) in aliases {
        if let Some(&i) = index.get(&id) {
            models[i].aliases.insert(a, n);
        }
    }
    Ok(())
}

fn target(model: &ModelRef) -> String {
    format!("model:{model}")
}

impl Store {
    /// Creates a model (and its namespace when new).
    pub async fn create_model(&self, ctx: &AuditContext, new: &NewModel) -> Result<Model, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        check_team(&new.team)?;
        let ns_id = namespace::ensure(&mut conn, ctx, now, &new.model.namespace).await?;
        let risk = new.risk_tier.unwrap_or(RiskTier::Low);
        let (id,): (i64,) = conn
            .fetch_one(
                "INSERT INTO models (namespace_id, name, full_name, description, risk_tier, team, \
                 created_at, created_by, updated_at, updated_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7, $8) RETURNING id",
                params![
                    ns_id,
                    new.model.name.as_str(),
                    new.model.to_string(),
                    &new.description,
                    risk.as_str(),
                    &new.team,
                    now,
                    &ctx.actor
                ],
            )
            .await
            .map_err(|e| {
                if e.is_unique_violation() {
                    StoreError::Conflict(format!("model \"{}\" already exists", new.model))
                } else {
                    e
                }
            })?;
        for (k, v) in &new.tags {
            conn.execute(
                "INSERT INTO model_tags (model_id, key, value) VALUES ($1, $2, $3)",
                params![id, k.as_str(), v],
            )
            .await?;
        }
        set_owners(&mut conn, id, &new.owners).await?;
        let model = find(&mut conn, &new.model).await?;
        audit::record(&mut conn, ctx, now, "model.create", &target(&new.model), None::<&()>, Some(&model)).await?;
        tx.commit().await?;
        Ok(model)
    }

    /// Gets a model with its tags and aliases.
    pub async fn get_model(&self, model: &ModelRef) -> Result<Model, StoreError> {
        let mut c = self.db.read().await?;
        find(&mut c.conn(), model).await
    }

    /// Changes a model's description, risk tier, team or owners.
    pub async fn update_model(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        patch: &ModelPatch,
    ) -> Result<Model, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find(&mut conn, model).await?;
        if let Some(d) = &patch.description {
            conn.execute(
                "UPDATE models SET description = $1, updated_at = $2, updated_by = $3 WHERE id = $4",
                params![d, now, &ctx.actor, before.id],
            )
            .await?;
        }
        if let Some(r) = patch.risk_tier {
            conn.execute(
                "UPDATE models SET risk_tier = $1, updated_at = $2, updated_by = $3 WHERE id = $4",
                params![r.as_str(), now, &ctx.actor, before.id],
            )
            .await?;
        }
        if let Some(t) = &patch.team {
            check_team(t)?;
            conn.execute(
                "UPDATE models SET team = $1, updated_at = $2, updated_by = $3 WHERE id = $4",
                params![t, now, &ctx.actor, before.id],
            )
            .await?;
        }
        if let Some(o) = &patch.owners {
            set_owners(&mut conn, before.id, o).await?;
            conn.execute(
                "UPDATE models SET updated_at = $1, updated_by = $2 WHERE id = $3",
                params![now, &ctx.actor, before.id],
            )
            .await?;
        }
        let after = find(&mut conn, model).await?;
        audit::record(&mut conn, ctx, now, "model.update", &target(model), Some(&before), Some(&after)).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Renames a model (into another namespace too, created when new). Its versions keep
    /// their numbers, files, tags and aliases; each version with files gets a new server
    /// signature naming the new name (the old signatures stay, as history).
    pub async fn rename_model(&self, ctx: &AuditContext, from: &ModelRef, to: &ModelRef) -> Result<Model, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find(&mut conn, from).await?;
        let ns_id = namespace::ensure(&mut conn, ctx, now, &to.namespace).await?;
        conn.execute(
            "UPDATE models SET namespace_id = $1, name = $2, full_name = $3, updated_at = $4, updated_by = $5 \
             WHERE id = $6",
            params![ns_id, to.name.as_str(), to.to_string(), now, &ctx.actor, before.id],
        )
        .await
        .map_err(|e| {
            if e.is_unique_violation() { StoreError::Conflict(format!("model \"{to}\" already exists")) } else { e }
        })?;
        let versions: Vec<(i64, i64, String)> = conn
            .fetch_all(
                "SELECT id, number, digest FROM versions WHERE model_id = $1 AND file_count > 0 ORDER BY number",
                params![before.id],
            )
            .await?;
        for (version_id, number, digest) in versions {
            crate::signatures::attach(&mut conn, self.signer(), now, version_id, to, number, &digest, &[]).await?;
        }
        let after = find(&mut conn, to).await?;
        audit::record(&mut conn, ctx, now, "model.rename", &target(from), Some(&before), Some(&after)).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes a model with all its versions, tags and aliases.
    pub async fn delete_model(&self, ctx: &AuditContext, model: &ModelRef) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find(&mut conn, model).await?;
        conn.execute("DELETE FROM models WHERE id = $1", params![before.id]).await?;
        audit::record(&mut conn, ctx, now, "model.delete", &target(model), Some(&before), None::<&()>).await?;
        tx.commit().await
    }

    /// Sets (adds or replaces) a tag on a model.
    pub async fn set_model_tag(
        &self,
        ctx: &AuditContext,
        model: &ModelRef,
        key: &TagKey,
        value: &str,
    ) -> Result<Model, StoreError> {
        cairn_core::name::check_tag_value(value).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find(&mut conn, model).await?;
        let change = TagChange {
            owner_id: before.id,
            target: &target(model),
            key,
            old: before.tags.get(key.as_str()).map(String::as_str),
            new: Some(value),
        };
        tag::write(&mut conn, ctx, now, &MODEL_TAGS, &change).await?;
        let after = find(&mut conn, model).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Removes a tag from a model.
    pub async fn delete_model_tag(&self, ctx: &AuditContext, model: &ModelRef, key: &TagKey) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = find(&mut conn, model).await?;
        let Some(old) = before.tags.get(key.as_str()) else {
            return Err(StoreError::NotFound(format!("model \"{model}\" has no tag \"{key}\"")));
        };
        let change = TagChange { owner_id: before.id, target: &target(model), key, old: Some(old), new: None };
        tag::write(&mut conn, ctx, now, &MODEL_TAGS, &change).await?;
        tx.commit().await
    }

    /// Lists models, one page at a time.
    pub async fn list_models(&self, q: &ListModels) -> Result<Page<Model>, StoreError> {
        let limit = q.limit.clamp(1, 1000);
        let mut sql = format!("{SELECT_MODEL} WHERE 1 = 1");
        let mut params: Vec<Param> = Vec::new();
        if let Some(namespaces) = &q.namespaces {
            if namespaces.is_empty() {
                return Ok(Page { items: Vec::new(), next: None });
            }
            let marks: Vec<String> = (1..=namespaces.len()).map(|i| format!("${i}")).collect();
            sql.push_str(&format!(" AND n.name IN ({})", marks.join(", ")));
            params.extend(namespaces.iter().map(|n| Param::from(n.clone())));
        }
        if let Some(f) = &q.filter {
            let compiled = filter::compile(f, &MODEL_FILTER, dialect(self.backend()), params.len() + 1)?;
            sql.push_str(&format!(" AND ({})", compiled.sql));
            params.extend(compiled.params.into_iter().map(Param::from));
        }
        let (col, key_is_text) = match q.order {
            ModelOrder::Name => ("m.full_name", true),
            ModelOrder::CreatedAt => ("m.created_at", false),
            ModelOrder::UpdatedAt => ("m.updated_at", false),
        };
        let (cmp, dir) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        if let Some(c) = &q.after {
            if matches!(c.key, CursorKey::Text(_)) != key_is_text {
                return Err(StoreError::Invalid("page token does not belong to this listing".into()));
            }
            let a = params.len() + 1;
            sql.push_str(&format!(" AND ({col}, m.id) {cmp} (${a}, ${})", a + 1));
            params.push(c.key.clone().into());
            params.push(Param::Int(c.id));
        }
        sql.push_str(&format!(" ORDER BY {col} {dir}, m.id {dir} LIMIT ${}", params.len() + 1));
        params.push(Param::Int(i64::try_from(limit + 1).unwrap_or(1001)));
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let rows: Vec<ModelRow> = conn.fetch_all(sqlx::AssertSqlSafe(sql), params).await?;
        let mut items: Vec<Model> = rows.into_iter().map(ModelRow::into_model).collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|m| Cursor {
                key: match q.order {
                    ModelOrder::Name => CursorKey::Text(m.full_name()),
                    ModelOrder::CreatedAt => CursorKey::Int(m.created_at),
                    ModelOrder::UpdatedAt => CursorKey::Int(m.updated_at),
                },
                id: m.id,
            })
        } else {
            None
        };
        attach(&mut conn, &mut items).await?;
        Ok(Page { items, next })
    }
}
