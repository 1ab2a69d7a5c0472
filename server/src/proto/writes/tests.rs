use super::*;
use proptest::prelude::*;

fn registration(i: u32, metadata: &[(&str, &str)], id: &str) -> pb::Registration {
    pb::Registration {
        service: Some(pb::ServiceRef {
            namespace: if i.is_multiple_of(3) {
                "ns".into()
            } else {
                String::new()
            },
            group: if i.is_multiple_of(2) {
                "G".into()
            } else {
                String::new()
            },
            name: format!("svc-{i}"),
        }),
        instance: Some(pb::Instance {
            ip: format!("10.0.{}.{}", i / 256, i % 256),
            port: 8080 + i,
            weight: f64::from(i) / 2.0,
            healthy: i.is_multiple_of(2),
            enabled: !i.is_multiple_of(3),
            cluster: if i.is_multiple_of(4) {
                String::new()
            } else {
                "c1".into()
            },
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            instance_id: id.into(),
        }),
    }
}

/// `r` holds what the generated `g` holds.
fn same_registration(r: &Received, g: &pb::Registration) -> bool {
    let s = g.service.clone().unwrap_or_default();
    if r.service() != (s.namespace.as_str(), s.group.as_str(), s.name.as_str()) {
        return false;
    }
    match (r.instance(), &g.instance) {
        (None, None) => true,
        (Some(i), Some(g)) => {
            let mut metadata: Vec<(String, String)> = g.metadata.clone().into_iter().collect();
            metadata.sort();
            i.ip == g.ip
                && i.port == g.port
                && i.weight.to_bits() == g.weight.to_bits()
                && i.healthy == g.healthy
                && i.enabled == g.enabled
                && i.cluster == g.cluster
                && i.instance_id == g.instance_id
                && i.metadata() == metadata
        }
        _ => false,
    }
}

fn same_beat(r: &Received, g: &pb::Beat) -> bool {
    let s = g.service.clone().unwrap_or_default();
    let i = r.instance().expect("a beat has its address");
    r.service() == (s.namespace.as_str(), s.group.as_str(), s.name.as_str())
        && (i.ip, i.port, i.cluster) == (g.ip.as_str(), g.port, g.cluster.as_str())
}

fn same_list(r: &[Received], g: &[pb::Registration]) -> bool {
    r.len() == g.len() && r.iter().zip(g).all(|(r, g)| same_registration(r, g))
}

/// A registration request of one instance holding `entries` metadata entries, written
/// by hand (a generated map cannot repeat a key).
fn with_metadata(entries: impl Iterator<Item = (String, String)>) -> Vec<u8> {
    let delimited = |tag, body: &[u8], out: &mut Vec<u8>| put_delimited(tag, body, out);
    let mut instance = registration(1, &[], "").instance.unwrap().encode_to_vec();
    for (k, v) in entries {
        let mut entry = Vec::new();
        delimited(1, k.as_bytes(), &mut entry);
        delimited(2, v.as_bytes(), &mut entry);
        delimited(7, &entry, &mut instance);
    }
    let mut reg = Vec::new();
    delimited(
        1,
        &registration(1, &[], "").service.unwrap().encode_to_vec(),
        &mut reg,
    );
    delimited(2, &instance, &mut reg);
    let mut req = Vec::new();
    delimited(1, &reg, &mut req);
    req
}

/// Millions of entries of a few keys are held folded (each key once, the last value),
/// not entry by entry, and read as prost reads them; many distinct keys are all kept.
#[test]
fn repeated_metadata_keys_are_folded_while_reading() {
    let n = 100_000;
    let bytes = with_metadata((0..n).map(|j| (format!("k{}", j % 3), format!("v{j}"))));
    agree(&bytes).unwrap();
    let r = RegisterRequest::decode(Bytes::from(bytes)).unwrap();
    let held = r.registrations[0].instance.as_ref().unwrap().metadata.len();
    assert!(held <= FOLD_METADATA_AT, "{held} entries held");
    let want: Vec<(String, String)> = (n - 3..n)
        .map(|j| (format!("k{}", j % 3), format!("v{j}")))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(r.registrations[0].instance().unwrap().metadata(), want);

    let distinct = 3 * FOLD_METADATA_AT;
    let bytes = with_metadata((0..distinct).map(|j| (format!("key-{j}"), "v".into())));
    agree(&bytes).unwrap();
    let r = RegisterRequest::decode(Bytes::from(bytes)).unwrap();
    assert_eq!(
        r.registrations[0].instance().unwrap().metadata().len(),
        distinct
    );
}

/// Decodes `bytes` both ways: accepted by both with the same items, or refused by
/// both with the same error.
fn agree(bytes: &[u8]) -> Result<(), String> {
    let b = || Bytes::copy_from_slice(bytes);
    let check =
        |ours: Result<bool, DecodeError>, theirs: Result<(), DecodeError>| match (ours, theirs) {
            (Ok(true), Ok(())) => Ok(()),
            (Err(a), Err(b)) if a.to_string() == b.to_string() => Ok(()),
            (a, b) => Err(format!("ours {a:?}, prost {b:?} on {bytes:02x?}")),
        };
    let g = pb::RegisterRequest::decode(b());
    check(
        RegisterRequest::decode(b()).map(|r| {
            same_list(
                &r.registrations,
                &g.clone().unwrap_or_default().registrations,
            )
        }),
        g.map(drop),
    )?;
    let g = pb::DeregisterRequest::decode(b());
    check(
        DeregisterRequest::decode(b()).map(|r| {
            same_list(
                &r.registrations,
                &g.clone().unwrap_or_default().registrations,
            )
        }),
        g.map(drop),
    )?;
    let g = pb::HeartbeatRequest::decode(b());
    check(
        HeartbeatRequest::decode(b()).map(|r| {
            let g = g.clone().unwrap_or_default();
            r.beats.len() == g.beats.len()
                && r.beats.iter().zip(&g.beats).all(|(r, g)| same_beat(r, g))
        }),
        g.map(drop),
    )?;
    let g = pb::ForwardRequest::decode(b());
    check(
        ForwardRequest::decode(b()).map(|r| {
            let g = g.clone().unwrap_or_default();
            r.from == g.from
                && same_list(&r.registrations, &g.registrations)
                && same_list(&r.deregistrations, &g.deregistrations)
                && r.beats.len() == g.beats.len()
                && r.beats.iter().zip(&g.beats).all(|(r, g)| same_beat(r, g))
        }),
        g.map(drop),
    )
}

fn sample_forward() -> pb::ForwardRequest {
    pb::ForwardRequest {
        from: "10.0.0.1:8848".into(),
        registrations: (0..4)
            .map(|i| registration(i, &[("k", "v"), ("a", "b")], ""))
            .collect(),
        deregistrations: vec![registration(7, &[], "custom")],
        beats: vec![pb::Beat {
            service: Some(pb::ServiceRef {
                name: "b".into(),
                ..Default::default()
            }),
            ip: "10.1.1.1".into(),
            port: 80,
            cluster: "c".into(),
        }],
    }
}

#[test]
fn requests_read_as_the_generated_code_reads_them_and_forward_as_received() {
    let req = pb::RegisterRequest {
        registrations: (0..50)
            .map(|i| registration(i, &[("k", "v"), ("z", "1")], if i == 3 { "x" } else { "" }))
            .collect(),
    };
    let bytes = req.encode_to_vec();
    let ours = RegisterRequest::decode(&bytes[..]).expect("valid");
    assert!(same_list(&ours.registrations, &req.registrations));
    // Each item is its message as received: re-encoded, the request is the same bytes.
    assert_eq!(ours.encode_to_vec(), bytes);
    assert_eq!(
        pb::Registration::decode(ours.registrations[3].as_bytes()).expect("an item"),
        req.registrations[3]
    );
    let f = sample_forward();
    let bytes = f.encode_to_vec();
    let ours = ForwardRequest::decode(&bytes[..]).expect("valid");
    assert_eq!(ours.encode_to_vec(), bytes);
    assert_eq!(pb::ForwardRequest::decode(&ours.encode_to_vec()[..]), Ok(f));
    agree(&bytes).unwrap();
}

/// What the fast reader leaves to prost (unknown fields, a nested message given twice,
/// which merges) still reads as prost reads it; a registration without its instance
/// has none.
#[test]
fn unusual_but_valid_encodings_read_as_prost_reads_them() {
    let r = registration(1, &[("k", "v")], "");
    let mut item = r.encode_to_vec();
    // A second `instance` that changes the port and adds metadata (merged by prost).
    let second = pb::Instance {
        port: 9,
        metadata: [("k".to_string(), "w".to_string()), ("a".into(), "b".into())].into(),
        ..Default::default()
    };
    prost::encoding::message::encode(2, &second, &mut item);
    let mut req = Vec::new();
    put_delimited(1, &item, &mut req);
    let ours = RegisterRequest::decode(&req[..]).expect("valid");
    let i = ours.registrations[0].instance().expect("instance");
    assert_eq!((i.ip, i.port), ("10.0.0.1", 9));
    assert_eq!(
        i.metadata(),
        vec![("a".into(), "b".into()), ("k".into(), "w".into())]
    );
    agree(&req).unwrap();
    // An unknown field in an item and at the top level.
    let mut item = r.encode_to_vec();
    prost::encoding::uint64::encode(15, &7, &mut item);
    let mut req = Vec::new();
    put_delimited(1, &item, &mut req);
    prost::encoding::string::encode(9, &"x".to_string(), &mut req);
    let ours = RegisterRequest::decode(&req[..]).expect("valid");
    assert!(same_registration(&ours.registrations[0], &r));
    agree(&req).unwrap();
    let bare = pb::RegisterRequest {
        registrations: vec![pb::Registration {
            service: None,
            instance: None,
        }],
    };
    let ours = RegisterRequest::decode(&bare.encode_to_vec()[..]).expect("valid");
    assert!(ours.registrations[0].instance().is_none());
    assert_eq!(ours.registrations[0].service(), ("", "", ""));
}

#[test]
fn malformed_requests_fail_with_prosts_errors() {
    let bytes = sample_forward().encode_to_vec();
    for cut in [1, 5, 17, bytes.len() / 2, bytes.len() - 1] {
        agree(&bytes[..cut]).unwrap();
    }
    // Invalid UTF-8 in an ip.
    let mut r = registration(1, &[], "").encode_to_vec();
    let at = r.windows(4).position(|w| w == b"10.0").expect("the ip");
    r[at] = 0xff;
    let mut req = Vec::new();
    put_delimited(1, &r, &mut req);
    let e = RegisterRequest::decode(&req[..]).expect_err("not UTF-8");
    assert_eq!(
        e.to_string(),
        "failed to decode Protobuf message: Instance.ip: Registration.instance: \
         RegisterRequest.registrations: invalid string value: data is not UTF-8 encoded"
    );
    agree(&req).unwrap();
}

/// Text fields beyond ASCII (checked in full when read) are the generated code's
/// strings, in requests and forwarded ones.
#[test]
fn non_ascii_text_reads_back_as_sent() {
    let mut r = registration(5, &[("clé", "välue"), ("ключ", "値")], "id-ü");
    let s = r.service.as_mut().unwrap();
    (s.namespace, s.group, s.name) = ("ñs".into(), "grüppe".into(), "服务-😀".into());
    r.instance.as_mut().unwrap().cluster = "clüster".into();
    let req = pb::RegisterRequest {
        registrations: vec![r.clone(), registration(6, &[], "")],
    };
    let bytes = req.encode_to_vec();
    agree(&bytes).unwrap();
    let ours = RegisterRequest::decode(&bytes[..]).expect("valid");
    assert!(same_list(&ours.registrations, &req.registrations));
    let i = ours.registrations[0].instance().unwrap();
    assert_eq!((i.cluster, i.instance_id), ("clüster", "id-ü"));
    assert_eq!(ours.registrations[0].service(), ("ñs", "grüppe", "服务-😀"));
    // The ip as `address` gave it, or any other text (read from the item instead).
    let (ip, _) = ours.registrations[0].address().unwrap();
    let copy = ip.to_string();
    for given in [ip, "10.9.9.9", copy.as_str()] {
        let at = ours.registrations[0].instance_at(given).unwrap();
        assert_eq!((at.ip, at.cluster), (ip, "clüster"));
    }
    // The default cluster's name, taken without a check, and names that only start
    // like it.
    for cluster in ["DEFAULT", "DEFAULT2", "DEFAUL", ""] {
        let mut r = registration(1, &[], "");
        r.instance.as_mut().unwrap().cluster = cluster.into();
        let req = pb::RegisterRequest {
            registrations: vec![r],
        };
        let ours = RegisterRequest::decode(&req.encode_to_vec()[..]).expect("valid");
        assert_eq!(ours.registrations[0].instance().unwrap().cluster, cluster);
    }
    let f = pb::ForwardRequest {
        from: "nöde:1".into(),
        registrations: vec![r],
        ..Default::default()
    }
    .encode_to_vec();
    agree(&f).unwrap();
}

/// The lists are sized once from a scan of the request (exactly, for valid input),
/// and a scan of damaged input stops without failing.
#[test]
fn lists_are_sized_by_a_scan_of_the_request() {
    let req = pb::RegisterRequest {
        registrations: (0..5).map(|i| registration(i, &[], "")).collect(),
    };
    let ours = RegisterRequest::decode(&req.encode_to_vec()[..]).expect("valid");
    assert_eq!(ours.registrations.capacity(), 5);
    let mut f = sample_forward();
    f.registrations.push(registration(9, &[], ""));
    let bytes = f.encode_to_vec();
    assert_eq!(count_items(&bytes), [0, 1, 5, 1, 1]);
    let ours = ForwardRequest::decode(&bytes[..]).expect("valid");
    assert_eq!(
        (
            ours.registrations.capacity(),
            ours.deregistrations.capacity(),
            ours.beats.capacity()
        ),
        (5, 1, 1)
    );
    for cut in 0..bytes.len() {
        assert!(count_items(&bytes[..cut]).iter().sum::<usize>() <= 8);
    }
}

/// A request that claims more items than a request may hold is not sized for them
/// before they are read: its list grows as they are. (3,000,000 claimed items take
/// 6 MB of request and would have reserved ~360 MB at once.)
#[test]
fn a_claim_past_the_limit_reserves_no_more_than_the_limit() {
    let items = |tag: u8, n: usize| -> Vec<u8> { [tag, 0x00].repeat(n) };
    assert_eq!(count_items(&items(0x0a, 3_000_000))[1], 3_000_000);
    assert_eq!(presize(3_000_000), PRESIZE_LIMIT);
    assert_eq!(
        presize(count_items(&items(0x12, 3_000_000))[2]),
        PRESIZE_LIMIT
    );
    assert_eq!(presize(7), 7);
    // Past the limit the list grows: every item is read (the API then refuses the
    // request for its number of items).
    let many = RegisterRequest::decode(&items(0x0a, 20_000)[..]).expect("empty items read");
    assert_eq!(many.registrations.len(), 20_000);
    // A damaged first item among millions of claimed ones: refused as prost refuses it.
    let mut damaged = vec![0x0a, 0x01, 0x00];
    damaged.extend(items(0x0a, 3_000_000));
    let err = RegisterRequest::decode(&damaged[..]).expect_err("tag 0 is refused");
    assert!(err.to_string().contains("invalid tag value: 0"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: both readers accept the same inputs, with the same items, and refuse
    /// the others with the same error.
    #[test]
    fn any_bytes_read_as_prost_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(agree(&bytes), Ok(()));
    }

    /// Valid requests with bytes flipped, cut or inserted (mostly near-valid input).
    #[test]
    fn damaged_requests_read_as_prost_reads_them(
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0..3u8,
    ) {
        let mut bytes = sample_forward().encode_to_vec();
        let i = at.index(bytes.len());
        match how {
            0 => bytes[i] = byte,
            1 => bytes.truncate(i),
            _ => bytes.insert(i, byte),
        }
        prop_assert_eq!(agree(&bytes), Ok(()));
    }
}
