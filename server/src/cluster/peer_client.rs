//! Outgoing peer RPCs: one lazily connected gRPC channel per member's cluster port.
//!
//! Every call carries the cluster token (when configured) and this node's member address,
//! runs under the peer timeout, and is refused locally while the node's [`PeerGate`] is
//! closed (LocalCluster's partitions). Encoded request sizes are counted per kind.

use crate::cluster::sync_codec::SyncRequest;
use crate::cluster::wire;
use crate::fault::PeerGate;
use crate::metrics::Metrics;
use crate::proto::codec::{Codec, Raw};
use crate::proto::distro as pb;
use crate::proto::distro::peer_client::PeerClient;
use distro_core::hash::DIGEST_VERSION;
use distro_core::message::{PeerRequest, PeerResponse, SendError, SnapshotCursor};
use distro_core::{MemberId, Node};
use prost::Message as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;
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
    timeout: Duration,
}

impl Connector {
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
    clients: Box<[OnceLock<Channel>]>,
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
        let connector = Connector {
            cluster_addr: Box::new(cluster_addr),
            local,
            tls: tls.map(|t| t.client_config()),
            timeout,
        };
        let clients: Box<[OnceLock<Channel>]> = (0..node.members().capacity())
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

    fn channel(&self, to: MemberId) -> Result<Channel, tonic::Status> {
        if !self.gate.is_open() {
            return Err(tonic::Status::unavailable(
                "peer traffic of this node is cut",
            ));
        }
        if to == self.node.me() {
            return Err(tonic::Status::invalid_argument(format!(
                "{to} is not a peer"
            )));
        }
        let slot = self
            .clients
            .get(to.index())
            .ok_or_else(|| tonic::Status::invalid_argument(format!("{to} is not a peer")))?;
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let c = self
            .connector
            .connect(self.node.member_addr(to))
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(slot.get_or_init(|| c).clone())
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        if let Some(t) = &self.token {
            r.metadata_mut().insert(TOKEN_HEADER, t.clone());
        }
        r
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
        let mut c = self.client(to)?;
        let node = &self.node;
        let from = self.me.clone();
        let kind = req.kind();
        let out = match req {
            PeerRequest::Sync(batch) => {
                // Encoded straight from the stored clients (see `sync_codec`, `compact`).
                let msg = SyncRequest::new(node, batch);
                let len = prost::Message::encoded_len(&msg);
                let r = c.sync(self.request(msg, self.timeout)).await;
                self.metrics.peer_request(kind, len, r.is_ok());
                let r = r?.into_inner();
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
                let len = msg.encoded_len();
                let r = c.verify_digests(self.request(msg, self.timeout)).await;
                self.metrics.peer_request(kind, len, r.is_ok());
                let r = r?.into_inner();
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
                let len = msg.encoded_len();
                let r = c.verify_list(self.request(msg, self.timeout)).await;
                self.metrics.peer_request(kind, len, r.is_ok());
                let r = r?.into_inner();
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
                let len = msg.encoded_len();
                let r = c.verify_clients(self.request(msg, self.timeout)).await;
                self.metrics.peer_request(kind, len, r.is_ok());
                let failed = r?
                    .into_inner()
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
                let len = msg.encoded_len();
                let r = c.probe(self.request(msg, self.timeout)).await;
                self.metrics.peer_request(kind, len, r.is_ok());
                let r = r?.into_inner();
                PeerResponse::ProbeAck(distro_core::message::Probe {
                    incarnation: r.incarnation,
                    loaded: r.loaded,
                })
            }
        };
        Ok(out)
    }

    /// Forwards client writes to their owner `to`: `req` is the `ForwardRequest` without
    /// its `from`, which is added here; it is sent as it is (the generated client would
    /// take the generated struct).
    pub async fn forward(
        &self,
        to: MemberId,
        mut req: Vec<u8>,
    ) -> Result<crate::proto::results::ForwardResponse, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel(to)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        // Fields may come in any order: `from` goes last, after the items.
        crate::proto::writes::put_delimited(1, self.me.as_bytes(), &mut req);
        let len = req.len();
        let r = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
            let codec = Codec::<Raw, crate::proto::results::ForwardResponse>::default();
            let path = PathAndQuery::from_static("/distro.v1.Peer/Forward");
            grpc.unary(self.request(Raw(req.into()), self.timeout), path, codec)
                .await
        }
        .await;
        self.metrics.peer_request("forward", len, r.is_ok());
        Ok(r?.into_inner())
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
