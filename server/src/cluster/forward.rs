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
use crate::cluster::wire;
use crate::metrics::{Metrics, Outcome};
use crate::proto::distro as pb;
use crate::proto::results::ForwardResponse;
use crate::proto::writes::{self, Received};
use distro_core::model::{ClientId, DEFAULT_CLUSTER};
use distro_core::{BeatResult, InstanceSpec, MemberId, Node, Route, ServiceSpec, WriteError};
use distro_core::{ServiceHint, WriteHints};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A received item's address, client and service hint (`WriteHints::service_at`), or why
/// it is refused.
type Addressed<'a> = Result<(&'a str, u16, ClientId, Option<ServiceHint>), ItemResult>;

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

/// The instance a deregistration or a heartbeat names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// IP address or host name.
    pub ip: String,
    /// Port as sent (checked to be 1..=65535 before routing).
    pub port: u32,
    /// Cluster name (empty: `DEFAULT`).
    pub cluster: String,
}

/// One ip:port write, in core types.
#[derive(Debug, Clone)]
pub enum Item {
    /// Register (or update) an instance.
    Register(ServiceSpec, InstanceSpec),
    /// Deregister an instance.
    Deregister(ServiceSpec, Target),
    /// Heartbeat.
    Beat(ServiceSpec, Target),
    /// A write of `Kind` received as protobuf, kept as its bytes: applied here in core
    /// types (`Item::owned`), forwarded as it came.
    Received(Kind, Received),
}

impl Item {
    fn address(&self) -> Result<(&str, u16), ItemResult> {
        let (ip, port) = match self {
            Item::Register(_, i) => (i.ip.as_str(), i.port),
            Item::Received(kind, r) => {
                let (ip, port) = r
                    .address()
                    .ok_or_else(|| ItemResult::invalid("instance: is required"))?;
                if *kind != Kind::Register {
                    // As a deregistration's or a beat's below.
                    distro_core::model::validate_ip(ip)
                        .map_err(|e| ItemResult::invalid(&e.to_string()))?;
                }
                (ip, i64::from(port))
            }
            Item::Deregister(_, t) | Item::Beat(_, t) => {
                // A registration's address is checked by its owner's core, which refuses
                // it whichever node that is (nothing unchecked is stored); a
                // deregistration's or a beat's is checked here, so an address the core
                // refuses is never routed
                // (the key routed on, `ip:port`, and the core's `ClientId::routing_key`, up
                // to the first '#', agree for every address it accepts).
                distro_core::model::validate_ip(&t.ip)
                    .map_err(|e| ItemResult::invalid(&e.to_string()))?;
                (t.ip.as_str(), i64::from(t.port))
            }
        };
        if ip.is_empty() {
            return Err(ItemResult::invalid("invalid ip: must not be empty"));
        }
        let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
            ItemResult::invalid(&format!("invalid port: {port} is outside 1..=65535"))
        })?;
        Ok((ip, port))
    }

    /// The service's name as received (namespace, group, name; defaults not applied).
    fn service(&self) -> (&str, &str, &str) {
        match self {
            Item::Register(s, _) | Item::Deregister(s, _) | Item::Beat(s, _) => {
                (&s.namespace, &s.group, &s.name)
            }
            Item::Received(_, r) => r.service(),
        }
    }

    /// Where the hints find this item's service (`WriteHints::service_at`).
    fn service_hint(&self, hints: &WriteHints<'_>) -> Option<ServiceHint> {
        let (ns, group, name) = self.service();
        hints.service_at(ns, group, name)
    }

    fn kind(&self) -> Kind {
        match self {
            Item::Register(..) => Kind::Register,
            Item::Deregister(..) => Kind::Deregister,
            Item::Beat(..) => Kind::Beat,
            Item::Received(kind, _) => *kind,
        }
    }

    /// A received item in core types, to apply it here (`ip`: its address's, as
    /// [`Item::address`] read it; `None`: a registration or
    /// deregistration without its instance, refused by [`Item::address`] before it gets
    /// here). A deregistration's or heartbeat's target carries its port only: its owner
    /// applies it by client id and service, and the ip and cluster are not copied.
    fn owned(kind: Kind, r: &Received, ip: &str) -> Option<Item> {
        let (ns, group, name) = r.service();
        let service = ServiceSpec::new(ns, group, name);
        let i = r.instance_at(ip)?;
        Some(match kind {
            Kind::Register => Item::Register(
                service,
                InstanceSpec {
                    ip: i.ip.to_owned(),
                    port: i64::from(i.port),
                    weight: i.weight,
                    healthy: i.healthy,
                    enabled: i.enabled,
                    // Empty means `DEFAULT` (see `InstanceSpec::cluster`): no copy of it.
                    cluster: if i.cluster == DEFAULT_CLUSTER {
                        String::new()
                    } else {
                        i.cluster.to_owned()
                    },
                    metadata: i.metadata(),
                    instance_id: (!i.instance_id.is_empty()).then(|| i.instance_id.to_owned()),
                },
            ),
            Kind::Deregister | Kind::Beat => {
                let target = Target {
                    port: i.port,
                    ..Target::default()
                };
                if matches!(kind, Kind::Beat) {
                    Item::Beat(service, target)
                } else {
                    Item::Deregister(service, target)
                }
            }
        })
    }

    /// The operation name for metrics.
    pub fn op(&self) -> &'static str {
        match self.kind() {
            Kind::Register => "register",
            Kind::Deregister => "deregister",
            Kind::Beat => "beat",
        }
    }
}

/// Which list of a `Peer.Forward` exchange an item travels in (and what a received
/// item is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A registration.
    Register = 0,
    /// A deregistration.
    Deregister = 1,
    /// A heartbeat.
    Beat = 2,
}

impl Kind {
    /// The field of its list in `ForwardRequest`.
    fn forward_tag(self) -> u32 {
        self as u32 + 2
    }
}

/// The items forwarded to one owner: their positions in the batch and kinds, and the
/// items encoded as its `ForwardRequest` (without `from`).
type Outgoing = (Vec<(usize, Kind)>, bytes::BytesMut);

/// The answer to one item: a code of [`code`] and, unless it is `OK`, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult {
    /// One of [`code`] (or what an owner answered).
    pub code: u32,
    /// Why, for anything but `OK`.
    pub message: String,
}

impl ItemResult {
    /// Applied.
    pub fn ok() -> Self {
        Self {
            code: code::OK,
            message: String::new(),
        }
    }

    /// Refused as invalid input, for `message`.
    pub fn invalid(message: &str) -> Self {
        Self {
            code: code::INVALID,
            message: message.to_string(),
        }
    }

    fn unavailable(message: String) -> Self {
        Self {
            code: code::UNAVAILABLE,
            message,
        }
    }

    /// The protobuf form (native API answers, forwarded answers).
    pub fn into_proto(self) -> pb::ItemResult {
        pb::ItemResult {
            code: self.code,
            message: self.message,
        }
    }

    fn from_proto(r: pb::ItemResult) -> Self {
        Self {
            code: r.code,
            message: r.message,
        }
    }
}

/// Appends `item` (its address checked, so its port fits) to a `Peer.Forward` request: a
/// received item as the bytes it came in, any other encoded from its core types.
fn put_forward(item: Item, buf: &mut bytes::BytesMut) {
    let tag = item.kind().forward_tag();
    match item {
        Item::Received(_, r) => writes::put_delimited(tag, r.as_bytes(), buf),
        Item::Register(s, i) => {
            let r = pb::Registration {
                service: Some(wire::service_spec_into_proto(s)),
                instance: Some(pb::Instance {
                    port: u32::try_from(i.port).unwrap_or_default(),
                    weight: i.weight,
                    healthy: i.healthy,
                    enabled: i.enabled,
                    metadata: i.metadata.into_iter().collect(),
                    instance_id: i.instance_id.unwrap_or_default(),
                    ip: i.ip,
                    cluster: i.cluster,
                }),
            };
            prost::encoding::message::encode(tag, &r, buf);
        }
        Item::Deregister(s, t) => {
            let r = pb::Registration {
                service: Some(wire::service_spec_into_proto(s)),
                instance: Some(pb::Instance {
                    ip: t.ip,
                    port: t.port,
                    cluster: t.cluster,
                    ..Default::default()
                }),
            };
            prost::encoding::message::encode(tag, &r, buf);
        }
        Item::Beat(s, t) => {
            let b = pb::Beat {
                service: Some(wire::service_spec_into_proto(s)),
                ip: t.ip,
                port: t.port,
                cluster: t.cluster,
            };
            prost::encoding::message::encode(tag, &b, buf);
        }
    }
}

impl Item {
    /// About the bytes the item takes in a `Peer.Forward` request (exact for a received
    /// one), to size the request once.
    fn forward_size(&self) -> usize {
        match self {
            Item::Received(_, r) => r.as_bytes().len() + 4,
            _ => 128,
        }
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
    pub async fn apply(&self, items: Vec<Item>) -> Vec<ItemResult> {
        let mut results: Vec<Option<ItemResult>> = vec![None; items.len()];
        // Per owner: the items' positions and kinds, and the items themselves.
        // The owner of each item forwarded elsewhere (`None`: answered here).
        let mut owners: Vec<Option<MemberId>> = vec![None; items.len()];
        {
            // One load of the routing table for the batch (not held across the await), and
            // one reading of the clock: the batch's items are applied at one time.
            let routes = self.node.routes();
            let now = (self.clock)();
            // The routing keys spelled in one buffer: an item forwarded elsewhere needs no
            // client id here. The items owned here are applied after the walk, each
            // with the next one's memory asked for ahead of it (`WriteHints`).
            let mut key = String::new();
            let mut local = Vec::new();
            let hints = self.node.registry().write_hints();
            for (i, item) in items.iter().enumerate() {
                match item.address() {
                    Err(e) => results[i] = Some(e),
                    Ok((ip, port)) => match routes.route(spell_key(&mut key, ip, port)) {
                        Route::Local => {
                            let service = item.service_hint(&hints);
                            local.push((i, ClientId::ip_port(ip, port), ip, port, service));
                        }
                        Route::Remote(owner) => owners[i] = Some(owner),
                    },
                }
            }
            for (k, (i, client, ip, port, _)) in local.iter().enumerate() {
                if let Some((_, next, .., service)) = local.get(k + 1) {
                    hints.client(next);
                    if let Some(at) = service {
                        hints.service(*at);
                    }
                }
                if let Some(&(.., Some(at))) = local.get(k + 2) {
                    hints.service_early(at);
                }
                results[*i] = Some(self.apply_owned(&items[*i], client, ip, *port, now));
            }
        }
        // Per owner: the items' positions and kinds, and their request, each sized once
        // (counted first: no regrowth).
        let mut sizes: BTreeMap<MemberId, (usize, usize)> = BTreeMap::new();
        for (item, owner) in items.iter().zip(&owners) {
            if let Some(owner) = owner {
                let (n, bytes) = sizes.entry(*owner).or_default();
                *n += 1;
                *bytes += item.forward_size();
            }
        }
        let mut remote: BTreeMap<MemberId, Outgoing> = sizes
            .into_iter()
            .map(|(owner, (n, bytes))| {
                // Room for the gRPC prefix and `from` (added by the peer client).
                let req = crate::h2_client::frame_buffer(bytes + 64);
                (owner, (Vec::with_capacity(n), req))
            })
            .collect();
        for ((i, item), owner) in items.into_iter().enumerate().zip(owners) {
            if let Some((idx, req)) = owner.and_then(|o| remote.get_mut(&o)) {
                idx.push((i, item.kind()));
                // Only here, on the way to another node, does a write become protobuf.
                put_forward(item, req);
            }
        }
        let calls = remote.into_iter().map(|(owner, (idx, req))| async move {
            (owner, idx, self.peers.forward(owner, req).await)
        });
        for (owner, idx, res) in futures::future::join_all(calls).await {
            match res {
                Ok(resp) => {
                    let (mut r, mut d, mut b) = (
                        resp.registrations.into_iter(),
                        resp.deregistrations.into_iter(),
                        resp.beats.into_iter(),
                    );
                    for (i, kind) in idx {
                        let next = match kind {
                            Kind::Register => r.next(),
                            Kind::Deregister => d.next(),
                            Kind::Beat => b.next(),
                        };
                        let result = next.map(ItemResult::from_proto).unwrap_or_else(|| {
                            ItemResult::unavailable("the owner's answer had too few results".into())
                        });
                        self.metrics.forwarded(Outcome::of_code(result.code), 1);
                        results[i] = Some(result);
                    }
                }
                Err(status) => {
                    let addr = self.node.members().addr(owner).to_string();
                    self.metrics
                        .forwarded(Outcome::Unavailable, idx.len() as u64);
                    for (i, _) in idx {
                        results[i] = Some(ItemResult::unavailable(format!(
                            "owner {addr} unreachable ({}); retry",
                            status.message()
                        )));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| ItemResult::invalid("internal: no result")))
            .collect()
    }

    /// Applies a forwarded batch: every item must be owned here (never forwarded again).
    pub fn apply_forwarded(&self, req: writes::ForwardRequest) -> ForwardResponse {
        // One load of the routing table and one reading of the clock for the batch.
        let routes = self.node.routes();
        let now = (self.clock)();
        let one = |item: &Item, at: &Addressed<'_>| {
            let result = match at {
                Err(e) => e.clone(),
                Ok((ip, port, client, _)) => match routes.route(routing_key(client)) {
                    Route::Local => self.apply_owned(item, client, ip, *port, now),
                    Route::Remote(owner) => {
                        self.metrics.forwarded(Outcome::Misdirected, 1);
                        ItemResult {
                            code: code::MISDIRECTED,
                            message: format!(
                                "receive invalid redirect request from peer {}: this node routes {ip}:{port} to {} (divergent member views); retry",
                                req.from,
                                self.node.members().addr(owner)
                            ),
                        }
                    }
                },
            };
            result.into_proto()
        };
        // Each item's address, client and service hint taken before the first is applied,
        // so that the next ones' memory is asked for while an item is applied
        // (`WriteHints`).
        let hints = self.node.registry().write_hints();
        let list = |kind: Kind, items: Vec<Received>| -> Vec<pb::ItemResult> {
            let items: Vec<Item> = items.into_iter().map(|r| Item::Received(kind, r)).collect();
            let at: Vec<Addressed<'_>> = items
                .iter()
                .map(|i| {
                    i.address().map(|(ip, port)| {
                        (
                            ip,
                            port,
                            ClientId::ip_port(ip, port),
                            i.service_hint(&hints),
                        )
                    })
                })
                .collect();
            (0..items.len())
                .map(|k| {
                    if let Some(Ok((_, _, next, service))) = at.get(k + 1) {
                        hints.client(next);
                        if let Some(s) = service {
                            hints.service(*s);
                        }
                    }
                    if let Some(Ok((.., Some(s)))) = at.get(k + 2) {
                        hints.service_early(*s);
                    }
                    one(&items[k], &at[k])
                })
                .collect()
        };
        ForwardResponse {
            registrations: list(Kind::Register, req.registrations),
            deregistrations: list(Kind::Deregister, req.deregistrations),
            beats: list(Kind::Beat, req.beats),
        }
    }

    /// Applies an item this node owns (`client` is `ip:port`'s client) at `now`.
    fn apply_owned(
        &self,
        item: &Item,
        client: &ClientId,
        ip: &str,
        port: u16,
        now: distro_core::time::Millis,
    ) -> ItemResult {
        let owned;
        let item = match item {
            Item::Received(kind, r) => match Item::owned(*kind, r, ip) {
                Some(i) => {
                    owned = i;
                    &owned
                }
                None => return ItemResult::invalid("instance: is required"),
            },
            item => item,
        };
        let write = |r: Result<distro_core::WriteResult, WriteError>| match r {
            Ok(_) => ItemResult::ok(),
            Err(e) => ItemResult::invalid(&e.to_string()),
        };
        match item {
            Item::Register(service, instance) => {
                write(self.node.register(client, service, instance, now))
            }
            Item::Deregister(service, _) => write(self.node.deregister(client, service, now)),
            Item::Beat(service, _) => match self.node.beat(client, service, now) {
                Ok(BeatResult::Ok) => ItemResult::ok(),
                // A node still loading its snapshot (one that just joined) cannot say that
                // a client is unknown: the client retries instead of registering again.
                Ok(BeatResult::NotFound) if !self.node.is_loaded() => ItemResult::unavailable(
                    format!("{ip}:{port}: this node is still loading its snapshot; retry"),
                ),
                Ok(BeatResult::NotFound) => ItemResult {
                    code: code::NOT_FOUND,
                    message: format!(
                        "{ip}:{port} is not registered in this service; register again"
                    ),
                },
                Err(e) => ItemResult::invalid(&e.to_string()),
            },
            Item::Received(..) => ItemResult::invalid("internal: a received item left as such"),
        }
    }
}

/// `ip:port` spelled into `buf` (reused across a batch): the routing key of
/// `ClientId::ip_port(ip, port)` ([`routing_key`]) without building the id.
fn spell_key<'b>(buf: &'b mut String, ip: &str, port: u16) -> &'b str {
    buf.clear();
    buf.push_str(ip);
    buf.push(':');
    buf.push_str(itoa::Buffer::new().format(port));
    buf
}

/// The routing key of `ClientId::ip_port(ip, port)`: `ip:port`, its id without the
/// `#true` (exactly, even for an address not validated yet).
fn routing_key(client: &ClientId) -> &str {
    let id = client.as_str();
    id.strip_suffix("#true").unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spelled_key_is_the_client_ids_routing_key() {
        let mut buf = String::new();
        for (ip, port) in [
            ("10.0.0.7", 8080),
            ("192.168.1.1", 1),
            ("host.example#true", 65535),
            ("::1", 80),
            ("", 7),
        ] {
            let id = ClientId::ip_port(ip, port);
            assert_eq!(
                spell_key(&mut buf, ip, port),
                routing_key(&id),
                "{ip}:{port}"
            );
        }
    }

    /// A batch reads the clock once: its items are applied at one time (a forwarded
    /// batch's too).
    #[test]
    fn a_batch_reads_the_clock_once() {
        use crate::fault::PeerGate;
        use distro_core::{Config, MemberList};
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        let node = Arc::new(
            Node::new(
                Config::default(),
                MemberList::new("127.0.0.1:8848", &[]).unwrap(),
                1,
            )
            .unwrap(),
        );
        let metrics = Arc::new(Metrics::default());
        let peers = Arc::new(
            PeerClients::new(
                node.clone(),
                |a: &str| a.to_string(),
                None,
                None,
                None,
                Arc::new(PeerGate::default()),
                metrics.clone(),
            )
            .unwrap(),
        );
        let reads = Arc::new(AtomicU64::new(0));
        let counted = reads.clone();
        let clock: Clock = Arc::new(move || 1_000 + counted.fetch_add(1, SeqCst));
        let f = Forwarder::new(node, clock, peers, metrics);
        let items = |n: u32| -> Vec<Item> {
            (0..n)
                .map(|i| {
                    Item::Register(
                        ServiceSpec::new("", "", "svc"),
                        InstanceSpec::new(&format!("10.0.0.{i}"), 80),
                    )
                })
                .collect()
        };
        let results = futures::executor::block_on(f.apply(items(5)));
        assert!(results.iter().all(|r| r.code == code::OK), "{results:?}");
        assert_eq!(reads.load(SeqCst), 1);
        let mut req = bytes::BytesMut::new();
        for item in items(3) {
            put_forward(item, &mut req);
        }
        let req = <writes::ForwardRequest as prost::Message>::decode(&req[..]).unwrap();
        let answer = f.apply_forwarded(req);
        assert!(answer.registrations.iter().all(|r| r.code == code::OK));
        assert_eq!(answer.registrations.len(), 3);
        assert_eq!(reads.load(SeqCst), 2);
    }

    /// A deregistration's or a beat's address is checked before it is routed: one the
    /// core would refuse (a '#' makes the core's routing key differ from `ip:port`) gets
    /// an error naming the field; a valid one is routed.
    #[test]
    fn deregistrations_and_beats_of_invalid_addresses_are_refused_before_routing() {
        let target = |ip: &str| Target {
            ip: ip.to_string(),
            port: 80,
            cluster: String::new(),
        };
        let service = || ServiceSpec::new("", "", "svc");
        for ip in ["10.0.0.1#x", "a b", "", "10.0.0.1:80"] {
            for item in [
                Item::Deregister(service(), target(ip)),
                Item::Beat(service(), target(ip)),
            ] {
                let e = item.address().expect_err(ip);
                assert_eq!(e.code, code::INVALID, "{ip:?}");
                assert!(
                    e.message.starts_with("invalid ip: "),
                    "{ip:?}: {}",
                    e.message
                );
            }
        }
        for ip in ["10.0.0.1", "host-1.example", "::1"] {
            let item = Item::Beat(service(), target(ip));
            assert_eq!(item.address().map_err(|e| e.message), Ok((ip, 80)));
        }
    }
}
