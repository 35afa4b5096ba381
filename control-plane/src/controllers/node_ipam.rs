//! Node IPAM: every node gets a podCIDR, a block of the cluster CIDR that
//! no other node holds (kube-controller-manager's range allocator).
//!
//! What is taken is read from the nodes themselves, so a deleted node's
//! block is free again as soon as the node is gone, and a new leader needs
//! no state of its own. Between writing a block and seeing the node carry
//! it in the cache, the controller remembers it as pending, so that two
//! nodes joining at once never get the same one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde_json::json;

use super::events::{reference, Kind};
use super::runtime::{key_of, Action, Change, WorkQueue};
use super::{Ctx, Result};

const COMPONENT: &str = "node-ipam-controller";

/// An IPv4 block, like 10.244.0.0/16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR like 10.244.0.0/16"))?;
        let ip = Ipv4Addr::from_str(ip).map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to 32"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(ip) & !mask != 0 {
            return Err(format!("{s:?}: host bits are set"));
        }
        Ok(Cidr { base: ip, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The blocks nodes are given: the cluster CIDR cut into blocks of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCidrs {
    pub cluster: Cidr,
    pub node_prefix: u8,
}

impl NodeCidrs {
    pub fn new(cluster: Cidr, node_prefix: u8) -> std::result::Result<Self, String> {
        if node_prefix < cluster.prefix || node_prefix > 30 {
            return Err(format!(
                "a node's block (/{node_prefix}) must lie within the cluster CIDR {cluster} and hold pods (at most /30)"
            ));
        }
        if node_prefix - cluster.prefix > 20 {
            return Err(format!(
                "{cluster} cut into /{node_prefix} blocks makes more than 2^20 of them"
            ));
        }
        Ok(NodeCidrs {
            cluster,
            node_prefix,
        })
    }

    fn count(&self) -> u32 {
        1 << (self.node_prefix - self.cluster.prefix)
    }

    fn block(&self, i: u32) -> Cidr {
        Cidr {
            base: Ipv4Addr::from(u32::from(self.cluster.base) + (i << (32 - self.node_prefix))),
            prefix: self.node_prefix,
        }
    }

    /// Which block `cidr` is, if it is one of ours.
    fn index(&self, cidr: &str) -> Option<u32> {
        let c: Cidr = cidr.parse().ok()?;
        let offset = u32::from(c.base).checked_sub(u32::from(self.cluster.base))?;
        let i = offset >> (32 - self.node_prefix);
        (c.prefix == self.node_prefix && i < self.count()).then_some(i)
    }

    /// The first block not in `taken`.
    fn free(&self, taken: &BTreeSet<u32>) -> Option<Cidr> {
        (0..self.count())
            .find(|i| !taken.contains(i))
            .map(|i| self.block(i))
    }
}

/// Blocks written to a node that the cache does not show yet: node → block.
#[derive(Default)]
pub struct Pending(Mutex<BTreeMap<String, u32>>);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("node-ipam");
    let q = queue.clone();
    ctx.nodes.on_change(move |c: &Change<'_, Node>| {
        let node = c.object();
        let wants = match c {
            Change::Deleted(_) => true,
            Change::Applied { .. } => pod_cidr(node).is_none(),
        };
        if wants {
            q.add(key_of(&node.metadata));
        }
    });
    queue
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()?
        .pod_cidr
        .as_deref()
        .filter(|c| !c.is_empty())
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(cidrs) = ctx.settings.node_cidrs else {
        return Ok(Action::Done);
    };
    let Some(node) = ctx.nodes.get(&key) else {
        ctx.node_ipam.lock().remove(&key);
        return Ok(Action::Done);
    };
    let chosen = {
        let mut pending = ctx.node_ipam.lock();
        // What the cache shows settles what was pending.
        pending.retain(|name, block| match ctx.nodes.get(name) {
            None => false,
            Some(n) => pod_cidr(&n).and_then(|c| cidrs.index(c)) != Some(*block),
        });
        if pod_cidr(&node).is_some() || pending.contains_key(&key) {
            return Ok(Action::Done);
        }
        let mut taken: BTreeSet<u32> = ctx
            .nodes
            .list()
            .iter()
            .filter_map(|n| cidrs.index(pod_cidr(n)?))
            .collect();
        taken.extend(pending.values().copied());
        let chosen = cidrs.free(&taken);
        if let Some(block) = chosen {
            pending.insert(
                key.clone(),
                cidrs.index(&block.to_string()).unwrap_or_default(),
            );
        }
        chosen
    };
    let Some(block) = chosen else {
        ctx.recorder.record(
            COMPONENT,
            reference(node.as_ref()),
            Kind::Warning,
            "CIDRNotAvailable",
            format!(
                "Node {key} status is now: CIDRNotAvailable (every /{} of {} is taken)",
                cidrs.node_prefix, cidrs.cluster
            ),
        );
        return Ok(Action::After(Duration::from_secs(30)));
    };
    let text = block.to_string();
    let patch = json!({"spec": {"podCIDR": text, "podCIDRs": [text]}});
    if let Err(e) = ctx.client.patch::<Node>(None, &key, None, &patch).await {
        ctx.node_ipam.lock().remove(&key);
        return Err(e);
    }
    ctx.recorder.record(
        COMPONENT,
        reference(node.as_ref()),
        Kind::Normal,
        "CIDRAssignmentSucceeded",
        format!("Node {key} was given pod CIDR {text}"),
    );
    tracing::info!(node = key, cidr = text, "pod CIDR assigned");
    Ok(Action::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_cut_from_the_cluster_cidr_in_order() {
        let c = NodeCidrs::new("10.244.0.0/16".parse().unwrap(), 24).unwrap();
        assert_eq!(c.count(), 256);
        assert_eq!(c.block(0).to_string(), "10.244.0.0/24");
        assert_eq!(c.block(255).to_string(), "10.244.255.0/24");
        assert_eq!(c.index("10.244.7.0/24"), Some(7));
        assert_eq!(c.index("10.245.0.0/24"), None);
        assert_eq!(c.index("10.244.7.0/25"), None);
        let taken = BTreeSet::from([0, 1, 3]);
        assert_eq!(c.free(&taken).unwrap().to_string(), "10.244.2.0/24");
        let all: BTreeSet<u32> = (0..256).collect();
        assert!(c.free(&all).is_none());
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!("10.244.0.1/16".parse::<Cidr>().is_err());
        assert!("10.244.0.0".parse::<Cidr>().is_err());
        assert!("10.244.0.0/33".parse::<Cidr>().is_err());
        let c: Cidr = "10.244.0.0/16".parse().unwrap();
        assert!(NodeCidrs::new(c, 8).is_err());
        assert!(NodeCidrs::new(c, 31).is_err());
        assert!(NodeCidrs::new("10.0.0.0/8".parse().unwrap(), 30).is_err());
    }
}
