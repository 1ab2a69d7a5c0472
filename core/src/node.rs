//! One Distro node: the registry plus everything that keeps replicas in line.
//!
//! A [`Node`] is shared by every task of a server (`&self` everywhere; interior state is
//! atomics, lock-free maps or short mutexes). It has three kinds of entry points:
//!
//! * **client operations** ([`Node::register`], [`Node::deregister`], [`Node::beat`],
//!   [`Node::remove_client`], [`Node::query`]), called by the API handlers after routing
//!   ([`Node::route`]) decided this node owns the client;
//! * **peer messages** ([`Node::handle_request`] answers a peer, [`Node::handle_response`]
//!   digests the answer to a request this node sent), and the snapshot stream
//!   ([`Node::snapshot_chunk`], [`Node::load_chunk`], [`Node::load_finished`]);
//! * **time** ([`Node::tick`]): flush due syncs, run verify rounds, probe members, check
//!   heartbeats, expire leases, collect tombstones. It returns [`Command`]s for the
//!   runtime to carry out.
//!
//! The node never performs I/O and never reads a clock: `now` is always an argument.

use crate::config::{Config, ConfigError};
use crate::member::{MemberId, MemberList, PeerHealth};
use crate::message::*;
use crate::registry::Registry;
use crate::router::RoutingTable;
use crate::sync::SyncScheduler;
use crate::time::Millis;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

mod client;
mod health;
mod membership;
mod routing;
mod snapshot;
mod sync;
mod verify;

pub use client::BeatResult;
use health::Preservation;
use membership::PeerInfo;
pub use routing::Route;
use snapshot::LoadState;

/// Counters of a node, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Sync batches sent.
    pub sync_batches_sent: u64,
    /// Client changes sent in sync batches.
    pub sync_changes_sent: u64,
    /// Estimated bytes of sync batches sent.
    pub sync_bytes_sent: u64,
    /// Sync batches that failed.
    pub sync_batches_failed: u64,
    /// Replicated changes applied.
    pub sync_changes_applied: u64,
    /// Replicated changes ignored as stale.
    pub sync_changes_stale: u64,
    /// Verify rounds started (one per peer per interval).
    pub verify_rounds: u64,
    /// Shards found mismatched by peers.
    pub verify_shards_mismatched: u64,
    /// Clients re-sent because verify found a replica lacking or stale.
    pub verify_repairs: u64,
    /// Replica clients dropped because their owner no longer lists them.
    pub verify_removed: u64,
    /// Estimated bytes of verify requests sent.
    pub verify_bytes_sent: u64,
    /// Replica clients dropped because their lease expired.
    pub lease_expired: u64,
    /// Expiries held back by self-preservation.
    pub lease_preserved: u64,
    /// Connection clients of an unreachable owner dropped because live clients publish
    /// every one of their instances (their SDK failed over and registered again).
    pub lease_superseded: u64,
    /// Instances marked unhealthy by the heartbeat check.
    pub heartbeat_unhealthy: u64,
    /// Publications removed by the heartbeat check.
    pub heartbeat_expired: u64,
    /// Expiries held back because this node could reach at most half of the members
    /// (it is more likely cut off than its clients dead).
    pub heartbeat_expiry_held: u64,
    /// Snapshot loads completed.
    pub snapshot_loads: u64,
    /// Clients applied from snapshots.
    pub snapshot_clients: u64,
    /// Probes that failed.
    pub probes_failed: u64,
    /// ip:port clients whose ownership moved to this node.
    pub clients_adopted: u64,
    /// ip:port clients whose ownership moved away from this node.
    pub clients_released: u64,
}

#[derive(Default)]
struct Counters {
    sync_batches_sent: AtomicU64,
    sync_changes_sent: AtomicU64,
    sync_bytes_sent: AtomicU64,
    sync_batches_failed: AtomicU64,
    sync_changes_applied: AtomicU64,
    sync_changes_stale: AtomicU64,
    verify_rounds: AtomicU64,
    verify_shards_mismatched: AtomicU64,
    verify_repairs: AtomicU64,
    verify_removed: AtomicU64,
    verify_bytes_sent: AtomicU64,
    lease_expired: AtomicU64,
    lease_preserved: AtomicU64,
    lease_superseded: AtomicU64,
    heartbeat_unhealthy: AtomicU64,
    heartbeat_expired: AtomicU64,
    heartbeat_expiry_held: AtomicU64,
    snapshot_loads: AtomicU64,
    snapshot_clients: AtomicU64,
    probes_failed: AtomicU64,
    clients_adopted: AtomicU64,
    clients_released: AtomicU64,
}

fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

#[derive(Default)]
struct Timers {
    next_verify: Option<Millis>,
    next_health: Option<Millis>,
    next_probe: Option<Millis>,
    next_gc: Option<Millis>,
}

/// A Distro node without I/O. See the module documentation.
pub struct Node {
    config: Config,
    members: MemberList,
    incarnation: Millis,
    registry: Registry,
    sync: SyncScheduler,
    routing: ArcSwap<RoutingTable>,
    peers: Mutex<Vec<PeerInfo>>,
    timers: Mutex<Timers>,
    load: Mutex<LoadState>,
    loaded: AtomicBool,
    /// Last time a matching digest renewed (owner, shard); index owner * shards + shard.
    renewed: Box<[AtomicU64]>,
    preservation: Mutex<Vec<Preservation>>,
    counters: Counters,
}

impl Node {
    /// A node that is member `members.me()`, started at wall-clock `incarnation` ms.
    pub fn new(
        config: Config,
        members: MemberList,
        incarnation: Millis,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let n = members.len();
        let registry = Registry::new(members.me(), n, incarnation, &config);
        let all: Vec<MemberId> = members.ids().collect();
        let routing = config.router.build(&members, &all);
        let standalone = members.is_standalone();
        let peers = members
            .ids()
            .map(|_| PeerInfo {
                health: PeerHealth::new(),
                loaded: true,
                incarnation: 0,
            })
            .collect();
        Ok(Self {
            sync: SyncScheduler::new(n, config.sync_delay, config.hash_seed),
            renewed: (0..n * config.shards as usize)
                .map(|_| AtomicU64::new(0))
                .collect(),
            preservation: Mutex::new(vec![Preservation::default(); n]),
            registry,
            routing: ArcSwap::from_pointee(routing),
            peers: Mutex::new(peers),
            timers: Mutex::new(Timers::default()),
            load: Mutex::new(LoadState {
                in_progress: None,
                tried: Vec::new(),
                next_attempt: 0,
                loaded_from: None,
            }),
            loaded: AtomicBool::new(standalone),
            counters: Counters::default(),
            config,
            members,
            incarnation,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The member list.
    pub fn members(&self) -> &MemberList {
        &self.members
    }

    /// This node's member id.
    pub fn me(&self) -> MemberId {
        self.members.me()
    }

    /// The wall-clock start time this node was built with.
    pub fn incarnation(&self) -> Millis {
        self.incarnation
    }

    /// The registry (queries, iteration, stats).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Relaxed);
        NodeStats {
            sync_batches_sent: l(&c.sync_batches_sent),
            sync_changes_sent: l(&c.sync_changes_sent),
            sync_bytes_sent: l(&c.sync_bytes_sent),
            sync_batches_failed: l(&c.sync_batches_failed),
            sync_changes_applied: l(&c.sync_changes_applied),
            sync_changes_stale: l(&c.sync_changes_stale),
            verify_rounds: l(&c.verify_rounds),
            verify_shards_mismatched: l(&c.verify_shards_mismatched),
            verify_repairs: l(&c.verify_repairs),
            verify_removed: l(&c.verify_removed),
            verify_bytes_sent: l(&c.verify_bytes_sent),
            lease_expired: l(&c.lease_expired),
            lease_preserved: l(&c.lease_preserved),
            lease_superseded: l(&c.lease_superseded),
            heartbeat_unhealthy: l(&c.heartbeat_unhealthy),
            heartbeat_expired: l(&c.heartbeat_expired),
            heartbeat_expiry_held: l(&c.heartbeat_expiry_held),
            snapshot_loads: l(&c.snapshot_loads),
            snapshot_clients: l(&c.snapshot_clients),
            probes_failed: l(&c.probes_failed),
            clients_adopted: l(&c.clients_adopted),
            clients_released: l(&c.clients_released),
        }
    }

    /// Clients attributed to this node.
    pub fn owned_clients(&self) -> u64 {
        self.registry.owner_count(self.me())
    }

    // ----- time ------------------------------------------------------------------------

    /// Advances timers to `now`: returns what the runtime must send or load.
    pub fn tick(&self, now: Millis) -> Vec<Command> {
        let mut out = Vec::new();
        let (verify, health, probe, gc) = {
            let mut t = self.timers.lock();
            let due = |slot: &mut Option<Millis>, period: Millis, first: Millis| match slot {
                None => {
                    *slot = Some(now + first);
                    false
                }
                Some(at) if *at <= now => {
                    *slot = Some(now + period);
                    true
                }
                Some(_) => false,
            };
            let c = &self.config;
            (
                due(&mut t.next_verify, c.verify_interval, c.verify_interval),
                due(
                    &mut t.next_health,
                    c.health_check_interval,
                    c.health_check_interval,
                ),
                due(&mut t.next_probe, c.probe_interval, 0),
                due(
                    &mut t.next_gc,
                    c.health_check_interval,
                    c.health_check_interval,
                ),
            )
        };
        if !self.members.is_standalone() {
            if probe {
                self.probe_peers(&mut out);
            }
            self.load_step(now, &mut out);
            self.flush(now, false, &mut out);
            if verify && self.is_loaded() {
                self.verify_round(now, &mut out);
            }
            if health {
                self.expire_leases(now);
            }
        }
        if health {
            self.check_heartbeats(now);
        }
        if gc {
            self.registry.collect_tombstones(now);
            self.registry
                .collect_empty_services(now, crate::config::DEFAULT_TOMBSTONE_TTL);
        }
        out
    }

    // ----- peer messages: serving ------------------------------------------------------

    /// Answers a request from peer `from`.
    pub fn handle_request(
        &self,
        from: MemberId,
        request: PeerRequest,
        now: Millis,
    ) -> PeerResponse {
        if from == self.me() || from.index() >= self.members.len() {
            return PeerResponse::Refused(format!("unknown sender {from}"));
        }
        match request {
            PeerRequest::Sync(batch) => self.apply_batch(from, batch, now),
            PeerRequest::VerifyDigests(v) => self.check_digests(from, &v, now),
            PeerRequest::VerifyList(l) => self.check_list(from, l, now),
            PeerRequest::VerifyClients(v) => self.check_clients(v, now),
            PeerRequest::Probe(p) => self.answer_probe(from, p),
        }
    }

    // ----- peer messages: responses ----------------------------------------------------

    /// Digests the outcome of `request`, which this node sent to `to`.
    pub fn handle_response(
        &self,
        to: MemberId,
        request: PeerRequest,
        result: Result<PeerResponse, SendError>,
        now: Millis,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        if to.index() >= self.members.len() || to == self.me() {
            return out;
        }
        let result = match result {
            Ok(PeerResponse::Refused(_)) => Err(SendError::Rejected),
            other => other,
        };
        if result.is_ok() && !matches!(request, PeerRequest::Sync(_)) {
            self.resume_sync(to);
        }
        match (request, result) {
            (PeerRequest::Probe(_), result) => self.on_probe_result(to, &result, now),
            (PeerRequest::Sync(batch), result) => {
                self.on_sync_result(to, &batch, result.is_ok(), now)
            }
            (PeerRequest::VerifyDigests(_), Ok(PeerResponse::VerifyMismatch { shards })) => {
                self.on_verify_mismatch(to, &shards, &mut out)
            }
            (PeerRequest::VerifyList(_), Ok(PeerResponse::VerifyReport { needs, .. })) => {
                self.on_verify_report(to, needs, now)
            }
            (PeerRequest::VerifyClients(_), Ok(PeerResponse::VerifyClientsResult { failed })) => {
                self.on_verify_clients_result(to, failed, now)
            }
            // Verify failures are retried by the next round.
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClientId, InstanceSpec, ServiceSpec};

    fn node(me: &str, n: usize) -> Node {
        let addrs: Vec<String> = (1..=n).map(|i| format!("10.0.0.{i}:8848")).collect();
        let cfg = Config {
            shards: 64,
            ..Config::default()
        };
        Node::new(cfg, MemberList::new(me, &addrs).unwrap(), 1_000).unwrap()
    }

    fn sends(cmds: &[Command]) -> Vec<(&MemberId, &PeerRequest)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Send { to, request } => Some((to, request)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_change_is_synced_to_every_peer_after_the_delay() {
        let n = node("10.0.0.1:8848", 3);
        let id = ClientId::connection(1, "1.1.1.1", 1);
        n.register(
            &id,
            &ServiceSpec::new("", "", "svc"),
            &InstanceSpec::new("1.1.1.1", 80),
            0,
        )
        .unwrap();
        n.tick(0);
        let before: Vec<_> = n
            .tick(999)
            .into_iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::Send {
                        request: PeerRequest::Sync(_),
                        ..
                    }
                )
            })
            .collect();
        assert!(before.is_empty());
        let cmds = n.tick(1000);
        let syncs: Vec<_> = sends(&cmds)
            .into_iter()
            .filter(|(_, r)| matches!(r, PeerRequest::Sync(_)))
            .collect();
        assert_eq!(syncs.len(), 2);
    }

    #[test]
    fn standalone_is_loaded_and_sends_nothing() {
        let n = node("10.0.0.1:8848", 1);
        assert!(n.is_loaded());
        let id = ClientId::ip_port("1.1.1.1", 80);
        n.register(
            &id,
            &ServiceSpec::new("", "", "svc"),
            &InstanceSpec::new("1.1.1.1", 80),
            0,
        )
        .unwrap();
        assert!(n.tick(10_000).is_empty());
    }

    #[test]
    fn ip_port_clients_publish_only_their_own_address() {
        let n = node("10.0.0.1:8848", 1);
        let id = ClientId::ip_port("1.1.1.1", 80);
        let e = n
            .register(
                &id,
                &ServiceSpec::new("", "", "svc"),
                &InstanceSpec::new("1.1.1.2", 80),
                0,
            )
            .unwrap_err();
        assert!(e.to_string().contains("clientId"), "{e}");
    }

    #[test]
    fn heartbeats_keep_instances_healthy_then_they_expire() {
        let n = node("10.0.0.1:8848", 1);
        let id = ClientId::ip_port("1.1.1.1", 80);
        let svc = ServiceSpec::new("", "", "svc");
        n.register(&id, &svc, &InstanceSpec::new("1.1.1.1", 80), 0)
            .unwrap();
        n.tick(0);
        assert_eq!(n.beat(&id, &svc, 4_000).unwrap(), BeatResult::Ok);
        n.tick(10_000);
        let healthy =
            |n: &Node| n.query(&svc).unwrap().unwrap().publications[0].instances[0].healthy;
        assert!(healthy(&n));
        n.tick(20_000); // 16 s after the last beat
        assert!(!healthy(&n));
        assert_eq!(n.beat(&id, &svc, 21_000).unwrap(), BeatResult::Ok);
        assert!(healthy(&n));
        n.tick(25_000);
        n.tick(30_000);
        n.tick(35_000);
        n.tick(40_000);
        n.tick(45_000);
        n.tick(50_000); // 29 s after the last beat
        assert_eq!(n.query(&svc).unwrap().unwrap().instance_count(), 1);
        n.tick(55_000); // 34 s
        assert_eq!(n.query(&svc).unwrap().unwrap().instance_count(), 0);
        assert_eq!(n.beat(&id, &svc, 56_000).unwrap(), BeatResult::NotFound);
    }

    #[test]
    fn per_instance_heartbeat_overrides() {
        let n = node("10.0.0.1:8848", 1);
        let id = ClientId::ip_port("1.1.1.1", 80);
        let svc = ServiceSpec::new("", "", "svc");
        let mut spec = InstanceSpec::new("1.1.1.1", 80);
        spec.metadata = vec![
            ("preserved.heart.beat.timeout".into(), "3000".into()),
            ("preserved.ip.delete.timeout".into(), "6000".into()),
        ];
        n.register(&id, &svc, &spec, 0).unwrap();
        n.tick(0);
        n.tick(5_000);
        assert!(!n.query(&svc).unwrap().unwrap().publications[0].instances[0].healthy);
        n.tick(10_000);
        assert_eq!(n.query(&svc).unwrap().unwrap().instance_count(), 0);
    }
}
