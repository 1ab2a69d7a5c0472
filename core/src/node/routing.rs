//! Routing: which member owns an `ip:port` client, under the current routing table.
//!
//! The table itself ([`crate::router`]) is rebuilt when the routable members change (see
//! `membership.rs`); this file only answers questions with it. A connection client is
//! not routed: it belongs to the node holding the connection, so its attribution is the
//! member that sent it.

use super::Node;
use crate::member::MemberId;
use crate::router::Router;

/// Where a write for an `ip:port` client must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This node owns it.
    Local,
    /// Another member owns it: forward the write there.
    Remote(MemberId),
}

impl Node {
    /// The owner of routing key `ip:port` under the current routing table.
    pub fn owner_of(&self, key: &str) -> MemberId {
        self.routing.load().owner(key).unwrap_or(self.me())
    }

    /// Where a write for the ip:port client `key` (`"ip:port"`) must go.
    pub fn route(&self, key: &str) -> Route {
        let owner = self.owner_of(key);
        if owner == self.me() {
            Route::Local
        } else {
            Route::Remote(owner)
        }
    }

    /// The routable members (UP and SUSPICIOUS), in address order.
    pub fn routable_members(&self) -> Vec<MemberId> {
        self.routing.load().members().to_vec()
    }

    /// The member a replicated client `id` is attributed to: the routing owner of an
    /// ip:port client, `sender` for a connection client.
    /// (`id` is the id's text: an ip:port client's holds a `#`, its routing key is what
    /// comes before, as [`crate::model::ClientId::routing_key`] says.)
    pub(super) fn attribution(&self, id: &str, sender: MemberId) -> MemberId {
        match crate::model::first_hash_sign(id.as_bytes()) {
            Some(k) => self.owner_of(&id[..k]),
            None => sender,
        }
    }
}
