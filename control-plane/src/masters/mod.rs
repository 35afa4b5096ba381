//! Growing and shrinking the set of masters, kubeadm's way: [`init`] makes
//! the first master of a cluster and prints how to add others, [`join`]
//! adds one (a learner first, a voter once caught up: [`promotion`]), and
//! [`leave`] takes one out. Membership changes go through the etcd API,
//! authenticated by a master certificate from the cluster CA, as etcdctl's
//! `member add --learner`, `member promote` and `member remove` would.
//! [`api_endpoint`] keeps each running master's API address in the store,
//! for the `kubernetes` Service.

pub mod api_endpoint;
pub mod init;
pub mod join;
pub mod leave;
pub mod promotion;

use anyhow::{Context, Result};
use proto::etcd::cluster_client::ClusterClient;
use raft_store::network::tls::{channel, client_config_pem, Connector};
use tonic::transport::{Channel, Endpoint};

use crate::pki::{Ca, Identity};

/// The etcd Cluster service at `url`, as master `name` (a client
/// certificate from the cluster CA, in system:masters).
pub(crate) fn cluster_client(ca: &Ca, name: &str, url: &str) -> Result<ClusterClient<Channel>> {
    let issued = ca.issue_client(&Identity::master(name))?;
    let tls = client_config_pem(
        ca.pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )?;
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad etcd URL {url:?}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30));
    let tls = Connector::new(std::sync::Arc::new(tls));
    Ok(ClusterClient::new(channel(endpoint, Some(&tls))?))
}
