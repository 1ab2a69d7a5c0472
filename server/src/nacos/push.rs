//! Pushes: `NotifySubscriberRequest` to every subscriber of a service that changed.
//!
//! The registry's change listener (`PushHub`, in `hub.rs`) turns every change of a
//! subscribed service into a pending push that falls due after the push delay. The driver
//! ([`run`]) then reads the service once, renders one
//! `ServiceInfo` per cluster filter with a fresh `lastRefTime`, and queues a push to each
//! targeted subscriber. Each push waits for its ack; a push that cannot be queued, is
//! refused, or is not acknowledged within the ack timeout is retried for that subscriber
//! after the retry delay, for as long as it is subscribed. A retry reads the service
//! again, so it always carries the newest view.
//!
//! A new subscription schedules a push of the current view to that subscriber alone.

use crate::nacos::codec;
use crate::nacos::connection::Connection;
use crate::nacos::handler;
use crate::nacos::hub::Targets;
use crate::nacos::metrics::CloseReason;
use crate::nacos::state::Shared;
use crate::nacos::subscription::Round;
use crate::nacos::view;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The push driver: runs until the front end shuts down.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        let (due, next) = shared.hub.queue.take_due(Instant::now());
        for (key, targets) in due {
            push_service(&shared, &key, &targets);
        }
        let at = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = shared.hub.queue.wake.notified() => {}
            _ = tokio::time::sleep_until(at) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One push round of service `key` to `targets`.
fn push_service(shared: &Arc<Shared>, key: &Arc<str>, targets: &Targets) {
    let wall = shared.now_wall();
    let Some(round) = shared
        .hub
        .subscribers
        .round(key, |serial| targets.includes(serial), wall)
    else {
        return;
    };
    let ns_group_name = (&*round.namespace, &*round.group, &*round.name);
    // One rendering per distinct cluster filter (kept in the answer cache until the
    // service changes again), stamped with this round's `lastRefTime`.
    let mut rendered: Vec<(Arc<str>, Arc<Vec<u8>>)> = Vec::new();
    for sub in &round.subscribers {
        let info = match rendered.iter().find(|(c, _)| *c == sub.clusters) {
            Some((_, json)) => json.clone(),
            None => {
                let head =
                    handler::service_info_head(shared, key, ns_group_name, &sub.clusters, false);
                let mut json = Vec::with_capacity(head.len() + 128);
                view::finish_service_info(&head, round.last_ref_time, &mut json);
                let json = Arc::new(json);
                rendered.push((sub.clusters.clone(), json.clone()));
                json
            }
        };
        deliver(shared, key, &round, &sub.conn, &info);
    }
}

/// Queues one push to `conn` and watches for its ack.
fn deliver(
    shared: &Arc<Shared>,
    key: &Arc<str>,
    round: &Round,
    conn: &Arc<Connection>,
    info: &[u8],
) {
    let request_id = shared.next_request_id();
    let body = notify_body(&request_id, round, info);
    let ack = conn.expect_ack(&request_id);
    if !conn.send(codec::payload("NotifySubscriberRequest", body)) {
        conn.forget_ack(&request_id);
        failed(shared, key, conn);
        return;
    }
    shared.metrics.push_sent();
    let shared = shared.clone();
    let key = key.clone();
    let conn = conn.clone();
    let timeout = shared.config.push_ack_timeout;
    tokio::spawn(async move {
        let sent = Instant::now();
        match tokio::time::timeout(timeout, ack).await {
            Ok(Ok(true)) => {
                conn.push_acked();
                shared.metrics.push_acked(sent.elapsed());
            }
            _ => {
                conn.forget_ack(&request_id);
                failed(&shared, &key, &conn);
            }
        }
    });
}

/// A push to `conn` failed: retried, unless the connection has now left
/// `max_push_failures` pushes in a row unacknowledged, which closes it.
fn failed(shared: &Arc<Shared>, key: &Arc<str>, conn: &Arc<Connection>) {
    shared.metrics.push_failed();
    let failures = conn.push_failed();
    if failures >= shared.config.max_push_failures {
        tracing::info!(
            connection = conn.id(),
            failures,
            "a connection left {failures} pushes in a row unacknowledged; closing it"
        );
        shared.close(conn, CloseReason::PushesUnacknowledged);
        return;
    }
    retry(shared, key, conn);
}

/// Schedules a retry of `key` for `conn` if it still listens.
fn retry(shared: &Shared, key: &Arc<str>, conn: &Connection) {
    if conn.is_registered() && shared.hub.subscribers.is_subscribed(key, conn.serial) {
        shared.hub.queue.schedule(
            key.clone(),
            Some(conn.serial),
            Instant::now() + shared.config.push_retry_delay,
        );
    }
}

/// The JSON of a `NotifySubscriberRequest` around an already rendered `ServiceInfo`.
fn notify_body(request_id: &str, round: &Round, info: &[u8]) -> Vec<u8> {
    fn string(v: &mut Vec<u8>, s: &str) {
        serde_json::to_writer(&mut *v, s).expect("writing a string to a Vec cannot fail");
    }
    let mut v = Vec::with_capacity(info.len() + 128 + round.name.len() + round.group.len());
    v.extend_from_slice(br#"{"headers":{},"requestId":"#);
    string(&mut v, request_id);
    v.extend_from_slice(br#","namespace":"#);
    string(&mut v, &round.namespace);
    v.extend_from_slice(br#","serviceName":"#);
    string(&mut v, &round.name);
    v.extend_from_slice(br#","groupName":"#);
    string(&mut v, &round.group);
    v.extend_from_slice(br#","serviceInfo":"#);
    v.extend_from_slice(info);
    v.extend_from_slice(br#","module":"naming"}"#);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_bodies_are_well_formed_json() {
        let round = Round {
            namespace: "public".into(),
            group: "G".into(),
            name: "s\"q".into(),
            subscribers: Vec::new(),
            last_ref_time: 7,
        };
        let body = notify_body("42", &round, br#"{"name":"s\"q","hosts":[]}"#);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"headers":{},"requestId":"42","namespace":"public",
                "serviceName":"s\"q","groupName":"G",
                "serviceInfo":{"name":"s\"q","hosts":[]},"module":"naming"})
        );
    }
}
