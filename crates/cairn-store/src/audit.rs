//! The audit record of every change. Events are written by the store's own mutation
//! methods, inside the transaction of the change they describe.

use serde::Serialize;

use crate::db::Conn;
use crate::{AuditContext, Cursor, CursorKey, Page, Store, StoreError, params};

/// One audit event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditEvent {
    /// Sequence number.
    pub id: i64,
    /// When, in ms since the epoch.
    pub occurred_at: i64,
    /// Who.
    pub actor: String,
    /// With which API key.
    pub key_id: Option<String>,
    /// What (`model.create`, `version.delete`, …).
    pub action: String,
    /// On what (`model:team/x`, `version:team/x:3`, …).
    pub target: String,
    /// `success` or `denied`.
    pub outcome: String,
    /// State before (JSON), if any.
    pub before_state: Option<String>,
    /// State after (JSON), if any.
    pub after_state: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The client address.
    pub source_ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
}

/// Writes one event on `conn` (which should be the transaction of the change).
pub(crate) async fn record(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    action: &str,
    target: &str,
    before: Option<&impl Serialize>,
    after: Option<&impl Serialize>,
) -> Result<(), StoreError> {
    record_outcome(conn, ctx, now, action, target, "success", before, after).await
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_outcome(
    conn: &mut Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    action: &str,
    target: &str,
    outcome: &str,
    before: Option<&impl Serialize>,
    after: Option<&impl Serialize>,
) -> Result<(), StoreError> {
    let before = before.map(json);
    let after = after.map(json);
    conn.execute(
        "INSERT INTO audit_events (occurred_at, actor, key_id, action, target, outcome, \
         before_state, after_state, request_id, source_ip, user_agent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        params![
            now,
            &ctx.actor,
            ctx.key_id.clone(),
            action,
            target,
            outcome,
            before,
            after,
            ctx.request_id.clone(),
            ctx.source_ip.clone(),
            ctx.user_agent.clone()
        ],
    )
    .await?;
    Ok(())
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"unserialisable\":\"{e}\"}}"))
}

/// Which audit events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// At most this many (capped at 1000).
    pub limit: usize,
    /// Events after this one.
    pub after: Option<Cursor>,
}

impl Store {
    /// Records an event that has no state change of its own (a denied attempt, a login).
    pub async fn record_event(
        &self,
        ctx: &AuditContext,
        action: &str,
        target: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        record_outcome(&mut tx.conn(), ctx, self.now(), action, target, outcome, None::<&()>, None::<&()>).await?;
        tx.commit().await
    }

    /// Lists audit events, oldest first.
    pub async fn list_audit_events(&self, q: &AuditQuery) -> Result<Page<AuditEvent>, StoreError> {
        let limit = q.limit.clamp(1, 1000);
        let after = match &q.after {
            Some(Cursor { key: CursorKey::Int(_), id }) => *id,
            Some(_) => return Err(StoreError::Invalid("page token does not belong to this listing".into())),
            None => 0,
        };
        let mut rows: Vec<AuditEvent> = self
            .db
            .read()
            .await?
            .conn()
            .fetch_all(
                "SELECT * FROM audit_events WHERE id > $1 \
                 AND ($2 IS NULL OR actor = $2) AND ($3 IS NULL OR action = $3) \
                 AND ($4 IS NULL OR target = $4) ORDER BY id LIMIT $5",
                params![
                    after,
                    q.actor.clone(),
                    q.action.clone(),
                    q.target.clone(),
                    i64::try_from(limit + 1).unwrap_or(1001)
                ],
            )
            .await?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|e| Cursor { key: CursorKey::Int(e.id), id: e.id })
        } else {
            None
        };
        Ok(Page { items: rows, next })
    }
}
