//! `--protocol native`: the server's `distro.v1.Registry` gRPC API on each node's SDK port.
//!
//! Simulated ip:port clients are multiplexed over `lanes` HTTP/2 channels per node (lane
//! `i` uses channel `i` of every node). A batch becomes at most one `Register`, one
//! `Deregister` and one `Heartbeat` call (one entry per instance) plus one `Query` call
//! per query item, sent concurrently. Write requests are encoded by hand straight from
//! the population into one buffer (no per-item message objects or strings) and sent as
//! pre-encoded bytes, as is each service's `QueryRequest` (encoded once); write responses
//! are decoded with the generated types, query responses are only checked to be
//! well-formed messages (their instances are stepped over, not decoded: the generated type
//! would allocate every instance's strings and metadata map).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distro_server::proto::codec::Raw;
use distro_server::proto::distro as pb;
use distro_server::proto::writes::put_delimited;
use prost::bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::{Batch, Context, Item, Kind, Outcome, Protocol, WatchEvent};
use crate::population::{MARKER_BASE, Population};

const CLUSTER: &str = "DEFAULT";

fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        put_delimited(tag, s.as_bytes(), buf);
    }
}

fn put_u32(tag: u32, v: u32, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(u64::from(v), buf);
    }
}

fn put_bool(tag: u32, v: bool, buf: &mut impl BufMut) {
    if v {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(1, buf);
    }
}

fn put_f64(tag: u32, v: f64, buf: &mut impl BufMut) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.put_f64_le(v);
}

/// Encodes the requests of a batch without allocating per item.
#[derive(Default)]
struct Encoder {
    ip: String,
    inner: Vec<u8>,
    outer: Vec<u8>,
}

impl Encoder {
    fn ip(&mut self, ip: Ipv4Addr) {
        self.ip.clear();
        let _ = write!(self.ip, "{ip}");
    }

    /// Appends one `Registration` (field 1 of Register/DeregisterRequest) to `out`.
    fn registration(&mut self, svc_ref: &[u8], addr: SocketAddrV4, out: &mut BytesMut) {
        self.ip(*addr.ip());
        self.inner.clear();
        put_str(1, &self.ip, &mut self.inner);
        put_u32(2, u32::from(addr.port()), &mut self.inner);
        put_f64(3, 1.0, &mut self.inner);
        put_bool(4, true, &mut self.inner);
        put_bool(5, true, &mut self.inner);
        put_str(6, CLUSTER, &mut self.inner);
        self.outer.clear();
        put_delimited(1, svc_ref, &mut self.outer);
        put_delimited(2, &self.inner, &mut self.outer);
        put_delimited(1, &self.outer, out);
    }

    /// Appends one `Beat` (field 1 of HeartbeatRequest) to `out`.
    fn beat(&mut self, svc_ref: &[u8], addr: SocketAddrV4, out: &mut BytesMut) {
        self.ip(*addr.ip());
        self.outer.clear();
        put_delimited(1, svc_ref, &mut self.outer);
        put_str(2, &self.ip, &mut self.outer);
        put_u32(3, u32::from(addr.port()), &mut self.outer);
        put_str(4, CLUSTER, &mut self.outer);
        put_delimited(1, &self.outer, out);
    }
}

struct Inner {
    population: Arc<Population>,
    /// `channels[lane][node]`.
    channels: Vec<Vec<Channel>>,
    /// Encoded `ServiceRef` of each service.
    svc_refs: Vec<Vec<u8>>,
    /// Encoded `QueryRequest` of each service (all clusters, not healthy-only).
    query_bodies: Vec<Bytes>,
    by_name: HashMap<String, u32>,
    timeout: Duration,
    /// Services per `QueryBatch` call (1: one `Query` call per service).
    query_batch: usize,
}

/// The native protocol. See the module documentation.
#[derive(Clone)]
pub struct NativeProtocol {
    inner: Arc<Inner>,
}

impl NativeProtocol {
    /// Opens `ctx.lanes` channels to every node's SDK port; fails when a node cannot be
    /// reached within `ctx.timeout`.
    pub async fn connect(ctx: &Context) -> anyhow::Result<Self> {
        let lanes = ctx.lanes.max(1);
        let mut channels = vec![Vec::new(); lanes];
        for node in 0..ctx.targets.len() {
            let scheme = if ctx.tls.is_some() { "https" } else { "http" };
            let uri = format!("{scheme}://{}", ctx.sdk_target(node));
            let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| {
                anyhow::anyhow!("target {}: bad address {uri}: {e}", ctx.targets[node])
            })?;
            if let Some(tls) = &ctx.tls {
                endpoint = endpoint
                    .tls_config(tls.tonic())
                    .map_err(|e| anyhow::anyhow!("target {}: TLS setup: {e}", ctx.targets[node]))?;
            }
            let endpoint = endpoint
                .tcp_nodelay(true)
                .connect_timeout(ctx.timeout.min(Duration::from_secs(3)))
                .initial_stream_window_size(Some(4 << 20))
                .initial_connection_window_size(Some(16 << 20))
                .http2_keep_alive_interval(Duration::from_secs(30));
            for lane in channels.iter_mut() {
                let ch = endpoint.connect().await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot reach node {} ({}, SDK port {}): {}",
                        node + 1,
                        ctx.targets[node],
                        ctx.sdk_target(node),
                        error_chain(&e)
                    )
                })?;
                lane.push(ch);
            }
        }
        let population = ctx.population.clone();
        let svc_refs: Vec<Vec<u8>> = population
            .service_names()
            .iter()
            .map(|n| {
                let mut b = Vec::new();
                put_str(3, n, &mut b);
                b
            })
            .collect();
        let query_bodies = svc_refs
            .iter()
            .map(|r| {
                let mut b = BytesMut::new();
                put_delimited(1, r, &mut b);
                b.freeze()
            })
            .collect();
        let by_name = population.service_index();
        Ok(Self {
            inner: Arc::new(Inner {
                population,
                channels,
                svc_refs,
                query_bodies,
                by_name,
                timeout: ctx.timeout,
                query_batch: ctx.query_batch,
            }),
        })
    }
}

/// `e` and each of its sources, joined by `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Maps a failed call to an outcome.
fn status_outcome(s: &tonic::Status) -> Outcome {
    use tonic::Code;
    match s.code() {
        Code::Unavailable => Outcome::Retry("UNAVAILABLE"),
        Code::DeadlineExceeded => Outcome::Retry("timeout"),
        Code::Cancelled => Outcome::Retry("CANCELLED"),
        Code::Unknown => Outcome::Retry("UNKNOWN"),
        Code::Internal => Outcome::Retry("INTERNAL"),
        Code::ResourceExhausted => Outcome::Retry("RESOURCE_EXHAUSTED"),
        Code::Aborted => Outcome::Retry("ABORTED"),
        Code::InvalidArgument => Outcome::Failed("INVALID_ARGUMENT"),
        Code::NotFound => Outcome::Failed("NOT_FOUND"),
        Code::Unimplemented => Outcome::Failed("UNIMPLEMENTED"),
        Code::PermissionDenied | Code::Unauthenticated => Outcome::Failed("DENIED"),
        _ => Outcome::Failed("grpc-other"),
    }
}

/// Maps an item result code to an outcome.
fn code_outcome(code: u32) -> Outcome {
    match code {
        200 => Outcome::Ok,
        404 => Outcome::NotFound,
        421 => Outcome::Retry("421"),
        503 => Outcome::Retry("503"),
        400 => Outcome::Failed("400"),
        _ => Outcome::Failed("other"),
    }
}

/// Folds one instance's outcome into its item's: the first non-Ok wins.
fn fold(acc: &mut Outcome, next: Outcome) {
    if *acc == Outcome::Ok {
        *acc = next;
    }
}

impl Inner {
    fn svc_ref(&self, s: u32) -> &[u8] {
        self.svc_refs.get(s as usize).map_or(&[], Vec::as_slice)
    }

    /// Number of instance entries item `it` contributes to a write request.
    fn entries(&self, it: &Item) -> usize {
        if it.client >= MARKER_BASE {
            1
        } else {
            self.population.per_client() as usize
        }
    }

    fn encode(&self, enc: &mut Encoder, kind: Kind, items: &[Item]) -> Option<Bytes> {
        let mut out = BytesMut::new();
        let mut any = false;
        for it in items.iter().filter(|i| i.kind == kind) {
            any = true;
            let addr = self.population.addr(it.client);
            let mut one = |s: u32, out: &mut BytesMut| match kind {
                Kind::Beat => enc.beat(self.svc_ref(s), addr, out),
                _ => enc.registration(self.svc_ref(s), addr, out),
            };
            if it.client >= MARKER_BASE {
                one(it.service, &mut out);
            } else {
                for s in self.population.services_of(it.client) {
                    one(s, &mut out);
                }
            }
        }
        any.then(|| out.freeze())
    }

    /// One unary call of `path` with a pre-encoded request, its response decoded as `R`.
    async fn unary<R: prost::Message + Default + Send + 'static>(
        &self,
        channel: Channel,
        path: &'static str,
        body: Bytes,
    ) -> Result<R, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(distro_server::server::MAX_NATIVE_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut req = tonic::Request::new(Raw(body));
        req.set_timeout(self.timeout);
        let codec = distro_server::proto::codec::Codec::<Raw, R>::default();
        let resp = grpc
            .unary(req, PathAndQuery::from_static(path), codec)
            .await?;
        Ok(resp.into_inner())
    }

    async fn write(
        &self,
        channel: Channel,
        path: &'static str,
        body: Bytes,
    ) -> Result<pb::WriteResponse, tonic::Status> {
        self.unary(channel, path, body).await
    }

    /// One `QueryBatch` call for `services`: one outcome per service.
    async fn query_batch(&self, channel: Channel, services: &[u32]) -> Vec<Outcome> {
        let mut client = pb::registry_client::RegistryClient::new(channel)
            .max_decoding_message_size(distro_server::server::MAX_NATIVE_MESSAGE_BYTES);
        let queries = services
            .iter()
            .map(|s| pb::QueryRequest {
                service: Some(pb::ServiceRef {
                    namespace: String::new(),
                    group: String::new(),
                    name: self.population.service_name(*s).to_owned(),
                }),
                clusters: Vec::new(),
                healthy_only: false,
            })
            .collect();
        let mut req = tonic::Request::new(pb::QueryBatchRequest { queries });
        req.set_timeout(self.timeout);
        match client.query_batch(req).await {
            Ok(r) => {
                let n = r.into_inner().answers.len();
                (0..services.len())
                    .map(|i| {
                        if i < n {
                            Outcome::Ok
                        } else {
                            Outcome::Failed("short-response")
                        }
                    })
                    .collect()
            }
            Err(s) => vec![status_outcome(&s); services.len()],
        }
    }

    /// The outcomes of `services` queried over `channel`: one `QueryBatch` call per
    /// `query_batch` services, or one `Query` call each.
    async fn queries(&self, channel: Channel, services: &[u32]) -> Vec<Outcome> {
        if self.query_batch <= 1 || services.len() <= 1 {
            return futures::future::join_all(
                services.iter().map(|s| self.query(channel.clone(), *s)),
            )
            .await;
        }
        let calls = services
            .chunks(self.query_batch)
            .map(|c| self.query_batch(channel.clone(), c));
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One `Query` call: a success is an OK status with a well-formed `QueryResponse`
    /// (its instances are stepped over, not decoded).
    async fn query(&self, channel: Channel, service: u32) -> Outcome {
        let Some(body) = self.query_bodies.get(service as usize) else {
            return Outcome::Failed("no-service");
        };
        let answer = self
            .unary::<Raw>(channel, "/distro.v1.Registry/Query", body.clone())
            .await;
        match answer {
            Ok(_) => Outcome::Ok,
            Err(s) => status_outcome(&s),
        }
    }

    /// Writes the outcomes of a write call into the batch.
    fn apply(&self, kind: Kind, res: Result<pb::WriteResponse, tonic::Status>, batch: &mut Batch) {
        match res {
            Err(s) => {
                let o = status_outcome(&s);
                for (it, out) in batch.items.iter().zip(batch.outcomes.iter_mut()) {
                    if it.kind == kind {
                        *out = o;
                    }
                }
            }
            Ok(resp) => {
                let mut codes = resp.results.iter().map(|r| r.code);
                for (it, out) in batch.items.iter().zip(batch.outcomes.iter_mut()) {
                    if it.kind != kind {
                        continue;
                    }
                    let mut acc = Outcome::Ok;
                    for _ in 0..self.entries(it) {
                        // A short response is a protocol violation: count it as such.
                        let o = codes
                            .next()
                            .map_or(Outcome::Failed("short-response"), code_outcome);
                        fold(&mut acc, o);
                    }
                    *out = acc;
                }
            }
        }
    }
}

impl Protocol for NativeProtocol {
    fn name(&self) -> &'static str {
        "native"
    }

    fn max_batch(&self) -> usize {
        // Stay well under the server's 10,000 entries per request.
        (distro_server::native::MAX_ITEMS_PER_REQUEST / 2)
            / self.inner.population.per_client().max(1) as usize
    }

    fn execute(
        &self,
        lane: usize,
        mut batch: Batch,
    ) -> impl Future<Output = Batch> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let lanes = &inner.channels;
            let channel = lanes[lane % lanes.len()][batch.node].clone();
            batch.outcomes.clear();
            batch.outcomes.resize(batch.items.len(), Outcome::Ok);
            let mut enc = Encoder::default();
            let reg = inner.encode(&mut enc, Kind::Register, &batch.items);
            let dereg = inner.encode(&mut enc, Kind::Deregister, &batch.items);
            let beat = inner.encode(&mut enc, Kind::Beat, &batch.items);
            let queries: Vec<u32> = batch
                .items
                .iter()
                .filter(|i| i.kind == Kind::Query)
                .map(|i| i.service)
                .collect();
            let call = |path: &'static str, body: Option<Bytes>| {
                let ch = channel.clone();
                let inner = &inner;
                async move {
                    match body {
                        Some(b) => Some(inner.write(ch, path, b).await),
                        None => None,
                    }
                }
            };
            let q = inner.queries(channel.clone(), &queries);
            let (r, d, b, q) = futures::join!(
                call("/distro.v1.Registry/Register", reg),
                call("/distro.v1.Registry/Deregister", dereg),
                call("/distro.v1.Registry/Heartbeat", beat),
                q
            );
            if let Some(r) = r {
                inner.apply(Kind::Register, r, &mut batch);
            }
            if let Some(d) = d {
                inner.apply(Kind::Deregister, d, &mut batch);
            }
            if let Some(b) = b {
                inner.apply(Kind::Beat, b, &mut batch);
            }
            let mut q = q.into_iter();
            for (it, out) in batch.items.iter().zip(batch.outcomes.iter_mut()) {
                if it.kind == Kind::Query {
                    *out = q.next().unwrap_or(Outcome::Failed("internal"));
                }
            }
            batch.done = Instant::now();
            batch
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
            let channel = inner.channels[0][node].clone();
            let mut client = pb::registry_client::RegistryClient::new(channel)
                .max_decoding_message_size(distro_server::server::MAX_NATIVE_MESSAGE_BYTES);
            let req = pb::WatchRequest {
                services: services
                    .iter()
                    .map(|s| pb::ServiceRef {
                        namespace: String::new(),
                        group: String::new(),
                        name: inner.population.service_name(*s).to_owned(),
                    })
                    .collect(),
            };
            let mut stream = client
                .watch(req)
                .await
                .map_err(|s| format!("watch on node {}: {s}", node + 1))?
                .into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(async move {
                while let Ok(Some(ev)) = stream.message().await {
                    let received = Instant::now();
                    let Some(service) = ev
                        .service
                        .as_ref()
                        .and_then(|s| inner.by_name.get(&s.name).copied())
                    else {
                        continue;
                    };
                    let instances = ev
                        .instances
                        .iter()
                        .filter_map(|i| {
                            let ip: Ipv4Addr = i.ip.parse().ok()?;
                            Some(SocketAddrV4::new(ip, u16::try_from(i.port).ok()?))
                        })
                        .collect();
                    let ev = WatchEvent {
                        service,
                        received,
                        instances,
                    };
                    if tx.send(ev).await.is_err() {
                        break;
                    }
                }
            });
            Ok(rx)
        }
    }
}
