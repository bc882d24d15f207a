//! Login sessions: cookie authentication (`cairn_session`), CSRF tokens, idle and absolute
//! expiry, and the brute-force protection of logins and MFA codes. [`authenticate_cookie`]
//! is asked by [`crate::auth`] when a request carries no `Authorization` header.
//!
//! - A session id is 256 random bits, sent only in an `HttpOnly; Secure; SameSite=Strict`
//!   cookie; the database keeps its SHA-256. Every login and every MFA step-up issues a new
//!   id (an id the client brought is never kept: no session fixation).
//! - Every cookie-authenticated request that may change state (any method but GET, HEAD,
//!   OPTIONS) must carry `X-CSRF-Token`: hex(HMAC-SHA256(server key, session id)), compared
//!   in constant time. The key is a server secret shared by all replicas through the database.
//! - Failed logins and codes count against `user:<name>` (whether or not the account exists)
//!   and `ip:<address>`; see [`AuthError::Locked`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::LazyLock;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_api_types as api;
use cairn_core::Scope;
use cairn_store::lockout::{FailurePolicy, FailureSubject, ip_subject, user_subject};
use cairn_store::session::{NewSession, SessionRecord};
use cairn_store::user::AccountAuth;
use cairn_store::{AuditContext, StoreError};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::auth::{self, Caller, Credential};
use crate::convert::rfc3339;
use crate::error::ApiError;
use crate::mfa::{self, Factor};

/// The name of the session cookie.
pub const COOKIE_NAME: &str = "cairn_session";

/// The header that carries the CSRF token of a cookie session.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How stale `last_seen_at` may get before a request refreshes it (ms); shorter when the
/// idle timeout is short.
const TOUCH_INTERVAL_MS: i64 = 30_000;

/// An address is locked after this many times `auth_max_attempts` failures (across every
/// name tried from it): many people may share one address (an office, a VPN).
pub const ADDRESS_ATTEMPTS_FACTOR: u32 = 4;

/// Failures are counted within this window (or the lockout time, if longer); older ones are
/// forgotten.
const FAILURE_WINDOW_MS: i64 = 15 * 60_000;

/// The one answer to a wrong name, a wrong password, a disabled account and an account
/// without a password, so that none can be told from another.
pub const BAD_CREDENTIALS: &str = "invalid username or password";

/// Unknown accounts are checked against this hash, so they cost one argon2 verification
/// like a known account with a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    auth::hash_password(&mfa::random_token()).expect("argon2id hashing with default parameters cannot fail")
});

/// An authentication failure: a JSON error, or a lockout (`429` with `Retry-After`).
#[derive(Debug)]
pub enum AuthError {
    /// Any other error.
    Api(ApiError),
    /// Too many failures: the name or the address is locked for this many more seconds.
    Locked {
        /// Seconds until the lockout ends (rounded up).
        retry_after_secs: u64,
    },
}

impl From<ApiError> for AuthError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Locked { retry_after_secs } => {
                let mut resp = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "locked",
                    format!(
                        "too many failed attempts: logins are refused for {retry_after_secs} more second(s); try again later or ask an administrator"
                    ),
                )
                .into_response();
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                resp
            }
        }
    }
}

/// The `Set-Cookie` value that hands a session to the browser.
pub fn session_cookie(token: &str, max_age_secs: u64) -> String {
    format!("{COOKIE_NAME}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age_secs}")
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session cookie's value, if the request has one.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim().trim_matches('"'))
}

fn client_address(parts: &Parts) -> Option<String> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())
}

/// The CSRF token of the session whose secret id is `token`.
pub fn csrf_token(state: &AppState, token: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(state.csrf_key.bytes()).expect("HMAC accepts keys of any length");
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn session_expired(message: &str) -> ApiError {
    ApiError::unauthenticated(format!("{message}; log in again"))
}

/// Authenticates a request by its session cookie: `Ok(None)` when it has none. A request
/// that may change state must carry the session's CSRF token in `X-CSRF-Token`.
pub async fn authenticate_cookie(state: &AppState, parts: &Parts) -> Result<Option<Caller>, ApiError> {
    let csrf = if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        CsrfCheck::SafeMethod
    } else {
        CsrfCheck::Given(parts.headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default())
    };
    authenticate_session(state, parts, csrf).await.map(|found| found.map(|(caller, _)| caller))
}

/// What [`authenticate_session`] checks of the CSRF token.
#[derive(Debug, Clone, Copy)]
pub enum CsrfCheck<'a> {
    /// A request that changes nothing (`GET`, `HEAD`, `OPTIONS`): no token needed.
    SafeMethod,
    /// The token the request carried (a header, or a form field of the web UI).
    Given(&'a [u8]),
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "this request needs the session's CSRF token in the X-CSRF-Token header (from the login response)",
    )
}

/// Authenticates a request by its session cookie, checking `csrf`: the caller and the
/// session's secret id, or `Ok(None)` when the request has no session cookie.
pub async fn authenticate_session(
    state: &AppState,
    parts: &Parts,
    csrf: CsrfCheck<'_>,
) -> Result<Option<(Caller, String)>, ApiError> {
    let Some(token) = cookie_token(&parts.headers) else {
        return Ok(None);
    };
    if token.is_empty() || token.len() > 128 {
        return Err(session_expired("invalid session"));
    }
    let hash = auth::hash_token(token);
    let Some(session) = state.store.find_session(&hash).await? else {
        return Err(session_expired("invalid session"));
    };
    // The lookup matched on the hash; compare again without timing differences.
    if !bool::from(session.token_hash.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(session_expired("invalid session"));
    }
    if session.revoked_at.is_some() {
        return Err(session_expired("this session has ended"));
    }
    let now = state.now_ms();
    if now >= session.expires_at {
        return Err(session_expired(
            "this session has expired (sessions last at most CAIRN_AUTH_TOKEN_EXPIRY seconds)",
        ));
    }
    let idle_ms = i64::try_from(state.settings.session_idle_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    if now - session.last_seen_at > idle_ms {
        return Err(session_expired(&format!(
            "this session has expired after {} second(s) without activity",
            state.settings.session_idle_secs
        )));
    }
    let Some(account) = state.store.account_auth(&session.user_id).await? else {
        return Err(session_expired("invalid session"));
    };
    if account.disabled {
        return Err(ApiError::unauthenticated("this account is disabled"));
    }
    if let CsrfCheck::Given(given) = csrf {
        let expected = csrf_token(state, token);
        if !bool::from(given.ct_eq(expected.as_bytes())) {
            return Err(csrf_refused());
        }
    }
    if now - session.last_seen_at > TOUCH_INTERVAL_MS.min(idle_ms / 4) {
        state.store.touch_session(&session.id).await?;
    }
    let mfa_satisfied = session.mfa_verified || (!account.mfa_enabled && !auth::requires_mfa(state, &account));
    let credential = Credential {
        scopes: Scope::ALL.into_iter().collect::<BTreeSet<_>>(),
        key_namespaces: None,
        key_id: None,
        session_id: Some(session.id),
        mfa_satisfied,
    };
    Ok(Some((auth::caller_for(parts, &account, credential), token.to_owned())))
}

fn failure_policy(state: &AppState) -> FailurePolicy {
    let lock_ms = i64::try_from(state.settings.auth_lockout_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    FailurePolicy { window_ms: FAILURE_WINDOW_MS.max(lock_ms), lock_ms }
}

fn failure_subjects(state: &AppState, username: &str, address: Option<&str>) -> Vec<FailureSubject> {
    let max = state.settings.auth_max_attempts.max(1);
    let mut subjects = vec![FailureSubject { subject: user_subject(username), max_failures: max }];
    if let Some(ip) = address {
        subjects.push(FailureSubject {
            subject: ip_subject(ip),
            max_failures: max.saturating_mul(ADDRESS_ATTEMPTS_FACTOR),
        });
    }
    subjects
}

/// Refuses with [`AuthError::Locked`] while the name or the address is locked out.
pub async fn ensure_not_locked(state: &AppState, username: &str, address: Option<&str>) -> Result<(), AuthError> {
    let subjects: Vec<String> = failure_subjects(state, username, address).into_iter().map(|s| s.subject).collect();
    match state.store.locked_until(&subjects).await? {
        Some(until) => {
            let left_ms = (until - state.now_ms()).max(1);
            Err(AuthError::Locked { retry_after_secs: u64::try_from(left_ms).unwrap_or(1).div_ceil(1000) })
        }
        None => Ok(()),
    }
}

/// Counts a failed login or MFA code against the name and the address, recording `action`
/// (outcome `failure`) on `target`, and a lockout when one starts.
pub async fn count_failure(
    state: &AppState,
    ctx: &AuditContext,
    action: &str,
    target: &str,
    username: &str,
    address: Option<&str>,
) -> Result<(), ApiError> {
    let subjects = failure_subjects(state, username, address);
    let policy = failure_policy(state);
    let locked = state.store.record_auth_failure(ctx, action, target, &subjects, policy).await?;
    state.metrics.login_failure();
    state.metrics.lockouts_started(locked.len());
    for l in &locked {
        tracing::warn!(subject = %l.subject, failures = l.failures, "locked out after failed attempts");
    }
    // Now and then, forget counters nobody has touched for a whole window.
    if rand::random::<u8>() < 4 {
        let before = state.now_ms() - policy.window_ms;
        if let Err(e) = state.store.sweep_auth_failures(before).await {
            tracing::warn!(error = %e, "could not sweep old failure counters");
        }
    }
    Ok(())
}

/// A newly opened session: the secret id for the cookie, and the login response.
#[derive(Clone)]
pub struct Opened {
    /// The session's secret id (for the cookie only).
    pub token: String,
    /// The body of the answer.
    pub response: api::LoginResponse,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("response", &self.response).finish_non_exhaustive()
    }
}

async fn opened(
    state: &AppState,
    token: String,
    session: &SessionRecord,
    account: &AccountAuth,
) -> Result<Opened, ApiError> {
    let response = api::LoginResponse {
        username: account.username.clone(),
        csrf_token: csrf_token(state, &token),
        mfa_enrolled: account.mfa_enabled,
        mfa_verified: session.mfa_verified,
        mfa_required: auth::requires_mfa(state, account),
        expires_at: rfc3339(session.expires_at),
        idle_timeout_secs: state.settings.session_idle_secs,
    };
    Ok(Opened { token, response })
}

fn new_session(state: &AppState, ctx: &AuditContext, user_id: &str, mfa_verified: bool, token: &str) -> NewSession {
    let lifetime_ms = i64::try_from(state.settings.auth_token_expiry.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    NewSession {
        token_hash: auth::hash_token(token),
        user_id: user_id.to_owned(),
        mfa_verified,
        expires_at: state.now_ms().saturating_add(lifetime_ms),
        source_ip: ctx.source_ip.clone(),
        user_agent: ctx.user_agent.clone(),
    }
}

/// Logs in with a password (and optionally a second factor): opens a session.
pub async fn login(state: &AppState, parts: &Parts, body: &api::LoginRequest) -> Result<Opened, AuthError> {
    let address = client_address(parts);
    let username = body.username.trim();
    let mut ctx = auth::request_context(parts);
    ctx.actor = "anonymous".into();
    let target = format!("user:{}", username.chars().take(128).collect::<String>());
    ensure_not_locked(state, username, address.as_deref()).await?;
    let factor = Factor::from_fields(body.totp_code.as_deref(), body.recovery_code.as_deref())?;

    // The same work whether or not the account exists: one lookup, one argon2 verification.
    let found =
        if username.is_empty() || username.len() > 128 { None } else { state.store.find_login(username).await? };
    let phc = found.as_ref().and_then(|a| a.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.clone());
    let password = body.password.clone();
    let password_ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc))
        .await
        .map_err(|_| ApiError::unauthenticated(BAD_CREDENTIALS))?;
    let account = match found {
        Some(a) if password_ok && a.password_hash.is_some() && !a.disabled && a.kind == "user" => a,
        _ => {
            count_failure(state, &ctx, "auth.login", &target, username, address.as_deref()).await?;
            return Err(ApiError::unauthenticated(BAD_CREDENTIALS).into());
        }
    };
    let auth_account =
        state.store.account_auth(&account.user_id).await?.ok_or_else(|| ApiError::unauthenticated(BAD_CREDENTIALS))?;

    let mfa_verified = match factor {
        None => false,
        Some(_) if !account.mfa_enabled => {
            return Err(ApiError::invalid(
                "this account has no authenticator enrolled: log in without a code, then enrol at /api/v1/me/mfa/totp",
            )
            .into());
        }
        Some(f) => {
            if !mfa::verify_factor(state, &account.user_id, f).await? {
                count_failure(state, &ctx, "auth.login", &target, username, address.as_deref()).await?;
                return Err(ApiError::unauthenticated("invalid or already used MFA code").into());
            }
            true
        }
    };
    ctx.actor = format!("user:{}", account.username);
    let token = mfa::random_token();
    let new = new_session(state, &ctx, &account.user_id, mfa_verified, &token);
    let presented = cookie_token(&parts.headers).map(auth::hash_token);
    let session = state
        .store
        .open_session(&ctx, &account.username, &new, presented.as_deref(), factor.map(|f| f.method()))
        .await?;
    Ok(opened(state, token, &session, &auth_account).await?)
}

/// Authenticates one request by username and password (HTTP Basic on the MLflow-compatible
/// API, for clients that send `MLFLOW_TRACKING_USERNAME`/`PASSWORD`): the same argon2 check,
/// failure counting and lockouts as a login, but no session. People with an authenticator
/// enrolled must use an API key as the password instead: a password alone is one factor.
pub async fn authenticate_password(
    state: &AppState,
    parts: &Parts,
    username: &str,
    password: &str,
) -> Result<Caller, AuthError> {
    let address = client_address(parts);
    let username = username.trim();
    let mut ctx = auth::request_context(parts);
    ctx.actor = "anonymous".into();
    let target = format!("user:{}", username.chars().take(128).collect::<String>());
    ensure_not_locked(state, username, address.as_deref()).await?;
    let found =
        if username.is_empty() || username.len() > 128 { None } else { state.store.find_login(username).await? };
    let phc = found.as_ref().and_then(|a| a.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.clone());
    let password = password.to_owned();
    let password_ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc))
        .await
        .map_err(|_| ApiError::unauthenticated(BAD_CREDENTIALS))?;
    let account = match found {
        Some(a) if password_ok && a.password_hash.is_some() && !a.disabled && a.kind == "user" => a,
        _ => {
            count_failure(state, &ctx, "auth.login", &target, username, address.as_deref()).await?;
            return Err(ApiError::unauthenticated(BAD_CREDENTIALS).into());
        }
    };
    if account.mfa_enabled {
        return Err(ApiError::unauthenticated(
            "this account uses multi-factor authentication: use an API key as the password (or as MLFLOW_TRACKING_TOKEN)",
        )
        .into());
    }
    let auth_account =
        state.store.account_auth(&account.user_id).await?.ok_or_else(|| ApiError::unauthenticated(BAD_CREDENTIALS))?;
    let credential = Credential {
        scopes: Scope::ALL.into_iter().collect::<BTreeSet<_>>(),
        key_namespaces: None,
        key_id: None,
        session_id: None,
        mfa_satisfied: !auth::requires_mfa(state, &auth_account),
    };
    Ok(auth::caller_for(parts, &auth_account, credential))
}

/// MFA step-up of the caller's session: checks the code, then replaces the session by a
/// verified one with a new id (the old id stops working).
pub async fn step_up(state: &AppState, caller: &Caller, factor: Factor<'_>) -> Result<Opened, AuthError> {
    let p = &caller.principal;
    let Some(session_id) = p.session_id.as_deref() else {
        return Err(ApiError::invalid("step-up applies to login sessions; API keys need no second factor here").into());
    };
    let address = caller.audit.source_ip.clone();
    ensure_not_locked(state, &p.username, address.as_deref()).await?;
    let account = state
        .store
        .account_auth(&p.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("this account no longer exists"))?;
    if !account.mfa_enabled {
        return Err(ApiError::invalid("you have no authenticator enrolled: enrol at /api/v1/me/mfa/totp").into());
    }
    let target = format!("user:{}", p.username);
    if !mfa::verify_factor(state, &p.user_id, factor).await? {
        count_failure(state, &caller.audit, "auth.mfa", &target, &p.username, address.as_deref()).await?;
        return Err(invalid_code().into());
    }
    let token = mfa::random_token();
    let new = new_session(state, &caller.audit, &p.user_id, true, &token);
    let session = state.store.step_up_session(&caller.audit, &p.username, session_id, &new, factor.method()).await?;
    Ok(opened(state, token, &session, &account).await?)
}

/// The answer to a wrong or reused MFA code from an authenticated caller.
pub fn invalid_code() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "invalid_code", "invalid or already used code")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_carry_every_flag() {
        let c = session_cookie("abc", 3600);
        assert_eq!(c, "cairn_session=abc; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=3600");
        assert!(clear_cookie().ends_with("Max-Age=0"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; cairn_session=tok; b=2"));
        assert_eq!(cookie_token(&h), Some("tok"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("other=1"));
        h.append(header::COOKIE, HeaderValue::from_static("cairn_session=two"));
        assert_eq!(cookie_token(&h), Some("two"));
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }
}
