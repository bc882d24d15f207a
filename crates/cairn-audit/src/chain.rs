//! The hash chain.
//!
//! ```text
//! details_digest = SHA-256(salt ‖ canonical_json(details))
//! hash(n)        = SHA-256(hash(n-1) ‖ canonical_json({"v":1,"seq":n,"time":t,
//!                            "action":a,"outcome":o,"details":hex(details_digest)}))
//! hash(0)        = 32 zero bytes
//! ```
//!
//! Canonical JSON here is `serde_json`'s compact output of the structs below, whose fields
//! are written in declaration order; text fields are written as given (the before/after
//! states are JSON documents kept as strings, never re-parsed), so the bytes are stable.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// The hash "before" the first event.
pub const GENESIS: Hash = [0; 32];

/// Length of the random salt mixed into each event's details digest.
pub const SALT_LEN: usize = 16;

/// The part of an event that may hold personal data. It enters the chain only as a salted
/// digest, so erasing it (and its salt) leaves the chain intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDetails {
    /// Who (`user:alice`, `service:ci`, `system`, `anonymous`).
    pub actor: String,
    /// With which API key.
    pub key_id: Option<String>,
    /// On what (`model:team/x`, `version:team/x:3`, `user:bob`).
    pub target: String,
    /// State before (a JSON document, as text).
    pub before: Option<String>,
    /// State after (a JSON document, as text).
    pub after: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The client's address.
    pub source_ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
}

impl EventDetails {
    /// `SHA-256(salt ‖ canonical_json(self))`.
    pub fn digest(&self, salt: &[u8]) -> Hash {
        let mut h = Sha256::new();
        h.update(salt);
        write_canonical(&mut h, self);
        h.finalize().into()
    }
}

#[derive(Serialize)]
struct Chained<'a> {
    v: u8,
    seq: i64,
    time: i64,
    action: &'a str,
    outcome: &'a str,
    details: &'a str,
}

/// The hash of event `seq`, linked to `prev`.
pub fn event_hash(prev: &Hash, seq: i64, time: i64, action: &str, outcome: &str, details_digest: &Hash) -> Hash {
    let mut hex_buf = [0u8; 64];
    // 32 bytes always fit 64 hex characters.
    let details = hex::encode_to_slice(details_digest, &mut hex_buf)
        .map_or("", |()| std::str::from_utf8(&hex_buf).unwrap_or_default());
    let chained = Chained { v: 1, seq, time, action, outcome, details };
    let mut h = Sha256::new();
    h.update(prev);
    write_canonical(&mut h, &chained);
    h.finalize().into()
}

/// Hashes the canonical JSON of `v`. It is written into a buffer first, reused by the thread,
/// and hashed in one piece: `serde_json` writes a string with quotes in it (the before and
/// after states are JSON documents) a few bytes at a time, and fed straight to the hash
/// those many small updates cost more than the serialisation itself.
fn write_canonical<T: Serialize>(h: &mut Sha256, v: &T) {
    /// A buffer that grew past this (an event with huge states) is not kept.
    const KEEP: usize = 64 * 1024;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        // Serialising plain structs of strings and integers into memory cannot fail.
        let _ = serde_json::to_writer(&mut *buf, v);
        h.update(buf.as_slice());
        if buf.capacity() > KEEP {
            *buf = Vec::new();
        }
    });
}

/// A fresh random salt.
pub fn new_salt() -> [u8; SALT_LEN] {
    let mut s = [0; SALT_LEN];
    rand::fill(&mut s);
    s
}

/// Parses 64 hex characters.
pub fn parse_hash(s: &str) -> Option<Hash> {
    let mut out = [0; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// One chained event as stored and exported: the chained fields, the details, the salt (hex;
/// absent once the details were erased) and the hashes (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the chain, from 1, gapless.
    pub seq: i64,
    /// When, in ms since the Unix epoch.
    pub time: i64,
    /// What (`model.create`, …).
    pub action: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// The details (possibly pseudonymised after an erasure).
    pub details: EventDetails,
    /// The salt of the details digest (hex); `None` once the details were erased.
    pub salt: Option<String>,
    /// The details digest (hex).
    pub details_digest: String,
    /// This event's chain hash (hex).
    pub hash: String,
}

/// An event whose details are withheld (an export filtered to other events, an evidence
/// bundle about one version): enough to carry the chain across it, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactedRecord {
    /// Position in the chain.
    pub seq: i64,
    /// When, in ms since the Unix epoch.
    pub time: i64,
    /// What.
    pub action: String,
    /// The outcome.
    pub outcome: String,
    /// The details digest (hex).
    pub details_digest: String,
    /// The chain hash (hex).
    pub hash: String,
}

impl AuditRecord {
    /// The same event with its details withheld.
    pub fn redact(&self) -> RedactedRecord {
        RedactedRecord {
            seq: self.seq,
            time: self.time,
            action: self.action.clone(),
            outcome: self.outcome.clone(),
            details_digest: self.details_digest.clone(),
            hash: self.hash.clone(),
        }
    }

    /// Seals new details into the chain after `prev`: draws a salt and computes both hashes.
    pub fn seal(prev: &Hash, seq: i64, time: i64, action: String, outcome: String, details: EventDetails) -> Self {
        let salt = new_salt();
        let digest = details.digest(&salt);
        let hash = event_hash(prev, seq, time, &action, &outcome, &digest);
        Self {
            seq,
            time,
            action,
            outcome,
            details,
            salt: Some(hex::encode(salt)),
            details_digest: hex::encode(digest),
            hash: hex::encode(hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details() -> EventDetails {
        EventDetails {
            actor: "user:alice".into(),
            key_id: Some("k1".into()),
            target: "model:team/x".into(),
            before: None,
            after: Some(r#"{"name":"x"}"#.into()),
            request_id: Some("r1".into()),
            source_ip: Some("127.0.0.1".into()),
            user_agent: Some("curl/8".into()),
        }
    }

    #[test]
    fn the_hash_is_sha256_of_prev_and_the_canonical_chained_fields() {
        let d = [7u8; 32];
        let h = event_hash(&GENESIS, 1, 1000, "model.create", "success", &d);
        let mut expect = Sha256::new();
        expect.update([0u8; 32]);
        expect.update(format!(
            r#"{{"v":1,"seq":1,"time":1000,"action":"model.create","outcome":"success","details":"{}"}}"#,
            hex::encode(d)
        ));
        assert_eq!(h, <[u8; 32]>::from(expect.finalize()));
    }

    #[test]
    fn the_digest_is_sha256_of_the_salt_and_the_canonical_details() {
        let salt = [3u8; SALT_LEN];
        let expect = |d: &EventDetails, canonical: &str| {
            let mut h = Sha256::new();
            h.update(salt);
            h.update(canonical);
            assert_eq!(d.digest(&salt), <[u8; 32]>::from(h.finalize()), "{canonical}");
        };
        // States are JSON kept as text: their quotes, backslashes and control characters are
        // escaped as serde_json writes them.
        let mut d = details();
        d.before = Some("{\"a\":\"x\\\\y\nz\"}".into());
        expect(
            &d,
            r#"{"actor":"user:alice","key_id":"k1","target":"model:team/x","before":"{\"a\":\"x\\\\y\nz\"}","after":"{\"name\":\"x\"}","request_id":"r1","source_ip":"127.0.0.1","user_agent":"curl/8"}"#,
        );
        // A state larger than the reused buffer keeps, then a small one again.
        let big = format!("{{\"blob\":\"{}\"}}", "q".repeat(200_000));
        let mut large = details();
        large.after = Some(big.clone());
        expect(
            &large,
            &format!(
                r#"{{"actor":"user:alice","key_id":"k1","target":"model:team/x","before":null,"after":{},"request_id":"r1","source_ip":"127.0.0.1","user_agent":"curl/8"}}"#,
                serde_json::to_string(&big).unwrap()
            ),
        );
        expect(
            &details(),
            r#"{"actor":"user:alice","key_id":"k1","target":"model:team/x","before":null,"after":"{\"name\":\"x\"}","request_id":"r1","source_ip":"127.0.0.1","user_agent":"curl/8"}"#,
        );
    }

    #[test]
    fn every_chained_field_changes_the_hash() {
        let d = [7u8; 32];
        let base = event_hash(&GENESIS, 1, 1000, "a", "success", &d);
        assert_ne!(base, event_hash(&[1; 32], 1, 1000, "a", "success", &d));
        assert_ne!(base, event_hash(&GENESIS, 2, 1000, "a", "success", &d));
        assert_ne!(base, event_hash(&GENESIS, 1, 1001, "a", "success", &d));
        assert_ne!(base, event_hash(&GENESIS, 1, 1000, "b", "success", &d));
        assert_ne!(base, event_hash(&GENESIS, 1, 1000, "a", "denied", &d));
        assert_ne!(base, event_hash(&GENESIS, 1, 1000, "a", "success", &[8; 32]));
    }

    #[test]
    fn every_detail_and_the_salt_change_the_digest() {
        let salt = [1u8; SALT_LEN];
        let base = details().digest(&salt);
        assert_ne!(base, details().digest(&[2u8; SALT_LEN]));
        let variants: [fn(&mut EventDetails); 8] = [
            |d| d.actor = "user:bob".into(),
            |d| d.key_id = None,
            |d| d.target = "model:team/y".into(),
            |d| d.before = Some("{}".into()),
            |d| d.after = None,
            |d| d.request_id = Some("r2".into()),
            |d| d.source_ip = Some("10.0.0.1".into()),
            |d| d.user_agent = None,
        ];
        for change in variants {
            let mut d = details();
            change(&mut d);
            assert_ne!(base, d.digest(&salt), "{d:?}");
        }
    }

    #[test]
    fn sealed_records_round_trip_through_json() {
        let r = AuditRecord::seal(&GENESIS, 1, 5, "model.create".into(), "success".into(), details());
        let line = serde_json::to_string(&r).unwrap();
        let back: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<AuditRecord>(&line.replace("\"seq\"", "\"extra\":1,\"seq\"")).is_err());
    }
}
