//! The node's pod network: a bridge with the node's podCIDR (a network of
//! the container runtime, on which every sandbox takes its address), and
//! a route to every other node's podCIDR through that node's address
//! (host-gateway: the nodes share a link, so a route is all it takes, with
//! no encapsulation; nodes on different links would need VXLAN instead).
//!
//! The podCIDR comes from the masters: the node's own Node, in its desired
//! state. Other nodes come as PeerNodes (name, podCIDR, addresses); routes
//! follow them as they come and go. The routes this agent owns carry their
//! own protocol number, so it removes only its own.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::desired::Desired;
use crate::runtime::{NetworkSpec, Runtime};

/// The routing protocol number on the routes the agent owns.
pub const ROUTE_PROTO: &str = "88";
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Settings {
    /// The runtime's network sandboxes join.
    pub network: String,
    /// The bridge device behind it.
    pub bridge: String,
}

/// Where pods attach, once the node has its podCIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    pub pod_cidr: String,
    /// The bridge's address (the pods' gateway; the node's DNS server).
    pub gateway: Ipv4Addr,
}

/// The pod network as pods see it: not ready, or ready to attach to.
pub struct PodNetwork {
    tx: watch::Sender<Option<Attachment>>,
}

impl Default for PodNetwork {
    fn default() -> Self {
        PodNetwork {
            tx: watch::channel(None).0,
        }
    }
}

impl PodNetwork {
    /// The attachment, waiting up to `within` for it.
    pub async fn attachment(&self, within: Duration) -> Option<Attachment> {
        let mut rx = self.tx.subscribe();
        let found = tokio::time::timeout(within, rx.wait_for(Option::is_some)).await;
        found.ok().and_then(|r| r.ok().and_then(|a| a.clone()))
    }

    pub fn current(&self) -> Option<Attachment> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Attachment>> {
        self.tx.subscribe()
    }
}

fn pod_cidr(node: &Value) -> Option<String> {
    node["spec"]["podCIDR"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

fn internal_ip(node: &Value) -> Option<Ipv4Addr> {
    node["status"]["addresses"]
        .as_array()?
        .iter()
        .filter(|a| a["type"] == "InternalIP")
        .find_map(|a| a["address"].as_str()?.parse().ok())
}

/// The gateway of a podCIDR: its first address.
pub fn gateway_of(cidr: &str) -> Option<Ipv4Addr> {
    let (base, _) = cidr.split_once('/')?;
    let base: Ipv4Addr = base.parse().ok()?;
    Some(Ipv4Addr::from(u32::from(base) + 1))
}

/// Keep the bridge and the routes in step with the node's desired state.
pub async fn run<R: Runtime>(
    rt: R,
    node: String,
    settings: Settings,
    desired: Arc<Desired>,
    net: Arc<PodNetwork>,
    stop: CancellationToken,
) {
    let mut changes = desired.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    let mut routed: Option<BTreeMap<String, Ipv4Addr>> = None;
    let mut seen = u64::MAX;
    loop {
        let mut forced = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            _ = resync.tick() => forced = true,
        }
        let generation = desired.generation("Node") + desired.generation("PeerNode");
        if !forced && generation == seen {
            continue;
        }
        seen = generation;
        let own = desired.get("Node", "", &node);
        if let Some(cidr) = own.as_deref().and_then(pod_cidr) {
            ensure_bridge(&rt, &settings, &cidr, &net).await;
        }
        let Some(attached) = net.current() else {
            continue;
        };
        // Every other node's podCIDR, through its address.
        let want: BTreeMap<String, Ipv4Addr> = desired
            .list("PeerNode")
            .iter()
            .filter(|n| n["metadata"]["name"].as_str() != Some(node.as_str()))
            .filter_map(|n| Some((pod_cidr(n)?, internal_ip(n)?)))
            .filter(|(cidr, _)| *cidr != attached.pod_cidr)
            .collect();
        if forced || routed.as_ref() != Some(&want) {
            match routes::sync(&want).await {
                Ok(()) => routed = Some(want),
                Err(e) => {
                    tracing::warn!("routes to other nodes' pods: {e}");
                    routed = None;
                }
            }
        }
    }
}

async fn ensure_bridge<R: Runtime>(rt: &R, settings: &Settings, cidr: &str, net: &PodNetwork) {
    if net.current().is_some_and(|a| a.pod_cidr == cidr) {
        return;
    }
    let Some(gateway) = gateway_of(cidr) else {
        tracing::warn!(cidr, "the node's podCIDR is not an IPv4 CIDR");
        return;
    };
    let spec = NetworkSpec {
        name: settings.network.clone(),
        subnet: cidr.to_string(),
        gateway: gateway.to_string(),
        bridge: settings.bridge.clone(),
    };
    match rt.ensure_network(&spec).await {
        Ok(()) => {
            tracing::info!(cidr, bridge = %settings.bridge, "pod network ready");
            net.tx.send_replace(Some(Attachment {
                network: settings.network.clone(),
                pod_cidr: cidr.to_string(),
                gateway,
            }));
        }
        Err(e) => tracing::warn!(cidr, "making the pod network: {e}"),
    }
}

pub mod routes {
    //! Routes through `ip`, marked with [`super::ROUTE_PROTO`].

    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use super::ROUTE_PROTO;

    async fn ip(args: &[&str]) -> Result<String, String> {
        let out = tokio::process::Command::new("ip")
            .args(args)
            .output()
            .await
            .map_err(|e| format!("running ip: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Make the agent's routes exactly `want` (podCIDR → next hop).
    pub async fn sync(want: &BTreeMap<String, Ipv4Addr>) -> Result<(), String> {
        let listed = ip(&["-j", "-4", "route", "show", "proto", ROUTE_PROTO]).await?;
        let have: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap_or_default();
        for r in &have {
            let dst = r["dst"].as_str().unwrap_or("");
            let via = r["gateway"].as_str().and_then(|g| g.parse().ok());
            if !dst.is_empty() && want.get(dst) != via.as_ref() {
                ip(&["route", "del", dst, "proto", ROUTE_PROTO]).await?;
            }
        }
        for (dst, via) in want {
            let present = have.iter().any(|r| {
                r["dst"].as_str() == Some(dst.as_str())
                    && r["gateway"].as_str() == Some(via.to_string().as_str())
            });
            if !present {
                let via = via.to_string();
                ip(&["route", "replace", dst, "via", &via, "proto", ROUTE_PROTO]).await?;
                tracing::info!(dst, via, "route to another node's pods");
            }
        }
        Ok(())
    }
}
