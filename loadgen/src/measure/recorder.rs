//! The recorder: what the driver's tasks call for every request, and the once-a-second
//! tick that turns their samples into timeline rows and interval log entries.
//!
//! Shape: samples land in one of a few *shards*, each a mutex around a set of interval
//! histograms and counters. A thread always uses the same shard (threads are dealt shards
//! round-robin), so with at least as many shards as runtime worker threads a lock is
//! almost never contended: recording is one uncontended lock and two histogram
//! increments, with no allocation (except the first time an error code is seen in an
//! interval). Once per interval [`Recorder::tick`] swaps each shard's data for an empty
//! set, merges them, writes the interval log, appends a timeline row and adds the interval
//! into the whole-run totals. Memory is fixed by the configuration (histograms, not
//! samples) and grows with run length only by one small row per interval.
//!
//! Latency samples are recorded only for successful requests; failures are counted by
//! code (a fast failure must not flatter the latency figures, and a timeout's latency is
//! the timeout). Rows are bucketed by when samples are *recorded* (at completion), as
//! HdrHistogram's interval recorders do. What this file does not do: schedule requests,
//! decide timeouts or probe replication_lag; the driver does and reports the results here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::interval_log::{IntervalLogWriter, Series};
use super::latency::{Quantiles, micros, new_histogram};
use super::op::{LatencyKind, Op};
use super::recording::{IDLE_GAP, OpTotals, Recording, active_spans, per_second};
use super::timeline::{Marker, OpRow, ReplicationLagRow, TimelineRow};
use crate::error::ReportError;

/// Default late threshold: a send starting more than 10 ms after its intended time is late.
pub const DEFAULT_LATE_THRESHOLD: Duration = Duration::from_millis(10);
/// Default timeline interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Upper bound of the default shard count (each shard holds 16 histograms of ~190 KB).
pub const MAX_DEFAULT_SHARDS: usize = 16;

/// How a [`Recorder`] measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecorderConfig {
    /// A send is late when it starts more than this after its intended time.
    pub late_threshold: Duration,
    /// Period of [`Recorder::spawn_ticker`], and the timeline's nominal interval.
    pub interval: Duration,
    /// Stream interval histograms to this file (normally
    /// `<out dir>/`[`INTERVAL_LOG_FILE`](crate::INTERVAL_LOG_FILE)); `None` keeps only the
    /// whole-run histograms, and the report then writes a one-interval log.
    pub interval_log: Option<PathBuf>,
    /// Number of shards; 0 chooses twice the available parallelism, at most
    /// [`MAX_DEFAULT_SHARDS`].
    pub shards: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            late_threshold: DEFAULT_LATE_THRESHOLD,
            interval: DEFAULT_INTERVAL,
            interval_log: None,
            shards: 0,
        }
    }
}

/// The three instants of one request under an open-model schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When the schedule intended the request to be sent.
    pub intended: Instant,
    /// When it was actually sent.
    pub sent: Instant,
    /// When its response (or failure) arrived.
    pub done: Instant,
}

/// One operation's interval data in a shard.
#[derive(Debug)]
struct OpInterval {
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    /// Intended instant to send, of the successful requests.
    lateness: Histogram<u64>,
    ok: u64,
    late: u64,
    dropped: u64,
    errors: BTreeMap<String, u64>,
    /// The earliest intended send and the latest response of the interval's requests.
    window: Option<(Instant, Instant)>,
}

impl OpInterval {
    fn new() -> Self {
        Self {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            lateness: new_histogram(),
            ok: 0,
            late: 0,
            dropped: 0,
            errors: BTreeMap::new(),
            window: None,
        }
    }
}

/// The union of two activity windows (earliest start, latest end).
fn widen(
    a: Option<(Instant, Instant)>,
    b: Option<(Instant, Instant)>,
) -> Option<(Instant, Instant)> {
    match (a, b) {
        (Some((s1, e1)), Some((s2, e2))) => Some((s1.min(s2), e1.max(e2))),
        (a, b) => a.or(b),
    }
}

/// Adds `span` to an operation's activity, extending the last span when `span` starts
/// within it or less than [`IDLE_GAP`] after it (the common case, ticks come in time
/// order), so a long run keeps a span per idle gap, not one per interval;
/// [`active_spans`] merges the rest at the end.
fn add_span(spans: &mut Vec<(Instant, Instant)>, span: (Instant, Instant)) {
    match spans.last_mut() {
        Some(last) if span.0 >= last.0 && span.0 < last.1 + IDLE_GAP => {
            last.1 = last.1.max(span.1);
        }
        _ => spans.push(span),
    }
}

/// A shard's (or the merged) data for the current interval.
#[derive(Debug)]
struct IntervalData {
    ops: [OpInterval; 5],
    replication_lag: Histogram<u64>,
    unreplicated: u64,
}

/// Adds `from` into `into`, then empties `from` (skipping the memset of empty histograms).
fn drain_histogram(from: &mut Histogram<u64>, into: &mut Histogram<u64>) {
    if !from.is_empty() {
        into.add(&*from)
            .expect("every histogram has the same configuration");
        from.reset();
    }
}

impl IntervalData {
    fn new() -> Self {
        Self {
            ops: std::array::from_fn(|_| OpInterval::new()),
            replication_lag: new_histogram(),
            unreplicated: 0,
        }
    }

    fn drain_into(&mut self, into: &mut IntervalData) {
        for (from, to) in self.ops.iter_mut().zip(into.ops.iter_mut()) {
            drain_histogram(&mut from.corrected, &mut to.corrected);
            drain_histogram(&mut from.uncorrected, &mut to.uncorrected);
            drain_histogram(&mut from.lateness, &mut to.lateness);
            to.ok += std::mem::take(&mut from.ok);
            to.late += std::mem::take(&mut from.late);
            to.dropped += std::mem::take(&mut from.dropped);
            for (code, n) in std::mem::take(&mut from.errors) {
                *to.errors.entry(code).or_insert(0) += n;
            }
            to.window = widen(to.window, from.window.take());
        }
        drain_histogram(&mut self.replication_lag, &mut into.replication_lag);
        into.unreplicated += std::mem::take(&mut self.unreplicated);
    }

    fn histogram(&self, series: Series) -> &Histogram<u64> {
        match series {
            Series::Latency(op, LatencyKind::Corrected) => &self.ops[op.index()].corrected,
            Series::Latency(op, LatencyKind::Uncorrected) => &self.ops[op.index()].uncorrected,
            Series::Lateness(op) => &self.ops[op.index()].lateness,
            Series::ReplicationLag => &self.replication_lag,
        }
    }
}

/// A shard on its own cache lines, so that two threads' shards never share one.
#[repr(align(128))]
#[derive(Debug)]
struct Shard(Mutex<IntervalData>);

/// The tick's state.
#[derive(Debug)]
struct Aggregator {
    last_tick: Instant,
    spare: IntervalData,
    interval: IntervalData,
    totals: [OpTotals; 5],
    target_seconds: [f64; 5],
    /// Seconds during which each operation had a target rate (above 0).
    targeted_seconds: [f64; 5],
    /// Each operation's activity window over the run: first intended send, last response.
    windows: [Option<(Instant, Instant)>; 5],
    /// Each operation's activity, one span per interval in which it had requests (the
    /// interval's first intended send to its last response) or a target rate set (the
    /// whole interval); their union less idle gaps is the active time.
    spans: [Vec<(Instant, Instant)>; 5],
    replication_lag: Histogram<u64>,
    unreplicated: u64,
    timeline: Vec<TimelineRow>,
    log: Option<IntervalLogWriter>,
    log_error: Option<ReportError>,
    finished_at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    config: RecorderConfig,
    start: Instant,
    started_at: SystemTime,
    shards: Box<[Shard]>,
    targets: [AtomicU64; 5],
    closed: [std::sync::atomic::AtomicBool; 5],
    gauges: Mutex<BTreeMap<String, Gauge>>,
    markers: Mutex<Vec<(Marker, bool)>>,
    aggregator: Mutex<Aggregator>,
    /// Probe sightings on another node that came before the acknowledgement (see
    /// [`Recorder::record_visible_before_ack`]).
    visible_before_ack: AtomicU64,
}

/// The measurement side of a run: cheap to clone, shared by every task of the driver.
///
/// Call [`record`](Self::record) (or its shorthands) for every request,
/// [`tick`](Self::tick) once per interval (or let [`spawn_ticker`](Self::spawn_ticker) do
/// it), and [`finish`](Self::finish) once at the end, after the tasks have stopped.
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: Arc<Inner>,
}

/// Deals threads to shards round-robin.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl Recorder {
    /// A recorder whose run starts now.
    pub fn new(config: RecorderConfig) -> Result<Self, ReportError> {
        Self::starting_at(config, Instant::now(), SystemTime::now())
    }

    /// A recorder whose run started at `start` (monotonic clock), which was `started_at` on
    /// the wall clock. Shards of one test started together can pass the same `started_at`
    /// so that their timelines align exactly when merged; tests pass fixed instants.
    pub fn starting_at(
        config: RecorderConfig,
        start: Instant,
        started_at: SystemTime,
    ) -> Result<Self, ReportError> {
        let shards = if config.shards == 0 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores * 2).clamp(2, MAX_DEFAULT_SHARDS)
        } else {
            config.shards
        };
        let log = match &config.interval_log {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))?;
                }
                Some(IntervalLogWriter::create(path, started_at)?)
            }
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                start,
                started_at,
                shards: (0..shards)
                    .map(|_| Shard(Mutex::new(IntervalData::new())))
                    .collect(),
                targets: std::array::from_fn(|_| AtomicU64::new(0f64.to_bits())),
                closed: std::array::from_fn(|_| std::sync::atomic::AtomicBool::new(false)),
                gauges: Mutex::new(BTreeMap::new()),
                markers: Mutex::new(Vec::new()),
                aggregator: Mutex::new(Aggregator {
                    last_tick: start,
                    spare: IntervalData::new(),
                    interval: IntervalData::new(),
                    totals: Default::default(),
                    target_seconds: [0.0; 5],
                    targeted_seconds: [0.0; 5],
                    windows: [None; 5],
                    spans: Default::default(),
                    replication_lag: new_histogram(),
                    unreplicated: 0,
                    timeline: Vec::new(),
                    log,
                    log_error: None,
                    finished_at: None,
                }),
                visible_before_ack: AtomicU64::new(0),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RecorderConfig {
        &self.inner.config
    }

    /// The instant the run started.
    pub fn start(&self) -> Instant {
        self.inner.start
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.inner.start.elapsed()
    }

    fn shard(&self) -> &Mutex<IntervalData> {
        let shards = &self.inner.shards;
        let i = THREAD_INDEX.with(|i| *i) % shards.len();
        &shards[i].0
    }

    /// Records one request of `op`: its latency and send lateness (if it succeeded),
    /// whether it was sent late, and its error code (if it failed).
    pub fn record(&self, op: Op, sample: Sample, outcome: Result<(), &str>) {
        let lateness = sample.sent.saturating_duration_since(sample.intended);
        let late = lateness > self.inner.config.late_threshold;
        // A closed model has no intended instant (it is the send): no lateness.
        let open = !self.inner.closed[op.index()].load(Ordering::Relaxed);
        let mut shard = self.shard().lock();
        let slot = &mut shard.ops[op.index()];
        slot.late += u64::from(late);
        slot.window = widen(slot.window, Some((sample.intended, sample.done)));
        match outcome {
            Ok(()) => {
                slot.ok += 1;
                slot.corrected.saturating_record(micros(
                    sample.done.saturating_duration_since(sample.intended),
                ));
                slot.uncorrected
                    .saturating_record(micros(sample.done.saturating_duration_since(sample.sent)));
                if open {
                    slot.lateness.saturating_record(micros(lateness));
                }
            }
            Err(code) => match slot.errors.get_mut(code) {
                Some(n) => *n += 1,
                None => {
                    slot.errors.insert(code.to_owned(), 1);
                }
            },
        }
    }

    /// Records a successful request.
    pub fn record_ok(&self, op: Op, sample: Sample) {
        self.record(op, sample, Ok(()));
    }

    /// Records a failed request with its error code (`UNAVAILABLE`, `301`, `timeout`...).
    pub fn record_error(&self, op: Op, sample: Sample, code: &str) {
        self.record(op, sample, Err(code));
    }

    /// Records a request the schedule intended but the driver never sent (it gave up on
    /// it, e.g. because the schedule fell too far behind).
    pub fn record_dropped(&self, op: Op) {
        self.shard().lock().ops[op.index()].dropped += 1;
    }

    /// Records one replication lag time: from the owner's acknowledgement of a probe
    /// registration to its visibility on one other node.
    pub fn record_replication_lag(&self, time: Duration) {
        self.shard()
            .lock()
            .replication_lag
            .saturating_record(micros(time));
    }

    /// Records a probe sighting on another node that arrived before the probe's
    /// acknowledgement: a system that replicates before it acknowledges (etcd, ZooKeeper:
    /// a quorum holds the write first) shows writes there before the writer hears back.
    /// Such a sighting has no lag after the acknowledgement to record; it is counted
    /// instead, so that a replication lag figure always says how many sightings it
    /// leaves out (never clamped to 0 silently).
    pub fn record_visible_before_ack(&self) {
        self.inner
            .visible_before_ack
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records a probe registration that did not become visible on some node before the
    /// driver gave up.
    pub fn record_unreplicated(&self) {
        self.shard().lock().unreplicated += 1;
    }

    /// Sets the rate the schedule aims at for `op`, per second (0 when it has none). May
    /// change during the run; each timeline row shows the value at its end.
    pub fn set_target_rate(&self, op: Op, per_s: f64) {
        self.inner.targets[op.index()].store(per_s.to_bits(), Ordering::Relaxed);
    }

    /// Declares `op` closed-model: it has no schedule, each request is sent when a client
    /// is free. Record its samples with `intended` equal to `sent` (there is no intended
    /// time); the report then calls its latency service time and counts nothing late.
    pub fn set_closed_model(&self, op: Op) {
        self.inner.closed[op.index()].store(true, Ordering::Relaxed);
    }

    /// The gauge called `name` (created at 0 on first use); keep the handle to update it
    /// without a lookup. Gauges are sampled into each timeline row.
    pub fn gauge(&self, name: &str) -> Gauge {
        self.inner
            .gauges
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| Gauge(Arc::new(AtomicU64::new(0f64.to_bits()))))
            .clone()
    }

    /// Sets the gauge called `name`.
    pub fn set_gauge(&self, name: &str, value: f64) {
        self.gauge(name).set(value);
    }

    /// Marks an event (a fault injected, a phase begun) now.
    pub fn mark(&self, label: &str) {
        self.mark_at(Instant::now(), label);
    }

    /// Marks an event at `at`.
    pub fn mark_at(&self, at: Instant, label: &str) {
        let time_s = at.saturating_duration_since(self.inner.start).as_secs_f64();
        self.inner.markers.lock().push((
            Marker {
                time_s,
                label: label.to_owned(),
            },
            false,
        ));
    }

    /// Closes the current interval now; see [`tick_at`](Self::tick_at).
    pub fn tick(&self) -> TimelineRow {
        self.tick_at(Instant::now())
    }

    /// Closes the current interval at `now`: merges the shards, appends the interval's
    /// histograms to the interval log, adds them to the run's totals and returns the new
    /// timeline row (also kept for the report). An interval log write error is kept and
    /// returned by [`finish`](Self::finish); recording goes on.
    pub fn tick_at(&self, now: Instant) -> TimelineRow {
        let inner = &*self.inner;
        let mut agg = inner.aggregator.lock();
        let agg = &mut *agg;
        let from = agg.last_tick;
        let now = now.max(from);
        for shard in inner.shards.iter() {
            std::mem::swap(&mut *shard.0.lock(), &mut agg.spare);
            agg.spare.drain_into(&mut agg.interval);
        }
        let start = from - inner.start;
        let length = now - from;
        let mut row = TimelineRow {
            start_s: start.as_secs_f64(),
            end_s: (now - inner.start).as_secs_f64(),
            ..TimelineRow::default()
        };

        for op in Op::ALL {
            let data = &agg.interval.ops[op.index()];
            let target = f64::from_bits(inner.targets[op.index()].load(Ordering::Relaxed));
            row.ops[op.index()] = OpRow {
                target_per_s: target,
                ok: data.ok,
                errors: data.errors.values().sum(),
                late: data.late,
                dropped: data.dropped,
                throughput_per_s: per_second(data.ok, length),
                corrected: Quantiles::of(&data.corrected),
                uncorrected: Quantiles::of(&data.uncorrected),
            };
            agg.target_seconds[op.index()] += target * length.as_secs_f64();
            if target > 0.0 {
                agg.targeted_seconds[op.index()] += length.as_secs_f64();
                add_span(&mut agg.spans[op.index()], (from, now));
            }
        }
        row.replication_lag = ReplicationLagRow {
            count: agg.interval.replication_lag.len(),
            unreplicated: agg.interval.unreplicated,
            latency: Quantiles::of(&agg.interval.replication_lag),
        };
        for (name, gauge) in inner.gauges.lock().iter() {
            row.gauges.insert(name.clone(), gauge.get());
        }
        {
            let end_s = row.end_s;
            let mut markers = inner.markers.lock();
            for (m, attached) in markers.iter_mut() {
                if !*attached && m.time_s < end_s {
                    *attached = true;
                    row.markers.push(m.label.clone());
                }
            }
        }

        if let Some(log) = &mut agg.log {
            let written = Series::all()
                .try_for_each(|s| log.write(&s.tag(), start, length, agg.interval.histogram(s)))
                .and_then(|()| log.flush());
            if let Err(e) = written {
                agg.log_error.get_or_insert(e);
                agg.log = None;
            }
        }

        let interval = &mut agg.interval;
        for (data, total) in interval.ops.iter_mut().zip(agg.totals.iter_mut()) {
            drain_histogram(&mut data.corrected, &mut total.corrected);
            drain_histogram(&mut data.uncorrected, &mut total.uncorrected);
            drain_histogram(&mut data.lateness, &mut total.lateness);
            total.ok += std::mem::take(&mut data.ok);
            total.late += std::mem::take(&mut data.late);
            total.dropped += std::mem::take(&mut data.dropped);
            for (code, n) in std::mem::take(&mut data.errors) {
                *total.errors.entry(code).or_insert(0) += n;
            }
        }
        for ((window, spans), data) in agg
            .windows
            .iter_mut()
            .zip(agg.spans.iter_mut())
            .zip(interval.ops.iter_mut())
        {
            if let Some(w) = data.window.take() {
                add_span(spans, w);
                *window = widen(*window, Some(w));
            }
        }
        drain_histogram(&mut interval.replication_lag, &mut agg.replication_lag);
        agg.unreplicated += std::mem::take(&mut interval.unreplicated);

        agg.last_tick = now;
        agg.timeline.push(row.clone());
        row
    }

    /// Starts a thread that calls [`tick`](Self::tick) every
    /// [`interval`](RecorderConfig::interval) (on a fixed schedule from the run's start, so
    /// it does not drift) and hands each row to `on_row` (e.g. [`Progress::update`]). A
    /// thread of its own keeps the timeline regular even when the async runtime is
    /// overloaded. Stop it with [`Ticker::stop`] (or by dropping it) before
    /// [`finish`](Self::finish).
    ///
    /// [`Progress::update`]: crate::Progress::update
    pub fn spawn_ticker<F>(&self, mut on_row: F) -> Ticker
    where
        F: FnMut(&TimelineRow) + Send + 'static,
    {
        let (stop, stopped) = mpsc::channel::<()>();
        let recorder = self.clone();
        let handle = std::thread::Builder::new()
            .name("loadgen-ticker".to_owned())
            .spawn(move || {
                let period = recorder.inner.config.interval.max(Duration::from_millis(1));
                let start = recorder.inner.start;
                let mut k: u32 = 1;
                loop {
                    let deadline = start + period * k;
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match stopped.recv_timeout(wait) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let row = recorder.tick();
                    on_row(&row);
                    // Skip ticks missed while this thread could not run.
                    let elapsed = start.elapsed();
                    let next = (elapsed.as_nanos() / period.as_nanos()) + 1;
                    k = u32::try_from(next).unwrap_or(u32::MAX).max(k + 1);
                }
            })
            .expect("spawning a thread fails only when the OS is out of resources");
        Ticker {
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Ends the run now; see [`finish_at`](Self::finish_at).
    pub fn finish(&self) -> Result<Recording, ReportError> {
        self.finish_at(Instant::now())
    }

    /// Ends the run at `now`: closes the last (partial) interval, attaches any remaining
    /// markers to it, closes the interval log and returns the recording. Call it once,
    /// after the driver's tasks have stopped: samples recorded later are not reported.
    pub fn finish_at(&self, now: Instant) -> Result<Recording, ReportError> {
        self.tick_at(now);
        let inner = &*self.inner;
        let mut agg = inner.aggregator.lock();
        let last_tick = agg.last_tick;
        let end = *agg.finished_at.get_or_insert(last_tick);
        // A final tick right after the ticker's last one closes an empty, zero-length
        // interval: not a row worth showing.
        if agg.timeline.len() > 1
            && agg.timeline.last().is_some_and(|r| {
                r.duration_s() == 0.0
                    && r.ops.iter().all(OpRow::is_idle)
                    && r.replication_lag.count == 0
                    && r.replication_lag.unreplicated == 0
                    && r.markers.is_empty()
            })
        {
            agg.timeline.pop();
        }
        {
            let mut markers = inner.markers.lock();
            let late: Vec<String> = markers
                .iter_mut()
                .filter(|(_, attached)| !*attached)
                .map(|(m, attached)| {
                    *attached = true;
                    m.label.clone()
                })
                .collect();
            if let Some(last) = agg.timeline.last_mut() {
                last.markers.extend(late);
            }
        }
        if let Some(mut log) = agg.log.take()
            && let Err(e) = log.flush()
        {
            agg.log_error.get_or_insert(e);
        }
        if let Some(e) = agg.log_error.take() {
            return Err(e);
        }
        let duration = end - inner.start;
        let mut ops = agg.totals.clone();
        for (i, o) in ops.iter_mut().enumerate() {
            // The target averaged over the time it was set, not over the whole run: a
            // registration phase at 10,000/s has a target of 10,000/s however long the
            // hold after it.
            let targeted = agg.targeted_seconds[i];
            o.target_per_s = if targeted > 0.0 {
                agg.target_seconds[i] / targeted
            } else {
                0.0
            };
            o.closed = inner.closed[i].load(Ordering::Relaxed);
            let since = |t: Instant| t.saturating_duration_since(inner.start);
            o.spans = match agg.windows[i] {
                Some(window) => active_spans(std::mem::take(&mut agg.spans[i]), window)
                    .into_iter()
                    .map(|(from, to)| (since(from), since(to)))
                    .collect(),
                None => Vec::new(),
            };
        }
        let mut markers: Vec<Marker> = inner
            .markers
            .lock()
            .iter()
            .map(|(m, _)| m.clone())
            .collect();
        markers.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
        Ok(Recording {
            started_at: inner.started_at,
            duration,
            interval: inner.config.interval,
            late_threshold: inner.config.late_threshold,
            ops,
            replication_lag: agg.replication_lag.clone(),
            unreplicated: agg.unreplicated,
            visible_before_ack: inner.visible_before_ack.load(Ordering::Relaxed),
            timeline: agg.timeline.clone(),
            markers,
            interval_log: inner.config.interval_log.clone(),
        })
    }
}

/// A named value the driver sets (clients registered, nodes converged...), sampled into
/// every timeline row. Cheap to clone and to update from any thread.
#[derive(Clone, Debug)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    /// Adds `delta` (negative to subtract).
    pub fn add(&self, delta: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + delta).to_bits())
            });
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// The thread started by [`Recorder::spawn_ticker`]; stops it when dropped.
#[derive(Debug)]
pub struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Stops the thread and waits for it (at most one tick's work).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
