//! `comparison.html`: what `loadgen check` writes beside the run it checked: the check's
//! rows, and per operation the run's latency percentiles drawn over the baseline's.
//!
//! A baseline keeps only its `summary.json`, so the overlay is of the summary's ladder
//! (p50, p90, p99, p99.9, p99.99, max) on the percentile axis of `report.html`'s spectra,
//! not of whole histograms.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::chart::{Line, palette, spectrum_chart};
use super::check::{CheckReport, Verdict, cell};
use super::html::escape;
use super::summary::{Model, Summary};
use crate::error::ReportError;
use crate::measure::latency::LatencyStats;

/// The file name of the comparison page.
pub const COMPARISON_FILE: &str = "comparison.html";

/// The right end of the percentile axis: the max is drawn there.
const X_MAX: f64 = 1e5;

/// `(1/(1-p), latency ms)` points of a summary's ladder.
fn ladder_points(s: &LatencyStats) -> Vec<(f64, Option<f64>)> {
    let xs = [2.0, 10.0, 100.0, 1e3, 1e4, X_MAX];
    xs.iter()
        .zip(s.ladder())
        .map(|(x, (_, us))| (*x, Some(us as f64 / 1000.0)))
        .collect()
}

/// The latency a summary's operation is judged by: corrected in an open model, service
/// time in a closed one.
fn judged(s: &Summary, op: crate::measure::op::Op) -> Option<(&LatencyStats, &'static str)> {
    let o = s.ops.get(&op)?;
    match o.model {
        Model::Open => o.corrected.as_ref().map(|l| (l, "corrected")),
        Model::Closed => o.uncorrected.as_ref().map(|l| (l, "service time")),
    }
}

/// The comparison page.
pub(crate) fn render(
    current: &Summary,
    baseline: &Summary,
    report: &CheckReport,
) -> Result<String, ReportError> {
    let mut h = String::new();
    let title = format!(
        "loadgen check: {} ({}) against the baseline ({})",
        current.scenario, current.started_at, baseline.started_at
    );
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1240px; \
         padding: 0 12px; }} h1 {{ font-size: 22px; }} h2 {{ font-size: 18px; }} table {{ border-collapse: collapse; font-size: 13px; }} \
         th, td {{ padding: 3px 6px; border-bottom: 1px solid #eee; text-align: right; }} \
         td.l, th.l {{ text-align: left; }} .bad {{ color: #b00; font-weight: 600; }} \
         svg {{ max-width: 100%; height: auto; }}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );
    let verdict = if report.passed() {
        "PASS: no regression beyond the limits".to_owned()
    } else {
        format!(
            "FAIL: {} of {} checks failed",
            report.failures().count(),
            report.rows.len()
        )
    };
    let _ = writeln!(
        h,
        "<p{}><b>{}</b></p>",
        if report.passed() {
            ""
        } else {
            " class=\"bad\""
        },
        escape(&verdict)
    );
    if !report.parameter_differences.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"bad\">The run's parameters differ from the baseline's: {}</p>",
            escape(&report.parameter_differences.join(", "))
        );
    }
    h.push_str(
        "<h2>Checks</h2>\n<table><tr><th class=\"l\">metric</th><th>baseline</th><th>current</th>\
         <th>change</th><th class=\"l\">limit</th><th class=\"l\">verdict</th></tr>\n",
    );
    for r in &report.rows {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td>\
             <td class=\"l{}\">{}</td></tr>",
            escape(&r.metric),
            cell(r.baseline, r.unit),
            cell(r.current, r.unit),
            r.change
                .map_or("-".to_owned(), |c| format!("{:+.1}%", c * 100.0)),
            escape(&r.limit),
            if r.verdict == Verdict::Fail {
                " bad"
            } else {
                ""
            },
            r.verdict
        );
    }
    h.push_str(
        "</table>\n<h2>Latency against the baseline</h2>\n<p>The summary's percentiles (p50 to \
         max, the max at the right edge) of each operation in both runs: corrected latency in \
         an open model, service time in a closed one.</p>\n",
    );
    for op in current.ops.keys() {
        let (Some((cur, kind)), Some((base, _))) = (judged(current, *op), judged(baseline, *op))
        else {
            continue;
        };
        let lines = [
            Line::new("this run", palette(0), ladder_points(cur)),
            Line::new("baseline (dashed)", palette(7), ladder_points(base)).dashed(),
        ];
        let title = format!("{op}: {kind} latency by percentile");
        let svg = spectrum_chart(&title, "latency (ms)", X_MAX, &lines)?;
        h.push_str("<figure>");
        h.push_str(&svg);
        let _ = writeln!(
            h,
            "<figcaption>{} this run {} baseline</figcaption></figure>",
            lines[0].swatch(),
            lines[1].swatch()
        );
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

/// Writes `comparison.html` beside `current` (a `summary.json`) and returns its path.
pub fn write_comparison(
    current: &Path,
    baseline: &Path,
    report: &CheckReport,
) -> Result<PathBuf, ReportError> {
    let page = render(&Summary::load(current)?, &Summary::load(baseline)?, report)?;
    let path = current
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(COMPARISON_FILE);
    std::fs::write(&path, page).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::report::check::{CheckThresholds, check};
    use crate::report::fixture;

    fn summary(seed: u64) -> Summary {
        let base = Instant::now();
        let r = fixture::recorder(base, fixture::wall(), None);
        fixture::drive(&r, base, 3, &fixture::events(seed, base, 3));
        let rec = r.finish_at(base + Duration::from_secs(3)).expect("finish");
        Summary::new(&rec, &fixture::info("mixed"))
    }

    #[test]
    fn the_page_holds_the_checks_and_both_runs_per_operation() {
        let (current, baseline) = (summary(1), summary(2));
        let report = check(&current, &baseline, &CheckThresholds::default());
        let page = render(&current, &baseline, &report).expect("renders");
        for r in &report.rows {
            assert!(page.contains(&escape(&r.metric)), "{} missing", r.metric);
        }
        let charts = page.matches(": corrected latency by percentile").count();
        assert_eq!(charts, current.ops.len(), "one overlay per operation");
        assert_eq!(page.matches(" this run ").count(), charts);
        assert_eq!(page.matches(" baseline</figcaption>").count(), charts);
        // The ladder runs from the median to the max at the right edge.
        let stats = current
            .ops
            .values()
            .next()
            .and_then(|o| o.corrected.as_ref());
        let points = ladder_points(stats.expect("latency"));
        assert_eq!(
            points.first().and_then(|p| p.1),
            Some(stats.expect("latency").p50_us as f64 / 1000.0)
        );
        assert_eq!(points.last().map(|p| p.0), Some(X_MAX));
    }

    #[test]
    fn it_is_written_beside_the_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cur, base) = (dir.path().join("run.json"), dir.path().join("base.json"));
        std::fs::write(&cur, serde_json::to_string(&summary(1)).expect("json")).expect("write");
        std::fs::write(&base, serde_json::to_string(&summary(2)).expect("json")).expect("write");
        let report = crate::report::check::check_files(&cur, &base, &CheckThresholds::default())
            .expect("checks");
        let path = write_comparison(&cur, &base, &report).expect("writes");
        assert_eq!(path, dir.path().join(COMPARISON_FILE));
        assert!(
            std::fs::read_to_string(path)
                .expect("read")
                .contains("<h2>Checks</h2>")
        );
    }
}
