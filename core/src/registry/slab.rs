//! The slots of a service's index: an append-only array of publication pointers that
//! readers walk without a lock.
//!
//! Chunk `k` holds `FIRST_CHUNK << k` slots and is allocated when its first slot is
//! taken, so a slot never moves (a writer stores into it while readers walk) and the
//! array holds at most about twice the slots in use, 8 bytes each: for a service of 1,000
//! instances 1,016 slots, 8.1 bytes per instance (`boxcar::Vec`, used before, kept a flag
//! beside every slot and allocated its buckets ahead: 2,016 slots of 16 bytes, 32 bytes
//! per instance).

use crate::model::Publication;
use arc_swap::ArcSwapOption;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Slots of the first chunk.
const FIRST_CHUNK: usize = 8;
/// Chunks: room for `FIRST_CHUNK * (2^CHUNKS - 1)` slots, about 537 million.
const CHUNKS: usize = 26;

type Cell = ArcSwapOption<Publication>;

/// An append-only array of publication slots (see the module's documentation).
pub(super) struct Slab {
    chunks: [OnceLock<Box<[Cell]>>; CHUNKS],
    /// Slots handed out: every slot below is in an allocated chunk.
    len: AtomicU32,
}

/// The chunk of slot `s` and its place in it.
fn locate(s: usize) -> (usize, usize) {
    let k = (s / FIRST_CHUNK + 1).ilog2() as usize;
    (k, s - FIRST_CHUNK * ((1 << k) - 1))
}

impl Slab {
    pub(super) fn new() -> Self {
        Self {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicU32::new(0),
        }
    }

    /// Slot `s`, if it was handed out.
    pub(super) fn get(&self, s: usize) -> Option<&Cell> {
        if s >= self.len.load(Ordering::Acquire) as usize {
            return None;
        }
        let (k, i) = locate(s);
        self.chunks.get(k)?.get()?.get(i)
    }

    /// Takes the next slot for `p`; returns its number. Callers serialize pushes (the
    /// service's free-list lock).
    pub(super) fn push(&self, p: Arc<Publication>) -> u32 {
        let s = self.len.load(Ordering::Relaxed);
        let (k, i) = locate(s as usize);
        let chunk = self.chunks[k].get_or_init(|| {
            (0..FIRST_CHUNK << k)
                .map(|_| ArcSwapOption::empty())
                .collect()
        });
        chunk[i].store(Some(p));
        // Release: a reader that sees the new length sees the chunk and the pointer.
        self.len.store(s + 1, Ordering::Release);
        s
    }

    /// The slots handed out, in slot order (empty ones included), a chunk at a time.
    pub(super) fn chunks(&self) -> impl Iterator<Item = &[Cell]> {
        let mut left = self.len.load(Ordering::Acquire) as usize;
        self.chunks.iter().map_while(move |c| {
            let c = c.get().filter(|_| left > 0)?;
            let n = left.min(c.len());
            left -= n;
            Some(&c[..n])
        })
    }

    /// The slots handed out, in slot order (empty ones included).
    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &Cell> {
        self.chunks().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceSpec, Service};
    use crate::name::Interner;

    #[test]
    fn slots_are_chunked_by_doubling_and_never_move() {
        // Chunk boundaries: 8, 8 + 16, 8 + 16 + 32, ...
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(7), (0, 7));
        assert_eq!(locate(8), (1, 0));
        assert_eq!(locate(23), (1, 15));
        assert_eq!(locate(24), (2, 0));
        assert_eq!(locate(1015), (6, 511));
        assert_eq!(locate(1016), (7, 0));
        let last = FIRST_CHUNK * ((1 << CHUNKS) - 1) - 1;
        assert_eq!(
            locate(last),
            (CHUNKS - 1, (FIRST_CHUNK << (CHUNKS - 1)) - 1)
        );
        assert!(u32::try_from(last).is_ok());

        let interner = Interner::new();
        let service = Service::new(&interner, "public", "DEFAULT_GROUP", "a");
        let publication = |port: u16| {
            let i = InstanceSpec::new("10.0.0.1", port)
                .to_instance(&interner, &service)
                .unwrap();
            Arc::new(Publication::single(service.clone(), i))
        };
        let slab = Slab::new();
        assert!(slab.get(0).is_none());
        assert_eq!(slab.iter().count(), 0);
        assert_eq!(slab.push(publication(1)), 0);
        let cell = slab.get(0).unwrap() as *const Cell;
        for n in 1..1000u16 {
            assert_eq!(slab.push(publication(n + 1)), u32::from(n));
        }
        // The first slot stayed where it was; every slot reads back in order.
        assert!(std::ptr::eq(cell, slab.get(0).unwrap()));
        assert!(slab.get(1000).is_none());
        let ports: Vec<u16> = slab
            .iter()
            .map(|c| c.load_full().unwrap().instances[0].port)
            .collect();
        assert_eq!(ports, (1..=1000).collect::<Vec<_>>());
        slab.get(3).unwrap().store(None);
        assert_eq!(slab.iter().filter(|c| c.load().is_some()).count(), 999);
        let held: usize = slab
            .chunks
            .iter()
            .filter_map(|c| c.get())
            .map(|c| c.len())
            .sum();
        assert_eq!(held, 1016);
    }
}
