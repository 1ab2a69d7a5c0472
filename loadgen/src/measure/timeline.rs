//! The per-interval rows of a run (one per second by default) and `timeline.csv`.
//!
//! A row holds, for the interval it covers, every operation's counts, achieved and target
//! rates and latency quantiles (corrected and uncorrected), the replication lag figures, the
//! driver's gauges and the markers set during it. Rows are produced by
//! [`Recorder::tick`](crate::Recorder::tick); this file only defines them and their CSV
//! form. The CSV is wide (one row per interval): its fixed columns never change, gauge
//! columns follow in name order.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::latency::Quantiles;
use super::op::Op;
use crate::error::ReportError;

/// One operation's figures for one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpRow {
    /// The target rate the driver had set when the interval closed, per second.
    pub target_per_s: f64,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed (any code).
    pub errors: u64,
    /// Requests sent more than the late threshold after their intended time.
    pub late: u64,
    /// Requests the schedule intended but the driver never sent.
    pub dropped: u64,
    /// Successful requests per second over the interval.
    pub throughput_per_s: f64,
    /// Corrected latency of the successful requests (from the intended send time).
    pub corrected: Option<Quantiles>,
    /// Uncorrected latency of the successful requests (from the actual send time).
    pub uncorrected: Option<Quantiles>,
}

impl OpRow {
    /// Whether anything at all happened to this operation in the interval.
    pub fn is_idle(&self) -> bool {
        self.ok == 0 && self.errors == 0 && self.dropped == 0
    }
}

/// The replication lag figures of one interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationLagRow {
    /// Probe registrations that became visible on a node during the interval (one per
    /// probe and non-owner node).
    pub count: u64,
    /// Probe registrations given up on during the interval (not visible before the
    /// driver's deadline).
    pub unreplicated: u64,
    /// Quantiles of the convergence times recorded in the interval.
    pub latency: Option<Quantiles>,
}

/// One interval of the timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineRow {
    /// Start of the interval, seconds since the run started.
    pub start_s: f64,
    /// End of the interval, seconds since the run started.
    pub end_s: f64,
    /// Figures per operation, in the order of [`Op::ALL`].
    pub ops: [OpRow; 5],
    /// Replication lag figures.
    pub replication_lag: ReplicationLagRow,
    /// The driver's gauges, as they stood when the interval closed.
    pub gauges: BTreeMap<String, f64>,
    /// Labels of the markers set during the interval.
    pub markers: Vec<String>,
}

impl TimelineRow {
    /// The figures of `op`.
    pub fn op(&self, op: Op) -> &OpRow {
        &self.ops[op.index()]
    }

    /// Length of the interval in seconds.
    pub fn duration_s(&self) -> f64 {
        (self.end_s - self.start_s).max(0.0)
    }
}

/// A labelled instant of the run (a fault injected, a phase begun), drawn on the time
/// charts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// Seconds since the run started.
    pub time_s: f64,
    /// What happened, e.g. `kill node 2`.
    pub label: String,
}

/// Separator of several markers' labels in the `markers` column.
pub(crate) const MARKER_SEPARATOR: &str = " | ";
/// Prefix of gauge columns.
pub(crate) const GAUGE_PREFIX: &str = "gauge_";

/// The per-operation column suffixes, in order.
const OP_COLUMNS: [&str; 12] = [
    "target_per_s",
    "ok",
    "errors",
    "late",
    "dropped",
    "throughput_per_s",
    "corrected_p50_us",
    "corrected_p99_us",
    "corrected_max_us",
    "uncorrected_p50_us",
    "uncorrected_p99_us",
    "uncorrected_max_us",
];

/// The fixed columns of `timeline.csv`, before any gauge column.
pub fn timeline_columns() -> Vec<String> {
    let mut cols = vec!["start_s".to_owned(), "end_s".to_owned()];
    for op in Op::ALL {
        cols.extend(OP_COLUMNS.iter().map(|c| format!("{op}_{c}")));
    }
    cols.extend(
        [
            "replication_lag_count",
            "replication_lag_unreplicated",
            "replication_lag_p50_us",
            "replication_lag_p99_us",
            "replication_lag_max_us",
            "markers",
        ]
        .map(str::to_owned),
    );
    cols
}

fn quantile_cells(q: Option<Quantiles>) -> [String; 3] {
    match q {
        Some(q) => [
            q.p50_us.to_string(),
            q.p99_us.to_string(),
            q.max_us.to_string(),
        ],
        None => Default::default(),
    }
}

fn rate_cell(v: f64) -> String {
    format!("{v:.1}")
}

/// Writes `rows` as CSV, with a `gauge_<name>` column for every gauge any row has.
pub(crate) fn write_csv<W: io::Write>(rows: &[TimelineRow], out: W) -> Result<(), csv::Error> {
    let gauges: Vec<&String> = {
        let mut names: Vec<&String> = rows.iter().flat_map(|r| r.gauges.keys()).collect();
        names.sort();
        names.dedup();
        names
    };
    let mut w = csv::Writer::from_writer(out);
    let mut header = timeline_columns();
    header.extend(gauges.iter().map(|g| format!("{GAUGE_PREFIX}{g}")));
    w.write_record(&header)?;
    for row in rows {
        let mut rec: Vec<String> = Vec::with_capacity(header.len());
        rec.push(format!("{:.3}", row.start_s));
        rec.push(format!("{:.3}", row.end_s));
        for o in &row.ops {
            rec.push(rate_cell(o.target_per_s));
            rec.push(o.ok.to_string());
            rec.push(o.errors.to_string());
            rec.push(o.late.to_string());
            rec.push(o.dropped.to_string());
            rec.push(rate_cell(o.throughput_per_s));
            rec.extend(quantile_cells(o.corrected));
            rec.extend(quantile_cells(o.uncorrected));
        }
        let c = &row.replication_lag;
        rec.push(c.count.to_string());
        rec.push(c.unreplicated.to_string());
        rec.extend(quantile_cells(c.latency));
        rec.push(row.markers.join(MARKER_SEPARATOR));
        for g in &gauges {
            rec.push(row.gauges.get(*g).map(f64::to_string).unwrap_or_default());
        }
        w.write_record(&rec)?;
    }
    w.flush()?;
    Ok(())
}

/// Reads a `timeline.csv` written by [`write_csv`] (columns found by name, so files with
/// extra columns still read).
pub(crate) fn read_csv(path: &Path) -> Result<Vec<TimelineRow>, ReportError> {
    let bad = |m: String| ReportError::format(path, m);
    let mut r = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let header: Vec<String> = r
        .headers()
        .map_err(|e| bad(e.to_string()))?
        .iter()
        .map(str::to_owned)
        .collect();
    let index: BTreeMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), i))
        .collect();
    let missing: Vec<String> = timeline_columns()
        .into_iter()
        .filter(|c| !index.contains_key(c.as_str()))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!("missing columns {missing:?}")));
    }
    let mut rows = Vec::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let cell = |name: &str| rec.get(index[name]).unwrap_or("");
        let num = |name: &str| -> Result<Option<f64>, ReportError> {
            let s = cell(name);
            if s.is_empty() {
                return Ok(None);
            }
            s.parse::<f64>()
                .map(Some)
                .map_err(|e| bad(format!("row {}: column {name}: {e}", line + 2)))
        };
        let count =
            |name: &str| -> Result<u64, ReportError> { Ok(num(name)?.map_or(0, |v| v as u64)) };
        let quantiles = |prefix: &str| -> Result<Option<Quantiles>, ReportError> {
            let p50 = num(&format!("{prefix}_p50_us"))?;
            let p99 = num(&format!("{prefix}_p99_us"))?;
            let max = num(&format!("{prefix}_max_us"))?;
            Ok(match (p50, p99, max) {
                (Some(a), Some(b), Some(c)) => Some(Quantiles {
                    p50_us: a as u64,
                    p99_us: b as u64,
                    max_us: c as u64,
                }),
                _ => None,
            })
        };
        let mut row = TimelineRow {
            start_s: num("start_s")?.unwrap_or(0.0),
            end_s: num("end_s")?.unwrap_or(0.0),
            ..TimelineRow::default()
        };
        for op in Op::ALL {
            let o = &mut row.ops[op.index()];
            o.target_per_s = num(&format!("{op}_target_per_s"))?.unwrap_or(0.0);
            o.ok = count(&format!("{op}_ok"))?;
            o.errors = count(&format!("{op}_errors"))?;
            o.late = count(&format!("{op}_late"))?;
            o.dropped = count(&format!("{op}_dropped"))?;
            o.throughput_per_s = num(&format!("{op}_throughput_per_s"))?.unwrap_or(0.0);
            o.corrected = quantiles(&format!("{op}_corrected"))?;
            o.uncorrected = quantiles(&format!("{op}_uncorrected"))?;
        }
        row.replication_lag = ReplicationLagRow {
            count: count("replication_lag_count")?,
            unreplicated: count("replication_lag_unreplicated")?,
            latency: quantiles("replication_lag")?,
        };
        let markers = cell("markers");
        if !markers.is_empty() {
            row.markers = markers.split(MARKER_SEPARATOR).map(str::to_owned).collect();
        }
        for (i, h) in header.iter().enumerate() {
            if let Some(name) = h.strip_prefix(GAUGE_PREFIX) {
                let s = rec.get(i).unwrap_or("");
                if !s.is_empty() {
                    let v = s
                        .parse::<f64>()
                        .map_err(|e| bad(format!("row {}: column {h}: {e}", line + 2)))?;
                    row.gauges.insert(name.to_owned(), v);
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed header is a published format: changing it breaks `results/` tooling.
    #[test]
    fn header_is_stable() {
        let cols = timeline_columns();
        assert_eq!(cols.len(), 2 + 5 * 12 + 6);
        let joined = cols.join(",");
        assert!(joined.starts_with(
            "start_s,end_s,register_target_per_s,register_ok,register_errors,register_late,\
             register_dropped,register_throughput_per_s,register_corrected_p50_us,\
             register_corrected_p99_us,register_corrected_max_us,register_uncorrected_p50_us,\
             register_uncorrected_p99_us,register_uncorrected_max_us,deregister_target_per_s,"
        ));
        assert!(joined.ends_with(
            "push_uncorrected_max_us,replication_lag_count,replication_lag_unreplicated,\
             replication_lag_p50_us,replication_lag_p99_us,replication_lag_max_us,markers"
        ));
    }

    #[test]
    fn csv_round_trip_with_gauges_markers_and_empty_cells() {
        let mut a = TimelineRow {
            start_s: 0.0,
            end_s: 1.0,
            ..TimelineRow::default()
        };
        a.ops[Op::Query.index()] = OpRow {
            target_per_s: 100.0,
            ok: 98,
            errors: 2,
            late: 1,
            dropped: 0,
            throughput_per_s: 98.0,
            corrected: Some(Quantiles {
                p50_us: 10,
                p99_us: 20,
                max_us: 30,
            }),
            uncorrected: Some(Quantiles {
                p50_us: 9,
                p99_us: 19,
                max_us: 29,
            }),
        };
        a.gauges.insert("clients_registered".into(), 1000.0);
        a.markers = vec!["kill node 2".into(), "restart, node 2".into()];
        let mut b = TimelineRow {
            start_s: 1.0,
            end_s: 2.002,
            ..TimelineRow::default()
        };
        b.replication_lag = ReplicationLagRow {
            count: 4,
            unreplicated: 1,
            latency: Some(Quantiles {
                p50_us: 1000,
                p99_us: 2000,
                max_us: 2000,
            }),
        };
        b.gauges.insert("nodes_converged".into(), 2.5);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("timeline.csv");
        let file = std::fs::File::create(&path).expect("create");
        write_csv(&[a.clone(), b.clone()], file).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let header = text.lines().next().expect("header");
        assert!(header.ends_with(",markers,gauge_clients_registered,gauge_nodes_converged"));
        let back = read_csv(&path).expect("parse");
        assert_eq!(back, vec![a, b]);
    }
}
