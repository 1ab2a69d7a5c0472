//! The `distro-server` binary itself, started as a user starts it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Kills the child when the test ends, however it ends.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of `field=` in a log line (`http=127.0.0.1:41234`).
pub(crate) fn field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {field}="))? + field.len() + 2;
    line[at..].split_whitespace().next()
}

pub(crate) fn port_of(line: &str, name: &str) -> u16 {
    let addr = field(line, name).unwrap_or_else(|| panic!("no {name}= in {line:?}"));
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{name}={addr} has no port"))
}

#[tokio::test]
async fn port_zero_gives_three_os_chosen_ports_each_logged_and_serving() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distro-server"))
        .args(["--port", "0", "--bind", "127.0.0.1", "--log-level", "info"])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start distro-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let _running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let started = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the node logs 'distro node started' within 30 s");
        if line.contains("distro node started") {
            break line;
        }
    };
    let (http, sdk, cluster) = (
        port_of(&started, "http"),
        port_of(&started, "sdk"),
        port_of(&started, "cluster"),
    );
    for (name, p) in [("http", http), ("sdk", sdk), ("cluster", cluster)] {
        assert!(p != 0, "{name} port is 0 in {started:?}");
    }
    assert!(
        http != sdk && sdk != cluster && http != cluster,
        "three distinct ports: {started:?}"
    );
    assert_ne!((sdk, cluster), (1000, 1001), "not port 0 + 1000 and + 1001");
    assert_eq!(
        field(&started, "member"),
        Some(format!("127.0.0.1:{http}").as_str()),
        "the member address is the main port it got: {started:?}"
    );

    // The logged ports are the ones that serve.
    let health = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{http}/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /health on the logged main port");
    assert_eq!(health.status(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&health.text().await.expect("health body")).expect("health JSON");
    assert_eq!(body["status"], "UP", "{body}");
    let mut registry = distro_server::proto::distro::registry_client::RegistryClient::connect(
        format!("http://127.0.0.1:{sdk}"),
    )
    .await
    .expect("connect to the logged SDK port");
    registry
        .query(distro_server::proto::distro::QueryRequest {
            service: Some(distro_server::proto::distro::ServiceRef {
                name: "svc".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("a native query on the logged SDK port");
    let mut peer = distro_server::proto::distro::peer_client::PeerClient::connect(format!(
        "http://127.0.0.1:{cluster}"
    ))
    .await
    .expect("connect to the logged cluster port");
    let refused = peer
        .probe(distro_server::proto::distro::ProbeRequest {
            from: "10.255.255.1:8848".into(),
            ..Default::default()
        })
        .await
        .expect_err("a probe from a non-member is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::PermissionDenied,
        "the peer service answers on the logged cluster port: {refused:?}"
    );
}
