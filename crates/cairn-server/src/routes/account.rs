//! The caller (`/api/v1/me`), accounts (`/api/v1/users`) and API keys (`/api/v1/keys`).

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::{Permission, Scope};
use cairn_store::user::{NewApiKey, NewUser};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::authorize;
use crate::app::AppState;
use crate::auth::{self, Caller};
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiResult};

/// The caller, account and key routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(whoami)).routes(routes!(create_user)).routes(routes!(create_key))
}

/// Longest lifetime of an API key, in days.
pub const MAX_KEY_AGE_DAYS: u32 = 90;

/// Who am I?
#[utoipa::path(get, path = "/api/v1/me", tag = "account", responses((status = 200, body = api::WhoAmI)),
    extensions(("x-cairn-permission" = json!("self.basic"))))]
pub async fn whoami(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::WhoAmI>> {
    authorize(&state, &caller, Permission::SelfBasic, None, "me.get", "me").await?;
    let p = caller.principal;
    let is_admin = p.is_admin();
    Ok(Json(api::WhoAmI {
        user_id: p.user_id,
        username: p.username,
        is_admin,
        scopes: p.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        key_id: p.key_id,
    }))
}

fn check_username(u: &str) -> Result<(), ApiError> {
    let ok = (2..=64).contains(&u.len())
        && u.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        && u.starts_with(|c: char| c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "username must be 2-64 characters: lower-case letters, digits, '-', '_', '.', starting with a letter",
        ))
    }
}

/// Create an account (administrators only).
#[utoipa::path(post, path = "/api/v1/users", tag = "account", request_body = api::CreateUser,
    responses((status = 201, body = api::User), (status = 403, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::CreateUser>,
) -> ApiResult<(StatusCode, Json<api::User>)> {
    authorize(&state, &caller, Permission::UserManage, None, "user.create", &format!("user:{}", body.username)).await?;
    check_username(&body.username)?;
    let kind = body.kind.unwrap_or_else(|| "user".into());
    if kind != "user" && kind != "service" {
        return Err(ApiError::invalid("kind must be 'user' or 'service'"));
    }
    let password_hash = match body.password {
        Some(pw) => {
            if pw.chars().count() < 12 || pw.len() > 1024 {
                return Err(ApiError::invalid("password must be 12 to 1024 characters"));
            }
            let hash = tokio::task::spawn_blocking(move || auth::hash_password(&pw))
                .await
                .map_err(|_| ApiError::invalid("password hashing failed"))?
                .map_err(ApiError::invalid)?;
            Some(hash)
        }
        None => None,
    };
    let user = state
        .store
        .create_user(&caller.audit, &NewUser { username: body.username, password_hash, is_admin: body.is_admin, kind })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(api::User {
            id: user.id,
            username: user.username,
            kind: user.kind,
            is_admin: user.is_admin,
            disabled: user.disabled,
            created_at: rfc3339(user.created_at),
        }),
    ))
}

/// Create an API key (for yourself, or for another account as an administrator). The
/// token is in the response and nowhere else: the server keeps only its hash.
#[utoipa::path(post, path = "/api/v1/keys", tag = "account", request_body = api::CreateApiKey,
    responses((status = 201, body = api::CreatedApiKey), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("self.manage"))))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::CreateApiKey>,
) -> ApiResult<(StatusCode, Json<api::CreatedApiKey>)> {
    authorize(&state, &caller, Permission::SelfManage, None, "api_key.create", "api_key").await?;
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::invalid("name must be 1 to 100 characters"));
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
    // A key never carries more than the credential that created it.
    if let Some(s) = scopes.iter().find(|s| !caller.principal.scopes.iter().any(|have| have >= s)) {
        super::record_denied(&state, &caller, "api_key.create", "api_key").await;
        return Err(ApiError::forbidden(format!(
            "cannot create a key with the '{s}' scope from a credential without it"
        )));
    }
    let days = body.expires_in_days.unwrap_or(MAX_KEY_AGE_DAYS);
    if !(1..=MAX_KEY_AGE_DAYS).contains(&days) {
        return Err(ApiError::invalid(format!("expires_in_days must be between 1 and {MAX_KEY_AGE_DAYS}")));
    }
    let user_id = match &body.username {
        None => caller.principal.user_id.clone(),
        Some(u) => {
            authorize(&state, &caller, Permission::UserManage, None, "api_key.create", &format!("user:{u}")).await?;
            let user = state
                .store
                .find_user(u)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("user \"{u}\" does not exist")))?;
            user.id
        }
    };
    let token = auth::generate_token();
    let expires_at = state.now_ms() + i64::from(days) * 86_400_000;
    let scope_text = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
    let key = state
        .store
        .create_api_key(
            &caller.audit,
            &NewApiKey {
                user_id,
                name: body.name,
                token_hash: auth::hash_token(&token),
                scopes: scope_text,
                expires_at: Some(expires_at),
                namespaces: String::new(),
                bootstrap: false,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(api::CreatedApiKey {
            id: key.id,
            token,
            name: key.name,
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            expires_at: key.expires_at.map(rfc3339),
        }),
    ))
}
