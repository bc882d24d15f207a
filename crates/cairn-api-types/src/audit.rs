//! The audit chain, its checkpoints, signing keys and version signatures (docs/AUDIT.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A signature over a statement about a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// `server` (made at commit) or `user` (made by the pusher).
    pub kind: String,
    /// The signed statement: the exact JSON text that was signed.
    pub statement: String,
    /// The signer's key id (`ed25519:` + 32 hex characters).
    pub key_id: String,
    /// The signer's public key (SPKI PEM).
    pub public_key: String,
    /// The Ed25519 signature (standard base64).
    pub signature: String,
}

/// The answer to `GET …/versions/{version}/signatures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionSignatures {
    /// `namespace/name`.
    pub model: String,
    /// The version number.
    pub version: i64,
    /// The version digest.
    pub digest: String,
    /// The server's signature first, then the pusher's.
    pub signatures: Vec<Signature>,
}

/// A signed checkpoint of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The last event covered.
    pub seq: i64,
    /// Its chain hash (hex).
    pub head: String,
    /// When it was signed, in ms since the Unix epoch (part of what is signed).
    pub signed_at: i64,
    /// The signing key's id.
    pub key_id: String,
    /// The Ed25519 signature (standard base64).
    pub signature: String,
}

/// A page of checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointList {
    /// Oldest first.
    pub checkpoints: Vec<Checkpoint>,
    /// Pass as `after_seq` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after_seq: Option<i64>,
}

/// Where the audit chain stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditChain {
    /// The last event's sequence number (0 when there is none).
    pub head_seq: i64,
    /// Its chain hash (hex).
    pub head_hash: String,
    /// The event before the first one kept (0: the chain starts at the genesis).
    pub anchor_seq: i64,
    /// Its chain hash (hex).
    pub anchor_hash: String,
    /// The newest signed checkpoint.
    pub last_checkpoint: Option<Checkpoint>,
    /// The key this server signs with.
    pub signing_key_id: String,
}

/// One of the server's signing keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SigningKeyInfo {
    /// `ed25519:` + 32 hex characters (the first half of the SHA-256 of the raw key).
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// SPKI PEM.
    pub public_key: String,
    /// Whether this server signs with it now.
    pub current: bool,
    /// When a server first announced it (RFC 3339).
    pub first_seen: String,
}

/// The answer to `GET /.well-known/cairn/signing-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SigningKeys {
    /// Every key the registry has signed with, oldest first.
    pub keys: Vec<SigningKeyInfo>,
}

/// Body of `POST /api/v1/audit/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditPruneRequest {
    /// Only report what would be pruned.
    #[serde(default)]
    pub dry_run: bool,
}

/// Details of events of one action pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrunedAction {
    /// The action.
    pub action: String,
    /// Events of it before this time (RFC 3339) have no details any more.
    pub before: String,
    /// How many were pruned now.
    pub events: u64,
}

/// A retention rule in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetentionRule {
    /// An action, a family (`auth.*`) or `*` (the default).
    pub actions: String,
    /// Days kept.
    pub days: u32,
}

/// What a pruning of the audit chain did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPrune {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The chain's anchor afterwards: the event before the first one kept.
    pub anchor_seq: i64,
    /// Events removed from the start of the chain.
    pub removed_events: u64,
    /// Events whose details were pruned, per action.
    pub pruned_details: Vec<PrunedAction>,
    /// The retention in force.
    pub retention: Vec<RetentionRule>,
    /// Why expired events were kept, if some were.
    pub note: Option<String>,
}
