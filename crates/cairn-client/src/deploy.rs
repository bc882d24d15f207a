//! Environments, deployments, rollbacks and SLO reports (docs/DEPLOYMENTS.md).

use cairn_api_types as api;
use reqwest::Method;
use serde::Serialize;

use crate::{Client, ClientError, seg};

/// Filters of the deployment history.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeploymentQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
}

impl Client {
    /// `GET /api/v1/environments`.
    pub async fn environments(&self) -> Result<api::EnvironmentList, ClientError> {
        self.get("/api/v1/environments").await
    }

    /// `GET /api/v1/environments/{name}`.
    pub async fn environment(&self, name: &str) -> Result<api::Environment, ClientError> {
        self.get(&format!("/api/v1/environments/{}", seg(name))).await
    }

    /// `PUT /api/v1/environments/{name}`.
    pub async fn put_environment(
        &self,
        name: &str,
        req: &api::PutEnvironment,
    ) -> Result<api::Environment, ClientError> {
        self.write(Method::PUT, &format!("/api/v1/environments/{}", seg(name)), req).await
    }

    /// `POST /api/v1/environments/{name}/deployments`.
    pub async fn record_deployment(
        &self,
        environment: &str,
        req: &api::RecordDeployment,
    ) -> Result<api::Deployment, ClientError> {
        self.write(Method::POST, &format!("/api/v1/environments/{}/deployments", seg(environment)), req).await
    }

    /// `POST /api/v1/environments/{name}/rollback`.
    pub async fn rollback(&self, environment: &str, req: &api::Rollback) -> Result<api::Deployment, ClientError> {
        self.write(Method::POST, &format!("/api/v1/environments/{}/rollback", seg(environment)), req).await
    }

    /// `GET /api/v1/deployments`.
    pub async fn deployments(&self, q: &DeploymentQuery) -> Result<api::DeploymentList, ClientError> {
        self.get_q("/api/v1/deployments", q).await
    }

    /// `POST /api/v1/deployments/{id}/status`.
    pub async fn set_deployment_status(
        &self,
        id: i64,
        req: &api::DeploymentStatus,
    ) -> Result<api::Deployment, ClientError> {
        self.write(Method::POST, &format!("/api/v1/deployments/{id}/status"), req).await
    }

    /// `POST /api/v1/deployments/{id}/slo-reports`.
    pub async fn report_slo(&self, id: i64, req: &api::SloReport) -> Result<api::SloOutcome, ClientError> {
        self.write(Method::POST, &format!("/api/v1/deployments/{id}/slo-reports"), req).await
    }
}
