//! Bytes taken as a `String` or a `&str` without the UTF-8 check when they are all
//! ASCII: [`ascii_string`], [`ascii_str`].

/// `bytes` as a `String` when every byte is ASCII (`is_ascii`, a word-at-a-time scan),
/// else handed back unchanged (for a caller's own, checked conversion).
///
/// `String::from_utf8` walks the bytes with the UTF-8 decoder's ASCII fast path; a text
/// built from digits, separators and ASCII pieces (the peer decoder's derived client ids,
/// ~30 bytes each, a batch's at once) needs only the ASCII scan, which costs about half.
#[inline]
pub fn ascii_string(bytes: Vec<u8>) -> Result<String, Vec<u8>> {
    if !bytes.is_ascii() {
        return Err(bytes);
    }
    #[allow(unsafe_code)]
    // SAFETY: every byte is ASCII (checked just above, and the vector is owned: nothing
    // changes it in between), and a sequence of ASCII bytes is valid UTF-8 (each one is
    // a one-byte code point), which is all `from_utf8_unchecked` requires.
    Ok(unsafe { String::from_utf8_unchecked(bytes) })
}

/// `bytes` as a `&str` when every byte is ASCII (`is_ascii`), else `None` (for a caller's
/// own, checked conversion).
///
/// For short texts read again and again from a buffer they were checked in when it was
/// received (the native API's addresses and names, ~10-20 bytes): `str::from_utf8` is a
/// call that walks them a byte at a time (~100 instructions each), the ASCII scan a few
/// instructions inline.
#[inline]
pub fn ascii_str(bytes: &[u8]) -> Option<&str> {
    if !bytes.is_ascii() {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: every byte is ASCII (checked just above; the slice is borrowed shared, so
    // nothing changes it in between), and ASCII bytes are valid UTF-8 (each a one-byte
    // code point), which is all `from_utf8_unchecked` requires.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

#[cfg(test)]
mod tests {
    use super::{ascii_str, ascii_string};

    #[test]
    fn all_ascii_slices_are_taken_as_text_and_any_other_refused() {
        assert_eq!(ascii_str(b""), Some(""));
        let text: Vec<u8> = (0..=0x7f).collect();
        let s = ascii_str(&text).expect("ASCII");
        assert_eq!(s.as_bytes(), &text[..]);
        for at in [0, 5, 8, 63, 127] {
            for b in [0x80u8, 0xc3, 0xff] {
                let mut bad = text.clone();
                bad[at] = b;
                assert_eq!(ascii_str(&bad), None, "{at} {b:#x}");
            }
        }
        assert_eq!(ascii_str("id-é".as_bytes()), None);
    }

    #[test]
    fn all_ascii_bytes_are_taken_and_any_other_handed_back() {
        assert_eq!(ascii_string(Vec::new()).as_deref(), Ok(""));
        let text: Vec<u8> = (0..=0x7f).collect();
        let s = ascii_string(text.clone()).expect("ASCII");
        assert_eq!(s.as_bytes(), &text[..]);
        assert_eq!(s.chars().count(), 128);
        // One byte outside ASCII anywhere (first, inside a word, last; of a valid UTF-8
        // text or not) and the bytes come back as they were.
        for at in [0, 5, 8, 63, 127] {
            for b in [0x80u8, 0xc3, 0xff] {
                let mut bad = text.clone();
                bad[at] = b;
                assert_eq!(ascii_string(bad.clone()), Err(bad), "{at} {b:#x}");
            }
        }
        let utf8 = "id-é".as_bytes().to_vec();
        assert_eq!(ascii_string(utf8.clone()), Err(utf8));
    }
}
