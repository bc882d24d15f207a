//! Accounts (`/api/v1/users`): create, list, change, disable, delete; passwords and the
//! password policy.
//!
//! Every change is made by one store method, audited in its transaction; disabling or
//! deleting an account ends its sessions there too, and drops the cache of verified API keys
//! so that its keys stop working on the next request.

use std::collections::HashSet;
use std::sync::OnceLock;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::Permission;
use cairn_store::StoreError;
use cairn_store::user::{NewUser, User, UserChanges, UserProfile};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{authorize, page_limit};
use crate::app::AppState;
use crate::auth::{self, Caller};
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};

/// The account routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(set_user_password))
}

/// Shortest password accepted, in characters.
pub const PASSWORD_MIN_CHARS: usize = 12;
/// Longest password accepted, in characters (argon2 hashes any length; this bounds the work).
pub const PASSWORD_MAX_CHARS: usize = 1024;

static COMMON_PASSWORDS_TEXT: &str = include_str!("../../data/common-passwords.txt");

fn common_passwords() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS_TEXT.lines().filter(|l| !l.is_empty() && !l.starts_with("# ")).collect::<HashSet<_>>()
    })
}

/// The password policy: 12 to 1024 characters; not the user name and not containing it
/// (names of three characters or more, ignoring case); not on the bundled list of common
/// passwords, ignoring case, also once digits and symbols around it are taken away
/// (`Password1234!` is `password`). The error says which rule failed.
pub fn check_password(username: &str, password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < PASSWORD_MIN_CHARS {
        return Err(format!(
            "password is too short: it must have at least {PASSWORD_MIN_CHARS} characters (it has {chars}); a passphrase of several words is easiest to remember"
        ));
    }
    if chars > PASSWORD_MAX_CHARS {
        return Err(format!("password is too long: at most {PASSWORD_MAX_CHARS} characters"));
    }
    let lower = password.to_lowercase();
    let name = username.to_lowercase();
    if lower == name || (name.chars().count() >= 3 && lower.contains(&name)) {
        return Err("password must not contain the user name".into());
    }
    let common = common_passwords();
    if common.contains(lower.as_str()) {
        return Err("password is on the list of common passwords; choose another".into());
    }
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    if !core.is_empty() && core != lower && common.contains(core) {
        return Err(format!("password is a common password (\"{core}\") with digits or symbols added; choose another"));
    }
    Ok(())
}

/// Hashes a password with argon2id on a blocking thread.
pub(crate) async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "password hashing failed"))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))
}

/// Checks `password` against the policy for `username`, then hashes it.
pub(crate) async fn new_password_hash(username: &str, password: String) -> Result<String, ApiError> {
    check_password(username, &password).map_err(ApiError::invalid)?;
    hash_password(password).await
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

pub(crate) fn check_display_name(name: &str) -> Result<(), ApiError> {
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("display_name must be at most 200 characters, without control characters"));
    }
    Ok(())
}

pub(crate) fn check_email(email: &str) -> Result<(), ApiError> {
    if email.is_empty() {
        return Ok(());
    }
    let shaped = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.starts_with('.')
        });
    if shaped {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("email {email:?} is not an address like name@example.org")))
    }
}

/// A store conflict that is not about a duplicate name (the last administrator).
fn refused(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        other => other.into(),
    }
}

/// The wire form of an account.
pub(crate) fn user(u: User) -> api::User {
    api::User {
        id: u.id,
        username: u.username,
        display_name: u.display_name,
        email: u.email,
        kind: u.kind,
        is_admin: u.is_admin,
        roles: u.roles.into_iter().map(|(role, namespace)| api::RoleHeld { role, namespace }).collect(),
        mfa_enabled: u.mfa_enabled,
        disabled: u.disabled,
        password_changed_at: u.password_changed_at.map(rfc3339),
        created_at: rfc3339(u.created_at),
        updated_at: rfc3339(u.updated_at),
    }
}

/// Query of `GET /api/v1/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// List accounts by login name.
#[utoipa::path(get, path = "/api/v1/users", tag = "account", params(UsersQuery),
    responses((status = 200, body = api::UserList), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> ApiResult<Json<api::UserList>> {
    authorize(&state, &caller, Permission::UserManage, None, "user.list", "users").await?;
    let limit = page_limit(q.limit)?;
    let listing = "users|username";
    let after = q.page_token.as_deref().map(|t| state.page_tokens.decode(listing, t)).transpose()?;
    let page = state.store.list_users(limit, after.as_ref()).await?;
    Ok(Json(api::UserList {
        users: page.items.into_iter().map(user).collect(),
        next_page_token: page.next.map(|c| state.page_tokens.encode(listing, &c)),
    }))
}

/// Create an account (administrators only). Service accounts have no password and never
/// log in: they use API keys an administrator creates for them.
#[utoipa::path(post, path = "/api/v1/users", tag = "account", request_body = api::CreateUser,
    responses((status = 201, body = api::User), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
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
    let profile =
        UserProfile { display_name: body.display_name.unwrap_or_default(), email: body.email.unwrap_or_default() };
    check_display_name(&profile.display_name)?;
    check_email(&profile.email)?;
    let password_hash = match body.password {
        Some(_) if kind == "service" => {
            return Err(ApiError::invalid(
                "service accounts have no password and never log in: omit password and create API keys for them",
            ));
        }
        Some(pw) => Some(new_password_hash(&body.username, pw).await?),
        None => None,
    };
    let new = NewUser { username: body.username, password_hash, is_admin: body.is_admin, kind };
    let created = state.store.create_user_with_profile(&caller.audit, &new, &profile).await?;
    state.keys.clear();
    Ok((StatusCode::CREATED, Json(user(created))))
}

/// Get an account (administrators; anyone may get their own).
#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "account", params(("username" = String, Path)),
    responses((status = 200, body = api::User), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<api::User>> {
    let permission = if username == caller.principal.username { Permission::SelfBasic } else { Permission::UserManage };
    authorize(&state, &caller, permission, None, "user.get", &format!("user:{username}")).await?;
    let found = state.store.find_user(&username).await?;
    Ok(Json(user(found.ok_or_else(|| ApiError::not_found(format!("user \"{username}\" does not exist")))?)))
}

/// Change an account's shown name or address, or disable or enable it. Disabling ends its
/// sessions and stops its API keys on the next request.
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "account", params(("username" = String, Path)),
    request_body = api::UpdateUser,
    responses((status = 200, body = api::User), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody), (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<api::UpdateUser>,
) -> ApiResult<Json<api::User>> {
    let action = match body.disabled {
        Some(true) => "user.disable",
        Some(false) => "user.enable",
        None => "user.update",
    };
    authorize(&state, &caller, Permission::UserManage, None, action, &format!("user:{username}")).await?;
    if let Some(n) = &body.display_name {
        check_display_name(n)?;
    }
    if let Some(e) = &body.email {
        check_email(e)?;
    }
    if body.disabled == Some(true) && username == caller.principal.username {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "you cannot disable your own account"));
    }
    let changes = UserChanges { display_name: body.display_name, email: body.email, disabled: body.disabled };
    let changed = state.store.update_user(&caller.audit, &username, &changes).await.map_err(refused)?;
    state.keys.clear();
    Ok(Json(user(changed)))
}

/// Delete an account with its API keys, grants and sessions. Refused for yourself and for
/// the last enabled administrator.
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "account", params(("username" = String, Path)),
    responses((status = 204), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody),
        (status = 409, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<StatusCode> {
    authorize(&state, &caller, Permission::UserManage, None, "user.delete", &format!("user:{username}")).await?;
    if username == caller.principal.username {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "you cannot delete your own account"));
    }
    state.store.delete_user(&caller.audit, &username).await.map_err(refused)?;
    state.keys.clear();
    Ok(StatusCode::NO_CONTENT)
}

/// Set another account's password (administrators). Ends all of that account's sessions.
#[utoipa::path(post, path = "/api/v1/users/{username}/password", tag = "account", params(("username" = String, Path)),
    request_body = api::SetPassword,
    responses((status = 204), (status = 400, body = api::ErrorBody), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("user.manage"))))]
pub async fn set_user_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<api::SetPassword>,
) -> ApiResult<StatusCode> {
    authorize(&state, &caller, Permission::UserManage, None, "user.password", &format!("user:{username}")).await?;
    let target = state
        .store
        .find_user(&username)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user \"{username}\" does not exist")))?;
    if target.kind == "service" {
        return Err(ApiError::invalid("service accounts have no password and never log in; give them API keys"));
    }
    let hash = new_password_hash(&username, body.new_password).await?;
    state.store.set_password(&caller.audit, &username, &hash, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy_names_the_rule() {
        assert!(check_password("alice", "short").unwrap_err().contains("at least 12"));
        assert!(check_password("alice", &"x".repeat(1025)).unwrap_err().contains("too long"));
        assert!(check_password("alice", "my-name-is-Alice!").unwrap_err().contains("user name"));
        assert!(check_password("alice", "qwerty123456").unwrap_err().contains("common"));
        assert!(check_password("alice", "QWERTY123456").unwrap_err().contains("common"));
        assert!(check_password("alice", "Password1234!").unwrap_err().contains("\"password\""));
        assert!(check_password("alice", "correct horse battery staple").is_ok());
        // Two-letter names would forbid too much: only equality counts for them.
        assert!(check_password("al", "always a long passphrase").is_ok());
        assert!(check_password("al", "al").is_err());
        assert!(common_passwords().len() > 19_000);
    }
}
