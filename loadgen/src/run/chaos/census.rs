//! The convergence check of a chaos run: does every running node hold what the clients
//! were told?
//!
//! The ground truth is each client's state in [`Shared::states`]: a client whose
//! registration was acknowledged and who has not left must be on every running node, a
//! client whose deregistration was acknowledged (and who is not back yet) on none. Only
//! clients *settled* for at least [`GRACE`] count: in the same state (same epoch) in a
//! snapshot of the states taken at least that long before the check, and before and after
//! the nodes' registries are scanned. So a client that moved meanwhile (a re-registration
//! after a 404, a churn) is never counted on a stale expectation, and replication's normal
//! lag (the sync delay, 1 s by default) is not counted as a loss. The
//! registries are read through the node handles of the embedded cluster (a point-in-time
//! walk of each node's clients), not through the client API: a check must not queue
//! behind the load it measures.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use distro_server::LocalCluster;

use crate::population::Population;
use crate::run::driver::{ClientView, Shared};

/// One check's result. Only membership counts (an instance's health, weight or revision
/// does not), so that the heartbeats' ongoing health changes never hide a convergence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// Live clients missing from some running node.
    pub lost: u64,
    /// Deleted clients present on some running node.
    pub returned: u64,
}

impl Check {
    /// Every running node holds every live client and no deleted one.
    pub fn converged(&self) -> bool {
        self.lost == 0 && self.returned == 0
    }
}

/// How long a client's state must have held before a check counts it: three times the
/// default sync delay.
pub const GRACE: Duration = Duration::from_secs(3);

/// How often the client states are snapshotted for [`GRACE`].
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);

/// Maps instance addresses back to this run's clients, and keeps recent snapshots of their
/// states.
pub struct Census {
    by_ip: HashMap<Ipv4Addr, u32>,
    per_client: u16,
    first: u32,
    count: usize,
    snapshots: VecDeque<(Instant, Vec<u8>)>,
}

impl Census {
    /// The census of the clients of `shared` (their addresses from `pop`).
    pub fn new(pop: &Population, shared: &Shared) -> Self {
        let first = shared.first_client;
        let count = shared.states.len();
        let by_ip = (0..count as u32)
            .map(|i| (*pop.addr(first + i).ip(), first + i))
            .collect();
        Self {
            by_ip,
            per_client: u16::try_from(pop.per_client()).unwrap_or(u16::MAX),
            first,
            count,
            snapshots: VecDeque::new(),
        }
    }

    /// Snapshots the client states if the last snapshot is older than half a second, and
    /// forgets those no check needs any more. Call it often (every check does).
    pub fn snapshot(&mut self, shared: &Shared) {
        let now = Instant::now();
        if self
            .snapshots
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= SNAPSHOT_EVERY)
        {
            self.snapshots.push_back((now, self.states(shared)));
        }
        // Keep the newest snapshot older than GRACE, and everything after it.
        while self
            .snapshots
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) >= GRACE)
        {
            self.snapshots.pop_front();
        }
    }

    /// Checks the running nodes of `cluster` against `shared`'s client states (clients
    /// settled for [`GRACE`], or since the oldest snapshot when the run is younger).
    pub fn check(&mut self, cluster: &LocalCluster, shared: &Shared) -> Check {
        self.snapshot(shared);
        let before = self.states(shared);
        let nodes: Vec<_> = (0..cluster.len()).filter_map(|i| cluster.node(i)).collect();
        let held: Vec<Vec<u16>> = nodes
            .iter()
            .map(|n| {
                let mut held = vec![0u16; self.count];
                n.registry().for_each(|c| {
                    for p in c.publications() {
                        for inst in p.instances.iter() {
                            let Ok(ip) = inst.ip.parse::<Ipv4Addr>() else {
                                continue;
                            };
                            if let Some(&client) = self.by_ip.get(&ip) {
                                let h = &mut held[(client - self.first) as usize];
                                *h = h.saturating_add(1);
                            }
                        }
                    }
                });
                held
            })
            .collect();
        let after = self.states(shared);
        let earlier = self.snapshots.front().map_or(&before, |(_, s)| s);
        let mut check = Check::default();
        for (i, ((b, a), e)) in before.iter().zip(&after).zip(earlier).enumerate() {
            if b != a || b != e {
                continue;
            }
            match ClientView::of(*b) {
                ClientView::Up(_) if held.iter().any(|h| h[i] < self.per_client) => {
                    check.lost += 1;
                }
                ClientView::Down(_) if held.iter().any(|h| h[i] > 0) => check.returned += 1,
                _ => {}
            }
        }
        check
    }

    fn states(&self, shared: &Shared) -> Vec<u8> {
        shared.states.iter().map(|s| s.load(Relaxed)).collect()
    }
}
