//! The owner's registration of one instance: a client made as one literal in `Arc::new`'s
//! argument, its instance moved into it from the slot the registration wrote it into
//! (see `InstanceSpec::convert_into`).

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
    /// is decided first: the client is one literal in `Arc::new`'s argument, the instance
    /// moved into it from the slot (through `Client::new` or `new_with` it and the body
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
        let taken = slot.take().expect("a written instance");
        debug_assert!(match &self.body {
            Body::One(o) => i == 0 && (o.is_batch() || o.instances[0] != taken),
            Body::Many(parts) =>
                parts[i].single().is_batch() || parts[i].single().instances[0] != taken,
        });
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
        Arc::new(Self {
            id,
            id_hash: self.id_hash,
            revision,
            lease_base: AtomicU64::new(lease_base),
            owner: AtomicU16::new(owner.0),
            shard: u16::try_from(shard).expect("at most 65,536 shards"),
            slot: AtomicU32::new(NO_SLOT),
            body,
        })
    }
}
