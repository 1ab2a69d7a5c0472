//! Who subscribes to which service, and each service's `lastRefTime`.
//!
//! Subscriptions are not Distro data: Nacos keeps them on the node that holds the
//! connection and pushes from there (reference §1.2, §4.8). The index maps a service key
//! (`namespace \x1f group \x1f name`, as the core's `Service::key_of`) to the connections
//! subscribed to it, each with its cluster filter. It also holds the service's last issued
//! `lastRefTime`, so every `ServiceInfo` about a subscribed service (pushes, and the
//! replies to subscribe and query) carries a strictly larger value than the one before,
//! even within one millisecond; SDKs drop views that are not newer (Python: `<=`, Rust: `<`).
//! An entry lives exactly as long as the service has subscribers.

use crate::nacos::connection::Connection;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

/// One subscription.
#[derive(Clone)]
pub(crate) struct Subscriber {
    pub(crate) conn: Arc<Connection>,
    /// The requested clusters, comma-separated ("" for all).
    pub(crate) clusters: Arc<str>,
}

struct ServiceSubscribers {
    namespace: Arc<str>,
    group: Arc<str>,
    name: Arc<str>,
    by_conn: HashMap<u64, Subscriber>,
    last_ref_time: u64,
    /// Taken out of the index (its last subscriber left): a subscriber that finds it so
    /// must insert a new entry.
    gone: bool,
}

/// One service's entry: the map is lock-free, each entry is locked on its own.
type Entry = Arc<Mutex<ServiceSubscribers>>;

/// What one push round of a service needs: its names, the targeted subscribers and the
/// `lastRefTime` to stamp.
pub(crate) struct Round {
    pub(crate) namespace: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) subscribers: Vec<Subscriber>,
    pub(crate) last_ref_time: u64,
}

/// The subscriptions of every connection of this node.
#[derive(Default)]
pub(crate) struct SubscriberIndex {
    services: papaya::HashMap<Arc<str>, Entry>,
    /// Subscriptions held (of every service): the change listener's first question, one
    /// load instead of a lookup while nobody subscribes (a node serving only the native
    /// API or Open API). Counted under the service's entry lock, with the same ordering
    /// as the map's own insert (a locked read-modify-write) and load.
    subscriptions: AtomicUsize,
}

/// The next `lastRefTime`: the wall clock, or one more than the last one if that is not
/// smaller.
fn bump(last: &mut u64, wall_ms: u64) -> u64 {
    let t = wall_ms.max(last.saturating_add(1));
    *last = t;
    t
}

impl SubscriberIndex {
    /// Subscribes `conn` to service `key` (names given resolved) with a cluster filter.
    /// Returns whether anything changed (a new subscription or a new filter).
    pub(crate) fn subscribe(
        &self,
        key: &Arc<str>,
        (namespace, group, name): (&str, &str, &str),
        conn: &Arc<Connection>,
        clusters: &str,
    ) -> bool {
        let services = self.services.pin();
        loop {
            let entry = services.get_or_insert_with(key.clone(), || {
                Arc::new(Mutex::new(ServiceSubscribers {
                    namespace: namespace.into(),
                    group: group.into(),
                    name: name.into(),
                    by_conn: HashMap::new(),
                    last_ref_time: 0,
                    gone: false,
                }))
            });
            let mut e = entry.lock();
            if e.gone {
                // Its last subscriber left meanwhile and took it out: insert anew.
                continue;
            }
            let new = Subscriber {
                conn: conn.clone(),
                clusters: clusters.into(),
            };
            return match e.by_conn.insert(conn.serial, new) {
                None => {
                    self.subscriptions.fetch_add(1, SeqCst);
                    true
                }
                Some(old) => &*old.clusters != clusters,
            };
        }
    }

    /// Removes the subscription of connection `serial` to `key`; whether it existed.
    pub(crate) fn unsubscribe(&self, key: &str, serial: u64) -> bool {
        let services = self.services.pin();
        let Some(entry) = services.get(key) else {
            return false;
        };
        let mut e = entry.lock();
        let removed = e.by_conn.remove(&serial).is_some();
        if removed {
            self.subscriptions.fetch_sub(1, SeqCst);
        }
        if e.by_conn.is_empty() && !e.gone {
            // Out of the index while locked, so no subscriber can join it meanwhile.
            e.gone = true;
            let _ = services.remove_if(key, |_, v| Arc::ptr_eq(v, entry));
        }
        removed
    }

    /// Whether any connection subscribes to anything: one load, asked by the change
    /// listener before it reads the changed service's key (a line of its own, a cache miss
    /// per change in a burst of writes nobody subscribes to).
    pub(crate) fn any(&self) -> bool {
        self.subscriptions.load(SeqCst) != 0
    }

    /// The shared key of `key` if the service has subscribers (the change listener's
    /// question, allocation-free; the listener asks [`SubscriberIndex::any`] first, once
    /// a batch).
    pub(crate) fn subscribed_key(&self, key: &str) -> Option<Arc<str>> {
        self.services
            .pin()
            .get_key_value(key)
            .map(|(k, _)| k.clone())
    }

    /// Whether connection `serial` subscribes to `key`.
    pub(crate) fn is_subscribed(&self, key: &str, serial: u64) -> bool {
        self.services
            .pin()
            .get(key)
            .is_some_and(|e| e.lock().by_conn.contains_key(&serial))
    }

    /// Starts a push round of `key` for the subscribers `include` selects, issuing the next
    /// `lastRefTime`. `None` if no such subscriber is left.
    pub(crate) fn round(
        &self,
        key: &str,
        include: impl Fn(u64) -> bool,
        wall_ms: u64,
    ) -> Option<Round> {
        let services = self.services.pin();
        let mut e = services.get(key)?.lock();
        let subscribers: Vec<Subscriber> = e
            .by_conn
            .iter()
            .filter(|(serial, _)| include(**serial))
            .map(|(_, s)| s.clone())
            .collect();
        if subscribers.is_empty() {
            return None;
        }
        let last_ref_time = bump(&mut e.last_ref_time, wall_ms);
        Some(Round {
            namespace: e.namespace.clone(),
            group: e.group.clone(),
            name: e.name.clone(),
            subscribers,
            last_ref_time,
        })
    }

    /// The `lastRefTime` of a view of `key` read now: issued from the service's sequence if
    /// it has subscribers, the wall clock otherwise.
    pub(crate) fn ref_time(&self, key: &str, wall_ms: u64) -> u64 {
        match self.services.pin().get(key) {
            Some(e) => bump(&mut e.lock().last_ref_time, wall_ms),
            None => wall_ms,
        }
    }

    /// Services with at least one subscriber.
    pub(crate) fn service_count(&self) -> usize {
        self.services.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nacos::connection::ConnectionTable;
    use std::net::SocketAddr;

    #[tokio::test]
    async fn ref_times_increase_strictly_and_entries_go_with_the_last_subscriber() {
        let table = ConnectionTable::new();
        let a = table
            .get_or_create(SocketAddr::from(([127, 0, 0, 1], 1)), 1, 10)
            .unwrap();
        let b = table
            .get_or_create(SocketAddr::from(([127, 0, 0, 1], 2)), 1, 10)
            .unwrap();
        let idx = SubscriberIndex::default();
        let key: Arc<str> = "public\x1fG\x1fs".into();
        let names = ("public", "G", "s");
        assert_eq!(idx.ref_time(&key, 100), 100, "unsubscribed: the wall clock");
        assert!(idx.subscribe(&key, names, &a, ""));
        assert!(
            !idx.subscribe(&key, names, &a, ""),
            "same filter: no change"
        );
        assert!(idx.subscribe(&key, names, &a, "c1"), "new filter: a change");
        assert!(idx.subscribe(&key, names, &b, ""));
        assert_eq!(idx.ref_time(&key, 100), 100);
        assert_eq!(
            idx.ref_time(&key, 100),
            101,
            "same millisecond: still newer"
        );
        let r = idx.round(&key, |s| s == b.serial, 50).unwrap();
        assert_eq!(
            r.last_ref_time, 102,
            "a clock step back does not go backwards"
        );
        assert_eq!(r.subscribers.len(), 1);
        assert_eq!(&*r.name, "s");
        assert!(idx.round(&key, |_| false, 200).is_none());
        assert_eq!(idx.round(&key, |_| true, 200).unwrap().subscribers.len(), 2);
        assert!(idx.subscribed_key(&key).is_some());
        assert!(idx.unsubscribe(&key, a.serial));
        assert!(!idx.unsubscribe(&key, a.serial));
        assert!(idx.is_subscribed(&key, b.serial));
        assert!(idx.unsubscribe(&key, b.serial));
        assert!(idx.subscribed_key(&key).is_none());
        assert_eq!(idx.service_count(), 0);
    }

    /// The count that lets the listener skip its lookup follows the subscriptions: a
    /// filter change is no new subscription, the last one leaving brings it to zero, and a
    /// subscriber of another service is found while the first is still held.
    #[tokio::test]
    async fn the_subscription_count_follows_subscribes_and_unsubscribes() {
        let table = ConnectionTable::new();
        let a = table
            .get_or_create(SocketAddr::from(([127, 0, 0, 1], 1)), 1, 10)
            .unwrap();
        let idx = SubscriberIndex::default();
        let (k1, k2): (Arc<str>, Arc<str>) =
            ("public\x1fG\x1fs1".into(), "public\x1fG\x1fs2".into());
        assert!(idx.subscribed_key(&k1).is_none());
        assert!(!idx.any());
        assert!(idx.subscribe(&k1, ("public", "G", "s1"), &a, ""));
        assert!(idx.any());
        assert!(idx.subscribe(&k1, ("public", "G", "s1"), &a, "c1"));
        assert!(idx.subscribe(&k2, ("public", "G", "s2"), &a, ""));
        assert_eq!(idx.subscriptions.load(SeqCst), 2);
        assert!(idx.unsubscribe(&k1, a.serial));
        assert!(idx.subscribed_key(&k1).is_none());
        assert_eq!(idx.subscribed_key(&k2).as_deref(), Some(&*k2));
        assert!(idx.unsubscribe(&k2, a.serial));
        assert!(!idx.unsubscribe(&k2, a.serial));
        assert_eq!(idx.subscriptions.load(SeqCst), 0);
        assert!(!idx.any(), "no subscription left");
        assert!(idx.subscribe(&k2, ("public", "G", "s2"), &a, ""));
        assert_eq!(idx.subscribed_key(&k2).as_deref(), Some(&*k2));
    }
}
