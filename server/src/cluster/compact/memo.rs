//! [`AddrMemo`]: the encoder's memos of table indices by address, and the pair of them
//! each thread keeps between batches ([`take`], [`give_back`]).

use std::cell::Cell;

/// A direct-mapped memo of table indices by the address they are keyed by (a service's
/// interned key, a metadata map's storage): a multiplication and one comparison find an
/// index looked up before, where a hash map costs several times that. A slot holds the
/// last address that mapped to it; a miss (an address not seen, or displaced) falls back
/// to the table's map. Free slots hold [`FREE`], an address nothing is stored at (the top
/// of the address space, which no object has, nor is it aligned as a map or a string is;
/// null is looked up: an empty metadata map's storage key is 0).
///
/// [`MEMO_SLOTS`] slots whatever the batch, chosen by the hash's top byte: the index is
/// below the array's length by its type, so a lookup has no bounds check and no shift or
/// length to load (a memo sized by the batch cost ~4 instructions more a lookup, twice
/// per client). It is not allocated and filled anew for every batch (two instructions a
/// slot, ~1,000 a batch for the pair, and two allocations: most of a small batch's fixed
/// cost): the thread keeps a spare pair, which a batch frees the slots it set in as it
/// ends ([`give_back`]).
pub(super) struct AddrMemo {
    slots: Box<[(usize, u32); MEMO_SLOTS]>,
}

/// The slots of an [`AddrMemo`]: one for each value of a byte.
pub(super) const MEMO_SLOTS: usize = 256;

/// The address of a free memo slot. Not null, which would let the memo be a zeroed
/// allocation: zeroing it (a `memset`) cost far more instructions than this fill, and an
/// empty map's key is null.
pub(super) const FREE: usize = usize::MAX;

/// At most this many keys a memo's slots are freed one by one; above, all its slots are
/// (a fill costs two instructions a slot, a key about nine).
const FREED_ONE_BY_ONE: usize = MEMO_SLOTS / 4;

impl AddrMemo {
    fn new() -> Self {
        // Filled in place (`Box::new` of the array built it in the frame and copied it).
        let slots = vec![(FREE, 0); MEMO_SLOTS].into_boxed_slice();
        Self {
            slots: slots.try_into().expect("MEMO_SLOTS slots"),
        }
    }

    /// The slot of `addr`: the top byte of a multiplicative hash (Fibonacci hashing).
    #[inline(always)]
    pub(super) fn slot(addr: usize) -> usize {
        ((addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
    }

    #[inline(always)]
    pub(super) fn get(&self, addr: usize) -> Option<u32> {
        debug_assert_ne!(addr, FREE);
        let (a, i) = self.slots[Self::slot(addr)];
        (a == addr).then_some(i)
    }

    #[inline(always)]
    pub(super) fn set(&mut self, addr: usize, i: u32) {
        self.slots[Self::slot(addr)] = (addr, i);
    }

    /// Frees every slot.
    fn clear(&mut self) {
        self.slots.fill((FREE, 0));
    }

    /// Frees the slots set since the memo was last free: `keys` (`n` of them) must hold
    /// every address set since (it may hold more).
    #[inline]
    fn release(&mut self, keys: impl Iterator<Item = usize>, n: usize) {
        if n > FREED_ONE_BY_ONE {
            self.clear();
        } else {
            for k in keys {
                self.slots[Self::slot(k)] = (FREE, 0);
            }
        }
    }

    /// Whether every slot is free.
    #[cfg(test)]
    pub(super) fn is_free(&self) -> bool {
        self.slots.iter().all(|&(a, _)| a == FREE)
    }
}

thread_local! {
    /// The thread's spare memos, free: taken by a batch as it starts, given back as it
    /// ends (one that panics drops its memos, and the next batch makes new ones).
    static SPARE: Cell<Option<[AddrMemo; 2]>> = const { Cell::new(None) };
}

/// Free memos for a batch (of maps and of services): the thread's spare ones, else new.
#[inline]
pub(super) fn take() -> [AddrMemo; 2] {
    SPARE
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(|| [AddrMemo::new(), AddrMemo::new()])
}

/// Gives back the memos of a batch that ends, each with keys that hold every address set
/// in it (each is set after its key is put in the encoder's table): their slots freed,
/// they become the thread's spare ones.
#[inline]
pub(super) fn give_back<I: ExactSizeIterator<Item = usize>>(memos: [(AddrMemo, I); 2]) {
    let [(mut maps, map_keys), (mut services, service_keys)] = memos;
    let n = map_keys.len();
    maps.release(map_keys, n);
    let n = service_keys.len();
    services.release(service_keys, n);
    // Not there while the thread's locals are destroyed: then the memos are dropped.
    let _ = SPARE.try_with(|s| s.set(Some([maps, services])));
}

#[cfg(test)]
mod tests {
    use super::{AddrMemo, MEMO_SLOTS};

    /// Addresses 8 bytes apart, as the heap's are: enough to fill every slot.
    fn addrs() -> Vec<usize> {
        (1..=4 * MEMO_SLOTS).map(|k| 0x10_0000 + 8 * k).collect()
    }

    /// A memo answers for the last address set in a slot, and only for that address:
    /// one displaced by another of the same slot (or never set) is a miss, and a free
    /// slot answers no address (null neither: an empty map's key).
    #[test]
    fn the_memo_answers_only_for_the_address_its_slot_holds() {
        let mut m = AddrMemo::new();
        assert!(m.is_free());
        assert_eq!(m.get(0), None);
        let addrs = addrs();
        for (i, &a) in addrs.iter().enumerate() {
            assert_eq!(m.get(a), None);
            m.set(a, i as u32);
            assert_eq!(m.get(a), Some(i as u32));
        }
        let mut last = vec![None; MEMO_SLOTS];
        for (i, &a) in addrs.iter().enumerate() {
            last[AddrMemo::slot(a)] = Some((a, i as u32));
        }
        assert!(last.iter().filter(|s| s.is_some()).count() > MEMO_SLOTS / 2);
        for (i, &a) in addrs.iter().enumerate() {
            let held = last[AddrMemo::slot(a)].expect("set");
            let want = (held.0 == a).then_some(i as u32);
            assert_eq!(m.get(a), want, "address {a:#x}");
        }
    }

    /// Released with the keys set, a memo is free again: one by one for a few keys, all
    /// at once for many.
    #[test]
    fn a_released_memo_is_free() {
        for n in [
            0,
            1,
            5,
            super::FREED_ONE_BY_ONE,
            super::FREED_ONE_BY_ONE + 1,
            1000,
        ] {
            let keys = &addrs()[..n];
            let mut m = AddrMemo::new();
            for (i, &a) in keys.iter().enumerate() {
                m.set(a, i as u32);
            }
            m.set(0, 7);
            m.release(keys.iter().copied().chain([0]), n + 1);
            assert!(m.is_free(), "{n} keys");
        }
    }

    /// Memos given back are the thread's spare ones, free; a batch that does not end
    /// (it panics with slots set) does not give its memos back, and the next batch gets
    /// new ones.
    #[test]
    fn a_batch_gets_free_memos() {
        let keys = addrs();
        let [mut maps, mut services] = super::take();
        assert!(maps.is_free() && services.is_free());
        maps.set(keys[0], 1);
        services.set(keys[1], 2);
        let (m, s) = (&*maps.slots as *const _, &*services.slots as *const _);
        super::give_back([
            (maps, [keys[0]].into_iter()),
            (services, [keys[1]].into_iter()),
        ]);
        let [maps, services] = super::take();
        assert!(std::ptr::eq(&*maps.slots, m) && std::ptr::eq(&*services.slots, s));
        assert!(maps.is_free() && services.is_free());
        let panicked = std::panic::catch_unwind(move || {
            let [mut maps, mut services] = [maps, services];
            for (i, &a) in keys.iter().enumerate() {
                maps.set(a, i as u32);
                services.set(a, i as u32);
            }
            panic!("the batch fails midway");
        });
        assert!(panicked.is_err());
        let [maps, services] = super::take();
        assert!(maps.is_free() && services.is_free());
    }

    /// Batches encoded one after another on a thread (its memos reused, freed one by one
    /// or all at once) encode as each does on a new thread (new memos), and decode: a
    /// slot left set would give a service or map of an earlier batch an index it does not
    /// have in this one.
    #[test]
    fn batches_encode_alike_with_reused_memos() {
        use super::super::tests::node;
        use super::super::{decode_changes, encode_changes};
        use distro_core::model::{ClientId, InstanceSpec, ServiceSpec};
        let owner = node(0);
        for c in 0..200u16 {
            let svc = ServiceSpec::new("", "", &format!("svc-{}", c % 90));
            let mut spec = InstanceSpec::new("10.1.0.1", 7000 + c);
            spec.metadata = vec![("m".into(), format!("{}", c % 80))];
            let id = ClientId::connection(9, "10.1.0.1", 7000 + c);
            owner.register(&id, &svc, &spec, 10).unwrap();
        }
        let changes = super::super::tests::first_batch(&owner);
        assert_eq!(changes.len(), 200);
        let replica = node(1);
        // Overlapping runs: few services and maps (freed one by one), then many (all).
        let runs = [(0, 5), (3, 9), (0, 9), (0, 200), (2, 7), (150, 200), (1, 6)];
        for (from, to) in runs {
            let batch = &changes[from..to];
            let bytes = encode_changes(&owner, batch);
            let fresh = std::thread::scope(|s| {
                s.spawn(|| encode_changes(&owner, batch))
                    .join()
                    .expect("encodes")
            });
            assert_eq!(bytes, fresh, "changes {from}..{to}");
            assert_eq!(decode_changes(&replica, &bytes).expect("decodes"), batch);
        }
    }
}
