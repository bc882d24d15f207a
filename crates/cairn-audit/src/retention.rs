//! How long audit events are kept, and the record a pruning leaves in the chain.
//!
//! Two things happen when events pass their retention (docs/AUDIT.md, "Retention"):
//!
//! - **Details pruned.** An event whose action has a retention shorter than the longest one
//!   keeps its place in the chain (sequence number, time, action, outcome, details digest,
//!   hash) but loses its details and their salt; its actor becomes [`PRUNED_ACTOR`]. The
//!   chain commits only to the digest, so it still verifies. The `audit.prune` event written
//!   in the same transaction says, per action, up to which time details were pruned; the
//!   verifier accepts a pruned event only when a later such record covers it.
//! - **Events removed.** The prefix of the chain older than the longest retention is deleted
//!   up to a signed checkpoint, which becomes the chain's new anchor: verification starts
//!   there and the checkpoint's signature vouches for it.
//!
//! Pruning records ([`PRUNE_ACTION`]) and erasure records (`gdpr.erase`) are what vouch for
//! pruned and erased events, so their own details are never pruned: they leave only with
//! the removed prefix, after every event they vouch for.

use serde::{Deserialize, Serialize};

/// The action of the event a pruning writes.
pub const PRUNE_ACTION: &str = "audit.prune";

/// The actor that stands in a pruned event's details.
pub const PRUNED_ACTOR: &str = "pruned";

/// The default retention: seven years.
pub const DEFAULT_RETENTION_DAYS: u32 = 2_555;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Actions whose details are never pruned (they vouch for other events).
pub fn details_kept(action: &str) -> bool {
    action == PRUNE_ACTION || action == crate::verify::ERASE_ACTION
}

/// Retention per action: a default and overrides for an action (`auth.login`) or a family of
/// actions (`auth.*`). The most specific rule applies: an exact action, then the longest
/// family, then the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    default_days: u32,
    rules: Vec<(String, u32)>,
}

/// A retention setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RetentionError(String);

impl RetentionPolicy {
    /// Parses `action=days` pairs separated by commas (`auth.login=90,session.*=30`), over a
    /// default. Days are 1 to 36,500; each action or family may appear once.
    pub fn parse(default_days: u32, rules: &str) -> Result<Self, RetentionError> {
        check_days("the default retention", default_days)?;
        let mut out: Vec<(String, u32)> = Vec::new();
        for part in rules.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (pattern, days) = part.split_once('=').ok_or_else(|| {
                RetentionError(format!("retention rule {part:?} is not action=days (such as auth.login=90)"))
            })?;
            let pattern = pattern.trim();
            let family = pattern.strip_suffix(".*").unwrap_or(pattern);
            let valid = !family.is_empty()
                && family.split('.').all(|seg| {
                    !seg.is_empty() && seg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                });
            if !valid {
                return Err(RetentionError(format!(
                    "retention rule {part:?}: {pattern:?} is not an action (auth.login) or a family of actions (auth.*)"
                )));
            }
            let days: u32 = days.trim().parse().map_err(|_| {
                RetentionError(format!("retention rule {part:?}: {:?} is not a number of days", days.trim()))
            })?;
            check_days(&format!("retention rule {part:?}"), days)?;
            if out.iter().any(|(p, _)| p == pattern) {
                return Err(RetentionError(format!("retention for {pattern:?} is given twice")));
            }
            out.push((pattern.to_owned(), days));
        }
        Ok(Self { default_days, rules: out })
    }

    /// Seven years for everything.
    pub fn seven_years() -> Self {
        Self { default_days: DEFAULT_RETENTION_DAYS, rules: Vec::new() }
    }

    /// The retention of events of `action`, in days.
    pub fn days_for(&self, action: &str) -> u32 {
        let mut best: Option<(usize, u32)> = None;
        for (pattern, days) in &self.rules {
            let rank = if pattern == action {
                usize::MAX
            } else if let Some(family) = pattern.strip_suffix(".*")
                && action.strip_prefix(family).is_some_and(|rest| rest.starts_with('.'))
            {
                family.len()
            } else {
                continue;
            };
            if best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, *days));
            }
        }
        best.map_or(self.default_days, |(_, d)| d)
    }

    /// The longest retention of any action: events older than this may be removed.
    pub fn longest_days(&self) -> u32 {
        self.rules.iter().map(|(_, d)| *d).fold(self.default_days, u32::max)
    }

    /// The default and the rules, for reports.
    pub fn describe(&self) -> Vec<(String, u32)> {
        let mut v = vec![("*".to_owned(), self.default_days)];
        v.extend(self.rules.iter().cloned());
        v
    }
}

fn check_days(what: &str, days: u32) -> Result<(), RetentionError> {
    if (1..=36_500).contains(&days) {
        Ok(())
    } else {
        Err(RetentionError(format!("{what}: {days} days is outside 1 to 36,500")))
    }
}

/// The cut-off time (ms) before which events with `days` of retention have expired at `now`.
pub fn cutoff(now: i64, days: u32) -> i64 {
    now.saturating_sub(i64::from(days).saturating_mul(DAY_MS))
}

/// What a pruning did, as the after-state of its `audit.prune` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRecord {
    /// The anchor after this pruning (the event before the first one kept; 0: the genesis).
    pub anchor_seq: i64,
    /// Events removed from the start of the chain by this pruning.
    pub removed_events: u64,
    /// Events whose details were pruned, per action: those before `before` (ms).
    pub pruned_details: Vec<PrunedAction>,
    /// The retention in force, `[pattern, days]` (`*` is the default).
    pub retention: Vec<(String, u32)>,
}

/// Details of events of one action, older than a time, were pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrunedAction {
    /// The action.
    pub action: String,
    /// Events of it before this time (ms) have no details any more.
    pub before: i64,
    /// How many were pruned by this pruning.
    pub events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_rule_applies() {
        let p = RetentionPolicy::parse(2555, "auth.*=180, auth.login=90,auth.mfa.*=30,version.*=3650").unwrap();
        assert_eq!(p.days_for("auth.login"), 90);
        assert_eq!(p.days_for("auth.logout"), 180);
        assert_eq!(p.days_for("auth.mfa.enrol"), 30);
        assert_eq!(p.days_for("auth.mfa"), 180, "a family does not include its own name");
        assert_eq!(p.days_for("authx.login"), 2555, "a family matches at a dot only");
        assert_eq!(p.days_for("model.create"), 2555);
        assert_eq!(p.longest_days(), 3650);
        assert_eq!(RetentionPolicy::parse(30, "").unwrap().longest_days(), 30);
        assert_eq!(RetentionPolicy::seven_years().days_for("x.y"), DEFAULT_RETENTION_DAYS);
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        for (rules, needle) in [
            ("auth.login", "action=days"),
            ("auth.login=ninety", "not a number"),
            ("auth.login=0", "outside 1 to 36,500"),
            ("auth.login=36501", "outside"),
            ("Auth.Login=3", "not an action"),
            ("auth..login=3", "not an action"),
            ("*=3", "not an action"),
            ("auth.login=3,auth.login=4", "twice"),
        ] {
            let e = RetentionPolicy::parse(2555, rules).unwrap_err().to_string();
            assert!(e.contains(needle), "{rules}: {e}");
        }
        assert!(RetentionPolicy::parse(0, "").unwrap_err().to_string().contains("default"));
    }

    #[test]
    fn cutoffs_count_whole_days_back() {
        assert_eq!(cutoff(10 * DAY_MS, 3), 7 * DAY_MS);
        assert_eq!(cutoff(0, 36_500), -36_500 * DAY_MS);
    }
}
