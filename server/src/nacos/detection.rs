//! Client detection: probe idle connections and drop those that do not answer.
//!
//! As Nacos's connection ejector (reference §4.6): every `detection_interval`, each set-up
//! connection idle for at least `detection_idle` (no unary request and no response on its
//! stream) gets a `ClientDetectionRequest`; without a successful `ClientDetectionResponse`
//! within `detection_timeout` the connection is closed, which removes its client from the
//! core and pushes the removal. The same sweep forgets connections that never finished
//! their setup within `setup_timeout`, and the addresses of closed connections remembered
//! for as long.
//!
//! This catches peers that vanished without closing TCP (a cut network, a frozen process);
//! a clean close or a reset already ends the stream.

use crate::nacos::codec;
use crate::nacos::connection::Connection;
use crate::nacos::message::{Empty, ServerRequest};
use crate::nacos::metrics::CloseReason;
use crate::nacos::state::Shared;
use std::sync::Arc;
use std::sync::atomic::Ordering::AcqRel;
use tokio::time::MissedTickBehavior;

/// The detection loop: runs until the front end shuts down.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_signal();
    let mut tick = tokio::time::interval(shared.config.detection_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => sweep(&shared),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One pass over every connection.
fn sweep(shared: &Arc<Shared>) {
    let now = shared.connections.now_ms();
    let idle = shared.config.detection_idle.as_millis() as u64;
    for conn in shared.connections.all() {
        if conn.is_registered() {
            if conn.idle_ms(now) >= idle && !conn.probing.swap(true, AcqRel) {
                probe(shared, conn);
            }
        } else if conn.created().elapsed() >= shared.config.setup_timeout {
            shared.close(&conn, CloseReason::SetupTimeout);
        }
    }
    shared
        .connections
        .forget_closed(shared.config.setup_timeout);
}

/// Sends a `ClientDetectionRequest` and closes the connection unless it answers in time.
fn probe(shared: &Arc<Shared>, conn: Arc<Connection>) {
    let request_id = shared.next_request_id();
    let request = ServerRequest {
        headers: Empty {},
        request_id: &request_id,
        ability_table: None,
        module: "internal",
    };
    let ack = conn.expect_ack(&request_id);
    shared.metrics.detection_sent();
    if !conn.send(codec::encode("ClientDetectionRequest", &request)) {
        conn.forget_ack(&request_id);
        tracing::info!(
            connection = conn.id(),
            "cannot probe an idle connection; closing it"
        );
        shared.close(&conn, CloseReason::DetectionFailed);
        return;
    }
    let shared = shared.clone();
    let timeout = shared.config.detection_timeout;
    tokio::spawn(async move {
        match tokio::time::timeout(timeout, ack).await {
            Ok(Ok(true)) => conn
                .probing
                .store(false, std::sync::atomic::Ordering::Release),
            _ => {
                conn.forget_ack(&request_id);
                tracing::info!(
                    connection = conn.id(),
                    "an idle connection did not answer ClientDetectionRequest; closing it"
                );
                shared.close(&conn, CloseReason::DetectionFailed);
            }
        }
    });
}
