//! Unit tests of `compact`.

use super::text::{IdBuf, MillisHigh, ipv4_text, push_decimal};
use super::*;
use crate::cluster::sync_codec::{SnapshotChunk, SyncRequest};
use distro_core::compact_form::{canonical_ipv4, decimal_bytes};
use distro_core::model::{ClientId, InstanceSpec, Ipv4Bits, ServiceSpec};
use distro_core::{Command, Config, MemberList, SnapshotCursor};
use prost::Message as _;
use prost::bytes::Bytes;
use std::sync::Arc;

/// A snapshot chunk's stored clients as records.
pub(super) fn as_records(stored: &[Arc<Client>]) -> Vec<ClientRecord> {
    stored.iter().map(|c| c.to_record()).collect()
}

/// A chunk's clients encoded as their records are (`Encoder::record`, as chunks were
/// before they carried the stored clients): the same bytes as [`encode_records`].
fn encode_as_records(node: &Node, stored: &[Arc<Client>]) -> Vec<u8> {
    let upserts: Vec<ClientChange> = as_records(stored)
        .into_iter()
        .map(ClientChange::Upsert)
        .collect();
    encode_changes(node, &upserts)
}

fn members() -> Vec<String> {
    (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect()
}

pub(super) fn node(me: usize) -> Arc<Node> {
    let m = members();
    let cfg = Config {
        sync_delay: 0,
        ..Config::default()
    };
    Arc::new(Node::new(cfg, MemberList::new(&m[me], &m).unwrap(), 1).unwrap())
}

/// An owner with an ip:port client (metadata, custom id, weight, cluster), a batch
/// client and a deleted client; returns it and its first sync batch (as records).
fn owner_and_batch() -> (Arc<Node>, Vec<ClientChange>) {
    let node = owner();
    let changes = first_batch(&node);
    assert_eq!(changes.len(), 3);
    (node, changes)
}

/// The changes of the first sync batch `node` flushes at its tick at 20 ms.
pub(super) fn first_batch(node: &Node) -> Vec<ClientChange> {
    node.tick(20)
        .into_iter()
        .find_map(Command::into_sync_batch)
        .expect("a batch")
        .changes
}

#[test]
fn a_flushed_batch_encodes_from_the_store_as_from_its_records() {
    let sender = owner();
    let sent = sender
        .tick(20)
        .into_iter()
        .find_map(|c| match c {
            Command::Send {
                request: distro_core::PeerRequest::Sync(b),
                ..
            } => Some(b),
            _ => None,
        })
        .expect("a batch");
    // The flush shares the stored clients; the records are the same states.
    let stored = sent.changes.iter();
    assert_eq!(
        stored
            .filter(|c| matches!(c, ClientChange::Stored(_)))
            .count(),
        2
    );
    let owned: Vec<ClientChange> = sent
        .changes
        .iter()
        .cloned()
        .map(ClientChange::into_owned)
        .collect();
    assert_eq!(
        encode_changes(&sender, &sent.changes),
        encode_changes(&sender, &owned)
    );
    let replica = node(1);
    let bytes = encode_changes(&sender, &sent.changes);
    assert_eq!(decode_changes(&replica, &bytes).expect("decodes"), owned);
    // The flush's lowest revision is the batch's base: the same bytes as found by a walk
    // over the changes; a base below it (a batch that gave some back) decodes the same.
    assert!(sent.lowest.is_some());
    let joined = |(mut head, records): (Vec<u8>, Vec<u8>)| {
        head.extend_from_slice(&records);
        head
    };
    assert_eq!(joined(encode_batch_parts(&sender, &sent)), bytes);
    let lower = distro_core::message::SyncBatch {
        changes: sent.changes.clone(),
        lowest: sent.lowest.map(|r| Revision(r.0 - (5 << 10))),
        encoding: None,
    };
    let lower_bytes = joined(encode_batch_parts(&sender, &lower));
    assert_ne!(lower_bytes, bytes);
    assert_eq!(
        decode_changes(&replica, &lower_bytes).expect("decodes"),
        owned
    );
}

/// The owner of [`owner_and_batch`], its batch pending.
fn owner() -> Arc<Node> {
    let node = node(0);
    let svc = ServiceSpec::new("ns", "g", "svc");
    let mut spec = InstanceSpec::new("10.1.2.3", 8080);
    spec.weight = 2.5;
    spec.cluster = "c-1".into();
    spec.metadata = vec![("zone".into(), "a".into()), ("k".into(), String::new())];
    spec.instance_id = Some("custom".into());
    node.register(&ClientId::ip_port("10.1.2.3", 8080), &svc, &spec, 10)
        .unwrap();
    let mut specs: Vec<InstanceSpec> = (0..3)
        .map(|p| InstanceSpec::new("172.16.0.1", 9000 + p))
        .collect();
    specs[1].healthy = false;
    specs[2].enabled = false;
    specs[0].metadata = spec.metadata;
    node.register_batch(&ClientId::connection(5, "172.16.0.1", 1), &svc, &specs, 10)
        .unwrap();
    // A batch of one: it must come back a batch (replaced as a whole), not a single
    // registration (the records compare their publications' form).
    node.register_batch(
        &ClientId::connection(5, "172.16.0.1", 1),
        &ServiceSpec::new("", "", "other"),
        &[InstanceSpec::new("172.16.0.1", 1)],
        10,
    )
    .unwrap();
    let gone = ClientId::connection(6, "1.1.1.1", 1);
    node.register(&gone, &svc, &InstanceSpec::new("1.1.1.1", 1), 10)
        .unwrap();
    node.remove_client(&gone, 11);
    node
}

#[test]
fn a_batch_round_trips_through_the_compact_layout() {
    let (owner, changes) = owner_and_batch();
    let replica = node(1);
    let bytes = encode_changes(&owner, &changes);
    assert_eq!(record_count(&bytes), Some(3));
    let decoded = decode_changes(&replica, &bytes).expect("decodes");
    assert_eq!(decoded, changes);
    // Through the message, as a node sends it.
    let msg = SyncRequest::new(
        &owner,
        &distro_core::message::SyncBatch {
            changes: changes.clone(),
            lowest: None,
            encoding: None,
        },
    );
    let wire = msg.encode_to_vec();
    assert_eq!(wire.len(), msg.encoded_len());
    // Written in two parts, the same bytes as the batch in one piece.
    let whole = SyncRequest::from_compact(msg.from.clone(), Bytes::from(bytes));
    assert_eq!(wire, whole.encode_to_vec());
    assert_eq!(msg, whole);
    let back = SyncRequest::decode(&wire[..]).expect("decodes");
    assert_eq!(back, msg);
    assert_eq!(back.decode_changes(&replica).expect("valid"), changes);
    // A snapshot chunk likewise.
    let chunk = owner.snapshot_chunk(SnapshotCursor::default());
    let records = as_records(&chunk.records);
    assert_eq!(
        encode_records(&owner, &chunk.records),
        encode_as_records(&owner, &chunk.records)
    );
    let msg = SnapshotChunk::new(&owner, &chunk);
    assert_eq!(msg.len(), records.len());
    let back = SnapshotChunk::decode(&msg.encode_to_vec()[..]).expect("decodes");
    assert_eq!(back.len(), records.len());
    assert_eq!(back.decode_records(&replica).expect("valid"), records);
}

#[test]
fn names_remembered_by_the_encoder_come_back_when_they_alternate() {
    // The encoder remembers the last namespace, group and cluster it looked up: clients
    // alternating between two of each (and runs of one) must each come back with theirs.
    let owner = node(0);
    for k in 0..12u16 {
        let svc = ServiceSpec::new(
            ["", "ns-b"][usize::from(k % 2)],
            ["", "g-b"][usize::from(k / 2 % 2)],
            "svc",
        );
        let mut spec = InstanceSpec::new("10.9.0.1", 7000 + k);
        spec.cluster = ["DEFAULT", "c-b"][usize::from(k / 3 % 2)].into();
        owner
            .register(
                &ClientId::connection(9, "10.9.0.1", 7000 + k),
                &svc,
                &spec,
                10,
            )
            .unwrap();
    }
    let changes = first_batch(&owner);
    assert_eq!(changes.len(), 12);
    let bytes = encode_changes(&owner, &changes);
    let decoded = decode_changes(&node(1), &bytes).expect("decodes");
    assert_eq!(decoded, changes);
}

#[test]
fn every_malformed_batch_is_refused_with_a_reason_and_none_panics() {
    let (owner, changes) = owner_and_batch();
    let replica = node(1);
    let good = encode_changes(&owner, &changes);
    // A refusal says why (a malformed layout, or the field that failed validation).
    let check = |b: &[u8]| {
        if let Err(e) = decode_changes(&replica, b) {
            assert!(e.to_string().len() > 10, "{e}");
        }
    };
    // Every truncation is refused.
    for n in 0..good.len() {
        let e = decode_changes(&replica, &good[..n]).expect_err("truncated");
        assert!(e.to_string().contains("malformed"), "{e}");
    }
    // Bytes after the last record, another version.
    let mut longer = good.clone();
    longer.push(0);
    let e = decode_changes(&replica, &longer).expect_err("longer");
    assert!(
        e.to_string().contains(&format!(
            "at byte {}: bytes after the last record",
            good.len()
        )),
        "{e}"
    );
    for old in [1, 2] {
        let mut older = good.clone();
        older[0] = old;
        let e = decode_changes(&replica, &older).expect_err("version");
        assert!(
            e.to_string()
                .contains(&format!("version {old}, this node reads version 3")),
            "{e}"
        );
    }
    // Every byte changed to a few values: refused or valid, never a panic.
    for i in 0..good.len() {
        for x in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] = x;
            check(&b);
        }
    }
    // Ids far longer than their bytes on the wire are bounded: past the limit, a clear
    // refusal (the node's limit is 1 GiB; here the batch's own length, and one less).
    let total: usize = changes.iter().map(|c| c.id().as_str().len()).sum();
    let mut out = decode::Decoded::default();
    decode::decode_into_within(&replica, &good, &mut out, total).expect("within the limit");
    let mut out = decode::Decoded::default();
    let e = decode::decode_into_within(&replica, &good, &mut out, total - 1)
        .expect_err("past the limit")
        .to_string();
    assert!(
        e.contains(&format!("the batch's ids pass {} bytes", total - 1)),
        "{e}"
    );
    // A forged huge count is refused before anything is allocated for it.
    let mut huge = vec![VERSION];
    put_varint(&mut huge, u64::from(u32::MAX));
    huge.extend_from_slice(&good[2..]);
    let e = decode_changes(&replica, &huge).expect_err("count");
    assert!(e.to_string().contains("do not fit"), "{e}");
    // A varint longer than 64 bits.
    let mut long = vec![VERSION];
    long.extend_from_slice(&[0xff; 10]);
    long.push(0);
    let e = decode_changes(&replica, &long).expect_err("varint");
    assert!(e.to_string().contains("at byte 1: records"), "{e}");
    assert!(e.to_string().contains("exceeds 64 bits"), "{e}");
}

/// The byte offset and the field of a refusal, for a batch built by hand.
#[test]
fn a_refusal_names_the_byte_and_the_field() {
    let replica = node(1);
    let header = |records: u64, strings: &[&str]| {
        let mut b = vec![VERSION];
        put_varint(&mut b, records);
        put_varint(&mut b, 7); // base
        put_varint(&mut b, strings.len() as u64);
        for s in strings {
            put_varint(&mut b, s.len() as u64);
        }
        for s in strings {
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(&[0, 0]); // no maps, no services
        b
    };
    let expect = |b: &[u8], want: &str| {
        let e = decode_changes(&replica, b).expect_err(want).to_string();
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    };
    // A deletion whose id refers past the string table: byte 9 is the index.
    let mut b = header(1, &["a:1#true"]);
    assert_eq!(b.len(), 15);
    b.extend_from_slice(&[DELETION, 5, 0, 0]);
    expect(&b, "at byte 16: client id refers to string 5 of 1");
    // A deletion with a derived id.
    let mut b = header(1, &[]);
    b.extend_from_slice(&[DELETION | ID_IP_PORT << 1, 0, 0]);
    expect(&b, "at byte 6: a deletion with a derived client id");
    // An unknown record head.
    let mut b = header(1, &[]);
    b.push(0x40);
    expect(&b, "at byte 6: record head 0x40");
    // A connection's word cut short; its escaped millis cut short, or below the escape
    // (one encoding per value).
    let mut b = header(1, &[]);
    b.extend_from_slice(&[ID_CONNECTION << 1, 1, 2, 3, 4, 5, 6, 7]);
    expect(
        &b,
        "at byte 7: connection millis and port: 8 bytes needed, 7 left",
    );
    let mut b = header(1, &[]);
    b.push(ID_CONNECTION << 1);
    b.extend_from_slice(&(MILLIS_ESCAPE | 9 << 48).to_le_bytes());
    b.push(0x80);
    expect(
        &b,
        "at byte 15: connection millis: the varint runs past the end",
    );
    let mut b = header(1, &[]);
    b.push(ID_CONNECTION << 1);
    b.extend_from_slice(&(MILLIS_ESCAPE | 9 << 48).to_le_bytes());
    put_varint(&mut b, MILLIS_ESCAPE - 1);
    expect(
        &b,
        &format!(
            "at byte 15: connection millis {} sent after the word",
            MILLIS_ESCAPE - 1
        ),
    );
    // A member past the revision's 10 bits.
    let mut b = header(1, &["x"]);
    b.extend_from_slice(&[DELETION, 0, 0, 0x80, 0x08]);
    expect(&b, "revision member 1024");
    // A state whose service refers past the (empty) service table.
    let mut b = header(1, &["10.0.0.1:8848"]);
    b.extend_from_slice(&[ID_IP_PORT << 1, 0, 0, 0, 1, 3, 2, 0, 0, 0, 0]);
    expect(&b, "service 3 of 0");
    // A packed instance with port 0, or a weight that is not a number.
    let one = |flags: u8, port: u16, weight: Option<f64>| {
        let mut b = one_service_tables(0);
        b.extend_from_slice(&[ID_IP_PORT << 1, 0, 0, 0, 1, 0, 2, flags, 10, 0, 0, 9]);
        b.extend_from_slice(&port.to_le_bytes());
        if let Some(w) = weight {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.push(4);
        b
    };
    let good = one(HEALTHY | ENABLED | IPV4, 80, None);
    let got = decode_changes(&replica, &good).expect("valid");
    assert_eq!(got[0].id().as_str(), "10.0.0.9:80#true");
    expect(
        &one(HEALTHY | IPV4, 0, None),
        "port: 0 is outside 1..=65535",
    );
    expect(
        &one(IPV4 | WEIGHT, 80, Some(f64::NAN)),
        "weight: NaN is outside 0..=10000",
    );
    expect(&one(IPV4 | WEIGHT, 80, Some(1e9)), "is outside 0..=10000");
    // Compared with the finite bounds only: the infinities and negative weights fall
    // outside, and a weight sent in range (-0 and the bounds too, as the full check
    // takes them) is kept.
    for w in [f64::INFINITY, f64::NEG_INFINITY, -1.0, 10_000.5] {
        expect(&one(IPV4 | WEIGHT, 80, Some(w)), "is outside 0..=10000");
    }
    for w in [-0.0, 0.0, 2.5, 10_000.0] {
        let got = decode_changes(&replica, &one(IPV4 | WEIGHT, 80, Some(w))).expect("valid");
        let ClientChange::Upsert(r) = &got[0] else {
            panic!("a state")
        };
        assert_eq!(r.publications[0].instances[0].weight.to_bits(), w.to_bits());
    }
    // A cluster is checked and interned on its first use in a batch (out of line), then
    // taken from the batch's cache: one past the strings, or not a cluster name, is
    // refused naming its byte (the last, 52).
    let cluster = |i: u8| {
        let mut b = good.clone();
        *b.last_mut().expect("a cluster") = i;
        b
    };
    assert_eq!(good.len(), 53);
    expect(&cluster(9), "at byte 52: cluster refers to string 9 of 5");
    expect(
        &cluster(1),
        "at byte 52: cluster: invalid clusterName: must not be empty",
    );
    expect(
        &cluster(0),
        "at byte 52: cluster: invalid clusterName: \"10.0.0.1:8848\" contains ':'",
    );
    // Flags, address and port are read at once only when the batch holds all three: an
    // instance cut inside them, or with flags no instance has, is refused naming the
    // field and the byte it starts at, as when each is read alone (flags at byte 45, the
    // address at 46, the port at 50).
    let cut = |n: usize| good[..good.len() - n].to_vec();
    expect(&cut(2), "at byte 50: port: 2 bytes needed, 1 left");
    expect(&cut(3), "at byte 50: port: 2 bytes needed, 0 left");
    expect(&cut(4), "at byte 46: ip: 4 bytes needed, 3 left");
    expect(&cut(7), "at byte 46: ip: 4 bytes needed, 0 left");
    expect(
        &one(0x80 | IPV4, 80, None),
        "at byte 45: instance flags 0x90",
    );
    expect(
        &one(IPV4 | IPV6, 80, None),
        "at byte 45: instance flags 0x30",
    );
    // A string that is not UTF-8.
    let mut b = vec![VERSION, 0, 0, 1, 2, 0xc3, 0x28];
    b.extend_from_slice(&[0, 0]);
    expect(&b, "at byte 5: a string is not UTF-8");
}

#[test]
fn an_ipv4_is_packed_only_in_its_one_written_form() {
    for s in [
        "0.0.0.0",
        "1.2.3.4",
        "255.255.255.255",
        "10.0.0.255",
        "01.2.3.4",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "1..2.3",
        "1.2.3.4 ",
        "+1.2.3.4",
        "1.2.3.-4",
        "0000000001.2.3.4",
        "",
    ] {
        let std = s.parse::<std::net::Ipv4Addr>().ok();
        let ours = canonical_ipv4(s);
        assert_eq!(ours.map(std::net::Ipv4Addr::from), std, "{s:?}");
        if let Some(o) = ours {
            assert_eq!(ipv4_text(o).as_str(), s);
        }
    }
    for x in 0..=255u8 {
        let o = [x, 255 - x, x / 3, 7];
        let text = ipv4_text(o);
        assert_eq!(canonical_ipv4(text.as_str()), Some(o));
        assert_eq!(text.as_str(), std::net::Ipv4Addr::from(o).to_string());
    }
    assert_eq!(decimal_bytes(b"0"), Some(0));
    assert_eq!(
        decimal_bytes(b"9999999999999999999"),
        Some(9_999_999_999_999_999_999)
    );
    assert_eq!(decimal_bytes(b"10000000000000000000"), None);
    assert_eq!(decimal_bytes(b"007"), None);
    assert_eq!(decimal_bytes(b""), None);
    assert_eq!(decimal_bytes(b"1a"), None);
    for v in [0, 7, 10, 99, 100, 101, 65535, 1 << 50, u64::MAX] {
        let mut s = b"x".to_vec();
        push_decimal(&mut s, v);
        assert_eq!(s, format!("x{v}").into_bytes());
    }
}

/// The stack buffer of derived ids writes decimals as `format!` does on both sides of
/// every width boundary (one word, two words, the long form), and texts of every length
/// it takes, each piece right after the last.
#[test]
fn id_buffer_writes_decimals_and_texts_as_format_does() {
    let mut values = vec![0, 1, 9, u64::MAX, u64::MAX - 1];
    for d in 1..20 {
        let p = 10u64.pow(d);
        values.extend([p - 1, p, p + 1, p / 3 * 2]);
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2_000 {
        x = distro_core::hash::mix64(x);
        values.push(x >> (x % 64));
    }
    for &v in &values {
        let mut b = IdBuf::new();
        b.byte(b'<');
        b.decimal(v);
        b.byte(b'_');
        b.decimal(v % 65_536);
        b.byte(b'>');
        let want = format!("<{v}_{}>", v % 65_536);
        assert_eq!(b.as_bytes(), want.as_bytes(), "{v}");
    }
    // Millis and ports by their own writers: the same text, a millis whose high digits
    // are those of the last one written too (its high part taken as written then).
    let mut last = MillisHigh::new();
    let mut previous = None;
    for v in values
        .iter()
        .flat_map(|&v| [v, v.wrapping_add(1), v / 7 * 7])
    {
        let port = (v % 65_536) as u16;
        let mut b = IdBuf::new();
        b.millis(v, &mut last);
        b.byte(b'_');
        b.port(port);
        let want = format!("{v}_{port}");
        assert_eq!(b.as_bytes(), want.as_bytes(), "{v} after {previous:?}");
        previous = Some(v);
    }
    for port in 0..=u16::MAX {
        let mut b = IdBuf::new();
        b.port(port);
        assert_eq!(b.as_bytes(), port.to_string().as_bytes(), "{port}");
    }
    let text = "0123456789abcdefghijklmnopqrstuvwxyz.:-_";
    assert_eq!(text.len(), IdBuf::MAX_IP);
    for n in 0..=IdBuf::MAX_IP {
        let mut b = IdBuf::new();
        b.decimal(1_733_000_000_000);
        b.byte(b'_');
        b.text(&text.as_bytes()[..n]);
        b.byte(b'_');
        b.decimal(65_535);
        b.word(u64::from_le_bytes(*b"#true\0\0\0"), 5);
        let want = format!("1733000000000_{}_65535#true", &text[..n]);
        assert_eq!(b.as_bytes(), want.as_bytes(), "{n}");
        // Appended after what is there: of up to `SHORT` bytes by the fixed copy cut
        // back, longer as they are (the ids of every length from 25 to 65 bytes).
        let mut out = b"before|".to_vec();
        b.append_to(&mut out);
        assert_eq!(out, format!("before|{want}").into_bytes(), "{n}");
    }
    // One buffer for all (as a batch's ids use it): each text cleared before the next,
    // the longer ones' bytes left behind not part of it.
    let mut b = IdBuf::new();
    for n in (0..=IdBuf::SHORT + 1).rev() {
        b.clear();
        b.text(&text.as_bytes()[..n.min(IdBuf::MAX_IP)]);
        let mut out = vec![b'x'; n % 3];
        b.append_to(&mut out);
        let mut want = vec![b'x'; n % 3];
        want.extend_from_slice(&text.as_bytes()[..n]);
        assert_eq!(out, want, "{n}");
    }
}

#[test]
fn ids_and_ips_travel_derived_or_packed_and_come_back_exact() {
    let owner = node(0);
    let replica = node(1);
    let svc = ServiceSpec::new("", "", "svc");
    // Host names in derived ids: of 17 bytes (past the two-word copy), the longest (past
    // the stack buffer: the id built piece by piece).
    let host_17 = "host-b.example.io";
    let host_max = "h".repeat(distro_core::limits::MAX_IP_LEN);
    // (client id, instance ip, port): derived ids, ids that only look derived,
    // IPv6 in canonical and other forms, host names.
    let cases: Vec<(ClientId, &str, u16)> = vec![
        (ClientId::ip_port(host_17, 97), host_17, 97),
        (ClientId::connection(1 << 40, host_17, 98), host_17, 98),
        (ClientId::ip_port(&host_max, 99), &host_max, 99),
        (
            ClientId::connection(1 << 40, &host_max, 100),
            &host_max,
            100,
        ),
        (ClientId::ip_port("10.0.0.1", 80), "10.0.0.1", 80),
        (ClientId::ip_port("::1", 81), "::1", 81),
        (ClientId::ip_port("2001:DB8::1", 82), "2001:DB8::1", 82),
        (
            ClientId::ip_port("host-a.example", 83),
            "host-a.example",
            83,
        ),
        (
            ClientId::parse("10.0.0.2:084#true").unwrap(),
            "10.0.0.2",
            84,
        ),
        (
            ClientId::parse("10.0.0.3:85#false").unwrap(),
            "10.0.0.3",
            85,
        ),
        (ClientId::connection(0, "10.0.0.6", 1), "10.0.0.6", 87),
        // Millis on both sides of the word's escape (those from it up sent after it).
        (
            ClientId::connection(MILLIS_ESCAPE - 1, "10.0.0.6", 2),
            "10.0.0.6",
            87,
        ),
        (
            ClientId::connection(MILLIS_ESCAPE, "10.0.0.6", 3),
            "10.0.0.6",
            87,
        ),
        // The largest millis a derived id carries (19 digits: a 10-byte varint after the
        // word); one more digit and the id travels as a string.
        (
            ClientId::connection(9_999_999_999_999_999_999, "10.0.0.6", 65535),
            "10.0.0.6",
            87,
        ),
        (
            ClientId::connection(u64::MAX, "10.0.0.6", 65535),
            "10.0.0.6",
            87,
        ),
        (
            ClientId::connection(1 << 50, "fe80::2", 65535),
            "fe80::2",
            88,
        ),
        (ClientId::parse("01_10.0.0.7_1").unwrap(), "10.0.0.7", 89),
        (ClientId::parse("1_10.0.0.8_01").unwrap(), "10.0.0.8", 90),
        (ClientId::parse("1_10.0.0.9_70000").unwrap(), "10.0.0.9", 91),
        (ClientId::parse("1_h_x_2").unwrap(), "h_x", 92),
        (ClientId::parse("plain").unwrap(), "255.255.255.255", 93),
        // No IPv4 bits stored: packed from the text (0.0.0.0), sent as text (the rest).
        (ClientId::connection(2, "0.0.0.0", 94), "0.0.0.0", 94),
        (ClientId::ip_port("010.0.0.1", 95), "010.0.0.1", 95),
        (
            ClientId::ip_port("::ffff:10.0.0.2", 96),
            "::ffff:10.0.0.2",
            96,
        ),
    ];
    for (id, ip, port) in &cases {
        let spec = InstanceSpec::new(ip, *port);
        owner.register(id, &svc, &spec, 10).unwrap();
    }
    let stored = owner.snapshot_chunk(SnapshotCursor::default()).records;
    assert_eq!(stored.len(), cases.len());
    let bytes = encode_records(&owner, &stored);
    assert_eq!(bytes, encode_as_records(&owner, &stored));
    let decoded = decode_records(&replica, &bytes).expect("valid");
    assert_eq!(decoded, as_records(&stored));
    // The escaped millis travel derived (no id text in the batch), the 20-digit one as text.
    let sent = |millis: u64, port: u16| {
        let text = ClientId::connection(millis, "10.0.0.6", port);
        bytes
            .windows(text.as_str().len())
            .any(|w| w == text.as_str().as_bytes())
    };
    assert!(!sent(MILLIS_ESCAPE - 1, 2));
    assert!(!sent(MILLIS_ESCAPE, 3));
    assert!(!sent(9_999_999_999_999_999_999, 65535));
    assert!(sent(u64::MAX, 65535));
    // The instances' IPv4 bits (compared above too) are their ips', on both sides.
    let stored = as_records(&stored);
    for r in stored.iter().chain(&decoded) {
        for i in r.publications.iter().flat_map(|p| p.instances.iter()) {
            assert_eq!(i.ipv4, Ipv4Bits::of(&i.ip), "{}", i.ip);
        }
    }
    // 0.0.0.0 (no bits) is packed all the same: four bytes, not its text.
    assert!(!bytes.windows(7).any(|w| w == b"0.0.0.0"));
}

#[test]
fn the_compact_layout_is_smaller_than_protobuf() {
    // 2,000 ip:port clients in 20 services, each with the same two metadata entries.
    let owner = node(0);
    for i in 0..2_000u32 {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        let mut spec = InstanceSpec::new(&ip, 8080);
        spec.metadata = vec![
            ("version".into(), "1.0.3".into()),
            ("zone".into(), "zone-a".into()),
        ];
        let svc = ServiceSpec::new("", "DEFAULT_GROUP", &format!("svc-{}", i % 20));
        owner
            .register(&ClientId::ip_port(&ip, 8080), &svc, &spec, 10)
            .unwrap();
    }
    let (mut proto, mut compact, mut cursor) = (0, 0, Some(SnapshotCursor::default()));
    while let Some(c) = cursor {
        let chunk = owner.snapshot_chunk(c);
        cursor = chunk.next.clone();
        proto += SnapshotChunk::protobuf(owner.clone(), &chunk).encoded_len();
        compact += SnapshotChunk::new(&owner, &chunk).encoded_len();
    }
    eprintln!(
        "snapshot of 2,000 clients: protobuf {proto} bytes, compact {compact} bytes ({:.0} %)",
        100.0 * compact as f64 / proto as f64
    );
    // The layout (since version 2) derives the ids, packs the ips and sends a weight of 1
    // as a flag:
    // about 16 bytes per client here (version 1: 90).
    assert!(compact < proto / 6, "{compact} vs {proto}");
    assert!(compact < 2_000 * 20, "{compact} bytes for 2,000 clients");
}

#[test]
fn chunks_of_connection_clients_count_the_word_of_millis_and_port() {
    // Connection clients alone, with millis short (a varint of 1 to 3 bytes would have
    // been counted) and escaped (the word, then the varint): the estimate counts the 8-byte
    // word, so no chunk goes over its bound.
    let limit = 2 * 1024;
    let m = members();
    let cfg = Config {
        sync_delay: 0,
        snapshot_chunk_bytes: limit,
        ..Config::default()
    };
    let owner = Arc::new(Node::new(cfg, MemberList::new(&m[0], &m).unwrap(), 1).unwrap());
    let svc = ServiceSpec::new("", "", "svc");
    for i in 0..2_000u64 {
        let ip = format!("10.0.{}.{}", i >> 8, i & 255);
        let millis = if i % 2 == 0 { i } else { MILLIS_ESCAPE + i };
        let id = ClientId::connection(millis, &ip, 1);
        owner
            .register(&id, &svc, &InstanceSpec::new(&ip, 80), 10)
            .unwrap();
    }
    let (mut cursor, mut clients) = (Some(SnapshotCursor::default()), 0);
    while let Some(c) = cursor {
        let chunk = owner.snapshot_chunk(c);
        cursor = chunk.next.clone();
        clients += chunk.records.len();
        let bytes = encode_records(&owner, &chunk.records).len();
        assert!(bytes <= limit, "a chunk of {bytes} bytes, bound {limit}");
    }
    assert_eq!(clients, 2_000);
}

#[test]
fn snapshot_chunks_are_cut_by_the_layouts_size_from_above() {
    // Chunks of 4 KiB over connection and ip:port clients, some with a custom id, a
    // host name or a weight, in 50 services with a few metadata maps: each chunk's
    // records encode to at most the bound and, but for the last, to more than half of it.
    let limit = 4 * 1024;
    let m = members();
    let cfg = Config {
        sync_delay: 0,
        snapshot_chunk_bytes: limit,
        ..Config::default()
    };
    let owner = Arc::new(Node::new(cfg, MemberList::new(&m[0], &m).unwrap(), 1).unwrap());
    for i in 0..3_000u32 {
        let ip = if i % 97 == 0 {
            format!("host-{i}.example")
        } else {
            format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)
        };
        let port = 8080 + (i % 7) as u16;
        let mut spec = InstanceSpec::new(&ip, port);
        spec.metadata = vec![("zone".into(), format!("zone-{}", i % 5))];
        if i % 11 == 0 {
            spec.instance_id = Some(format!("custom-{i}"));
        }
        if i % 13 == 0 {
            spec.weight = 2.5;
        }
        let svc = ServiceSpec::new("", "DEFAULT_GROUP", &format!("svc-{}", i % 50));
        let id = if i % 2 == 0 {
            ClientId::ip_port(&ip, port)
        } else {
            // Millis of today, short ones (3 to 7 bytes as a varint, 8 in the word) and
            // escaped ones (the word, then a varint of 7 or 10 bytes).
            let millis = match i % 7 {
                1 => u64::from(i),
                3 => MILLIS_ESCAPE + u64::from(i),
                5 => 9_999_999_999_999_999_000 + u64::from(i),
                _ => 1_700_000_000_000 + u64::from(i),
            };
            ClientId::connection(millis, &ip, 40_000)
        };
        owner.register(&id, &svc, &spec, 10).unwrap();
    }
    let (mut chunks, mut clients, mut cursor) = (Vec::new(), 0, Some(SnapshotCursor::default()));
    while let Some(c) = cursor {
        let chunk = owner.snapshot_chunk(c);
        cursor = chunk.next.clone();
        clients += chunk.records.len();
        let bytes = encode_records(&owner, &chunk.records);
        assert_eq!(bytes, encode_as_records(&owner, &chunk.records));
        chunks.push(bytes.len());
    }
    eprintln!("3,000 clients in chunks of {limit} B: {chunks:?}");
    assert_eq!(clients, 3_000);
    let (last, full) = chunks.split_last().unwrap();
    assert!(*last <= limit);
    for &c in full {
        assert!(
            c <= limit && c > limit / 2,
            "a chunk of {c} bytes, bound {limit}"
        );
    }
}

/// A service of the table is checked before it is stored (the registry's lookup comes
/// first, so a held name costs no check; a new one that is invalid refuses the batch and
/// is not stored).
#[test]
fn a_table_service_is_checked_unless_the_registry_holds_it() {
    let replica = node(1);
    let table = |ns: &str, group: &str, name: &str| {
        let mut b = vec![VERSION, 0, 0, 3];
        for s in [ns, group, name] {
            b.push(s.len() as u8);
        }
        for s in [ns, group, name] {
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(&[0, 1, 0, 1, 2]); // no maps; one service; no records
        b
    };
    let registry = replica.registry();
    for (group, name) in [("g", "bad\u{1}name"), ("g@@h", "svc"), ("h", "g@@svc")] {
        let e = decode_changes(&replica, &table("ns", group, name))
            .expect_err(name)
            .to_string();
        assert!(e.contains("ervice") || e.contains("roup"), "{e}");
        assert!(registry.find_service("ns", group, name).is_none());
    }
    // New and valid: stored; then held: found.
    for _ in 0..2 {
        decode_changes(&replica, &table("ns", "g", "svc")).expect("valid");
        assert!(registry.find_service("ns", "g", "svc").is_some());
    }
    // Defaults applied before the lookup: "" is the public namespace.
    decode_changes(&replica, &table("", "g", "svc")).expect("valid");
    assert!(registry.find_service("public", "g", "svc").is_some());
}

#[test]
fn long_records_and_many_services_and_maps_round_trip() {
    // One client of 40 publications, each a batch of 6 IPv6 instances with metadata (a
    // record of several kilobytes), and 300 clients over 280 services and 270 maps (more
    // of each than the encoder's memo has slots, so some are displaced whatever the
    // addresses, and some seen again): every service and map found again, through the
    // encoder's memo or behind it.
    let owner = node(0);
    let big = ClientId::connection(7, "fe80::1", 9);
    for s in 0..40 {
        let svc = ServiceSpec::new("", "", &format!("svc-{s}"));
        let instances: Vec<InstanceSpec> = (0..6)
            .map(|k| {
                let mut spec = InstanceSpec::new(&format!("fe80::{:x}", s * 8 + k + 1), 80);
                spec.metadata = vec![("k".into(), format!("v{}", (s + k) % 5))];
                spec.weight = 3.0;
                spec
            })
            .collect();
        owner.register_batch(&big, &svc, &instances, 10).unwrap();
    }
    for c in 0..300u16 {
        let svc = ServiceSpec::new("", "", &format!("svc-{}", c % 280));
        let mut spec = InstanceSpec::new("10.1.0.1", 7000 + c);
        spec.metadata = vec![("m".into(), format!("{}", c % 270))];
        owner
            .register(
                &ClientId::connection(9, "10.1.0.1", 7000 + c),
                &svc,
                &spec,
                10,
            )
            .unwrap();
    }
    let changes = first_batch(&owner);
    assert_eq!(changes.len(), 301);
    let replica = node(1);
    let bytes = encode_changes(&owner, &changes);
    assert_eq!(decode_changes(&replica, &bytes).expect("decodes"), changes);
    // The big client alone: a batch of one record with 40 services.
    let one = [changes
        .iter()
        .find(|c| c.id().as_str() == big.as_str())
        .expect("sent")
        .clone()];
    let bytes = encode_changes(&owner, &one);
    assert_eq!(decode_changes(&replica, &bytes).expect("decodes"), one);
}

#[test]
fn a_service_name_shared_with_other_strings_comes_back_with_each() {
    // Service names are added to the string table without a lookup: one name in several
    // groups, and equal to a cluster name, a metadata key and value and a custom id
    // (which are looked up, and may find the name's entry), each must come back.
    let owner = node(0);
    for k in 0..8u16 {
        let svc = ServiceSpec::new("", ["g-a", "g-b", "svc"][usize::from(k % 3)], "svc");
        let mut spec = InstanceSpec::new("10.9.0.2", 7100 + k);
        spec.cluster = ["svc", "DEFAULT"][usize::from(k % 2)].into();
        spec.metadata = vec![("svc".into(), ["svc", "g-a"][usize::from(k / 2 % 2)].into())];
        if k % 4 == 3 {
            spec.instance_id = Some("svc".into());
        }
        owner
            .register(
                &ClientId::connection(9, "10.9.0.2", 7100 + k),
                &svc,
                &spec,
                10,
            )
            .unwrap();
    }
    let changes = first_batch(&owner);
    assert_eq!(changes.len(), 8);
    let bytes = encode_changes(&owner, &changes);
    assert_eq!(decode_changes(&node(1), &bytes).expect("decodes"), changes);
}

/// A record's publications come back one per service, ordered by service, the first of a
/// repeated service kept; the derived id is the first one's (after the ordering). A
/// record of one publication (read without the loop) comes back as it was sent.
#[test]
fn a_records_publications_come_back_one_per_service_in_order() {
    let replica = node(1);
    let batch = |pubs: &[(u8, u16)]| {
        let mut b = vec![VERSION, 1, 0, 6];
        let strings = ["10.0.0.1:8848", "", "g", "svc", "DEFAULT", "svc2"];
        for s in strings {
            b.push(s.len() as u8);
        }
        for s in strings {
            b.extend_from_slice(s.as_bytes());
        }
        // No maps; services 0 (ns "", g, svc) and 1 (ns "", g, svc2).
        b.extend_from_slice(&[0, 2, 1, 2, 3, 1, 2, 5]);
        b.extend_from_slice(&[ID_IP_PORT << 1, 0, 0, 0, pubs.len() as u8]);
        for &(service, port) in pubs {
            b.extend_from_slice(&[service, 2, HEALTHY | ENABLED | IPV4, 10, 0, 0, 9]);
            b.extend_from_slice(&port.to_le_bytes());
            b.push(4);
        }
        b
    };
    let decoded = |pubs: &[(u8, u16)]| {
        let got = decode_changes(&replica, &batch(pubs)).expect("valid");
        let ClientChange::Upsert(r) = &got[0] else {
            panic!("a state")
        };
        let parts: Vec<(String, u16)> = r
            .publications
            .iter()
            .map(|p| (p.service.name().to_string(), p.instances[0].port))
            .collect();
        (r.id.as_str().to_string(), parts)
    };
    let (id, parts) = decoded(&[(1, 80), (0, 81), (1, 82)]);
    assert_eq!(id, "10.0.0.9:81#true");
    assert_eq!(parts, [("svc".to_string(), 81), ("svc2".to_string(), 80)]);
    let (id, parts) = decoded(&[(1, 83)]);
    assert_eq!(id, "10.0.0.9:83#true");
    assert_eq!(parts, [("svc2".to_string(), 83)]);
}

/// The head and tables of a batch of one record, of base `base`: strings an owner, "",
/// "g", "svc", "DEFAULT"; no maps; one service ("", g, svc). The record's bytes follow.
pub(super) fn one_service_tables(base: u64) -> Vec<u8> {
    tables(
        1,
        base,
        &["10.0.0.1:8848", "", "g", "svc", "DEFAULT"],
        [1, 2, 3],
    )
}

/// The head and tables of a batch of `records` records, of base `base`: `strings`, no
/// maps, one service of the strings `service` (namespace, group, name). The records'
/// bytes follow.
pub(super) fn tables(records: u8, base: u64, strings: &[&str], service: [u8; 3]) -> Vec<u8> {
    let mut b = vec![VERSION, records];
    put_varint(&mut b, base);
    b.push(strings.len() as u8);
    for s in strings {
        b.push(s.len() as u8);
    }
    for s in strings {
        b.extend_from_slice(s.as_bytes());
    }
    b.extend_from_slice(&[0, 1]); // no maps; one service
    b.extend_from_slice(&service);
    b
}
