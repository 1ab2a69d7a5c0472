//! HTTP/2 on the wire, without I/O (sans-io): the frame layer of RFC 9113 ([`frame`]: parse
//! one frame from a byte buffer, append whole frames to an output buffer) and HPACK of
//! RFC 7541 ([`hpack`]: a full decoder with its dynamic table and Huffman strings, and a
//! stateless encoder whose blocks are constants a caller builds once).
//!
//! It deliberately does not keep streams, windows or settings: those belong to the
//! connection that uses it (the server's SDK and cluster ports, its gRPC client), which knows
//! its one shape of traffic (unary gRPC calls and one bi-directional stream) and can do far
//! less work per call than a general HTTP/2 library. No dependencies beyond std, no
//! allocation per frame or per header field in the steady state.

#![forbid(unsafe_code)]

pub mod frame;
pub mod hpack;

/// The client connection preface (RFC 9113 §3.4), sent before the client's SETTINGS.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[cfg(test)]
mod test_rng;
