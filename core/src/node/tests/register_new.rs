//! Registrations that make a new client or add a service to a held one: the new instance
//! is written into the registry's slot (`Built::NewOne`); a new client is made from it as
//! one literal (`Client::first_one`), a held client's new service is inserted among its
//! publications.

use super::node;
use crate::config::Config;
use crate::member::MemberList;
use crate::model::{ClientId, ClientKind, InstanceSpec, ServiceSpec};
use crate::node::Node;
use crate::registry::WriteResult;

/// A new ip:port client derives its id from its instance (no stored text), a connection
/// client stores its id; both hold the instance as built, with their beat and lease at
/// the registration's time. A client registered again after a deregistration left a
/// tombstone loses the tombstone and takes a revision past it.
#[test]
fn a_new_client_is_made_from_the_written_instance() {
    let n = node("10.0.0.1:8848", 3);
    let svc = ServiceSpec::new("", "", "a");
    let spec = InstanceSpec::new("10.9.0.1", 80);
    let ip_port = ClientId::ip_port("10.9.0.1", 80);
    let conn = ClientId::connection(1, "10.9.0.1", 1);
    for (id, stored) in [(&ip_port, None), (&conn, Some(conn.as_str()))] {
        let r = n.register(id, &svc, &spec, 100).unwrap();
        let c = n.registry().get(id.as_str()).unwrap();
        assert_eq!(r, WriteResult::Changed(c.revision()));
        assert_eq!(c.stored_id(), stored);
        assert_eq!(c.id(), *id);
        assert_eq!(c.last_beat(0), 100);
        assert_eq!(c.lease_base(), 100);
        let p = c.publications();
        assert_eq!(p.len(), 1);
        assert!(!p[0].is_batch());
        assert_eq!(
            p[0].instances[0],
            spec.to_instance(n.registry().interner(), &p[0].service)
                .unwrap()
        );
        assert_eq!(
            n.register(id, &svc, &spec, 200).unwrap(),
            WriteResult::Unchanged
        );
    }
    let WriteResult::Deleted(gone) = n.deregister(&ip_port, &svc, 300).unwrap() else {
        panic!("the client's one publication removed")
    };
    assert_eq!(n.registry().tombstone(ip_port.as_str()), Some(gone));
    let WriteResult::Changed(back) = n.register(&ip_port, &svc, &spec, 400).unwrap() else {
        panic!("a new client")
    };
    assert!(back > gone);
    assert_eq!(n.registry().tombstone(ip_port.as_str()), None);
    assert_eq!(n.registry().get(ip_port.as_str()).unwrap().revision(), back);
}

/// A held client's registration in another service adds a publication in its sorted
/// place (the others kept, with their beat times); a new client past `max_clients` or
/// with a new service past `max_services_per_namespace` is refused and not stored.
#[test]
fn a_new_service_or_client_is_added_or_refused_by_the_limits() {
    let addrs = ["10.0.0.1:8848".to_string()];
    let cfg = Config {
        shards: 64,
        max_clients: 2,
        max_services_per_namespace: 3,
        ..Config::default()
    };
    let n = Node::new(
        cfg,
        MemberList::new("10.0.0.1:8848", &addrs).unwrap(),
        1_000,
    )
    .unwrap();
    let a = ClientId::ip_port("10.9.0.1", 80);
    let spec = InstanceSpec::new("10.9.0.1", 80);
    for (t, name) in ["b", "c", "a"].iter().enumerate() {
        n.register(&a, &ServiceSpec::new("", "", name), &spec, 100 + t as u64)
            .unwrap();
    }
    let c = n.registry().get(a.as_str()).unwrap();
    let held: Vec<_> = c
        .publications()
        .iter()
        .map(|p| p.service.name().as_str().to_string())
        .collect();
    assert_eq!(held, ["a", "b", "c"]);
    assert_eq!(
        (c.last_beat(0), c.last_beat(1), c.last_beat(2)),
        (102, 100, 101)
    );
    let b = ClientId::ip_port("10.9.0.2", 80);
    let spec_b = InstanceSpec::new("10.9.0.2", 80);
    let e = n
        .register(&b, &ServiceSpec::new("", "", "d"), &spec_b, 200)
        .unwrap_err();
    assert!(e.to_string().contains("the limit is 3"), "{e}");
    assert!(n.registry().get(b.as_str()).is_none());
    n.register(&b, &ServiceSpec::new("", "", "a"), &spec_b, 200)
        .unwrap();
    let c3 = ClientId::ip_port("10.9.0.3", 80);
    let e = n
        .register(
            &c3,
            &ServiceSpec::new("", "", "a"),
            &InstanceSpec::new("10.9.0.3", 80),
            300,
        )
        .unwrap_err();
    assert!(e.to_string().contains("(max_clients)"), "{e}");
    assert!(n.registry().get(c3.as_str()).is_none());
}

/// An ip:port client publishes only its id's address: an id `ip:port#true` of the
/// instance passes as compared by words, another id of the instance's address (`#false`)
/// through the parse of its key; an instance whose ip or port differs from the id's by a
/// digit, a prefix or a suffix is refused either way, and nothing is stored.
#[test]
fn a_new_ip_port_client_publishes_only_its_ids_address() {
    let n = node("10.0.0.1:8848", 1);
    let svc = ServiceSpec::new("", "", "a");
    let ok = [
        ("1.1.1.1:80#true", "1.1.1.1", 80),
        ("1.1.1.1:80#false", "1.1.1.1", 80),
        ("host-a:65535#true", "host-a", 65535),
        ("h:1#false", "h", 1),
    ];
    for (id, ip, port) in ok {
        let id = ClientId::parse(id).unwrap();
        assert_eq!(id.kind(), ClientKind::IpPort, "{id}");
        let r = n.register(&id, &svc, &InstanceSpec::new(ip, port), 100);
        assert!(matches!(r, Ok(WriteResult::Changed(_))), "{id}: {r:?}");
    }
    let refused = [
        ("2.2.2.2:80#true", "2.2.2.2", 8),
        ("2.2.2.2:8#true", "2.2.2.2", 80),
        ("2.2.2.2:80#true", "2.2.2.22", 80),
        ("2.2.2.22:80#true", "2.2.2.2", 80),
        ("2.2.2.2:80#false", "2.2.2.2", 81),
        ("2.2.2.2:80#false", "2.2.2.3", 80),
        ("h:1#true", "g", 1),
    ];
    for (id, ip, port) in refused {
        let id = ClientId::parse(id).unwrap();
        let e = n
            .register(&id, &svc, &InstanceSpec::new(ip, port), 100)
            .unwrap_err();
        assert!(
            e.to_string().contains("cannot publish instance"),
            "{id}: {e}"
        );
        assert!(n.registry().get(id.as_str()).is_none(), "{id}");
    }
}
