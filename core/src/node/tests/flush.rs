//! The flush's batch built as clients leave the scheduler's queues: states the queue
//! held go into the batch under the stripe's lock, the others (read from the registry)
//! and whatever comes after a batch is full by bytes are handled once the locks are let
//! go.

use super::{register_many, sends};
use crate::config::Config;
use crate::member::{MemberId, MemberList};
use crate::message::PeerRequest;
use crate::model::ClientId;
use crate::node::Node;
use crate::registry::ClientChange;
use std::collections::HashMap;

/// Clients of ~1 KB states mixed with deletions (whose queue entries hold no state), in
/// batches of at most 4 KB: every batch is cut by bytes, often with deletions taken
/// before the state that overflowed it. Each client leaves exactly once, as what it last
/// was, and nothing stays pending: a deletion deferred past the locks and then put back
/// with the overflow is sent by a later batch, not lost nor sent twice.
#[test]
fn batches_cut_by_bytes_send_held_states_and_deletions_once_each() {
    let addrs: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        batch_max_bytes: 4096,
        ..Config::default()
    };
    let n = Node::new(cfg, MemberList::new(&addrs[0], &addrs).unwrap(), 1_000).unwrap();
    n.tick(0);
    register_many(&n, 0, 60, 1000, 10);
    // Every third one removed again: its entry is pending without a state.
    let removed: Vec<ClientId> = (0..60)
        .step_by(3)
        .map(|i| ClientId::connection(1, &format!("10.9.{}.{}", i / 250, i % 250), 1))
        .collect();
    for id in &removed {
        n.remove_client(id, 20);
    }
    assert_eq!(n.pending_sync(MemberId(1)), 60);
    let cmds = n.drain(30);
    let mut seen: HashMap<String, bool> = HashMap::new();
    let mut batches = 0;
    for (to, r) in sends(&cmds) {
        let PeerRequest::Sync(b) = r else { continue };
        assert_eq!(*to, MemberId(1));
        batches += 1;
        let states = b.changes.iter().filter(|c| c.stored().is_some()).count();
        assert!(states <= 3, "a batch of {states} states of ~1 KB");
        for c in &b.changes {
            let deletion = matches!(c, ClientChange::Delete { .. });
            let again = seen.insert(c.id().as_str().to_string(), deletion);
            assert!(again.is_none(), "{} sent twice", c.id());
        }
    }
    assert!(batches >= 14, "{batches} batches");
    assert_eq!(seen.len(), 60);
    for id in &removed {
        assert_eq!(
            seen.get(id.as_str()),
            Some(&true),
            "{id} sent as a deletion"
        );
    }
    assert_eq!(seen.values().filter(|d| !**d).count(), 40);
    assert_eq!(n.pending_sync(MemberId(1)), 0);
}

/// An early take (a whole batch pending) that is not a full batch after all (some of its
/// clients are gone: neither state nor tombstone) sends what is due and puts back
/// exactly the clients it took before they were due, found by their place in the batch.
#[test]
fn an_early_batch_that_is_not_full_puts_back_what_was_not_due() {
    let addrs: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        batch_max_entries: 10,
        ..Config::default()
    };
    let n = Node::new(cfg, MemberList::new(&addrs[0], &addrs).unwrap(), 1_000).unwrap();
    n.tick(0);
    let id = |i: usize| ClientId::connection(1, &format!("10.9.0.{i}"), 1);
    // Three due at 1010, three at 1500, and four due at 1010 that no longer exist.
    register_many(&n, 0, 3, 0, 10);
    register_many(&n, 3, 3, 0, 500);
    for i in 100..104 {
        n.sync.schedule_at(1, &id(i), 1_010, true);
    }
    assert_eq!(n.pending_sync(MemberId(1)), 10);
    let sent = |cmds: &[crate::message::Command]| {
        let mut ids: Vec<String> = sends(cmds)
            .into_iter()
            .filter_map(|(_, r)| match r {
                PeerRequest::Sync(b) => Some(b.changes.iter().map(|c| c.id().to_string())),
                _ => None,
            })
            .flatten()
            .collect();
        ids.sort_unstable();
        ids
    };
    let want = |r: std::ops::Range<usize>| {
        let mut v: Vec<String> = r.map(|i| id(i).to_string()).collect();
        v.sort_unstable();
        v
    };
    let cmds = n.tick(1_010);
    assert_eq!(sent(&cmds), want(0..3));
    // The batch kept after the put-back is at or above the lowest it took.
    for (lowest, min) in lowest_of_batches(&cmds) {
        assert!(lowest.is_some() && lowest <= min, "{lowest:?} {min:?}");
    }
    assert_eq!(n.pending_sync(MemberId(1)), 3);
    assert!(sent(&n.tick(1_499)).is_empty());
    assert_eq!(sent(&n.tick(1_500)), want(3..6));
    assert_eq!(n.pending_sync(MemberId(1)), 0);
}

/// A client whose entry holds no state (a deletion) keeps its turn when the states taken
/// after it fill the batch: a batch is built in take order, so what was taken before the
/// overflow leaves. (When the states taken under the locks went straight into the batch
/// and only the state-less ones waited for the locks to be let go, the deletion went back
/// with the overflow at every flush, at the head of its queue, while states arriving as
/// fast as batches left kept filling the batches: it never left.) Each round here brings
/// ~12 KB of new states for one batch of 4 KB; the take's first stripe rotates, so the
/// deletion is taken early in a take within one turn of the stripes.
#[test]
fn a_deletion_is_not_starved_by_states_taken_after_it() {
    let addrs: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        batch_max_bytes: 4096,
        max_inflight_batches: 1,
        ..Config::default()
    };
    let delay = cfg.sync_delay;
    let n = Node::new(cfg, MemberList::new(&addrs[0], &addrs).unwrap(), 1_000).unwrap();
    n.tick(0);
    let peer = MemberId(1);
    // Small changes sent first: the estimate of a full batch is then many entries, so
    // each take takes more ~1 KB states than one batch holds (a burst of larger states
    // than the average so far).
    register_many(&n, 10_000, 2_000, 0, 0);
    let drained = n.drain(0);
    for (_, r) in sends(&drained) {
        let PeerRequest::Sync(b) = r else { continue };
        let applied = b.changes.len() as u32;
        let ack = Ok(crate::message::PeerResponse::SyncAck { applied, stale: 0 });
        n.handle_response(peer, r.clone(), ack, 0);
    }
    assert_eq!(n.pending_sync(peer), 0);
    register_many(&n, 0, 1, 0, 0);
    let first = ClientId::connection(1, "10.9.0.0", 1);
    n.remove_client(&first, 1);
    let syncs = |cmds: &[crate::message::Command]| -> Vec<PeerRequest> {
        sends(cmds)
            .into_iter()
            .filter(|(_, r)| matches!(r, PeerRequest::Sync(_)))
            .map(|(_, r)| r.clone())
            .collect()
    };
    let mut now = 2;
    // The batch in flight: sent by a tick, or by the refill after an answer.
    let mut inflight: Vec<PeerRequest> = Vec::new();
    for round in 0..40 {
        register_many(&n, 1 + round * 12, 12, 1000, now);
        now += delay;
        inflight.extend(syncs(&n.tick(now)));
        assert_eq!(inflight.len(), 1, "round {round}: one batch in flight");
        let request = inflight.pop().expect("a batch");
        let PeerRequest::Sync(b) = &request else {
            unreachable!()
        };
        if b.changes.iter().any(|c| c.id() == first) {
            assert!(round <= 17, "sent at round {round} only");
            return;
        }
        let applied = b.changes.len() as u32;
        let ack = Ok(crate::message::PeerResponse::SyncAck { applied, stale: 0 });
        inflight = syncs(&n.handle_response(peer, request, ack, now));
    }
    panic!("the deletion due first was not sent in 40 rounds");
}

/// The lowest revision of each sync batch among `cmds` and the lowest of its changes.
fn lowest_of_batches(
    cmds: &[crate::message::Command],
) -> Vec<(
    Option<crate::model::Revision>,
    Option<crate::model::Revision>,
)> {
    sends(cmds)
        .into_iter()
        .filter_map(|(_, r)| match r {
            PeerRequest::Sync(b) => Some((b.lowest, b.changes.iter().map(|c| c.revision()).min())),
            _ => None,
        })
        .collect()
}

/// A flushed batch carries the lowest revision of its changes (`SyncBatch::lowest`, which
/// the encoder takes as its base instead of walking the batch): kept as the take reads
/// held states, and as the deletions and states read after the locks join; batches cut by
/// bytes, early full batches and their partial rest alike.
#[test]
fn a_flushed_batch_carries_the_lowest_revision_of_its_changes() {
    let addrs: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        batch_max_bytes: 4096,
        ..Config::default()
    };
    let n = Node::new(cfg, MemberList::new(&addrs[0], &addrs).unwrap(), 1_000).unwrap();
    n.tick(0);
    // Every third client removed: its deletion is read from the registry after the locks.
    register_many(&n, 0, 60, 1000, 10);
    for i in (0..60).step_by(3) {
        let id = ClientId::connection(1, &format!("10.9.{}.{}", i / 250, i % 250), 1);
        n.remove_client(&id, 20);
    }
    let batches = lowest_of_batches(&n.drain(30));
    assert!(batches.len() >= 14, "{} batches", batches.len());
    for (lowest, min) in batches {
        assert!(min.is_some());
        assert_eq!(lowest, min);
    }
    // Early full batches, then their partial rest.
    let n = super::small_batches(10, 4);
    n.tick(0);
    register_many(&n, 0, 25, 0, 10);
    let mut batches = lowest_of_batches(&n.tick(100));
    batches.extend(lowest_of_batches(&n.tick(110)));
    assert_eq!(batches.len(), 6);
    for (lowest, min) in batches {
        assert!(min.is_some());
        assert_eq!(lowest, min);
    }
}

/// A state larger than `batch_max_bytes` leaves alone in its batch, never held back by
/// the bound (the first change of a batch is taken whatever its size); states taken after
/// it go in the next batches, one each.
#[test]
fn a_state_over_the_byte_bound_leaves_alone_in_its_batch() {
    let addrs: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        batch_max_bytes: 1024,
        ..Config::default()
    };
    let n = Node::new(cfg, MemberList::new(&addrs[0], &addrs).unwrap(), 1_000).unwrap();
    n.tick(0);
    register_many(&n, 0, 3, 2000, 10);
    let cmds = n.drain(30);
    let sizes: Vec<usize> = sends(&cmds)
        .into_iter()
        .filter_map(|(_, r)| match r {
            PeerRequest::Sync(b) => Some(b.changes.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [1, 1, 1]);
    assert_eq!(n.pending_sync(MemberId(1)), 0);
}
