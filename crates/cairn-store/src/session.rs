//! Login sessions. A session is found by the SHA-256 (hex) of its secret id, which only the
//! client's cookie holds; the row's own `id` (a UUID) names it in listings and audit
//! records and is no credential.

use serde::Serialize;

use crate::db::Conn;
use crate::{AuditContext, Store, StoreError, audit, lockout, params};

/// What logging in needs to know about an account.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginAccount {
    /// Account id.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// `user` or `service`.
    pub kind: String,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
    /// argon2id PHC string; `None` for accounts without a password (service accounts).
    pub password_hash: Option<String>,
    /// The account has a confirmed authenticator.
    pub mfa_enabled: bool,
}

impl std::fmt::Debug for LoginAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginAccount")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("kind", &self.kind)
            .field("disabled", &self.disabled)
            .field("mfa_enabled", &self.mfa_enabled)
            .finish_non_exhaustive()
    }
}

/// A session as stored (its secret is not: only its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SessionRecord {
    /// Row id (UUID): names the session, grants nothing.
    pub id: String,
    /// SHA-256 (hex) of the session's secret id.
    #[serde(skip)]
    pub token_hash: String,
    /// The account.
    pub user_id: String,
    /// A second factor was given in this session.
    pub mfa_verified: bool,
    /// Opened at (ms).
    pub created_at: i64,
    /// Last request at (ms).
    pub last_seen_at: i64,
    /// Ends at the latest at (ms).
    pub expires_at: i64,
    /// Ended at (ms).
    pub revoked_at: Option<i64>,
    /// Opened from.
    pub source_ip: Option<String>,
    /// Opened by this client.
    pub user_agent: Option<String>,
}

/// A session to open.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 (hex) of the new secret id.
    pub token_hash: String,
    /// The account.
    pub user_id: String,
    /// A second factor was given.
    pub mfa_verified: bool,
    /// Ends at the latest at (ms).
    pub expires_at: i64,
    /// Where from (recorded for the owner's session listing).
    pub source_ip: Option<String>,
    /// Which client.
    pub user_agent: Option<String>,
}

const SELECT_SESSION: &str = "SELECT id, token_hash, user_id, mfa_verified, created_at, last_seen_at, expires_at, \
    revoked_at, source_ip, user_agent FROM sessions";

/// What the audit record of a session says (never its secret).
#[derive(Serialize)]
struct SessionAudit<'a> {
    session: &'a str,
    mfa_verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces: Option<&'a str>,
}

async fn insert_session(conn: &mut Conn<'_>, now: i64, new: &NewSession) -> Result<SessionRecord, StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    conn.execute(
        "INSERT INTO sessions (id, token_hash, user_id, mfa_verified, created_at, last_seen_at, expires_at, \
         source_ip, user_agent) VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)",
        params![
            &id,
            &new.token_hash,
            &new.user_id,
            new.mfa_verified,
            now,
            new.expires_at,
            new.source_ip.clone(),
            new.user_agent.clone()
        ],
    )
    .await?;
    conn.fetch_one(sqlx::AssertSqlSafe(format!("{SELECT_SESSION} WHERE id = $1")), params![&id]).await
}

impl Store {
    /// The account `username` as logging in needs it.
    pub async fn find_login(&self, username: &str) -> Result<Option<LoginAccount>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_optional(
                "SELECT id AS user_id, username, kind, disabled, password_hash, \
                 (totp_enabled_at IS NOT NULL) AS mfa_enabled FROM users WHERE username = $1",
                params![username],
            )
            .await
    }

    /// Opens a session after a successful login: clears the account's failure counter, ends
    /// the session the client presented (if any: a login never keeps an old id), and records
    /// `auth.login` — all in one transaction. `method` says how the second factor was given.
    pub async fn open_session(
        &self,
        ctx: &AuditContext,
        username: &str,
        new: &NewSession,
        presented_token_hash: Option<&str>,
        method: Option<&str>,
    ) -> Result<SessionRecord, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        if let Some(old) = presented_token_hash {
            conn.execute(
                "UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
                params![now, old],
            )
            .await?;
        }
        let session = insert_session(&mut conn, now, new).await?;
        lockout::clear(&mut conn, &lockout::user_subject(username)).await?;
        let after = SessionAudit { session: &session.id, mfa_verified: session.mfa_verified, method, replaces: None };
        audit::record(&mut conn, ctx, now, "auth.login", &format!("user:{username}"), None::<&()>, Some(&after))
            .await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Replaces the session `old_id` by a new, MFA-verified one (step-up): the old id stops
    /// working at once. Records `auth.mfa`.
    pub async fn step_up_session(
        &self,
        ctx: &AuditContext,
        username: &str,
        old_id: &str,
        new: &NewSession,
        method: &str,
    ) -> Result<SessionRecord, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let ended = conn
            .execute(
                "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                params![now, old_id, &new.user_id],
            )
            .await?;
        if ended == 0 {
            return Err(StoreError::NotFound("this session has ended; log in again".into()));
        }
        let session = insert_session(&mut conn, now, new).await?;
        let after = SessionAudit {
            session: &session.id,
            mfa_verified: session.mfa_verified,
            method: Some(method),
            replaces: Some(old_id),
        };
        audit::record(&mut conn, ctx, now, "auth.mfa", &format!("user:{username}"), None::<&()>, Some(&after)).await?;
        tx.commit().await?;
        Ok(session)
    }

    /// The session whose secret id hashes to `token_hash`, ended or not.
    pub async fn find_session(&self, token_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_SESSION} WHERE token_hash = $1")), params![token_hash])
            .await
    }

    /// Records that the session was used now (callers throttle this; it is a write).
    pub async fn touch_session(&self, id: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute("UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1", params![now, id])
            .await?;
        tx.commit().await
    }

    /// The open sessions of `user_id`: not ended, not past `expires_at`, and used since
    /// `seen_since` (ms). Newest first.
    pub async fn list_sessions(&self, user_id: &str, seen_since: i64) -> Result<Vec<SessionRecord>, StoreError> {
        let now = self.now();
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "{SELECT_SESSION} WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                     AND last_seen_at >= $3 ORDER BY created_at DESC, id DESC LIMIT 1000"
                )),
                params![user_id, now, seen_since],
            )
            .await
    }

    /// Ends the session `id` of `user_id`, recording `action` (`auth.logout` when its owner
    /// logs out, `session.revoke` when it is ended from another session).
    pub async fn revoke_session(
        &self,
        ctx: &AuditContext,
        user_id: &str,
        id: &str,
        action: &str,
    ) -> Result<SessionRecord, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let ended = conn
            .execute(
                "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                params![now, id, user_id],
            )
            .await?;
        if ended == 0 {
            return Err(StoreError::NotFound(format!("you have no open session \"{id}\"")));
        }
        let session: SessionRecord =
            conn.fetch_one(sqlx::AssertSqlSafe(format!("{SELECT_SESSION} WHERE id = $1")), params![id]).await?;
        audit::record(&mut conn, ctx, now, action, &format!("session:{id}"), None::<&()>, Some(&session)).await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Ends every open session of the account; returns how many.
    pub async fn revoke_user_sessions(
        &self,
        ctx: &AuditContext,
        user_id: &str,
        username: &str,
    ) -> Result<u64, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let n = revoke_all(&mut conn, now, user_id).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "session.revoke",
            &format!("user:{username}"),
            None::<&()>,
            Some(&serde_json::json!({ "revoked": n })),
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// Ends every open session of `user_id` (not audited here).
pub(crate) async fn revoke_all(conn: &mut Conn<'_>, now: i64, user_id: &str) -> Result<u64, StoreError> {
    conn.execute("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL", params![now, user_id])
        .await
}
