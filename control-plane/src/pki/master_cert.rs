//! This master's own certificate, issued from the cluster CA when it starts
//! and renewed in place before it expires.
//!
//! One certificate serves every port the master opens (the Kubernetes API,
//! the agent gateway, the etcd API and the Raft peer port) and is the
//! client certificate it dials its peers with: `system:master:<name>` in
//! `system:masters`, valid for every name and address the master answers
//! on. The rustls configurations built on it resolve the certificate at
//! each handshake ([`MasterCert`] is both resolvers), so a renewal takes
//! effect on the next connection and no open connection is cut.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::{Ca, Identity};

/// Renew once this share of the lifetime has passed (the kubelet renews
/// between 70% and 90%).
const RENEW_AT: f64 = 2.0 / 3.0;

pub struct MasterCert {
    ca: Arc<Ca>,
    name: String,
    hosts: Vec<String>,
    validity: Duration,
    current: RwLock<Current>,
}

#[derive(Clone)]
struct Current {
    key: Arc<CertifiedKey>,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
}

impl fmt::Debug for MasterCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterCert")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl MasterCert {
    /// Issue the certificate of master `name` for `hosts` (names or IP
    /// addresses), valid for `validity`.
    pub fn issue(
        ca: Arc<Ca>,
        name: &str,
        hosts: Vec<String>,
        validity: Duration,
    ) -> Result<Arc<MasterCert>> {
        let current = issue(&ca, name, &hosts, validity)?;
        let cert = Arc::new(MasterCert {
            ca,
            name: name.to_string(),
            hosts,
            validity,
            current: RwLock::new(current),
        });
        cert.publish();
        Ok(cert)
    }

    /// Renew the certificate now.
    pub fn renew(&self) -> Result<()> {
        let next = issue(&self.ca, &self.name, &self.hosts, self.validity)?;
        let not_after = next.not_after;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.publish();
        tracing::info!(
            expires = %not_after,
            "renewed this master's certificate (API, agents, etcd API, peers)"
        );
        Ok(())
    }

    /// When the certificate in use expires.
    pub fn not_after(&self) -> time::OffsetDateTime {
        self.current().not_after
    }

    /// Renew the certificate each time [`RENEW_AT`] of its lifetime has
    /// passed, until the task is dropped; a failed renewal is retried a
    /// minute later (or sooner, near expiry).
    pub async fn keep_renewed(self: Arc<Self>) {
        loop {
            let now = time::OffsetDateTime::now_utc();
            let Current {
                not_before,
                not_after,
                ..
            } = self.current();
            let due = not_before + (not_after - not_before) * RENEW_AT;
            let wait = (due - now).max(time::Duration::ZERO);
            tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO)).await;
            if let Err(e) = self.renew() {
                let left = not_after - time::OffsetDateTime::now_utc();
                tracing::error!(%not_after, "renewing this master's certificate failed: {e:#}");
                let retry: time::Duration =
                    (left / 10_i32).clamp(time::Duration::SECOND, time::Duration::MINUTE);
                tokio::time::sleep(retry.try_into().unwrap_or(Duration::from_secs(1))).await;
            }
        }
    }

    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn publish(&self) {
        metrics::gauge!("skiff_certificate_expiry_timestamp_seconds", "certificate" => "master")
            .set(self.not_after().unix_timestamp() as f64);
        metrics::gauge!("skiff_certificate_expiry_timestamp_seconds", "certificate" => "ca")
            .set(self.ca.not_after().unix_timestamp() as f64);
    }
}

fn issue(ca: &Ca, name: &str, hosts: &[String], validity: Duration) -> Result<Current> {
    let issued = ca.issue_server_for(&Identity::master(name), hosts, validity)?;
    let certs = rustls_pemfile::certs(&mut issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the issued certificate")?;
    let key = rustls_pemfile::private_key(&mut issued.key_pem.as_bytes())?
        .context("no key in the issued PEM")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("the issued key is unusable: {e}"))?;
    let (not_before, not_after) = super::validity_of(&certs[0])?;
    Ok(Current {
        key: Arc::new(CertifiedKey::new(certs, signer)),
        not_before,
        not_after,
    })
}

impl ResolvesServerCert for MasterCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key)
    }
}

impl ResolvesClientCert for MasterCert {
    fn resolve(&self, _: &[&[u8]], schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let key = self.current().key;
        key.key.choose_scheme(schemes).is_some().then_some(key)
    }

    fn has_certs(&self) -> bool {
        true
    }
}
