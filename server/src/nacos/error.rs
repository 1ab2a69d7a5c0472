//! The one place that maps failures to Nacos error replies (`ErrorResponse`).
//!
//! Codes follow reference §4.9: protocol-level refusals (301 unregistered connection, 302
//! unknown type, 502 unparseable body, 503 over a limit, 300 shutting down) are built like
//! Java's `ErrorResponse.build(code, msg)`, i.e. `resultCode` 500 and `errorCode` the code;
//! handler failures (400 invalid parameter, 500 server error) like
//! `ErrorResponse.build(NacosException)`, i.e. both codes equal. Every reply carries both
//! integer codes and a message string, never `null`.

use distro_core::{ValidationError, WriteError};
use serde::Serialize;

/// `ResponseCode.SUCCESS`.
pub(crate) const SUCCESS: i32 = 200;
/// `ResponseCode.FAIL`.
pub(crate) const FAIL: i32 = 500;
/// `NacosException.INVALID_SERVER_STATUS`.
pub(crate) const INVALID_SERVER_STATUS: i32 = 300;
/// `NacosException.UN_REGISTER`.
pub(crate) const UN_REGISTER: i32 = 301;
/// `NacosException.NO_HANDLER`.
pub(crate) const NO_HANDLER: i32 = 302;
/// `NacosException.INVALID_PARAM`.
pub(crate) const INVALID_PARAM: i32 = 400;
/// `NacosException.NO_RIGHT`: authentication or authorization failed.
pub(crate) const NO_RIGHT: i32 = 403;
/// `NacosException.SERVER_ERROR`.
pub(crate) const SERVER_ERROR: i32 = 500;
/// `NacosException.BAD_GATEWAY` (Nacos uses it for unparseable requests).
pub(crate) const BAD_GATEWAY: i32 = 502;
/// `NacosException.OVER_THRESHOLD`.
pub(crate) const OVER_THRESHOLD: i32 = 503;

/// A failed request, as its `ErrorResponse` will say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NacosError {
    pub(crate) result_code: i32,
    pub(crate) error_code: i32,
    pub(crate) message: String,
}

impl NacosError {
    fn protocol(code: i32, message: impl Into<String>) -> Self {
        Self {
            result_code: FAIL,
            error_code: code,
            message: message.into(),
        }
    }

    fn handler(code: i32, message: impl Into<String>) -> Self {
        Self {
            result_code: code,
            error_code: code,
            message: message.into(),
        }
    }

    /// 301: the request came before the connection's `ConnectionSetupRequest`, or after the
    /// connection was closed.
    pub(crate) fn unregistered() -> Self {
        Self::protocol(UN_REGISTER, "Connection is unregistered.")
    }

    /// 302: no handler for this `metadata.type`.
    pub(crate) fn no_handler(type_name: &str) -> Self {
        Self::protocol(
            NO_HANDLER,
            format!("RequestHandler Not Found: no handler for type {type_name:?}"),
        )
    }

    /// 502: the body is not the JSON its type requires.
    pub(crate) fn bad_body(reason: String) -> Self {
        Self::protocol(BAD_GATEWAY, reason)
    }

    /// 403: no valid token, or the token's user may not do this (Nacos's
    /// `RemoteRequestAuthFilter`: `errorCode` 403 with the reason).
    pub(crate) fn no_right(message: impl Into<String>) -> Self {
        Self::protocol(NO_RIGHT, message)
    }

    /// 503: a limit of this node was reached.
    pub(crate) fn over_threshold(message: impl Into<String>) -> Self {
        Self::protocol(OVER_THRESHOLD, message)
    }

    /// 300: the node is still loading its snapshot from a peer (Nacos: "Server is
    /// starting"); the SDK tries another server.
    pub(crate) fn starting() -> Self {
        Self::protocol(
            INVALID_SERVER_STATUS,
            "Server is starting,please try later. (this node is still loading its snapshot \
             from a peer; connect to another node)",
        )
    }

    /// 300: the front end is shutting down.
    pub(crate) fn shutting_down() -> Self {
        Self::protocol(INVALID_SERVER_STATUS, "Server is shutting down.")
    }

    /// 400: a parameter is invalid.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::handler(INVALID_PARAM, message)
    }

    /// 500: the server cannot serve the request.
    pub(crate) fn server(message: impl Into<String>) -> Self {
        Self::handler(SERVER_ERROR, message)
    }

    /// The `ErrorResponse` body.
    pub(crate) fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            result_code: self.result_code,
            error_code: self.error_code,
            message: &self.message,
            success: false,
        }
    }
}

impl From<ValidationError> for NacosError {
    fn from(e: ValidationError) -> Self {
        // "invalid <field>: <reason>", the field spelled as clients send it.
        NacosError::invalid(e.to_string())
    }
}

impl From<WriteError> for NacosError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Invalid(v) => v.into(),
        }
    }
}

/// JSON of an `ErrorResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody<'a> {
    result_code: i32,
    error_code: i32,
    message: &'a str,
    success: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use distro_core::error::Field;

    #[test]
    fn replies_carry_integer_codes_and_a_message() {
        let json = serde_json::to_value(NacosError::unregistered().body()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"resultCode":500,"errorCode":301,
                "message":"Connection is unregistered.","success":false})
        );
        let e: NacosError = ValidationError::new(Field::Port, "must be in 1..=65535").into();
        assert_eq!((e.result_code, e.error_code), (400, 400));
        assert_eq!(e.message, "invalid port: must be in 1..=65535");
    }
}
