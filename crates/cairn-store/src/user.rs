//! Accounts and API keys. Passwords arrive here already hashed (argon2id) and keys as the
//! SHA-256 of the token: no secret is ever stored in clear.

use serde::Serialize;

use crate::{AuditContext, Cursor, CursorKey, Page, Store, StoreError, audit, params};

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    /// Id (UUID).
    pub id: String,
    /// Login name.
    pub username: String,
    /// Shown name.
    pub display_name: String,
    /// Contact address.
    pub email: String,
    /// `user` or `service`.
    pub kind: String,
    /// Holds the global `admin` role.
    pub is_admin: bool,
    /// Disabled accounts cannot authenticate.
    pub disabled: bool,
    /// The account has confirmed a TOTP authenticator.
    pub mfa_enabled: bool,
    /// When the password was last set (ms), if the account has one.
    pub password_changed_at: Option<i64>,
    /// Created at (ms).
    pub created_at: i64,
    /// Updated at (ms).
    pub updated_at: i64,
    /// Role grants: (role, namespace or `None` for global).
    #[sqlx(skip)]
    pub roles: Vec<(String, Option<String>)>,
}

/// An API key's public record (never the token, never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    /// Key id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// The owner's login name.
    pub username: String,
    /// The owner's kind: `user` or `service`.
    pub user_kind: String,
    /// Label.
    pub name: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Space-separated namespaces the key is restricted to; empty: no restriction.
    pub namespaces: String,
    /// Created at (ms).
    pub created_at: i64,
    /// Expires at (ms), if it expires.
    pub expires_at: Option<i64>,
    /// Last used at (ms).
    pub last_used_at: Option<i64>,
    /// The address it was last used from.
    pub last_used_ip: Option<String>,
    /// Revoked at (ms).
    pub revoked_at: Option<i64>,
    /// The key that replaced it at rotation.
    pub replaced_by: Option<String>,
    /// The key made from `CAIRN_BOOTSTRAP_ADMIN_TOKEN` or at first start.
    pub bootstrap: bool,
}

/// What authentication needs to know about an account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountAuth {
    /// Account id.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// `user` or `service`.
    pub kind: String,
    /// Disabled accounts cannot authenticate.
    pub disabled: bool,
    /// The account has confirmed a TOTP authenticator.
    pub mfa_enabled: bool,
    /// Role grants: (role, namespace or `None` for global).
    #[sqlx(skip)]
    pub grants: Vec<(String, Option<String>)>,
}

/// What authentication needs to know about a key and its owner.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyAuth {
    /// Key id.
    pub key_id: String,
    /// Stored SHA-256 (hex) of the token, compared again in constant time.
    pub token_hash: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Space-separated namespaces the key is restricted to; empty: no restriction.
    pub namespaces: String,
    /// Expires at (ms).
    pub expires_at: Option<i64>,
    /// Revoked at (ms).
    pub revoked_at: Option<i64>,
    /// Last used at (ms).
    pub last_used_at: Option<i64>,
    /// The key made from `CAIRN_BOOTSTRAP_ADMIN_TOKEN` or at first start.
    pub bootstrap: bool,
    /// The owner.
    #[sqlx(flatten)]
    pub account: AccountAuth,
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// argon2id PHC string, if the account can log in with a password.
    pub password_hash: Option<String>,
    /// Server administrator.
    pub is_admin: bool,
    /// `user` or `service`.
    pub kind: String,
}

/// The descriptive fields of an account.
#[derive(Debug, Clone, Default)]
pub struct UserProfile {
    /// Shown name.
    pub display_name: String,
    /// Contact address.
    pub email: String,
}

/// Changes to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// New shown name.
    pub display_name: Option<String>,
    /// New contact address.
    pub email: Option<String>,
    /// Disable or enable.
    pub disabled: Option<bool>,
}

/// A new API key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Owner.
    pub user_id: String,
    /// Label.
    pub name: String,
    /// SHA-256 (hex) of the token.
    pub token_hash: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Expiry (ms).
    pub expires_at: Option<i64>,
    /// Space-separated namespaces the key is restricted to; empty: none.
    pub namespaces: String,
    /// Marks the bootstrap or first-start key.
    pub bootstrap: bool,
}

/// What bootstrapping did.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    /// The admin account was created now.
    pub created_admin: bool,
    /// The bootstrap key was added now.
    pub added_key: bool,
    /// The first-start key was added (only when the admin account was created now).
    pub added_first_start_key: bool,
}

const SELECT_USER: &str = "SELECT id, username, display_name, email, kind, \
    EXISTS (SELECT 1 FROM role_grants g WHERE g.user_id = users.id AND g.role = 'admin' AND g.namespace_id IS NULL) AS is_admin, \
    disabled, (totp_enabled_at IS NOT NULL) AS mfa_enabled, password_changed_at, created_at, updated_at FROM users";

const SELECT_KEY: &str = "SELECT k.id, k.user_id, u.username, u.kind AS user_kind, k.name, k.scopes, k.namespaces, \
    k.created_at, k.expires_at, k.last_used_at, k.last_used_ip, k.revoked_at, k.replaced_by, k.bootstrap \
    FROM api_keys k JOIN users u ON u.id = k.user_id";

/// The audit target of an account.
fn user_target(username: &str) -> String {
    format!("user:{username}")
}

impl Store {
    /// On an empty database, creates the `admin` account with `password_hash`. When
    /// `key` is given and no key with that hash exists, adds it as an admin key of `admin`.
    pub async fn bootstrap_admin(
        &self,
        password_hash: impl FnOnce() -> String,
        key: Option<NewApiKey>,
        first_start_key: Option<NewApiKey>,
    ) -> Result<Bootstrap, StoreError> {
        let ctx = AuditContext::system();
        let now = self.now();
        let mut out = Bootstrap::default();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let (count,): (i64,) = conn.fetch_one("SELECT COUNT(*) FROM users", vec![]).await?;
        let admin_id = if count == 0 {
            let id = uuid::Uuid::now_v7().to_string();
            conn.execute(
                "INSERT INTO users (id, username, display_name, password_hash, kind, password_changed_at, created_at, updated_at) \
                 VALUES ($1, 'admin', 'Administrator', $2, 'user', $3, $3, $3)",
                params![&id, password_hash(), now],
            )
            .await?;
            insert_grant(&mut conn, "system", now, &id, "admin", None).await?;
            audit::record(
                &mut conn,
                &ctx,
                now,
                "user.create",
                "user:admin",
                None::<&()>,
                Some(&serde_json::json!({ "username": "admin", "is_admin": true, "bootstrap": true })),
            )
            .await?;
            out.created_admin = true;
            if let Some(mut first) = first_start_key {
                first.user_id.clone_from(&id);
                insert_key(&mut conn, &ctx, now, &first).await?;
                out.added_first_start_key = true;
            }
            Some(id)
        } else {
            conn.fetch_optional::<(String,)>("SELECT id FROM users WHERE username = 'admin'", vec![])
                .await?
                .map(|(id,)| id)
        };
        if let (Some(mut key), Some(admin_id)) = (key, admin_id) {
            let exists: Option<(String,)> =
                conn.fetch_optional("SELECT id FROM api_keys WHERE token_hash = $1", params![&key.token_hash]).await?;
            if exists.is_none() {
                key.user_id = admin_id;
                insert_key(&mut conn, &ctx, now, &key).await?;
                out.added_key = true;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Creates an account.
    pub async fn create_user(&self, ctx: &AuditContext, new: &NewUser) -> Result<User, StoreError> {
        self.create_user_with_profile(ctx, new, &UserProfile::default()).await
    }

    /// Creates an account with a shown name and contact address.
    pub async fn create_user_with_profile(
        &self,
        ctx: &AuditContext,
        new: &NewUser,
        profile: &UserProfile,
    ) -> Result<User, StoreError> {
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute(
            "INSERT INTO users (id, username, display_name, email, password_hash, kind, password_changed_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            params![
                &id,
                &new.username,
                &profile.display_name,
                &profile.email,
                new.password_hash.clone(),
                &new.kind,
                new.password_hash.as_ref().map(|_| now),
                now
            ],
        )
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                StoreError::Conflict(format!("user \"{}\" already exists", new.username))
            } else {
                e
            }
        })?;
        if new.is_admin {
            insert_grant(&mut conn, &ctx.actor, now, &id, "admin", None).await?;
        }
        let user = load_user(&mut conn, "id", &id).await?.ok_or_else(|| StoreError::NotFound(id.clone()))?;
        audit::record(&mut conn, ctx, now, "user.create", &user_target(&new.username), None::<&()>, Some(&user))
            .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Lists accounts by login name, `limit` at a time, after `after`.
    pub async fn list_users(&self, limit: usize, after: Option<&Cursor>) -> Result<Page<User>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let after = match after {
            Some(Cursor { key: CursorKey::Text(name), .. }) => name.clone(),
            Some(_) => return Err(StoreError::Invalid("page token does not belong to this listing".into())),
            None => String::new(),
        };
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let mut users: Vec<User> = conn
            .fetch_all(
                sqlx::AssertSqlSafe(format!("{SELECT_USER} WHERE username > $1 ORDER BY username LIMIT $2")),
                params![after, i64::try_from(limit + 1).unwrap_or(1001)],
            )
            .await?;
        let next = if users.len() > limit {
            users.truncate(limit);
            users.last().map(|u| Cursor { key: CursorKey::Text(u.username.clone()), id: 0 })
        } else {
            None
        };
        if !users.is_empty() {
            let ids: Vec<crate::Param> = users.iter().map(|u| crate::Param::from(&u.id)).collect();
            let rows: Vec<(String, String, Option<String>)> = conn
                .fetch_all(
                    sqlx::AssertSqlSafe(format!(
                        "SELECT g.user_id, g.role, n.name FROM role_grants g LEFT JOIN namespaces n ON n.id = g.namespace_id \
                         WHERE g.user_id IN {} ORDER BY g.role, n.name",
                        crate::page::placeholders(1, ids.len())
                    )),
                    ids,
                )
                .await?;
            for (user_id, role, ns) in rows {
                if let Some(u) = users.iter_mut().find(|u| u.id == user_id) {
                    u.roles.push((role, ns));
                }
            }
        }
        Ok(Page { items: users, next })
    }

    /// Changes an account's shown name, contact address or disabled flag. Disabling ends
    /// its sessions in the same transaction; the last enabled administrator cannot be
    /// disabled. Each kind of change is its own audit event (`user.update`,
    /// `user.disable`, `user.enable`).
    pub async fn update_user(
        &self,
        ctx: &AuditContext,
        username: &str,
        changes: &UserChanges,
    ) -> Result<User, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = load_user(&mut conn, "username", username)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user \"{username}\" does not exist")))?;
        let display_name = changes.display_name.clone().unwrap_or_else(|| before.display_name.clone());
        let email = changes.email.clone().unwrap_or_else(|| before.email.clone());
        let disabled = changes.disabled.unwrap_or(before.disabled);
        let profile_changed = display_name != before.display_name || email != before.email;
        let flag_changed = disabled != before.disabled;
        if !profile_changed && !flag_changed {
            // Committed, though nothing changed: `before` may have been read from a commit
            // group not yet committed (see `db::Writer`).
            tx.commit().await?;
            return Ok(before);
        }
        if disabled && flag_changed && before.is_admin && other_enabled_admins(&mut conn, &before.id).await? == 0 {
            return Err(StoreError::Conflict(format!(
                "\"{username}\" is the last enabled administrator: grant the admin role to another account first"
            )));
        }
        conn.execute(
            "UPDATE users SET display_name = $1, email = $2, disabled = $3, updated_at = $4 WHERE id = $5",
            params![&display_name, &email, disabled, now, &before.id],
        )
        .await?;
        if disabled && flag_changed {
            revoke_sessions(&mut conn, &before.id, None, now).await?;
        }
        let after =
            load_user(&mut conn, "id", &before.id).await?.ok_or_else(|| StoreError::NotFound(username.into()))?;
        let target = user_target(username);
        if profile_changed {
            audit::record(&mut conn, ctx, now, "user.update", &target, Some(&before), Some(&after)).await?;
        }
        if flag_changed {
            let action = if disabled { "user.disable" } else { "user.enable" };
            audit::record(&mut conn, ctx, now, action, &target, Some(&before), Some(&after)).await?;
        }
        tx.commit().await?;
        Ok(after)
    }

    /// Deletes an account with its keys, grants and sessions. The last enabled
    /// administrator cannot be deleted.
    pub async fn delete_user(&self, ctx: &AuditContext, username: &str) -> Result<User, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = load_user(&mut conn, "username", username)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user \"{username}\" does not exist")))?;
        if before.is_admin && !before.disabled && other_enabled_admins(&mut conn, &before.id).await? == 0 {
            return Err(StoreError::Conflict(format!(
                "\"{username}\" is the last enabled administrator: grant the admin role to another account first"
            )));
        }
        revoke_sessions(&mut conn, &before.id, None, now).await?;
        conn.execute("DELETE FROM users WHERE id = $1", params![&before.id]).await?;
        audit::record(&mut conn, ctx, now, "user.delete", &user_target(username), Some(&before), None::<&()>).await?;
        tx.commit().await?;
        Ok(before)
    }

    /// The stored password hash (argon2id PHC string) of an account, if it has one.
    pub async fn password_hash(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.db.read().await?;
        let found: Option<(Option<String>,)> =
            c.conn().fetch_optional("SELECT password_hash FROM users WHERE id = $1", params![user_id]).await?;
        Ok(found.and_then(|(h,)| h))
    }

    /// Sets an account's password hash and ends its sessions, all of them or all but
    /// `keep_session` (the row id of the session making the change). Returns how many
    /// sessions ended. Audited as `user.password`, without the hash.
    pub async fn set_password(
        &self,
        ctx: &AuditContext,
        username: &str,
        password_hash: &str,
        keep_session: Option<&str>,
    ) -> Result<u64, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let user = load_user(&mut conn, "username", username)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user \"{username}\" does not exist")))?;
        conn.execute(
            "UPDATE users SET password_hash = $1, password_changed_at = $2, updated_at = $2 WHERE id = $3",
            params![password_hash, now, &user.id],
        )
        .await?;
        let revoked = revoke_sessions(&mut conn, &user.id, keep_session, now).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "user.password",
            &user_target(username),
            None::<&()>,
            Some(&serde_json::json!({ "password_changed_at": now, "sessions_revoked": revoked })),
        )
        .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Finds an account by login name, with its roles.
    pub async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let mut c = self.db.read().await?;
        load_user(&mut c.conn(), "username", username).await
    }

    /// Adds an API key.
    pub async fn create_api_key(&self, ctx: &AuditContext, key: &NewApiKey) -> Result<ApiKey, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let out = insert_key(&mut tx.conn(), ctx, now, key).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Looks up a key by the SHA-256 (hex) of its token, with its owner and the owner's grants.
    pub async fn find_api_key(&self, token_hash: &str) -> Result<Option<KeyAuth>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let found: Option<KeyAuth> = conn
            .fetch_optional(
                "SELECT k.id AS key_id, k.token_hash, k.scopes, k.namespaces, k.expires_at, k.revoked_at, \
                 k.last_used_at, k.bootstrap, u.id AS user_id, u.username, u.kind, u.disabled, \
                 (u.totp_enabled_at IS NOT NULL) AS mfa_enabled \
                 FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.token_hash = $1",
                params![token_hash],
            )
            .await?;
        let Some(mut key) = found else { return Ok(None) };
        key.account.grants = load_grants(&mut conn, &key.account.user_id).await?;
        Ok(Some(key))
    }

    /// What authentication needs to know about the account `user_id`, with its grants.
    pub async fn account_auth(&self, user_id: &str) -> Result<Option<AccountAuth>, StoreError> {
        let mut c = self.db.read().await?;
        let mut conn = c.conn();
        let found: Option<AccountAuth> = conn
            .fetch_optional(
                "SELECT id AS user_id, username, kind, disabled, (totp_enabled_at IS NOT NULL) AS mfa_enabled \
                 FROM users WHERE id = $1",
                params![user_id],
            )
            .await?;
        let Some(mut account) = found else { return Ok(None) };
        account.grants = load_grants(&mut conn, user_id).await?;
        Ok(Some(account))
    }

    /// Records that a key was used, and from where (callers throttle this; it is a write).
    pub async fn touch_api_key(&self, key_id: &str, address: Option<&str>) -> Result<(), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute(
                "UPDATE api_keys SET last_used_at = $1, last_used_ip = $2 WHERE id = $3",
                params![now, address, key_id],
            )
            .await?;
        tx.commit().await
    }

    /// API keys, newest first: of one account, or of every account.
    pub async fn list_api_keys(&self, username: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_all(
                sqlx::AssertSqlSafe(format!(
                    "{SELECT_KEY} WHERE ($1 IS NULL OR u.username = $1) ORDER BY k.created_at DESC, k.id DESC LIMIT 10000"
                )),
                params![username],
            )
            .await
    }

    /// One API key's public record.
    pub async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn().fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_KEY} WHERE k.id = $1")), params![id]).await
    }

    /// Revokes a key (a key revoked already stays as it was). Audited as `api_key.revoke`.
    pub async fn revoke_api_key(&self, ctx: &AuditContext, id: &str) -> Result<ApiKey, StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = load_key(&mut conn, id).await?;
        if before.revoked_at.is_some() {
            // Committed, though nothing changed (see `update_user`).
            tx.commit().await?;
            return Ok(before);
        }
        conn.execute("UPDATE api_keys SET revoked_at = $1 WHERE id = $2", params![now, id]).await?;
        let after = load_key(&mut conn, id).await?;
        audit::record(&mut conn, ctx, now, "api_key.revoke", &format!("api_key:{id}"), Some(&before), Some(&after))
            .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Rotates the key `id`: adds `new` (same owner, name, scopes and namespaces, chosen by
    /// the caller) and lets the old key live at most `overlap_ms` longer, marked as replaced
    /// by the new one. Audited as `api_key.rotate`. Returns (old key, new key).
    pub async fn rotate_api_key(
        &self,
        ctx: &AuditContext,
        id: &str,
        new: &NewApiKey,
        overlap_ms: i64,
    ) -> Result<(ApiKey, ApiKey), StoreError> {
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let before = load_key(&mut conn, id).await?;
        if before.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!("API key {id} is revoked: create a new key instead")));
        }
        if before.expires_at.is_some_and(|e| e <= now) {
            return Err(StoreError::Conflict(format!("API key {id} has expired: create a new key instead")));
        }
        if let Some(next) = &before.replaced_by {
            return Err(StoreError::Conflict(format!("API key {id} was rotated already; rotate its successor {next}")));
        }
        let key = insert_key_row(&mut conn, now, new).await?;
        let until = now.saturating_add(overlap_ms);
        let expires_at = before.expires_at.map_or(until, |e| e.min(until));
        conn.execute(
            "UPDATE api_keys SET expires_at = $1, replaced_by = $2 WHERE id = $3",
            params![expires_at, &key.id, id],
        )
        .await?;
        let after = load_key(&mut conn, id).await?;
        audit::record(
            &mut conn,
            ctx,
            now,
            "api_key.rotate",
            &format!("api_key:{id}"),
            Some(&before),
            Some(&serde_json::json!({ "previous": &after, "key": &key })),
        )
        .await?;
        tx.commit().await?;
        Ok((after, key))
    }
}

/// One account with its roles, found by `id` or `username`.
async fn load_user(
    conn: &mut crate::db::Conn<'_>,
    column: &'static str,
    value: &str,
) -> Result<Option<User>, StoreError> {
    let column = if column == "id" { "id" } else { "username" };
    let found: Option<User> =
        conn.fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_USER} WHERE {column} = $1")), params![value]).await?;
    let Some(mut user) = found else { return Ok(None) };
    user.roles = load_grants(conn, &user.id).await?;
    Ok(Some(user))
}

async fn load_key(conn: &mut crate::db::Conn<'_>, id: &str) -> Result<ApiKey, StoreError> {
    conn.fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_KEY} WHERE k.id = $1")), params![id])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("API key {id} does not exist")))
}

/// How many enabled accounts other than `user_id` hold the global admin role. Touches every
/// global admin grant first, so that on PostgreSQL two transactions removing the last two
/// administrators at once are serialised and the second sees the first's change.
pub(crate) async fn other_enabled_admins(conn: &mut crate::db::Conn<'_>, user_id: &str) -> Result<i64, StoreError> {
    conn.execute(
        "UPDATE role_grants SET created_by = created_by WHERE role = 'admin' AND namespace_id IS NULL",
        vec![],
    )
    .await?;
    let (n,): (i64,) = conn
        .fetch_one(
            "SELECT COUNT(*) FROM role_grants g JOIN users u ON u.id = g.user_id \
             WHERE g.role = 'admin' AND g.namespace_id IS NULL AND NOT u.disabled AND u.id <> $1",
            params![user_id],
        )
        .await?;
    Ok(n)
}

/// Ends the sessions of `user_id`, except `keep` (a session row id).
async fn revoke_sessions(
    conn: &mut crate::db::Conn<'_>,
    user_id: &str,
    keep: Option<&str>,
    now: i64,
) -> Result<u64, StoreError> {
    conn.execute(
        "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND ($3 IS NULL OR id <> $3)",
        params![now, user_id, keep],
    )
    .await
}

async fn insert_key(
    conn: &mut crate::db::Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    key: &NewApiKey,
) -> Result<ApiKey, StoreError> {
    let out = insert_key_row(conn, now, key).await?;
    audit::record(conn, ctx, now, "api_key.create", &format!("api_key:{}", out.id), None::<&()>, Some(&out)).await?;
    Ok(out)
}

async fn insert_key_row(conn: &mut crate::db::Conn<'_>, now: i64, key: &NewApiKey) -> Result<ApiKey, StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    conn.execute(
        "INSERT INTO api_keys (id, user_id, name, token_hash, scopes, created_at, expires_at, namespaces, bootstrap) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        params![
            &id,
            &key.user_id,
            &key.name,
            &key.token_hash,
            &key.scopes,
            now,
            key.expires_at,
            &key.namespaces,
            key.bootstrap
        ],
    )
    .await?;
    load_key(conn, &id).await
}

/// The grants of `user_id`: (role, namespace name or `None` for global).
pub(crate) async fn load_grants(
    conn: &mut crate::db::Conn<'_>,
    user_id: &str,
) -> Result<Vec<(String, Option<String>)>, StoreError> {
    conn.fetch_all(
        "SELECT g.role, n.name FROM role_grants g LEFT JOIN namespaces n ON n.id = g.namespace_id \
         WHERE g.user_id = $1 ORDER BY g.role, n.name",
        params![user_id],
    )
    .await
}

/// Inserts a grant (not audited here: callers record the change they make).
pub(crate) async fn insert_grant(
    conn: &mut crate::db::Conn<'_>,
    by: &str,
    now: i64,
    user_id: &str,
    role: &str,
    namespace_id: Option<i64>,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    conn.execute(
        "INSERT INTO role_grants (id, user_id, role, namespace_id, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        params![&id, user_id, role, namespace_id, now, by],
    )
    .await?;
    Ok(id)
}
