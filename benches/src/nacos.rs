//! Nacos 1.x's service checksum, reimplemented as the baseline the digest benches beat.
//!
//! Nacos 1.x verifies replicas per *service*: the owner sends, for every service it owns,
//! `Instances.getChecksum()` = the MD5 hex of the concatenation, over the instance list
//! sorted by address, of
//! `ip:port_weight_healthy_enabled_clusterName_<metadata as k:v, sorted by key, each followed by ','>`,
//! each followed by `,` (nacos-reference.md §2). The string is rebuilt and rehashed whenever
//! the service changes. The benches compare it with xxh3-128 over the same string and with
//! the per-shard running digests of `distro-core`.
//!
//! Not part of the protocol: this module exists only to measure the cost Nacos pays.

use distro_core::Instance;
use md5::{Digest, Md5};
use std::fmt::Write;

/// Java's `Double.toString` for the weights Nacos allows (0..=10000): a whole number keeps
/// one decimal (`1.0`), others print as Rust does (`0.5`). Weights below 0.001, which Java
/// prints in scientific notation, do not occur in the fixtures.
fn java_double(out: &mut String, w: f64) {
    if w.fract() == 0.0 {
        let _ = write!(out, "{w:.1}");
    } else {
        let _ = write!(out, "{w}");
    }
}

/// Writes the Nacos 1.x checksum string of `instances` into `out` (cleared first). The
/// instances are visited in `ip:port` order, as `Collections.sort(instanceList)` does.
pub fn checksum_string(instances: &[Instance], out: &mut String) {
    out.clear();
    let mut order: Vec<&Instance> = instances.iter().collect();
    order.sort_by(|a, b| (a.ip.as_str(), a.port).cmp(&(b.ip.as_str(), b.port)));
    for i in order {
        let _ = write!(out, "{}:{}_", i.ip, i.port);
        java_double(out, i.weight);
        let _ = write!(out, "_{}_{}_{}_", i.healthy, i.enabled, i.cluster);
        for (k, v) in i.metadata.iter() {
            out.push_str(k);
            out.push(':');
            out.push_str(v);
            out.push(',');
        }
        out.push(',');
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Nacos 1.x: `MD5Utils.md5Hex(checksumString)`.
pub fn md5_hex(s: &str) -> String {
    hex(&Md5::digest(s.as_bytes()))
}

/// The same string hashed with xxh3-128 (what a non-cryptographic checksum would cost).
pub fn xxh3_128(s: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(s.as_bytes())
}

/// The full Nacos 1.x checksum of a service: build the string, MD5 it, hex it.
pub fn nacos_checksum(instances: &[Instance], buf: &mut String) -> String {
    checksum_string(instances, buf);
    md5_hex(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use distro_core::name::Interner;

    #[test]
    fn checksum_string_has_the_nacos_layout() {
        let interner = Interner::new();
        let mut a = crate::fixture::bare_instance(&interner, 1);
        a.ip = "10.0.0.2".into();
        a.ipv4 = distro_core::model::Ipv4Bits::of(&a.ip);
        a.port = 8080;
        let mut b = crate::fixture::bare_instance(&interner, 0);
        b.ip = "10.0.0.1".into();
        b.ipv4 = distro_core::model::Ipv4Bits::of(&b.ip);
        b.port = 80;
        b.weight = 0.5;
        b.metadata = Default::default();
        let mut s = String::new();
        checksum_string(&[a, b], &mut s);
        assert_eq!(
            s,
            "10.0.0.1:80_0.5_false_true_DEFAULT_,10.0.0.2:8080_1.0_true_true_DEFAULT_version:1.4.2,zone:az-2,,"
        );
        // `printf %s "$s" | md5sum`
        assert_eq!(md5_hex(&s), "69f7246392323753d0f64e342098f917");
    }

    #[test]
    fn md5_of_the_empty_string() {
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
