//! Webhooks (`/api/v1/namespaces/{namespace}/webhooks`, `/api/v1/webhooks/…`,
//! docs/WEBHOOKS.md): signed HTTP callbacks for lifecycle events, their delivery log,
//! redelivery and a test ping.
//!
//! A namespace's hooks are managed with `webhook.manage` in that namespace; hooks of every
//! namespace (global ones) need it from a global grant. A hook the caller may not manage
//! answers `403` whether or not it exists, so ids of other namespaces' hooks cannot be probed.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cairn_api_types as api;
use cairn_core::{Namespace, Permission};
use cairn_store::StoreError;
use cairn_store::webhook::{Webhook, WebhookDelivery, check_events};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{authorize, page_limit, record_denied};
use crate::app::AppState;
use crate::auth::Caller;
use crate::convert::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::webhooks::{check_destination, generate_secret};

/// The webhook routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_namespace_webhooks, create_namespace_webhook))
        .routes(routes!(list_global_webhooks, create_global_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
        .routes(routes!(ping_webhook))
}

fn webhook(w: Webhook) -> api::Webhook {
    api::Webhook {
        id: w.id,
        namespace: w.namespace,
        url: w.url,
        events: w.events,
        active: w.active,
        created_at: rfc3339(w.created_at),
        created_by: w.created_by,
    }
}

fn delivery(d: WebhookDelivery) -> api::WebhookDelivery {
    api::WebhookDelivery {
        next_attempt_at: (d.status == "pending").then(|| rfc3339(d.next_attempt_at)),
        id: d.id,
        webhook_id: d.webhook_id,
        event: d.event,
        payload: d.payload,
        status: d.status,
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error,
        created_at: rfc3339(d.created_at),
        delivered_at: d.delivered_at.map(rfc3339),
    }
}

/// Validates a new hook and creates it with a fresh secret.
async fn create(
    state: &AppState,
    caller: &Caller,
    namespace: Option<&Namespace>,
    body: api::CreateWebhook,
) -> ApiResult<(StatusCode, Json<api::CreatedWebhook>)> {
    check_events(&body.events)?;
    check_destination(&body.url, state.settings.webhook_allow_private_networks).await.map_err(ApiError::invalid)?;
    let secret = generate_secret();
    let hook = state.store.create_webhook(&caller.audit, namespace, &body.url, &body.events, &secret).await?;
    Ok((StatusCode::CREATED, Json(api::CreatedWebhook { webhook: webhook(hook), secret })))
}

/// Authorises `caller` on hook `id`: `webhook.manage` in its namespace, or globally for a
/// global hook. A hook the caller may not manage, existing or not, answers `403`.
async fn authorize_hook(state: &AppState, caller: &Caller, id: &str, action: &str) -> ApiResult<Webhook> {
    let found = if id.len() > 64 { None } else { lookup(state.store.get_webhook(id).await)? };
    let namespace = found.as_ref().and_then(|h| h.namespace.clone());
    if let Err(denied) = caller.principal.check(Permission::WebhookManage, namespace.as_deref()) {
        record_denied(state, caller, action, &format!("webhook:{id}")).await;
        // Say what the credential lacks (MFA, a scope, a namespace restriction), but never
        // which namespace the hook belongs to.
        let own_credential = !caller.principal.mfa_satisfied || denied.0.starts_with("this API key");
        let message = if own_credential {
            denied.0
        } else {
            format!(
                "'{}' may not manage webhook \"{id}\" (needs webhook.manage in its namespace)",
                caller.principal.username
            )
        };
        return Err(ApiError::forbidden(message));
    }
    found.ok_or_else(|| ApiError::not_found(format!("webhook \"{id}\" does not exist")))
}

fn lookup(found: Result<Webhook, StoreError>) -> ApiResult<Option<Webhook>> {
    match found {
        Ok(hook) => Ok(Some(hook)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// List a namespace's webhooks (secrets are never shown).
#[utoipa::path(get, path = "/api/v1/namespaces/{namespace}/webhooks", tag = "webhooks",
    params(("namespace" = String, Path)),
    responses((status = 200, body = api::WebhookList), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn list_namespace_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
) -> ApiResult<Json<api::WebhookList>> {
    let target = format!("namespace:{namespace}");
    authorize(&state, &caller, Permission::WebhookManage, Some(&namespace), "webhook.list", &target).await?;
    let name = Namespace::parse(&namespace)?;
    state.store.get_namespace(&name).await?;
    let hooks = state.store.list_webhooks(Some(&name)).await?;
    Ok(Json(api::WebhookList { webhooks: hooks.into_iter().map(webhook).collect() }))
}

/// Create a webhook for a namespace's events. The answer carries the signing secret, shown
/// only this once.
#[utoipa::path(post, path = "/api/v1/namespaces/{namespace}/webhooks", tag = "webhooks",
    params(("namespace" = String, Path)), request_body = api::CreateWebhook,
    responses((status = 201, body = api::CreatedWebhook), (status = 400, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn create_namespace_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(namespace): Path<String>,
    ApiJson(body): ApiJson<api::CreateWebhook>,
) -> ApiResult<(StatusCode, Json<api::CreatedWebhook>)> {
    let target = format!("namespace:{namespace}");
    authorize(&state, &caller, Permission::WebhookManage, Some(&namespace), "webhook.create", &target).await?;
    let name = Namespace::parse(&namespace)?;
    create(&state, &caller, Some(&name), body).await
}

/// List the webhooks that receive every namespace's events.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = api::WebhookList), (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn list_global_webhooks(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::WebhookList>> {
    authorize(&state, &caller, Permission::WebhookManage, None, "webhook.list", "webhooks").await?;
    let hooks = state.store.list_webhooks(None).await?;
    Ok(Json(api::WebhookList { webhooks: hooks.into_iter().map(webhook).collect() }))
}

/// Create a webhook that receives every namespace's events (needs a global grant). The
/// answer carries the signing secret, shown only this once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = api::CreateWebhook,
    responses((status = 201, body = api::CreatedWebhook), (status = 400, body = api::ErrorBody),
        (status = 403, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn create_global_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<api::CreateWebhook>,
) -> ApiResult<(StatusCode, Json<api::CreatedWebhook>)> {
    authorize(&state, &caller, Permission::WebhookManage, None, "webhook.create", "webhooks").await?;
    create(&state, &caller, None, body).await
}

/// Get a webhook (without its secret).
#[utoipa::path(get, path = "/api/v1/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses((status = 200, body = api::Webhook), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::Webhook>> {
    Ok(Json(webhook(authorize_hook(&state, &caller, &id, "webhook.get").await?)))
}

/// Turn a webhook's deliveries on or off.
#[utoipa::path(patch, path = "/api/v1/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)), request_body = api::UpdateWebhook,
    responses((status = 200, body = api::Webhook), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn update_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<api::UpdateWebhook>,
) -> ApiResult<Json<api::Webhook>> {
    authorize_hook(&state, &caller, &id, "webhook.update").await?;
    Ok(Json(webhook(state.store.set_webhook_active(&caller.audit, &id, body.active).await?)))
}

/// Delete a webhook and its delivery log.
#[utoipa::path(delete, path = "/api/v1/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses((status = 204), (status = 403, body = api::ErrorBody), (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    authorize_hook(&state, &caller, &id, "webhook.delete").await?;
    state.store.delete_webhook(&caller.audit, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Paging of a delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// A webhook's delivery log, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("webhook_id" = String, Path), DeliveriesQuery),
    responses((status = 200, body = api::WebhookDeliveryList), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<api::WebhookDeliveryList>> {
    authorize_hook(&state, &caller, &id, "webhook.deliveries").await?;
    let limit = page_limit(q.limit)?;
    let listing = format!("webhook-deliveries|{id}");
    let after = q.page_token.as_deref().map(|t| state.page_tokens.decode(&listing, t)).transpose()?;
    let page = state.store.list_deliveries(&id, limit, after.as_ref()).await?;
    Ok(Json(api::WebhookDeliveryList {
        deliveries: page.items.into_iter().map(delivery).collect(),
        next_page_token: page.next.map(|c| state.page_tokens.encode(&listing, &c)),
    }))
}

/// Send a delivery again (a fresh budget of attempts, due now).
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("webhook_id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = api::WebhookDelivery), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<api::WebhookDelivery>)> {
    authorize_hook(&state, &caller, &id, "webhook.redeliver").await?;
    if delivery_id.len() > 64 {
        return Err(ApiError::not_found(format!("webhook \"{id}\" has no delivery \"{delivery_id}\"")));
    }
    let d = state.store.redeliver(&caller.audit, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery(d))))
}

/// Send a `ping` event to this webhook only, to test the receiver.
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook_id}/ping", tag = "webhooks",
    params(("webhook_id" = String, Path)),
    responses((status = 202, body = api::WebhookDelivery), (status = 403, body = api::ErrorBody),
        (status = 404, body = api::ErrorBody)),
    extensions(("x-cairn-permission" = json!("webhook.manage"))))]
pub async fn ping_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<api::WebhookDelivery>)> {
    authorize_hook(&state, &caller, &id, "webhook.ping").await?;
    let d = state.store.ping_webhook(&caller.audit, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery(d))))
}
