//! Reports: what loadgen makes of a finished run (and shows while it goes on).
//!
//! This file writes a run's output directory: `summary.json`, `percentiles.csv`,
//! `timeline.csv`, `latency.hlog`, `report.html` and, for a `--chaos` run, `faults.csv`
//! (formats in `REPORTS.md`). The parts:
//!
//! * [`summary`]: `summary.json` and the table printed at the end; [`table`] lays out
//!   plain-text tables; [`faults`]: the figures of each `--chaos` fault.
//! * [`html`] lays out `report.html`, [`chart`] draws its SVG charts.
//! * [`history`]: a row of `results/history.csv` per run (outside the run's directory).
//! * [`merge`] (`loadgen merge`) combines shard runs; [`check`] (`loadgen check`)
//!   compares a run with a baseline.
//! * [`progress`]: the progress line shown during a run.
//! * [`systems`]: the report of `loadgen compare` (distro, etcd and ZooKeeper side by side).
//!
//! The interval log is normally streamed during the run by the recorder (configured with
//! [`INTERVAL_LOG_FILE`] in the same directory); if it was streamed elsewhere it is copied,
//! and if there was none a one-interval log of the whole-run histograms is written, so
//! every output directory can be merged and re-read.

pub(crate) mod chart;
pub(crate) mod check;
pub(crate) mod compare;
pub(crate) mod faults;
#[cfg(test)]
pub(crate) mod fixture;
pub(crate) mod history;
pub(crate) mod html;
pub(crate) mod merge;
pub(crate) mod progress;
pub(crate) mod summary;
pub(crate) mod systems;
pub(crate) mod table;

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::error::ReportError;
use crate::measure::interval_log::{Series, write_single_interval};
use crate::measure::latency::{CSV_PERCENTILES, at_percentile};
use crate::measure::machine::RunInfo;
use crate::measure::recording::Recording;
use summary::Summary;

/// `summary.json`.
pub const SUMMARY_FILE: &str = "summary.json";
/// `percentiles.csv`.
pub const PERCENTILES_FILE: &str = "percentiles.csv";
/// `timeline.csv`.
pub const TIMELINE_FILE: &str = "timeline.csv";
/// The interval log.
pub const INTERVAL_LOG_FILE: &str = "latency.hlog";
/// `report.html`.
pub const REPORT_FILE: &str = "report.html";

/// The `kind` of the replication lag rows of `percentiles.csv`.
pub const REPLICATION_LAG_KIND: &str = "ack_to_visible";

/// The header of `percentiles.csv`.
pub const PERCENTILES_COLUMNS: [&str; 4] = ["op", "kind", "percentile", "latency_us"];

/// Writes every output file of `recording` into `dir` (created if absent) and returns the
/// summary (for [`Summary::table`], [`append_history`](crate::append_history) and
/// [`check`](crate::check())).
pub fn write_report(
    dir: &Path,
    recording: &Recording,
    info: &RunInfo,
) -> Result<Summary, ReportError> {
    let summary = Summary::new(recording, info);
    write_report_with(dir, recording, &summary)?;
    Ok(summary)
}

/// Writes the output files with an already built summary.
pub(crate) fn write_report_with(
    dir: &Path,
    recording: &Recording,
    summary: &Summary,
) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))?;

    let path = dir.join(SUMMARY_FILE);
    let json = serde_json::to_string_pretty(summary)
        .map_err(|e| ReportError::format(&path, e.to_string()))?;
    std::fs::write(&path, json + "\n").map_err(|e| ReportError::io(&path, e))?;

    let path = dir.join(PERCENTILES_FILE);
    write_percentiles(&path, recording)?;

    let path = dir.join(TIMELINE_FILE);
    let file = File::create(&path).map_err(|e| ReportError::io(&path, e))?;
    crate::measure::timeline::write_csv(&recording.timeline, BufWriter::new(file))
        .map_err(|e| ReportError::format(&path, e.to_string()))?;

    let path = dir.join(INTERVAL_LOG_FILE);
    match &recording.interval_log {
        Some(streamed) if same_file(streamed, &path) => {}
        Some(streamed) => {
            std::fs::copy(streamed, &path).map_err(|e| ReportError::io(streamed, e))?;
        }
        None => write_single_interval(
            &path,
            recording.started_at,
            recording.duration,
            Series::all().map(|s| (s, histogram(recording, s))),
        )?,
    }

    if !summary.faults.is_empty() {
        let path = dir.join(faults::FAULTS_FILE);
        faults::write_csv(&path, &summary.faults)?;
    }

    let path = dir.join(REPORT_FILE);
    let page = html::render(recording, summary)?;
    std::fs::write(&path, page).map_err(|e| ReportError::io(&path, e))?;
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn histogram(recording: &Recording, series: Series) -> &hdrhistogram::Histogram<u64> {
    match series {
        Series::Latency(op, kind) => recording.op(op).histogram(kind),
        Series::Lateness(op) => &recording.op(op).lateness,
        Series::ReplicationLag => &recording.replication_lag,
    }
}

/// `percentiles.csv`: the percentile ladder of every non-empty histogram.
fn write_percentiles(path: &Path, recording: &Recording) -> Result<(), ReportError> {
    let bad = |e: csv::Error| ReportError::format(path, e.to_string());
    let mut w = csv::Writer::from_path(path).map_err(bad)?;
    w.write_record(PERCENTILES_COLUMNS).map_err(bad)?;
    for series in Series::all() {
        let h = histogram(recording, series);
        if h.is_empty() {
            continue;
        }
        let (op, kind) = match series {
            Series::Latency(op, kind) => (op.name(), kind.name()),
            Series::Lateness(op) => (op.name(), "lateness"),
            Series::ReplicationLag => ("replication_lag", REPLICATION_LAG_KIND),
        };
        for p in CSV_PERCENTILES {
            w.write_record([op, kind, &p.to_string(), &at_percentile(h, p).to_string()])
                .map_err(bad)?;
        }
    }
    w.flush().map_err(|e| ReportError::io(path, e))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::measure::interval_log::IntervalLog;
    use crate::measure::op::Op;
    use crate::report::fixture;

    const SEED: u64 = 0x5EED_0001;

    fn run(dir: &Path, stream: bool) -> (Recording, Summary) {
        let base = Instant::now();
        let hlog = stream.then(|| dir.join(INTERVAL_LOG_FILE));
        let r = fixture::recorder(base, fixture::wall(), hlog);
        let events = fixture::events(SEED, base, 4);
        fixture::drive(&r, base, 4, &events);
        let rec = r.finish_at(base + Duration::from_secs(4)).expect("finish");
        let summary = write_report(dir, &rec, &fixture::info("mixed")).expect("report");
        (rec, summary)
    }

    #[test]
    fn writes_every_file_in_its_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (rec, summary) = run(dir.path(), true);
        for f in [
            SUMMARY_FILE,
            PERCENTILES_FILE,
            TIMELINE_FILE,
            INTERVAL_LOG_FILE,
            REPORT_FILE,
        ] {
            assert!(dir.path().join(f).is_file(), "{f} missing (seed {SEED:#x})");
        }

        // Three measurements were once all called "convergence"; each has its own name now:
        // replication lag (probes), recovery (faults), agreement at the end (the run's
        // epilogue). No file says "convergence" or "converged".
        let json = std::fs::read_to_string(dir.path().join(SUMMARY_FILE)).expect("read");
        assert!(json.contains("\"replication_lag\""), "{json}");
        assert!(json.contains("\"unreplicated\""), "{json}");
        for f in [
            SUMMARY_FILE,
            PERCENTILES_FILE,
            TIMELINE_FILE,
            INTERVAL_LOG_FILE,
            REPORT_FILE,
        ] {
            let text = std::fs::read_to_string(dir.path().join(f)).expect("read");
            assert!(
                !text.to_lowercase().contains("converge"),
                "{f} says converge"
            );
        }
        // summary.json reads back as what was returned.
        let back = Summary::load(&dir.path().join(SUMMARY_FILE)).expect("summary parses");
        assert_eq!(back, summary);
        assert_eq!(summary.format, crate::SUMMARY_FORMAT);
        assert_eq!(summary.started_at, "2026-01-02T15:04:05.000Z");
        assert_eq!(summary.duration_s, 4.0);
        assert_eq!(
            summary.ops.keys().copied().collect::<Vec<_>>(),
            vec![Op::Register, Op::Beat, Op::Query]
        );
        let reg = summary.op(Op::Register).expect("register used");
        assert_eq!(reg.ok, rec.op(Op::Register).ok);
        assert_eq!(reg.target_per_s, Some(140.0));
        assert!(reg.throughput_per_s > 0.0);
        assert!(summary.totals.errors > 0, "seed {SEED:#x} makes errors");
        assert_eq!(
            summary.totals.errors,
            summary.errors_by_code.values().sum::<u64>()
        );
        assert_eq!(summary.replication_lag.unreplicated, 1);
        assert!(!summary.expect.no_errors && !summary.expect.replicated);
        assert_eq!(summary.markers.len(), 1);
        assert_eq!(
            summary.parameters.get("nodes").map(String::as_str),
            Some("3")
        );

        // percentiles.csv: header, then 12 rows per non-empty histogram.
        let text = std::fs::read_to_string(dir.path().join(PERCENTILES_FILE)).expect("read");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("op,kind,percentile,latency_us"));
        let rows: Vec<&str> = lines.collect();
        // Three open-model operations (corrected, uncorrected, lateness) and the replication
        // lag.
        assert_eq!(rows.len(), 12 * (3 * 3 + 1));
        assert!(rows.iter().any(|r| r.starts_with("query,lateness,50,")));
        assert!(
            rows.iter()
                .any(|r| r.starts_with("replication_lag,ack_to_visible,50,"))
        );
        let p99 = reg.corrected.expect("latency").p99_us;
        assert!(rows.contains(&format!("register,corrected,99,{p99}").as_str()));

        // timeline.csv: fixed columns, then the gauge.
        let text = std::fs::read_to_string(dir.path().join(TIMELINE_FILE)).expect("read");
        let header = text.lines().next().expect("header");
        let fixed = crate::measure::timeline::timeline_columns().join(",");
        assert_eq!(header, format!("{fixed},gauge_clients_registered"));
        assert_eq!(text.lines().count(), 1 + 4);

        // The interval log re-reads as the whole-run histograms.
        let log = IntervalLog::open(&dir.path().join(INTERVAL_LOG_FILE)).expect("open");
        let mut corrected = crate::measure::latency::new_histogram();
        for i in log.intervals() {
            let i = i.expect("parses");
            if i.tag.as_deref() == Some("query.corrected") {
                corrected.add(&i.histogram).expect("same configuration");
            }
        }
        assert_eq!(corrected, rec.op(Op::Query).corrected);
    }

    #[test]
    fn report_html_is_self_contained_and_has_the_charts() {
        let dir = tempfile::tempdir().expect("temp dir");
        run(dir.path(), true);
        let page = std::fs::read_to_string(dir.path().join(REPORT_FILE)).expect("read");
        assert!(page.starts_with("<!DOCTYPE html>"));
        for banned in ["<script", "<link", " src=", "@import", "url("] {
            assert!(
                !page.contains(banned),
                "report.html must be self-contained: {banned}"
            );
        }
        // Throughput, failures, active clients, 3 latency-over-time, 3 spectra, 3
        // histograms, 2 replication lag (the only gauge is drawn as active clients); a
        // three-second run draws its time charts small.
        let charts =
            page.matches("<svg width=\"").count() - page.matches("<svg width=\"30\"").count();
        assert_eq!(charts, 14);
        assert_eq!(page.matches("<svg width=\"480\"").count(), 7, "time charts");
        for want in [
            "Successful requests per second",
            "Failed, late and dropped requests per second",
            "errors per second",
            "register: latency per interval",
            "query: latency by percentile",
            "replication lag by percentile",
            "kill node 2",
            "Active clients",
            "register: requests per latency bucket",
            "UNAVAILABLE",
        ] {
            assert!(page.contains(want), "{want} missing from report.html");
        }
    }

    #[test]
    fn without_a_streamed_log_a_one_interval_log_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (rec, _) = run(dir.path(), false);
        let log = IntervalLog::open(&dir.path().join(INTERVAL_LOG_FILE)).expect("open");
        let intervals: Vec<_> = log.intervals().collect::<Result<_, _>>().expect("parses");
        assert_eq!(
            intervals.len(),
            10,
            "3 ops x 3 kinds (lateness too) + replication lag"
        );
        assert!(
            intervals
                .iter()
                .all(|i| i.duration == Duration::from_secs(4))
        );
        let conv = intervals
            .iter()
            .find(|i| i.tag.as_deref() == Some("replication_lag"))
            .expect("replication lag interval");
        assert_eq!(conv.histogram, rec.replication_lag);
    }

    #[test]
    fn an_empty_run_still_writes_a_readable_report() {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = Instant::now();
        let r = fixture::recorder(base, fixture::wall(), None);
        let rec = r.finish_at(base).expect("finish");
        let summary = write_report(dir.path(), &rec, &fixture::info("idle")).expect("report");
        assert!(summary.ops.is_empty());
        assert!(summary.table().contains("total: 0 ok"));
        let page = std::fs::read_to_string(dir.path().join(REPORT_FILE)).expect("read");
        assert!(page.contains("No requests were recorded"));
    }
}
