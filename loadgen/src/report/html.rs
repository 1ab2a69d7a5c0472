//! `report.html`: one self-contained page (inline CSS and SVG, no script, no external
//! font) with the run's summary and its charts.
//!
//! Sections: the run (scenario, machine, revision), the summary table, errors by code,
//! throughput over time, active clients over time, latency over time per operation, the
//! percentile spectrum and the latency histogram per operation (corrected against
//! uncorrected), replication lag (spectrum and over time), gauges, markers and parameters. Fault markers are drawn on every time chart. Charts
//! are drawn by `chart.rs`; this file chooses their content and lays out the page.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::chart::{
    Band, Line, Scale, TimeChart, histogram_chart, palette, spectrum_chart, time_chart,
};
use super::faults::FaultSummary;
use super::summary::{Model, Summary};
use crate::error::ReportError;
use crate::measure::latency::{LatencyStats, Quantiles, human_rate, human_us};
use crate::measure::op::LatencyKind;
use crate::measure::recording::Recording;
use crate::measure::timeline::TimelineRow;

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
       margin: 24px auto; max-width: 1240px; color: #222; padding: 0 12px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 4px; }
p.meta { color: #555; margin: 2px 0; font-size: 14px; }
p.note { color: #555; font-size: 13px; max-width: 900px; }
div.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 3px 6px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; }
td.l, th.l { text-align: left; }
tr.sub td { color: #777; }
.bad { color: #b00; font-weight: 600; }
figure { margin: 8px 0 20px; }
figcaption { font-size: 13px; color: #333; margin: 2px 0 0 76px; }
figcaption span { margin-right: 18px; white-space: nowrap; }
figcaption svg { vertical-align: middle; }
svg { max-width: 100%; height: auto; }
";

/// Midpoint of a row, where its values are plotted.
fn mid(r: &TimelineRow) -> f64 {
    (r.start_s + r.end_s) / 2.0
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `(1/(1-p), latency ms)` points of `h`'s percentile spectrum, and the right end of the
/// axis.
fn spectrum_points(h: &Histogram<u64>, x_max: f64) -> Vec<(f64, Option<f64>)> {
    let mut points = Vec::new();
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            x_max
        } else {
            (1.0 / (1.0 - q)).min(x_max)
        };
        points.push((x, Some(ms(v.value_iterated_to()))));
        if x >= x_max {
            break;
        }
    }
    // The maximum is reached at the right edge.
    if let Some(&(x, _)) = points.last()
        && x < x_max
    {
        points.push((x_max, Some(ms(h.max()))));
    }
    points
}

/// The right end of a spectrum axis for `count` samples: beyond 1/count the spectrum is
/// flat, so a power of ten just above it, between 100 and 10^7.
fn spectrum_x_max(count: u64) -> f64 {
    let decades = (count.max(1) as f64).log10().ceil().clamp(2.0, 7.0);
    10f64.powf(decades)
}

/// Latency buckets per decade of the histogram chart.
const BUCKETS_PER_DECADE: f64 = 10.0;

/// The histogram bucket of a latency of `us` microseconds: bucket `i` holds latencies from
/// `10^(i/10)` µs up to the next edge (0 µs counts in bucket 0).
fn bucket_of(us: u64) -> i32 {
    ((us.max(1) as f64).log10() * BUCKETS_PER_DECADE).floor() as i32
}

/// The lower edge of bucket `i`, in ms.
fn bucket_edge_ms(i: i32) -> f64 {
    10f64.powf(f64::from(i) / BUCKETS_PER_DECADE) / 1000.0
}

/// The count per bucket of `h` (each recorded value at its highest equivalent value, as
/// HdrHistogram reports it).
fn bucket_counts(h: &Histogram<u64>) -> std::collections::BTreeMap<i32, u64> {
    let mut out = std::collections::BTreeMap::new();
    for v in h.iter_recorded() {
        *out.entry(bucket_of(v.value_iterated_to())).or_insert(0) += v.count_at_value();
    }
    out
}

/// A step outline of `counts` over buckets `lo..=hi`: flat across each bucket, closed to
/// 0 at both ends.
fn histogram_points(
    counts: &std::collections::BTreeMap<i32, u64>,
    lo: i32,
    hi: i32,
) -> Vec<(f64, Option<f64>)> {
    let mut points = vec![(bucket_edge_ms(lo), Some(0.0))];
    for i in lo..=hi {
        let c = counts.get(&i).copied().unwrap_or(0) as f64;
        points.push((bucket_edge_ms(i), Some(c)));
        points.push((bucket_edge_ms(i + 1), Some(c)));
    }
    points.push((bucket_edge_ms(hi + 1), Some(0.0)));
    points
}

/// The latency histogram of one operation: corrected and, in an open model, uncorrected,
/// over the same buckets. Empty when nothing succeeded.
fn histogram_lines(o: &crate::measure::recording::OpTotals, open: bool) -> Vec<Line> {
    let mut series = Vec::new();
    if open {
        series.push(("corrected", LatencyKind::Corrected, 0, false));
        series.push(("uncorrected (dashed)", LatencyKind::Uncorrected, 1, true));
    } else {
        series.push(("service time", LatencyKind::Uncorrected, 0, false));
    }
    let counts: Vec<_> = series
        .iter()
        .map(|(_, kind, _, _)| bucket_counts(o.histogram(*kind)))
        .collect();
    let lo = counts.iter().filter_map(|c| c.keys().next()).min().copied();
    let hi = counts
        .iter()
        .filter_map(|c| c.keys().next_back())
        .max()
        .copied();
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Vec::new();
    };
    series
        .iter()
        .zip(&counts)
        .map(|((label, _, color, dashed), c)| {
            let line = Line::new(*label, palette(*color), histogram_points(c, lo, hi));
            if *dashed { line.dashed() } else { line }
        })
        .collect()
}

/// The x range of histogram lines: whole decades around their first and last point, so
/// that the log axis is labelled by decade (a range inside one decade crowds its labels).
fn histogram_range(lines: &[Line]) -> std::ops::Range<f64> {
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|(x, _)| *x));
    let lo = xs.clone().fold(f64::INFINITY, f64::min).max(1e-4);
    let hi = xs.fold(0.0, f64::max).max(lo);
    // The nudges keep an exact power of ten (0.001 ms, the edge of bucket 0) its own decade.
    let lo = 10f64.powf((lo.log10() + 1e-9).floor());
    let hi = 10f64.powf((hi.log10() - 1e-9).ceil());
    lo..hi.max(lo * 10.0)
}

/// The name of the gauge counting active clients (registered, not yet deregistered).
const ACTIVE_CLIENTS: &str = "clients_registered";

/// Active clients at the end of each interval, if the driver sampled them, from 0 at the
/// run's start (the gauge counts the clients this run registered).
fn active_clients_line(rows: &[TimelineRow]) -> Option<Line> {
    let start = rows.first().map(|r| (r.start_s, Some(0.0)));
    let points: Vec<(f64, Option<f64>)> = start
        .into_iter()
        .chain(
            rows.iter()
                .map(|r| (r.end_s, r.gauges.get(ACTIVE_CLIENTS).copied())),
        )
        .collect();
    if points.iter().all(|(_, v)| v.is_none_or(|v| v == 0.0)) {
        return None;
    }
    Some(Line::new("active clients", palette(2), points))
}

/// A time chart with its legend.
fn time_figure(out: &mut String, chart: &TimeChart<'_>) -> Result<(), ReportError> {
    let svg = time_chart(chart)?;
    figure(
        out,
        &svg,
        chart.lines,
        !chart.markers.is_empty(),
        !chart.bands.is_empty(),
    );
    Ok(())
}

/// The legend of the fault bands.
const BAND_LEGEND: &str = "<span><svg width=\"30\" height=\"10\" \
    aria-hidden=\"true\"><rect width=\"30\" height=\"10\" fill=\"#e67814\" \
    fill-opacity=\"0.35\"/></svg> fault in force</span><span><svg width=\"30\" height=\"10\" \
    aria-hidden=\"true\"><rect width=\"30\" height=\"10\" fill=\"#e67814\" \
    fill-opacity=\"0.12\"/></svg> until the nodes recovered</span>";

/// A percentile spectrum with its legend.
fn spectrum_figure(
    out: &mut String,
    title: &str,
    y_desc: &str,
    x_max: f64,
    lines: &[Line],
) -> Result<(), ReportError> {
    let svg = spectrum_chart(title, y_desc, x_max, lines)?;
    figure(out, &svg, lines, false, false);
    Ok(())
}

/// A chart with its legend underneath (only for several lines, or a marker).
fn figure(out: &mut String, svg: &str, lines: &[Line], markers: bool, bands: bool) {
    out.push_str("<figure>");
    out.push_str(svg);
    let labelled: Vec<&Line> = lines.iter().filter(|l| !l.label.is_empty()).collect();
    if labelled.len() > 1 || markers || bands {
        out.push_str("<figcaption>");
        for l in labelled {
            let _ = write!(out, "<span>{} {}</span>", l.swatch(), escape(&l.label));
        }
        if markers {
            out.push_str(
                "<span><svg width=\"30\" height=\"10\" aria-hidden=\"true\"><line x1=\"0\" \
                 y1=\"5\" x2=\"30\" y2=\"5\" stroke=\"#c81e1e\" stroke-width=\"2\" \
                 stroke-dasharray=\"5 3\"/></svg> marker</span>",
            );
        }
        if bands {
            out.push_str(BAND_LEGEND);
        }
        out.push_str("</figcaption>");
    }
    out.push_str("</figure>\n");
}

fn stat_cells(s: Option<&LatencyStats>) -> String {
    match s {
        Some(s) => s
            .ladder()
            .iter()
            .map(|(_, v)| format!("<td>{}</td>", human_us(*v)))
            .collect(),
        None => "<td>-</td>".repeat(6),
    }
}

fn quantile_line(
    rows: &[TimelineRow],
    label: &str,
    color: usize,
    pick: impl Fn(&TimelineRow) -> Option<Quantiles>,
    value: impl Fn(Quantiles) -> u64,
) -> Line {
    Line::new(
        label,
        palette(color),
        rows.iter()
            .map(|r| (mid(r), pick(r).map(|q| ms(value(q)))))
            .collect(),
    )
}

/// The whole page.
pub(crate) fn render(rec: &Recording, s: &Summary) -> Result<String, ReportError> {
    let mut h = String::new();
    let title = if s.faults.is_empty() {
        format!("loadgen: {}", s.scenario)
    } else {
        format!("loadgen: {} with faults (--chaos)", s.scenario)
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let m = &s.machine;
    let _ = writeln!(
        h,
        "<p class=\"meta\">started {} &middot; measured {:.1} s &middot; interval {} s &middot; \
         late threshold {} &middot; git <code>{}</code></p>\n\
         <p class=\"meta\">{} cores &middot; {} MiB &middot; {} &middot; {} &middot; {}</p>",
        escape(&s.started_at),
        s.duration_s,
        s.interval_s,
        human_us(s.late_threshold_us),
        escape(&s.git_revision),
        m.cores,
        m.memory_mib,
        escape(&m.cpu_model),
        escape(&m.os),
        escape(&m.hostname),
    );
    if !s.shards.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"meta\">merged from {} shard runs: {}</p>",
            s.shards.len(),
            escape(&s.shards.join(", "))
        );
    }

    // Summary table.
    h.push_str(
        "<h2>Summary</h2>\n<div class=\"wide\"><table><tr><th class=\"l\">op</th><th class=\"l\">latency</th>\
        <th>target</th><th>achieved</th><th>ok of scheduled</th><th>ok</th><th>errors</th><th>late</th>\
        <th>dropped</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th>\
        <th>max</th></tr>\n",
    );
    for (op, o) in &s.ops {
        let target = o.target_per_s.map_or("-".to_owned(), human_rate);
        let bad = |b: bool| if b { " class=\"bad\"" } else { "" };
        // Behind schedule is judged by what was late or dropped, not by the rate.
        let achieved = format!(
            "<td{}>{}</td><td{}>{:.1}%</td>",
            bad(o.behind()),
            human_rate(o.throughput_per_s),
            bad(o.ok < o.scheduled),
            o.ok_percent()
        );
        let sub = |kind: &str, stats: Option<&LatencyStats>| {
            format!(
                "<tr class=\"sub\"><td></td><td class=\"l\">{kind}</td><td></td><td></td>\
                 <td></td><td></td><td></td><td></td><td></td>{}</tr>\n",
                stat_cells(stats)
            )
        };
        let (first, first_stats, second) = match o.model {
            Model::Open => (
                "corrected",
                o.corrected.as_ref(),
                sub("uncorrected", o.uncorrected.as_ref())
                    + &o.lateness
                        .as_ref()
                        .map_or_else(String::new, |l| sub("lateness", Some(l))),
            ),
            Model::Closed => (
                "service time (closed model)",
                o.uncorrected.as_ref(),
                String::new(),
            ),
        };
        let _ = write!(
            h,
            "<tr><td class=\"l\">{op}</td><td class=\"l\">{first}</td><td>{target}</td>\
             {achieved}<td>{}</td><td{}>{}</td><td{}>{}</td><td{}>{}</td>{}</tr>\n{second}",
            o.ok,
            bad(o.errors > 0),
            o.errors,
            bad(o.late > 0),
            o.late,
            bad(o.dropped > 0),
            o.dropped,
            stat_cells(first_stats),
        );
    }
    let c = &s.replication_lag;
    if c.count > 0 || c.unreplicated > 0 || c.visible_before_ack > 0 {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">replication lag</td><td class=\"l\">ack&rarr;visible</td><td></td>\
             <td></td><td></td><td>{}</td><td{}>{} unreplicated</td><td></td><td></td>{}</tr>",
            c.count,
            if c.unreplicated > 0 {
                " class=\"bad\""
            } else {
                ""
            },
            c.unreplicated,
            stat_cells(c.latency.as_ref()),
        );
    }
    h.push_str(
        "</table></div>\n<p class=\"note\"><b>achieved</b> is successful requests per second \
        over the operation's active time (its first intended send to its last response, less \
        idle gaps of a second or more with nothing intended, in flight or targeted), \
        <b>target</b> the schedule's rate while it was set; an achieved rate is red when the \
        schedule fell behind (requests late or dropped). <b>corrected</b> latency is measured \
        from the time the open-model schedule intended to send the request, so waiting behind a \
        stalled server counts (this corrects coordinated omission); <b>uncorrected</b> is the \
        service time from the actual send; <b>lateness</b> is the time from the intended \
        instant to the send, the load generator's own part of the corrected latency (its \
        timer and scheduling, and any wait for room in its window to a node). A closed-model \
        operation (no <code>--rate</code>: a \
        request goes when a client is free) has no intended time, so only its service time is \
        shown. Latency covers successful requests only; failures are counted by code. \
        A send is <b>late</b> when it started more than the late threshold after its intended \
        time; <b>dropped</b> sends were never made.</p>\n",
    );
    if let Some(line) = s.replication_lag.before_ack_line() {
        let _ = writeln!(h, "<p class=\"note\">{}.</p>", escape(&line));
    }

    if !s.errors_by_code.is_empty() {
        h.push_str("<h2>Errors by code</h2>\n<table><tr><th class=\"l\">op</th><th class=\"l\">code</th><th>count</th></tr>\n");
        for (op, o) in &s.ops {
            for (code, n) in &o.errors_by_code {
                let _ = writeln!(
                    h,
                    "<tr><td class=\"l\">{op}</td><td class=\"l\">{}</td><td>{n}</td></tr>",
                    escape(code)
                );
            }
        }
        h.push_str("</table>\n");
    }

    let rows = &rec.timeline;
    let end_s = rec.duration.as_secs_f64();
    let bands: Vec<Band> = s
        .faults
        .iter()
        .filter(|f| f.failed.is_none())
        .map(|f| Band {
            start_s: f.start_s,
            end_s: f.end_s,
            settled_s: f.window_end_s,
            label: f.name(),
        })
        .collect();
    let used = rec.used_ops();

    // Throughput over time.
    h.push_str("<h2>Throughput over time</h2>\n");
    if rows.is_empty() || used.is_empty() {
        h.push_str("<p class=\"note\">No requests were recorded.</p>\n");
    } else {
        let mut lines = Vec::new();
        for op in &used {
            let i = op.index();
            lines.push(Line::new(
                format!("{op} achieved"),
                palette(i),
                rows.iter()
                    .map(|r| (mid(r), Some(r.op(*op).throughput_per_s)))
                    .collect(),
            ));
            if rows.iter().any(|r| r.op(*op).target_per_s > 0.0) {
                lines.push(
                    Line::new(
                        format!("{op} target (dashed)"),
                        palette(i),
                        rows.iter()
                            .map(|r| (mid(r), Some(r.op(*op).target_per_s)))
                            .collect(),
                    )
                    .dashed()
                    .thin(),
                );
            }
        }
        time_figure(
            &mut h,
            &TimeChart {
                title: "Successful requests per second",
                y_desc: "requests/s",
                scale: Scale::Linear,
                end_s,
                lines: &lines,
                markers: &rec.markers,
                bands: &bands,
            },
        )?;
    }

    // Failures over time, on the same axis: errors, late and dropped per second, every
    // operation together (timeline.csv has them per operation).
    if !rows.is_empty() && !used.is_empty() {
        let per_s = |r: &TimelineRow, count: fn(&crate::measure::timeline::OpRow) -> u64| {
            let d = r.duration_s();
            let n: u64 = used.iter().map(|op| count(r.op(*op))).sum();
            (mid(r), Some(if d > 0.0 { n as f64 / d } else { 0.0 }))
        };
        type Count = fn(&crate::measure::timeline::OpRow) -> u64;
        let kinds: [(&str, Count, usize); 3] = [
            ("errors", |o| o.errors, 3),
            ("late", |o| o.late, 1),
            ("dropped", |o| o.dropped, 4),
        ];
        let mut lines = Vec::new();
        for (name, count, color) in kinds {
            if rows
                .iter()
                .any(|r| used.iter().any(|op| count(r.op(*op)) > 0))
            {
                lines.push(Line::new(
                    format!("{name} per second"),
                    palette(color),
                    rows.iter().map(|r| per_s(r, count)).collect(),
                ));
            }
        }
        if lines.is_empty() {
            h.push_str("<p class=\"note\">No request failed, was sent late or was dropped.</p>\n");
        } else {
            time_figure(
                &mut h,
                &TimeChart {
                    title: "Failed, late and dropped requests per second",
                    y_desc: "requests/s",
                    scale: Scale::Linear,
                    end_s,
                    lines: &lines,
                    markers: &rec.markers,
                    bands: &bands,
                },
            )?;
        }
    }

    // Active clients over time.
    if let Some(line) = active_clients_line(rows) {
        h.push_str(
            "<h2>Active clients over time</h2>\n<p class=\"note\">Clients whose registration \
            was acknowledged and not since deregistered, at the end of each interval \
            (<code>gauge_clients_registered</code> in timeline.csv).</p>\n",
        );
        let lines = [line];
        time_figure(
            &mut h,
            &TimeChart {
                title: "Active clients",
                y_desc: "clients",
                scale: Scale::Linear,
                end_s,
                lines: &lines,
                markers: &rec.markers,
                bands: &bands,
            },
        )?;
    }

    // Latency over time.
    h.push_str(
        "<h2>Latency over time</h2>\n<p class=\"note\">Per interval (log scale when the values \
        span more than two decades). Solid lines are corrected latency, the dashed line is the \
        uncorrected p99; gaps are intervals in which nothing completed.</p>\n",
    );
    for op in &used {
        if rec.op(*op).corrected.is_empty() {
            continue;
        }
        let o = *op;
        let lines = vec![
            quantile_line(
                rows,
                "p50 corrected",
                0,
                |r| r.op(o).corrected,
                |q| q.p50_us,
            ),
            quantile_line(
                rows,
                "p99 corrected",
                1,
                |r| r.op(o).corrected,
                |q| q.p99_us,
            ),
            quantile_line(
                rows,
                "max corrected",
                3,
                |r| r.op(o).corrected,
                |q| q.max_us,
            )
            .thin(),
            quantile_line(
                rows,
                "p99 uncorrected (dashed)",
                7,
                |r| r.op(o).uncorrected,
                |q| q.p99_us,
            )
            .dashed(),
        ];
        let title = format!("{op}: latency per interval");
        time_figure(
            &mut h,
            &TimeChart {
                title: &title,
                y_desc: "latency (ms)",
                scale: Scale::Auto,
                end_s,
                lines: &lines,
                markers: &rec.markers,
                bands: &bands,
            },
        )?;
    }

    // Percentile spectrum.
    h.push_str(
        "<h2>Percentile spectrum</h2>\n<p class=\"note\">Whole run. The x axis is \
        1/(1&minus;p) on a log scale, as HdrHistogram plots it: each decade is one more nine. \
        The gap between the lines is the waiting that uncorrected measurement hides.</p>\n",
    );
    for op in &used {
        let o = rec.op(*op);
        if o.corrected.is_empty() {
            continue;
        }
        let x_max = spectrum_x_max(o.corrected.len());
        let lines = vec![
            Line::new(
                "corrected",
                palette(0),
                spectrum_points(o.histogram(LatencyKind::Corrected), x_max),
            ),
            Line::new(
                "uncorrected (dashed)",
                palette(1),
                spectrum_points(o.histogram(LatencyKind::Uncorrected), x_max),
            )
            .dashed(),
        ];
        let title = format!(
            "{op}: latency by percentile ({} samples)",
            o.corrected.len()
        );
        spectrum_figure(&mut h, &title, "latency (ms)", x_max, &lines)?;
    }

    // Latency histogram.
    h.push_str(
        "<h2>Latency histogram</h2>\n<p class=\"note\">Whole run: successful requests per \
        latency bucket, ten buckets per decade on a log axis. In an open model the corrected \
        histogram (from the intended send) is drawn against the uncorrected one (from the \
        actual send); a closed-model operation shows its service time only.</p>\n",
    );
    for (op, o_s) in &s.ops {
        let o = rec.op(*op);
        let lines = histogram_lines(o, o_s.model == Model::Open);
        if lines.is_empty() {
            continue;
        }
        let title = match o_s.model {
            Model::Open => format!("{op}: requests per latency bucket ({} samples)", o.ok),
            Model::Closed => format!(
                "{op}: requests per service time bucket ({} samples, closed model)",
                o.ok
            ),
        };
        let svg = histogram_chart(&title, histogram_range(&lines), &lines)?;
        figure(&mut h, &svg, &lines, false, false);
    }

    // Convergence.
    h.push_str("<h2>Replication lag</h2>\n");
    if rec.replication_lag.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"note\">No replication lag was measured ({} unreplicated).</p>",
            rec.unreplicated
        );
    } else {
        h.push_str(
            "<p class=\"note\">Time from the owner's acknowledgement of a probe \
            registration to its visibility on each other node.</p>\n",
        );
        let x_max = spectrum_x_max(rec.replication_lag.len());
        let title = format!(
            "replication lag by percentile ({} samples, {} unreplicated)",
            rec.replication_lag.len(),
            rec.unreplicated
        );
        let lines = [Line::new(
            "ack to visible",
            palette(2),
            spectrum_points(&rec.replication_lag, x_max),
        )];
        spectrum_figure(&mut h, &title, "replication lag (ms)", x_max, &lines)?;
        // A few samples an interval (one probe a second, one sample per other node): a
        // p50 line joining them plunges and soars with each probe. Draw them as dots.
        let busy = rows
            .iter()
            .filter(|r| r.replication_lag.count > 0)
            .count()
            .max(1);
        let per_interval = rec.replication_lag.len() as f64 / busy as f64;
        let lines = if per_interval < 10.0 {
            let _ = writeln!(
                h,
                "<p class=\"note\">About {per_interval:.0} samples an interval: each interval's \
                 lowest and highest sample are drawn as dots.</p>"
            );
            vec![
                quantile_line(
                    rows,
                    "lowest",
                    0,
                    |r| r.replication_lag.latency,
                    |q| q.p50_us,
                )
                .dots(),
                quantile_line(
                    rows,
                    "highest",
                    3,
                    |r| r.replication_lag.latency,
                    |q| q.max_us,
                )
                .dots(),
            ]
        } else {
            vec![
                quantile_line(rows, "p50", 0, |r| r.replication_lag.latency, |q| q.p50_us),
                quantile_line(rows, "p99", 1, |r| r.replication_lag.latency, |q| q.p99_us),
                quantile_line(rows, "max", 3, |r| r.replication_lag.latency, |q| q.max_us).thin(),
            ]
        };
        time_figure(
            &mut h,
            &TimeChart {
                title: "replication lag per interval",
                y_desc: "replication lag (ms)",
                scale: Scale::Auto,
                end_s,
                lines: &lines,
                markers: &rec.markers,
                bands: &bands,
            },
        )?;
    }

    // Gauges: what each one is; running totals drawn as rates; charts of nothing but
    // zeros left out (named in one line).
    // Active clients have their own section.
    let gauges: Vec<String> = rec
        .gauge_names()
        .into_iter()
        .filter(|n| n != ACTIVE_CLIENTS)
        .collect();
    if !gauges.is_empty() {
        h.push_str("<h2>Gauges</h2>\n");
        let mut empty = Vec::new();
        let mut i = 0;
        for name in &gauges {
            let (title, explain, counter) = gauge_meaning(name);
            let levels: Vec<(f64, Option<f64>)> = rows
                .iter()
                .map(|r| (r.end_s, r.gauges.get(name).copied()))
                .collect();
            let points: Vec<(f64, Option<f64>)> = if counter {
                let mut last = 0.0;
                rows.iter()
                    .map(|r| {
                        let v = r.gauges.get(name).copied();
                        let rate = v.map(|v| {
                            let d = r.duration_s();
                            let rate = if d > 0.0 {
                                (v - last).max(0.0) / d
                            } else {
                                0.0
                            };
                            last = v;
                            rate
                        });
                        (mid(r), rate)
                    })
                    .collect()
            } else {
                levels
            };
            if points.iter().all(|(_, v)| v.is_none_or(|v| v == 0.0)) {
                empty.push(title);
                continue;
            }
            let _ = writeln!(
                h,
                "<p class=\"note\"><b>{}</b>: {}</p>",
                escape(&title),
                explain
            );
            let lines = [Line::new(title.as_str(), palette(i), points)];
            i += 1;
            time_figure(
                &mut h,
                &TimeChart {
                    title: &title,
                    y_desc: if counter { "per second" } else { "count" },
                    scale: Scale::Linear,
                    end_s,
                    lines: &lines,
                    markers: &rec.markers,
                    bands: &bands,
                },
            )?;
        }
        if !empty.is_empty() {
            let _ = writeln!(
                h,
                "<p class=\"note\">Zero throughout (not drawn): {}.</p>",
                escape(&empty.join(", "))
            );
        }
    }

    if !s.faults.is_empty() {
        faults_table(&mut h, &s.faults);
    }

    if !s.markers.is_empty() {
        h.push_str("<h2>Markers</h2>\n<table><tr><th>time</th><th class=\"l\">event</th></tr>\n");
        for mk in &s.markers {
            let _ = writeln!(
                h,
                "<tr><td>{:.3} s</td><td class=\"l\">{}</td></tr>",
                mk.time_s,
                escape(&mk.label)
            );
        }
        h.push_str("</table>\n");
    }

    h.push_str("<h2>Parameters</h2>\n<table><tr><th class=\"l\">parameter</th><th class=\"l\">value</th></tr>\n");
    for (k, v) in &s.parameters {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            escape(k),
            escape(v)
        );
    }
    h.push_str(
        "</table>\n<p class=\"note\">Files beside this page: summary.json, \
        percentiles.csv, timeline.csv, latency.hlog, faults.csv after a --chaos run (see REPORTS.md).</p>\n</body></html>\n",
    );
    Ok(h)
}

/// The faults of a `--chaos` run, one row each.
fn faults_table(h: &mut String, faults: &[FaultSummary]) {
    h.push_str(
        "<h2>Faults</h2>\n<p class=\"note\">Times since the start of the measured run. Errors \
         and failovers: from the fault's start to the later of its end and the replication_lag. \
         Recovered: from the end (a kill: from the kill) until every running node holds \
         every live client and no deleted one (settled for at least 3 s). Lost and returned: live clients missing from, \
         deleted clients present on, some running node after that wait (0 once recovered). \
         Peaks: the most seen in one check during the wait (replication lag, and drops that \
         clients repaired by re-registering).</p>\n\
         <table class=\"faults\"><tr><th class=\"l\">fault</th><th>start</th><th>end</th>\
         <th>errors</th><th class=\"l\">by code</th><th>failovers</th><th>recovered</th>\
         <th>lost</th><th>returned</th><th>peak missing</th>\
         <th>peak returned</th></tr>\n",
    );
    for f in faults {
        let recovered = match (&f.failed, f.recovery_ms) {
            (Some(why), _) => format!("not applied: {}", escape(why)),
            (None, Some(ms)) if f.recovered => format!("{ms:.0} ms"),
            (None, _) => "<b>NO</b>".to_owned(),
        };
        let codes: Vec<String> = f
            .errors_by_code
            .iter()
            .map(|(c, n)| format!("{}={n}", escape(c)))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{:.2} s</td><td>{:.2} s</td><td>{}</td>\
             <td class=\"l\">{}</td><td>{}</td><td>{recovered}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            escape(&f.name()),
            f.start_s,
            f.end_s,
            f.errors,
            codes.join(" "),
            f.failovers,
            if f.lost > 0 {
                format!("<b>{}</b>", f.lost)
            } else {
                "0".to_owned()
            },
            f.returned,
            f.peak_missing,
            f.peak_returned,
        );
    }
    h.push_str("</table>\n");
}

/// A gauge's chart title, what it means, and whether it is a running total (drawn as a
/// rate per second).
fn gauge_meaning(name: &str) -> (String, &'static str, bool) {
    match name {
        "failovers" => (
            "failovers per second".to_owned(),
            "requests retried on the next node after a failure (unreachable, timeout, 503/421), \
             as the Nacos client does",
            true,
        ),
        "window_cuts" => (
            "window cuts per second".to_owned(),
            "times a sender lane halved its in-flight window to a node after a timeout, an \
             overload error or a slow response (AIMD congestion control)",
            true,
        ),
        "markers_pending" => (
            "markers pending".to_owned(),
            "replication probes (and push changes) not yet seen on every node, at the end of \
             each interval",
            false,
        ),
        other => (
            other.replace('_', " "),
            "a value the driver sampled at the end of each interval",
            false,
        ),
    }
}

#[cfg(test)]
mod tests;
