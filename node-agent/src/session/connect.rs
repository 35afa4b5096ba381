//! QUIC connections to masters: with the node's certificate, or, before
//! the node has one, anonymously (to fetch the CA, whose hash the joiner
//! checks itself, and to join with a token once the CA is pinned).

use std::time::Duration;

use anyhow::Result;
use prost::Message;
use proto::agent::client;
use proto::agent::{close, AgentRequest};
use quinn::{Connection, ConnectionError, Endpoint};

pub fn endpoint() -> Result<Endpoint> {
    Ok(client::endpoint()?)
}

/// Connect to `server` (host:port) with `tls`, within `timeout`.
pub async fn connect(
    endpoint: &Endpoint,
    server: &str,
    tls: rustls::ClientConfig,
    timeout: Duration,
) -> Result<Connection> {
    Ok(client::connect(endpoint, server, tls, timeout).await?)
}

/// TLS that trusts the cluster CA, without a client certificate.
pub fn anonymous_tls(ca_pem: &str) -> Result<rustls::ClientConfig> {
    Ok(client::anonymous_tls(ca_pem)?)
}

/// One request on a new stream, and its one answer, refused if longer
/// than `max`.
pub async fn request<M: Message + Default>(
    conn: &Connection,
    req: AgentRequest,
    max: usize,
) -> Result<M> {
    Ok(client::request(conn, req, max).await?)
}

/// A master refused this node's certificate: the node is not a member of
/// the cluster (its Node was deleted, or deleted and made again), and the
/// certificate will not work again.
#[derive(Debug, thiserror::Error)]
#[error("{master} refused this node's certificate: {reason}")]
pub struct NotAMember {
    pub master: String,
    pub reason: String,
}

fn not_a_member(e: &ConnectionError) -> Option<String> {
    match e {
        ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(close::NOT_A_MEMBER) =>
        {
            Some(String::from_utf8_lossy(&c.reason).into_owned())
        }
        _ => None,
    }
}

/// Why the master closed `conn`, if it closed it because the node is not
/// a member.
pub fn refusal(conn: &Connection) -> Option<String> {
    not_a_member(&conn.close_reason()?)
}

/// The same, from an error (a connection closed before it was up).
pub fn refusal_in(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        if let Some(r) = cause.downcast_ref::<NotAMember>() {
            return Some(r.reason.clone());
        }
        not_a_member(cause.downcast_ref::<ConnectionError>()?)
    })
}
