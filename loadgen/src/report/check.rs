//! `loadgen check`: compares a run's summary with a committed baseline summary and says
//! whether performance regressed.
//!
//! Per operation of the baseline it compares throughput (fails when it fell by more than
//! the allowed fraction) and corrected p99 (fails when it rose by more than the allowed
//! fraction and by more than an absolute slack); it compares replication lag p99 the same
//! way; and when the baseline's `expect` section says so it fails a run with errors or
//! with unreplicated probes. The thresholds are generous by default because the machines
//! are shared: the check is for regressions, not for noise. It returns a structured
//! verdict and renders it as a table; exiting non-zero is the binary's job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::summary::Summary;
use super::table::Table;
use crate::error::ReportError;
use crate::measure::latency::{human_rate, human_us};
use crate::measure::op::Op;

/// Default: fail when throughput falls by more than 50 %.
pub const DEFAULT_MAX_THROUGHPUT_DROP: f64 = 0.5;
/// Default: fail when p99 rises by more than 200 % (to more than 3× the baseline).
pub const DEFAULT_MAX_P99_RISE: f64 = 2.0;

/// Limits for one operation, as fractions of the baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpThresholds {
    /// Largest allowed relative fall of throughput (0.5: to half the baseline).
    pub max_throughput_drop: f64,
    /// Largest allowed relative rise of corrected p99 (2.0: to three times the baseline).
    pub max_p99_rise: f64,
}

impl Default for OpThresholds {
    fn default() -> Self {
        Self {
            max_throughput_drop: DEFAULT_MAX_THROUGHPUT_DROP,
            max_p99_rise: DEFAULT_MAX_P99_RISE,
        }
    }
}

/// Limits of a check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckThresholds {
    /// Limits of operations without an entry in `per_op`.
    pub default: OpThresholds,
    /// Limits of particular operations.
    pub per_op: BTreeMap<Op, OpThresholds>,
    /// Largest allowed relative rise of replication lag p99.
    pub max_replication_lag_p99_rise: f64,
    /// A p99 rise smaller than this many microseconds never fails, whatever its ratio
    /// (guards sub-millisecond baselines against noise). 0 by default.
    pub p99_slack_us: u64,
}

impl Default for CheckThresholds {
    fn default() -> Self {
        Self {
            default: OpThresholds::default(),
            per_op: BTreeMap::new(),
            max_replication_lag_p99_rise: DEFAULT_MAX_P99_RISE,
            p99_slack_us: 0,
        }
    }
}

impl CheckThresholds {
    /// The limits of `op`.
    pub fn for_op(&self, op: Op) -> OpThresholds {
        self.per_op.get(&op).copied().unwrap_or(self.default)
    }
}

/// The outcome of one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within limits.
    Pass,
    /// Beyond limits: a regression.
    Fail,
    /// Shown for information, not compared (e.g. an operation the baseline lacks).
    Info,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "ok",
            Verdict::Fail => "FAIL",
            Verdict::Info => "info",
        })
    }
}

/// What a compared figure measures, for formatting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Per second.
    Rate,
    /// Microseconds.
    Micros,
    /// A plain count.
    Count,
}

/// One line of the check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckRow {
    /// What is compared, e.g. `register throughput` or `query p99`.
    pub metric: String,
    /// Unit of `baseline` and `current`.
    pub unit: Unit,
    /// The baseline's figure.
    pub baseline: Option<f64>,
    /// This run's figure.
    pub current: Option<f64>,
    /// Relative change, `current / baseline - 1`.
    pub change: Option<f64>,
    /// The limit applied, in words.
    pub limit: String,
    /// The outcome.
    pub verdict: Verdict,
}

/// The result of a check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckReport {
    /// One row per compared figure.
    pub rows: Vec<CheckRow>,
    /// Parameters of the run that differ from the baseline's (the comparison may not be
    /// like for like), e.g. `clients: 20000 (baseline 10000)`.
    pub parameter_differences: Vec<String>,
}

impl CheckReport {
    /// Whether no row failed.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The failed rows.
    pub fn failures(&self) -> impl Iterator<Item = &CheckRow> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Fail)
    }
}

pub(crate) fn cell(v: Option<f64>, unit: Unit) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) => match unit {
            Unit::Rate => human_rate(v),
            Unit::Micros => human_us(v.max(0.0) as u64),
            Unit::Count => format!("{v:.0}"),
        },
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = Table::new([
            "metric", "baseline", "current", "change", "limit", "verdict",
        ]);
        for r in &self.rows {
            t.row([
                r.metric.clone(),
                cell(r.baseline, r.unit),
                cell(r.current, r.unit),
                r.change
                    .map_or("-".to_owned(), |c| format!("{:+.1}%", c * 100.0)),
                r.limit.clone(),
                r.verdict.to_string(),
            ]);
        }
        if !self.parameter_differences.is_empty() {
            writeln!(
                f,
                "WARNING: the run's parameters differ from the baseline's: {}",
                self.parameter_differences.join(", ")
            )?;
        }
        f.write_str(&t.render())?;
        let failed = self.failures().count();
        if failed == 0 {
            writeln!(f, "PASS: no regression beyond the limits")
        } else {
            writeln!(f, "FAIL: {failed} of {} checks failed", self.rows.len())
        }
    }
}

fn change(baseline: f64, current: f64) -> Option<f64> {
    (baseline > 0.0).then(|| current / baseline - 1.0)
}

fn p99_row(
    metric: String,
    baseline: Option<u64>,
    current: Option<u64>,
    max_rise: f64,
    slack_us: u64,
) -> Option<CheckRow> {
    let base = baseline?;
    let limit = if slack_us > 0 {
        format!("<= +{:.0}% or +{}", max_rise * 100.0, human_us(slack_us))
    } else {
        format!("<= +{:.0}%", max_rise * 100.0)
    };
    let (change, verdict) = match current {
        None => (None, Verdict::Fail),
        Some(cur) => {
            let c = change(base as f64, cur as f64);
            let risen = cur > base && cur - base > slack_us;
            let beyond = match c {
                Some(c) => c > max_rise,
                None => cur > slack_us, // a zero baseline: any rise past the slack
            };
            (
                c,
                if risen && beyond {
                    Verdict::Fail
                } else {
                    Verdict::Pass
                },
            )
        }
    };
    Some(CheckRow {
        metric,
        unit: Unit::Micros,
        baseline: Some(base as f64),
        current: current.map(|c| c as f64),
        change,
        limit,
        verdict,
    })
}

/// Compares `current` with `baseline`.
pub fn check(current: &Summary, baseline: &Summary, thresholds: &CheckThresholds) -> CheckReport {
    let mut rows = Vec::new();
    for (op, base) in &baseline.ops {
        let limits = thresholds.for_op(*op);
        let cur = current.op(*op);
        let cur_tp = cur.map_or(0.0, |c| c.throughput_per_s);
        let c = change(base.throughput_per_s, cur_tp);
        rows.push(CheckRow {
            metric: format!("{op} throughput"),
            unit: Unit::Rate,
            baseline: Some(base.throughput_per_s),
            current: Some(cur_tp),
            change: c,
            limit: format!(">= -{:.0}%", limits.max_throughput_drop * 100.0),
            verdict: match c {
                None => Verdict::Info,
                Some(c) if c < -limits.max_throughput_drop => Verdict::Fail,
                Some(_) => Verdict::Pass,
            },
        });
        rows.extend(p99_row(
            format!("{op} p99 (corrected)"),
            base.corrected.map(|s| s.p99_us),
            cur.and_then(|c| c.corrected).map(|s| s.p99_us),
            limits.max_p99_rise,
            thresholds.p99_slack_us,
        ));
    }
    for (op, cur) in &current.ops {
        if !baseline.ops.contains_key(op) {
            rows.push(CheckRow {
                metric: format!("{op} throughput (not in baseline)"),
                unit: Unit::Rate,
                baseline: None,
                current: Some(cur.throughput_per_s),
                change: None,
                limit: "-".to_owned(),
                verdict: Verdict::Info,
            });
        }
    }
    rows.extend(p99_row(
        "replication lag p99".to_owned(),
        baseline.replication_lag.latency.map(|s| s.p99_us),
        current.replication_lag.latency.map(|s| s.p99_us),
        thresholds.max_replication_lag_p99_rise,
        thresholds.p99_slack_us,
    ));
    let errors = current.totals.errors;
    rows.push(CheckRow {
        metric: "errors".to_owned(),
        unit: Unit::Count,
        baseline: Some(baseline.totals.errors as f64),
        current: Some(errors as f64),
        change: None,
        limit: if baseline.expect.no_errors {
            "= 0"
        } else {
            "-"
        }
        .to_owned(),
        verdict: match (baseline.expect.no_errors, errors) {
            (false, _) => Verdict::Info,
            (true, 0) => Verdict::Pass,
            (true, _) => Verdict::Fail,
        },
    });
    if baseline.expect.replicated || current.replication_lag.count > 0 {
        let c = &current.replication_lag;
        rows.push(CheckRow {
            metric: "unreplicated probes".to_owned(),
            unit: Unit::Count,
            baseline: Some(baseline.replication_lag.unreplicated as f64),
            current: Some(c.unreplicated as f64),
            change: None,
            limit: if baseline.expect.replicated {
                "= 0, some measured"
            } else {
                "-"
            }
            .to_owned(),
            verdict: match (
                baseline.expect.replicated,
                c.count > 0 && c.unreplicated == 0,
            ) {
                (false, _) => Verdict::Info,
                (true, true) => Verdict::Pass,
                (true, false) => Verdict::Fail,
            },
        });
    }
    CheckReport {
        rows,
        parameter_differences: parameter_differences(current, baseline),
    }
}

/// Parameters that differ between two runs, except those that differ between any two runs
/// by design (`seed`, `targets`, `shard`).
pub(crate) fn parameter_differences(current: &Summary, baseline: &Summary) -> Vec<String> {
    const IGNORED: [&str; 3] = ["seed", "targets", "shard"];
    let keys: std::collections::BTreeSet<&String> = current
        .parameters
        .keys()
        .chain(baseline.parameters.keys())
        .collect();
    keys.into_iter()
        .filter(|k| !IGNORED.contains(&k.as_str()))
        .filter_map(|k| {
            let (c, b) = (current.parameters.get(k), baseline.parameters.get(k));
            (c != b).then(|| {
                format!(
                    "{k}: {} (baseline {})",
                    c.map_or("-", String::as_str),
                    b.map_or("-", String::as_str)
                )
            })
        })
        .collect()
}

/// Reads both `summary.json` files and compares them.
pub fn check_files(
    current: &Path,
    baseline: &Path,
    thresholds: &CheckThresholds,
) -> Result<CheckReport, ReportError> {
    Ok(check(
        &Summary::load(current)?,
        &Summary::load(baseline)?,
        thresholds,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::measure::latency::LatencyStats;
    use crate::report::fixture;
    use crate::report::summary::OpSummary;

    /// A clean baseline: no errors, every probe replicated.
    fn baseline() -> Summary {
        let base = Instant::now();
        let r = fixture::recorder(base, fixture::wall(), None);
        let events: Vec<_> = fixture::events(3, base, 3)
            .into_iter()
            .filter(|(_, e)| {
                !matches!(
                    e,
                    fixture::Event::Unreplicated | fixture::Event::Request { error: Some(_), .. }
                )
            })
            .collect();
        fixture::drive(&r, base, 3, &events);
        let rec = r.finish_at(base + Duration::from_secs(3)).expect("finish");
        Summary::new(&rec, &fixture::info("mixed"))
    }

    fn op_mut(s: &mut Summary, op: Op) -> &mut OpSummary {
        s.ops.get_mut(&op).expect("op used")
    }

    fn p99_mut(s: &mut Summary, op: Op) -> &mut LatencyStats {
        op_mut(s, op).corrected.as_mut().expect("latency")
    }

    fn verdict_of<'a>(r: &'a CheckReport, metric: &str) -> &'a CheckRow {
        r.rows
            .iter()
            .find(|row| row.metric == metric)
            .unwrap_or_else(|| panic!("no row {metric} in\n{r}"))
    }

    #[test]
    fn a_run_equal_to_its_baseline_passes() {
        let b = baseline();
        assert!(b.expect.no_errors && b.expect.replicated);
        let r = check(&b, &b, &CheckThresholds::default());
        assert!(r.passed(), "{r}");
        assert!(r.to_string().contains("PASS"));
        assert_eq!(verdict_of(&r, "register throughput").verdict, Verdict::Pass);
        assert_eq!(verdict_of(&r, "errors").verdict, Verdict::Pass);
        assert_eq!(verdict_of(&r, "unreplicated probes").verdict, Verdict::Pass);
    }

    #[test]
    fn throughput_falls_fail_beyond_the_threshold_only() {
        let b = baseline();
        let base_tp = b.op(Op::Query).expect("query").throughput_per_s;
        let mut cur = b.clone();
        op_mut(&mut cur, Op::Query).throughput_per_s = base_tp * 0.6; // -40 %
        assert!(check(&cur, &b, &CheckThresholds::default()).passed());
        op_mut(&mut cur, Op::Query).throughput_per_s = base_tp * 0.4; // -60 %
        let r = check(&cur, &b, &CheckThresholds::default());
        assert!(!r.passed());
        let row = verdict_of(&r, "query throughput");
        assert_eq!(row.verdict, Verdict::Fail);
        assert!((row.change.expect("change") + 0.6).abs() < 1e-9);
        let text = r.to_string();
        assert!(
            text.contains("-60.0%") && text.contains("FAIL: 1 of"),
            "{text}"
        );
        // A stricter limit for this op alone.
        let mut strict = CheckThresholds::default();
        strict.per_op.insert(
            Op::Query,
            OpThresholds {
                max_throughput_drop: 0.1,
                ..OpThresholds::default()
            },
        );
        op_mut(&mut cur, Op::Query).throughput_per_s = base_tp * 0.8;
        assert!(!check(&cur, &b, &strict).passed());
        assert!(check(&cur, &b, &CheckThresholds::default()).passed());
    }

    #[test]
    fn p99_rises_fail_beyond_the_threshold_and_the_slack() {
        let b = baseline();
        let base_p99 = b
            .op(Op::Register)
            .and_then(|o| o.corrected)
            .expect("p99")
            .p99_us;
        let mut cur = b.clone();
        p99_mut(&mut cur, Op::Register).p99_us = base_p99 * 5 / 2; // +150 %
        assert!(check(&cur, &b, &CheckThresholds::default()).passed());
        p99_mut(&mut cur, Op::Register).p99_us = base_p99 * 7 / 2; // +250 %
        let r = check(&cur, &b, &CheckThresholds::default());
        assert_eq!(
            verdict_of(&r, "register p99 (corrected)").verdict,
            Verdict::Fail,
            "{r}"
        );
        // Within an absolute slack the ratio does not matter.
        let lenient = CheckThresholds {
            p99_slack_us: base_p99 * 3,
            ..CheckThresholds::default()
        };
        assert!(check(&cur, &b, &lenient).passed());
        // Convergence p99 is held to its own limit.
        let mut cur = b.clone();
        let conv = cur
            .replication_lag
            .latency
            .as_mut()
            .expect("replication_lag");
        conv.p99_us *= 4;
        let r = check(&cur, &b, &CheckThresholds::default());
        assert_eq!(verdict_of(&r, "replication lag p99").verdict, Verdict::Fail);
    }

    #[test]
    fn errors_and_unreplicated_probes_fail_when_the_baseline_expects_none() {
        let b = baseline();
        let mut cur = b.clone();
        cur.totals.errors = 3;
        cur.replication_lag.unreplicated = 1;
        let r = check(&cur, &b, &CheckThresholds::default());
        assert_eq!(verdict_of(&r, "errors").verdict, Verdict::Fail);
        assert_eq!(verdict_of(&r, "unreplicated probes").verdict, Verdict::Fail);
        assert_eq!(r.failures().count(), 2);
        // A baseline relaxed by hand accepts them.
        let mut relaxed = b.clone();
        relaxed.expect.no_errors = false;
        relaxed.expect.replicated = false;
        let r = check(&cur, &relaxed, &CheckThresholds::default());
        assert!(r.passed(), "{r}");
        assert_eq!(verdict_of(&r, "errors").verdict, Verdict::Info);
        // A run that measured no replication lag at all cannot pass a replicated baseline.
        let mut cur = b.clone();
        cur.replication_lag = Default::default();
        let r = check(&cur, &b, &CheckThresholds::default());
        assert_eq!(verdict_of(&r, "unreplicated probes").verdict, Verdict::Fail);
        assert_eq!(verdict_of(&r, "replication lag p99").verdict, Verdict::Fail);
    }

    #[test]
    fn a_missing_operation_fails_and_a_new_one_is_information() {
        let b = baseline();
        let mut cur = b.clone();
        cur.ops.remove(&Op::Beat);
        let extra = cur.ops[&Op::Query].clone();
        cur.ops.insert(Op::Push, extra);
        let r = check(&cur, &b, &CheckThresholds::default());
        assert_eq!(verdict_of(&r, "beat throughput").verdict, Verdict::Fail);
        assert_eq!(
            verdict_of(&r, "beat p99 (corrected)").verdict,
            Verdict::Fail
        );
        assert_eq!(
            verdict_of(&r, "push throughput (not in baseline)").verdict,
            Verdict::Info
        );
    }

    #[test]
    fn check_files_reads_summaries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = baseline();
        let path = dir.path().join("baseline.json");
        std::fs::write(&path, serde_json::to_string(&b).expect("json")).expect("write");
        let r = check_files(&path, &path, &CheckThresholds::default()).expect("reads");
        assert!(r.passed());
        let missing = dir.path().join("nope.json");
        assert!(check_files(&missing, &path, &CheckThresholds::default()).is_err());
    }

    #[test]
    fn parameters_that_differ_are_warned_about_except_seed_and_targets() {
        let b = baseline();
        let mut cur = b.clone();
        assert!(
            check(&cur, &b, &CheckThresholds::default())
                .parameter_differences
                .is_empty()
        );
        cur.parameters
            .insert("clients".to_owned(), "20000".to_owned());
        cur.parameters.insert("seed".to_owned(), "99".to_owned());
        let r = check(&cur, &b, &CheckThresholds::default());
        assert_eq!(
            r.parameter_differences,
            vec!["clients: 20000 (baseline 1000)"]
        );
        assert!(
            r.to_string()
                .starts_with("WARNING: the run's parameters differ from the baseline's: clients"),
            "{r}"
        );
    }

    #[test]
    fn per_operation_limits_from_the_command_line() {
        use crate::cli::{LimitKind, parse_op_limit, thresholds};
        let l = parse_op_limit("beat:p99-rise=1").expect("parses");
        assert_eq!((l.op, l.kind, l.value), (Op::Beat, LimitKind::P99Rise, 1.0));
        for bad in [
            "beat",
            "beat:p99-rise",
            "beet:p99-rise=1",
            "beat:p50=1",
            "beat:p99-rise=-1",
        ] {
            let e = parse_op_limit(bad).expect_err(bad);
            assert!(e.starts_with(&format!("--limit {bad:?}")), "{e}");
        }
        let t = thresholds(
            0.5,
            2.0,
            2.0,
            0,
            &[l, parse_op_limit("beat:throughput-drop=0.1").expect("ok")],
        );
        let beat = t.for_op(Op::Beat);
        assert_eq!((beat.max_throughput_drop, beat.max_p99_rise), (0.1, 1.0));
        assert_eq!(t.for_op(Op::Register), t.default);
    }
}
