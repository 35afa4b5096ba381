//! The client side of the agent protocol over QUIC, shared by node agents
//! and by masters joining a cluster: connections with or without a client
//! certificate, kubeadm's discovery (fetch the cluster CA from a master not
//! yet trusted and keep it only if its public key has the hash the joiner
//! was given), and one request with its one answer on a stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use quinn::{Connection, Endpoint};

use super::{agent_request, frame, AgentRequest, CaRequest, CaResponse};

/// The ALPN protocol of the agent port.
pub const ALPN: &[u8] = b"skiff-agent/1";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("opening a UDP socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("resolving {server}: {reason}")]
    Resolve { server: String, reason: String },
    #[error("connecting to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("{server} did not answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("opening a stream: {0}")]
    Stream(#[from] quinn::ConnectionError),
    #[error("the master closed the stream without answering")]
    NoAnswer,
    #[error("reading the master's answer: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("the cluster CA offered by {server} has hash {offered}, not {wanted} as --discovery-token-ca-cert-hash says: refusing to trust it")]
    CaMismatch {
        server: String,
        offered: String,
        wanted: String,
    },
}

impl From<rustls::Error> for ClientError {
    fn from(e: rustls::Error) -> Self {
        ClientError::Tls(e.to_string())
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM bundle as a root store.
pub fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let c = c.map_err(|e| ClientError::Tls(format!("reading the CA PEM: {e}")))?;
        roots.add(c)?;
    }
    if roots.is_empty() {
        return Err(ClientError::Tls("no certificate in the CA PEM".into()));
    }
    Ok(roots)
}

/// kubeadm's `--discovery-token-ca-cert-hash`: `sha256:` and the hex SHA-256
/// of the CA certificate's SubjectPublicKeyInfo.
pub fn ca_hash(ca_pem: &str) -> Result<String, ClientError> {
    let der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .next()
        .ok_or_else(|| ClientError::Tls("no certificate in the CA PEM".into()))?
        .map_err(|e| ClientError::Tls(format!("reading the CA PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| ClientError::Tls(format!("parsing the CA certificate: {e}")))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// Keep-alives every 500 ms; a master silent for 3 s is gone (an agent
/// then fails over).
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(3)).expect("3 s fits an idle timeout"),
    ));
    Arc::new(t)
}

pub fn endpoint() -> Result<Endpoint, ClientError> {
    Endpoint::client("0.0.0.0:0".parse().expect("an address")).map_err(ClientError::Socket)
}

async fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    let failed = |reason: String| ClientError::Resolve {
        server: server.to_string(),
        reason,
    };
    tokio::net::lookup_host(server)
        .await
        .map_err(|e| failed(e.to_string()))?
        .next()
        .ok_or_else(|| failed("no address".into()))
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
) -> Result<Connection, ClientError> {
    let addr = resolve(server).await?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Tls(format!("unusable for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    let failed = |reason: String| ClientError::Connect {
        server: server.to_string(),
        reason,
    };
    let connecting = endpoint
        .connect_with(config, addr, host_of(server))
        .map_err(|e| failed(e.to_string()))?;
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ClientError::Timeout {
            server: server.to_string(),
            timeout,
        })?
        .map_err(|e| failed(e.to_string()))
}

/// TLS that trusts the cluster CA, without a client certificate.
pub fn anonymous_tls(ca_pem: &str) -> Result<rustls::ClientConfig, ClientError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// TLS that accepts any server: only for fetching the CA, which the caller
/// then checks against the hash it was given.
fn unverified_tls() -> Result<rustls::ClientConfig, ClientError> {
    let provider = provider();
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
) -> Result<M, ClientError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    frame::write(&mut send, &req).await?;
    let _ = send.finish();
    frame::read::<M, _>(&mut recv, max)
        .await?
        .ok_or(ClientError::NoAnswer)
}

/// kubeadm's token discovery: fetch the cluster CA from `server` without
/// trusting it, and keep it only if its hash is `wanted`
/// (`--discovery-token-ca-cert-hash`).
pub async fn discover_ca(
    endpoint: &Endpoint,
    server: &str,
    wanted: &str,
    timeout: Duration,
) -> Result<String, ClientError> {
    let conn = connect(endpoint, server, unverified_tls()?, timeout).await?;
    // Whoever answers is not trusted yet: a small answer or none.
    let ca: CaResponse = request(
        &conn,
        AgentRequest {
            request: Some(agent_request::Request::Ca(CaRequest {})),
        },
        frame::MAX_UNAUTHENTICATED,
    )
    .await?;
    conn.close(0u32.into(), b"done");
    let offered = ca_hash(&ca.ca_pem)?;
    let wanted = wanted.trim().to_ascii_lowercase();
    if offered != wanted {
        return Err(ClientError::CaMismatch {
            server: server.to_string(),
            offered,
            wanted,
        });
    }
    Ok(ca.ca_pem)
}
