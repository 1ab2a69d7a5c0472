//! [`Shared`]: the state of the Nacos front end that its services, its background tasks
//! and its public handle share (the node, the configuration, the connections, the push
//! hub, the counters), and closing a connection, which touches all of them.
//!
//! It depends on the state-holding files only (`config`, `connection`, `hub`, `metrics`,
//! `view`), never on the files that use it (`handler`, `stream`, `push`, `detection`,
//! `service`, `frontend`), so the front end's files import each other without a circle.

use crate::answers::AnswerCache;
use crate::clock::Clock;
use crate::nacos::config::NacosConfig;
use crate::nacos::connection::{Connection, ConnectionTable};
use crate::nacos::hub::PushHub;
use crate::nacos::metrics::{CloseReason, Metrics};
use crate::nacos::view::Timings;
use distro_core::Node;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::watch;

/// State shared by the services and tasks.
pub(crate) struct Shared {
    pub(crate) node: Arc<Node>,
    pub(crate) config: NacosConfig,
    pub(crate) clock: Clock,
    pub(crate) timings: Timings,
    pub(crate) connections: ConnectionTable,
    pub(crate) hub: Arc<PushHub>,
    /// Rendered `ServiceInfo` heads per service and form.
    pub(crate) answers: Arc<AnswerCache>,
    pub(crate) metrics: Metrics,
    pub(crate) request_ids: AtomicU64,
    pub(crate) stream_generations: AtomicU64,
    pub(crate) shutdown: watch::Sender<bool>,
}

impl Shared {
    /// Wall-clock milliseconds.
    pub(crate) fn now_wall(&self) -> u64 {
        (self.clock)()
    }

    /// A fresh `requestId` for a server→client request.
    pub(crate) fn next_request_id(&self) -> String {
        self.request_ids.fetch_add(1, Relaxed).to_string()
    }

    /// A fresh bi-stream generation.
    pub(crate) fn next_stream_generation(&self) -> u64 {
        self.stream_generations.fetch_add(1, Relaxed)
    }

    /// A receiver that turns `true` at shutdown.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether shutdown began.
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Closes `conn`: no more requests are served on it, its stream ends, its
    /// subscriptions go, and its client is removed from the core. Idempotent.
    pub(crate) fn close(&self, conn: &Arc<Connection>, reason: CloseReason) {
        let Some(was_registered) = conn.mark_closed() else {
            return;
        };
        self.connections.remove(conn);
        for key in conn.take_subscriptions() {
            self.hub.subscribers.unsubscribe(&key, conn.serial);
        }
        if was_registered {
            self.connections.count_unregistered();
            self.connections.remember_closed(conn.addr);
            tracing::debug!(connection = conn.id(), ?reason, "nacos connection closed");
        }
        if was_registered || reason == CloseReason::SetupTimeout {
            self.metrics.connection_closed(reason);
        }
        self.node.remove_client(&conn.client, self.now_wall());
    }
}
