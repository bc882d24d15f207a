//! Wire types of role grants.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A role held by an account, globally or in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleGrant {
    /// Grant id.
    pub id: String,
    /// The account's login name.
    pub username: String,
    /// `viewer`, `model_owner`, `mrc`, `security`, `sre`, `auditor` or `admin`.
    pub role: String,
    /// The namespace, or absent for a global grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Granted at.
    pub created_at: String,
    /// Granted by.
    pub created_by: String,
}

/// Grants, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleGrantList {
    /// The grants.
    pub grants: Vec<RoleGrant>,
}

/// Grant a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleGrant {
    /// The account's login name.
    pub username: String,
    /// The role.
    pub role: String,
    /// The namespace; absent for a global grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
