//! Settings of the Nacos 2.x gRPC front end, with Nacos's defaults as named constants.
//!
//! A plain struct checked by [`NacosConfig::validate`]; the binary fills it from its
//! command line, tests build it directly. Durations are [`Duration`]s because they drive
//! Tokio timers; nothing here is replicated or compared across nodes.

use std::time::Duration;

/// Default delay that merges changes of one service into one push
/// (Nacos `nacos.naming.push.pushTaskDelay`).
pub const DEFAULT_PUSH_DELAY: Duration = Duration::from_millis(500);
/// Default time a subscriber has to acknowledge a push (Nacos `pushTaskTimeout`).
pub const DEFAULT_PUSH_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default delay before an unacknowledged push is retried (Nacos `pushTaskRetryDelay`).
pub const DEFAULT_PUSH_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Default idle time after which a connection is probed with a `ClientDetectionRequest`
/// (Nacos `RuntimeConnectionEjector.KEEP_ALIVE_TIME`).
pub const DEFAULT_DETECTION_IDLE: Duration = Duration::from_secs(20);
/// Default time a probed connection has to answer before it is dropped.
pub const DEFAULT_DETECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Default period of the idle-connection scan (Nacos's connection ejector runs every 3 s).
pub const DEFAULT_DETECTION_INTERVAL: Duration = Duration::from_secs(3);
/// Default time a connection may stay half set up (a `ServerCheckRequest` but no
/// `ConnectionSetupRequest` on a stream) before it is forgotten.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most SDK connections (set up or in the middle of setting up) per node.
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
/// Default largest inbound gRPC message (Nacos
/// `nacos.remote.server.grpc.sdk.max-inbound-message-size`, 10 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// Default most services one connection may subscribe to.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 10_000;
/// Default most server→client messages queued on one connection; a push that finds the
/// queue full counts as failed and is retried.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1_024;
/// Default number of pushes in a row a connection may leave unacknowledged (not acked in
/// time, or not even queued because it stopped reading) before it is closed. At the
/// default ack timeout and retry delay that is about a minute without a single ack.
pub const DEFAULT_MAX_PUSH_FAILURES: u32 = 10;
/// `ServiceInfo.cacheMillis` sent to clients (Nacos `SwitchDomain.defaultPushCacheMillis`).
pub const DEFAULT_CACHE_MILLIS: u64 = 10_000;

/// Settings of [`crate::nacos::NacosFrontend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NacosConfig {
    /// Changes of one service within this delay are merged into one push (0: push at once).
    pub push_delay: Duration,
    /// A push not acknowledged within this time is retried.
    pub push_ack_timeout: Duration,
    /// Delay before retrying a failed push.
    pub push_retry_delay: Duration,
    /// Idle time after which a connection is probed.
    pub detection_idle: Duration,
    /// Time a probed connection has to answer.
    pub detection_timeout: Duration,
    /// Period of the idle-connection scan.
    pub detection_interval: Duration,
    /// Time a half set-up connection is kept.
    pub setup_timeout: Duration,
    /// Most connections; further clients are refused with a clear error.
    pub max_connections: usize,
    /// Largest inbound gRPC message in bytes.
    pub max_message_bytes: usize,
    /// Most subscriptions per connection.
    pub max_subscriptions_per_connection: usize,
    /// Most queued server→client messages per connection.
    pub outbound_queue: usize,
    /// Pushes in a row left unacknowledged after which the connection is closed (its SDK
    /// reconnects and subscribes again; a client that stopped reading its stream goes).
    pub max_push_failures: u32,
    /// `cacheMillis` of every `ServiceInfo`.
    pub cache_millis: u64,
    /// Authentication and authorization of requests (`None`: off). [`crate::server::start`]
    /// sets it from [`crate::ServerConfig::auth`].
    pub auth: Option<std::sync::Arc<crate::auth::Auth>>,
}

impl Default for NacosConfig {
    fn default() -> Self {
        Self {
            push_delay: DEFAULT_PUSH_DELAY,
            push_ack_timeout: DEFAULT_PUSH_ACK_TIMEOUT,
            push_retry_delay: DEFAULT_PUSH_RETRY_DELAY,
            detection_idle: DEFAULT_DETECTION_IDLE,
            detection_timeout: DEFAULT_DETECTION_TIMEOUT,
            detection_interval: DEFAULT_DETECTION_INTERVAL,
            setup_timeout: DEFAULT_SETUP_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            max_push_failures: DEFAULT_MAX_PUSH_FAILURES,
            cache_millis: DEFAULT_CACHE_MILLIS,
            auth: None,
        }
    }
}

/// A setting of [`NacosConfig`] that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Nacos front-end setting {setting}: {reason}")]
pub struct NacosConfigError {
    /// The setting's name (the field of [`NacosConfig`]).
    pub setting: &'static str,
    /// Why it was refused.
    pub reason: String,
}

impl NacosConfig {
    /// Checks every setting; the first bad one is reported.
    pub fn validate(&self) -> Result<(), NacosConfigError> {
        let positive = [
            ("push_ack_timeout", self.push_ack_timeout),
            ("push_retry_delay", self.push_retry_delay),
            ("detection_idle", self.detection_idle),
            ("detection_timeout", self.detection_timeout),
            ("detection_interval", self.detection_interval),
            ("setup_timeout", self.setup_timeout),
        ];
        for (setting, d) in positive {
            if d.is_zero() {
                return Err(NacosConfigError {
                    setting,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        let counts = [
            ("max_connections", self.max_connections),
            (
                "max_subscriptions_per_connection",
                self.max_subscriptions_per_connection,
            ),
            ("outbound_queue", self.outbound_queue),
            ("max_push_failures", self.max_push_failures as usize),
        ];
        for (setting, n) in counts {
            if n == 0 {
                return Err(NacosConfigError {
                    setting,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if self.max_message_bytes < 4096 {
            return Err(NacosConfigError {
                setting: "max_message_bytes",
                reason: format!(
                    "{} bytes is too small for a Nacos request, use at least 4096",
                    self.max_message_bytes
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_setting() {
        assert_eq!(NacosConfig::default().validate(), Ok(()));
        let zero_delay = NacosConfig {
            push_delay: Duration::ZERO,
            ..NacosConfig::default()
        };
        assert_eq!(
            zero_delay.validate(),
            Ok(()),
            "a zero push delay is allowed"
        );
        let bad = NacosConfig {
            push_ack_timeout: Duration::ZERO,
            ..NacosConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().setting, "push_ack_timeout");
        let bad = NacosConfig {
            max_connections: 0,
            ..NacosConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().setting, "max_connections");
        let bad = NacosConfig {
            max_message_bytes: 10,
            ..NacosConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().setting, "max_message_bytes");
    }
}
