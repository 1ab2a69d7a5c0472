//! The wire encoding of a sync batch: the server's codec (`distro.v1.SyncRequest`, the
//! changes in the compact layout of `distro_server::cluster::compact`).
//!
//! The sync benches call [`encode`] on the owner and [`apply`] on the replica around the
//! core's work, so they measure what a node does per batch: build the records, encode
//! them, decode them (with the same validation as any peer input) and apply them.

use distro_core::message::{PeerResponse, SyncBatch};
use distro_core::{MemberId, Millis, Node};
use distro_server::cluster::compact::Decoded;
use prost::Message as _;
use prost::bytes::Bytes;
use std::sync::Arc;

/// An encoded batch, held as the peer service receives it: tonic hands the decoder a
/// `Bytes` buffer, from which the message's compact field is taken without a copy (a
/// slice would have it copied out, ~35 instructions a record that no replica pays).
#[derive(Debug, Clone)]
pub struct Encoded {
    bytes: Bytes,
    /// Encoded length in bytes.
    pub len: usize,
}

/// Encodes `batch`, sent by `owner`, as the peer protocol does (`sync_codec`, straight
/// from the core's records).
pub fn encode(owner: &Arc<Node>, batch: &SyncBatch) -> Encoded {
    let msg = distro_server::sync_codec::SyncRequest::new(owner, batch);
    let bytes = Bytes::from(msg.encode_to_vec());
    Encoded {
        len: bytes.len(),
        bytes,
    }
}

/// Decodes a batch received by `replica`, validating it as the peer service does; the
/// peer service then applies it with [`Node::handle_sync`] (see [`apply`]).
pub fn decode(replica: &Node, encoded: &Encoded) -> Decoded {
    let msg = distro_server::sync_codec::SyncRequest::decode(encoded.bytes.clone())
        .expect("a batch this process encoded");
    msg.decode_batch(replica).expect("valid records")
}

/// Decodes and applies a batch `replica` received from `from`, as the peer service does.
pub fn apply(replica: &Node, from: MemberId, encoded: &Encoded, now: Millis) -> PeerResponse {
    replica.handle_sync(from, decode(replica, encoded).changes(), now)
}
