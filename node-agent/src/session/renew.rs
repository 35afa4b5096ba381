//! Renewing the node certificate before it expires, without a restart: at
//! two thirds of its life the agent makes a new key, sends a CSR signed
//! with it over a connection authenticated by the old certificate, and
//! swaps the files and the certificate later connections use.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use proto::agent::{agent_request, frame, AgentRequest, CertificateResponse, RenewRequest};
use tokio_util::sync::CancellationToken;

use super::{connect, Session};
use crate::identity;

const RETRY: Duration = Duration::from_secs(10);

pub async fn run(session: Arc<Session>, stop: CancellationToken) {
    loop {
        let cert = session.identity().cert_pem;
        let wait = match identity::renew_at(&cert) {
            Ok(at) => at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
            Err(e) => {
                tracing::warn!("cannot read the node certificate's validity: {e:#}");
                RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        match renew(&session).await {
            Ok(()) => tracing::info!("node certificate renewed"),
            Err(e) => {
                let wait = if connect::refusal_in(&e).is_some() {
                    super::REFUSED_RETRY
                } else {
                    RETRY
                };
                tracing::warn!("renewing the node certificate: {e:#}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

async fn renew(session: &Session) -> Result<()> {
    let id = session.identity();
    let (key_pem, csr_pem) = identity::new_key_and_csr(&id.cluster.node_name)?;
    let (master, conn) = session.connect_any().await?;
    let answer: Result<CertificateResponse> = connect::request(
        &conn,
        AgentRequest {
            request: Some(agent_request::Request::Renew(RenewRequest { csr_pem })),
        },
        frame::MAX_FRAME,
    )
    .await;
    if let Some(reason) = connect::refusal(&conn) {
        return Err(connect::NotAMember { master, reason }.into());
    }
    let answer = answer?;
    conn.close(0u32.into(), b"done");
    if !answer.refused.is_empty() {
        bail!("{master} refused to renew it: {}", answer.refused);
    }
    install(
        &session.identity,
        &session.data_dir,
        key_pem,
        answer.certificate_pem,
    )?;
    metrics::counter!("skiff_agent_certificate_renewals_total").increment(1);
    Ok(())
}

/// Put the new key and certificate in place, on disk and for later
/// connections, into the identity as it is now: the session may have
/// learnt new master addresses while the renewal was on the wire, and the
/// copy taken before it must not be written back over them.
fn install(
    identity: &RwLock<identity::Identity>,
    dir: &Path,
    key_pem: String,
    cert_pem: String,
) -> Result<()> {
    let mut id = identity.write().unwrap_or_else(|e| e.into_inner());
    let mut next = id.clone();
    next.key_pem = key_pem;
    next.cert_pem = cert_pem;
    next.save_credentials(dir)?;
    *id = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity::{Cluster, Identity};

    #[test]
    fn a_renewal_keeps_the_masters_learnt_while_it_was_on_the_wire() {
        let dir = tempfile::tempdir().unwrap();
        let (key_pem, cert_pem) = identity::test_pair("n1");
        let old = Identity {
            key_pem,
            cert_pem,
            ca_pem: "ca".into(),
            cluster: Cluster {
                node_name: "n1".into(),
                masters: vec!["10.0.0.1:6444".into()],
            },
        };
        old.save(dir.path()).unwrap();
        let shared = RwLock::new(old);
        // The renewal starts from a copy...
        let _snapshot = shared.read().unwrap().clone();
        // ...while the session learns a second master and saves it.
        {
            let mut id = shared.write().unwrap();
            id.cluster.masters.push("10.0.0.2:6444".into());
            id.save_cluster(dir.path()).unwrap();
        }
        let (new_key, new_cert) = identity::test_pair("n1");
        install(&shared, dir.path(), new_key.clone(), new_cert.clone()).unwrap();
        let on_disk = Identity::load(dir.path()).unwrap();
        assert_eq!(
            on_disk.cluster.masters.len(),
            2,
            "the masters learnt are kept"
        );
        assert_eq!(on_disk.cert_pem, new_cert);
        assert_eq!(on_disk.key_pem, new_key);
        let in_memory = shared.read().unwrap();
        assert_eq!(in_memory.cluster.masters.len(), 2);
        assert_eq!(in_memory.cert_pem, new_cert);
    }
}
