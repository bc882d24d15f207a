//! Reviewing: the inbox of versions waiting at an approval gate, the review form (approve,
//! reject, comment) and the lifecycle buttons (submit, promote, deprecate, retire). Each form
//! goes through the API's own handler, so the two-person rule, the reviewer roles, the
//! policies and the audit record are exactly the API's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use cairn_api_types as api;
use cairn_core::{NamespaceScope, Permission};
use minijinja::context;
use serde::Deserialize;

use super::templates::render;
use super::{Me, UiForm, UiResult, Viewer, see_other, urlencode};
use crate::app::AppState;
use crate::error::{ApiError, ApiJson};
use crate::routes::lifecycle;

/// `GET /ui/reviews`: versions waiting for a review in the namespaces the person may review.
pub async fn inbox(State(state): State<AppState>, viewer: Viewer) -> UiResult {
    let me = Me::of(&state, &viewer);
    let p = &viewer.caller.principal;
    let waiting = match p.namespaces_for(Permission::VersionReview) {
        NamespaceScope::All => state.store.review_inbox(None, 500).await.map_err(ApiError::from)?,
        NamespaceScope::Only(set) => {
            let list: Vec<String> = set.into_iter().collect();
            state.store.review_inbox(Some(&list), 500).await.map_err(ApiError::from)?
        }
    };
    let now = state.now_ms();
    let rows: Vec<_> = waiting
        .into_iter()
        .map(|w| {
            let hours = (now - w.waiting_since).max(0) / 3_600_000;
            let gate = if w.stage == "submitted" { "staging" } else { "production" };
            let href = format!("/ui/models/{}/{}/versions/{}", urlencode(&w.namespace), urlencode(&w.name), w.version);
            let mine = w.submitted_by == p.username;
            context! { w, hours, gate, href, mine }
        })
        .collect();
    Ok(render("reviews.html", context! { me, nav => "reviews", title => "Reviews", rows }))
}

/// The review form.
#[derive(Debug, Deserialize)]
pub struct ReviewForm {
    /// `approve`, `reject` or `comment` (the button pressed).
    pub decision: String,
    /// The role reviewed in.
    pub role: String,
    /// Why.
    #[serde(default)]
    pub rationale: String,
}

fn back(namespace: &str, name: &str, version: &str, key: &str, message: &str) -> Response {
    see_other(&format!(
        "/ui/models/{}/{}/versions/{}?{key}={}#lifecycle",
        urlencode(namespace),
        urlencode(name),
        urlencode(version),
        urlencode(message)
    ))
}

/// Refusals the person can act on go back to the version page as a message; anything else
/// is an error page.
fn outcome(
    result: Result<axum::Json<api::Lifecycle>, ApiError>,
    (namespace, name, version): (&str, &str, &str),
    done: &str,
) -> UiResult {
    match result {
        Ok(axum::Json(l)) => {
            Ok(back(namespace, name, version, "notice", &format!("{done}; the version is now {}", l.stage)))
        }
        Err(e)
            if matches!(
                e.status,
                StatusCode::BAD_REQUEST
                    | StatusCode::FORBIDDEN
                    | StatusCode::CONFLICT
                    | StatusCode::UNPROCESSABLE_ENTITY
            ) =>
        {
            Ok(back(namespace, name, version, "error", &e.message))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /ui/models/{namespace}/{name}/versions/{version}/review`.
pub async fn review(
    State(state): State<AppState>,
    Path((namespace, name, version)): Path<(String, String, String)>,
    UiForm { viewer, form }: UiForm<ReviewForm>,
) -> UiResult {
    if !matches!(form.decision.as_str(), "approve" | "reject" | "comment") {
        return Err(ApiError::invalid("decision must be approve, reject or comment").into());
    }
    let body = api::ReviewRequest { decision: form.decision.clone(), role: form.role, rationale: form.rationale };
    let path = (namespace.clone(), name.clone(), version.clone());
    let result = lifecycle::create_review(State(state), viewer.caller, Path(path), ApiJson(body)).await;
    let done = match form.decision.as_str() {
        "approve" => "Approved",
        "reject" => "Rejected",
        _ => "Comment recorded",
    };
    outcome(result, (&namespace, &name, &version), done)
}

/// A lifecycle button.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    /// `submit`, `promote`, `deprecate` or `retire`.
    pub action: String,
    /// Why (required by the server for some actions).
    #[serde(default)]
    pub reason: String,
    /// When promoting to production: keep the version it replaces out of `deprecated`.
    #[serde(default)]
    pub keep_previous: Option<String>,
}

/// `POST /ui/models/{namespace}/{name}/versions/{version}/lifecycle`.
pub async fn lifecycle_action(
    State(state): State<AppState>,
    Path((namespace, name, version)): Path<(String, String, String)>,
    UiForm { viewer, form }: UiForm<ActionForm>,
) -> UiResult {
    let body = api::LifecycleRequest { reason: form.reason, keep_previous: form.keep_previous.is_some() };
    let path = Path((namespace.clone(), name.clone(), version.clone()));
    let (s, c) = (State(state), viewer.caller);
    let result = match form.action.as_str() {
        "submit" => lifecycle::submit(s, c, path, ApiJson(body)).await,
        "promote" => lifecycle::promote(s, c, path, ApiJson(body)).await,
        "deprecate" => lifecycle::deprecate(s, c, path, ApiJson(body)).await,
        "retire" => lifecycle::retire(s, c, path, ApiJson(body)).await,
        other => return Err(ApiError::invalid(format!("unknown lifecycle action {other:?}")).into()),
    };
    let done = match form.action.as_str() {
        "submit" => "Submitted",
        "promote" => "Promoted",
        "deprecate" => "Deprecated",
        _ => "Retired",
    };
    outcome(result, (&namespace, &name, &version), done)
}
