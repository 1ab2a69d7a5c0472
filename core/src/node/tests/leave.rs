//! A member that leaves: nothing stays queued for it.

use super::{node_with_one_client, sends};
use crate::message::PeerRequest;

/// Nothing stays queued for a member that left: a batch to it that fails after the leave
/// is not scheduled again, and what a writer still holding the old list queued for it is
/// dropped a peer timeout after the change (such entries used to stay, with
/// their client states, until the member came back).
#[test]
fn nothing_stays_queued_for_a_member_that_left() {
    use crate::message::SendError;
    let (n, id) = node_with_one_client();
    let gone = n.members().find("10.0.0.3:8848").expect("a member");
    let cmds = n.tick(5_000);
    let request = sends(&cmds)
        .into_iter()
        .find(|(to, r)| **to == gone && matches!(r, PeerRequest::Sync(_)))
        .map(|(_, r)| r.clone())
        .expect("a batch to the member that leaves");
    let stay: Vec<String> = ["10.0.0.1:8848", "10.0.0.2:8848"].map(String::from).into();
    assert!(n.set_members(&stay, 5_001).expect("valid list"));
    n.handle_response(gone, request, Err(SendError::Unreachable), 5_002);
    assert_eq!(n.pending_sync(gone), 0, "the failed batch was queued again");
    // A writer that loaded the list before the change schedules for every old peer.
    n.sync.schedule_at(gone.index(), &id, 5_003, false);
    assert_eq!(n.pending_sync(gone), 1);
    n.tick(5_001 + n.config.peer_timeout);
    assert_eq!(n.pending_sync(gone), 0, "the re-homing pass left it queued");
}

/// As above for a member that was already DOWN when it left: the leave does not change
/// the routing table, so no re-homing pass follows it, and what a writer still holding the
/// old list queued for the member is dropped a peer timeout after the change all the same.
#[test]
fn nothing_stays_queued_for_a_member_that_was_down_when_it_left() {
    use crate::member::MemberState;
    let (n, id) = node_with_one_client();
    let gone = n.members().find("10.0.0.3:8848").expect("a member");
    n.set_member_state(gone, MemberState::Down, 10);
    n.tick(4_000);
    let routing_changes = n.routing_changes.load(std::sync::atomic::Ordering::Relaxed);
    let stay: Vec<String> = ["10.0.0.1:8848", "10.0.0.2:8848"].map(String::from).into();
    assert!(n.set_members(&stay, 5_000).expect("valid list"));
    assert_eq!(
        n.routing_changes.load(std::sync::atomic::Ordering::Relaxed),
        routing_changes,
        "the leave of a DOWN member changed routing: this test no longer covers the gap"
    );
    assert_eq!(n.pending_sync(gone), 0, "dropped at the change");
    n.sync.schedule_at(gone.index(), &id, 5_001, false);
    assert_eq!(n.pending_sync(gone), 1);
    n.tick(5_000 + n.config.peer_timeout);
    assert_eq!(
        n.pending_sync(gone),
        0,
        "left queued for the member that left"
    );
}
