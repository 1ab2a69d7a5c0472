use crate::tests::{Counted, counted};
use crate::{IdTable, Reclaimer, Slots};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Values let go of under one pin and retired as a [`crate::RetireBatch`]: three held by
/// a table and a slot at once (two references each, retired as one), two removed from the
/// table, and one of another reclaimer's slots (retired on its own, through its own
/// reclaimer). A reader pinned before the batch keeps what it loaded valid: nothing of the
/// batch is freed while it is pinned, whether the batch went as one entry (at least the
/// reclaimer's batch size: `batch` 4) or value by value (below it: 64). Once it is gone,
/// each is freed exactly once (a reference left over would keep one alive, one released
/// twice would free it under the structures that replaced it: both counted).
fn run_batch(batch: usize) {
    let reclaimer = Reclaimer::new(batch);
    let other = Reclaimer::new(1);
    let (drops, replaced, foreign) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let slots = Slots::new(&reclaimer);
    let others = Slots::new(&other);
    let table: IdTable<Counted, ()> = IdTable::new(&reclaimer, ());
    let is = |n: u32| move |c: &Counted| c.n == n;
    // Hashes spread over the high bits (positions come from them).
    let h = |n: u32| u64::from(n) << 56;
    {
        let pin = reclaimer.pin();
        let mut w = table.lock();
        for n in 1..=5 {
            let v = counted(n, &drops);
            assert!(w.writer().set(h(n), is(n), Some(v.clone()), &pin).is_none());
            if n <= 3 {
                assert_eq!(slots.push(v, &pin), n - 1);
            }
        }
        others.push(counted(9, &foreign), &other.pin());
    }
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (table_ref, slots_ref, reclaimer_ref, drops_ref) = (&table, &slots, &reclaimer, &drops);
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let pin = reclaimer_ref.pin();
            let first = table_ref.get(h(1), is(1), &pin).expect("stored");
            let removed = table_ref.get(h(5), is(5), &pin).expect("stored");
            let from_slot = slots_ref.load(2, &pin).expect("stored");
            seen_tx.send(()).expect("the writer waits");
            let _ = release_rx.recv();
            assert_eq!((first.n, removed.n, from_slot.n), (1, 5, 3));
            assert_eq!(drops_ref.load(Ordering::Relaxed), 0, "freed under a pin");
        });
        seen_rx.recv().expect("the reader took its values");
        {
            let pin = reclaimer_ref.pin();
            let other_pin = other.pin();
            let mut retired = reclaimer_ref.retire_batch(&pin, 0);
            let mut w = table_ref.lock();
            for n in 1..=3 {
                let new = counted(n, &replaced);
                let t = w.writer().set(h(n), is(n), Some(new.clone()), &pin);
                let s = slots_ref.exchange(n as usize - 1, Some(new), &pin);
                retired.push_with(t.expect("held"), s.expect("held"));
            }
            for n in 4..=5 {
                retired.push(w.writer().set(h(n), is(n), None, &pin).expect("held"));
            }
            retired.push(others.exchange(0, None, &other_pin).expect("held"));
            assert_eq!(retired.len(), 5);
            drop(w);
            retired.retire();
        }
        reclaimer_ref.flush();
        other.flush();
        release_tx.send(()).expect("the reader waits");
        reader.join().expect("the reader's checks");
    });
    // The reader's pin is gone: what is still in this thread's batch goes with the next.
    reclaimer.flush();
    other.flush();
    assert_eq!(drops.load(Ordering::Relaxed), 5, "batch {batch}");
    assert_eq!(foreign.load(Ordering::Relaxed), 1, "batch {batch}");
    assert_eq!(replaced.load(Ordering::Relaxed), 0);
    drop((table, slots, others));
    drop((reclaimer, other));
    assert_eq!(drops.load(Ordering::Relaxed), 5);
    // The new values, each held by its table slot and its index slot, freed once.
    assert_eq!(replaced.load(Ordering::Relaxed), 3);
}

#[test]
fn a_batch_of_at_least_the_batch_size_is_retired_as_one_after_the_readers() {
    run_batch(4);
}

#[test]
fn a_smaller_batch_is_retired_value_by_value_after_the_readers() {
    run_batch(64);
}

/// An empty batch retires nothing (and allocates nothing to do it).
#[test]
fn an_empty_batch_retires_nothing() {
    let reclaimer = Reclaimer::new(1);
    let pin = reclaimer.pin();
    let retired = reclaimer.retire_batch::<Counted>(&pin, 0);
    assert!(retired.is_empty());
    retired.retire();
}

/// A batch retired as one while other threads are pinned goes as soon as they leave: it
/// is linked into each pinned thread's list when it is retired (seize needs an entry per
/// pinned thread; with the batch's one entry alone it would wait for this thread's next
/// retirements), so the last reader to leave frees it, with no flush after. It counts as
/// the reclaimer's batch size of entries: with 12 readers and a batch size of 16, a unit
/// of 8 entries waited.
#[test]
fn a_batch_retired_as_one_goes_when_the_pinned_readers_leave() {
    retired_as_one_with_readers(2, 8, 3);
    retired_as_one_with_readers(16, 16, 12);
}

/// `values` values retired as one batch (a reclaimer of batch size `batch`) while
/// `readers` other threads are pinned: none freed before they leave, all after.
fn retired_as_one_with_readers(batch: usize, values: u32, readers: usize) {
    let reclaimer = Reclaimer::new(batch);
    let drops = Arc::new(AtomicUsize::new(0));
    let slots = Slots::new(&reclaimer);
    {
        let pin = reclaimer.pin();
        for n in 0..values {
            slots.push(counted(n, &drops), &pin);
        }
        // Anything this thread retired before: gone, so the batch goes by itself.
    }
    reclaimer.flush();
    let (pinned_tx, pinned_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let (reclaimer_ref, go_ref) = (&reclaimer, &go_rx);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                let pinned = pinned_tx.clone();
                s.spawn(move || {
                    let _pin = reclaimer_ref.pin();
                    pinned.send(()).expect("the writer waits");
                    let _ = go_ref.lock().expect("not poisoned").recv();
                })
            })
            .collect();
        for _ in 0..readers {
            pinned_rx.recv().expect("a reader pinned");
        }
        {
            let pin = reclaimer.pin();
            let mut retired = reclaimer.retire_batch(&pin, values as usize);
            for n in 0..values {
                retired.push(slots.exchange(n as usize, None, &pin).expect("held"));
            }
            retired.retire();
        }
        assert_eq!(
            drops.load(Ordering::Relaxed),
            0,
            "freed under the readers' pins (batch {batch})"
        );
        for _ in 0..readers {
            go_tx.send(()).expect("a reader waits");
        }
        for r in handles {
            r.join().expect("a reader");
        }
    });
    assert_eq!(
        drops.load(Ordering::Relaxed),
        values as usize,
        "{values} values retired as one with {readers} readers pinned (batch {batch})"
    );
}
