//! loadgen: measurement and reports (under construction; see issue 5).
#![warn(missing_docs)]

mod error;
mod latency;
mod machine;
mod op;
mod table;
mod timestamp;

pub use error::ReportError;
pub use latency::{LatencyStats, Quantiles};
pub use machine::{Machine, RunInfo, git_revision};
pub use op::{LatencyKind, Op, UnknownOp};
pub use timestamp::{rfc3339, run_dir_name};
