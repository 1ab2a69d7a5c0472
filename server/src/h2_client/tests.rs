//! The client connection against a scripted server on an in-memory pipe: what grpc-java
//! may send (Huffman strings, a dynamic table, CONTINUATIONs, trailers-only answers), the
//! peer's settings and windows, PING, RST_STREAM and GOAWAY.

use super::*;
use h2wire::frame::{ErrorCode, Frame};
use std::time::Duration;
use tokio::io::{AsyncReadExt, DuplexStream};
use tonic::Code;

/// The server's end of the pipe: reads frames, writes frames.
struct Server {
    io: DuplexStream,
    buf: Vec<u8>,
    decoder: hpack::Decoder,
}

const DEADLINE: Duration = Duration::from_secs(5);

impl Server {
    /// Connects a client; reads its preface, settings and window update.
    async fn start() -> (H2, Server) {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let (h2, _task) = H2::handshake(client_io, conn::NACOS_MAX_MESSAGE)
            .await
            .expect("handshake");
        let mut s = Server {
            io: server_io,
            buf: Vec::new(),
            decoder: hpack::Decoder::new(4096),
        };
        let mut preface = [0u8; 24];
        s.io.read_exact(&mut preface).await.expect("preface");
        assert_eq!(&preface[..], h2wire::PREFACE);
        assert!(matches!(s.next().await, Frame::Settings { ack: false, .. }));
        assert!(matches!(
            s.next().await,
            Frame::WindowUpdate { stream: 0, .. }
        ));
        (h2, s)
    }

    /// The next frame from the client, owned.
    async fn next(&mut self) -> Frame<'static> {
        loop {
            if let Some((f, n)) = frame::parse(&self.buf, 1 << 20).expect("valid frame") {
                let f = leak(f);
                self.buf.drain(..n);
                return f;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(DEADLINE, self.io.read(&mut chunk))
                .await
                .expect("a frame in time")
                .expect("read");
            assert!(n > 0, "the client closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next request: its stream, path, and DATA up to END_STREAM (or `data_len` bytes).
    async fn request(&mut self, data_len: usize) -> (u32, String, Vec<u8>) {
        let (stream, block) = loop {
            match self.next().await {
                Frame::Headers { stream, block, .. } => break (stream, block),
                Frame::Settings { ack: true, .. } | Frame::WindowUpdate { .. } => {}
                other => panic!("expected HEADERS, got {other:?}"),
            }
        };
        let mut path = String::new();
        self.decoder
            .decode(block, usize::MAX, |n, v| {
                if n == b":path" {
                    path = String::from_utf8_lossy(v).into_owned();
                }
            })
            .expect("a valid request head");
        let data = self.data(stream, data_len).await;
        (stream, path, data)
    }

    /// DATA of `stream` up to END_STREAM (or `limit` bytes), in frames of the default size.
    async fn data(&mut self, stream: u32, limit: usize) -> Vec<u8> {
        let mut data = Vec::new();
        while data.len() < limit {
            match self.next().await {
                Frame::Data {
                    stream: s,
                    data: d,
                    end_stream,
                    ..
                } => {
                    assert_eq!(s, stream);
                    assert!(d.len() <= 16_384, "a {}-byte DATA frame", d.len());
                    data.extend_from_slice(d);
                    if end_stream {
                        break;
                    }
                }
                other => panic!("expected DATA, got {other:?}"),
            }
        }
        data
    }

    /// Sends SETTINGS and reads the client's acknowledgement.
    async fn settings(&mut self, params: &[(u16, u32)]) {
        let mut out = Vec::new();
        frame::write_settings(&mut out, params);
        self.send(&out).await;
        assert!(matches!(
            self.next().await,
            Frame::Settings { ack: true, .. }
        ));
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt as _;
        self.io.write_all(bytes).await.expect("write");
    }
}

/// A frame that outlives the buffer it was parsed from (tests only).
fn leak(f: Frame<'_>) -> Frame<'static> {
    let keep = |b: &[u8]| -> &'static [u8] { Box::leak(b.to_vec().into_boxed_slice()) };
    match f {
        Frame::Data {
            stream,
            end_stream,
            data,
            flow_len,
        } => Frame::Data {
            stream,
            end_stream,
            data: keep(data),
            flow_len,
        },
        Frame::Headers {
            stream,
            end_stream,
            end_headers,
            block,
        } => Frame::Headers {
            stream,
            end_stream,
            end_headers,
            block: keep(block),
        },
        Frame::Settings { ack, params } => Frame::Settings {
            ack,
            params: keep(params),
        },
        Frame::GoAway {
            last_stream,
            code,
            debug,
        } => Frame::GoAway {
            last_stream,
            code,
            debug: keep(debug),
        },
        Frame::Continuation {
            stream,
            end_headers,
            block,
        } => Frame::Continuation {
            stream,
            end_headers,
            block: keep(block),
        },
        Frame::Priority { stream } => Frame::Priority { stream },
        Frame::RstStream { stream, code } => Frame::RstStream { stream, code },
        Frame::PushPromise { stream } => Frame::PushPromise { stream },
        Frame::Ping { ack, data } => Frame::Ping { ack, data },
        Frame::WindowUpdate { stream, increment } => Frame::WindowUpdate { stream, increment },
        Frame::Unknown { kind, stream } => Frame::Unknown { kind, stream },
    }
}

fn grpc(message: &[u8]) -> Vec<u8> {
    let mut m = vec![0];
    m.extend_from_slice(&(message.len() as u32).to_be_bytes());
    m.extend_from_slice(message);
    m
}

/// A literal field with incremental indexing and Huffman strings, as grpc-java sends.
fn indexed_huffman(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    block.push(0x40);
    for s in [name, value] {
        let len = hpack::huffman_encoded_len(s);
        assert!(len < 127);
        block.push(0x80 | len as u8);
        hpack::huffman_encode(s, block);
    }
}

/// The unary method the tests call (Nacos's).
fn unary_method() -> Method {
    Method::new("http", "127.0.0.1:8848", "/Request/request", &[])
}

async fn call(h2: &H2, message: &[u8]) -> Result<Bytes, Status> {
    match h2
        .unary(&unary_method(), Bytes::from(grpc(message)), DEADLINE)
        .await
    {
        Ok(reply) => Ok(reply),
        Err(CallError::Status(s)) => Err(s),
        Err(CallError::Timeout) => panic!("no answer within {DEADLINE:?}"),
    }
}

/// `call` on a task of its own.
fn spawn_call(h2: &H2, message: &[u8]) -> tokio::task::JoinHandle<Result<Bytes, Status>> {
    let (h2, message) = (h2.clone(), message.to_vec());
    tokio::spawn(async move { call(&h2, &message).await })
}

/// A unary call with deadline `within` on a task of its own.
fn spawn_unary(
    h2: &H2,
    message: &[u8],
    within: Duration,
) -> tokio::task::JoinHandle<Result<Bytes, CallError>> {
    let (h2, message) = (h2.clone(), Bytes::from(grpc(message)));
    tokio::spawn(async move { h2.unary(&unary_method(), message, within).await })
}

#[tokio::test]
async fn unary_calls_with_huffman_dynamic_table_and_continuation() {
    let (h2, mut s) = Server::start().await;
    let mut settings = Vec::new();
    frame::write_settings(&mut settings, &[(frame::MAX_CONCURRENT_STREAMS, 100)]);
    s.send(&settings).await;
    let caller = tokio::spawn({
        let h2 = h2.clone();
        async move {
            let a = call(&h2, b"first").await;
            let b = call(&h2, b"second").await;
            (a, b)
        }
    });
    let (id, path, data) = s.request(usize::MAX).await;
    assert_eq!(path, "/Request/request");
    assert_eq!(data, grpc(b"first"));
    // Headers with indexing and Huffman, split over a CONTINUATION; trailers likewise.
    let mut head = vec![0x88];
    indexed_huffman(&mut head, b"content-type", b"application/grpc");
    let mut out = Vec::new();
    frame::write_headers(&mut out, id, &head, false, 8);
    frame::write_data(&mut out, id, &grpc(b"reply-1")[..4], false);
    frame::write_data(&mut out, id, &grpc(b"reply-1")[4..], false);
    let mut trailers = Vec::new();
    indexed_huffman(&mut trailers, b"grpc-status", b"0");
    frame::write_headers(&mut out, id, &trailers, true, 1 << 14);
    s.send(&out).await;
    let (id2, _, data) = s.request(usize::MAX).await;
    assert_eq!(data, grpc(b"second"));
    assert_eq!(id2, id + 2);
    // The second answer refers to the dynamic table only.
    let mut out = Vec::new();
    frame::write_headers(&mut out, id2, &[0x88, 0xbf], false, 1 << 14);
    frame::write_data(&mut out, id2, &grpc(b"reply-2"), false);
    frame::write_headers(&mut out, id2, &[0xbe], true, 1 << 14);
    s.send(&out).await;
    let (a, b) = caller.await.expect("caller");
    assert_eq!(&a.expect("first reply")[..], b"reply-1");
    assert_eq!(&b.expect("second reply")[..], b"reply-2");
}

#[tokio::test]
async fn errors_trailers_only_reset_and_http_status() {
    let (h2, mut s) = Server::start().await;
    let caller = tokio::spawn({
        let h2 = h2.clone();
        async move {
            (
                call(&h2, b"a").await,
                call(&h2, b"b").await,
                call(&h2, b"c").await,
                call(&h2, b"d").await,
            )
        }
    });
    // Trailers-only with an error.
    let (id, _, _) = s.request(usize::MAX).await;
    let mut block = vec![0x88];
    hpack::encode_field(&mut block, b"grpc-status", b"8");
    hpack::encode_field(&mut block, b"grpc-message", b"too many");
    let mut out = Vec::new();
    frame::write_headers(&mut out, id, &block, true, 1 << 14);
    s.send(&out).await;
    // A reset.
    let (id, _, _) = s.request(usize::MAX).await;
    out.clear();
    frame::write_rst_stream(&mut out, id, ErrorCode::REFUSED_STREAM);
    s.send(&out).await;
    // An HTTP error.
    let (id, _, _) = s.request(usize::MAX).await;
    out.clear();
    frame::write_headers(&mut out, id, &[0x8e], true, 1 << 14);
    s.send(&out).await;
    // A message, then an error in the trailers.
    let (id, _, _) = s.request(usize::MAX).await;
    out.clear();
    head(&mut out, id);
    frame::write_data(&mut out, id, &grpc(b"x"), false);
    trailers(&mut out, id, b"grpc-status", b"13");
    s.send(&out).await;
    let (a, b, c, d) = caller.await.expect("caller");
    let a = a.expect_err("trailers-only");
    assert_eq!(
        (a.code(), a.message()),
        (Code::ResourceExhausted, "too many")
    );
    let b = b.expect_err("reset");
    assert_eq!(b.code(), Code::Unavailable);
    assert!(b.message().contains("REFUSED_STREAM"), "{b:?}");
    let c = c.expect_err("HTTP 500");
    assert_eq!(c.code(), Code::Unknown);
    assert_eq!(c.message(), "HTTP status 500 Internal Server Error");
    assert_eq!(d.expect_err("trailers").code(), Code::Internal);
}

#[tokio::test]
async fn flow_control_frame_size_and_ping() {
    let (h2, mut s) = Server::start().await;
    // A 10-byte stream window and a ping.
    let mut out = Vec::new();
    frame::write_settings(&mut out, &[(frame::INITIAL_WINDOW_SIZE, 10)]);
    frame::write_ping(&mut out, false, *b"pingpong");
    s.send(&out).await;
    loop {
        match s.next().await {
            Frame::Settings { ack: true, .. } => {}
            Frame::Ping { ack: true, data } => {
                assert_eq!(&data, b"pingpong");
                break;
            }
            other => panic!("expected acks, got {other:?}"),
        }
    }
    // Larger than a frame (the server's MAX_FRAME_SIZE is the default 16 KiB).
    let message = vec![7u8; 40_000];
    let caller = spawn_call(&h2, &message);
    // Only 10 bytes may come before a WINDOW_UPDATE.
    let (id, _, data) = s.request(10).await;
    assert_eq!(data.len(), 10);
    let mut out = Vec::new();
    frame::write_window_update(&mut out, id, 100_000);
    s.send(&out).await;
    let mut all = data;
    all.extend_from_slice(&s.data(id, usize::MAX).await);
    assert_eq!(all, grpc(&message));
    // A reply over half the stream window: the client gives the window back.
    let big = vec![1u8; STREAM_WINDOW as usize / 2 + 40_000];
    let mut out = Vec::new();
    head(&mut out, id);
    let body = grpc(&big);
    for chunk in body.chunks(16_384) {
        frame::write_data(&mut out, id, chunk, false);
    }
    s.send(&out).await;
    let mut given = 0;
    while given < STREAM_WINDOW / 2 {
        match s.next().await {
            Frame::WindowUpdate { stream, increment } if stream == id => given += increment,
            other => panic!("expected a WINDOW_UPDATE of stream {id}, got {other:?}"),
        }
    }
    let mut out = Vec::new();
    trailers(&mut out, id, b"grpc-status", b"0");
    s.send(&out).await;
    assert_eq!(caller.await.expect("caller").expect("reply"), big);
}

#[tokio::test]
async fn goaway_fails_later_streams_and_new_calls() {
    let (h2, mut s) = Server::start().await;
    let first = spawn_call(&h2, b"one");
    let (id1, _, _) = s.request(usize::MAX).await;
    let second = spawn_call(&h2, b"two");
    let (id2, _, _) = s.request(usize::MAX).await;
    let mut out = Vec::new();
    frame::write_goaway(&mut out, id1, ErrorCode::NO_ERROR, b"bye");
    s.send(&out).await;
    let e = second
        .await
        .expect("caller")
        .expect_err("above last stream");
    assert!(e.message().contains("GOAWAY"), "{e:?}");
    assert_eq!(id2, id1 + 2);
    let e = call(&h2, b"three").await.expect_err("no new calls");
    assert_eq!(e.code(), Code::Unavailable);
    // The first stream still completes.
    answer(&mut s, id1, b"done").await;
    assert_eq!(&first.await.expect("caller").expect("reply")[..], b"done");
    // Then the server closes: nothing is re-opened, calls fail.
    drop(s);
    let e = call(&h2, b"four").await.expect_err("closed");
    assert_eq!(e.code(), Code::Unavailable);
}

#[tokio::test]
async fn a_protocol_error_closes_the_connection_with_goaway() {
    let (h2, mut s) = Server::start().await;
    let caller = spawn_call(&h2, b"x");
    let (id, _, _) = s.request(usize::MAX).await;
    // A malformed header block (index 0).
    let mut out = Vec::new();
    frame::write_headers(&mut out, id, &[0x80], true, 1 << 14);
    s.send(&out).await;
    assert_eq!(goaway_code(&mut s).await, ErrorCode::COMPRESSION_ERROR);
    let e = caller.await.expect("caller").expect_err("connection error");
    assert_eq!(e.code(), Code::Unavailable);
}

#[tokio::test]
async fn the_bi_stream_carries_messages_both_ways() {
    let (h2, mut s) = Server::start().await;
    let (tx, opening) = spawn_open(&h2).await;
    let (id, path, data) = s.request(grpc(b"setup").len()).await;
    assert_eq!(path, "/BiRequestStream/requestBiStream");
    assert_eq!(data, grpc(b"setup"));
    let mut out = Vec::new();
    head(&mut out, id);
    let two = [grpc(b"push-1"), grpc(b"push-2")].concat();
    frame::write_data(&mut out, id, &two[..3], false);
    frame::write_data(&mut out, id, &two[3..], false);
    s.send(&out).await;
    let mut stream = opening.await.expect("opener").expect("opened");
    assert_eq!(
        &stream.next().await.expect("one").expect("ok")[..],
        b"push-1"
    );
    assert_eq!(
        &stream.next().await.expect("two").expect("ok")[..],
        b"push-2"
    );
    tx.send(Bytes::from(grpc(b"ack"))).await.expect("queued");
    match s.next().await {
        Frame::Data { data, .. } => assert_eq!(data, grpc(b"ack")),
        other => panic!("expected DATA, got {other:?}"),
    }
    drop(tx);
    assert!(matches!(
        s.next().await,
        Frame::Data {
            end_stream: true,
            ..
        }
    ));
    let mut out = Vec::new();
    trailers(&mut out, id, b"grpc-status", b"0");
    s.send(&out).await;
    assert!(stream.next().await.is_none());
}

/// Answers stream `id` with `message` and an OK status.
async fn answer(s: &mut Server, id: u32, message: &[u8]) {
    let mut out = Vec::new();
    head(&mut out, id);
    frame::write_data(&mut out, id, &grpc(message), false);
    trailers(&mut out, id, b"grpc-status", b"0");
    s.send(&out).await;
}

/// A response head (`:status: 200`) on stream `id`, without END_STREAM.
fn head(out: &mut Vec<u8>, id: u32) {
    frame::write_headers(out, id, &[0x88], false, 1 << 14);
}

/// Trailers of one field on stream `id`, with END_STREAM.
fn trailers(out: &mut Vec<u8>, id: u32, name: &[u8], value: &[u8]) {
    let mut block = Vec::new();
    hpack::encode_field(&mut block, name, value);
    frame::write_headers(out, id, &block, true, 1 << 14);
}

#[tokio::test]
async fn max_concurrent_streams_holds_calls_back() {
    let (h2, mut s) = Server::start().await;
    s.settings(&[(frame::MAX_CONCURRENT_STREAMS, 1)]).await;
    let calls: Vec<_> = (0..2u8).map(|i| spawn_call(&h2, &[i])).collect();
    let (id1, _, _) = s.request(usize::MAX).await;
    // No second stream while the first is open.
    let early = tokio::time::timeout(Duration::from_millis(100), s.next()).await;
    assert!(early.is_err(), "a second stream opened: {early:?}");
    answer(&mut s, id1, b"r1").await;
    let (id2, _, _) = s.request(usize::MAX).await;
    assert_eq!(id2, id1 + 2);
    answer(&mut s, id2, b"r2").await;
    let mut replies = Vec::new();
    for c in calls {
        replies.push(c.await.expect("caller").expect("reply"));
    }
    replies.sort();
    assert_eq!(
        replies,
        [Bytes::from_static(b"r1"), Bytes::from_static(b"r2")]
    );
}

#[tokio::test]
async fn a_call_times_out_and_resets_its_stream() {
    let (h2, mut s) = Server::start().await;
    let started = std::time::Instant::now();
    let caller = spawn_unary(&h2, b"late", Duration::from_millis(200));
    let (id, _, _) = s.request(usize::MAX).await;
    assert!(matches!(
        caller.await.expect("caller"),
        Err(CallError::Timeout)
    ));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        s.next().await,
        Frame::RstStream {
            stream: id,
            code: ErrorCode::CANCEL
        }
    );
    // The connection still serves.
    let next = spawn_call(&h2, b"again");
    let (id, _, _) = s.request(usize::MAX).await;
    answer(&mut s, id, b"fine").await;
    assert_eq!(&next.await.expect("caller").expect("reply")[..], b"fine");
}

/// Opens the bi-stream on a task of its own, "setup" its first message.
async fn spawn_open(
    h2: &H2,
) -> (
    mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<Result<BiStream, Status>>,
) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(Bytes::from(grpc(b"setup"))).await.expect("queued");
    let h2 = h2.clone();
    let method = Method::new(
        "http",
        "127.0.0.1:8848",
        "/BiRequestStream/requestBiStream",
        &[],
    );
    (
        tx,
        tokio::spawn(async move { h2.open_stream(&method, rx).await }),
    )
}

/// Opens the bi-stream and has the server answer its headers.
async fn open_bi_stream(h2: &H2, s: &mut Server) -> (u32, BiStream, mpsc::Sender<Bytes>) {
    let (tx, opening) = spawn_open(h2).await;
    let (id, _, _) = s.request(grpc(b"setup").len()).await;
    let mut out = Vec::new();
    head(&mut out, id);
    s.send(&out).await;
    let stream = opening.await.expect("opener").expect("opened");
    (id, stream, tx)
}

#[tokio::test]
async fn the_stream_table_stays_small_while_the_bi_stream_is_open() {
    let (h2, mut s) = Server::start().await;
    let (_bi, _stream, _tx) = open_bi_stream(&h2, &mut s).await;
    const CALLS: usize = 3000;
    let caller = tokio::spawn({
        let h2 = h2.clone();
        async move {
            let mut largest = (0, 0);
            for i in 0..CALLS {
                let reply = call(&h2, &(i as u32).to_be_bytes()).await.expect("reply");
                assert_eq!(&reply[..], &(i as u32).to_be_bytes());
                let len = h2.shared.inner.lock().table_len();
                largest = (largest.0.max(len.0), largest.1.max(len.1));
            }
            largest
        }
    });
    for _ in 0..CALLS {
        let (id, _, data) = s.request(usize::MAX).await;
        answer(&mut s, id, &data[5..]).await;
    }
    let (streams, deadlines) = caller.await.expect("caller");
    // The bi-stream, and at most the call in flight.
    assert!(streams <= 2, "{streams} streams kept");
    assert!(deadlines <= 1, "{deadlines} deadlines kept");
}

/// A DATA frame with `pad` bytes of padding.
fn padded_data(out: &mut Vec<u8>, stream: u32, data: &[u8], pad: u8) {
    let len = data.len() + 1 + usize::from(pad);
    frame::write_head(out, len as u32, frame::DATA, frame::PADDED, stream);
    out.push(pad);
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, usize::from(pad)));
}

/// Sends `body` on stream `id` in padded DATA frames within the client's windows, reading
/// its WINDOW_UPDATEs as needed.
async fn send_within_windows(s: &mut Server, id: u32, body: &[u8]) {
    const PAD: u8 = 200;
    let (mut conn, mut stream) = (i64::from(CONNECTION_WINDOW), i64::from(STREAM_WINDOW));
    for chunk in body.chunks(16_000) {
        let flow = (chunk.len() + 1 + usize::from(PAD)) as i64;
        while flow > conn.min(stream) {
            match s.next().await {
                Frame::WindowUpdate {
                    stream: 0,
                    increment,
                } => conn += i64::from(increment),
                Frame::WindowUpdate {
                    stream: s,
                    increment,
                } if s == id => stream += i64::from(increment),
                other => panic!("expected WINDOW_UPDATE, got {other:?}"),
            }
        }
        let mut out = Vec::new();
        padded_data(&mut out, id, chunk, PAD);
        s.send(&out).await;
        conn -= flow;
        stream -= flow;
    }
}

#[tokio::test]
async fn a_push_larger_than_the_window_arrives_in_padded_frames() {
    let (h2, mut s) = Server::start().await;
    let (id, mut stream, _tx) = open_bi_stream(&h2, &mut s).await;
    let big: Vec<u8> = (0..3 << 19).map(|i| i as u8).collect();
    let reader = tokio::spawn(async move {
        let first = stream.next().await.expect("a message").expect("ok");
        let second = stream.next().await.expect("a message").expect("ok");
        (first, second)
    });
    send_within_windows(&mut s, id, &grpc(&big)).await;
    send_within_windows(&mut s, id, &grpc(b"later")).await;
    let (first, second) = reader.await.expect("reader");
    assert_eq!(first, big);
    assert_eq!(&second[..], b"later");
}

#[tokio::test]
async fn a_push_over_the_largest_message_resets_the_bi_stream() {
    let (h2, mut s) = Server::start().await;
    let (id, mut stream, _tx) = open_bi_stream(&h2, &mut s).await;
    let mut out = Vec::new();
    let mut head = vec![0];
    head.extend_from_slice(&(conn::NACOS_MAX_MESSAGE as u32 + 1).to_be_bytes());
    frame::write_data(&mut out, id, &head, false);
    s.send(&out).await;
    assert_eq!(
        s.next().await,
        Frame::RstStream {
            stream: id,
            code: ErrorCode::CANCEL
        }
    );
    let e = stream
        .next()
        .await
        .expect("an error")
        .expect_err("too large");
    assert_eq!(e.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn a_waiter_that_times_out_passes_the_freed_stream_on() {
    let (h2, mut s) = Server::start().await;
    s.settings(&[(frame::MAX_CONCURRENT_STREAMS, 1)]).await;
    let first = spawn_call(&h2, b"first");
    let (id1, _, _) = s.request(usize::MAX).await;
    // A waiter that gives up, then one that waits on.
    let quitter = spawn_unary(&h2, b"quitter", Duration::from_millis(100));
    tokio::task::yield_now().await;
    let patient = spawn_call(&h2, b"patient");
    assert!(matches!(
        quitter.await.expect("quitter"),
        Err(CallError::Timeout)
    ));
    answer(&mut s, id1, b"r1").await;
    assert_eq!(&first.await.expect("first").expect("reply")[..], b"r1");
    // The freed stream goes to the patient call at once, not at its deadline.
    let (id2, _, data) = tokio::time::timeout(Duration::from_secs(1), s.request(usize::MAX))
        .await
        .expect("the waiting call opens its stream");
    assert_eq!(data, grpc(b"patient"));
    answer(&mut s, id2, b"r2").await;
    assert_eq!(&patient.await.expect("patient").expect("reply")[..], b"r2");
}

#[tokio::test]
async fn a_call_with_an_earlier_deadline_times_out_on_time() {
    let (h2, mut s) = Server::start().await;
    let slow = spawn_unary(&h2, b"slow", DEADLINE);
    let (_, _, _) = s.request(usize::MAX).await;
    let started = std::time::Instant::now();
    let quick = spawn_unary(&h2, b"quick", Duration::from_millis(100));
    let (_, _, _) = s.request(usize::MAX).await;
    let quick = tokio::time::timeout(Duration::from_secs(2), quick)
        .await
        .expect("the quick call times out before the slow one's deadline");
    assert!(matches!(quick.expect("quick"), Err(CallError::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(100));
    slow.abort();
}

/// Reads frames until the client's GOAWAY; returns its code.
async fn goaway_code(s: &mut Server) -> ErrorCode {
    loop {
        match s.next().await {
            Frame::GoAway { code, .. } => return code,
            Frame::WindowUpdate { .. } | Frame::Settings { .. } | Frame::RstStream { .. } => {}
            other => panic!("expected GOAWAY, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn frames_on_streams_the_client_did_not_open_are_protocol_errors() {
    for (kind, even) in [(0u8, true), (0, false), (1, true), (1, false)] {
        let (h2, mut s) = Server::start().await;
        let (id, mut stream, _tx) = open_bi_stream(&h2, &mut s).await;
        // Even: the stream after the bi-stream's (no push); odd: one not opened yet.
        let other = if even { id + 1 } else { id + 2 };
        let mut out = Vec::new();
        if kind == 0 {
            frame::write_rst_stream(&mut out, other, ErrorCode::CANCEL);
        } else {
            frame::write_window_update(&mut out, other, 100);
        }
        s.send(&out).await;
        assert_eq!(goaway_code(&mut s).await, ErrorCode::PROTOCOL_ERROR);
        let e = stream.next().await.expect("an error").expect_err("closed");
        assert!(e.message().contains("did not open"), "{e:?}");
    }
}

#[tokio::test]
async fn data_beyond_the_stream_window_is_a_flow_control_error() {
    let (h2, mut s) = Server::start().await;
    let (id, _stream, _tx) = open_bi_stream(&h2, &mut s).await;
    // Whole messages the reader does not take (its window is then not given back), sent
    // without waiting for WINDOW_UPDATEs: twice the window.
    let message = grpc(&[0; 16_384 - 5]);
    let mut out = Vec::new();
    for _ in 0..2 * STREAM_WINDOW as usize / message.len() {
        frame::write_data(&mut out, id, &message, false);
    }
    // The client closes the connection before it has read all.
    use tokio::io::AsyncWriteExt as _;
    let _ = s.io.write_all(&out).await;
    assert_eq!(goaway_code(&mut s).await, ErrorCode::FLOW_CONTROL_ERROR);
}

#[tokio::test]
async fn a_header_block_over_64_kib_is_a_connection_error() {
    let (h2, mut s) = Server::start().await;
    let caller = spawn_call(&h2, b"x");
    let (id, _, _) = s.request(usize::MAX).await;
    let mut out = Vec::new();
    head(&mut out, id);
    // The HEADERS frame without END_HEADERS, then CONTINUATIONs that never end.
    out[4] &= !0x4;
    for _ in 0..5 {
        frame::write_head(&mut out, 16_384, frame::CONTINUATION, 0, id);
        out.extend_from_slice(&[0x88; 16_384]);
    }
    s.send(&out).await;
    assert_eq!(goaway_code(&mut s).await, ErrorCode::ENHANCE_YOUR_CALM);
    assert!(caller.await.expect("caller").is_err());
}

#[tokio::test]
async fn a_server_that_floods_pings_and_does_not_read_is_not_buffered_for() {
    let (h2, s) = Server::start().await;
    let Server { io, .. } = s;
    let (_read, mut write) = tokio::io::split(io);
    let mut pings = Vec::new();
    for _ in 0..(4 << 20) / 17 {
        frame::write_ping(&mut pings, false, *b"flooding");
    }
    use tokio::io::AsyncWriteExt as _;
    // The client stops reading: the flood cannot all be written.
    let written = tokio::time::timeout(Duration::from_secs(2), write.write_all(&pings)).await;
    assert!(written.is_err(), "the client read the whole flood");
    let backlog = h2.shared.inner.lock().backlog();
    assert!(
        backlog <= conn::OUT_HIGH_WATER + READ_BUFFER,
        "{backlog} bytes queued"
    );
}

#[tokio::test]
async fn trailers_without_grpc_status_fail_the_call() {
    let (h2, mut s) = Server::start().await;
    let caller = spawn_call(&h2, b"x");
    let (id, _, _) = s.request(usize::MAX).await;
    let mut out = Vec::new();
    head(&mut out, id);
    frame::write_data(&mut out, id, &grpc(b"reply"), false);
    trailers(&mut out, id, b"x-other", b"1");
    s.send(&out).await;
    let e = caller.await.expect("caller").expect_err("no status");
    assert_eq!(e.code(), Code::Internal);
}

#[tokio::test]
async fn enable_push_from_the_server_is_a_protocol_error() {
    let (_h2, mut s) = Server::start().await;
    let mut out = Vec::new();
    frame::write_settings(&mut out, &[(frame::ENABLE_PUSH, 1)]);
    s.send(&out).await;
    assert_eq!(goaway_code(&mut s).await, ErrorCode::PROTOCOL_ERROR);
}

#[tokio::test]
async fn after_goaway_a_call_below_the_last_stream_still_resets_its_stream() {
    let (h2, mut s) = Server::start().await;
    let caller = spawn_unary(&h2, b"late", Duration::from_millis(100));
    let (id, _, _) = s.request(usize::MAX).await;
    let mut out = Vec::new();
    frame::write_goaway(&mut out, id, ErrorCode::NO_ERROR, b"draining");
    s.send(&out).await;
    assert!(matches!(
        caller.await.expect("caller"),
        Err(CallError::Timeout)
    ));
    assert_eq!(
        s.next().await,
        Frame::RstStream {
            stream: id,
            code: ErrorCode::CANCEL
        }
    );
}

#[tokio::test]
async fn calls_in_flight_fail_when_the_connection_drops_after_goaway() {
    let (h2, mut s) = Server::start().await;
    let (bi, mut stream, _tx) = open_bi_stream(&h2, &mut s).await;
    let calls: Vec<_> = (0..3u8).map(|i| spawn_call(&h2, &[i])).collect();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(s.request(usize::MAX).await.0);
    }
    ids.sort_unstable();
    // The first call and the bi-stream are below the last stream; the others fail now.
    let mut out = Vec::new();
    frame::write_goaway(&mut out, ids[0], ErrorCode::NO_ERROR, b"bye");
    s.send(&out).await;
    tokio::task::yield_now().await;
    drop(s);
    for c in calls {
        let e = c
            .await
            .expect("caller")
            .expect_err("the connection dropped");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }
    let e = stream.next().await.expect("an error").expect_err("dropped");
    assert_eq!(e.code(), Code::Unavailable, "{e:?} (stream {bi})");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn a_connection_out_of_stream_ids_sends_goaway_and_closes() {
    let (h2, mut s) = Server::start().await;
    h2.shared
        .inner
        .lock()
        .skip_stream_ids(frame::MAX_WINDOW - 2);
    let answered = spawn_call(&h2, b"answered");
    let (first, _, _) = s.request(usize::MAX).await;
    answer(&mut s, first, b"ok").await;
    assert_eq!(&answered.await.expect("caller").expect("reply")[..], b"ok");
    // The last id goes to a call still in flight when the ids run out.
    let in_flight = spawn_call(&h2, b"in flight");
    let (last, _, _) = s.request(usize::MAX).await;
    assert_eq!(last, frame::MAX_WINDOW, "the largest stream id is used");
    let e = call(&h2, b"one more").await.expect_err("no stream id left");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("stream ids"), "{e:?}");
    assert_eq!(goaway_code(&mut s).await, ErrorCode::NO_ERROR);
    // The write half stays open while the call is in flight: no end of stream yet.
    let mut chunk = [0u8; 4096];
    while let Ok(read) =
        tokio::time::timeout(Duration::from_millis(100), s.io.read(&mut chunk)).await
    {
        let n = read.expect("read");
        assert!(n > 0, "the client closed its side with a call in flight");
        s.buf.extend_from_slice(&chunk[..n]);
    }
    // The call in flight is still answered.
    answer(&mut s, last, b"late").await;
    assert_eq!(
        &in_flight.await.expect("caller").expect("reply")[..],
        b"late"
    );
    // Then the client's side of the connection ends (so the server closes it, and a
    // Nacos client reconnects), and calls keep failing.
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, s.io.read_to_end(&mut rest))
        .await
        .expect("the client closed its side in time")
        .expect("read");
    let e = call(&h2, b"after").await.expect_err("closed");
    assert_eq!(e.code(), Code::Unavailable);
}

/// A method's head carries its path, authority and extra fields, and every call of it
/// sends the same block.
#[tokio::test]
async fn a_method_sends_its_path_authority_and_extra_fields() {
    let (h2, mut s) = Server::start().await;
    let method = Method::new(
        "https",
        "peer-2:9849",
        "/distro.v1.Peer/Forward",
        &[("x-distro-cluster-token", b"s3cret")],
    );
    let mut blocks = Vec::new();
    for message in [&b"one"[..], b"two"] {
        let call = {
            let (h2, method) = (h2.clone(), method.clone());
            let frame = Bytes::from(grpc(message));
            tokio::spawn(async move { h2.unary(&method, frame, DEADLINE).await })
        };
        let (stream, block) = loop {
            match s.next().await {
                Frame::Headers { stream, block, .. } => break (stream, block.to_vec()),
                Frame::Settings { ack: true, .. } | Frame::WindowUpdate { .. } => {}
                other => panic!("expected HEADERS, got {other:?}"),
            }
        };
        let mut fields = Vec::new();
        s.decoder
            .decode(&block, usize::MAX, |n, v| {
                fields.push((n.to_vec(), v.to_vec()))
            })
            .expect("a valid request head");
        let field = |name: &[u8]| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(field(b":path").as_deref(), Some("/distro.v1.Peer/Forward"));
        assert_eq!(field(b":authority").as_deref(), Some("peer-2:9849"));
        assert_eq!(field(b":scheme").as_deref(), Some("https"));
        assert_eq!(field(b"content-type").as_deref(), Some("application/grpc"));
        assert_eq!(field(b"x-distro-cluster-token").as_deref(), Some("s3cret"));
        assert_eq!(s.data(stream, usize::MAX).await, grpc(message));
        let mut out = Vec::new();
        frame::write_headers(&mut out, stream, &[0x88], false, 1 << 14);
        frame::write_data(&mut out, stream, &grpc(b"ok"), false);
        let mut trailers = Vec::new();
        hpack::encode_field(&mut trailers, b"grpc-status", b"0");
        frame::write_headers(&mut out, stream, &trailers, true, 1 << 14);
        s.send(&out).await;
        let reply = call.await.expect("joins");
        assert!(matches!(reply, Ok(ref r) if &r[..] == b"ok"), "{reply:?}");
        blocks.push(block);
    }
    assert_eq!(blocks[0], blocks[1], "the same head for every call");
}
