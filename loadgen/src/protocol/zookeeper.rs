//! `--protocol zookeeper`: ZooKeeper as a service registry, the way Dubbo and Curator's
//! service discovery use it, through the `tokio-zookeeper` crate.
//!
//! Mapping of the scenarios' operations:
//!
//! * sessions (`--zk-sessions`, [`ZkSessions`]): by default `shared:16`, 16 sessions per
//!   member (target), asking for a [`SESSION_TIMEOUT`] (the server clamps it to 2 to 20
//!   ticks); client `c` sent to a member uses that member's session `c mod 16`, so that an
//!   item goes to the member the driver chose. A pool, as the etcd mapping shares one
//!   channel per member. With `per-client`, each client has a session of its own (one TCP
//!   connection and one task per client), as Curator's service discovery has: opened on
//!   the client's first member before the measured phases (the connect phase), or on first
//!   use (a probe's marker client, a client whose connect failed); a client's operations
//!   all go through its session, on the member it was opened on (a session is the
//!   cluster's, not a member's: the driver's failover does not move it);
//! * register: per instance, an ephemeral znode `/services/<service>/<ip:port>`
//!   ([`instance_path`]) whose data is the instance as JSON (the same JSON as etcd's
//!   value); its parents are persistent, created by [`ZookeeperProtocol::connect`] (and
//!   again when a create finds one missing). A znode that exists already (a client
//!   registering again) is a success;
//! * heartbeat: an `exists` of the client's first znode on its session: a request and its
//!   answer, which keeps the session alive as a ping does (the library sends its own
//!   pings only when a session is idle, and has no call for one), and tells the client
//!   when its znode is gone (a not-found: the client registers again);
//! * deregister: the client's znodes deleted (one already gone counts as deleted);
//! * query: `getChildren` of the service, then `getData` of every child (what a
//!   discovery client reads to learn the instances), sent together;
//! * watch: per service, on a session of its own on the member asked for, a child watch:
//!   `getChildren` with a watch, and again after each notification. An event's time is
//!   the arrival of the `getChildren` answer that shows the change (when the client
//!   learns the instances, as Curator's child cache does), so a probe's replication lag
//!   is the time from its create's acknowledgement to that answer on every member.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_zookeeper::{Acl, CreateMode, ZooKeeper, ZooKeeperBuilder, error};

use super::connect_phase::{CONNECT_PARALLEL, ConnectMeter, ConnectReport};
use super::instance_json::instance_json;
use super::mapping::ZkSessions;
use super::{Batch, Context, Item, Kind, Outcome, Protocol, WatchEvent};
use crate::population::{MARKER_BASE, Population};

/// Open files asked for besides one per client's session (`--zk-sessions per-client`).
const DESCRIPTOR_MARGIN: u64 = 8_192;

/// The session timeout asked for (Nacos's instance expiry: three missed 5 s heartbeats).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(15);

/// The root of the registry's znodes.
pub const ROOT: &str = "/services";

/// The znode of service `service`: `/services/<service>`.
pub fn service_path(service: &str) -> String {
    format!("{ROOT}/{service}")
}

/// The ephemeral znode of an instance of `service` at `addr`.
pub fn instance_path(service: &str, addr: SocketAddrV4) -> String {
    format!("{ROOT}/{service}/{addr}")
}

/// `--protocol zookeeper`. See the module documentation.
#[derive(Clone)]
pub struct ZookeeperProtocol {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ZookeeperProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperProtocol")
            .field("members", &self.inner.members.len())
            .finish()
    }
}

struct Inner {
    /// Per member (target): its address and its shared sessions (one in per-client mode,
    /// for the service znodes).
    members: Vec<(SocketAddr, Vec<ZooKeeper>)>,
    /// Shared or per-client sessions.
    mode: ZkSessions,
    /// Per-client mode: each client's session.
    sessions: parking_lot::Mutex<HashMap<u32, ZooKeeper>>,
    population: Arc<Population>,
    timeout: Duration,
}

/// The socket address of a target (`host:port`).
async fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("--targets: cannot resolve the ZooKeeper member {target}"))?
        .next()
        .with_context(|| format!("--targets: the ZooKeeper member {target} has no address"))
}

/// A new session on the member at `addr`.
pub async fn session(addr: SocketAddr) -> anyhow::Result<ZooKeeper> {
    let mut b = ZooKeeperBuilder::default();
    b.set_timeout(SESSION_TIMEOUT);
    let (zk, _default_watcher) = b.connect(&addr).await.map_err(|e| {
        anyhow::anyhow!("cannot open a session on the ZooKeeper member {addr}: {e}")
    })?;
    Ok(zk)
}

/// Creates the persistent znode `path` unless it exists.
async fn ensure_persistent(zk: &ZooKeeper, path: &str) -> anyhow::Result<()> {
    match zk
        .create(path, &b""[..], Acl::open_unsafe(), CreateMode::Persistent)
        .await
    {
        Ok(Ok(_) | Err(error::Create::NodeExists)) => Ok(()),
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot create the znode {path}: {e}")),
        Err(e) => Err(anyhow::anyhow!("cannot create the znode {path}: {e}")),
    }
}

impl ZookeeperProtocol {
    /// Opens the shared sessions on each target (`host:port`, a member's client port;
    /// one per member in per-client mode, which first raises the open-file limit for a
    /// session per client) and creates the persistent znodes of every service.
    pub async fn connect(ctx: &Context) -> anyhow::Result<Self> {
        let shared = match ctx.zk_sessions {
            ZkSessions::Shared(n) => n,
            ZkSessions::PerClient => {
                let wanted = u64::from(ctx.population.clients()) + DESCRIPTOR_MARGIN;
                let limit = crate::protocol::nacos::raise_nofile(wanted).map_err(|e| {
                    anyhow::anyhow!(
                        "--zk-sessions per-client: cannot read the open-file limit: {e}"
                    )
                })?;
                anyhow::ensure!(
                    limit.is_enough(),
                    "--zk-sessions per-client: a session per client needs {wanted} open files \
                     (the clients and a margin), and this process may open at most {} (raise \
                     the hard limit, ulimit -Hn, or use --zk-sessions shared:N)",
                    limit.now
                );
                1
            }
        };
        let mut members = Vec::with_capacity(ctx.targets.len());
        for t in &ctx.targets {
            let addr = resolve(t).await?;
            let sessions = futures::future::try_join_all(
                (0..shared).map(|_| tokio::time::timeout(ctx.timeout, session(addr))),
            )
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the ZooKeeper member {t} did not open a session within {:?}",
                    ctx.timeout
                )
            })?
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
            members.push((addr, sessions));
        }
        let zk = &members.first().context("--targets: no ZooKeeper member")?.1[0];
        ensure_persistent(zk, ROOT).await?;
        let names = ctx.population.service_names();
        for chunk in names.chunks(256) {
            futures::future::try_join_all(
                chunk
                    .iter()
                    .map(|name| async move { ensure_persistent(zk, &service_path(name)).await }),
            )
            .await?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                members,
                mode: ctx.zk_sessions,
                sessions: parking_lot::Mutex::new(HashMap::new()),
                population: ctx.population.clone(),
                timeout: ctx.timeout,
            }),
        })
    }
}

impl Inner {
    /// Per-client mode: opens client `client`'s session on its first member, before the
    /// measured phases; the time it took, or why it failed.
    async fn open_client_session(&self, client: u32) -> Result<Duration, String> {
        let node = self.population.first_node(client, self.members.len());
        let addr = self.members[node].0;
        let start = Instant::now();
        match tokio::time::timeout(self.timeout, session(addr)).await {
            Ok(Ok(zk)) => {
                self.sessions.lock().insert(client, zk);
                Ok(start.elapsed())
            }
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("no session from {addr} within {:?}", self.timeout)),
        }
    }

    /// Per-client mode: opens every session of `clients`, [`CONNECT_PARALLEL`] at a time.
    async fn connect_all(&self, clients: std::ops::Range<u32>) -> ConnectReport {
        use futures::StreamExt as _;
        let start = Instant::now();
        let mut meter = ConnectMeter::default();
        let mut opened = futures::stream::iter(clients)
            .map(|c| self.open_client_session(c))
            .buffer_unordered(CONNECT_PARALLEL);
        while let Some(r) = opened.next().await {
            meter.record(r);
        }
        meter.finish(start.elapsed(), CONNECT_PARALLEL)
    }

    /// The session client `it.client`'s item goes through: its own (opened on `node` if it
    /// has none), or the shared session of `node` it maps to.
    async fn session_for(&self, node: usize, it: &Item) -> Result<ZooKeeper, Outcome> {
        let Some((addr, sessions)) = self.members.get(node) else {
            return Err(Outcome::Failed("no-such-member"));
        };
        if let ZkSessions::Shared(_) = self.mode {
            return Ok(sessions[it.client as usize % sessions.len()].clone());
        }
        if let Some(zk) = self.sessions.lock().get(&it.client) {
            return Ok(zk.clone());
        }
        match tokio::time::timeout(self.timeout, session(*addr)).await {
            Ok(Ok(zk)) => Ok(self.sessions.lock().entry(it.client).or_insert(zk).clone()),
            Ok(Err(_)) => Err(Outcome::Retry("transport")),
            Err(_) => Err(Outcome::Retry("timeout")),
        }
    }
}

/// What a failed request means for the driver: the connection broke or the session is
/// being re-established (retry elsewhere).
fn transport(_: tokio_zookeeper::error::Error) -> Outcome {
    Outcome::Retry("transport")
}

impl Inner {
    /// The services an item writes: a marker's own, or the client's.
    fn services(&self, it: &Item) -> Vec<u32> {
        if it.client >= MARKER_BASE {
            vec![it.service]
        } else {
            self.population.services_of(it.client).collect()
        }
    }

    async fn item(&self, node: usize, it: Item) -> Outcome {
        let zk = match self.session_for(node, &it).await {
            Ok(zk) => zk,
            Err(o) => return o,
        };
        let o = match tokio::time::timeout(self.timeout, self.item_inner(&zk, it)).await {
            Ok(o) => o,
            Err(_) => Outcome::Retry("timeout"),
        };
        // A probe's marker client is done once deregistered: its own session goes (a run
        // would otherwise keep one open per probe).
        if self.mode == ZkSessions::PerClient
            && it.client >= MARKER_BASE
            && it.kind == Kind::Deregister
            && o == Outcome::Ok
        {
            self.sessions.lock().remove(&it.client);
        }
        o
    }

    async fn item_inner(&self, zk: &ZooKeeper, it: Item) -> Outcome {
        let pop = &self.population;
        let addr = pop.addr(it.client);
        match it.kind {
            Kind::Register => {
                for s in self.services(&it) {
                    let name = pop.service_name(s);
                    let path = instance_path(name, addr);
                    let data = instance_json(name, addr).into_bytes();
                    let mut created = zk
                        .create(
                            &path,
                            data.clone(),
                            Acl::open_unsafe(),
                            CreateMode::Ephemeral,
                        )
                        .await;
                    if let Ok(Err(error::Create::NoNode)) = created {
                        // The service's znode is missing (removed by someone else): create
                        // it, then the instance again.
                        for p in [ROOT.to_owned(), service_path(name)] {
                            if ensure_persistent(zk, &p).await.is_err() {
                                return Outcome::Retry("transport");
                            }
                        }
                        created = zk
                            .create(&path, data, Acl::open_unsafe(), CreateMode::Ephemeral)
                            .await;
                    }
                    match created {
                        Ok(Ok(_) | Err(error::Create::NodeExists)) => {}
                        Ok(Err(_)) => return Outcome::Failed("zookeeper"),
                        Err(e) => return transport(e),
                    }
                }
                Outcome::Ok
            }
            Kind::Deregister => {
                for s in self.services(&it) {
                    let path = instance_path(pop.service_name(s), addr);
                    match zk.delete(&path, None).await {
                        Ok(Ok(()) | Err(error::Delete::NoNode)) => {}
                        Ok(Err(_)) => return Outcome::Failed("zookeeper"),
                        Err(e) => return transport(e),
                    }
                }
                Outcome::Ok
            }
            Kind::Beat => {
                let Some(s) = self.services(&it).first().copied() else {
                    return Outcome::Ok;
                };
                match zk.exists(&instance_path(pop.service_name(s), addr)).await {
                    Ok(Some(_)) => Outcome::Ok,
                    Ok(None) => Outcome::NotFound,
                    Err(e) => transport(e),
                }
            }
            Kind::Query => {
                let service = service_path(pop.service_name(it.service));
                let children = match zk.get_children(&service).await {
                    Ok(c) => c.unwrap_or_default(),
                    Err(e) => return transport(e),
                };
                let reads = children.iter().map(|c| {
                    let path = format!("{service}/{c}");
                    async move { zk.get_data(&path).await }
                });
                for r in futures::future::join_all(reads).await {
                    // A child deleted meanwhile reads as None: not an error.
                    if let Err(e) = r {
                        return transport(e);
                    }
                }
                Outcome::Ok
            }
        }
    }
}

/// Watches one service on `zk`: its current instances, then one state per change.
async fn watch_service(
    zk: ZooKeeper,
    service: u32,
    path: String,
    tx: tokio::sync::mpsc::Sender<WatchEvent>,
) -> Result<(), tokio_zookeeper::error::Error> {
    loop {
        let Some((changed, children)) = zk.with_watcher().get_children(&path).await? else {
            // The service's znode does not exist (yet): wait for its creation.
            let (created, _) = zk.with_watcher().exists(&path).await?;
            if created.await.is_err() {
                return Ok(());
            }
            continue;
        };
        let ev = WatchEvent {
            service,
            received: Instant::now(),
            instances: children.iter().filter_map(|c| c.parse().ok()).collect(),
        };
        if tx.send(ev).await.is_err() {
            return Ok(());
        }
        // A one-shot watch: it fires once, then the loop reads (and watches) again. A
        // closed channel means the session is gone.
        if changed.await.is_err() {
            return Ok(());
        }
    }
}

impl Protocol for ZookeeperProtocol {
    fn name(&self) -> &'static str {
        "zookeeper"
    }

    fn max_batch(&self) -> usize {
        256
    }

    fn execute(&self, _lane: usize, batch: Batch) -> impl Future<Output = Batch> + Send + 'static {
        let inner = self.inner.clone();
        async move { batch.each(|node, it| inner.item(node, it)).await }
    }

    fn connect_clients(
        &self,
        clients: std::ops::Range<u32>,
    ) -> impl Future<Output = Option<ConnectReport>> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            match inner.mode {
                ZkSessions::PerClient => Some(inner.connect_all(clients).await),
                ZkSessions::Shared(_) => None,
            }
        }
    }

    fn watch(
        &self,
        node: usize,
        services: Vec<u32>,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<WatchEvent>, String>> + Send + 'static
    {
        let inner = self.inner.clone();
        async move {
            let addr = inner
                .members
                .get(node)
                .map(|(a, _)| *a)
                .ok_or_else(|| format!("watch on member {node}: no such member"))?;
            let zk = session(addr).await.map_err(|e| format!("{e:#}"))?;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let tasks: Vec<_> = services
                .iter()
                .map(|s| {
                    let path = service_path(inner.population.service_name(*s));
                    tokio::spawn(watch_service(zk.clone(), *s, path, tx.clone()))
                })
                .collect();
            drop(tx);
            // The stream ends (the receiver closes) when any service's watch ends.
            tokio::spawn(async move {
                if tasks.is_empty() {
                    return;
                }
                let (_, _, rest) = futures::future::select_all(tasks).await;
                for t in rest {
                    t.abort();
                }
            });
            Ok(rx)
        }
    }
}

/// The instances a member holds: the children of every service znode, read on that
/// member (a follower answers from its own copy).
pub async fn count_instances(target: &str) -> anyhow::Result<usize> {
    let addr = resolve(target).await?;
    let zk = session(addr).await?;
    let services = zk
        .get_children(ROOT)
        .await
        .map_err(|e| anyhow::anyhow!("cannot list {ROOT} on the ZooKeeper member {target}: {e}"))?
        .unwrap_or_default();
    let counts = futures::future::join_all(services.iter().map(|s| {
        let path = format!("{ROOT}/{s}");
        let zk = &zk;
        async move { zk.get_children(&path).await }
    }))
    .await;
    let mut n = 0;
    for c in counts {
        n += c
            .map_err(|e| {
                anyhow::anyhow!("cannot count the instances on the ZooKeeper member {target}: {e}")
            })?
            .map_or(0, |v| v.len());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn paths_carry_the_address() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 8080);
        let p = instance_path("svc-1", a);
        assert_eq!(p, "/services/svc-1/10.1.2.3:8080");
        let child = p.rsplit('/').next().expect("a child name");
        assert_eq!(child.parse::<SocketAddrV4>().ok(), Some(a));
        assert_eq!(service_path("svc-1"), "/services/svc-1");
    }
}
