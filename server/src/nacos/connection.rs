//! SDK connections: one per TCP connection, keyed by the peer's socket address.
//!
//! Nacos assigns a connection id per TCP transport, `"<serverMillis>_<remoteIp>_<remotePort>"`,
//! and unary calls and the bi-stream of that transport share it (reference §4.2). Tonic
//! shows us the peer address of every call, so the [`ConnectionTable`] maps that address to
//! a [`Connection`]: created by whichever arrives first (a unary `ServerCheckRequest` or the
//! stream's `ConnectionSetupRequest`), *registered* when the setup arrives, and closed when
//! its stream ends, detection fails, or the front end shuts down.
//!
//! A connection is also the connection client of the core (same id). Writes for it run
//! inside [`Connection::while_registered`], and closing flips the state under the same lock
//! first, so no write can land after the close removed the client.
//!
//! This file holds state only; the protocol lives in `handler.rs` and `stream.rs`.

use crate::proto::nacos::Payload;
use distro_core::ClientId;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tonic::Status;

/// The sending half of a connection's bi-stream.
pub(crate) type Outbound = mpsc::Sender<Result<Payload, Status>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Known (a `ServerCheckRequest` arrived) but no setup yet.
    Pending,
    /// Set up on a stream: requests are served.
    Registered,
    /// Gone; nothing is served any more.
    Closed,
}

/// One SDK connection.
pub(crate) struct Connection {
    /// Unique within the process, never reused.
    pub(crate) serial: u64,
    /// The connection client of the core; its id is the Nacos connection id.
    pub(crate) client: ClientId,
    /// The peer.
    pub(crate) addr: SocketAddr,
    created: Instant,
    state: RwLock<State>,
    /// The stream generation that set the connection up, and its sending half.
    outbound: Mutex<Option<(u64, Outbound)>>,
    /// Last activity, in milliseconds since the table's epoch.
    last_active: AtomicU64,
    /// A `ClientDetectionRequest` is outstanding.
    pub(crate) probing: AtomicBool,
    acks: Mutex<HashMap<Box<str>, oneshot::Sender<bool>>>,
    /// Pushes in a row that were not acknowledged.
    push_failures: AtomicU32,
    subscriptions: Mutex<HashSet<Arc<str>>>,
    closed: watch::Sender<bool>,
}

impl Connection {
    /// The Nacos connection id.
    pub(crate) fn id(&self) -> &str {
        self.client.as_str()
    }

    /// Whether the connection was set up and is not closed.
    pub(crate) fn is_registered(&self) -> bool {
        *self.state.read() == State::Registered
    }

    /// Runs `f` if the connection is registered, holding off a concurrent close until `f`
    /// returns (so a write cannot outlive the close). `None` if not registered.
    pub(crate) fn while_registered<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let state = self.state.read();
        (*state == State::Registered).then(f)
    }

    /// Registers the connection on stream `generation`. `None` if it was closed meanwhile,
    /// otherwise whether this is its first registration.
    pub(crate) fn register(&self, generation: u64, outbound: Outbound) -> Option<bool> {
        let mut state = self.state.write();
        let first = match *state {
            State::Closed => return None,
            State::Pending => true,
            State::Registered => false,
        };
        *state = State::Registered;
        *self.outbound.lock() = Some((generation, outbound));
        Some(first)
    }

    /// Whether stream `generation` is the one the connection is set up on.
    pub(crate) fn is_current_stream(&self, generation: u64) -> bool {
        self.outbound
            .lock()
            .as_ref()
            .is_some_and(|(g, _)| *g == generation)
    }

    /// Marks the connection closed, ends its stream and fails its outstanding acks.
    /// `None` if it was already closed (closing is idempotent), otherwise whether it had
    /// been registered.
    pub(crate) fn mark_closed(&self) -> Option<bool> {
        let was_registered = {
            let mut state = self.state.write();
            let was = match *state {
                State::Closed => return None,
                State::Pending => false,
                State::Registered => true,
            };
            *state = State::Closed;
            was
        };
        self.outbound.lock().take();
        self.acks.lock().clear();
        self.closed.send_replace(true);
        Some(was_registered)
    }

    /// A receiver that turns `true` when the connection closes.
    pub(crate) fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Queues a server→client message; `false` if the stream is gone or its queue is full.
    pub(crate) fn send(&self, payload: Payload) -> bool {
        let tx = self.outbound.lock().as_ref().map(|(_, tx)| tx.clone());
        tx.is_some_and(|tx| tx.try_send(Ok(payload)).is_ok())
    }

    /// Registers interest in the client's answer to request `request_id`.
    pub(crate) fn expect_ack(&self, request_id: &str) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        self.acks.lock().insert(request_id.into(), tx);
        rx
    }

    /// Forgets request `request_id` (timed out or never sent).
    pub(crate) fn forget_ack(&self, request_id: &str) {
        self.acks.lock().remove(request_id);
    }

    /// Delivers the client's answer to `request_id`; `false` if nobody waits for it.
    pub(crate) fn ack(&self, request_id: &str, success: bool) -> bool {
        match self.acks.lock().remove(request_id) {
            Some(tx) => tx.send(success).is_ok(),
            None => false,
        }
    }

    /// Counts a push that was not acknowledged; returns how many in a row now.
    pub(crate) fn push_failed(&self) -> u32 {
        self.push_failures.fetch_add(1, Relaxed).saturating_add(1)
    }

    /// Counts an acknowledged push: the run of failures ends.
    pub(crate) fn push_acked(&self) {
        self.push_failures.store(0, Relaxed);
    }

    /// Records activity at `now_ms` (milliseconds since the table's epoch).
    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_active.fetch_max(now_ms, Relaxed);
    }

    /// Milliseconds without activity at `now_ms`.
    pub(crate) fn idle_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_active.load(Relaxed))
    }

    /// When the connection was first seen.
    pub(crate) fn created(&self) -> Instant {
        self.created
    }

    /// Adds `key` to the subscriptions unless that would exceed `max`; returns whether the
    /// subscription is new, or `Err(count)` when the limit is reached.
    pub(crate) fn add_subscription(&self, key: &Arc<str>, max: usize) -> Result<bool, usize> {
        let mut subs = self.subscriptions.lock();
        if subs.contains(key) {
            return Ok(false);
        }
        if subs.len() >= max {
            return Err(subs.len());
        }
        subs.insert(key.clone());
        Ok(true)
    }

    /// Removes `key` from the subscriptions; whether it was there.
    pub(crate) fn remove_subscription(&self, key: &str) -> bool {
        self.subscriptions.lock().remove(key)
    }

    /// Takes every subscription (on close).
    pub(crate) fn take_subscriptions(&self) -> Vec<Arc<str>> {
        self.subscriptions.lock().drain().collect()
    }

    /// Number of subscriptions.
    #[cfg(test)]
    pub(crate) fn subscription_count(&self) -> usize {
        self.subscriptions.lock().len()
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .field("addr", &self.addr)
            .field("state", &*self.state.read())
            .finish_non_exhaustive()
    }
}

/// Refusal to admit a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableFull {
    pub(crate) max: usize,
}

/// All connections of the front end.
pub(crate) struct ConnectionTable {
    by_addr: papaya::HashMap<SocketAddr, Arc<Connection>>,
    /// Addresses whose set-up connection the server closed, and when: a health check from
    /// one of them is answered 301 so the client reconnects (the TCP connection may well
    /// still be up after a failed detection).
    closed: papaya::HashMap<SocketAddr, Instant>,
    next_serial: AtomicU64,
    registered: AtomicUsize,
    epoch: Instant,
}

impl ConnectionTable {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self {
            by_addr: papaya::HashMap::new(),
            closed: papaya::HashMap::new(),
            next_serial: AtomicU64::new(1),
            registered: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the table was made (the clock of activity and idleness).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The connection of `addr`, if known.
    pub(crate) fn get(&self, addr: &SocketAddr) -> Option<Arc<Connection>> {
        self.by_addr.pin().get(addr).cloned()
    }

    /// The connection of `addr`, created with id `<wall_ms>_<ip>_<port>` if new; refused
    /// when `max` connections exist.
    pub(crate) fn get_or_create(
        &self,
        addr: SocketAddr,
        wall_ms: u64,
        max: usize,
    ) -> Result<Arc<Connection>, TableFull> {
        if let Some(c) = self.get(&addr) {
            return Ok(c);
        }
        if self.by_addr.len() >= max {
            return Err(TableFull { max });
        }
        self.closed.pin().remove(&addr);
        let by_addr = self.by_addr.pin();
        let entry = by_addr.get_or_insert_with(addr, || {
            let ip = addr.ip().to_canonical().to_string();
            let now = self.now_ms();
            Arc::new(Connection {
                serial: self.next_serial.fetch_add(1, Relaxed),
                client: ClientId::connection(wall_ms, &ip, addr.port()),
                addr,
                created: Instant::now(),
                state: RwLock::new(State::Pending),
                outbound: Mutex::new(None),
                last_active: AtomicU64::new(now),
                probing: AtomicBool::new(false),
                acks: Mutex::new(HashMap::new()),
                push_failures: AtomicU32::new(0),
                subscriptions: Mutex::new(HashSet::new()),
                closed: watch::channel(false).0,
            })
        });
        Ok(entry.clone())
    }

    /// Counts a registration (for the gauge).
    pub(crate) fn count_registered(&self) {
        self.registered.fetch_add(1, Relaxed);
    }

    /// Removes `conn` if it is still the entry of its address.
    pub(crate) fn remove(&self, conn: &Arc<Connection>) {
        let _ = self
            .by_addr
            .pin()
            .remove_if(&conn.addr, |_, c| Arc::ptr_eq(c, conn));
    }

    /// Remembers that the set-up connection of `addr` was closed.
    pub(crate) fn remember_closed(&self, addr: SocketAddr) {
        self.closed.pin().insert(addr, Instant::now());
    }

    /// Whether the set-up connection of `addr` was closed (and none replaced it).
    pub(crate) fn was_closed(&self, addr: &SocketAddr) -> bool {
        self.closed.pin().contains_key(addr)
    }

    /// Forgets closed addresses older than `age`.
    pub(crate) fn forget_closed(&self, age: std::time::Duration) {
        self.closed.pin().retain(|_, at| at.elapsed() < age);
    }

    /// Uncounts a registered connection that closed.
    pub(crate) fn count_unregistered(&self) {
        self.registered.fetch_sub(1, Relaxed);
    }

    /// Registered connections.
    pub(crate) fn registered(&self) -> usize {
        self.registered.load(Relaxed)
    }

    /// Known connections, registered or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// A snapshot of every connection.
    pub(crate) fn all(&self) -> Vec<Arc<Connection>> {
        self.by_addr.pin().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn one_connection_per_address_with_nacos_ids() {
        let t = ConnectionTable::new();
        let a = t.get_or_create(addr(5000), 1717000000000, 2).unwrap();
        assert_eq!(a.id(), "1717000000000_127.0.0.1_5000");
        let again = t.get_or_create(addr(5000), 9, 2).unwrap();
        assert!(
            Arc::ptr_eq(&a, &again),
            "the id is stable for the transport"
        );
        t.get_or_create(addr(5001), 1, 2).unwrap();
        assert_eq!(t.get_or_create(addr(5002), 1, 2).unwrap_err().max, 2);
        let v6 = SocketAddr::from(([0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0007], 80));
        let c = t.get_or_create(v6, 5, 10).unwrap();
        assert_eq!(c.id(), "5_10.0.0.7_80", "v4-mapped addresses read as v4");
    }

    #[tokio::test]
    async fn closing_fences_writes_and_fails_acks() {
        let t = ConnectionTable::new();
        let c = t.get_or_create(addr(1), 1, 10).unwrap();
        assert_eq!(c.while_registered(|| 1), None, "pending serves nothing");
        let (tx, mut rx) = mpsc::channel(4);
        assert_eq!(c.register(7, tx.clone()), Some(true));
        assert_eq!(c.register(7, tx), Some(false));
        assert!(c.is_current_stream(7) && !c.is_current_stream(8));
        assert_eq!(c.while_registered(|| 1), Some(1));
        let ack = c.expect_ack("1");
        assert!(c.send(Payload::default()));
        assert!(rx.recv().await.is_some());
        assert_eq!(c.mark_closed(), Some(true));
        assert_eq!(c.mark_closed(), None, "idempotent");
        assert!(ack.await.is_err(), "outstanding acks fail on close");
        assert_eq!(c.while_registered(|| 1), None);
        assert!(!c.send(Payload::default()));
        assert!(rx.recv().await.is_none(), "the stream ends");
        assert!(*c.closed_signal().borrow());
        let (tx, _rx) = mpsc::channel(1);
        assert_eq!(c.register(8, tx), None, "a closed connection stays closed");
        t.remove(&c);
        assert_eq!(t.len(), 0);
    }

    #[tokio::test]
    async fn subscriptions_are_bounded() {
        let t = ConnectionTable::new();
        let c = t.get_or_create(addr(1), 1, 10).unwrap();
        let k1: Arc<str> = "a".into();
        let k2: Arc<str> = "b".into();
        assert_eq!(c.add_subscription(&k1, 1), Ok(true));
        assert_eq!(c.add_subscription(&k1, 1), Ok(false));
        assert_eq!(c.add_subscription(&k2, 1), Err(1));
        assert!(c.remove_subscription("a"));
        assert_eq!(c.subscription_count(), 0);
    }
}
