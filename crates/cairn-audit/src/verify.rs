//! Streaming verification of a chain: feed events (and the checkpoints at their sequence
//! numbers) in order; the verifier keeps the running hash (and the sequence numbers of
//! erased events, until an erasure record covers them), so memory does not grow with the
//! chain's length, and stops at the first break.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::chain::{AuditRecord, GENESIS, Hash, RedactedRecord, event_hash, parse_hash};
use crate::checkpoint::Checkpoint;
use crate::keys::PublicKey;
use crate::retention::{PRUNE_ACTION, PRUNED_ACTOR, PruneRecord};

/// The action whose after-state lists the events an erasure pseudonymised.
pub const ERASE_ACTION: &str = "gdpr.erase";

/// Where verification starts: the genesis, or the last event before the first one present
/// (after pruning, or in a partial export), which must then be vouched for by a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Sequence number of the event before the first one to verify (0 for the genesis).
    pub seq: i64,
    /// Its chain hash.
    pub hash: Hash,
}

impl Anchor {
    /// The start of every chain.
    pub const GENESIS: Self = Self { seq: 0, hash: GENESIS };
}

/// What kind of break was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// Sequence numbers skip: events were deleted.
    Missing,
    /// A sequence number repeats or goes back: events were inserted or reordered.
    OutOfOrder,
    /// An event's details do not match their digest: edited.
    Edited,
    /// An event's hash does not follow from the previous one: edited, inserted or moved.
    Mismatch,
    /// The chain differs from what a signed checkpoint says: history was rewritten.
    CheckpointMismatch,
    /// A checkpoint's signature is invalid.
    BadSignature,
    /// A checkpoint was signed by a key that is not trusted.
    UntrustedKey,
    /// Events that a checkpoint or the chain head vouch for are gone from the end.
    Truncated,
    /// The anchor of a pruned chain or partial export is not vouched for.
    UnverifiedAnchor,
    /// An event's details were removed without an erasure or a pruning that covers it.
    UnrecordedErasure,
}

/// The first break found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The sequence number where the chain breaks.
    pub seq: i64,
    /// What kind of break.
    pub kind: BreakKind,
    /// A sentence for people.
    pub message: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Events verified.
    pub events: u64,
    /// The first event verified (after the anchor), if any.
    pub first_seq: Option<i64>,
    /// The last event verified (the anchor's when none).
    pub last_seq: i64,
    /// Its hash (hex).
    pub head: String,
    /// Checkpoints whose signature and hash were checked.
    pub checkpoints: u64,
    /// The last of them.
    pub last_checkpoint: Option<Checkpoint>,
    /// Events after the last checkpoint: their presence is vouched for by no signature yet.
    pub unsigned_tail: u64,
    /// Events carried with their details withheld (filtered exports, evidence bundles):
    /// their place in the chain is verified, their details are not shown.
    pub redacted: u64,
    /// Events whose details were erased under a recorded erasure (their details cannot be
    /// checked, their place in the chain can).
    pub erased: u64,
    /// Events whose details were pruned after their retention, under a recorded pruning.
    pub pruned: u64,
    /// The first break, if any.
    pub first_break: Option<Break>,
}

impl Report {
    /// No break was found.
    pub fn ok(&self) -> bool {
        self.first_break.is_none()
    }
}

/// What an event's details say about themselves, before the chain is considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetailsCheck {
    /// The details match their digest (given).
    Intact(Hash),
    /// The details were erased: their digest (given) cannot be checked.
    Erased(Hash),
    /// The details do not match, or the record is malformed.
    Broken(Break),
}

/// Checks an event's details against its digest. Pure, so it can run ahead of (and in
/// parallel with) the chain walk.
pub fn check_details(r: &AuditRecord) -> DetailsCheck {
    let broken = |message: String| DetailsCheck::Broken(Break { seq: r.seq, kind: BreakKind::Edited, message });
    let Some(digest) = parse_hash(&r.details_digest) else {
        return broken(format!("event {}: the details digest is not 64 hex characters", r.seq));
    };
    let Some(salt) = &r.salt else {
        return DetailsCheck::Erased(digest);
    };
    let mut buf = [0u8; 64];
    let Ok(salt) = decode_salt(salt, &mut buf) else {
        return broken(format!("event {}: the salt is not hex", r.seq));
    };
    if r.details.digest(salt) != digest {
        return broken(format!(
            "event {} ({} on {}): its details do not match their digest: edited",
            r.seq, r.action, r.details.target
        ));
    }
    DetailsCheck::Intact(digest)
}

fn decode_salt<'a>(hex_salt: &str, buf: &'a mut [u8; 64]) -> Result<&'a [u8], hex::FromHexError> {
    let n = hex_salt.len() / 2;
    if n > buf.len() {
        return Err(hex::FromHexError::InvalidStringLength);
    }
    hex::decode_to_slice(hex_salt, &mut buf[..n])?;
    Ok(&buf[..n])
}

/// The verifier.
#[derive(Debug)]
pub struct Verifier {
    trusted: Vec<PublicKey>,
    prev: Hash,
    last_seq: i64,
    events: u64,
    first_seq: Option<i64>,
    checkpoints: u64,
    last_checkpoint: Option<Checkpoint>,
    last_checkpoint_seq: i64,
    anchor_vouched: bool,
    erased: BTreeSet<i64>,
    covered: BTreeSet<i64>,
    /// Pruned events not yet covered by a pruning record: per action, the first sequence
    /// number and the latest time (a record covers them all once its cut-off passes that).
    pruned: BTreeMap<String, (i64, i64)>,
    pruned_count: u64,
    redacted: u64,
    first_break: Option<Break>,
}

impl Verifier {
    /// Starts at `anchor`, trusting checkpoints signed by any of `trusted`. An anchor other
    /// than the genesis must be vouched for by [`Self::anchor_checkpoint`].
    pub fn new(anchor: Anchor, trusted: Vec<PublicKey>) -> Self {
        Self {
            trusted,
            prev: anchor.hash,
            last_seq: anchor.seq,
            events: 0,
            first_seq: None,
            checkpoints: 0,
            last_checkpoint: None,
            last_checkpoint_seq: anchor.seq,
            anchor_vouched: anchor.seq == 0 && anchor.hash == GENESIS,
            erased: BTreeSet::new(),
            covered: BTreeSet::new(),
            pruned: BTreeMap::new(),
            pruned_count: 0,
            redacted: 0,
            first_break: None,
        }
    }

    /// Whether a break was found so far.
    pub fn broken(&self) -> bool {
        self.first_break.is_some()
    }

    /// The sequence number of the last event verified.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    fn fail(&mut self, seq: i64, kind: BreakKind, message: String) -> bool {
        if self.first_break.is_none() {
            self.first_break = Some(Break { seq, kind, message });
        }
        false
    }

    /// Vouches for the anchor with the checkpoint signed at it.
    pub fn anchor_checkpoint(&mut self, cp: &Checkpoint) -> bool {
        if self.events > 0 || cp.seq != self.last_seq {
            return self.fail(
                cp.seq,
                BreakKind::UnverifiedAnchor,
                format!(
                    "the anchor checkpoint is for event {}, the chain starts after event {}",
                    cp.seq, self.last_seq
                ),
            );
        }
        if self.checkpoint(cp) {
            self.anchor_vouched = true;
            true
        } else {
            false
        }
    }

    /// Verifies the next event. Returns false once the chain is broken.
    pub fn event(&mut self, r: &AuditRecord) -> bool {
        let checked = check_details(r);
        self.event_checked(r, checked)
    }

    /// Verifies the next event whose details were already checked with [`check_details`]
    /// (which needs no chain state, so it can run on another thread).
    pub fn event_checked(&mut self, r: &AuditRecord, checked: DetailsCheck) -> bool {
        if !self.next_seq(r.seq) {
            return false;
        }
        let digest = match checked {
            DetailsCheck::Intact(d) => d,
            DetailsCheck::Erased(d) if r.details.actor == PRUNED_ACTOR => {
                let e = self.pruned.entry(r.action.clone()).or_insert((r.seq, r.time));
                e.1 = e.1.max(r.time);
                self.pruned_count += 1;
                d
            }
            DetailsCheck::Erased(d) => {
                self.erased.insert(r.seq);
                d
            }
            DetailsCheck::Broken(b) => return self.fail(b.seq, b.kind, b.message),
        };
        if !self.link(r.seq, r.time, &r.action, &r.outcome, &digest, &r.hash) {
            return false;
        }
        if r.action == ERASE_ACTION
            && r.outcome == "success"
            && r.salt.is_some()
            && let Some(after) = &r.details.after
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(after)
            && let Some(list) = v.get("erased_events").and_then(|l| l.as_array())
        {
            self.covered.extend(list.iter().filter_map(serde_json::Value::as_i64).filter(|s| *s < r.seq));
        }
        if r.action == PRUNE_ACTION
            && r.outcome == "success"
            && r.salt.is_some()
            && let Some(after) = &r.details.after
            && let Ok(record) = serde_json::from_str::<PruneRecord>(after)
        {
            for p in &record.pruned_details {
                if self.pruned.get(&p.action).is_some_and(|(_, latest)| *latest < p.before) {
                    self.pruned.remove(&p.action);
                }
            }
        }
        true
    }

    /// Carries the chain across an event whose details are withheld.
    pub fn redacted(&mut self, r: &RedactedRecord) -> bool {
        if !self.next_seq(r.seq) {
            return false;
        }
        let Some(digest) = parse_hash(&r.details_digest) else {
            return self.fail(
                r.seq,
                BreakKind::Edited,
                format!("event {}: the details digest is not 64 hex characters", r.seq),
            );
        };
        if !self.link(r.seq, r.time, &r.action, &r.outcome, &digest, &r.hash) {
            return false;
        }
        self.redacted += 1;
        true
    }

    fn next_seq(&mut self, seq: i64) -> bool {
        if self.broken() {
            return false;
        }
        let expected = self.last_seq.saturating_add(1);
        if seq < expected {
            return self.fail(
                seq,
                BreakKind::OutOfOrder,
                format!("event {seq} appears after event {}: events were inserted or reordered", self.last_seq),
            );
        }
        if seq > expected {
            let gap = if seq - 1 == expected {
                format!("event {expected} is")
            } else {
                format!("events {expected} to {} are", seq - 1)
            };
            return self.fail(expected, BreakKind::Missing, format!("{gap} missing: deleted"));
        }
        true
    }

    fn link(&mut self, seq: i64, time: i64, action: &str, outcome: &str, digest: &Hash, stored: &str) -> bool {
        let hash = event_hash(&self.prev, seq, time, action, outcome, digest);
        if parse_hash(stored) != Some(hash) {
            return self.fail(
                seq,
                BreakKind::Mismatch,
                format!(
                    "event {seq} ({action}) does not follow from event {}: an event was edited, inserted, removed or moved",
                    self.last_seq
                ),
            );
        }
        self.prev = hash;
        self.last_seq = seq;
        self.events += 1;
        self.first_seq.get_or_insert(seq);
        true
    }

    /// Verifies a checkpoint for the last event verified (`cp.seq` must equal it; feed
    /// checkpoints right after the event they cover).
    pub fn checkpoint(&mut self, cp: &Checkpoint) -> bool {
        if self.broken() {
            return false;
        }
        if cp.seq > self.last_seq {
            return self.fail(self.last_seq.saturating_add(1), BreakKind::Truncated, format!("a checkpoint signed at {} vouches for events up to {}, but the chain ends at event {}: events were removed from the end", cp.signed_at, cp.seq, self.last_seq));
        }
        if cp.seq < self.last_seq {
            return self.fail(
                cp.seq,
                BreakKind::OutOfOrder,
                format!("checkpoint for event {} given after event {}", cp.seq, self.last_seq),
            );
        }
        let Some(key) = self.trusted.iter().find(|k| k.key_id() == cp.key_id) else {
            return self.fail(
                cp.seq,
                BreakKind::UntrustedKey,
                format!("the checkpoint at event {} is signed by {}, which is not a trusted key", cp.seq, cp.key_id),
            );
        };
        if !cp.verify(key) {
            return self.fail(
                cp.seq,
                BreakKind::BadSignature,
                format!("the checkpoint at event {} has an invalid signature", cp.seq),
            );
        }
        if parse_hash(&cp.head) != Some(self.prev) {
            return self.fail(
                cp.seq,
                BreakKind::CheckpointMismatch,
                format!(
                    "the chain at event {} differs from the checkpoint signed at {}: history was rewritten",
                    cp.seq, cp.signed_at
                ),
            );
        }
        self.checkpoints += 1;
        self.last_checkpoint_seq = cp.seq;
        self.last_checkpoint = Some(cp.clone());
        true
    }

    /// Ends verification. `head` is where the source says the chain ends (the stored chain
    /// head, or an export's trailer), checked against the last event.
    pub fn finish(mut self, head: Option<(i64, &str)>) -> Report {
        if !self.broken()
            && let Some((seq, hash)) = head
        {
            if seq > self.last_seq {
                self.fail(self.last_seq.saturating_add(1), BreakKind::Truncated, format!("the chain head is event {seq}, but the chain ends at event {}: events were removed from the end", self.last_seq));
            } else if seq < self.last_seq || parse_hash(hash) != Some(self.prev) {
                self.fail(
                    seq,
                    BreakKind::Mismatch,
                    format!(
                        "the recorded chain head (event {seq}) does not match the chain, which ends at event {}",
                        self.last_seq
                    ),
                );
            }
        }
        if !self.broken() && !self.anchor_vouched {
            let seq = self.first_seq.unwrap_or(self.last_seq);
            self.fail(
                seq,
                BreakKind::UnverifiedAnchor,
                "the chain does not start at the genesis and no trusted checkpoint vouches for its start".into(),
            );
        }
        if !self.broken()
            && let Some(seq) = self.erased.difference(&self.covered).next().copied()
        {
            self.fail(
                seq,
                BreakKind::UnrecordedErasure,
                format!("the details of event {seq} were removed, but no erasure lists it"),
            );
        }
        if !self.broken()
            && let Some((action, (seq, _))) = self.pruned.iter().min_by_key(|(_, (seq, _))| *seq)
        {
            let message = format!("the details of event {seq} ({action}) were pruned, but no pruning record covers it");
            self.fail(*seq, BreakKind::UnrecordedErasure, message);
        }
        Report {
            events: self.events,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            head: hex::encode(self.prev),
            checkpoints: self.checkpoints,
            last_checkpoint: self.last_checkpoint,
            unsigned_tail: u64::try_from(self.last_seq - self.last_checkpoint_seq).unwrap_or(0),
            redacted: self.redacted,
            erased: u64::try_from(self.erased.len()).unwrap_or(0),
            pruned: self.pruned_count,
            first_break: self.first_break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::EventDetails;
    use crate::keys::SigningKey;

    fn details(i: i64) -> EventDetails {
        EventDetails {
            actor: "user:alice".into(),
            key_id: None,
            target: format!("model:team/m{i}"),
            before: None,
            after: Some(format!("{{\"i\":{i}}}")),
            request_id: None,
            source_ip: Some("127.0.0.1".into()),
            user_agent: None,
        }
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let r =
                    AuditRecord::seal(&prev, seq, 1000 + seq, "model.create".into(), "success".into(), details(seq));
                prev = parse_hash(&r.hash).unwrap();
                r
            })
            .collect()
    }

    /// Re-seals records from `from` on, as an attacker without the signing key can.
    fn rechain(rs: &mut [AuditRecord]) {
        let mut prev = GENESIS;
        for r in rs.iter_mut() {
            let salt = hex::decode(r.salt.as_ref().unwrap()).unwrap();
            let d = r.details.digest(&salt);
            r.details_digest = hex::encode(d);
            r.hash = hex::encode(event_hash(&prev, r.seq, r.time, &r.action, &r.outcome, &d));
            prev = parse_hash(&r.hash).unwrap();
        }
    }

    fn run(rs: &[AuditRecord], cps: &[Checkpoint], key: &SigningKey, head: Option<(i64, &str)>) -> Report {
        let mut v = Verifier::new(Anchor::GENESIS, vec![key.public()]);
        for r in rs {
            v.event(r);
            for cp in cps.iter().filter(|c| c.seq == r.seq) {
                v.checkpoint(cp);
            }
        }
        let last = v.last_seq();
        for cp in cps.iter().filter(|c| c.seq > last) {
            v.checkpoint(cp);
        }
        v.finish(head)
    }

    fn kind(r: &Report) -> Option<(i64, BreakKind)> {
        r.first_break.as_ref().map(|b| (b.seq, b.kind))
    }

    #[test]
    fn an_intact_chain_verifies() {
        let key = SigningKey::generate();
        let rs = chain(10);
        let cps = vec![Checkpoint::sign(&key, 5, &rs[4].hash, 1), Checkpoint::sign(&key, 10, &rs[9].hash, 2)];
        let r = run(&rs, &cps, &key, Some((10, &rs[9].hash)));
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.events, r.checkpoints, r.unsigned_tail, r.last_seq), (10, 2, 0, 10));
        assert_eq!(r.head, rs[9].hash);
    }

    #[test]
    fn every_kind_of_tampering_is_found_where_it_happened() {
        let key = SigningKey::generate();
        let rs = chain(10);
        let cps = vec![Checkpoint::sign(&key, 8, &rs[7].hash, 1)];
        let head = Some((10, rs[9].hash.as_str()));

        let mut edited = rs.clone();
        edited[3].details.actor = "user:mallory".into();
        assert_eq!(kind(&run(&edited, &cps, &key, head)), Some((4, BreakKind::Edited)));

        let mut retimed = rs.clone();
        retimed[3].time += 1;
        assert_eq!(kind(&run(&retimed, &cps, &key, head)), Some((4, BreakKind::Mismatch)));

        let mut deleted = rs.clone();
        deleted.remove(5);
        assert_eq!(kind(&run(&deleted, &cps, &key, head)), Some((6, BreakKind::Missing)));

        let mut reordered = rs.clone();
        reordered.swap(2, 3);
        assert_eq!(kind(&run(&reordered, &cps, &key, head)), Some((3, BreakKind::Missing)));
        let mut repeated = rs.clone();
        repeated.insert(4, rs[2].clone());
        assert_eq!(kind(&run(&repeated, &cps, &key, head)), Some((3, BreakKind::OutOfOrder)));

        // Swapping contents but keeping sequence numbers in place breaks the links.
        let mut moved = rs.clone();
        let (a, b) = (moved[2].clone(), moved[3].clone());
        moved[2] = AuditRecord { seq: 3, ..b };
        moved[3] = AuditRecord { seq: 4, ..a };
        assert_eq!(kind(&run(&moved, &cps, &key, head)), Some((3, BreakKind::Mismatch)));

        let mut inserted = rs.clone();
        let extra =
            AuditRecord::seal(&parse_hash(&rs[4].hash).unwrap(), 6, 1, "x".into(), "success".into(), details(0));
        inserted.insert(5, extra);
        for r in inserted.iter_mut().skip(6) {
            r.seq += 1;
        }
        assert_eq!(kind(&run(&inserted, &cps, &key, head)), Some((7, BreakKind::Mismatch)));

        // Rewritten and re-chained: only the signed checkpoint catches it.
        let mut rewritten = rs.clone();
        rewritten[3].details.actor = "user:mallory".into();
        rechain(&mut rewritten);
        let new_head = rewritten[9].hash.clone();
        assert_eq!(kind(&run(&rewritten, &cps, &key, Some((10, &new_head)))), Some((8, BreakKind::CheckpointMismatch)));

        let truncated = &rs[..6];
        assert_eq!(kind(&run(truncated, &cps, &key, None)), Some((7, BreakKind::Truncated)));
        assert_eq!(kind(&run(&rs[..9], &[], &key, head)), Some((10, BreakKind::Truncated)));

        // A checkpoint re-signed with another key is not trusted.
        let forger = SigningKey::generate();
        let forged = vec![Checkpoint::sign(&forger, 8, &rewritten[7].hash, 1)];
        assert_eq!(kind(&run(&rewritten, &forged, &key, Some((10, &new_head)))), Some((8, BreakKind::UntrustedKey)));

        let mut bad_sig = cps.clone();
        bad_sig[0].signed_at += 1;
        assert_eq!(kind(&run(&rs, &bad_sig, &key, head)), Some((8, BreakKind::BadSignature)));
    }

    #[test]
    fn erased_details_need_a_recorded_erasure() {
        let key = SigningKey::generate();
        let mut rs = chain(4);
        rs[1].details.actor = "erased:1".into();
        rs[1].details.source_ip = None;
        rs[1].salt = None;
        assert_eq!(kind(&run(&rs, &[], &key, None)), Some((2, BreakKind::UnrecordedErasure)));
        let prev = parse_hash(&rs[3].hash).unwrap();
        let mut d = details(0);
        d.after = Some(r#"{"subject":"1","erased_events":[2]}"#.into());
        rs.push(AuditRecord::seal(&prev, 5, 9, ERASE_ACTION.into(), "success".into(), d));
        let r = run(&rs, &[], &key, None);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.erased, 1);
    }

    /// Events 1–6 at times 1001–1006; details of 2 and 4 (`model.create`) pruned.
    fn pruned_chain() -> Vec<AuditRecord> {
        let mut rs = chain(6);
        for i in [1, 3] {
            rs[i].details = EventDetails {
                actor: PRUNED_ACTOR.into(),
                key_id: None,
                target: String::new(),
                before: None,
                after: None,
                request_id: None,
                source_ip: None,
                user_agent: None,
            };
            rs[i].salt = None;
        }
        rs
    }

    fn append(rs: &mut Vec<AuditRecord>, action: &str, after: &str) {
        let prev = parse_hash(&rs.last().unwrap().hash).unwrap();
        let mut d = details(0);
        d.after = Some(after.into());
        let seq = rs.len() as i64 + 1;
        rs.push(AuditRecord::seal(&prev, seq, 2000 + seq, action.into(), "success".into(), d));
    }

    #[test]
    fn pruned_details_need_a_pruning_record_that_covers_their_time() {
        let key = SigningKey::generate();
        let rs = pruned_chain();
        let r = run(&rs, &[], &key, None);
        assert_eq!(kind(&r), Some((2, BreakKind::UnrecordedErasure)), "{r:?}");
        assert!(r.first_break.unwrap().message.contains("pruned"));

        // A record that covers model.create only up to 1003 leaves event 4 uncovered …
        let mut short = rs.clone();
        append(
            &mut short,
            PRUNE_ACTION,
            r#"{"anchor_seq":0,"removed_events":0,"pruned_details":[{"action":"model.create","before":1003,"events":1}],"retention":[]}"#,
        );
        assert_eq!(kind(&run(&short, &[], &key, None)), Some((2, BreakKind::UnrecordedErasure)));
        // … and a record about another action covers nothing.
        let mut other = rs.clone();
        append(
            &mut other,
            PRUNE_ACTION,
            r#"{"anchor_seq":0,"removed_events":0,"pruned_details":[{"action":"auth.login","before":9999,"events":2}],"retention":[]}"#,
        );
        assert_eq!(kind(&run(&other, &[], &key, None)), Some((2, BreakKind::UnrecordedErasure)));

        // A later pruning that reaches past 1004 covers both.
        append(
            &mut short,
            PRUNE_ACTION,
            r#"{"anchor_seq":0,"removed_events":0,"pruned_details":[{"action":"model.create","before":1005,"events":1}],"retention":[]}"#,
        );
        let r = run(&short, &[], &key, None);
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.pruned, r.erased), (2, 0));

        // A pruning record under another action name vouches for nothing.
        let mut forged = rs;
        append(
            &mut forged,
            "model.update",
            r#"{"anchor_seq":0,"removed_events":0,"pruned_details":[{"action":"model.create","before":9999,"events":2}],"retention":[]}"#,
        );
        assert_eq!(kind(&run(&forged, &[], &key, None)), Some((2, BreakKind::UnrecordedErasure)));
    }

    #[test]
    fn a_partial_chain_needs_a_checkpoint_at_its_anchor() {
        let key = SigningKey::generate();
        let rs = chain(10);
        let anchor = Anchor { seq: 4, hash: parse_hash(&rs[3].hash).unwrap() };
        let mut v = Verifier::new(anchor, vec![key.public()]);
        rs[4..].iter().for_each(|r| {
            v.event(r);
        });
        assert_eq!(kind(&v.finish(None)), Some((5, BreakKind::UnverifiedAnchor)));

        let mut v = Verifier::new(anchor, vec![key.public()]);
        assert!(v.anchor_checkpoint(&Checkpoint::sign(&key, 4, &rs[3].hash, 1)));
        rs[4..].iter().for_each(|r| {
            v.event(r);
        });
        let r = v.finish(None);
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.first_seq, r.events), (Some(5), 6));
    }
}
