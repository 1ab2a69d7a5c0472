//! A burst's sync: full batches leave before the delay; a partial batch waits a tenth of
//! the delay while the burst's writes keep coming, and nothing once they stopped for the
//! quiet time (`Config::burst_quiet`); a runtime's flush between ticks sends what is due.

use super::{batch_sizes, register_many, small_batches};
use crate::config::Config;
use crate::member::{MemberId, MemberList};
use crate::message::{Command, PeerRequest, SendError, SyncBatch};
use crate::node::Node;
use std::sync::Arc;

#[test]
fn a_full_batch_leaves_before_the_delay_and_the_rest_of_its_burst_once_quiet() {
    let n = small_batches(10, 4);
    n.tick(0);
    register_many(&n, 0, 25, 0, 10);
    // 25 pending per peer: two full batches of 10 at once, to each peer.
    assert_eq!(
        batch_sizes(&n.tick(20)),
        vec![(1, 10), (1, 10), (2, 10), (2, 10)]
    );
    assert_eq!(n.pending_sync(MemberId(1)), 5);
    // In the burst, once nothing new has been pending for the quiet time (20 ms since
    // the last registration at 10), the partial rest leaves, not after the whole delay.
    assert!(batch_sizes(&n.tick(29)).is_empty());
    assert_eq!(batch_sizes(&n.tick(30)), vec![(1, 5), (2, 5)]);
    assert_eq!(n.pending_sync(MemberId(1)), 0);
    // A delay after the last full batch the burst is over: a trickle waits it whole.
    register_many(&n, 100, 3, 0, 2_000);
    assert!(batch_sizes(&n.tick(2_100)).is_empty());
    assert!(batch_sizes(&n.tick(2_999)).is_empty());
    assert_eq!(batch_sizes(&n.tick(3_000)), vec![(1, 3), (2, 3)]);
}

/// While a burst's writes keep coming (never quiet for 20 ms), its partial rest waits a
/// tenth of the delay since its first change: partial batches do not leave at every
/// flush, so a long moderate burst still sends batches of what 100 ms gathers.
#[test]
fn a_burst_that_keeps_writing_holds_its_partial_batches_a_tenth_of_the_delay() {
    let n = small_batches(20, 4);
    n.tick(0);
    register_many(&n, 0, 45, 0, 10);
    assert_eq!(
        batch_sizes(&n.flush_syncs(20)),
        vec![(1, 20), (1, 20), (2, 20), (2, 20)]
    );
    // One more client every 10 ms (never a whole batch pending): never quiet.
    for (k, now) in (30..=100).step_by(10).enumerate() {
        register_many(&n, 45 + k, 1, 0, now);
        assert!(batch_sizes(&n.flush_syncs(now)).is_empty(), "at {now}");
    }
    register_many(&n, 60, 1, 0, 110);
    // The five of the first registrations (at 10) have lingered 100 ms; the later ones
    // have not.
    assert_eq!(batch_sizes(&n.flush_syncs(110)), vec![(1, 5), (2, 5)]);
    // Quiet from 110 on: 20 ms later every client pending leaves (eight from 30-100 and
    // the one at 110).
    assert!(batch_sizes(&n.flush_syncs(129)).is_empty());
    assert_eq!(batch_sizes(&n.flush_syncs(130)), vec![(1, 9), (2, 9)]);
    assert_eq!(n.pending_sync(MemberId(1)), 0);
}

/// A runtime's flush between ticks sends what a tick would of the syncs (full batches at
/// once, a burst's rest once it has lingered, a trickle after the whole delay) and
/// nothing else of a tick (no probe, no verify).
#[test]
fn a_flush_between_ticks_sends_the_due_syncs_and_nothing_else() {
    let n = small_batches(10, 4);
    n.tick(0);
    register_many(&n, 0, 25, 0, 10);
    let sent = n.flush_syncs(20);
    assert!(
        sent.iter().all(|c| matches!(
            c,
            Command::Send {
                request: PeerRequest::Sync(_),
                ..
            }
        )),
        "only syncs: {sent:?}"
    );
    assert_eq!(batch_sizes(&sent), vec![(1, 10), (1, 10), (2, 10), (2, 10)]);
    assert!(n.flush_syncs(29).is_empty());
    assert_eq!(batch_sizes(&n.flush_syncs(30)), vec![(1, 5), (2, 5)]);
    // A standalone node has no peer to flush to.
    let alone = Node::new(
        Config::default(),
        MemberList::new("10.0.0.1:8848", &["10.0.0.1:8848".to_string()]).unwrap(),
        1_000,
    )
    .unwrap();
    register_many(&alone, 0, 25, 0, 10);
    assert!(alone.flush_syncs(5_000).is_empty());
}

/// A batch's worth pending (`batch_early_entries`) sends a batch before the delay, and
/// that batch takes up to `batch_max_entries`: a burst of 15 with 10 early and 20 at most
/// leaves as one batch of 15 at once; a backlog of 45 as 20, 20, and the rest of 5 once
/// the burst is quiet.
#[test]
fn a_batch_leaves_early_from_its_early_count_and_takes_up_to_the_maximum() {
    let addrs: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        batch_max_entries: 20,
        batch_early_entries: 10,
        max_inflight_batches: 4,
        ..Config::default()
    };
    let n = Node::new(cfg, MemberList::new(&addrs[0], &addrs).unwrap(), 1_000).unwrap();
    n.tick(0);
    register_many(&n, 0, 15, 0, 10);
    assert_eq!(batch_sizes(&n.flush_syncs(20)), vec![(1, 15), (2, 15)]);
    register_many(&n, 15, 45, 0, 30);
    assert_eq!(
        batch_sizes(&n.flush_syncs(40)),
        vec![(1, 20), (1, 20), (2, 20), (2, 20)]
    );
    assert_eq!(n.pending_sync(MemberId(1)), 5);
    assert!(batch_sizes(&n.flush_syncs(49)).is_empty());
    assert_eq!(batch_sizes(&n.flush_syncs(50)), vec![(1, 5), (2, 5)]);
}

/// An early batch for one peer is taken for every other peer that has a batch's worth
/// pending and a free slot too: the same clients go to each, taken once and encoded once
/// (one shared encoding), and a failure to one puts them back for that one alone. A peer
/// without a free slot does not follow: it takes its own batch when its answer comes.
#[test]
fn an_early_batch_goes_to_every_peer_ready_for_one_taken_once() {
    let n = small_batches(10, 4);
    n.tick(0);
    register_many(&n, 0, 25, 0, 10);
    let batches = syncs(n.flush_syncs(20));
    assert_eq!(batches.len(), 4);
    for pair in batches.chunks(2) {
        let [(p, x), (q, y)] = pair else {
            unreachable!()
        };
        assert_eq!((p.0, q.0), (2, 1), "the follower's, then the leader's");
        assert_eq!(x, y);
        assert!(Arc::ptr_eq(
            x.encoding.as_ref().expect("shared"),
            y.encoding.as_ref().expect("shared")
        ));
    }
    assert_eq!(n.pending_sync(MemberId(1)), 5);
    assert_eq!(n.pending_sync(MemberId(2)), 5);
    let stats = n.stats();
    assert_eq!((stats.sync_batches_sent, stats.sync_batches_shared), (4, 2));
    // Peer 2 fails the first batch: its ten are pending again for it alone.
    let (to, first) = batches[0].clone();
    let failed = Err(SendError::Unreachable);
    n.handle_response(to, PeerRequest::Sync(first), failed, 25);
    assert_eq!(n.pending_sync(MemberId(2)), 15);
    assert_eq!(n.pending_sync(MemberId(1)), 5);
    // Quiet: the rest leaves for peer 1; peer 2 is paused for its retry delay.
    assert_eq!(batch_sizes(&n.flush_syncs(30)), vec![(1, 5)]);

    // One slot a peer: peer 1 leads, and peer 2, its slot busy, does not follow.
    let n = small_batches(10, 1);
    n.tick(0);
    register_many(&n, 0, 25, 0, 10);
    let first = n.flush_syncs(20);
    assert_eq!(batch_sizes(&first), vec![(1, 10), (2, 10)]);
    let ack = || {
        Ok(crate::message::PeerResponse::SyncAck {
            applied: 10,
            stale: 0,
        })
    };
    let alone = n.handle_response(MemberId(1), request_to(first, 1), ack(), 20);
    assert_eq!(batch_sizes(&alone), vec![(1, 10)]);
    let Some(Command::Send {
        request: PeerRequest::Sync(b),
        ..
    }) = alone.first()
    else {
        unreachable!()
    };
    assert!(b.encoding.is_none(), "taken for peer 1 alone");
    assert_eq!(n.pending_sync(MemberId(2)), 15);
}

/// A follower whose queue is out of step with the leader's (the leader has retries of its
/// own ahead) is sent a batch of what it took, not the leader's whole batch: never the
/// clients it was not pending for.
#[test]
fn a_follower_out_of_step_is_sent_only_what_it_took() {
    let n = small_batches(20, 4);
    n.tick(0);
    register_many(&n, 0, 5, 0, 10);
    // Not a batch's worth: each peer takes its own five after the delay.
    let first = n.flush_syncs(1_010);
    assert_eq!(batch_sizes(&first), vec![(1, 5), (2, 5)]);
    let to_1 = request_to(first, 1);
    // Peer 1 fails it: its five are due again for it alone after the retry delay.
    n.handle_response(MemberId(1), to_1, Err(SendError::Unreachable), 1_020);
    assert_eq!(n.pending_sync(MemberId(1)), 5);
    register_many(&n, 5, 25, 0, 4_030);
    assert_eq!(n.pending_sync(MemberId(1)), 30);
    assert_eq!(n.pending_sync(MemberId(2)), 25);
    // Peer 1 leads: its five retries (due) and fifteen of the new ones; peer 2 follows
    // for the fifteen it was pending for, and gets those alone.
    let sent = syncs(n.flush_syncs(4_040));
    let sizes: Vec<(u16, usize)> = sent.iter().map(|(to, b)| (to.0, b.changes.len())).collect();
    assert_eq!(sizes, vec![(2, 15), (1, 20)]);
    let (leader, follower) = (&sent[1].1, &sent[0].1);
    assert!(follower.encoding.is_none(), "encoded on its own");
    let ids = |b: &SyncBatch| -> Vec<String> {
        let mut v: Vec<String> = b.changes.iter().map(|c| c.id().to_string()).collect();
        v.sort();
        v
    };
    let retried: Vec<String> = leader
        .changes
        .iter()
        .map(|c| c.id().to_string())
        .filter(|id| !ids(follower).contains(id))
        .collect();
    assert_eq!(retried.len(), 5, "the leader's own retries");
    assert!(ids(follower).iter().all(|id| ids(leader).contains(id)));
    assert_eq!(n.pending_sync(MemberId(1)), 10);
    assert_eq!(n.pending_sync(MemberId(2)), 10);
    assert_eq!(n.stats().sync_batches_shared, 0);
}

/// The sync batches among `cmds`, with their peers, in the order they came.
fn syncs(cmds: Vec<Command>) -> Vec<(MemberId, SyncBatch)> {
    cmds.into_iter()
        .filter_map(|c| match c {
            Command::Send {
                to,
                request: PeerRequest::Sync(b),
            } => Some((to, b)),
            _ => None,
        })
        .collect()
}

/// The first request among `cmds` to peer `peer`.
fn request_to(cmds: Vec<Command>, peer: u16) -> PeerRequest {
    cmds.into_iter()
        .find_map(|c| match c {
            Command::Send { to, request } if to.0 == peer => Some(request),
            _ => None,
        })
        .expect("a request to the peer")
}
