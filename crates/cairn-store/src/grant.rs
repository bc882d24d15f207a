//! Role grants: which account holds which role, globally or in one namespace.
//! Every change is audited in its own transaction; roles are validated by the caller
//! (`cairn_core::Role`) and again by the database's CHECK constraint.

use serde::Serialize;

use crate::user::insert_grant;
use crate::{AuditContext, Store, StoreError, audit, params};

/// A grant, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct GrantRecord {
    /// Grant id.
    pub id: String,
    /// The account's login name.
    pub username: String,
    /// The role.
    pub role: String,
    /// The namespace, or `None` for a global grant.
    pub namespace: Option<String>,
    /// Granted at (ms).
    pub created_at: i64,
    /// Granted by (actor).
    pub created_by: String,
}

const SELECT_GRANT: &str = "SELECT g.id, u.username, g.role, n.name AS namespace, g.created_at, g.created_by \
    FROM role_grants g JOIN users u ON u.id = g.user_id LEFT JOIN namespaces n ON n.id = g.namespace_id";

fn target(username: &str, role: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("grant:{username}/{role}@{ns}"),
        None => format!("grant:{username}/{role}"),
    }
}

impl Store {
    /// Lists grants, optionally of one account and/or in one namespace (`Some("")` for the
    /// global ones only).
    pub async fn list_grants(
        &self,
        username: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let mut sql = format!("{SELECT_GRANT} WHERE 1 = 1");
        let mut params = Vec::new();
        if let Some(u) = username {
            params.push(crate::Param::from(u));
            sql.push_str(&format!(" AND u.username = ${}", params.len()));
        }
        match namespace {
            Some("") => sql.push_str(" AND g.namespace_id IS NULL"),
            Some(ns) => {
                params.push(crate::Param::from(ns));
                sql.push_str(&format!(" AND n.name = ${}", params.len()));
            }
            None => {}
        }
        sql.push_str(" ORDER BY u.username, g.role, n.name LIMIT 10000");
        let mut c = self.db.read().await?;
        c.conn().fetch_all(sqlx::AssertSqlSafe(sql), params).await
    }

    /// Grants `role` to `username`, globally or in `namespace` (which must exist).
    pub async fn create_grant(
        &self,
        ctx: &AuditContext,
        username: &str,
        role: &str,
        namespace: Option<&str>,
    ) -> Result<GrantRecord, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let user: Option<(String,)> =
            conn.fetch_optional("SELECT id FROM users WHERE username = $1", params![username]).await?;
        let (user_id,) = user.ok_or_else(|| StoreError::NotFound(format!("user \"{username}\" does not exist")))?;
        let namespace_id = match namespace {
            None => None,
            Some(ns) => {
                let found: Option<(i64,)> =
                    conn.fetch_optional("SELECT id FROM namespaces WHERE name = $1", params![ns]).await?;
                Some(found.ok_or_else(|| StoreError::NotFound(format!("namespace \"{ns}\" does not exist")))?.0)
            }
        };
        let id = insert_grant(&mut conn, &ctx.actor, now, &user_id, role, namespace_id).await.map_err(|e| {
            if e.is_unique_violation() {
                StoreError::Conflict(format!(
                    "{username} already holds {role}{}",
                    namespace.map(|n| format!(" in {n}")).unwrap_or_default()
                ))
            } else {
                e
            }
        })?;
        let record: GrantRecord =
            conn.fetch_one(sqlx::AssertSqlSafe(format!("{SELECT_GRANT} WHERE g.id = $1")), params![&id]).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "grant.create",
            &target(username, role, namespace),
            None::<&()>,
            Some(&record),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Revokes the grant `id`.
    pub async fn delete_grant(&self, ctx: &AuditContext, id: &str) -> Result<GrantRecord, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let record: GrantRecord = conn
            .fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_GRANT} WHERE g.id = $1")), params![id])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("grant \"{id}\" does not exist")))?;
        if record.role == "admin" && record.namespace.is_none() {
            let (user_id,): (String,) =
                conn.fetch_one("SELECT user_id FROM role_grants WHERE id = $1", params![id]).await?;
            if crate::user::other_enabled_admins(&mut conn, &user_id).await? == 0 {
                return Err(StoreError::Conflict(format!(
                    "\"{}\" is the last enabled administrator: grant the admin role to another account first",
                    record.username
                )));
            }
        }
        conn.execute("DELETE FROM role_grants WHERE id = $1", params![id]).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "grant.delete",
            &target(&record.username, &record.role, record.namespace.as_deref()),
            Some(&record),
            None::<&()>,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }
}
