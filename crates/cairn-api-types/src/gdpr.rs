//! Data-subject requests (`/api/v1/privacy/…`, docs/PRIVACY.md): the inventory of personal
//! data, exports, rectification, erasure and the request log.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One field of personal data the registry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PersonalDataField {
    /// What it is.
    pub field: String,
    /// Where: `table.column`.
    pub location: String,
    /// The category of data.
    pub category: String,
    /// Why it may be processed.
    pub legal_basis: String,
    /// How long it is kept.
    pub retention: String,
}

/// Answer of `GET /api/v1/privacy/inventory`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PersonalDataInventory {
    /// Every field.
    pub fields: Vec<PersonalDataField>,
}

/// Answer of `GET /api/v1/privacy/subjects/{username}`: everything held about a person
/// (`format` `cairn.personal-data/v1`; never a password hash, token or TOTP secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PersonalDataExport {
    /// The logged request this export answers.
    pub request_id: String,
    /// The data: `format`, `account`, `api_keys`, `sessions`, `role_grants`, `auth_failures`,
    /// `rate_limits`, `authored`, `audit_events`, `requests`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Body of `PATCH /api/v1/privacy/subjects/{username}`: the corrected details; absent
/// fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RectifySubject {
    /// The corrected shown name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The corrected contact address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Answer of `DELETE /api/v1/privacy/subjects/{username}`: what the erasure did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErasureResult {
    /// The logged request.
    pub request_id: String,
    /// The erased account's id.
    pub subject_id: String,
    /// What now stands where the person was named: `erased:<user id>`.
    pub pseudonym: String,
    /// The audit events whose details were pseudonymised (listed in the `gdpr.erase` event).
    pub erased_events: Vec<i64>,
    /// API keys deleted.
    pub api_keys_deleted: u64,
    /// Sessions deleted.
    pub sessions_deleted: u64,
    /// Role grants deleted.
    pub grants_deleted: u64,
    /// Failed-login and rate counters deleted.
    pub counters_deleted: u64,
    /// Authorship values replaced by the pseudonym.
    pub records_rewritten: u64,
}

/// A logged data-subject request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GdprRequest {
    /// Id.
    pub id: String,
    /// `access`, `portability`, `rectification` or `erasure`.
    pub kind: String,
    /// The person's login name, or `erased:<user id>` after an erasure.
    pub subject: String,
    /// The person's account id.
    pub subject_id: String,
    /// `open`, `completed` or `rejected`.
    pub status: String,
    /// Who made the request (`user:admin`).
    pub requested_by: String,
    /// When.
    pub requested_at: String,
    /// When it was fulfilled or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// What was done, or why it was refused.
    pub note: String,
}

/// Answer of `GET /api/v1/privacy/requests`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GdprRequestList {
    /// The requests.
    pub requests: Vec<GdprRequest>,
}
