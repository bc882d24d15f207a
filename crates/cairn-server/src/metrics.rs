//! Prometheus metrics at `/metrics` (OpenMetrics text): requests and their latency per route
//! and status, bytes in and out, requests and uploads in flight, database pool use, blob
//! store failures, the audit chain's head, login failures and lockouts, rate-limit
//! rejections, maintenance mode.
//!
//! Each server has its own [`Metrics`] (no process-wide recorder), so several servers in one
//! process — tests, embedders — count apart. Labels are bounded: the route is the matched
//! route template (`/api/v1/models/{namespace}/{name}`), never the concrete path.
//!
//! Reading `/metrics` needs a credential: the `metrics_token` setting, or an administrator's
//! API key or session. Nothing is anonymous, so a proxy that forwards everything does not
//! publish traffic figures.

use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::app::AppState;
use crate::error::ApiError;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

/// Labels of the database pool gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// Labels of a rate-limit rejection: limited by address or by principal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    by: &'static str,
}

/// Latency buckets: 0.5 ms … about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
}

/// A response marked as a failure of the blob store (counted by [`track`]).
#[derive(Clone, Copy, Debug)]
pub struct BlobFailure;

/// The counters and gauges of one server.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    bytes_in: Counter<u64, AtomicU64>,
    bytes_out: Counter<u64, AtomicU64>,
    in_flight: Gauge,
    uploads_in_flight: Gauge,
    blob_errors: Counter,
    login_failures: Counter,
    lockouts: Counter,
    rate_limited: Family<LimitLabels, Counter>,
    db_pool: Family<PoolLabels, Gauge>,
    audit_head: Gauge,
    maintenance: Gauge,
    draining: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut m = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            in_flight: Gauge::default(),
            uploads_in_flight: Gauge::default(),
            blob_errors: Counter::default(),
            login_failures: Counter::default(),
            lockouts: Counter::default(),
            rate_limited: Family::default(),
            db_pool: Family::default(),
            audit_head: Gauge::default(),
            maintenance: Gauge::default(),
            draining: Gauge::default(),
            registry: Registry::with_prefix("cairn"),
        };
        m.registry.register("http_requests", "HTTP requests answered, by method, route and status", m.requests.clone());
        m.registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (until the response head), by method, route and status",
            m.latency.clone(),
        );
        m.registry.register("http_request_body_bytes", "Bytes received in request bodies", m.bytes_in.clone());
        m.registry.register("http_response_body_bytes", "Bytes sent in response bodies", m.bytes_out.clone());
        m.registry.register("http_requests_in_flight", "Requests being answered now", m.in_flight.clone());
        m.registry.register(
            "uploads_in_flight",
            "Upload parts and MLflow artifact uploads being received now",
            m.uploads_in_flight.clone(),
        );
        m.registry.register("blob_store_errors", "Requests that failed in the blob store", m.blob_errors.clone());
        m.registry.register("login_failures", "Failed password logins and MFA codes", m.login_failures.clone());
        m.registry.register("lockouts", "Names or addresses locked out after failed attempts", m.lockouts.clone());
        m.registry.register(
            "rate_limit_rejections",
            "Requests refused with 429 by the rate limiter",
            m.rate_limited.clone(),
        );
        m.registry.register(
            "db_pool_connections",
            "Database connections by state (idle, in_use, max)",
            m.db_pool.clone(),
        );
        m.registry.register("audit_chain_head_seq", "Sequence number of the newest audit event", m.audit_head.clone());
        m.registry.register("maintenance_mode", "1 while read-only maintenance mode is on", m.maintenance.clone());
        m.registry.register("draining", "1 while the server is shutting down", m.draining.clone());
        m
    }

    /// Counts a failed login or MFA code.
    pub fn login_failure(&self) {
        self.login_failures.inc();
    }

    /// Counts lockouts that just started.
    pub fn lockouts_started(&self, n: usize) {
        self.lockouts.inc_by(n as u64);
    }

    /// Counts a `429` from the rate limiter (`by` is `address` or `principal`).
    pub fn rate_limited(&self, by: &'static str) {
        self.rate_limited.get_or_create(&LimitLabels { by }).inc();
    }

    /// Renders every metric, after reading the gauges that are sampled on scrape.
    async fn render(&self, state: &AppState) -> Result<String, ApiError> {
        let (open, idle) = state.store.db().pool_stats();
        let max = i64::from(state.settings.db_max_connections)
            + i64::from(state.store.backend() == cairn_store::Backend::Sqlite);
        self.db_pool.get_or_create(&PoolLabels { state: "idle" }).set(idle as i64);
        self.db_pool.get_or_create(&PoolLabels { state: "in_use" }).set(i64::from(open) - idle as i64);
        self.db_pool.get_or_create(&PoolLabels { state: "max" }).set(max);
        self.audit_head.set(state.store.audit_head().await?.seq);
        self.maintenance.set(i64::from(state.maintenance.current().is_some()));
        self.draining.set(i64::from(state.draining.load(std::sync::atomic::Ordering::Relaxed)));
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "could not render metrics"))?;
        Ok(out)
    }
}

/// Whether a request carries a large body to store: an upload part or an MLflow artifact.
pub fn is_upload(method: &Method, path: &str) -> bool {
    method == Method::PUT
        && ((path.starts_with("/api/v1/uploads/") && path.contains("/parts/"))
            || path.starts_with("/api/2.0/mlflow-artifacts/")
            || path.starts_with("/ajax-api/2.0/mlflow-artifacts/"))
}

/// Middleware on every route: counts the request, its latency, and the bytes of both bodies.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let metrics = state.metrics.clone();
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let upload = is_upload(&method, req.uri().path());
    let req = req.map(|b| Body::new(Counting { inner: b, counter: metrics.bytes_in.clone() }));
    metrics.in_flight.inc();
    if upload {
        metrics.uploads_in_flight.inc();
    }
    let resp = next.run(req).await;
    metrics.in_flight.dec();
    if upload {
        metrics.uploads_in_flight.dec();
    }
    if resp.extensions().get::<BlobFailure>().is_some() {
        metrics.blob_errors.inc();
    }
    let labels = RouteLabels { method: method.as_str().to_owned(), route, status: resp.status().as_u16() };
    metrics.requests.get_or_create(&labels).inc();
    metrics.latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    resp.map(|b| Body::new(Counting { inner: b, counter: metrics.bytes_out.clone() }))
}

/// A body that adds the length of every data frame to a counter.
struct Counting {
    inner: Body,
    counter: Counter<u64, AtomicU64>,
}

impl HttpBody for Counting {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `GET /metrics`: for the `metrics_token` or an administrator.
pub async fn metrics(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let by_token = match (presented, &state.settings.metrics_token) {
        (Some(p), Some(t)) => subtle::ConstantTimeEq::ct_eq(p.as_bytes(), t.as_bytes()).into(),
        _ => false,
    };
    if !by_token {
        let caller = match presented {
            Some(token) => crate::auth::authenticate_key(&state, &parts, token).await?,
            None => crate::session::authenticate_cookie(&state, &parts).await?.ok_or_else(|| {
                ApiError::unauthenticated(
                    "reading metrics needs 'Authorization: Bearer <metrics token or an administrator's API key>'",
                )
            })?,
        };
        if !caller.principal.is_admin() {
            return Err(ApiError::forbidden("only administrators and the metrics token may read metrics"));
        }
    }
    let body = state.metrics.render(&state).await?;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}
