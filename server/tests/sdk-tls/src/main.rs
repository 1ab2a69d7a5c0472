//! A Nacos application over TLS, for server/tests/it/nacos/sdk_tls.rs: the `nacos-sdk`
//! crate built with its `tls` feature (https to the SDK port, trusting the PEM CA file that
//! `NACOS_CLIENT_TLS_CA_CERT` names) subscribes to a service, registers one instance in
//! it, waits for the push that lists it, queries it, and exits.
//!
//! Usage: `sdk-tls SERVERS SERVICE IP:PORT` (SERVERS: main ports, comma-separated; the SDK
//! adds 1000 for gRPC). Prints one line per step on stdout (`connected`, `registered`,
//! `pushed ADDRS`, `queried ADDRS`), then keeps its registration (held by its connection)
//! until its standard input ends. On failure, `sdk-tls: STEP: ERROR` on stderr and exit
//! status 1; a step not done within 30 s is a failure too.

use anyhow::{Context as _, bail};
use nacos_sdk::api::naming::{
    NamingChangeEvent, NamingEventListener, NamingService, NamingServiceBuilder, ServiceInstance,
};
use nacos_sdk::api::props::ClientProps;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long one step may take.
const STEP: Duration = Duration::from_secs(30);

struct Pushes(mpsc::UnboundedSender<Vec<ServiceInstance>>);

impl NamingEventListener for Pushes {
    fn event(&self, e: Arc<NamingChangeEvent>) {
        let _ = self.0.send(e.instances.clone().unwrap_or_default());
    }
}

fn addrs(v: &[ServiceInstance]) -> String {
    let mut a: Vec<String> = v.iter().map(ServiceInstance::ip_and_port).collect();
    a.sort();
    a.join(",")
}

/// Runs `f` as step `what`: its error, or a time-out, says which step failed.
async fn step<T>(
    what: &str,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(STEP, f).await {
        Ok(r) => r.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: not done within {STEP:?}"),
    }
}

async fn run(servers: &str, service: &str, inst: &str) -> anyhow::Result<()> {
    let (ip, port) = inst.rsplit_once(':').context("IP:PORT")?;
    let port: i32 = port.parse().context("IP:PORT: the port")?;
    let cache = std::env::temp_dir().join(format!("distro-sdk-tls-{}", std::process::id()));
    let props = ClientProps::new()
        .server_addr(servers)
        .namespace("")
        .app_name("distro-sdk-tls")
        .env_first(false)
        .cache_dir(cache.clone());
    let naming: NamingService = step("connect", async {
        Ok(NamingServiceBuilder::new(props).build().await?)
    })
    .await?;
    println!("connected");
    let (tx, mut rx) = mpsc::unbounded_channel();
    step("subscribe", async {
        Ok(naming
            .subscribe(service.into(), None, vec![], Arc::new(Pushes(tx)))
            .await?)
    })
    .await?;
    let me = ServiceInstance {
        ip: ip.into(),
        port,
        ..Default::default()
    };
    step("register", async {
        Ok(naming.register_instance(service.into(), None, me).await?)
    })
    .await?;
    println!("registered");
    let pushed = step("push", async {
        loop {
            let got = rx.recv().await.context("the listener is gone")?;
            if got.iter().any(|i| i.ip_and_port() == inst) {
                return Ok(got);
            }
        }
    })
    .await?;
    println!("pushed {}", addrs(&pushed));
    let queried = step("query", async {
        Ok(naming
            .get_all_instances(service.into(), None, vec![], false)
            .await?)
    })
    .await?;
    println!("queried {}", addrs(&queried));
    // The instance lives as long as this connection: hold it until told to go.
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await
        .context("stdin")?
        .context("stdin")?;
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [servers, service, inst] = args.as_slice() else {
        eprintln!("usage: sdk-tls SERVERS SERVICE IP:PORT");
        return ExitCode::from(2);
    };
    match run(servers, service, inst).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdk-tls: {e:#}");
            ExitCode::FAILURE
        }
    }
}
