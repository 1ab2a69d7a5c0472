//! Unit tests of the data model: derived instance ids, validation of every field with
//! its name, service names and their defaults, client kinds, revisions across restarts.

use super::*;
use crate::error::Field;
use crate::member::MemberId;
use crate::name::Interner;

fn svc(i: &Interner) -> Service {
    Service::new(i, "public", "DEFAULT_GROUP", "demo-svc")
}

#[test]
fn default_instance_id_is_derived() {
    let i = Interner::new();
    let s = svc(&i);
    let inst = InstanceSpec::new("10.0.0.7", 8080)
        .to_instance(&i, &s)
        .unwrap();
    assert_eq!(
        inst.instance_id(&s),
        "10.0.0.7#8080#DEFAULT#DEFAULT_GROUP@@demo-svc"
    );
    assert!(inst.custom_id.is_none());
    let mut spec = InstanceSpec::new("10.0.0.7", 8080);
    spec.instance_id = Some("10.0.0.7#8080#DEFAULT#DEFAULT_GROUP@@demo-svc".into());
    assert!(spec.to_instance(&i, &s).unwrap().custom_id.is_none());
    spec.instance_id = Some("my-id".into());
    assert_eq!(spec.to_instance(&i, &s).unwrap().instance_id(&s), "my-id");
}

#[test]
fn every_field_is_validated_with_its_name() {
    let bad = |f: &dyn Fn(&mut InstanceSpec)| {
        let mut s = InstanceSpec::new("10.0.0.1", 80);
        f(&mut s);
        s.validate().unwrap_err()
    };
    assert_eq!(bad(&|s| s.ip.clear()).field, Field::Ip);
    assert_eq!(bad(&|s| s.ip = "a b".into()).field, Field::Ip);
    assert_eq!(bad(&|s| s.ip = "x".repeat(200)).field, Field::Ip);
    assert_eq!(bad(&|s| s.port = 0).field, Field::Port);
    assert_eq!(bad(&|s| s.port = 65536).field, Field::Port);
    assert_eq!(bad(&|s| s.weight = -1.0).field, Field::Weight);
    assert_eq!(bad(&|s| s.weight = 10_000.5).field, Field::Weight);
    assert_eq!(bad(&|s| s.weight = f64::NAN).field, Field::Weight);
    assert_eq!(
        bad(&|s| s.cluster = "bad name".into()).field,
        Field::Cluster
    );
    assert_eq!(bad(&|s| s.cluster = "c".repeat(65)).field, Field::Cluster);
    let e = bad(&|s| {
        s.metadata = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    });
    assert_eq!(e.field, Field::Metadata);
    assert!(e.to_string().contains("limit is 64"), "{e}");
    let e = bad(&|s| s.metadata = vec![("k".into(), "v".repeat(9000))]);
    assert_eq!(e.field, Field::Metadata);
    let e = bad(&|s| s.metadata = vec![(META_DELETE_TIMEOUT.into(), "soon".into())]);
    assert_eq!(e.field, Field::Metadata);
    assert_eq!(
        bad(&|s| s.instance_id = Some("\n".into())).field,
        Field::InstanceId
    );
    assert!(InstanceSpec::new("fe80::1", 1).validate().is_ok());
    assert!(
        InstanceSpec::new("my-host.example", 65535)
            .validate()
            .is_ok()
    );
}

#[test]
fn service_specs_resolve_defaults_and_groups() {
    assert_eq!(
        ServiceSpec::new("", "", "svc").resolve().unwrap(),
        ("public", "DEFAULT_GROUP", "svc")
    );
    assert_eq!(
        ServiceSpec::new("ns", "", "g@@svc").resolve().unwrap(),
        ("ns", "g", "svc")
    );
    assert_eq!(
        ServiceSpec::new("", "", "").resolve().unwrap_err().field,
        Field::Service
    );
    assert_eq!(
        ServiceSpec::new("", "x", "g@@svc")
            .resolve()
            .unwrap_err()
            .field,
        Field::Service
    );
    assert_eq!(
        ServiceSpec::new(&"n".repeat(129), "", "s")
            .resolve()
            .unwrap_err()
            .field,
        Field::Namespace
    );
    assert_eq!(
        ServiceSpec::new("", "", &"s".repeat(257))
            .resolve()
            .unwrap_err()
            .field,
        Field::Service
    );
    assert_eq!(
        ServiceSpec::new("", "a\u{1}", "s")
            .resolve()
            .unwrap_err()
            .field,
        Field::Group
    );
}

#[test]
fn client_ids_know_their_kind() {
    let c = ClientId::ip_port("10.0.0.7", 8080);
    assert_eq!(c.as_str(), "10.0.0.7:8080#true");
    assert_eq!(c.kind(), ClientKind::IpPort);
    assert_eq!(c.routing_key(), Some("10.0.0.7:8080"));
    let c = ClientId::connection(1717000000000, "10.0.0.7", 53122);
    assert_eq!(c.as_str(), "1717000000000_10.0.0.7_53122");
    assert_eq!(c.kind(), ClientKind::Connection);
    assert!(ClientId::parse("").is_err());
    // Inline exactly when at most 24 bytes, whatever the lengths of the pieces.
    for ip in ["10.0.0.7", "192.168.100.10", "192.168.100.200"] {
        for port in [80, 8080, 65535] {
            let c = ClientId::ip_port(ip, port);
            assert_eq!(c.is_inline(), c.as_str().len() <= 24, "{c:?}");
        }
    }
    assert!(ClientId::ip_port("192.168.100.10", 8080).is_inline());
    // The id written on the stack and the one pushed piece by piece agree at every length
    // around the inline limit, every width of port, and for text that is not ASCII.
    for len in 0..=22 {
        for ip in ["9".repeat(len), "ü".repeat(len / 2)] {
            for port in [0, 9, 10, 99, 100, 999, 1_000, 9_999, 10_000, 65_535] {
                let c = ClientId::ip_port(&ip, port);
                let want = format!("{ip}:{port}#true");
                assert_eq!(c.as_str(), want);
                assert_eq!(c.is_inline(), want.len() <= 24, "{want}");
            }
        }
    }
    // Every width of port, and ids past the inline 24 bytes, read as their text.
    for port in [0, 7, 65535] {
        let ip = "fdaa:bbbb:cccc:dddd:eeee:ffff:1111:2222";
        assert_eq!(
            ClientId::ip_port(ip, port).as_str(),
            format!("{ip}:{port}#true")
        );
        assert_eq!(
            ClientId::connection(u64::MAX, ip, port).as_str(),
            format!("{}_{ip}_{port}", u64::MAX)
        );
    }
}

#[test]
fn revisions_never_go_backwards_across_restarts() {
    let me = MemberId(3);
    let first = Revision::next(Revision::ZERO, Revision::floor(1_000), me);
    let second = Revision::next(first, Revision::floor(1_000), me);
    assert!(second > first);
    // A restart 1 ms later remembers nothing but still issues a higher revision.
    let after_restart = Revision::next(Revision::ZERO, Revision::floor(1_001), me);
    assert!(after_restart > second);
    assert_eq!(after_restart.member(), me);
    // Two owners never issue equal revisions.
    let other = Revision::next(first, Revision::floor(1_000), MemberId(4));
    assert_ne!(other, second);
}

#[test]
fn cmp_parts_orders_as_the_keys_do() {
    let i = Interner::new();
    let parts = [
        ("public", "DEFAULT_GROUP", "svc"),
        ("public", "DEFAULT_GROUP", "svc-a"),
        ("public", "DEFAULT_GROUP", "sv"),
        ("public", "DEFAULT", "svc"),
        ("public", "DEFAULT_GROUPX", "svc"),
        ("publi", "c", "svc"),
        ("public", "G", "a"),
        ("pub", "lic", "G"),
        ("dev", "DEFAULT_GROUP", "svc"),
        ("public!", "DEFAULT_GROUP", "svc"),
    ];
    for (n, g, s) in parts {
        let held = Service::new(&i, n, g, s);
        for (pn, pg, ps) in parts {
            let want = held.key().as_str().cmp(&Service::key_of(pn, pg, ps));
            assert_eq!(
                held.cmp_parts(pn, pg, ps),
                want,
                "{n}/{g}/{s} vs {pn}/{pg}/{ps}"
            );
        }
    }
    // Parts holding the separator byte never equal a held service, whatever their split.
    let held = Service::new(&i, "a", "b", "c");
    assert_eq!(held.cmp_parts("a", "b", "c"), std::cmp::Ordering::Equal);
    for (pn, pg, ps) in [
        ("a\x1fb", "c", ""),
        ("a", "b\x1fc", ""),
        ("", "a", "b\x1fc"),
    ] {
        assert_ne!(held.cmp_parts(pn, pg, ps), std::cmp::Ordering::Equal);
    }
}

#[test]
fn a_conversion_from_a_held_instance_shares_what_is_unchanged_and_checks_what_changed() {
    let i = Interner::new();
    let s = svc(&i);
    let mut spec = InstanceSpec::new("10.0.0.7", 8080);
    spec.cluster = "c1".into();
    spec.metadata = vec![("version".into(), "1".into()), ("zone".into(), "a".into())];
    let held = spec.to_instance(&i, &s).unwrap();
    // A changed scalar: the stored address, cluster and metadata map are shared.
    let mut w = spec.clone();
    w.weight = 2.0;
    let inst = w.fields().to_instance_from(&i, &s, Some(&held)).unwrap();
    assert_eq!(inst, w.to_instance(&i, &s).unwrap());
    assert!(inst.metadata.shares_storage(&held.metadata));
    assert_eq!(inst.weight, 2.0);
    // Any change gives what a conversion without a held instance gives: the same
    // instance, or an error on the same field.
    let variants: [&dyn Fn(&mut InstanceSpec); 14] = [
        &|_| {},
        &|s| s.ip = "10.0.0.8".into(),
        &|s| s.ip = "a b".into(),
        &|s| s.port = 0,
        &|s| s.weight = -1.0,
        &|s| s.cluster = String::new(),
        &|s| s.cluster = "DEFAULT".into(),
        &|s| s.cluster = "c 2".into(),
        &|s| s.metadata.reverse(),
        &|s| s.metadata.push(("zone".into(), "b".into())),
        &|s| s.metadata.pop().map_or((), drop),
        &|s| s.metadata.push((String::new(), "x".into())),
        &|s| s.instance_id = Some("my-id".into()),
        &|s| s.instance_id = Some("10.0.0.7#8080#c1#DEFAULT_GROUP@@demo-svc".into()),
    ];
    for (n, f) in variants.iter().enumerate() {
        let mut v = spec.clone();
        f(&mut v);
        let from_held = v.fields().to_instance_from(&i, &s, Some(&held));
        match (from_held, v.to_instance(&i, &s)) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "variant {n}");
                assert_eq!(a.instance_id(&s), b.instance_id(&s), "variant {n}");
                assert!(a.metadata.shares_storage(&b.metadata), "variant {n}");
            }
            (Err(a), Err(b)) => assert_eq!(a.field, b.field, "variant {n}"),
            (a, b) => panic!("variant {n}: {a:?} from the held instance, {b:?} without"),
        }
    }
    // A held custom id is kept while it differs from the default id.
    let mut c = spec;
    c.instance_id = Some("my-id".into());
    let held = c.to_instance(&i, &s).unwrap();
    c.weight = 3.0;
    let inst = c.fields().to_instance_from(&i, &s, Some(&held)).unwrap();
    assert_eq!(inst.instance_id(&s), "my-id");
}

/// An instance's IPv4 bits are its ip's, whichever way it is converted: parsed for a new
/// ip (none for `0.0.0.0`, a non-canonical form, a host name or an IPv6 address), kept
/// from the held instance only while the ip is the held one.
#[test]
fn an_instance_holds_the_ipv4_bits_of_its_ip() {
    let i = Interner::new();
    let s = svc(&i);
    let ips = [
        ("10.0.0.7", Some([10, 0, 0, 7])),
        ("255.255.255.255", Some([255; 4])),
        ("1.22.199.250", Some([1, 22, 199, 250])),
        ("0.0.0.0", None),
        ("010.0.0.7", None),
        ("10.0.0", None),
        ("host-a", None),
        ("::1", None),
        ("::ffff:10.0.0.7", None),
    ];
    for (ip, octets) in ips {
        let want = octets.map(u32::from_le_bytes);
        assert_eq!(Ipv4Bits::of(ip).get(), want, "{ip}");
        let inst = InstanceSpec::new(ip, 80).to_instance(&i, &s).unwrap();
        assert_eq!(inst.ipv4.get(), want, "{ip}");
        if let Some(o) = octets {
            assert_eq!(Ipv4Bits::from_octets(o), inst.ipv4, "{ip}");
        }
        // From a held instance: of the same ip (its bits kept), of every other ip.
        for (held_ip, _) in ips {
            let held = InstanceSpec::new(held_ip, 80).to_instance(&i, &s).unwrap();
            let mut spec = InstanceSpec::new(ip, 80);
            spec.weight = 2.0;
            let inst = spec.fields().to_instance_from(&i, &s, Some(&held)).unwrap();
            assert_eq!(inst.ipv4.get(), want, "{ip} from {held_ip}");
        }
    }
    assert_eq!(Ipv4Bits::from_octets([0; 4]).get(), None);
}

/// `same_address` answers as comparing the texts and ports does, for ips with and
/// without IPv4 bits (the bits decide when either has some, the text otherwise).
#[test]
fn same_address_is_the_ip_text_and_port_compared() {
    let i = Interner::new();
    let s = svc(&i);
    let ips = [
        "10.0.0.7",
        "10.0.0.70",
        "255.255.255.255",
        "0.0.0.0",
        "010.0.0.7",
        "host-a",
        "host-b",
        "::1",
        "::ffff:10.0.0.7",
        "a-host-name-longer-than-15",
        "a-host-name-longer-than-16",
    ];
    for a in ips {
        for b in ips {
            for (pa, pb) in [(80, 80), (80, 81)] {
                let x = InstanceSpec::new(a, pa).to_instance(&i, &s).unwrap();
                let y = InstanceSpec::new(b, pb).to_instance(&i, &s).unwrap();
                let want = a == b && pa == pb;
                assert_eq!(x.same_address(&y), want, "{a}:{pa} and {b}:{pb}");
            }
        }
    }
}

/// A conversion from a held instance tells a request equal to it in every field (it builds
/// nothing) from one that makes another instance, whichever field differs.
#[test]
fn a_conversion_tells_the_held_instance_from_a_changed_one() {
    let i = Interner::new();
    let s = svc(&i);
    let mut spec = InstanceSpec::new("10.0.0.7", 8080);
    spec.metadata = vec![("version".into(), "1".into()), ("zone".into(), "a".into())];
    let held = spec.to_instance(&i, &s).unwrap();
    let is_held =
        |v: &InstanceSpec, held: &Instance| match v.fields().convert(&i, &s, Some(held)).unwrap() {
            Conversion::Held => true,
            Conversion::New(inst) => {
                assert_ne!(&inst, held, "{v:?}: equal, yet built");
                assert_eq!(inst, v.to_instance(&i, &s).unwrap(), "{v:?}");
                false
            }
        };
    assert!(is_held(&spec, &held));
    // The default cluster named either way is the held one.
    let mut v = spec.clone();
    v.cluster = "DEFAULT".into();
    assert!(is_held(&v, &held));
    // A custom id equal to the default one is the default.
    v.instance_id = Some(held.instance_id(&s));
    assert!(is_held(&v, &held));
    // The same metadata in another order, or with a key repeated (its last value
    // kept), is the held map.
    let mut v = spec.clone();
    v.metadata.reverse();
    assert!(is_held(&v, &held));
    let mut v = spec.clone();
    v.metadata.insert(0, ("zone".into(), "old".into()));
    assert!(is_held(&v, &held));
    let changes: [&dyn Fn(&mut InstanceSpec); 10] = [
        &|s| s.ip = "10.0.0.8".into(),
        &|s| s.port = 8081,
        &|s| s.weight = 2.0,
        &|s| s.healthy = false,
        &|s| s.enabled = false,
        &|s| s.cluster = "c1".into(),
        &|s| s.metadata[1].1 = "b".into(),
        &|s| s.metadata.pop().map_or((), drop),
        &|s| s.metadata.push(("zz".into(), "b".into())),
        &|s| s.instance_id = Some("my-id".into()),
    ];
    for (n, f) in changes.iter().enumerate() {
        let mut v = spec.clone();
        f(&mut v);
        assert!(!is_held(&v, &held), "change {n}");
    }
    // A held custom id: the same request is the held instance, one without it is not.
    let mut c = spec.clone();
    c.instance_id = Some("my-id".into());
    let held = c.to_instance(&i, &s).unwrap();
    assert!(is_held(&c, &held));
    assert!(!is_held(&spec, &held));
    // Without a held instance, every request builds one.
    assert!(matches!(
        spec.fields().convert(&i, &s, None).unwrap(),
        Conversion::New(_)
    ));
    // An invalid changed field is refused as without a held instance.
    let mut bad = spec;
    bad.weight = -1.0;
    let e = bad.fields().convert(&i, &s, Some(&held)).unwrap_err();
    assert_eq!(e.field, Field::Weight);
}

/// Whether a publication is a batch is the form of its instances: a batch of one stays a
/// batch (replaced as a whole), and differs from the single registration of the same
/// instance.
#[test]
fn a_batch_of_one_is_a_batch() {
    let i = Interner::new();
    let s = svc(&i);
    let inst = InstanceSpec::new("10.0.0.7", 8080)
        .to_instance(&i, &s)
        .unwrap();
    let single = Publication::single(s.clone(), inst.clone());
    let batch = Publication::batch(s.clone(), vec![inst.clone()]);
    assert!(!single.is_batch());
    assert!(batch.is_batch());
    assert_ne!(single, batch);
    assert_eq!(&*single.instances, &*batch.instances);
    assert!(Publication::batch(s, vec![inst.clone(), inst]).is_batch());
}

/// IPs of up to 15 bytes (every IPv4 address) are held inline; longer ones (IPv6, host
/// names) keep their text exactly.
#[test]
fn instance_ips_keep_their_text() {
    let i = Interner::new();
    let s = svc(&i);
    for (ip, inline) in [
        ("10.0.0.7", true),
        ("255.255.255.255", true),
        ("2001:db8::8a2e:370:7334", false),
        ("node-17.eu-west.example.com", false),
    ] {
        let inst = InstanceSpec::new(ip, 8080).to_instance(&i, &s).unwrap();
        assert_eq!(&*inst.ip, ip);
        assert_eq!(inst.ip.is_inline(), inline, "{ip}");
        assert_eq!(inst.address(), format!("{ip}:8080"));
    }
}

/// `convert_into` writes a different instance into the caller's slot (what `convert`
/// returns), and leaves the slot empty for the held instance (also when it was found
/// equal only once built: a custom id, or metadata in another order) and on an error.
#[test]
fn a_conversion_into_a_slot_fills_it_only_for_a_new_instance() {
    let i = Interner::new();
    let s = svc(&i);
    let mut spec = InstanceSpec::new("10.0.0.7", 8080);
    spec.metadata = vec![("version".into(), "1".into()), ("zone".into(), "a".into())];
    spec.instance_id = Some("my-id".into());
    let held = spec.to_instance(&i, &s).unwrap();
    let mut reordered = spec.clone();
    reordered.metadata.reverse();
    for v in [&spec, &reordered] {
        let mut slot = None;
        let r = v.convert_into(&i, &s, Some(&held), &mut slot).unwrap();
        assert_eq!(r, Converted::Held, "{v:?}");
        assert!(slot.is_none(), "{v:?}");
    }
    let mut changed = spec;
    changed.weight = 2.0;
    for held in [Some(&held), None] {
        let mut slot = None;
        let r = changed.convert_into(&i, &s, held, &mut slot).unwrap();
        assert_eq!(r, Converted::New);
        assert_eq!(slot, Some(changed.to_instance(&i, &s).unwrap()));
        assert!(matches!(
            changed.convert(&i, &s, held).unwrap(),
            Conversion::New(inst) if Some(&inst) == slot.as_ref()
        ));
    }
    let mut bad = changed;
    bad.port = 0;
    let mut slot = None;
    let e = bad
        .convert_into(&i, &s, Some(&held), &mut slot)
        .unwrap_err();
    assert_eq!(e.field, Field::Port);
    assert!(slot.is_none());
}

/// `validate_ip`'s table of host-name bytes holds exactly the letters, digits, `-`, `_`
/// and `.` (every byte value looked up); host names and addresses pass, others not.
#[test]
fn validate_ip_takes_host_names_and_addresses_only() {
    for b in 0..=255u8 {
        let host = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        let text = [b'a', b];
        let ok = std::str::from_utf8(&text).is_ok_and(|s| super::validate_ip(s).is_ok());
        assert_eq!(ok, host, "byte {b:#04x}");
        // Bytes past ASCII are not UTF-8 alone: the table itself, for every byte.
        assert_eq!(
            super::instance::HOST_BYTES[usize::from(b)],
            host,
            "table byte {b:#04x}"
        );
    }
    // The longest host name passes, one byte more does not.
    let longest = "a".repeat(crate::limits::MAX_IP_LEN);
    assert!(super::validate_ip(&longest).is_ok());
    assert!(super::validate_ip(&format!("{longest}a")).is_err());
    for ok in [
        "10.0.0.1",
        "host-a_b.example",
        "::1",
        "fe80::1",
        "0.0.0.0",
        "A9",
    ] {
        assert!(super::validate_ip(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a b", "10.0.0.1/8", "h#1", "é", &"a".repeat(1_000)] {
        assert!(super::validate_ip(bad).is_err(), "{bad:?}");
    }
}

/// `Instance`'s comparison (fixed-width fields first, the ip's text only when neither ip
/// packs as IPv4) agrees with a comparison of every field, text included, over instances
/// that differ in one field at a time: IPv4, non-canonical IPv4 text, host names and
/// IPv6 (no bits: their text decides), and each of the other fields. The comparison of their
/// publications agrees too.
#[test]
fn instances_compare_equal_exactly_when_every_field_is() {
    let i = Interner::new();
    let s = svc(&i);
    let other = Service::new(&i, "public", "DEFAULT_GROUP", "other-svc");
    let specs: Vec<InstanceSpec> = {
        let base = |ip: &str| InstanceSpec::new(ip, 8080);
        let mut v = Vec::new();
        for ip in [
            "10.0.0.7",
            "10.0.0.8",
            "010.0.0.7",
            "0.0.0.0",
            "host-a",
            "host-b",
            "::1",
        ] {
            v.push(base(ip));
        }
        let mut with = |f: &dyn Fn(&mut InstanceSpec)| {
            for ip in ["10.0.0.7", "host-a"] {
                let mut spec = base(ip);
                f(&mut spec);
                v.push(spec);
            }
        };
        with(&|s| s.port = 8081);
        with(&|s| s.weight = 2.0);
        with(&|s| s.healthy = false);
        with(&|s| s.enabled = false);
        with(&|s| s.cluster = "c1".into());
        with(&|s| s.metadata = vec![("k".into(), "v".into())]);
        with(&|s| s.metadata = vec![("k".into(), "w".into())]);
        with(&|s| s.instance_id = Some("my-id".into()));
        v
    };
    let built: Vec<Instance> = specs
        .iter()
        .map(|spec| spec.to_instance(&i, &s).unwrap())
        .collect();
    let fields = |a: &Instance| {
        (
            a.ip.as_str().to_owned(),
            a.port,
            a.weight.to_bits(),
            a.healthy,
            a.enabled,
            a.cluster.as_str().to_owned(),
            format!("{:?}", a.metadata),
            a.custom_id.as_ref().map(|n| n.as_str().to_owned()),
        )
    };
    for (x, a) in built.iter().enumerate() {
        for (y, b) in built.iter().enumerate() {
            let want = fields(a) == fields(b);
            assert_eq!(
                want,
                x == y,
                "the fixture's instances are distinct: {x}, {y}"
            );
            // A copy built again from the same spec (its own allocations) compares as
            // the original does.
            let b2 = specs[y].to_instance(&i, &s).unwrap();
            assert_eq!(a == b, want, "{a:?} == {b:?}");
            assert_eq!(a == &b2, want, "{a:?} == {b2:?} (built again)");
            let (pa, pb) = (
                Publication::single(s.clone(), a.clone()),
                Publication::single(s.clone(), b2),
            );
            assert_eq!(pa == pb, want, "publications of {a:?}, {b:?}");
            let po = Publication::single(other.clone(), a.clone());
            assert!(pa != po, "another service");
            let batch = Publication::batch(s.clone(), vec![a.clone()]);
            assert!(pa != batch, "a batch of one is not a single registration");
            assert!((batch == Publication::batch(s.clone(), vec![b.clone()])) == want);
        }
    }
}
