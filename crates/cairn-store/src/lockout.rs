//! Failed logins and MFA codes, counted per subject (`user:<name>`, whether or not the
//! account exists, and `ip:<address>`), and the lockouts they cause. The counters live in
//! the database so that every replica sees the same ones.

use serde::Serialize;

use crate::db::Conn;
use crate::{AuditContext, Store, StoreError, audit, params};

/// The counter subject of a login name.
pub fn user_subject(username: &str) -> String {
    // Bounded, so a flood of huge names cannot bloat the table.
    format!("user:{}", username.chars().take(128).collect::<String>())
}

/// The counter subject of a client address.
pub fn ip_subject(address: &str) -> String {
    format!("ip:{address}")
}

/// A subject's failures and lockout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuthFailure {
    /// `user:<name>` or `ip:<address>`.
    pub subject: String,
    /// Failures counted since `first_at`.
    pub failures: i64,
    /// The first failure counted (ms).
    pub first_at: i64,
    /// The last failure (ms).
    pub last_at: i64,
    /// Refused until (ms), if locked.
    pub locked_until: Option<i64>,
}

/// One subject to count a failure against, and after how many it locks.
#[derive(Debug, Clone)]
pub struct FailureSubject {
    /// `user:<name>` or `ip:<address>`.
    pub subject: String,
    /// Lock at this many failures.
    pub max_failures: u32,
}

/// How failures are counted.
#[derive(Debug, Clone, Copy)]
pub struct FailurePolicy {
    /// Failures older than this (ms) are forgotten: counting starts again.
    pub window_ms: i64,
    /// How long a lockout lasts (ms).
    pub lock_ms: i64,
}

const SELECT_FAILURE: &str = "SELECT subject, failures, first_at, last_at, locked_until FROM auth_failures";

/// Forgets the failures of `subject` (after a success).
pub(crate) async fn clear(conn: &mut Conn<'_>, subject: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM auth_failures WHERE subject = $1", params![subject]).await?;
    Ok(())
}

impl Store {
    /// The latest time (ms) until which any of `subjects` is locked, if one is locked now.
    pub async fn locked_until(&self, subjects: &[String]) -> Result<Option<i64>, StoreError> {
        let now = self.now();
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let mut until: Option<i64> = None;
        for s in subjects {
            let row: Option<(Option<i64>,)> = conn
                .fetch_optional(
                    "SELECT locked_until FROM auth_failures WHERE subject = $1 AND locked_until > $2",
                    params![s.as_str(), now],
                )
                .await?;
            if let Some((Some(t),)) = row {
                until = Some(until.map_or(t, |u| u.max(t)));
            }
        }
        Ok(until)
    }

    /// Counts one failure against each subject (in the order given: always the account
    /// before the address, so concurrent transactions lock rows in the same order), records
    /// `action` with outcome `failure` on `target`, and locks every subject that reaches its
    /// limit, recording `auth.lockout` for it — in one transaction. Returns the new lockouts.
    pub async fn record_auth_failure(
        &self,
        ctx: &AuditContext,
        action: &str,
        target: &str,
        subjects: &[FailureSubject],
        policy: FailurePolicy,
    ) -> Result<Vec<AuthFailure>, StoreError> {
        let now = self.now();
        let forget_before = now - policy.window_ms;
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let mut locked = Vec::new();
        for s in subjects {
            // A counter starts again when its window has passed or its lockout is over.
            conn.execute(
                "INSERT INTO auth_failures (subject, failures, first_at, last_at, locked_until) \
                 VALUES ($1, 1, $2, $2, NULL) \
                 ON CONFLICT (subject) DO UPDATE SET \
                 failures = CASE WHEN auth_failures.first_at < $3 OR auth_failures.locked_until <= $2 \
                     THEN 1 ELSE auth_failures.failures + 1 END, \
                 first_at = CASE WHEN auth_failures.first_at < $3 OR auth_failures.locked_until <= $2 \
                     THEN $2 ELSE auth_failures.first_at END, \
                 locked_until = CASE WHEN auth_failures.first_at < $3 OR auth_failures.locked_until <= $2 \
                     THEN NULL ELSE auth_failures.locked_until END, \
                 last_at = $2",
                params![s.subject.as_str(), now, forget_before],
            )
            .await?;
            let row: AuthFailure = conn
                .fetch_one(
                    sqlx::AssertSqlSafe(format!("{SELECT_FAILURE} WHERE subject = $1")),
                    params![s.subject.as_str()],
                )
                .await?;
            if row.locked_until.is_none() && row.failures >= i64::from(s.max_failures.max(1)) {
                let until = now + policy.lock_ms;
                conn.execute(
                    "UPDATE auth_failures SET locked_until = $1 WHERE subject = $2",
                    params![until, s.subject.as_str()],
                )
                .await?;
                let row = AuthFailure { locked_until: Some(until), ..row };
                audit::record(&mut conn, ctx, now, "auth.lockout", &row.subject, None::<&()>, Some(&row)).await?;
                locked.push(row);
            }
        }
        audit::record_outcome(&mut conn, ctx, now, action, target, "failure", None::<&()>, None::<&()>).await?;
        tx.commit().await?;
        Ok(locked)
    }

    /// Deletes counters with no failure since `before` (ms) and no lockout in force.
    pub async fn sweep_auth_failures(&self, before: i64) -> Result<u64, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let n = tx
            .conn()
            .execute(
                "DELETE FROM auth_failures WHERE last_at < $1 AND (locked_until IS NULL OR locked_until <= $2)",
                params![before, now],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The lockouts in force, latest first.
    pub async fn list_lockouts(&self) -> Result<Vec<AuthFailure>, StoreError> {
        let now = self.now();
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "{SELECT_FAILURE} WHERE locked_until > $1 ORDER BY locked_until DESC, subject LIMIT 10000"
                )),
                params![now],
            )
            .await
    }

    /// Releases `subject`: its lockout ends and its failures are forgotten. Records
    /// `auth.unlock`.
    pub async fn release_lockout(&self, ctx: &AuditContext, subject: &str) -> Result<AuthFailure, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let row: AuthFailure = conn
            .fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_FAILURE} WHERE subject = $1")), params![subject])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("\"{subject}\" has no failed attempts on record")))?;
        clear(&mut conn, subject).await?;
        audit::record(&mut conn, ctx, now, "auth.unlock", subject, Some(&row), None::<&()>).await?;
        tx.commit().await?;
        Ok(row)
    }
}
