//! Who is calling, and what they may do.
//!
//! A [`Principal`] is built by the server from a verified credential. Handlers ask it for a
//! capability with [`Principal::require`]; the answer is either `Ok(())` or a
//! [`Denied`] that the server turns into `403`. Roles per namespace, MFA state and service
//! accounts slot into this type later without changing the handlers' calls.

use std::collections::BTreeSet;
use std::fmt;

/// What kind of account stands behind a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// A person.
    User,
    /// A machine account (CI, serving), owned by an admin.
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

/// Something a caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read registry content.
    Read,
    /// Change registry content.
    Write,
    /// Administer the server.
    Admin,
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
    /// Whether the account is a server administrator.
    pub is_admin: bool,
    /// The scopes of the credential used for this request.
    pub scopes: BTreeSet<Scope>,
    /// The id of the API key used, if any (recorded in audit events).
    pub key_id: Option<String>,
}

/// A refused capability; the message says what was missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Principal {
    /// Checks that this caller may perform `action`.
    pub fn require(&self, action: Action) -> Result<(), Denied> {
        let scope = match action {
            Action::Read => Scope::Read,
            Action::Write => Scope::Write,
            Action::Admin => Scope::Admin,
        };
        // `write` implies `read`; `admin` implies both.
        let has_scope = self.scopes.contains(&Scope::Admin)
            || self.scopes.contains(&scope)
            || (scope == Scope::Read && self.scopes.contains(&Scope::Write));
        if !has_scope {
            return Err(Denied(format!("this API key lacks the '{scope}' scope needed for this request")));
        }
        if action == Action::Admin && !self.is_admin {
            return Err(Denied(format!("user '{}' is not an administrator", self.username)));
        }
        Ok(())
    }

    /// The actor string written into audit events: `user:<name>` plus the key id.
    pub fn actor(&self) -> String {
        format!("user:{}", self.username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &[Scope], admin: bool) -> Principal {
        Principal {
            user_id: "u1".into(),
            username: "alice".into(),
            kind: AccountKind::User,
            is_admin: admin,
            scopes: scopes.iter().copied().collect(),
            key_id: None,
        }
    }

    #[test]
    fn scopes_gate_actions() {
        let reader = principal(&[Scope::Read], false);
        assert!(reader.require(Action::Read).is_ok());
        assert!(reader.require(Action::Write).is_err());
        let writer = principal(&[Scope::Write], false);
        assert!(writer.require(Action::Read).is_ok());
        assert!(writer.require(Action::Write).is_ok());
        assert!(writer.require(Action::Admin).is_err());
        let admin_key_non_admin_user = principal(&[Scope::Admin], false);
        assert!(admin_key_non_admin_user.require(Action::Admin).is_err());
        let admin = principal(&[Scope::Admin], true);
        assert!(admin.require(Action::Admin).is_ok());
        assert!(admin.require(Action::Write).is_ok());
        let none = principal(&[], true);
        assert!(none.require(Action::Read).is_err());
    }
}
