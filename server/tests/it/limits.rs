//! Limits of a node against abusive clients: too many connections, slow-loris connections
//! too many instances per client, and clients or services past a node's limits are refused or shed with a clear error while the
//! node keeps serving its other clients.

use distro_server::{Listeners, RunningServer, ServerConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn standalone(tune: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut config = ServerConfig {
        bind: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        sdk_port: Some(0),
        cluster_port: Some(0),
        ..ServerConfig::default()
    };
    tune(&mut config);
    let listeners = Listeners::bind(&config).expect("bind");
    config.port = listeners.http.local_addr().expect("addr").port();
    distro_server::start(config, listeners)
        .await
        .expect("server starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn healthy(s: &RunningServer) -> bool {
    http()
        .get(format!("http://{}/health", s.http_addr()))
        .send()
        .await
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// Reads until the peer closes (or 5 s pass); returns what it sent.
async fn read_to_close(c: &mut TcpStream) -> (String, bool) {
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
    (String::from_utf8_lossy(&buf).into_owned(), r.is_ok())
}

/// Sends `bytes` one every 200 ms until the server closes the connection; returns how
/// long that took. Panics with `accepted` if every byte went through.
async fn drip_until_closed(c: &mut TcpStream, bytes: &[u8], accepted: &str) -> Duration {
    let start = Instant::now();
    for b in bytes {
        if c.write_all(&[*b]).await.is_err() {
            return start.elapsed();
        }
        let mut buf = [0u8; 256];
        // The server closing shows as a read of 0 (or an error).
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            _ => {}
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never closed");
    }
    panic!("{accepted}");
}

/// The node's `/metrics` page.
async fn metrics_text(s: &RunningServer) -> String {
    http()
        .get(format!("http://{}/metrics", s.http_addr()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_with_a_reason_and_others_still_served() {
    let s = standalone(|c| {
        c.max_tcp_connections = 4;
        c.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    // Fill the main port with 4 idle connections.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(s.http_addr()).await.expect("connect"));
    }
    let mut extra = TcpStream::connect(s.http_addr()).await.expect("connect");
    let (text, closed) = read_to_close(&mut extra).await;
    assert!(closed, "the refused connection is closed");
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("too many connections"),
        "{text}"
    );
    println!("refused: {}", text.lines().last().unwrap_or_default());
    // Closing one frees a slot: requests are served again.
    drop(idle.pop());
    let start = Instant::now();
    while !healthy(&s).await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a freed slot serves again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The SDK (gRPC) port: 4 idle connections, then a gRPC client gets a GOAWAY naming the limit.
    let mut sdk_idle = Vec::new();
    for _ in 0..4 {
        sdk_idle.push(TcpStream::connect(s.sdk_addr()).await.expect("connect"));
        sdk_idle
            .last_mut()
            .expect("pushed")
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
    }
    let mut raw = TcpStream::connect(s.sdk_addr()).await.expect("connect");
    let (text, closed) = read_to_close(&mut raw).await;
    assert!(closed, "the refused gRPC connection is closed");
    assert!(text.contains("too many connections"), "{text:?}");
    let mut client = distro_server::proto::distro::registry_client::RegistryClient::connect(
        format!("http://{}", s.sdk_addr()),
    )
    .await
    .expect("the TCP connection opens");
    let err = client
        .query(distro_server::proto::distro::QueryRequest::default())
        .await
        .expect_err("refused");
    println!("gRPC client sees: {err}");
    drop(sdk_idle);
    let text = metrics_text(&s).await;
    assert!(
        metric(&text, "distro_connections_refused_total") >= 3,
        "{text}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_and_silent_connections_are_closed_while_others_are_served() {
    let s = standalone(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    let drip = |addr: SocketAddr, bytes: &'static [u8]| async move {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        drip_until_closed(&mut c, bytes, "the whole slow request was accepted").await
    };
    let silent = |addr: SocketAddr| async move {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        let start = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => continue, // the gRPC server's SETTINGS
                Err(_) => panic!("a silent connection was never closed"),
            }
        }
    };
    let long_headers: &'static [u8] = Box::leak(
        format!(
            "GET /health HTTP/1.1\r\nhost: x\r\n{}",
            "x-pad: 1\r\n".repeat(20)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let serving = {
        let addr = s.http_addr();
        tokio::spawn(async move {
            // Other clients are served all along.
            let h = http();
            let mut n = 0;
            for _ in 0..20 {
                let r = h
                    .get(format!("http://{addr}/health"))
                    .send()
                    .await
                    .expect("served");
                assert_eq!(r.status().as_u16(), 200);
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        })
    };
    let (a, b, c, d) = tokio::join!(
        drip(s.http_addr(), long_headers),
        drip(s.sdk_addr(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        silent(s.http_addr()),
        silent(s.cluster_addr()),
    );
    println!(
        "closed after: HTTP headers byte by byte {a:?}, HTTP/2 preface byte by byte {b:?}, \
         silent HTTP {c:?}, silent cluster port {d:?}"
    );
    for t in [a, b, c, d] {
        assert!(
            t >= Duration::from_millis(900) && t < Duration::from_secs(4),
            "{t:?}"
        );
    }
    assert_eq!(serving.await.expect("served"), 20);
    let text = metrics_text(&s).await;
    assert!(
        metric(&text, "distro_connections_timed_out_total") >= 4,
        "{text}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_publishing_too_many_services_is_refused_and_others_are_served() {
    let s = standalone(|c| c.protocol.max_services_per_client = 3).await;
    let h = http();
    let reg = |svc: String, ip: &'static str| {
        let h = h.clone();
        let url = format!(
            "http://{}/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port=80",
            s.http_addr()
        );
        async move {
            let r = h.post(url).send().await.expect("answer");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    for i in 0..3 {
        assert_eq!(
            reg(format!("svc-{i}"), "10.5.5.5").await,
            (200, "ok".into())
        );
    }
    let (status, body) = reg("svc-3".into(), "10.5.5.5").await;
    println!("the 4th service of one client: {status} {body}");
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(
        body.contains("services") || body.contains("limit"),
        "{body}"
    );
    // Another client is still served.
    assert_eq!(reg("svc-3".into(), "10.6.6.6").await, (200, "ok".into()));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_services_past_the_node_limits_are_refused_and_deregistration_frees_room() {
    let s = standalone(|c| {
        c.protocol.max_clients = 2;
        c.protocol.max_services_per_namespace = 2;
    })
    .await;
    let h = http();
    let call = |method: reqwest::Method, svc: &str, ip: &str| {
        let h = h.clone();
        let url = format!(
            "http://{}/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port=80",
            s.http_addr()
        );
        async move {
            let r = h.request(method, url).send().await.expect("answer");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    let reg = |svc, ip| call(reqwest::Method::POST, svc, ip);
    let ok = (200, "ok".to_string());
    assert_eq!(reg("svc-a", "10.7.0.1").await, ok);
    assert_eq!(reg("svc-b", "10.7.0.1").await, ok);
    // A third service in the namespace is refused, naming the limit.
    let (status, body) = reg("svc-c", "10.7.0.1").await;
    println!("a third service: {status} {body}");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("namespace public already holds 2 services, the limit is 2"),
        "{body}"
    );
    // Another namespace counts its own services.
    let url = format!(
        "http://{}/nacos/v1/ns/instance?namespaceId=other&serviceName=svc-c&ip=10.7.0.1&port=80",
        s.http_addr()
    );
    let r = h.post(url).send().await.expect("answer");
    assert_eq!(r.status().as_u16(), 200);
    // A second client joins an existing service; a third client is one too many.
    assert_eq!(reg("svc-a", "10.7.0.2").await, ok);
    let (status, body) = reg("svc-a", "10.7.0.3").await;
    println!("a third client: {status} {body}");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("already owns 2 clients, the limit is 2 (max_clients)"),
        "{body}"
    );
    // The node keeps serving: queries and the admitted clients' writes.
    let list = h
        .get(format!(
            "http://{}/nacos/v1/ns/instance/list?serviceName=svc-a",
            s.http_addr()
        ))
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("body");
    assert!(list.contains("10.7.0.2"), "{list}");
    // A deregistration frees room for a service and for a client.
    assert_eq!(call(reqwest::Method::DELETE, "svc-b", "10.7.0.1").await, ok);
    assert_eq!(reg("svc-c", "10.7.0.1").await, ok);
    assert_eq!(call(reqwest::Method::DELETE, "svc-a", "10.7.0.2").await, ok);
    assert_eq!(reg("svc-a", "10.7.0.3").await, ok);
    assert!(healthy(&s).await);
    s.shutdown().await;
}

/// Reads one HTTP/1.1 response (headers and a `content-length` body) from `c`.
async fn read_response(c: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// After each response, the next request on a keep-alive connection must be complete
/// within `--keep-alive-timeout`: an idle connection and a slow second request are both
/// closed, while a connection that keeps sending requests stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_keep_alive_connections_are_closed_busy_ones_stay() {
    let s = standalone(|c| c.keep_alive_timeout = Duration::from_secs(1)).await;
    const REQ: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";
    let addr = s.http_addr();
    let first = |addr: SocketAddr| async move {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(REQ).await.expect("write");
        let r = read_response(&mut c).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        c
    };
    let idle = async {
        let mut c = first(addr).await;
        let start = Instant::now();
        let (_, closed) = read_to_close(&mut c).await;
        assert!(closed, "an idle keep-alive connection was never closed");
        start.elapsed()
    };
    let slow = async {
        let mut c = first(addr).await;
        drip_until_closed(&mut c, REQ, "the whole slow second request was accepted").await
    };
    let busy = async {
        let mut c = first(addr).await;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.write_all(REQ).await.expect("still open");
            let r = read_response(&mut c).await;
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        }
    };
    let (idle, slow, ()) = tokio::join!(idle, slow, busy);
    println!("closed after: idle keep-alive {idle:?}, slow second request {slow:?}");
    for t in [idle, slow] {
        assert!(
            t >= Duration::from_millis(900) && t < Duration::from_secs(4),
            "{t:?}"
        );
    }
    let text = metrics_text(&s).await;
    assert!(
        metric(&text, "distro_connections_timed_out_total") >= 2,
        "{text}"
    );
    s.shutdown().await;
}

/// Hostile input cannot grow a node for ever: 20,000 clients each register a random
/// service name with a random metadata key and value through the native API, then
/// deregister. The names they made the node intern are freed once the deletion
/// tombstones and the empty services expire (here after half a second), except those of
/// removed clients still waiting in the store's reclamation batches: at most
/// `RETAINED_PER_SHARD_THREAD` per shard map and thread that removed from it (4 shards
/// here; see the README, Security); the interner's tables shrink with them. The 1,000,000-name run with memory figures is
/// `cargo run --release -p distro-server --example name_churn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_of_deregistered_services_are_freed() {
    use distro_server::proto::distro as pb;
    const NAMES: usize = 20_000;
    const SHARDS: usize = 4;
    /// The store's reclamation batch per shard map and thread.
    const RETAINED_PER_SHARD_THREAD: usize = distro_core::config::DEFAULT_RECLAIM_BATCH;
    /// Threads that may remove from the maps: the runtime's, its blocking pool's (sync
    /// appliers), the tick's; generous.
    const THREADS: usize = 16;
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234);
    let s = standalone(|c| {
        c.protocol.peer_timeout = 500;
        c.protocol.tombstone_ttl = 500;
        c.protocol.empty_service_ttl = 500;
        c.protocol.health_check_interval = 100;
        c.protocol.shards = SHARDS as u32;
        c.tick = Duration::from_millis(20);
    })
    .await;
    let registry = s.node().registry();
    let names_before = registry.interner().len();
    let mut client =
        pb::registry_client::RegistryClient::connect(format!("http://{}", s.sdk_addr()))
            .await
            .expect("connect");
    let mut rng = distro_core::rng::SplitMix64::new(seed);
    let registrations: Vec<pb::Registration> = (0..NAMES)
        .map(|k| pb::Registration {
            service: Some(pb::ServiceRef {
                namespace: String::new(),
                group: String::new(),
                name: format!("churn-{:016x}", rng.next_u64()),
            }),
            instance: Some(pb::Instance {
                ip: format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255),
                port: 80,
                weight: 1.0,
                healthy: true,
                enabled: true,
                metadata: [(
                    format!("k-{:x}", rng.next_u64()),
                    format!("v-{:x}", rng.next_u64()),
                )]
                .into(),
                ..Default::default()
            }),
        })
        .collect();
    for batch in registrations.chunks(1000) {
        let r = client
            .register(pb::RegisterRequest {
                registrations: batch.to_vec(),
            })
            .await
            .expect("register")
            .into_inner();
        assert!(
            r.results.iter().all(|r| r.code == 200),
            "seed {seed}: {:?}",
            r.results.iter().find(|r| r.code != 200)
        );
    }
    let names_full = registry.interner().len();
    assert!(
        names_full >= names_before + NAMES,
        "seed {seed}: {names_before} names before, {names_full} with {NAMES} services"
    );
    let names_capacity_full = registry.interner().capacity();
    for batch in registrations.chunks(1000) {
        let r = client
            .deregister(pb::DeregisterRequest {
                registrations: batch.to_vec(),
            })
            .await
            .expect("deregister")
            .into_inner();
        assert!(r.results.iter().all(|r| r.code == 200), "seed {seed}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    // The names go at the collections after the tombstones and services expire (those of
    // clients still in a reclamation batch once the node has the runtime's threads flush
    // their batches, when it gives memory back), and the interner's tables shrink with
    // them at the same collections.
    let (names_after, names_capacity_after) = loop {
        let now = registry.interner().len();
        let capacity = registry.interner().capacity();
        // Two names per client: its service and its metadata key.
        if now <= names_before + 2 * (SHARDS + 1) * THREADS * RETAINED_PER_SHARD_THREAD
            && capacity <= names_capacity_full / 4
        {
            break (now, capacity);
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {now} names still interned 30 s after deregistering, the \
             interner's tables with room for {capacity} \
             ({names_before} before, {names_full} at the peak, room for \
             {names_capacity_full}); registry {:?}",
            registry.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "seed {seed}: {names_before} names interned before, {names_full} with {NAMES} \
         services, {names_after} after they were deregistered; the interner's tables had \
         room for {names_capacity_full} names, then {names_capacity_after}"
    );
    assert_eq!(registry.namespace_service_count("public"), 0, "seed {seed}");
    s.shutdown().await;
}
