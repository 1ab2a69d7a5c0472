//! The seam between the driver and a wire protocol.
//!
//! The driver decides *what* each simulated client does and *when* (schedules, retries,
//! failover, measurement); a [`Protocol`] decides *how* a batch of client operations
//! reaches one node and what came back. The driver calls [`Protocol::execute`] with a
//! [`Batch`] of [`Item`]s all addressed to one node and gets the batch back with one
//! [`Outcome`] per item; it never sees connections. A protocol may send a batch as one
//! request (the native API) or as one request per client on each client's own
//! connection (Nacos 2.x); it must fill `outcomes`, `sent` and `done`.
//!
//! Implementations: [`native`] (`--protocol native`, the server's batched gRPC API) and
//! [`nacos`] (`--protocol nacos`, a Nacos 2.x SDK connection per client), and for
//! comparison `etcd` (`--protocol etcd`, etcd v3 leases and keys; the `etcd` feature) and
//! [`zookeeper`] (`--protocol zookeeper`, ephemeral znodes). A protocol is
//! built from a [`Context`] (targets, population, options) by the code that selects it
//! (see `run::run`). A protocol with a connection per client opens them all before the
//! measured phases and reports that [`connect_phase`].

pub mod connect_phase;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod instance_json;
pub mod mapping;
pub mod nacos;
pub mod native;
pub mod zookeeper;

use std::future::Future;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::measure::op::Op;
use crate::population::Population;

/// What an item asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Register the client's instances (all its services).
    Register,
    /// Deregister the client's instances.
    Deregister,
    /// Heartbeat the client's instances.
    Beat,
    /// Query the instances of `Item::service`.
    Query,
}

impl Kind {
    /// The recorder's operation for this kind.
    pub fn op(self) -> Op {
        match self {
            Kind::Register => Op::Register,
            Kind::Deregister => Op::Deregister,
            Kind::Beat => Op::Beat,
            Kind::Query => Op::Query,
        }
    }
}

/// One operation of one simulated client.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    /// The client (`Population` id; marker clients from
    /// [`MARKER_BASE`](crate::population::MARKER_BASE)).
    pub client: u32,
    /// For [`Kind::Query`]: the service queried. For a marker client's write: its only
    /// service. Otherwise unused (the client's services come from the population).
    pub service: u32,
    /// What to do.
    pub kind: Kind,
    /// Retries so far.
    pub attempt: u8,
    /// When the schedule intended to send it.
    pub intended: Instant,
}

/// The result of one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// The node could not serve it (unreachable, overloaded, timed out, not the owner):
    /// the client moves to the next node and retries. The code names the reason
    /// (`UNAVAILABLE`, `timeout`, `503`, ...).
    Retry(&'static str),
    /// A heartbeat for an instance the node does not hold: the client registers again.
    NotFound,
    /// Refused for good (invalid input...): counted as an error, not retried.
    Failed(&'static str),
}

/// Items for one node, and their outcomes once executed. Buffers are reused.
#[derive(Debug)]
pub struct Batch {
    /// The node (index into the target list).
    pub node: usize,
    /// The items.
    pub items: Vec<Item>,
    /// One outcome per item, in order (filled by the protocol).
    pub outcomes: Vec<Outcome>,
    /// When the batch was handed to the protocol (set by the driver).
    pub sent: Instant,
    /// When its last response arrived (set by the protocol).
    pub done: Instant,
}

impl Batch {
    /// Runs every item at once with `item(node, item)` (a protocol without batch calls,
    /// one request per item), and fills the outcomes and the done time.
    pub async fn each<F, Fut>(mut self, item: F) -> Self
    where
        F: Fn(usize, Item) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let node = self.node;
        self.outcomes =
            futures::future::join_all(self.items.iter().map(|it| item(node, *it))).await;
        self.done = Instant::now();
        self
    }

    /// An empty batch for `node`.
    pub fn new(node: usize) -> Self {
        let now = Instant::now();
        Self {
            node,
            items: Vec::new(),
            outcomes: Vec::new(),
            sent: now,
            done: now,
        }
    }

    /// Sets every outcome to `outcome` (a whole-batch failure).
    pub fn fail_all(&mut self, outcome: Outcome) {
        self.outcomes.clear();
        self.outcomes.resize(self.items.len(), outcome);
        self.done = Instant::now();
    }
}

/// One state of a watched service, as pushed by a node.
#[derive(Debug)]
pub struct WatchEvent {
    /// The service (population index).
    pub service: u32,
    /// When the event arrived.
    pub received: Instant,
    /// The addresses of the instances the node holds for it.
    pub instances: Vec<SocketAddrV4>,
}

/// Where the cluster is and how to talk to it.
#[derive(Clone, Debug)]
pub struct Context {
    /// The nodes' main ports (`host:port`); the SDK port is main + 1000.
    pub targets: Vec<String>,
    /// The clients.
    pub population: Arc<Population>,
    /// Lanes the driver will use (`--connections` for the native protocol).
    pub lanes: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Services per native `QueryBatch` request (1: one `Query` per service).
    pub query_batch: usize,
    /// TLS to the targets' SDK ports (`--tls-ca`); `None`: plaintext.
    pub tls: Option<crate::tls::TargetTls>,
    /// etcd: which lease a client's keys are put with (`--etcd-lease`).
    pub etcd_lease: mapping::EtcdLease,
    /// ZooKeeper: which session a client's znodes live in (`--zk-sessions`).
    pub zk_sessions: mapping::ZkSessions,
}

impl Context {
    /// The SDK (gRPC) address of node `i`: its main port + 1000.
    pub fn sdk_target(&self, i: usize) -> String {
        let t = &self.targets[i];
        match t.rsplit_once(':') {
            Some((h, p)) => format!("{h}:{}", p.parse::<u16>().unwrap_or(0).saturating_add(1000)),
            None => t.clone(),
        }
    }
}

/// A wire protocol. See the module documentation.
pub trait Protocol: Send + Sync + 'static {
    /// The name used in reports (`native`, `nacos`).
    fn name(&self) -> &'static str;

    /// Largest batch `execute` takes.
    fn max_batch(&self) -> usize;

    /// Executes `batch` (all items for `batch.node`) from lane `lane` (`0..lanes` of the
    /// context; the driver's sender tasks, e.g. to pick a connection) and returns it with
    /// `outcomes` and `done` set.
    fn execute(&self, lane: usize, batch: Batch) -> impl Future<Output = Batch> + Send + 'static;

    /// A heartbeat of `client` that this protocol answers without a request, or `None`
    /// (the default): the heartbeat is sent like any item. etcd's shared leases
    /// (`--etcd-lease shared`) answer from the lease's state: the driver then records the
    /// outcome as the heartbeat falls due, without queueing it behind requests.
    fn local_beat(&self, client: u32) -> Option<Outcome> {
        let _ = client;
        None
    }

    /// Before the measured phases: prepares the clients `clients` (their first node is
    /// [`Population::first_node`]); a protocol with a connection per client opens them
    /// here, so that registrations are measured without handshakes. Returns what it
    /// measured; the default does nothing.
    fn connect_clients(
        &self,
        clients: std::ops::Range<u32>,
    ) -> impl Future<Output = Option<connect_phase::ConnectReport>> + Send + 'static {
        let _ = clients;
        async { None }
    }

    /// Subscribes to `services` on node `node`: a stream of their states, first the
    /// current one, then one per change. The receiver ends when the stream breaks.
    fn watch(
        &self,
        node: usize,
        services: Vec<u32>,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<WatchEvent>, String>> + Send + 'static;
}
