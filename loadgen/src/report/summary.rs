//! `summary.json`: a run's parameters, machine, totals, rates, percentiles, errors,
//! convergence and markers in one document, and the plain-text table printed at the end
//! of a run.
//!
//! The summary is the machine-readable record of a run: the baseline check compares two of
//! them, the history row is cut from one, and the merge reads the shards' ones. It is
//! derived from a [`Recording`] and never edited by loadgen afterwards (a committed
//! baseline may be edited by hand, e.g. to relax its `expect` section).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::faults::FaultSummary;
use super::table::Table;
use crate::error::ReportError;
use crate::measure::latency::{LatencyStats, human_rate, human_us};
use crate::measure::machine::{Machine, RunInfo};
use crate::measure::op::{LatencyKind, Op};
use crate::measure::recording::{Recording, per_second};
use crate::measure::timeline::Marker;
use crate::measure::timestamp::{rfc3339, unix_ms};

/// The `format` field of summaries written by this version.
pub const SUMMARY_FORMAT: &str = "loadgen-summary/1";

/// Counts over every operation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Requests the schedules called for (ok + errors + dropped).
    pub scheduled: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Late sends.
    pub late: u64,
    /// Dropped sends.
    pub dropped: u64,
    /// Successful requests per second, every operation together.
    pub throughput_per_s: f64,
}

/// One operation's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    /// The target rate, averaged over the run's time, per second (0: none set).
    pub target_per_s: f64,
    /// Requests the schedule called for (ok + errors + dropped).
    pub scheduled: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Sends that started more than the late threshold after their intended time.
    pub late: u64,
    /// Sends the schedule intended that never happened.
    pub dropped: u64,
    /// Successful requests per second over the run.
    pub throughput_per_s: f64,
    /// Failed requests by error code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Latency from the intended send time (successful requests only).
    pub corrected: Option<LatencyStats>,
    /// Latency from the actual send time (successful requests only).
    pub uncorrected: Option<LatencyStats>,
}

impl OpSummary {
    /// The latency statistics of one kind.
    pub fn latency(&self, kind: LatencyKind) -> Option<&LatencyStats> {
        match kind {
            LatencyKind::Corrected => self.corrected.as_ref(),
            LatencyKind::Uncorrected => self.uncorrected.as_ref(),
        }
    }
}

/// Convergence figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConvergenceSummary {
    /// Convergence samples (one per probe registration and non-owner node).
    pub count: u64,
    /// Probe registrations not visible on some node before the driver's deadline.
    pub unconverged: u64,
    /// Time from the owner's acknowledgement to visibility on another node.
    pub latency: Option<LatencyStats>,
}

/// What a later run compared against this one as a baseline must also achieve (see
/// [`check`](crate::check())). Written from the run's own outcome; edit a committed
/// baseline to relax it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectations {
    /// The run had no failed request; a run checked against it must have none either.
    #[serde(default)]
    pub no_errors: bool,
    /// Every probe converged; a run checked against it must converge too.
    #[serde(default)]
    pub converged: bool,
}

/// The content of `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_FORMAT`].
    pub format: String,
    /// The scenario's name.
    pub scenario: String,
    /// Start of the measured run, RFC 3339 UTC.
    pub started_at: String,
    /// Start of the measured run, milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// Length of the measured run, seconds.
    pub duration_s: f64,
    /// The timeline's nominal interval, seconds.
    pub interval_s: f64,
    /// The late threshold, microseconds.
    pub late_threshold_us: u64,
    /// The code's git revision (`-dirty` when it had uncommitted changes).
    pub git_revision: String,
    /// The machine.
    pub machine: Machine,
    /// Every parameter the driver gave.
    pub parameters: BTreeMap<String, String>,
    /// Counts over every operation.
    pub totals: Totals,
    /// Failed requests by code, every operation together.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Figures of each operation used in the run.
    pub ops: BTreeMap<Op, OpSummary>,
    /// Convergence figures.
    pub convergence: ConvergenceSummary,
    /// Markers (fault events, phases), in time order.
    pub markers: Vec<Marker>,
    /// What a run checked against this one must achieve.
    #[serde(default)]
    pub expect: Expectations,
    /// A `--chaos` run's faults and their figures, in schedule order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultSummary>,
    /// For a merged run, the shard output directories it was merged from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<String>,
}

impl Summary {
    /// The summary of `recording`, described by `info`.
    pub fn new(recording: &Recording, info: &RunInfo) -> Self {
        let mut ops = BTreeMap::new();
        let mut totals = Totals::default();
        for op in recording.used_ops() {
            let o = recording.op(op);
            let s = OpSummary {
                target_per_s: round1(o.target_per_s),
                scheduled: o.scheduled(),
                ok: o.ok,
                errors: o.error_count(),
                late: o.late,
                dropped: o.dropped,
                throughput_per_s: round1(recording.throughput_per_s(op)),
                errors_by_code: o.errors.clone(),
                corrected: LatencyStats::of(&o.corrected),
                uncorrected: LatencyStats::of(&o.uncorrected),
            };
            totals.scheduled += s.scheduled;
            totals.ok += s.ok;
            totals.errors += s.errors;
            totals.late += s.late;
            totals.dropped += s.dropped;
            ops.insert(op, s);
        }
        totals.throughput_per_s = round1(per_second(totals.ok, recording.duration));
        let convergence = ConvergenceSummary {
            count: recording.convergence.len(),
            unconverged: recording.unconverged,
            latency: LatencyStats::of(&recording.convergence),
        };
        Self {
            format: SUMMARY_FORMAT.to_owned(),
            scenario: info.scenario.clone(),
            started_at: rfc3339(recording.started_at),
            started_at_unix_ms: unix_ms(recording.started_at),
            duration_s: round3(recording.duration.as_secs_f64()),
            interval_s: round3(recording.interval.as_secs_f64()),
            late_threshold_us: crate::measure::latency::micros(recording.late_threshold),
            git_revision: info.git_revision.clone(),
            machine: info.machine.clone(),
            parameters: info.parameters.clone(),
            expect: Expectations {
                no_errors: totals.errors == 0,
                converged: convergence.count > 0 && convergence.unconverged == 0,
            },
            totals,
            errors_by_code: recording.errors_by_code(),
            ops,
            convergence,
            markers: recording.markers.clone(),
            faults: Vec::new(),
            shards: Vec::new(),
        }
    }

    /// Reads a `summary.json`.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| ReportError::format(path, e.to_string()))
    }

    /// The figures of `op`, if it was used.
    pub fn op(&self, op: Op) -> Option<&OpSummary> {
        self.ops.get(&op)
    }

    /// The plain-text table printed at the end of a run (also [`Display`](fmt::Display)).
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} | started {} | {:.1} s | git {} | {} cores, {} MiB, {}\n",
            self.scenario,
            self.started_at,
            self.duration_s,
            self.git_revision,
            self.machine.cores,
            self.machine.memory_mib,
            self.machine.cpu_model,
        );
        let mut t = Table::new([
            "op", "latency", "target", "achieved", "ok", "errors", "late", "dropped", "p50", "p90",
            "p99", "p99.9", "p99.99", "max",
        ]);
        let ladder = |s: Option<&LatencyStats>| -> Vec<String> {
            match s {
                Some(s) => s.ladder().iter().map(|(_, v)| human_us(*v)).collect(),
                None => vec!["-".to_owned(); 6],
            }
        };
        for (op, s) in &self.ops {
            let target = if s.target_per_s > 0.0 {
                human_rate(s.target_per_s)
            } else {
                "-".to_owned()
            };
            let mut cells = vec![
                op.to_string(),
                "corrected".to_owned(),
                target,
                human_rate(s.throughput_per_s),
                s.ok.to_string(),
                s.errors.to_string(),
                s.late.to_string(),
                s.dropped.to_string(),
            ];
            cells.extend(ladder(s.corrected.as_ref()));
            t.row(cells);
            let mut cells = vec![String::new(), "uncorrected".to_owned()];
            cells.extend(std::iter::repeat_n(String::new(), 6));
            cells.extend(ladder(s.uncorrected.as_ref()));
            t.row(cells);
        }
        let c = &self.convergence;
        if c.count > 0 || c.unconverged > 0 {
            let mut cells = vec![
                "convergence".to_owned(),
                "ack->visible".to_owned(),
                String::new(),
                String::new(),
                c.count.to_string(),
                format!("{} unconv.", c.unconverged),
                String::new(),
                String::new(),
            ];
            cells.extend(ladder(c.latency.as_ref()));
            t.row(cells);
        }
        out.push_str(&t.render());
        out.push_str(&format!(
            "total: {} ok, {} errors, {} late, {} dropped, {} achieved\n",
            self.totals.ok,
            self.totals.errors,
            self.totals.late,
            self.totals.dropped,
            human_rate(self.totals.throughput_per_s)
        ));
        if !self.errors_by_code.is_empty() {
            let codes: Vec<String> = self
                .ops
                .iter()
                .flat_map(|(op, s)| {
                    s.errors_by_code
                        .iter()
                        .map(move |(code, n)| format!("{op} {code}={n}"))
                })
                .collect();
            out.push_str(&format!("errors by code: {}\n", codes.join(", ")));
        }
        out.push_str(&crate::report::faults::table(&self.faults));
        out
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
