//! The MLflow-compatible API (docs/MLFLOW.md): MLflow's model registry, the part of its
//! tracking API that logging and registering models goes through, and the proxied artifact
//! API, so that `MLFLOW_TRACKING_URI=<cairn>` keeps existing MLflow code working.
//!
//! It is a second front door to the same registry, not a second store: registry calls run
//! the native API's own handlers with the caller, so permissions, audit records, policies
//! and approvals are exactly the native API's. Only names, shapes and errors differ:
//! - MLflow names cannot contain `/`: Cairn's `namespace/name` is `namespace.name` here
//!   (split at the first dot; a name without a dot lives in the namespace `default`);
//! - errors are MLflow's `{"error_code", "message"}` with MLflow's status codes;
//! - credentials are a bearer API key (`MLFLOW_TRACKING_TOKEN`) or HTTP Basic
//!   (`MLFLOW_TRACKING_USERNAME`/`PASSWORD`, with a password or an API key as the password).

mod artifacts;
mod registry;
mod tracking;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cairn_core::{ModelName, ModelRef, Namespace};
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::error::ApiError;

/// An error in MLflow's shape: `{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "…"}`.
#[derive(Debug)]
pub struct MlflowError {
    /// HTTP status, as MLflow maps the code.
    pub status: StatusCode,
    /// MLflow's `ErrorCode` name.
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
    /// `Retry-After` for rate limits and lockouts.
    pub retry_after: Option<HeaderValue>,
}

impl MlflowError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 400 `INVALID_PARAMETER_VALUE`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }

    /// 404 `RESOURCE_DOES_NOT_EXIST`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", message)
    }

    /// 400 `RESOURCE_ALREADY_EXISTS` (MLflow answers 400, not 409).
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", message)
    }

    /// 403 `PERMISSION_DENIED`.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error_code": self.code, "message": self.message });
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"cairn\""));
        }
        if let Some(v) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<ApiError> for MlflowError {
    fn from(e: ApiError) -> Self {
        let (status, code) = match (e.status, e.code) {
            (_, "already_exists") => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"),
            (StatusCode::NOT_FOUND, _) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
            (StatusCode::UNAUTHORIZED, _) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            (StatusCode::FORBIDDEN, _) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            // Lifecycle refusals (illegal transition, blocked by a policy) are permission
            // questions to an MLflow client: the gate decides, not the request's shape.
            (StatusCode::CONFLICT, "illegal_transition" | "policy_blocked") => {
                (StatusCode::FORBIDDEN, "PERMISSION_DENIED")
            }
            (StatusCode::CONFLICT, "busy") => (StatusCode::CONFLICT, "ABORTED"),
            (StatusCode::CONFLICT, _) => (StatusCode::CONFLICT, "RESOURCE_CONFLICT"),
            (StatusCode::TOO_MANY_REQUESTS, _) => (StatusCode::TOO_MANY_REQUESTS, "REQUEST_LIMIT_EXCEEDED"),
            (StatusCode::PAYLOAD_TOO_LARGE, _) => (StatusCode::PAYLOAD_TOO_LARGE, "INVALID_PARAMETER_VALUE"),
            (s, _) if s.is_client_error() => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        };
        Self::new(status, code, e.message)
    }
}

impl From<cairn_store::StoreError> for MlflowError {
    fn from(e: cairn_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<cairn_core::NameError> for MlflowError {
    fn from(e: cairn_core::NameError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<cairn_blob::BlobError> for MlflowError {
    fn from(e: cairn_blob::BlobError) -> Self {
        ApiError::from(e).into()
    }
}

/// The result type of MLflow handlers.
pub type MlflowResult<T> = Result<T, MlflowError>;

/// Cairn's model for an MLflow registered-model name: `ns.name` is `ns/name`; a name without
/// a dot is `default/name`.
pub fn model_ref(mlflow_name: &str) -> Result<ModelRef, MlflowError> {
    let (ns, name) = match mlflow_name.split_once('.') {
        Some((ns, name)) if !ns.is_empty() => (ns, name),
        _ => ("default", mlflow_name),
    };
    let ns = Namespace::parse(ns).map_err(|e| {
        MlflowError::invalid(format!(
            "invalid registered model name {mlflow_name:?}: the part before the first dot is the Cairn namespace: {e}"
        ))
    })?;
    let name = ModelName::parse(name).map_err(|e| {
        MlflowError::invalid(format!(
            "invalid registered model name {mlflow_name:?}: Cairn model names take lower-case letters, digits, \
             '-', '_' and '.': {e}"
        ))
    })?;
    Ok(ModelRef::new(ns, name))
}

/// The MLflow name of a Cairn model.
pub fn mlflow_name(namespace: &str, name: &str) -> String {
    if namespace == "default" { name.to_owned() } else { format!("{namespace}.{name}") }
}

/// The parameters of a request: the JSON body of POST/PATCH/DELETE, or the query string of
/// GET (repeated keys become arrays), as MLflow's clients send them.
#[derive(Debug, Default)]
pub struct Args(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Args {
    type Rejection = MlflowError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut map = Map::new();
        if let Some(q) = req.uri().query() {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
                .map_err(|e| MlflowError::invalid(format!("invalid query string: {e}")))?;
            for (k, v) in pairs {
                let v = Value::String(v);
                match map.get_mut(k.as_str()) {
                    Some(Value::Array(a)) => a.push(v),
                    Some(old) => {
                        let first = old.take();
                        *old = Value::Array(vec![first, v]);
                    }
                    None => {
                        map.insert(k, v);
                    }
                }
            }
        }
        if req.method() != Method::GET {
            let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    MlflowError::new(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_PARAMETER_VALUE", "request body too large")
                } else {
                    MlflowError::invalid(format!("cannot read the request body: {e}"))
                }
            })?;
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Object(body)) => map.extend(body),
                    Ok(_) => return Err(MlflowError::invalid("the request body must be a JSON object")),
                    Err(e) => {
                        return Err(MlflowError::new(
                            StatusCode::BAD_REQUEST,
                            "MALFORMED_REQUEST",
                            format!("malformed JSON: {e}"),
                        ));
                    }
                }
            }
        }
        Ok(Self(map))
    }
}

impl Args {
    /// A string parameter, if given (numbers are accepted as their text).
    pub fn opt_str(&self, key: &str) -> MlflowResult<Option<String>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Array(a)) if a.len() == 1 => match &a[0] {
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(MlflowError::invalid(format!("Invalid value for parameter '{key}': expected a string"))),
            },
            Some(_) => Err(MlflowError::invalid(format!("Invalid value for parameter '{key}': expected a string"))),
        }
    }

    /// A required, non-empty string parameter.
    pub fn str(&self, key: &str) -> MlflowResult<String> {
        match self.opt_str(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(MlflowError::invalid(format!("Missing value for required parameter '{key}'."))),
        }
    }

    /// The first of several spellings of a string parameter (`run_id`/`run_uuid`).
    pub fn str_any(&self, keys: &[&str]) -> MlflowResult<String> {
        for k in keys {
            if let Some(s) = self.opt_str(k)?.filter(|s| !s.is_empty()) {
                return Ok(s);
            }
        }
        Err(MlflowError::invalid(format!("Missing value for required parameter '{}'.", keys[0])))
    }

    /// An integer parameter (a JSON number or its text).
    pub fn opt_i64(&self, key: &str) -> MlflowResult<Option<i64>> {
        let bad = || MlflowError::invalid(format!("Invalid value for parameter '{key}': expected an integer"));
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// A floating-point parameter.
    pub fn opt_f64(&self, key: &str) -> MlflowResult<Option<f64>> {
        let bad = || MlflowError::invalid(format!("Invalid value for parameter '{key}': expected a number"));
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) => match s.trim() {
                "NaN" => Ok(Some(f64::NAN)),
                "Infinity" => Ok(Some(f64::INFINITY)),
                "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
                t => t.parse().map(Some).map_err(|_| bad()),
            },
            Some(_) => Err(bad()),
        }
    }

    /// A boolean parameter (`true`/`false` or their text).
    pub fn opt_bool(&self, key: &str) -> MlflowResult<Option<bool>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(MlflowError::invalid(format!("Invalid value for parameter '{key}': expected a boolean"))),
        }
    }

    /// A list of strings (one string or an array).
    pub fn list(&self, key: &str) -> MlflowResult<Vec<String>> {
        let bad = || MlflowError::invalid(format!("Invalid value for parameter '{key}': expected a list of strings"));
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(bad()),
                })
                .collect(),
            Some(_) => Err(bad()),
        }
    }

    /// A list of `{key, value}` objects (tags, params).
    pub fn pairs(&self, key: &str) -> MlflowResult<Vec<(String, String)>> {
        pairs_of(self.0.get(key), key)
    }
}

/// Reads a list of `{key, value}` objects.
pub fn pairs_of(v: Option<&Value>, what: &str) -> MlflowResult<Vec<(String, String)>> {
    let bad =
        || MlflowError::invalid(format!("Invalid value for parameter '{what}': expected a list of {{key, value}}"));
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = v else {
        return Err(bad());
    };
    if items.len() > 1000 {
        return Err(MlflowError::invalid(format!("at most 1000 entries in '{what}'")));
    }
    items
        .iter()
        .map(|item| {
            let key = item.get("key").and_then(Value::as_str).filter(|k| !k.is_empty()).ok_or_else(bad)?;
            let value = match item.get("value") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            check_key_value(key, &value)?;
            Ok((key.to_owned(), value))
        })
        .collect()
}

/// Bounds of keys and values (MLflow guarantees 250-byte keys, 8,000-byte param values; tag
/// values up to 8,000 bytes).
pub fn check_key_value(key: &str, value: &str) -> MlflowResult<()> {
    if key.len() > 250 {
        return Err(MlflowError::invalid(format!(
            "key {:?}… is longer than 250 bytes",
            key.chars().take(40).collect::<String>()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(MlflowError::invalid("keys may not contain control characters"));
    }
    if value.len() > 8000 {
        return Err(MlflowError::invalid(format!("the value of {key:?} is longer than 8000 bytes")));
    }
    Ok(())
}

/// `{key, value}` objects for a response.
pub fn kv_list<'a>(items: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    Value::Array(items.into_iter().map(|(k, v)| serde_json::json!({ "key": k, "value": v })).collect())
}

/// An empty JSON object, MLflow's answer to most writes.
pub fn empty() -> axum::Json<Value> {
    axum::Json(Value::Object(Map::new()))
}

/// Middleware: authenticates a request with a bearer API key or HTTP Basic, or answers
/// `401 UNAUTHENTICATED` in MLflow's shape.
async fn require_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let caller = match authenticate(&state, &parts).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

async fn authenticate(
    state: &AppState,
    parts: &axum::http::request::Parts,
) -> Result<crate::auth::Caller, MlflowError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(MlflowError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "authentication required: set MLFLOW_TRACKING_TOKEN to a Cairn API key (or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)",
        ));
    };
    let value = value.to_str().map_err(|_| unauthenticated("the Authorization header is not valid text"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(crate::auth::authenticate_key(state, parts, rest).await?);
    }
    if scheme.eq_ignore_ascii_case("basic") && !rest.is_empty() && rest.len() <= 1024 {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unauthenticated("the Basic credentials are not valid base64 text"))?;
        let (username, password) =
            decoded.split_once(':').ok_or_else(|| unauthenticated("the Basic credentials need 'username:password'"))?;
        if password.starts_with(crate::auth::KEY_PREFIX) {
            // An API key as the password: the key decides who it is; the name must agree.
            let caller = crate::auth::authenticate_key(state, parts, password).await?;
            if !username.is_empty() && caller.principal.username != username {
                return Err(unauthenticated("this API key belongs to another user"));
            }
            return Ok(caller);
        }
        return match crate::session::authenticate_password(state, parts, username, password).await {
            Ok(c) => Ok(c),
            Err(crate::session::AuthError::Api(e)) => Err(e.into()),
            Err(crate::session::AuthError::Locked { retry_after_secs }) => {
                let mut e = MlflowError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "REQUEST_LIMIT_EXCEEDED",
                    format!("too many failed attempts: locked for {retry_after_secs} s"),
                );
                e.retry_after = HeaderValue::from_str(&retry_after_secs.to_string()).ok();
                Err(e)
            }
        };
    }
    Err(unauthenticated("the Authorization header must be 'Bearer <api key>' or 'Basic <credentials>'"))
}

fn unauthenticated(message: &str) -> MlflowError {
    MlflowError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
}

/// Turns any error response of an MLflow route that is not MLflow-shaped yet (rate limits,
/// body limits, timeouts, unknown routes) into `{"error_code", "message"}`.
async fn mlflow_errors(resp: Response<Body>) -> Response<Body> {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    if parsed.as_ref().is_some_and(|v| v.get("error_code").is_some()) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let code = match status {
        StatusCode::NOT_FOUND => "ENDPOINT_NOT_FOUND",
        StatusCode::TOO_MANY_REQUESTS => "REQUEST_LIMIT_EXCEEDED",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "PERMISSION_DENIED",
        StatusCode::REQUEST_TIMEOUT => "DEADLINE_EXCEEDED",
        StatusCode::SERVICE_UNAVAILABLE => "TEMPORARILY_UNAVAILABLE",
        s if s.is_client_error() => "BAD_REQUEST",
        _ => "INTERNAL_ERROR",
    };
    let mut e = MlflowError::new(status, code, message);
    e.retry_after = retry_after;
    e.into_response()
}

/// The MLflow-compatible routes, authenticated and rate-limited like the native API.
pub fn router(state: &AppState) -> Router<AppState> {
    let api = registry::routes().merge(tracking::routes());
    let prefixed = Router::new().nest("/api/2.0/mlflow", api.clone()).nest("/ajax-api/2.0/mlflow", api);
    Router::new()
        .merge(prefixed)
        .merge(artifacts::routes(state))
        .route("/api/3.0/mlflow/server-info", axum::routing::get(tracking::server_info))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::rate_limit::by_principal))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::rate_limit::by_address))
        .merge(
            artifacts::signed_routes(state)
                .route_layer(middleware::from_fn_with_state(state.clone(), crate::rate_limit::by_address)),
        )
        .layer(middleware::map_response(mlflow_errors))
}

/// Whether a path belongs to the MLflow-compatible API.
pub fn is_mlflow_path(path: &str) -> bool {
    path.starts_with("/api/2.0/mlflow")
        || path.starts_with("/ajax-api/2.0/mlflow")
        || path.starts_with("/api/3.0/mlflow")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        let m = model_ref("nlp.sentiment").unwrap();
        assert_eq!(m.to_string(), "nlp/sentiment");
        assert_eq!(mlflow_name("nlp", "sentiment"), "nlp.sentiment");
        let m = model_ref("nlp.bert.v2").unwrap();
        assert_eq!(m.to_string(), "nlp/bert.v2");
        assert_eq!(mlflow_name(m.namespace.as_str(), m.name.as_str()), "nlp.bert.v2");
        let m = model_ref("iris").unwrap();
        assert_eq!(m.to_string(), "default/iris");
        assert_eq!(mlflow_name("default", "iris"), "iris");
        assert_eq!(model_ref("default.iris").unwrap().to_string(), "default/iris");
    }

    #[test]
    fn bad_names_are_explained() {
        let e = model_ref("Upper.Case").unwrap_err();
        assert_eq!(e.code, "INVALID_PARAMETER_VALUE");
        assert!(e.message.contains("namespace"), "{}", e.message);
        let e = model_ref("ns.has space").unwrap_err();
        assert!(e.message.contains("lower-case"), "{}", e.message);
        assert!(model_ref(".x").is_err());
    }

    #[test]
    fn errors_take_mlflow_codes() {
        let e: MlflowError = ApiError::new(StatusCode::CONFLICT, "already_exists", "x").into();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"));
        let e: MlflowError = ApiError::not_found("x").into();
        assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"));
        let e: MlflowError = ApiError::new(StatusCode::CONFLICT, "policy_blocked", "x").into();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "PERMISSION_DENIED"));
        let e: MlflowError = ApiError::unauthenticated("x").into();
        assert_eq!(e.code, "UNAUTHENTICATED");
    }
}
