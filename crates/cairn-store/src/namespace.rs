//! Namespaces: the teams that own models.

use cairn_core::Namespace as NamespaceName;
use serde::Serialize;

use crate::db::Conn;
use crate::{AuditContext, Store, StoreError, audit, params};

/// A namespace as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Namespace {
    /// Internal id.
    #[serde(skip)]
    pub id: i64,
    /// The namespace's name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Number of models in it.
    pub model_count: i64,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by.
    pub created_by: String,
    /// Updated at (ms).
    pub updated_at: i64,
    /// Updated by.
    pub updated_by: String,
}

const SELECT_NAMESPACE: &str = "SELECT n.id, n.name, n.description, \
    (SELECT COUNT(*) FROM models m WHERE m.namespace_id = n.id) AS model_count, \
    n.created_at, n.created_by, n.updated_at, n.updated_by FROM namespaces n";

/// Finds an existing namespace's id.
pub(crate) async fn id_of(conn: &mut Conn<'_>, name: &NamespaceName) -> Result<i64, StoreError> {
    conn.fetch_optional::<(i64,)>("SELECT id FROM namespaces WHERE name = $1", params![name.as_str()])
        .await?
        .map(|(id,)| id)
        .ok_or_else(|| StoreError::NotFound(format!("namespace \"{name}\" does not exist")))
}

/// Finds a namespace's id, creating the namespace (audited) when it does not exist.
pub(crate) async fn ensure(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    name: &NamespaceName,
) -> Result<i64, StoreError> {
    let select = "SELECT id FROM namespaces WHERE name = $1";
    if let Some((id,)) = conn.fetch_optional::<(i64,)>(select, params![name.as_str()]).await? {
        return Ok(id);
    }
    // Two writers may create the first models of a new namespace at once (PostgreSQL runs
    // them in parallel): the second waits for the first, inserts nothing and uses its row,
    // instead of failing on the unique name.
    let inserted: Option<(i64,)> = conn
        .fetch_optional(
            "INSERT INTO namespaces (name, description, created_at, created_by, updated_at, updated_by) \
             VALUES ($1, '', $2, $3, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING id",
            params![name.as_str(), now, &ctx.actor],
        )
        .await?;
    match inserted {
        Some((id,)) => {
            audit_create(conn, ctx, now, name, "").await?;
            Ok(id)
        }
        None => Ok(conn.fetch_one::<(i64,)>(select, params![name.as_str()]).await?.0),
    }
}

async fn insert(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    name: &NamespaceName,
    description: &str,
) -> Result<i64, StoreError> {
    let (id,): (i64,) = conn
        .fetch_one(
            "INSERT INTO namespaces (name, description, created_at, created_by, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $3, $4) RETURNING id",
            params![name.as_str(), description, now, &ctx.actor],
        )
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                StoreError::Conflict(format!("namespace \"{name}\" already exists"))
            } else {
                e
            }
        })?;
    audit_create(conn, ctx, now, name, description).await?;
    Ok(id)
}

async fn audit_create(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    name: &NamespaceName,
    description: &str,
) -> Result<(), StoreError> {
    audit::record(
        conn,
        ctx,
        now,
        "namespace.create",
        &format!("namespace:{name}"),
        None::<&()>,
        Some(&serde_json::json!({ "name": name.as_str(), "description": description })),
    )
    .await
}

impl Store {
    /// Creates a namespace.
    pub async fn create_namespace(
        &self,
        ctx: &AuditContext,
        name: &NamespaceName,
        description: &str,
    ) -> Result<Namespace, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        insert(&mut tx.conn(), ctx, now, name, description).await?;
        tx.commit().await?;
        self.get_namespace(name).await
    }

    /// Gets a namespace.
    pub async fn get_namespace(&self, name: &NamespaceName) -> Result<Namespace, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_optional(
                sqlx::AssertSqlSafe(format!("{SELECT_NAMESPACE} WHERE n.name = $1")),
                params![name.as_str()],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("namespace \"{name}\" does not exist")))
    }

    /// Lists namespaces by name.
    pub async fn list_namespaces(&self) -> Result<Vec<Namespace>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn().fetch_all(sqlx::AssertSqlSafe(format!("{SELECT_NAMESPACE} ORDER BY n.name LIMIT 10000")), vec![]).await
    }

    /// Deletes an empty namespace.
    pub async fn delete_namespace(&self, ctx: &AuditContext, name: &NamespaceName) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before: Namespace = conn
            .fetch_optional(
                sqlx::AssertSqlSafe(format!("{SELECT_NAMESPACE} WHERE n.name = $1")),
                params![name.as_str()],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("namespace \"{name}\" does not exist")))?;
        if before.model_count > 0 {
            return Err(StoreError::Conflict(format!(
                "namespace \"{name}\" still has {} model(s); delete them first",
                before.model_count
            )));
        }
        conn.execute("DELETE FROM namespaces WHERE id = $1", params![before.id]).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "namespace.delete",
            &format!("namespace:{name}"),
            Some(&before),
            None::<&()>,
        )
        .await?;
        tx.commit().await
    }
}
