//! Tests of the map of services: found by the parts of their names, and the live check
//! of a new service read from the index a service cached.

use super::super::tests::publication;
use super::*;
use crate::config::Config;
use crate::member::MemberId;
use crate::model::{ClientId, InstanceSpec};
use crate::registry::Origin;
use std::sync::Arc;

/// Parts of every length class `short_eq` tells apart (empty aside: a held part is never
/// empty), and parts that differ from a held one only where two parts meet.
#[test]
fn services_are_found_by_their_parts_across_resizes() {
    let r = Registry::new(MemberId(0), 3, 0, &Config::default());
    let word = |n: usize, k: usize| format!("{k:0>n$}");
    // The same service object (its key's text is not copied by a clone).
    let same = |a: &Service, b: &Service| a.key().as_str().as_ptr() == b.key().as_str().as_ptr();
    let mut held = Vec::new();
    // Enough services that the map grows several times: each lookup after a resize
    // hashes its parts as the moved keys were hashed (`ServiceKey`'s hash).
    for k in 0..2_000 {
        let ns = word([3, 6, 12][k % 3], k % 5);
        let group = word([2, 7, 16, 20][k % 4], k % 7);
        let name = word([1, 5, 9, 17, 33, 40][k % 6], k);
        let s = r.service(&ns, &group, &name);
        held.push((ns, group, name, s));
    }
    for (ns, group, name, s) in &held {
        let found = r.find_service(ns, group, name).expect("held");
        assert!(same(&found, s), "{s:?}");
        // The map's key is the index's service.
        let view = r.query(ns, group, name).expect("held");
        assert!(same(&view.service, s));
        // One byte moved from a part to the next, or changed: another service.
        let moved = |a: &str, b: &str| {
            (
                a[..a.len() - 1].to_string(),
                format!("{}{b}", &a[a.len() - 1..]),
            )
        };
        let (ns2, group2) = moved(ns, group);
        assert!(r.find_service(&ns2, &group2, name).is_none());
        let (group3, name3) = moved(group, name);
        assert!(r.find_service(ns, &group3, &name3).is_none());
        let mut other = name.clone().into_bytes();
        *other.last_mut().unwrap() ^= 0x40;
        let other = String::from_utf8(other).unwrap();
        assert!(r.find_service(ns, group, &other).is_none());
        assert!(r.find_service(group, ns, name).is_none() || ns == group);
    }
}

/// A new publication's service is live when its index (cached in the service) holds a
/// publication; a service whose cached index was retired is looked up: another index of
/// it may be live, and then it is no new service for the namespace's limit.
#[test]
fn the_live_check_reads_the_cached_index_or_the_live_one() {
    let config = Config {
        shards: 4,
        max_services_per_namespace: 1,
        ..Config::default()
    };
    let r = Registry::new(MemberId(0), 2, 0, &config);
    let (a, b, c) = (
        ClientId::ip_port("10.0.0.1", 80),
        ClientId::ip_port("10.0.0.2", 80),
        ClientId::ip_port("10.0.0.3", 80),
    );
    // The service the registry hands out caches its index (made, not published yet).
    let first = publication(&r, "s1", "10.0.0.1", 80);
    let old = first.service.clone();
    assert!(r.cached_index(&old).is_some());
    assert!(!r.service_is_live(&old));
    r.publish(&a, first, MemberId(0), 1).unwrap();
    assert!(r.service_is_live(&old));
    // Emptied and collected: `old` caches a retired index.
    r.unpublish(&a, &old, MemberId(0), 2, Origin::Client);
    r.collect_empty_services(10, 0);
    assert_eq!(r.collect_empty_services(20, 0), 1);
    assert!(r.live_index(&old).is_none());
    assert!(!r.service_is_live(&old));
    // Another client brings the service back, in a new index.
    r.publish(&b, publication(&r, "s1", "10.0.0.2", 80), MemberId(0), 3)
        .unwrap();
    assert!(r.live_index(&old).is_none());
    assert!(r.service_is_live(&old));
    // A publication naming the service by `old` joins a live service: no new service,
    // allowed at the namespace's limit; another service is refused.
    let inst = InstanceSpec::new("10.0.0.3", 80)
        .to_instance(r.interner(), &old)
        .unwrap();
    r.publish(&c, Publication::single(old, inst), MemberId(0), 4)
        .unwrap();
    assert_eq!(
        r.query("public", "DEFAULT_GROUP", "s1")
            .unwrap()
            .publications
            .len(),
        2
    );
    assert!(
        r.publish(&c, publication(&r, "s2", "10.0.0.3", 80), MemberId(0), 5)
            .is_err()
    );
}

/// A service resolved before it was collected (it caches the retired index) that brings
/// the service back makes a new index whose key caches that new index: the service the
/// registry hands out afterwards takes the fast path of a write (its cached index is
/// live), instead of every write of the service going through the map.
#[test]
fn a_service_brought_back_by_a_stale_service_caches_its_new_index() {
    let config = Config {
        shards: 4,
        ..Config::default()
    };
    let r = Registry::new(MemberId(0), 2, 0, &config);
    let (a, b) = (
        ClientId::ip_port("10.0.0.1", 80),
        ClientId::ip_port("10.0.0.2", 80),
    );
    let first = publication(&r, "s1", "10.0.0.1", 80);
    let old = first.service.clone();
    r.publish(&a, first, MemberId(0), 1).unwrap();
    // The retired index stays alive while something holds it.
    let retired = r.cached_index(&old).expect("cached");
    r.unpublish(&a, &old, MemberId(0), 2, Origin::Client);
    r.collect_empty_services(10, 0);
    assert_eq!(r.collect_empty_services(20, 0), 1);
    assert!(r.live_index(&old).is_none());
    // Brought back by a publication naming the service by `old`.
    let inst = InstanceSpec::new("10.0.0.2", 80)
        .to_instance(r.interner(), &old)
        .unwrap();
    r.publish(&b, Publication::single(old, inst), MemberId(0), 3)
        .unwrap();
    let found = r
        .find_service("public", "DEFAULT_GROUP", "s1")
        .expect("held");
    let live = r.live_index(&found).expect("the key caches its live index");
    assert!(!Arc::ptr_eq(&live, &retired));
    assert_eq!(
        r.query("public", "DEFAULT_GROUP", "s1")
            .unwrap()
            .publications
            .len(),
        1
    );
}

/// A resolver answers as `resolve_service`, errors included, for held names and for new
/// ones it stores while its pin is held (and finds them after, under the same pin).
#[test]
fn a_resolver_answers_as_resolve_service() {
    use crate::model::ServiceSpec;
    let r = Registry::new(MemberId(0), 3, 0, &Config::default());
    let cases: [(&str, &str, &str); 7] = [
        ("", "", "svc"),
        ("public", "DEFAULT_GROUP", "svc"),
        ("ns", "", "g@@svc"),
        ("ns", "g", "g@@svc"),
        ("ns", "other", "g@@svc"),
        ("ns", "g", "bad\u{1}name"),
        ("ns", "g@@x", "svc"),
    ];
    let resolver = r.service_resolver();
    for round in 0..2 {
        for (ns, group, name) in cases {
            let got = resolver.resolve(ns, group, name);
            let want = ServiceSpec::resolve_parts(ns, group, name)
                .map(|(ns, group, name)| r.service(ns, group, name));
            assert_eq!(got, want, "round {round}: {ns:?} {group:?} {name:?}");
            if let (Ok(got), Ok(want)) = (&got, &want) {
                // The registry's canonical service.
                assert_eq!(got.key().as_str().as_ptr(), want.key().as_str().as_ptr());
            }
        }
    }
    assert!(r.find_service("ns", "g", "bad\u{1}name").is_none());
}

/// A key is equivalent to exactly its own parts: each part compared (a change of any
/// one part, of its length or of one byte, tells them apart), and two keys are equal
/// when their parts are. A lookup could not catch a part left out of the comparison
/// unless two names' hashes met; this checks the comparison itself.
#[test]
fn a_key_is_equivalent_to_its_parts_and_only_to_them() {
    use papaya::Equivalent;
    let config = Config {
        shards: 4,
        ..Config::default()
    };
    let r = Registry::new(MemberId(0), 2, 0, &config);
    let held = ServiceKey(r.service("ns-a", "group-a", "name-a"));
    assert!(Parts("ns-a", "group-a", "name-a").equivalent(&held));
    for parts in [
        Parts("ns-b", "group-a", "name-a"),
        Parts("ns-a", "group-b", "name-a"),
        Parts("ns-a", "group-a", "name-b"),
        Parts("ns-a", "group-a", "name-a2"),
        Parts("", "group-a", "name-a"),
        Parts("ns-a", "group-aname-a", ""),
    ] {
        assert!(
            !parts.equivalent(&held),
            "{} / {} / {}",
            parts.0,
            parts.1,
            parts.2
        );
    }
    assert!(held == ServiceKey(r.service("ns-a", "group-a", "name-a")));
    assert!(held != ServiceKey(r.service("ns-a", "group-b", "name-a")));
    assert!(held != ServiceKey(r.service("ns-b", "group-a", "name-a")));
}

/// `find_service`'s per-thread memo answers only what the map would: the registry's key
/// of the parts asked for. A second lookup is the same service (from the memo); a service
/// the collector removed is not answered (its index is gone), and the service made for
/// the name next is the new key; another registry with the same names answers its own;
/// names that share a memo slot answer each their own.
#[test]
fn the_memo_of_found_services_answers_only_live_keys_of_its_registry() {
    // `r`'s lookup of `name` answers `s` itself.
    let finds = |r: &Registry, name: &str, s: &Service| {
        r.find_service("public", "DEFAULT_GROUP", name)
            .is_some_and(|f| f.same(s))
    };
    let r = Registry::new(MemberId(0), 3, 0, &Config::default());
    let other = Registry::new(MemberId(0), 3, 0, &Config::default());
    let s = r.service("public", "DEFAULT_GROUP", "memo");
    assert!(finds(&r, "memo", &s));
    // From the memo now (the slot holds it): the same answer.
    assert!(finds(&r, "memo", &s));
    let at = memo_slot("public", "DEFAULT_GROUP", "memo");
    assert!(FOUND.with_borrow(|m| m[at].service.upgrade().is_some_and(|m| m.same(&s))));
    // Another registry's lookup of the same parts: not the first one's key.
    assert!(
        other
            .find_service("public", "DEFAULT_GROUP", "memo")
            .is_none()
    );
    let o = other.service("public", "DEFAULT_GROUP", "memo");
    assert!(!o.same(&s));
    assert!(finds(&other, "memo", &o));
    assert!(finds(&r, "memo", &s));
    // Collected (empty long enough): not found, though the memo still holds it.
    assert!(finds(&r, "memo", &s));
    assert_eq!(r.collect_empty_services(1_000, 0), 0);
    assert_eq!(r.collect_empty_services(2_000, 0), 1);
    // The retirement was counted: the entry (made at a count of 0) is not taken.
    assert_eq!(r.services_retired.load(Relaxed), 1);
    assert!(FOUND.with_borrow(|m| m[at].retired == 0));
    assert!(FOUND.with_borrow(|m| m[at].service.upgrade().is_some_and(|m| m.same(&s))));
    assert!(r.find_service("public", "DEFAULT_GROUP", "memo").is_none());
    let again = r.service("public", "DEFAULT_GROUP", "memo");
    assert!(!again.same(&s));
    assert!(finds(&r, "memo", &again));
    assert!(finds(&r, "memo", &again));
    // Two names of one slot (found by trying): each answers its own, in turns.
    let first = format!("memo-{}", 0);
    let slot = memo_slot("public", "DEFAULT_GROUP", &first);
    let second = (1..)
        .map(|k| format!("memo-{k}"))
        .find(|n| memo_slot("public", "DEFAULT_GROUP", n) == slot)
        .unwrap();
    let a = r.service("public", "DEFAULT_GROUP", &first);
    let b = r.service("public", "DEFAULT_GROUP", &second);
    for _ in 0..2 {
        assert!(finds(&r, &first, &a));
        assert!(finds(&r, &second, &b));
        assert!(finds(&r, &second, &b));
    }
    // Parts of other lengths in the other places: not the memo's.
    assert!(r.find_service("public", "DEFAULT_GROU", "memo").is_none());
    assert!(r.find_service("publi", "DEFAULT_GROUP", "memo").is_none());
}

#[test]
fn what_a_slot_write_touches_sits_in_the_first_lines_of_an_index() {
    use std::mem::{offset_of, size_of};
    // An `Arc`'s value follows its two counts.
    let at = |offset: usize| 2 * size_of::<usize>() + offset;
    // Line one: the counts, `registry`, `retired` and `free`.
    assert!(at(offset_of!(ServiceIndex, free) + size_of::<Mutex<Vec<u32>>>()) <= 64);
    // Line two: the counters, `gone` and the slots' length (their first field).
    assert!(at(offset_of!(ServiceIndex, gone)) < 128);
    assert!(at(offset_of!(ServiceIndex, slots) + size_of::<u32>()) <= 128);
}

#[test]
fn the_index_hint_takes_a_service_with_or_without_an_index() {
    let r = Registry::new(MemberId(0), 3, 0, &Config::default());
    let s = r.service("public", "DEFAULT_GROUP", "hinted");
    s.prefetch_index();
    let id = ClientId::ip_port("10.3.0.1", 80);
    let p = publication(&r, "hinted", "10.3.0.1", 80);
    r.publish(&id, p, MemberId(0), 10).unwrap();
    let held = r.find_service("public", "DEFAULT_GROUP", "hinted").unwrap();
    assert!(held.has_cached_index());
    held.prefetch_index();
    let view = r.query("public", "DEFAULT_GROUP", "hinted").expect("held");
    assert_eq!(view.publications.len(), 1);
    // Emptied and collected: the service caches a retired index (dropped once the
    // reclaimer frees it; the hint reads nothing through the address either way).
    r.unpublish(&id, &held, MemberId(0), 11, Origin::Client);
    r.collect_empty_services(20, 0);
    assert_eq!(r.collect_empty_services(30, 0), 1);
    assert!(held.has_cached_index() && r.live_index(&held).is_none());
    held.prefetch_index();
    assert!(r.query("public", "DEFAULT_GROUP", "hinted").is_none());
}
