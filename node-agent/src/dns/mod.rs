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
//!
//! - [`zone`]: the zone and how a name resolves in it;
//! - [`forward`]: queries for other names, over a few upstream sockets
//!   reused for every query;
//! - [`serve`]: UDP and TCP, with a bound on the queries and connections
//!   in flight, so that a flood or idle clients cannot exhaust the agent.

pub mod forward;
pub mod serve;
mod zone;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio_util::sync::CancellationToken;

use crate::desired::{Desired, Typed};
use crate::network::PodNetwork;
pub use serve::serve;
use zone::{resolve, Answer, Zone};

#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster domain (cluster.local).
    pub domain: String,
    /// Where names outside the domain go.
    pub upstream: Vec<SocketAddr>,
}

/// What the server holds at most, and how long it waits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// UDP queries being answered at once; more are answered SERVFAIL at
    /// once (the client tries again) rather than queued.
    pub udp_in_flight: usize,
    /// TCP connections open at once; more are closed as they arrive.
    pub tcp_connections: usize,
    /// How long a TCP connection may wait for its next query (or take to
    /// send one, or to read an answer) before it is closed.
    pub tcp_idle: Duration,
    /// How long to wait for an upstream's answer before trying the next.
    pub upstream_timeout: Duration,
    /// Sockets per upstream, each carrying many queries at once.
    pub upstream_sockets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Far above what a node's pods ask at once (a lookup takes
            // well under a millisecond, a forwarded one a few), far below
            // what would strain the agent: a task and 64 KiB at most each.
            udp_in_flight: 256,
            tcp_connections: 64,
            // RFC 7766 asks servers to keep idle connections for seconds,
            // not minutes; CoreDNS closes them after 10.
            tcp_idle: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(2),
            upstream_sockets: 4,
        }
    }
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

/// The server: its zone, rebuilt when the node's Services or
/// EndpointSlices change.
pub struct Server {
    settings: Settings,
    limits: Limits,
    desired: Arc<Desired>,
    zone: Mutex<Cached>,
    forwarder: forward::Forwarder,
}

/// The zone, and the objects it was built from, decoded.
struct Cached {
    zone: Arc<Zone>,
    services: Typed<Service>,
    slices: Typed<EndpointSlice>,
}

impl Server {
    pub fn new(settings: Settings, desired: Arc<Desired>) -> Arc<Server> {
        Server::with_limits(settings, Limits::default(), desired)
    }

    pub fn with_limits(settings: Settings, limits: Limits, desired: Arc<Desired>) -> Arc<Server> {
        Arc::new(Server {
            forwarder: forward::Forwarder::new(
                settings.upstream.clone(),
                limits.upstream_sockets,
                limits.upstream_timeout,
            ),
            settings,
            limits,
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
            Answer::Forward => match self.forwarder.forward(query, request.queries()).await {
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
}

/// A SERVFAIL answer to `query`, for one shed unanswered.
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::ServFail);
    for q in request.queries() {
        response.add_query(q.clone());
    }
    response.to_vec().ok()
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
                Ok(_) => tracing::info!(%addr, "cluster DNS serving"),
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

/// Help text and units of the cluster DNS's series.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "skiff_dns_queries_total",
        Unit::Count,
        "DNS queries answered, by query type and result."
    );
    describe_histogram!(
        "skiff_dns_query_duration_seconds",
        Unit::Seconds,
        "Time to answer a DNS query (forwarded ones included)."
    );
    describe_counter!(
        "skiff_dns_shed_total",
        Unit::Count,
        "DNS queries or connections refused because too many were in flight, by transport."
    );
    describe_gauge!(
        "skiff_dns_tcp_connections",
        Unit::Count,
        "DNS connections open over TCP."
    );
    describe_counter!(
        "skiff_dns_upstream_timeouts_total",
        Unit::Count,
        "Forwarded queries the upstream server did not answer in time."
    );
    describe_counter!(
        "skiff_dns_upstream_sockets_opened_total",
        Unit::Count,
        "Sockets opened to upstream DNS servers."
    );
}
