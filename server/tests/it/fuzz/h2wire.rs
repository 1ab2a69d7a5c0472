//! The `h2wire` decoders under the same mutation fuzzing as the peer protocol's: frame
//! parsing (`frame::parse` over a buffer of frames, every frame kind and flag) and HPACK
//! header blocks (`hpack::Decoder::decode`, fed the blocks of those frames in order, with a
//! decoder kept across cases as a connection's is, and a fresh one). Every input must give
//! frames or a clear error, never a panic, a hang, or a frame longer than its input.

use super::{Budget, Tally, input, runner, sample, seed};
use h2wire::frame::{self, ErrorCode, Frame};
use h2wire::hpack;
use std::time::{Duration, Instant};

/// Valid frame sequences and header blocks: what a gRPC peer sends, and the RFC 7541
/// Appendix C blocks (spec text) with Huffman strings and indexing.
fn corpus() -> Vec<Vec<u8>> {
    let mut head = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "127.0.0.1:9848"),
        (":path", "/Request/request"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack::encode_field(&mut head, n.as_bytes(), v.as_bytes());
    }
    let rfc_c4 = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let rfc_c6 = [0x48, 0x83, 0x64, 0x0e, 0xff, 0xc1, 0xc0, 0xbf];
    let mut calls = Vec::new();
    frame::write_settings(
        &mut calls,
        &[
            (frame::INITIAL_WINDOW_SIZE, 1 << 20),
            (frame::ENABLE_PUSH, 0),
        ],
    );
    frame::write_settings_ack(&mut calls);
    frame::write_headers(&mut calls, 1, &head, false, 16);
    frame::write_data(&mut calls, 1, &[0, 0, 0, 0, 3, 1, 2, 3], true);
    frame::write_headers(&mut calls, 3, &rfc_c4, true, 1 << 14);
    frame::write_window_update(&mut calls, 0, 1000);
    frame::write_window_update(&mut calls, 1, 1000);
    frame::write_ping(&mut calls, false, *b"12345678");
    frame::write_rst_stream(&mut calls, 3, ErrorCode::CANCEL);
    frame::write_goaway(&mut calls, 3, ErrorCode::NO_ERROR, b"bye");
    let mut padded = Vec::new();
    frame::write_head(
        &mut padded,
        8,
        frame::HEADERS,
        frame::PADDED | frame::PRIORITY_FLAG | frame::END_HEADERS,
        5,
    );
    padded.extend_from_slice(&[1, 0, 0, 0, 3, 16, 0x88, 0]);
    frame::write_head(&mut padded, 4, frame::DATA, frame::PADDED, 5);
    padded.extend_from_slice(&[2, 9, 0, 0]);
    let mut responses = Vec::new();
    frame::write_headers(&mut responses, 1, &rfc_c6, false, 1 << 14);
    vec![
        head,
        rfc_c4.to_vec(),
        rfc_c6.to_vec(),
        calls,
        padded,
        responses,
    ]
}

/// Parses every frame of `b` and decodes every header block; false when something was
/// refused with an error.
fn case(b: &[u8], kept: &mut hpack::Decoder) -> bool {
    let mut fresh = hpack::Decoder::new(256);
    let mut at = 0;
    let mut ok = true;
    // The input as a header block, too.
    let mut fields = 0usize;
    ok &= fresh.decode(b, 4096, |_, _| fields += 1).is_ok();
    while at < b.len() {
        match frame::parse(&b[at..], 64) {
            Ok(Some((f, n))) => {
                assert!(n >= 9 && n <= b.len() - at, "a frame past its input");
                at += n;
                if let Frame::Headers { block, .. } | Frame::Continuation { block, .. } = f {
                    ok &= kept.decode(block, 1024, |_, _| {}).is_ok();
                }
                if let Frame::Settings { params, .. } = f {
                    assert_eq!(frame::settings_params(params).count(), params.len() / 6);
                }
            }
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    ok
}

#[test]
fn h2wire_frames_and_header_blocks() {
    let corpus = corpus();
    let strategy = input(&corpus);
    let mut r = runner("h2wire");
    let budget = Budget::from_env(20_000);
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut kept = hpack::Decoder::new(4096);
    while budget.more(tally.executions) {
        let b = sample(&mut r, &strategy);
        let t = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&b, &mut kept)));
        match outcome {
            Ok(ok) => {
                if !ok {
                    // A connection would end: the next case starts a fresh one.
                    kept = hpack::Decoder::new(4096);
                }
                tally.record(ok, t.elapsed());
            }
            Err(_) => panic!(
                "FINDING: the h2wire decoders panicked on {:02x?} (seed {})",
                b,
                seed()
            ),
        }
    }
    tally.print("h2wire frames and header blocks", start);
    assert!(
        tally.slowest < Duration::from_secs(1),
        "a case took {:?}",
        tally.slowest
    );
}
