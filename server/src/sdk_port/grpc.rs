//! gRPC on HTTP/2, the few parts the SDK port writes by hand: the 5-byte prefix of a
//! message frame (`nacos::codec` frames the Nacos replies, writing the `Payload` without
//! building one), the response head, and the statuses (`grpc-status` trailers, or a
//! trailers-only response for a call refused before any message).
//!
//! See the gRPC HTTP/2 protocol: a message is a compressed flag (one byte), a big-endian
//! `u32` length and the encoded message; a response is HEADERS (`:status 200`,
//! `content-type: application/grpc`), DATA, then trailers carrying `grpc-status` and, on
//! failure, a percent-encoded `grpc-message`.

use bytes::Bytes;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderName, HeaderValue};

/// `grpc-status`, made at compile time (a `&str` key is parsed on every insert).
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

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
}

/// The head of every response: `200`, `content-type: application/grpc`.
pub(crate) fn response_head() -> http::Response<()> {
    let mut r = http::Response::new(());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

/// The trailers of a successful call.
pub(crate) fn ok_trailers() -> HeaderMap {
    let mut t = HeaderMap::with_capacity(1);
    t.insert(GRPC_STATUS, HeaderValue::from_static("0"));
    t
}

/// `status` as `grpc-status` / `grpc-message` headers, added to `headers`.
fn put_status(headers: &mut HeaderMap, status: &Status) {
    let code = status.code as u8;
    headers.insert(GRPC_STATUS, HeaderValue::from(u16::from(code)));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&status.message)) {
        headers.insert(GRPC_MESSAGE, v);
    }
}

/// Refuses a call before any message: one HEADERS frame with the status, ending the stream.
pub(crate) fn refuse(mut respond: SendResponse<Bytes>, status: &Status) {
    let mut head = response_head();
    put_status(head.headers_mut(), status);
    // An error means the client has gone: nothing left to tell it.
    let _ = respond.send_response(head, true);
}

/// Percent-encodes `s` for `grpc-message`: every byte outside printable ASCII, and `%`.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
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
}
