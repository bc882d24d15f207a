//! The lifecycle of a version, the approvals that gate it, and the risk tier that decides how
//! strict those approvals are.
//!
//! ```text
//! draft ─submit→ submitted ─approve→ approved_staging ─promote→ staging ─approve→ approved_prod
//!                  ↑   │                                          │              │
//!                  │   └─reject→ changes_requested ←──reject──────┘           promote
//!                  └────submit────────┘                                          ↓
//!                                      retired ←retire─ deprecated ←deprecate─ production
//! ```
//!
//! Everything here is pure: the server loads the facts (current stage, approvals, owners),
//! asks this module what is allowed, and writes the result and its audit record in one
//! transaction.

use std::fmt;

use crate::principal::Role;

macro_rules! wire_enum {
    ($(#[$m:meta])* $ty:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $ty { $($(#[$vm])* $v),+ }

        impl $ty {
            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$v => $s),+ }
            }

            /// Parses a wire name.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    let allowed: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!("unknown {} {:?} (use one of: {})", stringify!($ty), s, allowed.join(", ")))
                })
            }
        }
    };
}

wire_enum! {
    /// Where a version is in its life.
    Stage {
        /// Pushed, not yet submitted for review.
        Draft = "draft",
        /// Waiting for a reviewer's approval for staging.
        Submitted = "submitted",
        /// A reviewer sent it back; the owner may submit it again.
        ChangesRequested = "changes_requested",
        /// Approved for staging, not yet promoted there.
        ApprovedStaging = "approved_staging",
        /// Running in staging; waiting for the approvals for production.
        Staging = "staging",
        /// Approved for production, not yet promoted there.
        ApprovedProd = "approved_prod",
        /// Serving production; the `production` alias points at it.
        Production = "production",
        /// Replaced or withdrawn from production.
        Deprecated = "deprecated",
        /// Kept for the record only.
        Retired = "retired",
    }
}

wire_enum! {
    /// How much harm a model can do, which decides how strict its approvals are.
    RiskTier {
        /// Approvals from MRC and Security; one person may hold both roles.
        Low = "low",
        /// Two distinct approvers, neither the submitter nor an owner of the model.
        Medium = "medium",
        /// As medium.
        High = "high",
    }
}

wire_enum! {
    /// What a person asks the lifecycle to do.
    Action {
        /// Ask for review (from draft or changes_requested).
        Submit = "submit",
        /// Send back for changes (from submitted or staging).
        Reject = "reject",
        /// Move an approved version on (approved_staging → staging, approved_prod → production).
        Promote = "promote",
        /// Withdraw from production.
        Deprecate = "deprecate",
        /// Keep for the record only.
        Retire = "retire",
    }
}

wire_enum! {
    /// A step that needs reviewers: from submitted to approved_staging, and from staging to
    /// approved_prod.
    Gate {
        /// submitted → approved_staging: one reviewer who is not the submitter.
        Staging = "staging",
        /// staging → approved_prod: MRC and Security (two-person rule on medium and high risk).
        Production = "production",
    }
}

impl Stage {
    /// The stages this one may move to, by any means (actions or completed approvals).
    pub fn successors(self) -> &'static [Stage] {
        use Stage::*;
        match self {
            Draft => &[Submitted],
            Submitted => &[ApprovedStaging, ChangesRequested],
            ChangesRequested => &[Submitted],
            ApprovedStaging => &[Staging],
            Staging => &[ApprovedProd, ChangesRequested],
            ApprovedProd => &[Production],
            Production => &[Deprecated],
            Deprecated => &[Retired],
            Retired => &[],
        }
    }

    /// Whether `self → to` is an edge of the lifecycle.
    pub fn may_move_to(self, to: Stage) -> bool {
        self.successors().contains(&to)
    }

    /// The approval gate a version in this stage is waiting at, if any.
    pub fn gate(self) -> Option<Gate> {
        match self {
            Stage::Submitted => Some(Gate::Staging),
            Stage::Staging => Some(Gate::Production),
            _ => None,
        }
    }
}

impl Gate {
    /// The stage a version reaches once the gate's approvals are complete.
    pub fn target(self) -> Stage {
        match self {
            Gate::Staging => Stage::ApprovedStaging,
            Gate::Production => Stage::ApprovedProd,
        }
    }
}

/// Why the lifecycle refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// The action does not apply to the version's stage.
    #[error("cannot {action} a version in stage {from}{hint}")]
    Illegal { action: Action, from: Stage, hint: String },
    /// The caller may not approve this version.
    #[error("{0}")]
    NotAllowed(String),
}

/// The stage `action` takes a version in stage `from` to, or why it cannot.
pub fn apply(from: Stage, action: Action) -> Result<Stage, LifecycleError> {
    use Stage::*;
    let to = match (action, from) {
        (Action::Submit, Draft | ChangesRequested) => Some(Submitted),
        (Action::Reject, Submitted | Staging) => Some(ChangesRequested),
        (Action::Promote, ApprovedStaging) => Some(Staging),
        (Action::Promote, ApprovedProd) => Some(Production),
        (Action::Deprecate, Production) => Some(Deprecated),
        (Action::Retire, Deprecated) => Some(Retired),
        _ => None,
    };
    match to {
        Some(to) => {
            debug_assert!(from.may_move_to(to));
            Ok(to)
        }
        None => Err(LifecycleError::Illegal { action, from, hint: hint(from) }),
    }
}

fn hint(from: Stage) -> String {
    match from {
        Stage::Submitted => "; it needs a reviewer's approval for staging (or a rejection)".into(),
        Stage::Staging => "; it needs the MRC and Security approvals for production (or a rejection)".into(),
        Stage::Retired => "; retired versions do not change".into(),
        _ => {
            let next: Vec<_> = Action::ALL.iter().filter(|a| apply_quiet(from, **a)).map(|a| a.as_str()).collect();
            if next.is_empty() { String::new() } else { format!("; possible: {}", next.join(", ")) }
        }
    }
}

fn apply_quiet(from: Stage, action: Action) -> bool {
    use Stage::*;
    matches!(
        (action, from),
        (Action::Submit, Draft | ChangesRequested)
            | (Action::Reject, Submitted | Staging)
            | (Action::Promote, ApprovedStaging | ApprovedProd)
            | (Action::Deprecate, Production)
            | (Action::Retire, Deprecated)
    )
}

/// An approval already given at a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Who approved (an account name).
    pub approver: String,
    /// The reviewer role the approval was given in.
    pub role: Role,
}

/// The facts an approval decision needs.
#[derive(Debug, Clone)]
pub struct Review<'a> {
    /// The gate the version waits at.
    pub gate: Gate,
    /// The model's risk tier.
    pub risk: RiskTier,
    /// Who submitted the version (the last `submit`).
    pub submitter: &'a str,
    /// The model's owners.
    pub owners: &'a [String],
    /// Approvals already recorded at this gate since the last submission.
    pub approvals: &'a [Approval],
}

/// The reviewer roles that count at a gate.
pub fn gate_roles(gate: Gate) -> &'static [Role] {
    match gate {
        Gate::Staging => &[Role::Mrc, Role::Security, Role::Sre],
        Gate::Production => &[Role::Mrc, Role::Security],
    }
}

impl Review<'_> {
    /// Whether the two-person rule applies.
    pub fn two_person_rule(&self) -> bool {
        matches!(self.risk, RiskTier::Medium | RiskTier::High)
    }

    /// Checks that `approver`, acting in `role`, may approve now. Refuses the submitter
    /// always; on medium and high risk also the model's owners, and anyone who already
    /// approved at this gate in another role.
    pub fn check_approver(&self, approver: &str, role: Role) -> Result<(), LifecycleError> {
        if !gate_roles(self.gate).contains(&role) {
            let roles: Vec<_> = gate_roles(self.gate).iter().map(|r| r.as_str()).collect();
            return Err(LifecycleError::NotAllowed(format!(
                "the {} gate takes approvals in the roles {}, not {role}",
                self.gate,
                roles.join(", ")
            )));
        }
        if approver == self.submitter {
            return Err(LifecycleError::NotAllowed("the submitter cannot approve their own submission".into()));
        }
        if self.approvals.iter().any(|a| a.approver == approver && a.role == role) {
            return Err(LifecycleError::NotAllowed(format!("{approver} has already approved as {role}")));
        }
        if self.approvals.iter().any(|a| a.role == role) {
            return Err(LifecycleError::NotAllowed(format!("the {role} approval has already been given")));
        }
        if self.two_person_rule() {
            if self.owners.iter().any(|o| o == approver) {
                return Err(LifecycleError::NotAllowed(format!(
                    "two-person rule ({} risk): an owner of the model cannot approve it",
                    self.risk
                )));
            }
            if self.approvals.iter().any(|a| a.approver == approver) {
                return Err(LifecycleError::NotAllowed(format!(
                    "two-person rule ({} risk): the approvals must come from two different people",
                    self.risk
                )));
            }
        }
        Ok(())
    }

    /// The reviewer roles still missing before the gate opens (empty when complete).
    pub fn missing(&self) -> Vec<Role> {
        match self.gate {
            Gate::Staging if self.approvals.is_empty() => vec![Role::Mrc, Role::Security, Role::Sre],
            Gate::Staging => Vec::new(),
            Gate::Production => [Role::Mrc, Role::Security]
                .into_iter()
                .filter(|r| !self.approvals.iter().any(|a| a.role == *r))
                .collect(),
        }
    }

    /// A human sentence for what is missing.
    pub fn missing_text(&self) -> String {
        let missing = self.missing();
        match (self.gate, missing.is_empty()) {
            (_, true) => "complete".into(),
            (Gate::Staging, false) => "one approval from an mrc, security or sre reviewer".into(),
            (Gate::Production, false) => {
                let names: Vec<_> = missing.iter().map(|r| r.as_str()).collect();
                format!("approval from {}", names.join(" and "))
            }
        }
    }
}

/// A semantic version label `MAJOR.MINOR.PATCH`, with an optional pre-release
/// (`-rc.1`) and build metadata (`+abc`), ordered by semver precedence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Semver {
    text: String,
    major: u64,
    minor: u64,
    patch: u64,
    pre: Vec<PreId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PreId {
    Num(u64),
    Alpha(String),
}

impl Semver {
    /// Parses a label; the message says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid semantic version {:?}: {why}", s.chars().take(80).collect::<String>());
        if s.len() > 128 {
            return Err(bad("at most 128 characters"));
        }
        let (rest, build) = match s.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        if let Some(b) = build
            && !ids_ok(b, false)
        {
            return Err(bad("build metadata must be dot-separated [0-9A-Za-z-] identifiers"));
        }
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let nums: Vec<&str> = core.split('.').collect();
        if nums.len() != 3 {
            return Err(bad("use MAJOR.MINOR.PATCH, e.g. 1.4.2"));
        }
        let mut parsed = [0u64; 3];
        for (slot, n) in parsed.iter_mut().zip(&nums) {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0')) {
                return Err(bad("MAJOR, MINOR and PATCH are numbers without leading zeros"));
            }
            *slot = n.parse().map_err(|_| bad("number too large"))?;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => {
                if !ids_ok(p, true) {
                    return Err(bad("the pre-release must be dot-separated [0-9A-Za-z-] identifiers"));
                }
                p.split('.')
                    .map(|id| match id.parse::<u64>() {
                        Ok(n) if id.bytes().all(|b| b.is_ascii_digit()) => PreId::Num(n),
                        _ => PreId::Alpha(id.to_owned()),
                    })
                    .collect()
            }
        };
        Ok(Self { text: s.to_owned(), major: parsed[0], minor: parsed[1], patch: parsed[2], pre })
    }

    /// The label as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A string whose byte order is the semver precedence order (build metadata ignored),
    /// so a database can sort by it.
    pub fn sort_key(&self) -> String {
        let mut key = format!("{:020}.{:020}.{:020}", self.major, self.minor, self.patch);
        if self.pre.is_empty() {
            // A release sorts after all of its pre-releases.
            key.push('~');
        } else {
            key.push('-');
            for id in &self.pre {
                match id {
                    PreId::Num(n) => key.push_str(&format!("0{n:020}!")),
                    PreId::Alpha(a) => key.push_str(&format!("1{a}!")),
                }
            }
            // Each identifier ends in '!', below every identifier byte ('-' is the lowest),
            // so "a" sorts before "a-"; the list ends in ' ', below '!' and the type digits,
            // so fewer identifiers sort first when all before are equal.
            key.push(' ');
        }
        key
    }
}

fn ids_ok(s: &str, no_leading_zero: bool) -> bool {
    !s.is_empty()
        && s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !(no_leading_zero && id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()))
        })
}

impl PartialOrd for Semver {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Semver {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
            .then_with(|| self.text.cmp(&other.text))
    }
}

impl fmt::Display for Semver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_action_from_every_stage() {
        use Stage::*;
        let legal = [
            (Action::Submit, Draft, Submitted),
            (Action::Submit, ChangesRequested, Submitted),
            (Action::Reject, Submitted, ChangesRequested),
            (Action::Reject, Staging, ChangesRequested),
            (Action::Promote, ApprovedStaging, Staging),
            (Action::Promote, ApprovedProd, Production),
            (Action::Deprecate, Production, Deprecated),
            (Action::Retire, Deprecated, Retired),
        ];
        for &from in Stage::ALL {
            for &action in Action::ALL {
                let expected = legal.iter().find(|(a, f, _)| *a == action && *f == from).map(|l| l.2);
                match (apply(from, action), expected) {
                    (Ok(to), Some(e)) => assert_eq!(to, e),
                    (Err(LifecycleError::Illegal { .. }), None) => {}
                    (got, want) => panic!("{action} from {from}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn the_graph_is_the_documented_one() {
        // Gates add the two approval edges; nothing else leads anywhere.
        assert_eq!(Stage::Submitted.gate().map(Gate::target), Some(Stage::ApprovedStaging));
        assert_eq!(Stage::Staging.gate().map(Gate::target), Some(Stage::ApprovedProd));
        let edges: usize = Stage::ALL.iter().map(|s| s.successors().len()).sum();
        assert_eq!(edges, 10);
        assert!(Stage::Retired.successors().is_empty());
        let err = apply(Stage::Retired, Action::Promote).unwrap_err().to_string();
        assert!(err.contains("retired versions do not change"), "{err}");
        let err = apply(Stage::Draft, Action::Promote).unwrap_err().to_string();
        assert!(err.contains("possible: submit"), "{err}");
    }

    proptest! {
        #[test]
        fn any_path_follows_edges(actions in prop::collection::vec(0usize..5, 0..40)) {
            let mut stage = Stage::Draft;
            for a in actions {
                let action = Action::ALL[a];
                if let Ok(next) = apply(stage, action) {
                    prop_assert!(stage.may_move_to(next));
                    stage = next;
                }
            }
        }
    }

    fn review<'a>(gate: Gate, risk: RiskTier, owners: &'a [String], approvals: &'a [Approval]) -> Review<'a> {
        Review { gate, risk, submitter: "sam", owners, approvals }
    }

    #[test]
    fn production_needs_mrc_and_security() {
        let owners = vec!["olga".to_owned()];
        let none = [];
        let r = review(Gate::Production, RiskTier::Low, &owners, &none);
        assert_eq!(r.missing(), vec![Role::Mrc, Role::Security]);
        assert!(r.check_approver("sam", Role::Mrc).is_err(), "submitter");
        assert!(r.check_approver("rita", Role::Sre).is_err(), "sre does not count for production");
        // Low risk: an owner may approve, and one person may give both approvals.
        assert!(r.check_approver("olga", Role::Mrc).is_ok());
        let one = [Approval { approver: "rita".into(), role: Role::Mrc }];
        let r = review(Gate::Production, RiskTier::Low, &owners, &one);
        assert!(r.check_approver("rita", Role::Security).is_ok());
        assert!(r.check_approver("vic", Role::Mrc).is_err(), "mrc already given");
        assert_eq!(r.missing(), vec![Role::Security]);
        assert_eq!(r.missing_text(), "approval from security");
    }

    #[test]
    fn two_person_rule_on_medium_and_high() {
        let owners = vec!["olga".to_owned()];
        for risk in [RiskTier::Medium, RiskTier::High] {
            let one = [Approval { approver: "rita".into(), role: Role::Mrc }];
            let r = review(Gate::Production, risk, &owners, &one);
            let e = r.check_approver("rita", Role::Security).unwrap_err().to_string();
            assert!(e.contains("two different people"), "{e}");
            let e = r.check_approver("olga", Role::Security).unwrap_err().to_string();
            assert!(e.contains("owner"), "{e}");
            assert!(r.check_approver("sam", Role::Security).is_err());
            assert!(r.check_approver("vic", Role::Security).is_ok());
            let both = [one[0].clone(), Approval { approver: "vic".into(), role: Role::Security }];
            assert!(review(Gate::Production, risk, &owners, &both).missing().is_empty());
        }
    }

    #[test]
    fn staging_needs_one_reviewer() {
        let owners = vec![];
        let none = [];
        let r = review(Gate::Staging, RiskTier::High, &owners, &none);
        assert_eq!(r.missing().len(), 3);
        assert!(r.check_approver("rita", Role::Sre).is_ok());
        assert!(r.check_approver("rita", Role::ModelOwner).is_err());
        let one = [Approval { approver: "rita".into(), role: Role::Sre }];
        assert!(review(Gate::Staging, RiskTier::High, &owners, &one).missing().is_empty());
    }

    #[test]
    fn semver_parses_and_orders_by_precedence() {
        for bad in ["1.2", "1.2.3.4", "01.2.3", "1.2.x", "", "1.2.3-", "1.2.3+", "1.2.3-01", "v1.2.3", "1.2.3-a..b"] {
            assert!(Semver::parse(bad).is_err(), "{bad}");
        }
        let order = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-alpha.beta-",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "2.0.0",
        ];
        let parsed: Vec<Semver> = order.iter().map(|s| Semver::parse(s).unwrap()).collect();
        for w in parsed.windows(2) {
            assert!(w[0] < w[1], "{} < {}", w[0], w[1]);
            assert!(w[0].sort_key() < w[1].sort_key(), "key {} < {}", w[0], w[1]);
        }
        assert_eq!(Semver::parse("1.4.2+build.7").unwrap().as_str(), "1.4.2+build.7");
    }

    proptest! {
        #[test]
        fn sort_key_agrees_with_ordering(a in (0u64..30, 0u64..30, 0u64..30, prop::option::of("[a-z]{1,3}(\\.(0|[1-9][0-9]?))?")),
                                         b in (0u64..30, 0u64..30, 0u64..30, prop::option::of("[a-z]{1,3}(\\.(0|[1-9][0-9]?))?"))) {
            let mk = |(x, y, z, p): (u64, u64, u64, Option<String>)| {
                Semver::parse(&match p { Some(p) => format!("{x}.{y}.{z}-{p}"), None => format!("{x}.{y}.{z}") }).unwrap()
            };
            let (a, b) = (mk(a), mk(b));
            prop_assert_eq!(a.cmp(&b), a.sort_key().cmp(&b.sort_key()));
        }
    }
}
