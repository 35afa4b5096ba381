//! TLS for the store's gRPC ports (Raft peers, and the etcd API the master
//! serves beside it), with rustls configurations the caller builds.
//!
//! - [`incoming`]: accepted connections, handed to tonic only once their
//!   handshake has completed (a slow or failed handshake never holds up the
//!   accept loop), with the client's certificates as connection info.
//! - [`Connector`]: dials a `https://host:port` URI over TCP and TLS, for
//!   [`channel`]. The rustls configurations may resolve certificates at each
//!   handshake, so a rotated certificate is used from the next connection on.
//! - [`client_config`]: a client configuration from PEM files (etcdctl's
//!   `--cacert --cert --key`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol every gRPC connection speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// Errors building a TLS configuration or dialing.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Pem(String),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("bad URL {0:?}: {1}")]
    Url(String, String),
}

/// A client configuration trusting the CA in `ca_pem` and presenting the
/// certificate and key in `cert_pem`/`key_pem` (both PEM).
pub fn client_config_pem(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(c.map_err(|e| TlsError::Pem(format!("CA certificate: {e}")))?)?;
    }
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("client certificate: {e}")))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| TlsError::Pem(format!("client key: {e}")))?
        .ok_or_else(|| TlsError::Pem("no private key in the client key file".into()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// [`client_config_pem`] from files, as etcdctl's `--cacert --cert --key`.
pub fn client_config(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ClientConfig, TlsError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    client_config_pem(&read(ca)?, &read(cert)?, &read(key)?)
}

/// A connection whose handshake has completed.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
}

/// What tonic puts in each request's extensions about its connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The client's certificate chain, end entity first.
    pub certs: Arc<Vec<CertificateDer<'static>>>,
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let (tcp, session) = self.inner.get_ref();
        ConnInfo {
            remote: tcp.peer_addr().ok(),
            certs: Arc::new(
                session
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default(),
            ),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The connections accepted on a listener, TLS established; `port` names
/// it in logs and metrics ("peer", "client").
pub struct Incoming {
    rx: mpsc::Receiver<TlsConn>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl futures::Stream for Incoming {
    type Item = Result<TlsConn, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// Accept TLS connections on `listener` with `config`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    port: &'static str,
) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: don't spin.
                    tracing::warn!(port, "accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(inner)) => {
                        let _ = tx.send(TlsConn { inner }).await;
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("skiff_tls_handshake_failures_total", "port" => port)
                            .increment(1);
                        tracing::debug!(port, %remote, "TLS handshake failed: {e}");
                    }
                    Err(_) => {
                        metrics::counter!("skiff_tls_handshake_failures_total", "port" => port)
                            .increment(1);
                        tracing::debug!(port, %remote, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    Incoming { rx, accept }
}

/// Dials `https://host:port` URIs with a client configuration.
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
}

impl Connector {
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        Connector {
            tls: tokio_rustls::TlsConnector::from(config),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, std::io::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid("no host in the URL"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|_| invalid("the host is neither a DNS name nor an IP address"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A lazily connecting channel to `endpoint`: plaintext for `http://`,
/// through `tls` for `https://` (an error without it).
pub fn channel(endpoint: Endpoint, tls: Option<&Connector>) -> Result<Channel, TlsError> {
    match (endpoint.uri().scheme_str() == Some("https"), tls) {
        (true, Some(tls)) => Ok(endpoint.connect_with_connector_lazy(tls.clone())),
        (true, None) => Err(TlsError::Url(
            endpoint.uri().to_string(),
            "https, but no TLS configuration (CA and client certificate) was given".into(),
        )),
        (false, _) => Ok(endpoint.connect_lazy()),
    }
}
