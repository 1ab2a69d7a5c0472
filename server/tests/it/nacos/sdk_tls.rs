//! The real Rust `nacos-sdk` over TLS against a 3-node cluster with TLS on its HTTP and SDK
//! ports (certificates made here with rcgen).
//!
//! The SDK speaks TLS only when built with its `tls` feature, and cargo unifies features
//! across a workspace: turned on here it would take every other SDK test to https. So the
//! TLS client is a small program of its own workspace, server/tests/sdk-tls, which this
//! test builds (`cargo build --locked`, into this workspace's target directory, so that the
//! dependencies both share with identical features are built once) and runs as a child
//! process: with `NACOS_CLIENT_TLS_CA_CERT` naming the test CA it registers, receives the
//! push and queries, and its instance replicates to every node; without it the SDK does not
//! trust the node, fails to connect, and its log says why (UnknownIssuer).

use crate::cluster::{cluster, fast_config};
use crate::nacos::harness::wait_until;
use crate::tls::{ca, leaf};
use distro_core::ServiceSpec;
use distro_server::tls::HttpTls;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Builds the TLS client program; the path of its binary.
fn build_client() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk-tls/Cargo.toml");
    // CARGO_TARGET_TMPDIR is <target dir>/tmp, wherever the target directory is.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = std::time::Instant::now();
    let mut cmd = Command::new(&cargo);
    without_crate_variables(&mut cmd);
    let out = cmd
        .args(["build", "--locked", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "{cargo} build of {} failed ({}):\n{}",
        manifest.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("built the TLS client in {:?}", started.elapsed());
    target.join("debug").join("sdk-tls")
}

/// The client's command for `servers`, `service` and instance `inst`, trusting the CA file
/// `ca` (none: only the system's roots).
fn client(bin: &Path, servers: &str, service: &str, inst: &str, ca: Option<&Path>) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([servers, service, inst])
        .env_remove("NACOS_CLIENT_TLS_CA_CERT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ca) = ca {
        cmd.env("NACOS_CLIENT_TLS_CA_CERT", ca);
    }
    cmd
}

/// Cargo compares a build script's `rerun-if-env-changed` variables with its own
/// environment: run from a test, it would see the variables cargo set for this test
/// (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...), rebuild ring and what depends on it, and the
/// next `cargo test` would rebuild them back. Those are removed; cargo's configuration
/// (CARGO_HOME, CARGO_NET_*, ...) stays.
fn without_crate_variables(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        let set_for_crates = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CFG_",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ];
        if set_for_crates.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(k);
        }
    }
}

fn text(status: std::process::ExitStatus, stdout: &str, stderr: &[u8]) -> String {
    format!(
        "{status}\nstdout:\n{stdout}stderr:\n{}",
        String::from_utf8_lossy(stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_over_tls_registers_subscribes_and_queries_and_needs_the_ca() {
    let bin = tokio::task::spawn_blocking(build_client)
        .await
        .expect("join");
    let good = ca("distro test CA");
    let (cert, key) = leaf(&good, false);
    let mut config = fast_config();
    config.http_tls = Some(HttpTls::from_pem(&cert, &key).expect("valid PEM"));
    let c = cluster(3, config).await;
    let dir = std::env::temp_dir().join(format!("distro-sdk-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &good.pem).expect("write the CA");
    let servers: Vec<String> = (0..3).map(|i| c.http_addr(i).to_string()).collect();
    let servers = servers.join(",");

    let mut child = client(&bin, &servers, "tls-sdk", "10.0.7.1:9000", Some(&ca_file))
        .spawn()
        .expect("start the TLS client");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Each of the client's steps has 30 s; all four within 60 s on a busy machine.
    let want = [
        "connected",
        "registered",
        "pushed 10.0.7.1:9000",
        "queried 10.0.7.1:9000",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while lines.len() < want.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("reap the client");
                let got = lines.join("\n");
                panic!(
                    "the TLS client printed {lines:?}, not {want:?}:\n{}",
                    text(out.status, &got, &out.stderr)
                );
            }
        }
    }
    assert_eq!(lines, want);
    let spec = ServiceSpec::new("", "", "tls-sdk");
    let held = |i: usize| {
        c.node(i)
            .expect("runs")
            .query(&spec)
            .expect("valid")
            .is_some_and(|s| !s.publications.is_empty())
    };
    wait_until("the TLS client's instance on every node", || {
        (0..3).all(held)
    })
    .await;
    // Its standard input closed, the client exits; its connection, and instance, go.
    drop(child.stdin.take());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("reap the client");
    let all = text(out.status, &lines.join("\n"), &out.stderr);
    println!("with the CA: {all}");
    assert!(out.status.success(), "{all}");
    wait_until("the TLS client's instance gone from every node", || {
        !(0..3).any(held)
    })
    .await;

    // The same client without the CA: the node's certificate is not trusted.
    let mut cmd = client(&bin, &servers, "tls-sdk", "10.0.7.2:9000", None);
    cmd.stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run the TLS client");
    let all = text(
        out.status,
        &String::from_utf8_lossy(&out.stdout),
        &out.stderr,
    );
    println!("without the CA: {all}");
    assert!(!out.status.success(), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sdk-tls: connect"), "{all}");
    // The SDK's log says why.
    assert!(
        stderr.contains("invalid peer certificate: UnknownIssuer"),
        "{all}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("registered"),
        "{all}"
    );
    c.shutdown().await;
    std::fs::remove_dir_all(&dir).expect("clean up");
}
