//! `summary.json`: a run's parameters, machine, totals, rates, percentiles, errors,
//! replication lag and markers in one document, and the plain-text table printed at the end
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
pub const SUMMARY_FORMAT: &str = "loadgen-summary/2";

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
    /// Successful requests per second, every operation together, over the span from the
    /// first intended send to the last response.
    pub throughput_per_s: f64,
}

/// One operation's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    /// `open` (a schedule with intended send times) or `closed` (no schedule: each
    /// request is sent when a client is free; latency is service time).
    pub model: Model,
    /// The target rate, averaged over the time it was set, per second (`null`: none set).
    pub target_per_s: Option<f64>,
    /// Start of the operation's active window (its first intended send), seconds since
    /// the run's start.
    pub active_from_s: f64,
    /// The active time, seconds: from the first intended send to the last response, less
    /// idle gaps (a second or more with nothing of the operation intended or in flight and
    /// no target set). The rates are over this time, not the whole run.
    pub active_s: f64,
    /// The active spans, `[from, to]` in seconds since the run's start; their lengths add
    /// up to `active_s`. Absent in files written before idle gaps were left out: then the
    /// one span `[active_from_s, active_from_s + active_s]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_spans_s: Vec<[f64; 2]>,
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
    /// Successful requests per second over the active window.
    pub throughput_per_s: f64,
    /// Failed requests by error code.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Latency from the intended send time (successful requests only).
    pub corrected: Option<LatencyStats>,
    /// Latency from the actual send time (successful requests only).
    pub uncorrected: Option<LatencyStats>,
    /// Send lateness of an open-model operation: from each successful request's intended
    /// instant to its send, the load generator's own share of the corrected latency (its
    /// timer, its scheduling, and a wait for room in its window to a node; a retry's counts
    /// from the first attempt's instant). Absent for a closed model and in files written
    /// before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateness: Option<LatencyStats>,
}

/// How an operation's requests were paced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// A schedule says when each request is due; corrected latency counts from then.
    #[default]
    Open,
    /// No schedule: a request goes when a client is free. Latency is service time.
    Closed,
}

impl OpSummary {
    /// Successful requests as a share of the scheduled ones, percent (100 with none).
    pub fn ok_percent(&self) -> f64 {
        if self.scheduled == 0 {
            100.0
        } else {
            100.0 * self.ok as f64 / self.scheduled as f64
        }
    }

    /// Behind its schedule: some request was sent late or dropped.
    pub fn behind(&self) -> bool {
        self.late > 0 || self.dropped > 0
    }

    /// The latency statistics of one kind.
    pub fn latency(&self, kind: LatencyKind) -> Option<&LatencyStats> {
        match kind {
            LatencyKind::Corrected => self.corrected.as_ref(),
            LatencyKind::Uncorrected => self.uncorrected.as_ref(),
        }
    }
}

/// Replication lag figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationLagSummary {
    /// Replication lag samples (one per probe registration and non-owner node).
    pub count: u64,
    /// Probe registrations not visible on some node before the driver's deadline.
    pub unreplicated: u64,
    /// Sightings on another node that arrived before the acknowledgement: no lag sample
    /// (`count` leaves them out). A system that replicates to a quorum before it
    /// acknowledges (etcd, ZooKeeper) has many; distro, which acknowledges at the owner
    /// and replicates after, has none or few.
    #[serde(default)]
    pub visible_before_ack: u64,
    /// Time from the owner's acknowledgement to visibility on another node.
    pub latency: Option<LatencyStats>,
}

impl ReplicationLagSummary {
    /// Probe sightings on the other nodes, with and without a lag sample.
    pub fn sightings(&self) -> u64 {
        self.count + self.visible_before_ack
    }

    /// The sentence saying how many sightings came before the acknowledgement (None when
    /// none did).
    pub fn before_ack_line(&self) -> Option<String> {
        (self.visible_before_ack > 0).then(|| {
            format!(
                "replication lag: {} of {} sightings on the other nodes came before the write's \
                 acknowledgement (replicated before acknowledged); the lag figures are the other {}",
                self.visible_before_ack,
                self.sightings(),
                self.count
            )
        })
    }
}

/// What a later run compared against this one as a baseline must also achieve (see
/// [`check`](crate::check())). Written from the run's own outcome; edit a committed
/// baseline to relax it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectations {
    /// The run had no failed request; a run checked against it must have none either.
    #[serde(default)]
    pub no_errors: bool,
    /// Every probe was replicated in time; a run checked against it must be too.
    #[serde(default)]
    pub replicated: bool,
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
    /// Every parameter the driver gave. Written as JSON numbers where the value is a
    /// number (`"clients": 10000`), as strings otherwise (`"duration": "10s"`).
    #[serde(with = "parameters")]
    pub parameters: BTreeMap<String, String>,
    /// Counts over every operation.
    pub totals: Totals,
    /// Failed requests by code, every operation together.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Figures of each operation used in the run.
    pub ops: BTreeMap<Op, OpSummary>,
    /// Replication lag figures.
    pub replication_lag: ReplicationLagSummary,
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
                model: if o.closed { Model::Closed } else { Model::Open },
                target_per_s: (o.target_per_s > 0.0).then(|| round1(o.target_per_s)),
                active_from_s: round3(o.window().map_or(0.0, |w| w.0.as_secs_f64())),
                active_s: round3(o.active().as_secs_f64()),
                active_spans_s: o
                    .spans
                    .iter()
                    .map(|(from, to)| [round3(from.as_secs_f64()), round3(to.as_secs_f64())])
                    .collect(),
                scheduled: o.scheduled(),
                ok: o.ok,
                errors: o.error_count(),
                late: o.late,
                dropped: o.dropped,
                throughput_per_s: round1(recording.throughput_per_s(op)),
                errors_by_code: o.errors.clone(),
                corrected: LatencyStats::of(&o.corrected),
                uncorrected: LatencyStats::of(&o.uncorrected),
                lateness: if o.closed {
                    None
                } else {
                    LatencyStats::of(&o.lateness)
                },
            };
            totals.scheduled += s.scheduled;
            totals.ok += s.ok;
            totals.errors += s.errors;
            totals.late += s.late;
            totals.dropped += s.dropped;
            ops.insert(op, s);
        }
        totals.throughput_per_s = round1(per_second(totals.ok, recording.active_span()));
        let replication_lag = ReplicationLagSummary {
            count: recording.replication_lag.len(),
            unreplicated: recording.unreplicated,
            visible_before_ack: recording.visible_before_ack,
            latency: LatencyStats::of(&recording.replication_lag),
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
                replicated: replication_lag.count > 0 && replication_lag.unreplicated == 0,
            },
            totals,
            errors_by_code: recording.errors_by_code(),
            ops,
            replication_lag,
            markers: recording.markers.clone(),
            faults: Vec::new(),
            shards: Vec::new(),
        }
    }

    /// Reads a `summary.json`.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ReportError::format(path, e.to_string()))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(SUMMARY_FORMAT) => {}
            other => {
                return Err(ReportError::format(
                    path,
                    format!(
                        "format is {}, this loadgen reads {SUMMARY_FORMAT} only; make it again \
                         with a new run (the changes are listed in loadgen/REPORTS.md)",
                        other.unwrap_or("missing")
                    ),
                ));
            }
        }
        serde_json::from_value(value).map_err(|e| ReportError::format(path, e.to_string()))
    }

    /// The figures of `op`, if it was used.
    pub fn op(&self, op: Op) -> Option<&OpSummary> {
        self.ops.get(&op)
    }

    /// The sentence saying how late loadgen sent the open-model operations' requests
    /// (None when none has a lateness figure).
    pub fn lateness_line(&self) -> Option<String> {
        let parts: Vec<String> = self
            .ops
            .iter()
            .filter_map(|(op, s)| {
                let l = s.lateness.as_ref()?;
                Some(format!(
                    "{op} p50 {} p99 {} max {}",
                    human_us(l.p50_us),
                    human_us(l.p99_us),
                    human_us(l.max_us)
                ))
            })
            .collect();
        (!parts.is_empty()).then(|| {
            format!(
                "send lateness (intended instant -> sent, loadgen's own part of corrected \
                 latency): {}",
                parts.join("; ")
            )
        })
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
            "op", "latency", "target", "achieved", "ok %", "ok", "errors", "late", "dropped",
            "p50", "p90", "p99", "p99.9", "p99.99", "max",
        ]);
        let ladder = |s: Option<&LatencyStats>| -> Vec<String> {
            match s {
                Some(s) => s.ladder().iter().map(|(_, v)| human_us(*v)).collect(),
                None => vec!["-".to_owned(); 6],
            }
        };
        for (op, s) in &self.ops {
            let target = s.target_per_s.map_or("-".to_owned(), human_rate);
            let (first, second) = match s.model {
                Model::Open => ("corrected", Some("uncorrected")),
                Model::Closed => ("service", None),
            };
            let mut cells = vec![
                op.to_string(),
                first.to_owned(),
                target,
                human_rate(s.throughput_per_s),
                format!("{:.1}", s.ok_percent()),
                s.ok.to_string(),
                s.errors.to_string(),
                s.late.to_string(),
                s.dropped.to_string(),
            ];
            cells.extend(ladder(match s.model {
                Model::Open => s.corrected.as_ref(),
                Model::Closed => s.uncorrected.as_ref(),
            }));
            t.row(cells);
            if let Some(second) = second {
                let mut cells = vec![String::new(), second.to_owned()];
                cells.extend(std::iter::repeat_n(String::new(), 7));
                cells.extend(ladder(s.uncorrected.as_ref()));
                t.row(cells);
            }
            if let Some(lateness) = &s.lateness {
                let mut cells = vec![String::new(), "lateness".to_owned()];
                cells.extend(std::iter::repeat_n(String::new(), 7));
                cells.extend(ladder(Some(lateness)));
                t.row(cells);
            }
        }
        let c = &self.replication_lag;
        if c.count > 0 || c.unreplicated > 0 || c.visible_before_ack > 0 {
            let mut cells = vec![
                "replication lag".to_owned(),
                "ack->visible".to_owned(),
                String::new(),
                String::new(),
                String::new(),
                c.count.to_string(),
                format!("{} unrepl.", c.unreplicated),
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
        if let Some(line) = c.before_ack_line() {
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(line) = self.lateness_line() {
            out.push_str(&line);
            out.push('\n');
        }
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

/// `parameters` in JSON: numbers as numbers. A value becomes a number only when the
/// number prints back as the same text, so reading a summary gives the same strings.
mod parameters {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Number, Value};

    fn as_number(v: &str) -> Option<Number> {
        let n = if let Ok(i) = v.parse::<i64>() {
            Number::from(i)
        } else {
            Number::from_f64(v.parse::<f64>().ok()?)?
        };
        (n.to_string() == v).then_some(n)
    }

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<String, String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| {
                let v = as_number(v).map_or_else(|| Value::String(v.clone()), Value::Number);
                (k, v)
            })
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        let map = BTreeMap::<String, Value>::deserialize(d)?;
        Ok(map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect())
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::measure::recorder::{Recorder, RecorderConfig, Sample};
    use crate::report::fixture;

    const CLIENTS: u64 = 2000;
    const REGISTER_PER_S: f64 = 1000.0;
    const PERIOD_S: u64 = 2;

    /// A steady run exactly on target, as the driver paces it: `CLIENTS` registrations at
    /// 1000/s (2 s), then heartbeats every 2 s from one period into the hold until
    /// `duration_s`. Every request is sent on time and answered in 200 µs.
    fn on_target(duration_s: u64) -> Summary {
        let base = Instant::now();
        let r = Recorder::starting_at(RecorderConfig::default(), base, fixture::wall())
            .expect("recorder");
        let at = |us: u64| base + Duration::from_micros(us);
        let mut times: Vec<(u64, Op)> = (0..CLIENTS)
            .map(|i| ((i as f64 * 1e6 / REGISTER_PER_S) as u64, Op::Register))
            .collect();
        let hold_us = (CLIENTS as f64 * 1e6 / REGISTER_PER_S) as u64;
        let period_us = PERIOD_S * 1_000_000;
        let mut round = 0;
        'beats: loop {
            for k in 0..CLIENTS {
                let t = hold_us + period_us * (round + 1) + period_us / CLIENTS * k;
                if t + 200 > duration_s * 1_000_000 {
                    break 'beats;
                }
                times.push((t, Op::Beat));
            }
            round += 1;
        }
        r.set_target_rate(Op::Register, REGISTER_PER_S);
        r.set_target_rate(Op::Beat, CLIENTS as f64 / PERIOD_S as f64);
        let mut next_tick = 1;
        for (t, op) in times {
            while t + 200 >= next_tick * 1_000_000 {
                r.tick_at(at(next_tick * 1_000_000));
                if next_tick * 1_000_000 >= hold_us {
                    r.set_target_rate(Op::Register, 0.0);
                }
                next_tick += 1;
            }
            let sample = Sample {
                intended: at(t),
                sent: at(t),
                done: at(t + 200),
            };
            r.record_ok(op, sample);
        }
        let rec = r.finish_at(at(duration_s * 1_000_000)).expect("finish");
        Summary::new(&rec, &fixture::info("steady"))
    }

    fn near(got: f64, want: f64) -> bool {
        (got - want).abs() <= 0.005 * want
    }

    #[test]
    fn a_run_exactly_on_target_reads_100_percent() {
        let s = on_target(20);
        let t = s.table();
        for op in [Op::Register, Op::Beat] {
            let o = s.op(op).expect("used");
            let target = o.target_per_s.expect("a target");
            assert!(near(target, 1000.0), "{op} target {target}\n{t}");
            assert!(
                near(o.throughput_per_s, target),
                "{op}: {} achieved of {target}\n{t}",
                o.throughput_per_s
            );
            assert_eq!(o.ok_percent(), 100.0, "{t}");
            assert!(!o.behind(), "{t}");
            assert_eq!(o.model, Model::Open);
        }
        // Registration ran for 2 s of the 20: its window, not the run.
        let reg = s.op(Op::Register).expect("register");
        assert!((reg.active_s - 2.0).abs() < 0.01, "{}", reg.active_s);
        assert!(t.contains("100.0"), "{t}");
    }

    #[test]
    fn a_summary_of_another_format_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("summary.json");
        std::fs::write(
            &path,
            r#"{"format": "loadgen-summary/1", "convergence": {}}"#,
        )
        .expect("write");
        let err = Summary::load(&path).expect_err("format 1").to_string();
        assert!(
            err.contains("format is loadgen-summary/1") && err.contains(SUMMARY_FORMAT),
            "{err}"
        );
    }

    #[test]
    fn doubling_the_duration_leaves_the_rates_unchanged() {
        let (short, long) = (on_target(12), on_target(24));
        for op in [Op::Register, Op::Beat] {
            let (a, b) = (short.op(op).expect("used"), long.op(op).expect("used"));
            assert_eq!(a.target_per_s, b.target_per_s, "{op}");
            assert!(
                near(a.throughput_per_s, b.throughput_per_s),
                "{op}: {} at 12 s, {} at 24 s",
                a.throughput_per_s,
                b.throughput_per_s
            );
        }
        assert!(long.op(Op::Beat).expect("beat").ok > 2 * short.op(Op::Beat).expect("beat").ok);
    }

    /// A chaos run's registrations: a burst of 2,000 at 2,000/s, a pause of 20 s, then the
    /// 500 clients of a restarted node registering again at 2,000/s (closed model, no
    /// target). The rate is the bursts' rate; the pause is not active time.
    #[test]
    fn a_run_with_a_pause_reads_the_burst_rate() {
        let base = Instant::now();
        let r = Recorder::starting_at(RecorderConfig::default(), base, fixture::wall())
            .expect("recorder");
        r.set_closed_model(Op::Register);
        let at = |us: u64| base + Duration::from_micros(us);
        let mut next_tick = 1;
        let bursts = (0..2000u64)
            .map(|i| i * 500)
            .chain((0..500u64).map(|i| 21_000_000 + i * 500));
        for t in bursts {
            while t + 300 >= next_tick * 1_000_000 {
                r.tick_at(at(next_tick * 1_000_000));
                next_tick += 1;
            }
            let sample = Sample {
                intended: at(t),
                sent: at(t),
                done: at(t + 300),
            };
            r.record_ok(Op::Register, sample);
        }
        let rec = r.finish_at(at(30_000_000)).expect("finish");
        let s = Summary::new(&rec, &fixture::info("steady"));
        let reg = s.op(Op::Register).expect("register");
        assert!(
            near(reg.throughput_per_s, 2000.0),
            "{} /s over {} s\n{}",
            reg.throughput_per_s,
            reg.active_s,
            s.table()
        );
        assert_eq!(reg.active_spans_s.len(), 2, "{:?}", reg.active_spans_s);
        assert_eq!(reg.active_spans_s[1][0], 21.0, "{:?}", reg.active_spans_s);
        let sum: f64 = reg.active_spans_s.iter().map(|[f, e]| e - f).sum();
        assert!(
            (sum - reg.active_s).abs() < 0.002,
            "{sum} vs {}",
            reg.active_s
        );
        // The spans survive the JSON round trip (merge reads them back).
        let back: Summary =
            serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("reads back");
        assert_eq!(back.op(Op::Register), s.op(Op::Register));
    }

    /// Queries sent 1..=1000 µs after their instants and answered 200 µs after the send:
    /// the lateness figures are exactly that distribution (below 2,048 µs every value has a
    /// bucket of its own), the corrected latency is lateness plus service time, and a
    /// failed query leaves no lateness sample.
    #[test]
    fn lateness_is_the_time_from_the_intended_instant_to_the_send() {
        let base = Instant::now();
        let r = Recorder::starting_at(RecorderConfig::default(), base, fixture::wall())
            .expect("recorder");
        let at = |us: u64| base + Duration::from_micros(us);
        for i in 1..=1000u64 {
            let intended = at(i * 1000);
            let sent = intended + Duration::from_micros(i);
            let sample = Sample {
                intended,
                sent,
                done: sent + Duration::from_micros(200),
            };
            r.record_ok(Op::Query, sample);
        }
        r.record_error(
            Op::Query,
            Sample {
                intended: at(0),
                sent: at(3_000_000),
                done: at(3_000_100),
            },
            "timeout",
        );
        r.set_closed_model(Op::Register);
        r.record_ok(
            Op::Register,
            Sample {
                intended: at(10),
                sent: at(10),
                done: at(50),
            },
        );
        let rec = r.finish_at(at(4_000_000)).expect("finish");
        let s = Summary::new(&rec, &fixture::info("query"));
        let q = s.op(Op::Query).expect("query");
        let l = q.lateness.expect("lateness of an open model");
        assert_eq!(
            (l.count, l.min_us, l.p50_us, l.p99_us, l.max_us),
            (1000, 1, 500, 990, 1000)
        );
        let c = q.corrected.expect("corrected");
        assert_eq!((c.p50_us, c.p99_us, c.max_us), (700, 1190, 1200));
        assert_eq!(q.late, 1, "the failed query was 3 s late");
        // A closed model has no intended instant: no lateness.
        assert_eq!(s.op(Op::Register).expect("register").lateness, None);
        let t = s.table();
        assert!(t.contains("lateness"), "{t}");
        assert!(
            t.contains("send lateness") && t.contains("query p50 500us p99 990us max 1.00ms"),
            "{t}"
        );
        let back: Summary =
            serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("reads back");
        assert_eq!(back, s);
    }

    #[test]
    fn an_operation_without_target_has_null_and_a_closed_one_reports_service_time() {
        let base = Instant::now();
        let r = Recorder::starting_at(RecorderConfig::default(), base, fixture::wall())
            .expect("recorder");
        r.set_closed_model(Op::Register);
        let sent = base + Duration::from_millis(5);
        r.record_ok(
            Op::Register,
            Sample {
                intended: sent,
                sent,
                done: sent + Duration::from_millis(3),
            },
        );
        let rec = r.finish_at(base + Duration::from_secs(1)).expect("finish");
        let s = Summary::new(&rec, &fixture::info("register"));
        let reg = s.op(Op::Register).expect("register");
        assert_eq!(reg.model, Model::Closed);
        assert_eq!(reg.target_per_s, None);
        let json = serde_json::to_string(&s).expect("json");
        assert!(json.contains("\"target_per_s\":null"), "{json}");
        assert!(json.contains("\"model\":\"closed\""), "{json}");
        assert!(json.contains("\"p99_9_us\""), "{json}");
        assert!(!json.contains("p99.9"), "{json}");
        // Parameters: numbers as numbers, other values as strings; both read back.
        assert!(json.contains("\"nodes\":3"), "{json}");
        let back: Summary = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, s);
        let t = s.table();
        assert!(t.contains("service") && !t.contains("uncorrected"), "{t}");
    }
}
