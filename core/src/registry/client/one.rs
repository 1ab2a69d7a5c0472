//! Clients of one publication made as one literal. The owner's registration of one
//! instance (a new one in `Arc::new`'s argument, a replacement written into an
//! `ArcPlace`): its instance moved into it from the slot the registration wrote it into
//! (see `InstanceSpec::convert_into`). A replica's state of one publication
//! ([`Client::replica_one`]): its publication moved from where it was decoded.

use super::{Body, Client, Published};
use crate::member::MemberId;
use crate::model::{Instance, Instances, Publication, Revision, Service};
use crate::name::Name;
use crate::time::Millis;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};

use super::super::NO_SLOT;

impl Client {
    /// A new client (of id `id`, see [`Client::new`]) of the single-instance publication
    /// of `service` whose instance `slot` holds (taken), its lease and beat at
    /// `lease_base`: made as one literal, the instance moved into it once (through
    /// `Body::first` and `Client::new` it was copied through the publication, the body
    /// and the argument).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(in crate::registry) fn first_one(
        service: Service,
        slot: &mut Option<Instance>,
        id: &str,
        shared: Option<&Name>,
        id_hash: u64,
        revision: Revision,
        lease_base: Millis,
        owner: MemberId,
        shard: u32,
    ) -> Arc<Self> {
        let id = Self::id_to_store(id, shared, None, slot.as_ref());
        let taken = slot.take().expect("a written instance");
        // Its own literal: through `Client::literal` this path cost 4 instructions more.
        Arc::new(Self {
            id,
            id_hash,
            revision,
            lease_base: AtomicU64::new(lease_base),
            owner: AtomicU16::new(owner.0),
            shard: u16::try_from(shard).expect("at most 65,536 shards"),
            slot: AtomicU32::new(NO_SLOT),
            body: Body::One(Published {
                publication: Publication {
                    service,
                    instances: Instances::One(taken),
                },
                beat: AtomicU64::new(lease_base),
            }),
        })
    }

    /// The next state (of id `id`, see [`Client::new`]) with publication `i` replaced by
    /// the single-instance one of `service` whose instance `slot` holds (taken). The id
    /// is decided first: the client is [`Client::literal`] written into an
    /// [`arc_slots::ArcPlace`] allocated before it, the instance moved into it from the slot (through `Client::new` or `new_with` it and the body
    /// were copied three times more; through `Published::new`, 7 instructions more).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(in crate::registry) fn replacing_one(
        &self,
        i: usize,
        service: Service,
        slot: &mut Option<Instance>,
        id: &str,
        shared: Option<&Name>,
        revision: Revision,
        lease_base: Millis,
        owner: MemberId,
        shard: u32,
    ) -> Arc<Self> {
        let written = slot.as_ref().expect("a written instance");
        // The new state's first instance: the written one, unless a part before the
        // replaced one comes first.
        let first = match &self.body {
            Body::Many(parts) if i > 0 => parts[0].first_instance(),
            _ => Some(written),
        };
        let id = Self::id_to_store(id, shared, Some(self), first);
        debug_assert!(match (&self.body, slot.as_ref()) {
            (Body::One(o), Some(w)) => i == 0 && (o.is_batch() || o.instances[0] != *w),
            (Body::Many(parts), Some(w)) =>
                parts[i].single().is_batch() || parts[i].single().instances[0] != *w,
            (_, None) => false,
        });
        // Allocated first (`ArcPlace`), the client is written into its allocation: the
        // instance goes from the slot into it, not through this frame.
        let place = arc_slots::ArcPlace::new();
        let taken = slot.take().expect("a written instance");
        let body = match &self.body {
            Body::One(o) => Body::One(Published {
                publication: Publication {
                    service,
                    instances: Instances::One(taken),
                },
                beat: AtomicU64::new(o.beat.load(Relaxed)),
            }),
            Body::Many(_) => self.body_replacing(i, Publication::single(service, taken)),
        };
        place.write(Self::literal(
            id,
            self.id_hash,
            revision,
            lease_base,
            owner,
            shard,
            body,
        ))
    }

    /// [`Client::new_with`] of a body of one publication with its beat time, the id already
    /// made ([`Client::replica_id`]): the publication, taken from where it was decoded, is
    /// written into the client's allocation as it is taken, not first into a body on the
    /// stack (`new_with` makes the body first, to read its first instance for the id), and
    /// nothing that can fail comes between the take and the write (the shard's check is done
    /// before), so no copy of it is kept for an unwind.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(in crate::registry) fn replica_one(
        id: Option<Name>,
        id_hash: u64,
        revision: Revision,
        lease_base: Millis,
        owner: MemberId,
        shard: u32,
        publication: impl FnOnce() -> Publication,
        beat: Millis,
    ) -> Arc<Self> {
        let shard = u16::try_from(shard).expect("at most 65,536 shards");
        let place = arc_slots::ArcPlace::new();
        place.write(Self::literal(
            id,
            id_hash,
            revision,
            lease_base,
            owner,
            u32::from(shard),
            Body::first(publication(), beat),
        ))
    }
}
