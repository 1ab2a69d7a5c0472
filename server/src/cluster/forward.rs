//! Writes of ip:port clients: routed to their owner, applied there, answered per item.
//!
//! Every ip:port write (register, deregister, heartbeat) names an `ip:port`; routing
//! ([`distro_core::Node::route`]) decides which member owns it. A node applies the items
//! it owns and forwards the rest to their owners in batches, one `Peer.Forward` call per
//! owner, as Nacos's `DistroFilter` forwards HTTP writes. A forwarded item is never
//! forwarded again: if the receiver does not consider itself the owner (divergent member
//! views) it answers 421, a retryable error, and counts it.

use crate::clock::Clock;
use crate::cluster::peer_client::PeerClients;
use crate::cluster::wire::{instance_spec, service_spec};
use crate::metrics::{Metrics, Outcome};
use crate::proto::distro as pb;
use distro_core::model::ClientId;
use distro_core::{BeatResult, MemberId, Node, Route, WriteError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// HTTP-like item codes (see `ItemResult` in `distro.proto`).
pub mod code {
    /// Applied.
    pub const OK: u32 = 200;
    /// Invalid input.
    pub const INVALID: u32 = 400;
    /// Heartbeat of an instance that is not registered: register again.
    pub const NOT_FOUND: u32 = 404;
    /// The receiver of a forwarded write is not its owner (divergent member views).
    pub const MISDIRECTED: u32 = 421;
    /// The owner could not be reached.
    pub const UNAVAILABLE: u32 = 503;
}

/// One ip:port write.
#[derive(Debug, Clone)]
pub enum Item {
    /// Register (or update) an instance.
    Register(pb::Registration),
    /// Deregister an instance.
    Deregister(pb::Registration),
    /// Heartbeat.
    Beat(pb::Beat),
}

impl Item {
    fn address(&self) -> Result<(String, u16), pb::ItemResult> {
        let (ip, port) = match self {
            Item::Register(r) | Item::Deregister(r) => {
                let i = r
                    .instance
                    .as_ref()
                    .ok_or_else(|| invalid("instance: is required"))?;
                (i.ip.clone(), i.port)
            }
            Item::Beat(b) => (b.ip.clone(), b.port),
        };
        if ip.is_empty() {
            return Err(invalid("invalid ip: must not be empty"));
        }
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid(&format!("invalid port: {port} is outside 1..=65535")))?;
        Ok((ip, port))
    }

    /// The operation name for metrics.
    pub fn op(&self) -> &'static str {
        match self {
            Item::Register(_) => "register",
            Item::Deregister(_) => "deregister",
            Item::Beat(_) => "beat",
        }
    }
}

fn invalid(msg: &str) -> pb::ItemResult {
    pb::ItemResult {
        code: code::INVALID,
        message: msg.to_string(),
    }
}

fn ok() -> pb::ItemResult {
    pb::ItemResult {
        code: code::OK,
        message: String::new(),
    }
}

/// Applies and forwards ip:port writes.
pub struct Forwarder {
    node: Arc<Node>,
    clock: Clock,
    peers: Arc<PeerClients>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    /// Writes through `node`, forwarding with `peers`.
    pub fn new(
        node: Arc<Node>,
        clock: Clock,
        peers: Arc<PeerClients>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node,
            clock,
            peers,
            metrics,
        }
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Applies `items` that this node owns and forwards the others to their owners (one
    /// batch per owner, concurrently). Results are in the order of `items`.
    pub async fn apply(&self, items: Vec<Item>) -> Vec<pb::ItemResult> {
        let mut results: Vec<Option<pb::ItemResult>> = vec![None; items.len()];
        let mut remote: BTreeMap<MemberId, Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            match item.address() {
                Err(e) => results[i] = Some(e),
                Ok((ip, port)) => match self.node.route(&format!("{ip}:{port}")) {
                    Route::Local => results[i] = Some(self.apply_owned(item, &ip, port)),
                    Route::Remote(owner) => remote.entry(owner).or_default().push(i),
                },
            }
        }
        let calls = remote.into_iter().map(|(owner, idx)| {
            let mut req = pb::ForwardRequest::default();
            for &i in &idx {
                match &items[i] {
                    Item::Register(r) => req.registrations.push(r.clone()),
                    Item::Deregister(r) => req.deregistrations.push(r.clone()),
                    Item::Beat(b) => req.beats.push(b.clone()),
                }
            }
            async move { (owner, idx, self.peers.forward(owner, req).await) }
        });
        for (owner, idx, res) in futures::future::join_all(calls).await {
            match res {
                Ok(resp) => {
                    let (mut r, mut d, mut b) = (
                        resp.registrations.into_iter(),
                        resp.deregistrations.into_iter(),
                        resp.beats.into_iter(),
                    );
                    for i in idx {
                        let next = match &items[i] {
                            Item::Register(_) => r.next(),
                            Item::Deregister(_) => d.next(),
                            Item::Beat(_) => b.next(),
                        };
                        let result = next.unwrap_or_else(|| pb::ItemResult {
                            code: code::UNAVAILABLE,
                            message: "the owner's answer had too few results".into(),
                        });
                        self.metrics.forwarded(Outcome::of_code(result.code), 1);
                        results[i] = Some(result);
                    }
                }
                Err(status) => {
                    let addr = self.node.members().addr(owner).to_string();
                    self.metrics
                        .forwarded(Outcome::Unavailable, idx.len() as u64);
                    for i in idx {
                        results[i] = Some(pb::ItemResult {
                            code: code::UNAVAILABLE,
                            message: format!(
                                "owner {addr} unreachable ({}); retry",
                                status.message()
                            ),
                        });
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| invalid("internal: no result")))
            .collect()
    }

    /// Applies a forwarded batch: every item must be owned here (never forwarded again).
    pub fn apply_forwarded(&self, req: &pb::ForwardRequest) -> pb::ForwardResponse {
        let one = |item: Item| -> pb::ItemResult {
            let (ip, port) = match item.address() {
                Ok(a) => a,
                Err(e) => return e,
            };
            match self.node.route(&format!("{ip}:{port}")) {
                Route::Local => self.apply_owned(&item, &ip, port),
                Route::Remote(owner) => {
                    self.metrics.forwarded(Outcome::Misdirected, 1);
                    pb::ItemResult {
                        code: code::MISDIRECTED,
                        message: format!(
                            "receive invalid redirect request from peer {}: this node routes {ip}:{port} to {} (divergent member views); retry",
                            req.from,
                            self.node.members().addr(owner)
                        ),
                    }
                }
            }
        };
        pb::ForwardResponse {
            registrations: req
                .registrations
                .iter()
                .map(|r| one(Item::Register(r.clone())))
                .collect(),
            deregistrations: req
                .deregistrations
                .iter()
                .map(|r| one(Item::Deregister(r.clone())))
                .collect(),
            beats: req
                .beats
                .iter()
                .map(|b| one(Item::Beat(b.clone())))
                .collect(),
        }
    }

    /// Applies an item this node owns.
    fn apply_owned(&self, item: &Item, ip: &str, port: u16) -> pb::ItemResult {
        let now = (self.clock)();
        let client = ClientId::ip_port(ip, port);
        let write = |r: Result<distro_core::WriteResult, WriteError>| match r {
            Ok(_) => ok(),
            Err(e) => invalid(&e.to_string()),
        };
        match item {
            Item::Register(r) => {
                let spec = instance_spec(r.instance.as_ref().expect("address() checked it"));
                write(
                    self.node
                        .register(&client, &service_spec(r.service.as_ref()), &spec, now),
                )
            }
            Item::Deregister(r) => write(self.node.deregister(
                &client,
                &service_spec(r.service.as_ref()),
                now,
            )),
            Item::Beat(b) => match self
                .node
                .beat(&client, &service_spec(b.service.as_ref()), now)
            {
                Ok(BeatResult::Ok) => ok(),
                Ok(BeatResult::NotFound) => pb::ItemResult {
                    code: code::NOT_FOUND,
                    message: format!(
                        "{ip}:{port} is not registered in this service; register again"
                    ),
                },
                Err(e) => invalid(&e.to_string()),
            },
        }
    }
}
