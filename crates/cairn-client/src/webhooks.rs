//! Webhooks (`/api/v1/namespaces/{namespace}/webhooks`, `/api/v1/webhooks/…`), as described
//! in `docs/WEBHOOKS.md`.

use cairn_api_types as api;
use reqwest::Method;
use serde::Serialize;

use crate::{Client, ClientError, seg};

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct DeliveriesQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page_token: Option<&'a str>,
}

impl Client {
    /// `POST /api/v1/namespaces/{namespace}/webhooks`, or `POST /api/v1/webhooks` for a hook
    /// of every namespace (`namespace` `None`). The answer holds the secret, shown only once.
    pub async fn create_webhook(
        &self,
        namespace: Option<&str>,
        req: &api::CreateWebhook,
    ) -> Result<api::CreatedWebhook, ClientError> {
        let path = match namespace {
            Some(ns) => format!("/api/v1/namespaces/{}/webhooks", seg(ns)),
            None => "/api/v1/webhooks".to_owned(),
        };
        self.write(Method::POST, &path, req).await
    }

    /// `GET /api/v1/namespaces/{namespace}/webhooks`, or `GET /api/v1/webhooks` for the hooks
    /// of every namespace (`namespace` `None`).
    pub async fn list_webhooks(&self, namespace: Option<&str>) -> Result<api::WebhookList, ClientError> {
        match namespace {
            Some(ns) => self.get(&format!("/api/v1/namespaces/{}/webhooks", seg(ns))).await,
            None => self.get("/api/v1/webhooks").await,
        }
    }

    /// `GET /api/v1/webhooks/{id}`.
    pub async fn get_webhook(&self, id: &str) -> Result<api::Webhook, ClientError> {
        self.get(&format!("/api/v1/webhooks/{}", seg(id))).await
    }

    /// `PATCH /api/v1/webhooks/{id}`: turns deliveries on or off.
    pub async fn set_webhook_active(&self, id: &str, active: bool) -> Result<api::Webhook, ClientError> {
        self.write(Method::PATCH, &format!("/api/v1/webhooks/{}", seg(id)), &api::UpdateWebhook { active }).await
    }

    /// `DELETE /api/v1/webhooks/{id}`.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/api/v1/webhooks/{}", seg(id))).await
    }

    /// `GET /api/v1/webhooks/{id}/deliveries`: the delivery log, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        id: &str,
        limit: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<api::WebhookDeliveryList, ClientError> {
        self.get_q(&format!("/api/v1/webhooks/{}/deliveries", seg(id)), &DeliveriesQuery { limit, page_token }).await
    }

    /// `POST /api/v1/webhooks/{id}/deliveries/{delivery}/redeliver`.
    pub async fn redeliver_webhook(&self, id: &str, delivery: &str) -> Result<api::WebhookDelivery, ClientError> {
        let path = format!("/api/v1/webhooks/{}/deliveries/{}/redeliver", seg(id), seg(delivery));
        self.send::<(), (), api::WebhookDelivery>(Method::POST, &path, None, None).await?.ok_or_else(crate::empty)
    }

    /// `POST /api/v1/webhooks/{id}/ping`: queues a test delivery to this hook.
    pub async fn ping_webhook(&self, id: &str) -> Result<api::WebhookDelivery, ClientError> {
        let path = format!("/api/v1/webhooks/{}/ping", seg(id));
        self.send::<(), (), api::WebhookDelivery>(Method::POST, &path, None, None).await?.ok_or_else(crate::empty)
    }
}
