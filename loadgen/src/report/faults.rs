//! The figures of each fault of a `--chaos` run: the `faults` of `summary.json`, the
//! fault table printed at the end of a run and shown in `report.html`, and `faults.csv`.
//!
//! Times are seconds on the timeline's axis (since the start of the measured run), so
//! that they line up with the charts; `scheduled_s` is the time the schedule gave (from
//! the start of the hold phase).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::table::Table;
use crate::error::ReportError;

/// `faults.csv`.
pub const FAULTS_FILE: &str = "faults.csv";

/// The header of `faults.csv`.
pub const FAULTS_COLUMNS: [&str; 17] = [
    "entry",
    "action",
    "node",
    "scheduled_s",
    "start_s",
    "end_s",
    "recovery_from_s",
    "recovered",
    "recovery_ms",
    "window_end_s",
    "errors",
    "errors_by_code",
    "failovers",
    "lost",
    "returned",
    "peak_missing",
    "peak_returned",
];

/// One fault of a chaos run and what it did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultSummary {
    /// The schedule entry as written, e.g. `partition:1@60s-90s`.
    pub entry: String,
    /// `kill`, `restart`, `partition`, `pause`, `join` or `leave`.
    pub action: String,
    /// The node, 1-based (join and leave: the number of nodes).
    pub node: usize,
    /// The nodes a join started or a leave stopped, 1-based (empty for other faults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<usize>,
    /// When the schedule put it, seconds from the start of the hold phase.
    pub scheduled_s: f64,
    /// When it was applied.
    pub start_s: f64,
    /// When its effect ended: the heal (partition), the resume (pause), the restart (a
    /// killed node restarted later; the end of the hold if never); a restart ends when it
    /// starts.
    pub end_s: f64,
    /// Where the convergence time counts from: the end, except for a kill (its start).
    pub recovery_from_s: f64,
    /// Whether every running node then held the expected clients (every acknowledged
    /// live client, no acknowledged deleted one, among the clients settled for at least
    /// [`GRACE`](crate::run::chaos::census::GRACE); membership only, not health) within the
    /// convergence timeout.
    pub recovered: bool,
    /// Milliseconds from `recovery_from_s` to that (None: never, within the timeout;
    /// resolution: one check every 100 ms).
    pub recovery_ms: Option<f64>,
    /// The end of the window the error and failover counts cover: from the start to the
    /// later of the end and the convergence (or its timeout).
    pub window_end_s: f64,
    /// Client requests that failed in the window (after their retries).
    pub errors: u64,
    /// Those failures by code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Requests retried on another node in the window.
    pub failovers: u64,
    /// Live clients (registration acknowledged, never deregistered, and up throughout
    /// the check) missing from some running node after the convergence wait: 0 when
    /// converged, otherwise counted at the timeout. Must be 0.
    pub lost: u64,
    /// Deleted clients (deregistration acknowledged, not back yet) on some running node
    /// after the convergence wait (0 when converged).
    pub returned: u64,
    /// The most live clients missing from some running node in one check during the wait:
    /// replication lag, and registrations dropped that their clients then repaired
    /// (re-registering after a 404).
    #[serde(default)]
    pub peak_missing: u64,
    /// The most deleted clients present on some running node in one check during the wait.
    #[serde(default)]
    pub peak_returned: u64,
    /// Why the fault could not be applied, if it could not (e.g. the run stopped first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl FaultSummary {
    /// Converged, nothing lost, applied.
    pub fn is_clean(&self) -> bool {
        self.recovered && self.lost == 0 && self.failed.is_none()
    }

    /// The entry, with the nodes a join or a leave moved, e.g. `join:2@5s (nodes 4, 5)`.
    pub fn name(&self) -> String {
        match self.nodes.as_slice() {
            [] => self.entry.clone(),
            [one] => format!("{} (node {one})", self.entry),
            many => format!(
                "{} (nodes {})",
                self.entry,
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn codes(&self) -> String {
        self.errors_by_code
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn recovery_cell(&self) -> String {
        match (&self.failed, self.recovery_ms) {
            (Some(_), _) => "not applied".to_owned(),
            (None, Some(ms)) if self.recovered => format!("{ms:.0} ms"),
            (None, _) => "NO".to_owned(),
        }
    }
}

/// The fault table printed at the end of a run (empty without faults).
pub(crate) fn table(faults: &[FaultSummary]) -> String {
    if faults.is_empty() {
        return String::new();
    }
    let mut t = Table::new([
        "fault",
        "start",
        "end",
        "errors",
        "failovers",
        "recovered",
        "lost",
        "returned",
        "peak missing/returned",
        "errors by code",
    ]);
    for f in faults {
        t.row([
            f.name(),
            format!("{:.1}s", f.start_s),
            format!("{:.1}s", f.end_s),
            f.errors.to_string(),
            f.failovers.to_string(),
            f.recovery_cell(),
            f.lost.to_string(),
            f.returned.to_string(),
            format!("{}/{}", f.peak_missing, f.peak_returned),
            f.codes(),
        ]);
    }
    let mut out = String::from(
        "faults (times since the start; recovered: time from the end, or from a kill, until every running node holds exactly the live clients; peak: the most missing or returned in one check meanwhile)\n",
    );
    out.push_str(&t.render());
    for f in faults {
        if let Some(why) = &f.failed {
            out.push_str(&format!("{}: not applied: {why}\n", f.entry));
        }
    }
    out
}

/// Writes `faults.csv`.
pub(crate) fn write_csv(path: &Path, faults: &[FaultSummary]) -> Result<(), ReportError> {
    let bad = |e: csv::Error| ReportError::format(path, e.to_string());
    let mut w = csv::Writer::from_path(path).map_err(bad)?;
    w.write_record(FAULTS_COLUMNS).map_err(bad)?;
    let num = |v: f64| format!("{:.3}", v);
    for f in faults {
        w.write_record([
            f.entry.clone(),
            f.action.clone(),
            f.node.to_string(),
            num(f.scheduled_s),
            num(f.start_s),
            num(f.end_s),
            num(f.recovery_from_s),
            f.recovered.to_string(),
            f.recovery_ms.map_or(String::new(), |m| format!("{m:.1}")),
            num(f.window_end_s),
            f.errors.to_string(),
            f.codes(),
            f.failovers.to_string(),
            f.lost.to_string(),
            f.returned.to_string(),
            f.peak_missing.to_string(),
            f.peak_returned.to_string(),
        ])
        .map_err(bad)?;
    }
    w.flush().map_err(|e| ReportError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault() -> FaultSummary {
        FaultSummary {
            entry: "pause:3@8s-9s".into(),
            action: "pause".into(),
            node: 3,
            nodes: Vec::new(),
            scheduled_s: 8.0,
            start_s: 9.5,
            end_s: 10.5,
            recovery_from_s: 10.5,
            recovered: true,
            recovery_ms: Some(120.4),
            window_end_s: 10.62,
            errors: 2,
            errors_by_code: BTreeMap::from([("TIMEOUT".to_owned(), 2)]),
            failovers: 40,
            lost: 0,
            returned: 0,
            peak_missing: 3,
            peak_returned: 0,
            failed: None,
        }
    }

    #[test]
    fn table_and_csv_carry_every_figure() {
        let f = fault();
        let t = table(std::slice::from_ref(&f));
        for want in ["pause:3@8s-9s", "9.5s", "120 ms", "TIMEOUT=2", "40", "3/0"] {
            assert!(t.contains(want), "{want} missing from\n{t}");
        }
        assert!(f.is_clean());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FAULTS_FILE);
        write_csv(&path, std::slice::from_ref(&f)).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(FAULTS_COLUMNS.join(",").as_str()));
        assert_eq!(
            lines.next(),
            Some(
                "pause:3@8s-9s,pause,3,8.000,9.500,10.500,10.500,true,120.4,10.620,2,TIMEOUT=2,40,0,0,3,0"
            )
        );
        let join = FaultSummary {
            entry: "join:2@5s".into(),
            action: "join".into(),
            node: 2,
            nodes: vec![4, 5],
            ..f.clone()
        };
        assert!(
            table(std::slice::from_ref(&join)).contains("join:2@5s (nodes 4, 5)"),
            "{}",
            table(std::slice::from_ref(&join))
        );
        let unreplicated = FaultSummary {
            recovered: false,
            recovery_ms: None,
            ..f
        };
        assert!(!unreplicated.is_clean());
        assert!(table(&[unreplicated]).contains("NO"));
        assert_eq!(table(&[]), "");
    }
}
