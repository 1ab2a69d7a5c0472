//! [`SmallStr`]: an immutable string of 16 bytes, its text inline up to 15 bytes (every
//! IPv4 address, most host names), in a shared heap string beyond.
//!
//! The registry stores one per instance (its IP): `compact_str`'s 24-byte string made an
//! instance 64 bytes and a single-instance publication 96 in its `Arc` (a size class of
//! the allocator); with this one they are 56 and 80. Here because reading the inline text
//! as a `str` without checking it again takes an `unsafe` block (it was a `str` when it
//! was copied in).

use std::sync::Arc;

/// Bytes held inline.
const INLINE: usize = 15;

/// The length of an inline text, 0..=15: a byte whose other 240 values are free for the
/// heap form's tag (so the string is 16 bytes, not 24).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Len {
    L0,
    L1,
    L2,
    L3,
    L4,
    L5,
    L6,
    L7,
    L8,
    L9,
    L10,
    L11,
    L12,
    L13,
    L14,
    L15,
}

impl Len {
    const ALL: [Len; INLINE + 1] = [
        Len::L0,
        Len::L1,
        Len::L2,
        Len::L3,
        Len::L4,
        Len::L5,
        Len::L6,
        Len::L7,
        Len::L8,
        Len::L9,
        Len::L10,
        Len::L11,
        Len::L12,
        Len::L13,
        Len::L14,
        Len::L15,
    ];
}

/// The inline form: the length first, so the heap form's pointer fits after it.
#[derive(Clone, Copy)]
#[repr(C)]
struct Inline {
    len: Len,
    bytes: [u8; INLINE],
}

enum Repr {
    Inline(Inline),
    /// Longer than 15 bytes: shared, so a clone allocates nothing (one pointer wide).
    Heap(Arc<Box<str>>),
}

/// An immutable string, 16 bytes: inline up to 15 bytes, a shared heap string beyond.
/// Dereferences to `str`; compared, ordered and hashed as its text.
pub struct SmallStr(Repr);

impl Clone for SmallStr {
    /// The inline form copied as its 16 bytes at once (the derived clone copied the
    /// length and the 15 bytes after it apart, in five moves of odd widths); the heap
    /// form shares its string.
    #[inline]
    fn clone(&self) -> Self {
        match &self.0 {
            #[allow(unsafe_code)]
            // SAFETY: `self` is the inline form, made of `Copy` data only (its length and
            // bytes: `Inline` is `Copy`, it owns nothing), so a bitwise copy of the whole
            // value is a valid value of the same form, equal to `Repr::Inline(*i)`, and
            // nothing is owned twice. `self` is a valid, aligned reference to read from.
            Repr::Inline(_) => unsafe { std::ptr::read(self) },
            Repr::Heap(s) => SmallStr(Repr::Heap(Arc::clone(s))),
        }
    }
}

impl SmallStr {
    /// The string of `s` (no allocation up to 15 bytes).
    #[inline]
    pub fn new(s: &str) -> Self {
        let len = s.len();
        if len <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..len].copy_from_slice(s.as_bytes());
            SmallStr(Repr::Inline(Inline {
                len: Len::ALL[len],
                bytes,
            }))
        } else {
            SmallStr(Repr::Heap(Arc::new(Box::from(s))))
        }
    }

    /// The string of the first `len` bytes of `bytes` when every one of the 15 bytes is
    /// ASCII (and `len` at most 15), checked as two overlapping words, not byte by byte:
    /// for text built in a buffer (an address written from its octets), without the
    /// UTF-8 validation a `str` would need first. `None` otherwise.
    #[inline]
    pub fn from_ascii(bytes: [u8; INLINE], len: usize) -> Option<Self> {
        let word = |at: usize| {
            u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 of the 15 bytes"))
        };
        if len > INLINE || (word(0) | word(INLINE - 8)) & 0x8080_8080_8080_8080 != 0 {
            return None;
        }
        // The bytes past `len` are held but never read (the text is the first `len`).
        Some(SmallStr(Repr::Inline(Inline {
            len: Len::ALL[len],
            bytes,
        })))
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(i) => {
                let bytes = &i.bytes[..i.len as usize];
                #[allow(unsafe_code)]
                // SAFETY: `new` copied these bytes from a whole `str` (all of its
                // `len` bytes), and `from_ascii` only ASCII bytes, so they are valid
                // UTF-8; they never change after.
                unsafe {
                    std::str::from_utf8_unchecked(bytes)
                }
            }
            Repr::Heap(s) => s,
        }
    }

    /// Whether the text is inline (no allocation of its own).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline(_))
    }
}

impl Default for SmallStr {
    fn default() -> Self {
        SmallStr::new("")
    }
}

impl std::ops::Deref for SmallStr {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SmallStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for SmallStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for SmallStr {
    fn from(s: &str) -> Self {
        SmallStr::new(s)
    }
}

impl From<&String> for SmallStr {
    fn from(s: &String) -> Self {
        SmallStr::new(s)
    }
}

impl From<String> for SmallStr {
    fn from(s: String) -> Self {
        SmallStr::new(&s)
    }
}

impl PartialEq for SmallStr {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for SmallStr {}

impl PartialEq<str> for SmallStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for SmallStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
impl PartialEq<SmallStr> for str {
    fn eq(&self, other: &SmallStr) -> bool {
        self == other.as_str()
    }
}
impl PartialEq<SmallStr> for &str {
    fn eq(&self, other: &SmallStr) -> bool {
        *self == other.as_str()
    }
}

impl PartialOrd for SmallStr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SmallStr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}
impl std::hash::Hash for SmallStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::fmt::Debug for SmallStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}
impl std::fmt::Display for SmallStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{Repr, SmallStr};
    use std::sync::Arc;

    #[test]
    fn is_16_bytes_and_an_option_of_it_too() {
        assert_eq!(size_of::<SmallStr>(), 16);
        assert_eq!(size_of::<Option<SmallStr>>(), 16);
    }

    #[test]
    fn holds_every_length_inline_up_to_15_bytes_and_shared_beyond() {
        let text = "255.255.255.255:65535-é-and-some-more";
        for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
            let s = SmallStr::new(&text[..end]);
            assert_eq!(s.as_str(), &text[..end]);
            assert_eq!(&*s, &text[..end]);
            assert_eq!(s.is_inline(), end <= 15, "{end} bytes");
            let c = s.clone();
            assert_eq!(c, s);
            // An inline clone is a copy of the bytes, a heap one shares the text.
            assert_eq!(
                std::ptr::eq(c.as_ptr(), s.as_ptr()),
                end > 15,
                "{end} bytes"
            );
            // A heap clone holds a count of its own (a bitwise copy would not: dropping
            // both would free the text twice).
            if let Repr::Heap(a) = &s.0 {
                assert_eq!(Arc::strong_count(a), 2, "{end} bytes: shared by the clone");
            }
            assert_eq!(c.len(), end);
            assert_eq!(format!("{c}"), &text[..end]);
            assert_eq!(format!("{c:?}"), format!("{:?}", &text[..end]));
            drop(c);
            if let Repr::Heap(a) = &s.0 {
                assert_eq!(
                    Arc::strong_count(a),
                    1,
                    "{end} bytes: the clone's count gone"
                );
            }
        }
        assert!(SmallStr::new("10.0.0.1") < SmallStr::new("10.0.0.2"));
        assert!(SmallStr::new("fe80::1:2:3:4:5:6") == "fe80::1:2:3:4:5:6");
        assert_ne!(SmallStr::new("10.0.0.1"), SmallStr::new("10.0.0.10"));
        assert_eq!(SmallStr::default(), "");
    }

    #[test]
    fn from_ascii_takes_the_first_bytes_of_an_all_ascii_buffer_only() {
        let mut b = *b"10.0.0.1\0\0\0\0\0\0x";
        for len in 0..=15 {
            let s = SmallStr::from_ascii(b, len).expect("ASCII");
            assert_eq!(s.as_str().as_bytes(), &b[..len]);
            assert!(s.is_inline());
            assert_eq!(
                s,
                SmallStr::new(std::str::from_utf8(&b[..len]).expect("ASCII"))
            );
        }
        assert!(
            SmallStr::from_ascii(b, 16).is_none(),
            "longer than the buffer"
        );
        // A byte outside ASCII anywhere in the buffer, inside the text or past it, is
        // refused (each of the two overlapping words).
        for at in [0, 6, 7, 8, 14] {
            let mut bad = b;
            bad[at] = 0xc3;
            assert!(SmallStr::from_ascii(bad, 15).is_none(), "byte {at}");
            assert!(SmallStr::from_ascii(bad, 1).is_none(), "byte {at}");
        }
        b[14] = b'9';
        assert_eq!(SmallStr::from_ascii(b, 15).expect("ASCII").len(), 15);
    }
}
