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
use cairn_core::{AccountKind, Principal, Scope};
use cairn_store::AuditContext;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

/// Prefix of every API key, so secret scanners can recognise leaked keys.
pub const KEY_PREFIX: &str = "cairn_";

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
    parts.extensions.insert(caller);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

async fn authenticate(state: &AppState, parts: &Parts) -> Result<Caller, ApiError> {
    let token = bearer(parts)?;
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
    if key.disabled {
        return Err(ApiError::unauthenticated("this account is disabled"));
    }
    if key.last_used_at.is_none_or(|t| now - t > TOUCH_INTERVAL_MS) {
        // Off the request path: a read must not wait for a write.
        state.keys.mark_used(&hash, now);
        let store = state.store.clone();
        let key_id = key.key_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&key_id).await {
                tracing::warn!(error = %e, "could not record API key use");
            }
        });
    }
    let scopes: BTreeSet<Scope> = key.scopes.split_whitespace().filter_map(Scope::parse).collect();
    let principal = Principal {
        user_id: key.user_id,
        username: key.username,
        kind: if key.kind == "service" { AccountKind::ServiceAccount } else { AccountKind::User },
        is_admin: key.is_admin,
        scopes,
        key_id: Some(key.key_id),
    };
    let mut audit = request_context(parts);
    audit.actor = principal.actor();
    audit.key_id = principal.key_id.clone();
    Ok(Caller { principal, audit })
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
