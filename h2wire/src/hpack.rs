//! HPACK (RFC 7541): a [`Decoder`] for whatever a peer sends (static and dynamic table,
//! eviction, size updates, Huffman strings) and a stateless encoder ([`encode_field`]) whose
//! output never depends on earlier blocks, so a request head is a constant built once.
//!
//! The decoder hands each field to a callback as two borrowed byte slices: plain strings
//! straight from the block, Huffman strings from scratch buffers the decoder reuses, table
//! entries from the table. Nothing is allocated per field once the buffers have grown.

mod huffman;
mod table;

pub use huffman::{encode as huffman_encode, encoded_len as huffman_encoded_len};
use table::{Dynamic, ENTRY_OVERHEAD, STATIC};

/// The default SETTINGS_HEADER_TABLE_SIZE.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Whether a decoding error is the connection's or the stream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpackErrorKind {
    /// A malformed block: a connection error, COMPRESSION_ERROR.
    Compression,
    /// The decoded header list is larger than the caller allows: a stream error; the block
    /// was still decoded whole, so the table is in step with the peer's.
    ListTooLarge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpackError {
    pub kind: HpackErrorKind,
    pub reason: &'static str,
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            HpackErrorKind::Compression => write!(f, "HPACK: {}", self.reason),
            HpackErrorKind::ListTooLarge => write!(f, "header list too large: {}", self.reason),
        }
    }
}

impl std::error::Error for HpackError {}

fn malformed(reason: &'static str) -> HpackError {
    HpackError {
        kind: HpackErrorKind::Compression,
        reason,
    }
}

/// A header block decoder: one per connection and direction, fed every block in order.
pub struct Decoder {
    table: Dynamic,
    /// The SETTINGS_HEADER_TABLE_SIZE we advertise: the most a size update may ask for.
    max_table_size: usize,
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

/// Where a field's name comes from, kept to insert it after the callback has seen it.
#[derive(Clone, Copy)]
enum Name<'b> {
    Static(usize),
    Dynamic(usize),
    Literal(&'b [u8]),
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE we advertise (4096 by default).
    pub fn new(max_table_size: usize) -> Self {
        Decoder {
            table: Dynamic::new(max_table_size),
            max_table_size,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// The dynamic table's size in the sense of RFC 7541 §4.1.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// The dynamic table's entries, newest first.
    pub fn table_entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (0..self.table.len()).filter_map(|i| self.table.get(i))
    }

    /// Decodes one whole header block (the caller joins HEADERS and CONTINUATION fragments),
    /// calling `f(name, value)` per field in order. When the header list size (the sum of
    /// name + value + 32 over the fields) exceeds `max_list_size`, `f` is not called for
    /// that field or any after it, the rest of the block is still decoded (the table must
    /// stay in step with the peer's) and the error kind is
    /// [`ListTooLarge`](HpackErrorKind::ListTooLarge); any other error is
    /// [`Compression`](HpackErrorKind::Compression), after which the decoder is unusable.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut pos = 0;
        let mut list_size = 0usize;
        let mut too_large = false;
        let mut fields = 0usize;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                // Indexed header field (§6.1).
                let index = integer(block, &mut pos, 7)?;
                let (name, value) = self.entry(index)?;
                list_size += name.len() + value.len() + ENTRY_OVERHEAD;
                too_large |= list_size > max_list_size;
                if !too_large {
                    f(name, value);
                }
                fields += 1;
                continue;
            }
            if b & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before the block's first field.
                if fields > 0 {
                    return Err(malformed("table size update after a header field"));
                }
                let size = integer(block, &mut pos, 5)?;
                if size > self.max_table_size {
                    return Err(malformed("table size update above the advertised limit"));
                }
                self.table.set_max(size);
                continue;
            }
            // Literal header field (§6.2): with incremental indexing (01), never indexed
            // (0001) or without indexing (0000).
            let (prefix, index_it) = if b & 0x40 != 0 { (6, true) } else { (4, false) };
            let name_index = integer(block, &mut pos, prefix)?;
            let Decoder {
                table,
                name_buf,
                value_buf,
                ..
            } = self;
            let name = if name_index == 0 {
                Name::Literal(string(block, &mut pos, name_buf)?)
            } else if name_index <= STATIC.len() {
                Name::Static(name_index - 1)
            } else if name_index - STATIC.len() - 1 < table.len() {
                Name::Dynamic(name_index - STATIC.len() - 1)
            } else {
                return Err(malformed("name index out of range"));
            };
            let value = string(block, &mut pos, value_buf)?;
            {
                let n = resolve(table, name);
                list_size += n.len() + value.len() + ENTRY_OVERHEAD;
                too_large |= list_size > max_list_size;
                if !too_large {
                    f(n, value);
                }
            }
            if index_it {
                let mut e = table.spare();
                e.name.extend_from_slice(resolve(table, name));
                e.value.extend_from_slice(value);
                table.push(e);
            }
            fields += 1;
        }
        if too_large {
            return Err(HpackError {
                kind: HpackErrorKind::ListTooLarge,
                reason: "header list larger than SETTINGS_MAX_HEADER_LIST_SIZE",
            });
        }
        Ok(())
    }

    /// The field at `index` of the combined index space (§2.3.3).
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if index == 0 {
            return Err(malformed("index 0"));
        }
        if index <= STATIC.len() {
            return Ok(STATIC[index - 1]);
        }
        self.table
            .get(index - STATIC.len() - 1)
            .ok_or(malformed("index out of range"))
    }
}

fn resolve<'t>(table: &'t Dynamic, name: Name<'t>) -> &'t [u8] {
    match name {
        Name::Static(i) => STATIC[i].0,
        Name::Dynamic(i) => table.get(i).map_or(&[], |(n, _)| n),
        Name::Literal(n) => n,
    }
}

/// An integer with an `n`-bit prefix (§5.1) at `block[*pos]`; values over `u32::MAX` are
/// errors.
fn integer(block: &[u8], pos: &mut usize, n: u32) -> Result<usize, HpackError> {
    let mask = (1u8 << n) - 1;
    let first = block[*pos] & mask;
    *pos += 1;
    if first < mask {
        return Ok(usize::from(first));
    }
    let mut value = u64::from(mask);
    let mut shift = 0;
    loop {
        let Some(&b) = block.get(*pos) else {
            return Err(malformed("integer truncated"));
        };
        *pos += 1;
        value += u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return Err(malformed("integer overflow"));
        }
    }
    usize::try_from(value)
        .ok()
        .filter(|&v| v <= u32::MAX as usize)
        .ok_or(malformed("integer overflow"))
}

/// A string literal (§5.2) at `block[*pos]`: a slice of the block, or of `scratch` when it
/// is Huffman-coded.
fn string<'b>(
    block: &'b [u8],
    pos: &mut usize,
    scratch: &'b mut Vec<u8>,
) -> Result<&'b [u8], HpackError> {
    let Some(&b) = block.get(*pos) else {
        return Err(malformed("string missing"));
    };
    let huffman = b & 0x80 != 0;
    let len = integer(block, pos, 7)?;
    let Some(raw) = block.get(*pos..).and_then(|rest| rest.get(..len)) else {
        return Err(malformed("string longer than the block"));
    };
    *pos += len;
    if !huffman {
        return Ok(raw);
    }
    scratch.clear();
    huffman::decode(raw, scratch).map_err(malformed)?;
    Ok(scratch)
}

/// The static table index of `name` with `value`, or of `name` alone.
enum StaticMatch {
    Field(usize),
    Name(usize),
    None,
}

fn static_find(name: &[u8], value: &[u8]) -> StaticMatch {
    let mut found = StaticMatch::None;
    for (i, &(n, v)) in STATIC.iter().enumerate() {
        if n == name {
            if v == value {
                return StaticMatch::Field(i + 1);
            }
            if matches!(found, StaticMatch::None) {
                found = StaticMatch::Name(i + 1);
            }
        }
    }
    found
}

/// Appends an integer with an `n`-bit prefix whose other bits are `high` (RFC 7541 §5.1):
/// for callers writing their own field representations (tests of a peer's decoder).
pub fn put_integer(out: &mut Vec<u8>, high: u8, n: u32, mut value: usize) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(high | value as u8);
        return;
    }
    out.push(high | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// Appends one field, statelessly: never inserts into the dynamic table, so a block is a
/// constant a caller may build once and reuse byte for byte. Fully indexed when name and
/// value are a static-table entry; a literal without indexing with the static name index
/// when only the name is; else a literal with a literal name. No Huffman.
pub fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    match static_find(name, value) {
        StaticMatch::Field(i) => put_integer(out, 0x80, 7, i),
        StaticMatch::Name(i) => {
            put_integer(out, 0x00, 4, i);
            put_string(out, value);
        }
        StaticMatch::None => {
            out.push(0);
            put_string(out, name);
            put_string(out, value);
        }
    }
}

/// A dynamic table size update (needed at the start of the next block when the peer lowers
/// its SETTINGS_HEADER_TABLE_SIZE below 4096; harmless otherwise since we never index).
pub fn encode_table_size_update(out: &mut Vec<u8>, size: usize) {
    put_integer(out, 0x20, 5, size);
}

#[cfg(test)]
#[path = "hpack_tests.rs"]
mod tests;
