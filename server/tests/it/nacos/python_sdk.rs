//! The real Python SDK (nacos-sdk-python 3.x) against a 3-node `LocalCluster`: the Java
//! handshake order with an ability table (so `SetupAckRequest` matters), pydantic's
//! strict parsing of every reply, and its register, subscribe, query and service list;
//! with auth on and credentials; over TLS with the CA, and refused without it.
//!
//! The SDK is not a Rust crate: the test runs `server/tests/python/nacos_sdk.py` with the
//! Python named by `DISTRO_NACOS_PYTHON`, which `.ci/test` sets after installing the SDK
//! from PyPI into `target/nacos-python` (without the variable, that venv is used if it is
//! there). Without an interpreter the test fails: it skips only when asked to, with
//! `DISTRO_SKIP_PYTHON_SDK=1` (a developer machine need not have Python; CI refuses it).

use crate::cluster::{cluster, fast_config};
use std::time::Duration;

/// The Python interpreter that has `nacos-sdk-python` 3.x installed.
const PYTHON: &str = "DISTRO_NACOS_PYTHON";
/// Set to `1` to skip this test on a machine without Python.
const SKIP: &str = "DISTRO_SKIP_PYTHON_SDK";
/// Where `.ci/test` installs the SDK.
const VENV_PYTHON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/nacos-python/bin/python"
);

/// The interpreter to run, or `None` when the test is to be skipped; panics with what to
/// do when there is neither.
fn python() -> Option<String> {
    match std::env::var(SKIP).as_deref() {
        Ok("1") => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{SKIP}=1 is for a local run: with CI=true the Python SDK test must run"
            );
            println!("SKIPPED: {SKIP}=1 asks to skip the Python SDK test");
            return None;
        }
        Ok("" | "0") | Err(_) => {}
        Ok(other) => panic!("{SKIP}={other:?}: give 1 to skip the Python SDK test, or unset it"),
    }
    if let Ok(p) = std::env::var(PYTHON) {
        return Some(p);
    }
    if std::path::Path::new(VENV_PYTHON).exists() {
        return Some(VENV_PYTHON.to_string());
    }
    panic!(
        "no Python with nacos-sdk-python: {PYTHON} is not set and {VENV_PYTHON} does not \
         exist. Run `bash .ci/test` (it installs the SDK into target/nacos-python and \
         says why if it cannot), set {PYTHON} to a Python that has nacos-sdk-python 3.x, \
         or set {SKIP}=1 to skip this test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_registers_subscribes_and_queries_across_three_nodes() {
    let Some(python) = python() else {
        return;
    };
    let c = cluster(3, fast_config()).await;
    run_script(&python, &c, None).await;
    c.shutdown().await;
}

/// The same with auth on: every client logs in as `app` (read-write on
/// `public:DEFAULT_GROUP:*`), on a random node, and uses its token on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_with_credentials_works_on_a_cluster_with_auth() {
    let Some(python) = python() else {
        return;
    };
    let mut config = fast_config();
    config.auth = Some(crate::nacos::auth::test_auth());
    let c = cluster(3, config).await;
    run_script(&python, &c, Some("app:app-pw")).await;
    c.shutdown().await;
}

/// Runs the script against `c` (A on node 0, B on node 2, C on node 1), with
/// `credentials` (`user:password`) when given; panics with its output when it fails.
async fn run_script(python: &str, c: &distro_server::LocalCluster, credentials: Option<&str>) {
    let mut args: Vec<String> = [0, 2, 1].map(|i| c.http_addr(i).to_string()).into();
    args.extend(credentials.map(str::to_string));
    let (ok, stdout, stderr) = script(python, &args, &[]).await;
    assert!(
        ok && stdout.contains("PYTHON-SDK-OK"),
        "the Python SDK script failed:\n{stdout}\n{stderr}"
    );
}

/// Runs the script with `args` and the environment variables `env`, within 60 s: whether
/// it exited 0, its stdout and stderr.
async fn script(python: &str, args: &[String], env: &[(&str, String)]) -> (bool, String, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/nacos_sdk.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
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
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = format!("{}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout, stderr)
}

/// Over TLS (the nodes with `--tls-cert`/`--tls-key`, certificates made here): the script
/// with the test CA (and the client certificate and key the SDK insists on opening) passes
/// every check; a client trusting another CA, and one without TLS, are refused, the first
/// with gRPC's `CERTIFICATE_VERIFY_FAILED` in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_tls_works_with_the_ca_and_is_refused_without_it() {
    use crate::tls::{ca, leaf};
    let Some(python) = python() else {
        return;
    };
    let good = ca("distro test CA");
    let (cert, key) = leaf(&good, false);
    let mut config = fast_config();
    config.http_tls = Some(distro_server::tls::HttpTls::from_pem(&cert, &key).expect("valid PEM"));
    let c = cluster(3, config).await;
    let dir = std::env::temp_dir().join(format!("distro-py-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("utf-8").to_string()
    };
    let other = ca("another CA");
    let (client_cert, client_key) = leaf(&good, false);
    let (good_ca, other_ca, cert_f, key_f) = (
        write("ca.pem", &good.pem),
        write("other-ca.pem", &other.pem),
        write("client.pem", &client_cert),
        write("client.key", &client_key),
    );
    let tls = |ca: &str| {
        [
            ("DISTRO_PY_TLS_CA", ca.to_string()),
            ("DISTRO_PY_TLS_CERT", cert_f.clone()),
            ("DISTRO_PY_TLS_KEY", key_f.clone()),
            // gRPC's own log on stderr: it says why a handshake failed.
            ("GRPC_VERBOSITY", "INFO".to_string()),
        ]
    };
    let args: Vec<String> = [0, 2, 1].map(|i| c.http_addr(i).to_string()).into();
    let (ok, stdout, stderr) = script(&python, &args, &tls(&good_ca)).await;
    assert!(
        ok && stdout.contains("PYTHON-SDK-OK"),
        "the Python SDK script over TLS failed:\n{stdout}\n{stderr}"
    );

    let refused = vec!["--refused".to_string(), c.http_addr(1).to_string()];
    let (ok, stdout, stderr) = script(&python, &refused, &tls(&other_ca)).await;
    println!("trusting another CA: {stdout}");
    assert!(
        ok && stdout.contains("PYTHON-SDK-REFUSED"),
        "a client trusting another CA:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("CERTIFICATE_VERIFY_FAILED"),
        "gRPC's log says why:\n{stderr}"
    );
    let (ok, stdout, stderr) = script(&python, &refused, &[]).await;
    println!("without TLS: {stdout}");
    assert!(
        ok && stdout.contains("PYTHON-SDK-REFUSED"),
        "a client without TLS:\n{stdout}\n{stderr}"
    );
    // Neither refused client's instance got in.
    let spec = distro_core::ServiceSpec::new("", "", "py-orders");
    for i in 0..3 {
        let view = c.node(i).expect("runs").query(&spec).expect("valid");
        let clients: Vec<String> = view
            .iter()
            .flat_map(|v| v.publications.iter())
            .map(|p| format!("{p:?}"))
            .collect();
        assert!(
            clients.iter().all(|p| !p.contains("10.0.8.9")),
            "node {i}: {clients:?}"
        );
    }
    c.shutdown().await;
    std::fs::remove_dir_all(&dir).expect("clean up");
}
