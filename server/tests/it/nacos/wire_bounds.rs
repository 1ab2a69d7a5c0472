//! The SDK port's HTTP/2 connection (`sdk_port/http2.rs`) under clients that try to make
//! the server hold memory or work: a client that does not read and sends tiny requests
//! answered with large refusals, one that opens and resets streams at once ("rapid
//! reset"), one that keeps unary messages half sent; and the RFC points checked with
//! them: the HPACK table size a client sets, frames on closed streams.

use crate::nacos::harness::{DEADLINE, TestServer, fast_config};
use crate::nacos::wire::{
    Got, Wire, check_call, read_refusals, request_block, request_headers, write_until_stalled,
};
use h2wire::frame::{self, ErrorCode};
use h2wire::hpack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The output the server lets wait before it stops handling frames (connection.rs).
const HIGH_WATER: usize = 256 * 1024;

#[tokio::test]
async fn tiny_requests_with_large_refusals_to_a_client_that_does_not_read_stay_bounded() {
    let server = TestServer::start(fast_config()).await;
    let (mut reader, writer) = Wire::open_split(server.addr).await;
    // A 4,000-byte :path of 0xFF put in the HPACK dynamic table once (literal with
    // incremental indexing of static index 4), then requests of 12 bytes: :method POST
    // and :scheme http (static 3 and 6) and the path (dynamic 62). Each answer is an
    // UNIMPLEMENTED naming the path, where each 0xFF would take 9 bytes.
    let mut first = vec![0x83, 0x86];
    hpack::put_integer(&mut first, 0x40, 6, 4);
    hpack::put_integer(&mut first, 0, 7, 4000);
    first.extend_from_slice(&[0xff; 4000]);
    let later = vec![0x83, 0x86, 0xbe];
    // More than the socket buffers between hold: the writes must stall.
    let requests = 10_000_000u32;
    let writing = write_until_stalled(writer, requests, first, later).await;
    let (output, input) = distro_server::sdk_port::largest_buffers();
    assert!(
        output < HIGH_WATER + 64 * 1024,
        "{output} bytes of output waiting for a client that does not read"
    );
    assert!(input <= 64 * 1024, "an input buffer of {input} bytes");
    // Answered once the client reads (the first few thousand checked).
    read_refusals(&mut reader, 5_000, "12").await;
    writing.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_opens_and_resets_streams_at_once_gets_enhance_your_calm() {
    let server = TestServer::start(fast_config()).await;
    let mut w = Wire::open(server.addr, &[]).await;
    let block = request_block("/BiRequestStream/requestBiStream");
    let mut out = Vec::new();
    for i in 0..2_000u32 {
        frame::write_headers(&mut out, 2 * i + 1, &block, false, 16_384);
        frame::write_rst_stream(&mut out, 2 * i + 1, ErrorCode::CANCEL);
    }
    // The server may close before it has read it all.
    let _ = w.tcp.write_all(&out).await;
    loop {
        match w.next().await {
            Got::GoAway { code, .. } => {
                assert_eq!(code, ErrorCode::ENHANCE_YOUR_CALM);
                break;
            }
            Got::Closed => panic!("closed without GOAWAY"),
            _ => {}
        }
    }
    crate::nacos::wire::still_serving(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn unary_messages_kept_half_sent_stop_getting_connection_window() {
    let server = TestServer::start(fast_config()).await;
    let budget = fast_config().max_message_bytes.max(1 << 20);
    let mut w = Wire::open(server.addr, &[]).await;
    // The window the client may use: the default, then what the server hands back.
    let mut window: usize = 65_535;
    let mut sent = 0usize;
    // Under half the window: the server hands window back in halves of it.
    let chunk = 200 * 1024;
    let mut id = 1u32;
    let mut ping = 0u64;
    loop {
        while window >= chunk + 5 {
            // A message declared 8 MiB long, 200 KiB of it sent.
            let mut out = Vec::new();
            request_headers(&mut out, id, "/Request/request", false);
            let mut message = vec![0];
            message.extend_from_slice(&(8u32 << 20).to_be_bytes());
            message.resize(chunk + 5, 7);
            for piece in message.chunks(16_384) {
                frame::write_data(&mut out, id, piece, false);
            }
            w.send(&out).await;
            window -= message.len();
            sent += message.len();
            id += 2;
        }
        assert!(
            sent < budget + (4 << 20),
            "{sent} bytes of unfinished messages taken (budget {budget})"
        );
        // Every WINDOW_UPDATE the server sent for them comes before the PING's ack.
        ping += 1;
        let mut out = Vec::new();
        frame::write_ping(&mut out, false, ping.to_be_bytes());
        w.send(&out).await;
        let before = window;
        loop {
            match w.next().await {
                Got::WindowUpdate {
                    stream: 0,
                    increment,
                } => window += increment as usize,
                Got::Ping { ack: true, data } if data == ping.to_be_bytes() => break,
                Got::Closed | Got::GoAway { .. } | Got::Reset { .. } => {
                    panic!("the server ended the test's streams")
                }
                _ => {}
            }
        }
        if window < chunk + 5 && window == before {
            break;
        }
    }
    assert!(
        sent > budget,
        "stalled at {sent} bytes, under the budget {budget}"
    );
    w.close_then_stop(server).await;
}

#[tokio::test]
async fn a_lowered_header_table_size_starts_the_next_header_block_with_a_size_update() {
    let server = TestServer::start(fast_config()).await;
    let mut w = Wire::open(server.addr, &[(frame::HEADER_TABLE_SIZE, 0)]).await;
    w.send(&check_call(1)).await;
    let mut buf = Vec::new();
    let mut blocks = Vec::new();
    while blocks.len() < 2 {
        buf.reserve(16 * 1024);
        let n = tokio::time::timeout(DEADLINE, w.tcp.read_buf(&mut buf))
            .await
            .expect("frames in time")
            .expect("read");
        assert!(n > 0, "closed");
        while let Some((f, len)) = frame::parse(&buf, 1 << 24).expect("a frame") {
            if let frame::Frame::Headers { block, .. } = f {
                blocks.push(block.to_vec());
            }
            buf.drain(..len);
        }
    }
    assert_eq!(blocks[0][0], 0x20, "no table size update first: {blocks:?}");
    let mut decoder = hpack::Decoder::new(0);
    for b in &blocks {
        decoder
            .decode(b, 1 << 20, |_, _| {})
            .map_err(|e| e.reason)
            .expect("a block a decoder with a table of 0 takes");
    }
    w.close_then_stop(server).await;
}

#[tokio::test]
async fn frames_on_closed_streams_are_connection_errors_unless_we_closed_them_recently() {
    let server = TestServer::start(fast_config()).await;
    // A stream we refused while the client was still sending: its late DATA and
    // trailers are dropped, and the connection serves on.
    let mut w = Wire::open(server.addr, &[]).await;
    let mut out = Vec::new();
    request_headers(&mut out, 1, "/no/such", false);
    w.send(&out).await;
    assert!(matches!(
        w.next_interesting().await,
        Got::Headers {
            stream: 1,
            end: true,
            ..
        }
    ));
    assert_eq!(
        w.next_interesting().await,
        Got::Reset {
            stream: 1,
            code: ErrorCode::NO_ERROR
        }
    );
    let mut out = Vec::new();
    frame::write_data(&mut out, 1, b"late", false);
    request_headers(&mut out, 1, "/no/such", true);
    out.extend(check_call(3));
    w.send(&out).await;
    w.answer_checked(3).await;
    // A stream answered and closed on both sides: HEADERS on it again.
    let mut out = Vec::new();
    request_headers(&mut out, 3, "/Request/request", true);
    w.send(&out).await;
    w.expect_goaway(ErrorCode::PROTOCOL_ERROR, "HEADERS on a closed stream")
        .await;
    // A new stream id lower than the highest opened.
    let mut w = Wire::open(server.addr, &[]).await;
    w.send(&check_call(5)).await;
    w.answer_checked(5).await;
    w.send(&check_call(3)).await;
    w.expect_goaway(
        ErrorCode::PROTOCOL_ERROR,
        "a stream id lower than the highest",
    )
    .await;
    // DATA on a stream answered and closed on both sides.
    let mut w = Wire::open(server.addr, &[]).await;
    w.send(&check_call(1)).await;
    w.answer_checked(1).await;
    let mut out = Vec::new();
    frame::write_data(&mut out, 1, b"late", true);
    w.send(&out).await;
    w.expect_goaway(ErrorCode::STREAM_CLOSED, "DATA on a closed stream")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn an_error_after_the_final_goaway_names_the_same_last_stream() {
    let server = TestServer::start(fast_config()).await;
    let mut w = Wire::open(server.addr, &[]).await;
    let stopping = tokio::spawn(server.stop());
    let ping = loop {
        match w.next().await {
            Got::Ping { ack: false, data } => break data,
            Got::Closed => panic!("closed"),
            _ => {}
        }
    };
    // A stream left open, so the connection outlives the final GOAWAY.
    let mut out = Vec::new();
    request_headers(&mut out, 1, "/Request/request", false);
    frame::write_ping(&mut out, true, ping);
    w.send(&out).await;
    let got = w.next_interesting().await;
    assert!(
        matches!(
            got,
            Got::GoAway {
                last_stream: 1,
                code: ErrorCode::NO_ERROR,
                ..
            }
        ),
        "the final GOAWAY: {got:?}"
    );
    // A newer stream, refused; then a connection error.
    let mut out = Vec::new();
    request_headers(&mut out, 3, "/Request/request", true);
    frame::write_head(&mut out, 0, frame::CONTINUATION, frame::END_HEADERS, 1);
    w.send(&out).await;
    assert_eq!(
        w.next_interesting().await,
        Got::Reset {
            stream: 3,
            code: ErrorCode::REFUSED_STREAM
        }
    );
    let got = w.next_interesting().await;
    assert!(
        matches!(
            got,
            Got::GoAway {
                last_stream: 1,
                code: ErrorCode::PROTOCOL_ERROR,
                ..
            }
        ),
        "the error's GOAWAY names stream 1 still: {got:?}"
    );
    stopping.await.expect("stopped");
}

/// A client of small requests keeps the 8 KiB read buffer; one that sends more than it
/// holds (its reads fill it) is read 64 KiB at a time, and no more.
#[tokio::test]
async fn the_read_buffer_grows_to_64_kib_for_a_client_whose_reads_fill_it() {
    let server = TestServer::start(fast_config()).await;
    let mut w = Wire::open(server.addr, &[]).await;
    let ping = |out: &mut Vec<u8>, n: u64| frame::write_ping(out, false, n.to_be_bytes());
    for n in 1..=200u64 {
        let mut out = Vec::new();
        ping(&mut out, n);
        w.send(&out).await;
        ping_acked(&mut w, n).await;
    }
    assert_eq!(
        distro_server::sdk_port::largest_buffers().1,
        0,
        "small requests"
    );
    // 40,000 PINGs (680 KB) in one write: the server's reads fill its buffer.
    let mut out = Vec::new();
    for n in 1_000..41_000u64 {
        ping(&mut out, n);
    }
    w.send(&out).await;
    ping_acked(&mut w, 40_999).await;
    assert_eq!(distro_server::sdk_port::largest_buffers().1, 64 * 1024);
    w.close_then_stop(server).await;
}

/// Reads until the server acknowledges PING `n`.
async fn ping_acked(w: &mut Wire, n: u64) {
    loop {
        match w.next().await {
            Got::Ping { ack: true, data } if data == n.to_be_bytes() => return,
            Got::Closed | Got::GoAway { .. } => panic!("the server ended the connection"),
            _ => {}
        }
    }
}
