//! Network faults: iptables rules that cut one loopback address off, and a TCP proxy
//! that delays every byte it forwards.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Whether this process runs as root (iptables needs it).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| {
            format!("cannot run iptables ({e}); install it: apt-get install -y iptables")
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A chain of DROP rules of this test process, jumped to from `INPUT`; removed on drop.
pub(crate) struct Firewall {
    chain: String,
}

impl Firewall {
    /// Creates the chain (needs root and iptables).
    pub(crate) fn new() -> Result<Firewall, String> {
        let chain = format!("DISTRO_FAULTS_{}", std::process::id());
        let _ = iptables(&["-D", "INPUT", "-j", &chain]);
        let _ = iptables(&["-F", &chain]);
        let _ = iptables(&["-X", &chain]);
        iptables(&["-N", &chain])?;
        iptables(&["-I", "INPUT", "1", "-j", &chain])?;
        Ok(Firewall { chain })
    }

    /// Drops every packet between `victim` and each of `others`, both ways.
    pub(crate) fn isolate(&self, victim: Ipv4Addr, others: &[Ipv4Addr]) -> Result<(), String> {
        let v = victim.to_string();
        for o in others {
            let o = o.to_string();
            iptables(&["-A", &self.chain, "-s", &v, "-d", &o, "-j", "DROP"])?;
            iptables(&["-A", &self.chain, "-s", &o, "-d", &v, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Removes every rule.
    pub(crate) fn heal(&self) -> Result<(), String> {
        iptables(&["-F", &self.chain])
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = iptables(&["-D", "INPUT", "-j", &self.chain]);
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}

/// A TCP proxy that holds every chunk it forwards, both ways, for a settable delay.
pub(crate) struct DelayProxy {
    delay_ms: Arc<AtomicU64>,
    /// Bytes forwarded, both ways.
    pub(crate) bytes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl DelayProxy {
    /// Forwards connections accepted on `listener` to `upstream`.
    pub(crate) fn start(listener: TcpListener, upstream: SocketAddr) -> DelayProxy {
        let delay_ms = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (d, b) = (delay_ms.clone(), bytes.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (d, b) = (d.clone(), b.clone());
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    let a = tokio::spawn(pipe(dr, uw, d.clone(), b.clone()));
                    let c = tokio::spawn(pipe(ur, dw, d, b));
                    let _ = tokio::join!(a, c);
                });
            }
        });
        DelayProxy {
            delay_ms,
            bytes,
            task,
        }
    }

    /// Sets the delay of chunks read from now on.
    pub(crate) fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Relaxed);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `r` to `w`, each chunk held until its read time plus the delay (a delay line:
/// latency without a throughput cap).
async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                bytes.fetch_add(n as u64, Relaxed);
                let due = Instant::now() + Duration::from_millis(delay_ms.load(Relaxed));
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
