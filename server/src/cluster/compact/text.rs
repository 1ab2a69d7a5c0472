//! The text forms the compact layout packs and rebuilds: decimal numbers written the way
//! `format!` writes them, and IP addresses in their one canonical form (an address that
//! would not come back byte for byte travels as a string).

use distro_core::compact_form::canonical_ipv4;
use distro_core::model::SmallStr;
use std::net::Ipv6Addr;

/// Appends `v` in decimal (`itoa`: four digits at a time, no bounds checks).
#[inline]
pub(super) fn push_decimal(s: &mut Vec<u8>, v: u64) {
    s.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// The eight decimal digits of `x` (below 10^8, zero-padded), leading digit in the low
/// byte, as digit values 0..=9 (not yet ASCII): all eight at once in one word, by
/// halving the lanes twice (SWAR: a 4-digit half per 32-bit lane, then 2 digits per
/// 16-bit lane, then one per byte; each division by 100 or 10 a multiplication that is
/// exact over its lane's range and does not spill into the next lane).
#[inline]
fn eight_digits(x: u32) -> u64 {
    debug_assert!(x < 100_000_000);
    let x = u64::from(x);
    // Lanes of 32 bits: the first four digits, the last four.
    let z = (x / 10_000) | ((x % 10_000) << 32);
    // Each lane below 10^4: its hundreds by `* 10486 >> 20` (exact below 43,699).
    let hundreds = ((z * 10_486) >> 20) & 0x0000_007f_0000_007f;
    let z = hundreds | (z - hundreds * 100) << 16;
    // Each 16-bit lane below 100: its tens by `* 103 >> 10` (exact below 179).
    let tens = ((z * 103) >> 10) & 0x000f_000f_000f_000f;
    tens | (z - tens * 10) << 8
}

/// The four decimal digits of `x` (below 10^4, zero-padded), leading digit in the low
/// byte, as digit values 0..=9 (the last two steps of [`eight_digits`] on one lane).
#[inline]
fn four_digits(x: u16) -> u32 {
    debug_assert!(x < 10_000);
    let x = u32::from(x);
    // Its hundreds by `* 10486 >> 20` (exact below 43,699), then 2 digits per 16-bit lane.
    let hundreds = (x * 10_486) >> 20;
    let z = hundreds | (x - hundreds * 100) << 16;
    let tens = ((z * 103) >> 10) & 0x000f_000f;
    tens | (z - tens * 10) << 8
}

/// The part of a connection's millis above its low eight digits, and its text, as last
/// written by [`IdBuf::millis`]: the connections of one node mostly share it (10^8 ms is
/// about 28 hours), so a batch formats it once per run of equal ones.
pub(super) struct MillisHigh {
    high: u64,
    word: u64,
    len: usize,
}

impl MillisHigh {
    /// None written yet.
    pub(super) fn new() -> Self {
        Self {
            // Above any high part (those are below 10^8).
            high: u64::MAX,
            word: 0,
            len: 0,
        }
    }
}

/// The decimal form of `x` (below 10^8) as `format!` writes it: the digits in the low
/// bytes of the word (to be stored little-endian) and their number.
#[inline]
fn decimal_word(x: u32) -> (u64, usize) {
    let d = eight_digits(x);
    // Leading zeros are the low zero bytes of the digit values (one digit kept for 0).
    let zeros = ((d | 1 << 56).trailing_zeros() / 8) as usize;
    ((d | 0x3030_3030_3030_3030) >> (8 * zeros), 8 - zeros)
}

/// A text of at most [`IdBuf::CAP`] bytes built on the stack with fixed-width stores (no
/// call to copy a piece; each store writes a whole word, and the length then moves by
/// the piece's length).
pub(super) struct IdBuf {
    b: [u8; IdBuf::CAP + 8],
    n: usize,
}

impl IdBuf {
    /// The longest text the buffer takes: a derived id whose ip is at most
    /// [`IdBuf::MAX_IP`] bytes.
    pub(super) const CAP: usize = 20 + 1 + IdBuf::MAX_IP + 1 + 5 + 6;
    /// The longest ip it takes (longer ones are written another way by the caller).
    pub(super) const MAX_IP: usize = 40;

    #[inline]
    pub(super) fn new() -> Self {
        Self {
            b: [0; IdBuf::CAP + 8],
            n: 0,
        }
    }

    /// Empties the text (the bytes stay: what is written next overwrites them).
    #[inline]
    pub(super) fn clear(&mut self) {
        self.n = 0;
    }

    /// The word `w`'s low `len` bytes (stored little-endian; the rest of the word is
    /// overwritten by what follows, or not part of the text).
    #[inline]
    pub(super) fn word(&mut self, w: u64, len: usize) {
        self.b[self.n..self.n + 8].copy_from_slice(&w.to_le_bytes());
        self.n += len;
    }

    #[inline]
    pub(super) fn byte(&mut self, c: u8) {
        self.b[self.n] = c;
        self.n += 1;
    }

    /// `v` in decimal, as `format!` writes it.
    #[inline(always)]
    pub(super) fn decimal(&mut self, v: u64) {
        if v < 100_000_000 {
            let (w, len) = decimal_word(v as u32);
            self.word(w, len);
        } else if v < 10_000_000_000_000_000 {
            // The high part (below 10^8) as written, then the low eight digits in full.
            let (w, len) = decimal_word((v / 100_000_000) as u32);
            self.word(w, len);
            let low = eight_digits((v % 100_000_000) as u32) | 0x3030_3030_3030_3030;
            self.word(low, 8);
        } else {
            for &c in itoa::Buffer::new().format(v).as_bytes() {
                self.byte(c);
            }
        }
    }

    /// `v` in decimal as [`IdBuf::decimal`] writes it, the digits above the low eight
    /// (a millis of 9 to 16 digits) taken from `last` when they are the last ones written.
    #[inline(always)]
    pub(super) fn millis(&mut self, v: u64, last: &mut MillisHigh) {
        if (100_000_000..10_000_000_000_000_000).contains(&v) {
            let high = v / 100_000_000;
            if high != last.high {
                let (word, len) = decimal_word(high as u32);
                *last = MillisHigh { high, word, len };
            }
            self.word(last.word, last.len);
            let low = eight_digits((v % 100_000_000) as u32) | 0x3030_3030_3030_3030;
            self.word(low, 8);
        } else {
            self.decimal(v);
        }
    }

    /// A port in decimal, as [`IdBuf::decimal`] writes it: five digits (most ports) as
    /// the first and four more, fewer as any number.
    #[inline(always)]
    pub(super) fn port(&mut self, p: u16) {
        if p >= 10_000 {
            let rest = four_digits(p % 10_000) | 0x3030_3030;
            let first = u64::from(p / 10_000) | 0x30;
            self.word(first | u64::from(rest) << 8, 5);
        } else {
            let (w, len) = decimal_word(u32::from(p));
            self.word(w, len);
        }
    }

    /// `s` (at most [`IdBuf::MAX_IP`] bytes): as two overlapping words when it is 8 to
    /// 16 bytes long (every IPv4 address of 8 bytes or more), byte by byte otherwise.
    #[inline(always)]
    pub(super) fn text(&mut self, s: &[u8]) {
        let n = s.len();
        assert!(
            n <= IdBuf::MAX_IP,
            "an ip of at most {} bytes",
            IdBuf::MAX_IP
        );
        if (8..=16).contains(&n) {
            let at = self.n;
            self.b[at..at + 8].copy_from_slice(&s[..8]);
            self.b[at + n - 8..at + n].copy_from_slice(&s[n - 8..]);
            self.n += n;
        } else {
            for &c in s {
                self.byte(c);
            }
        }
    }

    /// The bytes written.
    #[inline]
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }

    /// Appends the bytes written to `out`: as a fixed [`IdBuf::SHORT`] bytes (a copy of
    /// known width, in line, where a copy of the text's length is a call) cut back to the
    /// text, when it is that short (nearly every derived id); else as they are.
    #[inline]
    pub(super) fn append_to(&self, out: &mut Vec<u8>) {
        if self.n <= IdBuf::SHORT {
            let end = out.len() + self.n;
            out.extend_from_slice(&self.b[..IdBuf::SHORT]);
            out.truncate(end);
        } else {
            out.extend_from_slice(self.as_bytes());
        }
    }

    /// The width [`IdBuf::append_to`] copies in line: a connection id of 13-digit millis,
    /// an IPv4 address of up to 12 bytes and a five-digit port.
    pub(super) const SHORT: usize = 32;
}

// `IdBuf::append_to`'s fixed copy reads within the buffer.
const _: () = assert!(IdBuf::SHORT <= IdBuf::CAP + 8);

/// How an ip travels: packed when the text is the address's one canonical form.
pub(super) enum PackedIp {
    V4([u8; 4]),
    V6([u8; 16]),
    Text,
}

/// Inlined for the IPv4 check (nearly every address), which saves a call's register
/// spills and restores per instance; the rest is [`pack_ip_other`].
#[inline(always)]
pub(super) fn pack_ip(ip: &str) -> PackedIp {
    match canonical_ipv4(ip) {
        Some(o) => PackedIp::V4(o),
        None => pack_ip_other(ip),
    }
}

/// [`pack_ip`] of an address that is not a canonical IPv4 one.
#[inline(never)]
fn pack_ip_other(ip: &str) -> PackedIp {
    if ip.contains(':')
        && let Ok(a) = ip.parse::<Ipv6Addr>()
        && a.to_string() == ip
    {
        return PackedIp::V6(a.octets());
    }
    PackedIp::Text
}

/// Each octet's decimal digits followed by a dot, left-aligned in four bytes, and the
/// number of digits.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut t = [([0u8; 4], 0u8); 256];
    let mut x = 0;
    while x < 256 {
        let (d, n) = if x >= 100 {
            (
                [
                    b'0' + (x / 100) as u8,
                    b'0' + (x / 10 % 10) as u8,
                    b'0' + (x % 10) as u8,
                    b'.',
                ],
                3,
            )
        } else if x >= 10 {
            ([b'0' + (x / 10) as u8, b'0' + (x % 10) as u8, b'.', 0], 2)
        } else {
            ([b'0' + x as u8, b'.', 0, 0], 1)
        };
        t[x] = (d, n);
        x += 1;
    }
    t
};

/// The dotted form of an IPv4 address, written without the formatting machinery (on the
/// stack, then inline in the string: no allocation): each octet's digits and dot copied
/// from a table as one four-byte word, the text then taken as ASCII (checked as two
/// words, see [`SmallStr::from_ascii`]) without the last octet's dot. Inlined always
/// into the instance's read (nearly every instance's address): `#[inline]` left it a
/// call, ~1.4 a record more once the batch's tables were read out of line. Public for the
/// load generator, which writes every simulated client's address into its requests.
#[inline(always)]
pub fn ipv4_text(o: [u8; 4]) -> SmallStr {
    let mut a = [0u8; 16];
    let mut n = 0;
    for x in o {
        let (d, len) = OCTETS[usize::from(x)];
        // At most 3 × 4 bytes before the last octet: its four bytes fit.
        a[n..n + 4].copy_from_slice(&d);
        n += usize::from(len) + 1;
    }
    let text: [u8; 15] = a[..15].try_into().expect("15 of 16 bytes");
    // At most "255.255.255.255": 15 bytes.
    SmallStr::from_ascii(text, n - 1).expect("digits, dots and zeros")
}

// ----- encoding ----------------------------------------------------------------------
