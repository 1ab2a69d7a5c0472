//! The command line of `distro-server`: the flags ([`Cli`], clap derive) and their
//! conversion, in one step, into a validated [`ServerConfig`]; nothing past
//! [`Cli::into_config`] sees a clap type.
//!
//! Every flag can also be set by the environment variable named in `--help`. Durations
//! take a unit (`250ms`, `5s`, `3m`; a bare number is refused), sizes take `KiB`, `MiB`
//! or `GiB`, counts take `k`/`m` ([`distro_core::units`], shared with `loadgen`).
//! `--port 0` lets the OS choose the main port, and the SDK and cluster ports too unless
//! `--sdk-port` / `--cluster-port` name them; the node logs the ports it got.

use clap::Parser;
use distro_core::{RouterKind, VerifyMode};
use distro_server::ServerConfig;
use distro_server::nacos::NacosConfig;
use std::net::IpAddr;
use std::time::Duration;

use distro_core::units::{
    parse_count_usize as count, parse_duration as duration, parse_millis as millis,
    parse_size as size,
};

/// A Distro cluster node, compatible with Nacos 2.x SDKs and the Nacos Open API v1.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub(crate) struct Cli {
    /// Runtime worker threads [default: one per CPU this process may use: the CPUs of its
    /// affinity mask, bounded by its cgroup's CPU quota (`available_parallelism`)].
    #[arg(long, env = "DISTRO_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) threads: Option<u16>,
    /// Main (HTTP) port; the SDK gRPC port is port+1000 and the cluster port port+1001.
    /// 0: the OS chooses all three (each logged at start) unless named below.
    #[arg(long, env = "DISTRO_PORT", default_value_t = 8848)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "DISTRO_BIND", default_value = "0.0.0.0")]
    bind: IpAddr,
    /// SDK gRPC port [default: port+1000; with --port 0, chosen by the OS].
    #[arg(long, env = "DISTRO_SDK_PORT")]
    sdk_port: Option<u16>,
    /// Cluster gRPC port [default: port+1001; with --port 0, chosen by the OS]. Peers always
    /// dial member port+1001.
    #[arg(long, env = "DISTRO_CLUSTER_PORT")]
    cluster_port: Option<u16>,
    /// This node's member address ip:port [default: bind:port, or the local entry of --members].
    #[arg(long, env = "DISTRO_ADVERTISE")]
    advertise: Option<String>,
    /// Cluster members, ip:port of each main port, comma separated (no members: standalone).
    #[arg(long, env = "DISTRO_MEMBERS", value_delimiter = ',')]
    members: Vec<String>,
    /// A file with one member ip:port per line, like Nacos's cluster.conf ('#' starts a
    /// comment). Watched: a change of the file changes the member list while running.
    #[arg(long, env = "DISTRO_MEMBERS_FILE")]
    members_file: Option<std::path::PathBuf>,
    /// How often --members-file is read again.
    #[arg(long, env = "DISTRO_MEMBERS_FILE_INTERVAL", default_value = "1s", value_parser = duration)]
    members_file_interval: Duration,
    /// Members from DNS, NAME:PORT: every address NAME resolves to, with PORT (a
    /// Kubernetes headless Service, a network alias shared by the nodes). Resolved at
    /// start and again every --members-dns-interval.
    #[arg(long, env = "DISTRO_MEMBERS_DNS")]
    members_dns: Option<String>,
    /// How often --members-dns is resolved again.
    #[arg(long, env = "DISTRO_MEMBERS_DNS_INTERVAL", default_value = "5s", value_parser = duration)]
    members_dns_interval: Duration,
    /// With --members-dns: ask this DNS server (IP:PORT, over UDP, A records) instead of
    /// the system's resolver.
    #[arg(long, env = "DISTRO_MEMBERS_DNS_SERVER", requires = "members_dns")]
    members_dns_server: Option<std::net::SocketAddr>,
    /// Distinct member addresses this node can know over its life (members that join
    /// and leave included); each costs a row of the per-member tables.
    #[arg(long, env = "DISTRO_MEMBER_SLOTS", default_value_t = distro_core::member::DEFAULT_MEMBER_SLOTS)]
    member_slots: usize,
    /// With --members-dns: wait at start until the name gives this many addresses (one
    /// of them this machine's), at most --members-dns-timeout.
    #[arg(long, env = "DISTRO_MEMBERS_DNS_EXPECT", default_value_t = 1)]
    members_dns_expect: usize,
    /// With --members-dns: the longest wait for --members-dns-expect addresses.
    #[arg(long, env = "DISTRO_MEMBERS_DNS_TIMEOUT", default_value = "60s", value_parser = duration)]
    members_dns_timeout: Duration,
    /// Shared secret every peer RPC must carry; without it anyone reaching the cluster port can write.
    #[arg(long, env = "DISTRO_CLUSTER_TOKEN", hide_env_values = true)]
    cluster_token: Option<String>,
    /// HTTPS on the main port and TLS on the SDK port: the certificate chain (PEM). Needs
    /// --tls-key.
    #[arg(long, env = "DISTRO_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "DISTRO_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Mutual TLS on the cluster port: this node's certificate (PEM chain). Each node's
    /// certificate must name its member IP (subjectAltName IP). Needs --cluster-tls-key and
    /// --cluster-tls-ca; an alternative or an addition to --cluster-token.
    #[arg(long, env = "DISTRO_CLUSTER_TLS_CERT", requires_all = ["cluster_tls_key", "cluster_tls_ca"])]
    cluster_tls_cert: Option<std::path::PathBuf>,
    /// The private key of --cluster-tls-cert (PEM).
    #[arg(long, env = "DISTRO_CLUSTER_TLS_KEY", requires = "cluster_tls_cert")]
    cluster_tls_key: Option<std::path::PathBuf>,
    /// The CA (PEM) that signs every node's certificate; peers without one are refused.
    #[arg(long, env = "DISTRO_CLUSTER_TLS_CA", requires = "cluster_tls_cert")]
    cluster_tls_ca: Option<std::path::PathBuf>,
    /// Reads a password from the first line of stdin, prints its bcrypt hash (cost 10) for
    /// the users file, and exits.
    #[arg(long)]
    pub(crate) hash_password: bool,
    /// Turns on Nacos-compatible auth: a file of users (bcrypt password hashes, roles) and
    /// role permissions on namespace:group:service (see the README's "Security"). Off by
    /// default: every client may read and write. Needs --auth-token-secret(-file).
    #[arg(long, env = "DISTRO_AUTH_USERS")]
    auth_users: Option<std::path::PathBuf>,
    /// Secret that signs access tokens (at least 32 bytes); the same on every node, so a
    /// token from one node is valid on all of them.
    #[arg(
        long,
        env = "DISTRO_AUTH_TOKEN_SECRET",
        hide_env_values = true,
        conflicts_with = "auth_token_secret_file"
    )]
    auth_token_secret: Option<String>,
    /// A file holding the token secret (surrounding whitespace is ignored).
    #[arg(long, env = "DISTRO_AUTH_TOKEN_SECRET_FILE")]
    auth_token_secret_file: Option<std::path::PathBuf>,
    /// Lifetime of an access token (Nacos: 18000 s).
    #[arg(long, env = "DISTRO_AUTH_TOKEN_TTL", default_value = "5h", value_parser = duration)]
    auth_token_ttl: Duration,
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
    /// Within a burst, once no client has become pending for this long (the writes
    /// stopped), a partial sync batch takes every client pending (while they keep coming,
    /// those pending for a tenth of the sync delay; a trickle waits the whole delay).
    #[arg(long, env = "DISTRO_BURST_QUIET", default_value = "20ms", value_parser = millis)]
    burst_quiet: u64,
    /// Most clients in one sync batch (1 reproduces Nacos's per-client sync).
    #[arg(long, env = "DISTRO_BATCH_MAX_ENTRIES", default_value = "4000", value_parser = count)]
    batch_max_entries: usize,
    /// Clients pending for a peer that send a sync batch before the delay (the batch then
    /// takes up to --batch-max-entries of them).
    #[arg(long, env = "DISTRO_BATCH_EARLY_ENTRIES", default_value = "1000", value_parser = count)]
    batch_early_entries: usize,
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
    /// How long a service without instances is kept before its index and the names only it
    /// used are freed (Nacos's empty-service expiry).
    #[arg(long, env = "DISTRO_EMPTY_SERVICE_TTL", default_value = "60s", value_parser = millis)]
    empty_service_ttl: u64,
    /// Removed or replaced store entries a thread gathers per shard before they are freed
    /// (each batch costs one process-wide memory barrier); smaller holds less memory after
    /// a burst of writes.
    #[arg(long, env = "DISTRO_RECLAIM_BATCH", default_value = "64", value_parser = count)]
    reclaim_batch: usize,
    /// Clients held from which a replica's apply and an owner's batch of writes ask for
    /// each write's memory ahead (cache prefetch hints); 0: always; a count above any
    /// registry (1g): never.
    #[arg(long, env = "DISTRO_PREFETCH_FROM", default_value = "65536", value_parser = count)]
    prefetch_from: usize,
    /// Most services one client may publish to.
    #[arg(long, env = "DISTRO_MAX_SERVICES_PER_CLIENT", default_value = "1000", value_parser = count)]
    max_services_per_client: usize,
    /// Most clients (ip:port and connection clients) this node holds as their owner; a
    /// registration that would create one more is refused naming the limit. Replicas of
    /// other nodes' clients do not count and are never refused.
    #[arg(long, env = "DISTRO_MAX_CLIENTS", default_value = "1000000", value_parser = count)]
    max_clients: usize,
    /// Most services with instances per namespace; a registration through this node that
    /// would add one more is refused naming the limit (syncs from other nodes never are).
    #[arg(long, env = "DISTRO_MAX_SERVICES", default_value = "1000000", value_parser = count)]
    max_services: usize,
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
    /// The SDK port listens on one `SO_REUSEPORT` socket per runtime thread, each with its
    /// own accept loop (the kernel spreads new connections over them); off: one socket.
    /// Helps when many connections arrive at once; another process of the same user could
    /// bind the port too.
    #[arg(long, env = "DISTRO_SDK_REUSEPORT")]
    sdk_reuseport: bool,
    /// Let the kernel back the process's memory with transparent huge pages (where the
    /// system allows them). Off by default: zeroing a 2 MiB page at each first touch cost
    /// more CPU than the fewer TLB misses saved (README, Memory).
    #[arg(long, env = "DISTRO_TRANSPARENT_HUGE_PAGES")]
    pub(crate) transparent_huge_pages: bool,
    /// A Nacos SDK connection that leaves this many pushes in a row unacknowledged is
    /// closed (its SDK reconnects and subscribes again).
    #[arg(long, env = "DISTRO_MAX_PUSH_FAILURES", default_value = "10", value_parser = count)]
    max_push_failures: usize,
    /// Period of the protocol driver's ticks.
    #[arg(long, env = "DISTRO_TICK", default_value = "100ms", value_parser = duration)]
    tick: Duration,
    /// Period of the driver's sync flushes between ticks (what is due to peers leaves).
    #[arg(long, env = "DISTRO_SYNC_FLUSH", default_value = "20ms", value_parser = duration)]
    sync_flush: Duration,
    /// Bound on flushing pending syncs at shutdown.
    #[arg(long, env = "DISTRO_SHUTDOWN_FLUSH", default_value = "5s", value_parser = duration)]
    shutdown_flush: Duration,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "DISTRO_LOG", default_value = "info")]
    log_level: String,
}

impl Cli {
    /// The log filter (`--log-level`); `info` when it does not parse.
    pub(crate) fn log_filter(&self) -> tracing_subscriber::EnvFilter {
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    }

    /// `--hash-password`: the bcrypt hash of the first line of `input` (without its line
    /// end); an empty password is refused.
    pub(crate) fn hash_password(input: &mut impl std::io::BufRead) -> anyhow::Result<String> {
        let mut line = String::new();
        input.read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            anyhow::bail!("--hash-password: no password on stdin (give it on the first line)");
        }
        Ok(bcrypt::hash(password, 10)?)
    }

    /// The auth of `--auth-users` and the token secret (`None`: off).
    fn auth(&self) -> anyhow::Result<Option<std::sync::Arc<distro_server::auth::Auth>>> {
        let secret = match (&self.auth_token_secret, &self.auth_token_secret_file) {
            (Some(s), _) => Some(s.trim().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot read --auth-token-secret-file {}: {e}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        match (&self.auth_users, secret) {
            (None, None) => Ok(None),
            (None, Some(_)) => anyhow::bail!(
                "--auth-token-secret is set but --auth-users is not: auth needs a users file"
            ),
            (Some(_), None) => anyhow::bail!(
                "--auth-users needs --auth-token-secret or --auth-token-secret-file (the same \
                 secret on every node)"
            ),
            (Some(path), Some(secret)) => {
                let auth = distro_server::auth::Auth::from_file(
                    path,
                    secret.as_bytes(),
                    self.auth_token_ttl,
                )
                .map_err(|e| anyhow::anyhow!("--auth-users: {e}"))?;
                Ok(Some(std::sync::Arc::new(auth)))
            }
        }
    }

    /// The validated configuration the flags describe.
    pub(crate) fn into_config(self) -> anyhow::Result<ServerConfig> {
        let auth = self.auth()?;
        let cluster_tls = match (
            &self.cluster_tls_cert,
            &self.cluster_tls_key,
            &self.cluster_tls_ca,
        ) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(distro_server::tls::ClusterTls::from_files(cert, key, ca)?)
            }
            _ => None,
        };
        let http_tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(distro_server::tls::HttpTls::from_files(cert, key)?),
            _ => None,
        };
        let mut members = self.members;
        members.retain(|m| !m.trim().is_empty());
        let mut members_dns_at_start = Vec::new();
        if let Some(spec) = &self.members_dns {
            let port = self.port;
            members_dns_at_start.extend(crate::members_dns::resolve_members(
                spec,
                self.members_dns_server,
                self.members_dns_expect,
                self.members_dns_timeout,
                |a| a.port() == port && std::net::UdpSocket::bind((a.ip(), 0)).is_ok(),
            )?);
        }
        if !(1..=distro_core::member::MAX_MEMBERS).contains(&self.member_slots) {
            anyhow::bail!(
                "--member-slots {} is outside 1..={}",
                self.member_slots,
                distro_core::member::MAX_MEMBERS
            );
        }
        let protocol = distro_core::Config {
            sync_delay: self.sync_delay,
            sync_retry_delay: self.sync_retry_delay,
            sync_retry_max_delay: self.sync_retry_max_delay,
            peer_timeout: self.peer_timeout,
            batch_max_entries: self.batch_max_entries,
            batch_early_entries: self.batch_early_entries,
            batch_max_bytes: self.batch_max_bytes,
            max_inflight_batches: self.max_inflight_batches,
            burst_quiet: self.burst_quiet,
            verify_interval: self.verify_interval,
            verify_mode: VerifyMode::parse(&self.verify_mode).unwrap_or_default(),
            shards: self.shards,
            lease: self.lease,
            heartbeat_timeout: self.heartbeat_timeout,
            delete_timeout: self.delete_timeout,
            heartbeat_interval: self.heartbeat_interval,
            health_check_interval: distro_core::config::DEFAULT_HEALTH_CHECK_INTERVAL,
            tombstone_ttl: self.tombstone_ttl,
            empty_service_ttl: self.empty_service_ttl,
            reclaim_batch: self.reclaim_batch,
            prefetch_from: self.prefetch_from,
            self_preservation_fraction: self.self_preservation,
            probe_interval: self.probe_interval,
            probe_down_after: self.probe_down_after,
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
            load_retry_delay: self.load_retry_delay,
            router: RouterKind::parse(&self.router).unwrap_or_default(),
            max_services_per_client: self.max_services_per_client,
            max_clients: self.max_clients,
            max_services_per_namespace: self.max_services,
            hash_seed: None,
            member_change_settle: self
                .members_file_interval
                .max(self.members_dns_interval)
                .as_millis() as u64
                * 2,
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
            members_file: self.members_file,
            members_file_interval: self.members_file_interval,
            members_dns: self.members_dns,
            members_dns_at_start,
            members_dns_server: self.members_dns_server,
            members_dns_interval: self.members_dns_interval,
            member_slots: self.member_slots,
            protocol,
            cluster_token: self.cluster_token.filter(|t| !t.is_empty()),
            auth,
            cluster_tls,
            http_tls,
            tick: self.tick,
            sync_flush: self.sync_flush,
            nacos,
            shutdown_flush: self.shutdown_flush,
            max_tcp_connections: self.max_tcp_connections,
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            sdk_reuseport: self.sdk_reuseport,
            ..ServerConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_optional_and_at_least_one() {
        let c = Cli::try_parse_from(["distro-server"]).unwrap();
        assert_eq!(c.threads, None);
        let c = Cli::try_parse_from(["distro-server", "--threads", "4"]).unwrap();
        assert_eq!(c.threads, Some(4));
        let e = Cli::try_parse_from(["distro-server", "--threads", "0"]).expect_err("zero threads");
        assert!(e.to_string().contains("--threads"), "{e}");
    }

    #[test]
    fn transparent_huge_pages_are_off_unless_asked() {
        let c = Cli::try_parse_from(["distro-server"]).unwrap();
        assert!(!c.transparent_huge_pages);
        let c = Cli::try_parse_from(["distro-server", "--transparent-huge-pages"]).unwrap();
        assert!(c.transparent_huge_pages);
    }

    #[test]
    fn sdk_reuseport_is_off_unless_asked() {
        let c = Cli::try_parse_from(["distro-server"]).unwrap();
        assert!(!c.into_config().unwrap().sdk_reuseport);
        let c = Cli::try_parse_from(["distro-server", "--sdk-reuseport"]).unwrap();
        assert!(c.into_config().unwrap().sdk_reuseport);
    }

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
        assert_eq!(c.tick, distro_server::server::DEFAULT_TICK);
        assert_eq!(c.sync_flush, distro_server::server::DEFAULT_SYNC_FLUSH);
        let c = Cli::parse_from([
            "distro-server",
            "--burst-quiet",
            "5ms",
            "--sync-flush",
            "5ms",
        ])
        .into_config()
        .unwrap();
        assert_eq!(c.protocol.burst_quiet, 5);
        assert_eq!(c.sync_flush, Duration::from_millis(5));
        let cli = Cli::parse_from(["distro-server", "--sync-flush", "0s"]);
        let e = cli
            .into_config()
            .expect_err("a flush period of 0 is refused");
        assert!(e.to_string().contains("--sync-flush"), "{e}");
        let cli = Cli::parse_from(["distro-server", "--lease", "1s"]);
        assert!(
            cli.into_config().is_err(),
            "lease below the verify interval is refused"
        );
        for flag in ["--max-clients", "--max-services"] {
            let cli = Cli::parse_from(["distro-server", flag, "0"]);
            let e = cli.into_config().expect_err("a limit of 0 is refused");
            assert!(format!("{e:#}").contains("must be at least 1"), "{e:#}");
        }
    }

    fn config(args: &[&str]) -> anyhow::Result<ServerConfig> {
        Cli::try_parse_from(std::iter::once("distro-server").chain(args.iter().copied()))?
            .into_config()
    }

    #[test]
    fn port_zero_lets_the_os_choose_every_port_unless_one_is_named() {
        let c = config(&["--port", "0"]).unwrap();
        assert_eq!((c.port, c.sdk_port(), c.cluster_port()), (0, 0, 0));
        let c = config(&["--port", "0", "--sdk-port", "9000"]).unwrap();
        assert_eq!((c.sdk_port(), c.cluster_port()), (9000, 0));
        let c = config(&["--port", "7000", "--cluster-port", "7100"]).unwrap();
        assert_eq!((c.sdk_port(), c.cluster_port()), (8000, 7100));
        let e = config(&["--port", "0", "--members", "10.0.0.1:8848,10.0.0.2:8848"])
            .expect_err("peers need to know the port");
        assert!(e.to_string().contains("--port 0"), "{e}");
    }

    #[test]
    fn a_main_port_without_room_for_the_offsets_is_refused() {
        let e = config(&["--port", "65000"]).expect_err("65000 + 1000 is past 65535");
        let msg = e.to_string();
        assert!(msg.contains("--sdk-port") && msg.contains("65535"), "{msg}");
        let c = config(&["--port", "65000", "--sdk-port", "1", "--cluster-port", "2"]).unwrap();
        assert_eq!((c.sdk_port(), c.cluster_port()), (1, 2));
    }

    #[test]
    fn flags_reach_the_config() {
        let dir = std::env::temp_dir().join(format!("distro-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cluster.conf");
        std::fs::write(&file, "# members\n10.0.0.2:8848\n\n10.0.0.3:8848 # third\n").unwrap();
        let c = config(&[
            "--members",
            "10.0.0.1:8848",
            "--members-file",
            file.to_str().unwrap(),
            "--advertise",
            "10.0.0.1:8848",
            "--verify-mode",
            "per-client",
            "--router",
            "rendezvous",
            "--sync-delay",
            "250ms",
            "--batch-max-entries",
            "2k",
            "--max-message-bytes",
            "4MiB",
            "--max-clients",
            "50k",
            "--max-services",
            "300",
            "--cluster-token",
            "",
        ])
        .unwrap();
        let initial = c.initial_members().unwrap();
        let bad = dir.join("bad.conf");
        std::fs::write(&bad, "10.0.0.2:8848\n10.0.0.3\n").unwrap();
        let e = config(&["--members-file", bad.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(initial, ["10.0.0.1:8848", "10.0.0.2:8848", "10.0.0.3:8848"]);
        assert_eq!(c.members, ["10.0.0.1:8848"], "the fixed part");
        assert_eq!(c.protocol.verify_mode, VerifyMode::PerClient);
        assert_eq!(c.protocol.router, RouterKind::Rendezvous);
        assert_eq!(c.protocol.sync_delay, 250);
        assert_eq!(c.protocol.batch_max_entries, 2_000);
        assert_eq!(c.nacos.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(c.protocol.max_clients, 50_000);
        assert_eq!(c.protocol.max_services_per_namespace, 300);
        assert_eq!(c.cluster_token, None, "an empty token is no token");
        let c = config(&[
            "--members-dns",
            "localhost:8848",
            "--members-dns-timeout",
            "5s",
        ])
        .unwrap();
        assert!(
            c.members_dns_at_start.iter().any(|m| m == "127.0.0.1:8848"),
            "{:?}",
            c.members_dns_at_start
        );
        let e = config(&["--members-dns", "localhost"]).unwrap_err();
        assert!(e.to_string().contains("--members-dns"), "{e}");
        let e = config(&["--members-file", "/nonexistent/cluster.conf"]).unwrap_err();
        assert!(e.to_string().contains("--members-file"), "{e}");
    }

    #[test]
    fn hash_password_makes_a_hash_the_users_file_accepts() {
        let hash = Cli::hash_password(&mut "s3cret pw\n".as_bytes()).unwrap();
        assert!(bcrypt::verify("s3cret pw", &hash).unwrap(), "{hash}");
        let users = distro_server::auth::Users::parse(&format!("user u {hash} r")).unwrap();
        assert!(users.verify_password("u", "s3cret pw"));
        let e = Cli::hash_password(&mut "\n".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("no password"), "{e}");
    }

    #[test]
    fn auth_needs_users_and_a_secret_of_32_bytes() {
        let dir = std::env::temp_dir().join(format!("distro-cli-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users");
        let hash = bcrypt::hash_with_salt("pw", 4, [3; 16])
            .unwrap()
            .to_string();
        std::fs::write(&users, format!("user nacos {hash} ROLE_ADMIN\n")).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
        let u = users.to_str().unwrap();
        let s = secret.to_str().unwrap();
        assert!(config(&[]).unwrap().auth.is_none(), "off by default");
        let c = config(&["--auth-users", u, "--auth-token-secret-file", s]).unwrap();
        let auth = c.auth.expect("on");
        assert!(auth.login("nacos", "pw", 0).unwrap().global_admin);
        let e = config(&["--auth-users", u]).unwrap_err();
        assert!(e.to_string().contains("--auth-token-secret"), "{e}");
        let e = config(&["--auth-users", u, "--auth-token-secret", "short"]).unwrap_err();
        assert!(e.to_string().contains("at least 32"), "{e}");
        let e = config(&["--auth-token-secret-file", s]).unwrap_err();
        assert!(e.to_string().contains("--auth-users"), "{e}");
        let e = config(&[
            "--auth-users",
            "/nonexistent/users",
            "--auth-token-secret-file",
            s,
        ])
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/users"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cluster_tls_needs_its_three_files() {
        let e = config(&["--cluster-tls-cert", "/x/cert.pem"]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--cluster-tls-key") && msg.contains("--cluster-tls-ca"),
            "{msg}"
        );
        let e = config(&[
            "--cluster-tls-cert",
            "/nonexistent/cert.pem",
            "--cluster-tls-key",
            "/nonexistent/key.pem",
            "--cluster-tls-ca",
            "/nonexistent/ca.pem",
        ])
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--cluster-tls-cert /nonexistent/cert.pem"),
            "{msg}"
        );
    }
}
