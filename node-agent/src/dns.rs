//! Cluster DNS, served by the agent on its node's pod bridge address (the
//! pods' gateway, which their resolv.conf names), over UDP and TCP.
//!
//! Names are answered from the Services and EndpointSlices the node holds,
//! as the Kubernetes DNS specification lays them out:
//! - `<svc>.<ns>.svc.<domain>`: A for a Service's cluster IP, or for each
//!   ready endpoint of a headless one; CNAME for an ExternalName;
//! - `<host>.<svc>.<ns>.svc.<domain>`: A for an endpoint with that hostname
//!   (StatefulSet pods, pods with a subdomain);
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV for a named port;
//! - `<a-b-c-d>.<ns>.pod.<domain>`: A for a pod address.
//!
//! A name under the domain that is none of these is NXDOMAIN; a name that
//! exists but has no record of the type asked (AAAA, say) is an empty
//! answer. Everything else goes to the node's own resolver.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::desired::{Desired, Typed};
use crate::network::PodNetwork;
use crate::proxy::model::service_of;

/// Records' time to live (CoreDNS's kubernetes plugin default).
const TTL: u32 = 5;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster domain (cluster.local).
    pub domain: String,
    /// Where names outside the domain go.
    pub upstream: Vec<SocketAddr>,
}

/// The node's resolvers, from /etc/resolv.conf.
pub fn system_upstream() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

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
struct Zone {
    generation: (u64, u64),
    services: BTreeMap<(String, String), SvcEntry>,
    /// Namespaces that hold at least one Service.
    namespaces: BTreeSet<String>,
}

impl Zone {
    fn build<S: Borrow<Service>, E: Borrow<EndpointSlice>>(
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
enum Answer {
    /// Authoritative, for a name under the cluster domain.
    Records(ResponseCode, Vec<Record>),
    /// Not ours: ask the node's resolver.
    Forward,
}

fn a(name: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))
}

fn resolve(zone: &Zone, domain: &str, name: &Name, kind: RecordType) -> Answer {
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

/// The server: its zone, rebuilt when the node's Services or
/// EndpointSlices change.
pub struct Server {
    settings: Settings,
    desired: Arc<Desired>,
    zone: Mutex<Cached>,
}

/// The zone, and the objects it was built from, decoded.
struct Cached {
    zone: Arc<Zone>,
    services: Typed<Service>,
    slices: Typed<EndpointSlice>,
}

impl Server {
    pub fn new(settings: Settings, desired: Arc<Desired>) -> Arc<Server> {
        Arc::new(Server {
            settings,
            desired,
            zone: Mutex::new(Cached {
                zone: Arc::new(Zone::default()),
                services: Typed::new("Service"),
                slices: Typed::new("EndpointSlice"),
            }),
        })
    }

    fn zone(&self) -> Arc<Zone> {
        let generation = (
            self.desired.generation("Service"),
            self.desired.generation("EndpointSlice"),
        );
        let mut cached = self.zone.lock().unwrap_or_else(|p| p.into_inner());
        if cached.zone.generation != generation || generation == (0, 0) {
            let services = cached.services.refresh(&self.desired);
            let slices = cached.slices.refresh(&self.desired);
            cached.zone = Arc::new(Zone::build(&services, &slices, generation));
        }
        cached.zone.clone()
    }

    /// Answer one query message (bytes in, bytes out).
    pub async fn handle(&self, query: &[u8]) -> Option<Vec<u8>> {
        let started = Instant::now();
        let request = Message::from_vec(query).ok()?;
        let mut response = Message::new();
        response
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(true);
        let Some(q) = request.queries().first().cloned() else {
            response.set_response_code(ResponseCode::FormErr);
            return response.to_vec().ok();
        };
        response.add_query(q.clone());
        let kind = q.query_type().to_string();
        if request.op_code() != OpCode::Query || request.message_type() != MessageType::Query {
            response.set_response_code(ResponseCode::NotImp);
            record(&kind, "notimp", started);
            return response.to_vec().ok();
        }
        let domain = self
            .settings
            .domain
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let zone = self.zone();
        match resolve(&zone, &domain, q.name(), q.query_type()) {
            Answer::Records(code, mut answers) => {
                // A CNAME into the cluster domain comes with what it names.
                let target = answers.iter().find_map(|r| match r.data() {
                    Some(RData::CNAME(c)) if q.query_type() != RecordType::CNAME => {
                        Some(c.0.clone())
                    }
                    _ => None,
                });
                if let Some(target) = target {
                    if let Answer::Records(_, more) =
                        resolve(&zone, &domain, &target, q.query_type())
                    {
                        answers.extend(more);
                    }
                }
                response.set_authoritative(true);
                response.set_response_code(code);
                for r in answers {
                    response.add_answer(r);
                }
                let result = match code {
                    ResponseCode::NXDomain => "nxdomain",
                    _ => "success",
                };
                record(&kind, result, started);
                response.to_vec().ok()
            }
            Answer::Forward => match self.forward(query).await {
                Some(bytes) => {
                    record(&kind, "forwarded", started);
                    Some(bytes)
                }
                None => {
                    response.set_response_code(ResponseCode::ServFail);
                    record(&kind, "servfail", started);
                    response.to_vec().ok()
                }
            },
        }
    }

    async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.settings.upstream {
            let bind: SocketAddr = if upstream.is_ipv4() {
                "0.0.0.0:0".parse().ok()?
            } else {
                "[::]:0".parse().ok()?
            };
            let Ok(sock) = UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.connect(upstream).await.is_err() || sock.send(query).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            if let Ok(Ok(n)) = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf)).await {
                buf.truncate(n);
                return Some(buf);
            }
        }
        None
    }
}

fn record(kind: &str, result: &'static str, started: Instant) {
    metrics::counter!("skiff_dns_queries_total", "type" => kind.to_string(), "result" => result)
        .increment(1);
    metrics::histogram!("skiff_dns_query_duration_seconds").record(started.elapsed().as_secs_f64());
}

/// Serve on the pod network's gateway, port `port`, once the network is
/// ready (and again on a new gateway if the podCIDR changes).
pub async fn run(server: Arc<Server>, net: Arc<PodNetwork>, port: u16, stop: CancellationToken) {
    let mut attachments = net.subscribe();
    loop {
        let gateway = attachments.borrow_and_update().as_ref().map(|a| a.gateway);
        let serving = CancellationToken::new();
        let mut failed = false;
        if let Some(ip) = gateway {
            let addr = SocketAddr::from((ip, port));
            match serve(server.clone(), addr, serving.clone()).await {
                Ok(()) => tracing::info!(%addr, "cluster DNS serving"),
                Err(e) => {
                    tracing::warn!(%addr, "cluster DNS cannot listen (trying again): {e}");
                    failed = true;
                }
            }
        }
        let retry = async {
            if failed {
                tokio::time::sleep(Duration::from_secs(1)).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = stop.cancelled() => { serving.cancel(); return }
            _ = retry => {}
            r = attachments.changed() => {
                serving.cancel();
                if r.is_err() { return }
            }
        }
    }
}

/// Serve `server` on `addr`, UDP and TCP, until `stop`.
pub async fn serve(
    server: Arc<Server>,
    addr: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let udp = UdpSocket::bind(addr).await?;
    let tcp = TcpListener::bind(addr).await?;
    tokio::spawn(serve_udp(server.clone(), udp, stop.clone()));
    tokio::spawn(serve_tcp(server, tcp, stop));
    Ok(())
}

async fn serve_udp(server: Arc<Server>, sock: UdpSocket, stop: CancellationToken) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => { tracing::debug!("dns recv: {e}"); continue }
            },
        };
        let query = buf[..n].to_vec();
        let (server, sock) = (server.clone(), sock.clone());
        tokio::spawn(async move {
            if let Some(mut reply) = server.handle(&query).await {
                // Too long for UDP: truncated, the client asks over TCP.
                if reply.len() > 512 {
                    if let Ok(mut m) = Message::from_vec(&reply) {
                        m.take_answers();
                        m.set_truncated(true);
                        reply = m.to_vec().unwrap_or_default();
                    }
                }
                let _ = sock.send_to(&reply, from).await;
            }
        });
    }
}

async fn serve_tcp(server: Arc<Server>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let (mut conn, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let server = server.clone();
        tokio::spawn(async move {
            loop {
                let len = match conn.read_u16().await {
                    Ok(l) => l as usize,
                    Err(_) => return,
                };
                let mut query = vec![0u8; len];
                if conn.read_exact(&mut query).await.is_err() {
                    return;
                }
                let Some(reply) = server.handle(&query).await else {
                    return;
                };
                let Ok(len) = u16::try_from(reply.len()) else {
                    return;
                };
                if conn.write_u16(len).await.is_err() || conn.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
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
