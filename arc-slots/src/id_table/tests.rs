use super::*;
use std::sync::atomic::AtomicBool;

thread_local! {
    /// Writes that probed ([`Writer::set`] without the slot of the last get) on this thread.
    pub(super) static PROBED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn probed() -> usize {
    PROBED.with(std::cell::Cell::get)
}

/// A value with a key and a version, that counts its drops.
struct Counted {
    key: u64,
    version: u64,
    drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

fn counted(key: u64, version: u64, drops: &Arc<AtomicUsize>) -> Arc<Counted> {
    Arc::new(Counted {
        key,
        version,
        drops: drops.clone(),
    })
}

/// A well-spread hash of a key (splitmix64's finalizer).
fn spread(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key_is(key: u64) -> impl Fn(&Counted) -> bool {
    move |c| c.key == key
}

/// Sets `key` (hashed by `hash`) to `value` in `table`; the version let go of.
fn set(
    table: &IdTable<Counted, Vec<u64>>,
    hash: impl Fn(u64) -> u64,
    key: u64,
    value: Option<Arc<Counted>>,
    pin: &Pin<'_>,
) -> Option<u64> {
    let mut guard = table.lock();
    let (log, mut writer) = guard.split();
    log.push(key);
    writer
        .set(hash(key), key_is(key), value, pin)
        .map(|old| old.version)
}

fn get(
    table: &IdTable<Counted, Vec<u64>>,
    hash: impl Fn(u64) -> u64,
    key: u64,
    pin: &Pin<'_>,
) -> Option<u64> {
    table.get(hash(key), key_is(key), pin).map(|c| c.version)
}

#[test]
fn a_slot_is_16_bytes_and_a_loan_one_pointer() {
    assert_eq!(size_of::<Slot<Counted>>(), 16);
    assert_eq!(size_of::<ArcRef<'_, Counted>>(), 8);
}

#[test]
fn values_are_set_found_replaced_removed_and_freed_once() {
    let reclaimer = Reclaimer::new(8);
    let drops = Arc::new(AtomicUsize::new(0));
    let table = IdTable::new(&reclaimer, Vec::new());
    let pin = reclaimer.pin();
    assert!(table.is_empty());
    assert_eq!(table.capacity(&pin), 0);
    assert_eq!(get(&table, spread, 1, &pin), None);
    assert_eq!(set(&table, spread, 1, None, &pin), None);
    assert_eq!(
        table.capacity(&pin),
        0,
        "removing what is absent allocates nothing"
    );
    for k in 0..100 {
        assert_eq!(
            set(&table, spread, k, Some(counted(k, 0, &drops)), &pin),
            None
        );
    }
    assert_eq!(table.len(), 100);
    for k in 0..100 {
        assert_eq!(get(&table, spread, k, &pin), Some(0), "key {k}");
    }
    assert_eq!(get(&table, spread, 100, &pin), None);
    // Replaced in place: the old version is handed back (valid under the pin).
    let old = {
        let mut guard = table.lock();
        let old = guard
            .writer()
            .set(spread(7), key_is(7), Some(counted(7, 1, &drops)), &pin);
        old.map(|o| Arc::clone(&o))
    };
    assert_eq!(old.as_ref().map(|o| (o.key, o.version)), Some((7, 0)));
    assert_eq!(get(&table, spread, 7, &pin), Some(1));
    assert_eq!(set(&table, spread, 8, None, &pin), Some(0));
    assert_eq!(get(&table, spread, 8, &pin), None);
    assert_eq!(table.len(), 99);
    let mut seen: Vec<(u64, u64)> = table.iter(&pin).map(|c| (c.key, c.version)).collect();
    seen.sort_unstable();
    let want: Vec<(u64, u64)> = (0..100)
        .filter(|&k| k != 8)
        .map(|k| (k, u64::from(k == 7)))
        .collect();
    assert_eq!(seen, want);
    // The lock guarded the caller's data: every `set` logged its key.
    assert_eq!(table.lock().len(), 102);
    // Nothing let go of is freed while a pin that could have seen it is held.
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    drop(old);
    drop(pin);
    drop(table);
    assert_eq!(
        drops.load(Ordering::Relaxed),
        99,
        "the table's own, at once"
    );
    drop(reclaimer);
    // Every value, held or let go of, freed exactly once.
    assert_eq!(drops.load(Ordering::Relaxed), 101);
}

#[test]
fn values_of_one_hash_are_told_apart_by_their_equality() {
    let reclaimer = Reclaimer::new(4);
    let drops = Arc::new(AtomicUsize::new(0));
    let table = IdTable::new(&reclaimer, Vec::new());
    let pin = reclaimer.pin();
    // Four hashes for 200 keys, two of which differ only in the bit the tag sets: one
    // chain of 200 values (and a spread key beside them).
    let colliding = |k: u64| [0, 1, 1 << 63, (1 << 63) | 1][(k % 4) as usize];
    for k in 0..200 {
        set(&table, colliding, k, Some(counted(k, 0, &drops)), &pin);
    }
    set(&table, spread, 1000, Some(counted(1000, 0, &drops)), &pin);
    for k in 0..200 {
        assert_eq!(get(&table, colliding, k, &pin), Some(0), "key {k}");
    }
    assert_eq!(get(&table, colliding, 200, &pin), None);
    // Removing every third leaves tombstones in the chain, which lookups walk past.
    for k in (0..200).step_by(3) {
        assert_eq!(set(&table, colliding, k, None, &pin), Some(0));
    }
    for k in 0..200 {
        let want = (k % 3 != 0).then_some(0);
        assert_eq!(get(&table, colliding, k, &pin), want, "key {k}");
    }
    // Set again, the removed keys take the tombstones back (no growth) and are found.
    let capacity = table.capacity(&pin);
    for k in (0..200).step_by(3) {
        assert_eq!(
            set(&table, colliding, k, Some(counted(k, 1, &drops)), &pin),
            None
        );
    }
    assert_eq!(table.capacity(&pin), capacity);
    for k in 0..200 {
        let want = u64::from(k % 3 == 0);
        assert_eq!(get(&table, colliding, k, &pin), Some(want), "key {k}");
    }
    assert_eq!(get(&table, spread, 1000, &pin), Some(0));
    assert_eq!(table.len(), 201);
    drop(pin);
    drop(table);
    drop(reclaimer);
    assert_eq!(drops.load(Ordering::Relaxed), 201 + 67);
}

#[test]
fn the_array_grows_shrinks_and_sheds_tombstones_within_its_load() {
    let reclaimer = Reclaimer::new(64);
    let drops = Arc::new(AtomicUsize::new(0));
    let table = IdTable::new(&reclaimer, Vec::new());
    let pin = reclaimer.pin();
    let within = |table: &IdTable<Counted, Vec<u64>>, what: &str| {
        let (n, c) = (table.len(), table.capacity(&pin));
        assert!(c >= MIN_CAPACITY, "{what}: {n} in {c}");
        assert!(n * MAX_LOAD.1 <= c * MAX_LOAD.0, "{what}: {n} in {c}");
        assert!(c <= MIN_CAPACITY.max(n * 4 + 4), "{what}: {n} in {c}");
    };
    let mut last = table.capacity(&pin);
    for k in 0..10_000 {
        set(&table, spread, k, Some(counted(k, 0, &drops)), &pin);
        within(&table, "growing");
        // A full array doubles (at least), so a value is moved about once as it grows.
        let c = table.capacity(&pin);
        assert!(c == last || c >= 2 * last, "grew from {last} to {c} at {k}");
        last = c;
    }
    let grown = table.capacity(&pin);
    // Rebuilt at most at the live count: no bigger than that at the rebuilt load.
    assert!(grown * MIN_LOAD.0 <= 10_000 * MIN_LOAD.1 + MIN_LOAD.1);
    for k in 0..10_000 {
        assert_eq!(get(&table, spread, k, &pin), Some(0), "key {k}");
    }
    // Mostly emptied, the array shrinks.
    for k in 100..10_000 {
        assert_eq!(set(&table, spread, k, None, &pin), Some(0));
        within(&table, "shrinking");
    }
    assert!(table.capacity(&pin) < 1000, "{}", table.capacity(&pin));
    // A churn of keys through a table of 100 leaves its tombstones to rebuilds: the array
    // stays the size of what it holds.
    for k in 10_000..60_000 {
        set(&table, spread, k, Some(counted(k, 0, &drops)), &pin);
        set(&table, spread, k, None, &pin);
        within(&table, "churning");
    }
    assert!(table.capacity(&pin) < 1000, "{}", table.capacity(&pin));
    for k in 0..60_000 {
        let want = (k < 100).then_some(0);
        assert_eq!(get(&table, spread, k, &pin), want, "key {k}");
    }
    // Emptied, it keeps its smallest array.
    for k in 0..100 {
        set(&table, spread, k, None, &pin);
    }
    assert!(table.is_empty());
    assert_eq!(table.iter(&pin).count(), 0);
    assert_eq!(table.capacity(&pin), MIN_CAPACITY);
    drop(pin);
    drop(table);
    drop(reclaimer);
    assert_eq!(drops.load(Ordering::Relaxed), 60_000);
}

#[test]
fn a_value_on_loan_outlives_its_replacement_and_the_old_array() {
    let reclaimer = Reclaimer::new(1);
    let drops = Arc::new(AtomicUsize::new(0));
    let table = IdTable::new(&reclaimer, Vec::new());
    {
        let pin = reclaimer.pin();
        set(&table, spread, 1, Some(counted(1, 0, &drops)), &pin);
    }
    let reader = reclaimer.pin();
    let loaned = table.get(spread(1), key_is(1), &reader);
    let walk = table.iter(&reader);
    // Another pin grows the array past it, then replaces the value and removes it.
    std::thread::scope(|s| {
        s.spawn(|| {
            let pin = reclaimer.pin();
            for k in 2..1000 {
                set(&table, spread, k, Some(counted(k, 0, &drops)), &pin);
            }
            set(&table, spread, 1, Some(counted(1, 1, &drops)), &pin);
            set(&table, spread, 1, None, &pin);
            drop(pin);
            reclaimer.flush();
        });
    });
    // The reader still sees version 0, and its walk the first array (rebuilt at its
    // seventh value).
    assert_eq!(loaned.as_ref().map(|c| c.version), Some(0));
    let mut old: Vec<(u64, u64)> = walk.map(|c| (c.key, c.version)).collect();
    old.sort_unstable();
    assert_eq!(old, (1..7).map(|k| (k, 0)).collect::<Vec<_>>());
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    assert_eq!(get(&table, spread, 1, &reader), None);
    drop(reader);
    reclaimer.flush();
    drop(table);
    drop(reclaimer);
    assert_eq!(drops.load(Ordering::Relaxed), 1000);
}

#[test]
#[should_panic(expected = "another reclaimer")]
fn a_pin_of_another_reclaimer_is_refused() {
    let ours = Reclaimer::new(8);
    let theirs = Reclaimer::new(8);
    let table: IdTable<u32> = IdTable::new(&ours, ());
    let pin = theirs.pin();
    table.get(1, |_| true, &pin);
}

#[test]
fn readers_find_every_value_while_a_writer_replaces_grows_and_shrinks() {
    // Keys below STABLE are always held (replaced with new versions); the others come and
    // go in waves that grow the array and shrink it again.
    const STABLE: u64 = 64;
    const ROUNDS: u64 = 40;
    const WAVE: u64 = 2_000;
    let reclaimer = Reclaimer::new(8);
    let drops = Arc::new(AtomicUsize::new(0));
    let table = IdTable::new(&reclaimer, Vec::new());
    let created = AtomicUsize::new(0);
    {
        let pin = reclaimer.pin();
        for k in 0..STABLE {
            set(&table, spread, k, Some(counted(k, 0, &drops)), &pin);
            created.fetch_add(1, Ordering::Relaxed);
        }
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for r in 0..3u64 {
            let (table, reclaimer, done) = (&table, &reclaimer, &done);
            s.spawn(move || {
                let mut k = r;
                while !done.load(Ordering::Relaxed) {
                    let pin = reclaimer.pin();
                    k = (k + 7) % STABLE;
                    let c = table.get(spread(k), key_is(k), &pin);
                    assert_eq!(c.map(|c| c.key), Some(k), "stable key {k} missed");
                    // A walk sees every stable key once, whatever the writer does.
                    let mut stable: Vec<u64> = table
                        .iter(&pin)
                        .map(|c| {
                            assert!(c.version < ROUNDS * 2 + 1, "a value never stored");
                            c.key
                        })
                        .filter(|&k| k < STABLE)
                        .collect();
                    stable.sort_unstable();
                    assert_eq!(stable, (0..STABLE).collect::<Vec<_>>());
                }
            });
        }
        s.spawn(|| {
            for round in 1..=ROUNDS {
                let pin = reclaimer.pin();
                let wave = STABLE + round * WAVE;
                for k in wave..wave + WAVE {
                    set(&table, spread, k, Some(counted(k, round, &drops)), &pin);
                    created.fetch_add(1, Ordering::Relaxed);
                    let s = k % STABLE;
                    set(&table, spread, s, Some(counted(s, round, &drops)), &pin);
                    created.fetch_add(1, Ordering::Relaxed);
                }
                for k in wave..wave + WAVE {
                    set(&table, spread, k, None, &pin);
                }
            }
            done.store(true, Ordering::Relaxed);
        });
    });
    let pin = reclaimer.pin();
    assert_eq!(table.len(), STABLE as usize);
    for k in 0..STABLE {
        assert_eq!(get(&table, spread, k, &pin), Some(ROUNDS), "key {k}");
    }
    drop(pin);
    drop(table);
    drop(reclaimer);
    assert_eq!(
        drops.load(Ordering::Relaxed),
        created.load(Ordering::Relaxed)
    );
}

#[test]
fn readers_of_keys_that_come_and_go_find_only_their_own() {
    // Keys come and go through a small table, reusing each other's tombstones: a reader
    // can meet a removed key's tag with another key's value, which the equality refuses.
    const KEYS: u64 = 32;
    const ROUNDS: u64 = 20_000;
    let reclaimer = Reclaimer::new(8);
    let drops = Arc::new(AtomicUsize::new(0));
    let table = IdTable::new(&reclaimer, Vec::new());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for r in 0..2u64 {
            let (table, reclaimer, done) = (&table, &reclaimer, &done);
            s.spawn(move || {
                let mut k = r;
                while !done.load(Ordering::Relaxed) {
                    let pin = reclaimer.pin();
                    k = (k + 5) % KEYS;
                    if let Some(c) = table.get(spread(k), key_is(k), &pin) {
                        assert_eq!(c.key, k, "a lookup of {k} found {}", c.key);
                    }
                }
            });
        }
        s.spawn(|| {
            let pin = reclaimer.pin();
            for round in 0..ROUNDS {
                let k = round % KEYS;
                set(&table, spread, k, Some(counted(k, round, &drops)), &pin);
                let gone = (round * 7) % KEYS;
                set(&table, spread, gone, None, &pin);
            }
            done.store(true, Ordering::Relaxed);
        });
    });
    drop(table);
    drop(reclaimer);
    assert_eq!(drops.load(Ordering::Relaxed), ROUNDS as usize);
}

#[test]
fn a_panic_in_the_equality_leaves_the_table_as_it_was() {
    let reclaimer = Reclaimer::new(8);
    let drops = Arc::new(AtomicUsize::new(0));
    let table = IdTable::new(&reclaimer, Vec::new());
    let pin = reclaimer.pin();
    for k in 0..20 {
        set(&table, spread, k, Some(counted(k, 0, &drops)), &pin);
    }
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut guard = table.lock();
        let (log, mut w) = guard.split();
        log.push(99);
        w.set(
            spread(5),
            |_: &Counted| panic!("an equality that fails"),
            Some(counted(5, 1, &drops)),
            &pin,
        );
    }));
    assert!(panicked.is_err());
    // The lock is taken again; nothing changed but what the caller did under it.
    assert_eq!(table.lock().last(), Some(&99));
    assert_eq!(table.len(), 20);
    for k in 0..20 {
        assert_eq!(get(&table, spread, k, &pin), Some(0), "key {k}");
    }
    assert_eq!(
        set(&table, spread, 5, Some(counted(5, 2, &drops)), &pin),
        Some(0)
    );
    drop(pin);
    drop(table);
    drop(reclaimer);
    // The value the failed set was given was dropped with it.
    assert_eq!(drops.load(Ordering::Relaxed), 22);
}

/// A replacement of the value the writer's last get found goes to its slot without a
/// probe; any other write probes: an insert, a removal, a replacement of another key
/// (of another hash, or of the same hash told apart by the equality), and one whose slot
/// moved (the array rebuilt since the get). Every one of them leaves the table as a
/// probe would.
#[test]
fn a_write_of_what_the_writer_just_found_takes_its_slot_and_others_probe() {
    let reclaimer = Reclaimer::new(8);
    let pin = reclaimer.pin();
    let drops = Arc::new(AtomicUsize::new(0));
    let table: IdTable<Counted, ()> = IdTable::new(&reclaimer, ());
    // Keys 1 and 2 share a hash; the others are spread.
    let hash = |k: u64| if k <= 2 { spread(1) } else { spread(k) };
    let mut guard = table.lock();
    let mut w = guard.writer();
    let before = probed();
    for k in 1..=4 {
        assert!(
            w.set(hash(k), key_is(k), Some(counted(k, 1, &drops)), &pin)
                .is_none()
        );
    }
    assert_eq!(probed() - before, 4, "inserts probe");
    // Found, then replaced: no probe.
    let before = probed();
    for k in 1..=4 {
        assert_eq!(w.get(hash(k), key_is(k), &pin).map(|c| c.version), Some(1));
        let old = w.set(hash(k), key_is(k), Some(counted(k, 2, &drops)), &pin);
        assert_eq!(old.map(|o| o.version), Some(1));
    }
    assert_eq!(probed(), before, "a found value's replacement probed");
    // Found one, wrote another: of the same hash (the equality tells them apart), of
    // another hash; then a removal of the one found.
    let before = probed();
    w.get(hash(1), key_is(1), &pin).expect("held");
    let old = w.set(hash(2), key_is(2), Some(counted(2, 3, &drops)), &pin);
    assert_eq!(old.map(|o| o.version), Some(2));
    let old = w.set(hash(3), key_is(3), Some(counted(3, 3, &drops)), &pin);
    assert_eq!(old.map(|o| o.version), Some(2));
    let old = w.set(hash(1), key_is(1), None, &pin);
    assert_eq!(old.map(|o| o.version), Some(2));
    assert_eq!(probed() - before, 3);
    // Found, then the array rebuilt by inserts: the old slot number is not trusted.
    w.get(hash(4), key_is(4), &pin).expect("held");
    for k in 10..40 {
        drop(w.set(hash(k), key_is(k), Some(counted(k, 1, &drops)), &pin));
    }
    let old = w.set(hash(4), key_is(4), Some(counted(4, 3, &drops)), &pin);
    assert_eq!(old.map(|o| o.version), Some(2));
    drop(guard);
    let versions: Vec<_> = (1..=4)
        .map(|k| table.get(hash(k), key_is(k), &pin).map(|c| c.version))
        .collect();
    assert_eq!(versions, [None, Some(3), Some(3), Some(3)]);
    for k in 10..40 {
        assert!(table.get(hash(k), key_is(k), &pin).is_some());
    }
}

#[test]
fn the_hints_change_nothing_and_take_any_table() {
    // The three hints run on an empty table (no array yet: nothing to fetch), on a held
    // one, and for hashes present or not; what the table holds is unchanged. The bare
    // hint takes any address, null and dangling ones included.
    crate::prefetch(std::ptr::null::<u64>());
    crate::prefetch(std::ptr::dangling::<[u8; 64]>());
    let reclaimer = Reclaimer::new(8);
    let drops = Arc::new(AtomicUsize::new(0));
    let table = IdTable::new(&reclaimer, Vec::new());
    let pin = reclaimer.pin();
    let hint = |k: u64| {
        table.prefetch_table();
        table.prefetch_array();
        table.prefetch_slot(spread(k), &pin);
    };
    hint(1);
    assert_eq!(table.capacity(&pin), 0, "a hint allocates nothing");
    for k in 0..50 {
        set(&table, spread, k, Some(counted(k, 0, &drops)), &pin);
    }
    for k in 0..100 {
        hint(k);
    }
    assert_eq!(table.len(), 50);
    for k in 0..100 {
        assert_eq!(
            get(&table, spread, k, &pin),
            (k < 50).then_some(0),
            "key {k}"
        );
    }
}

#[test]
#[should_panic(expected = "another reclaimer")]
fn a_slot_hint_refuses_a_pin_of_another_reclaimer() {
    let ours = Reclaimer::new(8);
    let theirs = Reclaimer::new(8);
    let table: IdTable<u32> = IdTable::new(&ours, ());
    let pin = theirs.pin();
    table.prefetch_slot(1, &pin);
}
