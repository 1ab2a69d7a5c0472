//! The replica's batched apply (`Registry::apply_many`): grouped by shard, in order as
//! iterated, or gathered first, it decides every change as one by one, and concurrent
//! appliers converge to the newest states.

use super::tests::{publication, reg, reg_prefetching};
use super::*;

/// Replicated changes of 300 clients over 16 shards, with repeats at older and newer
/// revisions and deletions, in an order fixed by `seed`.
fn replica_changes(r: &Registry, seed: u64) -> Vec<ClientChange> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    let mut out = Vec::new();
    for round in 0..3u64 {
        for i in 0..300u16 {
            let ip = format!("10.1.{}.{}", i / 250, i % 250);
            let id = ClientId::ip_port(&ip, 1000 + i);
            let revision = Revision(1_000 + round * 10 + rng.below(10));
            if rng.below(5) == 0 {
                out.push(ClientChange::Delete { id, revision });
            } else {
                let p = publication(r, &format!("s{}", i % 7), &ip, 1000 + i);
                out.push(ClientChange::Upsert(ClientRecord {
                    id,
                    revision,
                    owner: MemberId(1),
                    publications: vec![Arc::new(p)],
                }));
            }
        }
    }
    // Shuffle so that older revisions often come after newer ones.
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

fn as_replica(c: &ClientChange) -> ReplicaChange<'_> {
    match c {
        ClientChange::Upsert(r) => ReplicaChange::State(StateRef::of(r), r.owner),
        ClientChange::Delete { id, revision } => ReplicaChange::Delete(id.as_str(), *revision),
        ClientChange::Stored(_) => unreachable!("replica_changes builds records"),
    }
}

/// Everything a replica's state is compared by: digests, counters, the stored revisions.
fn replica_state(r: &Registry) -> (Vec<ShardDigest>, RegistryStats, Vec<(String, u64)>) {
    let mut held = Vec::new();
    r.for_each(|c| held.push((c.id().as_str().to_string(), c.revision().0)));
    held.sort();
    (r.owner_digests(MemberId(1)), r.stats(), held)
}

#[test]
fn applying_grouped_by_shard_decides_as_one_by_one() {
    // Batches of 100 changes over 16 shards are grouped by shard, of 10 applied in order
    // (see `GROUPED_PER_SHARD`): as they are iterated, or gathered first when their
    // iterator does not tell its length exactly (a filter); all decide as one by one.
    // Each also with the memory of every change asked for ahead (`prefetch_from` 0), and
    // from 150 clients held (the registry switches midway).
    let modes = |s| [(s, 100, true), (s, 10, true), (s, 10, false)];
    let prefetch = [usize::MAX, 0, 150];
    let all = (0..20).flat_map(modes);
    for ((seed, size, exact), from) in all.flat_map(|m| prefetch.map(|f| (m, f))) {
        let (one, many) = (reg(), reg_prefetching(from));
        let changes = replica_changes(&one, seed);
        let (mut applied, mut stale) = (0, 0);
        for batch in changes.chunks(100) {
            for c in batch {
                let outcome = match c {
                    ClientChange::Upsert(rec) => one.apply(rec, rec.owner, 5),
                    ClientChange::Delete { id, revision } => one.apply_delete(id, *revision, 5),
                    ClientChange::Stored(_) => unreachable!("replica_changes builds records"),
                };
                match outcome {
                    ApplyOutcome::Applied => applied += 1,
                    ApplyOutcome::Stale => stale += 1,
                }
            }
        }
        let mut counts = ApplyCounts::default();
        for batch in changes.chunks(size) {
            let c = if exact {
                many.apply_many(batch.iter().map(as_replica), 5)
            } else {
                many.apply_many(batch.iter().map(as_replica).filter(|_| true), 5)
            };
            counts.applied += c.applied;
            counts.stale += c.stale;
        }
        assert_eq!(
            (counts.applied, counts.stale),
            (applied, stale),
            "seed {seed}, batches of {size}, exact length {exact}, prefetch from {from}"
        );
        assert_eq!(
            replica_state(&many),
            replica_state(&one),
            "seed {seed}, batches of {size}, exact length {exact}, prefetch from {from}"
        );
        if from == 150 {
            assert!(many.stats().clients >= 150, "the hints started midway");
        }
    }
}

#[test]
fn concurrent_grouped_applies_converge_to_the_newest_states() {
    // Four appliers take the same changes in different batches and orders at once (as
    // syncs and a snapshot chunk on worker threads can); newest revision wins either way.
    let reference = reg();
    let all = replica_changes(&reference, 99);
    for c in &all {
        match c {
            ClientChange::Upsert(rec) => reference.apply(rec, rec.owner, 5),
            ClientChange::Delete { id, revision } => reference.apply_delete(id, *revision, 5),
            ClientChange::Stored(_) => unreachable!("replica_changes builds records"),
        };
    }
    for from in [usize::MAX, 0] {
        let r = Arc::new(reg_prefetching(from));
        converge(&r, &all);
        assert_eq!(
            replica_state(&r),
            replica_state(&reference),
            "prefetch from {from}"
        );
    }
}

/// Applies `all` from four threads, each in its own order and batches of 37.
fn converge(r: &Arc<Registry>, all: &[ClientChange]) {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let r = r.clone();
            let mut changes = all.to_vec();
            let mut rng = crate::rng::SplitMix64::new(t);
            for i in (1..changes.len()).rev() {
                changes.swap(i, rng.below(i as u64 + 1) as usize);
            }
            std::thread::spawn(move || {
                for batch in changes.chunks(37) {
                    r.apply_many(batch.iter().map(as_replica), 5);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_small_batch_whose_iterator_panics_tells_the_listeners_what_it_applied() {
    // A small batch of known length is applied as it is iterated (the iterator runs
    // between changes, the shard's lock held): one whose iterator panics after five
    // changes keeps those five stored, its listeners hear of their services, and the
    // shard's lock is let go of (a write to it afterwards does not wait forever).
    struct Heard(std::sync::Mutex<Vec<String>>);
    impl ChangeListener for Heard {
        fn services_changed(&self, services: &[Service]) {
            let mut heard = self.0.lock().unwrap();
            heard.extend(services.iter().map(|s| s.name().as_str().to_string()));
        }
    }
    let r = reg();
    let heard = Arc::new(Heard(Default::default()));
    r.add_listener(heard.clone());
    let records: Vec<ClientRecord> = (0..10u16)
        .map(|i| {
            let ip = format!("10.2.0.{i}");
            ClientRecord {
                id: ClientId::ip_port(&ip, 1000 + i),
                revision: Revision(1_000),
                owner: MemberId(1),
                publications: vec![Arc::new(publication(&r, &format!("p{i}"), &ip, 1000 + i))],
            }
        })
        .collect();
    let changes = (0..records.len()).map(|i| {
        assert!(i < 5, "the batch's source fails midway");
        ReplicaChange::State(StateRef::of(&records[i]), records[i].owner)
    });
    assert_eq!(
        changes.size_hint(),
        (10, Some(10)),
        "a small batch of known length"
    );
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.apply_many(changes, 5)));
    assert!(panicked.is_err());
    let mut names = heard.0.lock().unwrap().clone();
    names.sort();
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    assert_eq!(r.stats().clients, 5);
    // The last shard written to is free: a newer state of its client applies, alone and
    // in a batch.
    let mut newer = records[4].clone();
    newer.revision = Revision(1_001);
    assert_eq!(r.apply(&newer, newer.owner, 6), ApplyOutcome::Applied);
    newer.revision = Revision(1_002);
    let counts = r.apply_many([ReplicaChange::State(StateRef::of(&newer), newer.owner)], 7);
    assert_eq!(counts.applied, 1);
}
