//! Outgoing peer RPCs to each member's cluster port.
//!
//! The unary calls (`Sync`, `Forward`, the verify rounds, `Probe`) go over an HTTP/2
//! connection of our own per peer ([`crate::h2_client::Link`]: dialled at the first call,
//! again after it ends; each method's head, the token included, encoded once; a request
//! written in place behind its gRPC prefix and sent from the caller's task in one write);
//! the `Snapshot` stream over a lazily connected tonic channel. Every call carries the
//! cluster token (when configured) and this node's member address, runs under the peer
//! timeout, and is refused locally while the node's [`PeerGate`] is closed (LocalCluster's
//! partitions). Encoded request sizes are counted per kind.

use crate::cluster::sync_codec::SyncRequest;
use crate::cluster::wire;
use crate::fault::PeerGate;
use crate::h2_client::{Dialled, GRPC_PREFIX, Link, Method, frame_buffer, seal};
use crate::metrics::Metrics;
use crate::proto::distro as pb;
use crate::proto::distro::peer_client::PeerClient;
use distro_core::hash::DIGEST_VERSION;
use distro_core::message::{PeerRequest, PeerResponse, SendError, SnapshotCursor};
use distro_core::{MemberId, Node};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// The gRPC metadata key of the cluster token.
pub const TOKEN_HEADER: &str = "x-distro-cluster-token";
/// Largest peer message accepted or sent (snapshot chunks and sync batches are far smaller).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The chain of causes under `status` (a TLS failure's reason sits there, under
/// "transport error"), joined by ": ".
pub fn causes(status: &tonic::Status) -> String {
    let mut out = String::new();
    let mut next = std::error::Error::source(status);
    while let Some(e) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

/// How to reach a member's cluster port.
struct Connector {
    cluster_addr: Box<dyn Fn(&str) -> String + Send + Sync>,
    local: Option<std::net::IpAddr>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    /// The same trust for our own connections.
    tls_connector: Option<tokio_rustls::TlsConnector>,
    /// The cluster token, sent with every call.
    token: Option<String>,
    timeout: Duration,
}

/// The unary methods of the peer protocol, in the order of [`PeerLink::methods`].
const METHODS: [&str; 6] = [
    "/distro.v1.Peer/Sync",
    "/distro.v1.Peer/Forward",
    "/distro.v1.Peer/VerifyDigests",
    "/distro.v1.Peer/VerifyList",
    "/distro.v1.Peer/VerifyClients",
    "/distro.v1.Peer/Probe",
];
const SYNC: usize = 0;
const FORWARD: usize = 1;
const VERIFY_DIGESTS: usize = 2;
const VERIFY_LIST: usize = 3;
const VERIFY_CLIENTS: usize = 4;
const PROBE: usize = 5;

/// A peer's connection of our own for the unary calls, and their heads.
struct PeerLink {
    link: Link,
    methods: [Method; METHODS.len()],
}

/// How to open a connection to one peer's cluster port.
struct Dial {
    /// `host:port` of the cluster port.
    authority: String,
    local: Option<IpAddr>,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
}

impl Dial {
    async fn dial(&self) -> Result<Dialled, String> {
        let told: fn(&std::io::Error) -> String = |e| e.to_string();
        let tls = self.tls.as_ref().map(|c| (c, told));
        crate::h2_client::dial(
            &self.authority,
            self.local,
            tls,
            MAX_PEER_MESSAGE_BYTES,
            self.timeout,
        )
        .await
    }
}

impl Connector {
    /// The connection of our own to the member at `addr` (its main port), not dialled yet.
    fn link(&self, addr: &str) -> PeerLink {
        let authority = (self.cluster_addr)(addr);
        let scheme = if self.tls_connector.is_some() {
            "https"
        } else {
            "http"
        };
        let token: Vec<(&str, &[u8])> = self
            .token
            .iter()
            .map(|t| (TOKEN_HEADER, t.as_bytes()))
            .collect();
        let methods = METHODS.map(|path| Method::new(scheme, &authority, path, &token));
        let dial = Arc::new(Dial {
            authority,
            local: self.local,
            tls: self.tls_connector.clone(),
            timeout: self.timeout.min(Duration::from_secs(1)),
        });
        let link = Link::new(move || {
            let dial = dial.clone();
            Box::pin(async move { dial.dial().await })
        });
        PeerLink { link, methods }
    }

    /// A lazily connecting client of the member at `addr` (its main port).
    fn connect(&self, addr: &str) -> anyhow::Result<Channel> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{}", (self.cluster_addr)(addr));
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| anyhow::anyhow!("bad peer address {uri}: {e}"))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| anyhow::anyhow!("invalid cluster TLS configuration for {uri}: {e}"))?;
        }
        let channel = endpoint
            .connect_timeout(self.timeout.min(Duration::from_secs(1)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .local_address(self.local)
            .connect_lazy();
        Ok(channel)
    }
}

/// The generated client on `channel`, with the peer protocol's message limits.
fn peer_client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
}

/// Clients of every peer's `distro.v1.Peer` service: one per member id, made when the
/// member is first addressed (members that join later included).
pub struct PeerClients {
    node: Arc<Node>,
    /// The snapshot streams' channels.
    clients: Box<[OnceLock<Channel>]>,
    /// The unary calls' connections.
    links: Box<[OnceLock<PeerLink>]>,
    connector: Connector,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    timeout: Duration,
    gate: Arc<PeerGate>,
    metrics: Arc<Metrics>,
    me: String,
}

impl PeerClients {
    /// Channels to every peer; `cluster_addr` maps a member address (`ip:port` of its
    /// main port) to the `host:port` of its cluster port. With `local`, connections to
    /// peers leave from that address (a node bound to one address talks from it too, so
    /// its peers, firewalls and fault tests see which node a connection comes from).
    pub fn new(
        node: Arc<Node>,
        cluster_addr: impl Fn(&str) -> String + Send + Sync + 'static,
        local: Option<std::net::IpAddr>,
        token: Option<&str>,
        tls: Option<&crate::tls::ClusterTls>,
        gate: Arc<PeerGate>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(node.config().peer_timeout);
        let tls_connector = match tls {
            Some(t) => Some(
                t.connector()
                    .map_err(|e| anyhow::anyhow!("invalid cluster TLS configuration: {e}"))?,
            ),
            None => None,
        };
        let connector = Connector {
            cluster_addr: Box::new(cluster_addr),
            local,
            tls: tls.map(|t| t.client_config()),
            tls_connector,
            token: token.map(str::to_owned),
            timeout,
        };
        let clients: Box<[OnceLock<Channel>]> = (0..node.members().capacity())
            .map(|_| OnceLock::new())
            .collect();
        let links: Box<[OnceLock<PeerLink>]> = (0..node.members().capacity())
            .map(|_| OnceLock::new())
            .collect();
        // The members given at start are checked now (a bad address fails the start).
        for m in node.members().peers() {
            let _ = clients[m.index()].set(connector.connect(node.member_addr(m))?);
        }
        let token = match token {
            Some(t) => Some(
                MetadataValue::try_from(t)
                    .map_err(|_| anyhow::anyhow!("the cluster token must be printable ASCII"))?,
            ),
            None => None,
        };
        let me = node.member_addr(node.me()).to_string();
        Ok(Self {
            node,
            clients,
            links,
            connector,
            token,
            timeout,
            gate,
            metrics,
            me,
        })
    }

    fn client(&self, to: MemberId) -> Result<PeerClient<Channel>, tonic::Status> {
        self.channel(to).map(peer_client)
    }

    /// The slot of peer `to`, unless the node's peer traffic is cut or `to` is no peer.
    fn slot(&self, to: MemberId) -> Result<usize, tonic::Status> {
        if !self.gate.is_open() {
            return Err(tonic::Status::unavailable(
                "peer traffic of this node is cut",
            ));
        }
        if to == self.node.me() || to.index() >= self.links.len() {
            return Err(tonic::Status::invalid_argument(format!(
                "{to} is not a peer"
            )));
        }
        Ok(to.index())
    }

    fn channel(&self, to: MemberId) -> Result<Channel, tonic::Status> {
        let slot = &self.clients[self.slot(to)?];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let c = self
            .connector
            .connect(self.node.member_addr(to))
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(slot.get_or_init(|| c).clone())
    }

    fn link(&self, to: MemberId) -> Result<&PeerLink, tonic::Status> {
        let slot = &self.links[self.slot(to)?];
        Ok(slot.get_or_init(|| self.connector.link(self.node.member_addr(to))))
    }

    /// One unary call of `METHODS[method]` to `to` with `msg`, counted as `kind`.
    async fn unary<R: prost::Message + Default>(
        &self,
        to: MemberId,
        method: usize,
        kind: &'static str,
        msg: &impl prost::Message,
    ) -> Result<R, tonic::Status> {
        let link = self.link(to)?;
        let len = msg.encoded_len();
        let mut frame = frame_buffer(len);
        msg.encode_raw(&mut frame);
        let r = self.answer(link, method, seal(frame)).await;
        self.metrics.peer_request(kind, len, r.is_ok());
        r
    }

    /// The call of `METHODS[method]` with `frame` on `link`, its answer decoded. A request
    /// over [`MAX_PEER_MESSAGE_BYTES`] is not sent (`RESOURCE_EXHAUSTED`: the peer would
    /// refuse it).
    async fn answer<R: prost::Message + Default>(
        &self,
        link: &PeerLink,
        method: usize,
        frame: bytes::Bytes,
    ) -> Result<R, tonic::Status> {
        let len = frame.len() - GRPC_PREFIX;
        if len > MAX_PEER_MESSAGE_BYTES {
            return Err(tonic::Status::resource_exhausted(format!(
                "a {len}-byte request to {}, over the peer protocol's {MAX_PEER_MESSAGE_BYTES} bytes",
                METHODS[method]
            )));
        }
        let reply = link
            .link
            .call(&link.methods[method], frame, self.timeout)
            .await?;
        R::decode(reply).map_err(|e| {
            tonic::Status::internal(format!("a malformed answer to {}: {e}", METHODS[method]))
        })
    }

    /// Sends a core request to `to` and returns its answer.
    pub async fn call(&self, to: MemberId, req: &PeerRequest) -> Result<PeerResponse, SendError> {
        let kind = req.kind();
        let result = self.call_inner(to, req).await;
        if let Err(e) = &result {
            tracing::debug!(peer = %self.node.members().addr(to), kind, error = %e.message(),
                cause = %causes(e), "peer request failed");
        }
        result.map_err(|s| match s.code() {
            tonic::Code::PermissionDenied
                if s.message().starts_with(crate::cluster::peer::NOT_A_MEMBER) =>
            {
                SendError::NotMember
            }
            tonic::Code::InvalidArgument
            | tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::FailedPrecondition => SendError::Rejected,
            _ => SendError::Unreachable,
        })
    }

    async fn call_inner(
        &self,
        to: MemberId,
        req: &PeerRequest,
    ) -> Result<PeerResponse, tonic::Status> {
        let node = &self.node;
        let from = self.me.clone();
        let kind = req.kind();
        let out = match req {
            PeerRequest::Sync(batch) => {
                // Encoded straight from the stored clients (see `sync_codec`, `compact`).
                let msg = SyncRequest::new(node, batch);
                let r: pb::SyncResponse = self.unary(to, SYNC, kind, &msg).await?;
                PeerResponse::SyncAck {
                    applied: r.applied,
                    stale: r.stale,
                }
            }
            PeerRequest::VerifyDigests(v) => {
                let msg = pb::VerifyDigestsRequest {
                    from,
                    digests: wire::digests_to_proto(v),
                    digest_version: DIGEST_VERSION,
                };
                let r: pb::VerifyDigestsResponse =
                    self.unary(to, VERIFY_DIGESTS, kind, &msg).await?;
                self.metrics
                    .digest_version_of(node.members().addr(to), r.digest_version);
                PeerResponse::VerifyMismatch {
                    shards: r.mismatched_shards,
                }
            }
            PeerRequest::VerifyList(l) => {
                let msg = pb::VerifyListRequest {
                    from,
                    shards: wire::list_to_proto(l),
                };
                let r: pb::VerifyListResponse = self.unary(to, VERIFY_LIST, kind, &msg).await?;
                PeerResponse::VerifyReport {
                    needs: wire::needs_from_proto(node, r.needs).map_err(tonic::Status::from)?,
                    removed: r.removed,
                }
            }
            PeerRequest::VerifyClients(v) => {
                let msg = pb::VerifyClientsRequest {
                    from,
                    clients: wire::verify_clients_to_proto(v),
                };
                let r: pb::VerifyClientsResponse =
                    self.unary(to, VERIFY_CLIENTS, kind, &msg).await?;
                let failed = r
                    .failed
                    .iter()
                    .map(|id| distro_core::ClientId::parse(id))
                    .collect::<Result<_, _>>()
                    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                PeerResponse::VerifyClientsResult { failed }
            }
            PeerRequest::Probe(p) => {
                let msg = pb::ProbeRequest {
                    from,
                    incarnation: p.incarnation,
                    loaded: p.loaded,
                };
                let r: pb::ProbeResponse = self.unary(to, PROBE, kind, &msg).await?;
                PeerResponse::ProbeAck(distro_core::message::Probe {
                    incarnation: r.incarnation,
                    loaded: r.loaded,
                })
            }
        };
        Ok(out)
    }

    /// Forwards client writes to their owner `to`: `req` is a [`frame_buffer`] holding the
    /// `ForwardRequest` without its `from`, which is added here; it is sent as it is (the
    /// generated client would take the generated struct).
    pub async fn forward(
        &self,
        to: MemberId,
        mut req: bytes::BytesMut,
    ) -> Result<crate::proto::results::ForwardResponse, tonic::Status> {
        let link = self.link(to)?;
        // Fields may come in any order: `from` goes last, after the items.
        crate::proto::writes::put_delimited(1, self.me.as_bytes(), &mut req);
        let len = req.len() - GRPC_PREFIX;
        let r = self.answer(link, FORWARD, seal(req)).await;
        self.metrics.peer_request("forward", len, r.is_ok());
        r
    }

    /// Opens the snapshot stream of peer `from`, starting at `cursor`.
    pub async fn snapshot(
        &self,
        from: MemberId,
        cursor: SnapshotCursor,
    ) -> Result<tonic::Streaming<crate::cluster::sync_codec::SnapshotChunk>, tonic::Status> {
        let mut c = self.client(from)?;
        let msg = pb::SnapshotRequest {
            from: self.me.clone(),
            shard: cursor.shard,
            after: cursor
                .after
                .map_or_else(String::new, |id| id.as_str().to_string()),
        };
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert(TOKEN_HEADER, t.clone());
        }
        Ok(c.snapshot(r).await?.into_inner())
    }
}
