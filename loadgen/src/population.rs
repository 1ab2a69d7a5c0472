//! The simulated clients: a pure function of the seed and the client id, so that nothing
//! is stored per client but what the driver needs (its current node and state).
//!
//! Client `c` (in `0..clients`) is an ip:port process, `10.x.y.z:port`, whose address is a
//! seeded bijection of `c` (so addresses are unique and look scattered), with a seeded port
//! in `1024..65024`. It registers `instances_per_client` instances, in consecutive services
//! from a seeded first one. Service names look like `payment-api-17`.
//!
//! *Marker* clients (ids from [`MARKER_BASE`]) are the short-lived registrations of
//! replication probes and push measurements: `172.16.0.0/12` addresses that never collide
//! with regular clients, one service each.

use std::net::{Ipv4Addr, SocketAddrV4};

/// First id of marker clients.
pub const MARKER_BASE: u32 = 1 << 31;
/// Most regular clients (the 24 bits of `10.0.0.0/8`).
pub const MAX_CLIENTS: u64 = 1 << 24;

const MASK24: u32 = (1 << 24) - 1;

const AREAS: [&str; 24] = [
    "order",
    "payment",
    "user",
    "inventory",
    "cart",
    "search",
    "auth",
    "gateway",
    "notification",
    "billing",
    "catalog",
    "shipping",
    "review",
    "profile",
    "recommendation",
    "pricing",
    "coupon",
    "ledger",
    "media",
    "session",
    "feed",
    "risk",
    "report",
    "config",
];
const KINDS: [&str; 6] = ["service", "api", "worker", "backend", "gateway", "job"];

/// SplitMix64: the seeded hash behind every choice ([`distro_core::rng::mix64`]).
pub use distro_core::rng::mix64 as mix;

/// A small seeded generator (a SplitMix64 stream).
#[derive(Clone, Debug)]
pub struct Rng(distro_core::rng::SplitMix64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        // Offset by one step so that the stream is the one loadgen has always drawn
        // (`mix` of seed + 2γ, seed + 3γ, ...): seeded runs keep their clients.
        Self(distro_core::rng::SplitMix64::new(
            seed.wrapping_add(distro_core::rng::GOLDEN_GAMMA),
        ))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n.max(1))
    }
}

/// The simulated clients of one run (the whole id space; a shard drives a slice of it).
#[derive(Debug)]
pub struct Population {
    seed: u64,
    clients: u32,
    services: u32,
    per_client: u32,
    marker_prefix: u32,
    names: Vec<String>,
}

impl Population {
    /// `clients` clients (at most [`MAX_CLIENTS`]) over `services` services, each with
    /// `per_client` instances (at most `services`). `marker_prefix` (a shard index, < 16)
    /// keeps the marker addresses of concurrent shards apart. Extra services named
    /// `loadgen-probe-<marker_prefix>` follow the regular ones (see [`Self::probe_service`]).
    pub fn new(
        seed: u64,
        clients: u64,
        services: u32,
        per_client: u32,
        marker_prefix: u32,
    ) -> Result<Self, String> {
        if clients > MAX_CLIENTS {
            return Err(format!(
                "--clients: at most {MAX_CLIENTS} (one 10.0.0.0/8 address each), not {clients}"
            ));
        }
        if services == 0 {
            return Err("--services: must be at least 1".into());
        }
        if per_client == 0 || per_client > services {
            return Err(format!(
                "--instances-per-client: must be in 1..=--services ({services}), not {per_client}"
            ));
        }
        let mut names: Vec<String> = (0..services)
            .map(|s| {
                let h = mix(seed ^ 0x5e41_1ce5 ^ u64::from(s));
                format!(
                    "{}-{}-{s}",
                    AREAS[(h % AREAS.len() as u64) as usize],
                    KINDS[((h >> 16) % KINDS.len() as u64) as usize]
                )
            })
            .collect();
        names.push(format!("loadgen-probe-{marker_prefix}"));
        Ok(Self {
            seed,
            clients: u32::try_from(clients).unwrap_or(u32::MAX),
            services,
            per_client,
            marker_prefix: marker_prefix & 0xf,
            names,
        })
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of regular clients (the whole id space).
    pub fn clients(&self) -> u32 {
        self.clients
    }

    /// Number of regular services.
    pub fn services(&self) -> u32 {
        self.services
    }

    /// Instances per regular client.
    pub fn per_client(&self) -> u32 {
        self.per_client
    }

    /// The service probes register into (after the regular services).
    pub fn probe_service(&self) -> u32 {
        self.services
    }

    /// The name of service `s` (regular or probe).
    pub fn service_name(&self, s: u32) -> &str {
        self.names
            .get(s as usize)
            .map_or("loadgen-unknown", String::as_str)
    }

    /// Every service name, indexed by service number.
    pub fn service_names(&self) -> &[String] {
        &self.names
    }

    /// Service name → its index in [`Self::service_names`] (to map a watch or push event
    /// back to the service).
    pub fn service_index(&self) -> std::collections::HashMap<String, u32> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect()
    }

    /// The address of client `id` (regular or marker).
    pub fn addr(&self, id: u32) -> SocketAddrV4 {
        if id >= MARKER_BASE {
            let m = id - MARKER_BASE;
            let x = (self.marker_prefix << 16) | (m & 0xffff);
            let ip = Ipv4Addr::from(0xac10_0000 | (x & 0x000f_ffff));
            let port = 20_000 + ((m >> 16) % 40_000) as u16;
            return SocketAddrV4::new(ip, port);
        }
        let mut x = id & MASK24;
        let s = self.seed as u32;
        x = x.wrapping_mul(0x9e_3779) & MASK24; // odd: a bijection mod 2^24
        x ^= s & MASK24;
        x ^= x >> 12;
        x = x.wrapping_mul(0x2c_1b3d) & MASK24; // odd
        let ip = Ipv4Addr::from(0x0a00_0000 | x);
        let port = 1024 + (mix(self.seed ^ u64::from(id)) % 64_000) as u16;
        SocketAddrV4::new(ip, port)
    }

    /// The services client `id` registers instances in (for a marker, nothing: its
    /// service travels in its item).
    pub fn services_of(&self, id: u32) -> impl Iterator<Item = u32> + use<> {
        let (first, n) = if id >= MARKER_BASE {
            (0, 0)
        } else {
            let f =
                (mix(self.seed.rotate_left(17) ^ u64::from(id)) % u64::from(self.services)) as u32;
            (f, self.per_client)
        };
        let services = self.services;
        (0..n).map(move |i| (first + i) % services)
    }

    /// The node client `id` tries first: a seeded random index into the server list.
    pub fn first_node(&self, id: u32, nodes: usize) -> usize {
        (mix(self.seed.rotate_left(29) ^ u64::from(id)) % nodes.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn addresses_are_unique_and_seeded() {
        let p = Population::new(7, 200_000, 100, 2, 0).expect("valid");
        let set: HashSet<_> = (0..200_000).map(|c| *p.addr(c).ip()).collect();
        assert_eq!(set.len(), 200_000);
        let q = Population::new(8, 10, 100, 2, 0).expect("valid");
        assert_ne!(p.addr(1), q.addr(1));
        assert_eq!(
            p.addr(1),
            Population::new(7, 10, 100, 2, 0).expect("v").addr(1)
        );
        assert_eq!(p.addr(MARKER_BASE + 3).ip().octets()[0], 172);
    }

    #[test]
    fn services_are_distinct_per_client() {
        let p = Population::new(1, 10, 5, 3, 0).expect("valid");
        for c in 0..10 {
            let s: HashSet<u32> = p.services_of(c).collect();
            assert_eq!(s.len(), 3);
            assert!(s.iter().all(|s| *s < 5));
        }
        assert!(p.service_name(0).contains('-'));
        assert_eq!(p.service_name(p.probe_service()), "loadgen-probe-0");
        assert!(Population::new(1, 10, 5, 6, 0).is_err());
    }
}
