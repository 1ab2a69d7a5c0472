//! [`NacosClient`]: one simulated Nacos 2.x SDK client on its own HTTP/2 connection.
//!
//! The handshake is the Java SDK's (`GrpcClient.connectToServer`, reference §4.5): unary
//! `ServerCheckRequest` → `ServerCheckResponse{connectionId, supportAbilityNegotiation}`;
//! open the bi-stream and send `ConnectionSetupRequest` (with an `abilityTable`); then wait
//! for the server's `SetupAckRequest` when it advertised negotiation (Nacos ≥ 2.3), or
//! otherwise health-check until the server stops answering 301 (older servers register
//! the connection asynchronously; Java sleeps 100 ms).
//!
//! Afterwards the client sends unary requests ([`NacosClient::call`], any number in
//! flight, sharing the one connection) and a background task reads the bi-stream: it acks
//! `NotifySubscriberRequest` pushes (handing each to the configured [`PushHandler`]),
//! answers `ClientDetectionRequest` and `ConnectResetRequest`, and notes the end of the
//! stream. An optional keep-alive task sends `HealthCheckRequest` when the connection was
//! idle for the configured interval, as SDKs do every 5 s.
//!
//! The TCP connection is never re-opened behind the caller's back: once it is gone,
//! calls fail and [`NacosClient::is_open`] turns false; a Nacos client reconnects with a
//! new handshake, which is a new [`NacosClient`].

use super::dial::Dialer;
use super::error::NacosError;
use super::message::{
    Head, Prepared, Requests, ServerCheck, ServerRequestHead, ServiceInfo, WithServiceInfo,
};
use super::wire::Incoming;
use bytes::Bytes;
use distro_server::h2_client::{CallError, H2, Method, NACOS_MAX_MESSAGE};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Receives every `NotifySubscriberRequest` (after it was acked).
pub type PushHandler = Arc<dyn Fn(&Push) + Send + Sync>;

/// Settings shared by many clients.
#[derive(Clone)]
pub struct ClientConfig {
    /// `ConnectionSetupRequest.clientVersion`.
    pub client_version: String,
    /// `labels.AppName`.
    pub app_name: String,
    /// `ConnectionSetupRequest.tenant` (the client's namespace).
    pub tenant: String,
    /// Timeout of each unary call.
    pub request_timeout: Duration,
    /// Timeout of the TCP connect.
    pub connect_timeout: Duration,
    /// How long the handshake may wait for `SetupAckRequest` (Java: 5 s).
    pub handshake_timeout: Duration,
    /// Health-check a connection idle for this long (SDKs: 5 s); `None`: never.
    pub keepalive: Option<Duration>,
    /// Messages queued for the bi-stream (acks) before senders wait.
    pub stream_queue: usize,
    /// Called with every push received.
    pub on_push: Option<PushHandler>,
    /// Counters of what the streams saw, shared by every client built with this config.
    pub counters: Arc<StreamCounters>,
    /// TLS to the servers (`--tls-ca`), with the name each server's certificate must
    /// carry (default: its IP address); `None`: plaintext.
    pub tls: Option<ServerTls>,
}

/// TLS settings of Nacos connections.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The trusted CA.
    pub ca: crate::tls::TargetTls,
    /// Server names by address (the targets' hosts as given); others: the IP address.
    pub names: Arc<std::collections::HashMap<SocketAddr, String>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            // The wire behaviour imitated is the Java SDK's.
            client_version: "Nacos-Java-Client:v2.5.1".to_owned(),
            app_name: "loadgen".to_owned(),
            tenant: crate::protocol::nacos::message::DEFAULT_NAMESPACE.to_owned(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            keepalive: None,
            stream_queue: 64,
            on_push: None,
            counters: Arc::default(),
            tls: None,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("client_version", &self.client_version)
            .field("app_name", &self.app_name)
            .field("tenant", &self.tenant)
            .field("request_timeout", &self.request_timeout)
            .field("keepalive", &self.keepalive)
            .field("on_push", &self.on_push.is_some())
            .finish_non_exhaustive()
    }
}

/// What the bi-streams of a set of clients saw (monotonic counters).
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// `NotifySubscriberRequest`s received.
    pub pushes: AtomicU64,
    /// Pushes acked (`NotifySubscriberResponse` queued).
    pub push_acks: AtomicU64,
    /// `ClientDetectionRequest`s answered.
    pub detections: AtomicU64,
    /// `ConnectResetRequest`s received (the server asks the client to move).
    pub resets: AtomicU64,
    /// `SetupAckRequest`s received.
    pub setup_acks: AtomicU64,
    /// Server messages that could not be read, or of an unknown class.
    pub unreadable: AtomicU64,
    /// Health checks sent by the keep-alive task, and those that failed.
    pub health_checks: AtomicU64,
    /// Failed keep-alive health checks.
    pub health_check_failures: AtomicU64,
    /// Bi-streams that ended (connections closed by either side).
    pub streams_ended: AtomicU64,
}

/// A push received on the bi-stream.
#[derive(Debug, Clone)]
pub struct Push {
    /// When the payload was read off the stream.
    pub received: Instant,
    /// The server it came from.
    pub server: SocketAddr,
    body: Bytes,
}

impl Push {
    /// The pushed `serviceInfo`.
    pub fn service_info(&self) -> Result<ServiceInfo<'_>, NacosError> {
        service_info_of(&self.body)
    }

    /// The JSON body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// A successful reply.
#[derive(Debug, Clone)]
pub struct Reply {
    body: Bytes,
}

impl Reply {
    /// The JSON body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The `serviceInfo` of a query or subscription reply.
    pub fn service_info(&self) -> Result<ServiceInfo<'_>, NacosError> {
        service_info_of(&self.body)
    }

    /// Parses the body as `T`.
    pub fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, NacosError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| NacosError::BadReply(format!("unreadable body: {e}")))
    }
}

fn service_info_of(body: &[u8]) -> Result<ServiceInfo<'_>, NacosError> {
    let w: WithServiceInfo<'_> = serde_json::from_slice(body)
        .map_err(|e| NacosError::BadReply(format!("unreadable serviceInfo: {e}")))?;
    w.service_info
        .ok_or_else(|| NacosError::BadReply("no serviceInfo".to_owned()))
}

/// Checks a reply against the class `expect`ed; server errors become [`NacosError::Server`].
fn check(reply: &Incoming, expect: &str) -> Result<Reply, NacosError> {
    let body = reply.body();
    // The result fields only: a query's serviceInfo is stepped over, not parsed.
    let head: Head<'_> = super::head::read(&body)
        .map_err(|e| NacosError::BadReply(format!("unreadable {} body: {e}", reply.type_str())))?;
    let t = reply.type_name();
    let expected = t == expect.as_bytes();
    if expected && head.result_code == 200 && head.error_code == 0 {
        return Ok(Reply { body });
    }
    if expected || t == b"ErrorResponse" {
        return Err(NacosError::Server {
            result_code: head.result_code,
            error_code: head.error_code,
            message: head.message.map(|m| m.into_owned()).unwrap_or_default(),
        });
    }
    Err(NacosError::BadReply(format!(
        "expected {expect}, got {}",
        reply.type_str()
    )))
}

/// Connection state shared with the background tasks.
struct State {
    open: watch::Sender<bool>,
    started: Instant,
    last_active_ms: AtomicU64,
    reset_requested: AtomicBool,
}

impl State {
    fn touch(&self) {
        self.last_active_ms
            .store(self.started.elapsed().as_millis() as u64, Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_active_ms.load(Relaxed)))
    }

    fn is_open(&self) -> bool {
        *self.open.borrow()
    }
}

/// An HTTP/2 connection to one server and the heads of the two Nacos methods at it.
#[derive(Clone)]
struct Conn {
    h2: H2,
    /// `/Request/request`.
    unary: Method,
    /// `/BiRequestStream/requestBiStream`.
    stream: Method,
}

impl Conn {
    fn new(h2: H2, scheme: &str, server: SocketAddr) -> Conn {
        let authority = server.to_string();
        Conn {
            h2,
            unary: Method::new(scheme, &authority, "/Request/request", &[]),
            stream: Method::new(scheme, &authority, "/BiRequestStream/requestBiStream", &[]),
        }
    }
}

/// One Nacos 2.x SDK connection. See the module documentation.
pub struct NacosClient {
    h2: Conn,
    server: SocketAddr,
    local: SocketAddr,
    connection_id: String,
    requests: Requests,
    /// This connection's `HealthCheckRequest`, encoded once.
    health: Prepared,
    timeout: Duration,
    state: Arc<State>,
    stream_tx: Option<mpsc::Sender<Bytes>>,
    /// The bi-stream reader, the connection task, the keep-alive task (if any).
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NacosClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NacosClient")
            .field("server", &self.server)
            .field("local", &self.local)
            .field("connection_id", &self.connection_id)
            .field("open", &self.is_open())
            .finish()
    }
}

impl NacosClient {
    /// Connects to the SDK (gRPC) port `server` as connection number `index` (which picks
    /// the source address, see [`Dialer`]) and completes the handshake.
    pub async fn connect(
        config: &ClientConfig,
        dialer: &Dialer,
        server: SocketAddr,
        index: usize,
    ) -> Result<NacosClient, NacosError> {
        let connect_error = |reason: String| NacosError::Connect { server, reason };
        let tcp = dialer
            .dial(server, index)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let local = tcp.local_addr().map_err(|e| connect_error(e.to_string()))?;
        let handshake = async {
            match &config.tls {
                None => H2::handshake(tcp, NACOS_MAX_MESSAGE)
                    .await
                    .map(|(h2, task)| (Conn::new(h2, "http", server), task)),
                Some(tls) => {
                    let ip = server.ip().to_string();
                    let host = tls.names.get(&server).unwrap_or(&ip);
                    let io = tls.ca.connect(tcp, host).await.map_err(|e| {
                        tonic::Status::unavailable(format!(
                            "TLS handshake refused: {}",
                            crate::tls::explain(&e)
                        ))
                    })?;
                    H2::handshake(io, NACOS_MAX_MESSAGE)
                        .await
                        .map(|(h2, task)| (Conn::new(h2, "https", server), task))
                }
            }
        };
        let (h2, conn_task) = tokio::time::timeout(config.connect_timeout, handshake)
            .await
            .map_err(|_| connect_error("no TLS and HTTP/2 handshake in time".to_owned()))?
            .map_err(|e| connect_error(e.message().to_owned()))?;
        let (open, _) = watch::channel(true);
        let mut client = NacosClient {
            h2,
            server,
            local,
            connection_id: String::new(),
            health: Requests::new(local.ip().to_string()).health_check(),
            requests: Requests::new(local.ip().to_string()),
            timeout: config.request_timeout,
            state: Arc::new(State {
                open,
                started: Instant::now(),
                last_active_ms: AtomicU64::new(0),
                reset_requested: AtomicBool::new(false),
            }),
            stream_tx: None,
            tasks: vec![conn_task],
        };
        client.handshake(config).await?;
        Ok(client)
    }

    /// Connects to `servers[start]`, then the next ones round-robin on failure (as Nacos
    /// clients move through their server list), up to `attempts` tries with a backoff of
    /// 100 ms doubling to 2 s. Returns the last error if every try failed.
    pub async fn connect_any(
        config: &ClientConfig,
        dialer: &Dialer,
        servers: &[SocketAddr],
        start: usize,
        index: usize,
        attempts: usize,
    ) -> Result<NacosClient, NacosError> {
        let mut last = NacosError::Connect {
            server: SocketAddr::from(([0, 0, 0, 0], 0)),
            reason: "no server given".to_owned(),
        };
        if servers.is_empty() {
            return Err(last);
        }
        let mut backoff = Duration::from_millis(100);
        for k in 0..attempts.max(1) {
            let server = servers[(start + k) % servers.len()];
            match Self::connect(config, dialer, server, index).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
            if k + 1 < attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        Err(last)
    }

    async fn handshake(&mut self, config: &ClientConfig) -> Result<(), NacosError> {
        let server = self.server;
        let failed = |reason: String| NacosError::Handshake { server, reason };
        let reply = self
            .send(&self.requests.server_check())
            .await
            .map_err(|e| failed(format!("ServerCheckRequest: {e}")))?;
        let check: ServerCheck = reply.json()?;
        self.connection_id = check
            .connection_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| failed("ServerCheckResponse has no connectionId".to_owned()))?;

        let (tx, rx) = mpsc::channel(config.stream_queue.max(2));
        let setup = self.requests.connection_setup(
            &config.client_version,
            &config.app_name,
            &config.tenant,
        );
        // Queued before the stream opens: a server that sends its response headers only
        // with its first message (grpc-java) needs the setup to answer anything.
        tx.try_send(setup.frame())
            .map_err(|_| failed("cannot queue the setup".to_owned()))?;
        let (acked_tx, acked_rx) = oneshot::channel();
        let reader = Reader {
            server,
            state: self.state.clone(),
            requests: self.requests.clone(),
            ack_tx: tx.downgrade(),
            counters: config.counters.clone(),
            on_push: config.on_push.clone(),
            setup_acked: Some(acked_tx),
        };
        self.tasks
            .push(tokio::spawn(reader.run(self.h2.clone(), rx)));
        self.stream_tx = Some(tx);

        if check.support_ability_negotiation {
            match tokio::time::timeout(config.handshake_timeout, acked_rx).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(failed(
                        "the bi-stream ended before SetupAckRequest".to_owned(),
                    ));
                }
                Err(_) => {
                    return Err(failed(format!(
                        "no SetupAckRequest within {:?}",
                        config.handshake_timeout
                    )));
                }
            }
        } else {
            self.await_registration(config.handshake_timeout)
                .await
                .map_err(|e| failed(format!("the setup was not registered: {e}")))?;
        }
        if let Some(every) = config.keepalive {
            self.tasks.push(tokio::spawn(keepalive(
                self.h2.clone(),
                self.state.clone(),
                self.requests.health_check(),
                every,
                self.timeout,
                config.counters.clone(),
            )));
        }
        Ok(())
    }

    /// Servers without ability negotiation register the setup asynchronously: health-check
    /// until they stop answering 301.
    async fn await_registration(&self, within: Duration) -> Result<(), NacosError> {
        let deadline = Instant::now() + within;
        let health = self.requests.health_check();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match self.send(&health).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_unregistered() && Instant::now() < deadline => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a unary request and checks its reply. Any number may be in flight at once
    /// on the one connection.
    pub async fn call(&self, request: &Prepared) -> Result<Reply, NacosError> {
        if !self.state.is_open() {
            return Err(NacosError::Closed);
        }
        self.send(request).await
    }

    async fn send(&self, request: &Prepared) -> Result<Reply, NacosError> {
        let reply = unary(&self.h2, request.payload.frame(), self.timeout, &self.state).await?;
        check(&reply, request.expect)
    }

    /// Builders of requests carrying this connection's local IP as `clientIp`.
    pub fn requests(&self) -> &Requests {
        &self.requests
    }

    /// A `HealthCheckRequest` of this connection (encoded once; send it as often as
    /// needed).
    pub fn health_check(&self) -> &Prepared {
        &self.health
    }

    /// `connectionId` from the handshake.
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// The server's SDK address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// This connection's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether the bi-stream is still up.
    pub fn is_open(&self) -> bool {
        self.state.is_open()
    }

    /// Whether the server sent `ConnectResetRequest` (asking the client to reconnect).
    pub fn reset_requested(&self) -> bool {
        self.state.reset_requested.load(Relaxed)
    }

    /// Resolves when the bi-stream has ended.
    pub async fn closed(&self) {
        let mut rx = self.state.open.subscribe();
        let _ = rx.wait_for(|open| !*open).await;
    }

    /// Closes the connection as an SDK's shutdown does: ends the bi-stream (the server then
    /// removes the connection's instances and subscriptions) and waits up to `within` for
    /// the stream to end, then drops the connection.
    pub async fn close(mut self, within: Duration) {
        self.stream_tx = None;
        // tasks[1] is the bi-stream reader.
        if let Some(reader) = self.tasks.get_mut(1) {
            let _ = tokio::time::timeout(within, reader).await;
        }
    }
}

impl Drop for NacosClient {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn unary(
    h2: &Conn,
    frame: Bytes,
    timeout: Duration,
    state: &State,
) -> Result<Incoming, NacosError> {
    let reply = h2
        .h2
        .unary(&h2.unary, frame, timeout)
        .await
        .map_err(|e| match e {
            CallError::Timeout => NacosError::Timeout(timeout),
            CallError::Status(s) => NacosError::Transport(s),
        })?;
    state.touch();
    Incoming::parse(&reply).map_err(|e| NacosError::BadReply(format!("not a Payload: {e}")))
}

/// The bi-stream reader of one connection.
struct Reader {
    server: SocketAddr,
    state: Arc<State>,
    requests: Requests,
    /// Weak, so that dropping the client's sender ends the stream (a client's close).
    ack_tx: mpsc::WeakSender<Bytes>,
    counters: Arc<StreamCounters>,
    on_push: Option<PushHandler>,
    setup_acked: Option<oneshot::Sender<()>>,
}

impl Reader {
    async fn run(mut self, h2: Conn, rx: mpsc::Receiver<Bytes>) {
        if let Ok(mut stream) = h2.h2.open_stream(&h2.stream, rx).await {
            while let Some(Ok(message)) = stream.next().await {
                self.state.touch();
                match Incoming::parse(&message) {
                    Ok(m) => self.handle(m).await,
                    Err(_) => {
                        self.counters.unreadable.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        self.counters.streams_ended.fetch_add(1, Relaxed);
        self.state.open.send_replace(false);
    }

    async fn handle(&mut self, message: Incoming) {
        let received = Instant::now();
        let body = message.body();
        let response_type = match message.type_name() {
            b"NotifySubscriberRequest" => "NotifySubscriberResponse",
            b"ClientDetectionRequest" => "ClientDetectionResponse",
            b"ConnectResetRequest" => {
                self.counters.resets.fetch_add(1, Relaxed);
                self.state.reset_requested.store(true, Relaxed);
                "ConnectResetResponse"
            }
            b"SetupAckRequest" => {
                self.counters.setup_acks.fetch_add(1, Relaxed);
                if let Some(tx) = self.setup_acked.take() {
                    let _ = tx.send(());
                }
                return;
            }
            _ => {
                self.counters.unreadable.fetch_add(1, Relaxed);
                return;
            }
        };
        let ack = match serde_json::from_slice::<ServerRequestHead<'_>>(&body) {
            Ok(ServerRequestHead {
                request_id: Some(id),
            }) => self.requests.ack(response_type, &id),
            _ => {
                self.counters.unreadable.fetch_add(1, Relaxed);
                return;
            }
        };
        let Some(tx) = self.ack_tx.upgrade() else {
            return;
        };
        if tx.send(ack.frame()).await.is_err() {
            return;
        }
        match response_type {
            "NotifySubscriberResponse" => {
                self.counters.pushes.fetch_add(1, Relaxed);
                self.counters.push_acks.fetch_add(1, Relaxed);
                if let Some(handler) = &self.on_push {
                    handler(&Push {
                        received,
                        server: self.server,
                        body,
                    });
                }
            }
            "ClientDetectionResponse" => {
                self.counters.detections.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
}

/// Health-checks the connection whenever it was idle for `every`.
async fn keepalive(
    h2: Conn,
    state: Arc<State>,
    health: Prepared,
    every: Duration,
    timeout: Duration,
    counters: Arc<StreamCounters>,
) {
    loop {
        let idle = state.idle();
        if idle < every {
            tokio::time::sleep(every - idle).await;
            continue;
        }
        if !state.is_open() {
            return;
        }
        counters.health_checks.fetch_add(1, Relaxed);
        let ok = match unary(&h2, health.payload.frame(), timeout, &state).await {
            Ok(reply) => check(&reply, health.expect).is_ok(),
            Err(_) => false,
        };
        if !ok {
            counters.health_check_failures.fetch_add(1, Relaxed);
            // Retry after a pause rather than at once.
            state.touch();
        }
    }
}
