//! Test fixtures: a seeded random generator and synthetic runs, so that report, merge and
//! check tests exercise realistic recordings deterministically. Test-only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::measure::machine::{Machine, RunInfo};
use crate::measure::op::Op;
use crate::measure::recorder::{Recorder, RecorderConfig, Sample};

/// xorshift64*: small, seeded, good enough to spread test samples.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The wall-clock start of every synthetic run.
pub(crate) fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_366_245)
}

/// Fixed run details (no machine or git probing, so tests are reproducible).
pub(crate) fn info(scenario: &str) -> RunInfo {
    let mut parameters = BTreeMap::new();
    parameters.insert("clients".to_owned(), "1000".to_owned());
    parameters.insert("nodes".to_owned(), "3".to_owned());
    RunInfo {
        scenario: scenario.to_owned(),
        parameters,
        machine: Machine {
            cores: 2,
            memory_mib: 24_105,
            cpu_model: "Test CPU @ 2.20GHz".to_owned(),
            os: "linux 6.8.0".to_owned(),
            hostname: "test".to_owned(),
        },
        git_revision: "abc1234".to_owned(),
    }
}

/// One synthetic event of a run.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    Request {
        op: Op,
        sample: Sample,
        error: Option<&'static str>,
    },
    Dropped(Op),
    ReplicationLag(Duration),
    Unreplicated,
}

/// `seconds` seconds of mixed events, in completion order, with the second each falls in.
pub(crate) fn events(seed: u64, base: Instant, seconds: u64) -> Vec<(u64, Event)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for second in 0..seconds {
        for i in 0..400u64 {
            let op = [Op::Register, Op::Query, Op::Beat][rng.below(3) as usize];
            let intended = base + Duration::from_millis(second * 1000 + i * 2);
            // Mostly fast, a slow tail, and sometimes a late send.
            let service = match rng.below(100) {
                0 => 50_000 + rng.below(200_000),
                1..=5 => 2_000 + rng.below(10_000),
                _ => 100 + rng.below(900),
            };
            let delay = if rng.below(50) == 0 {
                20_000
            } else {
                rng.below(50)
            };
            let sent = intended + Duration::from_micros(delay);
            let done = sent + Duration::from_micros(service);
            // Keep every completion inside its second.
            let done = done.min(base + Duration::from_millis(second * 1000 + 999));
            let error = match rng.below(200) {
                0 => Some("UNAVAILABLE"),
                1 => Some("timeout"),
                _ => None,
            };
            out.push((
                second,
                Event::Request {
                    op,
                    sample: Sample {
                        intended,
                        sent,
                        done,
                    },
                    error,
                },
            ));
        }
        if rng.below(2) == 0 {
            out.push((second, Event::Dropped(Op::Register)));
        }
        for _ in 0..10 {
            out.push((
                second,
                Event::ReplicationLag(Duration::from_micros(5_000 + rng.below(50_000))),
            ));
        }
        if second == 2 {
            out.push((second, Event::Unreplicated));
        }
    }
    out
}

/// Feeds one event to a recorder.
pub(crate) fn apply(r: &Recorder, e: &Event) {
    match e {
        Event::Request { op, sample, error } => match error {
            Some(code) => r.record_error(*op, *sample, code),
            None => r.record_ok(*op, *sample),
        },
        Event::Dropped(op) => r.record_dropped(*op),
        Event::ReplicationLag(d) => r.record_replication_lag(*d),
        Event::Unreplicated => r.record_unreplicated(),
    }
}

/// A recorder streaming its interval log to `hlog` (if given), started at `base`/`wall`.
pub(crate) fn recorder(base: Instant, started_at: SystemTime, hlog: Option<PathBuf>) -> Recorder {
    Recorder::starting_at(
        RecorderConfig {
            interval_log: hlog,
            ..RecorderConfig::default()
        },
        base,
        started_at,
    )
    .expect("recorder")
}

/// Runs `events` through `r`: targets set, ticks at each second, gauges and a marker.
pub(crate) fn drive(r: &Recorder, base: Instant, seconds: u64, events: &[(u64, Event)]) {
    r.set_target_rate(Op::Register, 140.0);
    r.set_target_rate(Op::Query, 130.0);
    let gauge = r.gauge("clients_registered");
    for second in 0..seconds {
        for (_, e) in events.iter().filter(|(s, _)| *s == second) {
            apply(r, e);
            if matches!(
                e,
                Event::Request {
                    op: Op::Register,
                    error: None,
                    ..
                }
            ) {
                gauge.add(1.0);
            }
        }
        if second == 1 {
            r.mark_at(base + Duration::from_millis(1500), "kill node 2");
        }
        r.tick_at(base + Duration::from_secs(second + 1));
    }
}
