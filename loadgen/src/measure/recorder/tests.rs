//! Tests of the recorder: exact counts across shards and threads, and its overhead.

use std::time::UNIX_EPOCH;

use super::*;
use crate::measure::interval_log::IntervalLog;
use crate::measure::latency::LatencyStats;

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_366_245)
}

fn recorder(config: RecorderConfig) -> (Recorder, Instant) {
    let base = Instant::now();
    let r = Recorder::starting_at(config, base, wall()).expect("recorder");
    (r, base)
}

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn ok_sample(base: Instant, intended_ms: u64, latency_us: u64) -> Sample {
    let intended = at(base, intended_ms);
    Sample {
        intended,
        sent: intended,
        done: intended + Duration::from_micros(latency_us),
    }
}

#[test]
fn ticks_bucket_samples_into_rows() {
    let (r, base) = recorder(RecorderConfig::default());
    r.set_target_rate(Op::Register, 10.0);
    for i in 0..3 {
        r.record_ok(Op::Register, ok_sample(base, i * 100, 500));
    }
    r.record_error(Op::Register, ok_sample(base, 400, 50), "UNAVAILABLE");
    r.record_dropped(Op::Register);
    let row0 = r.tick_at(at(base, 1000));
    assert_eq!((row0.start_s, row0.end_s), (0.0, 1.0));
    let reg = row0.op(Op::Register);
    assert_eq!((reg.ok, reg.errors, reg.dropped), (3, 1, 1));
    assert_eq!(reg.throughput_per_s, 3.0);
    assert_eq!(reg.target_per_s, 10.0);
    assert_eq!(reg.corrected.map(|q| q.p99_us), Some(500));
    assert!(row0.op(Op::Query).is_idle());

    r.set_target_rate(Op::Register, 20.0);
    r.record_ok(Op::Query, ok_sample(base, 1100, 100));
    r.record_ok(Op::Query, ok_sample(base, 1200, 300));
    r.gauge("clients_registered").add(5.0);
    r.gauge("clients_registered").add(2.0);
    r.mark_at(at(base, 1500), "kill node 2");
    r.record_replication_lag(Duration::from_millis(20));
    let row1 = r.tick_at(at(base, 2500));
    assert_eq!((row1.start_s, row1.end_s), (1.0, 2.5));
    assert!(row1.op(Op::Register).is_idle());
    let q = row1.op(Op::Query);
    assert_eq!(q.ok, 2);
    assert!(
        (q.throughput_per_s - 2.0 / 1.5).abs() < 1e-9,
        "{}",
        q.throughput_per_s
    );
    assert_eq!(q.corrected.map(|q| (q.p50_us, q.max_us)), Some((100, 300)));
    assert_eq!(row1.gauges.get("clients_registered"), Some(&7.0));
    assert_eq!(row1.markers, vec!["kill node 2".to_owned()]);
    assert_eq!(row1.replication_lag.count, 1);
    // 20 ms reads back as the top of its bucket, within 0.1 %.
    let p50 = row1.replication_lag.latency.map_or(0, |q| q.p50_us);
    assert!((20_000..=20_020).contains(&p50), "{p50}");

    r.mark_at(at(base, 2900), "end");
    let rec = r.finish_at(at(base, 3000)).expect("finish");
    assert_eq!(rec.timeline.len(), 3);
    assert_eq!(rec.timeline[2].markers, vec!["end".to_owned()]);
    assert_eq!(rec.duration, Duration::from_secs(3));
    let reg = rec.op(Op::Register);
    assert_eq!(
        (reg.ok, reg.error_count(), reg.dropped, reg.scheduled()),
        (3, 1, 1, 5)
    );
    assert_eq!(reg.errors.get("UNAVAILABLE"), Some(&1));
    // Time-weighted: 10/s for 1 s, then 20/s for 2 s.
    assert!(
        (reg.target_per_s - 50.0 / 3.0).abs() < 1e-9,
        "{}",
        reg.target_per_s
    );
    assert_eq!(rec.op(Op::Query).ok, 2);
    assert_eq!(rec.replication_lag.len(), 1);
    assert_eq!(rec.markers.len(), 2);
    assert_eq!(rec.used_ops(), vec![Op::Register, Op::Query]);
}

/// A server stalls for 1 s in the middle of a 3 s open-model run at 1000 requests/s
/// over one connection (a request is sent when both its time has come and the previous
/// response arrived). Corrected latency must show the stall in its p99; uncorrected
/// latency sees a single slow request and hides it below p99.99.
#[test]
fn a_one_second_stall_shows_in_corrected_not_in_uncorrected() {
    let (r, base) = recorder(RecorderConfig::default());
    let mut samples = Vec::new();
    let mut free_at = base;
    for i in 0..3000u64 {
        let intended = at(base, i);
        let sent = intended.max(free_at);
        let service = if i == 1000 {
            Duration::from_secs(1)
        } else {
            Duration::from_micros(100)
        };
        let done = sent + service;
        free_at = done;
        samples.push(Sample {
            intended,
            sent,
            done,
        });
    }
    // Record each sample in the interval it completes in, as a live run would.
    let mut next = samples.iter().peekable();
    for second in 1..=4u64 {
        let tick = at(base, second * 1000);
        while let Some(s) = next.next_if(|s| s.done <= tick) {
            r.record_ok(Op::Register, *s);
        }
        r.tick_at(tick);
    }
    let rec = r.finish_at(at(base, 4000)).expect("finish");
    let reg = rec.op(Op::Register);
    assert_eq!(reg.ok, 3000);
    let corrected = LatencyStats::of(&reg.corrected).expect("samples");
    let uncorrected = LatencyStats::of(&reg.uncorrected).expect("samples");
    assert!(corrected.p99_us > 900_000, "corrected {corrected:?}");
    assert!(corrected.p90_us > 500_000, "corrected {corrected:?}");
    assert!(corrected.max_us >= 1_000_000, "corrected {corrected:?}");
    assert!(uncorrected.p99_us < 1_000, "uncorrected {uncorrected:?}");
    assert!(uncorrected.p99_9_us < 1_000, "uncorrected {uncorrected:?}");
    assert!(
        uncorrected.max_us >= 1_000_000,
        "uncorrected {uncorrected:?}"
    );
    // Every request queued behind the stall by more than 10 ms was sent late.
    assert!(reg.late > 950 && reg.late < 1200, "late {}", reg.late);
    // The interval in which the backlog drained (1 s to 2 s completes only the stalled
    // request itself, at 2 s; 2 s to 3 s completes the backlog) carries the stall in its
    // corrected quantiles only.
    let row = &rec.timeline[2];
    let c = row.op(Op::Register).corrected.expect("samples");
    let u = row.op(Op::Register).uncorrected.expect("samples");
    assert!(c.p99_us > 900_000 && u.p99_us < 1_000, "{c:?} {u:?}");
    assert_eq!(rec.timeline[1].op(Op::Register).ok, 1);
}

#[test]
fn concurrent_recording_while_ticking_loses_nothing() {
    let (r, base) = recorder(RecorderConfig {
        shards: 3,
        ..RecorderConfig::default()
    });
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 20_000;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let r = r.clone();
            scope.spawn(move || {
                for i in 0..PER_THREAD {
                    let s = ok_sample(base, 0, 1 + (t * PER_THREAD + i) % 1000);
                    if i % 100 == 99 {
                        r.record_error(Op::Beat, s, "timeout");
                    } else {
                        r.record_ok(Op::Beat, s);
                    }
                }
            });
        }
        let r = r.clone();
        scope.spawn(move || {
            for k in 1..=50 {
                r.tick_at(at(base, k * 10));
            }
        });
    });
    let rec = r.finish_at(at(base, 1000)).expect("finish");
    let beat = rec.op(Op::Beat);
    let total = THREADS * PER_THREAD;
    assert_eq!(beat.ok + beat.error_count(), total);
    assert_eq!(beat.error_count(), total / 100);
    assert_eq!(beat.corrected.len(), beat.ok);
    let rows: u64 = rec.timeline.iter().map(|row| row.op(Op::Beat).ok).sum();
    assert_eq!(rows, beat.ok);
}

#[test]
fn streamed_interval_log_re_reads_as_the_totals() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested").join("latency.hlog");
    let (r, base) = recorder(RecorderConfig {
        interval_log: Some(path.clone()),
        ..RecorderConfig::default()
    });
    for second in 0..3u64 {
        for i in 0..100 {
            r.record_ok(
                Op::Query,
                ok_sample(base, second * 1000 + i, 100 + i * second),
            );
            r.record_ok(Op::Register, ok_sample(base, second * 1000 + i, 5_000 + i));
        }
        r.record_replication_lag(Duration::from_millis(10 + second));
        r.tick_at(at(base, (second + 1) * 1000));
    }
    let rec = r.finish_at(at(base, 3000)).expect("finish");
    let log = IntervalLog::open(&path).expect("open");
    let mut sums: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut starts = Vec::new();
    for interval in log.intervals() {
        let interval = interval.expect("parses");
        let tag = interval.tag.clone().expect("tagged");
        starts.push(interval.start);
        sums.entry(tag)
            .or_insert_with(new_histogram)
            .add(&interval.histogram)
            .expect("same configuration");
    }
    let epoch = crate::measure::interval_log::since_epoch(wall());
    assert_eq!(starts.first(), Some(&epoch));
    assert_eq!(starts.last(), Some(&(epoch + Duration::from_secs(2))));
    assert_eq!(sums["query.corrected"], rec.op(Op::Query).corrected);
    assert_eq!(sums["query.uncorrected"], rec.op(Op::Query).uncorrected);
    assert_eq!(sums["register.corrected"], rec.op(Op::Register).corrected);
    assert_eq!(sums["query.lateness"], rec.op(Op::Query).lateness);
    assert_eq!(sums["register.lateness"], rec.op(Op::Register).lateness);
    assert_eq!(sums["replication_lag"], rec.replication_lag);
    assert_eq!(sums.len(), 7, "{:?}", sums.keys().collect::<Vec<_>>());
}

#[test]
fn ticker_thread_produces_rows_until_stopped() {
    let (r, _) = recorder(RecorderConfig {
        interval: Duration::from_millis(20),
        ..RecorderConfig::default()
    });
    let (tx, rx) = mpsc::channel();
    let ticker = r.spawn_ticker(move |row| {
        let _ = tx.send(row.end_s);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ends = Vec::new();
    while ends.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        ends.push(rx.recv_timeout(left).expect("the ticker ticks within 10 s"));
    }
    ticker.stop();
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
    // Stopped: the callback (holding the sender) is gone.
    while rx.try_recv().is_ok() {}
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(100)),
        Err(mpsc::RecvTimeoutError::Disconnected)
    ));
}

/// Cost of one `record_ok` from several threads at once. Not a pass/fail test (timing
/// on a shared machine proves nothing); run it to see the figure:
/// `cargo nextest run -p loadgen --release --run-ignored only recorder_overhead --no-capture`
#[test]
#[ignore = "micro-benchmark; prints its figure"]
fn recorder_overhead() {
    const PER_THREAD: u64 = 5_000_000;
    let base = Instant::now();
    let samples: Vec<Sample> = (0..1024u64)
        .map(|i| ok_sample(base, i, 50 + (i * 7919) % 20_000))
        .collect();
    for (threads, shards) in [(1usize, 0usize), (2, 0), (4, 0), (2, 1), (4, 1)] {
        let config = RecorderConfig {
            shards,
            ..RecorderConfig::default()
        };
        let r = Recorder::starting_at(config, base, wall()).expect("recorder");
        let shards = r.inner.shards.len();
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let r = r.clone();
                let samples = &samples;
                scope.spawn(move || {
                    for i in 0..PER_THREAD {
                        r.record_ok(Op::Query, samples[(i % 1024) as usize]);
                    }
                });
            }
        });
        let elapsed = started.elapsed();
        let rec = r.finish().expect("finish");
        assert_eq!(rec.op(Op::Query).ok, PER_THREAD * threads as u64);
        let per_record = elapsed.as_nanos() as f64 / PER_THREAD as f64;
        println!(
            "{threads} threads, {shards} shards, {PER_THREAD} records each: \
             {:.1} ns per record per thread, {:.1} M records/s in all",
            per_record,
            (PER_THREAD * threads as u64) as f64 / elapsed.as_secs_f64() / 1e6
        );
    }
    let mut h = new_histogram();
    let started = Instant::now();
    for i in 0..PER_THREAD {
        h.saturating_record(50 + (i * 7919) % 20_000);
    }
    println!(
        "baseline, one bare Histogram::saturating_record: {:.1} ns",
        started.elapsed().as_nanos() as f64 / PER_THREAD as f64
    );
    std::hint::black_box(h);
}
