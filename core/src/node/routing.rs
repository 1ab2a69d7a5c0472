//! Routing: which member owns an `ip:port` client, under the current routing table.
//!
//! The table itself ([`crate::router`]) is rebuilt when the routable members change (see
//! `membership.rs`); this file only answers questions with it. A connection client is
//! not routed: it belongs to the node holding the connection, so its attribution is the
//! member that sent it.

use super::Node;
use crate::member::MemberId;
use crate::router::{Router, RoutingTable};
use arc_swap::Guard;
use std::sync::Arc;

/// Where a write for an `ip:port` client must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This node owns it.
    Local,
    /// Another member owns it: forward the write there.
    Remote(MemberId),
}

/// The routing table and this node's id, loaded once to route a batch: each load is an
/// `ArcSwap` read (~100 instructions), and a write batch or a sync batch routes every
/// item. Hold it for one batch only (not across an `await`): a table built after it was
/// taken is not seen. Whatever a batch applies under a table that changed meanwhile (an
/// owner's local writes, a replica's attributions) is mended by the re-homing pass that
/// follows every change (`rehome_again`), as for a single write routed just before it.
pub struct Routes {
    table: Guard<Arc<RoutingTable>>,
    me: MemberId,
}

impl Routes {
    /// The owner of routing key `ip:port` (this node when no member is routable).
    #[inline]
    pub fn owner_of(&self, key: &str) -> MemberId {
        owner_in(&self.table, key, || self.me)
    }

    /// Where a write for the ip:port client `key` (`"ip:port"`) must go.
    #[inline]
    pub fn route(&self, key: &str) -> Route {
        let owner = self.owner_of(key);
        if owner == self.me {
            Route::Local
        } else {
            Route::Remote(owner)
        }
    }

    /// The member a replicated client `id` is attributed to: the routing owner of an
    /// ip:port client, `sender` for a connection client.
    /// (`id` is the id's text: an ip:port client's holds a `#`, its routing key is what
    /// comes before, as [`crate::model::ClientId::routing_key`] says.)
    #[inline]
    pub(crate) fn attribution(&self, id: &str, sender: MemberId) -> MemberId {
        match crate::model::first_hash_sign(id.as_bytes()) {
            Some(k) => self.owner_of(&id[..k]),
            None => sender,
        }
    }
}

impl Node {
    /// The current routing table, to route a batch of keys (see [`Routes`]).
    pub fn routes(&self) -> Routes {
        Routes {
            table: self.routing.load(),
            me: self.me(),
        }
    }

    /// The owner of routing key `ip:port` under the current routing table.
    pub fn owner_of(&self, key: &str) -> MemberId {
        owner_in(&self.routing.load(), key, || self.me())
    }

    /// Where a write for the ip:port client `key` (`"ip:port"`) must go.
    pub fn route(&self, key: &str) -> Route {
        self.routes().route(key)
    }

    /// The routable members (UP and SUSPICIOUS), in address order.
    pub fn routable_members(&self) -> Vec<MemberId> {
        self.routing.load().members().to_vec()
    }

    /// [`Routes::attribution`] under the current routing table.
    pub(super) fn attribution(&self, id: &str, sender: MemberId) -> MemberId {
        self.routes().attribution(id, sender)
    }
}

/// The owner of `key` under `table`, `me` when no member is routable.
#[inline]
fn owner_in(table: &RoutingTable, key: &str, me: impl FnOnce() -> MemberId) -> MemberId {
    table.owner(key).unwrap_or_else(me)
}
