//! The one place where errors become HTTP responses.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use cairn_api_types::{ErrorBody, ErrorDetail};
use cairn_store::StoreError;
use serde::de::DeserializeOwned;

/// An error on its way to the client as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
    /// The blob store failed (counted in `/metrics`).
    pub blob: bool,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), blob: false }
    }

    /// A failure of the blob store.
    fn blob_failure(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { blob: true, ..Self::new(status, code, message) }
    }

    /// 400 `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 409 `busy`: another request holds the thing right now; asking again shortly succeeds.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "busy", message)
    }

    /// 403 `permission_denied`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// The JSON error code used for a bare status (from layers that know no better).
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_argument",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "permission_denied",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "invalid_argument",
        _ => "internal",
    }
}

/// The JSON body for an error.
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::to_string(&ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.to_owned() } })
        .unwrap_or_else(|_| String::from(r#"{"error":{"code":"internal","message":"internal error"}}"#))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, error_body(self.code, &self.message)).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.blob {
            resp.extensions_mut().insert(crate::metrics::BlobFailure);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"cairn\""));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => Self::not_found(m),
            StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "already_exists", m),
            StoreError::Invalid(m) => Self::invalid(m),
            StoreError::MissingBlobs(m) => Self::new(StatusCode::CONFLICT, "missing_blobs", m),
            StoreError::Busy(m) => Self::busy(m),
            StoreError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "permission_denied", m),
            StoreError::Filter(e) => e.into(),
            other => {
                tracing::error!(error = %other, "store failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has details under this request's id",
                )
            }
        }
    }
}

impl From<cairn_core::NameError> for ApiError {
    fn from(e: cairn_core::NameError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<cairn_core::Denied> for ApiError {
    fn from(e: cairn_core::Denied) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", e.0)
    }
}

impl From<cairn_core::filter::FilterError> for ApiError {
    fn from(e: cairn_core::filter::FilterError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_filter", e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match &r {
            JsonRejection::JsonSyntaxError(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("request body is not valid JSON: {}", r.body_text()),
            ),
            JsonRejection::JsonDataError(_) => Self::invalid(r.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than the server accepts",
            ),
            _ => Self::new(r.status(), code_for_status(r.status()), r.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::invalid(format!("invalid query string: {}", r.body_text()))
    }
}

/// `Json<T>` whose rejections are Cairn's JSON errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(v))
    }
}

/// `Query<T>` whose rejections are Cairn's JSON errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(v))
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<cairn_blob::BlobError> for ApiError {
    fn from(e: cairn_blob::BlobError) -> Self {
        use cairn_blob::BlobError as B;
        match e {
            B::SizeMismatch { .. } | B::InvalidPart(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_part", e.to_string())
            }
            B::DigestMismatch { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch", e.to_string()),
            B::InvalidRange => Self::new(StatusCode::RANGE_NOT_SATISFIABLE, "invalid_range", e.to_string()),
            B::NotFound(_) | B::Corrupt { .. } => {
                tracing::error!(error = %e, "blob store integrity failure");
                Self::blob_failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "blob_unavailable",
                    "the stored file is missing or damaged; an administrator should run `cairn admin fsck`",
                )
            }
            other => {
                tracing::error!(error = %other, "blob store failure");
                Self::blob_failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has details under this request's id",
                )
            }
        }
    }
}
