//! The certificates kept as files in the PKI directory, and the
//! `control-plane certs` commands over them: `check-expiration` lists each
//! with its expiry (as `kubeadm certs check-expiration`), `renew` issues
//! it again from the CA with a fresh key and lifetime.
//!
//! The masters' own certificates are not files: each master issues its own
//! at start and renews it in place ([`super::MasterCert`]); their expiry is
//! the `skiff_certificate_expiry_timestamp_seconds` gauge.

use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;

use super::{Ca, Identity};

/// A certificate file `renew` knows how to issue again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewable {
    /// `admin.kubeconfig`: the administrator's client certificate, inline.
    AdminKubeconfig,
    /// `etcd-client.crt`/`.key`: etcdctl's client certificate.
    EtcdClient,
}

impl Renewable {
    pub const ALL: [Renewable; 2] = [Renewable::AdminKubeconfig, Renewable::EtcdClient];

    pub fn name(self) -> &'static str {
        match self {
            Renewable::AdminKubeconfig => super::ADMIN_KUBECONFIG,
            Renewable::EtcdClient => "etcd-client",
        }
    }

    pub fn parse(s: &str) -> Result<Vec<Renewable>> {
        if s == "all" {
            return Ok(Renewable::ALL.to_vec());
        }
        match Renewable::ALL.into_iter().find(|r| r.name() == s) {
            Some(r) => Ok(vec![r]),
            None => bail!(
                "unknown certificate {s:?}: one of all, {}",
                Renewable::ALL.map(|r| r.name()).join(", ")
            ),
        }
    }
}

/// Write etcdctl's client certificate and key into `dir`.
pub fn write_etcd_client(dir: &Path, ca: &Ca) -> Result<()> {
    let issued = ca.issue_client(&Identity::etcd_client())?;
    super::write_private(&dir.join(super::ETCD_CLIENT_KEY), &issued.key_pem)?;
    super::write_private(&dir.join(super::ETCD_CLIENT_CERT), &issued.cert_pem)?;
    Ok(())
}

/// Issue `what` again in `dir`, keeping its identity (and, for a
/// kubeconfig, its server).
pub fn renew(dir: &Path, what: Renewable) -> Result<()> {
    let ca = Ca::load(dir)?;
    match what {
        Renewable::EtcdClient => write_etcd_client(dir, &ca),
        Renewable::AdminKubeconfig => {
            let path = dir.join(super::ADMIN_KUBECONFIG);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let server = yaml_field(&text, "server")
                .with_context(|| format!("no server in {}", path.display()))?;
            let who = kubeconfig_cert(&text)
                .and_then(|der| super::identity_of(&der).context("no subject"))
                .unwrap_or_else(|_| Identity::admin());
            super::write_private(&path, &super::kubeconfig(&ca, &server, &who)?)
        }
    }
}

/// One row of `check-expiration`.
pub struct Expiry {
    pub name: String,
    pub not_after: time::OffsetDateTime,
    pub is_ca: bool,
}

/// The certificates in `dir` and when each expires; a missing file is
/// skipped, an unreadable one is an error.
pub fn expiries(dir: &Path) -> Result<Vec<Expiry>> {
    let mut out = Vec::new();
    let ca = std::fs::read(dir.join(super::CA_CERT))
        .with_context(|| format!("reading {}", dir.join(super::CA_CERT).display()))?;
    out.push(Expiry {
        name: "ca".into(),
        not_after: first_cert_expiry(&ca)?,
        is_ca: true,
    });
    let admin = dir.join(super::ADMIN_KUBECONFIG);
    if admin.exists() {
        let text = std::fs::read_to_string(&admin)?;
        let der = kubeconfig_cert(&text)
            .with_context(|| format!("no client certificate in {}", admin.display()))?;
        out.push(Expiry {
            name: super::ADMIN_KUBECONFIG.into(),
            not_after: super::validity_of(&der)?.1,
            is_ca: false,
        });
    }
    let etcd = dir.join(super::ETCD_CLIENT_CERT);
    if etcd.exists() {
        out.push(Expiry {
            name: "etcd-client".into(),
            not_after: first_cert_expiry(&std::fs::read(&etcd)?)?,
            is_ca: false,
        });
    }
    Ok(out)
}

/// The table `check-expiration` prints.
pub fn expiry_table(rows: &[Expiry], now: time::OffsetDateTime) -> String {
    let mut out = format!(
        "{:<22}{:<26}{:<16}{}\n",
        "CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY"
    );
    for r in rows {
        let t = r.not_after.to_offset(time::UtcOffset::UTC);
        let expires = format!(
            "{}T{:02}:{:02}:{:02}Z",
            t.date(),
            t.hour(),
            t.minute(),
            t.second()
        );
        out.push_str(&format!(
            "{:<22}{:<26}{:<16}{}\n",
            r.name,
            expires,
            residual(r.not_after - now),
            if r.is_ca { "" } else { "ca" }
        ));
    }
    out
}

/// kubeadm's residual time: "364d", "9y", "<invalid>".
fn residual(left: time::Duration) -> String {
    let days = left.whole_days();
    if left.is_negative() {
        "<invalid>".into()
    } else if days >= 2 * 365 {
        format!("{}y", days / 365)
    } else if days >= 1 {
        format!("{days}d")
    } else {
        format!("{}h", left.whole_hours())
    }
}

fn first_cert_expiry(pem: &[u8]) -> Result<time::OffsetDateTime> {
    let der = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .context("no certificate in the file")??;
    Ok(super::validity_of(&der)?.1)
}

/// The client certificate inline in a kubeconfig, as DER.
fn kubeconfig_cert(text: &str) -> Result<Vec<u8>> {
    let b64 = yaml_field(text, "client-certificate-data").context("no client-certificate-data")?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .context("client-certificate-data is not base64")?;
    let der = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .context("no certificate in client-certificate-data")??;
    Ok(der.to_vec())
}

/// The value of the first `key: value` line (the kubeconfigs `init` writes
/// are flat enough for this).
fn yaml_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_replaces_the_certificates_and_keeps_who_they_are() {
        let dir = tempfile::tempdir().unwrap();
        super::super::init(dir.path(), "https://127.0.0.1:6443").unwrap();
        let before = std::fs::read_to_string(dir.path().join("admin.kubeconfig")).unwrap();
        let etcd_before = std::fs::read(dir.path().join(super::super::ETCD_CLIENT_CERT)).unwrap();
        let rows = expiries(dir.path()).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ca", "admin.kubeconfig", "etcd-client"]);
        let now = time::OffsetDateTime::now_utc();
        let left = |name: &str| rows.iter().find(|r| r.name == name).unwrap().not_after - now;
        assert!(
            (left("ca").whole_days() - 3650).abs() <= 1,
            "{}",
            left("ca")
        );
        assert!((left("etcd-client").whole_days() - 365).abs() <= 1);
        let table = expiry_table(&rows, now);
        assert!(table.contains("9y") && table.contains("364d"), "{table}");

        for r in Renewable::parse("all").unwrap() {
            renew(dir.path(), r).unwrap();
        }
        let after = std::fs::read_to_string(dir.path().join("admin.kubeconfig")).unwrap();
        assert_ne!(before, after);
        assert_eq!(
            yaml_field(&after, "server").unwrap(),
            "https://127.0.0.1:6443"
        );
        let who = super::super::identity_of(&kubeconfig_cert(&after).unwrap()).unwrap();
        assert_eq!(who, Identity::admin());
        assert_ne!(
            etcd_before,
            std::fs::read(dir.path().join(super::super::ETCD_CLIENT_CERT)).unwrap()
        );
        assert!(Renewable::parse("ca").is_err());
    }
}
