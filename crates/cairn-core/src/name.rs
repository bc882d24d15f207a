//! Validated names: namespaces, model names, aliases, tag keys and values.
//!
//! Every type here can only be built valid, so functions that take them never re-check.

use std::fmt;
use std::str::FromStr;

/// Why a name was refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid {kind} {value:?}: {reason}")]
    Invalid { kind: &'static str, value: String, reason: String },
}

fn invalid(kind: &'static str, value: &str, reason: impl Into<String>) -> NameError {
    // Echo at most a bounded prefix of what the user sent.
    let shown: String = value.chars().take(80).collect();
    NameError::Invalid { kind, value: shown, reason: reason.into() }
}

fn check_charset(kind: &'static str, value: &str, max_len: usize, allow_dot: bool) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(invalid(kind, value, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(invalid(kind, value, format!("must be at most {max_len} characters")));
    }
    let allowed = if allow_dot {
        "lower-case letters, digits, '-', '_' and '.'"
    } else {
        "lower-case letters, digits, '-' and '_'"
    };
    for (i, c) in value.char_indices() {
        let ok = c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || (allow_dot && c == '.');
        if !ok {
            return Err(invalid(
                kind,
                value,
                format!("character {c:?} at position {i} is not allowed (use {allowed})"),
            ));
        }
    }
    let first = value.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(invalid(kind, value, "must start with a lower-case letter or a digit"));
    }
    let last = value.as_bytes()[value.len() - 1];
    if !(last.is_ascii_lowercase() || last.is_ascii_digit()) {
        return Err(invalid(kind, value, "must end with a lower-case letter or a digit"));
    }
    if value.contains("..") {
        return Err(invalid(kind, value, "must not contain '..'"));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $ty:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Consumes the name, returning its text.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::parse(&s)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// A namespace (team): lower-case letters, digits, `-` and `_`; at most 64 characters; no `.`.
    Namespace
);
string_newtype!(
    /// The name part of a model: lower-case letters, digits, `-`, `_` and `.`; at most 128 characters.
    ModelName
);
string_newtype!(
    /// An alias (`@champion`): lower-case letters, digits, `-` and `_`, starting with a letter.
    AliasName
);
string_newtype!(
    /// A tag key: 1 to 250 printable characters.
    TagKey
);

impl Namespace {
    /// Longest namespace accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses a namespace.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_charset("namespace", s, Self::MAX_LEN, false)?;
        Ok(Self(s.to_owned()))
    }
}

impl ModelName {
    /// Longest model name accepted.
    pub const MAX_LEN: usize = 128;

    /// Parses the name part of a model.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_charset("model name", s, Self::MAX_LEN, true)?;
        Ok(Self(s.to_owned()))
    }
}

impl AliasName {
    /// Longest alias accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses an alias, with or without its leading `@`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let s = s.strip_prefix('@').unwrap_or(s);
        check_charset("alias", s, Self::MAX_LEN, false)?;
        if !s.as_bytes()[0].is_ascii_lowercase() {
            // `@3` would be ambiguous with version 3.
            return Err(invalid("alias", s, "must start with a lower-case letter"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TagKey {
    /// Longest tag key accepted.
    pub const MAX_LEN: usize = 250;

    /// Parses a tag key.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(invalid("tag key", s, "must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(invalid("tag key", s, format!("must be at most {} bytes", Self::MAX_LEN)));
        }
        if s.chars().any(char::is_control) {
            return Err(invalid("tag key", s, "must not contain control characters"));
        }
        if s.trim() != s {
            return Err(invalid("tag key", s, "must not start or end with whitespace"));
        }
        Ok(Self(s.to_owned()))
    }
}

/// Longest tag value accepted, in bytes (MLflow allows 5000 for model tags).
pub const MAX_TAG_VALUE_LEN: usize = 5000;

/// Checks a tag value: at most [`MAX_TAG_VALUE_LEN`] bytes.
pub fn check_tag_value(v: &str) -> Result<(), NameError> {
    if v.len() > MAX_TAG_VALUE_LEN {
        return Err(invalid("tag value", v, format!("must be at most {MAX_TAG_VALUE_LEN} bytes")));
    }
    Ok(())
}

/// Longest description accepted, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 64 * 1024;

/// A model's full name, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelRef {
    /// The namespace that owns the model.
    pub namespace: Namespace,
    /// The model's name inside its namespace.
    pub name: ModelName,
}

impl ModelRef {
    /// Builds a reference from its parts.
    pub fn new(namespace: Namespace, name: ModelName) -> Self {
        Self { namespace, name }
    }

    /// Parses `namespace/name`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let Some((ns, name)) = s.split_once('/') else {
            return Err(invalid("model", s, "must be written namespace/name, e.g. team/classifier"));
        };
        Ok(Self { namespace: Namespace::parse(ns)?, name: ModelName::parse(name)? })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for ModelRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

/// How a version is selected: by number or through an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// Version `n` (1, 2, 3 …).
    Number(i64),
    /// The version an alias points at.
    Alias(AliasName),
    /// The version with this semantic version label (`1.4.2`).
    Label(crate::lifecycle::Semver),
}

impl VersionSelector {
    /// Parses `7`, `@champion` or a semantic version label `1.4.2`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if let Some(alias) = s.strip_prefix('@') {
            return Ok(Self::Alias(AliasName::parse(alias)?));
        }
        match s.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(Self::Number(n)),
            _ if s.contains('.') => crate::lifecycle::Semver::parse(s)
                .map(Self::Label)
                .map_err(|e| invalid("version", s, format!("not a version number, @alias or label: {e}"))),
            _ => {
                Err(invalid("version", s, "must be a positive version number (1, 2, …), @alias or a label like 1.4.2"))
            }
        }
    }
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Alias(a) => write!(f, "@{a}"),
            Self::Label(l) => write!(f, "{l}"),
        }
    }
}

/// A version of a model as users write it: `ns/name:3`, `ns/name@alias` or `ns/name:1.4.2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRef {
    /// The model.
    pub model: ModelRef,
    /// Which of its versions.
    pub selector: VersionSelector,
}

impl VersionRef {
    /// Parses `namespace/name:VERSION` (a number or semver label) or `namespace/name@ALIAS`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let (model, selector) = match (s.split_once('@'), s.rsplit_once(':')) {
            (Some((m, a)), _) => (m, VersionSelector::Alias(AliasName::parse(a)?)),
            (None, Some((m, v))) => (m, VersionSelector::parse(v)?),
            (None, None) => {
                return Err(invalid(
                    "version",
                    s,
                    "must be written namespace/name:VERSION or namespace/name@ALIAS, e.g. team/classifier:3",
                ));
            }
        };
        Ok(Self { model: ModelRef::parse(model)?, selector })
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            VersionSelector::Alias(a) => write!(f, "{}@{a}", self.model),
            other => write!(f, "{}:{other}", self.model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_refs() {
        let r = VersionRef::parse("team/clf:3").unwrap();
        assert_eq!((r.model.to_string(), r.selector.clone()), ("team/clf".into(), VersionSelector::Number(3)));
        assert_eq!(r.to_string(), "team/clf:3");
        let r = VersionRef::parse("team/clf@champion").unwrap();
        assert_eq!(r.to_string(), "team/clf@champion");
        assert!(matches!(VersionRef::parse("team/clf:1.4.2").unwrap().selector, VersionSelector::Label(_)));
        for bad in ["team/clf", "team/clf:", "team/clf:0", "team/clf@", "team/clf@3", "clf:3", "Team/clf:3", "a/b/c:1"]
        {
            assert!(VersionRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces() {
        assert!(Namespace::parse("team-a_1").is_ok());
        assert!(Namespace::parse("team.a").is_err());
        assert!(Namespace::parse("Team").is_err());
        assert!(Namespace::parse("").is_err());
        assert!(Namespace::parse("-x").is_err());
        assert!(Namespace::parse(&"a".repeat(65)).is_err());
        assert!(Namespace::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn model_names() {
        assert!(ModelName::parse("bert-base.v2_x").is_ok());
        assert!(ModelName::parse("a/b").is_err());
        assert!(ModelName::parse("..").is_err());
        assert!(ModelName::parse("a..b").is_err());
        assert!(ModelName::parse("x.").is_err());
        assert!(ModelName::parse("ünïcode").is_err());
        let err = ModelName::parse("Bad Name").unwrap_err().to_string();
        assert!(err.contains("'B'"), "{err}");
    }

    #[test]
    fn model_refs() {
        let r = ModelRef::parse("team/bert.v1").unwrap();
        assert_eq!(r.to_string(), "team/bert.v1");
        assert!(ModelRef::parse("nobody").is_err());
        assert!(ModelRef::parse("a/b/c").is_err());
    }

    #[test]
    fn aliases_and_selectors() {
        assert_eq!(AliasName::parse("@champion").unwrap().as_str(), "champion");
        assert!(AliasName::parse("3").is_err());
        assert!(AliasName::parse("1abc").is_err());
        assert_eq!(VersionSelector::parse("3").unwrap(), VersionSelector::Number(3));
        assert!(VersionSelector::parse("0").is_err());
        assert!(VersionSelector::parse("-1").is_err());
        assert!(matches!(VersionSelector::parse("@prod").unwrap(), VersionSelector::Alias(_)));
        assert!(matches!(VersionSelector::parse("1.4.2").unwrap(), VersionSelector::Label(l) if l.as_str() == "1.4.2"));
        assert!(VersionSelector::parse("1.4").is_err());
    }

    #[test]
    fn tags() {
        assert!(TagKey::parse("mlflow.source").is_ok());
        assert!(TagKey::parse("with space").is_ok());
        assert!(TagKey::parse(" lead").is_err());
        assert!(TagKey::parse("nl\n").is_err());
        assert!(check_tag_value(&"x".repeat(5001)).is_err());
    }
}
