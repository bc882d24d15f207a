//! The audit page (filterable events, where the chain stands, the last signed checkpoint and
//! an on-demand verification of the whole chain) and the administration page (people and
//! service accounts, role grants, lockouts).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::Permission;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::templates::render;
use super::{Me, NoFields, UiForm, UiResult, Viewer, see_other, urlencode};
use crate::app::AppState;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::routes::{audit as audit_routes, grants, session as session_routes, users};

/// Query of `GET /ui/audit`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AuditSearch {
    /// Only this actor (`user:alice`).
    #[serde(default)]
    pub actor: String,
    /// Only this action (`version.review`).
    #[serde(default)]
    pub action: String,
    /// Only this target (`model:ns/name:3`).
    #[serde(default)]
    pub target: String,
    /// `success`, `denied` or `failure`.
    #[serde(default)]
    pub outcome: String,
    /// The next page.
    #[serde(default)]
    pub page_token: String,
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

async fn audit_page(
    state: &AppState,
    viewer: &Viewer,
    search: AuditSearch,
    report: Option<minijinja::Value>,
) -> UiResult {
    let me = Me::of(state, viewer);
    let q = audit_routes::AuditEventsQuery {
        actor: non_empty(&search.actor),
        action: non_empty(&search.action),
        target: non_empty(&search.target),
        outcome: non_empty(&search.outcome),
        since: None,
        until: None,
        limit: Some(100),
        page_token: non_empty(&search.page_token),
    };
    let (events, next, error) =
        match audit_routes::list_events(State(state.clone()), viewer.caller.clone(), ApiQuery(q)).await {
            Ok(axum::Json(list)) => {
                let next = list.next_page_token.map(|t| {
                    let s = AuditSearch { page_token: t, ..search.clone() };
                    serde_urlencoded::to_string(&s).unwrap_or_default()
                });
                (list.events, next, None)
            }
            Err(e) if e.status == StatusCode::BAD_REQUEST => (Vec::new(), None, Some(e.message)),
            Err(e) => return Err(e.into()),
        };
    let axum::Json(chain) = audit_routes::chain(State(state.clone()), viewer.caller.clone()).await?;
    // The last checkpoint's signature, checked against this server's key.
    let checkpoint_valid = chain.last_checkpoint.as_ref().map(|c| {
        let cp = cairn_audit::checkpoint::Checkpoint {
            seq: c.seq,
            head: c.head.clone(),
            signed_at: c.signed_at,
            key_id: c.key_id.clone(),
            signature: c.signature.clone(),
        };
        cp.verify(&state.signing_key.public())
    });
    Ok(render(
        "audit.html",
        context! { me, nav => "audit", title => "Audit", events, next, error, search, chain, checkpoint_valid, report },
    ))
}

/// `GET /ui/audit`.
pub async fn audit(State(state): State<AppState>, viewer: Viewer, Query(search): Query<AuditSearch>) -> UiResult {
    audit_page(&state, &viewer, search, None).await
}

/// `POST /ui/audit/verify`: recomputes the whole chain and every checkpoint now.
pub async fn verify(State(state): State<AppState>, UiForm { viewer, .. }: UiForm<NoFields>) -> UiResult {
    super::authorize_page(&state, &viewer, Permission::AuditRead, "audit.verify", "audit").await?;
    let mut trusted = vec![state.signing_key.public()];
    for k in state.store.signing_keys().await.map_err(ApiError::from)? {
        if let Ok(key) = cairn_audit::PublicKey::parse(&k.public_key) {
            trusted.push(key);
        }
    }
    let report = state.store.verify_audit_chain(trusted).await.map_err(ApiError::from)?;
    let ok = report.ok();
    let report = context! { ok, report };
    audit_page(&state, &viewer, AuditSearch::default(), Some(report)).await
}

/// Query of `GET /ui/admin`.
#[derive(Debug, Default, Deserialize)]
pub struct AdminQuery {
    /// A message from the last form.
    #[serde(default)]
    pub notice: String,
    /// What went wrong with the last form.
    #[serde(default)]
    pub error: String,
}

/// `GET /ui/admin`: accounts, grants and lockouts.
pub async fn admin_page(State(state): State<AppState>, viewer: Viewer, Query(q): Query<AdminQuery>) -> UiResult {
    let me = Me::of(&state, &viewer);
    let (s, c) = (&state, &viewer.caller);
    let uq = users::UsersQuery { limit: Some(1000), page_token: None };
    let axum::Json(list) = users::list_users(State(s.clone()), c.clone(), ApiQuery(uq)).await?;
    let gq = grants::GrantsQuery { username: None, namespace: None };
    let axum::Json(grant_list) = grants::list_grants(State(s.clone()), c.clone(), ApiQuery(gq)).await?;
    let axum::Json(lockouts) = session_routes::list_lockouts(State(s.clone()), c.clone()).await?;
    let (people, services): (Vec<api::User>, Vec<api::User>) = list.users.into_iter().partition(|u| u.kind == "user");
    let roles: Vec<&str> = cairn_core::Role::ALL.iter().map(|r| r.as_str()).collect();
    Ok(render(
        "admin.html",
        context! {
            me, nav => "admin", title => "Administration", people, services, grants => grant_list.grants,
            lockouts => lockouts.lockouts, roles, notice => q.notice, error => q.error,
        },
    ))
}

fn admin_back(result: Result<String, ApiError>) -> UiResult {
    match result {
        Ok(notice) => Ok(see_other(&format!("/ui/admin?notice={}", urlencode(&notice)))),
        Err(e) if matches!(e.status, StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::NOT_FOUND) => {
            Ok(see_other(&format!("/ui/admin?error={}", urlencode(&e.message))))
        }
        Err(e) => Err(e.into()),
    }
}

/// The new-account form.
#[derive(Debug, Deserialize)]
pub struct NewUserForm {
    /// Login name.
    pub username: String,
    /// `user` or `service`.
    pub kind: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Email.
    #[serde(default)]
    pub email: String,
    /// Initial password (people only; a generated one is shown when empty).
    #[serde(default)]
    pub password: String,
}

/// `POST /ui/admin/users`.
pub async fn create_user(State(state): State<AppState>, UiForm { viewer, form }: UiForm<NewUserForm>) -> UiResult {
    let service = form.kind == "service";
    let body = api::CreateUser {
        username: form.username,
        password: non_empty(&form.password).filter(|_| !service),
        is_admin: false,
        kind: Some(if service { "service".into() } else { "user".into() }),
        display_name: non_empty(&form.display_name),
        email: non_empty(&form.email),
    };
    let result = users::create_user(State(state), viewer.caller, ApiJson(body)).await.map(|(_, axum::Json(u))| {
        format!("Created {} '{}'.", if service { "service account" } else { "user" }, u.username)
    });
    admin_back(result)
}

/// The enable/disable form.
#[derive(Debug, Deserialize)]
pub struct UserStateForm {
    /// `disable` or `enable`.
    pub set: String,
}

/// `POST /ui/admin/users/{username}`: disables or enables an account.
pub async fn update_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
    UiForm { viewer, form }: UiForm<UserStateForm>,
) -> UiResult {
    let disabled = match form.set.as_str() {
        "disable" => true,
        "enable" => false,
        other => return Err(ApiError::invalid(format!("set must be disable or enable, not {other:?}")).into()),
    };
    let body = api::UpdateUser { display_name: None, email: None, disabled: Some(disabled) };
    let result = users::update_user(State(state), viewer.caller, Path(username.clone()), ApiJson(body))
        .await
        .map(|_| format!("'{username}' is {}.", if disabled { "disabled" } else { "enabled" }));
    admin_back(result)
}

/// The new-grant form.
#[derive(Debug, Deserialize)]
pub struct GrantForm {
    /// Who.
    pub username: String,
    /// Which role.
    pub role: String,
    /// In which namespace (empty: everywhere).
    #[serde(default)]
    pub namespace: String,
}

/// `POST /ui/admin/grants`.
pub async fn create_grant(State(state): State<AppState>, UiForm { viewer, form }: UiForm<GrantForm>) -> UiResult {
    let body = api::CreateRoleGrant {
        username: form.username.trim().to_owned(),
        role: form.role,
        namespace: non_empty(&form.namespace),
    };
    let result = grants::create_grant(State(state), viewer.caller, ApiJson(body)).await.map(|(_, axum::Json(g))| {
        format!("'{}' now holds {} in {}.", g.username, g.role, g.namespace.as_deref().unwrap_or("every namespace"))
    });
    admin_back(result)
}

/// `POST /ui/admin/grants/{grant_id}/delete`.
pub async fn delete_grant(
    State(state): State<AppState>,
    Path(id): Path<String>,
    UiForm { viewer, .. }: UiForm<NoFields>,
) -> UiResult {
    let result =
        grants::delete_grant(State(state), viewer.caller, Path(id)).await.map(|_| "The grant is removed.".into());
    admin_back(result)
}

/// `POST /ui/admin/lockouts/{subject}/release`.
pub async fn release_lockout(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    UiForm { viewer, .. }: UiForm<NoFields>,
) -> UiResult {
    let result = session_routes::release_lockout(State(state), viewer.caller, Path(subject.clone()))
        .await
        .map(|_| format!("{subject} is unlocked."));
    admin_back(result)
}
