//! `control-plane join --control-plane`: the joining master's side.
//!
//! 1. Discovery as a node's: fetch the cluster CA from a master without
//!    trusting it, and keep it only if its hash is the one given.
//! 2. With the CA pinned, present the bootstrap token and get the
//!    control-plane certificates, sealed (see [`crate::pki::sealed`]);
//!    open them with the certificate key and write them to the PKI
//!    directory.
//! 3. Add this master to the store as a learner through the etcd API, as
//!    a master (its own client certificate from the CA just received).
//!
//! The master then starts with the cluster's state as the leader sends it,
//! and [`super::promotion`] makes it a voter once it has caught up.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use proto::agent::client;
use proto::agent::{agent_request, frame, AgentRequest, ControlPlaneRequest, ControlPlaneResponse};
use proto::etcd::{MemberAddRequest, MemberListRequest};

use crate::pki::sealed::{Bundle, CertificateKey};
use crate::pki::Ca;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Certificates {
    /// Every voting master's etcd client URL.
    pub client_urls: Vec<String>,
    /// The cluster's --initial-cluster-token.
    pub cluster_token: String,
}

/// Steps 1 and 2: the control-plane certificates from `server` (an agent
/// address, host:port), written into `pki_dir`.
pub async fn fetch_certificates(
    server: &str,
    token: &str,
    ca_hash: &str,
    key: &CertificateKey,
    pki_dir: &Path,
) -> Result<Certificates> {
    let endpoint = client::endpoint()?;
    let ca_pem = client::discover_ca(&endpoint, server, ca_hash, TIMEOUT).await?;
    let conn = client::connect(&endpoint, server, client::anonymous_tls(&ca_pem)?, TIMEOUT)
        .await
        .context("connecting to the master with the pinned CA")?;
    let answer: ControlPlaneResponse = client::request(
        &conn,
        AgentRequest {
            request: Some(agent_request::Request::ControlPlane(ControlPlaneRequest {
                token: token.to_string(),
            })),
        },
        frame::MAX_UNAUTHENTICATED,
    )
    .await
    .context("asking for the control-plane certificates")?;
    conn.close(0u32.into(), b"done");
    if !answer.refused.is_empty() {
        bail!("{server} refused: {}", answer.refused);
    }
    let bundle = Bundle::open(&answer.sealed, key)?;
    if bundle.files.get(crate::pki::CA_CERT).map(String::as_str) != Some(ca_pem.as_str()) {
        bail!("the sealed certificates hold another CA than the one {server} presents");
    }
    bundle.write(pki_dir)?;
    if answer.client_urls.is_empty() {
        bail!("{server} named no master to join through");
    }
    Ok(Certificates {
        client_urls: answer.client_urls,
        cluster_token: answer.cluster_token,
    })
}

/// Step 3: add `peer_url` as a learner through the first master of
/// `client_urls` that answers. A learner already there under that URL (an
/// earlier attempt that stopped after this step) is taken as added.
pub async fn add_learner(
    pki_dir: &Path,
    name: &str,
    peer_url: &str,
    client_urls: &[String],
) -> Result<u64> {
    let ca = Ca::load(pki_dir)?;
    let mut last = None;
    for url in client_urls {
        let mut cluster = super::cluster_client(&ca, name, url)?;
        let added = cluster
            .member_add(MemberAddRequest {
                peer_ur_ls: vec![peer_url.to_string()],
                is_learner: true,
            })
            .await;
        match added {
            Ok(r) => {
                let id = r.into_inner().member.map(|m| m.id).unwrap_or_default();
                tracing::info!(id = format!("{id:x}"), via = %url, "added to the store as a learner");
                return Ok(id);
            }
            Err(status) if status.message().contains("peerURL exists") => {
                let members = cluster
                    .member_list(MemberListRequest::default())
                    .await?
                    .into_inner()
                    .members;
                return match members
                    .iter()
                    .find(|m| m.peer_ur_ls.iter().any(|u| u == peer_url))
                {
                    Some(m) if m.is_learner => Ok(m.id),
                    Some(m) => bail!(
                        "a voting member {} ({:x}) already has peer URL {peer_url}: this \
                         master is a member already (start it with `control-plane run`), or \
                         remove that member first",
                        m.name,
                        m.id
                    ),
                    None => bail!("{url} says peer URL {peer_url} exists but does not list it"),
                };
            }
            Err(status) => {
                tracing::warn!(%url, "adding this master failed: {}", status.message());
                last = Some(format!("{url}: {}", status.message()));
            }
        }
    }
    bail!(
        "no master added this one as a learner ({})",
        last.unwrap_or_default()
    )
}
