//! Routing: which member owns an `ip:port` client.
//!
//! Two routers sit behind the [`Router`] trait:
//!
//! * [`ModuloRouter`] is Nacos's `DistroMapper`: `distro_hash(key) % n` over the addresses
//!   of UP and SUSPICIOUS members sorted lexicographically. It is the default, so a mixed
//!   fleet routes identically, but a member change moves most keys.
//! * [`RendezvousRouter`] (highest random weight) gives each key to the member with the
//!   highest `mix64(hash(key) ^ hash(member))`; a member change moves only the keys that
//!   member gains or loses.
//!
//! Both are pure functions of the routable member set, so nodes that agree on the set
//! agree on every owner. Connection clients are never routed: their owner is the node
//! holding the connection.

use crate::hash::{
    distro_hash, distro_hash_of, java_ascii_hash_from, java_string_hash_from, mix64, stable_hash64,
};
use crate::member::{MemberId, MemberList};
use crate::model::{RoutingKey, decimal_digits, write_ip_port};

/// Maps a routing key (`"ip:port"`) to its owner among the routable members.
pub trait Router: Send + Sync {
    /// The owner of `key`, or `None` when no member is routable.
    fn owner(&self, key: &str) -> Option<MemberId>;
    /// The routable members, in address order.
    fn members(&self) -> &[MemberId];
}

/// Which router a node uses. Every node of a cluster must use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouterKind {
    /// Nacos-compatible modulo hashing (default).
    #[default]
    NacosModulo,
    /// Rendezvous (highest-random-weight) hashing.
    Rendezvous,
}

impl RouterKind {
    /// Parses `nacos` / `modulo` or `rendezvous`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nacos" | "modulo" => Some(Self::NacosModulo),
            "rendezvous" | "hrw" => Some(Self::Rendezvous),
            _ => None,
        }
    }

    /// The router's name as accepted by [`RouterKind::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NacosModulo => "nacos",
            Self::Rendezvous => "rendezvous",
        }
    }

    /// Builds the routing table over `routable` (members in any order).
    pub fn build(self, list: &MemberList, routable: &[MemberId]) -> RoutingTable {
        let mut ids = routable.to_vec();
        // In address order: every node numbers members its own way (ids are slots), but
        // all order them alike by address, as Nacos's modulo routing requires.
        ids.sort_by(|&a, &b| list.addr(a).as_str().cmp(list.addr(b).as_str()));
        ids.dedup();
        match self {
            Self::NacosModulo => RoutingTable::Modulo(ModuloRouter { members: ids }),
            Self::Rendezvous => RoutingTable::Rendezvous(RendezvousRouter::new(list, ids)),
        }
    }
}

/// Nacos's modulo router.
#[derive(Debug, Clone)]
pub struct ModuloRouter {
    members: Vec<MemberId>,
}

impl ModuloRouter {
    /// A router over `members`, which must be in address order.
    pub fn new(members: Vec<MemberId>) -> Self {
        Self { members }
    }
}

impl ModuloRouter {
    /// The owner of a key whose [`distro_hash`] is `h`.
    #[inline]
    fn owner_by_hash(&self, h: u32) -> Option<MemberId> {
        if self.members.is_empty() {
            return None;
        }
        Some(self.members[h as usize % self.members.len()])
    }
}

impl Router for ModuloRouter {
    fn owner(&self, key: &str) -> Option<MemberId> {
        self.owner_by_hash(distro_hash(key))
    }

    fn members(&self) -> &[MemberId] {
        &self.members
    }
}

/// Rendezvous (highest-random-weight) router.
#[derive(Debug, Clone)]
pub struct RendezvousRouter {
    members: Vec<MemberId>,
    hashes: Vec<u64>,
}

impl RendezvousRouter {
    /// A router over `members` of `list`.
    pub fn new(list: &MemberList, members: Vec<MemberId>) -> Self {
        let hashes = members
            .iter()
            .map(|&m| stable_hash64(list.addr(m).as_bytes()))
            .collect();
        Self { members, hashes }
    }
}

impl Router for RendezvousRouter {
    fn owner(&self, key: &str) -> Option<MemberId> {
        self.owner_by_hash(stable_hash64(key.as_bytes()))
    }

    fn members(&self) -> &[MemberId] {
        &self.members
    }
}

impl RendezvousRouter {
    /// The owner of a key whose [`stable_hash64`] is `k`.
    #[inline]
    fn owner_by_hash(&self, k: u64) -> Option<MemberId> {
        let mut best: Option<(u64, MemberId)> = None;
        for (&m, &h) in self.members.iter().zip(&self.hashes) {
            let score = mix64(k ^ h);
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, m));
            }
        }
        best.map(|(_, m)| m)
    }
}

/// A built router of either kind (static dispatch on the hot path).
#[derive(Debug, Clone)]
pub enum RoutingTable {
    /// See [`ModuloRouter`].
    Modulo(ModuloRouter),
    /// See [`RendezvousRouter`].
    Rendezvous(RendezvousRouter),
}

/// The longest ip an `ip:port` key is written on the stack for (longer: on the heap).
const STACK_IP: usize = 58;

impl RoutingTable {
    /// [`Router::owner`] of a routing key given as its text or as its pieces (the same
    /// member either way): the modulo router's Java hash is computed piece by piece, the
    /// rendezvous router's xxh3 reads `ip:port` written on the stack; no allocation.
    pub fn owner_of_key(&self, key: RoutingKey<'_>) -> Option<MemberId> {
        let (ip, port) = match key {
            RoutingKey::Text(s) => return self.owner(s),
            RoutingKey::IpPort(ip, port) => (ip, port),
        };
        match self {
            Self::Modulo(r) => {
                let (digits, n) = decimal_digits(port);
                let h = java_string_hash_from(0, ip);
                let h = java_ascii_hash_from(h, b":");
                r.owner_by_hash(distro_hash_of(java_ascii_hash_from(h, &digits[..n])))
            }
            Self::Rendezvous(r) if ip.len() <= STACK_IP => {
                let mut buf = [0u8; STACK_IP + 6];
                let n = write_ip_port(&mut buf, ip.as_bytes(), port);
                r.owner_by_hash(stable_hash64(&buf[..n]))
            }
            Self::Rendezvous(r) => r.owner(&format!("{ip}:{port}")),
        }
    }
}

impl Router for RoutingTable {
    fn owner(&self, key: &str) -> Option<MemberId> {
        match self {
            Self::Modulo(r) => r.owner(key),
            Self::Rendezvous(r) => r.owner(key),
        }
    }

    fn members(&self) -> &[MemberId] {
        match self {
            Self::Modulo(r) => r.members(),
            Self::Rendezvous(r) => r.members(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> MemberList {
        let addrs: Vec<String> = (1..=n).map(|i| format!("10.0.0.{i}:8848")).collect();
        MemberList::new(&addrs[0], &addrs).unwrap()
    }

    fn keys() -> Vec<String> {
        // 100,000 realistic ip:port keys from a fixed generator (no randomness needed).
        (0..100_000u32)
            .map(|i| {
                let x = crate::hash::mix64(u64::from(i) + 0x5eed);
                format!(
                    "10.{}.{}.{}:{}",
                    (x >> 8) & 0xff,
                    (x >> 16) & 0xff,
                    (x >> 24) & 0xff,
                    1024 + (x >> 32) % 60000
                )
            })
            .collect()
    }

    #[test]
    fn modulo_matches_nacos_distro_mapper() {
        // DistroMapper.mapSrv: servers.get(distroHash(tag) % servers.size()), servers sorted.
        let l = list(3);
        let r = RouterKind::NacosModulo.build(&l, &[MemberId(2), MemberId(0), MemberId(1)]);
        // distroHash("10.0.0.7:8080") = 1471568898 (JVM golden value); % 3 = 0.
        assert_eq!(r.owner("10.0.0.7:8080"), Some(MemberId(0)));
        // distroHash("192.168.1.1:80") = 835048317; % 3 = 0.
        assert_eq!(r.owner("192.168.1.1:80"), Some(MemberId(0)));
        // distroHash("10.0.0.1:1") = 1975361629; % 3 = 1.
        assert_eq!(r.owner("10.0.0.1:1"), Some(MemberId(1)));
        // distroHash("10.1.2.3:30001") = 1249438757; % 3 = 2.
        assert_eq!(r.owner("10.1.2.3:30001"), Some(MemberId(2)));
        // distroHash("1.2.3.4:5") = 1310052165; % 3 = 0; over two members % 2 = 1.
        let r2 = RouterKind::NacosModulo.build(&l, &[MemberId(0), MemberId(2)]);
        assert_eq!(r2.owner("1.2.3.4:5"), Some(MemberId(2)));
        assert_eq!(RouterKind::NacosModulo.build(&l, &[]).owner("x"), None);
    }

    /// A key given as its pieces has the owner of its text, under either router: ips of
    /// every form (a non-ASCII one hashed by UTF-16 units, one too long for the stack),
    /// ports of every length.
    #[test]
    fn a_key_in_pieces_has_the_owner_of_its_text() {
        let long = "h".repeat(STACK_IP + 1);
        let mut ips = vec![
            "10.0.0.1",
            "1.2.3.4",
            "::1",
            "fe80::1:2",
            "a",
            "host-1",
            "é",
        ];
        ips.push(&long);
        ips.push(&long[1..]);
        let l = list(5);
        for kind in [RouterKind::NacosModulo, RouterKind::Rendezvous] {
            for n in [1, 3, 5] {
                let ids: Vec<MemberId> = l.ids().take(n).collect();
                let r = kind.build(&l, &ids);
                for ip in &ips {
                    for port in [1, 9, 10, 80, 999, 1000, 8080, 10000, 65535] {
                        let text = format!("{ip}:{port}");
                        let want = r.owner(&text);
                        assert_eq!(r.owner_of_key(RoutingKey::IpPort(ip, port)), want, "{text}");
                        assert_eq!(r.owner_of_key(RoutingKey::Text(&text)), want, "{text}");
                    }
                }
                // Over enough keys, each member owns some: the hashes are not constant.
                let owners: std::collections::HashSet<_> = (0..1000u16)
                    .map(|p| r.owner_of_key(RoutingKey::IpPort("10.0.0.1", p + 1)))
                    .collect();
                assert_eq!(owners.len(), n, "{kind:?}");
            }
        }
        assert_eq!(
            RouterKind::NacosModulo
                .build(&l, &[])
                .owner_of_key(RoutingKey::IpPort("a", 1)),
            None
        );
    }

    #[test]
    fn rendezvous_is_pinned_and_balanced() {
        let l = list(3);
        let ids: Vec<MemberId> = l.ids().collect();
        let r = RouterKind::Rendezvous.build(&l, &ids);
        let mut counts = [0usize; 3];
        for k in keys() {
            counts[r.owner(&k).unwrap().index()] += 1;
        }
        for c in counts {
            assert!((30_000..36_700).contains(&c), "unbalanced: {counts:?}");
        }
    }

    /// Reports how many of 100,000 ip:port keys change owner when a 4th member joins a
    /// 3-member cluster, under each router. Run with `--nocapture` to see the figures.
    #[test]
    fn keys_moved_when_a_fourth_member_joins() {
        let l = list(4);
        let three = [MemberId(0), MemberId(1), MemberId(2)];
        let four = [MemberId(0), MemberId(1), MemberId(2), MemberId(3)];
        let keys = keys();
        let mut moved = Vec::new();
        for kind in [RouterKind::NacosModulo, RouterKind::Rendezvous] {
            let before = kind.build(&l, &three);
            let after = kind.build(&l, &four);
            let n = keys
                .iter()
                .filter(|k| before.owner(k) != after.owner(k))
                .count();
            println!(
                "router {:>10}: {n} of {} keys change owner when a 4th member joins ({:.1} %)",
                kind.as_str(),
                keys.len(),
                n as f64 * 100.0 / keys.len() as f64
            );
            moved.push(n);
        }
        // Modulo moves about 3/4 of the keys; rendezvous about 1/4 (only the newcomer's share).
        assert!(
            (70_000..80_000).contains(&moved[0]),
            "modulo moved {}",
            moved[0]
        );
        assert!(
            (22_000..28_000).contains(&moved[1]),
            "rendezvous moved {}",
            moved[1]
        );
    }
}
