//! [`PushHub`]: the subscriptions of this node's connections and the pushes pending for
//! them; the registry's [`ChangeListener`].
//!
//! The listener fires after every change of a service's publications, local or replicated
//! alike, and turns it into a *pending push* of the service if it has subscribers here;
//! pending pushes merge per service (targets union, "everyone" wins, the earliest due time
//! stays, as Nacos's `PushDelayTask.merge`) and fall due after the push delay. Carrying
//! them out is `push.rs`'s job; this file holds state only.

use crate::nacos::subscription::SubscriberIndex;
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
    pub(crate) fn includes(&self, serial: u64) -> bool {
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
    pub(crate) wake: Notify,
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
    /// The count asked once for the whole batch: no key is read while nobody subscribes.
    fn services_changed(&self, services: &[Service]) {
        if !self.subscribers.any() {
            return;
        }
        let mut due = None;
        for service in services {
            if let Some(key) = self.subscribers.subscribed_key(service.key().as_str()) {
                let due = *due.get_or_insert_with(|| Instant::now() + self.delay);
                self.queue.schedule(key, None, due);
            }
        }
    }
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
}
