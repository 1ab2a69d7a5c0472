//! `--protocol nacos`: each simulated client is a Nacos 2.x SDK connection of its own.
//!
//! Every client's connection to its first node is opened (Java handshake) in the connect
//! phase, before the measured phases ([`Protocol::connect_clients`], 256 handshakes at a
//! time); a client without one (its connect failed, or it was closed) connects on its
//! next item. When the driver moves the client to another node (failover), a new
//! connection is made there, as an SDK reconnects. Items map to requests on that connection:
//!
//! * `Register`: one `InstanceRequest{registerInstance}` per service of the client (its
//!   `ip:port` from the population), sent concurrently.
//! * `Deregister`: one `InstanceRequest{deregisterInstance}` per service.
//! * `Beat`: a `HealthCheckRequest` (Nacos 2.x has no per-instance heartbeat: the
//!   connection's health check keeps its instances). A closed connection answers
//!   `NotFound`, so the driver registers the client again.
//! * `Query`: a `ServiceQueryRequest` on one of the node's query connections (each
//!   service's encoded once per connection, on its first query).
//!
//! `watch` opens a subscriber connection to the node, subscribes to each service and turns
//! every `NotifySubscriberRequest` (acked by the client) into a [`WatchEvent`].

use super::client::{ClientConfig, NacosClient, Push, ServerTls};
use super::dial::Dialer;
use super::error::NacosError;
use super::message::{Instance, Prepared, ServiceInfo, ServiceName};
use crate::population::{MARKER_BASE, Population};
use crate::protocol::connect_phase::{CONNECT_PARALLEL, ConnectMeter, ConnectReport};
use crate::protocol::{Batch, Context, Item, Kind, Outcome, Protocol, WatchEvent};
use distro_server::open_files::raise_nofile;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::sync::mpsc;

/// Descriptors a process needs besides its client connections (listeners, peer channels,
/// watchers, files): the open-file limit asked for is the connections plus this, here and
/// for an embedded cluster (in this process or a child one).
pub const DESCRIPTOR_MARGIN: u64 = 8_192;

/// Tries per connection in the connect phase.
const CONNECT_ATTEMPTS: u32 = 3;

/// Requests in flight per batch (each item is its own request on its own connection).
const MAX_BATCH: usize = 64;

#[derive(Clone)]
struct Slot {
    node: usize,
    conn: Arc<NacosClient>,
    /// A regular client's registrations on this connection, encoded once when it was
    /// opened (empty for marker clients, whose one service comes with each item).
    register: Arc<[Prepared]>,
}

struct Inner {
    population: Arc<Population>,
    servers: Vec<SocketAddr>,
    config: Arc<ClientConfig>,
    dialer: Dialer,
    /// The connection of each regular client (index: client id).
    clients: Vec<Mutex<Option<Slot>>>,
    /// Marker clients' connections.
    markers: Mutex<HashMap<u32, Slot>>,
    /// `queries[node][lane]`: connections that carry queries.
    queries: Vec<Vec<tokio::sync::OnceCell<QueryConn>>>,
    services: Vec<ServiceName>,
    by_name: HashMap<String, u32>,
}

/// A connection that carries queries, and the `ServiceQueryRequest` of each service on it
/// (encoded on first use, then re-sent).
struct QueryConn {
    conn: NacosClient,
    prepared: Box<[OnceLock<Prepared>]>,
}

/// The Nacos 2.x protocol. See the module documentation.
#[derive(Clone)]
pub struct NacosProtocol {
    inner: Arc<Inner>,
}

fn outcome(e: &NacosError) -> Outcome {
    match e {
        NacosError::Server {
            error_code: 400, ..
        } => Outcome::Failed("400"),
        NacosError::Server {
            error_code: 301, ..
        } => Outcome::Retry("301"),
        NacosError::Server {
            error_code: 503, ..
        } => Outcome::Retry("503"),
        NacosError::Server { .. } => Outcome::Failed("nacos-error"),
        NacosError::Connect { .. } => Outcome::Retry("connect"),
        NacosError::Handshake { .. } => Outcome::Retry("handshake"),
        NacosError::Transport(_) => Outcome::Retry("UNAVAILABLE"),
        NacosError::Timeout(_) => Outcome::Retry("timeout"),
        NacosError::Closed => Outcome::Retry("closed"),
        NacosError::BadReply(_) => Outcome::Failed("bad-reply"),
    }
}

impl NacosProtocol {
    /// Resolves the nodes' SDK addresses and raises the open-file limit for one
    /// connection per client (`run` raises it further for a cluster in this process).
    pub async fn connect(ctx: &Context) -> anyhow::Result<Self> {
        let mut servers = Vec::new();
        let mut names = std::collections::HashMap::new();
        for node in 0..ctx.targets.len() {
            let sdk = ctx.sdk_target(node);
            let addr = tokio::net::lookup_host(&sdk)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    anyhow::anyhow!("target {}: cannot resolve {sdk}", ctx.targets[node])
                })?;
            names.insert(addr, crate::tls::host_of(&ctx.targets[node]).to_owned());
            servers.push(addr);
        }
        let Some(first) = servers.first() else {
            anyhow::bail!("no target");
        };
        let population = ctx.population.clone();
        let wanted = u64::from(population.clients()) + DESCRIPTOR_MARGIN;
        match raise_nofile(wanted) {
            Ok(limit) if limit.is_enough() => {}
            Ok(limit) => eprintln!("loadgen: WARNING: {limit}"),
            Err(e) => eprintln!("loadgen: WARNING: cannot read the open-file limit: {e}"),
        }
        let config = Arc::new(ClientConfig {
            request_timeout: ctx.timeout,
            tls: ctx.tls.clone().map(|ca| ServerTls {
                ca,
                names: Arc::new(names),
            }),
            ..ClientConfig::default()
        });
        let dialer = Dialer::for_target(first.ip(), config.connect_timeout);
        let services: Vec<ServiceName> = population
            .service_names()
            .iter()
            .map(ServiceName::new)
            .collect();
        let by_name = population.service_index();
        let lanes = ctx.lanes.max(1);
        let queries = servers
            .iter()
            .map(|_| (0..lanes).map(|_| tokio::sync::OnceCell::new()).collect())
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                clients: (0..population.clients())
                    .map(|_| Mutex::new(None))
                    .collect(),
                population,
                servers,
                config,
                dialer,
                markers: Mutex::new(HashMap::new()),
                queries,
                services,
                by_name,
            }),
        })
    }
}

impl Inner {
    fn cached(&self, client: u32, node: usize) -> Option<Slot> {
        let pick = |s: &Option<&Slot>| s.filter(|s| s.node == node && s.conn.is_open()).cloned();
        if client >= MARKER_BASE {
            pick(&self.markers.lock().get(&client))
        } else {
            self.clients
                .get(client as usize)
                .and_then(|m| pick(&m.lock().as_ref()))
        }
    }

    /// The client's open connection to `node`, connecting (and replacing an old one) if
    /// needed.
    async fn connection(&self, client: u32, node: usize) -> Result<Slot, NacosError> {
        if let Some(c) = self.cached(client, node) {
            return Ok(c);
        }
        let server = self.servers[node];
        let conn = Arc::new(
            NacosClient::connect(&self.config, &self.dialer, server, client as usize).await?,
        );
        let register: Arc<[Prepared]> = if client >= MARKER_BASE {
            Arc::new([])
        } else {
            let inst = self.instance(client);
            self.population
                .services_of(client)
                .filter_map(|s| self.services.get(s as usize))
                .map(|svc| conn.requests().register(svc, &inst))
                .collect()
        };
        let slot = Slot {
            node,
            conn,
            register,
        };
        if client >= MARKER_BASE {
            self.markers.lock().insert(client, slot.clone());
        } else if let Some(m) = self.clients.get(client as usize) {
            *m.lock() = Some(slot.clone());
        }
        Ok(slot)
    }

    /// Opens the connection of every client of `clients` to its first node, `parallel`
    /// handshakes at a time, and measures them.
    async fn connect_all(self: Arc<Self>, clients: Range<u32>, parallel: usize) -> ConnectReport {
        let nodes = self.servers.len();
        let mut meter = ConnectMeter::default();
        let started = Instant::now();
        let mut next = clients.start;
        let mut running = FuturesUnordered::new();
        let connect = |client: u32| {
            let inner = self.clone();
            async move {
                let node = inner.population.first_node(client, nodes);
                let t = Instant::now();
                // A node may turn a handshake away for a moment (starting, overloaded
                // backlog): retry there, as an SDK does, before giving up.
                let mut backoff = std::time::Duration::from_millis(100);
                for _ in 1..CONNECT_ATTEMPTS {
                    if inner.connection(client, node).await.is_ok() {
                        return Ok(t.elapsed());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                inner
                    .connection(client, node)
                    .await
                    .map(|_| t.elapsed())
                    .map_err(|e| e.to_string())
            }
        };
        loop {
            while running.len() < parallel.max(1) && next < clients.end {
                running.push(connect(next));
                next += 1;
            }
            match running.next().await {
                Some(r) => meter.record(r),
                None => break,
            }
        }
        meter.finish(started.elapsed(), parallel)
    }

    fn instance(&self, client: u32) -> Instance {
        let a = self.population.addr(client);
        Instance::new(a.ip().to_string(), a.port())
    }

    async fn writes(&self, slot: &Slot, it: &Item, register: bool) -> Outcome {
        if register && it.client < MARKER_BASE {
            // Encoded when the connection was opened.
            return calls(&slot.conn, &slot.register).await;
        }
        let conn = &slot.conn;
        let inst = self.instance(it.client);
        let services: Vec<u32> = if it.client >= MARKER_BASE {
            vec![it.service]
        } else {
            self.population.services_of(it.client).collect()
        };
        let requests: Vec<_> = services
            .iter()
            .filter_map(|s| self.services.get(*s as usize))
            .map(|svc| {
                if register {
                    conn.requests().register(svc, &inst)
                } else {
                    conn.requests().deregister(svc, &inst)
                }
            })
            .collect();
        calls(conn, &requests).await
    }

    async fn item(&self, lane: usize, node: usize, it: Item) -> Outcome {
        match it.kind {
            Kind::Register | Kind::Deregister => match self.connection(it.client, node).await {
                Ok(slot) => {
                    let o = self.writes(&slot, &it, it.kind == Kind::Register).await;
                    if it.kind == Kind::Deregister && it.client >= MARKER_BASE {
                        // A marker is done once deregistered: close its connection.
                        self.markers.lock().remove(&it.client);
                    }
                    o
                }
                Err(e) => outcome(&e),
            },
            Kind::Beat => match self.cached(it.client, node) {
                // The instances went with the connection: register again.
                None => Outcome::NotFound,
                Some(slot) => match slot.conn.call(slot.conn.health_check()).await {
                    Ok(_) => Outcome::Ok,
                    Err(e) if e.is_unregistered() => Outcome::NotFound,
                    Err(e) => outcome(&e),
                },
            },
            Kind::Query => {
                let Some(cell) = self
                    .queries
                    .get(node)
                    .and_then(|l| l.get(lane % l.len().max(1)))
                else {
                    return Outcome::Failed("no-node");
                };
                let q = cell
                    .get_or_try_init(|| async {
                        let index = usize::MAX / 2 + node * 1024 + lane;
                        let conn = NacosClient::connect(
                            &self.config,
                            &self.dialer,
                            self.servers[node],
                            index,
                        )
                        .await?;
                        let prepared = self.services.iter().map(|_| OnceLock::new()).collect();
                        Ok::<_, NacosError>(QueryConn { conn, prepared })
                    })
                    .await;
                let q = match q {
                    Ok(q) => q,
                    Err(e) => return outcome(&e),
                };
                let (Some(svc), Some(slot)) = (
                    self.services.get(it.service as usize),
                    q.prepared.get(it.service as usize),
                ) else {
                    return Outcome::Failed("no-service");
                };
                let request = slot.get_or_init(|| q.conn.requests().query(svc, "", false));
                match q.conn.call(request).await {
                    Ok(_) => Outcome::Ok,
                    Err(e) => outcome(&e),
                }
            }
        }
    }
}

impl Protocol for NacosProtocol {
    fn name(&self) -> &'static str {
        "nacos"
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn execute(
        &self,
        lane: usize,
        mut batch: Batch,
    ) -> impl Future<Output = Batch> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let node = batch.node;
            batch.outcomes.clear();
            batch.outcomes.resize(batch.items.len(), Outcome::Ok);
            let mut running: FuturesUnordered<_> = batch
                .items
                .iter()
                .enumerate()
                .map(|(k, it)| {
                    let inner = &inner;
                    let it = *it;
                    async move { (k, inner.item(lane, node, it).await) }
                })
                .collect();
            while let Some((k, o)) = running.next().await {
                batch.outcomes[k] = o;
            }
            drop(running);
            batch.done = Instant::now();
            batch
        }
    }

    fn connect_clients(
        &self,
        clients: std::ops::Range<u32>,
    ) -> impl Future<Output = Option<ConnectReport>> + Send + 'static {
        let inner = self.inner.clone();
        async move { Some(inner.connect_all(clients, CONNECT_PARALLEL).await) }
    }

    fn watch(
        &self,
        node: usize,
        services: Vec<u32>,
    ) -> impl Future<Output = Result<mpsc::Receiver<WatchEvent>, String>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let (tx, rx) = mpsc::channel(4096);
            let events = {
                let inner = inner.clone();
                let tx = tx.clone();
                move |p: &Push| {
                    if let Some(ev) = event(&inner, p.received, p.body()) {
                        deliver(&tx, ev);
                    }
                }
            };
            let config = ClientConfig {
                on_push: Some(Arc::new(events)),
                ..(*inner.config).clone()
            };
            let index = usize::MAX / 4 + node * 1024 + services.len();
            let conn = NacosClient::connect(&config, &inner.dialer, inner.servers[node], index)
                .await
                .map_err(|e| format!("subscriber on node {}: {e}", node + 1))?;
            for s in &services {
                let Some(svc) = inner.services.get(*s as usize) else {
                    continue;
                };
                let reply = conn
                    .call(&conn.requests().subscribe(svc, ""))
                    .await
                    .map_err(|e| format!("subscribe {} on node {}: {e}", svc.name, node + 1))?;
                // The current state first.
                if let Some(ev) = event(&inner, Instant::now(), reply.body()) {
                    deliver(&tx, ev);
                }
            }
            drop(tx);
            // The subscriber lives until its stream ends; then the receiver ends.
            tokio::spawn(async move {
                conn.closed().await;
            });
            Ok(rx)
        }
    }
}

/// Sends `requests` on `conn` at once; the first failure's outcome, or `Ok`.
async fn calls(conn: &NacosClient, requests: &[Prepared]) -> Outcome {
    if let [one] = requests {
        return conn
            .call(one)
            .await
            .map_or_else(|e| outcome(&e), |_| Outcome::Ok);
    }
    let mut calls: FuturesUnordered<_> = requests.iter().map(|r| conn.call(r)).collect();
    let mut result = Outcome::Ok;
    while let Some(r) = calls.next().await {
        if let (Err(e), Outcome::Ok) = (&r, result) {
            result = outcome(e);
        }
    }
    result
}

/// Hands `ev` to the watcher's tracker without ever dropping it: a probe whose only push
/// was dropped would be counted as never replicated. When the channel is full (the tracker
/// is behind on a starved machine, or has not started reading yet), the event waits in a
/// task of its own; events carry a service's whole state, so their order does not matter.
fn deliver(tx: &mpsc::Sender<WatchEvent>, ev: WatchEvent) {
    if let Err(mpsc::error::TrySendError::Full(ev)) = tx.try_send(ev) {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(ev).await;
        });
    }
}

/// A push or subscription reply as a [`WatchEvent`].
fn event(inner: &Inner, received: Instant, body: &[u8]) -> Option<WatchEvent> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        #[serde(borrow)]
        service_info: Option<ServiceInfo<'a>>,
    }
    let b: Body<'_> = serde_json::from_slice(body).ok()?;
    let info = b.service_info?;
    let service = *inner.by_name.get(info.name.as_ref())?;
    let instances = info
        .hosts
        .iter()
        .filter_map(|h| Some(SocketAddrV4::new(h.ip.parse::<Ipv4Addr>().ok()?, h.port)))
        .collect();
    Some(WatchEvent {
        service,
        received,
        instances,
    })
}
