//! The take's look-ahead (`TakeSink::ahead`): a take that asks for states ahead takes
//! exactly what the plain take takes.

use super::tests::{id, states};
use super::*;

/// A sink that keeps every client taken whole, asking for states ahead or not.
struct Keep {
    taken: Vec<Taken>,
    ahead: bool,
}

impl TakeSink for Keep {
    fn taken(&mut self, t: Taken) {
        self.taken.push(t);
    }

    fn ahead(&self) -> bool {
        self.ahead
    }
}

/// A take that asks for the states ahead takes what the plain take takes, in its order:
/// the same random schedules (states and none, due times out of order in the heap,
/// reschedules earlier, followers) into two schedulers of one seed, taken alternately
/// with and without the hint.
#[test]
fn a_take_that_asks_ahead_takes_what_the_plain_one_takes() {
    let (sid, v) = states(8);
    let ids: Vec<ClientId> = std::iter::once(sid)
        .chain((0..40).map(|i| id(&format!("c{i}"))))
        .collect();
    let fields = |t: &Taken| {
        (
            t.id.clone(),
            t.due,
            t.hash,
            t.state.as_ref().map(Arc::as_ptr),
            t.also,
        )
    };
    for seed in 0..40u64 {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let mut next = |n: u64| rng.below(n);
        let pair = [
            SyncScheduler::new(3, 100, 8, Some(seed)),
            SyncScheduler::new(3, 100, 8, Some(seed)),
        ];
        let mut now = 0;
        for step in 0..300 {
            now += next(30);
            let k = next(ids.len() as u64) as usize;
            let state = (k == 0 && next(3) != 0).then(|| v[next(8) as usize].clone());
            match next(5) {
                0 | 1 => pair
                    .iter()
                    .for_each(|s| s.schedule_all([1, 2], &ids[k], state.clone(), now)),
                2 => {
                    let (due, regular) = (now + next(200), next(2) == 0);
                    pair.iter()
                        .for_each(|s| s.schedule_at(1, &ids[k], due, regular));
                }
                _ => {
                    let (max, followers) = (1 + next(12) as usize, next(2) << 2);
                    let at = if next(4) == 0 { Millis::MAX } else { now };
                    let taken = [true, false].map(|ahead| {
                        let mut sink = Keep {
                            taken: Vec::new(),
                            ahead,
                        };
                        let s = &pair[usize::from(!ahead)];
                        let n = s.take_into(1, followers, at, max, &mut sink);
                        assert_eq!(n, sink.taken.len(), "seed {seed} step {step}");
                        sink.taken.iter().map(fields).collect::<Vec<_>>()
                    });
                    assert_eq!(taken[0], taken[1], "seed {seed} step {step}");
                }
            }
        }
    }
}
