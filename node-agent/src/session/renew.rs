//! Renewing the node certificate before it expires, without a restart: at
//! two thirds of its life the agent makes a new key, sends a CSR signed
//! with it over a connection authenticated by the old certificate, and
//! swaps the files and the certificate later connections use.

use std::sync::Arc;
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
                tracing::warn!("renewing the node certificate: {e:#}");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

async fn renew(session: &Session) -> Result<()> {
    let mut id = session.identity();
    let (key_pem, csr_pem) = identity::new_key_and_csr(&id.cluster.node_name)?;
    let (_, conn) = session.connect_any().await?;
    let answer: CertificateResponse = connect::request(
        &conn,
        AgentRequest {
            request: Some(agent_request::Request::Renew(RenewRequest { csr_pem })),
        },
        frame::MAX_FRAME,
    )
    .await?;
    conn.close(0u32.into(), b"done");
    if !answer.refused.is_empty() {
        bail!("the master refused: {}", answer.refused);
    }
    id.key_pem = key_pem;
    id.cert_pem = answer.certificate_pem;
    id.save(&session.data_dir)?;
    *session.identity.write().unwrap_or_else(|e| e.into_inner()) = id;
    metrics::counter!("skiff_agent_certificate_renewals_total").increment(1);
    Ok(())
}
