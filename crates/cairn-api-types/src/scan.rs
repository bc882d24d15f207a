//! Artifact scan results on the wire (docs/SUPPLY_CHAIN.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One finding in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScanFinding {
    /// Stable rule id: `pickle.unsafe_import`, `pickle.unresolved_import`,
    /// `pickle.extension_import`, `keras.lambda_layer`, `safetensors.malformed`,
    /// `gguf.malformed`, `onnx.malformed`, `onnx.external_data_path`, `numpy.malformed`,
    /// `archive.malformed`, `archive.unsafe_path`, `template.code_access`, `secret.<rule>`.
    pub rule: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    pub message: String,
    /// What matched, e.g. the import `os.system`; empty when there is nothing to name.
    #[serde(default)]
    pub subject: String,
    /// Where in the file: an archive entry, a byte offset, a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// The scan of one file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileScanResult {
    pub path: String,
    /// SHA-256 of the file (lower-case hex).
    pub sha256: String,
    /// What it was read as: `pickle`, `pytorch`, `numpy`, `zip`, `keras`, `keras_h5`,
    /// `safetensors`, `gguf`, `onnx`, `text`, `license` or `other`.
    pub format: String,
    /// `scanned`, `skipped` (a format the scanner does not examine) or `incomplete` (could not
    /// be read to the end; `error` says why, findings up to there are listed).
    pub status: String,
    /// The worst finding, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_severity: Option<String>,
    #[serde(default)]
    pub findings: Vec<ScanFinding>,
    /// Every global a pickle in the file imports (`module.name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<String>,
    /// SPDX id of a licence file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Scanner and rule-set version.
    pub scanner: String,
    /// When (RFC 3339).
    pub scanned_at: String,
}

/// Totals over a version's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScanSummary {
    /// Whether the version was scanned at all (versions committed with scanning off, or before
    /// it existed, are not until rescanned).
    pub scanned: bool,
    pub files: u64,
    pub skipped: u64,
    pub incomplete: u64,
    /// Findings per severity.
    pub findings: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_severity: Option<String>,
    /// No findings and no incomplete file.
    pub clean: bool,
    /// SPDX ids of the licence files.
    pub licenses: Vec<String>,
}

/// `GET /api/v1/models/{namespace}/{name}/versions/{version}/scan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionScan {
    pub namespace: String,
    pub name: String,
    pub version: i64,
    /// The version's manifest digest.
    pub digest: String,
    pub summary: ScanSummary,
    pub files: Vec<FileScanResult>,
}
