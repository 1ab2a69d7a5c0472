//! Messages between nodes, as the core sees them.
//!
//! Every exchange is a request with one response, so a runtime can carry them over unary
//! RPCs (the server's `distro.v1.Peer` service) and the simulator over a lossy virtual
//! network. The snapshot is the exception: it is a stream of chunks, pulled by the loader
//! through [`crate::Node::snapshot_chunk`] and applied with [`crate::Node::load_chunk`].

use crate::digest::ShardDigest;
use crate::member::MemberId;
use crate::model::{ClientId, Revision};
use crate::registry::{Client, ClientChange};
use std::sync::Arc;

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerRequest {
    /// Changed clients of the sender (full states and deletions).
    Sync(SyncBatch),
    /// The sender's per-shard digests of its own clients (verify, step 1).
    VerifyDigests(VerifyDigests),
    /// `(client id, revision)` lists of the shards that differed (verify, step 2).
    VerifyList(VerifyList),
    /// Nacos's per-client verify.
    VerifyClients(VerifyClients),
    /// A membership probe, carrying the sender's own health report.
    Probe(Probe),
}

impl PeerRequest {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerRequest::Sync(_) => "sync",
            PeerRequest::VerifyDigests(_) => "verify_digests",
            PeerRequest::VerifyList(_) => "verify_list",
            PeerRequest::VerifyClients(_) => "verify_clients",
            PeerRequest::Probe(_) => "probe",
        }
    }
}

/// A batch of changes.
#[derive(Debug, Clone, Default)]
pub struct SyncBatch {
    /// The changes, at most one per client.
    pub changes: Vec<ClientChange>,
    /// At most the lowest revision of `changes`, when whoever built the batch knew it (a
    /// flush reads every state it takes, so it keeps the lowest as it goes; the compact
    /// encoder then need not walk the batch for it first), else `None`. Whoever adds a
    /// change below it must lower it or set it to `None`: the encoder relies on it (a
    /// change below it would be encoded as a revision past 64 bits, which the peer refuses
    /// as malformed: the batch's clients are rescheduled and the next flush takes it anew).
    /// Not part of a batch's equality (a cache of what `changes` say).
    pub lowest: Option<Revision>,
    /// Set on a batch sent to several peers at once (one take for all of them, see the
    /// flush): where the runtime keeps its encoding of the batch, made by whichever send
    /// encodes it first and reused by the others (the encoding must not depend on the
    /// peer). Not part of a batch's equality.
    pub encoding: Option<Arc<SharedEncoding>>,
}

/// A runtime's encoding of a batch sent to several peers ([`SyncBatch::encoding`]): set
/// once, by the first send that encodes it, of whatever type the runtime encodes to.
#[derive(Default)]
pub struct SharedEncoding(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl SharedEncoding {
    /// The encoding, if a send made it already (and it is a `T`).
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.get().and_then(|e| e.downcast_ref())
    }

    /// Keeps `encoding` for the other sends (unless one kept its own first: two sends
    /// encoding at once both encode, and the first to finish is kept).
    pub fn set<T: std::any::Any + Send + Sync>(&self, encoding: T) {
        let _ = self.0.set(Box::new(encoding));
    }
}

impl std::fmt::Debug for SharedEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedEncoding")
            .field("set", &self.0.get().is_some())
            .finish()
    }
}

impl PartialEq for SyncBatch {
    fn eq(&self, other: &Self) -> bool {
        self.changes == other.changes
    }
}

impl SyncBatch {
    /// Estimated encoded size.
    pub fn size_hint(&self) -> usize {
        self.changes.iter().map(|c| c.size_hint()).sum::<usize>() + 8
    }
}

/// Step 1 of verify: the owner's digests.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyDigests {
    /// One digest per shard, index = shard number.
    pub digests: Vec<ShardDigest>,
}

/// The clients of one shard as the owner holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardList {
    /// Shard number.
    pub shard: u32,
    /// Every client of the owner in this shard.
    pub clients: Vec<(ClientId, Revision)>,
}

/// Step 2 of verify: full lists of the mismatched shards.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyList {
    /// The lists, each complete for its shard.
    pub shards: Vec<ShardList>,
}

/// Per-client verify (Nacos's `DistroVerifyExecuteTask`).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyClients {
    /// `(client id, revision)` pairs.
    pub clients: Vec<(ClientId, Revision)>,
}

/// A probe and health report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The sender's incarnation (process start, ms).
    pub incarnation: u64,
    /// Whether the sender finished its snapshot load.
    pub loaded: bool,
}

/// What a replica lacks or holds differently, found by a verify list.
#[derive(Debug, Clone, PartialEq)]
pub enum Need {
    /// The replica does not hold the client: send it.
    Missing,
    /// The replica holds an older revision: send it.
    Stale,
    /// The replica holds a newer revision than the owner (writes by another owner during
    /// divergent membership views): here it is, state or deletion, for the owner to adopt
    /// and propagate. The highest revision wins everywhere.
    Newer(ClientChange),
}

/// A response to a [`PeerRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum PeerResponse {
    /// Answer to [`PeerRequest::Sync`].
    SyncAck {
        /// Changes applied.
        applied: u32,
        /// Changes ignored as older than what the receiver holds.
        stale: u32,
    },
    /// Answer to [`PeerRequest::VerifyDigests`]: the shards whose digests differ.
    VerifyMismatch {
        /// Shard numbers.
        shards: Vec<u32>,
    },
    /// Answer to [`PeerRequest::VerifyList`].
    VerifyReport {
        /// Clients the owner must act on.
        needs: Vec<(ClientId, Need)>,
        /// Clients the replica dropped because the owner no longer has them.
        removed: u32,
    },
    /// Answer to [`PeerRequest::VerifyClients`]: the clients that failed verification.
    VerifyClientsResult {
        /// Clients missing or with another revision.
        failed: Vec<ClientId>,
    },
    /// Answer to [`PeerRequest::Probe`].
    ProbeAck(Probe),
    /// The request was refused (e.g. a different shard count).
    Refused(String),
    /// The receiver does not list the sender as a member (yet): it is alive, and takes
    /// nothing from the sender until it has read a member list that names it (a node that
    /// joins is refused so by the peers that have not read the new list).
    NotMember,
}

/// Something the runtime must do for the node.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send `request` to `to` and feed the result to [`crate::Node::handle_response`].
    Send {
        /// Destination.
        to: MemberId,
        /// The request.
        request: PeerRequest,
    },
    /// Pull the snapshot from `from` ([`crate::Node::snapshot_chunk`] on that node),
    /// feeding chunks to [`crate::Node::load_chunk`] and the end to
    /// [`crate::Node::load_finished`].
    LoadSnapshot {
        /// The peer to load from.
        from: MemberId,
    },
    /// The store freed a burst of clients, services and names and shrank its tables: ask
    /// the allocator to give its free memory back to the operating system (the server's
    /// `alloc-trim`). Sent by the periodic collection once at least
    /// [`crate::node::RELEASE_AFTER_FREED`] things were freed and a round freed nothing
    /// more, and again two rounds later: after a burst, not during it.
    ReleaseMemory,
}

impl Command {
    /// The sync batch this command sends, if it sends one, with owned records (a flush
    /// sends states shared with the store, [`ClientChange::Stored`]; tests and tools
    /// compare records).
    pub fn into_sync_batch(self) -> Option<SyncBatch> {
        match self {
            Command::Send {
                request: PeerRequest::Sync(b),
                ..
            } => Some(SyncBatch {
                changes: b
                    .changes
                    .into_iter()
                    .map(ClientChange::into_owned)
                    .collect(),
                lowest: b.lowest,
                encoding: None,
            }),
            _ => None,
        }
    }
}

/// A chunk of a snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotChunk {
    /// Full states of clients, shared with the store (as a sync batch's
    /// [`ClientChange::Stored`]: serving a chunk copies no publication; a runtime encodes
    /// them, the simulator turns them into records with [`Client::to_record`]).
    pub records: Vec<Arc<Client>>,
    /// Where the next chunk starts; `None` on the last chunk.
    pub next: Option<SnapshotCursor>,
}

/// A position in a node's snapshot: a shard, and the last client of it sent (a shard's
/// clients go in id order). A chunk resumes after that id, so clients added or removed
/// between two chunks cannot make it skip one it has not sent (an offset among the
/// shard's clients did: every removal before it moved the rest back under it). A client
/// added behind the cursor is not in the snapshot; it is a change after the load began,
/// which reaches the loader by sync as every change does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotCursor {
    /// Shard number.
    pub shard: u32,
    /// The last client of the shard already sent; `None`: none yet.
    pub after: Option<ClientId>,
}

impl SnapshotCursor {
    /// The start of shard `shard`.
    pub fn start_of(shard: u32) -> Self {
        Self { shard, after: None }
    }
}

/// Why a request failed to get a response (the runtime's view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Not delivered, no answer in time, or the peer refused the connection.
    Unreachable,
    /// The peer answered with an error.
    Rejected,
    /// The peer answered that it does not list this node as a member (yet)
    /// ([`PeerResponse::NotMember`]): alive, but not ready for this node.
    NotMember,
}
