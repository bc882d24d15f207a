//! Wire types of Cairn's native API (`/api/v1`), shared by the server and the client.
//!
//! Request bodies reject unknown fields, so a typo in a client is an error rather than a
//! silently ignored setting. Times are RFC 3339 strings in UTC with milliseconds.

pub mod audit;
pub mod deploy;
pub mod gdpr;
pub mod governance;
pub mod grants;
pub mod lineage;
pub mod scan;
pub mod session;
pub mod webhooks;

pub use audit::*;
pub use deploy::*;
pub use gdpr::*;
pub use governance::*;
pub use grants::*;
pub use lineage::*;
pub use scan::*;
pub use session::*;
pub use webhooks::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code (`not_found`, `invalid_argument`, `unauthenticated`, …).
    pub code: String,
    /// A human-readable explanation that says what to do.
    pub message: String,
}

/// A model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Model {
    /// `namespace/name`.
    pub full_name: String,
    /// The namespace (team) that owns the model.
    pub namespace: String,
    /// The model's name inside its namespace.
    pub name: String,
    /// Free text (Markdown).
    pub description: String,
    /// The highest version number assigned so far (0 before the first version).
    pub latest_version: i64,
    /// Key/value tags.
    pub tags: BTreeMap<String, String>,
    /// Alias → version number.
    pub aliases: BTreeMap<String, i64>,
    /// `low`, `medium` or `high` (docs/GOVERNANCE.md): how strict approvals for production are.
    #[serde(default)]
    pub risk_tier: String,
    /// The team or group responsible.
    #[serde(default)]
    pub team: String,
    /// The accounts that own the model.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// Last change.
    pub updated_at: String,
    /// Who changed it last.
    pub updated_by: String,
}

/// A page of models.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// The models of this page.
    pub models: Vec<Model>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Body of `POST /api/v1/models`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// `namespace/name`; lower-case letters, digits, `-`, `_` (and `.` in the name).
    pub name: String,
    /// Free text (Markdown).
    #[serde(default)]
    pub description: String,
    /// Initial tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `low` (default), `medium` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_tier: Option<String>,
    /// The team or group responsible.
    #[serde(default)]
    pub team: String,
    /// Owners (existing account names); default: the creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<Vec<String>>,
}

/// Body of `PATCH /api/v1/models/{namespace}/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModel {
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New risk tier; needs `policy.manage` (a model's owners cannot lower their own bar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_tier: Option<String>,
    /// New team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// New owners (replaces the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<Vec<String>>,
}

/// A model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Version {
    /// `namespace/name` of the model.
    pub model: String,
    /// The version number (1, 2, 3 …).
    pub version: i64,
    /// Free text.
    pub description: String,
    /// Where the version came from (a URI).
    pub source: String,
    /// The run that produced it, if known.
    pub run_id: String,
    /// Free-form JSON object.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// `sha256:<hex>` of the version's canonical file manifest (see docs/ARTIFACTS.md).
    #[serde(default)]
    pub digest: String,
    /// How many files the version has.
    #[serde(default)]
    pub file_count: u64,
    /// Total size of its files in bytes.
    #[serde(default)]
    pub size: u64,
    /// Key/value tags.
    pub tags: BTreeMap<String, String>,
    /// Aliases that point at this version.
    pub aliases: Vec<String>,
    /// Semantic version label (`1.4.2`), usable wherever a version number is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// The code commit it was built from (40 hex digits).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code_commit: String,
    /// The training job that produced it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub training_job: String,
    /// Lifecycle stage: draft, submitted, changes_requested, approved_staging, staging,
    /// approved_prod, production, deprecated, retired.
    #[serde(default)]
    pub stage: String,
    /// Creation time.
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// Last change.
    pub updated_at: String,
    /// Who changed it last.
    pub updated_by: String,
}

/// A page of versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    /// The versions of this page.
    pub versions: Vec<Version>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Body of `POST /api/v1/models/{namespace}/{name}/versions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersion {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Where the version came from (a URI such as `s3://…`, `runs:/…`, `git+https://…`).
    #[serde(default)]
    pub source: String,
    /// The run that produced it.
    #[serde(default)]
    pub run_id: String,
    /// Free-form JSON object.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Initial tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Semantic version label (`MAJOR.MINOR.PATCH`), unique per model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Code commit (40 hex digits).
    #[serde(default)]
    pub code_commit: String,
    /// Training job id.
    #[serde(default)]
    pub training_job: String,
    /// What it was made from: datasets, runs, code, base models (docs/SUPPLY_CHAIN.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<LineageInput>,
}

/// Body of `PATCH …/versions/{version}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVersion {
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New metadata object (replaces the old one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// New semantic version label; `""` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// New code commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_commit: Option<String>,
    /// New training job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_job: Option<String>,
}

/// Body of `PUT …/tags/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTag {
    /// The tag's value (at most 5000 bytes).
    pub value: String,
}

/// An alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alias {
    /// The alias name.
    pub alias: String,
    /// The version it points at.
    pub version: i64,
    /// Creation time.
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// When it last moved.
    pub updated_at: String,
    /// Who moved it last.
    pub updated_by: String,
}

/// The aliases of a model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AliasList {
    /// Aliases by name.
    pub aliases: Vec<Alias>,
}

/// Body of `PUT …/aliases/{alias}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    /// The version number the alias should point at.
    pub version: i64,
}

/// A namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Namespace {
    /// The namespace's name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// How many models it holds.
    pub model_count: i64,
    /// Creation time.
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
}

/// All namespaces.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NamespaceList {
    /// Namespaces by name.
    pub namespaces: Vec<Namespace>,
}

/// Body of `POST /api/v1/namespaces`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespace {
    /// Lower-case letters, digits, `-` and `_`.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A role an account holds: globally (no namespace) or in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleHeld {
    /// `viewer`, `model_owner`, `mrc`, `security`, `sre`, `auditor` or `admin`.
    pub role: String,
    /// The namespace, or absent for a global grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The caller, as the server sees them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// Account id.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// `user` (a person) or `service` (a machine account).
    #[serde(default)]
    pub kind: String,
    /// Holds the global `admin` role.
    pub is_admin: bool,
    /// The account's roles.
    #[serde(default)]
    pub roles: Vec<RoleHeld>,
    /// Scopes of the credential used (all three for a login session).
    pub scopes: Vec<String>,
    /// The API key used, if the request carried one.
    pub key_id: Option<String>,
    /// The namespaces the API key is restricted to, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_namespaces: Option<Vec<String>>,
    /// When the API key used expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_expires_at: Option<String>,
    /// The login session used, if the request carried a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The account has confirmed a TOTP authenticator.
    #[serde(default)]
    pub mfa_enabled: bool,
    /// The second-factor requirement is met for this credential (otherwise only MFA
    /// enrolment and `whoami` are allowed).
    #[serde(default)]
    pub mfa_satisfied: bool,
}

/// An audit event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub occurred_at: String,
    /// Who (`user:<name>` or `system`).
    pub actor: String,
    /// With which API key.
    pub key_id: Option<String>,
    /// What (`model.create`, …).
    pub action: String,
    /// On what (`model:team/x`, …).
    pub target: String,
    /// `success` or `denied`.
    pub outcome: String,
    /// State before.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// State after.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// Request id.
    pub request_id: Option<String>,
    /// Client address.
    pub source_ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// The event's hash in the audit chain (hex).
    pub hash: String,
}

/// A page of audit events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEventList {
    /// Events, oldest first.
    pub events: Vec<AuditEvent>,
    /// Pass as `page_token` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Shown name.
    #[serde(default)]
    pub display_name: String,
    /// Contact address.
    #[serde(default)]
    pub email: String,
    /// `user` (a person) or `service` (a machine account: API keys only, never logs in).
    pub kind: String,
    /// Holds the global `admin` role.
    pub is_admin: bool,
    /// Role grants.
    #[serde(default)]
    pub roles: Vec<RoleHeld>,
    /// Has confirmed a TOTP authenticator.
    #[serde(default)]
    pub mfa_enabled: bool,
    /// Disabled accounts cannot authenticate: no login, and their API keys are refused.
    pub disabled: bool,
    /// When the password was last set, if the account has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_changed_at: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    #[serde(default)]
    pub updated_at: String,
}

/// A page of accounts, by login name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    /// The accounts of this page.
    pub users: Vec<User>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Body of `POST /api/v1/users` (administrators only).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login name: lower-case letters, digits, `-`, `_`, `.`; 2–64 characters.
    pub username: String,
    /// Password (12–1024 characters, not a common one, not containing the user name); never
    /// for service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Make the account an administrator (grants the global `admin` role).
    #[serde(default)]
    pub is_admin: bool,
    /// `user` (default) or `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Shown name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Contact address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Body of `PATCH /api/v1/users/{username}`: only the fields given change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New shown name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// New contact address (empty to clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Disable (`true`) or enable (`false`) the account. Disabling ends its sessions and
    /// stops its API keys at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// Body of `POST /api/v1/me/password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password in use now.
    pub current_password: String,
    /// The new password.
    pub new_password: String,
}

/// Body of `POST /api/v1/users/{username}/password` (administrators).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The new password.
    pub new_password: String,
}

/// Body of `POST /api/v1/keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label ("ci", "laptop").
    pub name: String,
    /// Scopes: any of `read`, `write`, `admin`; at most those of the credential making the request.
    pub scopes: Vec<String>,
    /// Days until the key expires (1 to the server's `api_key_max_age_days`, which is also the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
    /// Create the key for this service account instead of the caller (administrators only;
    /// people create their own keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Restrict the key to these namespaces (absent: wherever the account's roles reach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
}

/// A created API key: the token is shown this once and never again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    /// Key id.
    pub id: String,
    /// The secret token; store it now.
    pub token: String,
    /// Label.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The namespaces the key is restricted to (empty: none).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The account that owns the key.
    #[serde(default)]
    pub username: String,
    /// Expiry.
    pub expires_at: Option<String>,
}

/// An API key as listed: never its token nor its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// Key id.
    pub id: String,
    /// Label.
    pub name: String,
    /// The account that owns the key.
    pub username: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The namespaces the key is restricted to (empty: none).
    pub namespaces: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Expiry.
    pub expires_at: Option<String>,
    /// Last use (updated at most once a minute).
    pub last_used_at: Option<String>,
    /// The address it was last used from.
    pub last_used_ip: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// The key that replaced this one when it was rotated.
    pub replaced_by: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

/// API keys, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    /// The keys.
    pub keys: Vec<ApiKey>,
}

/// Body of `POST /api/v1/keys/{key_id}/rotate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKey {
    /// How long the old key keeps working, in seconds (default 3600, at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_secs: Option<u64>,
}

/// A rotated key: the new one (its token shown this once) and the old one, which now
/// expires at the end of the overlap.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RotatedApiKey {
    /// The new key.
    pub key: CreatedApiKey,
    /// The old key as it is now.
    pub previous: ApiKey,
}

/// One file of a version, or of an upload being declared: its relative path (`/`-separated,
/// see `docs/ARTIFACTS.md` for the rules), its size in bytes and the SHA-256 of its content
/// as 64 lower-case hex characters (no `sha256:` prefix).
///
/// Used in requests and answers alike, so it does not refuse unknown fields: a later server
/// may add some to its answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileInfo {
    /// Relative path, e.g. `weights/model.safetensors`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
}

/// Body of `POST /api/v1/models/{namespace}/{name}/uploads`: the files of the version to be.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// Every file of the version (at most 100,000).
    pub files: Vec<FileInfo>,
}

/// What the server holds of one distinct blob of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlobStatus {
    /// SHA-256 of the blob, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The server already has these bytes: do not send them.
    pub present: bool,
    /// How many parts the blob has: `max(1, ceil(size / part_size))`.
    pub parts: u32,
    /// Parts (numbered from 0) the server already holds from an earlier, interrupted upload.
    pub parts_received: Vec<u32>,
}

/// The answer to `POST …/uploads` (201) and `GET /api/v1/uploads/{upload_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UploadStatus {
    /// Id of the upload, for the part, commit and abort routes.
    pub upload_id: String,
    /// When the upload expires unless committed, in milliseconds since the Unix epoch.
    pub expires_at: i64,
    /// Size of every part but a blob's last, in bytes.
    pub part_size: u64,
    /// Each distinct blob of the upload once.
    pub blobs: Vec<BlobStatus>,
}

/// The answer to `PUT /api/v1/uploads/{upload_id}/blobs/{sha256}/parts/{n}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartAccepted {
    /// The blob the part belongs to.
    pub sha256: String,
    /// The part's number.
    pub part: u32,
    /// How many parts of the blob the server now holds.
    pub parts_received: u32,
    /// How many parts the blob has.
    pub parts: u32,
    /// The blob is assembled, verified and stored.
    pub complete: bool,
}

/// Body of `POST /api/v1/uploads/{upload_id}/commit`; every field is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Where the version came from (a URI).
    #[serde(default)]
    pub source: String,
    /// The run that produced it.
    #[serde(default)]
    pub run_id: String,
    /// Free-form JSON object.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Initial tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Aliases to point at the new version.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The pusher's own signatures (kind `user`) over the statement
    /// `{"type":"cairn.push/v1","model":"<ns/name>","manifest_digest":"sha256:…"}`, made
    /// with an Ed25519 key they hold (docs/AUDIT.md). Checked before the commit; at most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Signature>,
    /// Semantic version label (`MAJOR.MINOR.PATCH`), unique per model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Code commit (40 hex digits).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code_commit: String,
    /// Training job id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub training_job: String,
    /// What it was made from: datasets, runs, code, base models (docs/SUPPLY_CHAIN.md),
    /// recorded in the same transaction as the version. At most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<LineageInput>,
}

/// The answer to `GET …/versions/{version}/files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionFiles {
    /// The version digest, `sha256:<hex>` of the canonical manifest.
    pub digest: String,
    /// The files, sorted by path.
    pub files: Vec<FileInfo>,
}
