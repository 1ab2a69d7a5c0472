//! Real `distro-server` processes on loopback addresses: free ports, spawn, wait for
//! `/health`, kill -9, restart, SIGSTOP / SIGCONT.
//!
//! Each node listens on its own loopback address (`127.0.77.1`, `127.0.77.2`, ...) and
//! sends its peer traffic from it, so firewall rules can cut one node off by address.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server binary cargo built for this test target.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_distro-server");

/// The shortened protocol timings of every fault scenario (see `results/faults.md`).
pub(crate) const TIMINGS: &[&str] = &[
    "--sync-delay",
    "200ms",
    "--sync-retry-delay",
    "500ms",
    "--sync-retry-max-delay",
    "2s",
    "--peer-timeout",
    "1s",
    "--verify-interval",
    "1s",
    "--lease",
    "20s",
    "--probe-interval",
    "300ms",
    "--probe-down-after",
    "3",
    "--heartbeat-timeout",
    "3s",
    "--delete-timeout",
    "6s",
    "--heartbeat-interval",
    "1s",
    "--load-retry-delay",
    "300ms",
    "--tombstone-ttl",
    "60s",
    "--shards",
    "64",
    "--tick",
    "50ms",
    "--shutdown-flush",
    "1s",
    "--push-delay",
    "100ms",
];

/// The loopback address of node `i` (0-based).
pub(crate) fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 77, 1 + i as u8)
}

/// The loopback address the load clients send from.
pub(crate) const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 77, 100);

/// A port `p` on `ip` with `p`, `p+1000` and `p+1001` free (bound and released).
fn free_ports(ip: Ipv4Addr) -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind(SocketAddrV4::new(ip, 0)) else {
            continue;
        };
        let Ok(p) = l.local_addr().map(|a| a.port()) else {
            continue;
        };
        if p > 64_000 {
            continue;
        }
        let ok = [p + 1000, p + 1001]
            .iter()
            .all(|q| TcpListener::bind(SocketAddrV4::new(ip, *q)).is_ok());
        if ok {
            return p;
        }
    }
    panic!("no free port triple on {ip}");
}

/// A port free on `ip` (bound and released).
pub(crate) fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind(SocketAddrV4::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One node process.
pub(crate) struct ProcNode {
    /// Its loopback address.
    pub(crate) ip: Ipv4Addr,
    /// Its main (HTTP) port.
    pub(crate) port: u16,
    /// Where it really listens for peers (`port + 1001` unless a proxy sits there).
    pub(crate) cluster_listen: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// Its log (stdout and stderr, every incarnation).
    pub(crate) log: PathBuf,
}

impl ProcNode {
    /// The base URL of its HTTP API.
    pub(crate) fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// Its process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let _ = writeln!(log, "----- start {:?}", self.args);
        let err = log.try_clone().expect("log file");
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("DISTRO_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .args(&self.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("distro-server starts");
        self.child = Some(child);
    }

    /// Whether the process has exited (and reaps it).
    fn exited(&mut self) -> bool {
        matches!(
            self.child.as_mut().map(|c| c.try_wait()),
            Some(Ok(Some(_))) | Some(Err(_))
        )
    }

    /// The last lines of its log.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Its whole log.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, `TERM`) to `pid` through the shell's `kill`.
pub(crate) fn signal(pid: u32, signal: &str) {
    let st = Command::new("sh")
        .args(["-c", &format!("kill -{signal} {pid}")])
        .status()
        .expect("sh runs");
    assert!(st.success(), "kill -{signal} {pid} failed");
}

/// N node processes forming one cluster.
pub(crate) struct ProcCluster {
    /// The nodes, by index.
    pub(crate) nodes: Vec<ProcNode>,
    /// The directory of the logs.
    pub(crate) dir: PathBuf,
}

impl ProcCluster {
    /// Starts `n` nodes and waits until every one is ready. With `proxied = Some(i)`, node
    /// `i` listens for peers on another port and `port + 1001` is left to the caller (a
    /// proxy); its listener must be bound by the caller before peers dial it.
    pub(crate) async fn start(name: &str, n: usize, proxied: Option<usize>) -> ProcCluster {
        let dir = std::env::temp_dir().join(format!(
            "distro-faults-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        ));
        std::fs::create_dir_all(&dir).expect("log dir");
        for attempt in 0..3 {
            let ports: Vec<u16> = (0..n).map(|i| free_ports(node_ip(i))).collect();
            let members: Vec<String> = (0..n)
                .map(|i| format!("{}:{}", node_ip(i), ports[i]))
                .collect();
            let mut nodes = Vec::new();
            for (i, &port) in ports.iter().enumerate() {
                let ip = node_ip(i);
                let cluster_listen = if proxied == Some(i) {
                    free_port(ip)
                } else {
                    port + 1001
                };
                let mut args: Vec<String> = [
                    "--bind",
                    &ip.to_string(),
                    "--port",
                    &port.to_string(),
                    "--cluster-port",
                    &cluster_listen.to_string(),
                    "--members",
                    &members.join(","),
                    "--cluster-token",
                    "fault-suite",
                    "--log-level",
                    "info",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                args.extend(TIMINGS.iter().map(|s| s.to_string()));
                let mut node = ProcNode {
                    ip,
                    port,
                    cluster_listen,
                    args,
                    child: None,
                    log: dir.join(format!("node{}-attempt{attempt}.log", i + 1)),
                };
                node.spawn();
                nodes.push(node);
            }
            let mut c = ProcCluster {
                nodes,
                dir: dir.clone(),
            };
            if proxied.is_some() {
                // The caller binds the proxy before waiting for readiness.
                return c;
            }
            match c.wait_all_ready(Duration::from_secs(30)).await {
                Ok(()) => return c,
                Err(e) => eprintln!("cluster start attempt {attempt} failed (retrying): {e}"),
            }
        }
        panic!(
            "the cluster did not start in 3 attempts; logs in {}",
            dir.display()
        );
    }

    /// Waits until every node answers `/health` with 200 (snapshot loaded).
    pub(crate) async fn wait_all_ready(&mut self, deadline: Duration) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.wait_ready(i, deadline).await?;
        }
        Ok(())
    }

    /// Waits until node `i` answers `/health` with 200.
    pub(crate) async fn wait_ready(&mut self, i: usize, deadline: Duration) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .expect("http client");
        let start = Instant::now();
        let url = format!("{}/health", self.nodes[i].url());
        loop {
            if self.nodes[i].exited() {
                return Err(format!(
                    "node {} exited:\n{}",
                    i + 1,
                    self.nodes[i].log_tail()
                ));
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().as_u16() == 200
            {
                return Ok(());
            }
            if start.elapsed() > deadline {
                return Err(format!(
                    "node {} not ready after {deadline:?}:\n{}",
                    i + 1,
                    self.nodes[i].log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9` of node `i`.
    pub(crate) fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again with the same arguments.
    pub(crate) fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {} still runs", i + 1);
        self.nodes[i].spawn();
    }

    /// Sends `sig` to node `i`.
    pub(crate) fn signal(&self, i: usize, sig: &str) {
        signal(self.nodes[i].pid().expect("node runs"), sig);
    }

    /// The base URLs of every node.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(ProcNode::url).collect()
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
