//! Wire types of webhooks (docs/WEBHOOKS.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A webhook. Its secret is shown only once, in [`CreatedWebhook`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// The namespace whose events it receives; absent for a hook that receives every namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Where deliveries are posted.
    pub url: String,
    /// The events it subscribes to (`*` for all).
    pub events: Vec<String>,
    /// Whether deliveries are made.
    pub active: bool,
    /// Created at.
    pub created_at: String,
    /// Created by.
    pub created_by: String,
}

/// A webhook just created, with its signing secret (shown only this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    /// The hook.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The signing secret (`whsec_…`): store it now, it is never shown again.
    pub secret: String,
}

/// Webhooks, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    /// The hooks.
    pub webhooks: Vec<Webhook>,
}

/// Create a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// An `http` or `https` URL without credentials, on a public address.
    pub url: String,
    /// Events to receive: `version.submitted`, `version.approved`, `version.rejected`,
    /// `version.promoted`, `policy.violation`, `evaluation.failed`, `deployment.recorded`,
    /// `deployment.rolled_back`, or `*` for all.
    pub events: Vec<String>,
}

/// Change a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// Turn deliveries on or off.
    pub active: bool,
}

/// One delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    /// Its id (sent as `Cairn-Webhook-Id`).
    pub id: String,
    /// The hook.
    pub webhook_id: String,
    /// The event.
    pub event: String,
    /// The event's data (`data` in the body sent).
    pub payload: serde_json::Value,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due, while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The HTTP status of the last attempt, when one was received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// Enqueued at.
    pub created_at: String,
    /// Delivered at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

/// A page of a webhook's delivery log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveryList {
    /// The deliveries.
    pub deliveries: Vec<WebhookDelivery>,
    /// Pass as `page_token` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}
