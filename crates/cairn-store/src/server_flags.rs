//! Flags every replica shares and an administrator switches while servers run: read-only
//! maintenance mode. Replicas poll them (see `cairn-server`'s maintenance layer).

use serde::Serialize;

use crate::{AuditContext, Store, StoreError, audit, params};

const MAINTENANCE: &str = "maintenance";

/// Maintenance mode is on: writes are refused with this message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Maintenance {
    /// Shown to clients whose writes are refused.
    pub message: String,
    /// When it was switched on (ms since the epoch).
    pub since: i64,
    /// Who switched it on.
    pub by: String,
}

impl Store {
    /// Whether maintenance mode is on, and since when.
    pub async fn maintenance(&self) -> Result<Option<Maintenance>, StoreError> {
        let mut c = self.db.read().await?;
        let row: Option<(String, i64, String)> = c
            .conn()
            .fetch_optional(
                "SELECT value, updated_at, updated_by FROM server_flags WHERE name = $1",
                params![MAINTENANCE],
            )
            .await?;
        Ok(row.map(|(message, since, by)| Maintenance { message, since, by }))
    }

    /// Switches read-only maintenance mode on (with the message clients see) or off, for every
    /// replica, audited as `server.maintenance_on` / `server.maintenance_off`. Switching on
    /// while on replaces the message; switching off while off changes nothing and records
    /// nothing.
    pub async fn set_maintenance(
        &self,
        ctx: &AuditContext,
        message: Option<&str>,
    ) -> Result<Option<Maintenance>, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before: Option<(String, i64, String)> = conn
            .fetch_optional(
                "SELECT value, updated_at, updated_by FROM server_flags WHERE name = $1",
                params![MAINTENANCE],
            )
            .await?;
        let before = before.map(|(message, since, by)| Maintenance { message, since, by });
        let after = match message {
            Some(m) => {
                let after = Maintenance { message: m.to_owned(), since: now, by: ctx.actor.clone() };
                conn.execute(
                    "INSERT INTO server_flags (name, value, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at, \
                     updated_by = excluded.updated_by",
                    params![MAINTENANCE, m, now, ctx.actor.as_str()],
                )
                .await?;
                audit::record(&mut conn, ctx, now, "server.maintenance_on", "server", before.as_ref(), Some(&after))
                    .await?;
                Some(after)
            }
            None => {
                if before.is_some() {
                    conn.execute("DELETE FROM server_flags WHERE name = $1", params![MAINTENANCE]).await?;
                    audit::record(
                        &mut conn,
                        ctx,
                        now,
                        "server.maintenance_off",
                        "server",
                        before.as_ref(),
                        None::<&()>,
                    )
                    .await?;
                }
                None
            }
        };
        tx.commit().await?;
        Ok(after)
    }
}
