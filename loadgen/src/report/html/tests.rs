//! Tests of the HTML report: every section, chart and figure a reader relies on.

use std::time::{Duration, Instant};

use super::*;
use crate::measure::latency::new_histogram;
use crate::measure::op::Op;
use crate::report::fixture;

/// A three-second mixed run of the fixture, and its summary.
fn run() -> (Recording, Summary) {
    let base = Instant::now();
    let r = fixture::recorder(base, fixture::wall(), None);
    fixture::drive(&r, base, 3, &fixture::events(5, base, 3));
    let rec = r.finish_at(base + Duration::from_secs(3)).expect("finish");
    let s = Summary::new(&rec, &fixture::info("mixed"));
    (rec, s)
}

/// The counts of a step outline from [`histogram_points`]: one per bucket.
fn step_counts(line: &Line) -> Vec<f64> {
    line.points[1..line.points.len() - 1]
        .chunks(2)
        .map(|p| p[0].1.expect("present"))
        .collect()
}

#[test]
fn histogram_buckets_sum_to_the_operations_count() {
    let (rec, _) = run();
    for op in rec.used_ops() {
        let o = rec.op(op);
        let lines = histogram_lines(o, true);
        assert_eq!(lines.len(), 2, "{op}: corrected and uncorrected");
        for line in &lines {
            let counts = step_counts(line);
            assert_eq!(
                counts.iter().sum::<f64>(),
                o.ok as f64,
                "{op} {}",
                line.label
            );
            assert!(
                counts.iter().filter(|c| **c > 0.0).count() > 3,
                "{counts:?}"
            );
        }
        // Both series share the buckets, and the x axis rises by bucket edges.
        assert_eq!(lines[0].points.len(), lines[1].points.len());
        assert!(lines[0].points.windows(2).all(|w| w[0].0 <= w[1].0));
        let closed = histogram_lines(o, false);
        assert_eq!(
            closed.len(),
            1,
            "a closed model shows its service time only"
        );
        assert_eq!(closed[0].label, "service time");
        assert_eq!(step_counts(&closed[0]).iter().sum::<f64>(), o.ok as f64);
        let svg = histogram_chart("h", histogram_range(&lines), &lines).expect("draws");
        assert!(svg.contains("latency (ms, log scale)"), "x axis named");
        assert!(
            svg.contains("#1F77B4") && svg.contains("#FF7F0E"),
            "both series drawn"
        );
    }
    // A latency of 0 µs counts in the first bucket; bucket edges are 10 per decade.
    let range = histogram_range(&[Line::new(
        "x",
        palette(0),
        vec![(0.001, Some(0.0)), (1.2, Some(1.0)), (25.0, Some(0.0))],
    )]);
    assert!((range.start - 0.001).abs() < 1e-12 && (range.end - 100.0).abs() < 1e-9);
    assert_eq!(bucket_of(0), 0);
    assert_eq!(bucket_of(10), 10);
    assert_eq!(bucket_of(999), 29);
    assert!((bucket_edge_ms(30) - 1.0).abs() < 1e-9);
}

#[test]
fn active_clients_end_at_the_number_registered() {
    let (rec, s) = run();
    let line = active_clients_line(&rec.timeline).expect("the gauge was sampled");
    let last = line.points.last().and_then(|p| p.1).expect("a last value");
    assert_eq!(last, rec.op(Op::Register).ok as f64);
    assert_eq!(
        line.points[0],
        (0.0, Some(0.0)),
        "starts at 0 at the run's start"
    );
    assert!(
        line.points.windows(2).all(|w| w[0].1 <= w[1].1),
        "only registrations"
    );
    let page = render(&rec, &s).expect("renders");
    assert!(page.contains("<h2>Active clients over time</h2>"));
    assert!(page.contains("<h2>Latency histogram</h2>"));
    // Each open-model operation's send lateness has a row of the summary table.
    let lateness_rows = page.matches("<td class=\"l\">lateness</td>").count();
    assert_eq!(
        lateness_rows,
        s.ops.values().filter(|o| o.lateness.is_some()).count()
    );
    assert!(lateness_rows > 0);
    // Not drawn twice: the gauge has left the Gauges section.
    assert!(!page.contains("clients registered</b>"), "no gauge chart");
    assert!(active_clients_line(&[]).is_none(), "no gauge, no chart");
}

#[test]
fn escapes_markup() {
    assert_eq!(
        escape("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}

#[test]
fn spectrum_runs_from_zero_to_the_axis_end_and_ends_at_the_max() {
    let mut h = new_histogram();
    for v in 1..=1000 {
        h.record(v).expect("in range");
    }
    let x_max = spectrum_x_max(h.len());
    assert_eq!(x_max, 1000.0);
    let pts = spectrum_points(&h, x_max);
    assert!((pts[0].0 - 1.0).abs() < 0.01, "{:?}", pts[0]);
    let last = pts.last().expect("points");
    assert_eq!(last.0, x_max);
    assert_eq!(last.1, Some(1.0));
    assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0), "x increases");
}
