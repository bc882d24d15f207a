//! Server settings: flags, then `CAIRN_*` environment, then an optional `cairn.toml`, then
//! built-in defaults (in that order of precedence).

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `cairn serve` can be told.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address to listen on (`CAIRN_LISTEN`).
    pub listen: String,
    /// Where SQLite and local files live (`CAIRN_DATA_DIR`).
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…` (`CAIRN_DATABASE_URL`); default: SQLite under the data dir.
    pub database_url: Option<String>,
    /// `text` or `json` (`CAIRN_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `cairn_server=debug` (`CAIRN_LOG`).
    pub log: String,
    /// Largest JSON request body in bytes (`CAIRN_MAX_JSON_BYTES`).
    pub max_json_bytes: usize,
    /// Longest a request may take, in seconds (`CAIRN_REQUEST_TIMEOUT_SECS`).
    pub request_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests, in seconds (`CAIRN_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace_secs: u64,
    /// Database connections per pool (`CAIRN_DB_MAX_CONNECTIONS`).
    pub db_max_connections: u32,
    /// Password for the first `admin` account (`CAIRN_BOOTSTRAP_ADMIN_PASSWORD`).
    pub bootstrap_admin_password: Option<String>,
    /// An admin API key to create at start, 32+ characters (`CAIRN_BOOTSTRAP_ADMIN_TOKEN`).
    pub bootstrap_admin_token: Option<String>,
    /// Where model files live: `file:///dir` or `s3://bucket/prefix` (`CAIRN_BLOB_URL`); default: `blobs` under the data dir.
    pub blob_url: Option<String>,
    /// Encrypt model files at rest with the keys in this file (`CAIRN_ENCRYPTION_KEY_FILE`).
    pub encryption_key_file: Option<PathBuf>,
    /// The Ed25519 key that signs audit checkpoints and versions, PKCS#8 PEM
    /// (`CAIRN_SIGNING_KEY_FILE`); default `keys/signing.pem` under the data dir, generated
    /// with mode 0600 at first start. Replicas must share one key.
    pub signing_key_file: Option<PathBuf>,
    /// Seconds between signed audit checkpoints (`CAIRN_AUDIT_CHECKPOINT_SECS`, default 300;
    /// 0 signs only on demand and at shutdown).
    pub audit_checkpoint_secs: u64,
    /// How long audit events are kept, in days (`CAIRN_AUDIT_RETENTION_DAYS`, default 2555:
    /// seven years); docs/AUDIT.md, "Retention".
    pub audit_retention_days: u32,
    /// Shorter or longer retention for some actions, `action=days` or `family.*=days`,
    /// comma-separated (`CAIRN_AUDIT_RETENTION`, e.g. `auth.login=90,session.*=30`).
    pub audit_retention: String,
    /// Seconds between prunings of expired audit events (`CAIRN_AUDIT_PRUNE_SECS`, default
    /// 86400; 0 prunes only on demand: `cairn audit prune`).
    pub audit_prune_secs: u64,
    /// Largest total size of one push, in bytes (`CAIRN_MAX_UPLOAD_BYTES`, default 1 TiB).
    pub max_upload_bytes: u64,
    /// Part size of uploads in bytes, a multiple of 64 KiB, at least 5 MiB on S3 (`CAIRN_UPLOAD_PART_SIZE`).
    pub upload_part_size: u64,
    /// How long an upload may stay uncommitted, in seconds (`CAIRN_UPLOAD_EXPIRY_SECS`).
    pub upload_expiry_secs: u64,
    /// Redirect downloads to presigned S3 URLs when the store allows it (`CAIRN_BLOB_PRESIGN`).
    pub blob_presign: bool,
    /// Absolute lifetime of a login session, in seconds (`CAIRN_AUTH_TOKEN_EXPIRY`).
    pub auth_token_expiry: u64,
    /// Every person must use MFA, whatever their roles (`CAIRN_AUTH_REQUIRE_MFA`).
    pub auth_require_mfa: bool,
    /// Roles whose holders must use MFA, comma-separated (`CAIRN_AUTH_MFA_ROLES`).
    pub auth_mfa_roles: String,
    /// Failed logins or MFA codes before a lockout (`CAIRN_AUTH_MAX_ATTEMPTS`).
    pub auth_max_attempts: u32,
    /// How long a lockout lasts, in seconds (`CAIRN_AUTH_LOCKOUT_SECS`).
    pub auth_lockout_secs: u64,
    /// A session ends after this many idle seconds (`CAIRN_SESSION_IDLE_SECS`).
    pub session_idle_secs: u64,
    /// Longest lifetime of an API key, in days (`CAIRN_API_KEY_MAX_AGE_DAYS`).
    pub api_key_max_age_days: u32,
    /// Requests allowed per principal or address per window; 0 turns limiting off (`CAIRN_RATE_LIMIT_REQUESTS`).
    pub rate_limit_requests: u32,
    /// The rate-limit window, in seconds (`CAIRN_RATE_LIMIT_WINDOW`).
    pub rate_limit_window: u64,
    /// How long a caller over the limit is refused, in seconds (`CAIRN_RATE_LIMIT_BLOCK_SECS`).
    pub rate_limit_block_secs: u64,
    /// Allow webhooks to private, loopback and link-local addresses
    /// (`CAIRN_WEBHOOK_ALLOW_PRIVATE_NETWORKS`, default false; docs/WEBHOOKS.md).
    pub webhook_allow_private_networks: bool,
    /// How often the delivery worker looks for due webhook deliveries, in ms (`CAIRN_WEBHOOK_POLL_MS`).
    pub webhook_poll_ms: u64,
    /// First retry delay of a failed delivery, in seconds; doubled per attempt up to an hour
    /// (`CAIRN_WEBHOOK_RETRY_BASE_SECS`).
    pub webhook_retry_base_secs: u64,
    /// First retry delay of a failed evaluation job, in seconds; doubled per attempt up to an
    /// hour (`CAIRN_EVAL_RETRY_BASE_SECS`, default 60).
    pub eval_retry_base_secs: u64,
    /// Attempts before a delivery is given up as failed (`CAIRN_WEBHOOK_MAX_ATTEMPTS`).
    pub webhook_max_attempts: u32,
    /// PEM certificate chain for HTTPS (`CAIRN_TLS_CERT_FILE`); with `tls_key_file` the server speaks only TLS 1.2/1.3.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate (`CAIRN_TLS_KEY_FILE`).
    pub tls_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes, in seconds; 0 reloads only on SIGHUP (`CAIRN_TLS_RELOAD_SECS`).
    pub tls_reload_secs: u64,
    /// Also listen here with plain HTTP and redirect every request to HTTPS (`CAIRN_TLS_REDIRECT_LISTEN`, e.g. `0.0.0.0:80`).
    pub tls_redirect_listen: Option<String>,
    /// Serve plain HTTP on a non-loopback address, for a TLS-terminating proxy in front (`CAIRN_INSECURE_HTTP`).
    pub insecure_http: bool,
    /// A bearer token, 32+ characters, that may read `/metrics` (`CAIRN_METRICS_TOKEN`); administrators' API keys may too.
    pub metrics_token: Option<String>,
    /// On SIGTERM, keep serving this many seconds with `/readyz` answering 503 so load balancers stop sending traffic, before finishing in-flight requests (`CAIRN_SHUTDOWN_DRAIN_SECS`).
    pub shutdown_drain_secs: u64,
    /// Scan every file of a new version for unsafe serialisation, malformed headers, secrets and licences before it is committed (`CAIRN_SCAN_ARTIFACTS`, default true; docs/SUPPLY_CHAIN.md).
    pub scan_artifacts: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./cairn-data"),
            database_url: None,
            log_format: LogFormat::Text,
            log: "info".into(),
            max_json_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 30,
            db_max_connections: 16,
            bootstrap_admin_password: None,
            bootstrap_admin_token: None,
            blob_url: None,
            encryption_key_file: None,
            signing_key_file: None,
            audit_checkpoint_secs: 300,
            audit_retention_days: cairn_audit::retention::DEFAULT_RETENTION_DAYS,
            audit_retention: String::new(),
            audit_prune_secs: 86_400,
            max_upload_bytes: 1 << 40,
            upload_part_size: 16 * 1024 * 1024,
            upload_expiry_secs: 86_400,
            blob_presign: false,
            auth_token_expiry: 3600,
            auth_require_mfa: false,
            auth_mfa_roles: "admin,mrc,security,sre".into(),
            auth_max_attempts: 5,
            auth_lockout_secs: 300,
            session_idle_secs: 1800,
            api_key_max_age_days: 90,
            rate_limit_requests: 1000,
            rate_limit_window: 3600,
            rate_limit_block_secs: 300,
            webhook_allow_private_networks: false,
            webhook_poll_ms: 1000,
            webhook_retry_base_secs: 10,
            eval_retry_base_secs: 60,
            webhook_max_attempts: 8,
            tls_cert_file: None,
            tls_key_file: None,
            tls_reload_secs: 10,
            tls_redirect_listen: None,
            insecure_http: false,
            metrics_token: None,
            shutdown_drain_secs: 0,
            scan_artifacts: true,
        }
    }
}

// Secrets never reach a log line, even through `{:?}`.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("log_format", &self.log_format)
            .field("log", &self.log)
            .field("max_json_bytes", &self.max_json_bytes)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("db_max_connections", &self.db_max_connections)
            .field("bootstrap_admin_password", &redact(&self.bootstrap_admin_password))
            .field("bootstrap_admin_token", &redact(&self.bootstrap_admin_token))
            .field("blob_url", &self.blob_url.as_deref().map(redact_url))
            .field("encryption_key_file", &self.encryption_key_file)
            .field("signing_key_file", &self.signing_key_file)
            .field("audit_checkpoint_secs", &self.audit_checkpoint_secs)
            .field("audit_retention_days", &self.audit_retention_days)
            .field("audit_retention", &self.audit_retention)
            .field("audit_prune_secs", &self.audit_prune_secs)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("upload_part_size", &self.upload_part_size)
            .field("upload_expiry_secs", &self.upload_expiry_secs)
            .field("blob_presign", &self.blob_presign)
            .field("auth_token_expiry", &self.auth_token_expiry)
            .field("auth_require_mfa", &self.auth_require_mfa)
            .field("auth_mfa_roles", &self.auth_mfa_roles)
            .field("auth_max_attempts", &self.auth_max_attempts)
            .field("auth_lockout_secs", &self.auth_lockout_secs)
            .field("session_idle_secs", &self.session_idle_secs)
            .field("api_key_max_age_days", &self.api_key_max_age_days)
            .field("rate_limit_requests", &self.rate_limit_requests)
            .field("rate_limit_window", &self.rate_limit_window)
            .field("rate_limit_block_secs", &self.rate_limit_block_secs)
            .field("webhook_allow_private_networks", &self.webhook_allow_private_networks)
            .field("webhook_poll_ms", &self.webhook_poll_ms)
            .field("webhook_retry_base_secs", &self.webhook_retry_base_secs)
            .field("eval_retry_base_secs", &self.eval_retry_base_secs)
            .field("webhook_max_attempts", &self.webhook_max_attempts)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_reload_secs", &self.tls_reload_secs)
            .field("tls_redirect_listen", &self.tls_redirect_listen)
            .field("insecure_http", &self.insecure_http)
            .field("metrics_token", &redact(&self.metrics_token))
            .field("shutdown_drain_secs", &self.shutdown_drain_secs)
            .field("scan_artifacts", &self.scan_artifacts)
            .finish()
    }
}

/// Hides the password of a database URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The same fields, all optional, refusing unknown keys: what a config file may contain.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsOverrides {
    /// See [`Settings::listen`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// See [`Settings::data_dir`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// See [`Settings::database_url`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// See [`Settings::log_format`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// See [`Settings::log`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// See [`Settings::max_json_bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_json_bytes: Option<usize>,
    /// See [`Settings::request_timeout_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_secs: Option<u64>,
    /// See [`Settings::shutdown_grace_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// See [`Settings::db_max_connections`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_max_connections: Option<u32>,
    /// See [`Settings::bootstrap_admin_password`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_admin_password: Option<String>,
    /// See [`Settings::bootstrap_admin_token`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_admin_token: Option<String>,
    /// See [`Settings::blob_url`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_url: Option<String>,
    /// See [`Settings::encryption_key_file`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key_file: Option<PathBuf>,
    /// See [`Settings::signing_key_file`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// See [`Settings::audit_checkpoint_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_checkpoint_secs: Option<u64>,
    /// See [`Settings::audit_retention_days`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_retention_days: Option<u32>,
    /// See [`Settings::audit_retention`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_retention: Option<String>,
    /// See [`Settings::audit_prune_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_prune_secs: Option<u64>,
    /// See [`Settings::max_upload_bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes: Option<u64>,
    /// See [`Settings::upload_part_size`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_part_size: Option<u64>,
    /// See [`Settings::upload_expiry_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_expiry_secs: Option<u64>,
    /// See [`Settings::blob_presign`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_presign: Option<bool>,
    /// See [`Settings::auth_token_expiry`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_expiry: Option<u64>,
    /// See [`Settings::auth_require_mfa`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_require_mfa: Option<bool>,
    /// See [`Settings::auth_mfa_roles`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_mfa_roles: Option<String>,
    /// See [`Settings::auth_max_attempts`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_max_attempts: Option<u32>,
    /// See [`Settings::auth_lockout_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_lockout_secs: Option<u64>,
    /// See [`Settings::session_idle_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_idle_secs: Option<u64>,
    /// See [`Settings::api_key_max_age_days`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_max_age_days: Option<u32>,
    /// See [`Settings::rate_limit_requests`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_requests: Option<u32>,
    /// See [`Settings::rate_limit_window`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_window: Option<u64>,
    /// See [`Settings::rate_limit_block_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_block_secs: Option<u64>,
    /// See [`Settings::webhook_allow_private_networks`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_allow_private_networks: Option<bool>,
    /// See [`Settings::webhook_poll_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_poll_ms: Option<u64>,
    /// See [`Settings::webhook_retry_base_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_retry_base_secs: Option<u64>,
    /// See [`Settings::eval_retry_base_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_retry_base_secs: Option<u64>,
    /// See [`Settings::webhook_max_attempts`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_max_attempts: Option<u32>,
    /// See [`Settings::tls_cert_file`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// See [`Settings::tls_key_file`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// See [`Settings::tls_reload_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_reload_secs: Option<u64>,
    /// See [`Settings::tls_redirect_listen`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_redirect_listen: Option<String>,
    /// See [`Settings::insecure_http`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_http: Option<bool>,
    /// See [`Settings::metrics_token`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
    /// See [`Settings::shutdown_drain_secs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_drain_secs: Option<u64>,
    /// See [`Settings::scan_artifacts`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan_artifacts: Option<bool>,
}

/// Settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings: {0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// Loads settings: `flags` win over the environment, which wins over `config_file`
    /// (default `./cairn.toml` when it exists), which wins over the defaults.
    pub fn load(flags: &SettingsOverrides, config_file: Option<&Path>) -> Result<Self, SettingsError> {
        let default_file = PathBuf::from("cairn.toml");
        let file = match config_file {
            Some(p) => {
                if !p.exists() {
                    return Err(SettingsError(format!("config file {} does not exist", p.display())));
                }
                Some(p.to_path_buf())
            }
            None => default_file.exists().then_some(default_file),
        };
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(f) = &file {
            // Unknown keys in the file are typos: refuse them.
            Figment::from(Toml::file(f))
                .extract::<SettingsOverrides>()
                .map_err(|e| SettingsError(format!("{}: {e}", f.display())))?;
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(Env::prefixed("CAIRN_").only(ENV_KEYS)).merge(Serialized::defaults(flags));
        let s: Settings = fig.extract().map_err(describe)?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), SettingsError> {
        if let Some(t) = &self.bootstrap_admin_token
            && t.len() < 32
        {
            return Err(SettingsError("CAIRN_BOOTSTRAP_ADMIN_TOKEN must be at least 32 characters".into()));
        }
        if self.max_json_bytes < 1024 {
            return Err(SettingsError("max_json_bytes must be at least 1024".into()));
        }
        if self.upload_part_size < 64 * 1024 || !self.upload_part_size.is_multiple_of(64 * 1024) {
            return Err(SettingsError("upload_part_size must be a multiple of 65536 bytes (64 KiB)".into()));
        }
        if self.upload_expiry_secs < 60 {
            return Err(SettingsError("upload_expiry_secs must be at least 60".into()));
        }
        if self.auth_max_attempts == 0 {
            return Err(SettingsError("auth_max_attempts must be at least 1".into()));
        }
        if self.session_idle_secs == 0 || self.auth_token_expiry == 0 {
            return Err(SettingsError("session_idle_secs and auth_token_expiry must be at least 1".into()));
        }
        if !(1..=3650).contains(&self.api_key_max_age_days) {
            return Err(SettingsError("api_key_max_age_days must be between 1 and 3650".into()));
        }
        if self.rate_limit_requests > 0 && (self.rate_limit_window == 0 || self.rate_limit_block_secs == 0) {
            return Err(SettingsError("rate_limit_window and rate_limit_block_secs must be at least 1".into()));
        }
        for role in self.mfa_roles() {
            if cairn_core::Role::parse(role).is_none() {
                return Err(SettingsError(format!("auth_mfa_roles: unknown role '{role}'")));
            }
        }
        if self.request_timeout_secs == 0 {
            return Err(SettingsError("request_timeout_secs must be at least 1".into()));
        }
        if self.webhook_poll_ms == 0 || self.webhook_max_attempts == 0 {
            return Err(SettingsError("webhook_poll_ms and webhook_max_attempts must be at least 1".into()));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(SettingsError(
                "tls_cert_file (CAIRN_TLS_CERT_FILE) and tls_key_file (CAIRN_TLS_KEY_FILE) go together: set both or neither".into(),
            ));
        }
        if self.tls_redirect_listen.is_some() && !self.tls_enabled() {
            return Err(SettingsError(
                "tls_redirect_listen (CAIRN_TLS_REDIRECT_LISTEN) redirects to HTTPS, which needs tls_cert_file and tls_key_file".into(),
            ));
        }
        if let Some(t) = &self.metrics_token
            && t.len() < 32
        {
            return Err(SettingsError("metrics_token (CAIRN_METRICS_TOKEN) must be at least 32 characters".into()));
        }
        self.audit_retention_policy()?;
        self.check_listen()?;
        Ok(())
    }

    /// The audit retention rules (`audit_retention_days` and `audit_retention`).
    pub fn audit_retention_policy(&self) -> Result<cairn_audit::retention::RetentionPolicy, SettingsError> {
        cairn_audit::retention::RetentionPolicy::parse(self.audit_retention_days, &self.audit_retention).map_err(|e| {
            SettingsError(format!("audit_retention (CAIRN_AUDIT_RETENTION, CAIRN_AUDIT_RETENTION_DAYS): {e}"))
        })
    }

    /// Whether the server speaks HTTPS.
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }

    /// Refuses plain HTTP on an address other machines can reach, unless `insecure_http` says
    /// a TLS-terminating proxy is in front.
    fn check_listen(&self) -> Result<(), SettingsError> {
        use std::net::ToSocketAddrs;
        let addrs: Vec<std::net::SocketAddr> = self
            .listen
            .to_socket_addrs()
            .map_err(|e| {
                SettingsError(format!(
                    "listen (CAIRN_LISTEN) '{}' is not an address such as 127.0.0.1:8080: {e}",
                    self.listen
                ))
            })?
            .collect();
        if self.tls_enabled() || self.insecure_http {
            return Ok(());
        }
        if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(SettingsError(format!(
                "refusing to serve plain HTTP on {open} (listen, CAIRN_LISTEN), which other machines can reach: \
                 set tls_cert_file and tls_key_file (CAIRN_TLS_CERT_FILE, CAIRN_TLS_KEY_FILE), or pass --insecure-http \
                 (CAIRN_INSECURE_HTTP=true) when a TLS-terminating proxy is in front"
            )));
        }
        Ok(())
    }

    /// The signing key's file.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_file.clone().unwrap_or_else(|| self.data_dir.join("keys").join("signing.pem"))
    }

    /// The roles named in `auth_mfa_roles`.
    pub fn mfa_roles(&self) -> impl Iterator<Item = &str> {
        self.auth_mfa_roles.split(',').map(str::trim).filter(|r| !r.is_empty())
    }

    /// The database URL, defaulting to a SQLite file under the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("cairn.db").display()),
        }
    }
}

/// Names the setting of every error both ways (`max_json_bytes (CAIRN_MAX_JSON_BYTES)`) and
/// says where the bad value came from.
fn describe(e: figment::Error) -> SettingsError {
    let problems: Vec<String> = e
        .into_iter()
        .map(|e| {
            let source = e.metadata.as_ref().map(|m| format!(", from {}", m.name)).unwrap_or_default();
            match e.path.last().map(|k| k.to_ascii_lowercase()) {
                Some(key) => format!("{key} (CAIRN_{}{source}): {}", key.to_ascii_uppercase(), e.kind),
                None => e.to_string(),
            }
        })
        .collect();
    SettingsError(problems.join("; "))
}

const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "log_format",
    "log",
    "max_json_bytes",
    "request_timeout_secs",
    "shutdown_grace_secs",
    "db_max_connections",
    "bootstrap_admin_password",
    "bootstrap_admin_token",
    "blob_url",
    "encryption_key_file",
    "signing_key_file",
    "audit_checkpoint_secs",
    "audit_retention_days",
    "audit_retention",
    "audit_prune_secs",
    "max_upload_bytes",
    "upload_part_size",
    "upload_expiry_secs",
    "blob_presign",
    "auth_token_expiry",
    "auth_require_mfa",
    "auth_mfa_roles",
    "auth_max_attempts",
    "auth_lockout_secs",
    "session_idle_secs",
    "api_key_max_age_days",
    "rate_limit_requests",
    "rate_limit_window",
    "webhook_allow_private_networks",
    "webhook_poll_ms",
    "webhook_retry_base_secs",
    "eval_retry_base_secs",
    "webhook_max_attempts",
    "rate_limit_block_secs",
    "tls_cert_file",
    "tls_key_file",
    "tls_reload_secs",
    "tls_redirect_listen",
    "insecure_http",
    "metrics_token",
    "shutdown_drain_secs",
    "scan_artifacts",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_names_its_setting_and_its_source() {
        let fig = Figment::from(Serialized::defaults(Settings::default()))
            .merge(figment::providers::Toml::string("max_json_bytes = \"lots\""));
        let e = describe(fig.extract::<Settings>().expect_err("a string is not a size"));
        assert!(e.0.starts_with("max_json_bytes (CAIRN_MAX_JSON_BYTES, from ") && e.0.contains("invalid type"), "{e}");
    }

    #[test]
    fn a_bad_retention_rule_stops_the_start_with_the_rule_named() {
        let s = Settings { audit_retention: "auth.login=90,session.*=soon".into(), ..Settings::default() };
        let e = s.check().expect_err("soon is not a number of days").0;
        assert!(e.contains("CAIRN_AUDIT_RETENTION") && e.contains("session.*=soon"), "{e}");
        let s = Settings { audit_retention_days: 0, ..Settings::default() };
        assert!(s.check().is_err());
        let s = Settings { audit_retention: "auth.login=90".into(), ..Settings::default() };
        let p = s.audit_retention_policy().unwrap();
        assert_eq!((p.days_for("auth.login"), p.days_for("model.create")), (90, 2555));
    }

    #[test]
    fn redacts_database_passwords() {
        assert_eq!(redact_url("postgres://cairn:s3cret@localhost/cairn"), "postgres://cairn:***@localhost/cairn");
        assert_eq!(redact_url("sqlite://./x.db"), "sqlite://./x.db");
        let s = Settings {
            bootstrap_admin_token: Some("x".repeat(40)),
            database_url: Some("postgres://u:pw@h/db".into()),
            ..Settings::default()
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("xxxx") && !dbg.contains("pw@"), "{dbg}");
    }
}
