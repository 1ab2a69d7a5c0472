//! Opening many connections at once, each starting at a seeded random server and moving
//! round-robin on failure (as Nacos clients pick servers).

use super::client::{ClientConfig, NacosClient};
use super::dial::Dialer;
use super::error::NacosError;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Which connections [`connect_many`] opens.
#[derive(Debug, Clone)]
pub struct ConnectPlan {
    /// The servers' SDK (gRPC) addresses.
    pub servers: Vec<SocketAddr>,
    /// Connection numbers `first_index .. first_index + count` (the number picks the
    /// source address and, with the seed, the first server).
    pub first_index: usize,
    /// How many connections.
    pub count: usize,
    /// Handshakes in progress at once (a listen backlog drops SYNs beyond ~1,000).
    pub parallel: usize,
    /// Tries per connection, over successive servers.
    pub attempts: usize,
    /// Seed of the first-server choice.
    pub seed: u64,
}

impl ConnectPlan {
    /// `count` connections to `servers`, 256 handshakes at a time, 3 tries each, seed 1.
    pub fn new(servers: Vec<SocketAddr>, count: usize) -> Self {
        Self {
            servers,
            first_index: 0,
            count,
            parallel: 256,
            attempts: 3,
            seed: 1,
        }
    }

    /// The first server tried by connection `index`: seeded, uniform over the list.
    pub fn start_of(&self, index: usize) -> usize {
        if self.servers.is_empty() {
            return 0;
        }
        (distro_core::rng::mix64(
            self.seed ^ (index as u64).wrapping_mul(distro_core::rng::GOLDEN_GAMMA),
        ) % self.servers.len() as u64) as usize
    }
}

/// Opens the plan's connections, at most `plan.parallel` handshakes at a time (each on
/// its own task), and returns one result per connection, in connection order.
pub async fn connect_many(
    config: Arc<ClientConfig>,
    dialer: Dialer,
    plan: &ConnectPlan,
) -> Vec<Result<NacosClient, NacosError>> {
    let servers: Arc<[SocketAddr]> = plan.servers.clone().into();
    let mut results: Vec<Option<Result<NacosClient, NacosError>>> =
        (0..plan.count).map(|_| None).collect();
    let mut running = JoinSet::new();
    let mut next = 0;
    let spawn_next = |running: &mut JoinSet<_>, next: &mut usize| {
        if *next >= plan.count {
            return false;
        }
        let k = *next;
        *next += 1;
        let index = plan.first_index + k;
        let start = plan.start_of(index);
        let (config, dialer, servers, attempts) = (
            config.clone(),
            dialer.clone(),
            servers.clone(),
            plan.attempts,
        );
        running.spawn(async move {
            let r =
                NacosClient::connect_any(&config, &dialer, &servers, start, index, attempts).await;
            (k, r)
        });
        true
    };
    while running.len() < plan.parallel.max(1) && spawn_next(&mut running, &mut next) {}
    while let Some(done) = running.join_next().await {
        if let Ok((k, r)) = done {
            results[k] = Some(r);
        }
        spawn_next(&mut running, &mut next);
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(NacosError::Handshake {
                    server: SocketAddr::from(([0, 0, 0, 0], 0)),
                    reason: "the connect task panicked".to_owned(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_servers_are_spread_and_seeded() {
        let servers: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let plan = ConnectPlan::new(servers, 3000);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            counts[plan.start_of(i)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        let other = ConnectPlan {
            seed: 2,
            ..plan.clone()
        };
        assert!((0..100).any(|i| plan.start_of(i) != other.start_of(i)));
        assert_eq!(plan.start_of(5), plan.start_of(5));
    }
}
