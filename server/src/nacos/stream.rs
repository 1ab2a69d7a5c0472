//! The bi-stream (`BiRequestStream/requestBiStream`): connection setup, acks, and the end
//! of a connection.
//!
//! Client→server, the stream carries the `ConnectionSetupRequest` (which registers the
//! connection of the peer address, creating it if no `ServerCheckRequest` came first, as
//! with the Rust SDK) and the client's responses to server→client requests (acks of pushes
//! and detections, matched by `requestId`). Server→client, it carries `SetupAckRequest`
//! (right after a setup that has an `abilityTable`), `NotifySubscriberRequest` and
//! `ClientDetectionRequest`, through a bounded queue.
//!
//! When the stream the connection was set up on ends or fails, the connection is closed:
//! its client is removed from the core (which pushes the removal to other subscribers and
//! syncs the deletion to peers) and its subscriptions are dropped. Other requests sent on
//! the stream are ignored, as Nacos does.

use crate::nacos::codec::{self, Envelope, Kind};
use crate::nacos::connection::{Connection, Outbound};
use crate::nacos::handler::connection_limit_message;
use crate::nacos::message::{ConnectionSetupRequest, Empty, ServerRequest, StreamResponse};
use crate::nacos::metrics::{CloseReason, Outcome};
use crate::nacos::state::Shared;
use crate::proto::nacos::Payload;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// The server→client half of a stream.
pub(crate) type Outgoing = ReceiverStream<Result<Payload, Status>>;

/// Accepts a new stream from `addr`.
pub(crate) fn open(
    shared: Arc<Shared>,
    addr: Option<SocketAddr>,
    inbound: Streaming<Payload>,
) -> Result<Outgoing, Status> {
    let Some(addr) = addr else {
        return Err(Status::failed_precondition(
            "cannot identify the connection: the transport reports no peer address",
        ));
    };
    if shared.is_shutting_down() {
        return Err(Status::unavailable("the server is shutting down"));
    }
    if !shared.node.is_loaded() {
        return Err(Status::unavailable(
            "the server is starting: this node is still loading its snapshot from a peer; \
             connect to another node",
        ));
    }
    let (tx, rx) = mpsc::channel(shared.config.outbound_queue);
    let generation = shared.next_stream_generation();
    tokio::spawn(read(shared, addr, generation, tx, inbound));
    Ok(ReceiverStream::new(rx))
}

/// Reads the client→server half until it ends, the connection closes, or the front end
/// shuts down.
async fn read(
    shared: Arc<Shared>,
    addr: SocketAddr,
    generation: u64,
    tx: Outbound,
    mut inbound: Streaming<Payload>,
) {
    let mut conn: Option<Arc<Connection>> = None;
    let mut closed: Option<watch::Receiver<bool>> = None;
    let mut shutdown = shared.shutdown_signal();
    loop {
        let message = tokio::select! {
            m = inbound.message() => m,
            _ = wait_closed(&mut closed) => break,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match message {
            Ok(Some(payload)) => {
                let env = Envelope::from_payload(payload);
                match env.kind() {
                    Kind::ConnectionSetup => match setup(&shared, addr, generation, &tx, &env) {
                        Ok(c) => {
                            closed = Some(c.closed_signal());
                            conn = Some(c);
                        }
                        Err(status) => {
                            let _ = tx.try_send(Err(status));
                            break;
                        }
                    },
                    Kind::Response => response(&shared, addr, conn.as_ref(), &env),
                    _ => tracing::debug!(%addr, type_name = env.type_name(),
                        "ignoring a request sent on the bi-stream"),
                }
            }
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%addr, %status, "nacos bi-stream failed");
                break;
            }
        }
    }
    if let Some(conn) = conn
        && conn.is_current_stream(generation)
    {
        shared.close(&conn, CloseReason::StreamEnded);
    }
}

async fn wait_closed(closed: &mut Option<watch::Receiver<bool>>) {
    match closed {
        Some(rx) => {
            // An error means the connection is gone, which is a close too.
            let _ = rx.wait_for(|c| *c).await;
        }
        None => std::future::pending().await,
    }
}

/// Registers the connection of `addr` on this stream; an error ends the stream.
fn setup(
    shared: &Shared,
    addr: SocketAddr,
    generation: u64,
    tx: &Outbound,
    env: &Envelope,
) -> Result<Arc<Connection>, Status> {
    let kind = Kind::ConnectionSetup;
    let req: ConnectionSetupRequest = match env.parse() {
        Ok(r) => r,
        Err(e) => {
            shared.metrics.request(kind, Outcome::BadBody);
            return Err(Status::invalid_argument(e));
        }
    };
    // A connection closed a moment ago may still be listed: forget it and start afresh.
    for _ in 0..2 {
        let conn = match shared.connections.get_or_create(
            addr,
            shared.now_wall(),
            shared.config.max_connections,
        ) {
            Ok(c) => c,
            Err(full) => {
                shared.metrics.connection_refused();
                shared.metrics.request(kind, Outcome::Refused);
                return Err(Status::resource_exhausted(connection_limit_message(
                    full.max,
                )));
            }
        };
        let Some(first) = conn.register(generation, tx.clone()) else {
            shared.connections.remove(&conn);
            continue;
        };
        if first {
            shared.connections.count_registered();
            shared.metrics.connection_opened();
        }
        conn.touch(shared.connections.now_ms());
        shared.metrics.request(kind, Outcome::Ok);
        tracing::debug!(connection = conn.id(), client_version = ?req.client_version,
            tenant = ?req.tenant, labels = ?req.labels, "nacos connection set up");
        if req.ability_table.is_some() {
            let ack = ServerRequest {
                headers: Empty {},
                request_id: &shared.next_request_id(),
                ability_table: Some(crate::nacos::message::server_abilities()),
                module: "internal",
            };
            conn.send(codec::encode("SetupAckRequest", &ack));
        }
        return Ok(conn);
    }
    shared.metrics.request(kind, Outcome::Error);
    Err(Status::unavailable(
        "the connection was closed during setup; reconnect",
    ))
}

/// A client's response on the stream: refresh the connection and deliver the ack.
fn response(shared: &Shared, addr: SocketAddr, conn: Option<&Arc<Connection>>, env: &Envelope) {
    let found;
    let conn = match conn {
        Some(c) => c,
        None => match shared.connections.get(&addr) {
            Some(c) => {
                found = c;
                &found
            }
            None => return,
        },
    };
    conn.touch(shared.connections.now_ms());
    match env.parse::<StreamResponse>() {
        Ok(r) => {
            if let Some(id) = r.request_id.as_deref() {
                conn.ack(id, r.is_success());
            }
        }
        Err(e) => tracing::debug!(connection = conn.id(), error = %e, "unreadable response"),
    }
}
