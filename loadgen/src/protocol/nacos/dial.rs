//! Opening one TCP connection per simulated client, from many source addresses.
//!
//! One source IP has about 28,000 ephemeral ports (`ip_local_port_range` 32768–60999), so
//! on loopback the [`Dialer`] spreads connections over `127.0.0.2`, `127.0.0.3`, … (every
//! address of 127.0.0.0/8 is local on Linux): connection `i` binds source
//! `sources[i % n]` and, if that address is out of ports (`EADDRINUSE`,
//! `EADDRNOTAVAIL`), the next ones. Against a non-loopback server the OS picks the source
//! unless addresses are given.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// Source addresses used for loopback targets by default: 127.0.0.2 ..= 127.0.0.17, room
/// for some 450,000 connections.
pub const DEFAULT_LOOPBACK_SOURCES: usize = 16;

/// How client connections pick their source address.
#[derive(Debug, Clone)]
pub struct Dialer {
    sources: Arc<[IpAddr]>,
    connect_timeout: Duration,
}

impl Dialer {
    /// Sources chosen for `target`: [`DEFAULT_LOOPBACK_SOURCES`] addresses from 127.0.0.2
    /// when it is an IPv4 loopback address, none (the OS chooses) otherwise.
    pub fn for_target(target: IpAddr, connect_timeout: Duration) -> Self {
        let sources = match target {
            IpAddr::V4(v4) if v4.is_loopback() => loopback_sources(DEFAULT_LOOPBACK_SOURCES),
            _ => Vec::new(),
        };
        Self::with_sources(sources, connect_timeout)
    }

    /// Binds the given source addresses in turn (none: the OS chooses).
    pub fn with_sources(sources: Vec<IpAddr>, connect_timeout: Duration) -> Self {
        Self {
            sources: sources.into(),
            connect_timeout,
        }
    }

    /// The source addresses in use.
    pub fn sources(&self) -> &[IpAddr] {
        &self.sources
    }

    /// Connects to `target` for connection number `index`, with `TCP_NODELAY`.
    pub async fn dial(&self, target: SocketAddr, index: usize) -> io::Result<TcpStream> {
        let stream = tokio::time::timeout(self.connect_timeout, self.dial_inner(target, index))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TCP connection within {:?}", self.connect_timeout),
                )
            })??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn dial_inner(&self, target: SocketAddr, index: usize) -> io::Result<TcpStream> {
        if self.sources.is_empty() {
            return TcpStream::connect(target).await;
        }
        let n = self.sources.len();
        let mut last = None;
        for k in 0..n {
            let source = self.sources[(index + k) % n];
            match connect_from(source, target).await {
                Ok(s) => return Ok(s),
                Err(e) if out_of_ports(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no source address")))
    }
}

/// `n` loopback addresses from 127.0.0.2.
pub fn loopback_sources(n: usize) -> Vec<IpAddr> {
    (0..n.min(250))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
        .collect()
}

fn out_of_ports(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
    )
}

async fn connect_from(source: IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spreads_connections_over_loopback_sources() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("addr");
        let dialer = Dialer::for_target(target.ip(), Duration::from_secs(5));
        assert_eq!(dialer.sources().len(), DEFAULT_LOOPBACK_SOURCES);
        let mut seen = Vec::new();
        for i in 0..3 {
            let s = dialer.dial(target, i).await.expect("connects");
            let (_, peer) = listener.accept().await.expect("accepts");
            assert_eq!(peer, s.local_addr().expect("local"));
            seen.push(peer.ip());
        }
        assert_eq!(seen, loopback_sources(3));
        let remote = Dialer::for_target("10.1.2.3".parse().expect("ip"), Duration::from_secs(1));
        assert!(remote.sources().is_empty());
    }
}
