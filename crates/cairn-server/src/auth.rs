//! Authentication: every `/api` request passes [`require_auth`] before any handler runs.
//!
//! API keys are opaque random tokens (`cairn_` + 43 base64url characters, 256 bits). The
//! database keeps only their SHA-256; the lookup is by hash and the stored hash is compared
//! again in constant time. A request without a valid key never reaches a handler: deny by
//! default, and handlers that forget to ask still cannot run anonymously because
//! [`Caller`] refuses to extract without a verified principal.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use cairn_core::{AccountKind, Grant, Principal, Role, Scope};
use cairn_store::AuditContext;
use cairn_store::user::AccountAuth;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

/// Prefix of every API key, so secret scanners can recognise leaked keys.
pub const KEY_PREFIX: &str = "cairn_";

/// Responses to a request made with a key that expires within this many days carry a
/// `Warning` header.
pub const KEY_WARNING_DAYS: i64 = 14;

/// The header that tells a client when its API key expires (RFC 3339).
pub const KEY_EXPIRES_HEADER: &str = "cairn-key-expires";

/// How stale `last_used_at` may get before a request refreshes it (ms).
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// A new random API key.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a token: lower-case hex SHA-256.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Hashes a password with argon2id (slow on purpose: call from a blocking thread).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

/// Checks a password against an argon2id PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A random password for the bootstrap admin (24 base64url characters, 144 bits).
pub fn generate_password() -> String {
    let mut bytes = [0u8; 18];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The verified caller of a request and the context its changes are audited with.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// Audit context (actor, key, request id, address, user agent).
    pub audit: AuditContext,
    /// When the API key used expires (ms), if it does.
    pub key_expires_at: Option<i64>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::unauthenticated("authentication required"))
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthenticated("missing API key: send it as 'Authorization: Bearer <key>'"));
    };
    let value = value.to_str().map_err(|_| ApiError::unauthenticated("the Authorization header is not valid text"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthenticated("the Authorization header must be 'Bearer <key>'"));
    }
    let token = token.trim();
    if token.len() > 256 {
        return Err(ApiError::unauthenticated("invalid API key"));
    }
    Ok(token)
}

/// Builds the audit context of a request (without the actor).
pub fn request_context(parts: &Parts) -> AuditContext {
    let header = |name: &str| {
        parts.headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(256).collect::<String>())
    };
    AuditContext {
        actor: String::new(),
        key_id: None,
        request_id: header("x-request-id"),
        source_ip: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()),
        user_agent: header("user-agent"),
    }
}

/// Middleware: authenticates the request or answers `401`.
pub async fn require_auth(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let caller = authenticate(&state, &parts).await?;
    let expires_at = caller.key_expires_at;
    parts.extensions.insert(caller);
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if let Some(at) = expires_at {
        let left_ms = at - state.now_ms();
        if left_ms < KEY_WARNING_DAYS * 86_400_000 {
            let days = left_ms.max(0) / 86_400_000;
            let warning =
                format!("299 cairn \"this API key expires in {days} day(s); rotate it with 'cairn keys rotate'\"");
            if let Ok(v) = header::HeaderValue::from_str(&warning) {
                resp.headers_mut().insert(header::WARNING, v);
            }
        }
        if let Ok(v) = header::HeaderValue::from_str(&crate::convert::rfc3339(at)) {
            resp.headers_mut().insert(KEY_EXPIRES_HEADER, v);
        }
    }
    Ok(resp)
}

async fn authenticate(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    if !parts.headers.contains_key(header::AUTHORIZATION)
        && let Some(caller) = crate::session::authenticate_cookie(state, parts).await?
    {
        return Ok(caller);
    }
    let token = bearer(parts)?;
    authenticate_key(state, parts, token).await
}

/// Authenticates a request by an API key it presented (as a bearer token, or as the
/// password of HTTP Basic on the MLflow-compatible API).
pub async fn authenticate_key(state: &AppState, parts: &Parts, token: &str) -> Result<Caller, ApiError> {
    if token.len() > 256 {
        return Err(ApiError::unauthenticated("invalid API key"));
    }
    let hash = hash_token(token);
    let found = match state.keys.get(&hash) {
        Some(cached) => cached,
        None => {
            let found = state.store.find_api_key(&hash).await?;
            state.keys.put(hash.clone(), found.clone());
            found
        }
    };
    let Some(key) = found else {
        return Err(ApiError::unauthenticated("invalid API key"));
    };
    // The lookup matched on the hash; compare again without timing differences.
    if !bool::from(key.token_hash.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(ApiError::unauthenticated("invalid API key"));
    }
    let now = state.now_ms();
    if key.revoked_at.is_some() {
        return Err(ApiError::unauthenticated("this API key has been revoked"));
    }
    if key.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::unauthenticated("this API key has expired; create a new one"));
    }
    if key.account.disabled {
        return Err(ApiError::unauthenticated("this account is disabled"));
    }
    if key.last_used_at.is_none_or(|t| now - t > TOUCH_INTERVAL_MS) {
        // Off the request path: a read must not wait for a write.
        state.keys.mark_used(&hash, now);
        let store = state.store.clone();
        let key_id = key.key_id.clone();
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&key_id, ip.as_deref()).await {
                tracing::warn!(error = %e, "could not record API key use");
            }
        });
    }
    let scopes: BTreeSet<Scope> = key.scopes.split_whitespace().filter_map(Scope::parse).collect();
    let key_namespaces = (!key.namespaces.trim().is_empty())
        .then(|| key.namespaces.split_whitespace().map(str::to_owned).collect::<BTreeSet<_>>());
    // A key's owner has given a second factor whenever they enrolled; the bootstrap key is the
    // operator's break-glass credential and is exempt (docs/SECURITY.md).
    let mfa_satisfied = key.bootstrap || key.account.mfa_enabled || !requires_mfa(state, &key.account);
    let credential = Credential { scopes, key_namespaces, key_id: Some(key.key_id), session_id: None, mfa_satisfied };
    let mut caller = caller_for(parts, &key.account, credential);
    caller.key_expires_at = key.expires_at;
    Ok(caller)
}

/// What the credential of a request contributes to its principal.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Scopes (a session has all three).
    pub scopes: BTreeSet<Scope>,
    /// The namespaces an API key is restricted to.
    pub key_namespaces: Option<BTreeSet<String>>,
    /// The API key used.
    pub key_id: Option<String>,
    /// The session used.
    pub session_id: Option<String>,
    /// Whether the second-factor requirement is met for this credential.
    pub mfa_satisfied: bool,
}

/// Whether this account must use MFA: people only, when MFA is required for everyone or the
/// account holds one of `auth_mfa_roles` (globally or in any namespace).
pub fn requires_mfa(state: &AppState, account: &AccountAuth) -> bool {
    if account.kind == "service" {
        return false;
    }
    state.settings.auth_require_mfa
        || account.grants.iter().any(|(role, _)| state.settings.mfa_roles().any(|r| r == role))
}

/// Builds the caller of a request from a verified account and credential.
pub fn caller_for(parts: &Parts, account: &AccountAuth, credential: Credential) -> Caller {
    let grants = account
        .grants
        .iter()
        .filter_map(|(role, ns)| Some(Grant { role: Role::parse(role)?, namespace: ns.clone() }))
        .collect();
    let principal = Principal {
        user_id: account.user_id.clone(),
        username: account.username.clone(),
        kind: if account.kind == "service" { AccountKind::ServiceAccount } else { AccountKind::User },
        grants,
        scopes: credential.scopes,
        key_namespaces: credential.key_namespaces,
        key_id: credential.key_id,
        session_id: credential.session_id,
        mfa_satisfied: credential.mfa_satisfied,
    };
    let mut audit = request_context(parts);
    audit.actor = principal.actor();
    audit.key_id = principal.key_id.clone();
    Caller { principal, audit, key_expires_at: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn passwords_round_trip() {
        let h = hash_password("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery staple", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
