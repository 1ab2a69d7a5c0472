//! The progress line shown while a run goes on.
//!
//! On a terminal it is an indicatif bar (or spinner, when the run's length is unknown)
//! whose message is the latest timeline row in one line. When stdout is not a terminal
//! (CI, a pipe, a file) it prints the same line as plain text every few seconds instead,
//! so logs stay readable and bounded. It only displays rows; it measures nothing.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::measure::latency::{human_rate, human_us};
use crate::measure::op::Op;
use crate::measure::timeline::TimelineRow;

/// How often plain lines are printed when stdout is not a terminal.
pub const DEFAULT_PLAIN_EVERY: Duration = Duration::from_secs(5);

enum Mode {
    Bar(ProgressBar),
    Plain {
        every_s: f64,
        last_s: Option<f64>,
        out: Box<dyn Write + Send>,
    },
}

/// When the hold phase began, seconds since the measured run's start (on the rows'
/// axis); set by the run, read by the bar. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HoldClock(Arc<AtomicU64>);

impl Default for HoldClock {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(f64::NAN.to_bits())))
    }
}

impl HoldClock {
    /// The hold phase began `at_s` seconds into the measured run.
    pub fn start(&self, at_s: f64) {
        self.0.store(at_s.to_bits(), Ordering::Relaxed);
    }

    /// When the hold began, if it has.
    pub fn started(&self) -> Option<f64> {
        Some(f64::from_bits(self.0.load(Ordering::Relaxed))).filter(|s| !s.is_nan())
    }
}

/// Shows the run's progress from its timeline rows (feed it from
/// [`Recorder::spawn_ticker`](crate::Recorder::spawn_ticker)).
pub struct Progress {
    mode: Mode,
    hold: HoldClock,
    /// The planned hold, seconds (the bar's length).
    hold_s: Option<u64>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.mode {
            Mode::Bar(_) => "Progress(bar)",
            Mode::Plain { .. } => "Progress(plain)",
        })
    }
}

impl Progress {
    /// A bar on stdout if it is a terminal, plain lines every [`DEFAULT_PLAIN_EVERY`]
    /// otherwise. `expected` is the run's planned length, if known.
    pub fn new(expected: Option<Duration>) -> Self {
        if std::io::stdout().is_terminal() {
            Self::bar(expected)
        } else {
            Self::plain(DEFAULT_PLAIN_EVERY, Box::new(std::io::stdout()))
        }
    }

    /// An indicatif bar (or spinner) on stdout.
    pub fn bar(expected: Option<Duration>) -> Self {
        let target = ProgressDrawTarget::stdout_with_hz(4);
        let bar = match expected {
            Some(d) => {
                let bar = ProgressBar::with_draw_target(Some(d.as_secs().max(1)), target);
                // The bar is the hold phase; the prefix says which phase runs; the message
                // is cut to the terminal's width rather than wrapped.
                bar.set_style(
                    ProgressStyle::with_template(
                        "{elapsed_precise} {prefix:>11} [{bar:20}] {pos}/{len}s {wide_msg}",
                    )
                    .expect("the template is valid")
                    .progress_chars("=> "),
                );
                bar
            }
            None => {
                let bar = ProgressBar::with_draw_target(None, target);
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
                        .expect("the template is valid"),
                );
                bar
            }
        };
        bar.set_prefix("registering");
        Self {
            mode: Mode::Bar(bar),
            hold: HoldClock::default(),
            hold_s: expected.map(|d| d.as_secs().max(1)),
        }
    }

    /// The clock the run sets when its hold phase begins (the bar follows the hold).
    pub fn hold_clock(&self) -> HoldClock {
        self.hold.clone()
    }

    /// Uses `clock` as the hold clock.
    pub fn with_hold_clock(mut self, clock: HoldClock) -> Self {
        self.hold = clock;
        self
    }

    /// Plain lines to `out`, at most one per `every` of run time.
    pub fn plain(every: Duration, out: Box<dyn Write + Send>) -> Self {
        Self {
            mode: Mode::Plain {
                every_s: every.as_secs_f64(),
                last_s: None,
                out,
            },
            hold: HoldClock::default(),
            hold_s: None,
        }
    }

    /// Shows `row`, the interval just closed.
    pub fn update(&mut self, row: &TimelineRow) {
        match &mut self.mode {
            Mode::Bar(bar) => {
                let (prefix, pos) = bar_position(self.hold.started(), self.hold_s, row.end_s);
                bar.set_prefix(prefix);
                bar.set_position(pos);
                bar.set_message(progress_line(row));
            }
            Mode::Plain {
                every_s,
                last_s,
                out,
            } => {
                let due = last_s.is_none_or(|last| row.end_s - last >= *every_s - 1e-3);
                if due {
                    *last_s = Some(row.end_s);
                    let _ = writeln!(out, "[{:>7.1}s] {}", row.end_s, progress_line(row));
                    let _ = out.flush();
                }
            }
        }
    }

    /// Removes the bar (plain mode prints nothing more).
    pub fn finish(&mut self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

/// The bar's phase label and position (whole seconds of the hold, at most its length):
/// before the hold "registering" at 0, during it "hold" at the seconds held, after it
/// "finishing" at the full length. Never "9/8s".
pub(crate) fn bar_position(
    hold_from_s: Option<f64>,
    hold_s: Option<u64>,
    now_s: f64,
) -> (&'static str, u64) {
    let Some(from) = hold_from_s else {
        return ("registering", 0);
    };
    let held = (now_s - from).max(0.0) as u64;
    match hold_s {
        Some(len) if held > len => ("finishing", len),
        Some(len) => ("hold", held.min(len)),
        None => ("hold", held),
    }
}

/// One row as one line: each active operation's rate, corrected p99 and errors, then
/// replication_lag, gauges and markers.
pub fn progress_line(row: &TimelineRow) -> String {
    let mut s = String::new();
    for op in Op::ALL {
        let o = row.op(op);
        if o.is_idle() {
            continue;
        }
        let _ = write!(s, "{op} {}", human_rate(o.throughput_per_s));
        if let Some(q) = o.corrected {
            let _ = write!(s, " p99 {}", human_us(q.p99_us));
        }
        if o.errors > 0 {
            let _ = write!(s, " err {}", o.errors);
        }
        if o.dropped > 0 {
            let _ = write!(s, " drop {}", o.dropped);
        }
        s.push_str(" | ");
    }
    let c = &row.replication_lag;
    if let Some(q) = c.latency {
        let _ = write!(s, "repl lag p99 {} | ", human_us(q.p99_us));
    }
    if c.unreplicated > 0 {
        let _ = write!(s, "unreplicated {} | ", c.unreplicated);
    }
    // Counters still at 0 say nothing: left out to keep the line short.
    for (name, v) in row.gauges.iter().filter(|(_, v)| **v != 0.0) {
        let _ = write!(s, "{name}={v} ");
    }
    for m in &row.markers {
        let _ = write!(s, "[{m}] ");
    }
    let trimmed = s.trim_end().trim_end_matches('|').trim_end();
    if trimmed.is_empty() {
        "idle".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::measure::latency::Quantiles;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn row(end_s: f64) -> TimelineRow {
        let mut r = TimelineRow {
            start_s: end_s - 1.0,
            end_s,
            ..TimelineRow::default()
        };
        r.ops[Op::Register.index()].ok = 100;
        r.ops[Op::Register.index()].throughput_per_s = 100.0;
        r.ops[Op::Register.index()].errors = 2;
        r.ops[Op::Register.index()].corrected = Some(Quantiles {
            p50_us: 100,
            p99_us: 1_500,
            max_us: 2_000,
        });
        r.gauges.insert("clients".into(), 42.0);
        r
    }

    #[test]
    fn line_shows_active_ops_gauges_and_markers() {
        let mut r = row(3.0);
        r.markers.push("kill node 2".into());
        assert_eq!(
            progress_line(&r),
            "register 100/s p99 1.50ms err 2 | clients=42 [kill node 2]"
        );
        assert_eq!(progress_line(&TimelineRow::default()), "idle");
    }

    #[test]
    fn plain_mode_prints_every_few_seconds() {
        let out = Shared::default();
        let mut p = Progress::plain(Duration::from_secs(5), Box::new(out.clone()));
        for s in 1..=11 {
            p.update(&row(f64::from(s)));
        }
        p.finish();
        let text = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("[    1.0s] register"), "{text}");
        assert!(lines[1].starts_with("[    6.0s]"), "{text}");
        assert!(lines[2].starts_with("[   11.0s]"), "{text}");
    }

    #[test]
    fn the_bar_follows_the_hold_and_never_passes_its_length() {
        assert_eq!(bar_position(None, Some(8), 1.0), ("registering", 0));
        assert_eq!(bar_position(Some(2.0), Some(8), 2.4), ("hold", 0));
        assert_eq!(bar_position(Some(2.0), Some(8), 7.0), ("hold", 5));
        assert_eq!(bar_position(Some(2.0), Some(8), 10.0), ("hold", 8));
        assert_eq!(bar_position(Some(2.0), Some(8), 11.5), ("finishing", 8));
        let clock = HoldClock::default();
        assert_eq!(clock.started(), None);
        clock.start(2.5);
        assert_eq!(clock.started(), Some(2.5));
    }
}
