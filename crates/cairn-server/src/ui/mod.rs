//! The web UI: server-rendered pages under `/ui`, from the same binary as the API.
//!
//! Every page is rendered on the server from `minijinja` templates embedded in the binary,
//! with HTML auto-escaping; there is one small stylesheet and one small script, both
//! embedded too. Reading works without JavaScript; the script only warns before the
//! session's idle timeout.
//!
//! The UI does not reimplement the API: each page calls the API's own handlers with the
//! caller's identity, so every permission check, every audit record and every refusal is
//! exactly the API's. A page only decides what to *show* (a button a role may not use is
//! absent), never what is *allowed*.
//!
//! Authentication is the login session of the identity layer (`cairn_session` cookie,
//! `HttpOnly; Secure; SameSite=Strict`). Forms cannot send headers, so every form carries
//! the session's CSRF token as the `csrf` field, checked in constant time before the
//! handler runs ([`UiForm`]); the pages send a content security policy that allows only
//! this server's own stylesheet, script, images and form targets.

mod account;
mod admin;
mod pages;
mod review;
pub mod svg;
mod templates;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cairn_core::Permission;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::session::{self, CsrfCheck};

/// The content security policy of UI pages: this server's own stylesheet, script, images
/// and form targets, nothing else; no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest form body the UI accepts (bytes).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Whether a request path belongs to the UI (it gets [`CONTENT_SECURITY_POLICY`]).
pub fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The UI's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/models") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/models") }))
        .route("/ui/static/cairn.css", get(templates::stylesheet))
        .route("/ui/static/cairn.js", get(templates::script))
        .route("/ui/login", get(account::login_page).post(account::login))
        .route("/ui/mfa", get(account::mfa_page).post(account::mfa_step_up))
        .route("/ui/logout", post(account::logout))
        .route("/ui/account", get(account::account_page))
        .route("/ui/account/mfa", post(account::mfa_begin))
        .route("/ui/account/mfa/confirm", post(account::mfa_confirm))
        .route("/ui/account/keys", post(account::create_key))
        .route("/ui/account/keys/{key_id}/revoke", post(account::revoke_key))
        .route("/ui/models", get(pages::models))
        .route("/ui/models/{namespace}/{name}", get(pages::model))
        .route("/ui/models/{namespace}/{name}/compare", get(pages::compare))
        .route("/ui/models/{namespace}/{name}/versions/{version}", get(pages::version))
        .route("/ui/models/{namespace}/{name}/versions/{version}/review", post(review::review))
        .route("/ui/models/{namespace}/{name}/versions/{version}/lifecycle", post(review::lifecycle_action))
        .route("/ui/reviews", get(review::inbox))
        .route("/ui/audit", get(admin::audit))
        .route("/ui/audit/verify", post(admin::verify))
        .route("/ui/admin", get(admin::admin_page))
        .route("/ui/admin/users", post(admin::create_user))
        .route("/ui/admin/users/{username}", post(admin::update_user))
        .route("/ui/admin/grants", post(admin::create_grant))
        .route("/ui/admin/grants/{grant_id}/delete", post(admin::delete_grant))
        .route("/ui/admin/lockouts/{subject}/release", post(admin::release_lockout))
}

/// The signed-in person looking at a page: their identity (the same [`Caller`] the API
/// sees) and the CSRF token their forms must carry. Only for `GET`/`HEAD`: a request that
/// changes something goes through [`UiForm`].
#[derive(Clone)]
pub struct Viewer {
    /// The caller, as the API's handlers take it.
    pub caller: Caller,
    /// The session's CSRF token, for the forms on the page.
    pub csrf: String,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer").field("user", &self.caller.principal.username).finish_non_exhaustive()
    }
}

/// Why a page cannot be shown to this request: go log in (again), or an error page.
#[derive(Debug)]
pub enum UiRejection {
    /// No session: the login page, coming back to `next` afterwards.
    Login {
        /// Where to go after logging in.
        next: String,
        /// Why (shown on the login page), when the session ended.
        reason: Option<&'static str>,
    },
    /// The session is there but needs its second factor first.
    StepUp,
    /// The session needs a second factor, and the person has none enrolled yet.
    Enrol,
    /// An error page.
    Error(ApiError),
}

impl IntoResponse for UiRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Login { next, reason } => {
                let mut to = format!("/ui/login?next={}", urlencode(&next));
                if let Some(r) = reason {
                    to.push_str("&reason=");
                    to.push_str(r);
                }
                let mut resp = Redirect::to(&to).into_response();
                if reason.is_some() {
                    resp.headers_mut()
                        .insert(header::SET_COOKIE, HeaderValue::from_str(&session::clear_cookie()).expect("ascii"));
                }
                resp
            }
            Self::StepUp => Redirect::to("/ui/mfa").into_response(),
            Self::Enrol => Redirect::to("/ui/account?enrol=required").into_response(),
            Self::Error(e) => templates::error_page(&e),
        }
    }
}

impl From<ApiError> for UiRejection {
    fn from(e: ApiError) -> Self {
        Self::Error(e)
    }
}

/// The result type of UI handlers.
pub type UiResult<T = Response> = Result<T, UiRejection>;

fn safe_next(parts: &Parts) -> String {
    let p = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui/models");
    if is_ui_path(parts.uri.path()) { p.to_owned() } else { "/ui/models".into() }
}

async fn viewer_from(state: &AppState, parts: &Parts, csrf: CsrfCheck<'_>) -> Result<Viewer, UiRejection> {
    match session::authenticate_session(state, parts, csrf).await {
        Ok(Some((caller, token))) => {
            let csrf = session::csrf_token(state, &token);
            Ok(Viewer { caller, csrf })
        }
        Ok(None) => Err(UiRejection::Login { next: safe_next(parts), reason: None }),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            Err(UiRejection::Login { next: safe_next(parts), reason: Some("expired") })
        }
        Err(e) => Err(UiRejection::Error(e)),
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = UiRejection;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            return Err(UiRejection::Error(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this page only answers GET",
            )));
        }
        let viewer = viewer_from(state, parts, CsrfCheck::SafeMethod).await?;
        let path = parts.uri.path();
        if !viewer.caller.principal.mfa_satisfied && !path.starts_with("/ui/account") && path != "/ui/mfa" {
            // A second factor is needed: give it, or enrol one first.
            let enrolled = mfa_enrolled(state, &viewer).await?;
            return Err(if enrolled { UiRejection::StepUp } else { UiRejection::Enrol });
        }
        Ok(viewer)
    }
}

/// A submitted form of a signed-in person: the session is authenticated and the form's
/// `csrf` field checked (in constant time) before the fields are decoded into `T`.
#[derive(Debug)]
pub struct UiForm<T> {
    /// Who submitted it.
    pub viewer: Viewer,
    /// The form's fields (`T` ignores `csrf`).
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for UiForm<T> {
    type Rejection = UiRejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = read_form_body(&parts, body).await?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ApiError::invalid(format!("this form could not be read: {e}")))?;
        let given = pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_bytes()).unwrap_or_default();
        let viewer = viewer_from(state, &parts, CsrfCheck::Given(given)).await?;
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ApiError::invalid(format!("this form is not complete or not valid: {e}")))?;
        Ok(Self { viewer, form })
    }
}

/// A form with nothing in it but its CSRF token (a button).
#[derive(Debug, Default, serde::Deserialize)]
pub struct NoFields {}

/// A form that anyone may submit (logging in): bounded, `application/x-www-form-urlencoded`.
#[derive(Debug)]
pub struct PublicForm<T>(pub Parts, pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for PublicForm<T> {
    type Rejection = UiRejection;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = read_form_body(&parts, body).await?;
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ApiError::invalid(format!("this form is not complete or not valid: {e}")))?;
        Ok(Self(parts, form))
    }
}

async fn read_form_body(parts: &Parts, body: Body) -> Result<bytes::Bytes, ApiError> {
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "forms must be sent as application/x-www-form-urlencoded",
        ));
    }
    axum::body::to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a form may be at most {MAX_FORM_BYTES} bytes"),
        )
    })
}

/// What every page's layout needs to know about the person viewing it.
#[derive(Debug, Serialize)]
pub struct Me {
    /// Their account name.
    pub username: String,
    /// Global administrator.
    pub is_admin: bool,
    /// May review some versions (holds mrc, security or sre somewhere).
    pub can_review: bool,
    /// May read the audit log.
    pub can_audit: bool,
    /// The session's CSRF token.
    pub csrf: String,
    /// Seconds of inactivity after which the session ends.
    pub idle_secs: u64,
}

impl Me {
    /// The layout's view of `viewer`.
    pub fn of(state: &AppState, viewer: &Viewer) -> Self {
        let p = &viewer.caller.principal;
        let reviewer_roles =
            [cairn_core::Role::Mrc, cairn_core::Role::Security, cairn_core::Role::Sre, cairn_core::Role::Admin];
        Self {
            username: p.username.clone(),
            is_admin: p.is_admin() && p.mfa_satisfied,
            can_review: p.mfa_satisfied && p.grants.iter().any(|g| reviewer_roles.contains(&g.role)),
            can_audit: p.check(Permission::AuditRead, None).is_ok(),
            csrf: viewer.csrf.clone(),
            idle_secs: state.settings.session_idle_secs,
        }
    }
}

/// Checks that the viewer holds `permission` (globally) for a page or form that needs it as a
/// whole, recording a refused change like the API does.
pub async fn authorize_page(
    state: &AppState,
    viewer: &Viewer,
    permission: Permission,
    audit_action: &str,
    target: &str,
) -> Result<(), ApiError> {
    crate::routes::authorize(state, &viewer.caller, permission, None, audit_action, target).await
}

/// Percent-encodes `s` for a URL query value or path segment.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A redirect after a successful form (303: the browser follows with `GET`), with a notice
/// for the next page in its query.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Whether the viewer has an authenticator enrolled (read from the account, not the session).
pub async fn mfa_enrolled(state: &AppState, viewer: &Viewer) -> Result<bool, ApiError> {
    Ok(state.store.account_auth(&viewer.caller.principal.user_id).await?.is_some_and(|a| a.mfa_enabled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ui_paths_are_ui_paths() {
        assert!(is_ui_path("/ui"));
        assert!(is_ui_path("/ui/models"));
        assert!(!is_ui_path("/uix"));
        assert!(!is_ui_path("/api/v1/models"));
    }

    #[test]
    fn urlencode_escapes_everything_but_unreserved() {
        assert_eq!(urlencode("/ui/models?q=a b&x=é"), "%2Fui%2Fmodels%3Fq%3Da%20b%26x%3D%C3%A9");
        assert_eq!(urlencode("a-b_c.d~"), "a-b_c.d~");
    }
}
