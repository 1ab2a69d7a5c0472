//! `--protocol native`: the server's `distro.v1.Registry` gRPC API on each node's SDK port.
//!
//! Simulated ip:port clients are multiplexed over `lanes` HTTP/2 connections per node (lane
//! `i` uses connection `i` of every node). A batch becomes at most one `Register`, one
//! `Deregister` and one `Heartbeat` call (one entry per instance) plus one `Query` call
//! per query item, sent concurrently. Write requests are encoded by hand straight from
//! the population into one buffer, behind room for the gRPC prefix (no per-item message
//! objects or strings, no copy), as is each service's `QueryRequest` (encoded once); write
//! responses are decoded with the servers' own type (an OK result's five bytes taken
//! without prost's field loop, anything else as the generated types decode it), query
//! responses are only checked to be well-formed messages (their instances are stepped
//! over, not decoded: the generated type would allocate every instance's strings and
//! metadata map).
//!
//! The unary calls go over the server crate's own HTTP/2 client ([`H2`](distro_server::h2_client::H2), as loadgen's
//! Nacos client): each method's request head encoded once, a call's HEADERS and DATA
//! written from its own task in one write, no task per call. A lane's connection that
//! ends (a node restarted, a dropped connection) is dialled again by the next call
//! ([`Link`]). `Watch` (a server stream) is made on a tonic channel of its own.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distro_server::cluster::compact::ipv4_text;
use distro_server::h2_client::{Dialled, Link, Method, frame_buffer, seal};
use distro_server::proto::codec::Raw;
use distro_server::proto::distro as pb;
use distro_server::proto::results::WriteResponse;
use distro_server::proto::writes::put_delimited;
use distro_server::server::MAX_NATIVE_MESSAGE_BYTES;
use prost::Message as _;
use prost::bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::transport::{Channel, Endpoint};

use super::{Batch, Context, Item, Kind, Outcome, Protocol, WatchEvent};
use crate::population::{MARKER_BASE, Population};

const CLUSTER: &str = "DEFAULT";
/// The most a write entry takes besides its service reference (a capacity hint): the
/// entry's key and length (up to 3), the reference's (up to 3), the instance's (2), its
/// address and the constant fields after it.
const ENTRY_BYTES: usize = 3 + 3 + 2 + ADDRESS_MAX + REGISTRATION_TAIL.len();

fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        put_delimited(tag, s.as_bytes(), buf);
    }
}

/// The fields after an instance's address in every registration the generator sends:
/// `weight` 1.0 (field 3), `healthy` and `enabled` true (4, 5), `cluster` (6).
const REGISTRATION_TAIL: [u8; 22] = {
    let w = 1.0f64.to_le_bytes();
    let c = CLUSTER.as_bytes();
    [
        0x19, w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], 0x20, 1, 0x28, 1, 0x32, 7, c[0],
        c[1], c[2], c[3], c[4], c[5], c[6],
    ]
};
// The tails spell the cluster's length as 7.
const _: () = assert!(CLUSTER.len() == 7);
/// A beat's `cluster` (field 4).
const BEAT_TAIL: [u8; 9] = {
    let c = CLUSTER.as_bytes();
    [0x22, 7, c[0], c[1], c[2], c[3], c[4], c[5], c[6]]
};
/// The most an address takes (`ip` and `port`, keys and lengths: 2 + 15 + 1 + 3).
const ADDRESS_MAX: usize = 21;

/// An address's fields, `ip` with key `ip_tag` then `port` (omitted when 0, as protobuf's
/// default), written on the stack: `(bytes, length)`. The text comes from the peer codec's
/// table of the octets' digits: `Ipv4Addr`'s `Display` (the formatting machinery, each
/// octet padded and written as a `u8`) cost ~1,300 instructions a registration.
fn address(ip_tag: u8, addr: SocketAddrV4) -> ([u8; ADDRESS_MAX], usize) {
    let text = ipv4_text(addr.ip().octets());
    let ip = text.as_str().as_bytes();
    let mut a = [0u8; ADDRESS_MAX];
    a[0] = ip_tag << 3 | 2;
    a[1] = ip.len() as u8;
    a[2..2 + ip.len()].copy_from_slice(ip);
    let mut n = 2 + ip.len();
    let mut port = addr.port();
    if port != 0 {
        a[n] = (ip_tag + 1) << 3;
        n += 1;
        while port >= 0x80 {
            a[n] = (port as u8) | 0x80;
            port >>= 7;
            n += 1;
        }
        a[n] = port as u8;
        n += 1;
    }
    (a, n)
}

/// Appends one entry (field 1 of the request) holding `svc_ref` (field 1) and then
/// `parts`, whose keys and lengths are written (`svc_ref` is the encoded `ServiceRef`).
fn put_entry(svc_ref: &[u8], parts: &[&[u8]], out: &mut BytesMut) {
    let rest: usize = parts.iter().map(|p| p.len()).sum();
    let body = 1 + encoded_len_varint(svc_ref.len() as u64) + svc_ref.len() + rest;
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(body as u64, out);
    put_delimited(1, svc_ref, out);
    for p in parts {
        out.put_slice(p);
    }
}

/// Appends one `Registration` (field 1 of Register/DeregisterRequest) to `out`: its
/// bytes written straight into the request (the address on the stack, the rest constant),
/// not built field by field in two scratch buffers and copied twice (~970 instructions an
/// entry, against ~200).
fn put_registration(svc_ref: &[u8], addr: SocketAddrV4, out: &mut BytesMut) {
    let (a, n) = address(1, addr);
    let len = n + REGISTRATION_TAIL.len();
    // `Instance` (field 2): at most 21 + 22 bytes, a one-byte length.
    let head = [2 << 3 | 2, len as u8];
    put_entry(svc_ref, &[&head, &a[..n], &REGISTRATION_TAIL], out);
}

/// Appends one `Beat` (field 1 of HeartbeatRequest) to `out`.
fn put_beat(svc_ref: &[u8], addr: SocketAddrV4, out: &mut BytesMut) {
    let (a, n) = address(2, addr);
    put_entry(svc_ref, &[&a[..n], &BEAT_TAIL], out);
}

/// The heads of the native calls at one node.
struct Methods {
    register: Method,
    deregister: Method,
    heartbeat: Method,
    query: Method,
    query_batch: Method,
}

impl Methods {
    fn new(scheme: &str, authority: &str) -> Methods {
        let m = |path| Method::new(scheme, authority, path, &[]);
        Methods {
            register: m("/distro.v1.Registry/Register"),
            deregister: m("/distro.v1.Registry/Deregister"),
            heartbeat: m("/distro.v1.Registry/Heartbeat"),
            query: m("/distro.v1.Registry/Query"),
            query_batch: m("/distro.v1.Registry/QueryBatch"),
        }
    }
}

/// How to reach one node's SDK port.
struct Target {
    /// The node's number from 1 and its main address (for errors).
    node: usize,
    main: String,
    /// `host:port` of the SDK port.
    sdk: String,
    tls: Option<crate::tls::TargetTls>,
    connect_timeout: Duration,
    methods: Methods,
}

impl Target {
    /// The link of one lane to this node, dialled now.
    async fn link(self: &Arc<Self>) -> Result<Link, String> {
        let target = self.clone();
        Link::open(move || {
            let target = target.clone();
            Box::pin(async move { target.dial().await })
        })
        .await
    }

    /// A new HTTP/2 connection (TLS first when configured).
    async fn dial(&self) -> Result<Dialled, String> {
        let tls = self.tls.as_ref().map(|t| {
            let explain: fn(&std::io::Error) -> String = crate::tls::explain;
            (t.connector(), explain)
        });
        distro_server::h2_client::dial(
            &self.sdk,
            None,
            tls,
            MAX_NATIVE_MESSAGE_BYTES,
            self.connect_timeout,
        )
        .await
        .map_err(|e| {
            format!(
                "cannot reach node {} ({}, SDK port {}): {e}",
                self.node, self.main, self.sdk
            )
        })
    }
}

/// One lane's link to one node, with the node's methods.
#[derive(Clone, Copy)]
struct Lane<'a> {
    link: &'a Link,
    methods: &'a Methods,
}

impl Lane<'_> {
    /// One unary call of the method `method` picks; the reply's protobuf bytes.
    async fn call(
        self,
        method: fn(&Methods) -> &Method,
        frame: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, tonic::Status> {
        self.link.call(method(self.methods), frame, timeout).await
    }
}

struct Inner {
    population: Arc<Population>,
    /// Each node's address and methods.
    targets: Vec<Arc<Target>>,
    /// `links[lane][node]`.
    links: Vec<Vec<Link>>,
    /// Each node's tonic channel for `Watch` (server streams), shared by its watches:
    /// connected at the first watch, and again after it drops.
    watch_channels: Vec<Channel>,
    /// Encoded `ServiceRef` of each service.
    svc_refs: Vec<Vec<u8>>,
    /// The longest of `svc_refs`.
    longest_ref: usize,
    /// The `QueryRequest` frame of each service (all clusters, not healthy-only).
    query_frames: Vec<Bytes>,
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
    /// Opens `ctx.lanes` connections to every node's SDK port; fails when a node cannot be
    /// reached within `ctx.timeout` (at most 3 s).
    pub async fn connect(ctx: &Context) -> anyhow::Result<Self> {
        let lanes = ctx.lanes.max(1);
        let scheme = if ctx.tls.is_some() { "https" } else { "http" };
        let mut links: Vec<Vec<Link>> = (0..lanes).map(|_| Vec::new()).collect();
        let mut watch_channels = Vec::new();
        let mut targets = Vec::new();
        for node in 0..ctx.targets.len() {
            let sdk = ctx.sdk_target(node);
            let uri = format!("{scheme}://{sdk}");
            let mut endpoint = Endpoint::from_shared(uri.clone()).map_err(|e| {
                anyhow::anyhow!("target {}: bad address {uri}: {e}", ctx.targets[node])
            })?;
            if let Some(tls) = &ctx.tls {
                endpoint = endpoint
                    .tls_config(tls.tonic())
                    .map_err(|e| anyhow::anyhow!("target {}: TLS setup: {e}", ctx.targets[node]))?;
            }
            let connect_timeout = ctx.timeout.min(Duration::from_secs(3));
            watch_channels.push(
                endpoint
                    .tcp_nodelay(true)
                    .connect_timeout(connect_timeout)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .connect_lazy(),
            );
            let target = Arc::new(Target {
                node: node + 1,
                main: ctx.targets[node].clone(),
                methods: Methods::new(scheme, &sdk),
                sdk,
                tls: ctx.tls.clone(),
                connect_timeout,
            });
            for lane in links.iter_mut() {
                lane.push(target.link().await.map_err(|e| anyhow::anyhow!(e))?);
            }
            targets.push(target);
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
        let query_frames = svc_refs
            .iter()
            .map(|r| {
                let mut b = frame_buffer(r.len() + 3);
                put_delimited(1, r, &mut b);
                seal(b)
            })
            .collect();
        let by_name = population.service_index();
        let longest_ref = svc_refs.iter().map(Vec::len).max().unwrap_or(0);
        Ok(Self {
            inner: Arc::new(Inner {
                population,
                targets,
                links,
                watch_channels,
                svc_refs,
                longest_ref,
                query_frames,
                by_name,
                timeout: ctx.timeout,
                query_batch: ctx.query_batch,
            }),
        })
    }
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

    fn encode(&self, kind: Kind, items: &[Item]) -> Option<Bytes> {
        let of_kind = || items.iter().filter(move |i| i.kind == kind);
        of_kind().next()?;
        // Sized once for the whole request (entries of one kind differ only in their
        // service and address): grown by doubling, the buffer was copied ~10 times a batch.
        let entries: usize = of_kind().map(|i| self.entries(i)).sum();
        let mut out = frame_buffer(entries * (self.longest_ref + ENTRY_BYTES));
        for it in of_kind() {
            let addr = self.population.addr(it.client);
            let one = |s: u32, out: &mut BytesMut| match kind {
                Kind::Beat => put_beat(self.svc_ref(s), addr, out),
                _ => put_registration(self.svc_ref(s), addr, out),
            };
            if it.client >= MARKER_BASE {
                one(it.service, &mut out);
            } else {
                for s in self.population.services_of(it.client) {
                    one(s, &mut out);
                }
            }
        }
        Some(seal(out))
    }

    /// One write call of `method` with a framed request.
    async fn write(
        &self,
        link: Lane<'_>,
        method: fn(&Methods) -> &Method,
        frame: Bytes,
    ) -> Result<WriteResponse, tonic::Status> {
        let reply = link.call(method, frame, self.timeout).await?;
        WriteResponse::decode(reply)
            .map_err(|e| tonic::Status::internal(format!("a malformed WriteResponse: {e}")))
    }

    /// One `QueryBatch` call for `services`: one outcome per service.
    async fn query_batch(&self, link: Lane<'_>, services: &[u32]) -> Vec<Outcome> {
        let request = pb::QueryBatchRequest {
            queries: services
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
                .collect(),
        };
        let mut frame = frame_buffer(request.encoded_len());
        request.encode_raw(&mut frame);
        let answer = link
            .call(|m| &m.query_batch, seal(frame), self.timeout)
            .await
            .and_then(|reply| {
                pb::QueryBatchResponse::decode(reply).map_err(|e| {
                    tonic::Status::internal(format!("a malformed QueryBatchResponse: {e}"))
                })
            });
        match answer {
            Ok(r) => {
                let n = r.answers.len();
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

    /// The outcomes of `services` queried over `link`: one `QueryBatch` call per
    /// `query_batch` services, or one `Query` call each.
    async fn queries(&self, link: Lane<'_>, services: &[u32]) -> Vec<Outcome> {
        if self.query_batch <= 1 || services.len() <= 1 {
            return futures::future::join_all(services.iter().map(|s| self.query(link, *s))).await;
        }
        let calls = services
            .chunks(self.query_batch)
            .map(|c| self.query_batch(link, c));
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One `Query` call: a success is an OK status with a well-formed `QueryResponse`
    /// (its instances are stepped over, not decoded).
    async fn query(&self, link: Lane<'_>, service: u32) -> Outcome {
        let Some(frame) = self.query_frames.get(service as usize) else {
            return Outcome::Failed("no-service");
        };
        let answer = link
            .call(|m| &m.query, frame.clone(), self.timeout)
            .await
            .and_then(|reply| {
                Raw::decode(reply)
                    .map_err(|e| tonic::Status::internal(format!("a malformed QueryResponse: {e}")))
            });
        match answer {
            Ok(_) => Outcome::Ok,
            Err(s) => status_outcome(&s),
        }
    }

    /// Writes the outcomes of a write call into the batch.
    fn apply(&self, kind: Kind, res: Result<WriteResponse, tonic::Status>, batch: &mut Batch) {
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
            let lanes = &inner.links;
            let link = Lane {
                link: &lanes[lane % lanes.len()][batch.node],
                methods: &inner.targets[batch.node].methods,
            };
            batch.outcomes.clear();
            batch.outcomes.resize(batch.items.len(), Outcome::Ok);
            let reg = inner.encode(Kind::Register, &batch.items);
            let dereg = inner.encode(Kind::Deregister, &batch.items);
            let beat = inner.encode(Kind::Beat, &batch.items);
            let queries: Vec<u32> = batch
                .items
                .iter()
                .filter(|i| i.kind == Kind::Query)
                .map(|i| i.service)
                .collect();
            let call = |method: fn(&Methods) -> &Method, frame: Option<Bytes>| {
                let inner = &inner;
                async move {
                    match frame {
                        Some(f) => Some(inner.write(link, method, f).await),
                        None => None,
                    }
                }
            };
            let q = inner.queries(link, &queries);
            let (r, d, b, q) = futures::join!(
                call(|m| &m.register, reg),
                call(|m| &m.deregister, dereg),
                call(|m| &m.heartbeat, beat),
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
            let channel = inner.watch_channels[node].clone();
            let mut client = pb::registry_client::RegistryClient::new(channel)
                .max_decoding_message_size(MAX_NATIVE_MESSAGE_BYTES);
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn target(sdk: String, tls: Option<crate::tls::TargetTls>, timeout: Duration) -> Target {
        Target {
            node: 1,
            main: "node".into(),
            methods: Methods::new(if tls.is_some() { "https" } else { "http" }, &sdk),
            sdk,
            tls,
            connect_timeout: timeout,
        }
    }

    /// A `Register` frame of one instance of service `svc` at 10.0.0.1:`port`.
    fn register_frame(port: u16) -> Bytes {
        let (_, svc) = svc_ref("svc");
        let mut out = frame_buffer(64);
        put_registration(
            &svc,
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), port),
            &mut out,
        );
        seal(out)
    }

    async fn register(link: &Link, port: u16) -> Result<Vec<u32>, tonic::Status> {
        let methods = Methods::new("http", "node");
        let reply = link
            .call(
                &methods.register,
                register_frame(port),
                Duration::from_secs(5),
            )
            .await?;
        let r = WriteResponse::decode(reply).expect("a WriteResponse");
        Ok(r.results.iter().map(|r| r.code).collect())
    }

    /// A lane's connection that ends with its node is dialled again by the first call
    /// after the node is back; meanwhile calls fail as UNAVAILABLE.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lane_dials_its_node_again_after_the_connection_ends() {
        let cluster =
            distro_server::LocalCluster::start(1, distro_server::ServerConfig::default(), 1)
                .await
                .expect("a node");
        let sdk = cluster.sdk_addr(0).to_string();
        let link = Arc::new(target(sdk, None, Duration::from_secs(2)))
            .link()
            .await
            .expect("connects");
        assert_eq!(register(&link, 1).await.expect("registers"), [200]);
        let first = link.live().expect("live");
        cluster.kill(0);
        let deadline = Instant::now() + Duration::from_secs(10);
        // The connection ends with the node (the read task sees it close).
        while !first.is_closed() {
            assert!(
                Instant::now() < deadline,
                "the connection outlived its node"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let e = register(&link, 2).await.expect_err("the node is down");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
        assert!(e.message().contains("cannot reach node 1"), "{e}");
        cluster.restart(0).await.expect("restarts");
        assert_eq!(register(&link, 3).await.expect("registers again"), [200]);
        assert!(!link.live().expect("live").is_closed());
    }

    /// Calls that queue behind a dial that fails share its failure: a node whose TLS
    /// handshake never completes is dialled once for all of them, not once each in turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_waiting_for_a_dial_share_its_failure() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let sdk = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let silent = tokio::spawn({
            let accepted = accepted.clone();
            async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    held.push(stream);
                }
            }
        });
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a CA");
        let tls = crate::tls::TargetTls::from_pem(&ca.cert.pem()).expect("trust");
        let timeout = Duration::from_millis(400);
        let target = Arc::new(target(sdk, Some(tls), timeout));
        let e = target.link().await.err().expect("no handshake");
        assert!(e.contains("no connection within"), "{e}");
        let link = Arc::new(Link::new(move || {
            let target = target.clone();
            Box::pin(async move { target.dial().await })
        }));
        let calls: Vec<_> = (0..8u16)
            .map(|i| {
                let link = link.clone();
                tokio::spawn(async move { register(&link, i).await })
            })
            .collect();
        for c in calls {
            let e = c.await.expect("joins").expect_err("unreachable");
            assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
        }
        // The opening dial and one for the eight calls.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        silent.abort();
    }

    fn svc_ref(name: &str) -> (pb::ServiceRef, Vec<u8>) {
        let r = pb::ServiceRef {
            namespace: String::new(),
            group: String::new(),
            name: name.into(),
        };
        (r.clone(), r.encode_to_vec())
    }

    /// Entries written byte by byte are what prost writes for the same messages, for
    /// addresses of 7, 8, 12 and 15 bytes and ports of every varint width (0 omitted, as protobuf
    /// omits a default), and service names whose lengths take one and two varint bytes.
    #[test]
    fn written_entries_are_protobufs_encoding_of_the_same_messages() {
        let ips = [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(10, 0, 0, 7),
            Ipv4Addr::new(127, 45, 200, 9),
            Ipv4Addr::new(255, 255, 255, 255),
        ];
        for name in ["s", &"x".repeat(200)] {
            let (service, bytes) = svc_ref(name);
            for ip in ips {
                for port in [0, 1, 127, 128, 16_383, 16_384, 65_535] {
                    let addr = SocketAddrV4::new(ip, port);
                    let mut out = BytesMut::new();
                    put_registration(&bytes, addr, &mut out);
                    put_registration(&bytes, addr, &mut out);
                    let want = pb::RegisterRequest {
                        registrations: vec![
                            pb::Registration {
                                service: Some(service.clone()),
                                instance: Some(pb::Instance {
                                    ip: ip.to_string(),
                                    port: u32::from(port),
                                    weight: 1.0,
                                    healthy: true,
                                    enabled: true,
                                    cluster: CLUSTER.into(),
                                    metadata: Default::default(),
                                    instance_id: String::new(),
                                }),
                            };
                            2
                        ],
                    };
                    assert_eq!(&out[..], &want.encode_to_vec()[..], "{addr} {name}");
                    let mut out = BytesMut::new();
                    put_beat(&bytes, addr, &mut out);
                    let want = pb::HeartbeatRequest {
                        beats: vec![pb::Beat {
                            service: Some(service.clone()),
                            ip: ip.to_string(),
                            port: u32::from(port),
                            cluster: CLUSTER.into(),
                        }],
                    };
                    assert_eq!(&out[..], &want.encode_to_vec()[..], "{addr} {name}");
                }
            }
        }
    }
}
