//! The application: state, router, middleware stack, and the serve loop.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use axum::middleware;
use cairn_blob::{BlobConfig, BlobOptions, BlobStore};
use cairn_store::Store;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::error::{code_for_status, error_body};
use crate::key_cache::KeyCache;
use crate::page_token::PageTokens;
use crate::rate_limit::{self, RateLimiter};
use crate::settings::Settings;
use crate::{auth, routes};

/// Shared state of every request: one reference-counted pointer, so that the clone axum
/// makes for every middleware layer of every request is one atomic increment (cloning a
/// struct of a dozen `Arc`s cost 18% of a version read's CPU time under load).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points at.
#[derive(Debug)]
pub struct Shared {
    /// Metadata.
    pub store: Store,
    /// Signs page tokens.
    pub page_tokens: PageTokens,
    /// The settings the server runs with.
    pub settings: Arc<Settings>,
    /// Recently verified API keys.
    pub keys: Arc<KeyCache>,
    /// Model files.
    pub blobs: BlobStore,
    /// Request counters for rate limiting.
    pub rate_limits: Arc<RateLimiter>,
    /// Derives the CSRF token of each login session.
    pub csrf_key: ServerKey,
    /// Signs audit checkpoints and committed versions.
    pub signing_key: Arc<cairn_audit::SigningKey>,
    /// Compiled active policies by (name, version): stored versions never change, so a
    /// replica compiles each once. Shared, never cloned: a cloned regular expression starts
    /// with cold match caches.
    pub policy_cache: Arc<PolicyCache>,
    /// Counters and gauges served at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This replica's view of read-only maintenance mode.
    pub maintenance: Arc<crate::maintenance_mode::MaintenanceGate>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

/// Compiled policies by (name, version).
pub type PolicyCache =
    std::sync::Mutex<std::collections::HashMap<(String, i64), Arc<cairn_core::policy::CompiledPolicy>>>;

/// A 256-bit key kept in the database so that every replica shares it; never printed.
#[derive(Clone)]
pub struct ServerKey(Arc<Vec<u8>>);

impl ServerKey {
    /// Loads the key `name`, creating it on first use (safe when replicas start at once).
    pub async fn load(store: &Store, name: &str) -> anyhow::Result<Self> {
        let hex_key = store
            .get_or_create_secret(name, || {
                let mut k = [0u8; 32];
                rand::fill(&mut k);
                hex::encode(k)
            })
            .await?;
        Ok(Self(Arc::new(hex::decode(&hex_key).unwrap_or_else(|_| hex_key.into_bytes()))))
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

impl AppState {
    /// Now, in ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        let now = time::OffsetDateTime::now_utc();
        i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// Builds the state: opens the blob store and loads (or creates) the page-token and CSRF keys
    /// shared by all replicas.
    pub async fn new(store: Store, settings: Settings) -> anyhow::Result<Self> {
        let blobs = open_blobs(&settings).await?;
        Self::with_blobs(store, settings, blobs).await
    }

    /// Like [`AppState::new`], with a blob store the caller opened (tests, embedders), e.g. with
    /// explicit S3 settings instead of the `AWS_*` environment. `blob_url`,
    /// `encryption_key_file` and `upload_part_size` of `settings` are then not read: the store
    /// has its own.
    pub async fn with_blobs(store: Store, settings: Settings, blobs: BlobStore) -> anyhow::Result<Self> {
        let page_key = ServerKey::load(&store, "page_token_key").await?;
        let csrf_key = ServerKey::load(&store, "csrf_key").await?;
        let signing_key = Arc::new(load_signing_key(&settings)?);
        store.announce_signing_key(&signing_key.public()).await?;
        let store = store.with_signer(signing_key.clone());
        let rate_limits = Arc::new(RateLimiter::new(store.clone(), &settings));
        Ok(Self(Arc::new(Shared {
            signing_key,
            store,
            page_tokens: PageTokens::new(page_key.bytes().to_vec()),
            settings: Arc::new(settings),
            keys: Arc::default(),
            blobs,
            rate_limits,
            csrf_key,
            policy_cache: Arc::default(),
            metrics: Arc::default(),
            maintenance: Arc::default(),
            draining: Arc::default(),
        })))
    }
}

/// Loads the signing key, generating it (mode 0600) on first start.
pub fn load_signing_key(settings: &Settings) -> anyhow::Result<cairn_audit::SigningKey> {
    let path = settings.signing_key_path();
    let (key, file) = cairn_audit::SigningKey::load_or_create(&path)
        .map_err(|e| anyhow::anyhow!("cannot load the signing key (CAIRN_SIGNING_KEY_FILE): {e}"))?;
    let key_id = key.public().key_id();
    if file.created {
        tracing::info!(%key_id, path = %path.display(), "generated the signing key; back it up, and give its public key to auditors");
    }
    if file.loose_permissions {
        tracing::warn!(path = %path.display(), "the signing key file can be read by other users: chmod 600 it");
    }
    Ok(key)
}

/// Opens the blob store the settings describe.
pub async fn open_blobs(settings: &Settings) -> anyhow::Result<BlobStore> {
    let cfg = blob_config(settings);
    let options = BlobOptions { part_size: Some(settings.upload_part_size), ..BlobOptions::from_env() };
    BlobStore::open_with(&cfg, &options).await.map_err(|e| anyhow::anyhow!("cannot open the blob store: {e}"))
}

/// Where and how the settings say model files are stored.
pub fn blob_config(settings: &Settings) -> BlobConfig {
    BlobConfig {
        url: settings.blob_url.clone(),
        data_dir: settings.data_dir.clone(),
        encryption_key_file: settings.encryption_key_file.clone(),
    }
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API routes with their OpenAPI description (no middleware).
pub fn api_router() -> OpenApiRouter<AppState> {
    routes::api()
}

/// Builds the whole application.
pub fn build_router(state: AppState) -> Router {
    let authenticate = middleware::from_fn_with_state(state.clone(), auth::require_auth);
    build_router_with_auth(state, authenticate)
}

/// Like [`build_router`], with `authenticate` in place of Cairn's API-key and session check on
/// the authenticated routes (it must insert an [`auth::Caller`] or answer itself). `cairn serve`
/// never calls this: it exists so that `bench/authcost` can measure what authentication costs
/// against an application that is otherwise identical.
pub fn build_router_with_auth<L>(state: AppState, authenticate: L) -> Router
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<Request<Body>> + Clone + Send + Sync + 'static,
    <L::Service as tower::Service<Request<Body>>>::Response: axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<Request<Body>>>::Error: Into<std::convert::Infallible> + 'static,
    <L::Service as tower::Service<Request<Body>>>::Future: Send + 'static,
{
    let (api, mut openapi) = api_router().split_for_parts();
    let (public, public_doc) = routes::public().split_for_parts();
    openapi.merge(public_doc);
    let openapi = Arc::new(openapi);
    let api = api
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        // Inside out: authentication, then the principal's rate limit.
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit::by_principal))
        .route_layer(authenticate)
        .merge(public)
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit::by_address));
    let timeout = Duration::from_secs(state.settings.request_timeout_secs);
    let max_json = state.settings.max_json_bytes;
    let ui = crate::ui::router().route_layer(middleware::from_fn_with_state(state.clone(), rate_limit::by_address));
    let mlflow = crate::mlflow::router(&state);
    let metrics = Router::new()
        .route("/metrics", axum::routing::get(crate::metrics::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit::by_address));
    let tls = state.settings.tls_enabled();
    Router::new()
        .merge(api)
        .merge(mlflow)
        .merge(ui)
        .merge(routes::health::router())
        .merge(metrics)
        .fallback(|| async { crate::error::ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), crate::maintenance_mode::refuse_writes))
        .layer(middleware::from_fn_with_state(state.clone(), crate::metrics::track))
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_json))
        .layer(middleware::from_fn(move |req: Request<Body>, next: middleware::Next| deadline(timeout, req, next)))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            let mut r = Response::new(Body::from(error_body("internal", "internal error")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }))
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn(move |req: Request<Body>, next: middleware::Next| {
            crate::headers::security_headers(tls, req, next)
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
        }))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

/// How long one upload part may take to arrive: a 16 MiB part needs this long at about
/// 150 kbit/s. Other requests get `request_timeout_secs`.
pub const PART_UPLOAD_TIMEOUT: Duration = Duration::from_secs(900);

/// Answers `408` when a request takes longer than its budget: part uploads (`PUT
/// /api/v1/uploads/…/parts/…`) and MLflow artifact uploads, whose bodies are large, get
/// [`PART_UPLOAD_TIMEOUT`].
async fn deadline(timeout: Duration, req: Request<Body>, next: middleware::Next) -> Response<Body> {
    let is_part = crate::metrics::is_upload(req.method(), req.uri().path());
    let budget = if is_part { timeout.max(PART_UPLOAD_TIMEOUT) } else { timeout };
    match tokio::time::timeout(budget, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
            r
        }
    }
}

/// Turns any error response that is not JSON yet (405 from routing, 408 from the timeout,
/// 413 from the body limit, …) into Cairn's JSON error shape.
async fn json_errors(resp: Response<Body>) -> Response<Body> {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // JSON errors pass as they are; so do the web UI's error pages.
    let keep = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if keep {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this route does not accept that method".to_owned(),
        StatusCode::REQUEST_TIMEOUT => "the request took too long and was cancelled".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than the server accepts".to_owned(),
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(error_body(code_for_status(status), &message)))
}
