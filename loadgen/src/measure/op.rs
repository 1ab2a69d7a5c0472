//! The operations loadgen measures, and the two ways it measures their latency.
//!
//! The set is closed: every file loadgen writes has a fixed column set built from
//! [`Op::ALL`], so adding an operation is a format change (see `REPORTS.md`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One kind of request a simulated client makes (or, for [`Op::Push`], receives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// A client registers an instance.
    Register,
    /// A client deregisters an instance.
    Deregister,
    /// A client renews its instance (Nacos 1.x heartbeat, or the native beat).
    Beat,
    /// A client queries a service's instances.
    Query,
    /// A subscriber receives a pushed change.
    Push,
}

impl Op {
    /// Every operation, in the order of every file's columns and rows.
    pub const ALL: [Op; 5] = [Op::Register, Op::Deregister, Op::Beat, Op::Query, Op::Push];

    /// The lower-case name used in file names, CSV headers, JSON keys and interval log tags.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Register => "register",
            Op::Deregister => "deregister",
            Op::Beat => "beat",
            Op::Query => "query",
            Op::Push => "push",
        }
    }

    /// Position in [`Op::ALL`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text was not the name of an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation {0:?} (expected register, deregister, beat, query or push)")]
pub struct UnknownOp(pub String);

impl FromStr for Op {
    type Err = UnknownOp;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Op::ALL
            .into_iter()
            .find(|op| op.name() == s)
            .ok_or_else(|| UnknownOp(s.to_owned()))
    }
}

/// Which clock a latency was measured from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyKind {
    /// From the time the open-model schedule intended the request to be sent. A stalled
    /// server delays the sends behind it, and this kind counts that wait: it is the latency
    /// a user arriving on schedule would see, corrected for coordinated omission.
    Corrected,
    /// From the time the request was actually sent: the service time alone. It hides stalls
    /// and is shown only to make the difference visible.
    Uncorrected,
}

impl LatencyKind {
    /// Both kinds, corrected first.
    pub const ALL: [LatencyKind; 2] = [LatencyKind::Corrected, LatencyKind::Uncorrected];

    /// The lower-case name used in files.
    pub const fn name(self) -> &'static str {
        match self {
            LatencyKind::Corrected => "corrected",
            LatencyKind::Uncorrected => "uncorrected",
        }
    }
}

impl fmt::Display for LatencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_index_matches_all() {
        for (i, op) in Op::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i);
            assert_eq!(op.name().parse::<Op>(), Ok(op));
            assert_eq!(
                serde_json::to_string(&op).expect("serializes"),
                format!("\"{op}\"")
            );
        }
        assert!("Register".parse::<Op>().is_err());
    }
}
