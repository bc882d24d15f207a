//! Lineage (`…/versions/{v}/lineage`, `/api/v1/lineage/impact`), as described in
//! `docs/SUPPLY_CHAIN.md`.

use cairn_api_types as api;
use reqwest::Method;
use serde::Serialize;

use crate::{Client, ClientError, model_path, seg};

/// Query of a walk.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GraphQuery {
    /// `up` or `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Steps, 1 to 50.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
}

/// Query of an impact search: set exactly one of the first five.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImpactQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Only versions in this stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
}

impl Client {
    /// `GET …/versions/{v}/lineage`: the inputs recorded for a version.
    pub async fn lineage(&self, model: &str, version: &str) -> Result<api::VersionLineage, ClientError> {
        self.get(&format!("{}/versions/{}/lineage", model_path(model), seg(version))).await
    }

    /// `POST …/versions/{v}/lineage`: records more inputs (those already there are kept).
    pub async fn add_lineage(
        &self,
        model: &str,
        version: &str,
        inputs: Vec<api::LineageInput>,
    ) -> Result<api::VersionLineage, ClientError> {
        let path = format!("{}/versions/{}/lineage", model_path(model), seg(version));
        self.write(Method::POST, &path, &api::AddLineage { inputs }).await
    }

    /// `DELETE …/versions/{v}/lineage/{id}`: removes an input while the version is a draft.
    pub async fn remove_lineage(&self, model: &str, version: &str, id: i64) -> Result<(), ClientError> {
        self.delete(&format!("{}/versions/{}/lineage/{id}", model_path(model), seg(version))).await
    }

    /// `GET …/versions/{v}/lineage/graph`: a walk up or down from a version.
    pub async fn lineage_graph(
        &self,
        model: &str,
        version: &str,
        q: &GraphQuery,
    ) -> Result<api::LineageGraph, ClientError> {
        self.get_q(&format!("{}/versions/{}/lineage/graph", model_path(model), seg(version)), q).await
    }

    /// `GET /api/v1/lineage/impact`: the versions affected by a dataset, run, commit or model.
    pub async fn lineage_impact(&self, q: &ImpactQuery) -> Result<api::Impact, ClientError> {
        self.get_q("/api/v1/lineage/impact", q).await
    }
}
