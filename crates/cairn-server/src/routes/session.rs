//! Login, logout, sessions, MFA enrolment and lockouts (`/api/v1/auth/…`, `/api/v1/me/mfa/…`,
//! `/api/v1/lockouts`).
//!
//! A browser logs in with `POST /api/v1/auth/login` and gets the `cairn_session` cookie and
//! a CSRF token to send as `X-CSRF-Token` with every change. A person who has enrolled an
//! authenticator, or whose role requires MFA, must give a code (at login or with
//! `POST /api/v1/auth/mfa`) before the session may do more than identify itself, manage
//! its MFA and log out.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_api_types as api;
use cairn_core::{AccountKind, Permission};
use cairn_store::lockout::AuthFailure;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::authorize;
use crate::app::AppState;
use crate::auth::{self, Caller};
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::mfa::{self, Factor};
use crate::session::{self, AuthError, Opened};

/// Routes that need no credential (logging in).
pub fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login))
}

/// Routes behind authentication.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(step_up))
        .routes(routes!(logout))
        .routes(routes!(logout_all))
        .routes(routes!(list_sessions))
        .routes(routes!(delete_session))
        .routes(routes!(begin_totp, disable_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(regenerate_recovery_codes))
        .routes(routes!(reset_user_mfa))
        .routes(routes!(list_lockouts))
        .routes(routes!(release_lockout))
}

fn with_cookie(opened: Opened, max_age_secs: u64) -> Response {
    let cookie = session::session_cookie(&opened.token, max_age_secs);
    ([(header::SET_COOKIE, cookie)], Json(opened.response)).into_response()
}

/// Log in with a password (and, for an account with an authenticator, optionally a code):
/// opens a session. The session id is only in the `cairn_session` cookie.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "account", request_body = api::LoginRequest,
    security(()),
    responses(
        (status = 200, body = api::LoginResponse,
            headers(("set-cookie" = String, description = "cairn_session=<id>; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=<CAIRN_AUTH_TOKEN_EXPIRY>"))),
        (status = 400, body = api::ErrorBody),
        (status = 401, description = "wrong name or password, or a wrong code", body = api::ErrorBody),
        (status = 429, description = "locked out after failed attempts (code `locked`, with Retry-After)", body = api::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    parts: Parts,
    ApiJson(body): ApiJson<api::LoginRequest>,
) -> Result<Response, AuthError> {
    let opened = session::login(&state, &parts, &body).await?;
    Ok(with_cookie(opened, state.settings.auth_token_expiry))
}

/// Give a second factor in the current session (step-up): the session becomes verified and
/// gets a new id (a new cookie and CSRF token; the old ones stop working).
#[utoipa::path(post, path = "/api/v1/auth/mfa", tag = "account", request_body = api::MfaStepUp,
    responses(
        (status = 200, body = api::LoginResponse, headers(("set-cookie" = String, description = "the new session cookie"))),
        (status = 400, body = api::ErrorBody),
        (status = 403, description = "a wrong or reused code (code `invalid_code`)", body = api::ErrorBody),
        (status = 429, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.mfa"))))]
pub async fn step_up(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::MfaStepUp>,
) -> Result<Response, AuthError> {
    let target = format!("user:{}", caller.principal.username);
    authorize(&state, &caller, Permission::MfaManage, None, "auth.mfa", &target).await?;
    let factor = Factor::from_fields(body.code.as_deref(), body.recovery_code.as_deref())?
        .ok_or_else(|| ApiError::invalid("give `code` (from your authenticator) or `recovery_code`"))?;
    let opened = session::step_up(&state, &caller, factor).await?;
    Ok(with_cookie(opened, state.settings.auth_token_expiry))
}

fn current_session(caller: &Caller) -> Result<&str, ApiError> {
    caller.principal.session_id.as_deref().ok_or_else(|| {
        ApiError::invalid("this request was made with an API key, not a login session; revoke keys instead")
    })
}

/// End the current session (its cookie is cleared).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "account",
    responses((status = 204, headers(("set-cookie" = String, description = "clears the session cookie"))),
        (status = 400, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    authorize(&state, &caller, Permission::SelfBasic, None, "auth.logout", "session").await?;
    let id = current_session(&caller)?;
    state.store.revoke_session(&caller.audit, &caller.principal.user_id, id, "auth.logout").await?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, session::clear_cookie())]).into_response())
}

/// End every session of the caller's account, on every device.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "account",
    responses((status = 200, body = api::RevokedSessions)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn logout_all(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let p = &caller.principal;
    authorize(&state, &caller, Permission::SelfBasic, None, "session.revoke", &format!("user:{}", p.username)).await?;
    let revoked = state.store.revoke_user_sessions(&caller.audit, &p.user_id, &p.username).await?;
    let body = Json(api::RevokedSessions { revoked });
    Ok(if p.session_id.is_some() {
        ([(header::SET_COOKIE, session::clear_cookie())], body).into_response()
    } else {
        body.into_response()
    })
}

/// The caller's open sessions.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "account",
    responses((status = 200, body = api::SessionList)),
    extensions(("x-cairn-permission" = json!("self.manage"))))]
pub async fn list_sessions(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::SessionList>> {
    authorize(&state, &caller, Permission::SelfManage, None, "session.list", "sessions").await?;
    let idle_ms = i64::try_from(state.settings.session_idle_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    let rows = state.store.list_sessions(&caller.principal.user_id, state.now_ms().saturating_sub(idle_ms)).await?;
    let current = caller.principal.session_id.as_deref();
    Ok(Json(api::SessionList {
        sessions: rows
            .into_iter()
            .map(|s| api::SessionInfo {
                current: current == Some(s.id.as_str()),
                id: s.id,
                created_at: rfc3339(s.created_at),
                last_seen_at: rfc3339(s.last_seen_at),
                expires_at: rfc3339(s.expires_at),
                source_ip: s.source_ip,
                user_agent: s.user_agent,
                mfa_verified: s.mfa_verified,
            })
            .collect(),
    }))
}

/// End one of the caller's sessions (e.g. on a lost laptop).
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{session_id}", tag = "account",
    params(("session_id" = String, Path, description = "the id from the session listing")),
    responses((status = 204), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.manage"))))]
pub async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    authorize(&state, &caller, Permission::SelfManage, None, "session.revoke", &format!("session:{id}")).await?;
    if id.len() > 64 {
        return Err(ApiError::not_found(format!("you have no open session \"{id}\"")));
    }
    state.store.revoke_session(&caller.audit, &caller.principal.user_id, &id, "session.revoke").await?;
    Ok(if caller.principal.session_id.as_deref() == Some(id.as_str()) {
        (StatusCode::NO_CONTENT, [(header::SET_COOKIE, session::clear_cookie())]).into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    })
}

/// Start enrolling an authenticator app (TOTP): returns a new secret to add to the app.
/// It takes effect once confirmed with a code.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp", tag = "account",
    responses((status = 200, body = api::TotpEnrolment), (status = 400, body = api::ErrorBody),
        (status = 409, description = "an authenticator is already enabled", body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.mfa"))))]
pub async fn begin_totp(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::TotpEnrolment>> {
    let p = &caller.principal;
    authorize(&state, &caller, Permission::MfaManage, None, "mfa.enroll", &format!("user:{}", p.username)).await?;
    if p.kind == AccountKind::ServiceAccount {
        return Err(ApiError::invalid("service accounts use API keys and have no second factor"));
    }
    let secret = mfa::new_secret();
    let otpauth_uri = mfa::otpauth_uri(&secret, &p.username)?;
    state.store.begin_totp_enrolment(&caller.audit, &p.user_id, &p.username, &secret).await?;
    Ok(Json(api::TotpEnrolment { secret, otpauth_uri }))
}

/// Confirm the enrolment with a current code of the app: TOTP is on, and the answer holds
/// ten recovery codes, shown this once. The confirming session counts as verified.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp/confirm", tag = "account", request_body = api::MfaCode,
    responses((status = 200, body = api::RecoveryCodes),
        (status = 403, description = "a wrong code (code `invalid_code`)", body = api::ErrorBody),
        (status = 409, description = "no enrolment in progress", body = api::ErrorBody),
        (status = 429, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.mfa"))))]
pub async fn confirm_totp(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::MfaCode>,
) -> Result<Json<api::RecoveryCodes>, AuthError> {
    let p = &caller.principal;
    let target = format!("user:{}", p.username);
    authorize(&state, &caller, Permission::MfaManage, None, "mfa.enable", &target).await?;
    let address = caller.audit.source_ip.as_deref();
    session::ensure_not_locked(&state, &p.username, address).await?;
    let mfa_state = state.store.mfa_state(&p.user_id).await?;
    let Some(pending) = mfa_state.totp_pending_secret.filter(|_| mfa_state.totp_enabled_at.is_none()) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "no enrolment is in progress: start one with POST /api/v1/me/mfa/totp",
        )
        .into());
    };
    let Some(step) = mfa::matching_step(&pending, &body.code, mfa::unix_secs(&state))? else {
        session::count_failure(&state, &caller.audit, "mfa.enable", &target, &p.username, address).await?;
        return Err(session::invalid_code().into());
    };
    let (codes, hashes) = mfa::new_recovery_codes();
    state
        .store
        .enable_totp(&caller.audit, &p.user_id, &p.username, &pending, step, &hashes, p.session_id.as_deref())
        .await?;
    state.keys.clear();
    Ok(Json(api::RecoveryCodes { recovery_codes: codes }))
}

/// Turn the authenticator off (with a current code or a recovery code). Refused while the
/// account's roles or the server require MFA.
#[utoipa::path(delete, path = "/api/v1/me/mfa/totp", tag = "account", request_body = api::MfaCode,
    responses((status = 204), (status = 403, body = api::ErrorBody), (status = 409, body = api::ErrorBody),
        (status = 429, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.mfa"))))]
pub async fn disable_totp(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::MfaCode>,
) -> Result<StatusCode, AuthError> {
    let p = &caller.principal;
    let target = format!("user:{}", p.username);
    authorize(&state, &caller, Permission::MfaManage, None, "mfa.disable", &target).await?;
    let account = state
        .store
        .account_auth(&p.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthenticated("this account no longer exists"))?;
    if !account.mfa_enabled {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "no authenticator is enabled").into());
    }
    if auth::requires_mfa(&state, &account) {
        super::record_denied(&state, &caller, "mfa.disable", &target).await;
        return Err(ApiError::forbidden(
            "your roles (or the server) require MFA, so it cannot be turned off; an administrator can reset it if the device is lost",
        )
        .into());
    }
    verify_or_count(&state, &caller, "mfa.disable", Factor::from_code(&body.code)).await?;
    state.store.disable_totp(&caller.audit, &p.user_id, &p.username).await?;
    state.keys.clear();
    Ok(StatusCode::NO_CONTENT)
}

async fn verify_or_count(state: &AppState, caller: &Caller, action: &str, factor: Factor<'_>) -> Result<(), AuthError> {
    let p = &caller.principal;
    let address = caller.audit.source_ip.as_deref();
    session::ensure_not_locked(state, &p.username, address).await?;
    if mfa::verify_factor(state, &p.user_id, factor).await? {
        return Ok(());
    }
    session::count_failure(state, &caller.audit, action, &format!("user:{}", p.username), &p.username, address).await?;
    Err(session::invalid_code().into())
}

/// Issue ten new recovery codes (with a current code or a recovery code); the old ones stop
/// working. The codes are in the answer and nowhere else.
#[utoipa::path(post, path = "/api/v1/me/mfa/recovery-codes", tag = "account", request_body = api::MfaCode,
    responses((status = 200, body = api::RecoveryCodes), (status = 403, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody), (status = 429, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.mfa"))))]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::MfaCode>,
) -> Result<Json<api::RecoveryCodes>, AuthError> {
    let p = &caller.principal;
    let target = format!("user:{}", p.username);
    authorize(&state, &caller, Permission::MfaManage, None, "mfa.recovery_codes", &target).await?;
    let mfa_state = state.store.mfa_state(&p.user_id).await?;
    if mfa_state.totp_enabled_at.is_none() {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "no authenticator is enabled").into());
    }
    verify_or_count(&state, &caller, "mfa.recovery_codes", Factor::from_code(&body.code)).await?;
    let (codes, hashes) = mfa::new_recovery_codes();
    state.store.replace_recovery_codes(&caller.audit, &p.user_id, &p.username, &hashes).await?;
    Ok(Json(api::RecoveryCodes { recovery_codes: codes }))
}

/// Reset a person's MFA (a lost device): the authenticator and recovery codes are removed
/// and every session of the account ends. They enrol again at their next login.
#[utoipa::path(delete, path = "/api/v1/users/{username}/mfa", tag = "account",
    params(("username" = String, Path)),
    responses((status = 204), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn reset_user_mfa(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<StatusCode> {
    authorize(&state, &caller, Permission::UserManage, None, "mfa.reset", &format!("user:{username}")).await?;
    if username.len() > 128 {
        return Err(ApiError::not_found(format!("user \"{username}\" does not exist")));
    }
    state.store.reset_mfa(&caller.audit, &username).await?;
    state.keys.clear();
    Ok(StatusCode::NO_CONTENT)
}

fn lockout(l: AuthFailure) -> api::Lockout {
    api::Lockout {
        subject: l.subject,
        failures: l.failures,
        last_failure_at: rfc3339(l.last_at),
        locked_until: l.locked_until.map(rfc3339).unwrap_or_default(),
    }
}

/// Lockouts in force (names and addresses refused after failed attempts).
#[utoipa::path(get, path = "/api/v1/lockouts", tag = "account",
    responses((status = 200, body = api::LockoutList), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn list_lockouts(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::LockoutList>> {
    authorize(&state, &caller, Permission::UserManage, None, "auth.lockout.list", "lockouts").await?;
    let rows = state.store.list_lockouts().await?;
    Ok(Json(api::LockoutList { lockouts: rows.into_iter().map(lockout).collect() }))
}

/// Release a lockout now (and forget the subject's failed attempts).
#[utoipa::path(delete, path = "/api/v1/lockouts/{subject}", tag = "account",
    params(("subject" = String, Path, description = "`user:<name>` or `ip:<address>`")),
    responses((status = 204), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn release_lockout(
    State(state): State<AppState>,
    caller: Caller,
    Path(subject): Path<String>,
) -> ApiResult<StatusCode> {
    authorize(&state, &caller, Permission::UserManage, None, "auth.unlock", &subject).await?;
    state.store.release_lockout(&caller.audit, &subject).await?;
    Ok(StatusCode::NO_CONTENT)
}
