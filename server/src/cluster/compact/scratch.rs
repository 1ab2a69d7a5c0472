//! [`Scratch`]: a record's bytes written on the stack, then copied to the batch at once.

use super::MILLIS_ESCAPE;

/// Bytes the scratch holds.
const CAP: usize = 128;
/// The most one step of a record (its head, a publication's head, an instance) writes:
/// [`Scratch::room`] before each keeps the cursor below [`CAP`].
pub(super) const STEP: usize = 64;
/// A record this long or shorter is copied as this many bytes ([`Scratch::finish`]).
const SHORT: usize = 32;

/// The bytes of a [`Scratch`]: `CAP` bytes, and room for a fixed-width field written at
/// the last position.
pub(super) type Bytes = [u8; CAP + 16];

/// A zeroed buffer for [`Scratch`]es: one serves every record of a batch (not zeroed
/// again for each).
#[inline(always)]
pub(super) fn buffer() -> Bytes {
    [0; CAP + 16]
}

/// A record written a field at a time on the stack: a store and a move of the cursor per
/// field (the cursor masked to the buffer, which it never leaves, so no bounds check),
/// where a push to a `Vec` checks its capacity and updates its length for every byte;
/// copied to the records when it ends ([`Scratch::finish`]) or runs short of room.
///
/// The buffer is borrowed, not held: the cursor is then a value of its own, which the
/// compiler keeps in a register through a record's writes (held next to the buffer,
/// which is written at offsets known only at run time, it was loaded from and stored to
/// the stack at every field).
pub(super) struct Scratch<'b> {
    b: &'b mut Bytes,
    n: usize,
}

impl<'b> Scratch<'b> {
    /// A record's scratch in `b` (a batch's [`buffer`]), empty.
    #[inline(always)]
    pub(super) fn new(b: &'b mut Bytes) -> Self {
        Self { b, n: 0 }
    }

    /// The cursor, within the buffer (as it always is: see [`STEP`]).
    #[inline(always)]
    fn at(&self) -> usize {
        debug_assert!(self.n < CAP);
        self.n & (CAP - 1)
    }

    #[inline(always)]
    pub(super) fn byte(&mut self, c: u8) {
        let at = self.at();
        self.b[at] = c;
        self.n += 1;
    }

    /// `N` (at most 16) bytes.
    #[inline(always)]
    pub(super) fn bytes<const N: usize>(&mut self, s: [u8; N]) {
        let at = self.at();
        self.b[at..at + N].copy_from_slice(&s);
        self.n += N;
    }

    /// The low `len` (at most 8) bytes of `w`, little-endian: one eight-byte store (the
    /// bytes past `len` are overwritten by what follows, or not part of the record).
    #[inline(always)]
    pub(super) fn word(&mut self, w: u64, len: usize) {
        debug_assert!(len <= 8);
        let at = self.at();
        self.b[at..at + 8].copy_from_slice(&w.to_le_bytes());
        self.n += len;
    }

    /// An unsigned LEB128 varint (one byte below 128, nearly every index and count).
    #[inline(always)]
    pub(super) fn varint(&mut self, v: u64) {
        if v < 0x80 {
            self.byte(v as u8);
        } else {
            self.varint_long(v);
        }
    }

    /// The varints of `a`, `b` and `c` one after the other: as one three-byte store when
    /// all three are below 128 (a record's writer member, owner and publication count,
    /// nearly always), else one at a time.
    #[inline(always)]
    pub(super) fn varints3(&mut self, a: u64, b: u64, c: u64) {
        if (a | b | c) < 0x80 {
            self.word(a | b << 8 | c << 16, 3);
        } else {
            self.varint(a);
            self.varint(b);
            self.varint(c);
        }
    }

    /// The varints of `a` and `b` one after the other: as one two-byte store when both
    /// are below 128 (a publication's service and instance count, in a batch of fewer
    /// than 128 services), else one at a time.
    #[inline(always)]
    pub(super) fn varints2(&mut self, a: u64, b: u64) {
        if (a | b) < 0x80 {
            self.word(a | b << 8, 2);
        } else {
            self.varint(a);
            self.varint(b);
        }
    }

    /// A connection id's millis and port: one eight-byte word (the millis in the low 48
    /// bits, the port in the high 16) when the millis are below [`MILLIS_ESCAPE`] (every
    /// time until the year 10889); else the word with those bits all set, then the millis
    /// as a varint.
    #[inline(always)]
    pub(super) fn connection(&mut self, millis: u64, port: u16) {
        let port = u64::from(port) << 48;
        if millis < MILLIS_ESCAPE {
            self.word(millis | port, 8);
        } else {
            self.word(MILLIS_ESCAPE | port, 8);
            self.varint(millis);
        }
    }

    /// A varint of two bytes or more: below 2^56 (e.g. a revision) as one word
    /// ([`spread_varint`]), longer ones a byte at a time (here, not through the shared
    /// loop: a call given the scratch would keep its cursor on the stack).
    #[inline(always)]
    fn varint_long(&mut self, mut v: u64) {
        if v < 1 << 56 {
            let (w, len) = spread_varint(v);
            self.word(w, len);
        } else {
            while v >= 0x80 {
                self.byte(v as u8 | 0x80);
                v >>= 7;
            }
            self.byte(v as u8);
        }
    }

    /// Room for a step of [`STEP`] bytes: what is written is copied to `out` first when
    /// less is left.
    #[inline(always)]
    pub(super) fn room(&mut self, out: &mut Vec<u8>) {
        if self.n >= CAP - STEP {
            self.finish(out);
        }
    }

    /// Copies what is written to `out`, and starts over. A record of up to 32 bytes (the
    /// usual one) is copied as 32 bytes of fixed width, then cut to its length: no call
    /// to copy a length known only now.
    #[inline(always)]
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.n <= SHORT {
            let len = out.len();
            out.extend_from_slice(&self.b[..SHORT]);
            out.truncate(len + self.n);
        } else {
            out.extend_from_slice(&self.b[..self.n]);
        }
        self.n = 0;
    }
}

/// The varint of `v` (128 to 2^56 - 1) as the low bytes of a word, and their number
/// (2 to 8): its 7-bit groups spread one to a byte ([`spread_groups`]), the
/// continuation bit set in every byte but the last.
#[inline(always)]
fn spread_varint(v: u64) -> (u64, usize) {
    debug_assert!((0x80..1 << 56).contains(&v));
    let len = (70 - v.leading_zeros() as usize) / 7;
    let more = 0x8080_8080_8080_8080 & ((1 << (8 * (len - 1))) - 1);
    (spread_groups(v) | more, len)
}

/// The 7-bit groups of `v` (below 2^56) one to a byte, by halving the lanes three times
/// (28 bits to each 32-bit half, 14 to each 16-bit quarter, 7 to each byte).
#[inline(always)]
fn spread_groups(v: u64) -> u64 {
    let x = (v & 0x0fff_ffff) | (v & 0x00ff_ffff_f000_0000) << 4;
    let x = (x & 0x0000_3fff_0000_3fff) | (x & 0x0fff_c000_0fff_c000) << 2;
    (x & 0x007f_007f_007f_007f) | (x & 0x3f80_3f80_3f80_3f80) << 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unsigned LEB128 varint, written out here as the reference (not the encoders'
    /// shared loop).
    fn put_varint(out: &mut Vec<u8>, v: u64) {
        let n = (64 - (v | 1).leading_zeros()).div_ceil(7);
        for k in 0..n {
            let more = if k + 1 < n { 0x80 } else { 0 };
            out.push((v >> (7 * k)) as u8 & 0x7f | more);
        }
    }

    /// A varint spread in one word is the one written a byte at a time, on both sides of
    /// every width boundary from two bytes to eight, and with every group's bits set.
    #[test]
    fn a_varint_spread_in_a_word_is_the_bytewise_one() {
        for bits in 8..=56 {
            let top = (1u64 << bits) - 1;
            for v in [
                1 << (bits - 1),
                (1 << (bits - 1)) + 1,
                top,
                top & 0x5555_5555_5555_5555 | 1 << (bits - 1),
            ] {
                let (w, len) = spread_varint(v);
                let mut want = Vec::new();
                put_varint(&mut want, v);
                assert_eq!(&w.to_le_bytes()[..len], &want[..], "{v:#x}");
                let past = w.checked_shr(8 * len as u32).unwrap_or(0);
                assert_eq!(past, 0, "{v:#x}: bytes past the varint");
            }
        }
    }

    /// Two or three varints written together are the ones written one at a time, whether
    /// all are below 128 (one store) or any is not (each on its own).
    #[test]
    fn varints_written_together_are_the_ones_written_apart() {
        let values = [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        for &a in &values {
            for &b in &values {
                for &c in &values {
                    let (mut out, mut want) = (Vec::new(), Vec::new());
                    let mut buf = buffer();
                    let mut s = Scratch::new(&mut buf);
                    s.varints3(a, b, c);
                    s.varints2(b, a);
                    s.finish(&mut out);
                    for v in [a, b, c, b, a] {
                        put_varint(&mut want, v);
                    }
                    assert_eq!(out, want, "{a:#x} {b:#x} {c:#x}");
                }
            }
        }
    }

    /// A connection's millis and port are one little-endian word, millis in the low 48
    /// bits, below the escape; from the escape up, the word with those bits set and the
    /// millis' varint after it.
    #[test]
    fn a_connections_millis_and_port_are_one_word_or_escaped() {
        let mut values = vec![0, 1, 0x7f, 0x80, 1_717_000_000_000, u64::MAX];
        for bound in [1u64 << 35, 1 << 42, MILLIS_ESCAPE, 1 << 48] {
            values.extend([bound - 2, bound - 1, bound, bound + 1]);
        }
        for v in values {
            for port in [0u16, 1, 40_000, u16::MAX] {
                let (mut out, mut want) = (Vec::new(), Vec::new());
                let mut buf = buffer();
                let mut s = Scratch::new(&mut buf);
                s.connection(v, port);
                s.byte(0x55);
                s.finish(&mut out);
                want.extend_from_slice(&v.min(MILLIS_ESCAPE).to_le_bytes()[..6]);
                want.extend_from_slice(&port.to_le_bytes());
                if v >= MILLIS_ESCAPE {
                    put_varint(&mut want, v);
                }
                want.push(0x55);
                assert_eq!(out, want, "{v:#x} {port}");
            }
        }
    }

    /// Records of every length up to several times the scratch, in steps of up to
    /// [`STEP`] bytes (varints of every width, fixed-width fields), come out as the same
    /// fields pushed to a `Vec` one at a time; a fixed LCG, its state printed on failure.
    #[test]
    fn a_record_written_in_the_scratch_is_the_one_pushed() {
        let mut x: u64 = 0x5c7a_7c41;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x
        };
        let (mut out, mut want) = (Vec::new(), Vec::new());
        let mut buf = buffer();
        let mut s = Scratch::new(&mut buf);
        for record in 0..2_000 {
            let steps = next() % 12;
            for _ in 0..steps {
                s.room(&mut out);
                let mut left = STEP;
                while left >= 10 + 16 {
                    let r = next();
                    match r % 5 {
                        4 => {
                            let (w, len) = (next(), (r >> 8) as usize % 9);
                            s.word(w, len);
                            want.extend_from_slice(&w.to_le_bytes()[..len]);
                            left -= 8;
                        }
                        0 => {
                            let v = next() >> (next() % 64);
                            s.varint(v);
                            put_varint(&mut want, v);
                            left -= 10;
                        }
                        1 => {
                            let b = (next() as u8) & 0x7f;
                            s.byte(b);
                            want.push(b);
                            left -= 1;
                        }
                        2 => {
                            let b = next().to_le_bytes();
                            s.bytes(b);
                            want.extend_from_slice(&b);
                            left -= 8;
                        }
                        _ => {
                            let b: [u8; 16] = std::array::from_fn(|k| (r >> (k % 8)) as u8);
                            s.bytes(b);
                            want.extend_from_slice(&b);
                            left -= 16;
                        }
                    }
                    assert!(s.n < CAP, "record {record} (lcg value {r})");
                }
            }
            s.finish(&mut out);
            assert!(
                out == want,
                "record {record} differs (lcg seed 0x5c7a_7c41)"
            );
        }
        assert!(out.len() > 100_000, "{} bytes", out.len());
    }
}
