use super::*;
use std::cmp::Reverse;

pub(super) fn id(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

impl SyncScheduler {
    fn take_due(&self, peer: usize, now: Millis, max: usize) -> Vec<ClientId> {
        self.take(peer, now, max)
            .into_iter()
            .map(|t| t.id)
            .collect()
    }
}

/// The states of one client at successive revisions (ports 1, 2, ...), as a
/// registry stores them.
pub(super) fn states(n: u16) -> (ClientId, Vec<Arc<Client>>) {
    use crate::model::{InstanceSpec, Publication};
    use crate::{Config, MemberId, registry::Registry};
    let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
    let id = id("1717000000000_10.0.0.7_8080");
    let s = r.service("public", "DEFAULT_GROUP", "svc");
    let states = (1..=n)
        .map(|port| {
            let i = InstanceSpec::new("10.0.0.7", port)
                .to_instance(r.interner(), &s)
                .unwrap();
            let p = Publication::single(s.clone(), i);
            let (_, stored) = r
                .publish_stored(&id, MemberId(0), u64::from(port), |_| Ok(p))
                .unwrap();
            stored.expect("a change stores a state")
        })
        .collect();
    (id, states)
}

#[test]
fn an_entry_holds_the_newest_state_scheduled_or_none() {
    let (a, v) = states(3);
    assert!(v[0].revision() < v[1].revision() && v[1].revision() < v[2].revision());
    let revision = |t: &Taken| t.state.as_ref().map(|c| c.revision());
    let s = SyncScheduler::new(2, 0, 100, None);
    // Scheduled out of order (two writers racing): the higher revision stays.
    s.schedule_all([1], &a, Some(v[1].clone()), 0);
    s.schedule_all([1], &a, Some(v[0].clone()), 0);
    let t = s.take(1, 10, 10);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].hash, SyncScheduler::hash(&a));
    assert_eq!(revision(&t[0]), Some(v[1].revision()));
    // Put back, then a newer change: the newer state is sent.
    s.put_back_taken(1, &t[0]);
    s.schedule_all([1], &a, Some(v[2].clone()), 5);
    let t = s.take(1, 10, 10);
    assert_eq!(revision(&t[0]), Some(v[2].revision()));
    // A schedule without a state (a deletion, a repair) makes the flush read the
    // registry, whatever states come after it.
    s.schedule_all([1], &a, Some(v[0].clone()), 0);
    s.schedule_at(1, &a, 0, false);
    s.schedule_all([1], &a, Some(v[2].clone()), 0);
    let t = s.take(1, 10, 10);
    assert_eq!((t.len(), revision(&t[0])), (1, None));
    assert!(s.take(1, Millis::MAX, 10).is_empty());
}

#[test]
fn taken_clients_carry_the_registrys_hash() {
    let s = SyncScheduler::new(2, 0, 100, None);
    s.schedule(1, &id("1717000000000_10.0.0.7_8080"), 0);
    s.schedule_at(1, &id("10.0.0.7:80#true"), 5, false);
    let taken = s.take(1, 10, 10);
    assert_eq!(taken.len(), 2);
    for t in taken {
        let key = crate::registry::IdKey::new(t.id.as_str());
        assert_eq!(t.hash, key.hash, "{:?}", t.id);
    }
}

/// Schedules `id` for peer 1 in `stripe` under the hash of "a", whatever `id` is (two
/// ids of one hash, forced); returns whether a new entry was made.
fn schedule_as_a(stripe: &mut Stripe, id: &ClientId, due: Millis, regular: bool) -> bool {
    let mix = Mix(7);
    let (g, bit) = group_bit(1);
    let mut c = Change {
        keys: mix.keys(stable_hash64(b"a")),
        id,
        state: None,
        due,
        regular,
    };
    stripe.schedule(mix, &mut c, g, bit, |_| {}) != 0
}

#[test]
fn ids_of_one_hash_are_each_taken_once_at_their_due_time() {
    // Queue entries hold no id: two ids whose hashes are equal (forced here) must still
    // be taken once each, each when due, even with an obsolete entry of one of them.
    // b is given a's hash (queue entries, fifo and heap, keep hashes, not ids).
    let (mix, schedule) = (Mix(7), schedule_as_a);
    let mut stripe = Stripe::new(2, 4);
    let (a, b) = (id("a"), id("b"));
    assert!(schedule(&mut stripe, &a, 10, true));
    assert!(schedule(&mut stripe, &b, 20, true));
    assert!(!schedule(&mut stripe, &a, 5, false)); // a earlier: its fifo entry is obsolete
    assert!(!schedule(&mut stripe, &b, 30, true)); // b later: merges, stays due at 20
    let mut out = Vec::new();
    stripe.take_due(mix, 1, 9, 10, &mut out);
    assert_eq!(
        out.iter()
            .map(|t| (t.id.clone(), t.due))
            .collect::<Vec<_>>(),
        [(a.clone(), 5)]
    );
    stripe.take_due(mix, 1, 19, 10, &mut out);
    assert_eq!(
        out.len(),
        1,
        "a's obsolete entry took nothing, b is not due"
    );
    stripe.take_due(mix, 1, 100, 10, &mut out);
    assert_eq!(
        out.iter()
            .map(|t| (t.id.clone(), t.due))
            .collect::<Vec<_>>(),
        [(a, 5), (b, 20)]
    );
    assert!(stripe.pending.is_empty() && stripe.lanes[1].next_due().is_none());
}

#[test]
fn ids_of_one_hash_due_at_one_time_from_the_heap_and_the_fifo_are_both_taken() {
    // a waits in the heap and b in the fifo, both due at 10, their hashes equal (forced):
    // either pointer may take either entry, and both must leave at 10 (when the heap's
    // pointer matched its id, the fifo's could take a first; the heap's then found
    // nothing and b stayed pending with no pointer, never sent again).
    let (mix, schedule) = (Mix(7), schedule_as_a);
    let mut stripe = Stripe::new(2, 4);
    let (a, b) = (id("a"), id("b"));
    for first_in_heap in [true, false] {
        let (heap, fifo) = if first_in_heap { (&a, &b) } else { (&b, &a) };
        assert!(schedule(&mut stripe, heap, 10, false));
        assert!(schedule(&mut stripe, fifo, 10, true));
        let mut out = Vec::new();
        stripe.take_due(mix, 1, 10, 10, &mut out);
        let mut got: Vec<ClientId> = out.into_iter().map(|t| t.id).collect();
        got.sort();
        assert_eq!(got, [a.clone(), b.clone()], "first in the heap: {heap:?}");
        assert!(stripe.pending.is_empty() && stripe.lanes[1].next_due().is_none());
    }
}

/// Entries in the scheduler's tables (one per client and group of peers that share
/// a due time).
fn entries(s: &SyncScheduler) -> usize {
    s.stripes.iter().map(|t| t.lock().pending.len()).sum()
}

fn due_of(t: &[Taken]) -> Vec<(ClientId, Millis)> {
    t.iter().map(|t| (t.id.clone(), t.due)).collect()
}

#[test]
fn one_entry_serves_every_peer_until_their_due_times_part() {
    let a = id("a");
    let s = SyncScheduler::new(4, 1000, 100, None);
    s.schedule_all([1, 2, 3], &a, None, 0);
    assert_eq!(entries(&s), 1);
    assert_eq!([s.pending(1), s.pending(2), s.pending(3)], [1, 1, 1]);
    assert_eq!(due_of(&s.take(1, 1000, 10)), [(a.clone(), 1000)]);
    assert_eq!([s.pending(1), s.pending(2), s.pending(3)], [0, 1, 1]);
    // Peer 1 took it: the next change is due for it a delay later, while the others
    // keep the due time of the first change.
    s.schedule_all([1, 2, 3], &a, None, 500);
    assert_eq!(entries(&s), 2);
    assert_eq!([s.pending(1), s.pending(2), s.pending(3)], [1, 1, 1]);
    assert_eq!(s.next_due(1), Some(1500));
    assert_eq!(due_of(&s.take(2, 1000, 10)), [(a.clone(), 1000)]);
    assert!(s.take(1, 1000, 10).is_empty());
    assert_eq!(due_of(&s.take(3, 1000, 10)), [(a.clone(), 1000)]);
    assert_eq!(entries(&s), 1);
    assert_eq!(due_of(&s.take(1, 1500, 10)), [(a, 1500)]);
    assert_eq!(entries(&s), 0);
    assert_eq!([s.pending(1), s.pending(2), s.pending(3)], [0, 0, 0]);
    assert!((1..4).all(|p| s.next_due(p).is_none()));
}

#[test]
fn a_mask_schedules_as_the_peers_it_names() {
    let (a, b) = (id("a"), id("b"));
    let s = SyncScheduler::new(4, 1000, 100, None);
    s.schedule_mask(0b1010, &a, None, 0);
    s.schedule_all([1, 3], &b, None, 0);
    assert_eq!(entries(&s), 2);
    s.schedule_mask(0b1010, &b, None, 10);
    s.schedule_all([3, 1], &a, None, 10);
    assert_eq!(entries(&s), 2, "merged into the entries of the same peers");
    assert_eq!(
        [s.pending(0), s.pending(1), s.pending(2), s.pending(3)],
        [0, 2, 0, 2]
    );
    for p in [1, 3] {
        let mut t = due_of(&s.take(p, 1000, 10));
        t.sort();
        assert_eq!(t, [(a.clone(), 1000), (b.clone(), 1000)], "peer {p}");
    }
    assert_eq!(entries(&s), 0);
}

#[test]
fn a_peer_rescheduled_earlier_or_put_back_parts_from_the_others() {
    let (a, v) = states(2);
    let s = SyncScheduler::new(3, 1000, 100, None);
    s.schedule_all([1, 2], &a, Some(v[0].clone()), 0);
    // A repair for peer 1 only: due earlier for it, not for peer 2.
    s.schedule_at(1, &a, 200, false);
    assert_eq!(entries(&s), 2);
    assert_eq!(s.pending_clients(1), [(a.clone(), 200)]);
    assert_eq!(s.pending_clients(2), [(a.clone(), 1000)]);
    let t = s.take(1, 200, 10);
    assert_eq!(
        (due_of(&t), t[0].state.is_none()),
        (vec![(a.clone(), 200)], true)
    );
    assert!(s.take(2, 999, 10).is_empty());
    // Peer 2 still holds the state (or reads the registry: never an older one).
    s.schedule_all([2], &a, Some(v[1].clone()), 100);
    let t = s.take_early(2, 0, 1);
    assert_eq!(due_of(&t), [(a.clone(), 1000)]);
    let held = t[0].state.as_ref().map(|c| c.revision());
    assert!(held.is_none_or(|r| r == v[1].revision()), "{held:?}");
    // Put back for peer 2 while a change is pending for peer 1: both get it once.
    s.schedule_all([1], &a, None, 300);
    s.put_back_taken(2, &t[0]);
    assert_eq!([s.pending(1), s.pending(2)], [1, 1]);
    assert_eq!(due_of(&s.take(2, 1000, 10)), [(a.clone(), 1000)]);
    assert_eq!(due_of(&s.take(1, 1300, 10)), [(a, 1300)]);
    assert_eq!(entries(&s), 0);
}

#[test]
fn peers_beyond_the_first_group_share_entries_of_their_group() {
    let a = id("a");
    let s = SyncScheduler::new(200, 0, 100, None);
    s.schedule_all([130, 1, 70, 2, 71], &a, None, 10);
    assert_eq!(entries(&s), 3, "groups 0, 1 and 2");
    for p in [1, 2, 70, 71, 130] {
        assert_eq!(s.pending(p), 1);
        assert_eq!(s.pending_clients(p), [(a.clone(), 10)]);
    }
    assert!(s.take(3, Millis::MAX, 10).is_empty());
    assert_eq!(s.pending_clients(64), []);
    for p in [70, 1, 130, 71, 2] {
        assert_eq!(due_of(&s.take(p, 10, 10)), [(a.clone(), 10)], "peer {p}");
        assert!(s.take(p, Millis::MAX, 10).is_empty(), "peer {p}");
    }
    assert_eq!(entries(&s), 0);
}

/// What one peer should have pending for one client: its due time and what its state
/// may be (`None`: the registry's, since a schedule without a state; else at least
/// this revision, or the registry's).
type Expect = (Millis, Option<crate::model::Revision>);

fn expect_merge(
    model: &mut std::collections::BTreeMap<ClientId, Expect>,
    id: &ClientId,
    due: Millis,
    state: Option<&Arc<Client>>,
) {
    let rev = state.map(|c| c.revision());
    model
        .entry(id.clone())
        .and_modify(|(d, r)| {
            *d = (*d).min(due);
            *r = match (*r, rev) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        })
        .or_insert((due, rev));
}

/// Random schedules, repairs, takes and put-backs for three peers (two sharing a
/// group), against a model of one queue per peer: every peer takes each of its
/// clients once, at the due time it would have alone, with a state no older.
#[test]
fn shared_entries_behave_as_one_queue_per_peer() {
    use std::collections::BTreeMap;
    let (sid, v) = states(8);
    let ids: Vec<ClientId> = std::iter::once(sid)
        .chain((0..5).map(|i| id(&format!("c{i}"))))
        .collect();
    let peers = [1, 2, 65];
    for seed in 0..60u64 {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let mut next = |n: u64| rng.below(n);
        let s = SyncScheduler::new(70, 100, 4, Some(seed));
        let mut model: Vec<BTreeMap<ClientId, Expect>> = vec![BTreeMap::new(); 3];
        let mut taken: Vec<(usize, Taken)> = Vec::new();
        let mut now = 0;
        for step in 0..400 {
            let ctx = format!("seed {seed} step {step}");
            now += next(40);
            let k = next(ids.len() as u64) as usize;
            let id = &ids[k];
            let p = next(3) as usize;
            match next(6) {
                0 | 1 => {
                    let who: Vec<usize> = (0..3).filter(|_| next(4) != 0).collect();
                    let state = (k == 0 && next(3) != 0).then(|| &v[next(8) as usize]);
                    s.schedule_all(who.iter().map(|&i| peers[i]), id, state.cloned(), now);
                    for i in who {
                        expect_merge(&mut model[i], id, now + 100, state);
                    }
                }
                2 => {
                    let due = now + next(300);
                    s.schedule_at(peers[p], id, due, next(2) == 0);
                    expect_merge(&mut model[p], id, due, None);
                }
                3 if !taken.is_empty() => {
                    let (i, t) = taken.swap_remove(next(taken.len() as u64) as usize);
                    s.put_back_taken(peers[i], &t);
                    expect_merge(&mut model[i], &t.id, t.due, t.state.as_ref());
                }
                _ => {
                    let max = 1 + next(4) as usize;
                    let early = next(3) == 0;
                    let got = if early {
                        s.take_early(peers[p], now, max)
                    } else {
                        s.take(peers[p], now, max)
                    };
                    let due = model[p].values().filter(|(d, _)| *d <= now).count();
                    let want = if early { model[p].len() } else { due }.min(max);
                    assert_eq!(got.len(), want, "{ctx}");
                    let on_time = got.iter().filter(|t| t.due <= now).count();
                    assert_eq!(on_time, due.min(max), "{ctx}: due ones first");
                    for t in got {
                        let (d, rev) = model[p].remove(&t.id).expect("pending");
                        assert_eq!(t.due, d, "{ctx} {:?}", t.id);
                        let held = t.state.as_ref().map(|c| c.revision());
                        match (rev, held) {
                            (_, None) => {}
                            (Some(r), Some(h)) => assert!(h >= r, "{ctx}: older state"),
                            (None, Some(_)) => panic!("{ctx}: a state after none"),
                        }
                        taken.push((p, t));
                    }
                }
            }
            for (i, m) in model.iter().enumerate() {
                assert_eq!(s.pending(peers[i]), m.len(), "{ctx} peer {}", peers[i]);
                let mut listed = s.pending_clients(peers[i]);
                listed.sort();
                let want: Vec<_> = m.iter().map(|(id, (d, _))| (id.clone(), *d)).collect();
                assert_eq!(listed, want, "{ctx} peer {}", peers[i]);
                let next_due = m.values().map(|(d, _)| *d).min();
                assert!(
                    s.next_due(peers[i]).is_some_and(|d| Some(d) <= next_due) || next_due.is_none(),
                    "{ctx}"
                );
            }
        }
    }
}

#[test]
fn changes_merge_within_the_delay_anchored_at_the_first() {
    let s = SyncScheduler::new(2, 1000, 100, None);
    s.schedule(1, &id("a"), 0);
    s.schedule(1, &id("a"), 500);
    s.schedule(1, &id("a"), 999);
    assert_eq!(s.pending(1), 1);
    assert!(s.take_due(1, 999, 10).is_empty());
    assert_eq!(s.take_due(1, 1000, 10), vec![id("a")]);
    assert_eq!(s.pending(1), 0);
    // Continuous churn: a change every 100 ms still flushes every second.
    let mut flushed = 0;
    for t in (2000..10_000).step_by(100) {
        s.schedule(1, &id("b"), t);
        flushed += s.take_due(1, t, 10).len();
    }
    assert!(flushed >= 7, "churn starved replication: {flushed} flushes");
}

#[test]
fn retries_never_delay_pending_state() {
    let s = SyncScheduler::new(2, 1000, 100, None);
    s.schedule(1, &id("a"), 0); // due 1000
    s.schedule_at(1, &id("a"), 3000, false); // a failed batch's retry: keeps 1000
    assert_eq!(s.take_due(1, 1000, 10), vec![id("a")]);
    assert!(s.take_due(1, 5000, 10).is_empty(), "no duplicate entry");
    s.schedule_at(1, &id("b"), 4000, false);
    s.schedule(1, &id("b"), 2500); // regular change due 3500 comes first
    assert_eq!(s.take_due(1, 3500, 10), vec![id("b")]);
    assert!(s.take_due(1, 9000, 10).is_empty());
}

#[test]
fn take_due_is_bounded_and_ordered() {
    let s = SyncScheduler::new(2, 0, 100, None);
    for i in 0..100 {
        s.schedule(1, &id(&format!("c{i}")), i);
    }
    assert_eq!(s.take_due(1, 1000, 30).len(), 30);
    assert_eq!(s.pending(1), 70);
    assert_eq!(s.next_due(1).map(|d| d <= 1000), Some(true));
    assert_eq!(s.take_due(1, 1000, 1000).len(), 70);
}

#[test]
fn taking_early_goes_in_due_order_and_put_back_keeps_the_due_time() {
    let s = SyncScheduler::new(2, 1000, 100, None);
    for i in 0..10 {
        s.schedule(1, &id(&format!("c{i}")), i * 10);
    }
    // Nothing is due at 500, but the earliest pending can be taken ahead of time.
    assert!(s.take(1, 500, 10).is_empty());
    assert_eq!(s.take_early(1, 500, 4).len(), 4);
    assert_eq!(s.pending(1), 6);
    assert_eq!(s.take_early(1, 500, 100).len(), 6);
    for i in 0..10 {
        s.schedule(1, &id(&format!("c{i}")), i * 10);
    }
    // Early or not, what is due comes first.
    let early = s.take_early(1, 1020, 4);
    let mut dues: Vec<Millis> = early.iter().map(|t| t.due).collect();
    dues.sort_unstable();
    assert_eq!(dues[..3], [1000, 1010, 1020]);
    assert!(dues[3] > 1020);
    assert_eq!(s.pending(1), 6);
    // Put back, each is due when it was; a change since then keeps the earlier time.
    let first = early.iter().find(|t| t.due == 1000).unwrap().id.clone();
    s.schedule(1, &first, 700); // due 1700: merges, the put-back 1000 wins
    for t in &early {
        s.put_back(1, &t.id, t.due);
    }
    assert_eq!(s.pending(1), 10);
    assert!(s.take(1, 999, 10).is_empty());
    let at_due = s.take_due(1, 1000, 10);
    assert_eq!(at_due, vec![first]);
    assert_eq!(s.take(1, Millis::MAX, 100).len(), 9);
    assert!(s.take(1, Millis::MAX, 100).is_empty(), "no duplicate entry");
}

/// A lane's fifo is kept nondecreasing against the last due time it took, not its back:
/// a regular schedule due before that (a put-back after the fifo emptied) goes to the
/// lane's heap, and everything is still taken in due order.
#[test]
fn a_regular_schedule_due_before_the_last_fifo_push_is_taken_from_the_heap_in_order() {
    let mix = Mix(7);
    let (g, bit) = group_bit(1);
    let mut stripe = Stripe::new(2, 4);
    let push = |stripe: &mut Stripe, name: &str, due: Millis| {
        let i = id(name);
        let mut c = Change {
            keys: mix.keys(SyncScheduler::hash(&i)),
            id: &i,
            state: None,
            due,
            regular: true,
        };
        let mut new = Vec::new();
        assert_eq!(stripe.schedule(mix, &mut c, g, bit, |p| new.push(p)), bit);
        assert_eq!(new, [1], "the new peer is reported once");
    };
    let taken = |stripe: &mut Stripe, now: Millis| {
        let mut out = Vec::new();
        stripe.take_due(mix, 1, now, 10, &mut out);
        out.into_iter()
            .map(|t| (t.id.as_str().to_string(), t.due))
            .collect::<Vec<_>>()
    };
    push(&mut stripe, "a", 10);
    assert_eq!(taken(&mut stripe, 10), [("a".to_string(), 10)]);
    assert!(stripe.lanes[1].fifo.is_empty());
    // Due before the last push (10), into an empty fifo: the heap takes them.
    push(&mut stripe, "c", 5);
    push(&mut stripe, "d", 7);
    push(&mut stripe, "b", 20);
    let lane = &stripe.lanes[1];
    assert_eq!((lane.heap.len(), lane.fifo.len()), (2, 1));
    assert_eq!(
        taken(&mut stripe, 100),
        [
            ("c".to_string(), 5),
            ("d".to_string(), 7),
            ("b".to_string(), 20)
        ]
    );
    assert!(stripe.pending.is_empty() && stripe.lanes[1].next_due().is_none());
}

/// The lane's fifo answers as a `VecDeque` does over interleaved pushes and pops,
/// through its clears and compactions, and holds at most twice what is queued (plus
/// `Fifo::COMPACT`).
#[test]
fn a_fifo_is_a_queue_and_keeps_a_bounded_vector() {
    use std::collections::VecDeque;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut fifo, mut model) = (super::Fifo::with_capacity(4), VecDeque::new());
    let (mut compactions, mut clears) = (0, 0);
    for round in 0..20_000u64 {
        // Phases that grow and phases that drain, so both the clear and the compaction run.
        let push = if (round / 500) % 2 == 0 { 3 } else { 1 };
        if next() % 4 < push {
            let item = (round, next());
            fifo.push_back(item);
            model.push_back(item);
        } else {
            let head = fifo.head;
            fifo.pop_front();
            model.pop_front();
            if fifo.head == 0 && head > 0 {
                if fifo.items.is_empty() {
                    clears += 1;
                } else {
                    compactions += 1;
                }
            }
        }
        assert_eq!(fifo.front(), model.front(), "round {round}");
        assert_eq!(fifo.len(), model.len());
        assert_eq!(fifo.is_empty(), model.is_empty());
        assert!(fifo.items.len() <= 2 * model.len() + super::Fifo::COMPACT);
    }
    assert!(
        compactions > 0 && clears > 0,
        "{compactions} compactions, {clears} clears"
    );
}

/// A fifo drained after a backlog of more than `SHRINK_ABOVE` entries lets its memory go;
/// one drained after a smaller backlog keeps its vector for the next burst.
#[test]
fn a_fifo_drained_after_a_large_backlog_shrinks() {
    let mut fifo = super::Fifo::with_capacity(4);
    for i in 0..1_000u64 {
        fifo.push_back((i, i));
    }
    while !fifo.is_empty() {
        fifo.pop_front();
    }
    let kept = fifo.items.capacity();
    assert!(kept >= 1_000, "{kept}");
    let big = super::Fifo::SHRINK_ABOVE as u64 + 1;
    for i in 0..big {
        fifo.push_back((i, i));
    }
    assert!(fifo.items.capacity() > super::Fifo::SHRINK_ABOVE);
    while !fifo.is_empty() {
        fifo.pop_front();
    }
    assert!(
        fifo.items.capacity() <= super::Fifo::COMPACT * 64,
        "{}",
        fifo.items.capacity()
    );
    fifo.push_back((1, 1));
    assert_eq!(fifo.front(), Some(&(1, 1)));
}

/// A take pops its fifo entries by moving the front only, and lets them go once it
/// stops: after a take that stops short of the end the vector is compacted (at most
/// twice what is queued plus `Fifo::COMPACT`), after one that reaches the end it is
/// cleared.
#[test]
fn a_take_lets_the_fifo_entries_it_took_go_once_it_stops() {
    let mix = Mix(11);
    let (g, bit) = group_bit(1);
    let mut stripe = Stripe::new(2, 4);
    let ids: Vec<ClientId> = (0..300).map(|i| id(&format!("c{i}"))).collect();
    for (due, i) in ids.iter().enumerate() {
        let mut c = Change {
            keys: mix.keys(SyncScheduler::hash(i)),
            id: i,
            state: None,
            due: due as Millis,
            regular: true,
        };
        assert_eq!(stripe.schedule(mix, &mut c, g, bit, |_| {}), bit);
    }
    let mut out = Vec::new();
    // Stopped by the count: 200 of 300 taken, the rest compacted to the start.
    stripe.take_due(mix, 1, Millis::MAX, 200, &mut out);
    assert_eq!(out.len(), 200);
    let fifo = &stripe.lanes[1].fifo;
    assert_eq!((fifo.head, fifo.items.len()), (0, 100));
    // Stopped by the due time: 30 more taken (due 200 to 229), fewer than `COMPACT`.
    stripe.take_due(mix, 1, 229, 1_000, &mut out);
    assert_eq!(out.len(), 230);
    let fifo = &stripe.lanes[1].fifo;
    assert_eq!((fifo.head, fifo.items.len()), (30, 100));
    assert_eq!(stripe.lanes[1].next_due(), Some(230));
    // Stopped by the end of the queue: cleared.
    stripe.take_due(mix, 1, Millis::MAX, 1_000, &mut out);
    assert_eq!(out.len(), 300);
    let fifo = &stripe.lanes[1].fifo;
    assert_eq!((fifo.head, fifo.items.len()), (0, 0));
    let taken: Vec<&str> = out.iter().map(|t| t.id.as_str()).collect();
    let expected: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
    assert_eq!(taken, expected, "in due order");
}

/// A take offers a held state alone (`TakeSink::held`): one taken in is counted and
/// gone from the peer's queue without its id; one handed back reaches `taken` whole,
/// with its id; an entry with no state goes to `taken` at once. Entries pending for one
/// peer (removed) and for two (kept for the other) behave alike.
/// The other two cases of a held state offered alone: taken in from an entry pending for
/// that peer only (the entry removed with its id), and refused from an entry still
/// pending for another peer (passed whole, and kept, with its state, for the other).
#[test]
fn a_held_state_taken_from_an_entry_removed_or_refused_from_one_kept() {
    struct Sink {
        accept: usize,
        held: Vec<(u64, Millis, crate::model::Revision)>,
        whole: Vec<Taken>,
    }
    impl TakeSink for Sink {
        fn held(
            &mut self,
            state: Arc<Client>,
            due: Millis,
            hash: u64,
            _also: u64,
        ) -> Option<Arc<Client>> {
            if self.accept == 0 {
                return Some(state);
            }
            self.accept -= 1;
            self.held.push((hash, due, state.revision()));
            None
        }
        fn taken(&mut self, t: Taken) {
            self.whole.push(t);
        }
    }
    let sink = |accept| Sink {
        accept,
        held: Vec::new(),
        whole: Vec::new(),
    };
    let (a, v) = states(2);
    let s = SyncScheduler::new(3, 0, 100, None);
    // Pending for peer 1 only: taken in, the entry gone.
    s.schedule_all([1], &a, Some(v[0].clone()), 3);
    let mut k = sink(1);
    assert_eq!(s.take_into(1, 0, 10, 10, &mut k), 1);
    assert_eq!(k.held, [(SyncScheduler::hash(&a), 3, v[0].revision())]);
    assert!(k.whole.is_empty());
    assert_eq!((s.pending(1), s.pending(2)), (0, 0));
    assert!(s.take(1, Millis::MAX, 10).is_empty() && s.take(2, Millis::MAX, 10).is_empty());
    // Pending for peers 1 and 2: peer 1 refuses it, and gets it whole; peer 2 still has
    // it, state and all.
    s.schedule_all([1, 2], &a, Some(v[1].clone()), 4);
    let mut k = sink(0);
    assert_eq!(s.take_into(1, 0, 10, 10, &mut k), 1);
    assert!(k.held.is_empty());
    let t = &k.whole[0];
    assert_eq!((t.id.as_str(), t.due), (a.as_str(), 4));
    assert_eq!(
        t.state.as_ref().map(|c| c.revision()),
        Some(v[1].revision())
    );
    assert_eq!((s.pending(1), s.pending(2)), (0, 1));
    let mut k = sink(1);
    assert_eq!(s.take_into(2, 0, 10, 10, &mut k), 1);
    assert_eq!(k.held, [(SyncScheduler::hash(&a), 4, v[1].revision())]);
    assert_eq!((s.pending(1), s.pending(2)), (0, 0));
}

#[test]
fn a_take_offers_held_states_alone_and_passes_refused_ones_whole() {
    struct Sink {
        accept: usize,
        held: Vec<(u64, Millis)>,
        whole: Vec<Taken>,
    }
    impl TakeSink for Sink {
        fn held(
            &mut self,
            state: Arc<Client>,
            due: Millis,
            hash: u64,
            _also: u64,
        ) -> Option<Arc<Client>> {
            if self.accept == 0 {
                return Some(state);
            }
            self.accept -= 1;
            assert_eq!(hash, state.id_hash());
            self.held.push((hash, due));
            None
        }
        fn taken(&mut self, t: Taken) {
            self.whole.push(t);
        }
    }
    let (a, v) = states(1);
    let b = id("1717000000001_10.0.0.8_8080");
    let s = SyncScheduler::new(3, 0, 100, None);
    // a holds a state, pending for peers 1 and 2; b holds none, pending for peer 1.
    s.schedule_all([1, 2], &a, Some(v[0].clone()), 0);
    s.schedule_all([1], &b, None, 5);
    // Peer 1 accepts a's state (the entry stays for peer 2), and takes b whole.
    let mut sink = Sink {
        accept: 1,
        held: Vec::new(),
        whole: Vec::new(),
    };
    assert_eq!(s.take_into(1, 0, 10, 10, &mut sink), 2);
    assert_eq!(sink.held, [(SyncScheduler::hash(&a), 0)]);
    assert_eq!(sink.whole.len(), 1);
    assert_eq!(
        (sink.whole[0].id.as_str(), sink.whole[0].due),
        (b.as_str(), 5)
    );
    assert!(sink.whole[0].state.is_none());
    assert_eq!(s.pending(1), 0);
    // Peer 2 refuses it (the entry is removed): it comes whole, id and state.
    let mut sink = Sink {
        accept: 0,
        held: Vec::new(),
        whole: Vec::new(),
    };
    assert_eq!(s.take_into(2, 0, 10, 10, &mut sink), 1);
    assert!(sink.held.is_empty());
    let t = &sink.whole[0];
    assert_eq!(
        (t.id.as_str(), t.due, t.hash),
        (a.as_str(), 0, SyncScheduler::hash(&a))
    );
    assert_eq!(
        t.state.as_ref().map(|c| c.revision()),
        Some(v[0].revision())
    );
    assert_eq!(s.pending(2), 0);
    assert!(s.take(1, Millis::MAX, 10).is_empty() && s.take(2, Millis::MAX, 10).is_empty());
}

/// A lane holds each entry's table hash, and the entry keeps it: a take looks the entry
/// up by it without mixing the stable hash again, and a rehash reads it.
#[test]
fn a_lane_and_its_entry_keep_the_table_hash() {
    let mix = Mix(13);
    let (g, bit) = group_bit(1);
    let mut stripe = Stripe::new(2, 4);
    let a = id("a");
    let keys = mix.keys(SyncScheduler::hash(&a));
    for (due, regular) in [(10, true), (5, false)] {
        let mut c = Change {
            keys,
            id: &a,
            state: None,
            due,
            regular,
        };
        stripe.schedule(mix, &mut c, g, bit, |_| {});
    }
    let lane = &stripe.lanes[1];
    assert_eq!(lane.fifo.front(), Some(&(10, keys.slot)));
    assert_eq!(lane.heap.peek(), Some(&Reverse((5, keys.slot))));
    let p = stripe.pending.iter().next().unwrap();
    assert_eq!(p.slot, mix.slot(keys.hash));
    let mut out = Vec::new();
    stripe.take_due(mix, 1, 100, 10, &mut out);
    assert_eq!(
        out.iter()
            .map(|t| (t.id.clone(), t.due, t.hash))
            .collect::<Vec<_>>(),
        [(a, 5, keys.hash)]
    );
    assert!(stripe.pending.is_empty());
}

/// A take gives the stable hash of an entry without a state by unmixing its table hash:
/// the inverse of the mix for any key and hash.
#[test]
fn a_table_hash_unmixes_to_its_stable_hash() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..10_000 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let (key, hash) = (x.rotate_left(17), x ^ x >> 29);
        let mix = Mix(key);
        assert_eq!(mix.unslot(mix.slot(hash)), hash, "{key:#x} {hash:#x}");
    }
    for hash in [0, 1, u64::MAX, 1 << 63, stable_hash64(b"a")] {
        assert_eq!(Mix(7).unslot(Mix(7).slot(hash)), hash);
    }
}

/// A pending entry keeps its table hash, not the stable hash too: one cache line.
#[cfg(target_pointer_width = "64")]
#[test]
fn a_pending_entry_is_64_bytes() {
    assert_eq!(std::mem::size_of::<Pending>(), 64);
}

#[test]
fn each_peers_pending_count_holds_across_every_stripe_and_twenty_peers() {
    // 200 clients fall into every stripe; peers past the first eight are counted too.
    let s = SyncScheduler::new(20, 1000, 100, Some(21));
    let ids: Vec<ClientId> = (0..200).map(|i| id(&format!("c{i}"))).collect();
    let stripes: std::collections::HashSet<usize> = ids
        .iter()
        .map(|c| stripe_of(s.mix.keys(SyncScheduler::hash(c)).slot))
        .collect();
    assert_eq!(stripes.len(), STRIPES, "the clients cover every stripe");
    for c in &ids {
        s.schedule_all([0, 9, 17, 19], c, None, 0);
    }
    for c in &ids[..50] {
        s.schedule_all([8], c, None, 0);
    }
    let counts = |s: &SyncScheduler| [0, 1, 8, 9, 17, 19].map(|p| s.pending(p));
    assert_eq!(counts(&s), [200, 0, 50, 200, 200, 200]);
    // A take counts down only its peer, in the stripes it took from.
    assert_eq!(s.take(17, 1000, 130).len(), 130);
    assert_eq!(counts(&s), [200, 0, 50, 200, 70, 200]);
    assert_eq!(s.take(8, 1000, 1000).len(), 50);
    assert_eq!(s.take(17, 1000, 1000).len(), 70);
    assert_eq!(counts(&s), [200, 0, 0, 200, 0, 200]);
    // Rescheduled while pending: merged, not counted again.
    s.schedule_all([0], &ids[0], None, 500);
    assert_eq!(s.pending(0), 200);
    for p in [0, 9, 19] {
        assert_eq!(s.take(p, 1000, 1000).len(), 200);
    }
    assert_eq!(counts(&s), [0; 6]);
}

/// Writers scheduling for two peers while a taker takes for each: every client is taken
/// once per peer, and the pending counts (per stripe, changed by a load and a store
/// under the stripe's lock) never go below what is pending (a count changed outside the
/// lock would lose updates: a wrapped or a stale sum).
#[test]
fn pending_counts_stay_exact_under_concurrent_schedules_and_takes() {
    const WRITERS: usize = 3;
    const PER_WRITER: usize = 4_000;
    let s = SyncScheduler::new(3, 0, 100, None);
    let done = AtomicUsize::new(0);
    let taken = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let (s, done) = (&s, &done);
            scope.spawn(move || {
                for i in 0..PER_WRITER {
                    let c = id(&format!("10.{w}.{}.{}:8080#true", i / 250, i % 250));
                    s.schedule_all([1, 2], &c, None, 0);
                }
                done.fetch_add(1, Relaxed);
            });
        }
        let (s, done, taken) = (&s, &done, &taken);
        scope.spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                assert!(
                    std::time::Instant::now() < deadline,
                    "pending never reached 0: {} / {}",
                    s.pending(1),
                    s.pending(2)
                );
                let writing = done.load(Relaxed) < WRITERS;
                for peer in [1, 2] {
                    let pending = s.pending(peer);
                    assert!(pending <= WRITERS * PER_WRITER, "peer {peer}: {pending}");
                    let n = s.take(peer, Millis::MAX, 97).len();
                    taken[peer].fetch_add(n, Relaxed);
                }
                if !writing && s.pending(1) == 0 && s.pending(2) == 0 {
                    break;
                }
            }
        });
    });
    for peer in [1, 2] {
        assert_eq!(
            taken[peer].load(Relaxed),
            WRITERS * PER_WRITER,
            "peer {peer}"
        );
        assert_eq!(s.pending(peer), 0);
    }
    assert_eq!(taken[0].load(Relaxed), 0);
}

/// A take's followers take its clients too, whether their lanes are in step with the
/// leader's (a pointer heading the follower's queue is popped) or not (an earlier entry
/// of the follower's own heads it: the pointer stays and later finds nothing); counts
/// stay exact, every client is taken once per peer, and a shared put-back goes back for
/// the leader and the followers that took it.
#[test]
fn followers_of_a_take_take_its_clients_too_in_step_or_not() {
    let (a, b, c) = (id("1_10.0.0.1_1"), id("1_10.0.0.2_1"), id("1_10.0.0.3_1"));
    let s = SyncScheduler::new(4, 100, 16, Some(7));
    s.schedule_all([1, 2, 3], &a, None, 0);
    s.schedule_all([1, 2, 3], &b, None, 0);
    // Peer 2's lane out of step: `c` due earlier from its heap, ahead of `a` and `b`.
    s.schedule_at(2, &c, 50, false);
    let mut out = Vec::new();
    let followers = 1 << 2 | 1 << 3;
    assert_eq!(s.take_into(1, followers, 100, 10, &mut |t| out.push(t)), 2);
    let mut taken: Vec<_> = out.iter().map(|t| (t.id.clone(), t.also)).collect();
    taken.sort();
    assert_eq!(taken, vec![(a.clone(), followers), (b.clone(), followers)]);
    for peer in 1..=3 {
        assert_eq!(
            s.pending(peer),
            s.pending_clients(peer).len(),
            "peer {peer}"
        );
    }
    assert_eq!((s.pending(1), s.pending(2), s.pending(3)), (0, 1, 0));
    // Peer 3's pointers were popped with the take; peer 2's stayed behind `c`.
    assert!(s.take_due(3, Millis::MAX, 10).is_empty());
    assert_eq!(s.take_due(2, Millis::MAX, 10), vec![c]);
    assert_eq!(s.pending(2), 0);
    // Put back for the leader and the followers that took it: pending for all three.
    let t = out.iter().find(|t| t.id == a).unwrap();
    s.put_back_shared(1, t.also, &t.id, t.hash, t.due, None);
    for peer in 1..=3 {
        assert_eq!(
            s.take_due(peer, Millis::MAX, 10),
            vec![a.clone()],
            "peer {peer}"
        );
    }
    // A follower the entry is not pending for takes nothing of it.
    s.schedule_all([1], &b, None, 200);
    let mut out = Vec::new();
    assert_eq!(
        s.take_into(1, 1 << 2, Millis::MAX, 10, &mut |t| out.push(t)),
        1
    );
    assert_eq!(out[0].also, 0);
    assert_eq!((s.pending(1), s.pending(2)), (0, 0));
}
