//! The calls waiting for a stream while the peer's MAX_CONCURRENT_STREAMS are all open, in
//! arrival order: each holds a ticket; a stream freed is granted to the oldest waiter
//! without one (and kept for it against newer calls); a waiter that leaves (timed out,
//! dropped) gives its grant to the next.

use std::collections::VecDeque;
use std::task::{Context, Waker};

struct Waiter {
    ticket: u64,
    waker: Waker,
    granted: bool,
}

#[derive(Default)]
pub(super) struct Waiters {
    /// By ticket, ascending.
    queue: VecDeque<Waiter>,
    next_ticket: u64,
    /// Waiters granted a stream they have not taken yet.
    granted: u32,
}

impl Waiters {
    fn find(&self, ticket: u64) -> Option<usize> {
        if ticket == 0 {
            return None;
        }
        self.queue.binary_search_by_key(&ticket, |w| w.ticket).ok()
    }

    /// Whether the holder of `ticket` (0: a new call) may open a stream with `active` of
    /// `max` open: grants not its own count as open.
    pub(super) fn has_room(&self, ticket: u64, active: u32, max: u32) -> bool {
        let own = self.find(ticket).is_some_and(|i| self.queue[i].granted);
        u64::from(active) + u64::from(self.granted) - u64::from(own) < u64::from(max)
    }

    /// Queues the caller of `cx` (or refreshes its waker), giving it a ticket.
    pub(super) fn wait(&mut self, ticket: &mut u64, cx: &Context<'_>) {
        if let Some(i) = self.find(*ticket) {
            let w = &mut self.queue[i];
            if w.granted {
                // No room after all (a lower MAX_CONCURRENT_STREAMS): wait again, first.
                w.granted = false;
                self.granted -= 1;
            }
            if !w.waker.will_wake(cx.waker()) {
                w.waker = cx.waker().clone();
            }
            return;
        }
        self.next_ticket += 1;
        *ticket = self.next_ticket;
        self.queue.push_back(Waiter {
            ticket: *ticket,
            waker: cx.waker().clone(),
            granted: false,
        });
    }

    /// Takes the holder of `ticket` out of the queue (it opened a stream, gave up or
    /// failed); true when it gave back a grant.
    pub(super) fn leave(&mut self, ticket: &mut u64) -> bool {
        let Some(i) = self.find(std::mem::take(ticket)) else {
            return false;
        };
        let granted = self.queue.remove(i).is_some_and(|w| w.granted);
        if granted {
            self.granted -= 1;
        }
        granted
    }

    /// Grants streams to the oldest waiters without one while `active` of `max` leave room.
    pub(super) fn grant(&mut self, active: u32, max: u32) {
        let mut room = u64::from(max).saturating_sub(u64::from(active) + u64::from(self.granted));
        for w in self.queue.iter_mut().filter(|w| !w.granted) {
            if room == 0 {
                break;
            }
            room -= 1;
            w.granted = true;
            self.granted += 1;
            w.waker.wake_by_ref();
        }
    }

    /// Wakes every waiter (the connection takes no new stream): they fail and leave.
    pub(super) fn wake_all(&mut self, wake: &mut Vec<Waker>) {
        wake.extend(self.queue.iter().map(|w| w.waker.clone()));
    }
}
