//! Unit tests of the registry: writes and queries, replicated writes against
//! tombstones and drop markers, re-attribution, limits, the empty-service collector, and
//! concurrent writers keeping the index and digests consistent (the write hints' tests
//! are in `hint_tests.rs`).

use super::*;
use crate::model::{InstanceSpec, Publication};

fn cfg(shards: u32, max_services: usize) -> Config {
    Config {
        shards,
        max_services_per_client: max_services,
        ..Config::default()
    }
}

pub(super) fn reg() -> Registry {
    Registry::new(MemberId(0), 3, 1_000, &cfg(16, 100))
}

/// [`reg`] whose writes ask for their memory ahead from `from` clients held
/// (`Config::prefetch_from`).
pub(super) fn reg_prefetching(from: usize) -> Registry {
    let config = Config {
        prefetch_from: from,
        ..cfg(16, 100)
    };
    Registry::new(MemberId(0), 3, 1_000, &config)
}

pub(super) fn publication(r: &Registry, svc: &str, ip: &str, port: u16) -> Publication {
    let s = r.service("public", "DEFAULT_GROUP", svc);
    let i = InstanceSpec::new(ip, port)
        .to_instance(r.interner(), &s)
        .unwrap();
    Publication::single(s, i)
}

#[test]
fn publish_query_unpublish() {
    let r = reg();
    let me = MemberId(0);
    let id = ClientId::ip_port("10.0.0.1", 80);
    let p = publication(&r, "a", "10.0.0.1", 80);
    let WriteResult::Changed(rev1) = r.publish(&id, p.clone(), me, 10).unwrap() else {
        panic!()
    };
    assert_eq!(r.publish(&id, p, me, 11).unwrap(), WriteResult::Unchanged);
    let v = r.query("public", "DEFAULT_GROUP", "a").unwrap();
    assert_eq!(v.instance_count(), 1);
    assert_eq!(r.stats().clients, 1);
    assert_eq!(r.owner_count(me), 1);
    let svc = v.service;
    let WriteResult::Deleted(rev2) = r.unpublish(&id, &svc, me, 12, Origin::Client) else {
        panic!()
    };
    assert!(rev2 > rev1);
    assert_eq!(
        r.query("public", "DEFAULT_GROUP", "a")
            .unwrap()
            .instance_count(),
        0
    );
    assert_eq!(
        r.stats(),
        RegistryStats {
            clients: 0,
            instances: 0,
            services: 1,
            tombstones: 1
        }
    );
    assert_eq!(r.owner_count(me), 0);
    // Re-registration gets a revision above the tombstone.
    let WriteResult::Changed(rev3) = r
        .publish(&id, publication(&r, "a", "10.0.0.1", 80), me, 13)
        .unwrap()
    else {
        panic!()
    };
    assert!(rev3 > rev2);
    // The store removed the tombstone (only an absent client with one removes it).
    assert_eq!((r.tombstone(id.as_str()), r.stats().tombstones), (None, 0));
}

/// An owner `a` (member 0) that wrote client `id` twice (`rec1`, then `rec2`), and an
/// empty replica `b` (member 1).
fn owner_and_replica() -> (Registry, Registry, ClientId, ClientRecord, ClientRecord) {
    let a = reg();
    let b = Registry::new(MemberId(1), 3, 1_000, &cfg(16, 100));
    let id = ClientId::ip_port("10.0.0.1", 80);
    a.publish(&id, publication(&a, "a", "10.0.0.1", 80), MemberId(0), 1)
        .unwrap();
    let rec1 = a.get(id.as_str()).unwrap().to_record();
    a.publish(&id, publication(&a, "a", "10.0.0.1", 81), MemberId(0), 2)
        .unwrap();
    let rec2 = a.get(id.as_str()).unwrap().to_record();
    (a, b, id, rec1, rec2)
}

#[test]
fn apply_only_newer_and_tombstones_block_older() {
    let (a, b, id, rec1, rec2) = owner_and_replica();
    assert_eq!(b.apply(&rec2, MemberId(0), 3), ApplyOutcome::Applied);
    assert_eq!(b.apply(&rec1, MemberId(0), 4), ApplyOutcome::Stale);
    assert_eq!(b.apply(&rec2, MemberId(0), 4), ApplyOutcome::Stale);
    assert_eq!(
        b.digest(MemberId(0), b.shard_of(&id)),
        a.digest(MemberId(0), a.shard_of(&id))
    );
    let WriteResult::Deleted(del) = a.remove_client(&id, MemberId(0), 5) else {
        panic!()
    };
    assert_eq!(b.apply_delete(&id, del, 6), ApplyOutcome::Applied);
    assert_eq!(
        b.apply(&rec2, MemberId(0), 7),
        ApplyOutcome::Stale,
        "tombstone blocks"
    );
    assert!(b.get(id.as_str()).is_none());
    assert_eq!(
        b.collect_tombstones(6 + crate::config::DEFAULT_TOMBSTONE_TTL + 1),
        1
    );
}

/// A dropped replica leaves a marker: a delayed sync of the dropped revision (or an
/// older one) cannot bring it back, a newer state can, the marker is not a deletion
/// (never sent as one), and clearing it (the owner lists that revision) lets the
/// owner's repair through.
#[test]
fn a_dropped_replica_is_not_brought_back_by_a_delayed_sync() {
    let (a, b, id, rec1, rec2) = owner_and_replica();
    assert_eq!(b.apply(&rec2, MemberId(0), 3), ApplyOutcome::Applied);
    assert!(
        !b.drop_replica(&id, rec1.revision, 4),
        "only the held revision"
    );
    assert!(b.drop_replica(&id, rec2.revision, 4));
    assert!(b.get(id.as_str()).is_none());
    assert_eq!(b.tombstone(id.as_str()), None, "a marker is not a deletion");
    assert_eq!(b.apply(&rec2, MemberId(0), 5), ApplyOutcome::Stale);
    assert_eq!(b.apply(&rec1, MemberId(0), 5), ApplyOutcome::Stale);
    assert!(!b.clear_drop_marker(id.as_str(), rec1.revision));
    assert!(b.clear_drop_marker(id.as_str(), rec2.revision));
    assert_eq!(b.apply(&rec2, MemberId(0), 6), ApplyOutcome::Applied);
    // A newer state passes a marker without clearing it.
    assert!(b.drop_replica(&id, rec2.revision, 7));
    a.publish(&id, publication(&a, "a", "10.0.0.1", 82), MemberId(0), 8)
        .unwrap();
    let rec3 = a.get(id.as_str()).unwrap().to_record();
    assert_eq!(b.apply(&rec3, MemberId(0), 9), ApplyOutcome::Applied);
}

#[test]
fn set_owner_moves_digests() {
    let r = reg();
    let id = ClientId::ip_port("10.0.0.1", 80);
    r.publish(&id, publication(&r, "a", "10.0.0.1", 80), MemberId(0), 1)
        .unwrap();
    assert!(r.set_owner(&id, MemberId(2)));
    assert_eq!(r.owner_count(MemberId(0)), 0);
    assert_eq!(r.owner_count(MemberId(2)), 1);
    assert!(!r.set_owner(&id, MemberId(2)));
}

#[test]
fn service_limit_per_client() {
    let r = Registry::new(MemberId(0), 1, 0, &cfg(4, 2));
    let id = ClientId::parse("c1").unwrap();
    r.publish(&id, publication(&r, "a", "10.0.0.1", 80), MemberId(0), 1)
        .unwrap();
    r.publish(&id, publication(&r, "b", "10.0.0.1", 80), MemberId(0), 1)
        .unwrap();
    let e = r
        .publish(&id, publication(&r, "c", "10.0.0.1", 80), MemberId(0), 1)
        .unwrap_err();
    assert!(e.to_string().contains("limit is 2"), "{e}");
}

#[test]
fn client_limit_per_node_counts_owned_clients_only() {
    let config = Config {
        shards: 4,
        max_clients: 2,
        ..Config::default()
    };
    let r = Registry::new(MemberId(0), 2, 0, &config);
    let a = ClientId::ip_port("10.0.0.1", 80);
    let b = ClientId::ip_port("10.0.0.2", 80);
    let c = ClientId::ip_port("10.0.0.3", 80);
    r.publish(&a, publication(&r, "s", "10.0.0.1", 80), MemberId(0), 1)
        .unwrap();
    r.publish(&b, publication(&r, "s", "10.0.0.2", 80), MemberId(0), 1)
        .unwrap();
    // A held client may still add services.
    r.publish(&a, publication(&r, "t", "10.0.0.1", 80), MemberId(0), 1)
        .unwrap();
    let e = r
        .publish(&c, publication(&r, "s", "10.0.0.3", 80), MemberId(0), 1)
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("the limit is 2 (max_clients)"), "{msg}");
    assert!(r.get(c.as_str()).is_none());
    // A replica of another owner's client is never refused and does not count.
    let other = Registry::new(MemberId(1), 2, 0, &Config::default());
    other
        .publish(&c, publication(&other, "s", "10.0.0.3", 80), MemberId(1), 1)
        .unwrap();
    let rec = other.get(c.as_str()).unwrap().to_record();
    assert_eq!(r.apply(&rec, MemberId(1), 2), ApplyOutcome::Applied);
    assert_eq!(r.owner_count(MemberId(0)), 2);
    // A deregistration frees room.
    r.remove_client(&b, MemberId(0), 3);
    let d = ClientId::ip_port("10.0.0.4", 80);
    r.publish(&d, publication(&r, "s", "10.0.0.4", 80), MemberId(0), 4)
        .unwrap();
}

#[test]
fn service_limit_per_namespace() {
    let config = Config {
        shards: 4,
        max_services_per_namespace: 2,
        ..Config::default()
    };
    let r = Registry::new(MemberId(0), 2, 0, &config);
    let a = ClientId::ip_port("10.0.0.1", 80);
    let b = ClientId::ip_port("10.0.0.2", 80);
    r.publish(&a, publication(&r, "s1", "10.0.0.1", 80), MemberId(0), 1)
        .unwrap();
    r.publish(&a, publication(&r, "s2", "10.0.0.1", 80), MemberId(0), 1)
        .unwrap();
    assert_eq!(r.namespace_service_count("public"), 2);
    assert_eq!(r.live_services.load(Relaxed), 2);
    // Another client joins an existing service: no new service, allowed.
    r.publish(&b, publication(&r, "s1", "10.0.0.2", 80), MemberId(0), 1)
        .unwrap();
    let e = r
        .publish(&b, publication(&r, "s3", "10.0.0.2", 80), MemberId(0), 1)
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("namespace public already holds 2 services, the limit is 2"),
        "{msg}"
    );
    // Another namespace has its own count.
    let s = r.service("other", "DEFAULT_GROUP", "s3");
    let i = InstanceSpec::new("10.0.0.2", 80)
        .to_instance(r.interner(), &s)
        .unwrap();
    r.publish(&b, Publication::single(s, i), MemberId(0), 1)
        .unwrap();
    // A replica never refuses a sync from the owner, even past the limit.
    let other = Registry::new(MemberId(1), 2, 0, &Config::default());
    let c = ClientId::ip_port("10.0.0.3", 80);
    other
        .publish(
            &c,
            publication(&other, "s9", "10.0.0.3", 80),
            MemberId(1),
            1,
        )
        .unwrap();
    let rec = other.get(c.as_str()).unwrap().to_record();
    assert_eq!(r.apply(&rec, MemberId(1), 2), ApplyOutcome::Applied);
    assert_eq!(r.namespace_service_count("public"), 3);
    // Emptying services frees room: s2 (only a) and s9 (the replica) go away.
    let s2 = r.service("public", "DEFAULT_GROUP", "s2");
    r.unpublish(&a, &s2, MemberId(0), 3, Origin::Client);
    assert_eq!(r.namespace_service_count("public"), 2);
    assert!(
        r.publish(&b, publication(&r, "s3", "10.0.0.2", 80), MemberId(0), 4)
            .is_err()
    );
    r.drop_replica(&c, rec.revision, 5);
    assert_eq!(r.namespace_service_count("public"), 1);
    // The count in all namespaces follows: public's one and other's one.
    assert_eq!(r.live_services.load(Relaxed), 2);
    r.publish(&b, publication(&r, "s3", "10.0.0.2", 80), MemberId(0), 6)
        .unwrap();
    assert_eq!(r.namespace_service_count("public"), 2);
}

#[test]
fn empty_services_are_collected_after_a_while() {
    let r = reg();
    let _ = r.service("public", "DEFAULT_GROUP", "ghost");
    assert_eq!(r.collect_empty_services(1_000, 60_000), 0);
    assert_eq!(r.collect_empty_services(2_000, 60_000), 0);
    assert_eq!(r.collect_empty_services(62_000, 60_000), 1);
    assert!(r.query("public", "DEFAULT_GROUP", "ghost").is_none());
    // A later publication recreates it.
    let id = ClientId::ip_port("10.0.0.1", 80);
    r.publish(
        &id,
        publication(&r, "ghost", "10.0.0.1", 80),
        MemberId(0),
        1,
    )
    .unwrap();
    assert_eq!(
        r.query("public", "DEFAULT_GROUP", "ghost")
            .unwrap()
            .instance_count(),
        1
    );
}

#[test]
fn concurrent_writers_keep_index_and_digests_consistent() {
    let r = Arc::new(reg());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..500u16 {
                    let ip = format!("10.0.{t}.{}", i % 50);
                    let id = ClientId::ip_port(&ip, 1000 + i);
                    let p = publication(&r, &format!("s{}", i % 7), &ip, 1000 + i);
                    r.publish(&id, p, MemberId(0), u64::from(i)).unwrap();
                    if i % 3 == 0 {
                        r.remove_client(&id, MemberId(0), u64::from(i));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = r.stats();
    let mut via_services = 0;
    for s in r.services("public", None) {
        via_services += r
            .query("public", "DEFAULT_GROUP", s.name())
            .unwrap()
            .instance_count();
    }
    assert_eq!(stats.instances, via_services);
    assert_eq!(stats.clients as u64, r.owner_count(MemberId(0)));
    assert_eq!(stats.clients, 4 * (500 - 167));
    assert_eq!(r.namespace_service_count("public"), 7);
}

/// `threads` threads each registering `per_thread` clients (`10.<net>.<thread>.<i % hosts>`,
/// port 1000 + i) into the services `<prefix>0..<prefix><services>` in turn, each client
/// removed again at once unless `keep(i)`; returns once all are done.
fn churn(
    r: &Arc<Registry>,
    threads: u16,
    per_thread: u16,
    (net, hosts): (u16, u16),
    (prefix, services): (&'static str, u16),
    keep: fn(u16) -> bool,
) {
    let threads: Vec<_> = (0..threads)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let ip = format!("10.{net}.{t}.{}", i % hosts);
                    let id = ClientId::ip_port(&ip, 1000 + i);
                    let svc = format!("{prefix}{}", i % services);
                    let p = publication(&r, &svc, &ip, 1000 + i);
                    r.publish(&id, p, MemberId(0), u64::from(i)).unwrap();
                    if !keep(i) {
                        r.remove_client(&id, MemberId(0), u64::from(i));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Services filling and emptying concurrently (clients of four threads joining and
/// leaving the same five services) leave the per-namespace count exact.
#[test]
fn concurrent_fills_and_empties_keep_the_namespace_count_exact() {
    let r = Arc::new(reg());
    churn(&r, 4, 2_000, (3, 200), ("x", 5), |_| false);
    assert_eq!(r.stats().clients, 0);
    assert_eq!(r.namespace_service_count("public"), 0);
    let id = ClientId::ip_port("10.3.9.9", 1);
    r.publish(&id, publication(&r, "x0", "10.3.9.9", 1), MemberId(0), 1)
        .unwrap();
    assert_eq!(r.namespace_service_count("public"), 1);
}

/// Services filling and emptying while the collector retires the empty ones as fast as
/// it can (no minimum age): a writer taking a new slot never lands in a retired index
/// (its client would be held but no query would find it), and the counts stay exact.
/// The collector retires under the index's free-list lock and `retired`; a writer taking
/// a slot holds only the free list's.
#[test]
fn writers_racing_the_empty_service_collector_never_land_in_a_retired_index() {
    let r = Arc::new(reg());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (r, stop) = (r.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut now = 1;
            let mut removed = 0;
            while !stop.load(Relaxed) {
                removed += r.collect_empty_services(now, 0);
                now += 1;
            }
            removed
        })
    };
    // Most leave again at once: their services empty and refill all along.
    churn(&r, 3, 3_000, (4, 250), ("y", 4), |i| i % 10 == 0);
    stop.store(true, Relaxed);
    let removed = collector.join().unwrap();
    let stats = r.stats();
    assert_eq!(stats.clients, 3 * 300);
    let mut via_services = 0;
    let mut held = 0;
    for s in r.services("public", None) {
        let n = r
            .query("public", "DEFAULT_GROUP", s.name())
            .map_or(0, |v| v.instance_count());
        via_services += n;
        held += usize::from(n > 0);
    }
    assert_eq!(
        stats.instances, via_services,
        "every held instance is found by a query ({removed} indexes retired on the way)"
    );
    // The clients kept (every tenth, an even `i`) are in y0 and y2.
    assert_eq!(held, 2);
    assert_eq!(r.namespace_service_count("public"), 2);
}

#[test]
fn a_borrowed_state_stores_a_new_clients_id_and_keeps_a_held_ones() {
    let r = reg();
    // A connection client's id: longer than an inline id (24 bytes), so it is stored
    // as a shared string whose address shows whether it was kept (an ip:port id is held
    // inline in the client and copied with it).
    let text = String::from("1700000000000_10.0.0.1_80");
    let pubs = [Arc::new(publication(&r, "a", "10.0.0.1", 80))];
    let state = |revision| StateRef {
        id: &text,
        revision: Revision(revision),
        owner: MemberId(1),
        publications: &pubs,
    };
    assert_eq!(
        r.apply_state(state(5), MemberId(1), 1),
        ApplyOutcome::Applied
    );
    let stored = r.get(&text).unwrap().id().as_str().as_ptr();
    assert_ne!(stored, text.as_ptr(), "a new client's id is stored");
    assert_eq!(
        r.apply_state(state(6), MemberId(1), 1),
        ApplyOutcome::Applied
    );
    let held = r.get(&text).unwrap();
    assert_eq!(held.revision(), Revision(6));
    assert_eq!(
        held.id().as_str().as_ptr(),
        stored,
        "a held client keeps its id"
    );
    assert_eq!(r.apply_state(state(6), MemberId(1), 1), ApplyOutcome::Stale);
    let delete = [ReplicaChange::Delete(&text, Revision(7))];
    assert_eq!(r.apply_many(delete, 2).applied, 1);
    assert!(r.get(&text).is_none());
    assert_eq!(r.apply_state(state(7), MemberId(1), 3), ApplyOutcome::Stale);
    assert_eq!(
        r.apply_state(state(8), MemberId(1), 3),
        ApplyOutcome::Applied
    );
}

/// After a burst of 20,000 services registered and deregistered, once the tombstones and
/// the empty services expired, neither the tombstone tables nor the interner's tables are
/// sized for the burst any more.
#[test]
fn tables_shrink_after_a_burst_expired() {
    let r = reg();
    let me = MemberId(0);
    let n = 20_000u32;
    let ids: Vec<ClientId> = (0..n)
        .map(|k| ClientId::ip_port(&format!("10.1.{}.{}", k / 250, k % 250), 80))
        .collect();
    for (k, id) in ids.iter().enumerate() {
        let p = publication(
            &r,
            &format!("burst-{k}"),
            id.as_str().split(':').next().unwrap(),
            80,
        );
        r.publish(id, p, me, 10).unwrap();
    }
    assert_eq!(r.reclaim_names(), 0);
    for (k, id) in ids.iter().enumerate() {
        let svc = r.service("public", "DEFAULT_GROUP", &format!("burst-{k}"));
        assert!(matches!(
            r.unpublish(id, &svc, me, 20, Origin::Client),
            WriteResult::Deleted(_)
        ));
    }
    assert!(r.tombstone_capacity() >= n as usize);
    let later = 20 + crate::config::DEFAULT_TOMBSTONE_TTL + 1;
    assert_eq!(r.collect_tombstones(later), n as usize);
    assert!(
        r.tombstone_capacity() < 16 * 64,
        "tombstone tables still have room for {}",
        r.tombstone_capacity()
    );
    assert_eq!(r.collect_empty_services(later, 0), 0, "first seen empty");
    let names_capacity = r.interner().capacity();
    assert!(names_capacity >= n as usize);
    assert_eq!(r.collect_empty_services(later + 1, 0), n as usize);
    // What this thread's reclamation batches still hold (up to `reclaim_batch` old client
    // versions per shard map) is freed as the node does before it gives memory back.
    r.flush_retired();
    r.reclaim_names();
    let left = r.interner().len();
    assert!(left < 100, "{left} names left");
    assert!(
        r.interner().capacity() <= names_capacity / 8,
        "the interner has room for {} names (was {names_capacity})",
        r.interner().capacity()
    );
}

/// The ports each of `services` shows for the client's instances (one per service).
fn ports(r: &Registry, services: &[String]) -> Vec<Vec<u16>> {
    let all = QueryFilter {
        clusters: &[],
        healthy_only: false,
        enabled_only: false,
    };
    services
        .iter()
        .map(|s| {
            r.query("public", "DEFAULT_GROUP", s)
                .map(|v| v.instances(all).map(|i| i.port).collect())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn a_client_of_many_services_changing_one_keeps_the_others_slots_and_beats() {
    let r = reg();
    let me = MemberId(0);
    let id = ClientId::connection(1_700_000_000_000, "10.0.0.1", 5000);
    let names: Vec<String> = (0..20).map(|i| format!("svc-{i:02}")).collect();
    for (t, n) in names.iter().enumerate() {
        r.publish(&id, publication(&r, n, "10.0.0.1", 80), me, 100 + t as u64)
            .unwrap();
    }
    let beats = |r: &Registry| {
        let c = r.get(id.as_str()).unwrap();
        (0..c.publications().len())
            .map(|i| c.last_beat(i))
            .collect::<Vec<_>>()
    };
    let before = beats(&r);
    assert_eq!(before, (100..120).collect::<Vec<_>>());
    assert_eq!(ports(&r, &names), vec![vec![80]; 20]);
    // Change one in the middle: only it moves; every other publication keeps its beat
    // time and stays in its service's index.
    r.publish(&id, publication(&r, &names[7], "10.0.0.1", 81), me, 500)
        .unwrap();
    let mut want = vec![vec![80]; 20];
    want[7] = vec![81];
    assert_eq!(ports(&r, &names), want);
    assert_eq!(
        beats(&r),
        before,
        "a changed publication keeps its beat too"
    );
    // Drop the first and the last, add one between two others.
    let svc = |i: usize| r.service("public", "DEFAULT_GROUP", &names[i]);
    r.unpublish(&id, &svc(0), me, 600, Origin::Client);
    r.unpublish(&id, &svc(19), me, 601, Origin::Client);
    let extra = "svc-07a".to_owned();
    r.publish(&id, publication(&r, &extra, "10.0.0.1", 90), me, 700)
        .unwrap();
    want[0] = vec![];
    want[19] = vec![];
    assert_eq!(ports(&r, &names), want);
    assert_eq!(ports(&r, std::slice::from_ref(&extra)), vec![vec![90]]);
    let mut kept: Vec<u64> = before[1..19].to_vec();
    kept.insert(7, 700);
    assert_eq!(beats(&r), kept);
    assert_eq!(r.stats().instances, 19);
}

/// The stored layout: a client with one publication is one 112-byte allocation (128
/// with its reference counts, mimalloc's 128-byte class) holding its publication, and an
/// ip:port id it derives from its instance is not stored (it was an 80-byte client, 96
/// in its class, with its id inline, plus the publication's own 80-byte allocation); a
/// shard's table holds a 16-byte slot per client (its hash and its pointer, pinned in
/// `arc-slots`) and lends a reader the pointer alone; see `results/memory.md`. Pinned so
/// that a field added by accident shows here.
#[test]
fn stored_layout_is_compact() {
    use std::mem::size_of;
    assert_eq!(size_of::<ClientId>(), 24);
    assert_eq!(size_of::<Published>(), 72);
    assert_eq!(size_of::<client::Body>(), 72);
    assert_eq!(size_of::<Client>(), 112);
    assert_eq!(size_of::<ClientRef<'_>>(), 8);
    // A publication of one instance: 64 bytes, inline in its client (the 112 above).
    assert_eq!(size_of::<Name>(), 8);
    assert_eq!(size_of::<crate::model::SmallStr>(), 16);
    assert_eq!(size_of::<crate::model::Instance>(), 56);
    assert_eq!(size_of::<crate::model::Instances>(), 56);
    assert_eq!(size_of::<Publication>(), 64);
    // ip:port ids of up to 24 bytes are inline; longer ones (and most connection ids)
    // are shared strings.
    assert!(ClientId::ip_port("10.0.0.1", 8080).is_inline());
    assert!(ClientId::ip_port("192.168.100.10", 8080).is_inline());
    assert!(!ClientId::ip_port("192.168.100.100", 65535).is_inline());
    assert!(!ClientId::connection(1_700_000_000_000, "10.0.0.1", 50_000).is_inline());
    for id in [
        ClientId::ip_port("192.168.100.100", 65535),
        ClientId::ip_port("10.0.0.1", 8080),
        ClientId::parse("1700000000000_10.0.0.1_50000").unwrap(),
    ] {
        assert_eq!(ClientId::parse(id.as_str()).unwrap(), id);
        assert_eq!(id.as_str().len() <= 24, id.is_inline(), "{id}");
    }
}

/// A change replaces the stored client (the table swaps the pointer in its slot), and
/// lookups find the new one.
#[test]
fn a_change_replaces_the_stored_client() {
    let r = reg();
    let me = MemberId(0);
    let id = ClientId::ip_port("10.0.0.1", 80);
    let WriteResult::Changed(first) = r
        .publish(&id, publication(&r, "a", "10.0.0.1", 80), me, 10)
        .unwrap()
    else {
        panic!()
    };
    let mut p = publication(&r, "a", "10.0.0.1", 80);
    if let crate::model::Instances::One(i) = &mut p.instances {
        i.weight = 2.0;
    }
    let WriteResult::Changed(second) = r.publish(&id, p, me, 11).unwrap() else {
        panic!()
    };
    assert!(second > first);
    let held = r.get(id.as_str()).unwrap();
    assert_eq!(held.revision(), second);
    assert_eq!(held.publications()[0].instances[0].weight, 2.0);
    let mut seen = Vec::new();
    r.for_each(|c| seen.push((c.id(), c.revision())));
    assert_eq!(seen, vec![(id, second)]);
    assert_eq!(r.stats().clients, 1);
}

/// A client's key picks the shard `hash::shard_of` names (shard counts of both kinds),
/// and finds the stored client through its shard's table.
#[test]
fn id_keys_pick_the_shard_of_the_stable_hash() {
    for shards in [1, 7, 16, 1000, 1024] {
        for i in 0..200 {
            let id = format!("10.0.{}.{}:8080#true", i / 250, i % 250);
            let key = IdKey::new(&id);
            assert_eq!(
                shard_of_hash(key.hash, shards),
                crate::hash::shard_of(&id, shards),
                "{id} of {shards} shards"
            );
        }
    }
    let r = Registry::new(MemberId(0), 3, 1, &Config::default());
    let id = ClientId::parse("10.0.0.7:8080#true").unwrap();
    assert!(r.get(id.as_str()).is_none());
    let service = r.service("public", "DEFAULT_GROUP", "svc");
    let inst = crate::model::InstanceSpec::new("10.0.0.7", 8080)
        .to_instance(r.interner(), &service)
        .unwrap();
    r.publish(&id, Publication::single(service, inst), MemberId(0), 5)
        .unwrap();
    let c = r.get(id.as_str()).expect("stored");
    assert_eq!(c.id_hash, IdKey::new(id.as_str()).hash);
    assert_eq!(c.shard(), r.shard_of(&id));
}

/// A service caches its index: a retired index (emptied and collected, still held by the
/// collector's batch) is not written to, and a service shared with another registry of
/// the process (the simulator's nodes) finds that registry's own index.
#[test]
fn a_service_writes_to_its_registrys_live_index() {
    let r = Registry::new(MemberId(0), 3, 1, &Config::default());
    let other = Registry::new(MemberId(1), 3, 1, &Config::default());
    let id = ClientId::parse("10.0.0.7:8080#true").unwrap();
    let service = r.service("public", "DEFAULT_GROUP", "svc");
    let inst = InstanceSpec::new("10.0.0.7", 8080)
        .to_instance(r.interner(), &service)
        .unwrap();
    let p = Publication::single(service, inst);
    let count = |r: &Registry| {
        r.query("public", "DEFAULT_GROUP", "svc")
            .map(|v| v.publications.len())
    };
    r.publish(&id, p.clone(), MemberId(0), 5).unwrap();
    other.publish(&id, p.clone(), MemberId(1), 5).unwrap();
    assert_eq!((count(&r), count(&other)), (Some(1), Some(1)));
    other.remove_client(&id, MemberId(1), 6);
    assert_eq!((count(&r), count(&other)), (Some(1), Some(0)));
    // Emptied and collected (the first pass marks it, the second removes it).
    r.remove_client(&id, MemberId(0), 6);
    r.collect_empty_services(10, 0);
    assert_eq!(r.collect_empty_services(20, 0), 1);
    assert_eq!(count(&r), None);
    r.publish(&id, p.clone(), MemberId(0), 30).unwrap();
    assert_eq!(count(&r), Some(1));
    // A change in the slot the client holds goes to the live index, not to the retired
    // one the service still caches (held by the collector's batch).
    let mut changed = p;
    if let crate::model::Instances::One(i) = &mut changed.instances {
        i.weight = 7.0;
    }
    r.publish(&id, changed, MemberId(0), 31).unwrap();
    let view = r.query("public", "DEFAULT_GROUP", "svc").expect("live");
    let weights: Vec<f64> = view
        .instances(Default::default())
        .map(|i| i.weight)
        .collect();
    assert_eq!(weights, [7.0]);
    r.remove_client(&id, MemberId(0), 32);
    assert_eq!(count(&r), Some(0));
}

#[test]
fn resolve_service_answers_as_resolve_parts_checked_only_on_a_miss() {
    use crate::model::ServiceSpec;
    let r = reg();
    let long = "s".repeat(crate::limits::MAX_SERVICE_NAME_LEN + 1);
    let cases: [(&str, &str, &str); 8] = [
        ("", "", "svc"),
        ("public", "DEFAULT_GROUP", "svc"),
        ("ns", "", "g@@svc"),
        ("ns", "g", "g@@svc"),
        ("ns", "other", "g@@svc"),
        ("ns", "g", "bad\u{1}name"),
        ("ns", "g", &long),
        ("ns", "g@@x", "svc"),
    ];
    // Twice: first every name is new (checked), then the valid ones are held (looked up).
    for round in 0..2 {
        for (ns, group, name) in cases {
            let want = ServiceSpec::resolve_parts(ns, group, name)
                .map(|(ns, group, name)| r.service(ns, group, name));
            let got = r.resolve_service(ns, group, name);
            assert_eq!(got, want, "round {round}: {ns:?} {group:?} {name:?}");
            if let Ok(s) = got {
                // The registry's canonical service (the one its index names), not a copy.
                let held = r
                    .find_service(
                        s.namespace().as_str(),
                        s.group().as_str(),
                        s.name().as_str(),
                    )
                    .unwrap();
                assert_eq!(held.key().as_str().as_ptr(), s.key().as_str().as_ptr());
            }
        }
    }
    assert!(r.find_service("ns", "g", "bad\u{1}name").is_none());
}

/// A client stores its id only when its first instance does not imply it: an ip:port id
/// of its instance is derived (and found, compared and written out as the text), an
/// ip:port id of another address, a connection id and a long IPv6 id are stored. Each
/// is found by its id, not by another's, and replicates with its id.
#[test]
fn ids_are_derived_only_from_their_own_instance() {
    let r = reg();
    let me = MemberId(0);
    let cases = [
        (ClientId::ip_port("10.0.0.1", 80), "10.0.0.1", 80, true),
        (ClientId::ip_port("10.0.0.1", 81), "10.0.0.2", 81, false),
        (
            ClientId::parse("1700000000000_10.0.0.3_5").unwrap(),
            "10.0.0.3",
            5,
            false,
        ),
        (
            ClientId::ip_port("fe80::10:20:30:40", 65535),
            "fe80::10:20:30:40",
            65535,
            false,
        ),
        (ClientId::ip_port("h", 7), "h", 7, true),
    ];
    for (k, (id, ip, port, derived)) in cases.iter().enumerate() {
        let p = publication(&r, &format!("s{k}"), ip, *port);
        r.publish(id, p, me, 10).unwrap();
        let c = r.get(id.as_str()).expect("found by its id");
        assert_eq!(c.id_is_derived(), *derived, "{id}");
        assert_eq!(c.id(), *id);
        assert!(c.id_is(id.as_str()));
        assert_eq!(c.kind(), id.kind(), "{id}");
        assert_eq!(c.to_record().id, *id);
    }
    // The derived id of 10.0.0.2:81 is not the stored client's id.
    assert!(r.get(ClientId::ip_port("10.0.0.2", 81).as_str()).is_none());
    assert_eq!(r.stats().clients, cases.len());
    // A replica holds the same ids.
    let replica = reg();
    r.for_each(|c| {
        assert_eq!(replica.apply(&c.to_record(), me, 20), ApplyOutcome::Applied);
    });
    for (id, ..) in &cases {
        assert_eq!(replica.get(id.as_str()).unwrap().id(), *id);
    }
}

/// A client of several publications holds each in a part the service's index points at:
/// a change of one publication replaces its part and slot only (the other parts are the
/// same pointers), queries see each publication, and going back to one publication
/// holds it inline again.
#[test]
fn a_client_of_several_publications_moves_one_slot_per_change() {
    let r = reg();
    let me = MemberId(0);
    let id = ClientId::ip_port("10.0.0.9", 90);
    for svc in ["a", "b", "c"] {
        r.publish(&id, publication(&r, svc, "10.0.0.9", 90), me, 10)
            .unwrap();
    }
    let before = r.get(id.as_str()).unwrap();
    assert!(before.id_is_derived());
    let view = |svc: &str| r.query("public", "DEFAULT_GROUP", svc).unwrap();
    let mut p = publication(&r, "b", "10.0.0.9", 90);
    if let crate::model::Instances::One(i) = &mut p.instances {
        i.weight = 3.0;
    }
    let (rev_a, rev_b) = (view("a").revision, view("b").revision);
    r.publish(&id, p, me, 11).unwrap();
    let after = r.get(id.as_str()).unwrap();
    let Body::Many(old_parts) = &before.body else {
        panic!("three publications are parts")
    };
    let Body::Many(new_parts) = &after.body else {
        panic!("three publications are parts")
    };
    assert!(Arc::ptr_eq(&old_parts[0], &new_parts[0]));
    assert!(!Arc::ptr_eq(&old_parts[1], &new_parts[1]));
    assert!(Arc::ptr_eq(&old_parts[2], &new_parts[2]));
    assert_eq!(view("a").revision, rev_a);
    assert!(view("b").revision > rev_b);
    assert_eq!(view("b").publications[0].instances[0].weight, 3.0);
    for svc in ["a", "c"] {
        assert_eq!(view(svc).publications.len(), 1);
        assert_eq!(view(svc).publications[0].instances[0].weight, 1.0);
    }
    // Back to one: inline, its slot kept, the other services' slots freed.
    for svc in ["a", "c"] {
        let s = r.service("public", "DEFAULT_GROUP", svc);
        r.unpublish(&id, &s, me, 12, Origin::Client);
        assert_eq!(view(svc).publications.len(), 0);
    }
    let one = r.get(id.as_str()).unwrap();
    assert!(matches!(one.body, Body::One(_)));
    assert_eq!(view("b").publications[0].instances[0].weight, 3.0);
    assert_eq!(r.stats().instances, 1);
}

/// A client whose id is derived from its instance and which then publishes first (by
/// service order) an instance of another address stores its id from then on (the id is
/// not that instance's), and derives it again once its first instance implies it.
#[test]
fn a_derived_id_is_stored_when_the_first_instance_no_longer_implies_it() {
    let r = reg();
    let me = MemberId(0);
    let id = ClientId::ip_port("10.0.0.5", 50);
    r.publish(&id, publication(&r, "m", "10.0.0.5", 50), me, 10)
        .unwrap();
    assert!(r.get(id.as_str()).unwrap().id_is_derived());
    // "a" sorts before "m": the first instance is 10.0.0.6:60's.
    r.publish(&id, publication(&r, "a", "10.0.0.6", 60), me, 11)
        .unwrap();
    let c = r.get(id.as_str()).expect("found by its id");
    assert!(!c.id_is_derived());
    assert_eq!(c.id(), id);
    assert!(r.get(ClientId::ip_port("10.0.0.6", 60).as_str()).is_none());
    let a = r.service("public", "DEFAULT_GROUP", "a");
    r.unpublish(&id, &a, me, 12, Origin::Client);
    let c = r.get(id.as_str()).expect("found by its id");
    assert!(c.id_is_derived());
    assert_eq!(c.id(), id);
    assert_eq!(r.stats().clients, 1);
}

/// The states of a client as the store lets go of them: replaced by a state of the same
/// service (the shard table's and the index slot's references to it retired once for
/// both), by one of two publications and back (each retired on its own), and deleted.
/// Once the retirements ran, nothing holds an old state but this test: every reference
/// the store held was released, none twice (the count would be off, or the state freed
/// under the test's own reference).
#[test]
fn replaced_states_are_released_by_the_table_and_the_index() {
    let config = Config {
        reclaim_batch: 1,
        ..cfg(4, 100)
    };
    let r = Registry::new(MemberId(0), 3, 1_000, &config);
    let me = MemberId(0);
    let id = ClientId::ip_port("10.0.0.1", 80);
    let weighted = |svc: &str, w: f64| {
        let mut p = publication(&r, svc, "10.0.0.1", 80);
        if let crate::model::Instances::One(inst) = &mut p.instances {
            inst.weight = w;
        }
        p
    };
    let mut held = Vec::new();
    for (now, svc, w) in [
        (10, "a", 1.0),
        (11, "a", 2.0),
        (12, "a", 3.0),
        (13, "b", 1.0),
    ] {
        r.publish(&id, weighted(svc, w), me, now).unwrap();
        held.push(r.get(id.as_str()).expect("stored"));
    }
    let b = r.find_service("public", "DEFAULT_GROUP", "b").unwrap();
    r.unpublish(&id, &b, me, 14, Origin::Client);
    held.push(r.get(id.as_str()).expect("stored"));
    r.publish(&id, weighted("a", 4.0), me, 15).unwrap();
    let newest = r.get(id.as_str()).expect("stored");
    assert_eq!(newest.publications()[0].instances[0].weight, 4.0);
    let view = r.query("public", "DEFAULT_GROUP", "a").unwrap();
    assert_eq!(view.instance_count(), 1);
    assert_eq!(view.publications[0].instances[0].weight, 4.0);
    drop(view);
    r.flush_retired();
    for (i, c) in held.iter().enumerate() {
        assert_eq!(Arc::strong_count(c), 1, "state {i} still held by the store");
    }
    // The newest: the test's, the table's and the index slot's.
    assert_eq!(Arc::strong_count(&newest), 3);
    let a = r.find_service("public", "DEFAULT_GROUP", "a").unwrap();
    r.unpublish(&id, &a, me, 16, Origin::Client);
    r.flush_retired();
    assert_eq!(Arc::strong_count(&newest), 1);
}
