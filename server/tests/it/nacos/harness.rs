//! A standalone node with the Nacos front end on `127.0.0.1:0`, real SDK clients pointed
//! at it, raw tonic clients, and waiting on conditions with a deadline.

use distro_core::{Config, MemberList, Node, ServiceSpec};
use distro_server::nacos::{NacosConfig, NacosFrontend};
use distro_server::proto::nacos::bi_request_stream_client::BiRequestStreamClient;
use distro_server::proto::nacos::request_client::RequestClient;
use distro_server::proto::nacos::{Metadata, Payload};
use nacos_sdk::api::naming::{NamingService, NamingServiceBuilder};
use nacos_sdk::api::props::ClientProps;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// How long any condition may take before a test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Timings short enough for tests, the rest as the defaults.
pub(crate) fn fast_config() -> NacosConfig {
    NacosConfig {
        push_delay: Duration::from_millis(50),
        push_ack_timeout: Duration::from_millis(800),
        push_retry_delay: Duration::from_millis(200),
        detection_interval: Duration::from_millis(100),
        ..NacosConfig::default()
    }
}

/// A running server.
pub(crate) struct TestServer {
    pub(crate) node: Arc<Node>,
    pub(crate) nacos: Arc<NacosFrontend>,
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub(crate) async fn start(config: NacosConfig) -> TestServer {
        let node = Arc::new(
            Node::new(
                Config::default(),
                MemberList::new("127.0.0.1:8848", &[]).expect("standalone member list"),
                wall_ms(),
            )
            .expect("default core config"),
        );
        Self::start_node(node, config).await
    }

    /// Serves the front end of `node` (no driver ticks it: the test does, if needed).
    pub(crate) async fn start_node(node: Arc<Node>, config: NacosConfig) -> TestServer {
        let nacos = Arc::new(
            NacosFrontend::new(node.clone(), config, Arc::new(wall_ms)).expect("valid config"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        // The SDK port's own transport (h2 on the connection's task), as the binary serves.
        let port = distro_server::sdk_port::SdkPort::new(nacos.clone());
        let n = nacos.clone();
        let task = tokio::spawn(async move {
            port.serve(listener, async move {
                let _ = stopped.await;
                n.shutdown().await;
            })
            .await;
        });
        TestServer {
            node,
            nacos,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Shuts down gracefully; fails if that takes longer than the deadline.
    pub(crate) async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(DEADLINE, t)
                .await
                .expect("the server stops in time (bi-streams must end)")
                .expect("server task");
        }
    }

    /// `ip:port` of every instance of `service` in group `DEFAULT_GROUP`, namespace public.
    pub(crate) fn instances(&self, service: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .node
            .query(&ServiceSpec::new("", "", service))
            .expect("valid service")
            .map(|view| {
                view.publications
                    .iter()
                    .flat_map(|p| p.instances.iter())
                    .map(|i| i.address())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Polls `f` until it returns `Some`, failing the test after `DEADLINE`.
pub(crate) async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` until it is true, failing the test after `DEADLINE`.
pub(crate) async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    wait_for(what, || f().then_some(())).await
}

static CLIENTS: AtomicU64 = AtomicU64::new(0);

/// A real `nacos-sdk` naming client of `server` (namespace public). With
/// `empty_protection` off, pushes of an empty instance list reach listeners.
pub(crate) async fn sdk(server: &TestServer, empty_protection: bool) -> NamingService {
    sdk_at(server.addr, empty_protection).await
}

pub(crate) async fn sdk_at(addr: SocketAddr, empty_protection: bool) -> NamingService {
    // The SDK derives nothing from this port: the gRPC port is given explicitly.
    let props = client_props("127.0.0.1:8848", empty_protection).remote_grpc_port(addr.port());
    NamingServiceBuilder::new(props)
        .build()
        .await
        .expect("the SDK connects")
}

/// A real `nacos-sdk` naming client given `servers` (main ports, `ip:port`) exactly as an
/// application configures it: the SDK derives each gRPC port as main + 1000, starts at a
/// random entry and moves to the next one when its server fails.
pub(crate) async fn sdk_servers(servers: &[String], empty_protection: bool) -> NamingService {
    NamingServiceBuilder::new(client_props(&servers.join(","), empty_protection))
        .build()
        .await
        .expect("the SDK connects")
}

pub(crate) fn client_props(server_addr: &str, empty_protection: bool) -> ClientProps {
    let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
    let cache = std::env::temp_dir().join(format!(
        "distro-nacos-test-{}-{n}-{}",
        std::process::id(),
        wall_ms()
    ));
    ClientProps::new()
        .server_addr(server_addr)
        .namespace("")
        .app_name("distro-test")
        .env_first(false)
        .cache_dir(cache)
        .naming_push_empty_protection(empty_protection)
}

/// A raw Nacos client: one HTTP/2 connection carrying unary calls and one bi-stream.
pub(crate) struct Raw {
    pub(crate) unary: RequestClient<Channel>,
    pub(crate) channel: Channel,
    stream_tx: Option<mpsc::Sender<Payload>>,
    pub(crate) stream_rx: Option<tonic::Streaming<Payload>>,
}

pub(crate) fn payload(type_name: &str, body: &Value) -> Payload {
    Payload {
        metadata: Some(Metadata {
            r#type: type_name.to_string(),
            client_ip: "127.0.0.1".into(),
            headers: Default::default(),
        }),
        body: Some(prost_types::Any {
            type_url: String::new(),
            value: serde_json::to_vec(body).expect("json"),
        }),
    }
}

pub(crate) fn raw_payload(type_name: &str, body: &[u8]) -> Payload {
    Payload {
        metadata: Some(Metadata {
            r#type: type_name.to_string(),
            client_ip: String::new(),
            headers: Default::default(),
        }),
        body: Some(prost_types::Any {
            type_url: String::new(),
            value: body.to_vec(),
        }),
    }
}

/// `(metadata.type, parsed body)` of a reply.
pub(crate) fn decode(p: &Payload) -> (String, Value) {
    let t = p
        .metadata
        .as_ref()
        .map(|m| m.r#type.clone())
        .unwrap_or_default();
    let body = p.body.as_ref().map(|b| b.value.clone()).unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).expect("the reply body is JSON");
    (t, v)
}

impl Raw {
    pub(crate) async fn connect(server: &TestServer) -> Raw {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        Raw {
            unary: RequestClient::new(channel.clone()),
            channel,
            stream_tx: None,
            stream_rx: None,
        }
    }

    /// A unary call; returns `(type, body)` of the reply.
    pub(crate) async fn call(&mut self, type_name: &str, body: Value) -> (String, Value) {
        self.call_payload(payload(type_name, &body)).await
    }

    pub(crate) async fn call_payload(&mut self, p: Payload) -> (String, Value) {
        let reply = self
            .unary
            .request(p)
            .await
            .expect("unary calls always get a payload")
            .into_inner();
        decode(&reply)
    }

    /// Opens the bi-stream (without sending anything).
    pub(crate) async fn open_stream(&mut self) {
        let (tx, rx) = mpsc::channel(64);
        let mut client = BiRequestStreamClient::new(self.channel.clone());
        let response = client
            .request_bi_stream(ReceiverStream::new(rx))
            .await
            .expect("stream opens");
        self.stream_tx = Some(tx);
        self.stream_rx = Some(response.into_inner());
    }

    /// Sends a message on the stream.
    pub(crate) async fn send(&self, type_name: &str, body: Value) {
        self.stream_tx
            .as_ref()
            .expect("stream open")
            .send(payload(type_name, &body))
            .await
            .expect("stream accepts");
    }

    /// Opens the stream and sends a Java-style setup (with `abilityTable`).
    pub(crate) async fn setup(&mut self) {
        self.open_stream().await;
        self.send(
            "ConnectionSetupRequest",
            serde_json::json!({"headers":{},"clientVersion":"raw-test","tenant":"",
                "labels":{"source":"sdk","module":"naming"},"abilityTable":{},"module":"internal"}),
        )
        .await;
        let (t, _) = self.next_message().await.expect("a SetupAckRequest");
        assert_eq!(t, "SetupAckRequest");
    }

    /// The next server→client message, or `None` when the stream ended.
    pub(crate) async fn next_message(&mut self) -> Option<(String, Value)> {
        let rx = self.stream_rx.as_mut().expect("stream open");
        match tokio::time::timeout(DEADLINE, rx.message()).await {
            Ok(Ok(Some(p))) => Some(decode(&p)),
            Ok(Ok(None)) | Ok(Err(_)) => None,
            Err(_) => panic!("no stream message within {DEADLINE:?}"),
        }
    }

    /// The next message of type `t`, answering (acking) nothing on the way.
    pub(crate) async fn next_of_type(&mut self, t: &str) -> Value {
        loop {
            let (ty, v) = self.next_message().await.expect("stream open");
            if ty == t {
                return v;
            }
        }
    }

    /// Acks a server→client request on the stream.
    pub(crate) async fn ack(&self, response_type: &str, request_id: &str) {
        self.send(
            response_type,
            serde_json::json!({"resultCode":200,"errorCode":0,"requestId":request_id}),
        )
        .await;
    }

    /// Closes the client→server half of the stream.
    pub(crate) fn close_stream(&mut self) {
        self.stream_tx = None;
    }
}

/// A register `InstanceRequest` body.
pub(crate) fn register_body(service: &str, ip: &str, port: u16) -> Value {
    serde_json::json!({"headers":{},"namespace":"public","serviceName":service,
        "groupName":"DEFAULT_GROUP","type":"registerInstance",
        "instance":{"ip":ip,"port":port,"weight":1.0,"healthy":true,"enabled":true,
            "ephemeral":true,"clusterName":"DEFAULT","metadata":{}},"module":"naming"})
}
