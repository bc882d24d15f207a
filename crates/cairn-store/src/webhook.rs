//! Webhooks: HTTP callbacks for lifecycle events (docs/WEBHOOKS.md), and their delivery log.
//!
//! A webhook belongs to one namespace, or to none — then it receives the events of every
//! namespace (for a security team). Events are put in the log by [`enqueue`], inside the
//! transaction of the change that raised them, so a delivery exists exactly when the change
//! committed; the server's delivery worker claims due deliveries
//! ([`Store::claim_due_deliveries`]), posts them, and records the outcome.
//!
//! The signing secret of a hook is stored here in clear (the worker needs it to sign), and is
//! never returned by a listing nor written into an audit record: anyone with read access to
//! the database can forge deliveries.

use cairn_core::Namespace as NamespaceName;
use serde::Serialize;

use crate::db::{Backend, Conn};
use crate::page::placeholders;
use crate::{AuditContext, Cursor, CursorKey, Page, Param, Store, StoreError, audit, params};

/// The events a webhook may subscribe to. `*` subscribes to all of them.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "version.submitted",
    "version.approved",
    "version.rejected",
    "version.promoted",
    "policy.violation",
    "evaluation.failed",
    "deployment.recorded",
    "deployment.rolled_back",
];

/// Subscribes to every event of [`WEBHOOK_EVENTS`].
pub const ALL_EVENTS: &str = "*";

/// The test event sent by [`Store::ping_webhook`]: always delivered when asked for, never
/// subscribed to.
pub const PING_EVENT: &str = "ping";

/// Most events one hook may list.
const MAX_EVENTS: usize = 16;

/// Longest error text kept per delivery.
const MAX_ERROR_CHARS: usize = 1000;

/// A webhook as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// The namespace whose events it receives, or `None` for every namespace.
    pub namespace: Option<String>,
    /// Where deliveries are posted.
    pub url: String,
    /// The events it subscribes to (names from [`WEBHOOK_EVENTS`], or `*`).
    pub events: Vec<String>,
    /// Whether deliveries are made.
    pub active: bool,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by (actor).
    pub created_by: String,
}

#[derive(sqlx::FromRow)]
struct WebhookRow {
    id: String,
    namespace: Option<String>,
    url: String,
    events: String,
    active: bool,
    created_at: i64,
    created_by: String,
}

impl From<WebhookRow> for Webhook {
    fn from(r: WebhookRow) -> Self {
        Self {
            id: r.id,
            namespace: r.namespace,
            url: r.url,
            events: serde_json::from_str(&r.events).unwrap_or_default(),
            active: r.active,
            created_at: r.created_at,
            created_by: r.created_by,
        }
    }
}

const SELECT_WEBHOOK: &str = "SELECT w.id, n.name AS namespace, w.url, w.events, w.active, w.created_at, \
    w.created_by FROM webhooks w LEFT JOIN namespaces n ON n.id = w.namespace_id";

/// One delivery of one event to one hook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    /// Its id (also sent as `Cairn-Webhook-Id`).
    pub id: String,
    /// The hook.
    pub webhook_id: String,
    /// The event name.
    pub event: String,
    /// The event's data (`data` of the body sent).
    pub payload: serde_json::Value,
    /// `pending`, `delivered` or `failed` (gave up).
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due (ms), while pending.
    pub next_attempt_at: i64,
    /// The HTTP status of the last attempt, if one was received.
    pub last_status: Option<i64>,
    /// Why the last attempt failed (empty when it did not).
    pub last_error: String,
    /// Enqueued at (ms).
    pub created_at: i64,
    /// Delivered at (ms).
    pub delivered_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    webhook_id: String,
    event: String,
    payload: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    last_status: Option<i64>,
    last_error: String,
    created_at: i64,
    delivered_at: Option<i64>,
}

impl From<DeliveryRow> for WebhookDelivery {
    fn from(r: DeliveryRow) -> Self {
        Self {
            id: r.id,
            webhook_id: r.webhook_id,
            event: r.event,
            payload: serde_json::from_str(&r.payload).unwrap_or(serde_json::Value::Null),
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        }
    }
}

const SELECT_DELIVERY: &str = "SELECT id, webhook_id, event, payload, status, attempts, next_attempt_at, \
    last_status, last_error, created_at, delivered_at FROM webhook_deliveries";

/// A delivery handed to the worker: what it needs to post and sign it.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueDelivery {
    /// The delivery's id.
    pub id: String,
    /// The hook's id.
    pub webhook_id: String,
    /// Where to post.
    pub url: String,
    /// The signing secret (never log it).
    pub secret: String,
    /// The event name.
    pub event: String,
    /// The event's data, as JSON text.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// Enqueued at (ms).
    pub created_at: i64,
}

// The secret stays out of logs even through `{:?}`.
impl std::fmt::Debug for DueDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueDelivery")
            .field("id", &self.id)
            .field("webhook_id", &self.webhook_id)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("event", &self.event)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Checks a subscription list: one to 16 names from [`WEBHOOK_EVENTS`] or `*`, no repeats.
pub fn check_events(events: &[String]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::Invalid("a webhook must subscribe to at least one event (or \"*\")".into()));
    }
    if events.len() > MAX_EVENTS {
        return Err(StoreError::Invalid(format!("a webhook subscribes to at most {MAX_EVENTS} events")));
    }
    for (i, e) in events.iter().enumerate() {
        if e != ALL_EVENTS && !WEBHOOK_EVENTS.contains(&e.as_str()) {
            return Err(StoreError::Invalid(format!(
                "unknown event {e:?}; use \"*\" or one of: {}",
                WEBHOOK_EVENTS.join(", ")
            )));
        }
        if events[..i].contains(e) {
            return Err(StoreError::Invalid(format!("event {e:?} is listed twice")));
        }
    }
    Ok(())
}

fn subscribes(events: &[String], event: &str) -> bool {
    events.iter().any(|e| e == ALL_EVENTS || e == event)
}

fn hook_target(id: &str) -> String {
    format!("webhook:{id}")
}

async fn insert_delivery(
    conn: &mut Conn<'_>,
    now: i64,
    webhook_id: &str,
    event: &str,
    payload: &str,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    conn.execute(
        "INSERT INTO webhook_deliveries (id, webhook_id, event, payload, status, attempts, next_attempt_at, \
         last_error, created_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, '', $5)",
        params![&id, webhook_id, event, payload, now],
    )
    .await?;
    Ok(id)
}

/// Puts `event` about `namespace` in the delivery log of every active hook of that namespace
/// or of every namespace that subscribes to it (or to `*`), on `conn` — the transaction of the
/// change that raised it. Returns the number of deliveries enqueued. `event` must be one of
/// [`WEBHOOK_EVENTS`].
pub(crate) async fn enqueue(
    conn: &mut Conn<'_>,
    now: i64,
    namespace: &str,
    event: &str,
    payload: &serde_json::Value,
) -> Result<u64, StoreError> {
    if !WEBHOOK_EVENTS.contains(&event) {
        return Err(StoreError::Invalid(format!("unknown webhook event {event:?}")));
    }
    let hooks: Vec<(String, String)> = conn
        .fetch_all(
            "SELECT w.id, w.events FROM webhooks w LEFT JOIN namespaces n ON n.id = w.namespace_id \
             WHERE w.active = $1 AND (w.namespace_id IS NULL OR n.name = $2) ORDER BY w.id",
            params![true, namespace],
        )
        .await?;
    let payload = payload.to_string();
    let mut count = 0;
    for (id, events) in hooks {
        let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
        if subscribes(&events, event) {
            insert_delivery(conn, now, &id, event, &payload).await?;
            count += 1;
        }
    }
    Ok(count)
}

async fn fetch_hook(conn: &mut Conn<'_>, id: &str) -> Result<Webhook, StoreError> {
    let row: Option<WebhookRow> =
        conn.fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_WEBHOOK} WHERE w.id = $1")), params![id]).await?;
    row.map(Webhook::from).ok_or_else(|| StoreError::NotFound(format!("webhook \"{id}\" does not exist")))
}

async fn fetch_delivery(conn: &mut Conn<'_>, webhook_id: &str, id: &str) -> Result<WebhookDelivery, StoreError> {
    let row: Option<DeliveryRow> = conn
        .fetch_optional(
            sqlx::AssertSqlSafe(format!("{SELECT_DELIVERY} WHERE id = $1 AND webhook_id = $2")),
            params![id, webhook_id],
        )
        .await?;
    row.map(WebhookDelivery::from)
        .ok_or_else(|| StoreError::NotFound(format!("webhook \"{webhook_id}\" has no delivery \"{id}\"")))
}

impl Store {
    /// Creates a webhook for `namespace` (which must exist), or for every namespace when
    /// `None`. `secret` is stored as given and never returned again; the caller generates it.
    /// The URL is stored as given: checking where it points is the caller's job.
    pub async fn create_webhook(
        &self,
        ctx: &AuditContext,
        namespace: Option<&NamespaceName>,
        url: &str,
        events: &[String],
        secret: &str,
    ) -> Result<Webhook, StoreError> {
        check_events(events)?;
        if url.is_empty() || url.len() > 2048 {
            return Err(StoreError::Invalid("a webhook URL must have 1 to 2048 characters".into()));
        }
        if secret.len() < 16 {
            return Err(StoreError::Invalid("a webhook secret must have at least 16 characters".into()));
        }
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let namespace_id = match namespace {
            None => None,
            Some(ns) => {
                let found: Option<(i64,)> =
                    conn.fetch_optional("SELECT id FROM namespaces WHERE name = $1", params![ns.as_str()]).await?;
                Some(found.ok_or_else(|| StoreError::NotFound(format!("namespace \"{ns}\" does not exist")))?.0)
            }
        };
        let id = uuid::Uuid::now_v7().to_string();
        let events_json = serde_json::to_string(events).unwrap_or_else(|_| "[]".into());
        conn.execute(
            "INSERT INTO webhooks (id, namespace_id, url, events, secret, active, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            params![&id, namespace_id, url, events_json, secret, true, now, &ctx.actor],
        )
        .await?;
        let hook = fetch_hook(&mut conn, &id).await?;
        audit::record(&mut conn, ctx, now, "webhook.create", &hook_target(&id), None::<&()>, Some(&hook)).await?;
        tx.commit().await?;
        Ok(hook)
    }

    /// Lists the hooks of `namespace`, or — with `None` — the hooks of every namespace (the
    /// global ones, which have no namespace). Oldest first; at most 1000.
    pub async fn list_webhooks(&self, namespace: Option<&NamespaceName>) -> Result<Vec<Webhook>, StoreError> {
        let mut c = self.db.read().await?;
        let rows: Vec<WebhookRow> = match namespace {
            Some(ns) => {
                c.conn()
                    .fetch_all(
                        sqlx::AssertSqlSafe(format!("{SELECT_WEBHOOK} WHERE n.name = $1 ORDER BY w.id LIMIT 1000")),
                        params![ns.as_str()],
                    )
                    .await?
            }
            None => {
                c.conn()
                    .fetch_all(
                        sqlx::AssertSqlSafe(format!(
                            "{SELECT_WEBHOOK} WHERE w.namespace_id IS NULL ORDER BY w.id LIMIT 1000"
                        )),
                        vec![],
                    )
                    .await?
            }
        };
        Ok(rows.into_iter().map(Webhook::from).collect())
    }

    /// Gets a hook (without its secret).
    pub async fn get_webhook(&self, id: &str) -> Result<Webhook, StoreError> {
        let mut c = self.db.read().await?;
        fetch_hook(&mut c.conn(), id).await
    }

    /// Deletes a hook and its delivery log.
    pub async fn delete_webhook(&self, ctx: &AuditContext, id: &str) -> Result<Webhook, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let hook = fetch_hook(&mut conn, id).await?;
        conn.execute("DELETE FROM webhooks WHERE id = $1", params![id]).await?;
        audit::record(&mut conn, ctx, now, "webhook.delete", &hook_target(id), Some(&hook), None::<&()>).await?;
        tx.commit().await?;
        Ok(hook)
    }

    /// Turns deliveries to a hook on or off. While off, no event is enqueued for it and its
    /// pending deliveries wait.
    pub async fn set_webhook_active(&self, ctx: &AuditContext, id: &str, active: bool) -> Result<Webhook, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = fetch_hook(&mut conn, id).await?;
        conn.execute("UPDATE webhooks SET active = $1 WHERE id = $2", params![active, id]).await?;
        let after = fetch_hook(&mut conn, id).await?;
        audit::record(&mut conn, ctx, now, "webhook.update", &hook_target(id), Some(&before), Some(&after)).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Enqueues a `ping` delivery to this hook only (active or not), audited.
    pub async fn ping_webhook(&self, ctx: &AuditContext, id: &str) -> Result<WebhookDelivery, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let hook = fetch_hook(&mut conn, id).await?;
        let payload = serde_json::json!({ "webhook_id": hook.id, "namespace": hook.namespace });
        let delivery_id = insert_delivery(&mut conn, now, id, PING_EVENT, &payload.to_string()).await?;
        let delivery = fetch_delivery(&mut conn, id, &delivery_id).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "webhook.ping",
            &hook_target(id),
            None::<&()>,
            Some(&serde_json::json!({ "delivery": delivery_id })),
        )
        .await?;
        tx.commit().await?;
        Ok(delivery)
    }

    /// Enqueues `event` about `namespace` for every hook that subscribes to it, in a
    /// transaction of its own (for events raised outside another transaction). Returns the
    /// number of deliveries enqueued.
    pub async fn enqueue_webhook_event(
        &self,
        namespace: &NamespaceName,
        event: &str,
        payload: &serde_json::Value,
    ) -> Result<u64, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let n = enqueue(&mut tx.conn(), now, namespace.as_str(), event, payload).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The delivery log of a hook, newest first, `limit` (1‥1000) per page, after `after`.
    pub async fn list_deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
        after: Option<&Cursor>,
    ) -> Result<Page<WebhookDelivery>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let after = match after {
            None => None,
            Some(Cursor { key: CursorKey::Text(id), .. }) => Some(id.clone()),
            Some(_) => return Err(StoreError::Invalid("page token does not belong to this listing".into())),
        };
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        fetch_hook(&mut conn, webhook_id).await?;
        // Ids are UUIDv7: they sort in the order deliveries were made.
        let mut rows: Vec<DeliveryRow> = conn
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "{SELECT_DELIVERY} WHERE webhook_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
                )),
                params![webhook_id, after, i64::try_from(limit + 1).unwrap_or(1001)],
            )
            .await?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| Cursor { key: CursorKey::Text(r.id.clone()), id: 0 })
        } else {
            None
        };
        Ok(Page { items: rows.into_iter().map(WebhookDelivery::from).collect(), next })
    }

    /// One delivery of a hook.
    pub async fn get_delivery(&self, webhook_id: &str, id: &str) -> Result<WebhookDelivery, StoreError> {
        let mut c = self.db.read().await?;
        fetch_delivery(&mut c.conn(), webhook_id, id).await
    }

    /// Sends a delivery again: back to `pending`, due now, with a fresh budget of attempts.
    pub async fn redeliver(
        &self,
        ctx: &AuditContext,
        webhook_id: &str,
        delivery_id: &str,
    ) -> Result<WebhookDelivery, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = fetch_delivery(&mut conn, webhook_id, delivery_id).await?;
        conn.execute(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, \
             delivered_at = NULL WHERE id = $2",
            params![now, delivery_id],
        )
        .await?;
        let after = fetch_delivery(&mut conn, webhook_id, delivery_id).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "webhook.redeliver",
            &format!("webhook:{webhook_id}/delivery:{delivery_id}"),
            Some(&serde_json::json!({ "status": before.status, "attempts": before.attempts })),
            Some(&serde_json::json!({ "status": after.status, "attempts": after.attempts })),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Hands out up to `limit` pending deliveries due at `now` to active hooks, and pushes
    /// their next attempt `lease_ms` forward so that no other worker takes them meanwhile
    /// (several replicas may call this at once: on PostgreSQL rows another claim holds are
    /// skipped, on SQLite the single writer serialises claims).
    pub async fn claim_due_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let limit = i64::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let lock = if conn.backend() == Backend::Postgres { " FOR UPDATE OF d SKIP LOCKED" } else { "" };
        let ids: Vec<(String,)> = conn
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                     WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND w.active = $2 \
                     ORDER BY d.next_attempt_at, d.id LIMIT $3{lock}"
                )),
                params![now, true, limit],
            )
            .await?;
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let list = placeholders(2, ids.len());
        let mut p: Vec<Param> = params![now.saturating_add(lease_ms)];
        p.extend(ids.iter().map(|(id,)| Param::from(id)));
        conn.execute(
            sqlx::AssertSqlSafe(format!("UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id IN {list}")),
            p,
        )
        .await?;
        let list = placeholders(1, ids.len());
        let due: Vec<DueDelivery> = conn
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "SELECT d.id, d.webhook_id, w.url, w.secret, d.event, d.payload, d.attempts, d.created_at \
                     FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                     WHERE d.id IN {list} ORDER BY d.next_attempt_at, d.id"
                )),
                ids.into_iter().map(|(id,)| Param::from(id)).collect(),
            )
            .await?;
        tx.commit().await?;
        Ok(due)
    }

    /// Records a successful attempt (`status` is the receiver's 2xx).
    pub async fn record_delivery_success(&self, id: &str, status: i64, now: i64) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, last_status = $1, \
                 last_error = '', delivered_at = $2 WHERE id = $3 AND status = 'pending'",
                params![status, now, id],
            )
            .await?;
        tx.commit().await
    }

    /// Records a failed attempt: `status` is the receiver's answer when there was one. The
    /// delivery is tried again at `next_attempt_at`, or — when `None` — given up (`failed`).
    pub async fn record_delivery_failure(
        &self,
        id: &str,
        status: Option<i64>,
        error: &str,
        now: i64,
        next_attempt_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        let (state, next) = match next_attempt_at {
            Some(at) => ("pending", at),
            None => ("failed", now),
        };
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute(
                "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, last_status = $2, \
                 last_error = $3, next_attempt_at = $4 WHERE id = $5 AND status = 'pending'",
                params![state, status, error, next, id],
            )
            .await?;
        tx.commit().await
    }
}
