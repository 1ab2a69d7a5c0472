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
        nacos: Some(Arc::new(nacos)),
        name: "SDK",
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

/// A stream whose DATA waits for window is listed once however often it is flushed; the
/// places of removed streams are swept once they are most of the list (no change of a
/// stream searches the list); a window update writes a listed stream's DATA.
#[tokio::test]
async fn streams_waiting_for_window_are_listed_once_and_swept_when_gone() {
    let mut c = conn();
    let ids: Vec<u32> = (1..=99).step_by(2).collect();
    for &id in &ids {
        let mut s = Stream::new(Recv::Answered, 0);
        s.pending = bytes::Bytes::from_static(b"data");
        c.streams.insert(id, s);
        c.flush(id);
        c.flush(id);
    }
    c.last_stream = 99;
    assert_eq!(c.blocked, ids);
    // 40 of the 50 go: a sweep after the 26th leaves 24 places, then 14 more go.
    for &id in &ids[..40] {
        c.remove(id);
    }
    assert_eq!(c.blocked.len(), 24, "{:?}", c.blocked);
    assert_eq!(c.blocked_gone, 14);
    // A window update on a listed stream writes its DATA and does not list it again.
    let out = c.out.len();
    c.on_window_update(81, 100).expect("a valid update");
    assert!(c.streams[&81].pending.is_empty());
    assert!(c.out.len() > out);
    assert_eq!(c.blocked.len(), 24);
    // The connection's window opening resumes what is listed and empties the list.
    for &id in &ids[41..] {
        c.streams.get_mut(&id).expect("held").send_window = 100;
    }
    c.on_window_update(0, 100).expect("a valid update");
    assert!(c.blocked.is_empty());
    assert_eq!(c.blocked_gone, 0);
    assert!(ids[40..].iter().all(|id| c.streams[id].pending.is_empty()));
}
