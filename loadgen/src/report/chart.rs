//! The SVG charts of `report.html`, drawn with plotters' SVG backend.
//!
//! Two shapes: *time charts* (a value per timeline interval against seconds since the
//! start, with the run's markers as labelled vertical lines) and *percentile spectra*
//! (latency against `1/(1-p)` on a log axis labelled in percentiles, as HdrHistogram's
//! plotter draws them, so the tail gets as much room as the median). Text is emitted as
//! SVG `<text>` with a generic `sans-serif` family, so no font is embedded or needed.
//! What to plot is decided by `html.rs`; this file only draws.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::ReportError;
use crate::measure::timeline::Marker;

/// Chart width in pixels.
const WIDTH: u32 = 960;
/// Height of a time chart.
const TIME_HEIGHT: u32 = 340;
/// Height of a spectrum chart.
const SPECTRUM_HEIGHT: u32 = 380;
/// Height of a latency histogram.
const HISTOGRAM_HEIGHT: u32 = 320;
/// A time chart with values at no more than this many times (all lines together) is
/// drawn small: a handful of points across a full-width chart is mostly empty axis.
pub(crate) const FEW_POINTS: usize = 4;
/// Size of a small time chart.
const SMALL: (u32, u32) = (480, 240);
/// The font family of every text.
const FONT: &str = "sans-serif";
/// Colour of markers.
const MARKER_COLOR: RGBColor = RGBColor(200, 30, 30);
/// Colour of fault bands (drawn translucent).
pub(crate) const BAND_COLOR: RGBColor = RGBColor(230, 120, 20);

/// A fault drawn on a time chart: shaded while in force, lighter until the nodes
/// converged again.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Band {
    /// Start, seconds on the time axis.
    pub(crate) start_s: f64,
    /// End of the effect.
    pub(crate) end_s: f64,
    /// End of the window (replication_lag, or its timeout).
    pub(crate) settled_s: f64,
    /// A short label, drawn at the bottom of the band.
    pub(crate) label: String,
}

/// A colour of the report's palette (Tableau 10), by index.
pub(crate) fn palette(i: usize) -> RGBColor {
    const P: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
        RGBColor(127, 127, 127),
    ];
    P[i % P.len()]
}

/// One series: a line broken wherever a value is missing.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    pub(crate) label: String,
    pub(crate) color: RGBColor,
    pub(crate) dashed: bool,
    pub(crate) width: u32,
    /// Drawn as dots, not joined: for sparse samples that a line would misrepresent.
    pub(crate) dots: bool,
    pub(crate) points: Vec<(f64, Option<f64>)>,
}

impl Line {
    pub(crate) fn new(
        label: impl Into<String>,
        color: RGBColor,
        points: Vec<(f64, Option<f64>)>,
    ) -> Self {
        Self {
            label: label.into(),
            color,
            dashed: false,
            width: 2,
            dots: false,
            points,
        }
    }

    pub(crate) fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }

    pub(crate) fn dots(mut self) -> Self {
        self.dots = true;
        self
    }

    pub(crate) fn thin(mut self) -> Self {
        self.width = 1;
        self
    }

    /// A small inline SVG of the line's stroke, for the legend under a chart.
    pub(crate) fn swatch(&self) -> String {
        let RGBColor(r, g, b) = self.color;
        if self.dots {
            return format!(
                "<svg width=\"30\" height=\"10\" aria-hidden=\"true\"><circle cx=\"15\" cy=\"5\" \
                 r=\"3\" fill=\"#{r:02x}{g:02x}{b:02x}\"/></svg>"
            );
        }
        let dash = if self.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        format!(
            "<svg width=\"30\" height=\"10\" aria-hidden=\"true\"><line x1=\"0\" y1=\"5\" \
             x2=\"30\" y2=\"5\" stroke=\"#{r:02x}{g:02x}{b:02x}\" stroke-width=\"{}\"{dash}/></svg>",
            self.width + 1
        )
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().filter_map(|(_, y)| *y)
    }

    /// Runs of consecutive present points.
    fn segments(&self) -> Vec<Vec<(f64, f64)>> {
        let mut out = vec![Vec::new()];
        for (x, y) in &self.points {
            match y {
                Some(y) if y.is_finite() => out.last_mut().expect("never empty").push((*x, *y)),
                _ => out.push(Vec::new()),
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }
}

/// The y axis of a chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scale {
    /// From 0.
    Linear,
    /// Logarithmic when the values span more than [`LOG_SPAN`] (a log axis over less than
    /// two decades has too few labels to read), linear from 0 otherwise.
    Auto,
}

/// The ratio of largest to smallest value above which [`Scale::Auto`] is logarithmic.
const LOG_SPAN: f64 = 50.0;

/// Whether values between `lo` and `hi` are drawn on a log axis under `scale`.
fn use_log(scale: Scale, lo: f64, hi: f64) -> bool {
    scale == Scale::Auto && hi > 0.0 && hi / lo.max(1e-3) > LOG_SPAN
}

/// The y range of a logarithmic axis: whole decades around the values, widened a hair so
/// that the end decades keep their labels.
fn log_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let lo = 10f64.powf(lo.max(1e-3).log10().floor());
    let hi = 10f64.powf((hi.max(lo) * 1.2).log10().ceil());
    lo * 0.999..hi * 1.001
}

/// A time chart's content.
#[derive(Debug)]
pub(crate) struct TimeChart<'a> {
    pub(crate) title: &'a str,
    pub(crate) y_desc: &'a str,
    pub(crate) scale: Scale,
    pub(crate) end_s: f64,
    pub(crate) lines: &'a [Line],
    pub(crate) markers: &'a [Marker],
    /// Fault windows, shaded.
    pub(crate) bands: &'a [Band],
}

fn chart_err(title: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Chart {
        chart: title.to_owned(),
        message,
    }
}

/// A number for an axis label: no trailing zeros, thousands as `k`.
pub(crate) fn axis_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6, 2))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3, 1))
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        trim(v, 2)
    } else {
        trim(v, 4)
    }
}

fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// `p` for an `x = 1/(1-p)` value: 1 → `0%`, 10 → `90%`, 1000 → `99.9%`.
pub(crate) fn spectrum_label(x: f64) -> String {
    if x < 1.000_001 {
        return "0%".to_owned();
    }
    let p = 100.0 * (1.0 - 1.0 / x);
    let decimals = (x.log10().round() as i64 - 2).max(0) as usize;
    format!("{}%", trim(p, decimals))
}

/// A chart context drawing into an SVG string.
type SvgChart<'a, 'b, X, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>;

/// Draws `lines` into a chart whose axes are already configured. The legend is drawn by
/// `html.rs` under the chart (see [`Line::swatch`]), where it never hides data.
fn draw_lines<X, Y>(
    chart: &mut SvgChart<'_, '_, X, Y>,
    lines: &[Line],
    title: &str,
) -> Result<(), ReportError>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let err = chart_err(title);
    for line in lines {
        let style = line.color.stroke_width(line.width);
        for segment in line.segments() {
            if segment.len() == 1 || line.dots {
                chart
                    .draw_series(
                        segment
                            .iter()
                            .map(|p| Circle::new(*p, 3, line.color.filled())),
                    )
                    .map_err(|e| err(e.to_string()))?;
            } else if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(segment, 6, 4, style))
                    .map_err(|e| err(e.to_string()))?;
            } else {
                chart
                    .draw_series(LineSeries::new(segment, style))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// Draws the fault bands from `y_lo` to `y_hi`, labelled at the bottom.
fn draw_bands<X, Y>(
    chart: &mut SvgChart<'_, '_, X, Y>,
    bands: &[Band],
    (y_lo, y_hi): (f64, f64),
    title: &str,
) -> Result<(), ReportError>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let err = chart_err(title);
    for (i, b) in bands.iter().enumerate() {
        let start = b.start_s.max(0.0);
        let end = b.end_s.max(start);
        let settled = b.settled_s.max(end);
        chart
            .draw_series([
                Rectangle::new([(start, y_lo), (end, y_hi)], BAND_COLOR.mix(0.22).filled()),
                Rectangle::new(
                    [(end, y_lo), (settled, y_hi)],
                    BAND_COLOR.mix(0.09).filled(),
                ),
            ])
            .map_err(|e| err(e.to_string()))?;
        // Text hangs below its anchor: 14 px plus a gap keeps it off the x axis.
        let dy = -22 - 18 * (i % 2) as i32;
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((start, y_lo))
                    + Text::new(
                        b.label.clone(),
                        (3, dy),
                        (FONT, 14).into_font().color(&BAND_COLOR),
                    ),
            ))
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

/// Draws the markers as labelled vertical lines from `y_lo` to `y_hi`.
fn draw_markers<X, Y>(
    chart: &mut SvgChart<'_, '_, X, Y>,
    markers: &[Marker],
    (y_lo, y_hi): (f64, f64),
    title: &str,
) -> Result<(), ReportError>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let err = chart_err(title);
    for (i, m) in markers.iter().enumerate() {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(m.time_s, y_lo), (m.time_s, y_hi)],
                5,
                3,
                MARKER_COLOR.stroke_width(1),
            ))
            .map_err(|e| err(e.to_string()))?;
        // Stagger labels vertically so that close markers stay readable; in the right half
        // of the axis the label runs leftwards from its line, so that it is not cut off.
        let dy = 4 + 18 * (i % 3) as i32;
        let std::ops::Range {
            start: x_lo,
            end: x_hi,
        } = chart.x_range();
        let font = (FONT, 15).into_font().color(&MARKER_COLOR);
        let (text, dx, font) = if m.time_s > (x_lo + x_hi) / 2.0 {
            (
                format!("{} ▼", m.label),
                -3,
                font.pos(Pos::new(HPos::Right, VPos::Top)),
            )
        } else {
            (format!("▼ {}", m.label), 3, font)
        };
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((m.time_s, y_hi)) + Text::new(text, (dx, dy), font),
            ))
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

fn configure<'a, 'b, X, Y>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    x: X,
    y: Y,
) -> Result<SvgChart<'a, 'b, X::CoordDescType, Y::CoordDescType>, ReportError>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
{
    area.fill(&WHITE)
        .map_err(|e| chart_err(title)(e.to_string()))?;
    ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .margin_top(8)
        .margin_right(40)
        .x_label_area_size(46)
        .y_label_area_size(76)
        .build_cartesian_2d(x, y)
        .map_err(|e| chart_err(title)(e.to_string()))
}

fn mesh<X, Y>(
    chart: &mut SvgChart<'_, '_, X, Y>,
    x_labels: usize,
    x_desc: &str,
    y_desc: &str,
    x_fmt: &dyn Fn(&f64) -> String,
    title: &str,
) -> Result<(), ReportError>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(x_labels)
        .y_labels(8)
        .x_label_formatter(x_fmt)
        .y_label_formatter(&|v| axis_number(*v))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(|e| chart_err(title)(e.to_string()))
}

/// The smallest and largest present value, if any.
fn bounds<'a>(lines: impl IntoIterator<Item = &'a Line>) -> Option<(f64, f64)> {
    lines
        .into_iter()
        .flat_map(Line::values)
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// The first and last time at which some line has a value.
fn x_bounds(lines: &[Line]) -> Option<(f64, f64)> {
    lines
        .iter()
        .flat_map(|l| l.points.iter())
        .filter(|(_, y)| y.is_some_and(f64::is_finite))
        .fold(None, |acc, (x, _)| match acc {
            None => Some((*x, *x)),
            Some((lo, hi)) => Some((lo.min(*x), hi.max(*x))),
        })
}

/// Whether a time chart of `lines` is drawn small (see [`FEW_POINTS`]).
pub(crate) fn is_small(lines: &[Line]) -> bool {
    let mut times: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter())
        .filter(|(_, y)| y.is_some_and(f64::is_finite))
        .map(|(x, _)| *x)
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    // A point at the run's start (a line drawn from its known initial value, as active
    // clients from 0) closes no interval.
    let at_start = usize::from(times.first() == Some(&0.0));
    times.len() - at_start <= FEW_POINTS
}

/// Draws a time chart as an SVG document: full size, or small when it holds only a
/// handful of points.
pub(crate) fn time_chart(c: &TimeChart<'_>) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let full = 0.0..c.end_s.max(1.0);
        // A small chart spans its points and a second either side, not the whole run;
        // markers and bands outside that span are left out.
        let (size, x_labels, x_range) = match (is_small(c.lines), x_bounds(c.lines)) {
            (true, Some((lo, hi))) => (SMALL, 6, (lo - 1.0).max(0.0)..(hi + 1.0).min(full.end)),
            _ => ((WIDTH, TIME_HEIGHT), 12, full),
        };
        let markers: Vec<Marker> = c
            .markers
            .iter()
            .filter(|m| x_range.contains(&m.time_s))
            .cloned()
            .collect();
        let bands: Vec<Band> = c
            .bands
            .iter()
            .filter(|b| b.start_s < x_range.end && b.settled_s.max(b.end_s) > x_range.start)
            .map(|b| Band {
                start_s: b.start_s.max(x_range.start),
                end_s: b.end_s.min(x_range.end),
                settled_s: b.settled_s.min(x_range.end),
                label: b.label.clone(),
            })
            .collect();
        let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let x_fmt = |x: &f64| format!("{}s", axis_number(*x));
        let (lo, hi) = bounds(c.lines).unwrap_or((0.0, 1.0));
        if use_log(c.scale, lo, hi) {
            let y_desc = format!("{} (log scale)", c.y_desc);
            let range = log_range(lo, hi);
            let ends = (range.start, range.end);
            let mut chart = configure(&area, c.title, x_range, range.log_scale())?;
            mesh(
                &mut chart,
                x_labels,
                "time since start",
                &y_desc,
                &x_fmt,
                c.title,
            )?;
            draw_bands(&mut chart, &bands, ends, c.title)?;
            draw_markers(&mut chart, &markers, ends, c.title)?;
            draw_lines(&mut chart, c.lines, c.title)?;
        } else {
            let hi = if hi > 0.0 { hi * 1.15 } else { 1.0 };
            let mut chart = configure(&area, c.title, x_range, 0.0..hi)?;
            mesh(
                &mut chart,
                x_labels,
                "time since start",
                c.y_desc,
                &x_fmt,
                c.title,
            )?;
            draw_bands(&mut chart, &bands, (0.0, hi), c.title)?;
            draw_markers(&mut chart, &markers, (0.0, hi), c.title)?;
            draw_lines(&mut chart, c.lines, c.title)?;
        }
        area.present()
            .map_err(|e| chart_err(c.title)(e.to_string()))?;
    }
    Ok(svg)
}

/// Draws a percentile spectrum: `lines` hold `(1/(1-p), latency)` points; `x_max` is the
/// right end of the axis (a power of ten). The latency axis is logarithmic when the values
/// span more than two decades, so that the median and a stall both stay visible.
pub(crate) fn spectrum_chart(
    title: &str,
    y_desc: &str,
    x_max: f64,
    lines: &[Line],
) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (WIDTH, SPECTRUM_HEIGHT)).into_drawing_area();
        let (lo, hi) = bounds(lines).unwrap_or((0.0, 1.0));
        let x_range = (1.0..x_max.max(10.0)).log_scale();
        let x_fmt = |x: &f64| spectrum_label(*x);
        if use_log(Scale::Auto, lo, hi) {
            let y_desc = format!("{y_desc} (log scale)");
            let mut chart = configure(&area, title, x_range, log_range(lo, hi).log_scale())?;
            mesh(&mut chart, 12, "percentile", &y_desc, &x_fmt, title)?;
            draw_lines(&mut chart, lines, title)?;
        } else {
            let hi = if hi > 0.0 { hi * 1.1 } else { 1.0 };
            let mut chart = configure(&area, title, x_range, 0.0..hi)?;
            mesh(&mut chart, 12, "percentile", y_desc, &x_fmt, title)?;
            draw_lines(&mut chart, lines, title)?;
        }
        area.present()
            .map_err(|e| chart_err(title)(e.to_string()))?;
    }
    Ok(svg)
}

/// Draws a latency histogram: `lines` hold step outlines of the count per latency
/// bucket, against latency in `x_range` (ms, a log axis); counts on a linear axis from 0.
pub(crate) fn histogram_chart(
    title: &str,
    x_range: std::ops::Range<f64>,
    lines: &[Line],
) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (WIDTH, HISTOGRAM_HEIGHT)).into_drawing_area();
        let (_, hi) = bounds(lines).unwrap_or((0.0, 1.0));
        let hi = if hi > 0.0 { hi * 1.1 } else { 1.0 };
        let x_fmt = |x: &f64| axis_number(*x);
        let x_range = (x_range.start.max(1e-4)..x_range.end.max(x_range.start * 10.0)).log_scale();
        let mut chart = configure(&area, title, x_range, 0.0..hi)?;
        mesh(
            &mut chart,
            12,
            "latency (ms, log scale)",
            "requests",
            &x_fmt,
            title,
        )?;
        draw_lines(&mut chart, lines, title)?;
        area.present()
            .map_err(|e| chart_err(title)(e.to_string()))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contents of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|s| {
                let body = &s[s.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_owned())
            })
            .collect()
    }

    /// The `(width, height)` of an SVG document.
    fn size(svg: &str) -> (u32, u32) {
        let attr = |name: &str| -> u32 {
            let at = svg.find(&format!("{name}=\"")).expect("attribute") + name.len() + 2;
            svg[at..at + svg[at..].find('"').expect("closed")]
                .parse()
                .expect("number")
        };
        (attr("width"), attr("height"))
    }

    #[test]
    fn a_handful_of_points_is_drawn_small_around_them() {
        let chart = |points: Vec<(f64, Option<f64>)>| {
            let lines = [Line::new("register", palette(0), points)];
            let markers = [
                Marker {
                    time_s: 1.2,
                    label: "near".into(),
                },
                Marker {
                    time_s: 50.0,
                    label: "far".into(),
                },
            ];
            time_chart(&TimeChart {
                title: "t",
                y_desc: "requests/s",
                scale: Scale::Linear,
                end_s: 60.0,
                lines: &lines,
                markers: &markers,
                bands: &[],
            })
            .expect("draws")
        };
        // Four dots in two intervals, and empty intervals after them.
        let mut few: Vec<_> = (1..=2).map(|x| (x as f64, Some(4.0))).collect();
        few.extend((3..60).map(|x| (x as f64, None)));
        let svg = chart(few);
        assert_eq!(size(&svg), SMALL);
        let t = texts(&svg);
        assert!(t.iter().any(|x| x == "▼ near"), "{t:?}");
        assert!(!t.iter().any(|x| x == "▼ far"), "outside the span: {t:?}");
        assert!(
            !t.iter().any(|x| x == "50s"),
            "the axis spans the points: {t:?}"
        );
        let many: Vec<_> = (1..60).map(|x| (x as f64, Some(4.0))).collect();
        assert_eq!(size(&chart(many)), (WIDTH, TIME_HEIGHT));
    }

    #[test]
    fn labels() {
        assert_eq!(spectrum_label(1.0), "0%");
        assert_eq!(spectrum_label(2.0), "50%");
        assert_eq!(spectrum_label(10.0), "90%");
        assert_eq!(spectrum_label(100.0), "99%");
        assert_eq!(spectrum_label(1000.0), "99.9%");
        assert_eq!(spectrum_label(1e5), "99.999%");
        assert_eq!(axis_number(0.0), "0");
        assert_eq!(axis_number(0.05), "0.05");
        assert_eq!(axis_number(2.5), "2.5");
        assert_eq!(axis_number(250.0), "250");
        assert_eq!(axis_number(25_000.0), "25k");
        assert_eq!(axis_number(1_500_000.0), "1.5M");
    }

    #[test]
    fn charts_carry_their_text_as_svg_text() {
        let markers = [
            Marker {
                time_s: 1.5,
                label: "kill node 2".into(),
            },
            Marker {
                time_s: 2.9,
                label: "restart node 2".into(),
            },
        ];
        let svg = time_chart(&TimeChart {
            title: "Throughput",
            y_desc: "requests/s",
            scale: Scale::Auto,
            end_s: 3.0,
            lines: &[
                Line::new(
                    "register",
                    palette(0),
                    vec![(1.0, Some(10.0)), (2.0, None), (3.0, Some(12.0))],
                ),
                Line::new(
                    "target",
                    palette(0),
                    vec![(1.0, Some(11.0)), (3.0, Some(11.0))],
                )
                .dashed(),
            ],
            markers: &markers,
            bands: &[Band {
                start_s: 1.5,
                end_s: 2.0,
                settled_s: 2.2,
                label: "kill:2@1s".into(),
            }],
        })
        .expect("draws");
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        assert_eq!(svg.matches("<rect").count() - 1, 2, "two band rectangles");
        let t = texts(&svg);
        for want in [
            "Throughput",
            "▼ kill node 2",
            "restart node 2 ▼",
            "1s",
            "requests/s",
            "kill:2@1s",
        ] {
            assert!(t.iter().any(|x| x == want), "{want:?} not in {t:?}");
        }
        let svg = spectrum_chart(
            "Spectrum",
            "ms",
            1000.0,
            &[Line::new(
                "corrected",
                palette(1),
                vec![(1.0, Some(1.0)), (10.0, Some(2.0)), (100.0, Some(5.0))],
            )],
        )
        .expect("draws");
        let t = texts(&svg);
        for want in ["0%", "90%", "99%", "99.9%", "percentile", "ms"] {
            assert!(t.iter().any(|x| x == want), "{want:?} not in {t:?}");
        }
    }
}
