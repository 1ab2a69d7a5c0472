//! Reading a reply's result fields without parsing the rest of it.
//!
//! A reply's JSON body carries `resultCode`, `errorCode` and `message` at its top level,
//! next to the class's own fields (a query's `serviceInfo`, with every host). [`read`]
//! scans the top-level object strictly (keys, colons, commas), reads those three fields
//! and steps over every other value by its structure alone: strings to their closing
//! quote, brackets matched by kind. So the body is still checked to be one complete,
//! well-nested object, with nothing after it, but the numbers and literals inside the
//! other values are not parsed, and their strings not unescaped. Whatever the scan does
//! not expect (an escape in a key, a result code that is not a plain integer, a field
//! given twice, nesting deeper than 64, anything malformed) goes to serde_json, whose
//! answer, a value or an error, is the reference.

use std::borrow::Cow;

use super::message::Head;

/// The result fields of a reply's body (see the module docs).
pub(crate) fn read(body: &[u8]) -> Result<Head<'_>, serde_json::Error> {
    match scan(body) {
        Some(head) => Ok(head),
        None => serde_json::from_slice(body),
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_space(b: &[u8], mut i: usize) -> usize {
    while b.get(i).copied().is_some_and(is_space) {
        i += 1;
    }
    i
}

/// Eight bytes at a time (SWAR): a mask with the high bit of every byte of `x` that is
/// zero. Bytes above the first zero byte may be flagged wrongly (a borrow), never the
/// first one, so only the lowest flag is used.
const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LOW) & !x & HIGH
}

fn bytes_equal(x: u64, c: u8) -> u64 {
    zero_bytes(x ^ (LOW * u64::from(c)))
}

/// The index of the first byte at or after `i` for which `hit` (on eight bytes at a time)
/// or `is` (on one) holds.
fn find(
    b: &[u8],
    mut i: usize,
    hit: impl Fn(u64) -> u64,
    is: impl Fn(u8) -> bool,
) -> Option<usize> {
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let m = hit(x);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|&c| is(c)).map(|p| i + p)
}

/// The next `"` or `\` at or after `i`.
fn find_quote_or_escape(b: &[u8], i: usize) -> Option<usize> {
    find(
        b,
        i,
        |x| bytes_equal(x, b'"') | bytes_equal(x, b'\\'),
        |c| c == b'"' || c == b'\\',
    )
}

/// The next byte at or after `i` that starts or ends a nested value or a string: `"`,
/// `{`, `}`, `[`, `]` (with bit 5 cleared, `{` is `[` and `}` is `]`, and no other byte is).
fn find_structural(b: &[u8], i: usize) -> Option<usize> {
    find(
        b,
        i,
        |x| {
            let folded = x & !(LOW * 0x20);
            bytes_equal(x, b'"') | bytes_equal(folded, b'[') | bytes_equal(folded, b']')
        },
        |c| matches!(c, b'"' | b'{' | b'}' | b'[' | b']'),
    )
}

/// The index after the string whose opening quote is at `i - 1`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let at = find_quote_or_escape(b, i)?;
        if b[at] == b'"' {
            return Some(at + 1);
        }
        i = at + 2;
    }
}

/// The index after the value starting at `i` (not whitespace).
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => return skip_string(b, i + 1),
        b'{' | b'[' => {}
        _ => {
            // A number or a literal: up to the next delimiter.
            let len = b[i..]
                .iter()
                .position(|&c| c == b',' || c == b'}' || c == b']' || is_space(c))
                .unwrap_or(b.len() - i);
            return (len > 0).then_some(i + len);
        }
    }
    // One bit per open bracket, innermost lowest: 1 for an object, 0 for an array.
    let mut kinds: u64 = 0;
    let mut depth = 0u32;
    loop {
        // At a structural byte.
        match b[i] {
            b'"' => i = skip_string(b, i + 1)?,
            c @ (b'{' | b'[') => {
                if depth == 64 {
                    return None;
                }
                kinds = (kinds << 1) | u64::from(c == b'{');
                depth += 1;
                i += 1;
            }
            c => {
                if depth == 0 || (kinds & 1 == 1) != (c == b'}') {
                    return None;
                }
                kinds >>= 1;
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
        }
        // Numbers, literals, colons and commas are stepped over unread.
        i = find_structural(b, i)?;
    }
}

/// A JSON integer without sign, exponent or leading zero beyond a lone `0`, as an `i32`.
fn int(v: &[u8]) -> Option<i32> {
    let (negative, digits) = match v.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, v),
    };
    match digits {
        [b'0'] => return Some(0),
        [b'1'..=b'9', ..] if digits.len() <= 10 => {}
        _ => return None,
    }
    let mut n = 0i64;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(c - b'0');
    }
    i32::try_from(if negative { -n } else { n }).ok()
}

/// `null`, or a string without escapes (borrowed).
fn message(v: &[u8]) -> Option<Option<Cow<'_, str>>> {
    if v == b"null" {
        return Some(None);
    }
    let inner = v.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        return None;
    }
    Some(Some(Cow::Borrowed(std::str::from_utf8(inner).ok()?)))
}

/// The fast path of [`read`]; `None` hands the body to serde_json.
fn scan(b: &[u8]) -> Option<Head<'_>> {
    let mut head = Head {
        result_code: 200,
        error_code: 0,
        message: None,
    };
    let mut seen = [false; 3];
    let mut i = skip_space(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_space(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            // A key ends at the first quote; an escape before it hands the body over.
            let quote = find_quote_or_escape(b, i + 1)?;
            if b[quote] != b'"' {
                return None;
            }
            let key = &b[i + 1..quote];
            let key_end = quote + 1;
            i = skip_space(b, key_end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let start = skip_space(b, i + 1);
            i = skip_value(b, start)?;
            let value = &b[start..i];
            let field = match key {
                b"resultCode" => Some(0),
                b"errorCode" => Some(1),
                b"message" => Some(2),
                _ => None,
            };
            if let Some(f) = field {
                if std::mem::replace(&mut seen[f], true) {
                    return None;
                }
                match f {
                    0 => head.result_code = int(value)?,
                    1 => head.error_code = int(value)?,
                    _ => head.message = message(value)?,
                }
            }
            i = skip_space(b, i);
            match b.get(i) {
                Some(b',') => i = skip_space(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_space(b, i) == b.len()).then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(h: &Head<'_>) -> (i32, i32, Option<String>) {
        (
            h.result_code,
            h.error_code,
            h.message.as_ref().map(|m| m.to_string()),
        )
    }

    /// The fast path's answer, when it has one, is serde_json's.
    fn agrees(body: &[u8]) {
        let reference = serde_json::from_slice::<Head<'_>>(body);
        match scan(body) {
            Some(fast) => {
                let r = reference.unwrap_or_else(|e| {
                    panic!(
                        "scan read {:?} that serde_json refuses ({e})",
                        String::from_utf8_lossy(body)
                    )
                });
                assert_eq!(
                    fields(&fast),
                    fields(&r),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
            None => {
                // Handed over: `read` is then serde_json itself.
                let via = read(body).map(|h| fields(&h)).map_err(|e| e.to_string());
                assert_eq!(
                    via,
                    reference.map(|h| fields(&h)).map_err(|e| e.to_string())
                );
            }
        }
    }

    const QUERY_REPLY: &str = r#"{"resultCode":200,"errorCode":0,"serviceInfo":{"name":"svc-1","groupName":"DEFAULT_GROUP","clusters":"","cacheMillis":10000,"hosts":[{"instanceId":"10.0.0.1#8080#DEFAULT#DEFAULT_GROUP@@svc-1","ip":"10.0.0.1","port":8080,"weight":1.0,"healthy":true,"enabled":true,"ephemeral":true,"clusterName":"DEFAULT","serviceName":"DEFAULT_GROUP@@svc-1","metadata":{"k":"a \"quoted\" } ] value"}}],"lastRefTime":1733350000000,"checksum":"","allIPs":false,"reachProtectionThreshold":false,"valid":true},"success":true}"#;

    #[test]
    fn a_query_reply_is_read_without_the_service_info() {
        let h = scan(QUERY_REPLY.as_bytes()).expect("the fast path reads it");
        assert_eq!(fields(&h), (200, 0, None));
        agrees(QUERY_REPLY.as_bytes());
    }

    #[test]
    fn errors_and_messages_are_read() {
        let e = br#" {"resultCode":500,"errorCode":301,"message":"connection is unregistered","success":false} "#;
        let h = scan(e).expect("fast");
        assert_eq!(
            fields(&h),
            (500, 301, Some("connection is unregistered".to_owned()))
        );
        for body in [
            &br#"{}"#[..],
            br#"{"message":null}"#,
            br#"{"message":"a \"b\""}"#,
            br#"{"resultCode":-1}"#,
            br#"{"errorCode":0,"resultCode":200,"requestId":"7"}"#,
        ] {
            agrees(body);
        }
    }

    #[test]
    fn malformed_or_unusual_bodies_get_serde_jsons_answer() {
        for body in [
            &b""[..],
            b"[]",
            b"{",
            b"{}x",
            br#"{"resultCode":200"#,
            br#"{"resultCode":200,}"#,
            br#"{"resultCode":200 "errorCode":0}"#,
            br#"{"resultCode":"200"}"#,
            br#"{"resultCode":200.0}"#,
            br#"{"resultCode":0200}"#,
            br#"{"resultCode":+200}"#,
            br#"{"resultCode":99999999999}"#,
            br#"{"resultCode":null}"#,
            br#"{"resultCode":200,"resultCode":500}"#,
            br#"{"result\u0043ode":500}"#,
            br#"{"message":5}"#,
            br#"{"serviceInfo":{"hosts":[}]}"#,
            br#"{"serviceInfo":{"hosts":[{"ip":"1"]}}"#,
            br#"{"serviceInfo":{"name":"unterminated}}"#,
            br#"{"serviceInfo":}"#,
            br#"{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
        ] {
            agrees(body);
        }
    }

    /// What the scan leaves unchecked, by design: the scalars inside the values it steps
    /// over (serde_json would refuse this body).
    #[test]
    fn scalars_inside_other_values_are_not_parsed() {
        let body = br#"{"resultCode":200,"serviceInfo":{"valid":tru,"port":8x}}"#;
        assert_eq!(scan(body).map(|h| fields(&h)), Some((200, 0, None)));
        assert!(serde_json::from_slice::<Head<'_>>(body).is_err());
    }

    /// Every prefix of a valid reply is incomplete: neither path accepts one.
    #[test]
    fn a_truncated_reply_is_refused() {
        let body = QUERY_REPLY.as_bytes();
        for n in 0..body.len() {
            assert!(scan(&body[..n]).is_none(), "prefix of {n} bytes accepted");
            assert!(read(&body[..n]).is_err(), "prefix of {n} bytes accepted");
        }
    }

    /// The eight-bytes-at-a-time searches find what a byte-by-byte search finds, on every
    /// byte value at every alignment.
    #[test]
    fn word_searches_agree_with_bytewise_ones() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let structural = |c: u8| matches!(c, b'"' | b'{' | b'}' | b'[' | b']');
        let quote = |c: u8| c == b'"' || c == b'\\';
        for _ in 0..2000 {
            let len = (next() % 40) as usize;
            // Mostly ordinary bytes, some of every value.
            let b: Vec<u8> = (0..len)
                .map(|_| match next() % 4 {
                    0 => next() as u8,
                    _ => b"ab_yz|{}[]\"\\\x7b\x5b\xfb\xdb\x80\x00"[(next() % 18) as usize],
                })
                .collect();
            for i in 0..=len {
                let naive =
                    |f: &dyn Fn(u8) -> bool| b[i..].iter().position(|&c| f(c)).map(|p| i + p);
                assert_eq!(
                    find_structural(&b, i),
                    naive(&structural),
                    "seed {seed}: {b:02x?} from {i}"
                );
                assert_eq!(
                    find_quote_or_escape(&b, i),
                    naive(&quote),
                    "seed {seed}: {b:02x?} from {i}"
                );
            }
        }
    }
}
