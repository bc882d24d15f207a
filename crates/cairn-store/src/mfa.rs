//! Multi-factor authentication state: the TOTP secret (pending while an enrolment is not
//! confirmed), the last time step accepted (so no code is accepted twice), and single-use
//! recovery codes, stored as SHA-256 hashes. Audit records never carry a secret or a code.

use crate::db::Conn;
use crate::{AuditContext, Store, StoreError, audit, params, session};

/// An account's MFA state.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MfaState {
    /// Account id.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// `user` or `service`.
    pub kind: String,
    /// The confirmed TOTP secret (base32), if enabled.
    pub totp_secret: Option<String>,
    /// A TOTP secret awaiting confirmation (base32).
    pub totp_pending_secret: Option<String>,
    /// When TOTP was confirmed (ms).
    pub totp_enabled_at: Option<i64>,
    /// The last TOTP time step accepted.
    pub totp_last_step: Option<i64>,
    /// Unused recovery codes left.
    pub recovery_codes_left: i64,
}

impl std::fmt::Debug for MfaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaState")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("totp_enabled_at", &self.totp_enabled_at)
            .field("totp_last_step", &self.totp_last_step)
            .field("recovery_codes_left", &self.recovery_codes_left)
            .finish_non_exhaustive()
    }
}

async fn replace_codes(conn: &mut Conn<'_>, now: i64, user_id: &str, hashes: &[String]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM recovery_codes WHERE user_id = $1", params![user_id]).await?;
    for h in hashes {
        conn.execute(
            "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
            params![user_id, h.as_str(), now],
        )
        .await?;
    }
    Ok(())
}

async fn clear_mfa(conn: &mut Conn<'_>, now: i64, user_id: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE users SET totp_secret = NULL, totp_pending_secret = NULL, totp_enabled_at = NULL, \
         totp_last_step = NULL, updated_at = $1 WHERE id = $2",
        params![now, user_id],
    )
    .await?;
    conn.execute("DELETE FROM recovery_codes WHERE user_id = $1", params![user_id]).await?;
    Ok(())
}

impl Store {
    /// The MFA state of the account `user_id`.
    pub async fn mfa_state(&self, user_id: &str) -> Result<MfaState, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_optional(
                "SELECT id AS user_id, username, kind, totp_secret, totp_pending_secret, totp_enabled_at, \
                 totp_last_step, (SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = users.id \
                 AND r.used_at IS NULL) AS recovery_codes_left FROM users WHERE id = $1",
                params![user_id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound("the account no longer exists".into()))
    }

    /// Starts a TOTP enrolment: `secret` (base32) waits for confirmation, replacing any
    /// earlier unconfirmed one. Refused when TOTP is already enabled. Records `mfa.enroll`.
    pub async fn begin_totp_enrolment(
        &self,
        ctx: &AuditContext,
        user_id: &str,
        username: &str,
        secret: &str,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let n = conn
            .execute(
                "UPDATE users SET totp_pending_secret = $1, updated_at = $2 WHERE id = $3 AND totp_enabled_at IS NULL",
                params![secret, now, user_id],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict(
                "an authenticator is already enabled: turn it off first (with a code), or ask an administrator to reset your MFA".into(),
            ));
        }
        audit::record(&mut conn, ctx, now, "mfa.enroll", &format!("user:{username}"), None::<&()>, None::<&()>).await?;
        tx.commit().await
    }

    /// Accepts the TOTP time step `step` for `user_id` unless it or a later one was accepted
    /// before (RFC 6238 §5.2: a code is good once). Atomic across replicas.
    pub async fn claim_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .conn()
            .execute(
                "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_enabled_at IS NOT NULL \
                 AND (totp_last_step IS NULL OR totp_last_step < $1)",
                params![step, user_id],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Confirms the pending enrolment whose secret is `pending_secret`, with a code of time
    /// step `step`: TOTP is enabled, the recovery codes become `code_hashes`, and the session
    /// `session_id` (if the confirmation came through one) counts as verified. Records
    /// `mfa.enable`. Fails with a conflict when the enrolment changed meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub async fn enable_totp(
        &self,
        ctx: &AuditContext,
        user_id: &str,
        username: &str,
        pending_secret: &str,
        step: i64,
        code_hashes: &[String],
        session_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let n = conn
            .execute(
                "UPDATE users SET totp_secret = totp_pending_secret, totp_pending_secret = NULL, \
                 totp_enabled_at = $1, totp_last_step = $2, updated_at = $1 \
                 WHERE id = $3 AND totp_pending_secret = $4 AND totp_enabled_at IS NULL",
                params![now, step, user_id, pending_secret],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict(
                "this enrolment is no longer pending: start again with POST /api/v1/me/mfa/totp".into(),
            ));
        }
        replace_codes(&mut conn, now, user_id, code_hashes).await?;
        if let Some(id) = session_id {
            conn.execute(
                "UPDATE sessions SET mfa_verified = $1 WHERE id = $2 AND user_id = $3",
                params![true, id, user_id],
            )
            .await?;
        }
        audit::record(
            &mut conn,
            ctx,
            now,
            "mfa.enable",
            &format!("user:{username}"),
            None::<&()>,
            Some(&serde_json::json!({ "method": "totp", "recovery_codes": code_hashes.len() })),
        )
        .await?;
        tx.commit().await
    }

    /// Turns TOTP off for the account and deletes its recovery codes. Records `mfa.disable`.
    pub async fn disable_totp(&self, ctx: &AuditContext, user_id: &str, username: &str) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        clear_mfa(&mut conn, now, user_id).await?;
        audit::record(&mut conn, ctx, now, "mfa.disable", &format!("user:{username}"), None::<&()>, None::<&()>)
            .await?;
        tx.commit().await
    }

    /// Replaces the account's recovery codes (the old ones stop working). Records
    /// `mfa.recovery_codes`.
    pub async fn replace_recovery_codes(
        &self,
        ctx: &AuditContext,
        user_id: &str,
        username: &str,
        code_hashes: &[String],
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        replace_codes(&mut conn, now, user_id, code_hashes).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "mfa.recovery_codes",
            &format!("user:{username}"),
            None::<&()>,
            Some(&serde_json::json!({ "recovery_codes": code_hashes.len() })),
        )
        .await?;
        tx.commit().await
    }

    /// Uses up the recovery code with SHA-256 `code_hash`: `true` if it was unused (it is
    /// used now), `false` if unknown or used before.
    pub async fn use_recovery_code(&self, user_id: &str, code_hash: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let n = tx
            .conn()
            .execute(
                "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL \
                 AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND u.totp_enabled_at IS NOT NULL)",
                params![now, user_id, code_hash],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// An administrator resets the MFA of `username` (lost device): TOTP off, recovery codes
    /// gone, every session ended. Records `mfa.reset`. Returns how many sessions ended.
    pub async fn reset_mfa(&self, ctx: &AuditContext, username: &str) -> Result<u64, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let user: Option<(String,)> =
            conn.fetch_optional("SELECT id FROM users WHERE username = $1", params![username]).await?;
        let (user_id,) = user.ok_or_else(|| StoreError::NotFound(format!("user \"{username}\" does not exist")))?;
        clear_mfa(&mut conn, now, &user_id).await?;
        let ended = session::revoke_all(&mut conn, now, &user_id).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "mfa.reset",
            &format!("user:{username}"),
            None::<&()>,
            Some(&serde_json::json!({ "sessions_revoked": ended })),
        )
        .await?;
        tx.commit().await?;
        Ok(ended)
    }
}
