//! # loadgen: honest latency, throughput and replication lag figures
//!
//! The load generator for Distro and Nacos 2.x clusters. This part of the crate is the
//! measurement and reporting library; the driver (client simulation, schedules, probes)
//! calls it.
//!
//! * [`Recorder`]: shared by every task of the driver. One HDR histogram per operation
//!   ([`Op`]) and kind ([`LatencyKind`]): *corrected* latency counts from the time the
//!   open-model schedule intended to send a request (so a stall shows, rather than
//!   delaying the requests that would have measured it: coordinated omission), and
//!   *uncorrected* latency from the actual send. Late and dropped sends, errors by code,
//!   target rates, a replication lag histogram, gauges and fault markers. Bounded memory: no
//!   per-request samples.
//! * [`Recorder::tick`] (or the thread of [`Recorder::spawn_ticker`]) closes an interval
//!   each second: a [`TimelineRow`] and interval histograms streamed to `latency.hlog`.
//! * [`write_report`] writes a run's directory: `summary.json`, `percentiles.csv`,
//!   `timeline.csv`, `latency.hlog` and a self-contained `report.html` with SVG charts.
//!   [`Summary::table`] is the text printed at the end, [`append_history`] adds the run to
//!   `results/history.csv`, [`Progress`] shows a progress line meanwhile.
//! * [`merge_runs`] combines shard runs; [`check`] compares a run with a baseline.
//!
//! The crate's folders, by role (each `foo.rs` opens the folder `foo/` it describes):
//!
//! * `measure/`: the recorder and what it records (operations, latency histograms, the
//!   timeline, the interval log), and where and when a run happened. Knows nothing of
//!   protocols or scenarios.
//! * `report/`: the run directory ([`write_report`]), `summary.json` and the table, the
//!   HTML page and its charts, the history row, `merge`, `check` and the progress line.
//! * [`protocol`]: the seam between the driver and a wire protocol, and the protocols:
//!   [`protocol::native`] (the server's own gRPC API), [`protocol::nacos`] (a Nacos 2.x
//!   SDK connection per client), `protocol::etcd` (etcd v3; the `etcd` feature) and
//!   [`protocol::zookeeper`] (ZooKeeper), the last two for comparison, with the connect
//!   phase they report.
//! * [`run`]: running a scenario. [`run::run`] runs one ([`run::RunConfig`]) against an
//!   embedded cluster or external targets; [`run::driver`] holds the lanes that simulate
//!   the clients, [`run::markers`] the replication probes and push measurements,
//!   [`run::chaos`] the faults of `--chaos`, [`run::cluster_process`] the cluster in a
//!   child process.
//! * At the top: [`population`] (the seeded clients, shared by the driver and the
//!   protocols), [`cli`] (the `loadgen` command line), [`parse`] (its values) and the
//!   reporting side's error type.
//!
//! Dependencies go one way: `report` reads `measure`; `protocol` uses `measure` and the
//! population; `run` uses all of them. The README's "Where each part lives" maps each
//! concept to its file.
//!
//! File formats are documented in `loadgen/REPORTS.md`.
//!
//! ## A run, end to end
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::{Duration, Instant};
//! use loadgen::{Op, Progress, Recorder, RecorderConfig, RunInfo, Sample, INTERVAL_LOG_FILE};
//!
//! # fn main() -> Result<(), loadgen::ReportError> {
//! let out = tempfile::tempdir().expect("temp dir"); // normally results/runs/<run_dir_name>
//! let recorder = Recorder::new(RecorderConfig {
//!     interval_log: Some(out.path().join(INTERVAL_LOG_FILE)),
//!     ..RecorderConfig::default()
//! })?;
//! recorder.set_target_rate(Op::Register, 1000.0);
//! let registered = recorder.gauge("clients_registered");
//! // One row per second, shown as it comes (`Progress::new(Some(run_length))` picks a bar
//! // on a terminal, plain lines otherwise).
//! let mut progress = Progress::plain(Duration::from_secs(5), Box::new(std::io::stdout()));
//! let ticker = recorder.spawn_ticker(move |row| progress.update(row));
//!
//! // Each task holds a `recorder.clone()` and, for each request of its open-model schedule:
//! let intended = Instant::now();                  // when the schedule said to send
//! let sent = intended + Duration::from_micros(30); // when it was actually sent
//! let done = sent + Duration::from_micros(400);    // when the response arrived
//! recorder.record_ok(Op::Register, Sample { intended, sent, done });
//! registered.add(1.0);
//! recorder.record_error(Op::Register, Sample { intended, sent, done }, "UNAVAILABLE");
//! recorder.record_replication_lag(Duration::from_millis(1_020));
//! recorder.mark("kill node 2");
//!
//! ticker.stop(); // after the tasks have stopped
//! let recording = recorder.finish()?;
//! let mut parameters = BTreeMap::new();
//! parameters.insert("clients".to_owned(), "1".to_owned());
//! let summary = loadgen::write_report(out.path(), &recording, &RunInfo::detect("example", parameters))?;
//! print!("{}", summary.table());
//! assert_eq!(summary.op(Op::Register).map(|o| (o.ok, o.errors)), Some((1, 1)));
//! assert!(out.path().join("report.html").exists());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod cli;
mod error;
mod measure;
pub mod parse;
pub mod population;
pub mod protocol;
mod report;
pub mod run;
pub mod tls;

pub use error::ReportError;
pub use measure::interval_log::{IntervalHistogram, IntervalLog};
pub use measure::latency::{LatencyStats, Quantiles};
pub use measure::machine::{Machine, RunInfo, git_revision};
pub use measure::op::{LatencyKind, Op, UnknownOp};
pub use measure::recorder::{
    DEFAULT_INTERVAL, DEFAULT_LATE_THRESHOLD, Gauge, MAX_DEFAULT_SHARDS, Recorder, RecorderConfig,
    Sample, Ticker,
};
pub use measure::recording::{IDLE_GAP, OpTotals, Recording};
pub use measure::timeline::{Marker, OpRow, ReplicationLagRow, TimelineRow, timeline_columns};
pub use measure::timestamp::{rfc3339, run_dir_name};
pub use report::check::{
    CheckReport, CheckRow, CheckThresholds, DEFAULT_MAX_P99_RISE, DEFAULT_MAX_THROUGHPUT_DROP,
    OpThresholds, Unit, Verdict, check, check_files,
};
pub use report::compare::{COMPARISON_FILE, write_comparison};
pub use report::faults::{FAULTS_COLUMNS, FAULTS_FILE, FaultSummary};
pub use report::history::{append_history, history_columns, history_row};
pub use report::merge::merge_runs;
pub use report::progress::{DEFAULT_PLAIN_EVERY, Progress, progress_line};
pub use report::summary::{
    Expectations, Model, OpSummary, ReplicationLagSummary, SUMMARY_FORMAT, Summary, Totals,
};
pub use report::systems::{
    CAVEATS, SYSTEMS_FORMAT, SYSTEMS_HTML, SYSTEMS_JSON, SystemFigures, SystemsReport,
};
pub use report::{
    INTERVAL_LOG_FILE, PERCENTILES_COLUMNS, PERCENTILES_FILE, REPLICATION_LAG_KIND, REPORT_FILE,
    SUMMARY_FILE, TIMELINE_FILE, write_report,
};
