//! Key/value tags, shared by models and versions: one write path that changes the tag,
//! touches the owner's `updated_*`, and records the audit event in the same transaction.

use cairn_core::TagKey;

use crate::db::Conn;
use crate::{AuditContext, StoreError, audit, params};

/// Where one kind of owner keeps its tags.
pub(crate) struct TagTable {
    /// The tag table (`model_tags`).
    pub table: &'static str,
    /// Its column referring to the owner (`model_id`).
    pub owner_column: &'static str,
    /// The owner's table, whose `updated_at`/`updated_by` a tag change touches (`models`).
    pub owner_table: &'static str,
    /// The audit action prefix (`model.tag`).
    pub action: &'static str,
}

pub(crate) const MODEL_TAGS: TagTable =
    TagTable { table: "model_tags", owner_column: "model_id", owner_table: "models", action: "model.tag" };
pub(crate) const VERSION_TAGS: TagTable =
    TagTable { table: "version_tags", owner_column: "version_id", owner_table: "versions", action: "version.tag" };

/// One tag change on one owner row.
pub(crate) struct TagChange<'a> {
    /// The owner's id.
    pub owner_id: i64,
    /// The audit target (`model:ns/name`).
    pub target: &'a str,
    /// The key.
    pub key: &'a TagKey,
    /// The value before the change, if the tag existed.
    pub old: Option<&'a str>,
    /// The value after the change; `None` deletes the tag.
    pub new: Option<&'a str>,
}

/// Sets or deletes one tag inside the caller's transaction, and audits it there.
pub(crate) async fn write(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    t: &TagTable,
    c: &TagChange<'_>,
) -> Result<(), StoreError> {
    let (table, owner) = (t.table, t.owner_column);
    let key = c.key.as_str();
    match c.new {
        Some(value) => {
            let sql = format!(
                "INSERT INTO {table} ({owner}, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT ({owner}, key) DO UPDATE SET value = excluded.value"
            );
            conn.execute(sqlx::AssertSqlSafe(sql), params![c.owner_id, key, value]).await?;
        }
        None => {
            let sql = format!("DELETE FROM {table} WHERE {owner} = $1 AND key = $2");
            conn.execute(sqlx::AssertSqlSafe(sql), params![c.owner_id, key]).await?;
        }
    }
    let sql = format!("UPDATE {} SET updated_at = $1, updated_by = $2 WHERE id = $3", t.owner_table);
    conn.execute(sqlx::AssertSqlSafe(sql), params![now, &ctx.actor, c.owner_id]).await?;
    let (action, after) = match c.new {
        Some(v) => ("set", Some(serde_json::json!({ "key": key, "value": v }))),
        None => ("delete", None),
    };
    audit::record(
        conn,
        ctx,
        now,
        &format!("{}.{action}", t.action),
        c.target,
        Some(&serde_json::json!({ "key": key, "value": c.old })),
        after.as_ref(),
    )
    .await
}
