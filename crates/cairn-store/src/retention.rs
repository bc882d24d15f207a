//! Audit retention: pruning the details of expired events and removing the expired start of
//! the chain, anchored at a signed checkpoint (docs/AUDIT.md, "Retention";
//! [`cairn_audit::retention`] for the rules and the record).

use cairn_audit::retention::{
    PRUNE_ACTION, PRUNED_ACTOR, PruneRecord, PrunedAction, RetentionPolicy, cutoff, details_kept,
};
use serde::Serialize;

use crate::audit::record;
use crate::{AuditContext, Store, StoreError, params};

/// What a pruning did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneOutcome {
    /// What was recorded in the `audit.prune` event (nothing is recorded when nothing
    /// changed, or on a dry run).
    pub record: PruneRecord,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// Why no events were removed although some are older than the longest retention.
    pub note: Option<String>,
}

impl PruneOutcome {
    /// Whether anything was (or would be) pruned or removed.
    pub fn changed(&self) -> bool {
        self.record.removed_events > 0 || !self.record.pruned_details.is_empty()
    }
}

impl Store {
    /// Applies `policy` to the audit chain now, in one transaction with its own `audit.prune`
    /// event: events older than the longest retention are removed up to the newest signed
    /// checkpoint among them (the new anchor); other events past their action's retention
    /// lose their details. With `dry_run` nothing changes and the counts are what would be.
    pub async fn prune_audit(
        &self,
        ctx: &AuditContext,
        policy: &RetentionPolicy,
        dry_run: bool,
    ) -> Result<PruneOutcome, StoreError> {
        // On PostgreSQL, what this process committed joins the chain before it is read.
        self.db.settle_audit().await?;
        let now = self.now();
        let mut tx = self.db.begin().await?;
        let mut c = tx.conn();
        let (old_anchor,): (i64,) = c.fetch_one("SELECT anchor_seq FROM audit_head WHERE id = 1", vec![]).await?;

        // The expired start of the chain: everything before the first event newer than the
        // longest retention, cut back to the newest checkpoint in it.
        let oldest_kept = cutoff(now, policy.longest_days());
        let (first_young,): (Option<i64>,) = c
            .fetch_one(
                "SELECT MIN(seq) FROM audit_events WHERE seq > $1 AND occurred_at >= $2",
                params![old_anchor, oldest_kept],
            )
            .await?;
        let (last_sealed,): (Option<i64>,) =
            c.fetch_one("SELECT MAX(seq) FROM audit_events WHERE seq > $1", params![old_anchor]).await?;
        let expired_to = first_young.map_or(last_sealed.unwrap_or(old_anchor), |s| s - 1);
        let mut anchor = old_anchor;
        let mut removed = 0;
        let mut note = None;
        if expired_to > old_anchor {
            let cp: Option<(i64, String)> = c
                .fetch_optional(
                    "SELECT seq, head FROM audit_checkpoints WHERE seq > $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1",
                    params![old_anchor, expired_to],
                )
                .await?;
            match cp {
                None => {
                    note = Some(format!(
                        "{} events are older than the longest retention, but no signed checkpoint lies among them \
                         to anchor the chain at; they stay until one does",
                        expired_to - old_anchor
                    ));
                }
                Some((seq, head)) => {
                    let (stored,): (Option<String>,) =
                        c.fetch_one("SELECT MAX(hash) FROM audit_events WHERE seq = $1", params![seq]).await?;
                    if stored.as_deref() != Some(head.as_str()) {
                        return Err(StoreError::Conflict(format!(
                            "event {seq} does not match the checkpoint signed at it; run `cairn audit verify` — \
                             nothing was pruned"
                        )));
                    }
                    removed = c
                        .execute("DELETE FROM audit_events WHERE seq > $1 AND seq <= $2", params![old_anchor, seq])
                        .await?;
                    c.execute("DELETE FROM audit_checkpoints WHERE seq < $1", params![seq]).await?;
                    // Another replica pruning at the same moment may have moved the anchor
                    // further already: never move it back.
                    c.execute(
                        "UPDATE audit_head SET anchor_seq = $1, anchor_hash = $2 WHERE id = 1 AND anchor_seq < $1",
                        params![seq, &head],
                    )
                    .await?;
                    anchor = seq;
                }
            }
        }

        // Details of the remaining events past their action's retention.
        let shortest = policy.describe().iter().map(|(_, d)| *d).min().unwrap_or(policy.longest_days());
        let actions: Vec<(String,)> = c
            .fetch_all(
                "SELECT DISTINCT action FROM audit_events WHERE seq > $1 AND occurred_at < $2 AND actor <> $3 \
                 ORDER BY action",
                params![anchor, cutoff(now, shortest), PRUNED_ACTOR],
            )
            .await?;
        let mut pruned_details = Vec::new();
        for (action,) in actions {
            if details_kept(&action) {
                continue;
            }
            let before = cutoff(now, policy.days_for(&action));
            let n = c
                .execute(
                    "UPDATE audit_events SET actor = $1, key_id = NULL, target = '', before_state = NULL, \
                     after_state = NULL, request_id = NULL, source_ip = NULL, user_agent = NULL, salt = NULL \
                     WHERE seq > $2 AND action = $3 AND occurred_at < $4 AND actor <> $1",
                    params![PRUNED_ACTOR, anchor, &action, before],
                )
                .await?;
            if n > 0 {
                pruned_details.push(PrunedAction { action, before, events: n });
            }
        }

        let outcome = PruneOutcome {
            record: PruneRecord {
                anchor_seq: anchor,
                removed_events: removed,
                pruned_details,
                retention: policy.describe(),
            },
            dry_run,
            note,
        };
        if dry_run || !outcome.changed() {
            // Dropping the transaction rolls it back.
            return Ok(outcome);
        }
        record(&mut c, ctx, now, PRUNE_ACTION, "audit", None::<&()>, Some(&outcome.record)).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}
