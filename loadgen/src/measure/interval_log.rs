//! The HdrHistogram interval log (`latency.hlog`): one compressed histogram per tag per
//! interval, in the format of Java's `HistogramLogWriter` (V2 compressed histograms,
//! base64), so `HistogramLogProcessor` and `HistogramLogAnalyzer` read it as well as we do.
//!
//! Tags are `<op>.corrected`, `<op>.uncorrected`, `<op>.lateness` (intended instant to
//! send, the generator's own delay) and `replication_lag`; values are
//! microseconds; interval timestamps are seconds since the `BaseTime` header, which is the
//! run's start. Only non-empty histograms are written. This file knows nothing of
//! timelines or reports: it writes and reads histograms with tags and times.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use super::op::{LatencyKind, Op};
use crate::error::ReportError;

/// The tag of the replication lag histogram.
pub(crate) const REPLICATION_LAG_TAG: &str = "replication_lag";

/// The tag suffix of an operation's send lateness histogram.
const LATENESS: &str = "lateness";

/// The number of series ([`Series::all`]).
pub(crate) const SERIES: usize = Op::ALL.len() * (LatencyKind::ALL.len() + 1) + 1;

/// What a tag of our logs stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Series {
    /// An operation's latency of one kind.
    Latency(Op, LatencyKind),
    /// An operation's send lateness: from a request's intended instant to its send.
    Lateness(Op),
    /// Replication lag time.
    ReplicationLag,
}

impl Series {
    /// Every series, in file order.
    pub(crate) fn all() -> impl Iterator<Item = Series> {
        Op::ALL
            .into_iter()
            .flat_map(|op| {
                LatencyKind::ALL
                    .map(|k| Series::Latency(op, k))
                    .into_iter()
                    .chain([Series::Lateness(op)])
            })
            .chain([Series::ReplicationLag])
    }

    /// The interval log tag.
    pub(crate) fn tag(self) -> String {
        match self {
            Series::Latency(op, kind) => format!("{op}.{kind}"),
            Series::Lateness(op) => format!("{op}.{LATENESS}"),
            Series::ReplicationLag => REPLICATION_LAG_TAG.to_owned(),
        }
    }

    /// The series a tag stands for, if it is one of ours.
    pub(crate) fn from_tag(tag: &str) -> Option<Series> {
        if tag == REPLICATION_LAG_TAG {
            return Some(Series::ReplicationLag);
        }
        let (op, kind) = tag.split_once('.')?;
        let op = op.parse().ok()?;
        if kind == LATENESS {
            return Some(Series::Lateness(op));
        }
        let kind = LatencyKind::ALL.into_iter().find(|k| k.name() == kind)?;
        Some(Series::Latency(op, kind))
    }
}

/// Appends interval histograms to a log file.
pub(crate) struct IntervalLogWriter {
    path: PathBuf,
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
}

impl std::fmt::Debug for IntervalLogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalLogWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl IntervalLogWriter {
    /// Creates (truncates) the log at `path` and writes its headers; `base_time` is the
    /// instant interval timestamps count from.
    pub(crate) fn create(path: &Path, base_time: SystemTime) -> Result<Self, ReportError> {
        let io_err = |e| ReportError::io(path, e);
        let file = File::create(path).map_err(io_err)?;
        let mut w = Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
            serializer: V2DeflateSerializer::new(),
        };
        writeln!(w.out, "#[Histogram log format version 1.3]").map_err(io_err)?;
        IntervalLogWriterBuilder::new()
            .add_comment(
                "loadgen interval log: values in microseconds; tags <op>.corrected, \
                 <op>.uncorrected, <op>.lateness, replication_lag; Interval_Max in microseconds",
            )
            .with_start_time(base_time)
            .with_base_time(base_time)
            .begin_log_with(&mut w.out, &mut w.serializer)
            .map_err(io_err)?;
        writeln!(
            w.out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )
        .map_err(io_err)?;
        Ok(w)
    }

    /// Appends `h` (if it holds any sample) under `tag` for the interval starting `start`
    /// after the base time and lasting `duration`.
    pub(crate) fn write(
        &mut self,
        tag: &str,
        start: Duration,
        duration: Duration,
        h: &Histogram<u64>,
    ) -> Result<(), ReportError> {
        if h.is_empty() {
            return Ok(());
        }
        let tag = Tag::new(tag)
            .ok_or_else(|| ReportError::format(&self.path, format!("invalid tag {tag:?}")))?;
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.out, &mut self.serializer)
            .map_err(|e| ReportError::io(&self.path, e))?;
        writer
            .write_histogram(h, start, duration, Some(tag))
            .map_err(|e| ReportError::format(&self.path, e.to_string()))
    }

    /// Flushes buffered lines to the file.
    pub(crate) fn flush(&mut self) -> Result<(), ReportError> {
        self.out.flush().map_err(|e| ReportError::io(&self.path, e))
    }
}

/// One histogram read back from an interval log.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalHistogram {
    /// The tag, if the line had one.
    pub tag: Option<String>,
    /// Start of the interval, since the Unix epoch.
    pub start: Duration,
    /// Length of the interval.
    pub duration: Duration,
    /// The interval's histogram.
    pub histogram: Histogram<u64>,
}

/// An interval log loaded in memory as text; histograms are decoded one at a time as
/// [`IntervalLog::intervals`] is iterated, so a long log never needs all of them at once.
#[derive(Debug)]
pub struct IntervalLog {
    path: PathBuf,
    text: Vec<u8>,
}

impl IntervalLog {
    /// Reads the log at `path`.
    pub fn open(path: &Path) -> Result<Self, ReportError> {
        Ok(Self {
            path: path.to_owned(),
            text: std::fs::read(path).map_err(|e| ReportError::io(path, e))?,
        })
    }

    /// The log's `StartTime` header (seconds since the epoch), if it has one.
    pub fn start_time(&self) -> Option<Duration> {
        IntervalLogIterator::new(&self.text)
            .map_while(Result::ok)
            .find_map(|e| match e {
                LogEntry::StartTime(t) => Some(t),
                _ => None,
            })
    }

    /// The histograms in file order, with start times made absolute: relative to the
    /// latest `BaseTime` header, or (as Java's reader does) to `StartTime` when there is no
    /// `BaseTime` and timestamps are much smaller than it, or taken as absolute otherwise.
    pub fn intervals(&self) -> impl Iterator<Item = Result<IntervalHistogram, ReportError>> + '_ {
        let mut base: Option<Duration> = None;
        let mut start: Option<Duration> = None;
        let mut deserializer = Deserializer::new();
        let mut decoded = Vec::new();
        let mut failed = false;
        IntervalLogIterator::new(&self.text).filter_map(move |entry| {
            if failed {
                return None;
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    failed = true;
                    return Some(Err(ReportError::format(&self.path, format!("{e:?}"))));
                }
            };
            match entry {
                LogEntry::BaseTime(t) => {
                    base = Some(t);
                    None
                }
                LogEntry::StartTime(t) => {
                    start = Some(t);
                    None
                }
                LogEntry::Interval(ilh) => {
                    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
                    let offset = match (base, start) {
                        (Some(b), _) => b,
                        (None, Some(s)) if ilh.start_timestamp() + YEAR < s => s,
                        _ => Duration::ZERO,
                    };
                    decoded.clear();
                    let result = base64::engine::general_purpose::STANDARD
                        .decode_vec(ilh.encoded_histogram(), &mut decoded)
                        .map_err(|e| e.to_string())
                        .and_then(|()| {
                            deserializer
                                .deserialize::<u64, _>(&mut decoded.as_slice())
                                .map_err(|e| e.to_string())
                        });
                    Some(match result {
                        Ok(histogram) => Ok(IntervalHistogram {
                            tag: ilh.tag().map(|t| t.as_str().to_owned()),
                            start: offset + ilh.start_timestamp(),
                            duration: ilh.duration(),
                            histogram,
                        }),
                        Err(m) => {
                            failed = true;
                            Err(ReportError::format(&self.path, m))
                        }
                    })
                }
            }
        })
    }
}

/// Seconds since the epoch of `t` as a `Duration`.
pub(crate) fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// Writes an interval log holding one interval per non-empty histogram (used when a run
/// was recorded without a streaming log, so that every output directory has one).
pub(crate) fn write_single_interval<'a>(
    path: &Path,
    base_time: SystemTime,
    duration: Duration,
    histograms: impl IntoIterator<Item = (Series, &'a Histogram<u64>)>,
) -> Result<(), ReportError> {
    let mut w = IntervalLogWriter::create(path, base_time)?;
    for (series, h) in histograms {
        w.write(&series.tag(), Duration::ZERO, duration, h)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::latency::new_histogram;

    #[test]
    fn tags_round_trip() {
        let tags: Vec<String> = Series::all().map(Series::tag).collect();
        assert_eq!(tags.len(), SERIES);
        assert_eq!(tags.len(), 16);
        assert_eq!(tags[0], "register.corrected");
        assert_eq!(tags[1], "register.uncorrected");
        assert_eq!(tags[2], "register.lateness");
        assert_eq!(tags[15], "replication_lag");
        for s in Series::all() {
            assert_eq!(Series::from_tag(&s.tag()), Some(s));
        }
        assert_eq!(Series::from_tag("register.other"), None);
    }

    #[test]
    fn write_then_read_back_equal_histograms_and_times() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latency.hlog");
        let base = UNIX_EPOCH + Duration::from_millis(1_767_366_245_123);
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in [1, 5, 5, 900, 12_345, 3_000_000] {
            a.record(v).expect("in range");
        }
        b.record(42).expect("in range");
        let mut w = IntervalLogWriter::create(&path, base).expect("create");
        w.write(
            "register.corrected",
            Duration::ZERO,
            Duration::from_secs(1),
            &a,
        )
        .expect("write");
        w.write(
            "replication_lag",
            Duration::from_millis(1000),
            Duration::from_millis(1002),
            &b,
        )
        .expect("write");
        // Empty histograms are skipped.
        w.write(
            "query.corrected",
            Duration::ZERO,
            Duration::from_secs(1),
            &new_histogram(),
        )
        .expect("write");
        w.flush().expect("flush");
        drop(w);

        let log = IntervalLog::open(&path).expect("open");
        assert_eq!(log.start_time(), Some(since_epoch(base)));
        let back: Vec<IntervalHistogram> =
            log.intervals().collect::<Result<_, _>>().expect("parses");
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].tag.as_deref(), Some("register.corrected"));
        assert_eq!(back[0].start, since_epoch(base));
        assert_eq!(back[0].duration, Duration::from_secs(1));
        assert_eq!(back[0].histogram, a);
        assert_eq!(back[1].tag.as_deref(), Some("replication_lag"));
        assert_eq!(back[1].start, since_epoch(base) + Duration::from_secs(1));
        assert_eq!(back[1].duration, Duration::from_millis(1002));
        assert_eq!(back[1].histogram, b);
    }

    #[test]
    fn garbage_is_a_format_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.hlog");
        std::fs::write(&path, "Tag=a,0.000,1.000,1.0,!!notbase64!!\n").expect("write");
        let log = IntervalLog::open(&path).expect("open");
        let first = log.intervals().next().expect("one entry");
        assert!(
            matches!(first, Err(ReportError::Format { .. })),
            "{first:?}"
        );
    }
}
