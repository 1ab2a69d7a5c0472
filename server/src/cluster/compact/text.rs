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

/// How an ip travels: packed when the text is the address's one canonical form.
pub(super) enum PackedIp {
    V4([u8; 4]),
    V6([u8; 16]),
    Text,
}

pub(super) fn pack_ip(ip: &str) -> PackedIp {
    if let Some(o) = canonical_ipv4(ip) {
        return PackedIp::V4(o);
    }
    if ip.contains(':')
        && let Ok(a) = ip.parse::<Ipv6Addr>()
        && a.to_string() == ip
    {
        return PackedIp::V6(a.octets());
    }
    PackedIp::Text
}

/// Sixteen bytes on a word boundary: UTF-8 validation checks such a buffer two words at a
/// time, where the bytes of a shorter or unaligned one are checked one by one.
#[repr(align(8))]
struct Aligned([u8; 16]);

/// The dotted form of an IPv4 address, written without the formatting machinery (on the
/// stack, then inline in the string: no allocation). The whole zero-padded buffer is
/// validated (in one step, see [`Aligned`]), then the address's part taken.
pub(super) fn ipv4_text(o: [u8; 4]) -> SmallStr {
    let mut a = Aligned([0u8; 16]);
    let b = &mut a.0;
    let mut n = 0;
    for (k, x) in o.into_iter().enumerate() {
        if k > 0 {
            b[n] = b'.';
            n += 1;
        }
        if x >= 100 {
            b[n] = b'0' + x / 100;
            n += 1;
        }
        if x >= 10 {
            b[n] = b'0' + x / 10 % 10;
            n += 1;
        }
        b[n] = b'0' + x % 10;
        n += 1;
    }
    let text = std::str::from_utf8(&a.0).expect("digits, dots and zeros");
    SmallStr::new(&text[..n])
}

// ----- encoding ----------------------------------------------------------------------
