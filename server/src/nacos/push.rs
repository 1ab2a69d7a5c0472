//! Pushes: `NotifySubscriberRequest` to every subscriber of a service that changed.
//!
//! The registry's [`ChangeListener`] fires after every change of a service's publications,
//! local or replicated alike. [`PushHub`] turns that into a *pending push* of the service
//! if it has subscribers here; pending pushes merge per service (targets union, "everyone"
//! wins, the earliest due time stays, as Nacos's `PushDelayTask.merge`) and fall due after
//! the push delay. The driver ([`run`]) then reads the service once, renders one
//! `ServiceInfo` per cluster filter with a fresh `lastRefTime`, and queues a push to each
//! targeted subscriber. Each push waits for its ack; a push that cannot be queued, is
//! refused, or is not acknowledged within the ack timeout is retried for that subscriber
//! after the retry delay, for as long as it is subscribed. A retry reads the service
//! again, so it always carries the newest view.
//!
//! A new subscription schedules a push of the current view to that subscriber alone.

use crate::nacos::codec;
use crate::nacos::connection::Connection;
use crate::nacos::frontend::Shared;
use crate::nacos::metrics::CloseReason;
use crate::nacos::subscription::{Round, SubscriberIndex};
use crate::nacos::view::{self, Selection};
use distro_core::Service;
use distro_core::registry::ChangeListener;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Who a pending push goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Targets {
    /// Every subscriber of the service.
    All,
    /// These connections (by serial).
    Some(HashSet<u64>),
}

impl Targets {
    fn includes(&self, serial: u64) -> bool {
        match self {
            Targets::All => true,
            Targets::Some(s) => s.contains(&serial),
        }
    }
}

struct Pending {
    due: Instant,
    targets: Targets,
}

/// Pending pushes per service key.
#[derive(Default)]
pub(crate) struct PushQueue {
    pending: Mutex<HashMap<Arc<str>, Pending>>,
    wake: Notify,
}

impl PushQueue {
    /// Schedules a push of `key` to `target` (`None`: every subscriber) due at `due`, merged
    /// with what is pending for the service.
    pub(crate) fn schedule(&self, key: Arc<str>, target: Option<u64>, due: Instant) {
        {
            let mut pending = self.pending.lock();
            let p = pending.entry(key).or_insert_with(|| Pending {
                due,
                targets: Targets::Some(HashSet::new()),
            });
            p.due = p.due.min(due);
            match (&mut p.targets, target) {
                (Targets::All, _) => {}
                (t @ Targets::Some(_), None) => *t = Targets::All,
                (Targets::Some(s), Some(serial)) => {
                    s.insert(serial);
                }
            }
        }
        self.wake.notify_one();
    }

    /// Takes every push due at `now`; also returns when the next one falls due.
    pub(crate) fn take_due(&self, now: Instant) -> (Vec<(Arc<str>, Targets)>, Option<Instant>) {
        let mut pending = self.pending.lock();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        pending.retain(|key, p| {
            if p.due <= now {
                due.push((key.clone(), std::mem::replace(&mut p.targets, Targets::All)));
                false
            } else {
                next = Some(next.map_or(p.due, |n| n.min(p.due)));
                true
            }
        });
        (due, next)
    }

    /// Number of services with a pending push.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.lock().len()
    }
}

/// Subscriptions plus pending pushes; the registry's change listener. It holds no
/// reference to the node, so installing it in the node's registry makes no cycle.
pub(crate) struct PushHub {
    pub(crate) subscribers: SubscriberIndex,
    pub(crate) queue: PushQueue,
    delay: Duration,
}

impl PushHub {
    pub(crate) fn new(delay: Duration) -> Self {
        Self {
            subscribers: SubscriberIndex::default(),
            queue: PushQueue::default(),
            delay,
        }
    }

    /// Schedules the current view of `key` for subscriber `serial` after the push delay.
    pub(crate) fn push_to(&self, key: Arc<str>, serial: u64) {
        self.queue
            .schedule(key, Some(serial), Instant::now() + self.delay);
    }
}

impl ChangeListener for PushHub {
    fn service_changed(&self, service: &Service) {
        if let Some(key) = self.subscribers.subscribed_key(service.key().as_str()) {
            self.queue.schedule(key, None, Instant::now() + self.delay);
        }
    }
}

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
    let view = shared
        .node
        .registry()
        .query(&round.namespace, &round.group, &round.name);
    let grouped = format!("{}@@{}", round.group, round.name);
    // One rendering per distinct cluster filter.
    let mut rendered: Vec<(Arc<str>, Arc<Vec<u8>>)> = Vec::new();
    for sub in &round.subscribers {
        let info = match rendered.iter().find(|(c, _)| *c == sub.clusters) {
            Some((_, json)) => json.clone(),
            None => {
                let info = view::service_info(
                    view.as_ref(),
                    Selection {
                        group: &round.group,
                        name: &round.name,
                        grouped: &grouped,
                        clusters: &sub.clusters,
                        healthy_only: false,
                    },
                    round.last_ref_time,
                    shared.config.cache_millis,
                    shared.timings,
                );
                let json = Arc::new(serde_json::to_vec(&info).unwrap_or_default());
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

    #[tokio::test]
    async fn pending_pushes_merge_per_service() {
        let q = PushQueue::default();
        let t0 = Instant::now();
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        q.schedule(a.clone(), Some(1), t0 + Duration::from_millis(500));
        q.schedule(a.clone(), Some(2), t0 + Duration::from_millis(900));
        q.schedule(b.clone(), Some(1), t0 + Duration::from_millis(100));
        assert_eq!(q.len(), 2);
        let (due, next) = q.take_due(t0 + Duration::from_millis(100));
        assert_eq!(due, vec![(b, Targets::Some(HashSet::from([1])))]);
        assert_eq!(
            next,
            Some(t0 + Duration::from_millis(500)),
            "the earliest due time of a service is kept"
        );
        q.schedule(a.clone(), None, t0 + Duration::from_millis(700));
        q.schedule(a.clone(), Some(3), t0 + Duration::from_millis(700));
        let (due, next) = q.take_due(t0 + Duration::from_millis(500));
        assert_eq!(
            due,
            vec![(a, Targets::All)],
            "everyone wins over a target set"
        );
        assert_eq!(next, None);
    }

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
