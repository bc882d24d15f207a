//! A typed HTTP client for Cairn's native API, used by the `cairn` CLI and by the
//! server's integration tests.
//!
//! Every method maps one route; errors carry the server's JSON error code and message so
//! callers can show them as they are. Model files (uploads in parts, downloads with ranges)
//! are in [`files`]: bytes are streamed, never held whole in memory.

pub mod accounts;
pub mod audit;
pub mod deploy;
pub mod files;
pub mod gdpr;
pub mod governance;
pub mod lineage;
pub mod login;
pub mod webhooks;

pub use accounts::KeyListOptions;
pub use files::{Download, PartSpec, Progress, part_count, part_range};
pub use governance::{CardFormat, LifecycleAction};
pub use login::PasswordLogin;

use std::sync::Arc;

use cairn_api_types as api;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Cairn's error code.
        code: String,
        /// Cairn's message.
        message: String,
    },
    /// The server could not be reached or answered nonsense.
    #[error("cannot reach the server: {0}")]
    Http(#[from] reqwest::Error),
    /// A bad base URL.
    #[error("invalid server URL: {0}")]
    Url(String),
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The caller asked for something impossible (a part a blob does not have, a file that
    /// changed since it was hashed).
    #[error("{0}")]
    Usage(String),
    /// The server answered in a way the protocol does not allow.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Cairn error code of an API error (`not_found`, `digest_mismatch`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether trying the same request again may succeed: the connection broke, or the
    /// server was busy or failing (5xx, 408, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http(_) => true,
            Self::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// Listing options shared by models and versions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListOptions {
    /// Page size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Token of the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// Sort order (`name`, `-created_at`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_by: Option<String>,
    /// Search filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// Called with the text of a `Warning` header the server sent (an API key close to expiry).
pub type WarningHandler = Arc<dyn Fn(&str) + Send + Sync>;

/// A login session's cookie and CSRF token (see [`login`]).
#[derive(Clone)]
pub(crate) struct SessionCookie {
    pub(crate) cookie: String,
    pub(crate) csrf_token: String,
}

/// A client bound to one server and one credential: an API key, or a login session.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    session: Option<SessionCookie>,
    http: reqwest::Client,
    on_warning: Option<WarningHandler>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the cookie.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("session", &self.session.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

fn seg(s: &str) -> String {
    // Percent-encode one path segment (tag keys may contain anything printable).
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`), authenticating with `token`.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Url(format!("{base:?} must start with http:// or https://")));
        }
        let http =
            reqwest::Client::builder().user_agent(concat!("cairn-client/", env!("CARGO_PKG_VERSION"))).build()?;
        Ok(Self { base, token, session: None, http, on_warning: None })
    }

    /// Calls `handler` with every `Warning` header the server sends (e.g. "this API key
    /// expires in 3 day(s)"), so a program can show it.
    pub fn with_warning_handler(mut self, handler: WarningHandler) -> Self {
        self.on_warning = Some(handler);
        self
    }

    /// The API key this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send<B: Serialize, Q: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Option<&Q>,
        body: Option<&B>,
    ) -> Result<Option<T>, ClientError> {
        let req = self.authorised(self.http.request(method, format!("{}{path}", self.base)));
        let mut req = req;
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.check(req.send().await?).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(Some(resp.json().await?))
    }

    /// Adds the credential to a request: `Authorization: Bearer <key>`, or the session
    /// cookie with its CSRF token.
    fn authorised(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        match &self.session {
            Some(s) => req
                .header(reqwest::header::COOKIE, format!("{}={}", login::SESSION_COOKIE, s.cookie))
                .header("x-csrf-token", &s.csrf_token),
            None => req,
        }
    }

    /// Passes a `Warning` header to the warning handler, and turns an error status into
    /// [`ClientError::Api`] with the server's code and message (and, for `429`, how long to
    /// wait).
    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if let Some(handler) = &self.on_warning {
            for w in resp.headers().get_all(reqwest::header::WARNING) {
                if let Ok(text) = w.to_str() {
                    handler(text);
                }
            }
        }
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after =
            resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let (code, mut message) = match serde_json::from_str::<api::ErrorBody>(&text) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => ("http_error".to_owned(), text.chars().take(500).collect()),
        };
        if let Some(secs) = retry_after.filter(|_| status == StatusCode::TOO_MANY_REQUESTS) {
            message.push_str(&format!(" (retry after {secs} s)"));
        }
        Err(ClientError::Api { status: status.as_u16(), code, message })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send::<(), (), T>(Method::GET, path, None, None).await?.ok_or_else(empty)
    }

    async fn get_q<Q: Serialize, T: DeserializeOwned>(&self, path: &str, q: &Q) -> Result<T, ClientError> {
        self.send::<(), Q, T>(Method::GET, path, Some(q), None).await?.ok_or_else(empty)
    }

    async fn write<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send::<B, (), T>(method, path, None, Some(body)).await?.ok_or_else(empty)
    }

    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send::<(), (), serde_json::Value>(Method::DELETE, path, None, None).await?;
        Ok(())
    }

    /// `GET /api/v1/me`.
    pub async fn whoami(&self) -> Result<api::WhoAmI, ClientError> {
        self.get("/api/v1/me").await
    }

    /// `GET /readyz`: whether the server is ready.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        let resp = self.http.get(format!("{}/readyz", self.base)).send().await?;
        Ok(resp.status().is_success())
    }

    /// `GET /api/v1/models`.
    pub async fn list_models(&self, opts: &ListOptions) -> Result<api::ModelList, ClientError> {
        self.get_q("/api/v1/models", opts).await
    }

    /// `POST /api/v1/models`.
    pub async fn create_model(&self, req: &api::CreateModel) -> Result<api::Model, ClientError> {
        self.write(Method::POST, "/api/v1/models", req).await
    }

    /// `GET /api/v1/models/{ns}/{name}`.
    pub async fn get_model(&self, model: &str) -> Result<api::Model, ClientError> {
        self.get(&model_path(model)).await
    }

    /// `PATCH /api/v1/models/{ns}/{name}`.
    pub async fn update_model(&self, model: &str, req: &api::UpdateModel) -> Result<api::Model, ClientError> {
        self.write(Method::PATCH, &model_path(model), req).await
    }

    /// `DELETE /api/v1/models/{ns}/{name}`.
    pub async fn delete_model(&self, model: &str) -> Result<(), ClientError> {
        self.delete(&model_path(model)).await
    }

    /// `PUT …/tags/{key}`.
    pub async fn set_model_tag(&self, model: &str, key: &str, value: &str) -> Result<api::Model, ClientError> {
        let path = format!("{}/tags/{}", model_path(model), seg(key));
        self.write(Method::PUT, &path, &api::SetTag { value: value.to_owned() }).await
    }

    /// `DELETE …/tags/{key}`.
    pub async fn delete_model_tag(&self, model: &str, key: &str) -> Result<(), ClientError> {
        self.delete(&format!("{}/tags/{}", model_path(model), seg(key))).await
    }

    /// `GET …/versions`.
    pub async fn list_versions(&self, model: &str, opts: &ListOptions) -> Result<api::VersionList, ClientError> {
        self.get_q(&format!("{}/versions", model_path(model)), opts).await
    }

    /// `POST …/versions`.
    pub async fn create_version(&self, model: &str, req: &api::CreateVersion) -> Result<api::Version, ClientError> {
        self.write(Method::POST, &format!("{}/versions", model_path(model)), req).await
    }

    /// `GET …/versions/{n|@alias}`.
    pub async fn get_version(&self, model: &str, version: &str) -> Result<api::Version, ClientError> {
        self.get(&format!("{}/versions/{}", model_path(model), seg(version))).await
    }

    /// `PATCH …/versions/{n|@alias}`.
    pub async fn update_version(
        &self,
        model: &str,
        version: &str,
        req: &api::UpdateVersion,
    ) -> Result<api::Version, ClientError> {
        self.write(Method::PATCH, &format!("{}/versions/{}", model_path(model), seg(version)), req).await
    }

    /// `DELETE …/versions/{n|@alias}`.
    pub async fn delete_version(&self, model: &str, version: &str) -> Result<(), ClientError> {
        self.delete(&format!("{}/versions/{}", model_path(model), seg(version))).await
    }

    /// `PUT …/versions/{v}/tags/{key}`.
    pub async fn set_version_tag(
        &self,
        model: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<api::Version, ClientError> {
        let path = format!("{}/versions/{}/tags/{}", model_path(model), seg(version), seg(key));
        self.write(Method::PUT, &path, &api::SetTag { value: value.to_owned() }).await
    }

    /// `GET …/aliases`.
    pub async fn list_aliases(&self, model: &str) -> Result<api::AliasList, ClientError> {
        self.get(&format!("{}/aliases", model_path(model))).await
    }

    /// `PUT …/aliases/{alias}`.
    pub async fn set_alias(&self, model: &str, alias: &str, version: i64) -> Result<api::Alias, ClientError> {
        let path = format!("{}/aliases/{}", model_path(model), seg(alias));
        self.write(Method::PUT, &path, &api::SetAlias { version }).await
    }

    /// `DELETE …/aliases/{alias}`.
    pub async fn delete_alias(&self, model: &str, alias: &str) -> Result<(), ClientError> {
        self.delete(&format!("{}/aliases/{}", model_path(model), seg(alias))).await
    }

    /// `GET /api/v1/namespaces`.
    pub async fn list_namespaces(&self) -> Result<api::NamespaceList, ClientError> {
        self.get("/api/v1/namespaces").await
    }

    /// `POST /api/v1/keys`.
    pub async fn create_key(&self, req: &api::CreateApiKey) -> Result<api::CreatedApiKey, ClientError> {
        self.write(Method::POST, "/api/v1/keys", req).await
    }

    /// `POST /api/v1/users`.
    pub async fn create_user(&self, req: &api::CreateUser) -> Result<api::User, ClientError> {
        self.write(Method::POST, "/api/v1/users", req).await
    }

    /// `GET /api/v1/audit/events`.
    pub async fn list_audit_events(&self, query: &[(&str, &str)]) -> Result<api::AuditEventList, ClientError> {
        self.get_q("/api/v1/audit/events", &query).await
    }
}

fn empty() -> ClientError {
    ClientError::Api { status: 204, code: "empty".into(), message: "the server sent no content".into() }
}

/// `ns/name` → `/api/v1/models/ns/name`, each part percent-encoded.
fn model_path(model: &str) -> String {
    match model.split_once('/') {
        Some((ns, name)) => format!("/api/v1/models/{}/{}", seg(ns), seg(name)),
        None => format!("/api/v1/models/{}", seg(model)),
    }
}
