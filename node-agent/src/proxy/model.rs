//! What the proxy serves, from the Services and EndpointSlices the node
//! holds: one [`ServicePort`] per port of each Service that has a virtual
//! address or a node port, with its ready endpoints.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// ClientIP affinity's timeout when the Service does not say.
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// On this node.
    pub local: bool,
}

/// One port of one Service, as the proxy programs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name ("" for an unnamed one).
    pub port_name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// The virtual address (None for a headless or ExternalName Service).
    pub cluster_ip: Option<Ipv4Addr>,
    /// externalIPs and LoadBalancer ingress addresses.
    pub external_ips: Vec<Ipv4Addr>,
    pub node_port: Option<u16>,
    /// ClientIP affinity's timeout in seconds (None: no affinity).
    pub affinity: Option<u32>,
    /// externalTrafficPolicy Local: outside traffic keeps its source
    /// address and goes only to this node's endpoints.
    pub local_external: bool,
    /// Ready endpoints, sorted.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// A stable name for this port, safe in nftables names.
    pub fn id(&self) -> String {
        let port = if self.port_name.is_empty() {
            format!("p{}", self.port)
        } else {
            self.port_name.clone()
        };
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.nft(),
            port
        )
    }
}

/// The namespace and name of the Service an EndpointSlice belongs to.
pub fn service_of(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((slice.metadata.namespace.as_deref().unwrap_or(""), svc))
}

fn service_port_name_of(p: &k8s_openapi::api::core::v1::ServicePort) -> String {
    p.name.clone().unwrap_or_default()
}

/// Build every ServicePort from the node's Services and EndpointSlices.
/// `node` is this node's name (for the endpoints that are local).
pub fn build<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
    services: &[S],
    slices: &[E],
    node: &str,
) -> Vec<ServicePort> {
    // (namespace, service, port name, protocol) -> endpoints
    type PortKey = (String, String, String, Protocol);
    let mut endpoints: BTreeMap<PortKey, BTreeSet<Endpoint>> = BTreeMap::new();
    for s in slices {
        let s = s.borrow();
        if s.address_type != "IPv4" {
            continue;
        }
        let Some((ns, svc)) = service_of(s) else {
            continue;
        };
        for p in s.ports.iter().flatten() {
            let (Some(proto), Some(port)) = (
                Protocol::parse(p.protocol.as_deref()),
                p.port.and_then(|p| u16::try_from(p).ok()),
            ) else {
                continue;
            };
            let key = (
                ns.to_string(),
                svc.to_string(),
                p.name.clone().unwrap_or_default(),
                proto,
            );
            let set = endpoints.entry(key).or_default();
            for e in &s.endpoints {
                // Only ready endpoints get traffic (a missing condition is ready).
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                if !ready || terminating {
                    continue;
                }
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<Ipv4Addr>() {
                        set.insert(Endpoint {
                            ip,
                            port,
                            local: e.node_name.as_deref() == Some(node),
                        });
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let svc = svc.borrow();
        let Some(spec) = &svc.spec else { continue };
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind == "ExternalName" {
            continue;
        }
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if kind == "LoadBalancer" {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref());
            external_ips.extend(
                ingress
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
            );
        }
        external_ips.sort();
        external_ips.dedup();
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let local_external = spec.external_traffic_policy.as_deref() == Some("Local");
        for p in spec.ports.iter().flatten() {
            let (Some(protocol), Ok(port)) = (
                Protocol::parse(p.protocol.as_deref()),
                u16::try_from(p.port),
            ) else {
                continue;
            };
            let node_port = if matches!(kind, "NodePort" | "LoadBalancer") {
                p.node_port.and_then(|n| u16::try_from(n).ok())
            } else {
                None
            };
            if cluster_ip.is_none() && node_port.is_none() && external_ips.is_empty() {
                continue; // headless: DNS only
            }
            let port_name = service_port_name_of(p);
            let key = (ns.clone(), name.clone(), port_name.clone(), protocol);
            out.push(ServicePort {
                namespace: ns.clone(),
                name: name.clone(),
                port_name,
                protocol,
                port,
                cluster_ip,
                external_ips: external_ips.clone(),
                node_port,
                affinity,
                local_external,
                endpoints: endpoints
                    .get(&key)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ready_endpoints_of_each_port_and_nothing_for_headless_or_external_names() {
        let services = vec![
            svc(json!({
                "metadata": {"name": "web", "namespace": "d"},
                "spec": {"clusterIP": "10.96.0.20", "type": "NodePort",
                         "sessionAffinity": "ClientIP",
                         "externalTrafficPolicy": "Local",
                         "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}
            })),
            svc(json!({
                "metadata": {"name": "db", "namespace": "d"},
                "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
            })),
            svc(json!({
                "metadata": {"name": "ext", "namespace": "d"},
                "spec": {"type": "ExternalName", "externalName": "example.org"}
            })),
        ];
        let slices: Vec<EndpointSlice> = vec![serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "d",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "n1"},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": true}, "nodeName": "n2"},
                {"addresses": ["10.244.2.8"], "conditions": {"ready": false}, "nodeName": "n2"},
            ]
        }))
        .unwrap()];
        let ports = build(&services, &slices, "n1");
        assert_eq!(ports.len(), 1);
        let p = &ports[0];
        assert_eq!(p.id(), "d/web/tcp/http");
        assert_eq!(p.cluster_ip, Some("10.96.0.20".parse().unwrap()));
        assert_eq!(p.node_port, Some(30080));
        assert_eq!(p.affinity, Some(DEFAULT_AFFINITY_SECONDS));
        assert!(p.local_external);
        let eps: Vec<(String, u16, bool)> = p
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.port, e.local))
            .collect();
        assert_eq!(
            eps,
            [
                ("10.244.1.5".to_string(), 8080, true),
                ("10.244.2.7".to_string(), 8080, false)
            ]
        );
    }
}
