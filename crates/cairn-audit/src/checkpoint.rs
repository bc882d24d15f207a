//! Signed checkpoints: the server's signature over (sequence, head hash, time).

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};

/// What a checkpoint's signature covers, as canonical JSON:
/// `{"type":"cairn.audit.checkpoint/v1","seq":…,"head":"<hex>","signed_at":…,"key_id":"…"}`.
#[derive(Serialize)]
struct Payload<'a> {
    r#type: &'static str,
    seq: i64,
    head: &'a str,
    signed_at: i64,
    key_id: &'a str,
}

/// The payload type name.
pub const CHECKPOINT_TYPE: &str = "cairn.audit.checkpoint/v1";

/// A signed statement that event `seq` has chain hash `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The sequence number of the last event covered.
    pub seq: i64,
    /// That event's chain hash (hex).
    pub head: String,
    /// When it was signed, in ms since the Unix epoch.
    pub signed_at: i64,
    /// The signing key's id ([`PublicKey::key_id`]).
    pub key_id: String,
    /// The Ed25519 signature over the payload (standard base64).
    pub signature: String,
}

impl Checkpoint {
    /// Signs (seq, head, time) with `key`.
    pub fn sign(key: &SigningKey, seq: i64, head: &str, signed_at: i64) -> Self {
        let key_id = key.public().key_id();
        let signature = key.sign(&payload(seq, head, signed_at, &key_id));
        Self { seq, head: head.to_owned(), signed_at, key_id, signature }
    }

    /// Whether `key` made this checkpoint's signature (and the key id names `key`).
    pub fn verify(&self, key: &PublicKey) -> bool {
        key.key_id() == self.key_id
            && key.verify(&payload(self.seq, &self.head, self.signed_at, &self.key_id), &self.signature)
    }
}

fn payload(seq: i64, head: &str, signed_at: i64, key_id: &str) -> Vec<u8> {
    serde_json::to_vec(&Payload { r#type: CHECKPOINT_TYPE, seq, head, signed_at, key_id }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let k = SigningKey::generate();
        let cp = Checkpoint::sign(&k, 42, &"ab".repeat(32), 1_000);
        assert!(cp.verify(&k.public()));
        let mut bad = cp.clone();
        bad.seq = 41;
        assert!(!bad.verify(&k.public()));
        let mut bad = cp.clone();
        bad.head = "cd".repeat(32);
        assert!(!bad.verify(&k.public()));
        let mut bad = cp.clone();
        bad.signed_at += 1;
        assert!(!bad.verify(&k.public()));
        assert!(!cp.verify(&SigningKey::generate().public()));
        let other = SigningKey::generate();
        let mut forged = Checkpoint::sign(&other, 42, &cp.head, 1_000);
        forged.key_id = cp.key_id.clone();
        assert!(!forged.verify(&k.public()), "a key id cannot be borrowed");
    }
}
