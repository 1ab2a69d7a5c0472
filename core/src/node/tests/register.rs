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

/// Counts the changes a listener hears, per service name.
#[derive(Default)]
struct Heard(std::sync::Mutex<Vec<String>>);

impl crate::registry::ChangeListener for Heard {
    fn services_changed(&self, services: &[crate::model::Service]) {
        let mut heard = self.0.lock().unwrap();
        heard.extend(services.iter().map(|s| s.name().to_string()));
    }
}

/// A changed registration of a held single instance (`Registry::replace_changed`, which
/// does not compare the publications again) moves the service's revision and tells the
/// listeners, for a client of one publication and a batch replaced by a single instance
/// alike; the same registration again (a heartbeat) does neither.
#[test]
fn a_changed_registration_moves_the_services_revision_and_is_heard() {
    let n = node("10.0.0.1:8848", 3);
    let heard = std::sync::Arc::new(Heard::default());
    n.registry().add_listener(heard.clone());
    let id = ClientId::ip_port("10.9.0.1", 80);
    let svc = ServiceSpec::new("", "", "a");
    let mut spec = InstanceSpec::new("10.9.0.1", 80);
    n.register(&id, &svc, &spec, 100).unwrap();
    let revision = |n: &crate::node::Node| n.query(&svc).unwrap().unwrap().revision;
    let heard_now = || heard.0.lock().unwrap().len();
    let (r0, h0) = (revision(&n), heard_now());
    spec.weight = 3.0;
    n.register(&id, &svc, &spec, 200).unwrap();
    assert_eq!(
        revision(&n),
        r0 + 1,
        "a change moves the service's revision"
    );
    assert_eq!(heard_now(), h0 + 1, "and is heard");
    let view = n.query(&svc).unwrap().unwrap();
    assert_eq!(view.publications[0].instances[0].weight, 3.0);
    assert_eq!(
        n.register(&id, &svc, &spec, 300).unwrap(),
        WriteResult::Unchanged
    );
    assert_eq!(revision(&n), r0 + 1, "the same registration moves nothing");
    assert_eq!(heard_now(), h0 + 1);
    // A held batch of the same instance, replaced by its single registration: a change.
    n.register_batch(&id, &svc, std::slice::from_ref(&spec), 400)
        .unwrap();
    let (r1, h1) = (revision(&n), heard_now());
    assert!(matches!(
        n.register(&id, &svc, &spec, 500).unwrap(),
        WriteResult::Changed(_)
    ));
    assert_eq!(revision(&n), r1 + 1);
    assert_eq!(heard_now(), h1 + 1);
    assert!(!n.registry().get(id.as_str()).unwrap().publications()[0].is_batch());
}

/// The node's instance and client counts follow every kind of write: a change of a held
/// single instance leaves them (`Registry::replace_with` adds the difference, here 0), a
/// batch replacing it and a single instance replacing the batch move the instances by
/// the difference, a deregistration takes the client away.
#[test]
fn the_instance_count_moves_by_the_difference_of_each_write() {
    let n = node("10.0.0.1:8848", 3);
    let id = ClientId::connection(1, "10.9.0.1", 1);
    let svc = ServiceSpec::new("", "", "a");
    let mut spec = InstanceSpec::new("10.9.0.1", 80);
    let counts = |n: &crate::node::Node| {
        let s = n.registry().stats();
        (s.clients, s.instances)
    };
    n.register(&id, &svc, &spec, 100).unwrap();
    assert_eq!(counts(&n), (1, 1));
    spec.weight = 2.0;
    n.register(&id, &svc, &spec, 200).unwrap();
    assert_eq!(counts(&n), (1, 1), "a change of the instance");
    let batch: Vec<InstanceSpec> = (0..3)
        .map(|k| InstanceSpec::new("10.9.0.1", 81 + k))
        .collect();
    n.register_batch(&id, &svc, &batch, 300).unwrap();
    assert_eq!(counts(&n), (1, 3), "a batch of three for the single one");
    n.register(&id, &ServiceSpec::new("", "", "b"), &spec, 400)
        .unwrap();
    assert_eq!(counts(&n), (1, 4), "a second publication");
    n.register(&id, &svc, &spec, 500).unwrap();
    assert_eq!(counts(&n), (1, 2), "a single instance for the batch");
    n.deregister(&id, &svc, 600).unwrap();
    assert_eq!(counts(&n), (1, 1));
    n.deregister(&id, &ServiceSpec::new("", "", "b"), 700)
        .unwrap();
    assert_eq!(counts(&n), (0, 0), "the client is gone");
}
