//! loadgen: measurement and reports (under construction; see issue 5).
#![warn(missing_docs)]

mod chart;
mod error;
#[cfg(test)]
mod fixture;
mod html;
mod interval_log;
mod latency;
mod machine;
mod op;
mod recorder;
mod recording;
mod report;
mod summary;
mod table;
mod timeline;
mod timestamp;

pub use error::ReportError;
pub use interval_log::{IntervalHistogram, IntervalLog};
pub use latency::{LatencyStats, Quantiles};
pub use machine::{Machine, RunInfo, git_revision};
pub use op::{LatencyKind, Op, UnknownOp};
pub use recorder::{
    DEFAULT_INTERVAL, DEFAULT_LATE_THRESHOLD, Gauge, MAX_DEFAULT_SHARDS, Recorder,
    RecorderConfig, Sample, Ticker,
};
pub use recording::{OpTotals, Recording};
pub use report::{
    CONVERGENCE_KIND, INTERVAL_LOG_FILE, PERCENTILES_COLUMNS, PERCENTILES_FILE, REPORT_FILE,
    SUMMARY_FILE, TIMELINE_FILE, write_report,
};
pub use summary::{ConvergenceSummary, Expectations, OpSummary, SUMMARY_FORMAT, Summary, Totals};
pub use timeline::{ConvergenceRow, Marker, OpRow, TimelineRow, timeline_columns};
pub use timestamp::{rfc3339, run_dir_name};
