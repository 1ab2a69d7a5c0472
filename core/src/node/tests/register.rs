//! Re-registrations that change a held publication: the new instance is written into the
//! registry's slot and moved into the new client as it is made (`Built::ChangedOne`,
//! `Client::replacing_one`).

use super::node;
use crate::model::{ClientId, InstanceSpec, ServiceSpec};
use crate::registry::WriteResult;

/// A change of an ip:port client's one publication: the new state derives its id from
/// its instance (no stored text), keeps the publication's beat time, takes a new
/// revision and holds the changed instance; the same request again changes nothing.
#[test]
fn a_changed_registration_of_an_ip_port_client_keeps_its_derived_id_and_beat() {
    let n = node("10.0.0.1:8848", 3);
    let id = ClientId::ip_port("10.9.0.1", 80);
    let svc = ServiceSpec::new("", "", "a");
    let mut spec = InstanceSpec::new("10.9.0.1", 80);
    n.register(&id, &svc, &spec, 100).unwrap();
    let before = n.registry().get(id.as_str()).unwrap();
    assert_eq!(before.stored_id(), None);
    spec.weight = 2.0;
    let r = n.register(&id, &svc, &spec, 200).unwrap();
    let after = n.registry().get(id.as_str()).unwrap();
    assert_eq!(r, WriteResult::Changed(after.revision()));
    assert!(after.revision() > before.revision());
    assert_eq!(after.stored_id(), None, "the id is still the derived one");
    assert_eq!(after.id(), id);
    assert_eq!(
        after.last_beat(0),
        100,
        "a changed publication keeps its beat time"
    );
    let p = after.publications();
    assert_eq!(p.len(), 1);
    assert!(!p[0].is_batch());
    assert_eq!(p[0].instances.len(), 1);
    assert_eq!(p[0].instances[0].weight, 2.0);
    assert_eq!(
        p[0].instances[0],
        spec.to_instance(n.registry().interner(), &p[0].service)
            .unwrap()
    );
    assert_eq!(
        n.register(&id, &svc, &spec, 300).unwrap(),
        WriteResult::Unchanged
    );
}

/// A change of the first, a middle and the last publication of a connection client of
/// three: only that publication changes (the others are the same parts, with their beat
/// times), the stored id text is kept, and a held batch replaced by a single registration
/// becomes a single publication.
#[test]
fn a_changed_registration_among_a_clients_others_replaces_only_it() {
    let n = node("10.0.0.1:8848", 3);
    let id = ClientId::connection(1, "10.9.0.1", 1);
    let names = ["a", "b", "c"];
    let spec = InstanceSpec::new("10.9.0.1", 80);
    for (t, name) in names.iter().enumerate() {
        n.register(&id, &ServiceSpec::new("", "", name), &spec, 100 + t as u64)
            .unwrap();
    }
    for (k, name) in names.iter().enumerate() {
        let before = n.registry().get(id.as_str()).unwrap();
        let mut changed = spec.clone();
        changed.port = 1000 + k as i64;
        let r = n
            .register(&id, &ServiceSpec::new("", "", name), &changed, 500)
            .unwrap();
        let after = n.registry().get(id.as_str()).unwrap();
        assert_eq!(r, WriteResult::Changed(after.revision()), "{name}");
        assert_eq!(after.stored_id(), Some(id.as_str()), "{name}");
        assert_eq!(after.id(), id);
        let (b, a) = (before.publications(), after.publications());
        assert_eq!(a.len(), 3);
        for i in 0..3 {
            assert_eq!(after.last_beat(i), 100 + i as u64, "{name}: beat {i}");
            if i == k {
                assert_eq!(a[i].service, b[i].service);
                assert_eq!(a[i].instances[0].port, 1000 + k as u16, "{name}");
                assert!(!a[i].is_batch());
            } else {
                assert_eq!(a[i].get(), b[i].get(), "{name}: publication {i}");
            }
            // The index answers every service with what the client holds now.
            let port = if i <= k { 1000 + i as u16 } else { 80 };
            let view = n
                .query(&ServiceSpec::new("", "", names[i]))
                .unwrap()
                .unwrap();
            assert_eq!(view.instance_count(), 1, "{name}: service {i}");
            assert_eq!(
                view.publications[0].instances[0].port, port,
                "{name}: service {i}"
            );
        }
    }
    // A held batch of one, replaced by the single registration of the same instance.
    let svc = ServiceSpec::new("", "", "b");
    n.register_batch(&id, &svc, std::slice::from_ref(&spec), 600)
        .unwrap();
    assert!(n.registry().get(id.as_str()).unwrap().publications()[1].is_batch());
    n.register(&id, &svc, &spec, 700).unwrap();
    let c = n.registry().get(id.as_str()).unwrap();
    assert!(!c.publications()[1].is_batch());
    assert_eq!(c.publications()[1].instances[0].port, 80);
}
