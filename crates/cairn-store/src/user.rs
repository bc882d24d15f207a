//! Accounts and API keys. Passwords arrive here already hashed (argon2id) and keys as the
//! SHA-256 of the token: no secret is ever stored in clear.

use serde::Serialize;

use crate::{AuditContext, Store, StoreError, audit, params};

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
    /// Server administrator.
    pub is_admin: bool,
    /// Disabled accounts cannot authenticate.
    pub disabled: bool,
    /// Created at (ms).
    pub created_at: i64,
    /// Updated at (ms).
    pub updated_at: i64,
}

/// An API key's public record (never the token, never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    /// Key id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Label.
    pub name: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Created at (ms).
    pub created_at: i64,
    /// Expires at (ms), if it expires.
    pub expires_at: Option<i64>,
    /// Last used at (ms).
    pub last_used_at: Option<i64>,
    /// Revoked at (ms).
    pub revoked_at: Option<i64>,
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
    disabled, created_at, updated_at FROM users";

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
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        conn.execute(
            "INSERT INTO users (id, username, password_hash, kind, password_changed_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
            params![
                &id,
                &new.username,
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
        let user: User =
            conn.fetch_one(sqlx::AssertSqlSafe(format!("{SELECT_USER} WHERE id = $1")), params![&id]).await?;
        audit::record(&mut conn, ctx, now, "user.create", &format!("user:{}", new.username), None::<&()>, Some(&user))
            .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Finds an account by login name.
    pub async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let mut c = self.db.read().await?;
        c.conn()
            .fetch_optional(sqlx::AssertSqlSafe(format!("{SELECT_USER} WHERE username = $1")), params![username])
            .await
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
}

async fn insert_key(
    conn: &mut crate::db::Conn<'_>,
    ctx: &AuditContext,
    now: i64,
    key: &NewApiKey,
) -> Result<ApiKey, StoreError> {
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
    let out: ApiKey = conn
        .fetch_one(
            "SELECT id, user_id, name, scopes, created_at, expires_at, last_used_at, revoked_at FROM api_keys WHERE id = $1",
            params![&id],
        )
        .await?;
    audit::record(conn, ctx, now, "api_key.create", &format!("api_key:{id}"), None::<&()>, Some(&out)).await?;
    Ok(out)
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
