//! Protocol configuration: timings, batch limits and choices, with Nacos's defaults.
//!
//! A plain struct built from named constants, checked by [`Config::validate`]. The
//! server's command line fills it; the simulator and tests build it directly.

use crate::router::RouterKind;
use crate::time::Millis;

/// Default sync delay (Nacos `nacos.core.protocol.distro.data.sync.delayMs`).
pub const DEFAULT_SYNC_DELAY: Millis = 1_000;
/// Default delay before a failed sync is retried (Nacos `...sync.retryDelayMs`).
pub const DEFAULT_SYNC_RETRY_DELAY: Millis = 3_000;
/// Default cap of the growing retry delay.
pub const DEFAULT_SYNC_RETRY_MAX_DELAY: Millis = 30_000;
/// Default timeout of one peer request (Nacos `...sync.timeoutMs`).
pub const DEFAULT_PEER_TIMEOUT: Millis = 3_000;
/// Default most clients in one sync batch: four times Nacos 1.x's `batchSyncKeyCount`
/// (1,000). A batch names each service once, so a larger one decodes fewer names a
/// client; the 1 M burst ran ~7 % faster on ~5 % less CPU a client than with 1,000
/// (`results/side-by-side-2026-12-07d.md`).
pub const DEFAULT_BATCH_MAX_ENTRIES: usize = 4_000;
/// Default pending clients that send a batch before its delay ([`Config::batch_early_entries`]):
/// Nacos 1.x's `batchSyncKeyCount`, so a burst of ~1,000 changes a second to a peer leaves
/// early, as when batches held at most 1,000.
pub const DEFAULT_BATCH_EARLY_ENTRIES: usize = 1_000;
/// Default most encoded bytes in one sync batch or verify list.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1024 * 1024;
/// Default most sync batches in flight to one peer.
pub const DEFAULT_MAX_INFLIGHT_BATCHES: usize = 4;
/// Default quiet time after which a burst's rest leaves ([`Config::burst_quiet`]): the
/// server's sync flush period, so the last clients of a burst leave at the first flush
/// that finds nothing new pending for that long.
pub const DEFAULT_BURST_QUIET: Millis = 20;
/// Default verify interval (Nacos `...verify.intervalMs`).
pub const DEFAULT_VERIFY_INTERVAL: Millis = 5_000;
/// Default number of digest shards (must be equal on every node).
pub const DEFAULT_SHARDS: u32 = 1024;
/// Default replica lease (Nacos `nacos.naming.client.expired.time`).
pub const DEFAULT_LEASE: Millis = 180_000;
/// Default heartbeat timeout after which an ip:port instance turns unhealthy.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Millis = 15_000;
/// Default timeout after which an ip:port instance without heartbeats is deleted.
pub const DEFAULT_DELETE_TIMEOUT: Millis = 30_000;
/// Default heartbeat interval advertised to clients.
pub const DEFAULT_HEARTBEAT_INTERVAL: Millis = 5_000;
/// Default period of the owner's heartbeat check and of the replica lease sweep.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Millis = 5_000;
/// Default time a service without instances is kept before its index and names are freed
/// (Nacos `nacos.naming.clean.empty-service.expired-time`).
pub const DEFAULT_EMPTY_SERVICE_TTL: Millis = 60_000;
/// Default number of removed or replaced store entries a thread gathers per shard before
/// they are freed (see [`Config::reclaim_batch`]): 64. Each batch costs a process-wide
/// memory barrier (`membarrier`, an interrupt to every CPU running the process: ~30 us on
/// a 2-vCPU VM); with 8 a Nacos registration cost about one, 15 % of its CPU
/// (results/side-by-side-2026-12-05.md). Memory after churn is the same (every name
/// reclaimed, `name_churn`: RSS 47 MiB above the start with 64, 55 MiB with 8).
pub const DEFAULT_RECLAIM_BATCH: usize = 64;
/// Default number of clients from which a registry's writes ask for their memory ahead
/// (see [`Config::prefetch_from`]): 65,536, where its shards' tables (16 bytes a slot,
/// 60-80 % full) pass 1.3 MiB, more than a core's L2 cache on the machines measured.
pub const DEFAULT_PREFETCH_FROM: usize = 65_536;
/// Default lifetime of a deletion tombstone.
pub const DEFAULT_TOMBSTONE_TTL: Millis = 60_000;
/// Default fraction of an unreachable peer's clients that may expire per lease period.
pub const DEFAULT_SELF_PRESERVATION_FRACTION: f64 = 0.15;
/// Default member probe period (Nacos `MemberInfoReportTask`).
pub const DEFAULT_PROBE_INTERVAL: Millis = 2_000;
/// Default consecutive failed probes after which a member is DOWN.
pub const DEFAULT_PROBE_DOWN_AFTER: u32 = 3;
/// Default snapshot chunk size in encoded bytes.
pub const DEFAULT_SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Default delay before a failed snapshot load tries the next peer.
pub const DEFAULT_LOAD_RETRY_DELAY: Millis = 1_000;
/// Default settle time after a change of the member list (see
/// [`Config::member_change_settle`]): twice the default DNS re-resolution period.
pub const DEFAULT_MEMBER_CHANGE_SETTLE: Millis = 10_000;

/// How an owner verifies its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// Per-shard digests; only mismatched shards are listed and repaired (default).
    #[default]
    Digest,
    /// Nacos 2.x: one verify request per owned client per peer every interval.
    PerClient,
}

impl VerifyMode {
    /// Parses `digest` or `per-client` (also `nacos`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "digest" => Some(Self::Digest),
            "per-client" | "nacos" => Some(Self::PerClient),
            _ => None,
        }
    }
}

/// Protocol configuration of one node. Every node of a cluster should use the same.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Delay that merges changes before they are synced; the window is anchored at the
    /// first pending change of a client. 0 syncs at the next flush. Only a partial batch
    /// waits it out: once a peer's pending clients fill a batch, it is sent at once.
    pub sync_delay: Millis,
    /// Delay before a failed batch is retried; doubles on each consecutive failure.
    pub sync_retry_delay: Millis,
    /// Cap of the growing retry delay.
    pub sync_retry_max_delay: Millis,
    /// Timeout of one peer request, enforced by the driver. Also the grace period for
    /// which a freshly synced client is protected from verify's removal of extras.
    pub peer_timeout: Millis,
    /// Most clients per sync batch (1 reproduces Nacos's per-client sync).
    pub batch_max_entries: usize,
    /// How many clients pending for a peer send a batch before the sync delay (at most
    /// `batch_max_entries`, or what `batch_max_bytes` holds): the batch then takes up to
    /// `batch_max_entries` of them. A burst faster than this a delay leaves early; a
    /// backlog (every slot busy) still leaves in batches of up to `batch_max_entries`.
    pub batch_early_entries: usize,
    /// Most encoded bytes per sync batch or verify list.
    pub batch_max_bytes: usize,
    /// Most sync batches in flight to one peer. With `batch_max_bytes` it bounds what a
    /// node holds for one peer in flight (and what a peer can make a slow node queue):
    /// `max_inflight_batches × batch_max_bytes` encoded, 4 MiB by default.
    pub max_inflight_batches: usize,
    /// Within a burst (for one sync delay after a full batch left early for a peer), a
    /// partial batch takes the clients pending for a tenth of the sync delay; once no
    /// client has become pending for this long (the burst's writes stopped), it takes
    /// every client pending: the rest of a burst has nothing left to merge with. A trickle
    /// waits the whole delay.
    pub burst_quiet: Millis,
    /// Period of verify rounds.
    pub verify_interval: Millis,
    /// Digest shards or Nacos's per-client verify.
    pub verify_mode: VerifyMode,
    /// Number of digest shards; part of the peer protocol.
    pub shards: u32,
    /// A replica drops a client whose lease was renewed by neither sync nor verify for this long.
    pub lease: Millis,
    /// Default heartbeat timeout (ip:port instances turn unhealthy).
    pub heartbeat_timeout: Millis,
    /// Default delete timeout (ip:port instances are removed).
    pub delete_timeout: Millis,
    /// Heartbeat interval advertised to clients.
    pub heartbeat_interval: Millis,
    /// Period of the heartbeat check and the lease sweep.
    pub health_check_interval: Millis,
    /// How long a deletion's tombstone blocks older state.
    pub tombstone_ttl: Millis,
    /// How long a service without instances is kept before its index, and the names only
    /// it used, are freed.
    pub empty_service_ttl: Millis,
    /// Removed and replaced entries of the lock-free store maps (one per shard, and the
    /// service map) are freed in batches: a thread frees its batch of a map once it holds
    /// this many (each batch costs one process-wide memory barrier, a system call). Until
    /// then they stay allocated, so after a burst of writes up to `shards x threads x
    /// reclaim_batch` old client versions can wait: smaller is less memory held, larger
    /// fewer barriers.
    pub reclaim_batch: usize,
    /// Clients held from which a replica's apply and an owner's batch of writes ask for
    /// each write's memory a write or so ahead (cache prefetch hints: its shard, its
    /// table's array, the slot its lookup starts at; on a replica also its service's
    /// index). In a large registry those are
    /// misses that the hints overlap with the write before; in a small one they are in
    /// the cache anyway and the hints only cost instructions (~160 a replicated change: the
    /// batch gathered first ~70, the hints ~85).
    /// 0: always; `usize::MAX`: never.
    pub prefetch_from: usize,
    /// Fraction (0..=1) of an unreachable peer's clients that may expire per lease period;
    /// 1 disables self-preservation.
    pub self_preservation_fraction: f64,
    /// Member probe period.
    pub probe_interval: Millis,
    /// Consecutive failed probes that make a member DOWN.
    pub probe_down_after: u32,
    /// Snapshot chunk size in encoded bytes.
    pub snapshot_chunk_bytes: usize,
    /// Delay before a failed snapshot load is retried with the next peer.
    pub load_retry_delay: Millis,
    /// After this node's member list changed, for this long it sends no verify; and a
    /// replica that moved to a new owner within this long is not dropped on that owner's
    /// verify. Nodes learn a new list at different moments, and until all have it (and
    /// the old owners have handed their clients over) an owner's verify can omit clients
    /// a peer attributes to it. Longer than the largest difference between nodes
    /// learning a list (the member file or DNS period).
    pub member_change_settle: Millis,
    /// Router of ip:port clients.
    pub router: RouterKind,
    /// Most services one client may publish to at once.
    pub max_services_per_client: usize,
    /// Most clients this node holds as their owner; a registration that would create one
    /// more is refused (replicas of other owners' clients never are).
    pub max_clients: usize,
    /// Most services with instances per namespace; a registration by a client of this
    /// node that would add one more is refused (a sync from another owner never is).
    pub max_services_per_namespace: usize,
    /// Seed of the in-memory hash maps. `None` (the default) picks a random seed per
    /// process, which resists hash-collision attacks; the simulator fixes it so that a
    /// seed replays exactly, iteration orders included.
    pub hash_seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sync_delay: DEFAULT_SYNC_DELAY,
            sync_retry_delay: DEFAULT_SYNC_RETRY_DELAY,
            sync_retry_max_delay: DEFAULT_SYNC_RETRY_MAX_DELAY,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            batch_max_entries: DEFAULT_BATCH_MAX_ENTRIES,
            batch_early_entries: DEFAULT_BATCH_EARLY_ENTRIES,
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            max_inflight_batches: DEFAULT_MAX_INFLIGHT_BATCHES,
            burst_quiet: DEFAULT_BURST_QUIET,
            verify_interval: DEFAULT_VERIFY_INTERVAL,
            verify_mode: VerifyMode::Digest,
            shards: DEFAULT_SHARDS,
            lease: DEFAULT_LEASE,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            delete_timeout: DEFAULT_DELETE_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            health_check_interval: DEFAULT_HEALTH_CHECK_INTERVAL,
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
            empty_service_ttl: DEFAULT_EMPTY_SERVICE_TTL,
            reclaim_batch: DEFAULT_RECLAIM_BATCH,
            prefetch_from: DEFAULT_PREFETCH_FROM,
            self_preservation_fraction: DEFAULT_SELF_PRESERVATION_FRACTION,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            probe_down_after: DEFAULT_PROBE_DOWN_AFTER,
            snapshot_chunk_bytes: DEFAULT_SNAPSHOT_CHUNK_BYTES,
            load_retry_delay: DEFAULT_LOAD_RETRY_DELAY,
            member_change_settle: DEFAULT_MEMBER_CHANGE_SETTLE,
            router: RouterKind::NacosModulo,
            max_services_per_client: crate::limits::MAX_SERVICES_PER_CLIENT,
            max_clients: crate::limits::MAX_CLIENTS,
            max_services_per_namespace: crate::limits::MAX_SERVICES_PER_NAMESPACE,
            hash_seed: None,
        }
    }
}

/// A configuration value that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration {setting}: {reason}")]
pub struct ConfigError {
    /// The setting's name.
    pub setting: &'static str,
    /// Why it is invalid.
    pub reason: String,
}

impl Config {
    /// Checks ranges and relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |setting, reason: String| Err(ConfigError { setting, reason });
        if self.reclaim_batch == 0 {
            return err("reclaim_batch", "must be at least 1".into());
        }
        if self.sync_retry_delay == 0 {
            return err("sync_retry_delay", "must be positive".into());
        }
        if self.sync_retry_max_delay < self.sync_retry_delay {
            return err(
                "sync_retry_max_delay",
                format!(
                    "must be at least sync_retry_delay ({} ms)",
                    self.sync_retry_delay
                ),
            );
        }
        if self.peer_timeout == 0 {
            return err("peer_timeout", "must be positive".into());
        }
        if self.batch_max_entries == 0 {
            return err("batch_max_entries", "must be at least 1".into());
        }
        if self.batch_early_entries == 0 {
            return err("batch_early_entries", "must be at least 1".into());
        }
        if self.batch_max_bytes < 1024 {
            return err("batch_max_bytes", "must be at least 1024".into());
        }
        if self.max_inflight_batches == 0 {
            return err("max_inflight_batches", "must be at least 1".into());
        }
        if self.verify_interval == 0 {
            return err("verify_interval", "must be positive".into());
        }
        if self.shards == 0 || self.shards > 65_536 {
            return err("shards", format!("{} is outside 1..=65536", self.shards));
        }
        if self.lease <= self.verify_interval {
            return err(
                "lease",
                format!(
                    "must exceed verify_interval ({} ms), or every replica expires between rounds",
                    self.verify_interval
                ),
            );
        }
        if self.heartbeat_timeout == 0 || self.delete_timeout < self.heartbeat_timeout {
            return err(
                "delete_timeout",
                "must be at least heartbeat_timeout, which must be positive".into(),
            );
        }
        if self.health_check_interval == 0 || self.probe_interval == 0 {
            return err("health_check_interval", "periods must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.self_preservation_fraction) {
            return err(
                "self_preservation_fraction",
                format!("{} is outside 0..=1", self.self_preservation_fraction),
            );
        }
        if self.probe_down_after == 0 {
            return err("probe_down_after", "must be at least 1".into());
        }
        if self.snapshot_chunk_bytes < 1024 {
            return err("snapshot_chunk_bytes", "must be at least 1024".into());
        }
        if self.tombstone_ttl < self.peer_timeout {
            return err(
                "tombstone_ttl",
                "must be at least peer_timeout, or a late sync could resurrect a client".into(),
            );
        }
        if self.max_services_per_client == 0 {
            return err("max_services_per_client", "must be at least 1".into());
        }
        if self.max_clients == 0 {
            return err("max_clients", "must be at least 1".into());
        }
        if self.max_services_per_namespace == 0 {
            return err("max_services_per_namespace", "must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nacos_like() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.sync_delay, 1000);
        assert_eq!(c.sync_retry_delay, 3000);
        assert_eq!(c.verify_interval, 5000);
        assert_eq!(c.lease, 180_000);
    }

    #[test]
    fn nonsense_is_rejected_with_the_setting_name() {
        let c = Config {
            lease: 1000,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().setting, "lease");
        let c = Config {
            shards: 0,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().setting, "shards");
    }
}
