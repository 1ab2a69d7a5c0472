//! Client operations: register, deregister, heartbeat, remove and query, on the owner.
//!
//! The API handlers call these after routing decided this node owns the client (a write
//! for a client owned elsewhere is forwarded by the server, never applied here). Each
//! write validates its input, changes the registry and schedules the client for sync to
//! every peer (`after_write`); replication itself is `sync.rs`'s.

use super::Node;
use crate::error::{Field, ValidationError};
use crate::member::{MemberId, MemberList, unpack_word};
use crate::model::{
    Built, ClientId, ClientKind, Converted, Instance, InstanceSpec, Publication, Service,
    ServiceSpec,
};
use crate::registry::{Client, Origin, ServiceView, WriteError, WriteResult, is_ip_port_text};
use crate::time::Millis;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// The result of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatResult {
    /// Recorded.
    Ok,
    /// The client does not publish to that service here (Nacos code 20404): the client
    /// must register again.
    NotFound,
}

impl Node {
    /// The service a write names. A held service's name was checked when it was first
    /// stored, so the checks of each part (which cost more than the lookup) run only for
    /// a name the registry does not hold yet; the answer, error or not, is `resolve`'s.
    fn resolve_service(&self, spec: &ServiceSpec) -> Result<Service, ValidationError> {
        self.registry
            .resolve_service(&spec.namespace, &spec.group, &spec.name)
    }

    /// Registers one instance for `client` in `service` (replacing what the client
    /// published to that service).
    ///
    /// Built from what the client holds (under its shard's lock, in the one lookup of the
    /// write): a client that publishes to the service already names it by its held
    /// [`Service`] (no lookup of the name, no checks of its parts), and the instance is
    /// compared with the held one field by field, so only the fields that changed are
    /// checked and looked up (see [`InstanceSpec::convert`]); a request equal to the held
    /// instance builds nothing (a heartbeat), and the registry does not compare it again.
    pub fn register(
        &self,
        client: &ClientId,
        spec: &ServiceSpec,
        instance: &InstanceSpec,
        now: Millis,
    ) -> Result<WriteResult, WriteError> {
        // The name as given first (see `ServiceSpec::given_parts`): split at `@@` when no
        // held publication has it.
        let given = ServiceSpec::given_parts(&spec.namespace, &spec.group, &spec.name);
        // One load of the members for the owner attribution and the peers to sync to.
        let members = self.write_members();
        let (r, stored) = self
            .registry
            .publish_built(client, members.me(), now, |old, slot| {
                // The held publication of the service named, and its index.
                let find = |(ns, group, name): (&str, &str, &str)| {
                    let pubs = old?.publications();
                    let (i, p) = match pubs.only() {
                        // Most clients publish to one service: an equality is cheaper.
                        Some(p) => (0, Some(p).filter(|p| p.service.is(ns, group, name))?),
                        None => {
                            let i = pubs
                                .binary_search_by(|p| p.service.cmp_parts(ns, group, name))
                                .ok()?;
                            (i, pubs.get(i)?)
                        }
                    };
                    Some((i, p.get()))
                };
                let (held, service) = match find(given) {
                    Some((i, p)) => (Some((i, p)), p.service.clone()),
                    None => {
                        let (ns, group, name) =
                            ServiceSpec::split_parts(&spec.namespace, &spec.group, &spec.name)?;
                        let split = !std::ptr::eq(name, spec.name.as_str());
                        match split.then(|| find((ns, group, name))).flatten() {
                            Some((i, p)) => (Some((i, p)), p.service.clone()),
                            None => (None, self.registry.resolve_split(ns, group, name)?),
                        }
                    }
                };
                // A publication new to the client takes a slot in its service's index:
                // its line asked for while the client is built (in a registry large
                // enough that the index's tail has left the caches since its last write).
                if held.is_none() && self.registry.prefetching() {
                    self.registry.prefetch_new_slot(&service);
                }
                // A batch is replaced as a whole: its instances are not this one's.
                let held_instance = held
                    .filter(|(_, p)| !p.is_batch())
                    .and_then(|(_, p)| p.instances.first());
                // The instance is written into `slot`, from which the registry moves it
                // into the stored client.
                let interner = self.registry.interner();
                match instance.convert_into(interner, &service, held_instance, slot)? {
                    // Equal to the held single instance: the held publication again
                    // (`held_instance` is only of a held publication).
                    Converted::Held => match held {
                        Some((i, _)) => return Ok(Built::Held(i)),
                        None => unreachable!("`Held` without a held instance"),
                    },
                    Converted::New => {}
                }
                let Some(inst) = slot.as_ref() else {
                    unreachable!("`New` fills the slot")
                };
                if held_instance.is_none_or(|h| !h.same_address(inst)) {
                    self.check_ip_port_client(client, inst)?;
                }
                // A single instance that differs from the held single one, or replaces a
                // held batch (a different form): a change of publication `i`.
                Ok(match held {
                    Some((i, _)) => Built::ChangedOne(i, service),
                    None => Built::NewOne(service),
                })
            })?;
        self.schedule_sync(&members, client, r, stored, now);
        Ok(r)
    }

    /// Registers a batch of instances for `client` in `service`, replacing what it
    /// published there. An empty batch removes the publication (Nacos SDKs deregister
    /// from a batch by re-registering the remaining instances).
    pub fn register_batch(
        &self,
        client: &ClientId,
        service: &ServiceSpec,
        instances: &[InstanceSpec],
        now: Millis,
    ) -> Result<WriteResult, WriteError> {
        let svc = self.resolve_service(service)?;
        if instances.len() > crate::limits::MAX_BATCH_INSTANCES {
            return Err(ValidationError::new(
                Field::Instances,
                format!(
                    "{} instances in one batch, the limit is {}",
                    instances.len(),
                    crate::limits::MAX_BATCH_INSTANCES
                ),
            )
            .into());
        }
        if instances.is_empty() {
            return self.deregister(client, service, now);
        }
        let mut v = Vec::with_capacity(instances.len());
        for (i, spec) in instances.iter().enumerate() {
            let inst = spec
                .to_instance(self.registry.interner(), &svc)
                .map_err(|e| {
                    ValidationError::new(e.field, format!("instances[{i}]: {}", e.reason))
                })?;
            v.push(inst);
        }
        let members = self.write_members();
        let batch = Publication::batch(svc, v);
        let (r, stored) = self
            .registry
            .publish_stored(client, members.me(), now, |_| Ok(batch))?;
        self.schedule_sync(&members, client, r, stored, now);
        Ok(r)
    }

    /// Refuses an instance an ip:port client may not publish: one whose ip and port are
    /// not its id's. An id `ip:port#true` of the instance (the one a new ip:port client
    /// has most often) passes as compared by words ([`is_ip_port_text`]), without the
    /// search for the key's end and the parse of its port. The check below passes it too:
    /// a valid ip holds no `#`, so the key is exactly `ip:port`; any other id goes to it.
    #[inline]
    fn check_ip_port_client(
        &self,
        client: &ClientId,
        inst: &Instance,
    ) -> Result<(), ValidationError> {
        if is_ip_port_text(client.as_str(), inst) {
            return Ok(());
        }
        let (ip, port) = (inst.ip.as_str(), inst.port);
        if let Some(key) = client.routing_key() {
            // `key` is `<ip>:<port>`: the ip is a prefix, then `:` (the last one: the
            // port holds none), then the port.
            let matches = key.len() > ip.len()
                && key.as_bytes()[..ip.len()] == *ip.as_bytes()
                && key.as_bytes()[ip.len()] == b':'
                && key[ip.len() + 1..].parse::<u16>() == Ok(port);
            if !matches {
                return Err(ValidationError::new(
                    Field::ClientId,
                    format!("ip:port client {client} cannot publish instance {ip}:{port}"),
                ));
            }
        }
        Ok(())
    }

    /// Removes what `client` publishes to `service`. Deregistering something that is not
    /// registered succeeds, as in Nacos. For an ip:port client this node does not hold at
    /// all, that success leaves a tombstone (see [`Registry::forget_absent`](crate::Registry::forget_absent)): a
    /// registration this node has not seen yet (made through another node during a
    /// partition, or still in a sync) must not come back after the deregistration was
    /// acknowledged. A client that is held but does not publish to `service` is left
    /// unchanged ([`WriteResult::Unchanged`]).
    pub fn deregister(
        &self,
        client: &ClientId,
        service: &ServiceSpec,
        now: Millis,
    ) -> Result<WriteResult, WriteError> {
        let (ns, group, name) = service.resolve()?;
        let Some(c) = self.registry.get(client.as_str()) else {
            if client.kind() != ClientKind::IpPort {
                return Ok(WriteResult::Unchanged);
            }
            let r = self.registry.forget_absent(client, self.me(), now);
            self.after_write(client, r, now);
            return Ok(r);
        };
        let found = c
            .publications()
            .iter()
            .find(|p| p.service.is(ns, group, name))
            .map(|p| p.service.clone());
        let Some(svc) = found else {
            return Ok(WriteResult::Unchanged);
        };
        let r = self
            .registry
            .unpublish(client, &svc, self.me(), now, Origin::Client);
        self.after_write(client, r, now);
        Ok(r)
    }

    /// Removes `client` entirely (its connection closed).
    pub fn remove_client(&self, client: &ClientId, now: Millis) -> WriteResult {
        let r = self.registry.remove_client(client, self.me(), now);
        self.after_write(client, r, now);
        r
    }

    /// Records a heartbeat of `client` for `service`; an unhealthy instance turns healthy.
    ///
    /// A beat of a healthy instance only moves its beat time (see
    /// [`Registry::beat`](crate::Registry::beat)): it builds no client, issues no
    /// revision and schedules nothing for peers, whose leases verify renews. Only a beat
    /// that finds an instance unhealthy writes (a derived revision, synced as any change).
    pub fn beat(
        &self,
        client: &ClientId,
        service: &ServiceSpec,
        now: Millis,
    ) -> Result<BeatResult, ValidationError> {
        // Validated only on a miss: a stored service name was valid when stored. The
        // name as given first (see `ServiceSpec::given_parts`), split at `@@` on a miss.
        let (ns, group, name) =
            ServiceSpec::given_parts(&service.namespace, &service.group, &service.name);
        let (found, (ns, group, name)) =
            match self.registry.beat(client.as_str(), ns, group, name, now) {
                Some(healthy) => (Some(healthy), (ns, group, name)),
                None => {
                    let (ns, group, name) = ServiceSpec::split_parts(
                        &service.namespace,
                        &service.group,
                        &service.name,
                    )?;
                    let split = !std::ptr::eq(name, service.name.as_str());
                    let found = split
                        .then(|| self.registry.beat(client.as_str(), ns, group, name, now))
                        .flatten();
                    (found, (ns, group, name))
                }
            };
        match found {
            None => {
                ServiceSpec::check_parts(ns, group, name)?;
                Ok(BeatResult::NotFound)
            }
            Some(true) => Ok(BeatResult::Ok),
            Some(false) => {
                self.make_healthy(client, ns, group, name, now);
                Ok(BeatResult::Ok)
            }
        }
    }

    /// The write of a beat that found an instance unhealthy: every instance of the
    /// publication healthy again, at a derived revision.
    fn make_healthy(&self, client: &ClientId, ns: &str, group: &str, name: &str, now: Millis) {
        let Some(c) = self.registry.get(client.as_str()) else {
            return;
        };
        let Some(p) = c
            .publications()
            .iter()
            .find(|p| p.service.is(ns, group, name))
        else {
            return;
        };
        let svc = p.service.clone();
        let r = self
            .registry
            .update_instances(client, &svc, self.me(), now, Origin::Timer, |p| {
                if p.instances.iter().all(|i| i.healthy) {
                    return None;
                }
                let mut q = p.clone();
                q.instances.iter_mut().for_each(|i| i.healthy = true);
                Some(q)
            });
        self.after_write(client, r, now);
    }

    /// The publications of a service.
    pub fn query(&self, service: &ServiceSpec) -> Result<Option<ServiceView>, ValidationError> {
        let (ns, group, name) = service.resolve()?;
        Ok(self.registry.query(ns, group, name))
    }

    pub(super) fn after_write(&self, client: &ClientId, r: WriteResult, now: Millis) {
        self.schedule_sync(&self.write_members(), client, r, None, now);
    }

    /// What a write needs of the member list: the one-word copy of this node's id and its
    /// peers when the list fits one ([`MemberList::word`]), else the list.
    #[inline]
    pub(super) fn write_members(&self) -> WriteMembers {
        match unpack_word(self.member_word.load(Relaxed)) {
            Some((me, mask)) => WriteMembers::Word(me, mask),
            None => WriteMembers::List(self.members.load()),
        }
    }

    /// Schedules a write's change of `client` for every peer of `members` (nothing for
    /// an unchanged client), with the state the write stored if the caller has it (the
    /// flush then sends it without finding it again; without it, the flush reads the
    /// client's state or tombstone from the registry).
    fn schedule_sync(
        &self,
        members: &WriteMembers,
        client: &ClientId,
        r: WriteResult,
        stored: Option<Arc<Client>>,
        now: Millis,
    ) {
        if matches!(r, WriteResult::Unchanged) {
            return;
        }
        let list = match members {
            WriteMembers::Word(_, mask) => {
                return self.sync.schedule_mask(*mask, client, stored, now);
            }
            WriteMembers::List(list) => list,
        };
        match list.peer_mask() {
            Some(mask) => self.sync.schedule_mask(mask, client, stored, now),
            None => self
                .sync
                .schedule_all(list.peers().map(|p| p.index()), client, stored, now),
        }
    }
}

/// The members a write loaded ([`Node::write_members`]).
pub(super) enum WriteMembers {
    /// This node's id and the peers' mask (bit `i` for peer `i`).
    Word(MemberId, u64),
    /// The list (its peers do not fit a word).
    List(arc_swap::Guard<Arc<MemberList>>),
}

impl WriteMembers {
    /// This node's id.
    #[inline]
    pub(super) fn me(&self) -> MemberId {
        match self {
            WriteMembers::Word(me, _) => *me,
            WriteMembers::List(list) => list.me(),
        }
    }
}
