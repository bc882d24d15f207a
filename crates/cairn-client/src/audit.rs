//! The audit chain (`/api/v1/audit/…`), the server's public signing keys
//! (`/.well-known/cairn/signing-keys`) and the signatures of a version, as described in
//! `docs/AUDIT.md`.
//!
//! The export is handed to the caller chunk by chunk ([`AuditExport::chunk`]): it can be as
//! long as the whole history, so it is never held in memory.

use bytes::Bytes;
use cairn_api_types as api;
use reqwest::Method;
use serde::Serialize;

use crate::{Client, ClientError, model_path, seg};

/// An export in progress: the JSON Lines body, read chunk by chunk.
#[derive(Debug)]
pub struct AuditExport {
    resp: reqwest::Response,
}

impl AuditExport {
    /// The next chunk of the body; `None` at its end. A chunk may end in the middle of a
    /// line.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        Ok(self.resp.chunk().await?)
    }
}

/// Query of `GET /api/v1/audit/checkpoints`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct CheckpointsQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    after_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
}

impl Client {
    /// `GET /api/v1/audit/chain`: the chain's head, anchor and newest checkpoint.
    pub async fn audit_chain(&self) -> Result<api::AuditChain, ClientError> {
        self.get("/api/v1/audit/chain").await
    }

    /// `GET /api/v1/audit/checkpoints`: signed checkpoints after event `after_seq`, oldest
    /// first.
    pub async fn list_checkpoints(
        &self,
        after_seq: Option<i64>,
        limit: Option<usize>,
    ) -> Result<api::CheckpointList, ClientError> {
        self.get_q("/api/v1/audit/checkpoints", &CheckpointsQuery { after_seq, limit }).await
    }

    /// `POST /api/v1/audit/checkpoints`: signs a checkpoint of the current head (the server
    /// answers 409 when the chain is empty).
    pub async fn create_checkpoint(&self) -> Result<api::Checkpoint, ClientError> {
        self.send::<(), (), api::Checkpoint>(Method::POST, "/api/v1/audit/checkpoints", None, None)
            .await?
            .ok_or_else(crate::empty)
    }

    /// `GET /api/v1/audit/export`: starts a JSON Lines export. `query` holds the filters
    /// (`from_seq`, `to_seq`, `actor`, `action`, `target`, `outcome`, `since`, `until`).
    pub async fn audit_export(&self, query: &[(&str, &str)]) -> Result<AuditExport, ClientError> {
        let req = self.authorised(self.http.get(format!("{}/api/v1/audit/export", self.base))).query(query);
        let resp = self.check(req.send().await?).await?;
        Ok(AuditExport { resp })
    }

    /// `POST /api/v1/audit/prune`: applies the server's retention rules now (administrators;
    /// with `dry_run`, only reports what would be pruned).
    pub async fn audit_prune(&self, dry_run: bool) -> Result<api::AuditPrune, ClientError> {
        self.write(Method::POST, "/api/v1/audit/prune", &api::AuditPruneRequest { dry_run }).await
    }

    /// `GET /api/v1/audit/report`: a compliance report over `[since, until)` (RFC 3339), as
    /// `format` (`json` or `markdown`), returned as the server wrote it.
    pub async fn audit_report(
        &self,
        since: Option<&str>,
        until: Option<&str>,
        format: &str,
    ) -> Result<String, ClientError> {
        let mut q = vec![("format", format)];
        q.extend(since.map(|s| ("since", s)));
        q.extend(until.map(|u| ("until", u)));
        let req = self.authorised(self.http.get(format!("{}/api/v1/audit/report", self.base))).query(&q);
        let resp = self.check(req.send().await?).await?;
        Ok(resp.text().await?)
    }

    /// `GET /.well-known/cairn/signing-keys`: every key the registry has signed with. No
    /// credential is needed; what it returns is only as trustworthy as the server.
    pub async fn signing_keys(&self) -> Result<api::SigningKeys, ClientError> {
        self.get("/.well-known/cairn/signing-keys").await
    }

    /// `GET …/versions/{v}/signatures`: the server's signature of a version and its
    /// pusher's. `version` is a number or `@alias`.
    pub async fn version_signatures(&self, model: &str, version: &str) -> Result<api::VersionSignatures, ClientError> {
        self.get(&format!("{}/versions/{}/signatures", model_path(model), seg(version))).await
    }

    /// `GET …/versions/{v}/scan`: what artifact scanning found in each file of a version.
    pub async fn version_scan(&self, model: &str, version: &str) -> Result<api::VersionScan, ClientError> {
        self.get(&format!("{}/versions/{}/scan", model_path(model), seg(version))).await
    }

    /// `POST …/versions/{v}/scan`: scan a version's files again and replace the results.
    pub async fn rescan_version(&self, model: &str, version: &str) -> Result<api::VersionScan, ClientError> {
        self.write(
            Method::POST,
            &format!("{}/versions/{}/scan", model_path(model), seg(version)),
            &serde_json::json!({}),
        )
        .await
    }
}
