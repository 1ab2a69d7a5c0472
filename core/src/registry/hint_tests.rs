//! Tests of the hints a batch of writes gives ahead of each write (`WriteHints`, the new
//! slot's hint): they start at their threshold, take any parts and change nothing.

use super::tests::{publication, reg_prefetching};
use super::*;

#[test]
fn write_hints_start_at_their_threshold_and_change_nothing() {
    let r = reg_prefetching(2);
    let id = |i: u16| ClientId::ip_port(&format!("10.9.0.{i}"), 80);
    assert!(!r.write_hints().active(), "no client held");
    for i in 0..2u16 {
        let hints = r.write_hints();
        hints.client(&id(i));
        let p = publication(&r, "hinted", &format!("10.9.0.{i}"), 80);
        r.publish(&id(i), p, MemberId(0), 10).unwrap();
    }
    let hints = r.write_hints();
    assert!(hints.active(), "two clients held");
    for i in 0..4 {
        hints.client(&id(i));
    }
    drop(hints);
    assert_eq!(r.stats().clients, 2);
    assert!(r.get(id(0).as_str()).is_some() && r.get(id(3).as_str()).is_none());
    assert!(reg_prefetching(0).write_hints().active());
    assert!(!reg_prefetching(usize::MAX).write_hints().active());
}

/// The hints for a write's service read this thread's memo of found services and ask
/// for lines at the addresses an entry keeps: for any parts (ones that do not split,
/// ones never found, another registry's, a service whose index was collected since and
/// then dropped), they change nothing and read nothing through those addresses.
#[test]
fn service_hints_take_any_parts_and_change_nothing() {
    let r = reg_prefetching(0);
    let other = reg_prefetching(0);
    let hints = r.write_hints();
    let both = |ns: &str, group: &str, name: &str| {
        if let Some(at) = hints.service_at(ns, group, name) {
            hints.service_early(at);
            hints.service(at);
        }
        // And the new slot's hint of an owner's write, for the service of these parts if
        // the registry holds it.
        if let Ok((ns, group, name)) = crate::model::ServiceSpec::split_parts(ns, group, name)
            && let Some(s) = r.find_service(ns, group, name)
        {
            r.prefetch_new_slot(&s);
        }
    };
    // A service that never had an index.
    r.prefetch_new_slot(&crate::model::Service::new(
        r.interner(),
        "public",
        "DEFAULT_GROUP",
        "never",
    ));
    // Before the thread's memo holds anything, and parts that do not split.
    both("", "", "hinted");
    both("", "G", "H@@hinted");
    both("", "", "@@");
    let id = ClientId::ip_port("10.9.1.1", 80);
    r.publish(
        &id,
        publication(&r, "hinted", "10.9.1.1", 80),
        MemberId(0),
        10,
    )
    .unwrap();
    // Found (the memo's entry made), then hinted by its parts as received, defaults
    // given or not, and by another registry's hints (the entry is not theirs).
    let s = r.find_service("public", "DEFAULT_GROUP", "hinted").unwrap();
    both("", "", "hinted");
    both("public", "DEFAULT_GROUP", "hinted");
    both("", "", "DEFAULT_GROUP@@hinted");
    let theirs = other.write_hints();
    let at = theirs
        .service_at("", "", "hinted")
        .expect("active, and the parts split");
    theirs.service_early(at);
    theirs.service(at);
    // The service emptied and its index collected: the entry's addresses are of a
    // retired index (dropped once the reclaimer frees it) and of a service this test
    // still holds; then the service dropped too, its allocation kept by the memo alone.
    r.remove_client(&id, MemberId(0), 11);
    r.collect_empty_services(20, 0);
    assert_eq!(r.collect_empty_services(30, 0), 1);
    both("", "", "hinted");
    // Its service caches the retired index: no slot asked for.
    r.prefetch_new_slot(&s);
    drop(s);
    r.flush_retired();
    both("", "", "hinted");
    assert!(r.query("public", "DEFAULT_GROUP", "hinted").is_none());
    assert!(
        r.find_service("public", "DEFAULT_GROUP", "hinted")
            .is_none()
    );
    // Held again: the hints and the lookup find the new index.
    r.publish(
        &id,
        publication(&r, "hinted", "10.9.1.1", 81),
        MemberId(0),
        40,
    )
    .unwrap();
    both("", "", "hinted");
    let view = r.query("public", "DEFAULT_GROUP", "hinted").expect("held");
    assert_eq!(view.publications.len(), 1);
    assert_eq!(view.publications[0].instances[0].port, 81);
}
