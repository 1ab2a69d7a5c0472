//! `LocalCluster`: N real nodes in one process on 127.0.0.1, for tests and loadgen.
//!
//! Each node runs on its own Tokio runtime (its own threads), with ports chosen by the
//! OS under Nacos's convention (SDK = main + 1000, cluster = main + 1001), so Nacos SDKs
//! find it from the main port. A node can be stopped (gracefully or killed), restarted on
//! the same ports with an empty state (it loads a snapshot), partitioned (its peer
//! traffic is cut both ways while clients still reach it), and frozen (every thread of its
//! runtime is held, as `kill -STOP` would hold the process: no protocol answers, no peer
//! traffic, no timers, until it is thawed).
//!
//! With a `members_file` in the template, the member list is that file's, which
//! [`LocalCluster::write_members`] rewrites (nodes join and leave while the others run).
//!
//! Every method takes `&self`, so a fault injector can act on a cluster that the load
//! generator reads at the same time.

use crate::clock::{Clock, system};
use crate::fault::PeerGate;
use crate::metrics::Metrics;
use crate::server::{Listeners, RunningServer, ServerConfig, bind_reusable, bind_sdk, start_with};
use anyhow::Context as _;
use distro_core::Node;
use parking_lot::{Condvar, Mutex};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ports of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// Main (HTTP) port.
    pub http: u16,
    /// SDK gRPC port (`http + 1000`).
    pub sdk: u16,
    /// Cluster gRPC port (`http + 1001`).
    pub cluster: u16,
}

struct Running {
    runtime: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    freeze: Arc<Freeze>,
}

impl Running {
    /// Stops the runtime at once (nothing is flushed) and lets frozen threads go.
    fn kill(self) {
        self.runtime.shutdown_background();
        self.freeze.release();
    }
}

/// A node's three listeners, as std sockets (to hand to the node's runtime).
type StdListeners = (
    std::net::TcpListener,
    std::net::TcpListener,
    std::net::TcpListener,
);

struct Slot {
    ports: NodePorts,
    /// The node's three ports held for the cluster's life by sockets bound with
    /// `SO_REUSEADDR` that never listen ([`hold_port`]): while the node is killed no
    /// outgoing connection of any process can take one as its ephemeral port (which would
    /// fail the restart's bind for as long as it lives, and 60 s more in `TIME_WAIT`), and
    /// a connection to the port is refused as it would be by a killed process.
    _held: [tokio::net::TcpSocket; 3],
    gate: Arc<PeerGate>,
    running: Mutex<Option<Running>>,
    /// The listeners of a node not started yet ([`LocalCluster::start_some`]).
    reserved: Mutex<Option<StdListeners>>,
}

/// A node's freeze: while `frozen`, tasks spawned on every worker thread of its runtime
/// block (a plain thread block, not an await), so nothing else runs on the runtime.
#[derive(Default)]
struct Freeze {
    state: Mutex<FreezeState>,
    changed: Condvar,
}

#[derive(Default)]
struct FreezeState {
    frozen: bool,
    /// Worker threads currently held.
    held: usize,
}

impl Freeze {
    fn release(&self) {
        self.state.lock().frozen = false;
        self.changed.notify_all();
    }

    fn held(&self) -> usize {
        self.state.lock().held
    }

    /// The body of a freeze task: holds its worker thread until the freeze is released.
    fn hold_thread(&self) {
        let mut s = self.state.lock();
        s.held += 1;
        while s.frozen {
            self.changed.wait(&mut s);
        }
        s.held -= 1;
    }
}

/// N nodes in one process. See the module documentation.
pub struct LocalCluster {
    slots: Vec<Slot>,
    template: ServerConfig,
    threads_per_node: usize,
    clock: Clock,
    /// The nodes the members file names, as last written by [`LocalCluster::write_members`].
    member_nodes: Mutex<Vec<usize>>,
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A socket bound to `port` on 127.0.0.1 with `SO_REUSEADDR` that never listens: a node's
/// listener can still bind the port (Linux refuses a reusable bind only beside a listening
/// socket), while the kernel never hands the port out as an ephemeral one (`connect`'s
/// automatic bind skips every port bound explicitly) nor to a bind of port 0.
fn hold_port(port: u16) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(LOCALHOST, port))?;
    Ok(socket)
}

/// A node's ports and their holders, and its listeners.
type Reserved = (NodePorts, [tokio::net::TcpSocket; 3], Listeners);

/// Holds three ports `p`, `p + 1000`, `p + 1001` on 127.0.0.1 ([`hold_port`]), `p` chosen
/// by the OS, and binds the node's listeners on them (the SDK port with `SO_REUSEPORT` when
/// `sdk_reuseport`).
fn reserve_ports(sdk_reuseport: bool) -> anyhow::Result<Reserved> {
    for _ in 0..200 {
        let first = hold_port(0)?;
        let p = first.local_addr()?.port();
        let (Some(sp), Some(cp)) = (p.checked_add(1000), p.checked_add(1001)) else {
            continue;
        };
        let (Ok(sdk_hold), Ok(cluster_hold)) = (hold_port(sp), hold_port(cp)) else {
            continue;
        };
        let (Ok(http), Ok(sdk), Ok(cluster)) = (
            bind_reusable(SocketAddr::new(LOCALHOST, p)),
            bind_sdk(SocketAddr::new(LOCALHOST, sp), sdk_reuseport),
            bind_reusable(SocketAddr::new(LOCALHOST, cp)),
        ) else {
            continue;
        };
        return Ok((
            NodePorts {
                http: p,
                sdk: sp,
                cluster: cp,
            },
            [first, sdk_hold, cluster_hold],
            Listeners { http, sdk, cluster },
        ));
    }
    anyhow::bail!("could not find three free ports p, p+1000, p+1001 on 127.0.0.1")
}

impl LocalCluster {
    /// Starts `n` nodes configured like `template` (its bind, ports, advertise and
    /// members are replaced), each with `threads_per_node` runtime threads.
    pub async fn start(
        n: usize,
        template: ServerConfig,
        threads_per_node: usize,
    ) -> anyhow::Result<Self> {
        Self::start_some(n, template, threads_per_node, n).await
    }

    /// As [`LocalCluster::start`], but only nodes `0..running` start; the others have
    /// their ports reserved and start with [`LocalCluster::restart`] (nodes that join
    /// later). With a `members_file` in `template`, the members are the file's (and the
    /// template's `members`), not every node of the cluster.
    pub async fn start_some(
        n: usize,
        template: ServerConfig,
        threads_per_node: usize,
        running: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(n > 0, "a cluster needs at least one node");
        // Reserve every node's ports first: the member list needs them all.
        let mut reserved = Vec::new();
        for _ in 0..n {
            reserved.push(reserve_ports(template.sdk_reuseport)?);
        }
        let mut listeners = Vec::new();
        let mut slots = Vec::new();
        for (ports, held, l) in reserved {
            listeners.push(l);
            slots.push(Slot {
                ports,
                _held: held,
                gate: Arc::new(PeerGate::default()),
                running: Mutex::new(None),
                reserved: Mutex::new(None),
            });
        }
        let cluster = LocalCluster {
            slots,
            template,
            threads_per_node: threads_per_node.max(1),
            clock: system(),
            member_nodes: Mutex::new(Vec::new()),
        };
        for (i, listeners) in listeners.into_iter().enumerate() {
            // Listeners were bound on the caller's runtime; hand them over as std sockets.
            let l = (
                listeners.http.into_std()?,
                listeners.sdk.into_std()?,
                listeners.cluster.into_std()?,
            );
            if i < running {
                cluster.launch(i, Some(l)).await?;
            } else {
                *cluster.slots[i].reserved.lock() = Some(l);
            }
        }
        Ok(cluster)
    }

    fn config_for(&self, i: usize) -> ServerConfig {
        let mut c = self.template.clone();
        let p = self.slots[i].ports;
        c.bind = LOCALHOST;
        c.port = p.http;
        c.sdk_port = Some(p.sdk);
        c.cluster_port = Some(p.cluster);
        c.advertise = Some(format!("127.0.0.1:{}", p.http));
        c.members = if c.members_file.is_some() {
            c.members
        } else if self.slots.len() > 1 {
            self.slots
                .iter()
                .map(|s| format!("127.0.0.1:{}", s.ports.http))
                .collect()
        } else {
            Vec::new()
        };
        c
    }

    async fn launch(&self, i: usize, std_listeners: Option<StdListeners>) -> anyhow::Result<()> {
        let std_listeners = std_listeners.or_else(|| self.slots[i].reserved.lock().take());
        let config = self.config_for(i);
        let gate = self.slots[i].gate.clone();
        let clock = self.clock.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads_per_node)
            .thread_name(format!("node{i}"))
            .enable_all()
            .build()
            .context("cannot build a node runtime")?;
        let ports = self.slots[i].ports;
        let reuseport = config.sdk_reuseport;
        let started = runtime
            .spawn(async move {
                let listeners = match std_listeners {
                    Some((h, s, c)) => Listeners {
                        http: tokio::net::TcpListener::from_std(h)?,
                        sdk: tokio::net::TcpListener::from_std(s)?,
                        cluster: tokio::net::TcpListener::from_std(c)?,
                    },
                    None => Listeners {
                        http: bind_reusable(SocketAddr::new(LOCALHOST, ports.http))?,
                        sdk: bind_sdk(SocketAddr::new(LOCALHOST, ports.sdk), reuseport)?,
                        cluster: bind_reusable(SocketAddr::new(LOCALHOST, ports.cluster))?,
                    },
                };
                start_with(config, listeners, gate, clock).await
            })
            .await;
        // A failed start must not drop its runtime (blocking) on the caller's runtime.
        let server = match started {
            Ok(Ok(server)) => server,
            Ok(Err(e)) => {
                runtime.shutdown_background();
                return Err(e);
            }
            Err(e) => {
                runtime.shutdown_background();
                return Err(anyhow::Error::new(e).context("node start task panicked"));
            }
        };
        let node = server.node().clone();
        let metrics = server.metrics().clone();
        let previous = self.slots[i].running.lock().replace(Running {
            runtime,
            server: Some(server),
            node,
            metrics,
            freeze: Arc::default(),
        });
        // Not reached in practice (a second launch cannot bind the ports); never leak one.
        if let Some(old) = previous {
            old.kill();
        }
        Ok(())
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The ports of node `i`.
    pub fn ports(&self, i: usize) -> NodePorts {
        self.slots[i].ports
    }

    /// The member address of node `i` (`ip:port` of its main port).
    pub fn member_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.slots[i].ports.http)
    }

    /// The main (HTTP) address of node `i`.
    pub fn http_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(LOCALHOST, self.slots[i].ports.http)
    }

    /// The SDK gRPC address of node `i`.
    pub fn sdk_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(LOCALHOST, self.slots[i].ports.sdk)
    }

    /// Every node's main address, as Nacos clients take a server list.
    pub fn server_list(&self) -> Vec<String> {
        (0..self.len())
            .map(|i| self.http_addr(i).to_string())
            .collect()
    }

    /// Node `i`'s core, if running.
    pub fn node(&self, i: usize) -> Option<Arc<Node>> {
        self.slots[i]
            .running
            .lock()
            .as_ref()
            .map(|r| r.node.clone())
    }

    /// Node `i`'s request metrics, if running.
    pub fn metrics(&self, i: usize) -> Option<Arc<Metrics>> {
        self.slots[i]
            .running
            .lock()
            .as_ref()
            .map(|r| r.metrics.clone())
    }

    /// Whether node `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.slots[i].running.lock().is_some()
    }

    /// Stops node `i` gracefully (flushes its pending syncs).
    pub async fn stop(&self, i: usize) {
        let taken = self.slots[i].running.lock().take();
        if let Some(mut r) = taken {
            // A frozen node cannot flush: thaw it first.
            r.freeze.release();
            if let Some(server) = r.server.take() {
                let _ = r.runtime.spawn(server.shutdown()).await;
            }
            r.kill();
        }
    }

    /// Kills node `i` at once, as `kill -9` would: nothing is flushed (a frozen node dies
    /// frozen).
    pub fn kill(&self, i: usize) {
        let taken = self.slots[i].running.lock().take();
        if let Some(r) = taken {
            r.kill();
        }
    }

    /// Starts node `i` again on its ports with an empty state; it loads a snapshot.
    pub async fn restart(&self, i: usize) -> anyhow::Result<()> {
        if self.is_running(i) {
            return Ok(());
        }
        // The killed runtime's sockets close asynchronously; retry the bind briefly.
        let mut last = None;
        for _ in 0..50 {
            match self.launch(i, None).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }

    /// The cluster port's listener reserved for node `i`, which has not started (see
    /// [`LocalCluster::start_some`]), for a test that serves a peer of its own there (a
    /// build of another version, say): the running nodes reach it as node `i`. Node `i`
    /// cannot start afterwards (the caller holds its cluster port). `None` if node `i`
    /// started or its listeners were taken.
    pub fn take_reserved_cluster_listener(&self, i: usize) -> Option<std::net::TcpListener> {
        let (_http, _sdk, cluster) = self.slots.get(i)?.reserved.lock().take()?;
        Some(cluster)
    }

    /// The members file of the template, if the members come from one.
    pub fn members_file(&self) -> Option<&std::path::Path> {
        self.template.members_file.as_deref()
    }

    /// Writes the members file so that it names nodes `nodes` (a new file renamed over the
    /// old one, so that no node reads it half-written). The running nodes read it within
    /// their `members_file_interval`. An error without a members file in the template.
    pub fn write_members(&self, nodes: &[usize]) -> anyhow::Result<()> {
        let path = self
            .members_file()
            .context("the cluster's members do not come from a members file")?;
        let mut text = String::from("# written by LocalCluster::write_members\n");
        for &i in nodes {
            anyhow::ensure!(i < self.slots.len(), "no node {i} in this cluster");
            text.push_str(&self.member_addr(i));
            text.push('\n');
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        *self.member_nodes.lock() = nodes.to_vec();
        Ok(())
    }

    /// The nodes named by the last [`Self::write_members`] (empty before).
    pub fn member_nodes(&self) -> Vec<usize> {
        self.member_nodes.lock().clone()
    }

    /// Cuts node `i`'s peer traffic both ways (clients still reach it).
    pub fn partition(&self, i: usize) {
        self.slots[i].gate.close();
    }

    /// Restores node `i`'s peer traffic.
    pub fn heal(&self, i: usize) {
        self.slots[i].gate.open();
    }

    /// Stalls node `i`'s native client API for `duration` from now: requests that arrive
    /// meanwhile (and those being received) are held and served when the pause ends. Peer
    /// traffic goes on. Returns at once.
    pub fn pause(&self, i: usize, duration: std::time::Duration) {
        self.slots[i].gate.pause_for(duration);
    }

    /// Whether node `i`'s client API is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.slots[i].gate.paused_until().is_some()
    }

    /// Whether node `i` is partitioned.
    pub fn is_partitioned(&self, i: usize) -> bool {
        !self.slots[i].gate.is_open()
    }

    /// Freezes node `i` as `kill -STOP` would: every worker thread of its runtime is held,
    /// so it answers no client on any protocol (connections are accepted by the kernel and
    /// wait), sends and answers no peer traffic, and runs no timer, until [`Self::thaw`].
    /// (Its blocking-pool threads are not held: a snapshot stream, a sync batch's apply, a
    /// verify list or a tick already running there finishes, and a tick's commands run
    /// after the thaw; no new one starts, as only a worker starts them.) Returns once
    /// every worker thread is held; an error if node `i` does not run, is already frozen,
    /// or its threads were not all held within `within`.
    pub async fn freeze(&self, i: usize, within: Duration) -> anyhow::Result<()> {
        let (handle, freeze) = {
            let running = self.slots[i].running.lock();
            let r = running
                .as_ref()
                .with_context(|| format!("node {i} does not run: cannot freeze it"))?;
            (r.runtime.handle().clone(), r.freeze.clone())
        };
        {
            let mut s = freeze.state.lock();
            anyhow::ensure!(!s.frozen, "node {i} is already frozen");
            s.frozen = true;
        }
        // Spawned from outside the runtime, the tasks go to its shared queue; a worker
        // that takes one is held, so the others take (or steal) the rest.
        for _ in 0..self.threads_per_node {
            let f = freeze.clone();
            drop(handle.spawn(async move { f.hold_thread() }));
        }
        let deadline = Instant::now() + within;
        while freeze.held() < self.threads_per_node {
            if Instant::now() >= deadline {
                freeze.release();
                anyhow::bail!(
                    "node {i}: only {} of its {} threads were held within {within:?}",
                    freeze.held(),
                    self.threads_per_node
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Lets a frozen node `i` run again (nothing happens if it is not frozen).
    pub fn thaw(&self, i: usize) {
        if let Some(r) = self.slots[i].running.lock().as_ref() {
            r.freeze.release();
        }
    }

    /// Whether node `i` is frozen.
    pub fn is_frozen(&self, i: usize) -> bool {
        self.slots[i]
            .running
            .lock()
            .as_ref()
            .is_some_and(|r| r.freeze.state.lock().frozen)
    }

    /// Stops every node gracefully.
    pub async fn shutdown(self) {
        for i in 0..self.slots.len() {
            self.stop(i).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for s in &mut self.slots {
            if let Some(r) = s.running.get_mut().take() {
                r.kill();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed node's ports stay taken while it is down (a connection is refused, and a
    /// bind without `SO_REUSEADDR`, like every `connect`'s automatic bind, finds the port
    /// in use), and its restart gets them back and serves on them; with one SDK socket
    /// per worker thread (`sdk_reuseport`) too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_nodes_ports_stay_held_and_refuse_until_it_restarts() {
        for sdk_reuseport in [false, true] {
            let config = ServerConfig {
                sdk_reuseport,
                ..ServerConfig::default()
            };
            kill_and_restart(config).await;
        }
    }

    async fn kill_and_restart(config: ServerConfig) {
        let c = LocalCluster::start(1, config, 2).await.expect("starts");
        let p = c.ports(0);
        let addrs = [p.http, p.sdk, p.cluster].map(|port| SocketAddr::new(LOCALHOST, port));
        c.kill(0);
        // The killed runtime closes its listeners asynchronously: wait until all are gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !addrs.iter().all(|a| {
            std::net::TcpStream::connect(a)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        }) {
            assert!(Instant::now() < deadline, "the killed node still accepts");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for a in addrs {
            let plain = tokio::net::TcpSocket::new_v4().expect("a socket");
            let e = plain.bind(a).expect_err("the killed node's port is held");
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{a}: {e}");
        }
        c.restart(0).await.expect("restarts on its ports");
        for a in addrs {
            std::net::TcpStream::connect(a).expect("the restarted node listens");
        }
        c.shutdown().await;
    }
}
