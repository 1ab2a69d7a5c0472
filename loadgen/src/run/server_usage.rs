//! What the servers of an embedded cluster cost: CPU seconds and resident memory, read from
//! `/proc/<pid>/stat` and `/proc/<pid>/status` of the processes the run started (the etcd
//! members, the ZooKeeper members, distro's cluster process), at the start of the run and
//! at its end. With distro's cluster in the load generator's own process the figures are
//! that process's, load side included, and say so.

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// The servers' figures over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    /// The processes read.
    pub pids: Vec<u32>,
    /// The servers ran in the load generator's own process: the figures include the load
    /// side.
    pub in_loadgen_process: bool,
    /// CPU seconds (user and system) the processes used from the start to the end.
    pub cpu_s: f64,
    /// Their resident memory at the start (bytes, summed).
    pub rss_start_bytes: u64,
    /// Their resident memory at the end (bytes, summed).
    pub rss_end_bytes: u64,
}

/// One reading of a set of processes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    /// CPU seconds used so far.
    pub cpu_s: f64,
    /// Resident memory now, bytes.
    pub rss_bytes: u64,
}

/// Reads `pids` now (summed); a process that cannot be read counts as 0 (it has exited).
pub fn read(pids: &[u32]) -> Reading {
    let mut r = Reading::default();
    for pid in pids {
        r.cpu_s += cpu_s(*pid).unwrap_or(0.0);
        r.rss_bytes += rss_bytes(*pid).unwrap_or(0);
    }
    r
}

/// The CPU seconds (utime + stime) of `pid`.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / TICKS_PER_S)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in ticks. The command
/// name (field 2) is in parentheses and may hold spaces: fields are counted after its `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th field here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The resident memory (`VmRSS`) of `pid`, bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:` line of a `/proc/<pid>/status`, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl ServerUsage {
    /// The figures between two readings of `pids`.
    pub fn between(pids: Vec<u32>, in_loadgen_process: bool, start: Reading, end: Reading) -> Self {
        Self {
            pids,
            in_loadgen_process,
            cpu_s: (end.cpu_s - start.cpu_s).max(0.0),
            rss_start_bytes: start.rss_bytes,
            rss_end_bytes: end.rss_bytes,
        }
    }

    /// CPU seconds per operation, for `ops` operations (None for none).
    pub fn cpu_s_per_op(&self, ops: u64) -> Option<f64> {
        (ops > 0).then(|| self.cpu_s / ops as f64)
    }

    /// The resident memory the run added, per instance, for `instances` instances
    /// registered at the end (None for none).
    pub fn rss_bytes_per_instance(&self, instances: u64) -> Option<f64> {
        (instances > 0).then(|| {
            self.rss_end_bytes.saturating_sub(self.rss_start_bytes) as f64 / instances as f64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name_and_status() {
        let stat = "1234 (java (main) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 30 0 \
                    123 456 789";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmRSS:\t   2048 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_this_process() {
        // Burn CPU until the reading shows some (a 10 ms tick at least), with a deadline:
        // on a busy machine 50 ms of wall time may be less than one tick of CPU.
        let mut x = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut r = read(&[std::process::id()]);
        while r.cpu_s < 0.02 && std::time::Instant::now() < deadline {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            r = read(&[std::process::id()]);
        }
        std::hint::black_box(x);
        assert!(r.cpu_s > 0.0, "{r:?}");
        assert!(r.rss_bytes > 1 << 20, "{r:?}");
        let u = ServerUsage::between(vec![1], false, Reading::default(), r);
        assert_eq!(u.cpu_s_per_op(0), None);
        assert!(u.cpu_s_per_op(10).is_some_and(|c| c > 0.0));
        assert!(u.rss_bytes_per_instance(1).is_some_and(|b| b > 0.0));
    }
}
