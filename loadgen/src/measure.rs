//! Measurement: what a run records while it goes on, with no knowledge of protocols,
//! scenarios or report files beyond the interval log.
//!
//! * [`op`]: the operations measured ([`Op`](op::Op)) and the two latencies of each
//!   (corrected from the intended send, uncorrected from the actual one).
//! * [`recorder`]: the [`Recorder`](recorder::Recorder) every task of the driver records
//!   into, and its once-a-second tick; [`recording`] is what it hands over at the end.
//! * [`latency`]: the HDR histogram configuration and the statistics read from it.
//! * [`timeline`]: the per-interval rows and `timeline.csv`; [`interval_log`]: the
//!   HdrHistogram interval log `latency.hlog`.
//! * [`machine`] and [`timestamp`]: where and when a run happened.
//!
//! The report side (`crate::report`) reads what this part produced; nothing here reads
//! a report.

pub(crate) mod interval_log;
pub(crate) mod latency;
pub(crate) mod machine;
pub(crate) mod op;
pub(crate) mod recorder;
pub(crate) mod recording;
pub(crate) mod timeline;
pub(crate) mod timestamp;
