//! gRPC on HTTP/2, the few parts the SDK port writes by hand: the 5-byte prefix of a
//! message frame (`nacos::codec` frames the Nacos replies, writing the `Payload` without
//! building one), the HPACK blocks of the response head and the trailers (built once:
//! the encoder never indexes, so a block is a constant), and the statuses (`grpc-status`
//! trailers, or a trailers-only response for a call refused before any message).
//!
//! See the gRPC HTTP/2 protocol: a message is a compressed flag (one byte), a big-endian
//! `u32` length and the encoded message; a response is HEADERS (`:status 200`,
//! `content-type: application/grpc`), DATA, then trailers carrying `grpc-status` and, on
//! failure, a percent-encoded `grpc-message`.

use h2wire::hpack::encode_field;
use std::fmt::Write as _;
use std::sync::LazyLock;

/// Length of a message frame's prefix (flag + length).
pub(crate) const PREFIX: usize = 5;

/// gRPC status codes the port sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Code {
    Internal = 13,
    ResourceExhausted = 8,
    Unimplemented = 12,
}

/// A refused call: its status code and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl Status {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HPACK block of a trailers-only response refusing the call with this status.
    pub(crate) fn trailers_only(&self) -> Vec<u8> {
        let mut block = RESPONSE_HEAD.clone();
        let code = (self.code as u8).to_string();
        encode_field(&mut block, b"grpc-status", code.as_bytes());
        encode_field(
            &mut block,
            b"grpc-message",
            percent_encode(&self.message).as_bytes(),
        );
        block
    }
}

/// The HPACK block of every response head: `:status 200`, `content-type: application/grpc`.
pub(crate) static RESPONSE_HEAD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut b = Vec::new();
    encode_field(&mut b, b":status", b"200");
    encode_field(&mut b, b"content-type", b"application/grpc");
    b
});

/// The HPACK block of the trailers of a successful call (`grpc-status: 0`).
pub(crate) static OK_TRAILERS: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut b = Vec::new();
    encode_field(&mut b, b"grpc-status", b"0");
    b
});

/// Percent-encodes `s` for `grpc-message`: every byte outside printable ASCII, and `%`.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("too big: 100%"), "too big: 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn a_refusal_decodes_to_status_and_message() {
        let block = Status::new(Code::Unimplemented, "no such method").trailers_only();
        let mut fields = Vec::new();
        h2wire::hpack::Decoder::new(4096)
            .decode(&block, 16 * 1024, |n, v| {
                fields.push((n.to_vec(), v.to_vec()))
            })
            .map_err(|e| e.reason)
            .unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "12"),
            ("grpc-message", "no such method"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(fields, want);
    }
}
