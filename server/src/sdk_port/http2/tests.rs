//! Unit tests of the connection state that need no socket (the wire tests are in
//! `server/tests/it/nacos/wire*.rs`).

use super::{Conn, Recv, Stream};
use crate::nacos::{NacosConfig, NacosFrontend};
use crate::sdk_port::Inner;
use crate::sdk_port::bridge::Woken;
use distro_core::{Config, MemberList, Node};
use std::sync::Arc;
use std::task::Waker;
use tonic::transport::server::TcpConnectInfo;

fn conn() -> Conn {
    let node = Node::new(
        Config::default(),
        MemberList::new("127.0.0.1:8848", &[]).expect("a member list"),
        1,
    )
    .expect("a node");
    let nacos = NacosFrontend::new(
        Arc::new(node),
        NacosConfig::default(),
        crate::clock::system(),
    )
    .expect("a front end");
    let inner = Arc::new(Inner {
        max_message_bytes: 1 << 20,
        nacos: Arc::new(nacos),
        routes: tonic::service::Routes::default(),
        bridged: Vec::new(),
        keep_alive_interval: std::time::Duration::from_secs(30),
        keep_alive_timeout: std::time::Duration::from_secs(20),
        tls: None,
    });
    let info = TcpConnectInfo {
        local_addr: None,
        remote_addr: None,
    };
    Conn::new(inner, info, Woken::new(Waker::noop().clone()))
}

/// Bridged streams are polled in the order they were queued, leftovers first, each
/// once: not by stream id (a busy low id would starve the others).
#[tokio::test]
async fn bridged_streams_are_polled_in_queue_order_not_by_id() {
    let mut c = conn();
    for id in [5, 1, 3, 7] {
        c.streams.insert(id, Stream::new(Recv::Answered, 65_535));
    }
    for id in [5, 1, 3, 1, 5] {
        c.queue(id);
    }
    assert_eq!(c.to_poll, [5, 1, 3]);
    // No room in the output: nothing polled; a stream woken meanwhile goes last.
    c.limit = 0;
    c.woken.waker(7).wake_by_ref();
    c.woken.waker(1).wake_by_ref();
    c.poll_bridged();
    assert_eq!(c.to_poll, [5, 1, 3, 7]);
}
