//! The SDK port's HTTP/2 connection (`sdk_port/http2.rs`) from a raw socket, frame by
//! frame, written and read with `h2wire`: malformed frames and header blocks get the
//! GOAWAY or RST_STREAM RFC 9113 asks for while the server keeps serving, padding and
//! CONTINUATION are read, the concurrent-stream limit refuses the excess streams, and
//! flow control holds the answers back both ways: within the client's windows, and, for
//! a client that does not read at all, by the server no longer reading its requests.

use crate::nacos::harness::{DEADLINE, TestServer, decode, fast_config, raw_payload};
use distro_server::sdk_port::MAX_CONCURRENT_STREAMS;
use h2wire::frame::{self, ErrorCode, Frame};
use h2wire::hpack;
use prost::Message as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

/// A frame as read, owned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Got {
    Headers {
        stream: u32,
        end: bool,
        fields: Vec<(String, String)>,
    },
    Data {
        stream: u32,
        end: bool,
        len: usize,
        data: Vec<u8>,
    },
    Reset {
        stream: u32,
        code: ErrorCode,
    },
    GoAway {
        last_stream: u32,
        code: ErrorCode,
        debug: String,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Settings {
        ack: bool,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    /// The server closed the connection.
    Closed,
}

/// A raw HTTP/2 client connection.
pub(crate) struct Wire {
    pub(crate) tcp: TcpStream,
    buf: Vec<u8>,
    decoder: hpack::Decoder,
}

impl Wire {
    /// Connects and sends the preface and SETTINGS with `settings`.
    pub(crate) async fn open(addr: SocketAddr, settings: &[(u16, u32)]) -> Wire {
        let mut w = Wire::raw(addr).await;
        let mut out = h2wire::PREFACE.to_vec();
        frame::write_settings(&mut out, settings);
        w.send(&out).await;
        w
    }

    /// Connects with the largest stream window, split for a client that writes and
    /// reads on its own schedule.
    pub(crate) async fn open_split(addr: SocketAddr) -> (OwnedReadHalf, OwnedWriteHalf) {
        let w = Wire::open(addr, &[(frame::INITIAL_WINDOW_SIZE, frame::MAX_WINDOW)]).await;
        w.tcp.into_split()
    }

    /// Connects and sends nothing.
    async fn raw(addr: SocketAddr) -> Wire {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Wire {
            tcp,
            buf: Vec::new(),
            decoder: hpack::Decoder::new(4096),
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write");
    }

    /// The next frame from the server.
    pub(crate) async fn next(&mut self) -> Got {
        loop {
            if let Some((got, n)) = self.parse() {
                self.buf.drain(..n);
                return got;
            }
            self.buf.reserve(16 * 1024);
            let n = tokio::time::timeout(DEADLINE, self.tcp.read_buf(&mut self.buf))
                .await
                .expect("a frame in time")
                .unwrap_or(0);
            if n == 0 {
                return Got::Closed;
            }
        }
    }

    fn parse(&mut self) -> Option<(Got, usize)> {
        let (f, n) = frame::parse(&self.buf, 1 << 24).expect("a valid frame")?;
        let got = match f {
            Frame::Headers {
                stream,
                end_stream,
                block,
                ..
            } => {
                let mut fields = Vec::new();
                self.decoder
                    .decode(block, 1 << 20, |n, v| {
                        fields.push((
                            String::from_utf8_lossy(n).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        ));
                    })
                    .map_err(|e| e.reason)
                    .expect("a valid header block");
                Got::Headers {
                    stream,
                    end: end_stream,
                    fields,
                }
            }
            Frame::Data {
                stream,
                end_stream,
                data,
                ..
            } => Got::Data {
                stream,
                end: end_stream,
                len: data.len(),
                data: data.to_vec(),
            },
            Frame::RstStream { stream, code } => Got::Reset { stream, code },
            Frame::GoAway {
                last_stream,
                code,
                debug,
            } => Got::GoAway {
                last_stream,
                code,
                debug: String::from_utf8_lossy(debug).into_owned(),
            },
            Frame::WindowUpdate { stream, increment } => Got::WindowUpdate { stream, increment },
            Frame::Settings { ack, .. } => Got::Settings { ack },
            Frame::Ping { ack, data } => Got::Ping { ack, data },
            other => panic!("the server sent {other:?}"),
        };
        Some((got, n))
    }

    /// The next frame that is not SETTINGS, WINDOW_UPDATE or PING.
    pub(crate) async fn next_interesting(&mut self) -> Got {
        loop {
            match self.next().await {
                Got::Settings { .. } | Got::WindowUpdate { .. } | Got::Ping { .. } => {}
                got => return got,
            }
        }
    }

    /// Expects a GOAWAY with `code`, then the end of the connection.
    pub(crate) async fn expect_goaway(&mut self, code: ErrorCode, what: &str) {
        let got = self.next_interesting().await;
        assert!(
            matches!(&got, Got::GoAway { code: c, .. } if *c == code),
            "{what}: {got:?}, not GOAWAY {}",
            code.name()
        );
        assert_eq!(self.next_interesting().await, Got::Closed, "{what}");
    }

    /// The frames of stream `id` until it ends: its header fields (head and trailers) and
    /// its DATA.
    pub(crate) async fn answer(&mut self, id: u32) -> (Vec<(String, String)>, Vec<u8>) {
        let (mut fields, mut data) = (Vec::new(), Vec::new());
        loop {
            match self.next_interesting().await {
                Got::Headers {
                    stream,
                    end,
                    fields: f,
                } if stream == id => {
                    fields.extend(f);
                    if end {
                        return (fields, data);
                    }
                }
                Got::Data {
                    stream,
                    end,
                    data: d,
                    ..
                } if stream == id => {
                    data.extend(d);
                    if end {
                        return (fields, data);
                    }
                }
                other => panic!("stream {id}: {other:?}"),
            }
        }
    }

    /// Reads the answer on stream `id` and asserts it a `ServerCheckResponse` with
    /// status 0 (`assert_checked`).
    pub(crate) async fn answer_checked(&mut self, id: u32) {
        let (fields, data) = self.answer(id).await;
        assert_checked(&fields, &data);
    }

    /// Closes the connection, then stops `server`: closed first, since a client that
    /// never answers the PING of the graceful close would hold the shutdown for its grace.
    pub(crate) async fn close_then_stop(self, server: TestServer) {
        drop(self);
        server.stop().await;
    }
}

/// The HPACK block of a gRPC request to `path`.
pub(crate) fn request_block(path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        hpack::encode_field(&mut b, n.as_bytes(), v.as_bytes());
    }
    b
}

/// Appends the HEADERS of a gRPC request to `path` on stream `id`.
pub(crate) fn request_headers(out: &mut Vec<u8>, id: u32, path: &str, end_stream: bool) {
    frame::write_headers(out, id, &request_block(path), end_stream, 16_384);
}

/// A gRPC message frame of a Nacos `ServerCheckRequest`.
pub(crate) fn server_check() -> Vec<u8> {
    let p = raw_payload("ServerCheckRequest", b"{}");
    let mut m = vec![0];
    m.extend_from_slice(&(p.encoded_len() as u32).to_be_bytes());
    p.encode(&mut m).expect("encode");
    m
}

/// A whole unary call of a `ServerCheckRequest` on stream `id`.
pub(crate) fn check_call(id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    request_headers(&mut out, id, "/Request/request", false);
    frame::write_data(&mut out, id, &server_check(), true);
    out
}

pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Asserts that `data` is one `ServerCheckResponse` and the call ended with status 0.
pub(crate) fn assert_checked(fields: &[(String, String)], data: &[u8]) {
    assert_eq!(field(fields, "grpc-status"), "0", "{fields:?}");
    let p = distro_server::proto::nacos::Payload::decode(&data[5..]).expect("a Payload");
    assert_eq!(decode(&p).0, "ServerCheckResponse");
}

/// A new connection serves a call: the server is still up.
pub(crate) async fn still_serving(addr: SocketAddr) {
    let mut w = Wire::open(addr, &[]).await;
    w.send(&check_call(1)).await;
    w.answer_checked(1).await;
}

#[tokio::test]
async fn malformed_frames_and_header_blocks_get_goaway_and_the_server_keeps_serving() {
    let server = TestServer::start(fast_config()).await;
    let settings = {
        let mut v = Vec::new();
        frame::write_settings(&mut v, &[]);
        v
    };
    let frames = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = settings.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "DATA on stream 0",
            frames(&|v| frame::write_data(v, 0, b"x", false)),
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "HEADERS on an even stream",
            frames(&|v| request_headers(v, 2, "/Request/request", true)),
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "an HPACK index beyond both tables",
            frames(&|v| frame::write_headers(v, 1, &[0xff, 0x80, 0x01], true, 16_384)),
            ErrorCode::COMPRESSION_ERROR,
        ),
        (
            "CONTINUATION without HEADERS",
            frames(&|v| {
                frame::write_head(v, 1, frame::CONTINUATION, frame::END_HEADERS, 1);
                v.push(0x82);
            }),
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "a header block interrupted by a PING",
            frames(&|v| {
                frame::write_head(v, 1, frame::HEADERS, 0, 1);
                v.push(0x83);
                frame::write_ping(v, false, [0; 8]);
            }),
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
            frames(&|v| frame::write_settings(v, &[(frame::INITIAL_WINDOW_SIZE, 1 << 31)])),
            ErrorCode::FLOW_CONTROL_ERROR,
        ),
        (
            "a frame larger than SETTINGS_MAX_FRAME_SIZE",
            frames(&|v| {
                frame::write_head(v, 20_000, frame::DATA, 0, 1);
                v.extend(std::iter::repeat_n(0, 20_000));
            }),
            ErrorCode::FRAME_SIZE_ERROR,
        ),
        (
            "a WINDOW_UPDATE of zero on the connection",
            frames(&|v| frame::write_window_update(v, 0, 0)),
            ErrorCode::PROTOCOL_ERROR,
        ),
        (
            "PING before SETTINGS",
            {
                let mut v = Vec::new();
                frame::write_ping(&mut v, false, [0; 8]);
                v
            },
            ErrorCode::PROTOCOL_ERROR,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut w = Wire::raw(server.addr).await;
        let mut out = h2wire::PREFACE.to_vec();
        out.extend_from_slice(&bytes);
        w.send(&out).await;
        w.expect_goaway(code, what).await;
        still_serving(server.addr).await;
    }
    // Not HTTP/2 at all.
    let mut w = Wire::raw(server.addr).await;
    w.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    w.expect_goaway(ErrorCode::PROTOCOL_ERROR, "an HTTP/1.1 request")
        .await;
    still_serving(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_rst_stream_and_padding_and_continuation_are_read() {
    let server = TestServer::start(fast_config()).await;
    let mut w = Wire::open(server.addr, &[]).await;
    let rst = |id: u32, code: ErrorCode| Got::Reset { stream: id, code };
    // An uppercase field name; a request without :path.
    let mut block = request_block("/Request/request");
    hpack::encode_field(&mut block, b"X-Upper", b"1");
    let mut out = Vec::new();
    frame::write_headers(&mut out, 1, &block, true, 16_384);
    let mut block = Vec::new();
    hpack::encode_field(&mut block, b":method", b"POST");
    hpack::encode_field(&mut block, b":scheme", b"http");
    frame::write_headers(&mut out, 3, &block, true, 16_384);
    w.send(&out).await;
    assert_eq!(
        w.next_interesting().await,
        rst(1, ErrorCode::PROTOCOL_ERROR)
    );
    assert_eq!(
        w.next_interesting().await,
        rst(3, ErrorCode::PROTOCOL_ERROR)
    );
    // A WINDOW_UPDATE of zero on an open stream.
    let mut out = Vec::new();
    request_headers(&mut out, 5, "/Request/request", false);
    frame::write_window_update(&mut out, 5, 0);
    w.send(&out).await;
    assert_eq!(
        w.next_interesting().await,
        rst(5, ErrorCode::PROTOCOL_ERROR)
    );
    // A header list over the advertised 16 KiB: refused, the stream only.
    let mut block = request_block("/Request/request");
    hpack::encode_field(&mut block, b"big", "x".repeat(17 * 1024).as_bytes());
    let mut out = Vec::new();
    frame::write_headers(&mut out, 7, &block, true, 16_384);
    w.send(&out).await;
    let (fields, _) = w.answer(7).await;
    assert_eq!(field(&fields, "grpc-status"), "8", "{fields:?}");
    // The header block in three pieces (HEADERS + 2 CONTINUATION) and the message in a
    // padded DATA frame.
    let block = request_block("/Request/request");
    let (a, rest) = block.split_at(3);
    let (b, c) = rest.split_at(4);
    let mut out = Vec::new();
    frame::write_head(&mut out, a.len() as u32, frame::HEADERS, 0, 9);
    out.extend_from_slice(a);
    frame::write_head(&mut out, b.len() as u32, frame::CONTINUATION, 0, 9);
    out.extend_from_slice(b);
    frame::write_head(
        &mut out,
        c.len() as u32,
        frame::CONTINUATION,
        frame::END_HEADERS,
        9,
    );
    out.extend_from_slice(c);
    let message = server_check();
    let pad = 10u8;
    let len = 1 + message.len() as u32 + u32::from(pad);
    frame::write_head(
        &mut out,
        len,
        frame::DATA,
        frame::PADDED | frame::END_STREAM,
        9,
    );
    out.push(pad);
    out.extend_from_slice(&message);
    out.extend(std::iter::repeat_n(0, pad as usize));
    w.send(&out).await;
    w.answer_checked(9).await;
    // An unknown path, and the connection still serves.
    let mut out = Vec::new();
    request_headers(&mut out, 11, "/No/such", true);
    out.extend(check_call(13));
    w.send(&out).await;
    let (fields, _) = w.answer(11).await;
    assert_eq!(field(&fields, "grpc-status"), "12", "{fields:?}");
    w.answer_checked(13).await;
    // A stream the client resets before its body: its late DATA is dropped, the
    // connection serves on.
    let mut out = Vec::new();
    request_headers(&mut out, 15, "/Request/request", false);
    frame::write_rst_stream(&mut out, 15, ErrorCode::CANCEL);
    frame::write_data(&mut out, 15, &server_check(), true);
    out.extend(check_call(17));
    w.send(&out).await;
    w.answer_checked(17).await;
    w.close_then_stop(server).await;
}

#[tokio::test]
async fn a_client_goaway_closes_the_connection_once_its_streams_are_done() {
    let server = TestServer::start(fast_config()).await;
    let mut w = Wire::open(server.addr, &[]).await;
    // A call still open (its body not sent), then the client's GOAWAY.
    let mut out = Vec::new();
    request_headers(&mut out, 1, "/Request/request", false);
    frame::write_goaway(&mut out, 0, ErrorCode::NO_ERROR, b"bye");
    w.send(&out).await;
    let quiet = tokio::time::timeout(Duration::from_millis(200), w.next_interesting()).await;
    assert!(quiet.is_err(), "closed with a stream open: {quiet:?}");
    let mut out = Vec::new();
    frame::write_data(&mut out, 1, &server_check(), true);
    w.send(&out).await;
    w.answer_checked(1).await;
    assert_eq!(w.next_interesting().await, Got::Closed);
    server.stop().await;
}

#[tokio::test]
async fn streams_beyond_the_concurrent_limit_are_refused_and_the_rest_answered() {
    let server = TestServer::start(fast_config()).await;
    let mut w = Wire::open(server.addr, &[]).await;
    let limit = MAX_CONCURRENT_STREAMS;
    let extra = 5;
    // Open every stream with its HEADERS only: none can be answered yet.
    let mut out = Vec::new();
    let block = request_block("/Request/request");
    for i in 0..limit + extra {
        frame::write_headers(&mut out, 2 * i + 1, &block, false, 16_384);
    }
    w.send(&out).await;
    for i in limit..limit + extra {
        let got = w.next_interesting().await;
        assert_eq!(
            got,
            Got::Reset {
                stream: 2 * i + 1,
                code: ErrorCode::REFUSED_STREAM
            }
        );
    }
    // The open ones complete (in order: the connection window holds all the answers),
    // then a new stream is accepted again.
    let mut out = Vec::new();
    frame::write_window_update(&mut out, 0, 1 << 30);
    for i in 0..limit {
        frame::write_data(&mut out, 2 * i + 1, &server_check(), true);
    }
    w.send(&out).await;
    for i in 0..limit {
        w.answer_checked(2 * i + 1).await;
    }
    let id = 2 * (limit + extra) + 1;
    w.send(&check_call(id)).await;
    w.answer_checked(id).await;
    w.close_then_stop(server).await;
}

#[tokio::test]
async fn answers_stay_within_the_clients_stream_and_connection_windows() {
    let server = TestServer::start(fast_config()).await;
    // A stream window of 10 bytes: the answer's DATA comes 10 bytes at a time.
    let mut w = Wire::open(server.addr, &[(frame::INITIAL_WINDOW_SIZE, 10)]).await;
    w.send(&check_call(1)).await;
    let head = w.next_interesting().await;
    assert!(
        matches!(
            head,
            Got::Headers {
                stream: 1,
                end: false,
                ..
            }
        ),
        "{head:?}"
    );
    let mut data = Vec::new();
    loop {
        let got = w.next_interesting().await;
        let Got::Data {
            stream: 1,
            end: false,
            len,
            data: d,
        } = got
        else {
            panic!("{got:?}");
        };
        assert!(len <= 10, "{len} bytes beyond a 10-byte window");
        data.extend(d);
        if data.len() >= 5
            && data.len() >= 5 + u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize
        {
            break;
        }
        let mut more = Vec::new();
        // Nothing else may come until the window grows.
        let quiet = tokio::time::timeout(Duration::from_millis(100), w.next()).await;
        assert!(quiet.is_err(), "a frame beyond the window: {quiet:?}");
        frame::write_window_update(&mut more, 1, 10);
        w.send(&more).await;
    }
    let (fields, rest) = w.answer(1).await;
    assert!(rest.is_empty());
    assert_checked(&fields, &data);
    drop(w);
    // The connection window (65,535 until the client grows it): many answers stop at it,
    // and all complete once it grows.
    let mut w = Wire::open(server.addr, &[(frame::INITIAL_WINDOW_SIZE, 1 << 20)]).await;
    let calls = 1_000u32;
    let mut out = Vec::new();
    for i in 0..calls {
        out.extend(check_call(2 * i + 1));
    }
    w.send(&out).await;
    let (mut sent, mut ended) = (0usize, 0u32);
    loop {
        let got = tokio::time::timeout(Duration::from_millis(300), w.next_interesting()).await;
        match got {
            Err(_) => break,
            Ok(Got::Data { len, .. }) => sent += len,
            Ok(Got::Headers { end: true, .. }) => ended += 1,
            Ok(Got::Headers { .. }) => {}
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert!(
        sent <= 65_535,
        "{sent} bytes of DATA beyond the connection window"
    );
    assert!(ended < calls, "every answer fit the window: make them more");
    let mut more = Vec::new();
    frame::write_window_update(&mut more, 0, 1 << 30);
    w.send(&more).await;
    while ended < calls {
        if let Got::Headers { end: true, .. } = w.next_interesting().await {
            ended += 1;
        }
    }
    w.close_then_stop(server).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_stops_being_read_and_is_served_once_it_reads() {
    let server = TestServer::start(fast_config()).await;
    let (mut reader, writer) = Wire::open_split(server.addr).await;
    // Requests of 4 KiB, each refused with a 3.5 KB answer: an unknown 3,500-byte path,
    // put in the HPACK dynamic table once (literal with incremental indexing of `:path`,
    // static index 4), then sent as one byte (dynamic index 62) beside 4 KiB of padding
    // in a field never indexed; the answer carries the path in grpc-message.
    let path = format!("/{}", "p".repeat(3_499));
    let mut first = Vec::new();
    for (n, v) in [(":method", "POST"), (":scheme", "http")] {
        hpack::encode_field(&mut first, n.as_bytes(), v.as_bytes());
    }
    let mut later = first.clone();
    hpack::put_integer(&mut first, 0x40, 6, 4);
    hpack::put_integer(&mut first, 0, 7, path.len());
    first.extend_from_slice(path.as_bytes());
    hpack::put_integer(&mut later, 0x80, 7, 62);
    hpack::encode_field(&mut later, b"x-pad", "x".repeat(4096).as_bytes());
    let requests = 50_000u32;
    let writing = write_until_stalled(writer, requests, first, later).await;
    read_refusals(&mut reader, requests, "12").await;
    drop((writing.await.expect("writer"), reader));
    server.stop().await;
}

/// Spawns a writer of `requests` requests (HEADERS ending the stream, header block
/// `first` then `later`, on streams 1, 3, ...) and waits, not reading, until it stalls;
/// returns the writer's task, which ends with the write half once all are written.
pub(crate) async fn write_until_stalled(
    mut writer: OwnedWriteHalf,
    requests: u32,
    first: Vec<u8>,
    later: Vec<u8>,
) -> JoinHandle<OwnedWriteHalf> {
    let written = Arc::new(AtomicUsize::new(0));
    let progress = written.clone();
    let writing = tokio::spawn(async move {
        for i in 0..requests {
            let block = if i == 0 { &first } else { &later };
            let mut out = Vec::new();
            frame::write_headers(&mut out, 2 * i + 1, block, true, 16_384);
            writer.write_all(&out).await.expect("write");
            progress.store(i as usize + 1, Ordering::SeqCst);
        }
        writer
    });
    until_stalled(&written, requests).await;
    writing
}

/// Waits (not reading) until the writer's count `written` stops growing: the buffers
/// between are full; it must stall before all `requests` are out.
async fn until_stalled(written: &AtomicUsize, requests: u32) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = written.load(Ordering::SeqCst);
        assert!(
            now < requests as usize,
            "the server read every request unanswered"
        );
        if now == last {
            return;
        }
        last = now;
    }
}

/// Reads `requests` trailers-only answers, each with `grpc-status` `status`.
pub(crate) async fn read_refusals(reader: &mut OwnedReadHalf, requests: u32, status: &str) {
    let mut buf = Vec::new();
    let mut answered = 0u32;
    let mut decoder = hpack::Decoder::new(4096);
    while answered < requests {
        buf.reserve(64 * 1024);
        let n = tokio::time::timeout(DEADLINE, reader.read_buf(&mut buf))
            .await
            .expect("answers in time")
            .expect("read");
        assert!(n > 0, "closed after {answered} answers");
        let mut at = 0;
        while let Some((f, len)) = frame::parse(&buf[at..], 1 << 24).expect("a frame") {
            if let Frame::Headers {
                end_stream, block, ..
            } = f
            {
                let mut got = String::new();
                decoder
                    .decode(block, 1 << 20, |n, v| {
                        if n == b"grpc-status" {
                            got = String::from_utf8_lossy(v).into_owned();
                        }
                        if n == b"grpc-message" {
                            assert!(v.len() <= 2048, "a grpc-message of {} bytes", v.len());
                        }
                    })
                    .map_err(|e| e.reason)
                    .expect("a header block");
                assert!(end_stream);
                assert_eq!(got, status);
                answered += 1;
            }
            at += len;
        }
        buf.drain(..at);
    }
}

#[tokio::test]
async fn a_graceful_close_serves_what_the_client_sent_before_it_saw_the_goaway() {
    let server = TestServer::start(fast_config()).await;
    let mut w = Wire::open(server.addr, &[]).await;
    w.send(&check_call(1)).await;
    w.answer_checked(1).await;
    let stopping = tokio::spawn(server.stop());
    // First a GOAWAY naming the highest stream id, and a PING.
    let got = w.next_interesting().await;
    assert!(
        matches!(
            got,
            Got::GoAway {
                last_stream: 0x7fff_ffff,
                code: ErrorCode::NO_ERROR,
                ..
            }
        ),
        "{got:?}"
    );
    let ping = loop {
        match w.next().await {
            Got::Ping { ack: false, data } => break data,
            Got::Settings { .. } | Got::WindowUpdate { .. } => {}
            other => panic!("{other:?}"),
        }
    };
    // A call sent before the client acknowledges it is still served (by a front end
    // that is stopping: its answer says so, but it is an answer, not a refused stream).
    w.send(&check_call(3)).await;
    let (fields, data) = w.answer(3).await;
    assert_eq!(field(&fields, "grpc-status"), "0", "{fields:?}");
    assert!(!data.is_empty());
    // After the acknowledgement: the final GOAWAY, then the end of the connection.
    let mut out = Vec::new();
    frame::write_ping(&mut out, true, ping);
    w.send(&out).await;
    let got = w.next_interesting().await;
    assert!(
        matches!(
            got,
            Got::GoAway {
                last_stream: 3,
                code: ErrorCode::NO_ERROR,
                ..
            }
        ),
        "the final GOAWAY names the last stream: {got:?}"
    );
    assert_eq!(w.next_interesting().await, Got::Closed);
    stopping.await.expect("stopped");
}
