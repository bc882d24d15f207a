//! Deployments (docs/DEPLOYMENTS.md): environments with service-level objectives, deployment
//! records and their status, and the rule that decides when an SLO report breaches.

use std::fmt;

/// A deployment error, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeployError(pub String);

/// Checks an environment name: 1 to 64 lower-case letters, digits, `-` and `_`, starting with
/// a letter (`staging`, `prod-eu`).
pub fn check_environment_name(s: &str) -> Result<(), DeployError> {
    let ok = (1..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(DeployError(format!(
            "environment name {:?} must be 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter",
            s.chars().take(70).collect::<String>()
        )))
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant),* }
        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            /// The stored and wire name.
            pub fn as_str(self) -> &'static str { match self { $(Self::$variant => $s),* } }
            /// Parses a stored or wire name.
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some(Self::$variant),)* _ => None } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(
    /// How a version is rolled out.
    Strategy {
        /// Replace what runs.
        Direct = "direct",
        /// Send a share of the traffic to the new version first.
        Canary = "canary",
        /// Start the new version beside the old one and switch over.
        BlueGreen = "blue_green",
    }
);

string_enum!(
    /// Where a deployment stands.
    Status {
        /// Recorded, not started.
        Pending = "pending",
        /// Rolling out.
        InProgress = "in_progress",
        /// Live.
        Succeeded = "succeeded",
        /// Did not go live.
        Failed = "failed",
        /// Replaced by a rollback.
        RolledBack = "rolled_back",
        /// Replaced by a later deployment that succeeded.
        Superseded = "superseded",
    }
);

impl Status {
    /// Whether deployment tooling may move a deployment from `self` to `to`. `rolled_back`
    /// and `superseded` are set by the registry itself, never by a status update.
    pub fn may_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Pending, InProgress | Succeeded | Failed) | (InProgress, Succeeded | Failed) | (InProgress, InProgress)
        )
    }

    /// Whether the deployment is, or is about to be, what runs in its environment.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Pending | Status::InProgress | Status::Succeeded)
    }
}

/// Checks a strategy's traffic share: a canary takes 1–99 % of the traffic, the others 100 %.
pub fn check_traffic(strategy: Strategy, percent: Option<i64>) -> Result<i64, DeployError> {
    match (strategy, percent) {
        (Strategy::Canary, Some(p @ 1..=99)) => Ok(p),
        (Strategy::Canary, Some(p)) => {
            Err(DeployError(format!("a canary takes between 1 and 99 percent of the traffic (got {p})")))
        }
        (Strategy::Canary, None) => Err(DeployError("a canary needs traffic_percent (1 to 99)".into())),
        (_, None | Some(100)) => Ok(100),
        (s, Some(p)) => Err(DeployError(format!("a {s} deployment takes all the traffic (got traffic_percent {p})"))),
    }
}

/// The service-level objectives of an environment: a report above any of them breaches.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Highest acceptable error rate (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Highest acceptable 95th-percentile latency (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_p95_ms: Option<f64>,
    /// Highest acceptable drift score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drift_score: Option<f64>,
}

/// What monitoring measured of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// Error rate (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// 95th-percentile latency (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<f64>,
    /// Drift score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_score: Option<f64>,
}

fn finite_non_negative(name: &str, v: Option<f64>) -> Result<(), DeployError> {
    match v {
        Some(x) if !x.is_finite() || x < 0.0 => {
            Err(DeployError(format!("{name} must be a finite number of at least 0 (got {x})")))
        }
        _ => Ok(()),
    }
}

impl Slo {
    /// Checks the thresholds: finite, not negative, an error rate at most 1.
    pub fn check(&self) -> Result<(), DeployError> {
        finite_non_negative("max_error_rate", self.max_error_rate)?;
        finite_non_negative("max_latency_p95_ms", self.max_latency_p95_ms)?;
        finite_non_negative("max_drift_score", self.max_drift_score)?;
        if self.max_error_rate.is_some_and(|r| r > 1.0) {
            return Err(DeployError("max_error_rate is a share between 0 and 1".into()));
        }
        Ok(())
    }

    /// The objectives `m` breaches, each as `metric value > threshold`; empty when none.
    pub fn breaches(&self, m: &Measured) -> Vec<String> {
        [
            ("error_rate", m.error_rate, self.max_error_rate),
            ("latency_p95_ms", m.latency_p95_ms, self.max_latency_p95_ms),
            ("drift_score", m.drift_score, self.max_drift_score),
        ]
        .into_iter()
        .filter_map(|(name, got, max)| match (got, max) {
            (Some(g), Some(t)) if g > t => Some(format!("{name} {g} > {t}")),
            _ => None,
        })
        .collect()
    }
}

impl Measured {
    /// Checks the values: at least one, finite, not negative, an error rate at most 1.
    pub fn check(&self) -> Result<(), DeployError> {
        if self.error_rate.is_none() && self.latency_p95_ms.is_none() && self.drift_score.is_none() {
            return Err(DeployError("an SLO report needs error_rate, latency_p95_ms or drift_score".into()));
        }
        finite_non_negative("error_rate", self.error_rate)?;
        finite_non_negative("latency_p95_ms", self.latency_p95_ms)?;
        finite_non_negative("drift_score", self.drift_score)?;
        if self.error_rate.is_some_and(|r| r > 1.0) {
            return Err(DeployError("error_rate is a share between 0 and 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["staging", "prod-eu", "p_1"] {
            assert!(check_environment_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Prod", "1prod", "prod eu", "prod/eu", &"a".repeat(65)] {
            assert!(check_environment_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_move_forward_only() {
        use Status::*;
        assert!(Pending.may_become(InProgress) && Pending.may_become(Succeeded) && InProgress.may_become(Failed));
        for (from, to) in [(Succeeded, Pending), (Failed, Succeeded), (Pending, RolledBack), (Succeeded, Superseded)] {
            assert!(!from.may_become(to), "{from} -> {to}");
        }
        assert!(Succeeded.is_active() && !RolledBack.is_active() && !Failed.is_active());
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(*s));
        }
    }

    #[test]
    fn traffic() {
        assert_eq!(check_traffic(Strategy::Canary, Some(10)).unwrap(), 10);
        assert!(check_traffic(Strategy::Canary, None).is_err());
        assert!(check_traffic(Strategy::Canary, Some(100)).is_err());
        assert_eq!(check_traffic(Strategy::BlueGreen, None).unwrap(), 100);
        assert!(check_traffic(Strategy::Direct, Some(50)).is_err());
    }

    #[test]
    fn breaches() {
        let slo = Slo { max_error_rate: Some(0.05), max_latency_p95_ms: Some(300.0), max_drift_score: None };
        assert!(slo.check().is_ok());
        let fine = Measured { error_rate: Some(0.01), latency_p95_ms: Some(300.0), drift_score: Some(9.0) };
        assert!(slo.breaches(&fine).is_empty(), "equal is not above; no drift objective");
        let bad = Measured { error_rate: Some(0.09), latency_p95_ms: Some(310.0), drift_score: None };
        assert_eq!(slo.breaches(&bad), ["error_rate 0.09 > 0.05", "latency_p95_ms 310 > 300"]);
        assert!(Measured::default().check().is_err());
        assert!(Measured { error_rate: Some(1.5), ..Measured::default() }.check().is_err());
        assert!(Measured { latency_p95_ms: Some(f64::NAN), ..Measured::default() }.check().is_err());
        assert!(Slo { max_drift_score: Some(-1.0), ..Slo::default() }.check().is_err());
    }
}
