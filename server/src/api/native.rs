//! The native client API, `distro.v1.Registry`, on the SDK port.
//!
//! Batched register, deregister and heartbeat of ip:port clients (each item routed to its
//! owner, see [`crate::cluster::forward`]), a query of one service and a batch of queries
//! (answered from [`crate::answers`]: encoded once per change of the service), and a server stream that watches
//! services: it sends each watched service's current state, then a new state after every
//! change. Changes that arrive while a watcher is busy coalesce: the watcher always sends
//! the latest state, so a slow watcher costs bounded memory.
//!
//! With auth on ([`crate::auth`]), every call carries a token in the `accesstoken`
//! metadata, and its user must be allowed to write (register, deregister, heartbeat) or read (query,
//! watch) every service the call names: otherwise the whole call is refused,
//! `UNAUTHENTICATED` for a missing, invalid or expired token, `PERMISSION_DENIED` for a
//! service the user may not touch, with Nacos's message.

use crate::answers::{AnswerCache, Encoding, Form};
use crate::api::query_answer::QueryResponse;
use crate::auth::{Action, Auth, AuthError};
use crate::clock::Clock;
use crate::cluster::forward::{Forwarder, Item, ItemResult, Kind};
use crate::cluster::wire::{instance_to_proto, service_spec, service_to_proto};
use crate::fault::PeerGate;
use crate::metrics::{Metrics, Outcome};
use crate::proto::distro as pb;
use crate::proto::results::WriteResponse;
use crate::proto::writes::{self, Received};
use distro_core::registry::{ChangeListener, QueryFilter};
use distro_core::{Node, Service};
use parking_lot::{Mutex, RwLock};
use prost::bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Instant;
use tokio::sync::{Notify, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Most items in one native write request.
pub const MAX_ITEMS_PER_REQUEST: usize = 10_000;
/// Most queries in one `QueryBatch` request.
pub const MAX_QUERIES_PER_REQUEST: usize = 1_000;
/// Most services one watch stream may watch.
pub const MAX_WATCHED_SERVICES: usize = 1_000;

struct Watcher {
    dirty: Mutex<HashSet<String>>,
    notify: Notify,
}

type WatcherList = Vec<(u64, Arc<Watcher>)>;

/// The watchers of each watched service, and the key hashes of those services.
#[derive(Default)]
struct Watched {
    by_key: foldhash::HashMap<String, WatcherList>,
    /// [`Service::key_hash`] of each key of `by_key` (with the number of its keys of that
    /// hash): a changed service whose hash is not here is not watched, found without
    /// reading or hashing its key. The burst of `loadgen --scenario register --clients
    /// 1m`, with a few marker services watched, spent 2.7 % of its samples hashing the
    /// keys of the changed services (each a cache miss) to find them unwatched.
    hashes: foldhash::HashMap<u64, usize>,
}

/// Tells watch streams which services changed.
#[derive(Default)]
pub struct WatchHub {
    /// By service key. foldhash, not std's SipHash: every changed service of every write and
    /// replicated batch is looked up here while a stream is open (SipHash was 1.7 % of the
    /// 1 M burst's CPU with one watch stream, `results/profile/burst-1m-2026-12-06.md`).
    /// Read-locked by the listener (a replica's apply thread and the runtime's writes
    /// look up at once, a batch's services under one read lock), write-locked only as a
    /// stream opens or closes.
    watchers: RwLock<Watched>,
    next_id: AtomicU64,
    /// Open watch streams: the listener's first question, one load instead of the lock
    /// while nobody watches (counted before a stream sends its first state, so a change
    /// after that read is seen).
    streams: AtomicUsize,
}

impl ChangeListener for WatchHub {
    /// The count asked and the lock taken once for the whole batch.
    fn services_changed(&self, services: &[Service]) {
        if self.streams.load(SeqCst) == 0 {
            return;
        }
        let w = self.watchers.read();
        for service in services {
            if !w.hashes.contains_key(&service.key_hash()) {
                continue;
            }
            if let Some(list) = w.by_key.get(service.key().as_str()) {
                for (_, watcher) in list {
                    watcher.dirty.lock().insert(service.key().to_string());
                    watcher.notify.notify_one();
                }
            }
        }
    }
}

impl WatchHub {
    fn add(&self, keys: &[String], watcher: &Arc<Watcher>) -> u64 {
        let id = self.next_id.fetch_add(1, Relaxed);
        let mut guard = self.watchers.write();
        let w = &mut *guard;
        for k in keys {
            let list = w.by_key.entry(k.clone()).or_default();
            if list.is_empty() {
                *w.hashes.entry(Service::hash_of_key(k)).or_default() += 1;
            }
            list.push((id, watcher.clone()));
        }
        self.streams.fetch_add(1, SeqCst);
        id
    }

    fn remove(&self, keys: &[String], id: u64) {
        let mut w = self.watchers.write();
        self.streams.fetch_sub(1, SeqCst);
        for k in keys {
            if let Some(list) = w.by_key.get_mut(k) {
                list.retain(|(i, _)| *i != id);
                if list.is_empty() {
                    w.by_key.remove(k);
                    let h = Service::hash_of_key(k);
                    if let Some(n) = w.hashes.get_mut(&h) {
                        *n -= 1;
                        if *n == 0 {
                            w.hashes.remove(&h);
                        }
                    }
                }
            }
        }
    }

    /// Number of watch registrations (one per watched service per stream).
    pub fn len(&self) -> usize {
        self.watchers.read().by_key.values().map(Vec::len).sum()
    }

    /// Whether nobody watches anything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `distro.v1.Registry` service.
pub struct RegistryService {
    forwarder: Arc<Forwarder>,
    metrics: Arc<Metrics>,
    hub: Arc<WatchHub>,
    shutdown: watch::Receiver<bool>,
    gate: Arc<PeerGate>,
    answers: Arc<AnswerCache>,
    auth: Option<(Arc<Auth>, Clock)>,
}

/// The metadata key of the native API's access token.
pub const TOKEN_METADATA: &str = "accesstoken";

impl RegistryService {
    /// The service; `hub` must be a listener of the node's registry. Requests wait while
    /// `gate` is paused ([`PeerGate::pause_for`]).
    pub fn new(
        forwarder: Arc<Forwarder>,
        metrics: Arc<Metrics>,
        hub: Arc<WatchHub>,
        shutdown: watch::Receiver<bool>,
        gate: Arc<PeerGate>,
    ) -> Self {
        let answers = AnswerCache::install(forwarder.node().registry());
        Self {
            answers,
            forwarder,
            metrics,
            hub,
            shutdown,
            gate,
            auth: None,
        }
    }

    /// The service with `auth` checking every call at the time of `clock` (`None`: off).
    pub fn with_auth(mut self, auth: Option<Arc<Auth>>, clock: Clock) -> Self {
        self.auth = auth.map(|a| (a, clock));
        self
    }

    /// With auth on, checks that the token of `req` is valid and that its user may do
    /// `action` on every service of `services`.
    fn authorize<'a, T>(
        &self,
        req: &Request<T>,
        services: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
        action: Action,
    ) -> Result<(), Status> {
        let Some((auth, clock)) = &self.auth else {
            return Ok(());
        };
        let token = req
            .metadata()
            .get(TOKEN_METADATA)
            .and_then(|v| v.to_str().ok());
        let now = clock();
        let mut checked = false;
        for (namespace, group, name) in services {
            checked = true;
            auth.authorize(token, [namespace, group, name], action, now)
                .map_err(refusal)?;
        }
        if !checked {
            auth.authorize(token, ["", "", "*"], action, now)
                .map_err(refusal)?;
        }
        Ok(())
    }

    /// Applies the received `items` of `kind`.
    async fn write(
        &self,
        op: &'static str,
        kind: Kind,
        items: Vec<Received>,
    ) -> Result<Response<WriteResponse>, Status> {
        if items.len() > MAX_ITEMS_PER_REQUEST {
            self.metrics
                .observe("native", op, Outcome::Limited, Default::default());
            return Err(Status::invalid_argument(format!(
                "{} items in one request, the limit is {MAX_ITEMS_PER_REQUEST}",
                items.len()
            )));
        }
        self.gate.hold().await;
        let start = Instant::now();
        let items = items.into_iter().map(|r| Item::Received(kind, r)).collect();
        let results: Vec<pb::ItemResult> = self
            .forwarder
            .apply(items)
            .await
            .into_iter()
            .map(ItemResult::into_proto)
            .collect();
        let elapsed = start.elapsed();
        // One observation per item, with the batch's latency: counted per outcome first
        // (a batch's items mostly share one), then one update of the counters per outcome.
        let mut tally = [0u64; Outcome::ALL.len()];
        for r in &results {
            tally[Outcome::of_code(r.code).index()] += 1;
        }
        for (o, n) in Outcome::ALL.into_iter().zip(tally) {
            self.metrics.observe_n("native", op, o, elapsed, n);
        }
        Ok(Response::new(WriteResponse { results }))
    }
}

/// The encoded `QueryResponse` of a service for a cluster filter and the healthy-only flag,
/// from `answers` or rendered from the registry.
fn query_answer(
    answers: &AnswerCache,
    node: &Node,
    (ns, group, name): (&str, &str, &str),
    clusters: &[String],
    healthy_only: bool,
) -> Bytes {
    let clusters: Vec<&str> = clusters
        .iter()
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .collect();
    // Each name length-prefixed, so that no two lists share a spelling.
    let mut spelled = String::new();
    for c in &clusters {
        let _ = write!(spelled, "{}:{c}", c.len());
    }
    let form = Form {
        encoding: Encoding::Native,
        clusters: &spelled,
        healthy_only,
    };
    let key = Service::key_of(ns, group, name);
    answers.get(&key, form, || {
        let filter = QueryFilter {
            clusters: &clusters,
            healthy_only,
            enabled_only: true,
        };
        match node.registry().query(ns, group, name) {
            Some(v) => QueryResponse::encode_fields(
                &v.instances(filter)
                    .map(instance_to_proto)
                    .collect::<Vec<_>>(),
                v.revision,
            ),
            None => Bytes::new(),
        }
    })
}

fn view_of(node: &Node, s: &Service, filter: QueryFilter<'_>) -> (Vec<pb::Instance>, u64) {
    match node.registry().query(s.namespace(), s.group(), s.name()) {
        Some(v) => (
            v.instances(filter).map(instance_to_proto).collect(),
            v.revision,
        ),
        None => (Vec::new(), 0),
    }
}

/// The parts of a service reference (empty when absent).
fn service_parts(s: Option<&pb::ServiceRef>) -> (&str, &str, &str) {
    s.map_or(("", "", ""), |s| (&s.namespace, &s.group, &s.name))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

/// A token refusal is `UNAUTHENTICATED`, a permission refusal `PERMISSION_DENIED`.
/// The native API's token check, run by tonic's interceptor layer on a request's
/// metadata before the body is read or decoded (wrap the registry server in it with
/// [`tonic::service::interceptor::InterceptedService`]): with auth on, a request without a
/// valid, unexpired token of a known user is refused there, so an unauthenticated caller
/// cannot make the node decode up to the message limit. The permission on each service
/// is checked after decoding, by the handler. With auth off every request passes.
#[derive(Clone)]
pub struct NativeTokenCheck {
    auth: Option<(Arc<Auth>, Clock)>,
}

impl NativeTokenCheck {
    /// Checks tokens with `auth` at the time of `clock` (`None`: off).
    pub fn new(auth: Option<Arc<Auth>>, clock: Clock) -> Self {
        Self {
            auth: auth.map(|a| (a, clock)),
        }
    }
}

impl tonic::service::Interceptor for NativeTokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some((auth, clock)) = &self.auth else {
            return Ok(req);
        };
        let token = req
            .metadata()
            .get(TOKEN_METADATA)
            .and_then(|v| v.to_str().ok());
        auth.authenticate(token, clock()).map_err(refusal)?;
        Ok(req)
    }
}

fn refusal(e: AuthError) -> Status {
    if e.message.starts_with("authorization failed") {
        Status::permission_denied(e.message)
    } else {
        Status::unauthenticated(e.message)
    }
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn register(
        &self,
        request: Request<writes::RegisterRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let r = &request.get_ref().registrations;
        self.authorize(&request, r.iter().map(Received::service), Action::Write)?;
        let items = request.into_inner().registrations;
        self.write("register", Kind::Register, items).await
    }

    async fn deregister(
        &self,
        request: Request<writes::DeregisterRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let r = &request.get_ref().registrations;
        self.authorize(&request, r.iter().map(Received::service), Action::Write)?;
        let items = request.into_inner().registrations;
        self.write("deregister", Kind::Deregister, items).await
    }

    async fn heartbeat(
        &self,
        request: Request<writes::HeartbeatRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let b = &request.get_ref().beats;
        self.authorize(&request, b.iter().map(Received::service), Action::Write)?;
        let items = request.into_inner().beats;
        self.write("beat", Kind::Beat, items).await
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        self.authorize(
            &request,
            [service_parts(request.get_ref().service.as_ref())],
            Action::Read,
        )?;
        self.gate.hold().await;
        let start = Instant::now();
        let q = request.into_inner();
        let node = self.forwarder.node();
        let spec = service_spec(q.service.as_ref());
        let (ns, group, name) = match spec.resolve() {
            Ok(v) => v,
            Err(e) => {
                self.metrics
                    .observe("native", "query", Outcome::Invalid, start.elapsed());
                return Err(Status::invalid_argument(e.to_string()));
            }
        };
        let resp = QueryResponse::encoded(query_answer(
            &self.answers,
            node,
            (ns, group, name),
            &q.clusters,
            q.healthy_only,
        ));
        self.metrics
            .observe("native", "query", Outcome::Ok, start.elapsed());
        Ok(Response::new(resp))
    }

    async fn query_batch(
        &self,
        request: Request<pb::QueryBatchRequest>,
    ) -> Result<Response<pb::QueryBatchResponse>, Status> {
        self.gate.hold().await;
        let start = Instant::now();
        let count = request.get_ref().queries.len();
        if count > MAX_QUERIES_PER_REQUEST {
            self.metrics
                .observe("native", "query", Outcome::Limited, Default::default());
            return Err(Status::invalid_argument(format!(
                "queries: {count} in one request, the limit is {MAX_QUERIES_PER_REQUEST}"
            )));
        }
        // With auth on, the user must be allowed to read every service of the batch.
        let services = request
            .get_ref()
            .queries
            .iter()
            .map(|q| service_parts(q.service.as_ref()));
        self.authorize(&request, services, Action::Read)?;
        let queries = request.into_inner().queries;
        let node = self.forwarder.node();
        let mut answers = Vec::with_capacity(queries.len());
        for (i, q) in queries.iter().enumerate() {
            let spec = service_spec(q.service.as_ref());
            let (ns, group, name) = match spec.resolve() {
                Ok(v) => v,
                Err(e) => {
                    self.metrics
                        .observe("native", "query", Outcome::Invalid, start.elapsed());
                    return Err(Status::invalid_argument(format!("queries[{i}]: {e}")));
                }
            };
            answers.push(QueryResponse::encoded(query_answer(
                &self.answers,
                node,
                (ns, group, name),
                &q.clusters,
                q.healthy_only,
            )));
        }
        let elapsed = start.elapsed();
        for _ in &answers {
            self.metrics
                .observe("native", "query", Outcome::Ok, elapsed);
        }
        Ok(Response::new(pb::QueryBatchResponse { answers }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let s = &request.get_ref().services;
        self.authorize(
            &request,
            s.iter().map(|s| service_parts(Some(s))),
            Action::Read,
        )?;
        let req = request.into_inner();
        if req.services.is_empty() || req.services.len() > MAX_WATCHED_SERVICES {
            return Err(Status::invalid_argument(format!(
                "watch 1..={MAX_WATCHED_SERVICES} services, not {}",
                req.services.len()
            )));
        }
        let node = self.forwarder.node().clone();
        let mut services: Vec<Service> = Vec::new();
        for s in &req.services {
            let spec = service_spec(Some(s));
            let (ns, g, n) = spec
                .resolve()
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            services.push(node.registry().service(ns, g, n));
        }
        let keys: Vec<String> = services.iter().map(|s| s.key().to_string()).collect();
        let watcher = Arc::new(Watcher {
            dirty: Mutex::new(keys.iter().cloned().collect()),
            notify: Notify::new(),
        });
        let id = self.hub.add(&keys, &watcher);
        watcher.notify.notify_one(); // send the current state first
        let hub = self.hub.clone();
        let mut shutdown = self.shutdown.clone();
        let by_key: HashMap<String, Service> = keys.iter().cloned().zip(services).collect();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::WatchEvent, Status>>(16);
        tokio::spawn(async move {
            let filter = QueryFilter {
                enabled_only: true,
                ..QueryFilter::default()
            };
            'outer: loop {
                tokio::select! {
                    _ = watcher.notify.notified() => {}
                    _ = shutdown.changed() => break,
                    _ = tx.closed() => break,
                }
                let dirty: Vec<String> = watcher.dirty.lock().drain().collect();
                for k in dirty {
                    let Some(s) = by_key.get(&k) else { continue };
                    let (instances, revision) = view_of(&node, s, filter);
                    let ev = pb::WatchEvent {
                        service: Some(service_to_proto(s)),
                        instances,
                        revision,
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        break 'outer;
                    }
                }
            }
            hub.remove(&keys, id);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distro_core::name::Interner;

    /// The hub marks a watched service dirty while a stream watches it, and skips its
    /// lookup once the last stream is gone (a change of it then marks nothing).
    #[test]
    fn the_hub_reaches_watchers_while_streams_are_open() {
        let interner = Interner::new();
        let svc = Service::new(&interner, "public", "DEFAULT_GROUP", "a");
        let other = Service::new(&interner, "public", "DEFAULT_GROUP", "b");
        let hub = WatchHub::default();
        hub.service_changed(&svc);
        let keys = vec![svc.key().to_string()];
        let watcher = Arc::new(Watcher {
            dirty: Mutex::new(HashSet::new()),
            notify: Notify::new(),
        });
        let id = hub.add(&keys, &watcher);
        hub.service_changed(&other);
        assert!(watcher.dirty.lock().is_empty(), "not watched");
        hub.service_changed(&svc);
        assert_eq!(
            watcher.dirty.lock().drain().collect::<Vec<_>>(),
            keys,
            "a change of a watched service"
        );
        // A batch's changes (a replicated batch names a service once per changed
        // client): each watched one marked, under one lock.
        let third = Service::new(&interner, "public", "DEFAULT_GROUP", "c");
        let keys = vec![svc.key().to_string(), third.key().to_string()];
        let both = Arc::new(Watcher {
            dirty: Mutex::new(HashSet::new()),
            notify: Notify::new(),
        });
        let id2 = hub.add(&keys, &both);
        hub.services_changed(&[other, svc.clone(), third.clone(), svc.clone()]);
        let mut dirty: Vec<String> = both.dirty.lock().drain().collect();
        dirty.sort();
        assert_eq!(dirty, keys, "both watched services of the batch, once each");
        assert_eq!(
            watcher.dirty.lock().drain().collect::<Vec<_>>(),
            vec![svc.key().to_string()],
            "the first stream sees its one service"
        );
        hub.remove(&keys, id2);
        // `svc` is still watched by the first stream (its hash stays in the set when the
        // second stream lets it go), `third` by nobody.
        hub.services_changed(&[third.clone(), svc.clone()]);
        assert_eq!(
            watcher.dirty.lock().drain().collect::<Vec<_>>(),
            vec![svc.key().to_string()],
            "still watched by the first stream"
        );
        assert_eq!(hub.watchers.read().hashes.len(), 1);
        assert!(hub.watchers.read().hashes.contains_key(&svc.key_hash()));
        hub.remove(&[svc.key().to_string()], id);
        assert!(hub.is_empty());
        assert!(hub.watchers.read().hashes.is_empty());
        assert_eq!(hub.streams.load(SeqCst), 0);
        hub.service_changed(&svc);
        hub.services_changed(&[svc, third]);
        assert!(watcher.dirty.lock().is_empty(), "no stream left");
        assert!(both.dirty.lock().is_empty(), "no stream left");
    }
}
