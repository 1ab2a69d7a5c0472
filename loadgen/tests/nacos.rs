//! The loadgen Nacos client against a real 3-node LocalCluster: replication of what it
//! registers, pushes to its subscriptions, and a thousand connections at once.

use distro_server::{LocalCluster, ServerConfig};
use loadgen::protocol::nacos::{
    ClientConfig, ConnectPlan, Dialer, Instance, NacosClient, Push, ServiceName, connect_many,
    raise_nofile,
};
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(30);

fn fast_config() -> ServerConfig {
    let mut c = ServerConfig::default();
    c.protocol.sync_delay = 100;
    c.tick = Duration::from_millis(20);
    c.nacos.push_delay = Duration::from_millis(50);
    c
}

async fn cluster() -> LocalCluster {
    let c = LocalCluster::start(3, fast_config(), 1)
        .await
        .expect("cluster starts");
    let nodes: Vec<_> = (0..3).filter_map(|i| c.node(i)).collect();
    eventually("every node loaded", || nodes.iter().all(|n| n.is_loaded())).await;
    c
}

/// Polls `f` every 20 ms until it holds; fails after `DEADLINE`.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(config: &ClientConfig, server: SocketAddr, index: usize) -> NacosClient {
    let dialer = Dialer::for_target(server.ip(), config.connect_timeout);
    NacosClient::connect(config, &dialer, server, index)
        .await
        .expect("connects and handshakes")
}

/// Whether `ip:port` is in `service` as seen through `client`'s node.
async fn visible(client: &NacosClient, service: &ServiceName, ip: &str, port: u16) -> bool {
    let reply = client
        .call(&client.requests().query(service, "", false))
        .await
        .expect("query");
    reply
        .service_info()
        .expect("serviceInfo")
        .contains(ip, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_through_node_1_is_visible_on_nodes_2_and_3() {
    let c = cluster().await;
    let config = ClientConfig::default();
    let a = connect(&config, c.sdk_addr(0), 0).await;
    assert!(!a.connection_id().is_empty());
    // Sources are spread over 127.0.0.2.. on loopback.
    assert_eq!(a.local_addr().ip().to_string(), "127.0.0.2");
    let b = connect(&config, c.sdk_addr(1), 1).await;
    let d = connect(&config, c.sdk_addr(2), 2).await;
    assert_eq!(b.local_addr().ip().to_string(), "127.0.0.3");

    let service = ServiceName::new("replicated");
    let inst = Instance::new("10.0.0.7", 8080);
    a.call(&a.requests().register(&service, &inst))
        .await
        .expect("registers");
    assert!(visible(&a, &service, "10.0.0.7", 8080).await);
    for (name, other) in [("node 2", &b), ("node 3", &d)] {
        let start = Instant::now();
        loop {
            if visible(other, &service, "10.0.0.7", 8080).await {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "not visible on {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Batch registration replaces the connection's publication for the service.
    let batch = [Instance::new("10.0.0.8", 1), Instance::new("10.0.0.8", 2)];
    a.call(&a.requests().batch_register(&service, &batch))
        .await
        .expect("batch registers");
    let info = a
        .call(&a.requests().query(&service, "", false))
        .await
        .expect("query");
    let hosts = info.service_info().expect("serviceInfo").hosts.len();
    assert_eq!(hosts, 2);
    // Deregistration removes it everywhere; health checks are answered.
    a.call(&a.requests().deregister(&service, &batch[0]))
        .await
        .expect("deregisters");
    a.call(&a.requests().health_check())
        .await
        .expect("health check");
    let start = Instant::now();
    while visible(&d, &service, "10.0.0.8", 1).await {
        assert!(start.elapsed() < DEADLINE, "deregistration not replicated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bad input gets the server's 400, naming the field.
    let err = a
        .call(
            &a.requests()
                .register(&service, &Instance::new("not an ip", 1)),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code(), "400", "{err}");
    // As does a query of an invalid service: the reply's result fields are read.
    let err = a
        .call(&a.requests().query(&ServiceName::new(""), "", false))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), "400", "{err}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_another_node_receives_pushes_and_acks_them() {
    let c = cluster().await;
    let (tx, mut rx) = mpsc::unbounded_channel::<Push>();
    let subscriber_config = ClientConfig {
        on_push: Some(Arc::new(move |p: &Push| {
            let _ = tx.send(p.clone());
        })),
        ..ClientConfig::default()
    };
    let sub = connect(&subscriber_config, c.sdk_addr(2), 0).await;
    let service = ServiceName::new("pushed");
    let reply = sub
        .call(&sub.requests().subscribe(&service, ""))
        .await
        .expect("subscribes");
    assert!(reply.service_info().expect("current view").hosts.is_empty());

    let config = ClientConfig::default();
    let publisher = connect(&config, c.sdk_addr(0), 1).await;
    let registered = Instant::now();
    publisher
        .call(
            &publisher
                .requests()
                .register(&service, &Instance::new("10.1.1.1", 80)),
        )
        .await
        .expect("registers");
    let mut last_ref = 0;
    let push = loop {
        let p = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("a push within the deadline")
            .expect("channel open");
        let info = p.service_info().expect("serviceInfo");
        assert_eq!(info.name, "pushed");
        assert!(info.last_ref_time > last_ref, "lastRefTime increases");
        last_ref = info.last_ref_time;
        if info.contains("10.1.1.1", 80) {
            break p;
        }
    };
    assert!(push.received > registered);
    assert_eq!(push.server, c.sdk_addr(2));
    let counters = &subscriber_config.counters;
    assert!(counters.pushes.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(
        counters
            .push_acks
            .load(std::sync::atomic::Ordering::Relaxed),
        counters.pushes.load(std::sync::atomic::Ordering::Relaxed)
    );
    // The server saw the acks: nothing is left to retry once pushes settle.
    let node3 = c.node(2).expect("running");
    assert!(node3.is_loaded());

    // Closing the publisher removes its instance; the subscriber is told.
    publisher.close(Duration::from_secs(5)).await;
    loop {
        let p = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("a removal push within the deadline")
            .expect("channel open");
        if !p
            .service_info()
            .expect("serviceInfo")
            .contains("10.1.1.1", 80)
        {
            break;
        }
    }
    assert!(sub.is_open());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_register_and_are_visible_on_every_node() {
    const N: usize = 1_000;
    const SERVICES: usize = 10;
    // Client and server ends of each connection live in this process.
    let limit = raise_nofile(4 * N as u64 + 1_000).expect("readable limit");
    assert!(limit.is_enough(), "{limit}");
    let c = cluster().await;
    let servers: Vec<SocketAddr> = (0..3).map(|i| c.sdk_addr(i)).collect();
    let config = Arc::new(ClientConfig::default());
    let dialer = Dialer::for_target(servers[0].ip(), config.connect_timeout);
    let plan = ConnectPlan::new(servers.clone(), N);
    let clients: Vec<NacosClient> = connect_many(config, dialer, &plan)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // Every node got a share of the connections.
    for s in &servers {
        assert!(clients.iter().filter(|c| c.server() == *s).count() > N / 6);
    }
    let clients = Arc::new(clients);
    let services: Vec<ServiceName> = (0..SERVICES)
        .map(|s| ServiceName::new(format!("many-{s}")))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let clients = clients.clone();
        let service = services[i % SERVICES].clone();
        tasks.spawn(async move {
            let c = &clients[i];
            let inst = Instance::new(format!("10.2.{}.{}", i / 250, i % 250), 8000);
            c.call(&c.requests().register(&service, &inst))
                .await
                .map_err(|e| format!("register {i}: {e}"))
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("registered");
    }
    for (k, probe) in clients[..3].iter().enumerate() {
        let start = Instant::now();
        loop {
            let mut total = 0;
            for s in &services {
                let reply = probe
                    .call(&probe.requests().query(s, "", false))
                    .await
                    .expect("query");
                total += reply.service_info().expect("serviceInfo").hosts.len();
            }
            if total == N {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{total} of {N} visible through {} (probe {k})",
                probe.server()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(clients.iter().all(|c| c.is_open()));
    drop(clients);
    c.shutdown().await;
}

#[test]
fn encoded_payloads_are_what_the_server_decodes() {
    let r = loadgen::protocol::nacos::Requests::new("127.0.0.9");
    let p = r.register(&ServiceName::new("s"), &Instance::new("10.0.0.1", 1));
    let decoded = distro_server::proto::nacos::Payload::decode(p.payload().as_bytes())
        .expect("the generated type decodes it");
    let meta = decoded.metadata.expect("metadata");
    assert_eq!(meta.r#type, "InstanceRequest");
    assert_eq!(meta.client_ip, "127.0.0.9");
    let body: serde_json::Value =
        serde_json::from_slice(&decoded.body.expect("body").value).expect("json");
    assert_eq!(body["instance"]["ip"], "10.0.0.1");
}

mod driver {
    //! `--protocol nacos` through the loadgen driver, against its embedded cluster.

    use loadgen::run::{ProtocolKind, RunConfig, Scenario, run};
    use loadgen::{Op, OpSummary};
    use std::time::Duration;

    const SEED: u64 = 20_251_126;

    fn config(out: &std::path::Path, scenario: Scenario, clients: u64) -> RunConfig {
        RunConfig {
            protocol: ProtocolKind::Nacos,
            scenario,
            clients,
            services: 20,
            seed: SEED,
            nodes: 3,
            duration: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
            probe_interval: Duration::from_millis(300),
            converge_timeout: Duration::from_secs(10),
            out: Some(out.to_path_buf()),
            history: None,
            progress: false,
            progress_every: Duration::from_secs(3600),
            ..RunConfig::default()
        }
    }

    fn ok(s: &loadgen::Summary, op: Op) -> u64 {
        s.op(op).map_or(0, |o: &OpSummary| o.ok)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steady_run_registers_health_checks_queries_and_converges() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = config(dir.path(), Scenario::Steady, 500);
        cfg.query_rate = 100.0;
        let o = run(cfg).await.expect("run");
        let d = format!("seed {SEED}\n{}{}", o.summary.table(), o.epilogue());
        let s = &o.summary;
        assert_eq!(s.totals.errors, 0, "{d}");
        assert_eq!(ok(s, Op::Register), 500, "{d}");
        assert!(ok(s, Op::Beat) > 0, "{d}");
        assert!(ok(s, Op::Query) > 0, "{d}");
        assert!(s.replication_lag.count > 0, "{d}");
        assert_eq!(o.nodes_converged.map(|(ok, _)| ok), Some(true), "{d}");
        assert!(o.node_instances.iter().all(|n| *n == 500), "{d}");
        // The connections were opened before the registrations, and measured.
        let c = o.connect.as_ref().expect("a connect phase");
        assert_eq!((c.attempted, c.failed), (500, 0), "{d}");
        assert_eq!(c.latency.map(|l| l.count), Some(500), "{d}");
        assert!(dir.path().join(loadgen::run::CONNECT_FILE).is_file());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn push_run_measures_change_to_push_latency() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = config(dir.path(), Scenario::Push, 200);
        cfg.rate = Some(20.0);
        cfg.duration = Duration::from_secs(3);
        let o = run(cfg).await.expect("run");
        let d = format!("seed {SEED}\n{}{}", o.summary.table(), o.epilogue());
        let s = &o.summary;
        assert_eq!(s.totals.errors, 0, "{d}");
        assert!(ok(s, Op::Push) > 0, "no push measured\n{d}");
    }

    /// 40 subscriber connections per node (120 in all; once at most 64): every change is
    /// pushed to each of them and none is missed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn push_run_with_120_subscribers_sees_every_change_on_each() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = config(dir.path(), Scenario::Push, 100);
        cfg.rate = Some(10.0);
        cfg.subscribers = 40;
        cfg.duration = Duration::from_secs(3);
        let o = run(cfg).await.expect("run");
        let d = format!("seed {SEED}\n{}{}", o.summary.table(), o.epilogue());
        let s = &o.summary;
        assert_eq!(s.totals.errors, 0, "{d}");
        let pushes = ok(s, Op::Push);
        assert!(pushes >= 120, "fewer pushes than subscribers\n{d}");
        assert_eq!(pushes % 120, 0, "a change missed some subscriber\n{d}");
    }
}

mod cluster_process {
    //! `--cluster-process`: the loadgen binary runs its cluster in a child process (itself,
    //! re-executed), checks the nodes through it, and leaves no process behind.

    use std::io::{BufRead as _, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const SEED: &str = "20251126";

    fn loadgen(out: &std::path::Path, duration: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loadgen"));
        c.args([
            "--protocol",
            "nacos",
            "--cluster-process",
            "--scenario",
            "steady",
        ])
        .args(["--clients", "300", "--services", "20", "--seed", SEED])
        .args(["--duration", duration, "--heartbeat", "1s"])
        .args(["--probe-interval", "300ms", "--converge-timeout", "10s"])
        .args(["--no-history", "--plain", "--require-clean"])
        .arg("--out")
        .arg(out);
        c
    }

    /// The child's pid from the run's first line.
    fn child_pid(line: &str) -> Option<u32> {
        let rest = line.split("in child process ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    }

    /// Whether `pid` is gone (or a zombie nobody reaped yet).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    fn wait_gone(pid: u32, what: &str) {
        let start = Instant::now();
        while !gone(pid) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the cluster process {pid} is still running {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads the run's stdout up to the first line that `is_it`; returns the cluster
    /// process's pid and the rest of the output.
    fn read_until(
        child: &mut Child,
        what: &str,
        is_it: impl Fn(&str) -> bool,
    ) -> (u32, BufReader<std::process::ChildStdout>) {
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut pid = None;
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).expect("reads");
            assert!(n > 0, "the run ended before {what} (seed {SEED})");
            pid = pid.or_else(|| child_pid(&line));
            if is_it(&line) {
                break;
            }
        }
        (pid.expect("a child process pid"), out)
    }

    #[test]
    fn a_steady_run_against_a_cluster_process_is_clean() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = loadgen(dir.path(), "2s").output().expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let d = format!(
            "seed {SEED}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{d}");
        let pid = stdout.lines().find_map(child_pid).expect("child pid");
        assert!(stdout.contains("connect phase: 300 connections"), "{d}");
        assert!(stdout.contains("agreement at the end: yes"), "{d}");
        assert!(stdout.contains("[300, 300, 300]"), "{d}");
        wait_gone(pid, "after the run");
    }

    #[test]
    fn interrupted_or_killed_runs_leave_no_cluster_process() {
        // SIGINT: the run stops, checks the nodes, stops the child and exits.
        let dir = tempfile::tempdir().expect("temp dir");
        let mut run = loadgen(dir.path(), "60s")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        // A progress line: the run's main loop (which handles SIGINT) is running.
        let (pid, mut rest) = read_until(&mut run, "a progress line", |l| l.starts_with('['));
        let kill = |signal: &str, target: u32| {
            let s = Command::new("kill")
                .args([signal, &target.to_string()])
                .status()
                .expect("kill runs");
            assert!(s.success(), "kill {signal} {target}");
        };
        kill("-INT", run.id());
        let mut tail = String::new();
        std::io::Read::read_to_string(&mut rest, &mut tail).expect("reads");
        let status = run.wait().expect("exits");
        assert!(tail.contains("interrupted"), "seed {SEED}\n{tail}");
        assert!(status.code().is_some(), "exited by itself: {status:?}");
        wait_gone(pid, "after SIGINT");

        // SIGKILL: the child sees its stdin close and exits.
        let dir = tempfile::tempdir().expect("temp dir");
        let mut run = loadgen(dir.path(), "60s")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        let (pid, _rest) = read_until(&mut run, "the connect phase", |l| {
            l.contains("connect phase")
        });
        kill("-KILL", run.id());
        let _ = run.wait();
        wait_gone(pid, "after its parent was killed");
    }
}
