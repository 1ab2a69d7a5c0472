//! [`NacosFrontend`]: the state shared by the two services and the background tasks, and
//! the handle the server builds, serves, observes and shuts down.
//!
//! `new` validates the configuration, installs the push listener on the node's registry
//! and starts two tasks (the push driver and the client detector). The SDK port
//! ([`crate::sdk_port`]) answers unary calls through the handler directly and serves
//! [`NacosFrontend::bi_stream_service`]; [`NacosFrontend::request_service`] is the unary
//! call as a tonic service, for a tonic router. [`NacosFrontend::shutdown`] closes every
//! connection (ending their streams, so a graceful server shutdown can finish) and stops the
//! tasks.

use crate::answers::AnswerCache;
use crate::clock::Clock;
use crate::nacos::config::{NacosConfig, NacosConfigError};
use crate::nacos::connection::ConnectionTable;
use crate::nacos::hub::PushHub;
use crate::nacos::metrics::{CloseReason, Metrics, NacosStats};
use crate::nacos::service::{NacosBiStreamService, NacosRequestService};
use crate::nacos::state::Shared;
use crate::nacos::view::Timings;
use crate::nacos::{detection, push};
use crate::proto::nacos::bi_request_stream_server::BiRequestStreamServer;
use crate::proto::nacos::request_server::RequestServer;
use distro_core::Node;
use distro_core::registry::ChangeListener;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Nacos 2.x gRPC front end of a node: the `Request` and `BiRequestStream` services
/// that Nacos SDKs (Java, Go, Python, Rust) speak, backed by a [`Node`].
///
/// Each SDK connection is a *connection client* of the node, owned by it; its instances
/// live as long as the connection. Subscribers get `NotifySubscriberRequest` pushes for
/// every change of their services, local or replicated.
pub struct NacosFrontend {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl NacosFrontend {
    /// Builds the front end of `node` and starts its background tasks. `clock` gives
    /// wall-clock milliseconds (connection ids, write times, `lastRefTime`).
    ///
    /// Adds the push listener with `node.registry().add_listener`; other listeners (such as
    /// the native API's watch streams) keep working beside it.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the background tasks are spawned here).
    pub fn new(
        node: Arc<Node>,
        config: NacosConfig,
        clock: Clock,
    ) -> Result<Self, NacosConfigError> {
        config.validate()?;
        let hub = Arc::new(PushHub::new(config.push_delay));
        node.registry()
            .add_listener(hub.clone() as Arc<dyn ChangeListener>);
        let answers = AnswerCache::install(node.registry());
        let shared = Arc::new(Shared {
            timings: Timings::of(node.config()),
            answers,
            node,
            config,
            clock,
            connections: ConnectionTable::new(),
            hub,
            metrics: Metrics::default(),
            request_ids: AtomicU64::new(1),
            stream_generations: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
        });
        let tasks = vec![
            tokio::spawn(push::run(shared.clone())),
            tokio::spawn(detection::run(shared.clone())),
        ];
        Ok(Self {
            shared,
            tasks: Mutex::new(tasks),
        })
    }

    /// The unary `Request` service, with the inbound message limit applied.
    pub fn request_service(&self) -> RequestServer<NacosRequestService> {
        RequestServer::new(NacosRequestService::new(self.shared.clone()))
            .max_decoding_message_size(self.shared.config.max_message_bytes)
    }

    /// The `BiRequestStream` service, with the inbound message limit applied.
    pub fn bi_stream_service(&self) -> BiRequestStreamServer<NacosBiStreamService> {
        BiRequestStreamServer::new(NacosBiStreamService::new(self.shared.clone()))
            .max_decoding_message_size(self.shared.config.max_message_bytes)
    }

    /// Answers one unary `Request/request` call from the connection of `peer` (for
    /// transports that call the handler themselves, as the SDK port does): `message` is the
    /// request's protobuf `Payload`, the result the reply's whole gRPC message frame, or
    /// why `message` is not a `Payload`.
    pub(crate) fn answer_unary(
        &self,
        peer: Option<std::net::SocketAddr>,
        message: bytes::Bytes,
    ) -> Result<bytes::Bytes, String> {
        let env = crate::nacos::codec::Envelope::decode(message)?;
        Ok(crate::nacos::handler::handle_unary(&self.shared, peer, &env).into_frame())
    }

    /// The answer cache of the Nacos reads (listening to the node's registry), for other
    /// front ends that serve the same answers (the Open API's `instance/list`).
    pub fn answers(&self) -> Arc<AnswerCache> {
        self.shared.answers.clone()
    }

    /// The registry listener that drives pushes (already installed by `new`).
    pub fn change_listener(&self) -> Arc<dyn ChangeListener> {
        self.shared.hub.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &NacosConfig {
        &self.shared.config
    }

    /// Connections set up and not closed.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.registered()
    }

    /// Ids (`<millis>_<ip>_<port>`, also the core client ids) of the set-up connections.
    pub fn connection_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .connections
            .all()
            .into_iter()
            .filter(|c| c.is_registered())
            .map(|c| c.id().to_string())
            .collect();
        v.sort();
        v
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NacosStats {
        self.shared.metrics.snapshot(
            self.shared.connections.registered(),
            self.shared.hub.subscribers.service_count(),
        )
    }

    /// Appends the counters in Prometheus text format to `out` (for `/metrics`).
    pub fn render_metrics(&self, out: &mut String) {
        self.stats().render_prometheus(out);
    }

    /// Stops serving: refuses new requests (300) and streams, closes every connection
    /// (ending its stream and removing its client from the node), and waits for the
    /// background tasks to stop. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        for conn in self.shared.connections.all() {
            self.shared.close(&conn, CloseReason::Shutdown);
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            if let Err(e) = t.await {
                tracing::warn!(error = %e, "a nacos background task failed");
            }
        }
    }
}

impl Drop for NacosFrontend {
    fn drop(&mut self) {
        // Stop the background tasks even without an explicit shutdown.
        self.shared.shutdown.send_replace(true);
    }
}

impl std::fmt::Debug for NacosFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NacosFrontend")
            .field("connections", &self.connection_count())
            .field("config", &self.shared.config)
            .finish()
    }
}
