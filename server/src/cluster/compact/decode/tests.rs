//! Tests of the record loop's one-word read of a state record's common fields
//! ([`super::SINGLE`]): the same records, checks and refusals as field by field; of the
//! IPv4 text it writes and of the batch's ids taken as text.

use super::super::tests::{as_records, node, one_service_tables, tables};
use super::super::text::ipv4_text;
use super::super::{ENABLED, HEALTHY, ID_IP_PORT, IPV4, encode_records};
use super::{SINGLE, SINGLE_MASK, decode_changes, decode_records};
use distro_core::SnapshotCursor;
use distro_core::model::{ClientId, InstanceSpec, ServiceSpec};

/// A batch of one ip:port state record of base `base` (strings: an owner, "", "g", "svc",
/// "DEFAULT"; one service ("", g, svc)): the record's fields after its head (revision,
/// member, owner, publications, service, instances) as the bytes given, then one packed
/// instance (10.0.0.9:80, cluster DEFAULT). Returns it and the offset of the fields.
fn batch(base: u64, fields: [&[u8]; 6]) -> (Vec<u8>, usize) {
    let mut b = one_service_tables(base);
    b.push(ID_IP_PORT << 1);
    let at = b.len();
    for f in fields {
        b.extend_from_slice(f);
    }
    b.extend_from_slice(&[HEALTHY | ENABLED | IPV4, 10, 0, 0, 9]);
    b.extend_from_slice(&80u16.to_le_bytes());
    b.push(4);
    (b, at)
}

/// The record's fields as the encoder writes them (each a varint of one byte).
const FIELDS: [&[u8]; 6] = [&[6], &[1], &[0], &[1], &[0], &[2]];

/// The field `k` of [`FIELDS`] as a varint of two bytes (the same value, longer): the
/// record is then read field by field.
fn longer(k: usize) -> [Vec<u8>; 6] {
    let mut f = FIELDS.map(<[u8]>::to_vec);
    f[k] = vec![f[k][0] | 0x80, 0];
    f
}

fn of(f: &[Vec<u8>; 6]) -> [&[u8]; 6] {
    f.each_ref().map(Vec::as_slice)
}

#[test]
fn a_record_read_as_one_word_comes_back_as_read_field_by_field() {
    let replica = node(1);
    let (b, at) = batch(7, FIELDS);
    let w = u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    assert_eq!(
        w & SINGLE_MASK,
        SINGLE,
        "the encoder's form is read as one word"
    );
    let got = decode_changes(&replica, &b).expect("valid");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id().as_str(), "10.0.0.9:80#true");
    // Revision (3 << 12 | 7) << 10 | member 1.
    assert_eq!(got[0].revision().0, (3 << 12 | 7) << 10 | 1);
    for k in 0..6 {
        let f = longer(k);
        let (slow, sat) = batch(7, of(&f));
        let w = u64::from_le_bytes(slow[sat..sat + 8].try_into().expect("8 bytes"));
        assert_ne!(w & SINGLE_MASK, SINGLE, "field {k} longer: field by field");
        assert_eq!(decode_changes(&replica, &slow).expect("valid"), got, "{k}");
    }
}

#[test]
fn a_record_read_as_one_word_is_refused_at_the_fields_bytes() {
    let replica = node(1);
    let expect = |b: &[u8], want: String| {
        let e = decode_changes(&replica, b).expect_err(&want).to_string();
        assert!(e.contains(&want), "{e:?} lacks {want:?}");
    };
    // Each refusal names the byte of its field, in the one-word form and with the
    // revision one byte longer (field by field, every field after it one byte later).
    for longer_revision in [false, true] {
        let revision: &[u8] = if longer_revision { &[0x86, 0] } else { &[6] };
        let shift = usize::from(longer_revision);
        let (b, at) = batch(7, [revision, &[1], &[9], &[1], &[0], &[2]]);
        expect(
            &b,
            format!("at byte {}: owner refers to string 9 of 5", at + 2 + shift),
        );
        // An owner that is not a member is refused naming it (no byte).
        let (b, _) = batch(7, [revision, &[1], &[3], &[1], &[0], &[2]]);
        expect(&b, "owner \"svc\": member address \"svc\"".to_string());
        let (b, at) = batch(7, [revision, &[1], &[0], &[1], &[3], &[2]]);
        expect(&b, format!("at byte {}: service 3 of 1", at + 4 + shift));
        // A base that leaves no room for the revision's member bits.
        let (b, at) = batch(1 << 54, [revision, &[1], &[0], &[1], &[0], &[2]]);
        expect(&b, format!("at byte {at}: revision exceeds 64 bits"));
    }
}

#[test]
fn a_record_with_revision_low_bits_is_read_field_by_field() {
    let replica = node(1);
    // Revision 7: bit 0 set, low bits 5 follow; the rest as the encoder writes it.
    let (b, at) = batch(7, [&[7, 5], &[1], &[0], &[1], &[0], &[2]]);
    let w = u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    assert_ne!(w & SINGLE_MASK, SINGLE, "low bits: field by field");
    let got = decode_changes(&replica, &b).expect("valid");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id().as_str(), "10.0.0.9:80#true");
    // (3 << 12) + low 5 + base 7, then member 1.
    assert_eq!(got[0].revision().0, ((3 << 12) + 5 + 7) << 10 | 1);
}

#[test]
fn a_service_out_of_range_is_named_before_the_instances_on_both_paths() {
    let replica = node(1);
    // Field by field (a revision of two bytes), the batch cut inside the instance count's
    // varint: the service is refused before that count is read.
    let (mut b, at) = batch(7, [&[0x86, 0], &[1], &[0], &[1], &[3], &[0xff, 0xff]]);
    b.truncate(at + 8);
    let e = decode_changes(&replica, &b)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains(&format!("at byte {}: service 3 of 1", at + 5)),
        "{e}"
    );
}

#[test]
fn a_deletion_is_never_read_as_one_word() {
    let replica = node(1);
    // Two string-id records: a deletion of "a", then a state of "b". The deletion's
    // revision and member with the state's first four bytes fit the one-word mask (6, 1,
    // head 0, id 1, revision 6, member 2): read as a state, the deletion would take the
    // state's bytes as its owner and service.
    let strings = ["10.0.0.1:8848", "b", "a", "", "g", "svc", "DEFAULT"];
    let mut b = tables(2, 7, &strings, [3, 4, 5]); // service (ns "", g, svc)
    b.extend_from_slice(&[1, 2]); // a deletion, id "a"
    let at = b.len();
    b.extend_from_slice(&[6, 1]); // its revision and member
    b.extend_from_slice(&[0, 1, 6, 2, 0, 1, 0, 2]); // a state of "b", member 2, owner 0
    b.extend_from_slice(&[HEALTHY | ENABLED | IPV4, 10, 0, 0, 9]);
    b.extend_from_slice(&80u16.to_le_bytes());
    b.push(6);
    let w = u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    assert_eq!(w & SINGLE_MASK, SINGLE, "the deletion's bytes fit the mask");
    let got = decode_changes(&replica, &b).expect("valid");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id().as_str(), "a");
    assert_eq!(got[0].revision().0, (3 << 12 | 7) << 10 | 1);
    assert_eq!(got[1].id().as_str(), "b");
    assert_eq!(got[1].revision().0, (3 << 12 | 7) << 10 | 2);
}

/// The IPv4 text from the octets' table is `Ipv4Addr`'s: every octet value in every
/// position, beside others of every digit count and at their edges (0, 9, 10, 99, 100,
/// 255): every length of text and every offset of each octet's four-byte store.
#[test]
fn ipv4_text_is_the_standard_form_for_every_octet_in_every_position() {
    let edges = [0u8, 9, 10, 99, 100, 255, 1, 42, 200];
    for at in 0..4 {
        for x in 0..=255u8 {
            for &p in &edges {
                for &q in &edges {
                    for &r in &edges {
                        let mut others = [p, q, r].into_iter();
                        let o: [u8; 4] =
                            std::array::from_fn(
                                |i| if i == at { x } else { others.next().unwrap() },
                            );
                        let text = ipv4_text(o);
                        assert_eq!(text.as_str(), std::net::Ipv4Addr::from(o).to_string());
                        assert!(text.is_inline());
                    }
                }
            }
        }
    }
}

/// A batch whose ids are not all ASCII (a string id of other UTF-8 characters beside
/// derived ones) comes back exact: its ids are checked as UTF-8 whole, not taken after
/// the ASCII scan.
#[test]
fn a_batch_with_an_id_outside_ascii_comes_back_exact() {
    let owner = node(0);
    let replica = node(1);
    let svc = ServiceSpec::new("", "", "svc");
    let cases = [
        (ClientId::connection(1 << 40, "10.0.0.1", 7), "10.0.0.1"),
        (ClientId::parse("客户-é-1").unwrap(), "10.0.0.2"),
        (ClientId::ip_port("10.0.0.3", 9), "10.0.0.3"),
    ];
    for (id, ip) in &cases {
        owner
            .register(id, &svc, &InstanceSpec::new(ip, 9), 10)
            .unwrap();
    }
    let stored = owner.snapshot_chunk(SnapshotCursor::default()).records;
    assert_eq!(stored.len(), cases.len());
    let bytes = encode_records(&owner, &stored);
    let decoded = decode_records(&replica, &bytes).expect("valid");
    assert_eq!(decoded, as_records(&stored));
    assert!(decoded.iter().any(|r| r.id.as_str() == "客户-é-1"));
}
