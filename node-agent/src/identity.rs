//! The node's identity, kept in its data directory: its private key (made
//! here, never sent anywhere), its certificate from the cluster CA, the CA,
//! and what it knows of the cluster (its name, every master's address).
//! Files are replaced atomically (written aside, then renamed).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde::{Deserialize, Serialize};

pub const KEY: &str = "node.key";
pub const CERT: &str = "node.crt";
pub const CA: &str = "ca.crt";
pub const CLUSTER: &str = "cluster.json";

/// What the node knows of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub node_name: String,
    /// Every master's agent address (host:port), as last learnt.
    pub masters: Vec<String>,
}

/// The node's credentials, as loaded.
#[derive(Clone)]
pub struct Identity {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub cluster: Cluster,
}

/// A fresh key and a certificate request for `node`.
pub fn new_key_and_csr(node: &str) -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the node key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("system:node:{node}"));
    dn.push(DnType::OrganizationName, "system:nodes");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

/// kubeadm's CA pin: `sha256:` and the hex SHA-256 of the CA
/// certificate's SubjectPublicKeyInfo.
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

/// When the certificate was issued and when it expires.
pub fn validity(cert_pem: &str) -> Result<(SystemTime, SystemTime)> {
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .context("no certificate in the PEM")??;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("parsing the certificate: {e}"))?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok((
        at(cert.validity().not_before.timestamp()),
        at(cert.validity().not_after.timestamp()),
    ))
}

/// When to renew: two thirds of the way through the certificate's life.
pub fn renew_at(cert_pem: &str) -> Result<SystemTime> {
    let (from, to) = validity(cert_pem)?;
    let life = to.duration_since(from).unwrap_or_default();
    Ok(from + life * 2 / 3)
}

fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(content)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

impl Identity {
    pub fn load(dir: &Path) -> Result<Identity> {
        let read = |name: &str| -> Result<String> {
            let p = dir.join(name);
            std::fs::read_to_string(&p).with_context(|| {
                format!(
                    "reading {} (has this node joined? run `node-agent join` first)",
                    p.display()
                )
            })
        };
        let cluster: Cluster =
            serde_json::from_str(&read(CLUSTER)?).context("cluster.json is not valid")?;
        Ok(Identity {
            key_pem: read(KEY)?,
            cert_pem: read(CERT)?,
            ca_pem: read(CA)?,
            cluster,
        })
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join(KEY), self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT), self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&dir.join(CA), self.ca_pem.as_bytes(), 0o644)?;
        self.save_cluster(dir)
    }

    /// Write only the key and certificate (the cluster file is the
    /// session's to keep: it learns the masters' addresses meanwhile).
    pub fn save_credentials(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(KEY), self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT), self.cert_pem.as_bytes(), 0o644)
    }

    pub fn save_cluster(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.cluster)?;
        write_atomic(&dir.join(CLUSTER), &json, 0o644)
    }

    /// TLS for connecting to masters: this node's certificate, masters
    /// verified against the cluster CA.
    pub fn client_tls(&self) -> Result<rustls::ClientConfig> {
        let certs =
            rustls_pemfile::certs(&mut self.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())?
            .context("no private key in node.key")?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots(&self.ca_pem)?)
            .with_client_auth_cert(certs, key)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

pub const ALPN: &[u8] = b"skiff-agent/1";

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn roots(ca_pem: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    if roots.is_empty() {
        bail!("no certificate in the CA PEM");
    }
    Ok(roots)
}

/// The data directory's identity files exist.
pub fn joined(dir: &Path) -> bool {
    [KEY, CERT, CA, CLUSTER]
        .iter()
        .all(|f| dir.join(f).exists())
}
