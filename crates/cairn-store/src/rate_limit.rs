//! Rate-limit counters shared by replicas through the database.
//!
//! A server counts requests in memory and adds what it counted to the table `rate_limits`
//! about once a second ([`Store::add_rate_counts`]), so several replicas on one PostgreSQL
//! share one budget per subject without a database write per request. The row keeps the
//! subject's current window, the requests every replica counted in it, and a block. The
//! rules (which the server applies to its local copy the same way):
//!
//! - a subject is blocked while `blocked_until` is in the future;
//! - otherwise its window is over when it started at least one window length ago, or when a
//!   block has ended: the next count opens a new window that starts then.
//!
//! Counters are not registry state, so they write no audit events (the server audits the
//! blocks it sets).

use crate::{Store, StoreError, params};

/// Requests one replica counted for a subject since it last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDelta {
    /// `principal:<account id>` or `ip:<address>`.
    pub subject: String,
    /// Requests counted (negative when counted requests were given back).
    pub delta: i64,
    /// A block this replica set (ms), if any.
    pub blocked_until: Option<i64>,
}

/// The shared state of one subject.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RateCount {
    /// `principal:<account id>` or `ip:<address>`.
    pub subject: String,
    /// When the current window started (ms).
    pub window_start: i64,
    /// Requests counted in it by every replica.
    pub count: i64,
    /// Refused until then (ms).
    pub blocked_until: Option<i64>,
}

/// Most rows written in one transaction, so a flood of subjects never holds the write lock
/// for long.
const BATCH: usize = 500;

// The window is over when no block is set and it started a window length ago, or when a block
// has ended ($2 = now, $4 = window length in ms).
const ADD: &str = "\
INSERT INTO rate_limits (subject, window_start, count, blocked_until, updated_at)
VALUES ($1, $2, $6, $5, $2)
ON CONFLICT (subject) DO UPDATE SET
    window_start = CASE
        WHEN (rate_limits.blocked_until IS NULL AND rate_limits.window_start + $4 <= $2)
          OR rate_limits.blocked_until <= $2 THEN $2
        ELSE rate_limits.window_start END,
    count = CASE
        WHEN (rate_limits.blocked_until IS NULL AND rate_limits.window_start + $4 <= $2)
          OR rate_limits.blocked_until <= $2 THEN $6
        ELSE rate_limits.count + $3 END,
    blocked_until = CASE
        WHEN (rate_limits.blocked_until IS NULL AND rate_limits.window_start + $4 <= $2)
          OR rate_limits.blocked_until <= $2 THEN $5
        WHEN $5 IS NOT NULL AND (rate_limits.blocked_until IS NULL OR $5 > rate_limits.blocked_until) THEN $5
        ELSE rate_limits.blocked_until END,
    updated_at = $2
RETURNING subject, window_start, count, blocked_until";

impl Store {
    /// Adds one replica's counts and blocks, and returns every subject's shared state after
    /// them (in the order given). `window_ms` is the length of a window.
    pub async fn add_rate_counts(&self, window_ms: i64, deltas: &[RateDelta]) -> Result<Vec<RateCount>, StoreError> {
        let mut out = Vec::with_capacity(deltas.len());
        for chunk in deltas.chunks(BATCH) {
            let now = self.now();
            let mut tx = self.db.begin().await?;
            let mut conn = tx.conn();
            for d in chunk {
                let row: RateCount = conn
                    .fetch_one(
                        ADD,
                        params![d.subject.as_str(), now, d.delta, window_ms, d.blocked_until, d.delta.max(0)],
                    )
                    .await?;
                out.push(row);
            }
            tx.commit().await?;
        }
        Ok(out)
    }

    /// Subjects blocked now whose row changed at or after `since` (ms): how a replica learns
    /// of blocks that others set.
    pub async fn recent_rate_blocks(&self, since: i64) -> Result<Vec<RateCount>, StoreError> {
        let now = self.now();
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_all(
                "SELECT subject, window_start, count, blocked_until FROM rate_limits
                 WHERE blocked_until > $1 AND updated_at >= $2",
                params![now, since],
            )
            .await
    }

    /// The shared state of one subject, if it has a row.
    pub async fn rate_count(&self, subject: &str) -> Result<Option<RateCount>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_optional(
                "SELECT subject, window_start, count, blocked_until FROM rate_limits WHERE subject = $1",
                params![subject],
            )
            .await
    }

    /// Deletes the rows whose window and block are both over; returns how many.
    pub async fn prune_rate_counts(&self, window_ms: i64) -> Result<u64, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let n = tx
            .conn()
            .execute(
                "DELETE FROM rate_limits
                 WHERE (blocked_until IS NULL AND window_start + $1 <= $2) OR blocked_until <= $2",
                params![window_ms, now],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}
