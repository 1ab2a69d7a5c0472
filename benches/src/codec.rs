//! The wire encoding of a sync batch, as the sync benches see it: a hook.
//!
//! `distro-core` has no wire format; the server crate will encode [`SyncBatch`]es as
//! protobuf. Until it does, "encoding" is what the core already does when it builds a batch
//! (the full [`distro_core::ClientRecord`]s with their `size_hint`), and decoding is the
//! identity. The sync benches call [`encode`] and [`decode`] around the core's work so that
//! swapping in the real codec changes only this file.
//!
//! TODO(protobuf): when `distro-server` exposes its batch codec, make [`Encoded`] hold the
//! bytes, have [`encode`] call the server's encoder and [`decode`] its decoder (the
//! `distro-benches` crate may then depend on `distro-server`), and re-bless the
//! instruction-count baseline (`.ci/perf-gate --bless`).

use distro_core::message::SyncBatch;

/// An encoded batch. For now: the batch itself plus its estimated encoded length.
#[derive(Debug, Clone)]
pub struct Encoded {
    batch: SyncBatch,
    /// Estimated (for now) encoded length in bytes.
    pub len: usize,
}

/// Encodes `batch` for the wire (for now: computes its size hint, see the module docs).
pub fn encode(batch: SyncBatch) -> Encoded {
    let len = batch.size_hint();
    Encoded { batch, len }
}

/// Decodes a batch received from the wire (for now: the identity).
pub fn decode(encoded: Encoded) -> SyncBatch {
    encoded.batch
}
