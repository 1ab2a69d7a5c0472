//! Before a run against `--targets`: every target's SDK port must accept a connection.
//!
//! Without this check an unreachable target shows up as failed connections, retries and
//! a run that goes on against nothing. A TCP connect to each SDK port (main + 1000) with a
//! short deadline ends the run in a moment with a message naming the address, the port
//! and the target (numbered from 1, as everywhere else). With `--tls-ca` the check goes on
//! to a TLS handshake (ALPN h2) on that connection, so that a wrong CA, an expired
//! certificate or a plaintext target ends the run at once with the reason.

use std::io::ErrorKind;
use std::time::Duration;

use crate::protocol::Context;

/// The longest a single target may take to accept a connection.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(3);

/// Fails with a clear message when some target's SDK port does not accept a TCP
/// connection within `min(ctx.timeout, CONNECT_DEADLINE)`.
pub async fn check_reachable(ctx: &Context) -> anyhow::Result<()> {
    let deadline = ctx.timeout.min(CONNECT_DEADLINE);
    for (i, target) in ctx.targets.iter().enumerate() {
        let sdk = ctx.sdk_target(i);
        let why = match tokio::time::timeout(deadline, tokio::net::TcpStream::connect(&sdk)).await {
            Ok(Ok(tcp)) => match &ctx.tls {
                None => continue,
                Some(tls) => match check_tls(tls, tcp, target, deadline).await {
                    Ok(()) => continue,
                    Err(why) => anyhow::bail!(
                        "TLS to {sdk} failed (the SDK port of target {}, {target}): {why}",
                        i + 1
                    ),
                },
            },
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
                "connection refused".to_owned()
            }
            Ok(Err(e)) => format!("cannot connect ({e})"),
            Err(_) => format!("no answer within {:.1} s", deadline.as_secs_f64()),
        };
        anyhow::bail!(
            "{why} to {sdk} (the SDK port of target {}, {target}; the SDK port is the \
             target's port + 1000)",
            i + 1
        );
    }
    Ok(())
}

/// A TLS handshake with `target`'s SDK port on `tcp`; the reason when it fails.
async fn check_tls(
    tls: &crate::tls::TargetTls,
    tcp: tokio::net::TcpStream,
    target: &str,
    deadline: Duration,
) -> Result<(), String> {
    let host = crate::tls::host_of(target);
    match tokio::time::timeout(deadline, tls.connect(tcp, host)).await {
        Ok(Ok(s)) if s.get_ref().1.alpn_protocol() == Some(b"h2") => Ok(()),
        Ok(Ok(_)) => Err("TLS without HTTP/2 (the server did not agree to ALPN h2)".to_owned()),
        Ok(Err(e)) => Err(crate::tls::explain(&e)),
        Err(_) => Err(format!(
            "no TLS handshake within {:.1} s (is the target serving TLS?)",
            deadline.as_secs_f64()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::population::Population;

    fn ctx(targets: Vec<String>) -> Context {
        Context {
            targets,
            population: Arc::new(Population::new(1, 1, 1, 1, 0).expect("population")),
            lanes: 1,
            timeout: Duration::from_secs(5),
            query_batch: 1,
            tls: None,
            etcd_lease: Default::default(),
            zk_sessions: Default::default(),
        }
    }

    /// A port nothing listens on: bound, then closed.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn a_refused_sdk_port_names_the_address_and_the_target() {
        // Target 2's SDK port (main + 1000) is closed; target 1's accepts.
        let open = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open_sdk = open.local_addr().expect("addr").port();
        let closed_sdk = closed_port();
        let main = |sdk: u16| format!("127.0.0.1:{}", sdk - 1000);
        let c = ctx(vec![main(open_sdk), main(closed_sdk)]);
        let err = check_reachable(&c).await.expect_err("target 2 is closed");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "connection refused to 127.0.0.1:{closed_sdk} (the SDK port of target 2, "
            )),
            "{msg}"
        );
        check_reachable(&ctx(vec![main(open_sdk)]))
            .await
            .expect("an open port passes");
    }
}
