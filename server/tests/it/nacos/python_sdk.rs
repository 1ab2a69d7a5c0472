//! The real Python SDK (nacos-sdk-python 3.x) against a 3-node `LocalCluster`: the Java
//! handshake order with an ability table (so `SetupAckRequest` matters), pydantic's
//! strict parsing of every reply, and its register, subscribe, query and service list.
//!
//! The SDK is not a Rust crate: the test runs `server/tests/python/nacos_sdk.py` with the
//! Python named by `DISTRO_NACOS_PYTHON`, which `.ci/test` sets after installing the SDK
//! from PyPI into `target/nacos-python`. Without that variable the test says so and does
//! nothing (a developer machine need not have Python).

use crate::cluster::{cluster, fast_config};
use std::time::Duration;

/// The Python interpreter that has `nacos-sdk-python` 3.x installed.
const PYTHON: &str = "DISTRO_NACOS_PYTHON";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_registers_subscribes_and_queries_across_three_nodes() {
    let Ok(python) = std::env::var(PYTHON) else {
        println!("SKIPPED: {PYTHON} is not set (.ci/test sets it after pip install)");
        return;
    };
    let c = cluster(3, fast_config()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/nacos_sdk.py");
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .args([0, 2, 1].map(|i| c.http_addr(i).to_string()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the Python interpreter");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for the script").is_none() {
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Python SDK script did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().expect("the script's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PYTHON-SDK-OK"),
        "the Python SDK script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    c.shutdown().await;
}
