//! The cluster's certificate authority and the certificates it signs.
//!
//! `control-plane init` creates the CA (`ca.crt`, `ca.key`) and an admin
//! kubeconfig in the PKI directory. Every master holds the same CA files and
//! issues its own serving certificate from them when it starts, so a master
//! that joins later only needs the two CA files. Identities are kept apart
//! in the certificate subject, as Kubernetes does: the admin is in the
//! `system:masters` group, masters are `system:master:<name>`, nodes are
//! `system:node:<name>` in `system:nodes`, signed from the node's own CSR
//! ([`Ca::sign_node`]) so that its key never leaves it.
//!
//! Lifetimes are kubeadm's: ten years for the CA, one year for the
//! certificates it issues. A master renews its own ([`master_cert`]);
//! `control-plane certs` checks and renews the files in the PKI directory
//! ([`files`]). [`verify`] holds the client checks of the store's ports.

pub mod files;
pub mod master_cert;
pub mod node_cert;
pub mod sealed;
pub mod verify;

pub use master_cert::MasterCert;

/// Help text for the certificate series.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "skiff_certificate_expiry_timestamp_seconds",
        metrics::Unit::Seconds,
        "When a certificate expires (Unix time), by certificate: master (this master's own, renewed at two thirds of its lifetime) or ca."
    );
    metrics::describe_counter!(
        "skiff_tls_clients_refused_total",
        metrics::Unit::Count,
        "Client certificates from the CA refused on the store's ports because of who they name, by port."
    );
}

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
/// The client certificate and key etcdctl uses (`--cert`, `--key`).
pub const ETCD_CLIENT_CERT: &str = "etcd-client.crt";
pub const ETCD_CLIENT_KEY: &str = "etcd-client.key";
pub const NODES_GROUP: &str = "system:nodes";
pub const MASTERS_GROUP: &str = "system:masters";
const NODE_USER_PREFIX: &str = "system:node:";
const MASTER_USER_PREFIX: &str = "system:master:";

/// How long the CA is valid (kubeadm: ten years).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the certificates it issues are valid (kubeadm: one year).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Issued certificates start this long before now, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(300);

/// Who a client certificate (or token) speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn admin() -> Self {
        Identity {
            user: "kubernetes-admin".into(),
            groups: vec![MASTERS_GROUP.into()],
        }
    }

    pub fn master(name: &str) -> Self {
        Identity {
            user: format!("{MASTER_USER_PREFIX}{name}"),
            groups: vec![MASTERS_GROUP.into()],
        }
    }

    /// The etcd API's client (etcdctl), as kubeadm's `apiserver-etcd-client`.
    pub fn etcd_client() -> Self {
        Identity {
            user: "skiff-etcd-client".into(),
            groups: vec![MASTERS_GROUP.into()],
        }
    }

    pub fn node(name: &str) -> Self {
        Identity {
            user: format!("{NODE_USER_PREFIX}{name}"),
            groups: vec![NODES_GROUP.into()],
        }
    }

    /// The node this identity is, if it is one.
    pub fn node_name(&self) -> Option<&str> {
        if !self.groups.iter().any(|g| g == NODES_GROUP) {
            return None;
        }
        self.user.strip_prefix(NODE_USER_PREFIX)
    }

    fn subject(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.user.clone());
        for g in &self.groups {
            dn.push(DnType::OrganizationName, g.clone());
        }
        dn
    }
}

/// The CA, loaded from the PKI directory.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
    pem: String,
    not_after: time::OffsetDateTime,
}

/// A signed certificate and its private key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    fn create() -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "skiff-ca");
            dn
        };
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let not_after = params.not_after;
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        Ok(Ca {
            cert,
            key,
            pem,
            not_after,
        })
    }

    pub fn load(dir: &Path) -> Result<Ca> {
        let pem = std::fs::read_to_string(dir.join(CA_CERT))
            .with_context(|| format!("reading {}", dir.join(CA_CERT).display()))?;
        let key_pem = std::fs::read_to_string(dir.join(CA_KEY))
            .with_context(|| format!("reading {}", dir.join(CA_KEY).display()))?;
        let key = KeyPair::from_pem(&key_pem).context("parsing the CA key")?;
        // Re-create the issuer from the stored certificate: signing needs its
        // subject and key, which are unchanged.
        let cert = CertificateParams::from_ca_cert_pem(&pem)
            .context("parsing the CA certificate")?
            .self_signed(&key)?;
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .context("no certificate in the CA file")??;
        let (_, not_after) = validity_of(&der)?;
        Ok(Ca {
            cert,
            key,
            pem,
            not_after,
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn not_after(&self) -> time::OffsetDateTime {
        self.not_after
    }

    /// A client certificate for `who`.
    pub fn issue_client(&self, who: &Identity) -> Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = who.subject();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, LEAF_VALIDITY)
    }

    /// A serving certificate valid for `hosts` (names or IP addresses) for
    /// `validity`, which also authenticates `who` as a client.
    pub fn issue_server_for(
        &self,
        who: &Identity,
        hosts: &[String],
        validity: Duration,
    ) -> Result<Issued> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name = who.subject();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.sign(params, validity)
    }

    /// A node's client certificate for the key in `csr_pem`, valid for
    /// `validity`. Whatever the request asks for, the certificate says only
    /// `system:node:<name>` in `system:nodes`, for client authentication.
    pub fn sign_node(&self, csr_pem: &str, name: &str, validity: Duration) -> Result<String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .context("the certificate request is not a valid PKCS#10 CSR")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = Identity::node(name).subject();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        // Backdated for clocks a little behind, but by at most a tenth of
        // the validity: agents renew at two thirds of the whole span, so a
        // backdate near the validity would have them renew at once.
        let backdate = (validity / 10).min(BACKDATE);
        params.not_before = now - backdate;
        params.not_after = now + validity;
        csr.params = params;
        Ok(csr.signed_by(&self.cert, &self.key)?.pem())
    }

    fn sign(&self, mut params: CertificateParams, validity: Duration) -> Result<Issued> {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - (validity / 10).min(BACKDATE);
        params.not_after = (now + validity).min(self.not_after);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Create the CA in `dir` unless it exists, and write an admin kubeconfig
/// for `server`. Returns the kubeconfig's path.
pub fn init(dir: &Path, server: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let ca = if dir.join(CA_CERT).exists() {
        Ca::load(dir)?
    } else {
        let ca = Ca::create()?;
        write_private(&dir.join(CA_KEY), &ca.key.serialize_pem())?;
        std::fs::write(dir.join(CA_CERT), ca.pem())?;
        ca
    };
    let path = dir.join(ADMIN_KUBECONFIG);
    write_private(&path, &kubeconfig(&ca, server, &Identity::admin())?)?;
    files::write_etcd_client(dir, &ca)?;
    Ok(path)
}

/// Write `content` to `path`, readable by its owner only, replacing any
/// earlier file at once: a crash leaves the old file or the new one.
pub(crate) fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// A kubeconfig for `who` against `server`, with the credentials inline.
pub fn kubeconfig(ca: &Ca, server: &str, who: &Identity) -> Result<String> {
    if !server.starts_with("https://") {
        bail!("the server URL must start with https:// (got {server:?})");
    }
    let client = ca.issue_client(who)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    Ok(format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {user}@skiff
  context:
    cluster: skiff
    user: {user}
current-context: {user}@skiff
",
        ca = b64(ca.pem()),
        user = who.user,
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    ))
}

/// TLS for the API server: this master's certificate, and client
/// certificates verified against the CA when offered (requests without one
/// must then carry a bearer token, or get 401).
pub fn api_server_tls(ca: &Ca, cert: Arc<MasterCert>) -> Result<rustls::ServerConfig> {
    let verifier = client_verifier(ca)?.allow_unauthenticated().build()?;
    let mut config = server_config(verifier, cert, rustls::DEFAULT_VERSIONS)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS for the etcd API or the Raft peer port: this master's certificate,
/// and a client certificate from the CA that `allowed` admits, required.
pub fn store_server_tls(
    ca: &Ca,
    cert: Arc<MasterCert>,
    allowed: verify::Allowed,
) -> Result<rustls::ServerConfig> {
    let verifier = Arc::new(verify::RequireClient::new(
        client_verifier(ca)?.build()?,
        allowed,
    ));
    let mut config = server_config(verifier, cert, rustls::DEFAULT_VERSIONS)?;
    config.alpn_protocols = vec![raft_store::network::tls::ALPN_H2.to_vec()];
    Ok(config)
}

/// TLS this master dials its peers with: the CA as the only root, this
/// master's certificate as the client certificate.
pub fn peer_client_tls(ca: &Ca, cert: Arc<MasterCert>) -> Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_client_cert_resolver(cert);
    config.alpn_protocols = vec![raft_store::network::tls::ALPN_H2.to_vec()];
    Ok(config)
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Ca) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.pem().as_bytes()) {
        roots.add(c?)?;
    }
    Ok(roots)
}

fn client_verifier(ca: &Ca) -> Result<rustls::server::ClientCertVerifierBuilder> {
    Ok(rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca)?),
        crypto(),
    ))
}

fn server_config(
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    cert: Arc<MasterCert>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig> {
    Ok(rustls::ServerConfig::builder_with_provider(crypto())
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert))
}

/// When a certificate (DER) starts and stops being valid.
pub fn validity_of(der: &[u8]) -> Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("parsing a certificate: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.to_datetime(), v.not_after.to_datetime()))
}

/// The identity in a verified client certificate: CN is the user, each O a group.
pub fn identity_of(cert_der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(Identity { user, groups })
}

/// The hash a joining node pins the CA by, as kubeadm's
/// `--discovery-token-ca-cert-hash`: `sha256:` and the hex SHA-256 of the
/// CA certificate's SubjectPublicKeyInfo.
pub fn ca_hash(ca_pem: &str) -> Result<String> {
    Ok(proto::agent::client::ca_hash(ca_pem)?)
}

/// The QUIC protocol name agents and masters speak.
pub const AGENT_ALPN: &[u8] = proto::agent::client::ALPN;

/// TLS for the agent gateway (QUIC, so TLS 1.3 only): this master's
/// certificate; a client certificate signed by the CA when offered (nodes),
/// none for the CA and join requests.
pub fn agent_server_tls(ca: &Ca, cert: Arc<MasterCert>) -> Result<rustls::ServerConfig> {
    let verifier = client_verifier(ca)?.allow_unauthenticated().build()?;
    let mut config = server_config(verifier, cert, &[&rustls::version::TLS13])?;
    config.alpn_protocols = vec![AGENT_ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_says_only_what_the_ca_decides() {
        let ca = Ca::create().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.distinguished_name = Identity::admin().subject();
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let pem = ca.sign_node(&csr, "n1", Duration::from_secs(3600)).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let who = identity_of(&der).unwrap();
        assert_eq!(who, Identity::node("n1"));
        assert_eq!(who.node_name(), Some("n1"));
        assert_eq!(Identity::admin().node_name(), None);
        assert!(ca
            .sign_node("garbage", "n1", Duration::from_secs(60))
            .is_err());

        let hash = ca_hash(ca.pem()).unwrap();
        assert!(
            hash.starts_with("sha256:") && hash.len() == 7 + 64,
            "{hash}"
        );
        assert_eq!(hash, ca_hash(ca.pem()).unwrap());
        assert_ne!(hash, ca_hash(Ca::create().unwrap().pem()).unwrap());
    }
}
