//! A service as Nacos clients see it: the `ServiceInfo` JSON of queries, subscriptions and
//! pushes (reference §3 and §4.7).
//!
//! Selection is Nacos's `selectInstancesWithHealthyProtection` without the protect
//! threshold (Distro services carry no service metadata): filter by the requested clusters,
//! drop disabled instances, optionally keep only healthy ones. The instance JSON carries
//! everything the Java `Instance` getters emit: the default id
//! `ip#port#cluster#group@@service`, the grouped `serviceName`, the three heartbeat timings
//! (metadata may override them), and `instanceIdGenerator` only when the metadata is empty
//! or names one. `name` is the plain service name, as in gRPC replies.

use distro_core::ServiceView;
use distro_core::model::{
    Instance, META_DELETE_TIMEOUT, META_HEARTBEAT_INTERVAL, META_HEARTBEAT_TIMEOUT, Metadata,
};
use serde::{Serialize, Serializer};
use std::collections::hash_map::Entry;

/// Metadata key naming the instance id generator (Nacos `PreservedMetadataKeys`).
const META_ID_GENERATOR: &str = "preserved.instance.id.generator";
/// Nacos's default id generator name.
const DEFAULT_ID_GENERATOR: &str = "simple";

/// Heartbeat timings reported for instances whose metadata does not override them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    pub(crate) heartbeat_interval: u64,
    pub(crate) heartbeat_timeout: u64,
    pub(crate) delete_timeout: u64,
}

impl Timings {
    /// The timings of a core configuration.
    pub(crate) fn of(config: &distro_core::Config) -> Self {
        Self {
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            delete_timeout: config.delete_timeout,
        }
    }
}

/// What a reader asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Selection<'a> {
    /// Service group.
    pub(crate) group: &'a str,
    /// Plain service name.
    pub(crate) name: &'a str,
    /// `group@@name`.
    pub(crate) grouped: &'a str,
    /// The requested clusters, comma-separated, echoed in `clusters` ("" for all).
    pub(crate) clusters: &'a str,
    /// Only healthy instances.
    pub(crate) healthy_only: bool,
}

/// `ServiceInfo`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceInfo<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    last_ref_time: u64,
    checksum: &'static str,
    #[serde(rename = "allIPs")]
    all_ips: bool,
    reach_protection_threshold: bool,
    valid: bool,
}

/// The fields of `ServiceInfo` before `lastRefTime`: everything but the per-answer stamp,
/// the part the answer cache keeps (`crate::answers`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    name: &'a str,
    group_name: &'a str,
    clusters: &'a str,
    cache_millis: u64,
    hosts: Vec<Host<'a>>,
}

impl ServiceInfo<'_> {
    /// Number of hosts.
    #[cfg(test)]
    pub(crate) fn host_count(&self) -> usize {
        self.head.hosts.len()
    }
}

/// The `ServiceInfo` JSON of `view` for `sel` without its closing part: `{"name":…,
/// "hosts":[…]` (no closing brace). [`finish_service_info`] completes it with a
/// `lastRefTime`; the two give exactly the JSON of [`service_info`].
pub(crate) fn service_info_head(
    view: Option<&ServiceView>,
    sel: Selection<'_>,
    cache_millis: u64,
    timings: Timings,
) -> Vec<u8> {
    let info = service_info(view, sel, 0, cache_millis, timings);
    let mut v = serde_json::to_vec(&info.head).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot serialize a ServiceInfo");
        b"{\"hosts\":[]}".to_vec()
    });
    v.pop(); // the closing brace
    v
}

/// Appends the `ServiceInfo` of `head` (from [`service_info_head`]) stamped
/// `last_ref_time` to `out`.
pub(crate) fn finish_service_info(head: &[u8], last_ref_time: u64, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.extend_from_slice(head);
    let _ = write!(
        out,
        ",\"lastRefTime\":{last_ref_time},\"checksum\":\"\",\"allIPs\":false,\
         \"reachProtectionThreshold\":false,\"valid\":true}}"
    );
}

/// One instance of `ServiceInfo.hosts`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Host<'a> {
    instance_id: String,
    ip: &'a str,
    port: u16,
    weight: f64,
    healthy: bool,
    enabled: bool,
    ephemeral: bool,
    cluster_name: &'a str,
    service_name: &'a str,
    metadata: MetadataJson<'a>,
    instance_heart_beat_interval: u64,
    instance_heart_beat_time_out: u64,
    ip_delete_timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id_generator: Option<&'a str>,
}

struct MetadataJson<'a>(&'a Metadata);

impl Serialize for MetadataJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

/// Builds the `ServiceInfo` of `view` (`None`: the service has no instances) for `sel`.
pub(crate) fn service_info<'a>(
    view: Option<&'a ServiceView>,
    sel: Selection<'a>,
    last_ref_time: u64,
    cache_millis: u64,
    timings: Timings,
) -> ServiceInfo<'a> {
    let clusters: Vec<&str> = cluster_list(sel.clusters);
    let hosts = match view {
        None => Vec::new(),
        Some(view) => hosts(view, &sel, &clusters, timings),
    };
    ServiceInfo {
        head: Head {
            name: sel.name,
            group_name: sel.group,
            clusters: sel.clusters,
            cache_millis,
            hosts,
        },
        last_ref_time,
        checksum: "",
        all_ips: false,
        reach_protection_threshold: false,
        valid: true,
    }
}

/// The hosts of `view` that `sel` selects: the same selection as `ServiceView::instances`
/// with `enabled_only`, and instances listed once. Two clients may publish identical
/// instances: an SDK whose node died registers again through another node, and the dead
/// connection's copy stays on the other nodes until its lease expires or the redo is seen
/// (core's supersession). Nacos builds its list as a set, so identical instances collapse;
/// so do they here (different instances at one address are both listed, as in Nacos).
fn hosts<'a>(
    view: &'a ServiceView,
    sel: &Selection<'a>,
    clusters: &[&str],
    timings: Timings,
) -> Vec<Host<'a>> {
    let mut hosts = Vec::with_capacity(view.instance_count());
    // Only several publications can repeat an instance.
    let mut first: Option<foldhash::HashMap<(&str, u16), &Instance>> =
        (view.publications.len() > 1).then(|| {
            foldhash::HashMap::with_capacity_and_hasher(view.instance_count(), Default::default())
        });
    for i in view.publications.iter().flat_map(|p| p.instances.iter()) {
        let selected = i.enabled
            && (!sel.healthy_only || i.healthy)
            && (clusters.is_empty() || clusters.contains(&i.cluster.as_str()));
        if !selected {
            continue;
        }
        if let Some(first) = first.as_mut() {
            match first.entry((i.ip.as_str(), i.port)) {
                Entry::Vacant(e) => {
                    e.insert(i);
                }
                Entry::Occupied(e) if *e.get() == i => continue,
                Entry::Occupied(_) => {}
            }
        }
        hosts.push(host(i, view, sel.grouped, timings));
    }
    hosts
}

/// The non-empty, trimmed names of a comma-separated cluster list.
pub(crate) fn cluster_list(s: &str) -> Vec<&str> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

fn host<'a>(i: &'a Instance, view: &'a ServiceView, grouped: &'a str, t: Timings) -> Host<'a> {
    let m = &i.metadata;
    Host {
        instance_id: i.instance_id(&view.service),
        ip: &i.ip,
        port: i.port,
        weight: i.weight,
        healthy: i.healthy,
        enabled: i.enabled,
        ephemeral: true,
        cluster_name: i.cluster.as_str(),
        service_name: grouped,
        metadata: MetadataJson(m),
        instance_heart_beat_interval: m
            .millis(META_HEARTBEAT_INTERVAL)
            .unwrap_or(t.heartbeat_interval),
        instance_heart_beat_time_out: m
            .millis(META_HEARTBEAT_TIMEOUT)
            .unwrap_or(t.heartbeat_timeout),
        ip_delete_timeout: m.millis(META_DELETE_TIMEOUT).unwrap_or(t.delete_timeout),
        instance_id_generator: if m.is_empty() {
            Some(DEFAULT_ID_GENERATOR)
        } else {
            m.get(META_ID_GENERATOR)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distro_core::{ClientId, Config, InstanceSpec, MemberList, Node, ServiceSpec};
    use serde_json::json;

    fn node() -> Node {
        Node::new(
            Config::default(),
            MemberList::new("127.0.0.1:8848", &[]).unwrap(),
            1,
        )
        .unwrap()
    }

    fn sel<'a>(clusters: &'a str, healthy_only: bool) -> Selection<'a> {
        Selection {
            group: "DEFAULT_GROUP",
            name: "demo",
            grouped: "DEFAULT_GROUP@@demo",
            clusters,
            healthy_only,
        }
    }

    #[test]
    fn renders_every_field_as_nacos_does() {
        let n = node();
        let spec = ServiceSpec::new("", "", "demo");
        let c = ClientId::connection(1, "10.0.0.1", 1000);
        let mut a = InstanceSpec::new("10.0.0.7", 8080);
        a.metadata = vec![
            ("zone".into(), "a".into()),
            (META_HEARTBEAT_INTERVAL.into(), "7000".into()),
        ];
        n.register(&c, &spec, &a, 10).unwrap();
        let view = n.query(&spec).unwrap().unwrap();
        let t = Timings::of(n.config());
        let v =
            serde_json::to_value(service_info(Some(&view), sel("", false), 42, 10_000, t)).unwrap();
        assert_eq!(
            v,
            json!({"name":"demo","groupName":"DEFAULT_GROUP","clusters":"","cacheMillis":10000,
              "hosts":[{"instanceId":"10.0.0.7#8080#DEFAULT#DEFAULT_GROUP@@demo","ip":"10.0.0.7",
                "port":8080,"weight":1.0,"healthy":true,"enabled":true,"ephemeral":true,
                "clusterName":"DEFAULT","serviceName":"DEFAULT_GROUP@@demo",
                "metadata":{"preserved.heart.beat.interval":"7000","zone":"a"},
                "instanceHeartBeatInterval":7000,"instanceHeartBeatTimeOut":15000,
                "ipDeleteTimeout":30000}],
              "lastRefTime":42,"checksum":"","allIPs":false,"reachProtectionThreshold":false,
              "valid":true})
        );
        // Empty metadata: the "simple" generator is reported, as Java's getter does.
        let c2 = ClientId::connection(1, "10.0.0.1", 1001);
        n.register(&c2, &spec, &InstanceSpec::new("10.0.0.8", 1), 11)
            .unwrap();
        let view = n.query(&spec).unwrap().unwrap();
        let v = serde_json::to_value(service_info(Some(&view), sel("", false), 1, 1, t)).unwrap();
        assert_eq!(v["hosts"][1]["instanceIdGenerator"], "simple");
        assert_eq!(v["hosts"][1]["metadata"], json!({}));
    }

    #[test]
    fn head_and_finish_give_the_whole_service_info() {
        let n = node();
        let spec = ServiceSpec::new("", "", "demo");
        let mut a = InstanceSpec::new("10.0.0.7", 8080);
        a.metadata = vec![("zone".into(), "a\"b".into())];
        n.register(&ClientId::connection(1, "10.0.0.1", 1), &spec, &a, 1)
            .unwrap();
        let view = n.query(&spec).unwrap().unwrap();
        let t = Timings::of(n.config());
        for view in [Some(&view), None] {
            let whole = serde_json::to_vec(&service_info(view, sel("x", true), 77, 5, t)).unwrap();
            let mut split = Vec::new();
            finish_service_info(
                &service_info_head(view, sel("x", true), 5, t),
                77,
                &mut split,
            );
            assert_eq!(
                String::from_utf8(split).unwrap(),
                String::from_utf8(whole).unwrap()
            );
        }
    }

    #[test]
    fn identical_instances_of_two_clients_are_listed_once() {
        let n = node();
        let spec = ServiceSpec::new("", "", "demo");
        let mut a = InstanceSpec::new("10.0.0.7", 8080);
        a.metadata = vec![("zone".into(), "a".into())];
        // The dead connection's copy and the SDK's redo through another node.
        n.register(&ClientId::connection(1, "10.0.0.7", 1), &spec, &a, 1)
            .unwrap();
        n.register(&ClientId::connection(2, "10.0.0.7", 2), &spec, &a, 2)
            .unwrap();
        // The same address with other fields is another instance, listed too (as Nacos).
        let mut b = a;
        b.weight = 3.0;
        n.register(&ClientId::connection(3, "10.0.0.7", 3), &spec, &b, 3)
            .unwrap();
        let view = n.query(&spec).unwrap().unwrap();
        assert_eq!(view.instance_count(), 3);
        let t = Timings::of(n.config());
        let v = serde_json::to_value(service_info(Some(&view), sel("", false), 1, 1, t)).unwrap();
        let weights: Vec<f64> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["weight"].as_f64().unwrap())
            .collect();
        assert_eq!(weights, [1.0, 3.0], "{v}");
    }

    #[test]
    fn filters_clusters_health_and_disabled_instances() {
        let n = node();
        let spec = ServiceSpec::new("", "", "demo");
        let add = |port: u16, cluster: &str, healthy: bool, enabled: bool| {
            let mut i = InstanceSpec::new("10.0.0.1", port);
            i.cluster = cluster.into();
            i.healthy = healthy;
            i.enabled = enabled;
            let c = ClientId::connection(1, "10.0.0.1", port);
            n.register(&c, &spec, &i, 1).unwrap();
        };
        add(1, "a", true, true);
        add(2, "b", true, true);
        add(3, "a", false, true);
        add(4, "a", true, false);
        let view = n.query(&spec).unwrap().unwrap();
        let t = Timings::of(n.config());
        let count = |clusters: &str, healthy_only: bool| {
            service_info(Some(&view), sel(clusters, healthy_only), 1, 1, t).host_count()
        };
        assert_eq!(count("", false), 3, "the disabled instance is hidden");
        assert_eq!(count("a", false), 2);
        assert_eq!(count(" a , b ", false), 3);
        assert_eq!(count("a", true), 1);
        assert_eq!(count("c", false), 0);
        assert_eq!(service_info(None, sel("x", false), 1, 1, t).host_count(), 0);
    }
}
