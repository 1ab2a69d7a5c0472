//! The SDK port's own HTTP/2 transport (`distro_server::sdk_port`) at the edges, driven by
//! a raw `h2` client so each test controls the frames: unknown paths, oversized
//! messages, many streams at once, a body split into many DATA frames, PING keep-alive,
//! and a shutdown that a stuck request cannot hold.

use crate::nacos::harness::{DEADLINE, TestServer, decode, fast_config, raw_payload, wall_ms};
use bytes::{BufMut, Bytes, BytesMut};
use distro_server::nacos::{NacosConfig, NacosFrontend};
use distro_server::proto::nacos::Payload;
use distro_server::sdk_port::SdkPort;
use futures::stream::{FuturesUnordered, StreamExt};
use h2::client::SendRequest;
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP/2 connection to `addr`.
async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // Windows as tonic's client has them: h2's budget for small DATA frames (half the
    // connection window) must hold a burst of many small replies.
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.expect("ready")
}

/// One gRPC message frame around `m`.
fn frame(m: &Payload) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0);
    b.put_u32(m.encoded_len() as u32);
    m.encode(&mut b).expect("encode");
    b.freeze()
}

/// What a call got: its `grpc-status`, `grpc-message` and the reply messages.
#[derive(Debug)]
struct Answer {
    status: String,
    message: String,
    replies: Vec<Payload>,
}

/// Calls `path` sending `chunks` as separate DATA frames (the last ends the stream).
async fn call(send: &mut SendRequest<Bytes>, path: &str, chunks: Vec<Bytes>) -> Answer {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let mut s = send.clone().ready().await.expect("ready");
    let (response, mut body) = s.send_request(request, chunks.is_empty()).expect("send");
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        if body.send_data(c, i + 1 == n).is_err() {
            // The server answered (and closed the stream) before the body ended, as it
            // does for an oversized message: read that answer.
            break;
        }
        // Give the server a chance to see part of the body before the rest.
        tokio::task::yield_now().await;
    }
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("an answer in time")
        .expect("a response");
    let (head, mut recv) = response.into_parts();
    assert_eq!(head.status, 200);
    let header = |h: &http::HeaderMap, k: &str| {
        h.get(k)
            .map(|v| v.to_str().expect("ascii").to_string())
            .unwrap_or_default()
    };
    let (mut status, mut message) = (
        header(&head.headers, "grpc-status"),
        header(&head.headers, "grpc-message"),
    );
    let mut data = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    if status.is_empty() {
        let trailers = recv.trailers().await.expect("trailers").expect("trailers");
        status = header(&trailers, "grpc-status");
        message = header(&trailers, "grpc-message");
    }
    let mut replies = Vec::new();
    let mut b = data.freeze();
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        replies.push(Payload::decode(b.slice(5..5 + len)).expect("a Payload"));
        b = b.slice(5 + len..);
    }
    Answer {
        status,
        message,
        replies,
    }
}

fn reply_type(a: &Answer) -> String {
    assert_eq!(a.status, "0", "{a:?}");
    assert_eq!(a.replies.len(), 1, "{a:?}");
    decode(&a.replies[0]).0
}

#[tokio::test]
async fn unknown_paths_are_unimplemented_and_the_connection_keeps_serving() {
    let server = TestServer::start(fast_config()).await;
    let mut c = connect(server.addr).await;
    let check = frame(&raw_payload("ServerCheckRequest", b"{}"));
    let a = call(&mut c, "/Request/nope", vec![check.clone()]).await;
    assert_eq!(a.status, "12", "{a:?}");
    assert!(a.message.contains("/Request/nope"), "{a:?}");
    let a = call(
        &mut c,
        "/distro.v1.Registry/NoSuchMethod",
        vec![check.clone()],
    )
    .await;
    assert_eq!(a.status, "12", "{a:?}");
    let a = call(&mut c, "/Request/request", vec![check]).await;
    assert_eq!(reply_type(&a), "ServerCheckResponse");
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused_before_their_body_is_read() {
    let config = NacosConfig {
        max_message_bytes: 64 * 1024,
        ..fast_config()
    };
    let server = TestServer::start(config).await;
    let mut c = connect(server.addr).await;
    // A prefix declaring 1 GiB and no more: the answer comes without the body.
    let mut prefix = BytesMut::new();
    prefix.put_u8(0);
    prefix.put_u32(1 << 30);
    let request = http::Request::builder()
        .method("POST")
        .uri("http://localhost/Request/request")
        .header("content-type", "application/grpc")
        .body(())
        .expect("request");
    let mut s = c.clone().ready().await.expect("ready");
    let (response, mut body) = s.send_request(request, false).expect("send");
    body.send_data(prefix.freeze(), false).expect("prefix");
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("refused without waiting for the body")
        .expect("a response");
    let status = response
        .headers()
        .get("grpc-status")
        .expect("trailers-only");
    assert_eq!(status, "8");
    let message = response.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("--max-message-bytes"), "{message}");
    // Just over the limit, sent whole, in 16 KiB frames.
    let big = vec![b'x'; 64 * 1024 + 1];
    let mut m = BytesMut::new();
    m.put_u8(0);
    m.put_u32(big.len() as u32);
    m.extend_from_slice(&big);
    let chunks: Vec<Bytes> = m
        .freeze()
        .chunks(16 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    let a = call(&mut c, "/Request/request", chunks).await;
    assert_eq!(a.status, "8", "{a:?}");
    // Compressed messages are not supported.
    let a = call(
        &mut c,
        "/Request/request",
        vec![Bytes::from_static(&[1, 0, 0, 0, 0])],
    )
    .await;
    assert_eq!(a.status, "12", "{a:?}");
    // The connection still serves.
    let check = frame(&raw_payload("ServerCheckRequest", b"{}"));
    let a = call(&mut c, "/Request/request", vec![check]).await;
    assert_eq!(reply_type(&a), "ServerCheckResponse");
    server.stop().await;
}

#[tokio::test]
async fn many_streams_at_once_all_get_their_own_answer() {
    let server = TestServer::start(fast_config()).await;
    let mut c = connect(server.addr).await;
    // One call first, so the client has the server's SETTINGS (its stream limit).
    let a = call(
        &mut c,
        "/Request/request",
        vec![frame(&raw_payload("ServerCheckRequest", b"{}"))],
    )
    .await;
    assert_eq!(reply_type(&a), "ServerCheckResponse");
    let kinds = [
        ("ServerCheckRequest", "ServerCheckResponse"),
        ("HealthCheckRequest", "HealthCheckResponse"),
        ("NoSuchRequest", "ErrorResponse"),
    ];
    // More than the port's concurrent-stream limit: the client queues the rest.
    let n = distro_server::sdk_port::MAX_CONCURRENT_STREAMS as usize + 100;
    let mut calls: FuturesUnordered<_> = (0..n)
        .map(|i| {
            let mut c = c.clone();
            let (ask, expect) = kinds[i % kinds.len()];
            async move {
                let a = call(
                    &mut c,
                    "/Request/request",
                    vec![frame(&raw_payload(ask, b"{}"))],
                )
                .await;
                (i, expect, reply_type(&a))
            }
        })
        .collect();
    let mut seen = vec![false; n];
    while let Some((i, expect, got)) = calls.next().await {
        assert_eq!(got, expect, "stream {i}");
        seen[i] = true;
    }
    assert!(seen.iter().all(|s| *s));
    server.stop().await;
}

#[tokio::test]
async fn a_unary_body_split_into_many_data_frames_is_read_whole() {
    let server = TestServer::start(fast_config()).await;
    let mut c = connect(server.addr).await;
    // A request big enough to be split in many pieces (unknown headers are ignored).
    let mut p = raw_payload("ServerCheckRequest", b"{}");
    if let Some(m) = p.metadata.as_mut() {
        m.headers.insert("padding".into(), "p".repeat(3000));
    }
    let whole = frame(&p);
    // (Not one byte per frame: h2 closes a connection whose tiny DATA frames pile up
    // past its budget, half the connection window, with ENHANCE_YOUR_CALM.)
    for size in [3usize, 7, 100, 1000] {
        let chunks: Vec<Bytes> = whole.chunks(size).map(Bytes::copy_from_slice).collect();
        let pieces = chunks.len();
        let a = call(&mut c, "/Request/request", chunks).await;
        assert_eq!(reply_type(&a), "ServerCheckResponse", "in {pieces} pieces");
    }
    // And a body that ends before its message: refused, not waited for.
    let a = call(&mut c, "/Request/request", vec![whole.slice(..10)]).await;
    assert_eq!(a.status, "12", "{a:?}");
    assert!(a.message.contains("exactly one"), "{a:?}");
    server.stop().await;
}

/// The front end of a standalone node, for tests that build their own [`SdkPort`].
fn frontend() -> Arc<NacosFrontend> {
    let node = Arc::new(
        distro_core::Node::new(
            distro_core::Config::default(),
            distro_core::MemberList::new("127.0.0.1:8848", &[]).expect("members"),
            wall_ms(),
        )
        .expect("node"),
    );
    Arc::new(NacosFrontend::new(node, fast_config(), Arc::new(wall_ms)).expect("config"))
}

#[tokio::test]
async fn a_connection_that_never_answers_pings_is_closed() {
    let nacos = frontend();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let port = SdkPort::new(nacos.clone())
        .keep_alive(Duration::from_millis(100), Duration::from_millis(200));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(port.serve(listener, async move {
        let _ = stopped.await;
    }));
    // A client that completes the preface, then never reads or acks anything.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    let closed = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server never closed the silent connection"
    );
    // A client that answers PINGs (h2 does) stays connected past several intervals.
    let mut c = connect(addr).await;
    let check = frame(&raw_payload("ServerCheckRequest", b"{}"));
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let a = call(&mut c, "/Request/request", vec![check.clone()]).await;
        assert_eq!(reply_type(&a), "ServerCheckResponse");
    }
    let _ = stop.send(());
    nacos.shutdown().await;
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the port stops")
        .expect("port task");
}

#[tokio::test]
async fn a_request_that_never_completes_cannot_hold_the_shutdown() {
    let nacos = frontend();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(SdkPort::new(nacos.clone()).serve(listener, async move {
        let _ = stopped.await;
    }));
    let c = connect(addr).await;
    // Headers and half a message prefix, then nothing.
    let request = http::Request::builder()
        .method("POST")
        .uri("http://localhost/Request/request")
        .header("content-type", "application/grpc")
        .body(())
        .expect("request");
    let mut s = c.ready().await.expect("ready");
    let (_response, mut body) = s.send_request(request, false).expect("send");
    body.send_data(Bytes::from_static(&[0, 0]), false)
        .expect("data");
    // A completed call on the same connection proves the stuck one was accepted first.
    let mut c2 = s.clone();
    let a = call(
        &mut c2,
        "/Request/request",
        vec![frame(&raw_payload("HealthCheckRequest", b"{}"))],
    )
    .await;
    assert_eq!(reply_type(&a), "HealthCheckResponse");
    let _ = stop.send(());
    nacos.shutdown().await;
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the port stops despite the stuck request")
        .expect("port task");
}

/// The native API on the SDK port of a node: on one HTTP/2 connection, a `Watch` stream
/// stays open (its own task) while unary calls (served on the connection's task) register,
/// query and batch-query, and the watch sees the registration.
#[tokio::test]
async fn native_unary_calls_and_a_watch_share_one_connection() {
    use distro_server::proto::distro as pb;
    use distro_server::{Listeners, ServerConfig};
    let mut config = ServerConfig {
        bind: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        sdk_port: Some(0),
        cluster_port: Some(0),
        ..ServerConfig::default()
    };
    let listeners = Listeners::bind(&config).expect("bind");
    config.port = listeners.http.local_addr().expect("addr").port();
    let server = distro_server::start(config, listeners)
        .await
        .expect("server starts");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.sdk_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = pb::registry_client::RegistryClient::new(channel);
    let service = pb::ServiceRef {
        namespace: String::new(),
        group: String::new(),
        name: "watched".into(),
    };
    let mut watch = client
        .watch(pb::WatchRequest {
            services: vec![service.clone()],
        })
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, watch.message())
        .await
        .expect("the current state in time")
        .expect("stream")
        .expect("an event");
    assert!(first.instances.is_empty());
    let written = client
        .register(pb::RegisterRequest {
            registrations: vec![pb::Registration {
                service: Some(service.clone()),
                instance: Some(pb::Instance {
                    ip: "10.0.0.1".into(),
                    port: 80,
                    weight: 1.0,
                    healthy: true,
                    enabled: true,
                    ..Default::default()
                }),
            }],
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(written.results.len(), 1);
    assert_eq!(written.results[0].code, 200, "{written:?}");
    let event = tokio::time::timeout(DEADLINE, async {
        loop {
            let e = watch.message().await.expect("stream").expect("an event");
            if !e.instances.is_empty() {
                return e;
            }
        }
    })
    .await
    .expect("the watch sees the registration");
    assert_eq!(event.instances[0].ip, "10.0.0.1");
    let query = pb::QueryRequest {
        service: Some(service.clone()),
        clusters: Vec::new(),
        healthy_only: false,
    };
    let answer = client
        .query(query.clone())
        .await
        .expect("query")
        .into_inner();
    assert_eq!(answer.instances.len(), 1);
    let batch = client
        .query_batch(pb::QueryBatchRequest {
            queries: vec![query.clone(), query],
        })
        .await
        .expect("query batch")
        .into_inner();
    assert_eq!(batch.answers.len(), 2);
    drop(watch);
    server.shutdown().await;
}

/// Listening sockets on 127.0.0.1:`port` (Linux's `/proc/net/tcp`, state `0A`).
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
        })
        .count()
}

/// `sdk_reuseport`: the SDK port listens on one `SO_REUSEPORT` socket per worker thread
/// (four here), every connection the kernel spreads over them is served, and the shutdown
/// closes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_sdk_reuseport_every_worker_thread_has_a_socket_that_serves() {
    use distro_server::{Listeners, ServerConfig};
    let mut config = ServerConfig {
        bind: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        sdk_port: Some(0),
        cluster_port: Some(0),
        sdk_reuseport: true,
        ..ServerConfig::default()
    };
    let listeners = Listeners::bind(&config).expect("bind");
    config.port = listeners.http.local_addr().expect("addr").port();
    let server = distro_server::start(config, listeners)
        .await
        .expect("server starts");
    let addr = server.sdk_addr();
    assert_eq!(listening_sockets(addr.port()), 4, "one socket per worker");
    let check = frame(&raw_payload("ServerCheckRequest", b"{}"));
    let mut connections = FuturesUnordered::new();
    for _ in 0..32 {
        let check = check.clone();
        connections.push(async move {
            let mut c = connect(addr).await;
            reply_type(&call(&mut c, "/Request/request", vec![check]).await)
        });
    }
    while let Some(t) = connections.next().await {
        assert_eq!(t, "ServerCheckResponse");
    }
    server.shutdown().await;
    assert_eq!(listening_sockets(addr.port()), 0, "every socket closed");
}
