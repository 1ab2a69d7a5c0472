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
        match first_hash_sign(id.as_bytes()) {
            Some(k) => self.owner_of(&id[..k]),
            None => sender,
        }
    }
}

/// The position of the first `#` in `b`, eight bytes at a time (a replica asks this of
/// every client id it applies; `str::split_once` walks a char searcher).
fn first_hash_sign(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const HASHES: u64 = ONES * b'#' as u64;
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for c in chunks.by_ref() {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes")) ^ HASHES;
        // The lowest byte of `w` that is zero sets the lowest high bit here (a borrow can
        // set a higher one only above a zero byte).
        let zero = w.wrapping_sub(ONES) & !w & HIGHS;
        if zero != 0 {
            return Some(at + zero.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b'#')
        .map(|k| at + k)
}

#[cfg(test)]
mod tests {
    use super::first_hash_sign;

    #[test]
    fn the_first_hash_sign_is_found_at_every_position() {
        for len in 0..40 {
            for at in 0..=len {
                let mut b = vec![b'a'; len];
                if at < len {
                    b[at] = b'#';
                    // Later ones, and bytes a borrow could confuse, change nothing.
                    for (k, c) in b.iter_mut().enumerate().skip(at + 1) {
                        *c = if k % 3 == 0 { b'#' } else { b'"' };
                    }
                }
                let want = b.iter().position(|&c| c == b'#');
                assert_eq!(first_hash_sign(&b), want, "{len} bytes, # at {at}");
            }
        }
        assert_eq!(first_hash_sign(b"10.0.0.7:8080#true"), Some(13));
        assert_eq!(first_hash_sign("é#".as_bytes()), Some(2));
    }
}
