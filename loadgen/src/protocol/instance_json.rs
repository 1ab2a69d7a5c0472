//! An instance as JSON, in Nacos's field names: the value of an etcd key and the data of a
//! ZooKeeper znode (`--protocol etcd`, `--protocol zookeeper`).

use std::net::SocketAddrV4;

use super::nacos::DEFAULT_GROUP;

/// The instance of `service` at `addr` as JSON.
pub fn instance_json(service: &str, addr: SocketAddrV4) -> String {
    format!(
        "{{\"ip\":\"{}\",\"port\":{},\"weight\":1.0,\"healthy\":true,\"enabled\":true,\
         \"ephemeral\":true,\"clusterName\":\"DEFAULT\",\"serviceName\":\"{DEFAULT_GROUP}@@{service}\",\
         \"metadata\":{{}}}}",
        addr.ip(),
        addr.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn is_json_with_the_address() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 8080);
        let v: serde_json::Value =
            serde_json::from_str(&instance_json("svc-1", a)).expect("the value is JSON");
        assert_eq!(v["ip"], "10.1.2.3");
        assert_eq!(v["port"], 8080);
        assert_eq!(v["serviceName"], "DEFAULT_GROUP@@svc-1");
    }
}
