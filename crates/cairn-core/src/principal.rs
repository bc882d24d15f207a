//! Who is calling, and what they may do: roles, the permission table, and the verified
//! [`Principal`] of a request.
//!
//! Every route declares one [`Permission`]. [`Principal::check`] answers whether the caller
//! may exercise it, globally or in one namespace, from three things that must all agree:
//!
//! 1. a **role grant** of the account that [`Permission::roles`] lists — global, or for the
//!    namespace in question when the permission is namespaced;
//! 2. the **scopes** of the credential (`read` < `write` < `admin`), which narrow the
//!    account's roles but never widen them;
//! 3. the credential's **namespace restriction**, if the API key has one, and the **MFA**
//!    state: a person who must use MFA and has not completed it may only enrol.
//!
//! Deny by default: a permission absent from the table is granted to nobody.

use std::collections::BTreeSet;
use std::fmt;

/// What kind of account stands behind a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// A person.
    User,
    /// A machine account (CI, serving): holds only API keys, never logs in.
    ServiceAccount,
}

/// A scope an API key carries. Scopes narrow what the account itself may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read models, versions, aliases, tags.
    Read,
    /// Create and change models, versions, aliases, tags.
    Write,
    /// Administer users, keys and the server.
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The scope's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    /// Parses a scope's wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role, granted to an account globally or in one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads models, versions, cards and files.
    Viewer,
    /// Pushes and manages models.
    ModelOwner,
    /// Model risk & compliance reviewer.
    Mrc,
    /// Security architect: policies, keys, scans.
    Security,
    /// Site reliability: deployments.
    Sre,
    /// Reads everything, including audit and evidence; changes nothing.
    Auditor,
    /// Administers the server, its users and their grants.
    Admin,
    /// Runs evaluation jobs (`cairn eval worker`): reads models, submits the results of the
    /// jobs it claims, and nothing more.
    Evaluator,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 8] = [
        Role::Viewer,
        Role::ModelOwner,
        Role::Mrc,
        Role::Security,
        Role::Sre,
        Role::Auditor,
        Role::Admin,
        Role::Evaluator,
    ];

    /// The role's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::ModelOwner => "model_owner",
            Self::Mrc => "mrc",
            Self::Security => "security",
            Self::Sre => "sre",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
            Self::Evaluator => "evaluator",
        }
    }

    /// Parses a role's wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role held globally (`namespace: None`) or in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// The namespace it applies to, or every namespace.
    pub namespace: Option<String>,
}

/// Something a route does. Each route declares exactly one; [`Permission::roles`] is the
/// table that says who may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Read models, versions, aliases, tags, files and namespaces of a namespace.
    ModelRead,
    /// Create models, versions and uploads; change descriptions, tags and aliases.
    ModelWrite,
    /// Delete models and versions.
    ModelDelete,
    /// Create namespaces.
    NamespaceCreate,
    /// Delete (empty) namespaces.
    NamespaceDelete,
    /// Read the audit log.
    AuditRead,
    /// Create, change, disable and delete accounts; unlock them; keys of service accounts.
    UserManage,
    /// Grant and revoke roles.
    GrantManage,
    /// Run maintenance (fsck, gc, key rotation).
    ServerAdmin,
    /// Identify oneself and end one's own sessions: open to every authenticated caller,
    /// also one who still has to enrol in MFA.
    SelfBasic,
    /// Enrol in, confirm and manage one's own MFA: open to every authenticated person.
    MfaManage,
    /// Manage one's own API keys, password and sessions.
    SelfManage,
    /// Approve, reject or comment on a version at an approval gate (in a reviewer role).
    VersionReview,
    /// Promote, deprecate and retire versions.
    VersionPromote,
    /// Read policies and evaluation suites.
    PolicyRead,
    /// Apply and change policies and evaluation suites; decide policy exceptions.
    PolicyManage,
    /// Manage a namespace's webhooks and their deliveries.
    WebhookManage,
    /// Record deployments of a namespace's versions, their status and SLO reports; roll them back.
    Deploy,
    /// Create and change deployment environments and their objectives.
    EnvironmentManage,
    /// Claim a namespace's evaluation jobs and submit their results (workers).
    EvalRun,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 20] = [
        Permission::ModelRead,
        Permission::ModelWrite,
        Permission::ModelDelete,
        Permission::NamespaceCreate,
        Permission::NamespaceDelete,
        Permission::AuditRead,
        Permission::UserManage,
        Permission::GrantManage,
        Permission::ServerAdmin,
        Permission::SelfBasic,
        Permission::MfaManage,
        Permission::SelfManage,
        Permission::VersionReview,
        Permission::VersionPromote,
        Permission::PolicyRead,
        Permission::PolicyManage,
        Permission::WebhookManage,
        Permission::Deploy,
        Permission::EnvironmentManage,
        Permission::EvalRun,
    ];

    /// The permission table: the roles that hold this permission. `None` means every
    /// authenticated account, whatever its roles.
    pub fn roles(self) -> Option<&'static [Role]> {
        use Role::*;
        Some(match self {
            Self::ModelRead => &[Viewer, ModelOwner, Mrc, Security, Sre, Auditor, Admin, Evaluator],
            Self::ModelWrite | Self::ModelDelete => &[ModelOwner, Admin],
            Self::AuditRead => &[Auditor, Admin],
            Self::NamespaceCreate
            | Self::NamespaceDelete
            | Self::UserManage
            | Self::GrantManage
            | Self::ServerAdmin => &[Admin],
            // The route is open to these; the approval itself also needs the reviewer role it
            // is given in (mrc, security, sre), which an admin holds only if granted it.
            Self::VersionReview => &[Mrc, Security, Sre, Admin],
            Self::VersionPromote => &[ModelOwner, Sre, Admin],
            Self::PolicyManage => &[Security, Mrc, Admin],
            Self::WebhookManage => &[ModelOwner, Security, Admin],
            Self::Deploy | Self::EnvironmentManage => &[Sre, Admin],
            Self::EvalRun => &[Evaluator, ModelOwner, Admin],
            Self::SelfBasic | Self::MfaManage | Self::SelfManage | Self::PolicyRead => return None,
        })
    }

    /// Whether a grant in one namespace is enough (`true`), or only a global grant counts.
    pub fn is_namespaced(self) -> bool {
        matches!(
            self,
            Self::ModelRead
                | Self::ModelWrite
                | Self::ModelDelete
                | Self::VersionReview
                | Self::VersionPromote
                | Self::WebhookManage
                | Self::Deploy
                | Self::EvalRun
        )
    }

    /// The scope a credential needs for this permission.
    pub fn scope(self) -> Scope {
        match self {
            Self::ModelRead
            | Self::AuditRead
            | Self::SelfBasic
            | Self::MfaManage
            | Self::SelfManage
            | Self::PolicyRead => Scope::Read,
            Self::ModelWrite
            | Self::ModelDelete
            | Self::VersionReview
            | Self::VersionPromote
            | Self::PolicyManage
            | Self::WebhookManage
            | Self::Deploy
            | Self::EnvironmentManage
            | Self::EvalRun => Scope::Write,
            Self::NamespaceCreate
            | Self::NamespaceDelete
            | Self::UserManage
            | Self::GrantManage
            | Self::ServerAdmin => Scope::Admin,
        }
    }

    /// Whether the permission may be used before a required MFA enrolment is complete.
    pub fn allowed_before_mfa(self) -> bool {
        matches!(self, Self::SelfBasic | Self::MfaManage)
    }

    /// Whether the permission changes state (denied attempts at these are audited).
    pub fn is_change(self) -> bool {
        !matches!(self, Self::ModelRead | Self::AuditRead | Self::SelfBasic | Self::PolicyRead)
    }

    /// The permission's name in the table (docs, tests).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelRead => "model.read",
            Self::ModelWrite => "model.write",
            Self::ModelDelete => "model.delete",
            Self::NamespaceCreate => "namespace.create",
            Self::NamespaceDelete => "namespace.delete",
            Self::AuditRead => "audit.read",
            Self::UserManage => "user.manage",
            Self::GrantManage => "grant.manage",
            Self::ServerAdmin => "server.admin",
            Self::SelfBasic => "self.basic",
            Self::MfaManage => "self.mfa",
            Self::SelfManage => "self.manage",
            Self::VersionReview => "version.review",
            Self::VersionPromote => "version.promote",
            Self::PolicyRead => "policy.read",
            Self::PolicyManage => "policy.manage",
            Self::WebhookManage => "webhook.manage",
            Self::Deploy => "deployment.write",
            Self::EnvironmentManage => "environment.manage",
            Self::EvalRun => "eval.run",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which namespaces a caller may use a namespaced permission in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    /// Every namespace.
    All,
    /// Only these (possibly none).
    Only(BTreeSet<String>),
}

impl NamespaceScope {
    /// Whether `namespace` is inside.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(namespace),
        }
    }

    /// The namespaces as a list for a store filter: `None` for all of them.
    pub fn into_list(self) -> Option<Vec<String>> {
        match self {
            Self::All => None,
            Self::Only(set) => Some(set.into_iter().collect()),
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account's id.
    pub user_id: String,
    /// The account's login name.
    pub username: String,
    /// Person or machine.
    pub kind: AccountKind,
    /// The account's role grants.
    pub grants: Vec<Grant>,
    /// The scopes of the credential used for this request (all three for a session).
    pub scopes: BTreeSet<Scope>,
    /// The namespaces the API key is restricted to, if it is.
    pub key_namespaces: Option<BTreeSet<String>>,
    /// The id of the API key used, if any (recorded in audit events).
    pub key_id: Option<String>,
    /// The id of the login session used, if any.
    pub session_id: Option<String>,
    /// `false` when this person must use MFA and has not (enrolled, or — in a session —
    /// given a code): then only [`Permission::allowed_before_mfa`] permissions pass.
    pub mfa_satisfied: bool,
}

/// A refused capability; the message says what was missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Principal {
    fn has_scope(&self, needed: Scope) -> bool {
        // `write` implies `read`; `admin` implies both.
        self.scopes.iter().any(|s| *s >= needed)
    }

    /// Whether the account holds the global role `role`.
    pub fn has_global_role(&self, role: Role) -> bool {
        self.grants.iter().any(|g| g.role == role && g.namespace.is_none())
    }

    /// Whether the account is a global administrator.
    pub fn is_admin(&self) -> bool {
        self.has_global_role(Role::Admin)
    }

    /// Checks that this caller may use `permission`, in `namespace` when the permission is
    /// namespaced (`None` there means "in every namespace", e.g. a listing that the caller
    /// could not otherwise filter).
    pub fn check(&self, permission: Permission, namespace: Option<&str>) -> Result<(), Denied> {
        if !permission.allowed_before_mfa() {
            self.require_mfa()?;
        }
        let scope = permission.scope();
        if !self.has_scope(scope) {
            return Err(Denied(format!("this API key lacks the '{scope}' scope needed for this request")));
        }
        let Some(roles) = permission.roles() else {
            return Ok(());
        };
        if let Some(allowed) = &self.key_namespaces {
            let inside = permission.is_namespaced() && namespace.is_some_and(|ns| allowed.contains(ns));
            if !inside {
                return Err(Denied(match namespace {
                    Some(ns) if permission.is_namespaced() => {
                        format!("this API key is restricted to other namespaces than '{ns}'")
                    }
                    _ => "this API key is restricted to some namespaces and cannot be used for this request".into(),
                }));
            }
        }
        let held = self.grants.iter().any(|g| {
            roles.contains(&g.role)
                && match (&g.namespace, namespace) {
                    (None, _) => true,
                    (Some(gns), Some(ns)) => permission.is_namespaced() && gns == ns,
                    (Some(_), None) => false,
                }
        });
        if held {
            return Ok(());
        }
        let names = roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
        Err(Denied(match namespace {
            Some(ns) if permission.is_namespaced() => {
                format!(
                    "'{}' has no role in namespace '{ns}' that allows {permission} (needs one of: {names})",
                    self.username
                )
            }
            _ => format!("'{}' has no global role that allows {permission} (needs one of: {names})", self.username),
        }))
    }

    /// Refuses a person who must complete multi-factor authentication first.
    pub fn require_mfa(&self) -> Result<(), Denied> {
        if self.mfa_satisfied {
            return Ok(());
        }
        Err(Denied(format!(
            "'{}' must complete multi-factor authentication first: enrol at /api/v1/me/mfa/totp, or log in with a code",
            self.username
        )))
    }

    /// The namespaces in which this caller may use the namespaced `permission` (for filtering
    /// listings and searches to what the caller may see).
    pub fn namespaces_for(&self, permission: Permission) -> NamespaceScope {
        if (!self.mfa_satisfied && !permission.allowed_before_mfa()) || !self.has_scope(permission.scope()) {
            return NamespaceScope::Only(BTreeSet::new());
        }
        let roles = permission.roles().unwrap_or(&Role::ALL);
        let mut from_roles = BTreeSet::new();
        let mut global = false;
        for g in self.grants.iter().filter(|g| roles.contains(&g.role)) {
            match &g.namespace {
                None => global = true,
                Some(ns) if permission.is_namespaced() => {
                    from_roles.insert(ns.clone());
                }
                Some(_) => {}
            }
        }
        match (&self.key_namespaces, global) {
            (Some(keys), true) => NamespaceScope::Only(keys.clone()),
            (Some(keys), false) => NamespaceScope::Only(keys.intersection(&from_roles).cloned().collect()),
            (None, true) => NamespaceScope::All,
            (None, false) => NamespaceScope::Only(from_roles),
        }
    }

    /// The actor string written into audit events: `user:<name>` or `service:<name>`.
    pub fn actor(&self) -> String {
        match self.kind {
            AccountKind::User => format!("user:{}", self.username),
            AccountKind::ServiceAccount => format!("service:{}", self.username),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &[Scope], grants: &[(Role, Option<&str>)]) -> Principal {
        Principal {
            user_id: "u1".into(),
            username: "alice".into(),
            kind: AccountKind::User,
            grants: grants.iter().map(|(r, ns)| Grant { role: *r, namespace: ns.map(str::to_owned) }).collect(),
            scopes: scopes.iter().copied().collect(),
            key_namespaces: None,
            key_id: None,
            session_id: None,
            mfa_satisfied: true,
        }
    }

    #[test]
    fn scopes_narrow_roles() {
        let all = [Scope::Read, Scope::Write, Scope::Admin];
        let admin = principal(&all, &[(Role::Admin, None)]);
        for p in Permission::ALL {
            assert!(admin.check(p, Some("team")).is_ok(), "{p}");
        }
        let admin_read_key = principal(&[Scope::Read], &[(Role::Admin, None)]);
        assert!(admin_read_key.check(Permission::ModelRead, Some("team")).is_ok());
        assert!(admin_read_key.check(Permission::ModelWrite, Some("team")).is_err());
        assert!(admin_read_key.check(Permission::UserManage, None).is_err());
        let owner_admin_key = principal(&all, &[(Role::ModelOwner, None)]);
        assert!(owner_admin_key.check(Permission::UserManage, None).is_err(), "scopes never widen roles");
        let nothing = principal(&[], &[(Role::Admin, None)]);
        assert!(nothing.check(Permission::SelfBasic, None).is_err());
    }

    #[test]
    fn namespaced_grants_stay_in_their_namespace() {
        let all = [Scope::Read, Scope::Write, Scope::Admin];
        let owner = principal(&all, &[(Role::ModelOwner, Some("a"))]);
        assert!(owner.check(Permission::ModelWrite, Some("a")).is_ok());
        assert!(owner.check(Permission::ModelRead, Some("a")).is_ok());
        assert!(owner.check(Permission::ModelWrite, Some("b")).is_err());
        assert!(owner.check(Permission::ModelRead, Some("b")).is_err());
        assert!(owner.check(Permission::ModelRead, None).is_err(), "no global read from a namespaced grant");
        let ns_admin = principal(&all, &[(Role::Admin, Some("a"))]);
        assert!(ns_admin.check(Permission::UserManage, None).is_err(), "admin of a namespace is not a server admin");
        assert!(ns_admin.check(Permission::ModelDelete, Some("a")).is_ok());
        assert_eq!(owner.namespaces_for(Permission::ModelRead), NamespaceScope::Only(["a".to_owned()].into()));
        assert_eq!(principal(&all, &[(Role::Viewer, None)]).namespaces_for(Permission::ModelRead), NamespaceScope::All);
        assert_eq!(
            principal(&all, &[(Role::Viewer, None)]).namespaces_for(Permission::ModelWrite),
            NamespaceScope::Only(BTreeSet::new())
        );
    }

    #[test]
    fn key_restrictions_and_mfa() {
        let all = [Scope::Read, Scope::Write, Scope::Admin];
        let mut p = principal(&all, &[(Role::Admin, None)]);
        p.key_namespaces = Some(["a".to_owned()].into());
        assert!(p.check(Permission::ModelWrite, Some("a")).is_ok());
        assert!(p.check(Permission::ModelWrite, Some("b")).is_err());
        assert!(p.check(Permission::UserManage, None).is_err());
        assert!(p.check(Permission::SelfManage, None).is_ok());
        assert_eq!(p.namespaces_for(Permission::ModelRead), NamespaceScope::Only(["a".to_owned()].into()));
        let mut q = principal(&all, &[(Role::Admin, None)]);
        q.mfa_satisfied = false;
        assert!(q.check(Permission::SelfBasic, None).is_ok());
        assert!(q.check(Permission::MfaManage, None).is_ok());
        assert!(q.check(Permission::SelfManage, None).is_err());
        assert!(q.check(Permission::ModelRead, Some("a")).is_err());
        assert_eq!(q.namespaces_for(Permission::ModelRead), NamespaceScope::Only(BTreeSet::new()));
    }

    /// The table in docs/SECURITY.md is the table in this file.
    #[test]
    fn the_security_doc_shows_this_table() {
        let doc = include_str!("../../../docs/SECURITY.md");
        let start = doc.find("<!-- permission-table").expect("table start marker");
        let end = doc.find("<!-- /permission-table -->").expect("table end marker");
        let documented: Vec<&str> = doc[start..end].lines().filter(|l| l.starts_with("| `")).map(str::trim).collect();
        let expected: Vec<String> = Permission::ALL
            .iter()
            .map(|p| {
                let reach = match (p.roles(), p.is_namespaced()) {
                    (None, _) => "—",
                    (Some(_), true) => "a namespace",
                    (Some(_), false) => "global",
                };
                let roles = p.roles().map_or_else(
                    || "every authenticated account".to_owned(),
                    |r| r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
                );
                format!("| `{p}` | {} | {reach} | {roles} |", p.scope())
            })
            .collect();
        assert_eq!(documented, expected, "docs/SECURITY.md's permission table is out of date");
    }

    #[test]
    fn the_table_is_deny_by_default_and_complete() {
        for p in Permission::ALL {
            if let Some(roles) = p.roles() {
                assert!(roles.contains(&Role::Admin), "{p}: admins hold every role-gated permission");
            }
        }
        let auditor = principal(&[Scope::Read], &[(Role::Auditor, None)]);
        assert!(auditor.check(Permission::AuditRead, None).is_ok());
        assert!(auditor.check(Permission::ModelRead, Some("x")).is_ok());
        let auditor_rw = principal(&[Scope::Read, Scope::Write, Scope::Admin], &[(Role::Auditor, None)]);
        for p in Permission::ALL.into_iter().filter(|p| p.roles().is_some() && p.scope() != Scope::Read) {
            assert!(auditor_rw.check(p, Some("x")).is_err(), "auditors change nothing: {p}");
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
