//! Client operations on the simulated cluster, following the server's rules.
//!
//! An ip:port write enters at any node and is routed to its owner in one hop; the owner
//! must agree that it is the owner (a forwarded write is never forwarded again), and the
//! write is acknowledged only if the owner applied it. A connection client's operations
//! go to the node holding the connection. Client traffic is not subject to message loss:
//! a client that cannot reach the owner simply gets no acknowledgement.

use super::SimCluster;
use crate::model::{ClientId, InstanceSpec, ServiceSpec};
use crate::node::{BeatResult, Route};
use crate::registry::{WriteError, WriteResult};

impl SimCluster {
    /// The node that would apply an ip:port write entering at `entry`: the entry itself
    /// or the owner it routes to, if reachable and agreeing that it is the owner.
    fn owner_for(&self, entry: usize, key: &str) -> Option<usize> {
        let e = self.nodes[entry].as_ref()?;
        match e.route(key) {
            Route::Local => Some(entry),
            Route::Remote(o) => {
                let o = self.node_of(entry, o)?;
                if !self.link_ok(entry, o) {
                    return None;
                }
                match self.nodes[o].as_ref()?.route(key) {
                    Route::Local => Some(o),
                    Route::Remote(_) => None,
                }
            }
        }
    }

    /// Registers `spec` for its ip:port client in `service`, entering at node `entry`.
    /// Returns the owner's result if the write was acknowledged.
    pub fn register_ip_port_spec(
        &mut self,
        entry: usize,
        service: &str,
        spec: &InstanceSpec,
    ) -> Option<Result<WriteResult, WriteError>> {
        let key = format!("{}:{}", spec.ip, spec.port);
        let owner = self.owner_for(entry, &key)?;
        let id = ClientId::ip_port(&spec.ip, spec.port as u16);
        let now = self.now;
        let node = self.nodes[owner].as_ref()?;
        Some(node.register(&id, &ServiceSpec::new("", "", service), spec, now))
    }

    /// Registers a default instance `ip:port` in `service` through node `entry`; returns
    /// the client id if acknowledged.
    pub fn register_ip_port(
        &mut self,
        entry: usize,
        service: &str,
        ip: &str,
        port: u16,
    ) -> Option<ClientId> {
        let spec = InstanceSpec::new(ip, port);
        match self.register_ip_port_spec(entry, service, &spec)? {
            Ok(_) => Some(ClientId::ip_port(ip, port)),
            Err(_) => None,
        }
    }

    /// Deregisters ip:port from `service` through node `entry`; true if acknowledged.
    pub fn deregister_ip_port(&mut self, entry: usize, service: &str, ip: &str, port: u16) -> bool {
        let key = format!("{ip}:{port}");
        let Some(owner) = self.owner_for(entry, &key) else {
            return false;
        };
        let now = self.now;
        let id = ClientId::ip_port(ip, port);
        self.nodes[owner].as_ref().is_some_and(|n| {
            n.deregister(&id, &ServiceSpec::new("", "", service), now)
                .is_ok()
        })
    }

    /// A heartbeat of ip:port for `service` through node `entry`, with the owner's current
    /// publication of that service (so a client can re-assert what it registered).
    pub fn beat_ip_port(
        &mut self,
        entry: usize,
        service: &str,
        ip: &str,
        port: u16,
    ) -> Option<(
        BeatResult,
        Option<std::sync::Arc<crate::model::Publication>>,
    )> {
        let key = format!("{ip}:{port}");
        let owner = self.owner_for(entry, &key)?;
        let now = self.now;
        let id = ClientId::ip_port(ip, port);
        let node = self.nodes[owner].as_ref()?;
        let spec = ServiceSpec::new("", "", service);
        let r = node.beat(&id, &spec, now).ok()?;
        let current = node.registry().get(id.as_str()).and_then(|c| {
            c.publications()
                .iter()
                .find(|p| p.service.name().as_str() == service)
                .map(|p| std::sync::Arc::new(p.get().clone()))
        });
        Some((r, current))
    }

    /// Registers for connection client `client` held by node `node`.
    pub fn register_connection(
        &mut self,
        node: usize,
        client: &ClientId,
        service: &str,
        spec: &InstanceSpec,
    ) -> Option<Result<WriteResult, WriteError>> {
        let now = self.now;
        let n = self.nodes[node].as_ref()?;
        Some(n.register(client, &ServiceSpec::new("", "", service), spec, now))
    }

    /// Deregisters `service` for connection client `client` held by node `node`.
    pub fn deregister_connection(&mut self, node: usize, client: &ClientId, service: &str) -> bool {
        let now = self.now;
        self.nodes[node].as_ref().is_some_and(|n| {
            n.deregister(client, &ServiceSpec::new("", "", service), now)
                .is_ok()
        })
    }

    /// Closes connection client `client` held by node `node`.
    pub fn close_connection(&mut self, node: usize, client: &ClientId) -> bool {
        let now = self.now;
        match self.nodes[node].as_ref() {
            Some(n) => {
                n.remove_client(client, now);
                true
            }
            None => false,
        }
    }
}
