//! The `distro-server` binary: parse the command line into a [`ServerConfig`], run.
//!
//! Every flag can also be set by the environment variable named in `--help`. Durations
//! take a unit (`250ms`, `5s`, `3m`; a bare number is refused), sizes take `KiB`, `MiB`
//! or `GiB`, counts take `k`/`m` ([`distro_core::units`], shared with `loadgen`).

use clap::Parser;
use distro_core::{RouterKind, VerifyMode};
use distro_server::ServerConfig;
use distro_server::nacos::NacosConfig;
use std::net::IpAddr;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use distro_core::units::{
    parse_count_usize as count, parse_duration as duration, parse_millis as millis,
    parse_size as size,
};

/// A Distro cluster node, compatible with Nacos 2.x SDKs and the Nacos Open API v1.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Main (HTTP) port; the SDK gRPC port is port+1000 and the cluster port port+1001.
    #[arg(long, env = "DISTRO_PORT", default_value_t = 8848)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "DISTRO_BIND", default_value = "0.0.0.0")]
    bind: IpAddr,
    /// SDK gRPC port [default: port+1000].
    #[arg(long, env = "DISTRO_SDK_PORT")]
    sdk_port: Option<u16>,
    /// Cluster gRPC port [default: port+1001]. Peers always dial member port+1001.
    #[arg(long, env = "DISTRO_CLUSTER_PORT")]
    cluster_port: Option<u16>,
    /// This node's member address ip:port [default: bind:port, or the local entry of --members].
    #[arg(long, env = "DISTRO_ADVERTISE")]
    advertise: Option<String>,
    /// Cluster members, ip:port of each main port, comma separated (no members: standalone).
    #[arg(long, env = "DISTRO_MEMBERS", value_delimiter = ',')]
    members: Vec<String>,
    /// A file with one member ip:port per line, like Nacos's cluster.conf ('#' starts a comment).
    #[arg(long, env = "DISTRO_MEMBERS_FILE")]
    members_file: Option<std::path::PathBuf>,
    /// Shared secret every peer RPC must carry; without it anyone reaching the cluster port can write.
    #[arg(long, env = "DISTRO_CLUSTER_TOKEN", hide_env_values = true)]
    cluster_token: Option<String>,
    /// Delay that merges changes before they are synced to peers.
    #[arg(long, env = "DISTRO_SYNC_DELAY", default_value = "1s", value_parser = millis)]
    sync_delay: u64,
    /// Delay before a failed sync batch is retried (doubles on repeated failure).
    #[arg(long, env = "DISTRO_SYNC_RETRY_DELAY", default_value = "3s", value_parser = millis)]
    sync_retry_delay: u64,
    /// Cap of the growing retry delay.
    #[arg(long, env = "DISTRO_SYNC_RETRY_MAX_DELAY", default_value = "30s", value_parser = millis)]
    sync_retry_max_delay: u64,
    /// Timeout of one peer request.
    #[arg(long, env = "DISTRO_PEER_TIMEOUT", default_value = "3s", value_parser = millis)]
    peer_timeout: u64,
    /// Period of verify rounds.
    #[arg(long, env = "DISTRO_VERIFY_INTERVAL", default_value = "5s", value_parser = millis)]
    verify_interval: u64,
    /// Verify by shard digests, or per client as Nacos does.
    #[arg(long, env = "DISTRO_VERIFY_MODE", default_value = "digest", value_parser = ["digest", "per-client"])]
    verify_mode: String,
    /// A replica drops a client not renewed by sync or verify for this long.
    #[arg(long, env = "DISTRO_LEASE", default_value = "180s", value_parser = millis)]
    lease: u64,
    /// An ip:port instance without heartbeats turns unhealthy after this.
    #[arg(long, env = "DISTRO_HEARTBEAT_TIMEOUT", default_value = "15s", value_parser = millis)]
    heartbeat_timeout: u64,
    /// An ip:port instance without heartbeats is deleted after this.
    #[arg(long, env = "DISTRO_DELETE_TIMEOUT", default_value = "30s", value_parser = millis)]
    delete_timeout: u64,
    /// Heartbeat interval advertised to HTTP clients.
    #[arg(long, env = "DISTRO_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = millis)]
    heartbeat_interval: u64,
    /// Member probe period.
    #[arg(long, env = "DISTRO_PROBE_INTERVAL", default_value = "2s", value_parser = millis)]
    probe_interval: u64,
    /// Consecutive failed probes after which a member is DOWN.
    #[arg(long, env = "DISTRO_PROBE_DOWN_AFTER", default_value_t = 3)]
    probe_down_after: u32,
    /// Router of ip:port clients: Nacos-compatible modulo hashing, or rendezvous hashing.
    #[arg(long, env = "DISTRO_ROUTER", default_value = "nacos", value_parser = ["nacos", "rendezvous"])]
    router: String,
    /// Most clients in one sync batch (1 reproduces Nacos's per-client sync).
    #[arg(long, env = "DISTRO_BATCH_MAX_ENTRIES", default_value = "1000", value_parser = count)]
    batch_max_entries: usize,
    /// Most bytes in one sync batch or verify list.
    #[arg(long, env = "DISTRO_BATCH_MAX_BYTES", default_value = "1MiB", value_parser = size)]
    batch_max_bytes: usize,
    /// Most sync batches in flight to one peer.
    #[arg(long, env = "DISTRO_MAX_INFLIGHT_BATCHES", default_value_t = 4)]
    max_inflight_batches: usize,
    /// Number of digest shards (equal on every node).
    #[arg(long, env = "DISTRO_SHARDS", default_value_t = 1024)]
    shards: u32,
    /// Snapshot chunk size.
    #[arg(long, env = "DISTRO_SNAPSHOT_CHUNK_BYTES", default_value = "1MiB", value_parser = size)]
    snapshot_chunk_bytes: usize,
    /// Delay before a failed snapshot load tries the next peer.
    #[arg(long, env = "DISTRO_LOAD_RETRY_DELAY", default_value = "1s", value_parser = millis)]
    load_retry_delay: u64,
    /// Fraction of an unreachable peer's clients that may expire (1 disables self-preservation).
    #[arg(long, env = "DISTRO_SELF_PRESERVATION", default_value_t = 0.15)]
    self_preservation: f64,
    /// How long a deletion tombstone blocks older state.
    #[arg(long, env = "DISTRO_TOMBSTONE_TTL", default_value = "60s", value_parser = millis)]
    tombstone_ttl: u64,
    /// Most services one client may publish to.
    #[arg(long, env = "DISTRO_MAX_SERVICES_PER_CLIENT", default_value = "1000", value_parser = count)]
    max_services_per_client: usize,
    /// Delay that merges changes before Nacos subscribers are pushed.
    #[arg(long, env = "DISTRO_PUSH_DELAY", default_value = "500ms", value_parser = duration)]
    push_delay: Duration,
    /// Most concurrent Nacos SDK connections.
    #[arg(long, env = "DISTRO_MAX_CONNECTIONS", default_value = "20000", value_parser = count)]
    max_connections: usize,
    /// Largest Nacos gRPC message.
    #[arg(long, env = "DISTRO_MAX_MESSAGE_BYTES", default_value = "10MiB", value_parser = size)]
    max_message_bytes: usize,
    /// Most open TCP connections on each port (main, SDK, cluster); beyond it a new
    /// connection gets a clear refusal (HTTP 503 / HTTP/2 GOAWAY) and is closed.
    #[arg(long, env = "DISTRO_MAX_TCP_CONNECTIONS", default_value = "30000", value_parser = count)]
    max_tcp_connections: usize,
    /// A new connection must send its first request (HTTP) or HTTP/2 preface (gRPC) within
    /// this, or it is closed (slow-loris); 0 disables.
    #[arg(long, env = "DISTRO_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    header_read_timeout: Duration,
    /// After each HTTP response, the next request on that connection must be complete
    /// within this, or the connection is closed (idle keep-alive, slow requests); 0
    /// disables.
    #[arg(long, env = "DISTRO_KEEP_ALIVE_TIMEOUT", default_value = "60s", value_parser = duration)]
    keep_alive_timeout: Duration,
    /// A Nacos SDK connection that leaves this many pushes in a row unacknowledged is
    /// closed (its SDK reconnects and subscribes again).
    #[arg(long, env = "DISTRO_MAX_PUSH_FAILURES", default_value = "10", value_parser = count)]
    max_push_failures: usize,
    /// Period of the protocol driver's ticks.
    #[arg(long, env = "DISTRO_TICK", default_value = "100ms", value_parser = duration)]
    tick: Duration,
    /// Bound on flushing pending syncs at shutdown.
    #[arg(long, env = "DISTRO_SHUTDOWN_FLUSH", default_value = "5s", value_parser = duration)]
    shutdown_flush: Duration,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "DISTRO_LOG", default_value = "info")]
    log_level: String,
}

impl Cli {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let mut members = self.members;
        if let Some(path) = &self.members_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read --members-file {}: {e}", path.display())
            })?;
            members.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or_default().trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
        }
        members.retain(|m| !m.trim().is_empty());
        let protocol = distro_core::Config {
            sync_delay: self.sync_delay,
            sync_retry_delay: self.sync_retry_delay,
            sync_retry_max_delay: self.sync_retry_max_delay,
            peer_timeout: self.peer_timeout,
            batch_max_entries: self.batch_max_entries,
            batch_max_bytes: self.batch_max_bytes,
            max_inflight_batches: self.max_inflight_batches,
            verify_interval: self.verify_interval,
            verify_mode: VerifyMode::parse(&self.verify_mode).unwrap_or_default(),
            shards: self.shards,
            lease: self.lease,
            heartbeat_timeout: self.heartbeat_timeout,
            delete_timeout: self.delete_timeout,
            heartbeat_interval: self.heartbeat_interval,
            health_check_interval: distro_core::config::DEFAULT_HEALTH_CHECK_INTERVAL,
            tombstone_ttl: self.tombstone_ttl,
            self_preservation_fraction: self.self_preservation,
            probe_interval: self.probe_interval,
            probe_down_after: self.probe_down_after,
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
            load_retry_delay: self.load_retry_delay,
            router: RouterKind::parse(&self.router).unwrap_or_default(),
            max_services_per_client: self.max_services_per_client,
            hash_seed: None,
        };
        let nacos = NacosConfig {
            push_delay: self.push_delay,
            max_connections: self.max_connections,
            max_message_bytes: self.max_message_bytes,
            max_push_failures: u32::try_from(self.max_push_failures).unwrap_or(u32::MAX),
            ..NacosConfig::default()
        };
        let config = ServerConfig {
            bind: self.bind,
            port: self.port,
            sdk_port: self.sdk_port,
            cluster_port: self.cluster_port,
            advertise: self.advertise,
            members,
            protocol,
            cluster_token: self.cluster_token.filter(|t| !t.is_empty()),
            tick: self.tick,
            nacos,
            shutdown_flush: self.shutdown_flush,
            max_tcp_connections: self.max_tcp_connections,
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            ..ServerConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// Raises the soft open-file limit towards what `--max-tcp-connections` on three ports
/// needs (and the hard limit when allowed, as root); warns when it stays below, since
/// connections beyond it then fail at accept (which backs off) rather than being refused
/// with a clear error.
fn raise_open_file_limit(config: &ServerConfig) {
    let wanted = (config.max_tcp_connections as u64)
        .saturating_mul(3)
        .saturating_add(1_024);
    match distro_server::open_files::raise_nofile(wanted) {
        Ok(l) if l.is_enough() => {
            tracing::debug!(from = l.before, to = l.now, "open-file limit");
        }
        Ok(l) => tracing::warn!(
            limit = l.now,
            hard = l.hard,
            wanted,
            "the open-file limit is below what --max-tcp-connections needs on three ports; \
             connections beyond it fail at accept instead of being refused with a reason \
             (raise `ulimit -n` or lower --max-tcp-connections)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("distro-server: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    raise_open_file_limit(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("distro-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(distro_server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distro-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_is_refused_with_the_flag_and_units() {
        let e = Cli::try_parse_from(["distro-server", "--sync-delay", "5"])
            .expect_err("a duration without a unit");
        let msg = e.to_string();
        assert!(
            msg.contains("--sync-delay") && msg.contains("ms, s, m or h"),
            "{msg}"
        );
        let e = Cli::try_parse_from(["distro-server", "--max-message-bytes", "1024"])
            .expect_err("a size without a unit");
        let msg = e.to_string();
        assert!(
            msg.contains("--max-message-bytes") && msg.contains("KiB"),
            "{msg}"
        );
    }

    #[test]
    fn cli_builds_a_valid_default_config() {
        let cli = Cli::parse_from(["distro-server"]);
        let c = cli.into_config().unwrap();
        assert_eq!(c.port, 8848);
        assert_eq!(c.sdk_port(), 9848);
        assert_eq!(c.cluster_port(), 9849);
        assert_eq!(c.protocol, distro_core::Config::default());
        let cli = Cli::parse_from(["distro-server", "--lease", "1s"]);
        assert!(
            cli.into_config().is_err(),
            "lease below the verify interval is refused"
        );
    }
}
