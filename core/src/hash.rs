//! Stable hashes: everything that two nodes must compute identically.
//!
//! * [`java_string_hash`] and [`distro_hash`] reproduce Nacos's `DistroMapper` bit for bit,
//!   so a distro node routes an `ip:port` to the same member a Nacos node would.
//! * [`stable_hash64`] and [`shard_of`] use xxh3 with a fixed seed, and
//!   [`client_digest_hash`] mixes the id's [`stable_hash64`] with the revision; they
//!   decide shard membership and verify digests and must never change between versions
//!   that talk to each other. Golden-value tests pin all of them. The digest term changed
//!   twice (the seventh session and the nineteenth, see [`client_digest_term`]): nodes of
//!   builds on either side of a change compute different digests, so between them every
//!   verify round falls back to the owners' lists (which renew leases too, but each round
//!   walks every client). Whether two builds can share a cluster at all is decided by the
//!   peer layout version first (the README says more).
//!
//! In-memory maps use a process-seeded hasher instead (foldhash); those values never
//! leave the process.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of [`stable_hash64`]. Part of the peer protocol: changing it changes every shard.
pub const STABLE_SEED: u64 = 0x6469_7374_726f_2d31; // "distro-1"
/// The version of the verify digests' definition ([`client_digest_term`]), which peers
/// tell each other with their digests, so that nodes of builds on either side of a change
/// of the term can tell why every shard differs: 1, an xxh3-128 of the id and the
/// revision (before the seventh session); 2, the revision mixed before the id (the seventh
/// to the eighteenth); 3, the revision multiplied by an odd constant (since the
/// nineteenth). Builds before the twentieth session send none (read as 0: unknown; those
/// of the nineteenth compute version 3). Change it with the term.
pub const DIGEST_VERSION: u32 = 3;
/// Seed of [`client_digest_hash`]'s revision mix. Part of the peer protocol.
pub const DIGEST_SEED: u64 = 0x6469_6765_7374_2d31; // "digest-1"

/// Java's `String.hashCode()`: `h = 31 * h + c` over the UTF-16 code units of `s`, with
/// 32-bit wrap-around.
#[inline]
pub fn java_string_hash(s: &str) -> i32 {
    java_string_hash_from(0, s)
}

/// [`java_string_hash`] of a text continued by `s`, from `h`, the hash of the text before
/// it: `java_string_hash(a + b) == java_string_hash_from(java_string_hash(a), b)`, so a
/// concatenation is hashed piece by piece without being written out.
#[inline]
pub fn java_string_hash_from(mut h: i32, s: &str) -> i32 {
    if s.is_ascii() {
        return java_ascii_hash_from(h, s.as_bytes());
    }
    for unit in s.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    h
}

/// [`java_string_hash_from`] of ASCII bytes (one UTF-16 code unit each).
///
/// Four bytes a step: `h·31⁴ + a·31³ + b·31² + c·31 + d` is the value of four steps of
/// `h = 31·h + c` (modulo 2³², as Java's `int`), with one multiplication of `h` in the
/// dependency chain instead of four. A routing key is hashed by every node it passes, up to
/// four times per registration (as `ip:port`, ~15 bytes, or its ip, `:` and port digits
/// piece by piece: the ip's quads gain there).
#[inline]
pub(crate) fn java_ascii_hash_from(mut h: i32, ascii: &[u8]) -> i32 {
    debug_assert!(ascii.is_ascii());
    const P2: i32 = 31 * 31;
    const P3: i32 = 31 * 31 * 31;
    const P4: i32 = 31 * 31 * 31 * 31;
    let mut quads = ascii.chunks_exact(4);
    for q in &mut quads {
        // Each product fits: a byte times 31³ is below 2²³.
        let tail =
            i32::from(q[0]) * P3 + i32::from(q[1]) * P2 + i32::from(q[2]) * 31 + i32::from(q[3]);
        h = h.wrapping_mul(P4).wrapping_add(tail);
    }
    for &b in quads.remainder() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(b));
    }
    h
}

/// Nacos's `DistroMapper.distroHash`: `Math.abs(tag.hashCode() % Integer.MAX_VALUE)`.
///
/// Java's `%` keeps the sign of the dividend, as Rust's does, and the remainder lies in
/// `(-2^31+1, 2^31-1)`, so `abs` cannot overflow and the result is never negative.
#[inline]
pub fn distro_hash(tag: &str) -> u32 {
    distro_hash_of(java_string_hash(tag))
}

/// [`distro_hash`] of a tag whose [`java_string_hash`] is `h`.
#[inline]
pub fn distro_hash_of(h: i32) -> u32 {
    (h % i32::MAX).unsigned_abs()
}

/// A stable 64-bit hash of `bytes` (xxh3 with [`STABLE_SEED`]).
pub fn stable_hash64(bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, STABLE_SEED)
}

/// The shard of a client id among `shards` shards: `stable_hash64(id) % shards`.
pub fn shard_of(client_id: &str, shards: u32) -> u32 {
    shard_of_hash(stable_hash64(client_id.as_bytes()), shards)
}

/// [`shard_of`] of an id whose [`stable_hash64`] is `h` (a stored client keeps it).
#[inline]
pub fn shard_of_hash(h: u64, shards: u32) -> u32 {
    debug_assert!(shards > 0);
    if shards.is_power_of_two() {
        // The same value as the modulo, without a 64-bit division.
        (h & u64::from(shards - 1)) as u32
    } else {
        (h % u64::from(shards)) as u32
    }
}

/// The 128-bit digest term of one `(client id, revision)` pair: the id's
/// [`stable_hash64`] (the hash that picks its shard) mixed with the revision, see
/// [`client_digest_term`].
pub fn client_digest_hash(client_id: &str, revision: u64) -> u128 {
    client_digest_term(stable_hash64(client_id.as_bytes()), revision)
}

/// The digest term of the pair `(id, revision)` from `h = stable_hash64(id)`:
/// `r = (revision ^ DIGEST_SEED) * MIX64_A` (wrapping), `lo = mix64(h ^ r)`,
/// `hi = mix64(lo ^ h.rotate_left(32))`; the term is `hi << 64 | lo`. For one id, distinct
/// revisions give distinct terms (`r` is a bijection of the revision: a xor and a
/// multiplication by an odd constant; `mix64` is one too); distinct ids differ by their
/// 64-bit hash (two pairs whose `lo` agree differ in `hi`). One xxh3 of the id and two
/// mixes: the first definition, an xxh3-128 over the id and the revision copied into a
/// buffer, cost more, and so did a third mix for `r` (~9 instructions a term; every
/// change pays for two terms, the old one out and the new one in). `r` need not be
/// mixed: `mix64` spreads every bit of `h ^ r`.
#[inline]
pub fn client_digest_term(h: u64, revision: u64) -> u128 {
    let r = (revision ^ DIGEST_SEED).wrapping_mul(MIX64_A);
    let lo = mix64(h ^ r);
    let hi = mix64(lo ^ h.rotate_left(32));
    u128::from(hi) << 64 | u128::from(lo)
}

/// A 64-bit finalizer (the "moremur" mix of Pelle Evensen), used to combine a key hash with
/// a member hash in rendezvous routing. Bijective, so distinct inputs never collide.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 27;
    x = x.wrapping_mul(MIX64_A);
    x ^= x >> 33;
    x = x.wrapping_mul(MIX64_B);
    x ^= x >> 27;
    x
}

/// [`mix64`]'s multipliers (odd, so each has an inverse modulo 2^64).
const MIX64_A: u64 = 0x3C79_AC49_2BA7_B653;
const MIX64_B: u64 = 0x1C69_B3F7_4AC4_AE35;

/// [`mix64`] undone: `unmix64(mix64(x)) == x` for every `x` (each xor-shift and odd
/// multiplication has an inverse; a shift by 27 is undone by xoring the shifts by 27 and
/// 54, one by 33 by itself).
#[inline]
pub fn unmix64(mut x: u64) -> u64 {
    x ^= x >> 27 ^ x >> 54;
    x = x.wrapping_mul(const { inverse(MIX64_B) });
    x ^= x >> 33;
    x = x.wrapping_mul(const { inverse(MIX64_A) });
    x ^= x >> 27 ^ x >> 54;
    x
}

/// The inverse of an odd `a` modulo 2^64 (Newton's iteration: `a` is its own inverse
/// modulo 8, and each step doubles the bits that are right).
const fn inverse(a: u64) -> u64 {
    let mut x = a;
    let mut k = 0;
    while k < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        k += 1;
    }
    assert!(a.wrapping_mul(x) == 1);
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `unmix64` undoes `mix64` for random inputs, single bits and the edges.
    #[test]
    fn unmix64_undoes_mix64() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            assert_eq!(unmix64(mix64(x)), x, "{x:#x}");
            assert_eq!(mix64(unmix64(x)), x, "{x:#x}");
        }
        for b in 0..64 {
            assert_eq!(unmix64(mix64(1 << b)), 1 << b);
            assert_eq!(unmix64(mix64(!(1 << b))), !(1 << b));
        }
        assert_eq!(unmix64(mix64(0)), 0);
        assert_eq!(unmix64(mix64(u64::MAX)), u64::MAX);
    }

    /// Golden values printed by a real JVM (OpenJDK 17, `jshell`):
    /// `"<s>".hashCode()` and `Math.abs("<s>".hashCode() % Integer.MAX_VALUE)`.
    /// The strings cover ASCII ip:port keys, negative hashes, `Integer.MIN_VALUE`-adjacent
    /// behaviour, non-ASCII BMP characters and a surrogate pair.
    const JAVA_GOLDEN: &[(&str, i32, u32)] = include!("../testdata/java_hash_golden.rs");

    #[test]
    fn java_hash_matches_jvm_golden_values() {
        assert!(JAVA_GOLDEN.len() >= 20);
        for &(s, hash, distro) in JAVA_GOLDEN {
            assert_eq!(java_string_hash(s), hash, "String.hashCode of {s:?}");
            assert_eq!(distro_hash(s), distro, "distroHash of {s:?}");
        }
    }

    /// The four-bytes-a-step ASCII hash is the definition's one step a byte: every length
    /// 0..=40 (each remainder after the quads), from several starting hashes, bytes from
    /// a seeded generator over all of ASCII (seed printed on failure).
    #[test]
    fn the_ascii_hash_four_bytes_a_step_is_javas_one_step_a_byte() {
        let seed: u64 = 0x5eed_4a5a_0017_0031;
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x >> 33
        };
        for len in 0..=40 {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len).map(|_| (next() % 128) as u8).collect();
                // Either sign: the shifted value's low 32 bits.
                let start = (next() << 1) as i32;
                let want = bytes
                    .iter()
                    .fold(start, |h, &b| h.wrapping_mul(31).wrapping_add(i32::from(b)));
                assert_eq!(
                    java_ascii_hash_from(start, &bytes),
                    want,
                    "bytes {bytes:?} from {start} (seed {seed:#x})"
                );
            }
        }
        assert_eq!(
            java_ascii_hash_from(7, &[127; 4]),
            7 * 923_521 + 127 * 30_784
        );
    }

    #[test]
    fn golden_values_include_negative_and_non_ascii_inputs() {
        assert!(JAVA_GOLDEN.iter().any(|&(_, h, _)| h < 0));
        assert!(JAVA_GOLDEN.iter().any(|&(s, _, _)| !s.is_ascii()));
        assert!(
            JAVA_GOLDEN
                .iter()
                .any(|&(s, _, _)| s.chars().any(|c| c as u32 > 0xFFFF))
        );
    }

    /// A digest term's properties: for one id, distinct revisions give distinct terms
    /// (already in their low half: the revision's transform and `mix64` are bijections);
    /// two ids that swap their revisions change the sum of their terms (the revision is
    /// mixed with the id, not added beside it).
    #[test]
    fn digest_terms_tell_revisions_and_their_pairing_apart() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x
        };
        for h in [0, u64::MAX, STABLE_10_0_0_7, next()] {
            let revisions = (0..4_096).chain([u64::MAX, 1 << 63, DIGEST_SEED, !DIGEST_SEED]);
            let mut lows: Vec<u64> = revisions.map(|r| client_digest_term(h, r) as u64).collect();
            lows.sort_unstable();
            lows.dedup();
            assert_eq!(lows.len(), 4_100, "{h:#x}");
        }
        for _ in 0..1_000 {
            let (a, b, r, s) = (next(), next(), next() >> 40, next() >> 40);
            let sum = |p: u128, q: u128| {
                let lo = (p as u64).wrapping_add(q as u64);
                let hi = ((p >> 64) as u64).wrapping_add((q >> 64) as u64);
                (lo, hi)
            };
            let t = |h, rev| client_digest_term(h, rev);
            if r != s {
                assert_ne!(sum(t(a, r), t(b, s)), sum(t(a, s), t(b, r)));
            }
        }
    }

    #[test]
    fn stable_hashes_are_pinned() {
        // Values computed independently with Python's `xxhash` package (xxh3_64_intdigest
        // with the same seed) and a Python transcription of mix64 (the digest term from
        // that hash, as `client_digest_term` documents it: the revision multiplied, not
        // mixed, since the nineteenth session); a change here breaks compatibility between
        // versions.
        assert_eq!(stable_hash64(b"10.0.0.7:8080#true"), STABLE_10_0_0_7);
        assert_eq!(
            shard_of("10.0.0.7:8080#true", 1024),
            (STABLE_10_0_0_7 % 1024) as u32
        );
        assert_eq!(
            client_digest_hash("10.0.0.7:8080#true", 3),
            DIGEST_IP_PORT_3
        );
        assert_eq!(client_digest_term(STABLE_10_0_0_7, 3), DIGEST_IP_PORT_3);
        assert_eq!(mix64(1), MIX64_1);
        // The registry's shard writer starts from it (its last lookup's hash, `(0, 0)`).
        assert_eq!(mix64(0), 0);
    }

    const STABLE_10_0_0_7: u64 = 0x3fa0_6ed1_762a_61fe;
    const DIGEST_IP_PORT_3: u128 = 0xebed_e45b_0e7e_6698_6b44_913c_0462_6914;
    const MIX64_1: u64 = 0x3c02_aa47_7582_92bd;
}
