//! `control-plane leave`: take a master out of the cluster, as `etcdctl
//! member remove` would, but by name and with the checks an operator
//! wants first: the master exists, and the voters left can still elect a
//! leader. The removed master learns it was removed and exits.

use std::path::Path;

use anyhow::{bail, Result};
use proto::etcd::{MemberListRequest, MemberRemoveRequest};

use crate::pki::Ca;

/// Remove master `name` through the first of `endpoints` that answers.
pub async fn leave(pki_dir: &Path, name: &str, endpoints: &[String]) -> Result<()> {
    let ca = Ca::load(pki_dir)?;
    let mut last = String::new();
    for url in endpoints {
        let mut cluster = super::cluster_client(&ca, name, url)?;
        let members = match cluster.member_list(MemberListRequest::default()).await {
            Ok(r) => r.into_inner().members,
            Err(s) => {
                last = format!("{url}: {}", s.message());
                continue;
            }
        };
        let Some(leaving) = members.iter().find(|m| m.name == name) else {
            bail!(
                "no master named {name:?} in the cluster (members: {})",
                members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let voters = members.iter().filter(|m| !m.is_learner).count();
        if !leaving.is_learner && voters <= 1 {
            bail!("{name} is the cluster's only voting master: it cannot leave");
        }
        cluster
            .member_remove(MemberRemoveRequest { id: leaving.id })
            .await
            .map_err(|s| anyhow::anyhow!("removing {name}: {}", s.message()))?;
        println!(
            "master {name} ({:x}) removed; {} voting master(s) remain. It stops serving \
             once it learns of its removal.",
            leaving.id,
            voters - usize::from(!leaving.is_learner)
        );
        return Ok(());
    }
    bail!("no master answered ({last})")
}
