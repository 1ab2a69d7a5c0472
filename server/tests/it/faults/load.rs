//! The load of a fault scenario: ip:port clients that register through the HTTP Open API,
//! heartbeat every second, and (while churn is on) deregister and register again. A
//! request that fails (connection refused, timeout, 5xx) is retried on the next node:
//! that is a failover. Every write is recorded with its outcome, the history the checker
//! compares with the nodes' final state.

use super::procs::CLIENT_IP;
use distro_core::rng::SplitMix64;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Services the clients publish to.
pub(crate) const SERVICES: [&str; 4] = ["fault-a", "fault-b", "fault-c", "fault-d"];

/// A write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    Register,
    Deregister,
}

/// The outcome of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A node answered 200 `ok`.
    Acked,
    /// No node acknowledged it; it may or may not have been applied (timeouts).
    Unknown,
}

/// One write of one client, as the client saw it.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub(crate) write: Write,
    pub(crate) outcome: Outcome,
    /// Seconds since the load started, when the client got its answer.
    pub(crate) at: f64,
    /// The node (index) that acknowledged it.
    pub(crate) node: Option<usize>,
}

/// A client's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub(crate) service: &'static str,
    pub(crate) ip: String,
    pub(crate) port: u16,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.service, self.ip, self.port)
    }
}

/// The key of client `i`.
pub(crate) fn key(i: usize) -> Key {
    Key {
        service: SERVICES[i % SERVICES.len()],
        ip: format!("10.77.{}.{}", i / 200, i % 200 + 1),
        port: 7000 + (i % 1000) as u16,
    }
}

/// The client index of key `k` (the inverse of [`key`]).
pub(crate) fn index_of(k: &Key) -> usize {
    let third: usize =
        k.ip.rsplit('.')
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    let i = usize::from(k.port - 7000) + 1000 * (third / 5);
    assert_eq!(key(i), *k, "index_of is the inverse of key");
    i
}

const SECONDS: usize = 600;

/// Per-second counters.
pub(crate) struct PerSecond {
    pub(crate) ok: Vec<AtomicU64>,
    pub(crate) errors: Vec<AtomicU64>,
    pub(crate) failovers: Vec<AtomicU64>,
    pub(crate) reregistered: Vec<AtomicU64>,
}

impl PerSecond {
    fn new() -> Self {
        let v = || (0..SECONDS).map(|_| AtomicU64::new(0)).collect();
        Self {
            ok: v(),
            errors: v(),
            failovers: v(),
            reregistered: v(),
        }
    }
}

struct Shared {
    start: Instant,
    urls: Vec<String>,
    http: reqwest::Client,
    churn: AtomicBool,
    stop: AtomicBool,
    per_sec: PerSecond,
    histories: Vec<std::sync::Mutex<Vec<Op>>>,
}

impl Shared {
    fn sec(&self) -> usize {
        (self.start.elapsed().as_secs() as usize).min(SECONDS - 1)
    }
}

/// The running load.
pub(crate) struct Load {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a node answered.
enum Answer {
    /// 200 from node `.0`.
    Ok(usize, String),
    /// A definite refusal (4xx): not applied.
    Refused(u16, String),
    /// No answer or a 5xx: maybe applied.
    Failed,
}

impl Shared {
    /// Sends the request built by `req` to the client's home node, failing over to the
    /// next nodes on errors.
    async fn call(
        &self,
        home: usize,
        req: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Answer {
        let n = self.urls.len();
        for attempt in 0..n {
            let url = &self.urls[(home + attempt) % n];
            if attempt > 0 {
                self.per_sec.failovers[self.sec()].fetch_add(1, Relaxed);
            }
            if let Ok(r) = req(&self.http, url).send().await {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if status == 200 {
                    self.per_sec.ok[self.sec()].fetch_add(1, Relaxed);
                    return Answer::Ok((home + attempt) % n, body);
                }
                if (400..500).contains(&status) {
                    self.per_sec.errors[self.sec()].fetch_add(1, Relaxed);
                    return Answer::Refused(status, body);
                }
            }
        }
        self.per_sec.errors[self.sec()].fetch_add(1, Relaxed);
        Answer::Failed
    }

    async fn write(&self, i: usize, k: &Key, w: Write) -> bool {
        let home = i % self.urls.len();
        let q = format!("serviceName={}&ip={}&port={}", k.service, k.ip, k.port);
        let a = self
            .call(home, |h, url| {
                let u = format!("{url}/nacos/v1/ns/instance?{q}");
                match w {
                    Write::Register => h.post(u),
                    Write::Deregister => h.delete(u),
                }
            })
            .await;
        let node = match &a {
            Answer::Ok(n, _) => Some(*n),
            _ => None,
        };
        let outcome = match a {
            Answer::Ok(..) => Outcome::Acked,
            Answer::Refused(s, body) => {
                panic!("{w:?} of {k} refused with {s}: {body}")
            }
            Answer::Failed => Outcome::Unknown,
        };
        if let Ok(mut h) = self.histories[i].lock() {
            h.push(Op {
                write: w,
                outcome,
                at: self.start.elapsed().as_secs_f64(),
                node,
            });
        }
        outcome == Outcome::Acked
    }

    /// Heartbeat; `Some(false)` when the node does not know the instance (20404).
    async fn beat(&self, home: usize, k: &Key) -> Option<bool> {
        let q = format!("serviceName={}&ip={}&port={}", k.service, k.ip, k.port);
        match self
            .call(home, |h, url| {
                h.put(format!("{url}/nacos/v1/ns/instance/beat?{q}"))
            })
            .await
        {
            Answer::Ok(_, body) => Some(!body.contains("20404")),
            _ => None,
        }
    }

    async fn sleep_or_stop(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stop.load(Relaxed) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
        }
        !self.stop.load(Relaxed)
    }
}

async fn client(s: Arc<Shared>, i: usize, seed: u64) {
    let k = key(i);
    let home = i % s.urls.len();
    let mut rng = SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x1234_5678_9abc));
    let churner = i.is_multiple_of(4);
    // Spread the first registrations over a second.
    if !s
        .sleep_or_stop(Duration::from_millis(rng.below(1000)))
        .await
    {
        return;
    }
    let mut registered = false;
    loop {
        if s.stop.load(Relaxed) {
            return;
        }
        if !registered {
            registered = s.write(i, &k, Write::Register).await;
            if !registered && !s.sleep_or_stop(Duration::from_millis(300)).await {
                return;
            }
            continue;
        }
        if !s.sleep_or_stop(Duration::from_millis(1000)).await {
            return;
        }
        if churner && s.churn.load(Relaxed) && rng.below(8) == 0 {
            if s.write(i, &k, Write::Deregister).await {
                // Stay away for 1-3 s, then come back if churn is still on.
                let away = Duration::from_millis(1000 + rng.below(2000));
                if !s.sleep_or_stop(away).await {
                    return;
                }
                if !s.churn.load(Relaxed) {
                    // Stays deleted: the checker expects it gone everywhere.
                    while s.sleep_or_stop(Duration::from_millis(200)).await {}
                    return;
                }
                registered = false;
            }
            continue;
        }
        if s.beat(home, &k).await == Some(false) {
            // The owner does not know it (lost with a killed owner, or expired): register
            // again, as Nacos clients do on 20404.
            s.per_sec.reregistered[s.sec()].fetch_add(1, Relaxed);
            registered = false;
        }
    }
}

impl Load {
    /// Starts `clients` clients against `urls`, with churn on.
    pub(crate) fn start(urls: Vec<String>, clients: usize, seed: u64) -> Load {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(1000))
            .connect_timeout(Duration::from_millis(500))
            .local_address(IpAddr::V4(CLIENT_IP))
            .pool_max_idle_per_host(64)
            .build()
            .expect("http client");
        let shared = Arc::new(Shared {
            start: Instant::now(),
            urls,
            http,
            churn: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            per_sec: PerSecond::new(),
            histories: (0..clients).map(|_| Default::default()).collect(),
        });
        let tasks = (0..clients)
            .map(|i| tokio::spawn(client(shared.clone(), i, seed)))
            .collect();
        Load { shared, tasks }
    }

    /// Seconds since the load started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.shared.start.elapsed()
    }

    /// Ends churn: from now on clients only heartbeat (or stay deleted).
    pub(crate) fn stop_churn(&self) {
        self.shared.churn.store(false, Relaxed);
    }

    /// Per-second counters.
    pub(crate) fn per_second(&self) -> &PerSecond {
        &self.shared.per_sec
    }

    /// The histories so far, by client index.
    pub(crate) fn histories(&self) -> Vec<Vec<Op>> {
        self.shared
            .histories
            .iter()
            .map(|h| h.lock().map(|h| h.clone()).unwrap_or_default())
            .collect()
    }

    /// Stops every client and returns the histories, by client index.
    pub(crate) async fn stop(mut self) -> Vec<Vec<Op>> {
        self.shared.stop.store(true, Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            t.await.expect("client task");
        }
        self.histories()
    }
}
