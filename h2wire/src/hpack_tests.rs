//! Tests of the HPACK decoder and encoder: the examples of RFC 7541 Appendix C (spec text:
//! C.2 single fields, C.3 and C.4 requests without and with Huffman, C.5 and C.6 responses
//! with a 256-byte table and its evictions), every malformed-block error, the list size
//! limit, and seeded random round trips against an independent model of the table.

use super::*;
use crate::test_rng::{Rng, hex, seed};

type Fields = Vec<(String, String)>;

fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
    let mut out = Vec::new();
    d.decode(block, usize::MAX, |n, v| {
        out.push((
            String::from_utf8_lossy(n).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ))
    })?;
    Ok(out)
}

fn pairs(p: &[(&str, &str)]) -> Fields {
    p.iter()
        .map(|&(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn table(d: &Decoder) -> Fields {
    d.table_entries()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

/// One block of a sequence: its bytes, the fields, the table after it, the table size.
type Step<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [(&'a str, &'a str)],
    usize,
);

fn series(table_size: usize, steps: &[Step<'_>]) {
    let mut d = Decoder::new(table_size);
    for (i, &(block, want, want_table, want_size)) in steps.iter().enumerate() {
        let got = decode_all(&mut d, &hex(block)).unwrap_or_else(|e| panic!("step {i}: {e}"));
        assert_eq!(got, pairs(want), "step {i}");
        assert_eq!(table(&d), pairs(want_table), "step {i}");
        assert_eq!(d.table_size(), want_size, "step {i}");
    }
}

#[test]
fn rfc_c2_single_fields() {
    series(
        4096,
        &[(
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            &[("custom-key", "custom-header")],
            &[("custom-key", "custom-header")],
            55,
        )],
    );
    series(
        4096,
        &[(
            "040c 2f73 616d 706c 652f 7061 7468",
            &[(":path", "/sample/path")],
            &[],
            0,
        )],
    );
    series(
        4096,
        &[(
            "1008 7061 7373 776f 7264 0673 6563 7265 74",
            &[("password", "secret")],
            &[],
            0,
        )],
    );
    series(4096, &[("82", &[(":method", "GET")], &[], 0)]);
}

const REQ1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQ2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQ3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];
const REQ_T1: &[(&str, &str)] = &[(":authority", "www.example.com")];
const REQ_T2: &[(&str, &str)] = &[
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];
const REQ_T3: &[(&str, &str)] = &[
    ("custom-key", "custom-value"),
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];

#[test]
fn rfc_c3_requests_without_huffman() {
    series(
        4096,
        &[
            (
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                REQ1,
                REQ_T1,
                57,
            ),
            ("8286 84be 5808 6e6f 2d63 6163 6865", REQ2, REQ_T2, 110),
            (
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
                REQ3,
                REQ_T3,
                164,
            ),
        ],
    );
}

#[test]
fn rfc_c4_requests_with_huffman() {
    series(
        4096,
        &[
            (
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                REQ1,
                REQ_T1,
                57,
            ),
            ("8286 84be 5886 a8eb 1064 9cbf", REQ2, REQ_T2, 110),
            (
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
                REQ3,
                REQ_T3,
                164,
            ),
        ],
    );
}

const RESP1: &[(&str, &str)] = &[
    (":status", "302"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESP_T1: &[(&str, &str)] = &[
    ("location", "https://www.example.com"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("cache-control", "private"),
    (":status", "302"),
];
const RESP2: &[(&str, &str)] = &[
    (":status", "307"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
];
const RESP_T2: &[(&str, &str)] = &[
    (":status", "307"),
    ("location", "https://www.example.com"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("cache-control", "private"),
];
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const RESP3: &[(&str, &str)] = &[
    (":status", "200"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ("location", "https://www.example.com"),
    ("content-encoding", "gzip"),
    ("set-cookie", COOKIE),
];
const RESP_T3: &[(&str, &str)] = &[
    ("set-cookie", COOKIE),
    ("content-encoding", "gzip"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
];

#[test]
fn rfc_c5_responses_without_huffman_evicting() {
    series(
        256,
        &[
            (
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
                 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
                 6c65 2e63 6f6d",
                RESP1,
                RESP_T1,
                222,
            ),
            ("4803 3330 37c1 c0bf", RESP2, RESP_T2, 222),
            (
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
                 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
                 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
                 3d31",
                RESP3,
                RESP_T3,
                215,
            ),
        ],
    );
}

#[test]
fn rfc_c6_responses_with_huffman_evicting() {
    series(
        256,
        &[
            (
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                RESP1,
                RESP_T1,
                222,
            ),
            ("4883 640e ffc1 c0bf", RESP2, RESP_T2, 222),
            (
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                RESP3,
                RESP_T3,
                215,
            ),
        ],
    );
}

fn error_of(block: &[u8]) -> HpackError {
    let mut d = Decoder::new(4096);
    decode_all(&mut d, block).expect_err("malformed")
}

#[test]
fn malformed_blocks() {
    let cases: &[(&[u8], &str)] = &[
        (&[0x80], "index 0"),
        (&[0xbe], "index out of range"),
        (&[0xff, 0x00], "index out of range"),
        (&[0x7e, 0x01, b'a'], "name index out of range"),
        (&[0x82, 0x20], "table size update after a header field"),
        (
            &[0x3f, 0xe2, 0x1f],
            "table size update above the advertised limit",
        ),
        (&[0xff], "integer truncated"),
        (&[0xff, 0x80], "integer truncated"),
        (
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            "integer overflow",
        ),
        (&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], "integer overflow"),
        (&[0x04], "string missing"),
        (&[0x00, 0x01, b'a'], "string missing"),
        (&[0x04, 0x05, b'a'], "string longer than the block"),
        (
            &[0x04, 0x7f, 0x80, 0x80, 0x80, 0x08],
            "string longer than the block",
        ),
        (&[0x04, 0x81, 0xff], "Huffman padding longer than 7 bits"),
        (&[0x04, 0x81, 0x02], "Huffman padding not all ones"),
        (
            &[0x04, 0x84, 0xff, 0xff, 0xff, 0xff],
            "EOS symbol in a Huffman string",
        ),
        (
            &[0x00, 0x81, 0xff, 0x00],
            "Huffman padding longer than 7 bits",
        ),
    ];
    for &(block, reason) in cases {
        let e = error_of(block);
        assert_eq!(e.kind, HpackErrorKind::Compression, "{block:02x?}");
        assert_eq!(e.reason, reason, "{block:02x?}");
    }
}

#[test]
fn size_updates_at_the_start_evict() {
    let mut d = Decoder::new(4096);
    // custom-key: custom-header (55 bytes), then two size updates (0 then 100) and an
    // indexed field: the table is emptied.
    decode_all(
        &mut d,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .expect("valid");
    assert_eq!(d.table_size(), 55);
    let got = decode_all(&mut d, &[0x20, 0x3f, 0x45, 0x82]).expect("valid");
    assert_eq!(got, pairs(&[(":method", "GET")]));
    assert_eq!(d.table_size(), 0);
    let e = decode_all(&mut d, &[0xbe]).expect_err("the table is empty");
    assert_eq!(e.reason, "index out of range");
    // Up to the limit is fine; an entry larger than the table empties it.
    let mut d = Decoder::new(60);
    decode_all(&mut d, &[0x3f, 0x1d]).expect("60 is the limit");
    let big = [&[0x40, 0x01, b'a', 0x1c][..], &[b'v'; 28]].concat();
    decode_all(&mut d, &big).expect("valid");
    assert_eq!(d.table_size(), 0);
}

#[test]
fn list_too_large_still_decodes_the_whole_block() {
    let mut d = Decoder::new(4096);
    // Three fields with incremental indexing, 32 + 1 + 1 bytes each.
    let block = [
        0x40, 0x01, b'a', 0x01, b'1', 0x40, 0x01, b'b', 0x01, b'2', 0x40, 0x01, b'c', 0x01, b'3',
    ];
    let mut seen = Vec::new();
    let e = d
        .decode(&block, 70, |n, v| seen.push((n.to_vec(), v.to_vec())))
        .expect_err("over the limit");
    assert_eq!(e.kind, HpackErrorKind::ListTooLarge);
    assert_eq!(
        seen,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ]
    );
    assert_eq!(d.table_size(), 3 * 34, "all three were inserted");
    // The next block refers to them.
    let got = decode_all(&mut d, &[0xbe, 0xc0]).expect("valid");
    assert_eq!(got, pairs(&[("c", "3"), ("a", "1")]));
}

#[test]
fn stateless_encoding() {
    let mut out = Vec::new();
    encode_field(&mut out, b":method", b"POST");
    assert_eq!(out, [0x83]);
    out.clear();
    encode_field(&mut out, b":path", b"/request");
    assert_eq!(out, [&[0x04, 0x08][..], b"/request"].concat());
    out.clear();
    encode_field(&mut out, b"te", b"trailers");
    assert_eq!(
        out,
        [&[0x00, 0x02][..], b"te", &[0x08], b"trailers"].concat()
    );
    out.clear();
    encode_field(&mut out, b"x", &[b'v'; 200]);
    assert_eq!(out[..5], [0x00, 0x01, b'x', 0x7f, 200 - 127]);
    out.clear();
    encode_table_size_update(&mut out, 4096);
    let mut d = Decoder::new(4096);
    decode_all(&mut d, &out).expect("a size update alone");
    out.clear();
    encode_table_size_update(&mut out, 30);
    assert_eq!(out, [0x3e]);
}

/// An encoder that uses every representation, with its own model of the dynamic table
/// (newest first): what the decoder must agree with.
struct ModelEncoder {
    table: Vec<(Vec<u8>, Vec<u8>)>,
    max: usize,
}

impl ModelEncoder {
    fn size(&self) -> usize {
        self.table.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
    }
    fn evict(&mut self, max: usize) {
        while self.size() > max {
            self.table.pop();
        }
    }
    fn string(&self, rng: &mut Rng, out: &mut Vec<u8>, s: &[u8]) {
        if rng.below(2) == 0 {
            put_integer(out, 0x80, 7, huffman::encoded_len(s));
            huffman::encode(s, out);
        } else {
            put_string(out, s);
        }
    }
    fn field(&mut self, rng: &mut Rng, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        let full = STATIC
            .iter()
            .map(|&(n, v)| (n, v))
            .chain(self.table.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
            .position(|(n, v)| n == name && v == value);
        if let (Some(i), 0..=1) = (full, rng.below(3)) {
            put_integer(out, 0x80, 7, i + 1);
            return;
        }
        let name_at = STATIC
            .iter()
            .map(|&(n, _)| n)
            .chain(self.table.iter().map(|(n, _)| n.as_slice()))
            .position(|n| n == name)
            .filter(|_| rng.below(2) == 0);
        let kind = rng.below(3);
        let (high, prefix) = [(0x40, 6), (0x00, 4), (0x10, 4)][kind];
        match name_at {
            Some(i) => put_integer(out, high, prefix, i + 1),
            None => {
                out.push(high);
                self.string(rng, out, name);
            }
        }
        self.string(rng, out, value);
        if kind == 0 {
            let size = name.len() + value.len() + 32;
            if size > self.max {
                self.table.clear();
            } else {
                self.evict(self.max - size);
                self.table.insert(0, (name.to_vec(), value.to_vec()));
            }
        }
    }
}

#[test]
fn random_round_trips() {
    let seed = seed();
    let mut rng = Rng(seed);
    let names: [&[u8]; 8] = [
        b":status",
        b"content-type",
        b"grpc-status",
        b"grpc-message",
        b"x-custom",
        b"date",
        b":path",
        b"\x00\xff binary",
    ];
    for round in 0..200 {
        let limit = [0, 64, 256, 4096][rng.below(4)];
        let mut d = Decoder::new(limit);
        let mut enc = ModelEncoder {
            table: Vec::new(),
            max: limit,
        };
        for block_no in 0..20 {
            let mut block = Vec::new();
            if rng.below(5) == 0 {
                let size = rng.below(limit + 1);
                put_integer(&mut block, 0x20, 5, size);
                enc.max = size;
                enc.evict(size);
            }
            let mut want = Vec::new();
            for _ in 0..rng.below(8) {
                let name = names[rng.below(names.len())].to_vec();
                let len = [0, 1, 3, 20, 200][rng.below(5)];
                let value: Vec<u8> = (0..len)
                    .map(|_| {
                        if rng.below(4) == 0 {
                            rng.next() as u8
                        } else {
                            b"abc019 -/"[rng.below(9)]
                        }
                    })
                    .collect();
                enc.field(&mut rng, &mut block, &name, &value);
                want.push((name, value));
            }
            let mut got = Vec::new();
            d.decode(&block, usize::MAX, |n, v| {
                got.push((n.to_vec(), v.to_vec()))
            })
            .unwrap_or_else(|e| {
                panic!("seed {seed} (H2WIRE_SEED={seed}) round {round} block {block_no}: {e}")
            });
            assert_eq!(got, want, "seed {seed} round {round} block {block_no}");
            assert_eq!(d.table_size(), enc.size(), "seed {seed} round {round}");
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let seed = seed();
    let mut rng = Rng(seed);
    for _ in 0..20_000 {
        let len = rng.below(40);
        let block: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let mut d = Decoder::new(4096);
        let _ = d.decode(&block, 1024, |_, _| {});
    }
}
