//! The agent gateway: node agents connect to any master over QUIC (mutual
//! TLS under the cluster CA) and this is where they land.
//!
//! - [`join`]: the cluster CA for a joiner to pin, and a node certificate
//!   for a bootstrap token and a CSR (or, renewed, for the node's own
//!   certificate).
//! - [`session`]: the control stream of a connected node: its desired state
//!   out ([`desired`], one watch for all nodes), its reports in
//!   ([`reports`]).
//! - [`masters`]: where every master's gateway is, so that an agent can
//!   fail over to any of them.
//! - [`membership`]: a node is a member while its Node exists, and its
//!   certificate works only for the Node it was issued for; a deleted
//!   node's connections are closed at once.
//! - [`streams`]: streams this master opens to nodes (logs, exec, attach).
//! - [`tokens`]: service account tokens for the pods of a node.
//!
//! Each stream the agent opens starts with an `AgentRequest` frame
//! ([`proto::agent::frame`]); a stream that does not is reset, and the
//! connection and every other stream go on.

pub mod desired;
pub mod join;
pub mod masters;
pub mod membership;
pub mod node_graph;
pub mod reports;
pub mod session;
pub mod streams;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::agent::{agent_request, close, frame, AgentRequest, CaResponse};
use quinn::{RecvStream, SendStream};

use crate::api::Api;
use crate::pki::{Ca, Identity};

/// The first frame of a node's stream is small (a Hello lists what the
/// node holds); only the control stream's later frames (pod reports of a
/// full node) grow. A peer that is not a node (a joiner) may ask only for
/// the CA or a certificate, and gets [`frame::MAX_UNAUTHENTICATED`].
const MAX_REQUEST: usize = 1 << 20;

/// How a master serves its agents.
#[derive(Clone)]
pub struct Settings {
    /// This master's name.
    pub master: String,
    /// Where agents reach this master's gateway (host:port).
    pub advertise: String,
    /// Where Prometheus reaches this master's `/metrics` (a URL), listed
    /// by the service discovery every master serves.
    pub metrics_url: Option<String>,
    /// How long a node certificate is valid; agents renew at two thirds.
    pub node_cert_validity: Duration,
    /// The largest frame accepted from an agent.
    pub max_frame: usize,
}

pub struct Gateway {
    pub api: Api,
    pub ca: Arc<Ca>,
    pub settings: Settings,
    pub desired: Arc<desired::Desired>,
    pub connections: Arc<streams::NodeConnections>,
}

/// QUIC transport for both ends: keep-alives, and a peer silent for this
/// long is gone (an agent then fails over to another master).
pub fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(3)).expect("3 s fits an idle timeout"),
    ));
    Arc::new(t)
}

/// Bind the gateway's UDP socket.
pub fn endpoint(tls: rustls::ServerConfig, listen: SocketAddr) -> anyhow::Result<quinn::Endpoint> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .context("TLS configuration unusable for QUIC")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    quinn::Endpoint::server(config, listen)
        .with_context(|| format!("binding the agent address {listen} (UDP)"))
}

/// Serve agents on `endpoint` until `shutdown` resolves.
pub async fn serve(
    gateway: Arc<Gateway>,
    endpoint: quinn::Endpoint,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::spawn(gateway.desired.clone().run(gateway.api.clone()));
    let membership = Arc::new(membership::Membership::new(
        gateway.api.clone(),
        gateway.connections.clone(),
    ));
    tokio::spawn(membership.clone().run());
    tokio::spawn(masters::register(
        gateway.api.clone(),
        gateway.settings.master.clone(),
        gateway.settings.advertise.clone(),
        gateway.settings.metrics_url.clone(),
    ));
    tokio::pin!(shutdown);
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = &mut shutdown => break,
        };
        tokio::spawn(connection(gateway.clone(), membership.clone(), incoming));
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"master stopping");
}

async fn connection(
    gateway: Arc<Gateway>,
    membership: Arc<membership::Membership>,
    incoming: quinn::Incoming,
) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!("agent handshake failed: {e}");
            metrics::counter!("skiff_agent_handshake_failures_total").increment(1);
            return;
        }
    };
    let cert = conn
        .peer_identity()
        .and_then(|a| {
            a.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().cloned());
    let who = cert.as_ref().and_then(|c| crate::pki::identity_of(c));
    let node = who.as_ref().and_then(|w| w.node_name()).map(str::to_string);
    let node_uid = cert
        .as_ref()
        .and_then(|c| crate::pki::node_cert::node_uid_of(c));
    if let Some(node) = &node {
        // Listed before it is checked: a deletion from now on closes it.
        gateway
            .connections
            .add(node, conn.clone(), node_uid.clone());
        let refused = match membership.check(node, node_uid.as_deref()).await {
            membership::Verdict::Member(_) => None,
            membership::Verdict::NotMember(why) => Some((close::NOT_A_MEMBER, why)),
            membership::Verdict::CannotCheck(why) => Some((
                close::CANNOT_CHECK,
                format!("this master cannot check the node's membership now: {why}"),
            )),
        };
        if let Some((code, why)) = refused {
            tracing::info!(%node, reason = %why, "agent connection refused");
            metrics::counter!("skiff_agent_connections_refused_total").increment(1);
            conn.close(code.into(), why.as_bytes());
            gateway.connections.remove(node, &conn);
            return;
        }
    }
    while let Ok((send, recv)) = conn.accept_bi().await {
        let peer = Peer {
            who: who.clone(),
            node_uid: node_uid.clone(),
        };
        let (gateway, membership) = (gateway.clone(), membership.clone());
        tokio::spawn(stream(gateway, membership, peer, send, recv));
    }
    if let Some(node) = &node {
        gateway.connections.remove(node, &conn);
    }
}

/// Who is on the other end of a connection: the identity in its client
/// certificate (None: a joiner without one) and, for a node, the uid of
/// the Node its certificate was issued for.
#[derive(Clone)]
struct Peer {
    who: Option<Identity>,
    node_uid: Option<String>,
}

/// Reset a stream whose request is refused or malformed.
const REFUSED: quinn::VarInt = quinn::VarInt::from_u32(1);

async fn stream(
    gateway: Arc<Gateway>,
    membership: Arc<membership::Membership>,
    peer: Peer,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let Peer { who, node_uid } = peer;
    let node = who.as_ref().and_then(|w| w.node_name()).map(str::to_string);
    let max = if node.is_some() {
        MAX_REQUEST
    } else {
        frame::MAX_UNAUTHENTICATED
    };
    let request = match frame::read::<AgentRequest, _>(&mut recv, max).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::info!("agent stream refused: {e}");
            metrics::counter!("skiff_agent_bad_frames_total").increment(1);
            let _ = send.reset(REFUSED);
            return;
        }
    };
    let result = match (request.request, node) {
        (Some(agent_request::Request::Ca(_)), _) => {
            let response = CaResponse {
                ca_pem: gateway.ca.pem().to_string(),
            };
            frame::write(&mut send, &response).await
        }
        (Some(agent_request::Request::Join(j)), _) => {
            let response = join::join(&gateway, j).await;
            frame::write(&mut send, &response).await
        }
        (Some(agent_request::Request::ControlPlane(r)), _) => {
            let response = join::control_plane(&gateway, r).await;
            frame::write(&mut send, &response).await
        }
        (Some(agent_request::Request::Renew(r)), Some(node)) => {
            let response = join::renew(&gateway, &membership, &node, node_uid.as_deref(), r).await;
            frame::write(&mut send, &response).await
        }
        (Some(agent_request::Request::Token(t)), Some(_)) => {
            let who = who.as_ref().expect("a node has an identity");
            let response = tokens::issue(&gateway.api, who, t).await;
            frame::write(&mut send, &response).await
        }
        (Some(agent_request::Request::Hello(h)), Some(node)) => {
            session::run(gateway, node, h, send, recv).await;
            return;
        }
        (Some(_), None) => {
            tracing::info!(user = ?who.map(|w| w.user), "agent request needs a node certificate");
            let _ = send.reset(REFUSED);
            return;
        }
        (None, _) => {
            let _ = send.reset(REFUSED);
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!("agent stream: {e}");
    }
    let _ = send.finish();
}

/// Help text and units of the agent gateway's series.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "skiff_agent_handshake_failures_total",
        Unit::Count,
        "QUIC connections from agents that failed their handshake."
    );
    describe_counter!(
        "skiff_agent_tokens_issued_total",
        Unit::Count,
        "Service account tokens issued to nodes for their pods."
    );
    describe_counter!(
        "skiff_agent_bad_frames_total",
        Unit::Count,
        "Frames from agents that could not be read or were not expected."
    );
    describe_counter!(
        "skiff_agent_joins_total",
        Unit::Count,
        "Node join requests, by result (joined, refused)."
    );
    describe_counter!(
        "skiff_control_plane_certificate_fetches_total",
        Unit::Count,
        "Joining masters' requests for the sealed control-plane certificates, by result (handed, refused)."
    );
    describe_counter!(
        "skiff_agent_renewals_total",
        Unit::Count,
        "Node certificates renewed."
    );
    describe_gauge!(
        "skiff_agent_connections",
        Unit::Count,
        "Nodes with at least one QUIC connection open to this master."
    );
    describe_counter!(
        "skiff_agent_sessions_opened_total",
        Unit::Count,
        "Agent control sessions opened on this master."
    );
    describe_gauge!(
        "skiff_agent_sessions",
        Unit::Count,
        "Agent control sessions this master streams desired state to."
    );
    describe_counter!(
        "skiff_agent_sessions_cut_total",
        Unit::Count,
        "Agent sessions cut off because they could not keep up with their updates."
    );
    describe_counter!(
        "skiff_agent_attach_total",
        Unit::Count,
        "Agent sessions attached, by kind (snapshot, or resume from the agent's revision)."
    );
    describe_counter!(
        "skiff_agent_deltas_total",
        Unit::Count,
        "Deltas of desired state queued for agents."
    );
    describe_counter!(
        "skiff_agent_frames_sent_total",
        Unit::Count,
        "Frames written to agents' control streams."
    );
    describe_histogram!(
        "skiff_agent_stream_lag_seconds",
        Unit::Seconds,
        "Time from the oldest queued frame of a write to agents until it was written."
    );
    describe_counter!(
        "skiff_agent_reports_total",
        Unit::Count,
        "Reports received from agents, by kind."
    );
    describe_counter!(
        "skiff_agent_reports_refused_total",
        Unit::Count,
        "Pod reports from agents about pods not bound to them."
    );
    describe_counter!(
        "skiff_agent_pod_reports_obsolete_total",
        Unit::Count,
        "Pod reports dropped because the pod is gone or replaced (acknowledged, not written)."
    );
    describe_counter!(
        "skiff_agent_pod_reports_failed_total",
        Unit::Count,
        "Pod reports that could not be written to the store (the agent sends them again)."
    );
}
