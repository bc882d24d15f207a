//! The caller (`/api/v1/me`, `/api/v1/me/password`) and API keys (`/api/v1/keys`): create,
//! list, revoke, rotate.
//!
//! People create their own keys (after logging in); administrators create keys only for
//! service accounts. A key is shown once and stored as its SHA-256; it never carries more
//! scopes or namespaces than the credential that made it. Every change drops the cache of
//! verified keys, so a revoked key fails on the very next request.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::{Namespace, Permission, Scope};
use cairn_store::user::{ApiKey, NewApiKey};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::authorize;
use crate::app::AppState;
use crate::auth::{self, Caller};
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

/// The caller and key routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(change_password))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(rotate_key))
}

/// Default overlap of a rotated key: how long the old key keeps working (s).
pub const DEFAULT_ROTATION_OVERLAP_SECS: u64 = 3600;
/// Longest overlap of a rotated key (s): seven days.
pub const MAX_ROTATION_OVERLAP_SECS: u64 = 7 * 86_400;

const DAY_MS: i64 = 86_400_000;

/// Who am I?
#[utoipa::path(get, path = "/api/v1/me", tag = "account", responses((status = 200, body = api::WhoAmI)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn whoami(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::WhoAmI>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "me.get", "me").await?;
    let mfa_enabled = state.store.account_auth(&caller.principal.user_id).await?.is_some_and(|a| a.mfa_enabled);
    let p = caller.principal;
    let is_admin = p.is_admin();
    Ok(Json(api::WhoAmI {
        user_id: p.user_id,
        username: p.username,
        kind: match p.kind {
            cairn_core::AccountKind::User => "user".into(),
            cairn_core::AccountKind::ServiceAccount => "service".into(),
        },
        is_admin,
        roles: p
            .grants
            .iter()
            .map(|g| api::RoleHeld { role: g.role.as_str().to_owned(), namespace: g.namespace.clone() })
            .collect(),
        scopes: p.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        key_id: p.key_id,
        key_namespaces: p.key_namespaces.map(|set| set.into_iter().collect()),
        key_expires_at: caller.key_expires_at.map(rfc3339),
        session_id: p.session_id,
        mfa_enabled,
        mfa_satisfied: p.mfa_satisfied,
    }))
}

/// Change your own password. Your other sessions end; the one making the request (if it is
/// a session) stays.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "account", request_body = api::ChangePassword,
    responses((status = 204), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.manage"))))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::ChangePassword>,
) -> ApiResult<StatusCode> {
    let target = format!("user:{}", caller.principal.username);
    authorize(&state, &caller, Permission::SelfManage, None, "user.password", &target).await?;
    if caller.principal.kind == cairn_core::AccountKind::ServiceAccount {
        return Err(ApiError::invalid("service accounts have no password and never log in"));
    }
    let stored = state.store.password_hash(&caller.principal.user_id).await?;
    let current = body.current_password;
    let matches = match stored {
        Some(phc) => tokio::task::spawn_blocking(move || auth::verify_password(&current, &phc))
            .await
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "password check failed"))?,
        None => false,
    };
    if !matches {
        super::record_denied(&state, &caller, "user.password", &target).await;
        return Err(ApiError::forbidden("the current password is not right; nothing was changed"));
    }
    let hash = super::users::new_password_hash(&caller.principal.username, body.new_password).await?;
    state
        .store
        .set_password(&caller.audit, &caller.principal.username, &hash, caller.principal.session_id.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// The wire form of a key.
fn key_record(k: ApiKey, now_ms: i64) -> api::ApiKey {
    let status = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= now_ms) {
        "expired"
    } else {
        "active"
    };
    api::ApiKey {
        id: k.id,
        name: k.name,
        username: k.username,
        scopes: split(&k.scopes),
        namespaces: split(&k.namespaces),
        created_at: rfc3339(k.created_at),
        expires_at: k.expires_at.map(rfc3339),
        last_used_at: k.last_used_at.map(rfc3339),
        last_used_ip: k.last_used_ip,
        revoked_at: k.revoked_at.map(rfc3339),
        replaced_by: k.replaced_by,
        status: status.into(),
    }
}

fn created(k: ApiKey, token: String) -> api::CreatedApiKey {
    api::CreatedApiKey {
        id: k.id,
        token,
        name: k.name,
        scopes: split(&k.scopes),
        namespaces: split(&k.namespaces),
        username: k.username,
        expires_at: k.expires_at.map(rfc3339),
    }
}

/// Refuses a key with more scopes or namespaces than the credential making it.
async fn within_caller(
    state: &AppState,
    caller: &Caller,
    scopes: &BTreeSet<Scope>,
    namespaces: &BTreeSet<String>,
    action: &str,
    target: &str,
) -> Result<(), ApiError> {
    if let Some(s) = scopes.iter().find(|s| !caller.principal.scopes.iter().any(|have| have >= s)) {
        super::record_denied(state, caller, action, target).await;
        return Err(ApiError::forbidden(format!(
            "cannot create a key with the '{s}' scope from a credential without it"
        )));
    }
    if let Some(allowed) = &caller.principal.key_namespaces
        && (namespaces.is_empty() || !namespaces.is_subset(allowed))
    {
        super::record_denied(state, caller, action, target).await;
        let list = allowed.iter().cloned().collect::<Vec<_>>().join(", ");
        return Err(ApiError::forbidden(format!(
            "this API key is restricted to the namespaces {list}: a key it creates must be restricted to some of them"
        )));
    }
    Ok(())
}

/// Looks up the account a key is created for: the caller, or (administrators) a service
/// account.
async fn key_owner(state: &AppState, caller: &Caller, username: Option<&str>) -> Result<(String, String), ApiError> {
    let Some(u) = username.filter(|u| *u != caller.principal.username) else {
        authorize(state, caller, Permission::SelfManage, None, "api_key.create", "api_key").await?;
        return Ok((caller.principal.user_id.clone(), caller.principal.username.clone()));
    };
    let target = format!("user:{u}");
    authorize(state, caller, Permission::UserManage, None, "api_key.create", &target).await?;
    let user =
        state.store.find_user(u).await?.ok_or_else(|| ApiError::not_found(format!("user \"{u}\" does not exist")))?;
    if user.kind != "service" {
        super::record_denied(state, caller, "api_key.create", &target).await;
        return Err(ApiError::forbidden(format!(
            "\"{u}\" is a person: people create their own API keys after logging in; administrators create keys only for service accounts"
        )));
    }
    Ok((user.id, user.username))
}

/// Create an API key: for yourself, or (administrators) for a service account. The token is
/// in the response and nowhere else: the server keeps only its hash.
#[utoipa::path(post, path = "/api/v1/keys", tag = "account", request_body = api::CreateApiKey,
    responses((status = 201, body = api::CreatedApiKey), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.manage"))))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::CreateApiKey>,
) -> ApiResult<(StatusCode, Json<api::CreatedApiKey>)> {
    let (user_id, _) = key_owner(&state, &caller, body.username.as_deref()).await?;
    if body.name.trim().is_empty() || body.name.chars().count() > 100 || body.name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name must be 1 to 100 characters, without control characters"));
    }
    let mut scopes = BTreeSet::new();
    for s in &body.scopes {
        let scope = Scope::parse(s)
            .ok_or_else(|| ApiError::invalid(format!("unknown scope '{s}'; use read, write or admin")))?;
        scopes.insert(scope);
    }
    if scopes.is_empty() {
        return Err(ApiError::invalid("give at least one scope: read, write or admin"));
    }
    let mut namespaces = BTreeSet::new();
    for ns in body.namespaces.iter().flatten() {
        namespaces.insert(Namespace::parse(ns)?.as_str().to_owned());
    }
    if body.namespaces.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid("namespaces must name at least one namespace, or be left out"));
    }
    within_caller(&state, &caller, &scopes, &namespaces, "api_key.create", "api_key").await?;
    let max_days = state.settings.api_key_max_age_days.max(1);
    let days = body.expires_in_days.unwrap_or(max_days);
    if !(1..=max_days).contains(&days) {
        return Err(ApiError::invalid(format!("expires_in_days must be between 1 and {max_days}")));
    }
    let token = auth::generate_token();
    let expires_at = state.now_ms() + i64::from(days) * DAY_MS;
    let key = state
        .store
        .create_api_key(
            &caller.audit,
            &NewApiKey {
                user_id,
                name: body.name,
                token_hash: auth::hash_token(&token),
                scopes: scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "),
                expires_at: Some(expires_at),
                namespaces: namespaces.into_iter().collect::<Vec<_>>().join(" "),
                bootstrap: false,
            },
        )
        .await?;
    state.keys.clear();
    Ok((StatusCode::CREATED, Json(created(key, token))))
}

/// Query of `GET /api/v1/keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KeysQuery {
    /// The keys of this account (administrators, or yourself).
    pub username: Option<String>,
    /// The keys of every account (administrators).
    pub all: Option<bool>,
}

/// List API keys, newest first: your own, or (administrators) another account's or all.
/// Never a token or its hash.
#[utoipa::path(get, path = "/api/v1/keys", tag = "account", params(KeysQuery),
    responses((status = 200, body = api::ApiKeyList), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.manage"))))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<KeysQuery>,
) -> ApiResult<Json<api::ApiKeyList>> {
    let all = q.all.unwrap_or(false);
    let own = !all && q.username.as_deref().is_none_or(|u| u == caller.principal.username);
    if own {
        authorize(&state, &caller, Permission::SelfManage, None, "api_key.list", "api_keys").await?;
    } else {
        authorize(&state, &caller, Permission::UserManage, None, "api_key.list", "api_keys").await?;
    }
    let username = if all { None } else { Some(q.username.unwrap_or_else(|| caller.principal.username.clone())) };
    let keys = state.store.list_api_keys(username.as_deref()).await?;
    let now = state.now_ms();
    Ok(Json(api::ApiKeyList { keys: keys.into_iter().map(|k| key_record(k, now)).collect() }))
}

/// Finds a key the caller may manage: their own (`SelfManage`), or any (administrators). A
/// key of someone else is "not found" for everyone else.
async fn manageable_key(state: &AppState, caller: &Caller, id: &str, action: &str) -> Result<ApiKey, ApiError> {
    let target = format!("api_key:{id}");
    authorize(state, caller, Permission::SelfManage, None, action, &target).await?;
    let missing = || ApiError::not_found(format!("API key {id} does not exist"));
    if id.len() > 64 {
        return Err(missing());
    }
    let key = state.store.get_api_key(id).await?.ok_or_else(missing)?;
    if key.user_id != caller.principal.user_id {
        if caller.principal.check(Permission::UserManage, None).is_err() {
            return Err(missing());
        }
        authorize(state, caller, Permission::UserManage, None, action, &target).await?;
    }
    Ok(key)
}

/// Revoke an API key (your own, or any as an administrator). It stops working on the next
/// request.
#[utoipa::path(delete, path = "/api/v1/keys/{key_id}", tag = "account", params(("key_id" = String, Path)),
    responses((status = 204), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.manage"))))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    manageable_key(&state, &caller, &id, "api_key.revoke").await?;
    state.store.revoke_api_key(&caller.audit, &id).await?;
    state.keys.clear();
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate an API key: a new key with the same name, scopes and namespaces and a fresh
/// expiry (shown once), while the old one keeps working for `overlap_secs` (default 3600,
/// at most 7 days) and then expires.
#[utoipa::path(post, path = "/api/v1/keys/{key_id}/rotate", tag = "account", params(("key_id" = String, Path)),
    request_body = api::RotateApiKey,
    responses((status = 201, body = api::RotatedApiKey), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.manage"))))]
pub async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::RotateApiKey>,
) -> ApiResult<(StatusCode, Json<api::RotatedApiKey>)> {
    let old = manageable_key(&state, &caller, &id, "api_key.rotate").await?;
    let target = format!("api_key:{id}");
    if old.user_id != caller.principal.user_id && old.user_kind != "service" {
        super::record_denied(&state, &caller, "api_key.rotate", &target).await;
        return Err(ApiError::forbidden(format!(
            "this key belongs to the person \"{}\": people rotate their own keys; an administrator may revoke it",
            old.username
        )));
    }
    let overlap = body.overlap_secs.unwrap_or(DEFAULT_ROTATION_OVERLAP_SECS);
    if overlap > MAX_ROTATION_OVERLAP_SECS {
        return Err(ApiError::invalid(format!("overlap_secs must be at most {MAX_ROTATION_OVERLAP_SECS} (7 days)")));
    }
    let scopes: BTreeSet<Scope> = old.scopes.split_whitespace().filter_map(Scope::parse).collect();
    let namespaces: BTreeSet<String> = old.namespaces.split_whitespace().map(str::to_owned).collect();
    within_caller(&state, &caller, &scopes, &namespaces, "api_key.rotate", &target).await?;
    // The new key lives as long as the old one was meant to, within the server's limit.
    let max_ms = i64::from(state.settings.api_key_max_age_days.max(1)) * DAY_MS;
    let lifetime = old.expires_at.map_or(max_ms, |e| (e - old.created_at).clamp(DAY_MS, max_ms));
    let now = state.now_ms();
    let token = auth::generate_token();
    let new = NewApiKey {
        user_id: old.user_id.clone(),
        name: old.name.clone(),
        token_hash: auth::hash_token(&token),
        scopes: old.scopes.clone(),
        expires_at: Some(now + lifetime),
        namespaces: old.namespaces.clone(),
        bootstrap: false,
    };
    let overlap_ms = i64::try_from(overlap).unwrap_or(0) * 1000;
    let (previous, key) =
        state.store.rotate_api_key(&caller.audit, &id, &new, overlap_ms).await.map_err(|e| match e {
            cairn_store::StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            other => other.into(),
        })?;
    state.keys.clear();
    Ok((
        StatusCode::CREATED,
        Json(api::RotatedApiKey { key: created(key, token), previous: key_record(previous, now) }),
    ))
}
