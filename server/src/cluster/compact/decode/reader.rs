//! The compact decoder's checked reader over a batch: every length checked before a
//! read, a refusal naming the byte offset and the field.

use super::super::malformed;
use crate::cluster::wire::WireError;

/// A checked reader over the batch: what is left of it, a slice that each read shortens
/// (a length check, a load and a pointer bump a field; a position is computed only for
/// an error). Copied, not borrowed, into what is called out of line (its slow and error
/// paths), so the record loop keeps it in registers: a reader whose address escapes
/// lives in memory, a load and a store a field.
#[derive(Clone, Copy)]
pub(super) struct Reader<'a> {
    /// What is left to read.
    pub(super) rest: &'a [u8],
    /// The batch's length (a position is this less what is left).
    pub(super) len: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(b: &'a [u8]) -> Self {
        Self {
            rest: b,
            len: b.len(),
        }
    }
    /// The position of the next byte in the batch.
    #[inline(always)]
    pub(super) fn at(&self) -> usize {
        self.len - self.rest.len()
    }
    // The readers of fixed widths and indices are inlined into the record loop (a call
    // each cost more than the read); their errors are built out of line.
    #[inline(always)]
    pub(super) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        match self.rest.split_at_checked(n) {
            Some((s, rest)) => {
                self.rest = rest;
                Ok(s)
            }
            None => Err(self.short(n, what)),
        }
    }
    #[cold]
    #[inline(never)]
    fn short(self, n: usize, what: &str) -> WireError {
        malformed(
            self.at(),
            format!("{what}: {n} bytes needed, {} left", self.rest.len()),
        )
    }
    /// `N` bytes.
    #[inline(always)]
    pub(super) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WireError> {
        match self.rest.split_first_chunk::<N>() {
            Some((s, rest)) => {
                self.rest = rest;
                Ok(*s)
            }
            None => Err(self.short(N, what)),
        }
    }
    #[inline(always)]
    pub(super) fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }
    #[inline(always)]
    pub(super) fn u16(&mut self, what: &str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    #[inline(always)]
    pub(super) fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// An unsigned LEB128 varint of at most 10 bytes that fits in 64 bits.
    #[inline(always)]
    pub(super) fn varint(&mut self, what: &str) -> Result<u64, WireError> {
        if let Some((&b, rest)) = self.rest.split_first()
            && b < 0x80
        {
            self.rest = rest;
            return Ok(u64::from(b));
        }
        let (v, rest) = self.varint_multi(what)?;
        self.rest = rest;
        Ok(v)
    }
    /// A varint of more than one byte: as one word when it can be, else byte by byte;
    /// with what is left after it.
    #[inline(never)]
    fn varint_multi(mut self, what: &str) -> Result<(u64, &'a [u8]), WireError> {
        match self.varint_word() {
            Some(v) => Ok((v, self.rest)),
            None => self.varint_long(what),
        }
    }
    /// A varint of 2 to 8 bytes read as one word when eight bytes are left: its length
    /// from the first byte without the continuation bit, its 7-bit groups packed by
    /// halving the lanes three times (the value [`Reader::varint_long`] reads).
    #[inline(always)]
    fn varint_word(&mut self) -> Option<u64> {
        let w = u64::from_le_bytes(*self.rest.first_chunk::<8>()?);
        let ends = !w & 0x8080_8080_8080_8080;
        if ends == 0 {
            return None;
        }
        // The last byte's continuation bit is bit 8n - 1 of the word.
        let n = (ends.trailing_zeros() / 8 + 1) as usize;
        let x = if n == 8 { w } else { w & ((1 << (8 * n)) - 1) };
        let x = (x & 0x007f_007f_007f_007f) | (x & 0x7f00_7f00_7f00_7f00) >> 1;
        let x = (x & 0x0000_3fff_0000_3fff) | (x & 0x3fff_0000_3fff_0000) >> 2;
        let x = (x & 0x0000_0000_0fff_ffff) | (x & 0x0fff_ffff_0000_0000) >> 4;
        self.rest = &self.rest[n..];
        Some(x)
    }
    /// A varint read byte by byte, with what is left after it.
    fn varint_long(mut self, what: &str) -> Result<(u64, &'a [u8]), WireError> {
        let at = self.at();
        let mut v = 0u64;
        for k in 0..10 {
            let Some((&b, rest)) = self.rest.split_first() else {
                return Err(malformed(
                    at,
                    format!("{what}: the varint runs past the end"),
                ));
            };
            self.rest = rest;
            if k == 9 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << (7 * k);
            if b < 0x80 {
                return Ok((v, self.rest));
            }
        }
        Err(malformed(at, format!("{what}: the varint exceeds 64 bits")))
    }
    /// A varint that must fit in a `u32` (an index).
    #[inline(always)]
    pub(super) fn index(&mut self, what: &str) -> Result<u32, WireError> {
        let at = self.at();
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| too_wide(at, what, v))
    }
    /// A count whose items take at least `min_item` bytes each: refused if the rest of
    /// the batch cannot hold them (so a forged count cannot make us allocate).
    #[inline(always)]
    pub(super) fn count(&mut self, what: &str, min_item: usize) -> Result<usize, WireError> {
        let at = self.at();
        let n = self.varint(what)?;
        let left = self.rest.len() as u64;
        if n.saturating_mul(min_item as u64) > left {
            return Err(malformed(at, format!("{what} {n} do not fit in the batch")));
        }
        Ok(n as usize)
    }
}

#[cold]
#[inline(never)]
fn too_wide(at: usize, what: &str, v: u64) -> WireError {
    malformed(at, format!("{what} {v} exceeds u32"))
}

#[cfg(test)]
mod tests {
    use super::Reader;
    use crate::cluster::compact::put_varint;
    /// The reader's varints: every width up to the 64-bit limit
    /// comes back; one that runs past the end, or whose tenth byte goes past 64 bits, is
    /// refused at its first byte.
    #[test]
    fn varints_of_every_width_and_their_refusals() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            1 << 35,
            // Seven and eight bytes (the widest read as one word), then nine.
            1 << 48,
            (1 << 49) - 1,
            1 << 55,
            (1 << 56) - 1,
            1 << 56,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            // Alone (the window ends with the batch) and followed by more bytes.
            for tail in [&[][..], &[0xff; 12][..]] {
                let mut with = b.clone();
                with.extend_from_slice(tail);
                let mut r = Reader::new(&with);
                assert_eq!(r.varint("v").expect("valid"), v, "{v}");
                assert_eq!(r.at(), b.len(), "{v}");
            }
            // Cut short: runs past the end.
            let mut r = Reader::new(&b[..b.len() - 1]);
            if !b[..b.len() - 1].is_empty() {
                let e = r.varint("v").expect_err("short").to_string();
                assert!(
                    e.contains("at byte 0: v: the varint runs past the end"),
                    "{e}"
                );
            }
        }
        let mut too_wide = vec![0xffu8; 9];
        too_wide.push(0x02);
        let e = Reader::new(&too_wide)
            .varint("v")
            .expect_err("65 bits")
            .to_string();
        assert!(
            e.contains("at byte 0: v: the varint exceeds 64 bits"),
            "{e}"
        );
    }
}
