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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

pub mod node_cert;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";

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
            groups: vec!["system:masters".into()],
        }
    }

    pub fn master(name: &str) -> Self {
        Identity {
            user: format!("system:master:{name}"),
            groups: vec!["system:masters".into()],
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
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        Ok(Ca { cert, key, pem })
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
        Ok(Ca { cert, key, pem })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A client certificate for `who`.
    pub fn issue_client(&self, who: &Identity) -> Result<Issued> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = who.subject();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    /// A serving certificate valid for `hosts` (names or IP addresses).
    pub fn issue_server(&self, who: &Identity, hosts: &[String]) -> Result<Issued> {
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
        self.sign(params)
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
        let backdate = (validity / 10).min(Duration::from_secs(300));
        params.not_before = now - backdate;
        params.not_after = now + validity;
        csr.params = params;
        Ok(csr.signed_by(&self.cert, &self.key)?.pem())
    }

    fn sign(&self, mut params: CertificateParams) -> Result<Issued> {
        params.not_after = rcgen::date_time_ymd(2035, 1, 1);
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
    Ok(path)
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(content.as_bytes())?;
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

/// TLS for the API server: this master's serving certificate, and client
/// certificates verified against the CA when offered (requests without one
/// must then carry a bearer token, or get 401).
pub fn server_tls(ca: &Ca, name: &str, hosts: &[String]) -> Result<rustls::ServerConfig> {
    let mut config = serving(ca, name, hosts, rustls::DEFAULT_VERSIONS)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// This master's serving certificate for `hosts`; a client certificate
/// signed by the CA when one is offered.
fn serving(
    ca: &Ca,
    name: &str,
    hosts: &[String],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let issued = ca.issue_server(&Identity::master(name), hosts)?;
    let certs =
        rustls_pemfile::certs(&mut issued.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut issued.key_pem.as_bytes())?
        .context("no key in the issued PEM")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.pem().as_bytes()) {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?)
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
    let der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .next()
        .context("no certificate in the CA PEM")??;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("parsing the CA certificate: {e}"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// The QUIC protocol name agents and masters speak.
pub const AGENT_ALPN: &[u8] = b"skiff-agent/1";

/// TLS for the agent gateway (QUIC, so TLS 1.3 only): this master's serving
/// certificate; a client certificate signed by the CA when offered (nodes),
/// none for the CA and join requests.
pub fn agent_server_tls(ca: &Ca, name: &str, hosts: &[String]) -> Result<rustls::ServerConfig> {
    let mut config = serving(ca, name, hosts, &[&rustls::version::TLS13])?;
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
