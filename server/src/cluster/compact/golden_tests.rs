//! Golden bytes of the compact layout (version 3): a small fixed batch and a small
//! snapshot chunk, each compared with a byte vector written out here field by field (read
//! from the layout's documentation in `compact.rs` and from the encoder), and each
//! decoded back from those bytes. The round-trip tests pass for any change made to the
//! encoder and the decoder alike (string indices assigned in another order, a field
//! written another way on both sides); these fail for it, as a node of another build
//! would. A change that fails them changes the bytes on the wire: it needs a new
//! [`VERSION`], and these vectors are then rewritten from the new layout's documentation.
//!
//! Numbers in the comments: `s<i>` string `i` of the table, `v` an LEB128 varint.

use super::tests::node;
use super::{decode_changes, decode_records, encode_changes, encode_records, record_count};
use distro_core::model::{
    ClientId, InstanceSpec, Ipv4Bits, Metadata, Publication, Revision, Service, ServiceSpec,
};
use distro_core::name::Name;
use distro_core::{ClientChange, ClientRecord, Instance, MemberId, SnapshotCursor};
use std::sync::Arc;

/// The millis of the batch's revisions and of its connection id of today
/// (2026-12-06T09:00:00Z).
const NOW_MS: u64 = 1_796_547_600_000;
/// The batch's lowest logical revision: the floor of `NOW_MS` (`NOW_MS << 12`).
const BASE: u64 = NOW_MS << 12;

/// The batch's records, as an owner's sync batch holds them.
///
/// 1. A string id (`plain-client`), owner and writer member 0, at the base: service A,
///    10.1.2.3:8080, healthy and enabled, weight 1, cluster `DEFAULT`.
/// 2. An ip:port id (`10.1.2.4:8081#true`, derived), owner and writer member 1, 3 above
///    the base (low bits only): service A, 10.1.2.4:8081, healthy, disabled, weight 2.5,
///    cluster `c-1`, metadata `{k: "", zone: a}`, custom id `custom`.
/// 3. A connection id of today (`1796547600123_10.1.2.5_40000`, derived), 2 × 4,096 above
///    the base (no low bits): a batch publication of service A, 10.1.2.5:9000 with the
///    same metadata map (shared: one table entry) and 0.0.0.0:9001 unhealthy (no IPv4
///    bits stored: packed from its text).
/// 4. A connection id of escaped millis (2^48 - 1, the first escaped value), 4,096 + 291
///    above the base: two publications, service A with fe80::1:443 (IPv6) first (the id's
///    ip), then service B (`svc-a` in group `g2`: its name is sent again, service names
///    being appended to the strings without a lookup) with 10.1.2.6:80.
/// 5. An ip:port id of a host name (`host-a.example:80#true`, derived; the ip a string),
///    300 × 4,096 above the base (a distance of two bytes): service B.
/// 6. A deletion of `1796547600999_10.9.9.9_1` (its id a string: deletions carry no
///    instance), writer member 1, 5 above the base.
fn golden_changes(node: &distro_core::Node) -> Vec<ClientChange> {
    let interner = node.registry().interner();
    let svc_a = Service::new(interner, "ns", "g", "svc-a");
    let svc_b = Service::new(interner, "ns", "g2", "svc-a");
    let instance = |ip: &str, port: u16| Instance {
        ip: ip.into(),
        ipv4: Ipv4Bits::of(ip),
        port,
        weight: 1.0,
        healthy: true,
        enabled: true,
        cluster: interner.default_cluster(),
        metadata: Metadata::EMPTY,
        custom_id: None,
    };
    let revision = |above: u64, member: u16| Revision::new(BASE + above, MemberId(member));
    let record = |id: ClientId, revision, owner: u16, publications: Vec<Publication>| {
        ClientChange::Upsert(ClientRecord {
            id,
            revision,
            owner: MemberId(owner),
            publications: publications.into_iter().map(Arc::new).collect(),
        })
    };
    let map = Metadata::from_pairs(interner, [("zone", "a"), ("k", "")]);
    let custom = Instance {
        weight: 2.5,
        enabled: false,
        cluster: interner.intern("c-1"),
        metadata: map.clone(),
        custom_id: Some(Name::new("custom")),
        ..instance("10.1.2.4", 8081)
    };
    let mapped = Instance {
        metadata: map,
        ..instance("10.1.2.5", 9000)
    };
    let any = Instance {
        healthy: false,
        ..instance("0.0.0.0", 9001)
    };
    assert_eq!(
        any.ipv4,
        Ipv4Bits::from_octets([0; 4]),
        "no bits for 0.0.0.0"
    );
    vec![
        record(
            ClientId::parse("plain-client").unwrap(),
            revision(0, 0),
            0,
            vec![Publication::single(
                svc_a.clone(),
                instance("10.1.2.3", 8080),
            )],
        ),
        record(
            ClientId::ip_port("10.1.2.4", 8081),
            revision(3, 1),
            1,
            vec![Publication::single(svc_a.clone(), custom)],
        ),
        record(
            ClientId::connection(NOW_MS + 123, "10.1.2.5", 40_000),
            revision(2 << 12, 0),
            0,
            vec![Publication::batch(svc_a.clone(), vec![mapped, any])],
        ),
        record(
            ClientId::connection((1 << 48) - 1, "fe80::1", 7),
            revision((1 << 12) + 291, 0),
            0,
            vec![
                Publication::single(svc_a, instance("fe80::1", 443)),
                Publication::single(svc_b.clone(), instance("10.1.2.6", 80)),
            ],
        ),
        record(
            ClientId::ip_port("host-a.example", 80),
            revision(300 << 12, 0),
            0,
            vec![Publication::single(svc_b, instance("host-a.example", 80))],
        ),
        ClientChange::Delete {
            id: ClientId::parse("1796547600999_10.9.9.9_1").unwrap(),
            revision: revision(5, 1),
        },
    ]
}

/// The bytes of [`golden_changes`], field by field.
fn golden_batch() -> Vec<u8> {
    let mut w: Vec<u8> = Vec::new();
    // u8 version, v n_records, v base.
    w.push(3); // version 3
    w.push(6); // 6 records
    // base 1796547600000 << 12 = 0x1a_24a9_4de8_0000: 8 groups of 7 bits
    w.extend([0x80, 0x80, 0xa0, 0xef, 0x94, 0x95, 0x89, 0x0d]);
    // v n_strings, v len[n_strings], blob: strings in the order the encoder meets them
    // (a record's string id, its owner, a new service's namespace, group and name, an
    // instance's ip text, cluster, new metadata map's keys and values, custom id); a
    // string id, a deletion's id and a service's name are appended without a lookup.
    w.push(17); // 17 strings
    let strings: [&[u8]; 17] = [
        b"plain-client",             // s0: record 1's id
        b"10.0.0.1:8848",            // s1: member 0, owner of records 1, 3, 4, 5
        b"ns",                       // s2: service A's namespace
        b"g",                        // s3: service A's group
        b"svc-a",                    // s4: service A's name
        b"DEFAULT",                  // s5: record 1's cluster
        b"10.0.0.2:8848",            // s6: member 1, owner of record 2
        b"c-1",                      // s7: record 2's cluster
        b"k",                        // s8: the map's first key (keys sorted)
        b"",                         // s9: its value
        b"zone",                     // s10: the second key
        b"a",                        // s11: its value
        b"custom",                   // s12: record 2's custom id
        b"g2",                       // s13: service B's group (its namespace found)
        b"svc-a",                    // s14: service B's name (again: no lookup)
        b"host-a.example",           // s15: record 5's ip
        b"1796547600999_10.9.9.9_1", // s16: record 6's (the deletion's) id
    ];
    w.extend([12, 13, 2, 1, 5, 7, 13, 3, 1, 0, 4, 1, 6, 2, 5, 14, 24]); // len[17]
    for s in strings {
        w.extend_from_slice(s);
    }
    // v n_maps, per map: v n, n × (v key, v value).
    w.push(1); // 1 map
    w.extend([2, 8, 9, 10, 11]); // map 0: 2 entries, s8 = s9, s10 = s11
    // v n_services, per service: v namespace, v group, v name.
    w.push(2); // 2 services
    w.extend([2, 3, 4]); // service 0 (A): s2, s3, s4
    w.extend([2, 13, 14]); // service 1 (B): s2, s13, s14

    // Record 1: a string id.
    w.push(0x00); // head: a state, id form 0 (a string)
    w.push(0); // id: s0
    w.push(0); // v d = 0 << 1 (at the base, no low bits)
    w.push(0); // v member 0
    w.push(1); // v owner: s1
    w.push(1); // v n_publications 1
    w.push(0); // v service 0
    w.push(2); // v 1 instance << 1, not a batch
    w.push(0x13); // flags: healthy 1 | enabled 2 | IPv4 16
    w.extend([10, 1, 2, 3]); // ip 10.1.2.3 (network order)
    w.extend([0x90, 0x1f]); // u16 port 8080
    w.push(5); // v cluster: s5

    // Record 2: an ip:port id.
    w.push(0x02); // head: a state, id form 1 (ip:port; nothing more sent)
    w.push(1); // v d = 0 << 1 | 1 (low bits follow)
    w.push(3); // v low 3
    w.push(1); // v member 1
    w.push(6); // v owner: s6
    w.push(1); // v n_publications 1
    w.push(0); // v service 0
    w.push(2); // v 1 instance << 1, not a batch
    // flags: healthy 1 | custom id 4 | weight 8 | IPv4 16 | metadata 64 (not enabled)
    w.push(0x5d);
    w.extend([10, 1, 2, 4]); // ip 10.1.2.4
    w.extend([0x91, 0x1f]); // u16 port 8081
    w.extend([0, 0, 0, 0, 0, 0, 0x04, 0x40]); // f64 weight 2.5
    w.push(7); // v cluster: s7
    w.push(0); // v metadata map 0
    w.push(12); // v custom id: s12

    // Record 3: a connection id of today's millis.
    w.push(0x04); // head: a state, id form 2 (connection)
    // u64: millis 1796547600123 (0x1a2_4a94_defb) in bits 0-47, port 40000 in 48-63
    w.extend([0xfb, 0xde, 0x94, 0x4a, 0xa2, 0x01, 0x40, 0x9c]);
    w.push(4); // v d = 2 << 1 (2 × 4,096 above the base, no low bits)
    w.push(0); // v member 0
    w.push(1); // v owner: s1
    w.push(1); // v n_publications 1
    w.push(0); // v service 0
    w.push(5); // v 2 instances << 1 | 1 (a batch)
    w.push(0x53); // flags: healthy 1 | enabled 2 | IPv4 16 | metadata 64
    w.extend([10, 1, 2, 5]); // ip 10.1.2.5
    w.extend([0x28, 0x23]); // u16 port 9000
    w.push(5); // v cluster: s5 (found again)
    w.push(0); // v metadata map 0 (shared with record 2's instance)
    w.push(0x12); // flags: enabled 2 | IPv4 16
    w.extend([0, 0, 0, 0]); // ip 0.0.0.0
    w.extend([0x29, 0x23]); // u16 port 9001
    w.push(5); // v cluster: s5

    // Record 4: a connection id of escaped millis.
    w.push(0x04); // head: a state, id form 2 (connection)
    // u64: bits 0-47 all set (escaped), port 7 in bits 48-63
    w.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00]);
    w.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]); // v millis 2^48 - 1
    w.push(3); // v d = 1 << 1 | 1 (4,096 above the base, low bits follow)
    w.extend([0xa3, 0x02]); // v low 291
    w.push(0); // v member 0
    w.push(1); // v owner: s1
    w.push(2); // v n_publications 2
    w.push(0); // v service 0
    w.push(2); // v 1 instance << 1, not a batch
    w.push(0x23); // flags: healthy 1 | enabled 2 | IPv6 32
    w.extend([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]); // ip fe80::1
    w.extend([0xbb, 0x01]); // u16 port 443
    w.push(5); // v cluster: s5
    w.push(1); // v service 1
    w.push(2); // v 1 instance << 1, not a batch
    w.push(0x13); // flags: healthy 1 | enabled 2 | IPv4 16
    w.extend([10, 1, 2, 6]); // ip 10.1.2.6
    w.extend([0x50, 0x00]); // u16 port 80
    w.push(5); // v cluster: s5

    // Record 5: an ip:port id of a host name.
    w.push(0x02); // head: a state, id form 1 (ip:port)
    w.extend([0xd8, 0x04]); // v d = 300 << 1 = 600 (no low bits)
    w.push(0); // v member 0
    w.push(1); // v owner: s1
    w.push(1); // v n_publications 1
    w.push(1); // v service 1
    w.push(2); // v 1 instance << 1, not a batch
    w.push(0x03); // flags: healthy 1 | enabled 2 (neither IPv4 nor IPv6: a string)
    w.push(15); // v ip: s15
    w.extend([0x50, 0x00]); // u16 port 80
    w.push(5); // v cluster: s5

    // Record 6: a deletion.
    w.push(0x01); // head: a deletion, id form 0 (a string)
    w.push(16); // v id: s16
    w.push(1); // v d = 0 << 1 | 1 (low bits follow)
    w.push(5); // v low 5
    w.push(1); // v member 1
    w
}

#[test]
fn a_fixed_batch_encodes_to_the_golden_bytes_and_decodes_from_them() {
    let owner = node(0);
    let replica = node(1);
    assert_eq!(owner.member_addr(MemberId(0)).as_str(), "10.0.0.1:8848");
    assert_eq!(owner.member_addr(MemberId(1)).as_str(), "10.0.0.2:8848");
    let changes = golden_changes(&owner);
    let golden = golden_batch();
    let bytes = encode_changes(&owner, &changes);
    assert_eq!(
        bytes, golden,
        "the layout's bytes changed: a node of another build reads them otherwise"
    );
    // Head 10, strings 1 + 17 + 113, map 6, services 7; records 16, 26, 32, 54, 13, 5.
    assert_eq!(bytes.len(), 300);
    // And back: the fixed bytes (not the encoder's) decode to the changes.
    assert_eq!(record_count(&golden), Some(6));
    assert_eq!(decode_changes(&replica, &golden).expect("valid"), changes);
    // The derived ids are rebuilt from the instances (none of them is in the bytes).
    let ids: Vec<String> = decode_changes(&replica, &golden)
        .expect("valid")
        .iter()
        .map(|c| c.id().as_str().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "plain-client",
            "10.1.2.4:8081#true",
            "1796547600123_10.1.2.5_40000",
            "281474976710655_fe80::1_7",
            "host-a.example:80#true",
            "1796547600999_10.9.9.9_1",
        ]
    );
}

#[test]
fn a_fixed_snapshot_chunk_encodes_to_the_golden_bytes_and_decodes_from_them() {
    // A chunk is framed as a batch is (the same head and tables; its base the lowest
    // revision of its clients), its records the stored clients' (`Encoder::stored`, the
    // path of a flush's batch too): an ip:port client written twice (its revision one
    // above the floor: low bits) and a connection client, registered at 10 ms (revision
    // floor 10 << 12 = 40,960).
    let owner = node(0);
    let replica = node(1);
    let svc = ServiceSpec::new("ns", "g", "svc-c");
    let ip_port = ClientId::ip_port("10.2.0.2", 8080);
    owner
        .register(&ip_port, &svc, &InstanceSpec::new("10.2.0.2", 8080), 10)
        .unwrap();
    let mut spec = InstanceSpec::new("10.2.0.2", 8080);
    spec.weight = 3.0;
    owner.register(&ip_port, &svc, &spec, 10).unwrap();
    let connection = ClientId::connection(NOW_MS + 456, "10.2.0.1", 51_000);
    owner
        .register(&connection, &svc, &InstanceSpec::new("10.2.0.1", 8080), 10)
        .unwrap();
    let mut stored = owner.snapshot_chunk(SnapshotCursor::default()).records;
    // In the order of their ids (the chunk's is the shards'): the ip:port client first.
    stored.sort_by_key(|c| c.id().as_str().to_string());
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].revision(), Revision::new(40_961, MemberId(0)));
    assert_eq!(stored[1].revision(), Revision::new(40_960, MemberId(0)));

    let mut w: Vec<u8> = Vec::new();
    w.push(3); // version 3
    w.push(2); // 2 records
    w.extend([0x80, 0xc0, 0x02]); // v base 40,960 (0xa000)
    w.push(5); // 5 strings
    w.extend([13, 2, 1, 5, 7]); // their lengths
    w.extend_from_slice(b"10.0.0.1:8848"); // s0: member 0, the owner
    w.extend_from_slice(b"ns"); // s1: namespace
    w.extend_from_slice(b"g"); // s2: group
    w.extend_from_slice(b"svc-c"); // s3: service name
    w.extend_from_slice(b"DEFAULT"); // s4: cluster
    w.push(0); // no metadata maps
    w.push(1); // 1 service
    w.extend([1, 2, 3]); // service 0: s1, s2, s3
    // Record 1: the ip:port client.
    w.push(0x02); // head: a state, id form 1 (ip:port)
    w.push(1); // v d = 0 << 1 | 1 (low bits follow)
    w.push(1); // v low 1
    w.push(0); // v member 0
    w.push(0); // v owner: s0
    w.push(1); // v n_publications 1
    w.push(0); // v service 0
    w.push(2); // v 1 instance << 1, not a batch
    w.push(0x1b); // flags: healthy 1 | enabled 2 | weight 8 | IPv4 16
    w.extend([10, 2, 0, 2]); // ip 10.2.0.2
    w.extend([0x90, 0x1f]); // u16 port 8080
    w.extend([0, 0, 0, 0, 0, 0, 0x08, 0x40]); // f64 weight 3.0
    w.push(4); // v cluster: s4
    // Record 2: the connection client.
    w.push(0x04); // head: a state, id form 2 (connection)
    // u64: millis 1796547600456 (0x1a2_4a94_e048) in bits 0-47, port 51000 in 48-63
    w.extend([0x48, 0xe0, 0x94, 0x4a, 0xa2, 0x01, 0x38, 0xc7]);
    w.push(0); // v d = 0 (at the base)
    w.push(0); // v member 0
    w.push(0); // v owner: s0
    w.push(1); // v n_publications 1
    w.push(0); // v service 0
    w.push(2); // v 1 instance << 1, not a batch
    w.push(0x13); // flags: healthy 1 | enabled 2 | IPv4 16
    w.extend([10, 2, 0, 1]); // ip 10.2.0.1
    w.extend([0x90, 0x1f]); // u16 port 8080
    w.push(4); // v cluster: s4

    assert_eq!(encode_records(&owner, &stored), w);
    let want: Vec<ClientRecord> = stored.iter().map(|c| c.to_record()).collect();
    assert_eq!(decode_records(&replica, &w).expect("valid"), want);
    assert_eq!(want[1].id, connection);
}
