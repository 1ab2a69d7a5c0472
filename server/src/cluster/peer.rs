//! The peer protocol's server side: `distro.v1.Peer` on the cluster port.
//!
//! Every call is checked before anything else. The cluster token, when one is configured,
//! is checked by [`TokenCheck`] on the request's metadata (compared in constant time)
//! before tonic reads or decodes the body, so a caller without the token cannot make the
//! node decode up to 64 MiB. Then the node's [`PeerGate`] must be open (a partitioned
//! LocalCluster node refuses peers) and `from` must be a member (otherwise
//! `PERMISSION_DENIED` with a message starting [`NOT_A_MEMBER`], which the sender reads as
//! "alive, but not listing me yet": see `distro_core::message::SendError::NotMember`).
//! Then the request is
//! validated like client input, handed to the core, and the answer encoded.
//! A node that has not loaded its own snapshot refuses to serve one (status
//! `FAILED_PRECONDITION`, message [`SNAPSHOT_NOT_LOADED`]); the loader then tries the next
//! peer. The snapshot stream is produced on a blocking thread, one bounded chunk at a time, so
//! a large snapshot never sits in memory whole and never stalls the runtime. A sync batch
//! is decoded and applied on a blocking thread too, at most [`SYNC_APPLIERS`] at once: a
//! replica catching up keeps its runtime threads for heartbeats and queries, and further
//! batches wait for a free applier (their senders bound what they have in flight), so
//! nothing queues without limit. A verify list, which walks whole shards, is checked on a
//! blocking thread as well, at most [`VERIFY_WALKERS`] at once.

use crate::clock::Clock;
use crate::cluster::forward::Forwarder;
use crate::cluster::peer_client::TOKEN_HEADER;
use crate::cluster::sync_codec::{SnapshotChunk, SyncRequest};
use crate::cluster::wire;
use crate::fault::PeerGate;
use crate::metrics::Metrics;
use crate::proto::distro as pb;
use distro_core::hash::DIGEST_VERSION;
use distro_core::message::{PeerRequest, PeerResponse, SnapshotCursor};
use distro_core::{MemberId, Node};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use subtle::ConstantTimeEq as _;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The message of a snapshot refusal by a node still loading its own.
pub const SNAPSHOT_NOT_LOADED: &str = "snapshot refused: this node has not loaded its own yet";

/// The start of the message of a refusal of a sender this node does not list (yet).
pub const NOT_A_MEMBER: &str = "not a member of this node's list (yet)";

/// Sync batches decoded and applied at once, each on a blocking thread.
pub const SYNC_APPLIERS: usize = 2;

/// Verify lists checked at once, each on a blocking thread: a list walks whole shards,
/// and more lists at once would only take more threads.
pub const VERIFY_WALKERS: usize = 1;

/// The `distro.v1.Peer` service of one node.
pub struct PeerService {
    node: Arc<Node>,
    appliers: Arc<tokio::sync::Semaphore>,
    walkers: Arc<tokio::sync::Semaphore>,
    forwarder: Arc<Forwarder>,
    clock: Clock,
    gate: Arc<PeerGate>,
    metrics: Arc<Metrics>,
}

impl PeerService {
    /// The service of `node`.
    pub fn new(
        node: Arc<Node>,
        forwarder: Arc<Forwarder>,
        clock: Clock,
        gate: Arc<PeerGate>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node,
            appliers: Arc::new(tokio::sync::Semaphore::new(SYNC_APPLIERS)),
            walkers: Arc::new(tokio::sync::Semaphore::new(VERIFY_WALKERS)),
            forwarder,
            clock,
            gate,
            metrics,
        }
    }

    /// Checks the gate and the sender (the token was checked by [`TokenCheck`] before the
    /// body was decoded); returns the sender's member id.
    fn admit(&self, from: &str) -> Result<MemberId, Status> {
        if !self.gate.is_open() {
            return Err(Status::unavailable("peer traffic of this node is cut"));
        }
        let id = wire::member_id(&self.node, from)
            .map_err(|e| Status::permission_denied(format!("{NOT_A_MEMBER}: {e}")))?;
        if id == self.node.me() {
            return Err(Status::permission_denied("a node cannot be its own peer"));
        }
        Ok(id)
    }

    fn handle(&self, from: MemberId, req: PeerRequest) -> Result<PeerResponse, Status> {
        answer(self.node.handle_request(from, req, (self.clock)()))
    }

    /// [`Self::handle`] on the blocking pool, for a request whose handling walks many
    /// clients (a verify list): the runtime's threads keep answering clients and peers.
    /// At most [`VERIFY_WALKERS`] at once (see [`limited_blocking`]), so peers sending
    /// many at once cannot take a thread each.
    async fn handle_blocking(
        &self,
        from: MemberId,
        req: PeerRequest,
    ) -> Result<PeerResponse, Status> {
        let node = self.node.clone();
        let clock = self.clock.clone();
        // The time it is handled at (a renewal stores it: never one from before a wait
        // in the pool's queue).
        limited_blocking(&self.walkers, "handling the request", move || {
            answer(node.handle_request(from, req, clock()))
        })
        .await
    }
}

/// Runs `work` on the blocking pool once one of `limit`'s permits is free (held until it
/// ends: the others wait, so nothing takes a thread beyond the limit), and hands back its
/// answer; a failure of the task is an internal error naming `what`.
async fn limited_blocking<T: Send + 'static>(
    limit: &Arc<tokio::sync::Semaphore>,
    what: &str,
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let permit = limit
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Status::unavailable("the node is shutting down"))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|e| Status::internal(format!("{what} failed: {e}")))?
}

fn answer(r: PeerResponse) -> Result<PeerResponse, Status> {
    match r {
        PeerResponse::Refused(why) => Err(Status::failed_precondition(why)),
        PeerResponse::NotMember => Err(Status::permission_denied(NOT_A_MEMBER)),
        r => Ok(r),
    }
}

/// The cluster token check, run by tonic's interceptor layer on a request's metadata
/// before the body is read or decoded (wrap the peer server in it with
/// [`tonic::service::interceptor::InterceptedService`]). Without a configured token every
/// request passes.
#[derive(Clone)]
pub struct TokenCheck {
    token: Option<Arc<[u8]>>,
    metrics: Arc<Metrics>,
}

impl TokenCheck {
    /// Checks `token` (none: no check), counting refusals in `metrics`.
    pub fn new(token: Option<&str>, metrics: Arc<Metrics>) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.as_bytes())),
            metrics,
        }
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get(TOKEN_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if token_matches(given, expected) {
            Ok(req)
        } else {
            self.metrics.peer_unauthenticated.fetch_add(1, Relaxed);
            Err(Status::unauthenticated(format!(
                "missing or wrong cluster token ({TOKEN_HEADER})"
            )))
        }
    }
}

/// Whether the `given` cluster token is the `expected` one, compared in constant time (by
/// `subtle`), so the answer's timing tells nothing about the token but its length.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!(
        "the core answered {what} with an unexpected message"
    ))
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn sync(
        &self,
        request: Request<SyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        let from = self.admit(&request.get_ref().from)?;
        let node = self.node.clone();
        let clock = self.clock.clone();
        let msg = request.into_inner();
        // Wait for a free applier (backpressure), then decode and apply off the runtime.
        let response = limited_blocking(&self.appliers, "applying the batch", move || {
            let mut batch = msg.decode_batch(&node)?;
            answer(node.handle_sync(from, batch.changes(), clock()))
        })
        .await?;
        match response {
            PeerResponse::SyncAck { applied, stale } => {
                Ok(Response::new(pb::SyncResponse { applied, stale }))
            }
            _ => Err(unexpected("sync")),
        }
    }

    async fn verify_digests(
        &self,
        request: Request<pb::VerifyDigestsRequest>,
    ) -> Result<Response<pb::VerifyDigestsResponse>, Status> {
        let from = self.admit(&request.get_ref().from)?;
        self.metrics
            .digest_version_of(&request.get_ref().from, request.get_ref().digest_version);
        let digests = wire::digests_from_proto(&request.get_ref().digests);
        match self.handle(from, PeerRequest::VerifyDigests(digests))? {
            PeerResponse::VerifyMismatch { shards } => {
                Ok(Response::new(pb::VerifyDigestsResponse {
                    mismatched_shards: shards,
                    digest_version: DIGEST_VERSION,
                }))
            }
            _ => Err(unexpected("verify digests")),
        }
    }

    async fn verify_list(
        &self,
        request: Request<pb::VerifyListRequest>,
    ) -> Result<Response<pb::VerifyListResponse>, Status> {
        let from = self.admit(&request.get_ref().from)?;
        let list = wire::list_from_proto(&request.get_ref().shards)?;
        // Off the runtime's threads, as a sync batch's apply: a list of whole shards is
        // checked client by client, and every client the node holds in them is walked.
        match self
            .handle_blocking(from, PeerRequest::VerifyList(list))
            .await?
        {
            PeerResponse::VerifyReport { needs, removed } => {
                Ok(Response::new(pb::VerifyListResponse {
                    needs: wire::needs_to_proto(&self.node, &needs),
                    removed,
                }))
            }
            _ => Err(unexpected("verify list")),
        }
    }

    async fn verify_clients(
        &self,
        request: Request<pb::VerifyClientsRequest>,
    ) -> Result<Response<pb::VerifyClientsResponse>, Status> {
        let from = self.admit(&request.get_ref().from)?;
        let v = wire::verify_clients_from_proto(&request.get_ref().clients)?;
        // On the runtime: Nacos's per-client verify sends one client a request, a lookup
        // each, less than a hop to the blocking pool would cost.
        match self.handle(from, PeerRequest::VerifyClients(v))? {
            PeerResponse::VerifyClientsResult { failed } => {
                Ok(Response::new(pb::VerifyClientsResponse {
                    failed: failed.iter().map(|id| id.as_str().to_string()).collect(),
                }))
            }
            _ => Err(unexpected("verify clients")),
        }
    }

    type SnapshotStream = ChunkStream;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let from = self.admit(&request.get_ref().from)?;
        if !self.node.serves_snapshot() {
            // Still loading: an empty or partial registry is no snapshot to serve.
            self.metrics.snapshots_refused.fetch_add(1, Relaxed);
            return Err(Status::failed_precondition(SNAPSHOT_NOT_LOADED));
        }
        let req = request.into_inner();
        let after = wire::snapshot_after(&req.after)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let node = self.node.clone();
        let gate = self.gate.clone();
        let metrics = self.metrics.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<SnapshotChunk, Status>>(2);
        tracing::debug!(peer = %node.members().addr(from), "serving a snapshot");
        tokio::task::spawn_blocking(move || {
            let mut cursor = Some(SnapshotCursor {
                shard: req.shard,
                after,
            });
            while let Some(c) = cursor {
                if !gate.is_open() {
                    let _ = tx.blocking_send(Err(Status::unavailable(
                        "peer traffic of this node is cut",
                    )));
                    return;
                }
                let chunk = node.snapshot_chunk(c);
                cursor = chunk.next.clone();
                if tx
                    .blocking_send(Ok(SnapshotChunk::new(&node, &chunk)))
                    .is_err()
                {
                    return; // the loader went away
                }
            }
            metrics.snapshots_served.fetch_add(1, Relaxed);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn probe(
        &self,
        request: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let sender = &request.get_ref().from;
        let from = self.admit(sender)?;
        let probe = wire::probe_from_proto(request.get_ref());
        match self.handle(from, PeerRequest::Probe(probe))? {
            PeerResponse::ProbeAck(p) => Ok(Response::new(pb::ProbeResponse {
                incarnation: p.incarnation,
                loaded: p.loaded,
            })),
            _ => Err(unexpected("probe")),
        }
    }

    async fn forward(
        &self,
        request: Request<crate::proto::writes::ForwardRequest>,
    ) -> Result<Response<crate::proto::results::ForwardResponse>, Status> {
        self.admit(&request.get_ref().from)?;
        Ok(Response::new(
            self.forwarder.apply_forwarded(request.into_inner()),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_match_only_when_equal() {
        assert!(super::token_matches(b"s3cret", b"s3cret"));
        assert!(!super::token_matches(b"s3creT", b"s3cret"), "same length");
        assert!(!super::token_matches(b"s3cre", b"s3cret"), "a prefix");
        assert!(!super::token_matches(b"", b"s3cret"), "none");
    }
}
