//! The node's identity, kept in its data directory: its private key (made
//! here, never sent anywhere), its certificate from the cluster CA, the CA,
//! and what it knows of the cluster (its name, every master's address).
//!
//! The key and the certificate are replaced together, by one rename: both
//! are written into a new directory `credentials.<n>`, then the symbolic
//! link `credentials` is switched to it. A crash at any point leaves
//! either the old pair or the new one, never one of each.
//!
//! ```text
//! <data-dir>/ca.crt, cluster.json       each replaced by a rename
//! <data-dir>/credentials -> credentials.<n>
//! <data-dir>/credentials.<n>/node.key, node.crt
//! <data-dir>/node.key -> credentials/node.key   (for readers of the
//! <data-dir>/node.crt -> credentials/node.crt    old layout)
//! ```
//!
//! A data directory from before (`node.key` and `node.crt` as two plain
//! files, no `credentials`) is read as it is, and moved to this layout by
//! its first renewal. Loading checks that the key is the certificate's:
//! a mismatched pair (the old layout's crash between its two writes) is
//! reported as such.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde::{Deserialize, Serialize};

pub const KEY: &str = "node.key";
pub const CERT: &str = "node.crt";
pub const CA: &str = "ca.crt";
pub const CLUSTER: &str = "cluster.json";
/// The link to the directory holding the key and certificate in force.
pub const CREDENTIALS: &str = "credentials";
/// The link being put in place of [`CREDENTIALS`].
const NEXT: &str = "credentials.next";

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
    Ok(proto::agent::client::ca_hash(ca_pem)?)
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

/// The key and certificate do not belong together.
#[derive(Debug, thiserror::Error)]
#[error(
    "{key} and {cert} do not belong together: the key is not the one the certificate \
     certifies (were they replaced one at a time, and the replacement cut short?). This \
     identity cannot connect. Join the node again: delete its Node (kubectl delete node \
     {node}), remove {dir}, and run node-agent join with a bootstrap token"
)]
pub struct Mismatch {
    pub key: String,
    pub cert: String,
    pub node: String,
    pub dir: String,
}

/// Whether `key_pem` is the private key of the certificate in `cert_pem`.
pub fn key_matches(key_pem: &str, cert_pem: &str) -> Result<bool> {
    let key = KeyPair::from_pem(key_pem).context("the node key is not a private key")?;
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .context("no certificate in the node certificate file")??;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("parsing the node certificate: {e}"))?;
    Ok(&cert.public_key().subject_public_key.data[..] == key.public_key_raw())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(content)?;
    f.sync_all()?;
    Ok(())
}

fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write_file(&tmp, content, mode)?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Point the link `path` at `target`, replacing whatever is there by one
/// rename.
fn link_atomic(target: &Path, path: &Path) -> Result<()> {
    let file = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!("{file}.link"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("linking {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Where the key and certificate in force are: under `credentials` if it
/// exists, else the old layout's two files.
fn credential_paths(dir: &Path) -> (PathBuf, PathBuf) {
    let base = if std::fs::symlink_metadata(dir.join(CREDENTIALS)).is_ok() {
        dir.join(CREDENTIALS)
    } else {
        dir.to_path_buf()
    };
    (base.join(KEY), base.join(CERT))
}

/// The credentials directory `credentials` points at, by name.
fn current(dir: &Path) -> Option<String> {
    let target = std::fs::read_link(dir.join(CREDENTIALS)).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Put the data directory in order after a crash or an upgrade: the old
/// names link to the pair in force, and no credentials directory but that
/// one is left (one written but never switched to was cut short).
pub fn tidy(dir: &Path) -> Result<()> {
    let Some(current) = current(dir) else {
        return Ok(()); // the old layout: nothing to tidy
    };
    for name in [KEY, CERT] {
        let want = Path::new(CREDENTIALS).join(name);
        let path = dir.join(name);
        if std::fs::read_link(&path).ok().as_deref() != Some(want.as_path()) {
            link_atomic(&want, &path)?;
        }
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name.starts_with("credentials.") && name != current;
        if stale {
            let path = entry.path();
            let removed = if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
    }
    sync_dir(dir)
}

impl Identity {
    pub fn load(dir: &Path) -> Result<Identity> {
        let read = |p: &Path| -> Result<String> {
            std::fs::read_to_string(p).with_context(|| {
                format!(
                    "reading {} (has this node joined? run `node-agent join` first)",
                    p.display()
                )
            })
        };
        let cluster: Cluster = serde_json::from_str(&read(&dir.join(CLUSTER))?)
            .context("cluster.json is not valid")?;
        let (key_path, cert_path) = credential_paths(dir);
        let key_pem = read(&key_path)?;
        let cert_pem = read(&cert_path)?;
        let matches = key_matches(&key_pem, &cert_pem).with_context(|| {
            format!(
                "checking {} against {}",
                key_path.display(),
                cert_path.display()
            )
        })?;
        if !matches {
            return Err(Mismatch {
                key: key_path.display().to_string(),
                cert: cert_path.display().to_string(),
                node: cluster.node_name.clone(),
                dir: dir.display().to_string(),
            }
            .into());
        }
        Ok(Identity {
            key_pem,
            cert_pem,
            ca_pem: read(&dir.join(CA))?,
            cluster,
        })
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join(CA), self.ca_pem.as_bytes(), 0o644)?;
        self.save_cluster(dir)?;
        self.save_credentials(dir)
    }

    /// Replace the key and certificate, both at once (the cluster file is
    /// the session's to keep: it learns the masters' addresses meanwhile).
    pub fn save_credentials(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("{CREDENTIALS}.{stamp}");
        let fresh = dir.join(&name);
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh)
                .with_context(|| format!("removing {}", fresh.display()))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&fresh)
            .with_context(|| format!("creating {}", fresh.display()))?;
        write_file(&fresh.join(KEY), self.key_pem.as_bytes(), 0o600)?;
        write_file(&fresh.join(CERT), self.cert_pem.as_bytes(), 0o644)?;
        sync_dir(&fresh)?;
        // The one rename that replaces both.
        let next = dir.join(NEXT);
        let _ = std::fs::remove_file(&next);
        std::os::unix::fs::symlink(&name, &next)
            .with_context(|| format!("linking {}", next.display()))?;
        std::fs::rename(&next, dir.join(CREDENTIALS))
            .with_context(|| format!("replacing {}", dir.join(CREDENTIALS).display()))?;
        sync_dir(dir)?;
        tidy(dir)
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

pub use proto::agent::client::{provider, ALPN};

pub fn roots(ca_pem: &str) -> Result<rustls::RootCertStore> {
    Ok(proto::agent::client::roots(ca_pem)?)
}

/// The data directory's identity files exist.
pub fn joined(dir: &Path) -> bool {
    let (key, cert) = credential_paths(dir);
    [key, cert, dir.join(CA), dir.join(CLUSTER)]
        .iter()
        .all(|f| f.exists())
}

/// A key and a self-signed certificate for it, for tests.
#[cfg(test)]
pub(crate) fn test_pair(node: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("system:node:{node}"));
    let cert = params.self_signed(&key).unwrap();
    (key.serialize_pem(), cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(node: &str) -> Identity {
        let (key_pem, cert_pem) = test_pair(node);
        Identity {
            key_pem,
            cert_pem,
            ca_pem: "ca".into(),
            cluster: Cluster {
                node_name: node.into(),
                masters: vec!["10.0.0.1:6444".into()],
            },
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn key_and_certificate_are_replaced_together_and_a_cut_short_replacement_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let first = identity("n1");
        first.save(dir.path()).unwrap();
        assert!(joined(dir.path()));
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem, first.cert_pem);
        // The old names still read the pair in force.
        let on_disk = std::fs::read_to_string(dir.path().join(CERT)).unwrap();
        assert_eq!(on_disk, first.cert_pem);

        // A renewal that crashed before its one rename: the new key
        // written, its certificate not yet, a link half made.
        let second = identity("n1");
        let cut = dir.path().join("credentials.99");
        std::fs::create_dir(&cut).unwrap();
        std::fs::write(cut.join(KEY), &second.key_pem).unwrap();
        std::os::unix::fs::symlink("credentials.99", dir.path().join(NEXT)).unwrap();
        let after_crash = Identity::load(dir.path()).unwrap();
        assert_eq!(after_crash.key_pem, first.key_pem, "the old pair, whole");
        assert_eq!(after_crash.cert_pem, first.cert_pem);

        // The next renewal goes through and clears what was left.
        let mut third = first.clone();
        let (k, c) = test_pair("n1");
        third.key_pem = k;
        third.cert_pem = c;
        third.save_credentials(dir.path()).unwrap();
        let now = Identity::load(dir.path()).unwrap();
        assert_eq!(now.key_pem, third.key_pem);
        assert_eq!(now.cert_pem, third.cert_pem);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(KEY)).unwrap(),
            third.key_pem
        );
        let left: Vec<String> = entries(dir.path())
            .into_iter()
            .filter(|e| e.starts_with("credentials."))
            .collect();
        assert_eq!(left.len(), 1, "one credentials directory: {left:?}");
        assert_eq!(Some(left[0].clone()), current(dir.path()));
    }

    #[test]
    fn the_old_layout_is_read_and_moved_by_the_first_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let old = identity("n1");
        std::fs::write(dir.path().join(KEY), &old.key_pem).unwrap();
        std::fs::write(dir.path().join(CERT), &old.cert_pem).unwrap();
        std::fs::write(dir.path().join(CA), &old.ca_pem).unwrap();
        old.save_cluster(dir.path()).unwrap();
        assert!(joined(dir.path()));
        assert_eq!(Identity::load(dir.path()).unwrap().key_pem, old.key_pem);
        let mut renewed = old.clone();
        let (k, c) = test_pair("n1");
        renewed.key_pem = k;
        renewed.cert_pem = c;
        renewed.save_credentials(dir.path()).unwrap();
        let now = Identity::load(dir.path()).unwrap();
        assert_eq!(now.cert_pem, renewed.cert_pem);
        assert!(std::fs::symlink_metadata(dir.path().join(CERT))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CERT)).unwrap(),
            renewed.cert_pem
        );
    }

    #[test]
    fn a_mismatched_pair_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let one = identity("n1");
        let other = identity("n1");
        // The old layout, cut short between its two writes.
        std::fs::write(dir.path().join(KEY), &other.key_pem).unwrap();
        std::fs::write(dir.path().join(CERT), &one.cert_pem).unwrap();
        std::fs::write(dir.path().join(CA), &one.ca_pem).unwrap();
        one.save_cluster(dir.path()).unwrap();
        let e = Identity::load(dir.path()).err().expect("a mismatched pair");
        assert!(e.downcast_ref::<Mismatch>().is_some(), "{e:#}");
        let text = format!("{e:#}");
        assert!(
            text.contains("do not belong together") && text.contains("kubectl delete node n1"),
            "{text}"
        );
    }
}
