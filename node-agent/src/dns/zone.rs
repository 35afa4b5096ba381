//! The zone the server answers from, built from the Services and
//! EndpointSlices the node holds, and how a name resolves in it.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::proxy::model::service_of;

/// Records' time to live (CoreDNS's kubernetes plugin default).
const TTL: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    ClusterIp(Ipv4Addr),
    Headless,
    ExternalName(String),
}

#[derive(Debug, Clone)]
struct SvcEntry {
    target: Target,
    /// (port name, protocol, port, endpoint port)
    ports: Vec<(String, String, u16)>,
    /// Ready endpoints: address and hostname.
    endpoints: Vec<(Ipv4Addr, Option<String>)>,
}

/// What the server answers from, built from the node's desired state.
#[derive(Default)]
pub(super) struct Zone {
    pub(super) generation: (u64, u64),
    services: BTreeMap<(String, String), SvcEntry>,
    /// Namespaces that hold at least one Service.
    namespaces: BTreeSet<String>,
}

impl Zone {
    pub(super) fn build<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
        services: &[S],
        slices: &[E],
        generation: (u64, u64),
    ) -> Zone {
        let mut zone = Zone {
            generation,
            ..Default::default()
        };
        for s in services {
            let s = s.borrow();
            let (Some(ns), Some(name), Some(spec)) =
                (&s.metadata.namespace, &s.metadata.name, &s.spec)
            else {
                continue;
            };
            let target = match spec.type_.as_deref() {
                Some("ExternalName") => {
                    Target::ExternalName(spec.external_name.clone().unwrap_or_default())
                }
                _ => match spec.cluster_ip.as_deref().map(str::parse::<Ipv4Addr>) {
                    Some(Ok(ip)) => Target::ClusterIp(ip),
                    _ => Target::Headless,
                },
            };
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.name.clone().filter(|n| !n.is_empty())?,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        u16::try_from(p.port).ok()?,
                    ))
                })
                .collect();
            zone.namespaces.insert(ns.clone());
            zone.services.insert(
                (ns.clone(), name.clone()),
                SvcEntry {
                    target,
                    ports,
                    endpoints: Vec::new(),
                },
            );
        }
        for slice in slices {
            let slice = slice.borrow();
            let Some((ns, svc)) = service_of(slice) else {
                continue;
            };
            let Some(entry) = zone.services.get_mut(&(ns.to_string(), svc.to_string())) else {
                continue;
            };
            for e in &slice.endpoints {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for a in &e.addresses {
                    if let Ok(ip) = a.parse() {
                        entry.endpoints.push((ip, e.hostname.clone()));
                    }
                }
            }
            entry.endpoints.sort();
            entry.endpoints.dedup();
        }
        zone
    }
}

/// One answer: its code and records.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    /// Authoritative, for a name under the cluster domain.
    Records(ResponseCode, Vec<Record>),
    /// Not ours: ask the node's resolver.
    Forward,
}

fn a(name: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))
}

pub(super) fn resolve(zone: &Zone, domain: &str, name: &Name, kind: RecordType) -> Answer {
    let text = name.to_lowercase().to_ascii();
    let text = text.trim_end_matches('.');
    let Some(rest) = text
        .strip_suffix(domain)
        .and_then(|r| r.strip_suffix('.').or((r.is_empty()).then_some(r)))
    else {
        return Answer::Forward;
    };
    let labels: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').collect()
    };
    let nodata = || Answer::Records(ResponseCode::NoError, Vec::new());
    let nx = || Answer::Records(ResponseCode::NXDomain, Vec::new());
    let records = |r: Vec<Record>| Answer::Records(ResponseCode::NoError, r);
    match labels.as_slice() {
        [] | ["svc"] | ["pod"] => nodata(),
        [ns, "svc"] | [ns, "pod"] => {
            if zone.namespaces.contains(*ns) {
                nodata()
            } else {
                nx()
            }
        }
        [svc, ns, "svc"] => {
            let Some(e) = zone.services.get(&(ns.to_string(), svc.to_string())) else {
                return nx();
            };
            match (&e.target, kind) {
                (Target::ExternalName(to), _) => match Name::from_ascii(format!("{to}.")) {
                    Ok(to) => records(vec![Record::from_rdata(
                        name.clone(),
                        TTL,
                        RData::CNAME(CNAME(to)),
                    )]),
                    Err(_) => nodata(),
                },
                (Target::ClusterIp(ip), RecordType::A) => records(vec![a(name, *ip)]),
                (Target::Headless, RecordType::A) => {
                    records(e.endpoints.iter().map(|(ip, _)| a(name, *ip)).collect())
                }
                _ => nodata(),
            }
        }
        [host, svc, ns, "svc"] if !host.starts_with('_') => {
            let Some(e) = zone.services.get(&(ns.to_string(), svc.to_string())) else {
                return nx();
            };
            let ips: Vec<Ipv4Addr> = e
                .endpoints
                .iter()
                .filter(|(ip, h)| {
                    h.as_deref() == Some(*host) || ip.to_string().replace('.', "-") == *host
                })
                .map(|(ip, _)| *ip)
                .collect();
            if ips.is_empty() {
                return nx();
            }
            match kind {
                RecordType::A => records(ips.iter().map(|ip| a(name, *ip)).collect()),
                _ => nodata(),
            }
        }
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            let Some(e) = zone.services.get(&(ns.to_string(), svc.to_string())) else {
                return nx();
            };
            let (port, proto) = (&port[1..], &proto[1..]);
            let Some((_, _, number)) = e
                .ports
                .iter()
                .find(|(n, p, _)| n == port && p.eq_ignore_ascii_case(proto))
            else {
                return nx();
            };
            if kind != RecordType::SRV {
                return nodata();
            }
            let svc_name = format!("{svc}.{ns}.svc.{domain}.");
            let targets: Vec<String> = match e.target {
                Target::Headless => e
                    .endpoints
                    .iter()
                    .map(|(ip, h)| {
                        let host = h
                            .clone()
                            .unwrap_or_else(|| ip.to_string().replace('.', "-"));
                        format!("{host}.{svc_name}")
                    })
                    .collect(),
                _ => vec![svc_name],
            };
            let weight = (100 / targets.len().max(1)) as u16;
            records(
                targets
                    .iter()
                    .filter_map(|t| Name::from_ascii(t).ok())
                    .map(|t| {
                        Record::from_rdata(
                            name.clone(),
                            TTL,
                            RData::SRV(SRV::new(0, weight, *number, t)),
                        )
                    })
                    .collect(),
            )
        }
        [ip, _ns, "pod"] => match ip.replace('-', ".").parse::<Ipv4Addr>() {
            Ok(addr) if kind == RecordType::A => records(vec![a(name, addr)]),
            Ok(_) => nodata(),
            Err(_) => nx(),
        },
        _ => nx(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "d"},
             "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
            {"metadata": {"name": "db", "namespace": "d"},
             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
            {"metadata": {"name": "out", "namespace": "d"},
             "spec": {"type": "ExternalName", "externalName": "example.org"}},
        ]))
        .unwrap();
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"name": "db", "namespace": "d", "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4",
             "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.6"], "hostname": "db-1", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.9"], "hostname": "db-2", "conditions": {"ready": false}},
             ]},
        ]))
        .unwrap();
        Zone::build(&services, &slices, (1, 1))
    }

    fn ask(name: &str, kind: RecordType) -> (ResponseCode, Vec<String>) {
        let n = Name::from_ascii(name).unwrap();
        match resolve(&zone(), "cluster.local", &n, kind) {
            Answer::Records(code, records) => (
                code,
                records
                    .iter()
                    .map(|r| r.data().map(|d| d.to_string()).unwrap_or_default())
                    .collect(),
            ),
            Answer::Forward => (ResponseCode::Refused, vec!["forward".into()]),
        }
    }

    #[test]
    fn service_names_resolve_as_the_dns_specification_lays_them_out() {
        assert_eq!(
            ask("web.d.svc.cluster.local.", RecordType::A),
            (ResponseCode::NoError, vec!["10.96.0.20".into()])
        );
        assert_eq!(
            ask("WEB.d.svc.cluster.local", RecordType::AAAA),
            (ResponseCode::NoError, vec![])
        );
        assert_eq!(
            ask("db.d.svc.cluster.local.", RecordType::A),
            (
                ResponseCode::NoError,
                vec!["10.244.1.5".into(), "10.244.2.6".into()]
            )
        );
        assert_eq!(
            ask("db-1.db.d.svc.cluster.local.", RecordType::A),
            (ResponseCode::NoError, vec!["10.244.2.6".into()])
        );
        assert_eq!(
            ask("db-2.db.d.svc.cluster.local.", RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask("out.d.svc.cluster.local.", RecordType::A),
            (ResponseCode::NoError, vec!["example.org.".into()])
        );
        let (code, srv) = ask("_http._tcp.web.d.svc.cluster.local.", RecordType::SRV);
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(srv, ["0 100 80 web.d.svc.cluster.local."]);
        let (_, srv) = ask("_pg._tcp.db.d.svc.cluster.local.", RecordType::SRV);
        assert_eq!(srv.len(), 2);
        assert!(srv[0].ends_with(" 5432 db-0.db.d.svc.cluster.local."));
        assert_eq!(
            ask("nope.d.svc.cluster.local.", RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask("10-244-1-5.d.pod.cluster.local.", RecordType::A),
            (ResponseCode::NoError, vec!["10.244.1.5".into()])
        );
        assert_eq!(
            ask("example.org.", RecordType::A),
            (ResponseCode::Refused, vec!["forward".into()])
        );
    }
}
