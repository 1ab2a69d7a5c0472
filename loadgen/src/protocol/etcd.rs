//! `--protocol etcd`: etcd v3 as a service registry, the way gRPC naming resolvers,
//! Kratos and go-micro use it, through the `etcd-client` crate.
//!
//! Mapping of the scenarios' operations (`--etcd-lease per-client`, the default):
//!
//! * register: a fresh lease of [`LEASE_TTL_S`] seconds per client, then one key per
//!   instance, `/services/<namespace>/<group>/<service>/<ip:port>` ([`instance_key`]),
//!   its value the instance as JSON, put with that lease;
//! * heartbeat: one lease keep-alive request and its answer on the client's keep-alive
//!   stream, which stays open from the client's first heartbeat to its deregistration, as
//!   a real etcd client keeps it (opened again on another member after a failover, or
//!   when it broke); an answer with TTL 0 (the lease expired) is a not-found, and the
//!   client registers again;
//! * deregister: the lease revoked (its keys go with it);
//! * query: a prefix range read of the service's keys;
//! * watch: per service, a serializable (member-local) read of the prefix, then a prefix
//!   watch from the next revision, on the member asked for: the probes' replication lag is the
//!   time from a put's acknowledgement to its event on every member.
//!
//! With `--etcd-lease shared:N` ([`EtcdLease::Shared`]), N leases are granted once (again
//! when one expires) and client `c`'s keys are put with lease `c mod N`: register is the
//! puts alone; each lease is kept alive by a task of its own every [`SHARED_LEASE_RENEWAL`]
//! on a keep-alive stream, as an etcd client library keeps a process's lease, whatever the
//! clients do; a client's heartbeat sends no request ([`Protocol::local_beat`]): it is
//! answered from that lease's state, a not-found when the lease its keys were put with has
//! expired since (the client then registers again with the new one); deregister deletes
//! the client's keys.
//!
//! etcd 3.4 before 3.4.27 (Debian's 3.4.23 among them) applies a put with a lease in time
//! linear in the keys already attached to that lease (its auth check lists them, even with
//! auth off: etcd issue 15993, fixed by etcd pull request 16020): with one lease shared by
//! N clients, registering them costs etcd O(N²), which `shared:N` with more leases avoids.
//!
//! Each member (target) gets its own client (one HTTP/2 channel), so that an item goes to
//! the member the driver chose, not to one the library would pick.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions,
    WatchOptions,
};
use parking_lot::Mutex;

use super::mapping::{EtcdLease, SHARED_LEASE_RENEWAL};
use super::nacos::{DEFAULT_GROUP, DEFAULT_NAMESPACE};
use super::{Batch, Context, Item, Kind, Outcome, Protocol, WatchEvent};
use crate::population::{MARKER_BASE, Population};

/// The lease TTL of a registration, in seconds (Nacos's default instance expiry: an
/// instance missing three 5 s heartbeats is gone).
pub const LEASE_TTL_S: i64 = 15;

/// The key prefix of service `service`: `/services/<namespace>/<group>/<service>/`.
pub fn service_prefix(service: &str) -> String {
    format!("/services/{DEFAULT_NAMESPACE}/{DEFAULT_GROUP}/{service}/")
}

/// The key of an instance of `service` at `addr`.
pub fn instance_key(service: &str, addr: SocketAddrV4) -> String {
    format!("{}{addr}", service_prefix(service))
}

/// The value of an instance's key: the instance as JSON, in Nacos's field names.
pub fn instance_value(service: &str, addr: SocketAddrV4) -> String {
    super::instance_json::instance_json(service, addr)
}

/// `--protocol etcd`. See the module documentation.
#[derive(Clone)]
pub struct EtcdProtocol {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdProtocol")
            .field("members", &self.inner.members.len())
            .finish()
    }
}

struct Inner {
    /// Itself, for the shared leases' keep-alive tasks (which end with it).
    this: Weak<Inner>,
    /// One client per member (target).
    members: Vec<Client>,
    population: Arc<Population>,
    /// Per-client or shared leases.
    mode: EtcdLease,
    /// The lease of each holder: a registered client (per-client mode), or a group `c mod
    /// N` (shared mode).
    leases: Mutex<HashMap<u32, Lease>>,
    /// Shared mode: the generation of the lease each registered client's keys were put
    /// with.
    registered: Mutex<HashMap<u32, u64>>,
    /// Shared mode: one grant of a group's lease at a time.
    granting: Vec<tokio::sync::Mutex<()>>,
    /// Shared mode: generations of group leases granted so far.
    generations: AtomicU64,
    /// Keep-alive streams opened so far.
    keep_alive_streams: AtomicU64,
    timeout: Duration,
}

impl EtcdProtocol {
    /// Connects one client to each target (`host:port`, an etcd client URL without its
    /// scheme, or with `http://` or `https://`); with `--tls-ca` (`ctx.tls`), over TLS
    /// trusting only that CA, the server name checked being the target's host.
    pub async fn connect(ctx: &Context) -> anyhow::Result<Self> {
        let mut members = Vec::with_capacity(ctx.targets.len());
        let scheme = if ctx.tls.is_some() { "https" } else { "http" };
        for t in &ctx.targets {
            let url = if t.contains("://") {
                t.clone()
            } else {
                format!("{scheme}://{t}")
            };
            let mut options = ConnectOptions::new()
                .with_connect_timeout(ctx.timeout)
                .with_timeout(ctx.timeout);
            if let Some(tls) = &ctx.tls {
                options = options.with_tls(tls.tonic());
            }
            let mut client = Client::connect([url.as_str()], Some(options))
                .await
                .with_context(|| format!("cannot connect to the etcd member {url}"))?;
            // The channel connects lazily: one status request checks the member (and its
            // TLS) before the run, so that a wrong CA or a dead member ends it at once.
            client
                .status()
                .await
                .with_context(|| format!("cannot connect to the etcd member {url}"))?;
            members.push(client);
        }
        Ok(Self {
            inner: Arc::new_cyclic(|this| Inner {
                this: this.clone(),
                members,
                population: ctx.population.clone(),
                mode: ctx.etcd_lease,
                leases: Mutex::new(HashMap::new()),
                registered: Mutex::new(HashMap::new()),
                granting: match ctx.etcd_lease {
                    EtcdLease::PerClient => Vec::new(),
                    EtcdLease::Shared(n) => (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
                },
                generations: AtomicU64::new(0),
                keep_alive_streams: AtomicU64::new(0),
                timeout: ctx.timeout,
            }),
        })
    }
}

/// A lease (a registered client's, or a shared group's), and its keep-alive stream once it
/// has been kept alive.
struct Lease {
    id: i64,
    keep_alive: Option<Arc<KeepAlive>>,
    /// Shared mode: which grant of the group this is.
    generation: u64,
    /// Shared mode: when it was granted or last renewed.
    renewed: Instant,
}

impl Lease {
    fn new(id: i64, generation: u64) -> Self {
        Self {
            id,
            keep_alive: None,
            generation,
            renewed: Instant::now(),
        }
    }
}

/// A lease's open keep-alive stream on one member.
struct KeepAlive {
    /// The member it is open on.
    node: usize,
    /// The request side and the answers; one beat at a time.
    stream: tokio::sync::Mutex<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl EtcdProtocol {
    /// How many keep-alive streams were opened so far (one per client that beat, plus one
    /// per failover or broken stream).
    pub fn keep_alive_streams_opened(&self) -> u64 {
        self.inner.keep_alive_streams.load(Relaxed)
    }
}

/// What an etcd error means for the driver.
fn outcome_of(e: &etcd_client::Error) -> Outcome {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::Unavailable => Outcome::Retry("UNAVAILABLE"),
            Code::DeadlineExceeded => Outcome::Retry("timeout"),
            Code::ResourceExhausted => Outcome::Retry("RESOURCE_EXHAUSTED"),
            Code::Cancelled | Code::Aborted | Code::Unknown => Outcome::Retry("etcd"),
            Code::NotFound => Outcome::NotFound,
            _ => Outcome::Failed("etcd"),
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Outcome::Retry("transport")
        }
        _ => Outcome::Failed("etcd"),
    }
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

    /// The holder of client `client`'s lease: itself, or its group in shared mode.
    fn holder(&self, client: u32) -> u32 {
        match self.mode {
            EtcdLease::PerClient => client,
            EtcdLease::Shared(n) => client % n,
        }
    }

    async fn item(&self, node: usize, it: Item) -> Outcome {
        let client = self.members[node].clone();
        match Box::pin(tokio::time::timeout(
            self.timeout,
            self.item_inner(node, client, it),
        ))
        .await
        {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => outcome_of(&e),
            Err(_) => {
                if it.kind == Kind::Beat {
                    // Its answer may still come: the next beat opens a fresh stream, so
                    // that it does not read this one's answer as its own.
                    if let Some(l) = self.leases.lock().get_mut(&self.holder(it.client)) {
                        l.keep_alive = None;
                    }
                }
                Outcome::Retry("timeout")
            }
        }
    }

    /// Shared mode: group `group`'s lease and its generation, granted first if it has none
    /// (one grant at a time per group).
    async fn group_lease(
        &self,
        node: usize,
        client: &Client,
        group: u32,
    ) -> Result<(i64, u64), etcd_client::Error> {
        let current = || self.leases.lock().get(&group).map(|l| (l.id, l.generation));
        if let Some(l) = current() {
            return Ok(l);
        }
        let _one = self.granting[group as usize].lock().await;
        if let Some(l) = current() {
            return Ok(l);
        }
        let id = client.lease_client().grant(LEASE_TTL_S, None).await?.id();
        let generation = self.generations.fetch_add(1, Relaxed) + 1;
        self.leases.lock().insert(group, Lease::new(id, generation));
        tokio::spawn(keep_shared_lease(self.this.clone(), group, id, node));
        Ok((id, generation))
    }

    /// Shared mode: forgets group `group`'s lease `id` (it expired), so that the next
    /// registration grants a new one.
    fn expired(&self, group: u32, id: i64) {
        let mut leases = self.leases.lock();
        if leases.get(&group).is_some_and(|l| l.id == id) {
            leases.remove(&group);
        }
    }

    /// Shared mode: a heartbeat of `client_id`, answered without a request: Ok while the
    /// lease its keys were put with lives (kept alive by [`keep_shared_lease`]), a
    /// not-found once it has expired or the client is not registered.
    fn shared_beat(&self, client_id: u32) -> Outcome {
        let group = self.holder(client_id);
        let Some(generation) = self.registered.lock().get(&client_id).copied() else {
            return Outcome::NotFound;
        };
        match self.leases.lock().get(&group) {
            Some(l) if l.generation == generation => Outcome::Ok,
            _ => Outcome::NotFound,
        }
    }

    /// One keep-alive of `client_id`'s lease on its open stream (opened on `node` first if
    /// it has none there). A stream that broke is dropped, so the retry opens a new one.
    async fn beat(
        &self,
        node: usize,
        client: Client,
        client_id: u32,
    ) -> Result<Outcome, etcd_client::Error> {
        let (id, open) = match self.leases.lock().get(&client_id) {
            Some(l) => (l.id, l.keep_alive.clone().filter(|k| k.node == node)),
            None => return Ok(Outcome::NotFound),
        };
        let Some(open) = open else {
            // The first beat on this member opens the stream: `keep_alive` sends one
            // request and reads its answer (a lease that expired, TTL 0, is an error).
            return match client.lease_client().keep_alive(id).await {
                Ok((keeper, answers)) => {
                    self.keep_alive_streams.fetch_add(1, Relaxed);
                    let k = Arc::new(KeepAlive {
                        node,
                        stream: tokio::sync::Mutex::new((keeper, answers)),
                    });
                    if let Some(l) = self.leases.lock().get_mut(&client_id)
                        && l.id == id
                    {
                        l.keep_alive = Some(k);
                    }
                    Ok(Outcome::Ok)
                }
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(Outcome::NotFound),
                Err(e) => Err(e),
            };
        };
        let answer = {
            let mut g = open.stream.lock().await;
            let (keeper, answers) = &mut *g;
            match keeper.keep_alive().await {
                Ok(()) => answers.message().await,
                Err(e) => Err(e),
            }
        };
        let forget = || {
            if let Some(l) = self.leases.lock().get_mut(&client_id)
                && l.keep_alive.as_ref().is_some_and(|k| Arc::ptr_eq(k, &open))
            {
                l.keep_alive = None;
            }
        };
        match answer {
            Ok(Some(a)) if a.ttl() > 0 => Ok(Outcome::Ok),
            // TTL 0: the lease expired.
            Ok(Some(_)) => {
                forget();
                Ok(Outcome::NotFound)
            }
            Ok(None) => {
                forget();
                Ok(Outcome::Retry("etcd"))
            }
            Err(e) => {
                forget();
                Err(e)
            }
        }
    }

    async fn item_inner(
        &self,
        node: usize,
        client: Client,
        it: Item,
    ) -> Result<Outcome, etcd_client::Error> {
        let pop = &self.population;
        if let EtcdLease::Shared(_) = self.mode {
            return Box::pin(self.item_shared(node, client, it)).await;
        }
        match it.kind {
            Kind::Register => {
                let lease = client.lease_client().grant(LEASE_TTL_S, None).await?.id();
                let addr = pop.addr(it.client);
                let mut kv = client.kv_client();
                for s in self.services(&it) {
                    let name = pop.service_name(s);
                    kv.put(
                        instance_key(name, addr),
                        instance_value(name, addr),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await?;
                }
                // An older lease (a client registering again) expires on its own; its keys
                // now belong to the new one. Its keep-alive stream closes with it.
                self.leases.lock().insert(it.client, Lease::new(lease, 0));
                Ok(Outcome::Ok)
            }
            Kind::Deregister => {
                let lease = self.leases.lock().remove(&it.client);
                if let Some(Lease { id, .. }) = lease {
                    match client.lease_client().revoke(id).await {
                        Ok(_) => {}
                        // Already expired: deregistered all the same.
                        Err(etcd_client::Error::GRpcStatus(s))
                            if s.code() == tonic::Code::NotFound => {}
                        Err(e) => {
                            self.leases.lock().insert(it.client, Lease::new(id, 0));
                            return Err(e);
                        }
                    }
                }
                Ok(Outcome::Ok)
            }
            Kind::Beat => Box::pin(self.beat(node, client, it.client)).await,
            Kind::Query => self.query(client, it).await,
        }
    }

    /// A prefix range read of the item's service.
    async fn query(&self, client: Client, it: Item) -> Result<Outcome, etcd_client::Error> {
        let prefix = service_prefix(self.population.service_name(it.service));
        client
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(Outcome::Ok)
    }

    /// An item in shared mode (see the module documentation).
    async fn item_shared(
        &self,
        node: usize,
        client: Client,
        it: Item,
    ) -> Result<Outcome, etcd_client::Error> {
        let pop = &self.population;
        let addr = pop.addr(it.client);
        match it.kind {
            Kind::Register => {
                let group = self.holder(it.client);
                let (lease, generation) = self.group_lease(node, &client, group).await?;
                let mut kv = client.kv_client();
                for s in self.services(&it) {
                    let name = pop.service_name(s);
                    let put = kv
                        .put(
                            instance_key(name, addr),
                            instance_value(name, addr),
                            Some(PutOptions::new().with_lease(lease)),
                        )
                        .await;
                    match put {
                        Ok(_) => {}
                        // The group's lease expired: the retry grants a new one.
                        Err(etcd_client::Error::GRpcStatus(s))
                            if s.code() == tonic::Code::NotFound =>
                        {
                            self.expired(group, lease);
                            return Ok(Outcome::Retry("lease expired"));
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.registered.lock().insert(it.client, generation);
                Ok(Outcome::Ok)
            }
            Kind::Deregister => {
                let mut kv = client.kv_client();
                for s in self.services(&it) {
                    kv.delete(instance_key(pop.service_name(s), addr), None)
                        .await?;
                }
                self.registered.lock().remove(&it.client);
                Ok(Outcome::Ok)
            }
            Kind::Beat => Ok(self.shared_beat(it.client)),
            Kind::Query => self.query(client, it).await,
        }
    }
}

/// Shared mode: keeps group `group`'s lease `id` alive on a keep-alive stream of its own on
/// member `node` (the next member after the stream breaks), as etcd's client libraries do:
/// a request every [`SHARED_LEASE_RENEWAL`] on a fixed schedule, the answers read as they
/// come (a slow answer delays no request). Ends with the protocol or when the lease is
/// replaced; a lease found expired (TTL 0) is forgotten, so that the next registration
/// grants a new one.
async fn keep_shared_lease(this: Weak<Inner>, group: u32, id: i64, mut node: usize) {
    // Whether the lease is still the group's (and the protocol alive); marks it renewed.
    let current = |renewed: bool| {
        let Some(inner) = this.upgrade() else {
            return false;
        };
        let mut leases = inner.leases.lock();
        match leases.get_mut(&group) {
            Some(l) if l.id == id => {
                if renewed {
                    l.renewed = Instant::now();
                }
                true
            }
            _ => false,
        }
    };
    let expired = || {
        if let Some(inner) = this.upgrade() {
            inner.expired(group, id);
        }
    };
    loop {
        let Some(inner) = this.upgrade() else {
            return;
        };
        let (timeout, members) = (inner.timeout, inner.members.len());
        let mut leases = inner.members[node].lease_client();
        let counter = &inner.keep_alive_streams;
        // Opening the stream sends one keep-alive and reads its answer.
        let opened = tokio::time::timeout(timeout, leases.keep_alive(id)).await;
        let (mut keeper, mut answers) = match opened {
            Ok(Ok(stream)) => {
                counter.fetch_add(1, Relaxed);
                stream
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => {
                drop(inner);
                expired();
                return;
            }
            _ => {
                drop(inner);
                node = (node + 1) % members;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        drop(inner);
        if !current(true) {
            return;
        }
        let mut schedule = tokio::time::interval(SHARED_LEASE_RENEWAL);
        schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        schedule.tick().await; // the first tick is now: that renewal was the opening one
        loop {
            tokio::select! {
                _ = schedule.tick() => {
                    if !current(false) {
                        return;
                    }
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                }
                answer = answers.message() => match answer {
                    Ok(Some(a)) if a.ttl() > 0 => {
                        if !current(true) {
                            return;
                        }
                    }
                    Ok(Some(_)) => {
                        expired();
                        return;
                    }
                    // The stream broke: a new one on the next member.
                    Ok(None) | Err(_) => break,
                },
            }
        }
        node = (node + 1) % members;
    }
}

/// The address in an instance key under `prefix`.
fn addr_of(key: &[u8], prefix: &str) -> Option<SocketAddrV4> {
    std::str::from_utf8(key.strip_prefix(prefix.as_bytes())?)
        .ok()?
        .parse()
        .ok()
}

/// Watches one service on `client`: its current instances, then one state per change.
async fn watch_service(
    client: Client,
    service: u32,
    prefix: String,
    tx: tokio::sync::mpsc::Sender<WatchEvent>,
) -> Result<(), etcd_client::Error> {
    let got = client
        .kv_client()
        .get(
            prefix.as_str(),
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await?;
    let revision = got.header().map_or(0, |h| h.revision());
    let mut instances: BTreeSet<SocketAddrV4> = got
        .kvs()
        .iter()
        .filter_map(|kv| addr_of(kv.key(), &prefix))
        .collect();
    let first = WatchEvent {
        service,
        received: Instant::now(),
        instances: instances.iter().copied().collect(),
    };
    if tx.send(first).await.is_err() {
        return Ok(());
    }
    let mut stream = client
        .watch_client()
        .watch(
            prefix.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    while let Some(resp) = stream.message().await? {
        let received = Instant::now();
        if resp.canceled() {
            break;
        }
        if resp.events().is_empty() {
            continue;
        }
        for ev in resp.events() {
            let Some(addr) = ev.kv().and_then(|kv| addr_of(kv.key(), &prefix)) else {
                continue;
            };
            match ev.event_type() {
                EventType::Put => instances.insert(addr),
                EventType::Delete => instances.remove(&addr),
            };
        }
        let ev = WatchEvent {
            service,
            received,
            instances: instances.iter().copied().collect(),
        };
        if tx.send(ev).await.is_err() {
            break;
        }
    }
    Ok(())
}

impl Protocol for EtcdProtocol {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn max_batch(&self) -> usize {
        256
    }

    fn local_beat(&self, client: u32) -> Option<Outcome> {
        match self.inner.mode {
            EtcdLease::PerClient => None,
            EtcdLease::Shared(_) => Some(self.inner.shared_beat(client)),
        }
    }

    fn execute(&self, _lane: usize, batch: Batch) -> impl Future<Output = Batch> + Send + 'static {
        let inner = self.inner.clone();
        async move { batch.each(|node, it| inner.item(node, it)).await }
    }

    fn watch(
        &self,
        node: usize,
        services: Vec<u32>,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<WatchEvent>, String>> + Send + 'static
    {
        let inner = self.inner.clone();
        async move {
            let client = inner
                .members
                .get(node)
                .cloned()
                .ok_or_else(|| format!("watch on member {node}: no such member"))?;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let tasks: Vec<_> = services
                .iter()
                .map(|s| {
                    let prefix = service_prefix(inner.population.service_name(*s));
                    tokio::spawn(watch_service(client.clone(), *s, prefix, tx.clone()))
                })
                .collect();
            drop(tx);
            // The stream ends (the receiver closes) when any service's watch ends.
            tokio::spawn(async move {
                if tasks.is_empty() {
                    return;
                }
                // Its error is not printed: the members stop while the run's watchers live.
                let (_, _, rest) = futures::future::select_all(tasks).await;
                for t in rest {
                    t.abort();
                }
            });
            Ok(rx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn keys_carry_the_address_and_round_trip() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 8080);
        let k = instance_key("svc-1", a);
        assert_eq!(k, "/services/public/DEFAULT_GROUP/svc-1/10.1.2.3:8080");
        assert_eq!(addr_of(k.as_bytes(), &service_prefix("svc-1")), Some(a));
        assert_eq!(addr_of(k.as_bytes(), &service_prefix("svc-2")), None);
        let v: serde_json::Value =
            serde_json::from_str(&instance_value("svc-1", a)).expect("the value is JSON");
        assert_eq!(v["ip"], "10.1.2.3");
        assert_eq!(v["port"], 8080);
    }
}
