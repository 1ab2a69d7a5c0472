//! Local writes: this node is the client's owner (registrations, deregistrations,
//! heartbeats and the health changes of its own checks).
//!
//! Every local write goes through `write_local`: under the shard's lock it reads the held
//! state, decides, and stores the new state at the next revision (a hybrid clock, see
//! [`Origin`] for how a health change is ordered) or a tombstone for a deletion.

use super::client::Body;
use super::{Client, IdKey, Origin, Published, Registry, Tombstone, WriteError, WriteResult};
use crate::error::{Field, ValidationError};
use crate::member::MemberId;
use crate::model::{Built, ClientId, Instance, Publication, Revision, Service};
use crate::time::Millis;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

impl Registry {
    /// Publishes `publication` for client `id` (replacing what it published to that
    /// service before). `owner` is the member the client is attributed to (this node).
    pub fn publish(
        &self,
        id: &ClientId,
        publication: Publication,
        owner: MemberId,
        now: Millis,
    ) -> Result<WriteResult, WriteError> {
        self.publish_with(id, owner, now, |_| Ok(publication))
    }

    /// Publishes the publication `build` makes from what client `id` holds now (read
    /// under the shard lock, so it is the state the write replaces), as
    /// [`Registry::publish`] does. A refusal of `build` is the write's.
    pub fn publish_with(
        &self,
        id: &ClientId,
        owner: MemberId,
        now: Millis,
        build: impl FnOnce(Option<&Client>) -> Result<Publication, ValidationError>,
    ) -> Result<WriteResult, WriteError> {
        Ok(self.publish_stored(id, owner, now, build)?.0)
    }

    /// [`Registry::publish_with`], with the state it stored (for a change): what the
    /// node's sync scheduler holds for the flush, which then need not find it again.
    pub(crate) fn publish_stored(
        &self,
        id: &ClientId,
        owner: MemberId,
        now: Millis,
        build: impl FnOnce(Option<&Client>) -> Result<Publication, ValidationError>,
    ) -> Result<(WriteResult, Option<Arc<Client>>), WriteError> {
        self.publish_built(id, owner, now, |c, _| build(c).map(Built::New))
    }

    /// [`Registry::publish_stored`] of what `build` made of the held client: a new
    /// publication, or (from a comparison `build` made already, which this one then does
    /// not repeat) a held one again or a change of a held one. `build` may write the
    /// instance of a single-instance publication into the slot it is given
    /// ([`Built::ChangedOne`], [`Built::NewOne`]), from which it moves into the stored
    /// client.
    pub(crate) fn publish_built(
        &self,
        id: &ClientId,
        owner: MemberId,
        now: Millis,
        build: impl FnOnce(Option<&Client>, &mut Option<Instance>) -> Result<Built, ValidationError>,
    ) -> Result<(WriteResult, Option<Arc<Client>>), WriteError> {
        let max = self.max_services_per_client;
        let mut result = Ok(());
        let mut slot = None;
        let out = self.write_stored(id, owner, now, Origin::Client, |old| {
            let publication = match build(old.map(|c| &**c), &mut slot) {
                Ok(Built::New(p)) => p,
                Ok(Built::Held(i)) => {
                    let Some(c) = old else {
                        unreachable!("a held publication without a client")
                    };
                    // The same registration again: a heartbeat, nothing to write.
                    c.publications()[i].beat.fetch_max(now, Relaxed);
                    return LocalAction::Nothing;
                }
                Ok(Built::ChangedOne(i, service)) => {
                    debug_assert!(old.is_some_and(|c| c.publications()[i].service == service));
                    return LocalAction::Replace(i, service, &mut slot);
                }
                // A held client's new service: a publication, inserted among its others.
                Ok(Built::NewOne(service)) if old.is_some() => {
                    Publication::single(service, slot.take().expect("a written instance"))
                }
                // A new client: made from the slot (see `Client::first_one`). Its one
                // service is within the per-client limit, which is at least 1
                // (`Config::validate`), so only the node's limits are checked.
                Ok(Built::NewOne(service)) => {
                    if let Err(e) = self
                        .admit_client(id, owner)
                        .and_then(|()| self.check_new_service(&service))
                    {
                        result = Err(e);
                        return LocalAction::Nothing;
                    }
                    return LocalAction::First(service, &mut slot);
                }
                Err(e) => {
                    result = Err(e);
                    return LocalAction::Nothing;
                }
            };
            if old.is_none()
                && let Err(e) = self.admit_client(id, owner)
            {
                result = Err(e);
                return LocalAction::Nothing;
            }
            let held = old.map(|c| c.publications());
            match held.map_or(Err(0), |h| h.find(&publication.service)) {
                Ok(i) => {
                    let Some(c) = old else {
                        unreachable!("a held publication without a client")
                    };
                    let p = &c.publications()[i];
                    if p.get() == &publication {
                        // The same registration again: a heartbeat, nothing to write.
                        p.beat.fetch_max(now, Relaxed);
                        return LocalAction::Nothing;
                    }
                    LocalAction::Put(c.body_replacing(i, publication))
                }
                Err(i) => {
                    let held = held.map_or(0, |h| h.len());
                    if held >= max {
                        result = Err(ValidationError::new(
                            Field::Services,
                            format!(
                                "client {id} already publishes to {} services, the limit is {max}",
                                held
                            ),
                        ));
                        return LocalAction::Nothing;
                    }
                    if let Err(e) = self.check_new_service(&publication.service) {
                        result = Err(e);
                        return LocalAction::Nothing;
                    }
                    LocalAction::Put(match old {
                        Some(c) => c.body_inserting(i, publication, now),
                        None => Body::first(publication, now),
                    })
                }
            }
        });
        result?;
        Ok(out)
    }

    /// Refuses a new client when this node owns `max_clients` already. Every client held
    /// (replicas too) bounds the owned ones: the sum over the digest shards is needed
    /// only when the node holds that many.
    #[inline]
    fn admit_client(&self, id: &ClientId, owner: MemberId) -> Result<(), ValidationError> {
        if self.clients.load(Relaxed) as u64 >= self.max_clients {
            let held = self.owner_count(owner);
            if held >= self.max_clients {
                return Err(ValidationError::new(
                    Field::ClientId,
                    format!(
                        "client {id} refused: this node already owns {held} clients, \
                         the limit is {} (max_clients)",
                        self.max_clients
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses a publication that would add a service to a namespace holding
    /// `max_services_per_namespace` services already. Counted with the services'
    /// publications, so concurrent registrations of new services may pass it by a few.
    fn check_new_service(&self, service: &Service) -> Result<(), ValidationError> {
        let max = self.max_services_per_namespace;
        // Fewer services held in all than the limit: none of them can be at it. Asked
        // first: the question below upgrades the weak reference to the service's index
        // and drops it, two locked instructions on a line that the writes of the index's
        // other clients (on other threads) keep changing, for every new client.
        if self.live_services.load(Relaxed) < max || self.service_is_live(service) {
            return Ok(());
        }
        let ns = service.namespace().as_str();
        let held = self.namespace_service_count(ns);
        if held >= max {
            return Err(ValidationError::new(
                Field::Service,
                format!(
                    "service {} refused: namespace {ns} already holds {held} services, \
                     the limit is {max} (max_services_per_namespace)",
                    service.grouped_name()
                ),
            ));
        }
        Ok(())
    }

    /// Removes what client `id` publishes to `service`; deletes the client when nothing
    /// is left. `origin` orders the write's revision (see [`Origin`]).
    pub fn unpublish(
        &self,
        id: &ClientId,
        service: &Service,
        owner: MemberId,
        now: Millis,
        origin: Origin,
    ) -> WriteResult {
        self.write_local(id, owner, now, origin, |old| {
            let Some(old) = old else {
                return LocalAction::Nothing;
            };
            match old.publications().find(service) {
                Ok(_) if old.publications().len() == 1 => LocalAction::Delete,
                Ok(i) => LocalAction::Put(old.body_removing(i)),
                Err(_) => LocalAction::Nothing,
            }
        })
    }

    /// Records that client `id`, which this node does not hold, was deregistered: a
    /// tombstone at a fresh revision, replicated like any deletion. The owner may lack a
    /// registration that reached another node while the two were cut off (or before the
    /// sync arrived); without the tombstone that registration would arrive afterwards and
    /// undo the acknowledged deregistration. Nothing happens if the node holds the client.
    pub fn forget_absent(&self, id: &ClientId, owner: MemberId, now: Millis) -> WriteResult {
        self.write_local(id, owner, now, Origin::Client, |old| match old {
            Some(_) => LocalAction::Nothing,
            None => LocalAction::Delete,
        })
    }

    /// Deletes client `id` (connection closed, or expiry by its owner).
    pub fn remove_client(&self, id: &ClientId, owner: MemberId, now: Millis) -> WriteResult {
        self.write_local(id, owner, now, Origin::Client, |old| match old {
            Some(_) => LocalAction::Delete,
            None => LocalAction::Nothing,
        })
    }

    /// Replaces the instances of publication `service` of client `id` through `f` (health
    /// changes). `f` returns `None` to leave it unchanged. `origin` orders the write's
    /// revision (see [`Origin`]).
    pub fn update_instances(
        &self,
        id: &ClientId,
        service: &Service,
        owner: MemberId,
        now: Millis,
        origin: Origin,
        f: impl FnOnce(&Publication) -> Option<Publication>,
    ) -> WriteResult {
        self.write_local(id, owner, now, origin, |old| {
            let Some(old) = old else {
                return LocalAction::Nothing;
            };
            let Ok(i) = old.publications().find(service) else {
                return LocalAction::Nothing;
            };
            match f(&old.publications()[i]) {
                Some(p) => LocalAction::Put(old.body_replacing(i, p)),
                None => LocalAction::Nothing,
            }
        })
    }

    /// Records a heartbeat of client `id` for the service `namespace`/`group`/`name`:
    /// the publication's beat time moves to `now`, and nothing else changes (no new
    /// client object, no revision, no digest change, nothing to sync). Returns `None` if
    /// the client does not publish to that service, else whether every instance of the
    /// publication is healthy (if not, the caller makes them healthy with a write).
    ///
    /// A write racing with the beat may copy the beat time before the beat lands on the
    /// state it replaces; the beat is then lost, and the next one (seconds later, well
    /// within the heartbeat timeout) records it.
    pub fn beat(
        &self,
        id: &str,
        namespace: &str,
        group: &str,
        name: &str,
        now: Millis,
    ) -> Option<bool> {
        let key = IdKey::new(id);
        let pin = self.pin();
        let c = self.clients(self.shard_of_key(key), &pin).get_key(key)?;
        let is = |p: &&Published| p.service.is(namespace, group, name);
        // Most clients publish to one service: no iterator for them.
        let ps = c.publications();
        let p = match ps.only() {
            Some(p) => Some(p).filter(is)?,
            None => ps.iter().find(is)?,
        };
        p.beat.fetch_max(now, Relaxed);
        Some(p.instances.iter().all(|i| i.healthy))
    }

    /// Sets every heartbeat of client `id` to at least `now` (grace after an ownership
    /// change, so a new owner does not expire instances whose beats went elsewhere).
    pub(crate) fn refresh_beats(&self, c: &Client, now: Millis) {
        for p in c.publications().iter() {
            p.beat.fetch_max(now, Relaxed);
        }
    }

    /// The one path of every local write: under the shard lock, `f` decides from the held
    /// state what to do; the new state gets the next revision (see [`Origin`]).
    fn write_local(
        &self,
        id: &ClientId,
        owner: MemberId,
        now: Millis,
        origin: Origin,
        f: impl FnOnce(Option<&Arc<Client>>) -> LocalAction<'static>,
    ) -> WriteResult {
        self.write_stored(id, owner, now, origin, f).0
    }

    /// [`Registry::write_local`], with the state it stored (for a change).
    fn write_stored<'s>(
        &self,
        id: &ClientId,
        owner: MemberId,
        now: Millis,
        origin: Origin,
        f: impl FnOnce(Option<&Arc<Client>>) -> LocalAction<'s>,
    ) -> (WriteResult, Option<Arc<Client>>) {
        let key = IdKey::new(id.as_str());
        let shard_no = self.shard_of_key(key);
        let shard = &self.shards[shard_no as usize];
        let mut changed: Vec<Service> = Vec::new();
        let result = {
            let pin = self.pin();
            let mut lock = shard.write();
            let (tombstones, mut clients) = self.writer(&mut lock, &pin);
            let held = clients.get_key(key);
            let old = held.as_deref();
            let action = f(old);
            // A held client has no tombstone (storing a state removes it, a deletion or
            // drop removes the client): only an absent one needs the lookup.
            debug_assert!(old.is_none() || !tombstones.contains_key(id.as_str()));
            // Whether an absent client has a tombstone: only then has a store to remove it
            // (a removal hashes the id and probes even when there is nothing to remove).
            let (prev, tombstoned) = match old {
                Some(c) => (c.revision, false),
                None => tombstones
                    .get(id.as_str())
                    .map_or((Revision::ZERO, false), |t| (t.revision, true)),
            };
            let floor = match origin {
                Origin::Client => self.floor.load(Relaxed).max(Revision::floor(now)),
                Origin::Timer => 0,
            };
            let revision = Revision::next(prev, floor, self.me);
            match action {
                LocalAction::Nothing => (WriteResult::Unchanged, None),
                LocalAction::Put(body) => {
                    let old_ref = old.map(|c| &**c);
                    let hash = key.hash;
                    let (s, shared) = (id.as_str(), id.shared_name());
                    let new = self.build_client(
                        s, shared, hash, revision, shard_no, body, owner, old_ref, now,
                    );
                    if tombstoned {
                        tombstones.remove(id.as_str());
                    }
                    self.replace(&mut clients, old, Some(new.clone()), &mut changed);
                    (WriteResult::Changed(revision), Some(new))
                }
                LocalAction::Replace(i, service, slot) => {
                    let Some(c) = old else {
                        unreachable!("a held publication without a client")
                    };
                    debug_assert_eq!(c.id_hash, key.hash);
                    let (s, shared) = (id.as_str(), id.shared_name());
                    let new = c
                        .replacing_one(i, service, slot, s, shared, revision, now, owner, shard_no);
                    self.replace_changed(&mut clients, c, new.clone(), &mut changed);
                    (WriteResult::Changed(revision), Some(new))
                }
                LocalAction::First(service, slot) => {
                    debug_assert!(old.is_none());
                    let (s, shared) = (id.as_str(), id.shared_name());
                    let new = Client::first_one(
                        service, slot, s, shared, key.hash, revision, now, owner, shard_no,
                    );
                    if tombstoned {
                        tombstones.remove(id.as_str());
                    }
                    self.replace(&mut clients, None, Some(new.clone()), &mut changed);
                    (WriteResult::Changed(revision), Some(new))
                }
                LocalAction::Delete => {
                    tombstones.insert(
                        id.clone(),
                        Tombstone {
                            revision,
                            expires_at: now.saturating_add(self.tombstone_ttl()),
                            dropped: false,
                        },
                    );
                    self.replace(&mut clients, old, None, &mut changed);
                    (WriteResult::Deleted(revision), None)
                }
            }
        };
        self.notify(&changed);
        result
    }
}

/// What a local write does to the client it reads.
enum LocalAction<'s> {
    Nothing,
    Put(Body),
    /// Publication `i` replaced by the single-instance publication of the service whose
    /// instance is in the slot (taken from there as the new client is made).
    Replace(usize, Service, &'s mut Option<Instance>),
    /// A new client, of the single-instance publication of the service whose instance is
    /// in the slot (taken from there as the client is made).
    First(Service, &'s mut Option<Instance>),
    Delete,
}
