//! `--members-dns NAME:PORT`: the member list from every address a DNS name resolves to
//! (what a Kubernetes headless Service, or a container network alias shared by the
//! nodes, gives).
//!
//! The name is first resolved when the node starts. Nodes of one cluster usually start
//! together and appear in DNS one by one, so the resolution is repeated (every 500 ms)
//! until it returns at least `expect` addresses, one of them this machine's, or until
//! `timeout` passes; then the node starts with what the name gave last. While the node
//! runs, the name is resolved again periodically and the member list follows it
//! (`distro_server::cluster::members_watch`). With `--members-dns-server` the name is
//! asked of that server (`distro_server::cluster::dns_query`), not the system's resolver.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Pause between two resolutions while waiting.
const RETRY: Duration = Duration::from_millis(500);

/// Resolves `spec` (NAME:PORT) into sorted, deduplicated `ip:port` member entries,
/// waiting up to `timeout` for `expect` of them, one of them local (`is_local`); asks
/// `server` when given.
pub(crate) fn resolve_members(
    spec: &str,
    server: Option<SocketAddr>,
    expect: usize,
    timeout: Duration,
    is_local: impl Fn(&SocketAddr) -> bool,
) -> anyhow::Result<Vec<String>> {
    let (host, port) = spec
        .rsplit_once(':')
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--members-dns {spec:?} is not NAME:PORT"))?;
    let port: u16 =
        port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            anyhow::anyhow!("--members-dns {spec:?}: port {port:?} is not 1-65535")
        })?;
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    let mut found: Vec<SocketAddr> = Vec::new();
    loop {
        let resolved: Result<Vec<SocketAddr>, String> = match server {
            None => (host, port)
                .to_socket_addrs()
                .map(Iterator::collect)
                .map_err(|e| e.to_string()),
            Some(_) if host.parse::<std::net::IpAddr>().is_ok() => (host, port)
                .to_socket_addrs()
                .map(Iterator::collect)
                .map_err(|e| e.to_string()),
            Some(s) => distro_server::cluster::dns_query::query_a_blocking(s, host).map(|ips| {
                ips.into_iter()
                    .map(|ip| SocketAddr::from((ip, port)))
                    .collect()
            }),
        };
        match resolved {
            Ok(addrs) => {
                found = addrs;
                found.sort();
                found.dedup();
                if found.len() >= expect && found.iter().any(&is_local) {
                    break;
                }
            }
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(RETRY);
    }
    if found.is_empty() {
        let why = last_error.unwrap_or_else(|| "no address".to_string());
        anyhow::bail!("--members-dns {spec}: the name did not resolve within {timeout:?}: {why}");
    }
    if found.len() < expect {
        tracing::warn!(
            name = spec,
            found = found.len(),
            expect,
            "--members-dns: fewer addresses than --members-dns-expect; starting with those"
        );
    }
    Ok(found.iter().map(SocketAddr::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_resolves_to_loopback_entries() {
        let m = resolve_members("localhost:8848", None, 1, Duration::from_secs(5), |a| {
            a.ip().is_loopback()
        })
        .unwrap();
        assert!(!m.is_empty());
        assert!(m.iter().all(|a| a.ends_with(":8848")), "{m:?}");
        let mut sorted = m.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), m.len(), "deduplicated: {m:?}");
    }

    #[test]
    fn bad_specs_name_the_flag_and_the_reason() {
        for (spec, why) in [
            ("no-port", "NAME:PORT"),
            (":8848", "NAME:PORT"),
            ("host:0", "1-65535"),
            ("host:http", "1-65535"),
        ] {
            let e = resolve_members(spec, None, 1, Duration::ZERO, |_| true).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("--members-dns") && msg.contains(why),
                "{spec}: {msg}"
            );
        }
    }

    #[test]
    fn a_name_that_does_not_resolve_is_an_error_after_the_timeout() {
        let e = resolve_members("no-such-host.invalid:8848", None, 1, Duration::ZERO, |_| {
            true
        })
        .unwrap_err();
        assert!(e.to_string().contains("did not resolve"), "{e}");
    }
}
