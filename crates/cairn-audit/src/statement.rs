//! Signed statements about versions.
//!
//! - [`VersionStatement`]: signed by the server when a version is committed: this model,
//!   this version number, this manifest digest, at this time.
//! - [`PushStatement`]: signed by a user with a key they hold, before pushing: this model and
//!   this manifest digest. The version number is not known before the commit, so it is not
//!   part of what the user signs.
//!
//! Each is signed as its canonical JSON (fields in the order below, compact).

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};

/// The type name of [`VersionStatement`].
pub const VERSION_TYPE: &str = "cairn.version/v1";
/// The type name of [`PushStatement`].
pub const PUSH_TYPE: &str = "cairn.push/v1";

/// What the server signs at commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionStatement {
    /// Always [`VERSION_TYPE`].
    pub r#type: String,
    /// `namespace/name`.
    pub model: String,
    /// The version number.
    pub version: i64,
    /// `sha256:<hex>` of the canonical manifest.
    pub manifest_digest: String,
    /// When, in ms since the Unix epoch.
    pub signed_at: i64,
}

impl VersionStatement {
    /// A statement about `model`'s version `version`.
    pub fn new(model: &str, version: i64, manifest_digest: &str, signed_at: i64) -> Self {
        Self {
            r#type: VERSION_TYPE.into(),
            model: model.into(),
            version,
            manifest_digest: manifest_digest.into(),
            signed_at,
        }
    }
}

/// What a user signs before pushing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushStatement {
    /// Always [`PUSH_TYPE`].
    pub r#type: String,
    /// `namespace/name`.
    pub model: String,
    /// `sha256:<hex>` of the canonical manifest.
    pub manifest_digest: String,
}

impl PushStatement {
    /// A statement that the signer pushes `manifest_digest` to `model`.
    pub fn new(model: &str, manifest_digest: &str) -> Self {
        Self { r#type: PUSH_TYPE.into(), model: model.into(), manifest_digest: manifest_digest.into() }
    }
}

/// The bytes that are signed: the statement's canonical JSON.
pub fn signed_bytes<T: Serialize>(statement: &T) -> Vec<u8> {
    serde_json::to_vec(statement).unwrap_or_default()
}

/// One signature over a statement, as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEnvelope {
    /// `server` (made at commit) or `user` (made by the pusher).
    pub kind: String,
    /// The signed statement, as the exact JSON text that was signed.
    pub statement: String,
    /// The signer's key id.
    pub key_id: String,
    /// The signer's public key (SPKI PEM).
    pub public_key: String,
    /// The signature (standard base64).
    pub signature: String,
}

impl SignatureEnvelope {
    /// Signs `statement` with `key`.
    pub fn sign<T: Serialize>(kind: &str, statement: &T, key: &SigningKey) -> Self {
        let bytes = signed_bytes(statement);
        let signature = key.sign(&bytes);
        Self {
            kind: kind.into(),
            statement: String::from_utf8(bytes).unwrap_or_default(),
            key_id: key.public().key_id(),
            public_key: key.public().to_pem(),
            signature,
        }
    }

    /// Whether the signature is valid for the envelope's own public key and key id.
    /// (Whether that key is *trusted* is the caller's decision.)
    pub fn verify_self(&self) -> Option<PublicKey> {
        let key = PublicKey::parse(&self.public_key).ok()?;
        (key.key_id() == self.key_id && key.verify(self.statement.as_bytes(), &self.signature)).then_some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_verify_and_detect_any_change() {
        let k = SigningKey::generate();
        let st = VersionStatement::new("team/x", 3, &format!("sha256:{}", "a".repeat(64)), 7);
        let env = SignatureEnvelope::sign("server", &st, &k);
        assert_eq!(env.verify_self(), Some(k.public()));
        let parsed: VersionStatement = serde_json::from_str(&env.statement).unwrap();
        assert_eq!(parsed, st);
        let mut bad = env.clone();
        bad.statement = bad.statement.replace("\"version\":3", "\"version\":4");
        assert_eq!(bad.verify_self(), None);
        let other = SigningKey::generate();
        let mut bad = env.clone();
        bad.public_key = other.public().to_pem();
        assert_eq!(bad.verify_self(), None, "key id no longer matches");
        bad.key_id = other.public().key_id();
        assert_eq!(bad.verify_self(), None, "signature was not made by that key");
    }
}
