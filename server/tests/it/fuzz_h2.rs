//! Bad-input fuzzing of the SDK port's HTTP/2 connection (`sdk_port/http2.rs`): what a
//! client sends after the connection preface (its SETTINGS, header blocks, DATA, PINGs,
//! WINDOW_UPDATEs, resets), mutated, sent on a connection of its own, then the client's
//! write side closed. The server must answer or refuse, and close the connection within
//! the deadline (never hang), never panic (a connection task's panic is caught and
//! counted: the count must stay 0), and keep serving well-formed clients. One case in
//! eight keeps its write side open for a moment instead, then drops the connection, so
//! that what waits for the client (streams half sent, output not read) is dropped mid-way. Seeded
//! as `fuzz` is (`DISTRO_FUZZ_SEED` replays a run, `DISTRO_FUZZ_CASES` and
//! `DISTRO_FUZZ_SECS` set the budget).

use crate::fuzz::{Budget, Tally, input, runner, sample, seed};
use crate::nacos::harness::{DEADLINE, TestServer, fast_config};
use crate::nacos::wire::{check_call, request_block, request_headers, server_check, still_serving};
use h2wire::frame::{self, ErrorCode};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a case left half open waits for the server before it drops the connection.
const HALF_OPEN: Duration = Duration::from_millis(20);

/// Well-formed client byte streams (after the preface), to mutate.
fn corpus() -> Vec<Vec<u8>> {
    let settings = |params: &[(u16, u32)]| {
        let mut v = Vec::new();
        frame::write_settings(&mut v, params);
        v
    };
    let mut calls = settings(&[(frame::INITIAL_WINDOW_SIZE, 1 << 20)]);
    calls.extend(check_call(1));
    calls.extend(check_call(3));
    let mut split = settings(&[]);
    let block = request_block("/Request/request");
    frame::write_head(&mut split, 4, frame::HEADERS, 0, 1);
    split.extend_from_slice(&block[..4]);
    frame::write_head(
        &mut split,
        block.len() as u32 - 4,
        frame::CONTINUATION,
        frame::END_HEADERS,
        1,
    );
    split.extend_from_slice(&block[4..]);
    let message = server_check();
    frame::write_head(
        &mut split,
        message.len() as u32 + 5,
        frame::DATA,
        frame::PADDED,
        1,
    );
    split.push(4);
    split.extend_from_slice(&message);
    split.extend_from_slice(&[0; 4]);
    frame::write_data(&mut split, 1, &[], true);
    let mut control = settings(&[
        (frame::MAX_FRAME_SIZE, 1 << 20),
        (frame::HEADER_TABLE_SIZE, 0),
    ]);
    frame::write_ping(&mut control, false, [7; 8]);
    frame::write_window_update(&mut control, 0, 1000);
    request_headers(&mut control, 1, "/Request/request", false);
    frame::write_window_update(&mut control, 1, 1000);
    frame::write_rst_stream(&mut control, 1, ErrorCode::CANCEL);
    request_headers(&mut control, 3, "/distro.v1.Registry/Query", true);
    frame::write_goaway(&mut control, 0, ErrorCode::NO_ERROR, b"");
    vec![calls, split, control]
}

/// Whether the server's frames end in a GOAWAY with an error.
fn refused(mut got: &[u8]) -> bool {
    while let Ok(Some((f, n))) = frame::parse(got, 1 << 24) {
        if let frame::Frame::GoAway { code, .. } = f {
            return code != ErrorCode::NO_ERROR;
        }
        got = &got[n..];
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_port_http2_frames() {
    let server = TestServer::start(fast_config()).await;
    let corpus = corpus();
    let strategy = input(&corpus);
    let mut r = runner("SDK-port HTTP/2");
    let budget = Budget::from_env(300);
    let start = Instant::now();
    let mut tally = Tally::default();
    while budget.more(tally.executions) {
        let bytes = sample(&mut r, &strategy);
        let t = Instant::now();
        let mut tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let mut out = h2wire::PREFACE.to_vec();
        out.extend_from_slice(&bytes);
        // The server may close before it has read it all: a failed write is an answer.
        let _ = tcp.write_all(&out).await;
        if tally.executions % 8 == 7 {
            // Left open a moment, then dropped.
            let mut got = Vec::new();
            let _ = tokio::time::timeout(HALF_OPEN, tcp.read_to_end(&mut got)).await;
            tally.record(!refused(&got), t.elapsed());
            continue;
        }
        let _ = tcp.shutdown().await;
        let mut got = Vec::new();
        let read = tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut got)).await;
        assert!(
            read.is_ok(),
            "FINDING: the connection still open {DEADLINE:?} after the client's end, for \
             {bytes:?} (seed {})",
            seed()
        );
        tally.record(!refused(&got), t.elapsed());
    }
    tally.print("SDK-port HTTP/2", start);
    still_serving(server.addr).await;
    assert_eq!(
        distro_server::sdk_port::connection_panics(),
        0,
        "FINDING: a connection task panicked (seed {})",
        seed()
    );
    server.stop().await;
}
