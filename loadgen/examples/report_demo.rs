//! Writes a report of a synthetic run, to look at the output formats without a cluster:
//! `cargo run -p loadgen --example report_demo -- /tmp/demo-run`.
//!
//! 30 seconds of virtual time (nothing sleeps): 64 connections register at 1,500/s and
//! query at 3,000/s on an open-model schedule; at 12 s "node 2" is killed and the server
//! stalls for 1.5 s, so corrected latency jumps while uncorrected latency barely moves;
//! replication probes run throughout. Deterministic (fixed seed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use loadgen::{INTERVAL_LOG_FILE, Op, Recorder, RecorderConfig, RunInfo, Sample};

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Exponentially distributed with the given mean.
    fn exp(&mut self, mean_us: f64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (-(1.0 - u).ln() * mean_us) as u64
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("/tmp/loadgen-demo"), PathBuf::from);
    const SECONDS: u64 = 30;
    const CONNECTIONS: usize = 64;
    let stall = (Duration::from_millis(12_000), Duration::from_millis(13_500));

    let base = Instant::now();
    let recorder = Recorder::starting_at(
        RecorderConfig {
            interval_log: Some(out.join(INTERVAL_LOG_FILE)),
            ..RecorderConfig::default()
        },
        base,
        std::time::SystemTime::now(),
    )?;
    let mut rng = Rng(0x5EED);
    let mut events: Vec<(Instant, Op, Sample, Option<&str>)> = Vec::new();
    // Per connection, the instant it is free again (one request in flight at a time).
    let mut free = vec![base; CONNECTIONS];
    let rates = [(Op::Register, 1_500u64), (Op::Query, 3_000u64)];
    let total_rate: u64 = rates.iter().map(|(_, r)| r).sum();
    let period_ns = 1_000_000_000 / total_rate;
    for i in 0..SECONDS * total_rate {
        let intended = base + Duration::from_nanos(i * period_ns);
        let op = if i % 3 == 0 { Op::Register } else { Op::Query };
        let conn = (i as usize) % CONNECTIONS;
        let sent = intended.max(free[conn]);
        let mean = if op == Op::Register { 450.0 } else { 250.0 };
        let mut done = sent + Duration::from_micros(60 + rng.exp(mean));
        // The stall: nothing completes until it ends.
        let (s0, s1) = (base + stall.0, base + stall.1);
        if done > s0 && sent < s1 {
            done = done.max(s1) + Duration::from_micros(rng.exp(300.0));
        }
        free[conn] = done;
        let error = match rng.next() % 2000 {
            0 => Some("UNAVAILABLE"),
            1 => Some("timeout"),
            _ => None,
        };
        events.push((
            done,
            op,
            Sample {
                intended,
                sent,
                done,
            },
            error,
        ));
    }
    events.sort_by_key(|e| e.0);

    recorder.set_target_rate(Op::Register, 1_500.0);
    recorder.set_target_rate(Op::Query, 3_000.0);
    let registered = recorder.gauge("clients_registered");
    let converged = recorder.gauge("nodes_converged");
    let mut next = events.iter().peekable();
    for second in 1..=SECONDS {
        let tick = base + Duration::from_secs(second);
        while let Some((_, op, sample, error)) = next.next_if(|e| e.0 <= tick) {
            match error {
                Some(code) => recorder.record_error(*op, *sample, code),
                None => {
                    recorder.record_ok(*op, *sample);
                    if *op == Op::Register {
                        registered.add(1.0);
                    }
                }
            }
        }
        // Ten probes per second, seen on two other nodes each.
        for _ in 0..20 {
            let late = (12..14).contains(&second);
            let extra = if late { 1_500_000.0 } else { 0.0 };
            recorder.record_replication_lag(Duration::from_micros(
                1_000_000 + rng.exp(8_000.0 + extra / 4.0),
            ));
        }
        converged.set(if (12..15).contains(&second) { 2.0 } else { 3.0 });
        if second == 12 {
            recorder.mark_at(base + stall.0, "kill node 2");
        }
        if second == 20 {
            recorder.mark_at(base + Duration::from_millis(19_400), "restart node 2");
        }
        recorder.tick_at(tick);
    }
    let recording = recorder.finish_at(base + Duration::from_secs(SECONDS))?;
    let mut parameters = BTreeMap::new();
    parameters.insert("connections".to_owned(), CONNECTIONS.to_string());
    parameters.insert("register_rate".to_owned(), "1500".to_owned());
    parameters.insert("query_rate".to_owned(), "3000".to_owned());
    parameters.insert("seed".to_owned(), "0x5EED".to_owned());
    let summary = loadgen::write_report(&out, &recording, &RunInfo::detect("demo", parameters))?;
    print!("{}", summary.table());
    println!("report: {}", out.join(loadgen::REPORT_FILE).display());
    Ok(())
}
