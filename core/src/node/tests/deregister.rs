//! Deregistration by a client of one of its services.

use super::node;
use crate::model::{ClientId, InstanceSpec, ServiceSpec};
use crate::node::Node;
use crate::registry::WriteResult;

/// A deregistration removes the publication of exactly the service it names (given as
/// the client gave it: defaults and `group@@name` resolved), among the client's others;
/// a service the client does not publish, or one differing in any part, is unchanged.
#[test]
fn a_deregistration_removes_the_named_service_only() {
    let n = node("10.0.0.1:8848", 3);
    let id = ClientId::connection(1, "10.9.0.1", 1);
    let spec = InstanceSpec::new("10.9.0.1", 80);
    for (ns, group, name) in [
        ("", "", "a"),
        ("", "g", "a"),
        ("ns", "", "a"),
        ("", "", "b"),
    ] {
        n.register(&id, &ServiceSpec::new(ns, group, name), &spec, 1)
            .unwrap();
    }
    let held = |n: &Node| {
        let mut v: Vec<String> = n
            .registry()
            .get(id.as_str())
            .unwrap()
            .publications()
            .iter()
            .map(|p| p.service.key().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(held(&n).len(), 4);
    for (ns, group, name) in [
        ("", "", "c"),
        ("x", "", "a"),
        ("", "x", "b"),
        ("", "", "a2"),
    ] {
        let r = n.deregister(&id, &ServiceSpec::new(ns, group, name), 2);
        assert!(
            matches!(r, Ok(WriteResult::Unchanged)),
            "{ns}/{group}/{name}"
        );
    }
    assert_eq!(held(&n).len(), 4);
    // `g@@a` in the default group is the service `a` of group `g`.
    let r = n.deregister(&id, &ServiceSpec::new("", "", "g@@a"), 3);
    assert!(matches!(r, Ok(WriteResult::Changed(_))), "{r:?}");
    let left = held(&n);
    assert_eq!(left.len(), 3);
    assert!(
        !left.iter().any(|k| k.contains("\u{1f}g\u{1f}a")),
        "{left:?}"
    );
}
