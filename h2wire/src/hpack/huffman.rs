//! The Huffman code of HPACK (RFC 7541 §5.2 and Appendix B): decoding into a caller's
//! buffer with the RFC's padding rules, and encoding (for tests and callers that want it).
//!
//! The code of Appendix B is canonical (codes of one length are consecutive in symbol order,
//! shorter codes first), so the table is kept as the code length of each symbol alone; the
//! codes and the decoding tables are derived from the lengths at compile time, and a test
//! checks the derived codes against the RFC's.

/// The code length in bits of each symbol 0..=255 and of EOS (256): the "len" column of
/// RFC 7541 Appendix B (spec text), sixteen symbols a row.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..16
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..32
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // ' '..'/'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // '0'..'?'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // '@'..'O'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 'P'..'_'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // '`'..'o'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 'p'..127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..144
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..160
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..176
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..192
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..208
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..224
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..240
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..256
    30, // EOS
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;
const MIN_LEN: usize = 5;

/// The canonical code, derived from [`LENGTHS`].
struct Canon {
    /// The code of each symbol, right-aligned.
    codes: [u32; 257],
    /// Per length: one past the last code of that length, left-aligned in 32 bits.
    limit: [u64; MAX_LEN + 1],
    /// Per length: the first code of that length.
    first: [u32; MAX_LEN + 1],
    /// Per length: where its symbols start in `syms`.
    offset: [u16; MAX_LEN + 1],
    /// The symbols in code order.
    syms: [u16; 257],
}

const fn canon() -> Canon {
    let mut count = [0u16; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut c = Canon {
        codes: [0; 257],
        limit: [0; MAX_LEN + 1],
        first: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        syms: [0; 257],
    };
    let mut code = 0u32;
    let mut at = 0u16;
    let mut len = 1;
    while len <= MAX_LEN {
        c.first[len] = code;
        c.offset[len] = at;
        c.limit[len] = ((code + count[len] as u32) as u64) << (32 - len);
        // The symbols of this length in symbol order get consecutive codes.
        let mut s = 0;
        while s < 257 {
            if LENGTHS[s] as usize == len {
                c.codes[s] = code;
                c.syms[at as usize] = s as u16;
                code += 1;
                at += 1;
            }
            s += 1;
        }
        code <<= 1;
        len += 1;
    }
    c
}

static CANON: Canon = canon();

/// Why a Huffman string is malformed.
pub(crate) type HuffmanError = &'static str;

/// Appends the decoding of `src` to `dst`.
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let c = &CANON;
    dst.reserve(src.len() + src.len() / 2);
    // `acc` holds `nbits` not yet decoded bits, right-aligned.
    let mut acc: u64 = 0;
    let mut nbits: u32 = 0;
    let mut input = src.iter();
    loop {
        while nbits <= 56 {
            match input.next() {
                Some(&b) => {
                    acc = (acc << 8) | u64::from(b);
                    nbits += 8;
                }
                None => break,
            }
        }
        if nbits == 0 {
            return Ok(());
        }
        // The next 32 bits, padded with ones past the end of the input.
        let peek = if nbits >= 32 {
            (acc >> (nbits - 32)) as u32
        } else {
            ((acc << (32 - nbits)) as u32) | ((1u32 << (32 - nbits)) - 1)
        };
        let mut len = MIN_LEN;
        while u64::from(peek) >= c.limit[len] {
            len += 1;
        }
        if len as u32 > nbits {
            // The end of the input: what is left is padding.
            if nbits > 7 {
                return Err("Huffman padding longer than 7 bits");
            }
            let mask = (1u64 << nbits) - 1;
            if acc & mask != mask {
                return Err("Huffman padding not all ones");
            }
            return Ok(());
        }
        let index = c.offset[len] as u32 + ((peek >> (32 - len)) - c.first[len]);
        let sym = c.syms[index as usize];
        if sym == EOS {
            return Err("EOS symbol in a Huffman string");
        }
        dst.push(sym as u8);
        nbits -= len as u32;
        acc &= (1u64 << nbits) - 1;
    }
}

/// Appends the Huffman encoding of `src` to `dst`, padded with ones.
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut nbits: u32 = 0;
    for &b in src {
        let len = u32::from(LENGTHS[usize::from(b)]);
        acc = (acc << len) | u64::from(CANON.codes[usize::from(b)]);
        nbits += len;
        while nbits >= 8 {
            nbits -= 8;
            dst.push((acc >> nbits) as u8);
        }
        acc &= (1u64 << nbits) - 1;
    }
    if nbits > 0 {
        let pad = 8 - nbits;
        dst.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// The length in bytes of the Huffman encoding of `src`.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(LENGTHS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::hex;

    /// Codes from RFC 7541 Appendix B ("code as hex aligned to LSB"), a sample over every
    /// length, checked against the codes derived from the lengths.
    #[test]
    fn derived_codes_are_the_rfc_codes() {
        let rfc: &[(usize, u32)] = &[
            (0, 0x1ff8),
            (1, 0x7fffd8),
            (2, 0xfffffe2),
            (9, 0xffffea),
            (10, 0x3ffffffc),
            (22, 0x3ffffffe),
            (32, 0x14),
            (33, 0x3f8),
            (38, 0xf8),
            (48, 0x0),
            (58, 0x5c),
            (60, 0x7ffc),
            (92, 0x7fff0),
            (94, 0x3ffc),
            (122, 0x7b),
            (127, 0xffffffc),
            (128, 0xfffe6),
            (153, 0x1fffdc),
            (199, 0x1ffffec),
            (203, 0x7ffffde),
            (220, 0xffffffd),
            (249, 0xffffffe),
            (254, 0x7fffff0),
            (255, 0x3ffffee),
            (256, 0x3fffffff),
        ];
        for &(sym, code) in rfc {
            assert_eq!(CANON.codes[sym], code, "symbol {sym}");
        }
        // A complete prefix code: the Kraft sum is exactly one.
        let kraft: u64 = LENGTHS
            .iter()
            .map(|&l| 1u64 << (MAX_LEN - l as usize))
            .sum();
        assert_eq!(kraft, 1 << MAX_LEN);
    }

    /// The Huffman strings of RFC 7541 Appendix C.4 and C.6 (spec text).
    #[test]
    fn rfc_strings() {
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
            ("9bd9 ab", "gzip"),
        ];
        for (h, text) in cases {
            let mut out = Vec::new();
            decode(&hex(h), &mut out).expect("decodes");
            assert_eq!(out, text.as_bytes());
            let mut enc = Vec::new();
            encode(text.as_bytes(), &mut enc);
            assert_eq!(enc, hex(h), "{text}");
            assert_eq!(encoded_len(text.as_bytes()), enc.len());
        }
    }

    #[test]
    fn malformed() {
        let mut out = Vec::new();
        // EOS (30 ones) followed by padding.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err("EOS symbol in a Huffman string")
        );
        // A whole byte of padding.
        assert_eq!(
            decode(&[0xff], &mut out),
            Err("Huffman padding longer than 7 bits")
        );
        // '0' (00000) then 3 bits of padding that are not all ones.
        assert_eq!(
            decode(&[0x02], &mut out),
            Err("Huffman padding not all ones")
        );
        // 'a' (00011) then 111: fine.
        out.clear();
        decode(&[0x1f], &mut out).expect("valid");
        assert_eq!(out, b"a");
        // Empty.
        out.clear();
        decode(&[], &mut out).expect("valid");
        assert!(out.is_empty());
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        let mut out = Vec::new();
        decode(&enc, &mut out).expect("decodes");
        assert_eq!(out, all);
    }
}
