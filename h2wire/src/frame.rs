//! The HTTP/2 frame layer (RFC 9113 §4 and §6): [`parse`] reads the frame at the start of a
//! buffer, checking the rules that make a frame malformed on its own (sizes, stream ids,
//! padding); the `write_*` functions append whole frames to an output buffer.
//!
//! What depends on connection state (a DATA frame on an idle stream, a CONTINUATION that
//! does not follow a HEADERS, window overflows, SETTINGS values out of range) is the
//! caller's to check: this file knows one frame at a time.

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

/// Frame flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

/// SETTINGS parameters (RFC 9113 §6.5.2).
pub const HEADER_TABLE_SIZE: u16 = 1;
pub const ENABLE_PUSH: u16 = 2;
pub const MAX_CONCURRENT_STREAMS: u16 = 3;
pub const INITIAL_WINDOW_SIZE: u16 = 4;
pub const MAX_FRAME_SIZE: u16 = 5;
pub const MAX_HEADER_LIST_SIZE: u16 = 6;

/// The size of a frame header.
pub const HEAD_LEN: usize = 9;
/// The initial SETTINGS_MAX_FRAME_SIZE (and its smallest legal value).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest legal SETTINGS_MAX_FRAME_SIZE (2^24 - 1).
pub const LARGEST_MAX_FRAME_SIZE: u32 = 16_777_215;
/// The initial flow-control window of a connection and of each stream.
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The largest legal flow-control window (2^31 - 1).
pub const MAX_WINDOW: u32 = 0x7fff_ffff;

/// An HTTP/2 error code (RFC 9113 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    pub const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
    pub const INADEQUATE_SECURITY: ErrorCode = ErrorCode(0xc);
    pub const HTTP_1_1_REQUIRED: ErrorCode = ErrorCode(0xd);

    /// The code's name in RFC 9113, or "unknown".
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("unknown")
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#x})", self.name(), self.0)
    }
}

/// One parsed frame, borrowing its payload from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Data {
        stream: u32,
        end_stream: bool,
        data: &'a [u8],
        /// The payload length including padding: what counts against flow control.
        flow_len: u32,
    },
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        /// The header block fragment, padding and priority fields stripped.
        block: &'a [u8],
    },
    Priority {
        stream: u32,
    },
    RstStream {
        stream: u32,
        code: ErrorCode,
    },
    Settings {
        ack: bool,
        /// 6-byte entries; iterate with [`settings_params`].
        params: &'a [u8],
    },
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: ErrorCode,
        debug: &'a [u8],
    },
    /// A zero increment on a stream is returned as is (a stream error for the caller).
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        block: &'a [u8],
    },
    Unknown {
        kind: u8,
        stream: u32,
    },
}

/// Checks a SETTINGS value against the ranges RFC 9113 §6.5.2 gives every endpoint:
/// SETTINGS_ENABLE_PUSH 0 or 1, SETTINGS_INITIAL_WINDOW_SIZE at most 2^31-1 (a
/// FLOW_CONTROL_ERROR), SETTINGS_MAX_FRAME_SIZE from 2^14 to 2^24-1. Unknown identifiers
/// pass (they are ignored).
pub fn check_setting(id: u16, value: u32) -> Result<(), FrameError> {
    match id {
        ENABLE_PUSH if value > 1 => {
            Err(FrameError::protocol("SETTINGS_ENABLE_PUSH neither 0 nor 1"))
        }
        INITIAL_WINDOW_SIZE if value > MAX_WINDOW => Err(FrameError::new(
            ErrorCode::FLOW_CONTROL_ERROR,
            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
        )),
        MAX_FRAME_SIZE if !(DEFAULT_MAX_FRAME_SIZE..=LARGEST_MAX_FRAME_SIZE).contains(&value) => {
            Err(FrameError::protocol("SETTINGS_MAX_FRAME_SIZE out of range"))
        }
        _ => Ok(()),
    }
}

/// The (identifier, value) pairs of a SETTINGS payload, in order.
pub fn settings_params(params: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    params.chunks_exact(6).map(|e| {
        (
            u16::from_be_bytes([e[0], e[1]]),
            u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
        )
    })
}

/// A connection error: found in one frame, or the GOAWAY a connection ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub reason: &'static str,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

impl std::error::Error for FrameError {}

impl FrameError {
    /// A connection error of `code`, for `reason`.
    pub fn new(code: ErrorCode, reason: &'static str) -> Self {
        Self { code, reason }
    }

    /// A PROTOCOL_ERROR for `reason`.
    pub fn protocol(reason: &'static str) -> Self {
        Self::new(ErrorCode::PROTOCOL_ERROR, reason)
    }
}

fn size_error(reason: &'static str) -> FrameError {
    FrameError::new(ErrorCode::FRAME_SIZE_ERROR, reason)
}

fn protocol_error(reason: &'static str) -> FrameError {
    FrameError::protocol(reason)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The payload of a padded frame without its Pad Length byte and padding; `fixed` bytes
/// (the priority fields of HEADERS) follow the Pad Length byte and are skipped too.
fn unpad(payload: &[u8], flags: u8, fixed: usize) -> Result<&[u8], FrameError> {
    let (pad, rest) = if flags & PADDED != 0 {
        match payload.split_first() {
            Some((&pad, rest)) => (usize::from(pad), rest),
            None => return Err(size_error("padded frame without a pad length")),
        }
    } else {
        (0, payload)
    };
    if rest.len() < fixed {
        return Err(size_error("frame too short for its priority fields"));
    }
    let rest = &rest[fixed..];
    if pad > rest.len() {
        return Err(protocol_error("padding not shorter than the payload"));
    }
    Ok(&rest[..rest.len() - pad])
}

/// The frame at the start of `buf`: `Ok(None)` when `buf` holds less than a whole frame,
/// `Ok(Some((frame, bytes consumed)))`. Errors are connection errors: FRAME_SIZE_ERROR for
/// a length over `max_frame_size` or a wrong length of a fixed-size frame (PRIORITY 5,
/// RST_STREAM 4, SETTINGS a multiple of 6 / an ack with a payload, PING 8, WINDOW_UPDATE 4,
/// GOAWAY at least 8); PROTOCOL_ERROR for stream-id rules (DATA, HEADERS, PRIORITY,
/// RST_STREAM, CONTINUATION, PUSH_PROMISE on stream 0; SETTINGS, PING, GOAWAY on a non-zero
/// stream), padding not shorter than the payload, a zero WINDOW_UPDATE increment on stream 0.
/// The reserved bit of stream ids is ignored.
pub fn parse(buf: &[u8], max_frame_size: u32) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(head) = buf.get(..HEAD_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    if len > max_frame_size {
        return Err(size_error("frame larger than SETTINGS_MAX_FRAME_SIZE"));
    }
    let total = HEAD_LEN + len as usize;
    let Some(payload) = buf.get(HEAD_LEN..total) else {
        return Ok(None);
    };
    let (kind, flags) = (head[3], head[4]);
    let stream = be32(&head[5..9]) & MAX_WINDOW;
    let needs_stream = || {
        if stream == 0 {
            Err(protocol_error("frame on stream 0 that needs a stream"))
        } else {
            Ok(())
        }
    };
    let connection_only = || {
        if stream != 0 {
            Err(protocol_error("connection frame on a stream"))
        } else {
            Ok(())
        }
    };
    let frame = match kind {
        DATA => {
            let data = unpad(payload, flags, 0)?;
            needs_stream()?;
            Frame::Data {
                stream,
                end_stream: flags & END_STREAM != 0,
                data,
                flow_len: len,
            }
        }
        HEADERS => {
            let fixed = if flags & PRIORITY_FLAG != 0 { 5 } else { 0 };
            let block = unpad(payload, flags, fixed)?;
            needs_stream()?;
            Frame::Headers {
                stream,
                end_stream: flags & END_STREAM != 0,
                end_headers: flags & END_HEADERS != 0,
                block,
            }
        }
        PRIORITY => {
            if len != 5 {
                return Err(size_error("PRIORITY frame not 5 bytes long"));
            }
            needs_stream()?;
            Frame::Priority { stream }
        }
        RST_STREAM => {
            if len != 4 {
                return Err(size_error("RST_STREAM frame not 4 bytes long"));
            }
            needs_stream()?;
            Frame::RstStream {
                stream,
                code: ErrorCode(be32(payload)),
            }
        }
        SETTINGS => {
            let ack = flags & ACK != 0;
            if ack && len != 0 {
                return Err(size_error("SETTINGS ack with a payload"));
            }
            if !len.is_multiple_of(6) {
                return Err(size_error("SETTINGS payload not a multiple of 6 bytes"));
            }
            connection_only()?;
            Frame::Settings {
                ack,
                params: payload,
            }
        }
        PUSH_PROMISE => {
            needs_stream()?;
            Frame::PushPromise { stream }
        }
        PING => {
            if len != 8 {
                return Err(size_error("PING frame not 8 bytes long"));
            }
            let mut data = [0; 8];
            data.copy_from_slice(payload);
            connection_only()?;
            Frame::Ping {
                ack: flags & ACK != 0,
                data,
            }
        }
        GOAWAY => {
            if len < 8 {
                return Err(size_error("GOAWAY frame shorter than 8 bytes"));
            }
            connection_only()?;
            Frame::GoAway {
                last_stream: be32(payload) & MAX_WINDOW,
                code: ErrorCode(be32(&payload[4..])),
                debug: &payload[8..],
            }
        }
        WINDOW_UPDATE => {
            if len != 4 {
                return Err(size_error("WINDOW_UPDATE frame not 4 bytes long"));
            }
            let increment = be32(payload) & MAX_WINDOW;
            if increment == 0 && stream == 0 {
                return Err(protocol_error(
                    "zero WINDOW_UPDATE increment on the connection",
                ));
            }
            Frame::WindowUpdate { stream, increment }
        }
        CONTINUATION => {
            needs_stream()?;
            Frame::Continuation {
                stream,
                end_headers: flags & END_HEADERS != 0,
                block: payload,
            }
        }
        kind => Frame::Unknown { kind, stream },
    };
    Ok(Some((frame, total)))
}

/// Appends a frame header.
pub fn write_head(out: &mut Vec<u8>, len: u32, kind: u8, flags: u8, stream: u32) {
    let l = len.to_be_bytes();
    let s = (stream & MAX_WINDOW).to_be_bytes();
    out.extend_from_slice(&[l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]);
}

/// Appends a header block as one HEADERS frame and as many CONTINUATION frames as
/// `max_frame_size` requires.
pub fn write_headers(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let max = (max_frame_size as usize).max(1);
    let mut chunks = block.chunks(max);
    let first = chunks.next().unwrap_or(&[]);
    let mut flags = if end_stream { END_STREAM } else { 0 };
    if first.len() == block.len() {
        flags |= END_HEADERS;
    }
    write_head(out, first.len() as u32, HEADERS, flags, stream);
    out.extend_from_slice(first);
    let mut sent = first.len();
    for chunk in chunks {
        sent += chunk.len();
        let flags = if sent == block.len() { END_HEADERS } else { 0 };
        write_head(out, chunk.len() as u32, CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
}

/// Appends one DATA frame; the caller keeps `data.len()` within the peer's maximum frame
/// size and flow-control windows.
pub fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    write_data_head(out, stream, data.len() as u32, end_stream);
    out.extend_from_slice(data);
}

/// Appends the 9-byte head of a DATA frame only; the caller appends `len` bytes.
pub fn write_data_head(out: &mut Vec<u8>, stream: u32, len: u32, end_stream: bool) {
    write_head(
        out,
        len,
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
    );
}

pub fn write_settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    write_head(out, (params.len() * 6) as u32, SETTINGS, 0, 0);
    for &(id, value) in params {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_head(out, 0, SETTINGS, ACK, 0);
}

pub fn write_ping(out: &mut Vec<u8>, ack: bool, data: [u8; 8]) {
    write_head(out, 8, PING, if ack { ACK } else { 0 }, 0);
    out.extend_from_slice(&data);
}

pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}

/// Adds `n` bytes no longer held to `unacked`, what stream `stream` (0: the connection)
/// has received and not handed back; once that reaches half of `window`, writes a
/// WINDOW_UPDATE handing it all back and returns how much (0 when nothing was written).
pub fn hand_back(out: &mut Vec<u8>, stream: u32, unacked: &mut u32, n: u32, window: u32) -> u32 {
    *unacked += n;
    if *unacked < window / 2 {
        return 0;
    }
    let n = std::mem::take(unacked);
    write_window_update(out, stream, n);
    n
}

pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    write_head(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&code.0.to_be_bytes());
}

pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode, debug: &[u8]) {
    write_head(out, 8 + debug.len() as u32, GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(debug);
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
