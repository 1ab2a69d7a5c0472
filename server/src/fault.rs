//! A node's fault switches, for LocalCluster: [`PeerGate`] cuts its peer traffic both
//! ways (partitions) and pauses its native client API (a stalled process, as its clients
//! see it).
//!
//! A node started by [`crate::server::start`] has its gate open for good; only
//! [`crate::LocalCluster`] starts nodes with a gate it keeps, so tests and the load
//! generator's chaos can flip it. Real faults (iptables, SIGSTOP) need no switch: the fault
//! suite in `server/tests/it/faults` injects them from outside the process.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// A node's fault switches, for LocalCluster: one that cuts its peer traffic both ways
/// (partitions), and a pause that holds its client API requests until a deadline (a
/// stalled process, as seen by its clients).
#[derive(Debug, Default)]
pub struct PeerGate {
    closed: AtomicBool,
    paused_until: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl PeerGate {
    /// Whether peer traffic flows.
    pub fn is_open(&self) -> bool {
        !self.closed.load(Relaxed)
    }
    /// Cuts peer traffic.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
    }
    /// Restores peer traffic.
    pub fn open(&self) {
        self.closed.store(false, Relaxed);
    }

    /// Holds the node's native client API (`distro.v1.Registry`) requests for `duration`
    /// from now: they are served when the pause ends, as by a process that was stopped.
    /// A later deadline replaces an earlier one.
    pub fn pause_for(&self, duration: Duration) {
        let until = std::time::Instant::now() + duration;
        let mut p = self.paused_until.lock();
        if p.is_none_or(|u| u < until) {
            *p = Some(until);
        }
    }

    /// The end of the current pause, if one is in force.
    pub fn paused_until(&self) -> Option<std::time::Instant> {
        let p = *self.paused_until.lock();
        p.filter(|u| *u > std::time::Instant::now())
    }

    /// Waits until no pause is in force.
    pub async fn hold(&self) {
        while let Some(until) = self.paused_until() {
            tokio::time::sleep_until(until.into()).await;
        }
    }
}
