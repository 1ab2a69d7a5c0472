//! One Distro node: the registry plus everything that keeps replicas in line.
//!
//! A [`Node`] is shared by every task of a server (`&self` everywhere; interior state is
//! atomics, lock-free maps or short mutexes). It never performs I/O and never reads a
//! clock: `now` is always an argument. Its methods take requests, responses and ticks and
//! return what the runtime must do, as values: an answer for a peer, or [`Command`]s (send
//! this request to that peer, load a snapshot from that peer) whose outcomes the runtime
//! feeds back in. It has three kinds of entry points:
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
//! This file holds the node's state, its construction, accessors and counters, and
//! [`Node::tick`], which runs each timer's work when it is due. The work itself is one
//! file per concept under `node/`:
//!
//! | file | what it holds |
//! |---|---|
//! | `routing.rs` | which member owns an ip:port client |
//! | `client.rs` | register, deregister, beat, remove, query |
//! | `sync.rs` | flushing due clients in batches, the retry back-off, applying batches |
//! | `verify.rs` | digest and list rounds, per-client verify, the repairs they lead to |
//! | `snapshot.rs` | serving a snapshot in chunks, loading one at startup |
//! | `membership.rs` | probes, member states, routing rebuilds, re-attribution |
//! | `health.rs` | heartbeat checks, leases, supersession, self-preservation |
//! | `peer.rs` | where peer requests and responses enter, handed to the above |

use crate::config::{Config, ConfigError};
use crate::member::{MemberId, MemberList};
use crate::message::Command;
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
mod peer;
mod routing;
mod snapshot;
mod sync;
#[cfg(test)]
mod tests;
mod verify;

pub use client::BeatResult;
use health::Preservation;
use membership::PeerInfo;
pub use routing::{Route, Routes};
use snapshot::LoadState;

/// Counters of a node, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Sync batches sent.
    pub sync_batches_sent: u64,
    /// Of those, batches a peer got as a follower of another peer's take: taken and
    /// encoded once for both (see `SyncScheduler::take_into`).
    pub sync_batches_shared: u64,
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
    /// Mismatches answered without lists because syncs to that peer were still on their
    /// way (the mismatch is the replica being behind by them).
    pub verify_lists_deferred: u64,
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
    sync_batches_shared: AtomicU64,
    sync_changes_sent: AtomicU64,
    sync_bytes_sent: AtomicU64,
    sync_batches_failed: AtomicU64,
    sync_changes_applied: AtomicU64,
    sync_changes_stale: AtomicU64,
    verify_rounds: AtomicU64,
    verify_shards_mismatched: AtomicU64,
    verify_repairs: AtomicU64,
    verify_lists_deferred: AtomicU64,
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
    /// A second re-attribution pass after a routing change (see `Node::recompute_routing`).
    rehome_again: Option<Millis>,
    /// A second drop of what is queued for members that left, after a change of the
    /// member list (see `Node::set_members`): the re-homing pass does it too, but it does
    /// not follow a change that leaves the routing table as it was (a member that was
    /// already DOWN when it left).
    drop_former_again: Option<Millis>,
    /// Tombstones, services and names the collection freed since it last sent
    /// [`Command::ReleaseMemory`].
    freed_since_release: usize,
    /// Collection rounds until [`Command::ReleaseMemory`] is sent once more after a burst
    /// (0: none pending): the first release frees what the maps retired, which lets a
    /// later round reclaim the names those entries held.
    release_again_in: u8,
}

/// The periodic collection sends [`Command::ReleaseMemory`] once it freed at least this
/// many tombstones, services and names together, at the first round that frees nothing
/// more: after a burst, not during it, and not for the trickle of a steady state.
pub const RELEASE_AFTER_FREED: usize = 10_000;

/// Collection rounds after that release when it is sent once more: the first one frees
/// the old client versions the maps retired, the next collection the names they held.
const RELEASE_AGAIN_AFTER_ROUNDS: u8 = 2;

/// A Distro node without I/O. See the module documentation.
pub struct Node {
    config: Config,
    members: ArcSwap<MemberList>,
    /// `members`' [`MemberList::word`]: what a write loads (set with every list, see
    /// [`Node::store_members`]).
    member_word: AtomicU64,
    /// The address of every member id (shared with every version of `members`).
    slots: std::sync::Arc<crate::member::Slots>,
    /// Serializes member list changes ([`Node::set_members`]).
    member_change: Mutex<()>,
    /// When the member list last changed (0: never): verify settles after it.
    list_changed_at: AtomicU64,
    /// How many times the routing table changed (a list or a member state change).
    routing_changes: AtomicU64,
    /// `routing_changes` when the last verify round was sent: its answers are acted on
    /// only under the same table.
    verify_routing: AtomicU64,
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
        // Per-member tables have a row per slot: members that join later take free ones.
        let n = members.capacity();
        let registry = Registry::new(members.me(), n, incarnation, &config);
        let all: Vec<MemberId> = members.ids().collect();
        let routing = config.router.build(&members, &all);
        let standalone = members.is_standalone();
        let peers = (0..n).map(|_| PeerInfo::new()).collect();
        Ok(Self {
            sync: SyncScheduler::new(
                n,
                config.sync_delay,
                config.batch_max_entries,
                config.hash_seed,
            ),
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
                refused: Vec::new(),
                cold_start: false,
                next_attempt: 0,
                loaded_from: None,
            }),
            loaded: AtomicBool::new(standalone),
            counters: Counters::default(),
            config,
            slots: members.slots(),
            member_word: AtomicU64::new(members.word()),
            members: ArcSwap::from_pointee(members),
            member_change: Mutex::new(()),
            list_changed_at: AtomicU64::new(0),
            routing_changes: AtomicU64::new(0),
            verify_routing: AtomicU64::new(0),
            incarnation,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current member list (it changes with [`Node::set_members`]).
    pub fn members(&self) -> arc_swap::Guard<std::sync::Arc<MemberList>> {
        self.members.load()
    }

    /// The address of member `id` (a current member or one that left): ids keep their
    /// address for the node's life.
    pub fn member_addr(&self, id: MemberId) -> &crate::name::Name {
        self.slots.addr(id)
    }

    /// This node's member id.
    pub fn me(&self) -> MemberId {
        self.members.load().me()
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
            sync_batches_shared: l(&c.sync_batches_shared),
            sync_changes_sent: l(&c.sync_changes_sent),
            sync_bytes_sent: l(&c.sync_bytes_sent),
            sync_batches_failed: l(&c.sync_batches_failed),
            sync_changes_applied: l(&c.sync_changes_applied),
            sync_changes_stale: l(&c.sync_changes_stale),
            verify_rounds: l(&c.verify_rounds),
            verify_shards_mismatched: l(&c.verify_shards_mismatched),
            verify_repairs: l(&c.verify_repairs),
            verify_lists_deferred: l(&c.verify_lists_deferred),
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
        let (rehome, drop_former) = {
            let mut t = self.timers.lock();
            let take_due = |timer: &mut Option<Millis>| match *timer {
                Some(at) if at <= now => {
                    *timer = None;
                    true
                }
                _ => false,
            };
            (
                take_due(&mut t.rehome_again),
                take_due(&mut t.drop_former_again),
            )
        };
        if rehome {
            self.rehome(now, false);
        }
        if rehome || drop_former {
            self.drop_former_members_syncs();
        }
        if !self.members.load().is_standalone() {
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
            let mut freed = self.registry.collect_tombstones(now);
            freed += self
                .registry
                .collect_empty_services(now, self.config.empty_service_ttl);
            // After the services: a collected index frees the names it held (once the
            // map's reclamation drops it, so possibly at a later round).
            freed += self.registry.reclaim_names();
            let mut t = self.timers.lock();
            t.freed_since_release += freed;
            if freed == 0 && t.freed_since_release >= RELEASE_AFTER_FREED {
                t.freed_since_release = 0;
                t.release_again_in = RELEASE_AGAIN_AFTER_ROUNDS;
                out.push(Command::ReleaseMemory);
            } else if t.release_again_in > 0 {
                t.release_again_in -= 1;
                if t.release_again_in == 0 {
                    out.push(Command::ReleaseMemory);
                }
            }
        }
        out
    }
}
