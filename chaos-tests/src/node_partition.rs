//! The node-partition nemesis: a node host (a network namespace of its
//! own, as `deploy/node-host` makes them) cut from the link it shares with
//! the masters and the other nodes, then joined again. The node keeps
//! running, its agent and its containers with it; it just hears nothing
//! and is heard by no one, as a machine behind a failed switch port.
//!
//! The cut is the link itself going down inside the node's namespace
//! (`ip link set eth0 down`): every packet either way is lost at once,
//! established QUIC connections included.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// The node's end of its link, as `deploy/node-host` names it.
const LINK: &str = "eth0";

/// A node host cut off; healed by [`NodePartition::heal`] or on drop.
pub struct NodePartition {
    namespace: String,
    healed: bool,
}

fn link(namespace: &str, state: &str) -> Result<()> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{namespace}"))
        .args(["ip", "link", "set", LINK, state])
        .output()
        .context("running nsenter")?;
    if !out.status.success() {
        bail!(
            "setting {LINK} {state} in {namespace}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl NodePartition {
    /// Cut the node host in network namespace `namespace` off.
    pub fn inject(namespace: &str) -> Result<NodePartition> {
        link(namespace, "down")?;
        Ok(NodePartition {
            namespace: namespace.to_string(),
            healed: false,
        })
    }

    /// Join the node to its link again.
    pub fn heal(mut self) -> Result<()> {
        self.healed = true;
        link(&self.namespace, "up")
    }
}

impl Drop for NodePartition {
    fn drop(&mut self) {
        if !self.healed {
            let _ = link(&self.namespace, "up");
        }
    }
}
