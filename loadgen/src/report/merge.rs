//! `loadgen merge`: combines the output directories of several shard runs (`--shard i/n`,
//! run side by side against one cluster) into one report, as if one load generator had
//! produced all their load.
//!
//! Histograms are merged exactly from the shards' interval logs (never from their
//! percentiles, which cannot be combined); counts, errors, rates and gauges are summed
//! from their summaries and timelines; the summary's throughput and target of an operation
//! are the sums of the shards' ones (each over its own active window). Shards are aligned on the wall clock (each summary's start time), and timeline
//! rows and log intervals are bucketed by the interval their midpoint falls in. The logs
//! are read in one pass, one interval at a time, so memory does not grow with run length.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::summary::{Model, Summary};
use super::{INTERVAL_LOG_FILE, SUMMARY_FILE, TIMELINE_FILE, write_report_with};
use crate::error::ReportError;
use crate::measure::interval_log::{
    IntervalHistogram, IntervalLog, IntervalLogWriter, SERIES, Series,
};
use crate::measure::latency::{Quantiles, new_histogram};
use crate::measure::machine::RunInfo;
use crate::measure::op::LatencyKind;
use crate::measure::recording::{OpTotals, Recording, active_spans};
use crate::measure::timeline::{Marker, TimelineRow};
use crate::measure::timestamp::from_unix_ms;

/// One shard's output directory, loaded.
struct Shard {
    dir: PathBuf,
    summary: Summary,
    timeline: Vec<TimelineRow>,
    /// Seconds from the merged start to this shard's start.
    offset_s: f64,
}

/// Merges the shard runs in `shard_dirs` into `out_dir` (created if absent) and returns the
/// merged summary, whose `shards` field lists the inputs.
pub fn merge_runs<P: AsRef<Path>>(
    shard_dirs: &[P],
    out_dir: &Path,
) -> Result<Summary, ReportError> {
    if shard_dirs.is_empty() {
        return Err(ReportError::format(
            out_dir,
            "merge needs at least one shard directory",
        ));
    }
    let mut shards = Vec::with_capacity(shard_dirs.len());
    for dir in shard_dirs {
        let dir = dir.as_ref().to_owned();
        let summary = Summary::load(&dir.join(SUMMARY_FILE))?;
        let timeline = crate::measure::timeline::read_csv(&dir.join(TIMELINE_FILE))?;
        shards.push(Shard {
            dir,
            summary,
            timeline,
            offset_s: 0.0,
        });
    }
    let start_ms = shards
        .iter()
        .map(|s| s.summary.started_at_unix_ms)
        .min()
        .unwrap_or(0);
    for s in &mut shards {
        s.offset_s = (s.summary.started_at_unix_ms - start_ms) as f64 / 1000.0;
    }
    let interval_s = shards
        .iter()
        .map(|s| s.summary.interval_s)
        .fold(0.0, f64::max);
    let interval_s = if interval_s > 0.0 { interval_s } else { 1.0 };
    let duration_s = shards
        .iter()
        .map(|s| s.offset_s + s.summary.duration_s)
        .fold(0.0, f64::max);

    let mut timeline = merge_timelines(&shards, interval_s, duration_s);
    let hlog_path = out_dir.join(INTERVAL_LOG_FILE);
    std::fs::create_dir_all(out_dir).map_err(|e| ReportError::io(out_dir, e))?;
    let started_at = from_unix_ms(start_ms);
    let histograms = merge_logs(&shards, &hlog_path, started_at, interval_s, &mut timeline)?;

    let mut ops: [OpTotals; 5] = Default::default();
    let mut unreplicated = 0;
    let mut visible_before_ack = 0;
    for s in &shards {
        for (op, o) in &s.summary.ops {
            let t = &mut ops[op.index()];
            t.ok += o.ok;
            t.late += o.late;
            t.dropped += o.dropped;
            for (code, n) in &o.errors_by_code {
                *t.errors.entry(code.clone()).or_insert(0) += n;
            }
            // Shards run side by side: targets add up.
            t.target_per_s += o.target_per_s.unwrap_or(0.0);
            t.closed |= o.model == Model::Closed;
            let at = |t: f64| Duration::from_secs_f64((s.offset_s + t).max(0.0));
            if o.active_spans_s.is_empty() {
                let from = at(o.active_from_s);
                t.spans
                    .push((from, from + Duration::from_secs_f64(o.active_s)));
            } else {
                t.spans
                    .extend(o.active_spans_s.iter().map(|[f, e]| (at(*f), at(*e))));
            }
        }
        unreplicated += s.summary.replication_lag.unreplicated;
        visible_before_ack += s.summary.replication_lag.visible_before_ack;
    }
    // Shards run side by side: an operation was active wherever any shard's was.
    for t in &mut ops {
        let spans = std::mem::take(&mut t.spans);
        let from = spans.iter().map(|s| s.0).min();
        let to = spans.iter().map(|s| s.1).max();
        if let (Some(from), Some(to)) = (from, to) {
            t.spans = active_spans(spans, (from, to));
        }
    }
    let mut replication_lag = new_histogram();
    for (series, h) in Series::all().zip(histograms) {
        match series {
            Series::Latency(op, LatencyKind::Corrected) => ops[op.index()].corrected = h,
            Series::Latency(op, LatencyKind::Uncorrected) => ops[op.index()].uncorrected = h,
            Series::Lateness(op) => ops[op.index()].lateness = h,
            Series::ReplicationLag => replication_lag = h,
        }
    }
    let mut markers: Vec<Marker> = shards
        .iter()
        .flat_map(|s| {
            s.summary.markers.iter().map(|m| Marker {
                time_s: m.time_s + s.offset_s,
                label: m.label.clone(),
            })
        })
        .collect();
    markers.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));

    let recording = Recording {
        started_at,
        duration: Duration::from_secs_f64(duration_s),
        interval: Duration::from_secs_f64(interval_s),
        late_threshold: Duration::from_micros(shards[0].summary.late_threshold_us),
        ops,
        replication_lag,
        unreplicated,
        visible_before_ack,
        timeline: timeline.into_values().collect(),
        markers,
        interval_log: Some(hlog_path),
    };
    let head = &shards[0].summary;
    let info = RunInfo {
        scenario: head.scenario.clone(),
        parameters: merge_parameters(
            &shards
                .iter()
                .map(|s| &s.summary.parameters)
                .collect::<Vec<_>>(),
        ),
        machine: head.machine.clone(),
        git_revision: joined_distinct(shards.iter().map(|s| s.summary.git_revision.as_str())),
    };
    let mut summary = Summary::new(&recording, &info);
    summary.shards = shards.iter().map(|s| s.dir.display().to_string()).collect();
    // Shards run side by side: the merged throughput and target are the sums of theirs
    // (a total over the merged span would understate them by the shards' start skew).
    let mut total = 0.0;
    for (op, o) in &mut summary.ops {
        let mut throughput = 0.0;
        for s in &shards {
            if let Some(so) = s.summary.op(*op) {
                throughput += so.throughput_per_s;
            }
        }
        o.throughput_per_s = round1(throughput);
        total += throughput;
    }
    summary.totals.throughput_per_s = round1(total);
    write_report_with(out_dir, &recording, &summary)?;
    Ok(summary)
}

/// The distinct values in order of first appearance, joined by `,`.
fn joined_distinct<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join(",")
}

/// Parameters equal in every shard keep their value; others become the shards' values
/// joined by `|` in shard order (empty where a shard lacks the key).
fn merge_parameters(all: &[&BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let mut keys: Vec<&String> = all.iter().flat_map(|p| p.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let values: Vec<&str> = all
                .iter()
                .map(|p| p.get(k).map_or("", String::as_str))
                .collect();
            let merged = if values.iter().all(|v| *v == values[0]) {
                values[0].to_owned()
            } else {
                values.join("|")
            };
            (k.clone(), merged)
        })
        .collect()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn bucket_of(t_s: f64, interval_s: f64) -> u64 {
    (t_s / interval_s).floor().max(0.0) as u64
}

/// Sums the shards' timeline rows into buckets of `interval_s` on the merged clock.
fn merge_timelines(
    shards: &[Shard],
    interval_s: f64,
    duration_s: f64,
) -> BTreeMap<u64, TimelineRow> {
    let mut merged: BTreeMap<u64, TimelineRow> = BTreeMap::new();
    for s in shards {
        // A shard's rows landing in one bucket (irregular ticks) are first combined, so
        // that its rate there is its successes over its time, not a sum of rates.
        let mut own: BTreeMap<u64, (TimelineRow, f64)> = BTreeMap::new();
        for r in &s.timeline {
            let b = bucket_of(s.offset_s + (r.start_s + r.end_s) / 2.0, interval_s);
            let (acc, secs) = own
                .entry(b)
                .or_insert_with(|| (TimelineRow::default(), 0.0));
            let d = r.duration_s();
            *secs += d;
            for (a, o) in acc.ops.iter_mut().zip(&r.ops) {
                a.ok += o.ok;
                a.errors += o.errors;
                a.late += o.late;
                a.dropped += o.dropped;
                a.target_per_s += o.target_per_s * d;
            }
            acc.replication_lag.count += r.replication_lag.count;
            acc.replication_lag.unreplicated += r.replication_lag.unreplicated;
            acc.gauges = r.gauges.clone(); // the latest value within the bucket
            acc.markers.extend(r.markers.iter().cloned());
        }
        for (b, (acc, secs)) in own {
            let row = merged.entry(b).or_insert_with(|| TimelineRow {
                start_s: b as f64 * interval_s,
                end_s: ((b + 1) as f64 * interval_s).min(duration_s.max(b as f64 * interval_s)),
                ..TimelineRow::default()
            });
            for (m, a) in row.ops.iter_mut().zip(&acc.ops) {
                m.ok += a.ok;
                m.errors += a.errors;
                m.late += a.late;
                m.dropped += a.dropped;
                if secs > 0.0 {
                    m.throughput_per_s += a.ok as f64 / secs;
                    m.target_per_s += a.target_per_s / secs;
                }
            }
            row.replication_lag.count += acc.replication_lag.count;
            row.replication_lag.unreplicated += acc.replication_lag.unreplicated;
            for (k, v) in acc.gauges {
                *row.gauges.entry(k).or_insert(0.0) += v;
            }
            row.markers.extend(acc.markers);
        }
    }
    merged
}

/// Reads every shard's interval log in one pass, writes the merged log to `path`, sets the
/// latency quantiles of `timeline`'s rows and returns the whole-run histograms (in
/// `Series::all()` order).
fn merge_logs(
    shards: &[Shard],
    path: &Path,
    started_at: std::time::SystemTime,
    interval_s: f64,
    timeline: &mut BTreeMap<u64, TimelineRow>,
) -> Result<[Histogram<u64>; SERIES], ReportError> {
    let logs = shards
        .iter()
        .map(|s| IntervalLog::open(&s.dir.join(INTERVAL_LOG_FILE)))
        .collect::<Result<Vec<_>, _>>()?;
    let base = crate::measure::interval_log::since_epoch(started_at).as_secs_f64();
    let mut iters: Vec<_> = logs.iter().map(IntervalLog::intervals).collect();
    let bucket = |h: &IntervalHistogram| {
        bucket_of(
            h.start.as_secs_f64() + h.duration.as_secs_f64() / 2.0 - base,
            interval_s,
        )
    };
    let series: Vec<Series> = Series::all().collect();
    let mut heads: Vec<Option<IntervalHistogram>> = Vec::with_capacity(iters.len());
    for it in &mut iters {
        heads.push(it.next().transpose()?);
    }
    let mut totals: [Histogram<u64>; SERIES] = std::array::from_fn(|_| new_histogram());
    let mut current: [Histogram<u64>; SERIES] = std::array::from_fn(|_| new_histogram());
    let mut writer = IntervalLogWriter::create(path, started_at)?;
    let add = |into: &mut Histogram<u64>, h: &Histogram<u64>, path: &Path| {
        into.add(h)
            .map_err(|e| ReportError::format(path, format!("cannot merge histogram: {e:?}")))
    };
    while let Some(b) = heads.iter().flatten().map(&bucket).min() {
        for (i, head) in heads.iter_mut().enumerate() {
            while let Some(h) = head.take_if(|h| bucket(h) <= b) {
                let slot = h.tag.as_deref().and_then(Series::from_tag);
                if let Some(slot) = slot.and_then(|s| series.iter().position(|x| *x == s)) {
                    add(&mut current[slot], &h.histogram, &shards[i].dir)?;
                }
                *head = iters[i].next().transpose()?;
            }
        }
        let row = timeline.entry(b).or_insert_with(|| TimelineRow {
            start_s: b as f64 * interval_s,
            end_s: (b + 1) as f64 * interval_s,
            ..TimelineRow::default()
        });
        let start = Duration::from_secs_f64(b as f64 * interval_s);
        let length = Duration::from_secs_f64(interval_s);
        for (slot, s) in series.iter().enumerate() {
            let h = &mut current[slot];
            if h.is_empty() {
                continue;
            }
            writer.write(&s.tag(), start, length, h)?;
            let q = Quantiles::of(h);
            match s {
                Series::Latency(op, LatencyKind::Corrected) => row.ops[op.index()].corrected = q,
                Series::Latency(op, LatencyKind::Uncorrected) => {
                    row.ops[op.index()].uncorrected = q;
                }
                Series::ReplicationLag => row.replication_lag.latency = q,
                // Timeline rows carry no lateness.
                Series::Lateness(_) => {}
            }
            add(&mut totals[slot], h, path)?;
            h.reset();
        }
    }
    writer.flush()?;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::measure::op::Op;
    use crate::report::fixture::{self, Rng};
    use crate::report::write_report;

    const SECONDS: u64 = 5;

    /// Splits one seeded run's events at random between two shard recorders, records all
    /// of them in a third, and checks that merging the two shards' output directories gives
    /// the third's figures: same counts, errors, histograms (hence percentiles), per-second
    /// rows and interval log.
    fn merge_equals_combined(seed: u64) {
        let dirs: Vec<tempfile::TempDir> = (0..4)
            .map(|_| tempfile::tempdir().expect("temp dir"))
            .collect();
        let [a_dir, b_dir, all_dir, merged_dir] = [0, 1, 2, 3].map(|i| dirs[i].path());
        let base = Instant::now();
        let hlog = |d: &Path| Some(d.join(INTERVAL_LOG_FILE));
        let a = fixture::recorder(base, fixture::wall(), hlog(a_dir));
        let b = fixture::recorder(base, fixture::wall(), hlog(b_dir));
        let all = fixture::recorder(base, fixture::wall(), hlog(all_dir));
        let events = fixture::events(seed, base, SECONDS);
        let mut rng = Rng::new(seed ^ 0xA5A5);
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        for e in &events {
            if rng.below(2) == 0 {
                ea.push(e.clone());
            } else {
                eb.push(e.clone());
            }
        }
        fixture::drive(&a, base, SECONDS, &ea);
        fixture::drive(&b, base, SECONDS, &eb);
        fixture::drive(&all, base, SECONDS, &events);
        let end = base + Duration::from_secs(SECONDS);
        let info = fixture::info("mixed");
        let write = |r: &crate::Recorder, dir: &Path, shard: &str| {
            let rec = r.finish_at(end).expect("finish");
            let mut info = info.clone();
            info.parameters.insert("shard".to_owned(), shard.to_owned());
            write_report(dir, &rec, &info).expect("report")
        };
        write(&a, a_dir, "1/2");
        write(&b, b_dir, "2/2");
        let want = write(&all, all_dir, "1/1");
        let got = merge_runs(&[a_dir, b_dir], merged_dir).expect("merge");

        assert_eq!(got.shards.len(), 2, "seed {seed:#x}");
        assert_eq!(got.duration_s, want.duration_s, "seed {seed:#x}");
        // Each shard had the full target set (the fixture's driver does not split it), so
        // the merged target is their sum; everything else must be equal.
        let mut ops = got.ops.clone();
        for (op, o) in &mut ops {
            let w = want.op(*op).expect("same ops");
            assert_eq!(
                o.target_per_s.map(|t| t / 2.0),
                w.target_per_s,
                "seed {seed:#x}"
            );
            o.target_per_s = w.target_per_s;
            // Each shard's rate is over its own active window, which may begin or end a
            // few ms apart from the whole run's: the sum is close, not bit-equal.
            let close = |a: f64, b: f64| (a - b).abs() <= 0.01 * b.max(1.0);
            assert!(
                close(o.throughput_per_s, w.throughput_per_s),
                "seed {seed:#x} {op}: {} vs {}",
                o.throughput_per_s,
                w.throughput_per_s
            );
            o.throughput_per_s = w.throughput_per_s;
        }
        assert_eq!(ops, want.ops, "seed {seed:#x}");
        let mut totals = got.totals.clone();
        assert!(
            (totals.throughput_per_s - want.totals.throughput_per_s).abs()
                <= 0.01 * want.totals.throughput_per_s,
            "seed {seed:#x}"
        );
        totals.throughput_per_s = want.totals.throughput_per_s;
        assert_eq!(totals, want.totals, "seed {seed:#x}");
        assert_eq!(got.errors_by_code, want.errors_by_code, "seed {seed:#x}");
        assert_eq!(got.replication_lag, want.replication_lag, "seed {seed:#x}");
        assert_eq!(
            got.parameters.get("shard").map(String::as_str),
            Some("1/2|2/2")
        );
        assert_eq!(got.parameters.get("nodes").map(String::as_str), Some("3"));
        // Each shard saw the marker once.
        assert_eq!(got.markers.len(), 2, "seed {seed:#x}");

        let got_rows =
            crate::measure::timeline::read_csv(&merged_dir.join(TIMELINE_FILE)).expect("rows");
        let want_rows =
            crate::measure::timeline::read_csv(&all_dir.join(TIMELINE_FILE)).expect("rows");
        assert_eq!(got_rows.len(), want_rows.len(), "seed {seed:#x}");
        for (g, w) in got_rows.iter().zip(&want_rows) {
            assert_eq!((g.start_s, g.end_s), (w.start_s, w.end_s), "seed {seed:#x}");
            for op in Op::ALL {
                let (g, w) = (g.op(op), w.op(op));
                assert_eq!(
                    (g.ok, g.errors, g.late, g.dropped),
                    (w.ok, w.errors, w.late, w.dropped)
                );
                assert_eq!(g.corrected, w.corrected, "seed {seed:#x} {op}");
                assert_eq!(g.uncorrected, w.uncorrected, "seed {seed:#x} {op}");
                assert!(
                    (g.throughput_per_s - w.throughput_per_s).abs() < 0.2,
                    "seed {seed:#x}"
                );
                assert!((g.target_per_s - 2.0 * w.target_per_s).abs() < 1e-6);
            }
            assert_eq!(g.replication_lag, w.replication_lag, "seed {seed:#x}");
            // Gauges are summed over shards.
            assert_eq!(g.gauges, w.gauges, "seed {seed:#x}");
        }

        // The merged interval log equals the combined one, interval by interval.
        let read = |d: &Path| -> Vec<IntervalHistogram> {
            IntervalLog::open(&d.join(INTERVAL_LOG_FILE))
                .expect("open")
                .intervals()
                .collect::<Result<_, _>>()
                .expect("parses")
        };
        let (g, w) = (read(merged_dir), read(all_dir));
        assert_eq!(g.len(), w.len(), "seed {seed:#x}");
        for (g, w) in g.iter().zip(&w) {
            assert_eq!((&g.tag, g.start, g.duration), (&w.tag, w.start, w.duration));
            assert_eq!(g.histogram, w.histogram, "seed {seed:#x} {:?}", g.tag);
        }
        assert!(merged_dir.join(crate::report::REPORT_FILE).is_file());
    }

    #[test]
    fn merging_two_shards_equals_recording_everything_in_one() {
        for seed in [1, 0x5EED_0002, 0xDEAD_BEEF] {
            merge_equals_combined(seed);
        }
    }

    #[test]
    fn shards_started_apart_are_aligned_on_the_wall_clock() {
        let dirs: Vec<tempfile::TempDir> = (0..3)
            .map(|_| tempfile::tempdir().expect("temp dir"))
            .collect();
        let base = Instant::now();
        for (i, delay) in [(0, 0), (1, 2)] {
            let dir = dirs[i].path();
            let started = fixture::wall() + Duration::from_secs(delay);
            let r = fixture::recorder(base, started, Some(dir.join(INTERVAL_LOG_FILE)));
            let events = fixture::events(7 + i as u64, base, 3);
            fixture::drive(&r, base, 3, &events);
            let rec = r.finish_at(base + Duration::from_secs(3)).expect("finish");
            write_report(dir, &rec, &fixture::info("mixed")).expect("report");
        }
        let merged = merge_runs(&[dirs[0].path(), dirs[1].path()], dirs[2].path()).expect("merge");
        assert_eq!(merged.duration_s, 5.0);
        let rows =
            crate::measure::timeline::read_csv(&dirs[2].path().join(TIMELINE_FILE)).expect("rows");
        assert_eq!(rows.len(), 5);
        let shard = |i: usize| {
            crate::measure::timeline::read_csv(&dirs[i].path().join(TIMELINE_FILE)).expect("rows")
        };
        let (s0, s1) = (shard(0), shard(1));
        let ok = |r: &TimelineRow| r.op(Op::Register).ok;
        assert_eq!(ok(&rows[0]), ok(&s0[0]));
        assert_eq!(ok(&rows[2]), ok(&s0[2]) + ok(&s1[0]));
        assert_eq!(ok(&rows[4]), ok(&s1[2]));
        let times: Vec<f64> = merged.markers.iter().map(|m| m.time_s).collect();
        assert_eq!(times, vec![1.5, 3.5]);
    }

    #[test]
    fn a_shard_without_its_files_is_a_clear_error() {
        let empty = tempfile::tempdir().expect("temp dir");
        let out = tempfile::tempdir().expect("temp dir");
        let err = merge_runs(&[empty.path()], out.path()).expect_err("no summary");
        assert!(err.to_string().contains("summary.json"), "{err}");
        let none: [&Path; 0] = [];
        assert!(merge_runs(&none, out.path()).is_err());
    }
}
