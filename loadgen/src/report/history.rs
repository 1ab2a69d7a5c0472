//! `results/history.csv`: one row per run, appended, so that performance can be followed
//! across revisions and machines.
//!
//! The column set is fixed (see [`history_columns`] and `REPORTS.md`): the run's
//! parameters, which vary by scenario, go into one `parameters` cell as sorted
//! `key=value` pairs joined by `;`. Appending to a file whose header differs is refused
//! rather than producing a file no tool can read; rotate the old file by hand.

use std::io::Write as _;
use std::path::Path;

use super::summary::Summary;
use crate::error::ReportError;
use crate::measure::op::Op;

/// The header of `history.csv`.
pub fn history_columns() -> Vec<String> {
    let mut cols: Vec<String> = [
        "timestamp",
        "scenario",
        "git_revision",
        "cores",
        "memory_mib",
        "cpu_model",
        "duration_s",
        "parameters",
    ]
    .map(str::to_owned)
    .to_vec();
    for op in Op::ALL {
        cols.push(format!("{op}_throughput_per_s"));
        cols.push(format!("{op}_p99_us"));
    }
    cols.extend(
        [
            "replication_lag_p99_us",
            "errors",
            "late",
            "dropped",
            "unreplicated",
            "output_dir",
        ]
        .map(str::to_owned),
    );
    cols
}

/// The history row of `summary` (cells in [`history_columns`] order). Per-operation cells
/// are empty for operations the run did not use; `p99` is the corrected one.
pub fn history_row(summary: &Summary, output_dir: &Path) -> Vec<String> {
    let m = &summary.machine;
    let parameters: Vec<String> = summary
        .parameters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut row = vec![
        summary.started_at.clone(),
        summary.scenario.clone(),
        summary.git_revision.clone(),
        m.cores.to_string(),
        m.memory_mib.to_string(),
        m.cpu_model.clone(),
        format!("{:.3}", summary.duration_s),
        parameters.join(";"),
    ];
    for op in Op::ALL {
        match summary.op(op) {
            Some(o) => {
                row.push(format!("{:.1}", o.throughput_per_s));
                row.push(
                    o.corrected
                        .map(|c| c.p99_us.to_string())
                        .unwrap_or_default(),
                );
            }
            None => row.extend([String::new(), String::new()]),
        }
    }
    let c = &summary.replication_lag;
    row.push(c.latency.map(|l| l.p99_us.to_string()).unwrap_or_default());
    row.push(summary.totals.errors.to_string());
    row.push(summary.totals.late.to_string());
    row.push(summary.totals.dropped.to_string());
    row.push(c.unreplicated.to_string());
    row.push(output_dir.display().to_string());
    row
}

/// Appends the row of `summary` to the history file at `path`, creating it (and its
/// directory) with a header if absent.
pub fn append_history(
    path: &Path,
    summary: &Summary,
    output_dir: &Path,
) -> Result<(), ReportError> {
    let columns = history_columns();
    let exists = path.metadata().map(|m| m.len() > 0).unwrap_or(false);
    if exists {
        let mut r =
            csv::Reader::from_path(path).map_err(|e| ReportError::format(path, e.to_string()))?;
        let header: Vec<String> = r
            .headers()
            .map_err(|e| ReportError::format(path, e.to_string()))?
            .iter()
            .map(str::to_owned)
            .collect();
        if header != columns {
            return Err(ReportError::format(
                path,
                "its header differs from this version's history columns; \
                 move the file aside (or convert it) and run again",
            ));
        }
    } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))?;
    }
    // Format the lines first and append them in one write, so that concurrent runs do not
    // interleave within a row.
    let mut w = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| ReportError::format(path, e.to_string());
    if !exists {
        w.write_record(&columns).map_err(bad)?;
    }
    w.write_record(history_row(summary, output_dir))
        .map_err(bad)?;
    let bytes = w
        .into_inner()
        .map_err(|e| ReportError::format(path, e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ReportError::io(path, e))?;
    file.write_all(&bytes).map_err(|e| ReportError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header is a published format: changing it breaks every existing history file.
    #[test]
    fn header_is_stable() {
        assert_eq!(
            history_columns().join(","),
            "timestamp,scenario,git_revision,cores,memory_mib,cpu_model,duration_s,parameters,\
             register_throughput_per_s,register_p99_us,deregister_throughput_per_s,\
             deregister_p99_us,beat_throughput_per_s,beat_p99_us,query_throughput_per_s,\
             query_p99_us,push_throughput_per_s,push_p99_us,replication_lag_p99_us,errors,late,\
             dropped,unreplicated,output_dir"
        );
    }
}

#[cfg(test)]
mod append_tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::report::fixture;

    fn summary() -> Summary {
        let base = Instant::now();
        let r = fixture::recorder(base, fixture::wall(), None);
        fixture::drive(&r, base, 2, &fixture::events(11, base, 2));
        let rec = r.finish_at(base + Duration::from_secs(2)).expect("finish");
        Summary::new(&rec, &fixture::info("mixed"))
    }

    #[test]
    fn appends_rows_under_one_header() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("results").join("history.csv");
        let s = summary();
        append_history(&path, &s, Path::new("results/runs/x")).expect("first");
        append_history(&path, &s, Path::new("results/runs/y")).expect("second");
        let mut r = csv::Reader::from_path(&path).expect("csv");
        let header: Vec<String> = r
            .headers()
            .expect("header")
            .iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(header, history_columns());
        let rows: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>().expect("rows");
        assert_eq!(rows.len(), 2);
        let cell = |row: &csv::StringRecord, name: &str| {
            let i = header.iter().position(|h| h == name).expect("column");
            row.get(i).expect("cell").to_owned()
        };
        assert_eq!(cell(&rows[0], "timestamp"), "2026-01-02T15:04:05.000Z");
        assert_eq!(cell(&rows[0], "git_revision"), "abc1234");
        assert_eq!(cell(&rows[0], "cpu_model"), "Test CPU @ 2.20GHz");
        assert_eq!(cell(&rows[0], "parameters"), "clients=1000;nodes=3");
        assert_eq!(cell(&rows[0], "push_throughput_per_s"), "");
        let p99 = s
            .op(Op::Query)
            .and_then(|o| o.corrected)
            .expect("p99")
            .p99_us;
        assert_eq!(cell(&rows[0], "query_p99_us"), p99.to_string());
        assert_eq!(cell(&rows[1], "output_dir"), "results/runs/y");
        assert_eq!(cell(&rows[0], "unreplicated"), "0");
    }

    #[test]
    fn refuses_a_file_with_another_header() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("history.csv");
        std::fs::write(&path, "timestamp,old_column\n2020,1\n").expect("write");
        let err = append_history(&path, &summary(), Path::new("x")).expect_err("mismatch");
        assert!(err.to_string().contains("header differs"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "timestamp,old_column\n2020,1\n",
            "the old file is untouched"
        );
    }
}
