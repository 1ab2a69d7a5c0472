//! One unlabelled counter or gauge through `prometheus-client`'s encoder: the most common
//! families of the `/metrics` page, shared by the server's and the Nacos front end's
//! counters.

use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Encodes one unlabelled counter `name` (its samples are `name_total`).
pub(crate) fn encode_counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// Encodes one unlabelled gauge.
pub(crate) fn encode_gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: &impl EncodeGaugeValue,
) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(value)
}
