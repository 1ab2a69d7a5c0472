//! Tests of the frame layer: every writer read back by the parser, partial buffers, padding,
//! header blocks split into CONTINUATIONs, and each connection error of `parse`.

use super::*;

fn one(buf: &[u8]) -> Frame<'_> {
    let (f, n) = parse(buf, DEFAULT_MAX_FRAME_SIZE)
        .expect("valid")
        .expect("whole");
    assert_eq!(n, buf.len());
    f
}

fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_head(&mut out, payload.len() as u32, kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn err(buf: &[u8]) -> FrameError {
    parse(buf, DEFAULT_MAX_FRAME_SIZE).expect_err("malformed")
}

#[test]
fn writers_round_trip() {
    let mut out = Vec::new();
    write_data(&mut out, 3, b"hello", true);
    assert_eq!(
        one(&out),
        Frame::Data {
            stream: 3,
            end_stream: true,
            data: b"hello",
            flow_len: 5
        }
    );
    out.clear();
    write_data_head(&mut out, 5, 2, false);
    out.extend_from_slice(b"hi");
    assert_eq!(
        one(&out),
        Frame::Data {
            stream: 5,
            end_stream: false,
            data: b"hi",
            flow_len: 2
        }
    );
    out.clear();
    write_settings(
        &mut out,
        &[(ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, 1 << 20)],
    );
    let Frame::Settings { ack: false, params } = one(&out) else {
        panic!("settings")
    };
    assert_eq!(
        settings_params(params).collect::<Vec<_>>(),
        [(ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, 1 << 20)]
    );
    out.clear();
    write_settings_ack(&mut out);
    assert_eq!(
        one(&out),
        Frame::Settings {
            ack: true,
            params: &[]
        }
    );
    out.clear();
    write_ping(&mut out, true, *b"12345678");
    assert_eq!(
        one(&out),
        Frame::Ping {
            ack: true,
            data: *b"12345678"
        }
    );
    out.clear();
    write_window_update(&mut out, 0, 1000);
    assert_eq!(
        one(&out),
        Frame::WindowUpdate {
            stream: 0,
            increment: 1000
        }
    );
    out.clear();
    write_rst_stream(&mut out, 7, ErrorCode::CANCEL);
    assert_eq!(
        one(&out),
        Frame::RstStream {
            stream: 7,
            code: ErrorCode::CANCEL
        }
    );
    out.clear();
    write_goaway(&mut out, 9, ErrorCode::ENHANCE_YOUR_CALM, b"calm");
    assert_eq!(
        one(&out),
        Frame::GoAway {
            last_stream: 9,
            code: ErrorCode::ENHANCE_YOUR_CALM,
            debug: b"calm"
        }
    );
    assert_eq!(ErrorCode::ENHANCE_YOUR_CALM.name(), "ENHANCE_YOUR_CALM");
    assert_eq!(ErrorCode(0x99).name(), "unknown");
}

#[test]
fn headers_split_into_continuations() {
    let block: Vec<u8> = (0..=255u8).cycle().take(40).collect();
    let mut out = Vec::new();
    write_headers(&mut out, 1, &block, true, 16);
    let mut at = 0;
    let mut joined = Vec::new();
    let mut frames = 0;
    while at < out.len() {
        let (f, n) = parse(&out[at..], 16).expect("valid").expect("whole");
        match (frames, f) {
            (
                0,
                Frame::Headers {
                    stream: 1,
                    end_stream: true,
                    end_headers: false,
                    block,
                },
            ) => joined.extend_from_slice(block),
            (
                1..=2,
                Frame::Continuation {
                    stream: 1,
                    end_headers,
                    block,
                },
            ) => {
                assert_eq!(end_headers, frames == 2);
                joined.extend_from_slice(block);
            }
            other => panic!("unexpected {other:?}"),
        }
        frames += 1;
        at += n;
    }
    assert_eq!(frames, 3);
    assert_eq!(joined, block);
    // A block that fits is one HEADERS with END_HEADERS; an empty one too.
    for len in [0, 16] {
        out.clear();
        write_headers(&mut out, 3, &block[..len], false, 16);
        assert_eq!(
            one(&out),
            Frame::Headers {
                stream: 3,
                end_stream: false,
                end_headers: true,
                block: &block[..len]
            }
        );
    }
}

#[test]
fn partial_buffers_wait_for_more() {
    let mut out = Vec::new();
    write_data(&mut out, 1, b"0123456789", false);
    write_ping(&mut out, false, [1; 8]);
    let first = HEAD_LEN + 10;
    for cut in 0..first {
        assert_eq!(
            parse(&out[..cut], DEFAULT_MAX_FRAME_SIZE).expect("valid"),
            None,
            "{cut}"
        );
    }
    let (_, n) = parse(&out, DEFAULT_MAX_FRAME_SIZE)
        .expect("valid")
        .expect("whole");
    assert_eq!(n, first);
    assert_eq!(
        one(&out[n..]),
        Frame::Ping {
            ack: false,
            data: [1; 8]
        }
    );
}

#[test]
fn padding_and_priority_are_stripped() {
    // DATA: pad length 3, "ab", 3 bytes of padding.
    let f = raw(DATA, PADDED | END_STREAM, 1, &[3, b'a', b'b', 0, 0, 0]);
    assert_eq!(
        one(&f),
        Frame::Data {
            stream: 1,
            end_stream: true,
            data: b"ab",
            flow_len: 6
        }
    );
    // All padding, no data.
    let f = raw(DATA, PADDED, 1, &[2, 0, 0]);
    assert!(matches!(
        one(&f),
        Frame::Data {
            data: [],
            flow_len: 3,
            ..
        }
    ));
    // HEADERS with padding and priority.
    let f = raw(
        HEADERS,
        PADDED | PRIORITY_FLAG | END_HEADERS,
        5,
        &[1, 0, 0, 0, 3, 16, 0x82, 0],
    );
    assert_eq!(
        one(&f),
        Frame::Headers {
            stream: 5,
            end_stream: false,
            end_headers: true,
            block: &[0x82]
        }
    );
    // The reserved bit of the stream id is ignored.
    let f = raw(PRIORITY, 0, 0x8000_0003, &[0; 5]);
    assert_eq!(one(&f), Frame::Priority { stream: 3 });
    // Unknown kinds pass through; PUSH_PROMISE is the caller's to refuse.
    assert_eq!(
        one(&raw(0x42, 0xff, 9, b"xyz")),
        Frame::Unknown {
            kind: 0x42,
            stream: 9
        }
    );
    assert_eq!(
        one(&raw(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2])),
        Frame::PushPromise { stream: 1 }
    );
    // A zero increment on a stream is the caller's stream error.
    assert_eq!(
        one(&raw(WINDOW_UPDATE, 0, 1, &[0; 4])),
        Frame::WindowUpdate {
            stream: 1,
            increment: 0
        }
    );
}

#[test]
fn connection_errors() {
    let size = ErrorCode::FRAME_SIZE_ERROR;
    let proto = ErrorCode::PROTOCOL_ERROR;
    let cases: Vec<(Vec<u8>, ErrorCode)> = vec![
        (raw(DATA, 0, 1, &[0; 16_385]), size),
        (raw(PRIORITY, 0, 1, &[0; 4]), size),
        (raw(RST_STREAM, 0, 1, &[0; 5]), size),
        (raw(SETTINGS, 0, 0, &[0; 7]), size),
        (raw(SETTINGS, ACK, 0, &[0; 6]), size),
        (raw(PING, 0, 0, &[0; 7]), size),
        (raw(WINDOW_UPDATE, 0, 1, &[0; 5]), size),
        (raw(GOAWAY, 0, 0, &[0; 7]), size),
        (raw(DATA, PADDED, 1, &[]), size),
        (raw(HEADERS, PRIORITY_FLAG, 1, &[0; 4]), size),
        (raw(DATA, 0, 0, b"x"), proto),
        (raw(HEADERS, 0, 0, &[0x82]), proto),
        (raw(PRIORITY, 0, 0, &[0; 5]), proto),
        (raw(RST_STREAM, 0, 0, &[0; 4]), proto),
        (raw(CONTINUATION, 0, 0, &[0x82]), proto),
        (raw(PUSH_PROMISE, 0, 0, &[0; 4]), proto),
        (raw(SETTINGS, 0, 1, &[]), proto),
        (raw(PING, 0, 1, &[0; 8]), proto),
        (raw(GOAWAY, 0, 1, &[0; 8]), proto),
        (raw(WINDOW_UPDATE, 0, 0, &[0; 4]), proto),
        (raw(WINDOW_UPDATE, 0, 0, &[0x80, 0, 0, 0]), proto),
        (raw(DATA, PADDED, 1, &[1]), proto),
        (raw(DATA, PADDED, 1, &[5, 0, 0]), proto),
        (
            raw(HEADERS, PADDED | PRIORITY_FLAG, 1, &[1, 0, 0, 0, 0, 0]),
            proto,
        ),
    ];
    for (buf, code) in &cases {
        assert_eq!(err(buf).code, *code, "{:02x?}", &buf[..HEAD_LEN]);
    }
    // The size check needs the head alone.
    let over = raw(DATA, 0, 1, &[0; 100]);
    assert_eq!(
        parse(&over[..HEAD_LEN], 99).expect_err("too large").code,
        size
    );
}

#[test]
fn random_bytes_never_panic() {
    let seed = crate::test_rng::seed();
    let mut rng = crate::test_rng::Rng(seed);
    for _ in 0..50_000 {
        let len = rng.below(40);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= HEAD_LEN && rng.below(2) == 0 {
            // A plausible head: a small length and a known kind.
            buf[..3].copy_from_slice(&[0, 0, (len - HEAD_LEN) as u8]);
            buf[3] %= 10;
        }
        if let Ok(Some((_, n))) = parse(&buf, 32) {
            assert!(n <= buf.len(), "seed {seed}");
        }
    }
}

/// The ranges of RFC 9113 §6.5.2, at their edges; unknown identifiers pass.
#[test]
fn settings_values_are_checked_at_the_edges_of_their_ranges() {
    let code = |id, value| check_setting(id, value).map_err(|e| e.code);
    assert_eq!(code(ENABLE_PUSH, 0), Ok(()));
    assert_eq!(code(ENABLE_PUSH, 1), Ok(()));
    assert_eq!(code(ENABLE_PUSH, 2), Err(ErrorCode::PROTOCOL_ERROR));
    assert_eq!(code(INITIAL_WINDOW_SIZE, MAX_WINDOW), Ok(()));
    assert_eq!(
        code(INITIAL_WINDOW_SIZE, MAX_WINDOW + 1),
        Err(ErrorCode::FLOW_CONTROL_ERROR)
    );
    assert_eq!(code(MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE), Ok(()));
    assert_eq!(code(MAX_FRAME_SIZE, LARGEST_MAX_FRAME_SIZE), Ok(()));
    assert_eq!(
        code(MAX_FRAME_SIZE, DEFAULT_MAX_FRAME_SIZE - 1),
        Err(ErrorCode::PROTOCOL_ERROR)
    );
    assert_eq!(
        code(MAX_FRAME_SIZE, LARGEST_MAX_FRAME_SIZE + 1),
        Err(ErrorCode::PROTOCOL_ERROR)
    );
    assert_eq!(code(0x99, u32::MAX), Ok(()));
}

/// Bytes are handed back once half the window is unacknowledged, all of them at once.
#[test]
fn received_bytes_are_handed_back_in_halves_of_the_window() {
    let mut out = Vec::new();
    let mut unacked = 0;
    assert_eq!(hand_back(&mut out, 3, &mut unacked, 49, 100), 0);
    assert!(out.is_empty());
    assert_eq!(unacked, 49);
    assert_eq!(hand_back(&mut out, 3, &mut unacked, 2, 100), 51);
    assert_eq!(unacked, 0);
    assert_eq!(
        one(&out),
        Frame::WindowUpdate {
            stream: 3,
            increment: 51
        }
    );
}
