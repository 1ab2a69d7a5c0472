//! The shards' client tables ([`arc_slots::IdTable`]) as the registry uses them.

use super::tests::publication;
use super::*;

/// A shard's table through growth, in-place changes, removals that shrink it and
/// re-insertions into its tombstones: every client is found by id, walked once and
/// counted, while a reader keeps finding the clients no write touches.
#[test]
fn a_shards_table_keeps_every_client_through_growth_and_shrinking() {
    let r = Registry::new(
        MemberId(0),
        3,
        1_000,
        &Config {
            shards: 2,
            ..Config::default()
        },
    );
    let me = MemberId(0);
    let ids: Vec<ClientId> = (0..3_000u32)
        .map(|i| ClientId::ip_port(&format!("10.1.{}.{}", i / 250, i % 250), 80))
        .collect();
    let put = |i: usize, port: u16, now: Millis| {
        let ip = ids[i].as_str().split(':').next().unwrap().to_owned();
        let mut p = publication(&r, "svc", &ip, 80);
        if let crate::model::Instances::One(inst) = &mut p.instances {
            inst.weight = f64::from(port);
        }
        r.publish(&ids[i], p, me, now).unwrap()
    };
    let weight = |i: usize| {
        r.get(ids[i].as_str())
            .map(|c| c.publications()[0].instances[0].weight)
    };
    let walked = || {
        let mut v = Vec::new();
        r.for_each(|c| v.push(c.id()));
        v.sort();
        v
    };
    let capacity = || {
        let pin = r.pin();
        r.shards
            .iter()
            .map(|s| s.clients.capacity(&pin))
            .sum::<usize>()
    };
    /// Stops the reader when the writer's part ends, failed or not.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Relaxed);
        }
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _done = Done(&done);
        for i in 0..10 {
            put(i, 1, 10);
        }
        s.spawn(|| {
            while !done.load(Relaxed) {
                for (i, id) in ids[..10].iter().enumerate() {
                    assert_eq!(weight(i), Some(1.0), "{id} missed");
                }
            }
        });
        for i in 10..3_000 {
            put(i, 2, 20);
        }
        assert_eq!(r.stats().clients, 3_000);
        let grown = capacity();
        // At a load between 2/5 (just doubled) and 4/5.
        assert!((3_750..=7_500).contains(&grown), "{grown}");
        // Changed in place: the new state is found, nothing is added.
        for i in (10..3_000).step_by(2) {
            assert!(matches!(put(i, 3, 30), WriteResult::Changed(_)));
        }
        for i in 10..3_000 {
            assert_eq!(weight(i), Some(if i % 2 == 0 { 3.0 } else { 2.0 }), "{i}");
        }
        let mut all = ids.clone();
        all.sort();
        assert_eq!(walked(), all);
        // Removed down to the ten: the tables shrink, what is left is still found.
        for id in &ids[10..] {
            assert!(matches!(
                r.remove_client(id, me, 40),
                WriteResult::Deleted(_)
            ));
        }
        assert_eq!(r.stats().clients, 10);
        assert_eq!(r.shard_clients(0).len() + r.shard_clients(1).len(), 10);
        let mut first = ids[..10].to_vec();
        first.sort();
        assert_eq!(walked(), first);
        assert!(capacity() < 100, "{}", capacity());
        for (i, id) in ids.iter().enumerate().skip(10) {
            assert_eq!(weight(i), None, "{id}");
            assert!(r.tombstone(id.as_str()).is_some());
        }
        // Back again (over their tombstones).
        for i in 10..1_000 {
            put(i, 4, 50);
        }
    });
    for i in 10..1_000 {
        assert_eq!(weight(i), Some(4.0), "{i}");
    }
    assert_eq!(r.stats().clients, 1_000);
    assert_eq!(r.owner_count(me), 1_000);
    assert_eq!(walked().len(), 1_000);
}

/// A listener hears of every local write that changes a service's publications (a
/// write skips the call only when nothing was collected for a listener), and of nothing
/// when a write changes nothing.
#[test]
fn a_listener_hears_of_every_local_change_and_only_of_those() {
    struct Count(std::sync::atomic::AtomicUsize);
    impl ChangeListener for Count {
        fn services_changed(&self, services: &[Service]) {
            for s in services {
                assert_eq!(s.name().as_str(), "svc");
                self.0.fetch_add(1, Relaxed);
            }
        }
    }
    let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
    let heard = Arc::new(Count(Default::default()));
    let me = MemberId(0);
    let id = ClientId::ip_port("10.0.0.1", 80);
    let p = publication(&r, "svc", "10.0.0.1", 80);
    // Before a listener is added nothing is collected; after, every change is heard.
    r.publish(&id, p.clone(), me, 1).unwrap();
    r.add_listener(heard.clone());
    let count = || heard.0.load(Relaxed);
    assert_eq!(count(), 0);
    let mut changed = p.clone();
    changed.instances[0].weight = 2.0;
    assert!(matches!(
        r.publish(&id, changed.clone(), me, 2).unwrap(),
        WriteResult::Changed(_)
    ));
    assert_eq!(count(), 1);
    // The same publication again: unchanged, nothing heard.
    assert_eq!(
        r.publish(&id, changed, me, 3).unwrap(),
        WriteResult::Unchanged
    );
    assert_eq!(count(), 1);
    let svc = p.service;
    assert!(matches!(
        r.unpublish(&id, &svc, me, 4, Origin::Client),
        WriteResult::Deleted(_)
    ));
    assert_eq!(count(), 2);
}

/// A shard writer places a write by its last lookup's hash only when the write is of the
/// id it looked up: one with no lookup before it, or after a lookup of another id, is
/// placed by its own id's hash (found where it was put, its old state let go of).
#[test]
fn a_write_is_placed_by_its_own_ids_hash_whatever_was_looked_up_before() {
    let r = Registry::new(
        MemberId(0),
        3,
        1_000,
        &Config {
            shards: 1,
            ..Config::default()
        },
    );
    let ids: Vec<ClientId> = (1..=2)
        .map(|i| ClientId::ip_port(&format!("10.2.0.{i}"), 80))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let ip = format!("10.2.0.{}", i + 1);
        r.publish(id, publication(&r, "svc", &ip, 80), MemberId(0), 10)
            .unwrap();
    }
    let (a, b) = (
        r.get(ids[0].as_str()).unwrap(),
        r.get(ids[1].as_str()).unwrap(),
    );
    // No lookup, a lookup of the other id, a lookup of the same id.
    for look in [None, Some(&a), Some(&b)] {
        let pin = r.pin();
        let mut lock = r.shards[0].write();
        let (_, mut w) = r.writer(&mut lock, &pin);
        if let Some(c) = look {
            let id = c.id();
            let key = IdKey::new(id.as_str());
            assert!(w.get_key(key).is_some_and(|f| Arc::ptr_eq(&f, c)));
        }
        let let_go = w.swap(Some(&b), Some(b.clone())).expect("b was held");
        assert!(Arc::ptr_eq(&let_go, &b));
        let_go.retire();
        drop(lock);
        for c in [&a, &b] {
            let found = r.get(c.id().as_str()).expect("held");
            assert!(Arc::ptr_eq(&found, c));
        }
    }
}
