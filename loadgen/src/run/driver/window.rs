//! The AIMD window of items one lane keeps in flight to one node (see `driver`'s docs).

use std::time::Instant;

/// The items one lane may have in flight to one node (AIMD; see the module docs).
#[derive(Debug, Clone)]
pub(super) struct Window {
    /// Current size, in items.
    pub(super) size: f64,
    /// Ceiling (`batch × concurrency`).
    pub(super) max: f64,
    /// Floor (a quarter of a batch).
    pub(super) min: f64,
    /// Items per full batch.
    pub(super) batch: f64,
    /// Items in flight now.
    pub(super) items: usize,
    /// When the window was last cut: only batches sent later may cut it again.
    pub(super) cut_at: Instant,
}

impl Window {
    pub(super) fn new(batch: usize, concurrency: usize, now: Instant) -> Self {
        let max = (batch * concurrency.max(1)) as f64;
        Self {
            size: max,
            max,
            min: (batch as f64 / 4.0).max(1.0),
            batch: batch as f64,
            items: 0,
            cut_at: now,
        }
    }

    /// Items the next batch may take now (0: wait), given `queued` items waiting and
    /// batches of at most `batch`. One batch may always be in flight.
    pub(super) fn room(&self, batch: usize, queued: usize) -> usize {
        let size = self.size as usize;
        let want = queued.min(batch).min(size.max(1));
        if self.items == 0 || self.items + want <= size {
            want
        } else {
            0
        }
    }

    /// A batch of `items` sent at `sent` completed at `now`; `overload` says whether it
    /// signalled overload. Returns whether the window was cut.
    pub(super) fn complete(
        &mut self,
        items: usize,
        sent: Instant,
        now: Instant,
        overload: bool,
    ) -> bool {
        self.items = self.items.saturating_sub(items);
        if overload {
            if sent >= self.cut_at {
                self.size = (self.size / 2.0).max(self.min);
                self.cut_at = now;
                return true;
            }
        } else {
            self.size = (self.size + self.batch * items as f64 / self.size).min(self.max);
        }
        false
    }
}
