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

use crate::error::ReportError;
use crate::timeline::Marker;

/// Chart width in pixels.
const WIDTH: u32 = 960;
/// Height of a time chart.
const TIME_HEIGHT: u32 = 340;
/// Height of a spectrum chart.
const SPECTRUM_HEIGHT: u32 = 380;
/// The font family of every text.
const FONT: &str = "sans-serif";
/// Colour of markers.
const MARKER_COLOR: RGBColor = RGBColor(200, 30, 30);

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
            points,
        }
    }

    pub(crate) fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }

    pub(crate) fn thin(mut self) -> Self {
        self.width = 1;
        self
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

/// The y axis of a time chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scale {
    Linear,
    Log,
}

/// A time chart's content.
#[derive(Debug)]
pub(crate) struct TimeChart<'a> {
    pub(crate) title: &'a str,
    pub(crate) y_desc: &'a str,
    pub(crate) scale: Scale,
    pub(crate) end_s: f64,
    pub(crate) lines: Vec<Line>,
    pub(crate) markers: &'a [Marker],
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

/// Draws `lines` (and a legend) into a chart whose axes are already configured.
fn draw_lines<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
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
        let color = line.color;
        let mut labelled = false;
        for segment in line.segments() {
            let anno = if segment.len() == 1 {
                chart
                    .draw_series(segment.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(|e| err(e.to_string()))?
            } else if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(segment.clone(), 6, 4, style))
                    .map_err(|e| err(e.to_string()))?
            } else {
                chart
                    .draw_series(LineSeries::new(segment.clone(), style))
                    .map_err(|e| err(e.to_string()))?
            };
            if !labelled && !line.label.is_empty() {
                labelled = true;
                let dashed = line.dashed;
                anno.label(line.label.clone()).legend(move |(x, y)| {
                    if dashed {
                        PathElement::new(vec![(x, y), (x + 6, y)], color.stroke_width(2))
                    } else {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    }
                });
            }
        }
    }
    if lines
        .iter()
        .any(|l| !l.label.is_empty() && l.values().next().is_some())
    {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 13))
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

/// Draws the markers as labelled vertical lines from `y_lo` to `y_hi`.
fn draw_markers<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
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
        let style = MARKER_COLOR.stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(m.time_s, y_lo), (m.time_s, y_hi)],
                5,
                3,
                style,
            ))
            .map_err(|e| err(e.to_string()))?;
        // Stagger labels vertically so that close markers stay readable.
        let dy = 4 + 14 * (i % 3) as i32;
        let text = format!("▼ {}", m.label);
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((m.time_s, y_hi))
                    + Text::new(text, (3, dy), (FONT, 12).into_font().color(&MARKER_COLOR)),
            ))
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

/// A chart context on an SVG string.
type SvgChart<'a, 'b, X, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>;

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
        .caption(title, (FONT, 18))
        .margin(12)
        .margin_top(8)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(|e| chart_err(title)(e.to_string()))
}

fn mesh<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
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
        .x_labels(12)
        .y_labels(8)
        .x_label_formatter(x_fmt)
        .y_label_formatter(&|v| axis_number(*v))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
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

/// Draws a time chart as an SVG document.
pub(crate) fn time_chart(c: &TimeChart<'_>) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (WIDTH, TIME_HEIGHT)).into_drawing_area();
        let x_range = 0.0..c.end_s.max(1.0);
        let x_fmt = |x: &f64| format!("{}s", axis_number(*x));
        let (lo, hi) = bounds(&c.lines).unwrap_or((0.0, 1.0));
        match c.scale {
            Scale::Linear => {
                let hi = if hi > 0.0 { hi * 1.15 } else { 1.0 };
                let mut chart = configure(&area, c.title, x_range, 0.0..hi)?;
                mesh(&mut chart, "time since start", c.y_desc, &x_fmt, c.title)?;
                draw_markers(&mut chart, c.markers, (0.0, hi), c.title)?;
                draw_lines(&mut chart, &c.lines, c.title)?;
            }
            Scale::Log => {
                let lo = 10f64.powf(lo.max(1e-3).log10().floor());
                let hi = 10f64.powf((hi.max(lo) * 1.5).log10().ceil());
                let mut chart = configure(&area, c.title, x_range, (lo..hi).log_scale())?;
                mesh(&mut chart, "time since start", c.y_desc, &x_fmt, c.title)?;
                draw_markers(&mut chart, c.markers, (lo, hi), c.title)?;
                draw_lines(&mut chart, &c.lines, c.title)?;
            }
        }
        area.present()
            .map_err(|e| chart_err(c.title)(e.to_string()))?;
    }
    Ok(svg)
}

/// Draws a percentile spectrum: `lines` hold `(1/(1-p), latency)` points; `x_max` is the
/// right end of the axis (a power of ten).
pub(crate) fn spectrum_chart(
    title: &str,
    y_desc: &str,
    x_max: f64,
    lines: &[Line],
) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (WIDTH, SPECTRUM_HEIGHT)).into_drawing_area();
        let (_, hi) = bounds(lines).unwrap_or((0.0, 1.0));
        let hi = if hi > 0.0 { hi * 1.1 } else { 1.0 };
        let mut chart = configure(&area, title, (1.0..x_max.max(10.0)).log_scale(), 0.0..hi)?;
        mesh(
            &mut chart,
            "percentile",
            y_desc,
            &|x| spectrum_label(*x),
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
        let markers = [Marker {
            time_s: 1.5,
            label: "kill node 2".into(),
        }];
        let svg = time_chart(&TimeChart {
            title: "Throughput",
            y_desc: "requests/s",
            scale: Scale::Linear,
            end_s: 3.0,
            lines: vec![
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
        })
        .expect("draws");
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        let t = texts(&svg);
        for want in [
            "Throughput",
            "▼ kill node 2",
            "register",
            "target",
            "1s",
            "requests/s",
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
        for want in ["0%", "90%", "99%", "99.9%", "percentile", "corrected"] {
            assert!(t.iter().any(|x| x == want), "{want:?} not in {t:?}");
        }
    }
}
