//! Logging in and out, the second factor (step-up and enrolment with a QR code and recovery
//! codes), and the person's own API keys (a new key is shown once).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use cairn_api_types as api;
use minijinja::context;
use serde::Deserialize;

use super::templates::{render, render_status};
use super::{Me, NoFields, PublicForm, UiForm, UiRejection, UiResult, Viewer, see_other, svg, urlencode};
use crate::app::AppState;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::routes::{account, session as session_routes};
use crate::session::{self, AuthError, CsrfCheck};

/// Where to go after logging in: a UI page of this server, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("/ui//") && !n.contains('\\') && !n.contains("://") => {
            n.to_owned()
        }
        _ => "/ui/models".into(),
    }
}

/// Query of the login page.
#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    /// Where to go afterwards.
    pub next: Option<String>,
    /// `expired` when the last session ended; `logged_out` after logging out.
    pub reason: Option<String>,
}

fn login_notice(reason: Option<&str>) -> Option<&'static str> {
    match reason {
        Some("expired") => {
            Some("Your session has ended (it expires after a time without activity). Please log in again.")
        }
        Some("logged_out") => Some("You have logged out."),
        _ => None,
    }
}

/// `GET /ui/login`.
pub async fn login_page(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    Query(q): Query<LoginQuery>,
) -> Response {
    // Someone already logged in goes on to the page they wanted.
    if let Ok(Some(_)) = session::authenticate_session(&state, &parts, CsrfCheck::SafeMethod).await {
        return see_other(&safe_next(q.next.as_deref()));
    }
    let next = safe_next(q.next.as_deref());
    render("login.html", context! { title => "Log in", next, notice => login_notice(q.reason.as_deref()) })
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// Account name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Authenticator code (optional).
    #[serde(default)]
    pub code: String,
    /// Where to go afterwards.
    #[serde(default)]
    pub next: String,
}

fn auth_failure(e: AuthError) -> (StatusCode, String) {
    match e {
        AuthError::Api(e) => (e.status, e.message),
        AuthError::Locked { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many failed attempts: logging in is refused for {retry_after_secs} more second(s)."),
        ),
    }
}

fn with_session_cookie(mut resp: Response, opened: &session::Opened, max_age: u64) -> Response {
    let cookie = session::session_cookie(&opened.token, max_age);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/login`: password, and the authenticator code when the person has one.
pub async fn login(State(state): State<AppState>, PublicForm(parts, form): PublicForm<LoginForm>) -> Response {
    let code = form.code.trim();
    let body = api::LoginRequest {
        username: form.username.clone(),
        password: form.password,
        totp_code: (!code.is_empty() && code.len() <= 8).then(|| code.to_owned()),
        recovery_code: (code.len() > 8).then(|| code.to_owned()),
    };
    let next = safe_next(Some(&form.next));
    match session::login(&state, &parts, &body).await {
        Ok(opened) => {
            let r = &opened.response;
            let to = if r.mfa_verified || (!r.mfa_enrolled && !r.mfa_required) {
                next
            } else if r.mfa_enrolled {
                format!("/ui/mfa?next={}", urlencode(&next))
            } else {
                // The role requires MFA and none is enrolled: enrol first.
                "/ui/account?enrol=required".to_owned()
            };
            with_session_cookie(see_other(&to), &opened, state.settings.auth_token_expiry)
        }
        Err(e) => {
            let (status, error) = auth_failure(e);
            render_status(status, "login.html", context! { title => "Log in", next, error, username => form.username })
        }
    }
}

/// `GET /ui/mfa`: the second step of logging in.
pub async fn mfa_page(State(state): State<AppState>, viewer: Viewer, Query(q): Query<LoginQuery>) -> UiResult {
    if viewer.caller.principal.mfa_satisfied {
        return Ok(see_other(&safe_next(q.next.as_deref())));
    }
    if !super::mfa_enrolled(&state, &viewer).await? {
        return Ok(see_other("/ui/account?enrol=required"));
    }
    let me = Me::of(&state, &viewer);
    Ok(render("mfa.html", context! { me, title => "Verify it is you", next => safe_next(q.next.as_deref()) }))
}

/// The step-up form.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    /// A code of the authenticator, or a recovery code.
    pub code: String,
    /// Where to go afterwards.
    #[serde(default)]
    pub next: String,
}

/// `POST /ui/mfa`.
pub async fn mfa_step_up(State(state): State<AppState>, UiForm { viewer, form }: UiForm<CodeForm>) -> UiResult {
    let code = form.code.trim();
    let body = if code.len() > 8 {
        api::MfaStepUp { code: None, recovery_code: Some(code.to_owned()) }
    } else {
        api::MfaStepUp { code: Some(code.to_owned()), recovery_code: None }
    };
    let next = safe_next(Some(&form.next));
    match session_routes::step_up(State(state.clone()), viewer.caller.clone(), ApiJson(body)).await {
        Ok(resp) => {
            // The API's answer carries the new session cookie: pass it on with the redirect.
            let mut out = see_other(&next);
            if let Some(c) = resp.headers().get(header::SET_COOKIE) {
                out.headers_mut().insert(header::SET_COOKIE, c.clone());
            }
            Ok(out)
        }
        Err(e) => {
            let (status, error) = auth_failure(e);
            let me = Me::of(&state, &viewer);
            Ok(render_status(status, "mfa.html", context! { me, title => "Verify it is you", next, error }))
        }
    }
}

/// `POST /ui/logout`.
pub async fn logout(State(state): State<AppState>, UiForm { viewer, .. }: UiForm<NoFields>) -> UiResult {
    session_routes::logout(State(state), viewer.caller).await?;
    let mut resp = see_other("/ui/login?reason=logged_out");
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&session::clear_cookie()).expect("ascii"));
    Ok(resp)
}

/// Query of the account page.
#[derive(Debug, Default, Deserialize)]
pub struct AccountQuery {
    /// `required` when a role requires MFA and none is enrolled.
    pub enrol: Option<String>,
    /// A message from the last form.
    pub notice: Option<String>,
}

async fn account_context(state: &AppState, viewer: &Viewer) -> UiResult<minijinja::Value> {
    let me = Me::of(state, viewer);
    let axum::Json(who) = account::whoami(State(state.clone()), viewer.caller.clone()).await?;
    let keys = if viewer.caller.principal.mfa_satisfied {
        let q = account::KeysQuery { username: None, all: None };
        let axum::Json(list) = account::list_keys(State(state.clone()), viewer.caller.clone(), ApiQuery(q)).await?;
        list.keys
    } else {
        Vec::new()
    };
    Ok(context! { me, who, keys, nav => "account", title => "Your account" })
}

/// `GET /ui/account`: identity, roles, MFA and API keys.
pub async fn account_page(State(state): State<AppState>, viewer: Viewer, Query(q): Query<AccountQuery>) -> UiResult {
    let ctx = account_context(&state, &viewer).await?;
    let required = q.enrol.as_deref() == Some("required");
    Ok(render("account.html", context! { required, notice => q.notice, ..ctx }))
}

/// `POST /ui/account/mfa`: start enrolling an authenticator; shows the QR code.
pub async fn mfa_begin(State(state): State<AppState>, UiForm { viewer, .. }: UiForm<NoFields>) -> UiResult {
    let axum::Json(enrolment) = session_routes::begin_totp(State(state.clone()), viewer.caller.clone()).await?;
    let qr = svg::qr_code(&enrolment.otpauth_uri);
    let ctx = account_context(&state, &viewer).await?;
    Ok(render("account.html", context! { enrolment, qr, ..ctx }))
}

/// `POST /ui/account/mfa/confirm`: confirm with a code; shows the recovery codes once.
pub async fn mfa_confirm(State(state): State<AppState>, UiForm { viewer, form }: UiForm<CodeForm>) -> UiResult {
    let body = api::MfaCode { code: form.code.trim().to_owned() };
    match session_routes::confirm_totp(State(state.clone()), viewer.caller.clone(), ApiJson(body)).await {
        Ok(axum::Json(codes)) => {
            // The confirming session is verified now: read the account again.
            let mut viewer = viewer;
            viewer.caller.principal.mfa_satisfied = true;
            let ctx = account_context(&state, &viewer).await?;
            Ok(render("account.html", context! { recovery_codes => codes.recovery_codes, ..ctx }))
        }
        Err(e) => {
            let (status, error) = auth_failure(e);
            let ctx = account_context(&state, &viewer).await?;
            Ok(render_status(status, "account.html", context! { error, ..ctx }))
        }
    }
}

/// The new-key form.
#[derive(Debug, Deserialize)]
pub struct KeyForm {
    /// The key's name.
    pub name: String,
    /// `read`, `write` or `admin` (the widest scope; narrower ones are included).
    pub scope: String,
    /// Days until it expires.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// `POST /ui/account/keys`: creates a key and shows it this once.
pub async fn create_key(State(state): State<AppState>, UiForm { viewer, form }: UiForm<KeyForm>) -> UiResult {
    let scopes: Vec<String> = match form.scope.as_str() {
        "read" => vec!["read".into()],
        "write" => vec!["read".into(), "write".into()],
        "admin" => vec!["read".into(), "write".into(), "admin".into()],
        other => return Err(ApiError::invalid(format!("scope must be read, write or admin, not {other:?}")).into()),
    };
    let body = api::CreateApiKey {
        name: form.name,
        scopes,
        expires_in_days: form.expires_in_days,
        username: None,
        namespaces: None,
    };
    let (_, axum::Json(created)) =
        account::create_key(State(state.clone()), viewer.caller.clone(), ApiJson(body)).await?;
    let ctx = account_context(&state, &viewer).await?;
    Ok(render("account.html", context! { created, ..ctx }))
}

/// `POST /ui/account/keys/{key_id}/revoke`.
pub async fn revoke_key(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    UiForm { viewer, .. }: UiForm<NoFields>,
) -> UiResult {
    account::revoke_key(State(state), viewer.caller, Path(key_id)).await?;
    Ok(see_other("/ui/account?notice=The+key+is+revoked."))
}

impl From<AuthError> for UiRejection {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Api(e) => Self::Error(e),
            locked @ AuthError::Locked { .. } => {
                let (status, message) = auth_failure(locked);
                Self::Error(ApiError::new(status, "locked", message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_never_leaves_the_ui() {
        assert_eq!(safe_next(Some("/ui/models/a/b")), "/ui/models/a/b");
        for bad in ["https://evil.example/", "//evil.example/ui/", "/ui//evil.example", "/api/v1/keys", "/ui\\x", ""] {
            assert_eq!(safe_next(Some(bad)), "/ui/models", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/models");
    }
}
