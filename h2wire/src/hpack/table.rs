//! HPACK's header tables (RFC 7541 §2.3): the static table of Appendix A and the decoder's
//! dynamic table with its size accounting and eviction (§4).
//!
//! Entries evicted from the dynamic table keep their buffers in a free list, so a steady
//! stream of insertions does not allocate.

use std::collections::VecDeque;

/// RFC 7541 Appendix A (spec text): index 1 is the first entry.
pub(crate) const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The overhead of an entry in the table size (RFC 7541 §4.1).
pub(crate) const ENTRY_OVERHEAD: usize = 32;

#[derive(Default)]
pub(crate) struct Entry {
    pub(crate) name: Vec<u8>,
    pub(crate) value: Vec<u8>,
}

impl Entry {
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

/// The dynamic table, newest entry first.
pub(crate) struct Dynamic {
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
    free: Vec<Entry>,
}

impl Dynamic {
    pub(crate) fn new(max: usize) -> Dynamic {
        Dynamic {
            entries: VecDeque::new(),
            size: 0,
            max,
            free: Vec::new(),
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry `i` places from the newest (0 is the newest).
    pub(crate) fn get(&self, i: usize) -> Option<(&[u8], &[u8])> {
        self.entries
            .get(i)
            .map(|e| (e.name.as_slice(), e.value.as_slice()))
    }

    /// An empty entry to fill and [`push`](Self::push), with buffers from evicted entries.
    pub(crate) fn spare(&mut self) -> Entry {
        let mut e = self.free.pop().unwrap_or_default();
        e.name.clear();
        e.value.clear();
        e
    }

    /// Inserts `e` as the newest entry, evicting from the oldest until it fits; an entry
    /// larger than the whole table empties it and is not inserted (RFC 7541 §4.4).
    pub(crate) fn push(&mut self, e: Entry) {
        let size = e.size();
        if size > self.max {
            self.evict_to(0);
            self.free.push(e);
            return;
        }
        self.evict_to(self.max - size);
        self.size += size;
        self.entries.push_front(e);
    }

    /// A new maximum size (a dynamic table size update).
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
        self.evict_to(max);
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let e = self
                .entries
                .pop_back()
                .expect("a table with a non-zero size has entries");
            self.size -= e.size();
            self.free.push(e);
        }
    }
}
