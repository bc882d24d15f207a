//! Lineage on the wire (docs/SUPPLY_CHAIN.md): the inputs a version was made from, and walks
//! over them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One input of a version, as recorded by a client: at push time (in the commit body) or
/// later (`POST …/versions/{version}/lineage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LineageInput {
    /// A dataset the version was trained (or fine-tuned) on.
    Dataset {
        /// Its name (`imagenet-1k`).
        name: String,
        /// Its version or snapshot.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        version: String,
        /// Where it lives (`s3://…`).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        uri: String,
        /// A digest of its content, `algorithm:hex` (`sha256:…`).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        digest: String,
    },
    /// The training run that produced it.
    Run {
        /// Where it ran: `mlflow`, `sagemaker`, `kubeflow`, … (lower case).
        platform: String,
        /// The run's id there.
        id: String,
        /// A link to the run.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        uri: String,
        /// Its parameters.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<String, String>,
    },
    /// The code it was built from.
    Code {
        /// The repository.
        repository: String,
        /// The full commit id (40 or 64 hex digits).
        commit: String,
    },
    /// A model it derives from: a version here (`ns/name:3`, `ns/name@alias`,
    /// `ns/name:1.4.2`, recorded as the number it resolves to) or a model elsewhere by an id
    /// with a scheme (`hf:meta-llama/Llama-3.1-8B`, `https://…`).
    BaseModel {
        /// The model, as above.
        model: String,
        /// The external model's revision.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        revision: String,
    },
}

/// Body of `POST …/versions/{version}/lineage`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLineage {
    /// The inputs to record (at most 100); those already recorded are left as they are.
    pub inputs: Vec<LineageInput>,
}

/// A recorded input of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineageEdge {
    /// Its id (`DELETE …/lineage/{id}` removes it while the version is a draft).
    pub id: i64,
    /// `dataset`, `run`, `code` or `base_model`.
    pub kind: String,
    /// Dataset name, run id, repository, or the base model (`ns/name` here, an id with a
    /// scheme elsewhere).
    pub name: String,
    /// Dataset version, commit, the base model's version number here, or its revision.
    #[serde(rename = "ref", default)]
    pub reference: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// The node this edge comes from (see [`LineageNode::id`]).
    pub from: String,
    /// The version it is an input of (a node id).
    pub to: String,
    pub recorded_at: String,
    pub recorded_by: String,
}

/// The inputs recorded for one version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionLineage {
    /// `namespace/name`.
    pub model: String,
    pub version: i64,
    pub inputs: Vec<LineageEdge>,
}

/// A node of a lineage graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineageNode {
    /// Stable within the answer: `version:ns/name:3`, `dataset:name@version`,
    /// `run:platform:id`, `code:repository@commit`, `model:hf:org/name@revision`, or
    /// `hidden:N` for a version in a namespace the caller may not read.
    pub id: String,
    /// `version`, `dataset`, `run`, `code`, `model` (external) or `hidden`.
    pub kind: String,
    /// Steps from where the walk started (0 for the start).
    pub depth: u32,
    /// A version's model (`ns/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A version's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// A version's lifecycle stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// A version's semver label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// A version's manifest digest, or a dataset's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The name of anything else (dataset, run id, repository, external model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its version, commit or revision.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Answer of `GET …/versions/{version}/lineage/graph` and `GET /api/v1/lineage/impact`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LineageGraph {
    /// `up` or `down`.
    pub direction: String,
    /// The deepest step asked for.
    pub depth: u32,
    /// The node the walk started from (absent for an impact query from a dataset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<LineageEdge>,
    /// More was found than the answer holds (10,000 edges).
    pub truncated: bool,
}

/// A version an impact query found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImpactedVersion {
    /// `namespace/name`.
    pub model: String,
    pub version: i64,
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Steps from the input or version asked about (1: records it directly).
    pub depth: u32,
}

/// Answer of `GET /api/v1/lineage/impact`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Impact {
    /// What was asked about, as a node id.
    pub source: String,
    /// The versions affected (readable by the caller), nearest first.
    pub versions: Vec<ImpactedVersion>,
    /// Versions in namespaces the caller may not read are counted, not named.
    pub hidden: usize,
    /// The walk hit its limit: there may be more.
    pub truncated: bool,
}
