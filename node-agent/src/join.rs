//! `node-agent join`: kubeadm's discovery and TLS bootstrap over QUIC.
//!
//! 1. Fetch the cluster CA from the master without trusting it, and refuse
//!    it unless the hash of its public key is the one given
//!    (`--discovery-token-ca-cert-hash`).
//! 2. Connect again, now verifying the master against that CA, and send
//!    the token with a CSR for a key made here.
//! 3. Store the key, the certificate and the CA in the data directory;
//!    `node-agent run` needs nothing else from then on.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use proto::agent::{agent_request, frame, AgentRequest, CertificateResponse, JoinRequest};

use crate::identity::{self, Cluster, Identity};
use crate::session::connect;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct JoinArgs<'a> {
    pub server: &'a str,
    pub token: &'a str,
    pub ca_hash: &'a str,
    pub node_name: &'a str,
    pub data_dir: &'a Path,
}

pub async fn join(args: JoinArgs<'_>) -> Result<Identity> {
    let endpoint = connect::endpoint()?;
    let ca_pem =
        proto::agent::client::discover_ca(&endpoint, args.server, args.ca_hash, TIMEOUT).await?;

    let conn = connect::connect(
        &endpoint,
        args.server,
        connect::anonymous_tls(&ca_pem)?,
        TIMEOUT,
    )
    .await
    .context("connecting to the master with the pinned CA")?;
    let (key_pem, csr_pem) = identity::new_key_and_csr(args.node_name)?;
    let answer: CertificateResponse = connect::request(
        &conn,
        AgentRequest {
            request: Some(agent_request::Request::Join(JoinRequest {
                token: args.token.to_string(),
                node_name: args.node_name.to_string(),
                csr_pem,
            })),
        },
        frame::MAX_UNAUTHENTICATED,
    )
    .await
    .context("joining")?;
    conn.close(0u32.into(), b"done");
    if !answer.refused.is_empty() {
        bail!("the master refused to join this node: {}", answer.refused);
    }
    let mut masters = answer.masters;
    if !masters.iter().any(|m| m == args.server) {
        masters.push(args.server.to_string());
    }
    let id = Identity {
        key_pem,
        cert_pem: answer.certificate_pem,
        ca_pem: answer.ca_pem,
        cluster: Cluster {
            node_name: args.node_name.to_string(),
            masters,
        },
    };
    id.save(args.data_dir)?;
    Ok(id)
}
