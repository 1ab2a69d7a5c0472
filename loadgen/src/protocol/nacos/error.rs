//! Why a Nacos call or connection failed.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

/// A failed connection, handshake or request.
#[derive(Debug, thiserror::Error)]
pub enum NacosError {
    /// The TCP connection or the HTTP/2 channel could not be opened.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The server's SDK (gRPC) address.
        server: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The handshake did not complete.
    #[error("handshake with {server} failed: {reason}")]
    Handshake {
        /// The server's SDK (gRPC) address.
        server: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The call failed at the gRPC level (transport, stream reset, …).
    #[error("gRPC call failed: {0}")]
    Transport(#[from] tonic::Status),
    /// No reply within the request timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server answered with an error (`ErrorResponse`, or `resultCode` ≠ 200).
    #[error("server error {error_code} (resultCode {result_code}): {message}")]
    Server {
        /// `resultCode`.
        result_code: i32,
        /// `errorCode` (301: connection unregistered, 302: no handler, 400: invalid
        /// parameter, 503: over a limit, …).
        error_code: i32,
        /// `message`.
        message: String,
    },
    /// A reply of an unexpected class or an unreadable body.
    #[error("unexpected reply: {0}")]
    BadReply(String),
    /// The connection was closed (its bi-stream ended).
    #[error("the connection is closed")]
    Closed,
}

impl NacosError {
    /// A short label for counting errors by kind: the `errorCode` of a server error
    /// (`"301"`), the gRPC code of a transport failure (`"Unavailable"`), or the variant.
    pub fn code(&self) -> Cow<'static, str> {
        match self {
            NacosError::Connect { .. } => "connect".into(),
            NacosError::Handshake { .. } => "handshake".into(),
            NacosError::Transport(s) => format!("{:?}", s.code()).into(),
            NacosError::Timeout(_) => "timeout".into(),
            NacosError::Server { error_code, .. } => error_code.to_string().into(),
            NacosError::BadReply(_) => "bad-reply".into(),
            NacosError::Closed => "closed".into(),
        }
    }

    /// Whether the server said this connection is not (or no longer) registered (301):
    /// a Nacos client then reconnects.
    pub fn is_unregistered(&self) -> bool {
        matches!(
            self,
            NacosError::Server {
                error_code: 301,
                ..
            }
        )
    }
}
