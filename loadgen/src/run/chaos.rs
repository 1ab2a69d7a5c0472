//! `--chaos`: faults applied to the embedded cluster during a run, and their figures.
//!
//! [`schedule`] parses and checks the schedule, [`inject`] applies it next to the load
//! and measures each fault, [`census`] compares what the running nodes hold with what the
//! clients were told. The figures end up in `summary.json` (`faults`), `faults.csv`, the
//! table printed at the end and `report.html` (see `loadgen/REPORTS.md`).

pub mod census;
pub mod inject;
pub mod schedule;

pub use inject::{Chaos, Outcome, run_schedule};
pub use schedule::{Action, Fault, Schedule};
