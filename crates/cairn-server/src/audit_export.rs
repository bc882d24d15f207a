//! Streams the audit chain as the JSON Lines export that `cairn audit verify --file` checks
//! (format in `cairn_audit::export`, described in docs/AUDIT.md).
//!
//! An export always reaches from a signed checkpoint (or the genesis) to a signed checkpoint,
//! so it verifies on its own: the events asked for are written in full, the others between
//! the two checkpoints are written redacted (their place in the chain, not their details).
//! Before streaming, the current head is checkpointed if it is not yet. Events are read in
//! batches, so memory stays bounded for any range.

use std::collections::VecDeque;

use bytes::Bytes;
use cairn_audit::chain::GENESIS;
use cairn_audit::export::{FORMAT, Header, Line, Trailer};
use cairn_audit::{AuditRecord, Checkpoint, SigningKey};
use cairn_store::{Store, StoreError};
use futures::Stream;

const BATCH: usize = 2_000;

/// Which events to export in full.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// First event (default: the first kept).
    pub from_seq: Option<i64>,
    /// Last event (default: the head).
    pub to_seq: Option<i64>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only events at or after this time (ms).
    pub since: Option<i64>,
    /// Only events before this time (ms).
    pub until: Option<i64>,
}

impl ExportFilter {
    fn matches(&self, r: &AuditRecord, from: i64, to: i64) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        (from..=to).contains(&r.seq)
            && eq(&self.actor, &r.details.actor)
            && eq(&self.action, &r.action)
            && eq(&self.target, &r.details.target)
            && eq(&self.outcome, &r.outcome)
            && self.since.is_none_or(|s| r.time >= s)
            && self.until.is_none_or(|u| r.time < u)
    }
}

struct State {
    store: Store,
    filter: ExportFilter,
    from: i64,
    to: i64,
    /// The last sequence number written.
    after: i64,
    /// The last sequence number to write (a checkpoint's).
    end: i64,
    checkpoints: VecDeque<Checkpoint>,
    header: Option<Header>,
    lines: u64,
    last_hash: String,
    done: bool,
}

/// Prepares an export (checkpointing the head first) and returns its stream of lines.
pub async fn export(
    store: Store,
    key: &SigningKey,
    filter: ExportFilter,
) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + use<>, StoreError> {
    let head_cp = store.checkpoint_audit_chain(key).await?;
    let head = store.audit_head().await?;
    let first = head.anchor_seq + 1;
    let from = filter.from_seq.unwrap_or(first).max(first);
    let to = filter.to_seq.unwrap_or(head.seq).min(head.seq);
    // Start at the newest checkpoint before `from`, or at the anchor.
    let start = match store.audit_checkpoint_at_or_before(from - 1).await? {
        Some(cp) if cp.seq >= head.anchor_seq && cp.seq > 0 => Some(cp),
        _ => None,
    };
    let (anchor_seq, anchor_hash, anchor_checkpoint) = match start {
        Some(cp) => (cp.seq, cp.head.clone(), Some(cp)),
        None if head.anchor_seq == 0 => (0, hex::encode(GENESIS), None),
        None => {
            let cp = store.audit_checkpoints(head.anchor_seq, head.anchor_seq, 1).await?.pop();
            (head.anchor_seq, head.anchor_hash.clone(), cp)
        }
    };
    // End at the first checkpoint at or after `to` (the head's, made above, at the latest).
    let end = match store.audit_checkpoints(to.max(anchor_seq), i64::MAX, 1).await?.pop() {
        Some(cp) => cp.seq,
        None => head_cp.map_or(head.seq, |c| c.seq),
    };
    let public_keys = store.signing_keys().await?.into_iter().map(|k| k.public_key).collect();
    let header = Header {
        format: FORMAT.into(),
        exported_at: store.now(),
        anchor_seq,
        anchor_hash: anchor_hash.clone(),
        anchor_checkpoint,
        public_keys,
    };
    let state = State {
        store,
        filter,
        from,
        to,
        after: anchor_seq,
        end,
        checkpoints: VecDeque::new(),
        header: Some(header),
        lines: 0,
        last_hash: anchor_hash,
        done: false,
    };
    Ok(futures::stream::try_unfold(state, |mut st| async move {
        if st.done {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(64 * 1024);
        if let Some(h) = st.header.take() {
            push_line(&mut out, &Line::Header(h));
            return Ok(Some((Bytes::from(out), st)));
        }
        if st.after >= st.end {
            let trailer = Trailer { events: st.lines, last_seq: st.after, head: st.last_hash.clone() };
            push_line(&mut out, &Line::End(trailer));
            st.done = true;
            return Ok(Some((Bytes::from(out), st)));
        }
        let batch = st.store.audit_records(st.after, Some(st.end), BATCH).await.map_err(std::io::Error::other)?;
        let Some(last) = batch.last().map(|r| r.seq) else {
            // The chain ends before the checkpoint chosen as the end: events were removed
            // from the end. Write the checkpoints that vouch for them, so that verification
            // reports the truncation instead of an export that merely looks shorter.
            let orphans = st.store.audit_checkpoints(st.after + 1, st.end, 16).await.map_err(std::io::Error::other)?;
            for cp in orphans {
                push_line(&mut out, &Line::Checkpoint(cp));
            }
            st.end = st.after;
            return Ok(Some((Bytes::from(out), st)));
        };
        st.checkpoints =
            st.store.audit_checkpoints(st.after + 1, last, BATCH).await.map_err(std::io::Error::other)?.into();
        for r in batch {
            // Erasure and pruning records are always shown in full: they vouch for the
            // erased and pruned events that the export may show, whatever the filter.
            if st.filter.matches(&r, st.from, st.to)
                || r.action == cairn_audit::verify::ERASE_ACTION
                || r.action == cairn_audit::retention::PRUNE_ACTION
            {
                push_line(&mut out, &Line::Event(r.clone()));
            } else {
                push_line(&mut out, &Line::Redacted(r.redact()));
            }
            st.lines += 1;
            while st.checkpoints.front().is_some_and(|c| c.seq <= r.seq) {
                if let Some(cp) = st.checkpoints.pop_front().filter(|c| c.seq == r.seq) {
                    push_line(&mut out, &Line::Checkpoint(cp));
                }
            }
            st.after = r.seq;
            st.last_hash = r.hash;
        }
        Ok(Some((Bytes::from(out), st)))
    }))
}

fn push_line(out: &mut Vec<u8>, line: &Line) {
    if serde_json::to_writer(&mut *out, line).is_ok() {
        out.push(b'\n');
    }
}
