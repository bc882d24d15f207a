//! Data-subject requests (`/api/v1/privacy/…`, administrators): the personal-data
//! inventory, exports, rectification, erasure and the request log.

use cairn_api_types as api;
use reqwest::Method;
use serde::Serialize;

use crate::{Client, ClientError, seg};

#[derive(Serialize)]
struct ExportQuery<'a> {
    purpose: &'a str,
}

#[derive(Serialize)]
struct RequestsQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
}

impl Client {
    /// `GET /api/v1/privacy/inventory`.
    pub async fn privacy_inventory(&self) -> Result<api::PersonalDataInventory, ClientError> {
        self.get("/api/v1/privacy/inventory").await
    }

    /// `GET /api/v1/privacy/subjects/{username}`: everything held about a person;
    /// `portability` logs the request as one for portability rather than access.
    pub async fn export_subject(
        &self,
        username: &str,
        portability: bool,
    ) -> Result<api::PersonalDataExport, ClientError> {
        let purpose = if portability { "portability" } else { "access" };
        self.get_q(&format!("/api/v1/privacy/subjects/{}", seg(username)), &ExportQuery { purpose }).await
    }

    /// `PATCH /api/v1/privacy/subjects/{username}`.
    pub async fn rectify_subject(&self, username: &str, req: &api::RectifySubject) -> Result<api::User, ClientError> {
        self.write(Method::PATCH, &format!("/api/v1/privacy/subjects/{}", seg(username)), req).await
    }

    /// `DELETE /api/v1/privacy/subjects/{username}`.
    pub async fn erase_subject(&self, username: &str) -> Result<api::ErasureResult, ClientError> {
        self.send::<(), (), api::ErasureResult>(
            Method::DELETE,
            &format!("/api/v1/privacy/subjects/{}", seg(username)),
            None,
            None,
        )
        .await?
        .ok_or_else(crate::empty)
    }

    /// `GET /api/v1/privacy/requests`.
    pub async fn gdpr_requests(
        &self,
        subject: Option<&str>,
        limit: Option<usize>,
    ) -> Result<api::GdprRequestList, ClientError> {
        self.get_q("/api/v1/privacy/requests", &RequestsQuery { subject, limit }).await
    }
}
