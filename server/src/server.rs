//! One running node: configuration, listeners, start and graceful shutdown.
//!
//! [`start`] takes bound listeners (so tests and LocalCluster bind port 0 and learn the
//! ports first) and returns a [`RunningServer`]: the HTTP API on the main port, the Nacos
//! services and the native API on the SDK port, the peer protocol on the cluster port, and
//! the driver ticking the core. [`RunningServer::shutdown`] stops accepting, ends the
//! streams, flushes pending syncs within a bound and returns.

use crate::admission::{Admission, HttpListener, Protocol};
use crate::api::http::{HttpState, router};
use crate::api::native::{NativeTokenCheck, RegistryService, WatchHub};
use crate::clock::Clock;
use crate::cluster::driver::Driver;
use crate::cluster::forward::Forwarder;
use crate::cluster::peer::{PeerService, TokenCheck};
use crate::cluster::peer_client::{MAX_PEER_MESSAGE_BYTES, PeerClients};
use crate::fault::PeerGate;
use crate::metrics::{Metrics, Page};
use crate::nacos::{NacosConfig, NacosFrontend};
use crate::proto::distro as pb;
use anyhow::Context as _;
use distro_core::{Config, MemberList, Node};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Default main (HTTP) port, as Nacos.
pub const DEFAULT_PORT: u16 = 8848;
/// SDK gRPC port = main port + this (Nacos `SDK_GRPC_PORT_DEFAULT_OFFSET`).
pub const SDK_PORT_OFFSET: u16 = 1000;
/// Cluster gRPC port = main port + this (Nacos `CLUSTER_GRPC_PORT_DEFAULT_OFFSET`).
pub const CLUSTER_PORT_OFFSET: u16 = 1001;
/// Default period of the driver's ticks (Nacos's delay engine: 100 ms).
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);
/// Default period of the driver's sync flushes between ticks: the protocol's default
/// burst quiet time ([`distro_core::config::DEFAULT_BURST_QUIET`]), so a burst's last
/// clients leave 20-40 ms after the burst's writes stop, not at the next tick.
pub const DEFAULT_SYNC_FLUSH: Duration =
    Duration::from_millis(distro_core::config::DEFAULT_BURST_QUIET);
/// Default bound on flushing pending syncs at shutdown.
pub const DEFAULT_SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// Largest native API message.
pub const MAX_NATIVE_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: IpAddr,
    /// Main (HTTP) port; 0: chosen by the OS.
    pub port: u16,
    /// SDK gRPC port; `None` means `port + 1000`, or chosen by the OS when `port` is 0.
    pub sdk_port: Option<u16>,
    /// Cluster gRPC port; `None` means `port + 1001`, or chosen by the OS when `port` is 0.
    pub cluster_port: Option<u16>,
    /// This node's member address (`ip:port` of its main port). `None`: `bind:port`, or,
    /// when binding every interface, the member entry with this port whose ip is local.
    pub advertise: Option<String>,
    /// Member addresses (`ip:port` of main ports), always members. Empty (and no file or
    /// name below): standalone.
    pub members: Vec<String>,
    /// A file of member addresses (one per line, `#` comments), read at start and watched
    /// while the node runs ([`crate::cluster::members_watch`]).
    pub members_file: Option<std::path::PathBuf>,
    /// `NAME:PORT` whose addresses are members, resolved again while the node runs.
    pub members_dns: Option<String>,
    /// What `members_dns` resolved to at start (the binary waits for the name).
    pub members_dns_at_start: Vec<String>,
    /// The DNS server `members_dns` is asked of (its A records, over UDP) instead of the
    /// system's resolver ([`crate::cluster::dns_query`]).
    pub members_dns_server: Option<std::net::SocketAddr>,
    /// Period of `members_file` reads.
    pub members_file_interval: Duration,
    /// Period of `members_dns` resolutions.
    pub members_dns_interval: Duration,
    /// Distinct member addresses a node can know over its life (joins included).
    pub member_slots: usize,
    /// Peers' cluster ports are their member port plus this.
    pub peer_cluster_port_offset: u16,
    /// The protocol.
    pub protocol: Config,
    /// Shared secret every peer RPC must carry.
    pub cluster_token: Option<String>,
    /// HTTPS on the main port and TLS on the SDK port (`None`: plaintext).
    pub http_tls: Option<crate::tls::HttpTls>,
    /// Mutual TLS between nodes on the cluster port (`None`: plaintext).
    pub cluster_tls: Option<crate::tls::ClusterTls>,
    /// Nacos-compatible authentication of client requests on the HTTP and SDK ports
    /// (`None`: off, every client may read and write).
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Driver tick period.
    pub tick: Duration,
    /// Period of the driver's sync flushes between ticks (what is due to peers leaves
    /// then; a tick flushes too).
    pub sync_flush: Duration,
    /// The Nacos front end.
    pub nacos: NacosConfig,
    /// Bound on the shutdown flush.
    pub shutdown_flush: Duration,
    /// Most open TCP connections on each port; more are refused with a clear error.
    pub max_tcp_connections: usize,
    /// A new connection must send its first request within this (zero: no deadline).
    pub header_read_timeout: Duration,
    /// After each HTTP response, the next request on that connection must be complete
    /// within this, or the connection is closed (zero: no deadline).
    pub keep_alive_timeout: Duration,
    /// The SDK port listens with one `SO_REUSEPORT` socket per runtime worker thread, each
    /// with its own accept loop, the kernel spreading new connections over them (`false`:
    /// one socket, one accept loop). Linux and the BSDs; another process of the same user
    /// could then bind the port too.
    pub sdk_reuseport: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: DEFAULT_PORT,
            sdk_port: None,
            cluster_port: None,
            advertise: None,
            members: Vec::new(),
            members_file: None,
            members_dns: None,
            members_dns_at_start: Vec::new(),
            members_dns_server: None,
            members_file_interval: crate::cluster::members_watch::DEFAULT_FILE_INTERVAL,
            members_dns_interval: crate::cluster::members_watch::DEFAULT_DNS_INTERVAL,
            member_slots: distro_core::member::DEFAULT_MEMBER_SLOTS,
            peer_cluster_port_offset: CLUSTER_PORT_OFFSET,
            protocol: Config::default(),
            cluster_token: None,
            auth: None,
            cluster_tls: None,
            http_tls: None,
            tick: DEFAULT_TICK,
            sync_flush: DEFAULT_SYNC_FLUSH,
            nacos: NacosConfig::default(),
            shutdown_flush: DEFAULT_SHUTDOWN_FLUSH,
            max_tcp_connections: crate::admission::DEFAULT_MAX_TCP_CONNECTIONS,
            header_read_timeout: crate::admission::DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: crate::admission::DEFAULT_KEEP_ALIVE_TIMEOUT,
            sdk_reuseport: false,
        }
    }
}

impl ServerConfig {
    /// The SDK port (0: chosen by the OS).
    pub fn sdk_port(&self) -> u16 {
        self.sdk_port
            .unwrap_or_else(|| self.offset_port(SDK_PORT_OFFSET))
    }

    /// The cluster port (0: chosen by the OS).
    pub fn cluster_port(&self) -> u16 {
        self.cluster_port
            .unwrap_or_else(|| self.offset_port(CLUSTER_PORT_OFFSET))
    }

    /// The main port plus `offset`: 0 for an OS-chosen main port, 65535 past the end
    /// (which `validate` refuses).
    fn offset_port(&self, offset: u16) -> u16 {
        if self.port == 0 {
            0
        } else {
            self.port.saturating_add(offset)
        }
    }

    /// The member list at start: `members`, the lines of `members_file` and
    /// `members_dns_at_start`.
    pub fn initial_members(&self) -> anyhow::Result<Vec<String>> {
        let mut all = self.members.clone();
        if let Some(path) = &self.members_file {
            let from_file = crate::cluster::members_watch::read_members_file(path)
                .map_err(|e| anyhow::anyhow!("--members-file {}: {e}", path.display()))?;
            all.extend(from_file);
        }
        all.extend(self.members_dns_at_start.iter().cloned());
        all.retain(|m| !m.trim().is_empty());
        Ok(all)
    }

    /// This node's member address.
    pub fn member_address(&self) -> anyhow::Result<String> {
        self.member_address_in(&self.initial_members()?)
    }

    /// This node's member address, found in `members` when not given.
    fn member_address_in(&self, members: &[String]) -> anyhow::Result<String> {
        if let Some(a) = &self.advertise {
            return Ok(a.clone());
        }
        if !self.bind.is_unspecified() {
            return Ok(SocketAddr::new(self.bind, self.port).to_string());
        }
        if members.is_empty() {
            return Ok(format!("127.0.0.1:{}", self.port));
        }
        let mine: Vec<&String> = members
            .iter()
            .filter(|m| {
                m.rsplit_once(':').is_some_and(|(h, p)| {
                    p.parse::<u16>().ok() == Some(self.port)
                        && h.trim_matches(['[', ']'])
                            .parse::<IpAddr>()
                            .is_ok_and(|ip| std::net::UdpSocket::bind((ip, 0)).is_ok())
                })
            })
            .collect();
        match mine.as_slice() {
            [one] => Ok((*one).clone()),
            [] => anyhow::bail!(
                "no member entry with port {} has an address of this machine; set --advertise",
                self.port
            ),
            _ => anyhow::bail!(
                "several member entries match this machine and port {}; set --advertise",
                self.port
            ),
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.protocol.validate()?;
        self.nacos.validate()?;
        if self.port == 0
            && (!self.members.is_empty()
                || self.members_file.is_some()
                || self.members_dns.is_some())
        {
            anyhow::bail!("--port 0 cannot be used with --members: peers need to know the port");
        }
        for (flag, port, offset) in [
            ("--sdk-port", self.sdk_port, SDK_PORT_OFFSET),
            ("--cluster-port", self.cluster_port, CLUSTER_PORT_OFFSET),
        ] {
            if port.is_none() && self.port.checked_add(offset).is_none() {
                anyhow::bail!(
                    "--port {} leaves no room for {flag} (port + {offset} is past 65535); \
                     choose a lower --port or set {flag}",
                    self.port
                );
            }
        }
        if let Some(path) = &self.members_file {
            crate::cluster::members_watch::read_members_file(path)
                .map_err(|e| anyhow::anyhow!("--members-file {}: {e}", path.display()))?;
        }
        if self.members_file_interval.is_zero() || self.members_dns_interval.is_zero() {
            anyhow::bail!("--members-file-interval and --members-dns-interval must be positive");
        }
        if self.max_tcp_connections == 0 {
            anyhow::bail!("--max-tcp-connections must be at least 1");
        }
        if self.tick.is_zero() {
            anyhow::bail!("the tick period must be positive");
        }
        if self.sync_flush.is_zero() {
            anyhow::bail!("--sync-flush must be positive");
        }
        Ok(())
    }
}

/// The three bound listeners of a node.
pub struct Listeners {
    /// Main port (HTTP).
    pub http: TcpListener,
    /// SDK gRPC port.
    pub sdk: TcpListener,
    /// Cluster gRPC port.
    pub cluster: TcpListener,
}

/// Binds `addr` with `SO_REUSEADDR`, so a restarted node gets its ports back at once.
pub fn bind_reusable(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind_with(addr, false)
}

/// Binds the SDK port at `addr`: [`bind_reusable`], with `SO_REUSEPORT` too when `reuseport`
/// (every socket of the port needs it, the first included; see
/// [`ServerConfig::sdk_reuseport`]).
pub fn bind_sdk(addr: SocketAddr, reuseport: bool) -> std::io::Result<TcpListener> {
    bind_with(addr, reuseport)
}

fn bind_with(addr: SocketAddr, reuseport: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        set_reuseport(&socket)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

#[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
fn set_reuseport(socket: &tokio::net::TcpSocket) -> std::io::Result<()> {
    socket.set_reuseport(true)
}

#[cfg(not(all(unix, not(target_os = "solaris"), not(target_os = "illumos"))))]
fn set_reuseport(_: &tokio::net::TcpSocket) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "SO_REUSEPORT is not available on this system: turn sdk_reuseport off",
    ))
}

/// The SDK port's sockets: `first` (bound by [`bind_sdk`]) and, with `reuseport`, one more
/// `SO_REUSEPORT` socket on its address for every other worker thread of the current
/// runtime.
fn sdk_listeners(first: TcpListener, reuseport: bool) -> anyhow::Result<Vec<TcpListener>> {
    let addr = first.local_addr()?;
    let mut all = vec![first];
    if reuseport {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        for _ in 1..workers {
            all.push(bind_sdk(addr, true).with_context(|| {
                format!("cannot add an SO_REUSEPORT listener on {addr} (SDK port)")
            })?);
        }
    }
    Ok(all)
}

impl Listeners {
    /// Binds the three ports of `config`.
    pub fn bind(config: &ServerConfig) -> anyhow::Result<Self> {
        let at = |port: u16, what: &str| {
            bind_reusable(SocketAddr::new(config.bind, port))
                .with_context(|| format!("cannot listen on {}:{port} ({what})", config.bind))
        };
        Ok(Self {
            http: at(config.port, "main port")?,
            sdk: bind_sdk(
                SocketAddr::new(config.bind, config.sdk_port()),
                config.sdk_reuseport,
            )
            .with_context(|| {
                format!(
                    "cannot listen on {}:{} (SDK port{})",
                    config.bind,
                    config.sdk_port(),
                    if config.sdk_reuseport {
                        ", SO_REUSEPORT"
                    } else {
                        ""
                    }
                )
            })?,
            cluster: at(config.cluster_port(), "cluster port")?,
        })
    }
}

/// A node that is running.
pub struct RunningServer {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    nacos: Arc<NacosFrontend>,
    driver: Arc<Driver>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    http_addr: SocketAddr,
    sdk_addr: SocketAddr,
    cluster_addr: SocketAddr,
    flush: Duration,
    /// Registered with `alloc_trim::before_collect`; runs while this is held.
    _release_hook: Arc<alloc_trim::Hook>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Starts a node on `listeners` (see the module documentation), on the system clock.
pub async fn start(config: ServerConfig, listeners: Listeners) -> anyhow::Result<RunningServer> {
    start_with(
        config,
        listeners,
        Arc::new(PeerGate::default()),
        crate::clock::system(),
    )
    .await
}

/// [`start`] with the fault switches `gate` (kept by LocalCluster) and `clock`.
pub(crate) async fn start_with(
    config: ServerConfig,
    listeners: Listeners,
    gate: Arc<PeerGate>,
    clock: Clock,
) -> anyhow::Result<RunningServer> {
    config.validate()?;
    let initial = config.initial_members()?;
    let me = config.member_address_in(&initial)?;
    let members = MemberList::with_slots(&me, &initial, config.member_slots)?;
    if !members.is_standalone() && config.cluster_token.is_none() {
        tracing::warn!(
            "no --cluster-token is set: anyone who can reach the cluster port can write to this cluster"
        );
    }
    let node = Arc::new(Node::new(config.protocol.clone(), members, clock())?);
    // Before a thread gives memory back (after a burst of removals), it frees what the
    // store's maps retired on it; kept as long as the server runs.
    let release_hook: Arc<alloc_trim::Hook> = {
        let node = Arc::downgrade(&node);
        Arc::new(move || {
            if let Some(node) = node.upgrade() {
                node.registry().flush_retired();
            }
        })
    };
    alloc_trim::before_collect(&release_hook);
    let metrics = Arc::new(Metrics::default());
    let offset = config.peer_cluster_port_offset;
    let peers = Arc::new(PeerClients::new(
        node.clone(),
        move |addr: &str| match addr.rsplit_once(':') {
            Some((h, p)) => format!(
                "{h}:{}",
                p.parse::<u16>().unwrap_or(0).saturating_add(offset)
            ),
            None => addr.to_string(),
        },
        (!config.bind.is_unspecified()).then_some(config.bind),
        config.cluster_token.as_deref(),
        config.cluster_tls.as_ref(),
        gate.clone(),
        metrics.clone(),
    )?);
    let forwarder = Arc::new(Forwarder::new(
        node.clone(),
        clock.clone(),
        peers.clone(),
        metrics.clone(),
    ));
    let nacos_config = crate::nacos::NacosConfig {
        auth: config.auth.clone(),
        ..config.nacos
    };
    let nacos = Arc::new(NacosFrontend::new(
        node.clone(),
        nacos_config,
        clock.clone(),
    )?);
    let hub = Arc::new(WatchHub::default());
    node.registry().add_listener(hub.clone());
    let (stop, stop_rx) = watch::channel(false);
    let driver = Driver::new(node.clone(), peers, clock.clone(), metrics.clone());

    let http_addr = listeners.http.local_addr()?;
    let sdk_addr = listeners.sdk.local_addr()?;
    let cluster_addr = listeners.cluster.local_addr()?;
    let mut tasks = Vec::new();

    // Main port: HTTP.
    let http = router(Arc::new(HttpState {
        forwarder: forwarder.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        nacos: Some(nacos.clone()),
        answers: nacos.answers(),
        auth: config.auth.clone(),
        page: Page::new(node.clone(), metrics.clone(), Some(nacos.clone())),
    }));
    let admit = |port: &'static str, protocol: Protocol| {
        Admission::new(
            port,
            protocol,
            config.max_tcp_connections,
            config.header_read_timeout,
            config.keep_alive_timeout,
            metrics.clone(),
        )
    };
    let http_admission = admit("main", Protocol::Http);
    let sdk_admission = admit("SDK", Protocol::Grpc);
    let cluster_admission = admit("cluster", Protocol::Grpc);
    let http_tls = match &config.http_tls {
        Some(tls) => Some(tls.acceptor().map_err(anyhow::Error::msg)?),
        None => None,
    };
    let rx = stop_rx.clone();
    let listener = HttpListener::new(listeners.http, http_admission);
    let (plain, https) = match http_tls {
        Some(acceptor) => (
            None,
            Some(crate::tls::HttpsListener::new(listener, acceptor)?),
        ),
        None => (Some(listener), None),
    };
    tasks.push(tokio::spawn(async move {
        let r = match (plain, https) {
            (_, Some(l)) => {
                axum::serve(l, http)
                    .with_graceful_shutdown(stopped(rx))
                    .await
            }
            (Some(l), None) => {
                axum::serve(l, http)
                    .with_graceful_shutdown(stopped(rx))
                    .await
            }
            (None, None) => Ok(()),
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }));

    // SDK port: the Nacos services and the native API.
    let registry = pb::registry_server::RegistryServer::new(
        RegistryService::new(
            forwarder.clone(),
            metrics.clone(),
            hub,
            stop_rx.clone(),
            gate.clone(),
        )
        .with_auth(config.auth.clone(), clock.clone()),
    )
    .max_decoding_message_size(MAX_NATIVE_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_NATIVE_MESSAGE_BYTES);
    // With auth on, the token is checked on the metadata, before the body is decoded.
    let registry = tonic::service::interceptor::InterceptedService::new(
        registry,
        NativeTokenCheck::new(config.auth.clone(), clock.clone()),
    );
    let mut sdk = crate::sdk_port::SdkPort::new(nacos.clone())
        .add_service(registry)
        .admission(sdk_admission);
    if let Some(tls) = &config.http_tls {
        sdk = sdk.tls(tls.sdk_acceptor().map_err(anyhow::Error::msg)?);
    }
    let rx = stop_rx.clone();
    let nacos_stop = nacos.clone();
    let sdk_sockets = sdk_listeners(listeners.sdk, config.sdk_reuseport)?;
    tracing::debug!(sockets = sdk_sockets.len(), "SDK port listening");
    tasks.push(tokio::spawn(async move {
        sdk.serve_all(sdk_sockets, async move {
            stopped(rx).await;
            nacos_stop.shutdown().await;
        })
        .await;
    }));

    // Cluster port: the peer protocol, and nothing else.
    let peer = pb::peer_server::PeerServer::new(PeerService::new(
        node.clone(),
        forwarder,
        clock.clone(),
        gate,
        metrics.clone(),
    ))
    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    // The token is checked on the metadata, before the body is read and decoded.
    let peer = tonic::service::interceptor::InterceptedService::new(
        peer,
        TokenCheck::new(config.cluster_token.as_deref(), metrics.clone()),
    );
    // Served on the SDK port's HTTP/2 connections (one task per connection, no task per
    // stream), the peer service alone.
    let mut cluster = crate::sdk_port::SdkPort::cluster(MAX_PEER_MESSAGE_BYTES)
        .add_service(peer)
        .admission(cluster_admission);
    if let Some(tls) = &config.cluster_tls {
        cluster = cluster.tls(tls.acceptor().map_err(anyhow::Error::msg)?);
    }
    let rx = stop_rx.clone();
    let cluster_listener = listeners.cluster;
    tasks.push(tokio::spawn(async move {
        cluster.serve(cluster_listener, stopped(rx)).await;
    }));

    // The member list's sources, watched.
    let sources = crate::cluster::members_watch::MemberSources {
        fixed: config.members.clone(),
        file: config.members_file.clone(),
        dns: config.members_dns.clone(),
        dns_server: config.members_dns_server,
        file_interval: config.members_file_interval,
        dns_interval: config.members_dns_interval,
    };
    if sources.is_dynamic() {
        let n = node.clone();
        let c = clock.clone();
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            crate::cluster::members_watch::watch(n, sources, c, stopped(rx)).await
        }));
    }

    // The driver: its ticks, and the sync flushes between them.
    let d = driver.clone();
    let tick = config.tick;
    let rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move { d.run(tick, stopped(rx)).await }));
    let d = driver.clone();
    let flush = config.sync_flush;
    tasks.push(tokio::spawn(async move {
        d.run_flushes(flush, stopped(stop_rx)).await
    }));

    let member_list: Vec<String> = node
        .members()
        .ids()
        .map(|m| node.members().addr(m).to_string())
        .collect();
    tracing::info!(
        member = %me,
        http = %http_addr,
        sdk = %sdk_addr,
        cluster = %cluster_addr,
        members = ?member_list,
        router = node.config().router.as_str(),
        "distro node started"
    );
    Ok(RunningServer {
        node,
        metrics,
        nacos,
        driver,
        stop,
        tasks,
        http_addr,
        sdk_addr,
        cluster_addr,
        flush: config.shutdown_flush,
        _release_hook: release_hook,
    })
}

impl RunningServer {
    /// The core node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
    /// Request metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
    /// The Nacos front end.
    pub fn nacos(&self) -> &Arc<NacosFrontend> {
        &self.nacos
    }
    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }
    /// Where the SDK gRPC services listen.
    pub fn sdk_addr(&self) -> SocketAddr {
        self.sdk_addr
    }
    /// Where the peer protocol listens.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
    }

    /// Stops accepting, ends streams, flushes pending syncs (within the configured bound)
    /// and waits for the servers to stop.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: no new requests; flushing pending syncs");
        let _ = self.stop.send(true);
        self.nacos.shutdown().await;
        self.driver.drain(self.flush).await;
        let wait = futures::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            tracing::warn!("shutdown: some connections did not close within 10 s");
        }
        tracing::info!("distro node stopped");
    }
}

/// Binds, starts, and runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run(mut config: ServerConfig) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config)?;
    if config.port == 0 {
        // Standalone on OS-chosen ports: this node's address is the port it got, and the
        // configuration names the ports the listeners got.
        config.port = listeners.http.local_addr()?.port();
        config.sdk_port = Some(listeners.sdk.local_addr()?.port());
        config.cluster_port = Some(listeners.cluster.local_addr()?.port());
    }
    // Listen for the signals before the node starts (and logs that it started), so a
    // SIGTERM sent right after that line finds the handler and is never fatal.
    let signals = Signals::install();
    let server = start(config, listeners).await?;
    signals.wait().await;
    server.shutdown().await;
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C) listeners, installed before the node starts.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node")
                })
                .ok();
            let int = signal(SignalKind::interrupt())
                .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGINT"))
                .ok();
            Signals { term, int }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if self.term.is_none() && self.int.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            tokio::select! {
                _ = recv(self.term) => tracing::info!("SIGTERM received"),
                _ = recv(self.int) => tracing::info!("Ctrl-C received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}
