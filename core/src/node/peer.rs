//! Peer messages: where a request from a peer, and the outcome of a request to one,
//! enter the node.
//!
//! Both entry points check the member id and hand the message to the concept it belongs
//! to: sync batches to `sync.rs`, digests, lists and per-client verifies to `verify.rs`,
//! probes to `membership.rs`. A refusal counts as a failure; any answer other than to a
//! sync also clears the sync back-off towards that peer (it is reachable again).

use super::Node;
use crate::member::MemberId;
use crate::message::{Command, PeerRequest, PeerResponse, SendError};
use crate::time::Millis;

impl Node {
    /// Answers a request from peer `from`.
    pub fn handle_request(
        &self,
        from: MemberId,
        request: PeerRequest,
        now: Millis,
    ) -> PeerResponse {
        if let Some(refused) = self.unknown_sender(from) {
            return refused;
        }
        let members = self.members.load();
        // A member that left may still hand over what it owned (a leaving node's last
        // syncs) and learn who is alive; nothing else of it is taken.
        if !members.contains(from)
            && !matches!(request, PeerRequest::Sync(_) | PeerRequest::Probe(_))
        {
            return PeerResponse::NotMember;
        }
        drop(members);
        match request {
            PeerRequest::Sync(batch) => self.apply_batch(from, &batch, now),
            PeerRequest::VerifyDigests(v) => self.check_digests(from, &v, now),
            PeerRequest::VerifyList(l) => self.check_list(from, l, now),
            PeerRequest::VerifyClients(v) => self.check_clients(v, now),
            PeerRequest::Probe(p) => self.answer_probe(from, p),
        }
    }

    /// The refusal of a request from `from` when it is this node or no member slot.
    pub(super) fn unknown_sender(&self, from: MemberId) -> Option<PeerResponse> {
        (from == self.me() || from.index() >= self.members.load().capacity())
            .then(|| PeerResponse::Refused(format!("unknown sender {from}")))
    }

    /// Digests the outcome of `request`, which this node sent to `to`.
    pub fn handle_response(
        &self,
        to: MemberId,
        request: PeerRequest,
        result: Result<PeerResponse, SendError>,
        now: Millis,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        if to.index() >= self.members.load().capacity() || to == self.me() {
            return out;
        }
        let result = match result {
            Ok(PeerResponse::Refused(_)) => Err(SendError::Rejected),
            Ok(PeerResponse::NotMember) => Err(SendError::NotMember),
            other => other,
        };
        if result.is_ok() && !matches!(request, PeerRequest::Sync(_)) {
            self.resume_sync(to);
        }
        match (request, result) {
            (PeerRequest::Probe(_), result) => self.on_probe_result(to, &result, now),
            (PeerRequest::Sync(batch), result) => {
                self.on_sync_result(to, &batch, result.is_ok(), now, &mut out);
                release_changes(batch.changes);
            }
            (PeerRequest::VerifyDigests(_), Ok(PeerResponse::VerifyMismatch { shards })) => {
                self.on_verify_mismatch(to, &shards, now, &mut out)
            }
            (PeerRequest::VerifyList(_), Ok(PeerResponse::VerifyReport { needs, .. })) => {
                self.on_verify_report(to, needs, now)
            }
            (PeerRequest::VerifyClients(_), Ok(PeerResponse::VerifyClientsResult { failed })) => {
                self.on_verify_clients_result(to, failed, now)
            }
            // Verify failures are retried by the next round.
            _ => {}
        }
        out
    }
}

/// How many changes ahead [`release_changes`] asks for a state's count.
const RELEASE_AHEAD: usize = 8;

/// Drops a sent batch's changes, asking for each stored state's reference count
/// [`RELEASE_AHEAD`] changes ahead of its drop. The batch's last references go long after
/// the flush read the states (an answer's round trip later, a burst's worth of other
/// clients in between), so each count's line has left the cache, and each drop's locked
/// decrement waited for its own miss in turn (`drop_in_place<ClientChange>`, 0.5-1.1 % of
/// the 1 M burst's samples); asked for ahead, the misses overlap.
fn release_changes(changes: Vec<crate::registry::ClientChange>) {
    use crate::registry::ClientChange;
    let ask = |c: &ClientChange| {
        if let ClientChange::Stored(c) = c {
            arc_slots::prefetch_arc_counts(std::sync::Arc::as_ptr(c));
        }
    };
    changes.iter().take(RELEASE_AHEAD).for_each(ask);
    let mut changes = changes.into_iter();
    loop {
        if let Some(c) = changes.as_slice().get(RELEASE_AHEAD) {
            ask(c);
        }
        if changes.next().is_none() {
            break;
        }
    }
}
