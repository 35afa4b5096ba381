//! Client certificate checks for the store's ports, as etcd's
//! `--client-cert-auth` and `--peer-client-cert-auth`: a certificate signed
//! by the cluster CA is required, and only some identities may connect.
//!
//! The identity check runs inside the handshake, so a refused client learns
//! it from a TLS alert and never reaches a service. A node's certificate is
//! signed by the same CA, so the CA alone would let any node read every
//! Secret through the etcd API: hence the check on the subject.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::Identity;

/// Who may connect to a port.
#[derive(Debug, Clone, Copy)]
pub enum Allowed {
    /// The etcd API: cluster administrators (`system:masters`: the admin,
    /// the masters, the etcd client certificate `init` writes).
    Administrators,
    /// The Raft peer port: masters only (`system:master:<name>`).
    Masters,
}

impl Allowed {
    fn admits(self, who: &Identity) -> bool {
        match self {
            Allowed::Administrators => who.groups.iter().any(|g| g == super::MASTERS_GROUP),
            Allowed::Masters => who.user.starts_with(super::MASTER_USER_PREFIX),
        }
    }

    fn port(self) -> &'static str {
        match self {
            Allowed::Administrators => "etcd API",
            Allowed::Masters => "peer port",
        }
    }
}

/// Requires a client certificate from the CA whose subject [`Allowed`] admits.
pub struct RequireClient {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Allowed,
}

impl fmt::Debug for RequireClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireClient")
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl RequireClient {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Allowed) -> Self {
        RequireClient { inner, allowed }
    }
}

impl ClientCertVerifier for RequireClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match super::identity_of(end_entity) {
            Some(who) if self.allowed.admits(&who) => Ok(verified),
            who => {
                let user = who.map(|w| w.user).unwrap_or_else(|| "<no subject>".into());
                tracing::warn!(
                    user,
                    "refused a client certificate on the {}: not allowed here",
                    self.allowed.port()
                );
                metrics::counter!("skiff_tls_clients_refused_total", "port" => self.allowed.port())
                    .increment(1);
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
