use super::*;
use std::sync::atomic::AtomicUsize;

/// A value that counts its drops.
pub(crate) struct Counted {
    pub(crate) n: u32,
    drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn counted(n: u32, drops: &Arc<AtomicUsize>) -> Arc<Counted> {
    Arc::new(Counted {
        n,
        drops: drops.clone(),
    })
}

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

    let reclaimer = Reclaimer::new(8);
    let pin = reclaimer.pin();
    let drops = Arc::new(AtomicUsize::new(0));
    let slots = Slots::new(&reclaimer);
    assert!(slots.is_empty());
    assert!(slots.load(0, &pin).is_none());
    // The hint for the next push's slot, before its chunk is allocated too (nothing
    // asked): it changes nothing (every slot reads back below).
    slots.prefetch_push();
    assert_eq!(slots.push(counted(1, &drops), &pin), 0);
    let first = slots.slot(0).map(ptr::from_ref);
    for n in 1..1000u32 {
        slots.prefetch_push();
        assert_eq!(slots.push(counted(n + 1, &drops), &pin), n);
    }
    slots.prefetch_push();
    // The first slot stayed where it was; every slot reads back in order.
    assert_eq!(slots.slot(0).map(ptr::from_ref), first);
    assert!(slots.load(1000, &pin).is_none());
    assert!(slots.replace(1000, None, &pin).is_none());
    let mut all = Vec::new();
    slots.collect_into(&mut all, &pin);
    assert_eq!(
        all.iter().map(|c| c.n).collect::<Vec<_>>(),
        (1..=1000).collect::<Vec<_>>()
    );
    drop(all);
    // What a slot let go of is handed back (retired when dropped), nothing for an empty
    // one.
    let held = |u: Option<Option<Unlinked<'_, Counted>>>| u.map(|u| u.is_some());
    assert_eq!(held(slots.replace(3, None, &pin)), Some(true));
    assert_eq!(held(slots.replace(3, None, &pin)), Some(false));
    assert_eq!(
        held(slots.replace(4, Some(counted(5000, &drops)), &pin)),
        Some(true)
    );
    assert_eq!(slots.load(4, &pin).map(|c| c.n), Some(5000));
    let mut all = Vec::new();
    slots.collect_into(&mut all, &pin);
    assert_eq!(all.len(), 999);
    assert_eq!(slots.len(), 1000);
    assert_eq!(slots.capacity(), 1016);
    drop(all);
    // Nothing replaced is freed while a pin that could have seen it is held.
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    drop(pin);
    drop(slots);
    drop(reclaimer);
    // Every value, held or replaced, freed exactly once.
    assert_eq!(drops.load(Ordering::Relaxed), 1001);
}

#[test]
fn a_value_a_reader_holds_outlives_its_replacement() {
    let reclaimer = Reclaimer::new(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let slots = Slots::new(&reclaimer);
    let pin = reclaimer.pin();
    slots.push(counted(1, &drops), &pin);
    let held = slots.load(0, &pin);
    drop(pin);
    let pin = reclaimer.pin();
    slots.replace(0, Some(counted(2, &drops)), &pin);
    drop(pin);
    reclaimer.flush();
    // The slot let go of value 1, the reader still holds it.
    assert_eq!(held.as_ref().map(|c| c.n), Some(1));
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    drop(held);
    assert_eq!(drops.load(Ordering::Relaxed), 1);
}

#[test]
#[should_panic(expected = "another reclaimer")]
fn a_pin_of_another_reclaimer_is_refused() {
    let ours = Reclaimer::new(8);
    let theirs = Reclaimer::new(8);
    let slots: Slots<u32> = Slots::new(&ours);
    slots.push(Arc::new(1), &theirs.pin());
}

#[test]
fn readers_and_a_writer_at_once_free_every_value_once() {
    const SLOTS: u32 = 64;
    const ROUNDS: u32 = 20_000;
    let reclaimer = Reclaimer::new(8);
    let drops = Arc::new(AtomicUsize::new(0));
    let slots = Slots::new(&reclaimer);
    {
        let pin = reclaimer.pin();
        for n in 0..SLOTS {
            slots.push(counted(n, &drops), &pin);
        }
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let mut seen = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let pin = reclaimer.pin();
                    seen.clear();
                    slots.collect_into(&mut seen, &pin);
                    // Every value read is one the writer stored in that slot at some time.
                    for c in &seen {
                        assert!(c.n < SLOTS + ROUNDS, "value {} was never stored", c.n);
                    }
                    if let Some(c) = slots.load(7, &pin) {
                        assert!(c.n == 7 || (c.n >= SLOTS && (c.n - SLOTS) % SLOTS == 7));
                    }
                }
            });
        }
        s.spawn(|| {
            for r in 0..ROUNDS {
                let pin = reclaimer.pin();
                let s = (r % SLOTS) as usize;
                let v = (r % 5 != 0).then(|| counted(SLOTS + r, &drops));
                slots.replace(s, v, &pin);
            }
            done.store(true, Ordering::Relaxed);
        });
    });
    drop(slots);
    drop(reclaimer);
    assert_eq!(
        drops.load(Ordering::Relaxed),
        SLOTS as usize + (ROUNDS - ROUNDS / 5) as usize
    );
}

/// A value held by a table and a slot, let go of by both in one write and retired once
/// for both (`Unlinked::retire_with`): not freed while a reader that could have seen it
/// (through either) is pinned, freed exactly once after, and its two references released
/// together (a second one left over would keep it alive: counted below).
#[test]
fn a_value_let_go_of_by_a_table_and_a_slot_is_retired_once_for_both() {
    let reclaimer = Reclaimer::new(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let slots = Slots::new(&reclaimer);
    let table: IdTable<Counted, ()> = IdTable::new(&reclaimer, ());
    let is = |n: u32| move |c: &Counted| c.n == n;
    {
        let pin = reclaimer.pin();
        let v = counted(1, &drops);
        assert!(
            table
                .lock()
                .writer()
                .set(7, is(1), Some(v.clone()), &pin)
                .is_none()
        );
        assert_eq!(slots.push(v, &pin), 0);
    }
    // Channels, not barriers: a side that fails drops its sender, so the other one stops
    // waiting and the test fails instead of hanging.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (table_ref, slots_ref, reclaimer_ref, drops_ref) = (&table, &slots, &reclaimer, &drops);
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let pin = reclaimer_ref.pin();
            // Borrowed from the table (no reference of the reader's own).
            let held = table_ref.get(7, is(1), &pin).expect("stored");
            seen_tx.send(()).expect("the writer waits");
            // Released, or the writer failed (its sender dropped): go on either way.
            let _ = release_rx.recv();
            // Still valid: the reader's pin held back the retirement.
            assert_eq!(held.n, 1);
            assert_eq!(drops_ref.load(Ordering::Relaxed), 0);
        });
        seen_rx.recv().expect("the reader took the value");
        {
            let pin = reclaimer_ref.pin();
            let from_table = table_ref
                .lock()
                .writer()
                .set(7, is(1), Some(counted(1, drops_ref)), &pin)
                .expect("held");
            let from_slot = slots_ref
                .exchange(0, Some(counted(2, drops_ref)), &pin)
                .expect("held");
            assert!(Arc::ptr_eq(&from_table, &from_slot));
            from_table.retire_with(from_slot);
        }
        reclaimer_ref.flush();
        let freed_early = drops_ref.load(Ordering::Relaxed);
        release_tx.send(()).expect("the reader waits");
        reader.join().expect("the reader's checks");
        assert_eq!(freed_early, 0, "freed under a reader's pin");
    });
    // The reader's pin is gone: the next batch of this thread frees it.
    reclaimer.flush();
    {
        let pin = reclaimer.pin();
        drop(slots.exchange(0, None, &pin));
    }
    reclaimer.flush();
    assert!(drops.load(Ordering::Relaxed) >= 1);
    drop(table);
    drop(slots);
    drop(reclaimer);
    // The three values, each freed exactly once.
    assert_eq!(drops.load(Ordering::Relaxed), 3);
}

/// Two different values retired together are each retired on their own, freed once.
#[test]
fn different_values_retired_together_are_retired_each() {
    let reclaimer = Reclaimer::new(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let slots = Slots::new(&reclaimer);
    let (kept_1, kept_2) = (counted(1, &drops), counted(2, &drops));
    {
        let pin = reclaimer.pin();
        slots.push(kept_1.clone(), &pin);
        slots.push(kept_2.clone(), &pin);
        let a = slots.exchange(0, None, &pin).expect("held");
        let b = slots.exchange(1, None, &pin).expect("held");
        a.retire_with(b);
    }
    reclaimer.flush();
    // Each slot's reference released once: only ours are left.
    assert_eq!(Arc::strong_count(&kept_1), 1);
    assert_eq!(Arc::strong_count(&kept_2), 1);
    drop((kept_1, kept_2));
    assert_eq!(drops.load(Ordering::Relaxed), 2);
}

/// An `ArcPlace` written holds the value (a large one too) with one reference, and drops
/// it once; one dropped unwritten drops nothing.
#[test]
fn an_arc_place_holds_the_value_written_into_it() {
    let drops = Arc::new(AtomicUsize::new(0));
    let a = ArcPlace::new().write(Counted {
        n: 7,
        drops: drops.clone(),
    });
    assert_eq!(a.n, 7);
    assert_eq!(Arc::strong_count(&a), 1);
    assert_eq!(Arc::weak_count(&a), 0);
    let b = a.clone();
    drop(a);
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    drop(b);
    assert_eq!(drops.load(Ordering::Relaxed), 1);

    let place = ArcPlace::new();
    let mut v = [0u64; 32];
    v.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = i as u64 * 3);
    let big = place.write(v);
    assert!(big.iter().enumerate().all(|(i, x)| *x == i as u64 * 3));

    drop(ArcPlace::<Counted>::new());
    // A value that cannot be made: the place made before it goes with the unwinding.
    fn cannot_be_made() -> Counted {
        panic!("the value cannot be made")
    }
    // The place is made first (the receiver), then the value's making unwinds.
    let unwound = std::panic::catch_unwind(|| ArcPlace::new().write(cannot_be_made()));
    assert!(unwound.is_err());
    assert_eq!(drops.load(Ordering::Relaxed), 1);
}
