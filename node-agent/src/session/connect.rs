//! QUIC connections to masters: with the node's certificate, or, before
//! the node has one, anonymously (to fetch the CA, whose hash the joiner
//! checks itself, and to join with a token once the CA is pinned).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use prost::Message;
use proto::agent::{close, frame, AgentRequest};
use quinn::{Connection, ConnectionError, Endpoint};

use crate::identity::{self, ALPN};

/// Keep-alives every 500 ms; a master silent for 3 s is gone (the agent
/// then fails over).
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(3)).expect("3 s fits an idle timeout"),
    ));
    Arc::new(t)
}

pub fn endpoint() -> Result<Endpoint> {
    Endpoint::client("0.0.0.0:0".parse().expect("an address")).context("opening a UDP socket")
}

async fn resolve(server: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(server)
        .await
        .with_context(|| format!("resolving {server}"))?
        .next()
        .with_context(|| format!("{server} has no address"))
}

fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map(|(h, _)| h).unwrap_or(server);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Connect to `server` (host:port) with `tls`, within `timeout`.
pub async fn connect(
    endpoint: &Endpoint,
    server: &str,
    tls: rustls::ClientConfig,
    timeout: Duration,
) -> Result<Connection> {
    let addr = resolve(server).await?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .context("TLS configuration unusable for QUIC")?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    let connecting = endpoint
        .connect_with(config, addr, host_of(server))
        .with_context(|| format!("connecting to {server}"))?;
    tokio::time::timeout(timeout, connecting)
        .await
        .with_context(|| format!("{server} did not answer within {timeout:?}"))?
        .with_context(|| format!("connecting to {server}"))
}

/// TLS that trusts the cluster CA, without a client certificate.
pub fn anonymous_tls(ca_pem: &str) -> Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(identity::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(identity::roots(ca_pem)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// TLS that accepts any server: only for fetching the CA, which the caller
/// then checks against the hash it was given.
pub fn unverified_tls() -> Result<rustls::ClientConfig> {
    let provider = identity::provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One request on a new stream, and its one answer, refused if longer
/// than `max` (the caller knows how far it trusts the master, and what
/// size of answer to expect).
pub async fn request<M: Message + Default>(
    conn: &Connection,
    req: AgentRequest,
    max: usize,
) -> Result<M> {
    let (mut send, mut recv) = conn.open_bi().await.context("opening a stream")?;
    frame::write(&mut send, &req).await?;
    let _ = send.finish();
    match frame::read::<M, _>(&mut recv, max).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => bail!("the master closed the stream without answering"),
        Err(e) => Err(e).context("reading the master's answer"),
    }
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
