//! Before a run against `--targets`: every target's SDK port must accept a connection.
//!
//! Without this check an unreachable target shows up as failed connections, retries and
//! a run that goes on against nothing. A TCP connect to each SDK port (main + 1000) with a
//! short deadline ends the run in a moment with a message naming the address, the port
//! and the target (numbered from 1, as everywhere else).

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
            Ok(Ok(_)) => continue,
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
