//! Unit tests of a stored client's id: what it computes from its pieces.

use super::{DERIVED_MAX, IdBuf, id_prefix, is_derived_id, is_ip_port_text};
use crate::compact_form::{IdForm, id_form};
use crate::config::Config;
use crate::member::MemberId;
use crate::model::{ClientId, InstanceSpec, Publication, RoutingKey, publish_samples, sample_ids};
use crate::name::Interner;
use crate::registry::Registry;

/// What a stored client computes from its pieces (its id's bytes, length, first
/// sixteen bytes, routing key) is what its written-out id says, for ids of every form,
/// derived or stored.
#[test]
fn a_clients_id_pieces_say_what_its_written_id_says() {
    let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
    let samples = publish_samples(&r);
    let mut derived = 0;
    r.for_each(|c| {
        let id = c.id();
        let text = id.as_str();
        derived += usize::from(c.id_is_derived());
        assert_eq!(c.id_bytes(&mut IdBuf::new()), text.as_bytes(), "{text:?}");
        assert_eq!(c.id_len(), text.len(), "{text:?}");
        let mut a = [0u8; 16];
        let n = text.len().min(16);
        a[..n].copy_from_slice(&text.as_bytes()[..n]);
        let want = (
            u64::from_be_bytes(a[..8].try_into().unwrap()),
            u64::from_be_bytes(a[8..].try_into().unwrap()),
        );
        assert_eq!(c.id_prefix(), want, "{text:?}");
        assert_eq!(id_prefix(text.as_bytes()), want, "{text:?}");
        let key = c.routing_key().map(|k| match k {
            RoutingKey::Text(s) => s.to_string(),
            RoutingKey::IpPort(ip, port) => format!("{ip}:{port}"),
        });
        assert_eq!(key.as_deref(), id.routing_key(), "{text:?}");
    });
    // Both kinds of client were there.
    assert!(derived > 100 && derived + 100 < samples.len(), "{derived}");
}

/// The compact form a stored client reads from the parts kept with its id's text
/// ([`crate::name::Name::id_parts`]) is the one its id and first instance have
/// ([`id_form`]): when first stored, once its first instance moved to another ip (the
/// text and its parts kept), and once back under an id of a fresh text (the parts taken
/// from the held text's).
#[test]
fn a_stored_clients_id_form_is_its_texts() {
    let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
    let ids = publish_samples(&r);
    let service = r.service("public", "DEFAULT_GROUP", "svc");
    let check = |what: &str| {
        let mut connections = 0;
        for id in &ids {
            let c = r.get(id.as_str()).expect("stored");
            let ps = c.publications();
            let first = ps[0].instances.first().expect("an instance");
            let want = match c.id_is_derived() {
                true => IdForm::IpPort,
                false => id_form(id.as_str(), first),
            };
            assert_eq!(c.id_form(), want, "{what}: {id} of {}", first.ip);
            connections += usize::from(matches!(want, IdForm::Connection { .. }));
        }
        connections
    };
    let publish = |id: &ClientId, ip: &str, port: u16, now: u64| {
        let inst = InstanceSpec::new(ip, port)
            .to_instance(r.interner(), &service)
            .unwrap();
        let p = Publication::single(service.clone(), inst);
        r.publish(id, p, MemberId(0), now).unwrap();
    };
    // The parts were found when the client was stored, not left to the first flush.
    for id in &ids {
        let c = r.get(id.as_str()).expect("stored");
        if let Some(n) = &c.id {
            assert!(n.id_parts_known(), "{id}: parts not found when stored");
        }
    }
    assert!(check("first stored") > 100);
    let firsts: Vec<(String, u16)> = ids
        .iter()
        .map(|id| {
            let c = r.get(id.as_str()).unwrap();
            let ps = c.publications();
            let i = ps[0].instances.first().unwrap();
            (i.ip.as_str().to_string(), i.port)
        })
        .collect();
    for id in &ids {
        publish(id, "10.200.0.1", 8080, 2);
    }
    assert_eq!(check("moved"), 0);
    for (id, (ip, port)) in ids.iter().zip(&firsts) {
        publish(&ClientId::parse(id.as_str()).unwrap(), ip, *port, 3);
    }
    assert!(check("back, fresh texts") > 100);
}

/// Ids ordered by their first sixteen bytes, then whole, are in byte order, whatever
/// their lengths (a shorter id that is another's start first; `:` after digits).
#[test]
fn ids_ordered_by_prefix_then_whole_are_in_byte_order() {
    let mut ids: Vec<String> = sample_ids()
        .into_iter()
        .map(|(id, _)| id.as_str().to_string())
        .collect();
    for s in [
        "",
        "a",
        "ab",
        "abcdefgh",
        "abcdefg",
        "abcdefgh1",
        "abcdefgh0",
        "b",
    ] {
        ids.push(s.to_string());
    }
    // Every cut of a long id, and bytes changed at either side of the 16th.
    let long = "1717000000000_10.0.0.7_1";
    for k in 0..=long.len() {
        ids.push(long[..k].to_string());
    }
    for k in [7, 8, 14, 15, 16, 17] {
        for c in ['0', '9', ':', '_'] {
            let mut s = long.to_string();
            s.replace_range(k..k + 1, &c.to_string());
            ids.push(s);
        }
    }
    let mut by_prefix = ids.clone();
    by_prefix.sort_unstable_by(|a, b| {
        id_prefix(a.as_bytes())
            .cmp(&id_prefix(b.as_bytes()))
            .then_with(|| a.cmp(b))
    });
    ids.sort_unstable();
    assert_eq!(by_prefix, ids);
}

/// The word-wise comparison says an id is derived exactly when it is the text
/// `ClientId::ip_port` writes (of at most `DERIVED_MAX` bytes): for host names short
/// and long, every port length, and every one-byte change, cut and extension.
#[test]
fn a_derived_id_is_exactly_the_ip_port_text() {
    let interner = Interner::new();
    let service = crate::model::Service::new(&interner, "public", "DEFAULT_GROUP", "s");
    let ips = [
        "a",
        "ab",
        "h1",
        "10.0.0.1",
        "1.2.3.4",
        "192.168.100.10",
        "192.168.100.100",
        "::1",
        "fe80::1",
        "host-name",
    ];
    let ports = [
        1, 7, 9, 10, 80, 99, 100, 443, 999, 1000, 8080, 9999, 10000, 50000, 65535,
    ];
    for ip in ips {
        for port in ports {
            let inst = InstanceSpec::new(ip, port)
                .to_instance(&interner, &service)
                .unwrap();
            let id = ClientId::ip_port(ip, port);
            let text = id.as_str().to_string();
            let want = |s: &str| s == text && s.len() <= DERIVED_MAX;
            let mut cases = vec![
                text.clone(),
                format!("{ip}:0{port}#true"),
                format!("{ip}:{port}#false"),
                format!("{ip}:{port}#truE"),
                format!("{ip}:{}#true", u32::from(port) + 1),
                format!("{ip}:{}#true", u32::from(port) + 65536),
                format!("{ip}{port}#true"),
                format!("{ip}:#true"),
                format!("x{ip}:{port}#true"),
                format!("{ip}:{port}#true "),
                text[..text.len() - 1].to_string(),
            ];
            for k in 0..text.len() {
                for c in [b'0', b'9', b':', b'#', b'x', b'/'] {
                    let mut b = text.clone().into_bytes();
                    b[k] = c;
                    cases.push(String::from_utf8(b).unwrap());
                }
            }
            for s in &cases {
                assert_eq!(is_derived_id(s, &inst), want(s), "{s:?} of {ip}:{port}");
                // Without the length cap: the text equality alone.
                assert_eq!(
                    is_ip_port_text(s, &inst),
                    *s == text,
                    "{s:?} of {ip}:{port}"
                );
            }
        }
    }
}

/// A stored client's size estimate is its record's, the derived id's length counted
/// without writing the id out: ports of every length, one and two publications.
#[test]
fn a_stored_clients_size_hint_is_its_records() {
    use crate::model::Publication;
    use crate::registry::{ClientChange, Registry};
    use crate::{Config, member::MemberId};
    let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
    let (a, b) = (
        r.service("public", "DEFAULT_GROUP", "a"),
        r.service("public", "DEFAULT_GROUP", "b"),
    );
    let mut tried = 0;
    for ip in ["10.0.0.7", "fe80::1", "host"] {
        for port in [1, 80, 443, 8080, 65535] {
            let id = ClientId::ip_port(ip, port);
            for s in [&a, &b] {
                let mut spec = InstanceSpec::new(ip, port);
                spec.metadata = vec![("k".into(), "v".into())];
                let i = spec.to_instance(r.interner(), s).unwrap();
                r.publish(&id, Publication::single(s.clone(), i), MemberId(0), 1)
                    .unwrap();
                let c = r.get(id.as_str()).unwrap();
                assert!(c.id_is_derived(), "{id}");
                let stored = ClientChange::Stored(c.clone()).size_hint();
                let record = ClientChange::Upsert(c.to_record()).size_hint();
                assert_eq!(
                    stored,
                    record,
                    "{id}, {} publications",
                    c.publications().len()
                );
                tried += 1;
            }
        }
    }
    assert_eq!(tried, 30);
}

/// The size estimate counts every field of every instance, as written plainly here:
/// metadata maps of several sizes (their bytes kept with the stored map), custom ids,
/// one and several instances, one and two publications.
#[test]
fn size_hints_count_every_field() {
    use crate::model::{Instance, Publication};
    use crate::registry::{ClientChange, Registry};
    use crate::{Config, member::MemberId};
    fn plain(id: &str, publications: &[&Publication]) -> usize {
        let instance = |i: &Instance| {
            32 + i.ip.len()
                + i.cluster.len()
                + i.custom_id.as_ref().map_or(0, |c| c.len() + 2)
                + i.metadata
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 6)
                    .sum::<usize>()
        };
        16 + id.len()
            + publications
                .iter()
                .map(|p| {
                    16 + p.service.key().len() + p.instances.iter().map(instance).sum::<usize>()
                })
                .sum::<usize>()
    }
    let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
    let services = [
        r.service("public", "DEFAULT_GROUP", "a"),
        r.service("ns", "G", "bb"),
    ];
    let maps: [Vec<(String, String)>; 4] = [
        vec![],
        vec![("k".into(), "v".into())],
        vec![
            ("version".into(), "1.2.3".into()),
            ("zone".into(), "eu-west-1a".into()),
        ],
        (0..9)
            .map(|k| (format!("key{k}"), "x".repeat(k * 7)))
            .collect(),
    ];
    let mut tried = 0;
    for (n, map) in maps.iter().enumerate() {
        let instance = |s, port: u16, custom: bool| {
            let mut spec = InstanceSpec::new("10.1.2.3", port);
            spec.metadata = map.clone();
            spec.cluster = ["DEFAULT", "c1"][n % 2].into();
            spec.instance_id = custom.then(|| format!("custom-{port}"));
            spec.to_instance(r.interner(), s).unwrap()
        };
        let id = ClientId::parse(&format!("1717000000000_10.1.2.3_{}", 1000 + n)).unwrap();
        let mut held: Vec<Publication> = Vec::new();
        for (k, s) in services.iter().enumerate() {
            let p = if k == 0 {
                Publication::single(s.clone(), instance(s, 80, n % 2 == 1))
            } else {
                Publication::batch(
                    s.clone(),
                    vec![instance(s, 81, false), instance(s, 82, true)],
                )
            };
            r.publish(&id, p.clone(), MemberId(0), 1).unwrap();
            held.push(p);
            let c = r.get(id.as_str()).unwrap();
            let want = plain(id.as_str(), &held.iter().collect::<Vec<_>>());
            assert_eq!(
                ClientChange::Stored(c.clone()).size_hint(),
                want,
                "{id}, map {n}"
            );
            assert_eq!(
                ClientChange::Upsert(c.to_record()).size_hint(),
                want,
                "{id}, map {n}"
            );
            tried += 1;
        }
    }
    assert_eq!(tried, 8);
}

/// A replica's new client stores its id's text without finding its compact parts (no
/// flush of the replica reads them while another member owns the client): they are
/// found at the text's first encoding, and are then what its id and first instance say
/// ([`id_form`]); the next state of the client shares the text and what it knows.
#[test]
fn a_replicas_client_finds_its_ids_parts_when_first_encoded() {
    use crate::model::Revision;
    use crate::registry::StateRef;
    use std::sync::Arc;
    let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
    let service = r.service("public", "DEFAULT_GROUP", "svc");
    let mut stored = 0;
    for (id, spec) in sample_ids() {
        let inst = spec.to_instance(r.interner(), &service).unwrap();
        let first = inst.clone();
        let pubs = [Arc::new(Publication::single(service.clone(), inst))];
        let state = |revision| StateRef {
            id: id.as_str(),
            revision: Revision(revision),
            owner: MemberId(1),
            publications: &pubs,
        };
        r.apply_state(state(1), MemberId(1), 10);
        let c = r.get(id.as_str()).expect("stored");
        let Some(n) = c.id.clone() else {
            assert_eq!(c.id_form(), IdForm::IpPort, "{id}");
            continue;
        };
        stored += 1;
        assert!(
            !n.id_parts_known(),
            "{id}: parts found when a replica stored it"
        );
        assert_eq!(c.id_form(), id_form(id.as_str(), &first), "{id}");
        assert!(n.id_parts_known(), "{id}: parts not kept once encoded");
        r.apply_state(state(2), MemberId(1), 20);
        let next = r.get(id.as_str()).expect("stored");
        let m = next.id.as_ref().expect("a stored text");
        assert!(
            std::ptr::eq(m.as_str(), n.as_str()),
            "{id}: the held text shared"
        );
        assert!(m.id_parts_known(), "{id}");
        assert_eq!(next.id_form(), id_form(id.as_str(), &first), "{id}");
    }
    assert!(stored > 100, "{stored}");
}

/// A client's instance count (read directly for a client of one publication) is the sum
/// over its publications, and `id_is` (a derived id compared apart) knows its own id and
/// no other, for samples of every form: one publication of one instance or of a batch,
/// several publications, derived and stored ids.
#[test]
fn a_clients_instance_count_and_id_compare_hold_for_every_form() {
    let r = Registry::new(MemberId(0), 3, 1_000, &Config::default());
    let ids = publish_samples(&r);
    // A batch of three for the first sample, a second service for the second.
    let inst = |port| InstanceSpec::new("10.9.0.1", port);
    let svc = r.service("public", "DEFAULT_GROUP", "svc");
    let batch: Vec<_> = (1..=3)
        .map(|p| inst(p).to_instance(r.interner(), &svc).unwrap())
        .collect();
    let p = Publication::batch(svc, batch);
    r.publish(&ids[0], p, MemberId(0), 2).unwrap();
    let other = r.service("public", "DEFAULT_GROUP", "other");
    let i = inst(9).to_instance(r.interner(), &other).unwrap();
    let p = Publication::single(other, i);
    r.publish(&ids[1], p, MemberId(0), 2).unwrap();
    let (mut one, mut many, mut batch, mut derived) = (0, 0, 0, 0);
    r.for_each(|c| {
        let pubs = c.publications();
        let sum: usize = pubs.iter().map(|p| p.instances.len()).sum();
        assert_eq!(c.instance_count(), sum);
        one += usize::from(pubs.len() == 1);
        many += usize::from(pubs.len() > 1);
        batch += usize::from(pubs.len() == 1 && sum > 1);
        derived += usize::from(c.id_is_derived());
        let id = c.id();
        assert!(c.id_is(id.as_str()), "{id}");
        assert!(!c.id_is(&format!("{id}x")), "{id}");
        if let Some(rest) = id.as_str().get(1..) {
            assert!(!c.id_is(rest), "{id}");
        }
        // Of the same length, one byte changed (an ip byte, a port digit, the suffix):
        // the word compares, not the length, refuse it.
        for k in (0..id.as_str().len()).filter(|&k| id.as_str().as_bytes()[k].is_ascii()) {
            let mut b = id.as_str().as_bytes().to_vec();
            b[k] = if b[k] == b'0' { b'1' } else { b'0' };
            let other = String::from_utf8(b).expect("ascii");
            assert!(!c.id_is(&other), "{id} against {other}");
        }
    });
    assert!(
        one > 0 && many > 0 && batch > 0 && derived > 0,
        "{one} {many} {batch} {derived}"
    );
}
