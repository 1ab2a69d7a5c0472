//! `--members-dns` with real node processes and a DNS server the test controls: the name's
//! A records go from 3 to 5 to 3 loopback addresses (`127.0.88.1-5`, every node on one
//! port, as behind a Kubernetes headless Service), the nodes are told to ask that server
//! (`--members-dns-server`) and re-resolve every 300 ms. While HTTP writers register, the
//! nodes must follow the name: the joiners load and take their share, the leavers hand
//! over, and every acknowledged registration is on the three nodes left at the end.
//!
//! And a joiner that the others refuse as "not a member (yet)" for far longer than the
//! DOWN window waits for their snapshot rather than start empty.

use crate::faults::procs::{BIN, TIMINGS};
use parking_lot::Mutex;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The name the nodes resolve.
const NAME: &str = "members.distro.test";

fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 88, 1 + i as u8)
}

/// A port `p` with `p`, `p + 1000` and `p + 1001` free on every node address (bound,
/// checked and released).
fn shared_port(nodes: usize) -> u16 {
    for _ in 0..200 {
        let Ok(first) = TcpListener::bind(SocketAddrV4::new(node_ip(0), 0)) else {
            continue;
        };
        let Ok(p) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        if p > 64_000 {
            continue;
        }
        drop(first);
        let free = (0..nodes).all(|i| {
            [p, p + 1000, p + 1001]
                .iter()
                .all(|q| TcpListener::bind(SocketAddrV4::new(node_ip(i), *q)).is_ok())
        });
        if free {
            return p;
        }
    }
    panic!("no port free on every node address");
}

/// A DNS server on 127.0.0.1 answering A queries for [`NAME`] with `records`, and
/// NXDOMAIN for any other name.
struct TestDns {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Ipv4Addr>>>,
    queries: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// The name of the question of `query` (lowercase, dotted) and the offset past the
/// question, or None if it does not parse.
fn question(query: &[u8]) -> Option<(String, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).to_lowercase());
        at += 1 + len;
    }
    query.get(at..at + 4)?;
    Some((labels.join("."), at + 4))
}

impl TestDns {
    async fn start(records: Vec<Ipv4Addr>) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("dns socket");
        let addr = socket.local_addr().expect("dns addr");
        let records = Arc::new(Mutex::new(records));
        let queries = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (r, q) = (records.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let query = &buf[..n];
                let Some((name, end)) = (n >= 12).then(|| question(query)).flatten() else {
                    continue;
                };
                q.fetch_add(1, Relaxed);
                let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
                let ips: Vec<Ipv4Addr> = if name == NAME && qtype == 1 {
                    r.lock().clone()
                } else {
                    Vec::new()
                };
                let rcode = if name == NAME { 0 } else { 3 };
                let mut a = query[..2].to_vec();
                a.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
                a.extend_from_slice(&[0, 1]);
                a.extend_from_slice(&(ips.len() as u16).to_be_bytes());
                a.extend_from_slice(&[0, 0, 0, 0]);
                a.extend_from_slice(&query[12..end]);
                for ip in ips {
                    // The name as a pointer to the question's, IN A, TTL 0, 4 bytes.
                    a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
                    a.extend_from_slice(&ip.octets());
                }
                let _ = socket.send_to(&a, from).await;
            }
        });
        Self {
            addr,
            records,
            queries,
            task,
        }
    }

    fn set(&self, nodes: &[usize]) {
        *self.records.lock() = nodes.iter().map(|&i| node_ip(i)).collect();
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One node process on `node_ip(i):port`.
struct Proc {
    child: Child,
}

/// The flags of a node resolving [`NAME`] through `dns`, waiting at start for `expect`
/// addresses.
fn dns_args(port: u16, dns: SocketAddr, expect: usize) -> Vec<String> {
    [
        "--members-dns",
        &format!("{NAME}:{port}"),
        "--members-dns-interval",
        "300ms",
        "--members-dns-expect",
        &expect.to_string(),
        "--members-dns-timeout",
        "20s",
        "--members-dns-server",
        &dns.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

impl Proc {
    /// Node `i` on `node_ip(i):port` with the fault suite's timings, DOWN after
    /// `down_after` failed probes (300 ms apart), and `args`.
    fn start(i: usize, port: u16, down_after: u32, args: &[String], dir: &std::path::Path) -> Self {
        let log = dir.join(format!("node{}.log", i + 1));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("DISTRO_") {
                cmd.env_remove(k);
            }
        }
        let mut timings: Vec<&str> = Vec::new();
        let mut it = TIMINGS.iter();
        while let Some(&flag) = it.next() {
            let value = it.next().expect("a value");
            if flag != "--probe-down-after" {
                timings.extend([flag, *value]);
            }
        }
        let child = cmd
            .args(timings)
            .args(["--probe-down-after", &down_after.to_string()])
            .args(["--bind", &node_ip(i).to_string()])
            .args(["--port", &port.to_string()])
            .args(["--cluster-token", "dns-test"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("distro-server starts");
        Self { child }
    }

    /// SIGTERM (flushes pending syncs), then waits for the exit.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("http client")
}

/// A node's `/health`, if it answers.
async fn health(http: &reqwest::Client, i: usize, port: u16) -> Option<serde_json::Value> {
    let r = http
        .get(format!("http://{}:{port}/health", node_ip(i)))
        .send()
        .await
        .ok()?;
    serde_json::from_str(&r.text().await.ok()?).ok()
}

/// Whether node `i` is loaded and lists exactly `members` (by address), itself among them
/// or not.
async fn lists(http: &reqwest::Client, i: usize, port: u16, members: &[usize]) -> bool {
    let Some(h) = health(http, i, port).await else {
        return false;
    };
    let mut got: Vec<String> = h["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["address"].as_str().map(str::to_owned))
        .collect();
    got.sort();
    let mut want: Vec<String> = members
        .iter()
        .map(|&m| format!("{}:{port}", node_ip(m)))
        .collect();
    want.sort();
    h["ready"] == true && got == want
}

/// Whether every node of `nodes` is ready and lists exactly `members`.
async fn all_list(
    http: &reqwest::Client,
    nodes: std::ops::Range<usize>,
    port: u16,
    members: &[usize],
) -> bool {
    futures::future::join_all(nodes.map(|i| lists(http, i, port, members)))
        .await
        .into_iter()
        .all(|b| b)
}

/// The log files of nodes 1..=n under `dir`.
fn log_paths(dir: &std::path::Path, n: usize) -> Vec<std::path::PathBuf> {
    (0..n)
        .map(|i| dir.join(format!("node{}.log", i + 1)))
        .collect()
}

async fn wait_for<F, Fut>(what: &str, deadline: Duration, logs: &[std::path::PathBuf], mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        if start.elapsed() > deadline {
            let tails: Vec<String> = logs
                .iter()
                .map(|l| {
                    let text = std::fs::read_to_string(l).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    format!(
                        "--- {}\n{}",
                        l.display(),
                        lines[lines.len().saturating_sub(12)..].join("\n")
                    )
                })
                .collect();
            panic!(
                "timed out after {deadline:?} waiting for: {what}\n{}",
                tails.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registrations acknowledged so far, and the nodes new ones enter through.
struct Load {
    acked: Mutex<Vec<(String, u16)>>,
    entries: Mutex<Vec<usize>>,
    stop: AtomicBool,
}

async fn write_load(load: Arc<Load>, port: u16, writer: u32) {
    let http = client();
    let mut k = 0u32;
    while !load.stop.load(Relaxed) {
        let entries = load.entries.lock().clone();
        let via = entries[k as usize % entries.len()];
        let ip = format!("10.{}.{}.{}", 150 + writer, (k / 250) % 250, k % 250);
        let url = format!(
            "http://{}:{port}/nacos/v1/ns/instance?serviceName=dns-scaled&ip={ip}&port=7000&ephemeral=true",
            node_ip(via)
        );
        match http.post(url).send().await {
            Ok(r) if r.status() == 200 => load.acked.lock().push((ip, 7000)),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        k += 1;
    }
}

async fn grows_by(load: &Load, n: usize, what: &str) {
    let target = load.acked.lock().len() + n;
    let start = Instant::now();
    while load.acked.lock().len() < target {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `ip:port` of every instance node `i` lists in the test's service.
async fn listed(http: &reqwest::Client, i: usize, port: u16) -> Option<Vec<String>> {
    let url = format!(
        "http://{}:{port}/nacos/v1/ns/instance/list?serviceName=dns-scaled",
        node_ip(i)
    );
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(
        v["hosts"]
            .as_array()?
            .iter()
            .map(|h| format!("{}:{}", h["ip"].as_str().unwrap_or(""), h["port"]))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_a_dns_name_from_3_to_5_to_3_under_load() {
    let dir = std::env::temp_dir().join(format!("distro-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = shared_port(5);
    let dns = TestDns::start(Vec::new()).await;
    dns.set(&[0, 1, 2]);
    let http = client();
    let mut procs: Vec<Option<Proc>> = (0..5).map(|_| None).collect();
    // DOWN after 10 failed probes (3 s): a node still starting is not marked DOWN
    // (divergent views are the fault suite's subject).
    for (i, p) in procs.iter_mut().enumerate().take(3) {
        *p = Some(Proc::start(i, port, 10, &dns_args(port, dns.addr, 3), &dir));
    }
    let logs: Vec<std::path::PathBuf> = log_paths(&dir, 5);
    wait_for(
        "3 nodes loaded, each listing 3",
        Duration::from_secs(30),
        &logs,
        || async { all_list(&http, 0..3, port, &[0, 1, 2]).await },
    )
    .await;
    let load = Arc::new(Load {
        acked: Mutex::default(),
        entries: Mutex::new(vec![0, 1, 2]),
        stop: AtomicBool::new(false),
    });
    let writers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(write_load(load.clone(), port, w)))
        .collect();
    grows_by(&load, 150, "150 registrations on 3 nodes").await;

    // Scale up: the name gives 5 addresses; the two new nodes start resolving it.
    let t = Instant::now();
    dns.set(&[0, 1, 2, 3, 4]);
    for (i, p) in procs.iter_mut().enumerate().skip(3) {
        *p = Some(Proc::start(i, port, 10, &dns_args(port, dns.addr, 5), &dir));
    }
    let all = [0, 1, 2, 3, 4];
    wait_for(
        "5 nodes loaded, each listing 5",
        Duration::from_secs(30),
        &logs,
        || async { all_list(&http, 0..5, port, &all).await },
    )
    .await;
    let joined_in = t.elapsed();
    load.entries.lock().extend([3, 4]);
    grows_by(&load, 150, "150 registrations on 5 nodes").await;
    wait_for(
        "the new nodes own their share",
        Duration::from_secs(15),
        &logs,
        || async {
            let mut owned = Vec::new();
            for i in 3..5 {
                owned.push(
                    health(&http, i, port)
                        .await
                        .and_then(|h| h["ownedClients"].as_u64())
                        .unwrap_or(0),
                );
            }
            owned.iter().all(|&o| o > 0)
        },
    )
    .await;

    // Scale down: the name gives 3 addresses again; the two leave, hand over, stop.
    let t = Instant::now();
    load.entries.lock().retain(|&i| i < 3);
    dns.set(&[0, 1, 2]);
    wait_for(
        "3 members again, the other two leaving and handed over",
        Duration::from_secs(30),
        &logs,
        || async {
            let stay = all_list(&http, 0..3, port, &[0, 1, 2]).await;
            let mut left = true;
            for i in 3..5 {
                // A leaving node lists the members without itself and owns nothing.
                left &= lists(&http, i, port, &[0, 1, 2]).await
                    && health(&http, i, port)
                        .await
                        .is_some_and(|h| h["ownedClients"] == 0);
            }
            stay && left
        },
    )
    .await;
    for p in procs.iter_mut().skip(3) {
        if let Some(p) = p.as_mut() {
            p.stop();
        }
    }
    let left_in = t.elapsed();
    grows_by(&load, 150, "150 registrations on 3 nodes again").await;
    load.stop.store(true, Relaxed);
    for w in writers {
        w.await.expect("writer");
    }

    // Every acknowledged registration is on each of the three nodes left.
    let acked: Vec<String> = load
        .acked
        .lock()
        .iter()
        .map(|(ip, port)| format!("{ip}:{port}"))
        .collect();
    let t = Instant::now();
    let mut missing: Vec<(usize, usize, Vec<String>)> = Vec::new();
    loop {
        missing.clear();
        for i in 0..3 {
            let held = listed(&http, i, port).await.unwrap_or_default();
            let held: std::collections::HashSet<&String> = held.iter().collect();
            let m: Vec<String> = acked
                .iter()
                .filter(|a| !held.contains(a))
                .cloned()
                .collect();
            if !m.is_empty() {
                missing.push((i, m.len(), m.into_iter().take(5).collect()));
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "acknowledged registrations missing (node, count, first): {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queries = dns.queries.load(Relaxed);
    println!(
        "dns 3 -> 5 -> 3: {} registrations acknowledged, 0 lost; join of 2 took {joined_in:?}, \
         leave of 2 (name changed to stopped) {left_in:?}; converged {:?} after the load \
         stopped; {queries} DNS queries answered",
        acked.len(),
        t.elapsed()
    );
    assert!(queries > 0);
    for p in procs.iter_mut().flatten() {
        p.stop();
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A node joins (its own list names it and the three others) while the others do not
/// list it yet, for many times the DOWN window (3 probes 300 ms apart): it must not start
/// empty beside them, but stay not ready; once their DNS name gives its address too, it
/// loads a snapshot from one of them and holds what they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_not_listed_yet_waits_for_a_snapshot_past_the_down_window() {
    let dir = std::env::temp_dir().join(format!("distro-dns-wait-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = shared_port(4);
    let dns = TestDns::start(Vec::new()).await;
    dns.set(&[0, 1, 2]);
    let http = client();
    let logs: Vec<std::path::PathBuf> = log_paths(&dir, 4);
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| Proc::start(i, port, 3, &dns_args(port, dns.addr, 3), &dir))
        .collect();
    wait_for(
        "3 nodes loaded, each listing 3",
        Duration::from_secs(30),
        &logs,
        || async { all_list(&http, 0..3, port, &[0, 1, 2]).await },
    )
    .await;
    for k in 0..50u32 {
        let url = format!(
            "http://{}:{port}/nacos/v1/ns/instance?serviceName=dns-scaled&ip=10.9.0.{k}&port=7000",
            node_ip(k as usize % 3)
        );
        let r = http.post(url).send().await.expect("register");
        assert_eq!(r.status(), 200);
    }
    // Node 4 starts with a fixed list naming all four; the others do not list it.
    let four: Vec<String> = (0..4).map(|i| format!("{}:{port}", node_ip(i))).collect();
    procs.push(Proc::start(
        3,
        port,
        3,
        &["--members".to_owned(), four.join(",")],
        &dir,
    ));
    // It answers /health (not ready) while the others refuse it; well past the 0.9 s
    // DOWN window it must still be waiting, not started empty.
    wait_for(
        "node 4 answers /health",
        Duration::from_secs(20),
        &logs,
        || async { health(&http, 3, port).await.is_some() },
    )
    .await;
    let refused_since = Instant::now();
    while refused_since.elapsed() < Duration::from_secs(4) {
        let h = health(&http, 3, port).await.expect("node 4 answers");
        assert_eq!(
            h["ready"], false,
            "node 4 started ({} clients) although every peer refused it as not a member: {h}",
            h["clients"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The name now gives node 4's address: the others list it, and it loads from them.
    dns.set(&[0, 1, 2, 3]);
    let all = [0, 1, 2, 3];
    let loaded_in = Instant::now();
    wait_for(
        "4 nodes loaded, each listing 4",
        Duration::from_secs(30),
        &logs,
        || async { all_list(&http, 0..4, port, &all).await },
    )
    .await;
    let loaded_in = loaded_in.elapsed();
    let h = health(&http, 3, port).await.expect("node 4 answers");
    assert_eq!(h["clients"], 50, "node 4 holds what the others hold: {h}");
    let log = std::fs::read_to_string(&logs[3]).unwrap_or_default();
    assert!(
        log.contains("snapshot loaded"),
        "node 4 loaded a snapshot:\n{log}"
    );
    assert!(
        !log.contains("starting with an empty registry"),
        "node 4 did not start empty:\n{log}"
    );
    println!(
        "node 4 refused as not a member for {:?} (DOWN window 0.9 s), then loaded {loaded_in:?} \
         after the name gave its address",
        Duration::from_secs(4)
    );
    for p in &mut procs {
        p.stop();
    }
    std::fs::remove_dir_all(&dir).ok();
}
