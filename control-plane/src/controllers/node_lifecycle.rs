//! Node lifecycle: a node whose heartbeat is older than the grace period
//! goes Ready=Unknown and gets the `unreachable` NoExecute taint (a node
//! that reports Ready=False gets `not-ready`); pods on a tainted node are
//! evicted once their toleration of the taint runs out. A node under
//! memory, disk or pid pressure gets the matching NoSchedule taint while
//! it lasts.
//!
//! Heartbeats are the nodes' Leases in `kube-node-lease`, renewed by the
//! node every 10 s: one small Raft write per node per 10 s (100 writes/s for
//! 1,000 nodes). The leader keeps when it last saw each Lease change in
//! memory, on its own clock, and writes only transitions (Ready=Unknown, a
//! taint added or removed, an eviction). A new leader starts every node's
//! clock afresh, so a failover never marks a live node unreachable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::events::{reference, Kind};
use super::runtime::{key_of, Action, Change, WorkQueue};
use super::{Ctx, Result};

const COMPONENT: &str = "node-controller";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The NoSchedule taint each pressure condition brings while it is True
/// (Kubernetes' TaintNodesByCondition), so that no new pod goes there.
const PRESSURE_TAINTS: [(&str, &str); 3] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];

/// When this leader last saw each node's heartbeat.
#[derive(Default)]
pub struct Heartbeats {
    seen: Mutex<HashMap<String, Instant>>,
}

impl Heartbeats {
    fn saw(&self, node: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), Instant::now());
    }

    /// When the node was last heard from (first asked: now).
    fn last(&self, node: &str) -> Instant {
        *self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_string())
            .or_insert_with(Instant::now)
    }
}

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("node-lifecycle");
    let q = queue.clone();
    ctx.nodes
        .on_change(move |c: &Change<'_, Node>| q.add(key_of(&c.object().metadata)));
    let (q, beats) = (queue.clone(), ctx.heartbeats.clone());
    ctx.leases.on_change(move |c: &Change<'_, Lease>| {
        let lease = c.object();
        if lease.metadata.namespace.as_deref() != Some(LEASE_NAMESPACE) {
            return;
        }
        if let Change::Applied { old, new } = c {
            let renewed = old.is_none_or(|o| {
                o.spec.as_ref().and_then(|s| s.renew_time.as_ref())
                    != new.spec.as_ref().and_then(|s| s.renew_time.as_ref())
            });
            if renewed {
                let node = new.metadata.name.clone().unwrap_or_default();
                beats.saw(&node);
                q.add(node);
            }
        }
    });
    queue
}

fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

fn condition_true(node: &Node, kind: &str) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// The node's taints with the pressure taints as its conditions say, or
/// None if they are right already.
fn pressure_taints(node: &Node, now: chrono::DateTime<chrono::Utc>) -> Option<Vec<Taint>> {
    let current = taints(node);
    let is_pressure = |t: &Taint| {
        t.effect == "NoSchedule" && PRESSURE_TAINTS.iter().any(|(_, key)| t.key == *key)
    };
    let want: Vec<&str> = PRESSURE_TAINTS
        .iter()
        .filter(|(condition, _)| condition_true(node, condition))
        .map(|(_, key)| *key)
        .collect();
    let have: Vec<&str> = current
        .iter()
        .filter(|t| is_pressure(t))
        .map(|t| t.key.as_str())
        .collect();
    if want.len() == have.len() && want.iter().all(|k| have.contains(k)) {
        return None;
    }
    let mut next: Vec<Taint> = current.into_iter().filter(|t| !is_pressure(t)).collect();
    next.extend(want.into_iter().map(|key| Taint {
        key: key.into(),
        effect: "NoSchedule".into(),
        value: None,
        time_added: Some(Time(now)),
    }));
    Some(next)
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(node) = ctx.nodes.get(&key) else {
        return Ok(Action::Done);
    };
    if let Some(next) = pressure_taints(&node, ctx.now()) {
        let patch = json!({"spec": {"taints": next}});
        ctx.client.patch::<Node>(None, &key, None, &patch).await?;
        return Ok(Action::Done); // the node's change brings us back
    }
    let grace = ctx.settings.node_monitor_grace;
    let silent_for = ctx.heartbeats.last(&key).elapsed();
    let mut ready = ready_status(&node).unwrap_or("Unknown").to_string();
    if silent_for > grace && ready != "Unknown" {
        mark_unknown(&ctx, &node).await?;
        ready = "Unknown".into();
    }
    // Which NoExecute taint the node should carry, if any.
    let want = match ready.as_str() {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let mut current = taints(&node);
    let had = current
        .iter()
        .any(|t| t.key == UNREACHABLE || t.key == NOT_READY);
    let right = match want {
        Some(k) => current
            .iter()
            .any(|t| t.key == k && t.effect == "NoExecute"),
        None => !had,
    };
    if !right {
        current.retain(|t| t.key != UNREACHABLE && t.key != NOT_READY);
        if let Some(k) = want {
            current.push(Taint {
                key: k.into(),
                effect: "NoExecute".into(),
                value: None,
                time_added: Some(Time(ctx.now())),
            });
        }
        let patch = json!({"spec": {"taints": current}});
        ctx.client.patch::<Node>(None, &key, None, &patch).await?;
        return Ok(Action::Done); // the node's change brings us back
    }
    let mut next = if ready == "True" {
        grace.saturating_sub(silent_for) + Duration::from_millis(100)
    } else {
        Duration::from_secs(3600)
    };
    if let Some(taint) = want.and_then(|k| current.iter().find(|t| t.key == k)) {
        if let Some(wait) = evict(&ctx, &key, taint).await? {
            next = next.min(wait);
        }
    }
    Ok(Action::After(next))
}

async fn mark_unknown(ctx: &Ctx, node: &Node) -> Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let now = ctx.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut conditions: Vec<serde_json::Value> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    conditions.retain(|c| c["type"] != "Ready");
    conditions.push(json!({
        "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }));
    let patch = json!({"status": {"conditions": conditions}});
    ctx.client
        .patch::<Node>(None, &name, Some("status"), &patch)
        .await?;
    ctx.recorder.record(
        COMPONENT,
        reference(node),
        Kind::Normal,
        "NodeNotReady",
        format!("Node {name} status is now: NodeNotReady"),
    );
    tracing::info!(node = name, "heartbeat lost: Ready=Unknown");
    Ok(())
}

/// Evict the pods on `node` whose toleration of `taint` has run out;
/// Some(time until the next one runs out).
async fn evict(ctx: &Ctx, node: &str, taint: &Taint) -> Result<Option<Duration>> {
    let since = taint
        .time_added
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(|| ctx.now());
    let default = ctx.settings.default_eviction_timeout.as_secs() as i64;
    let mut next: Option<Duration> = None;
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list()
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    for pod in pods {
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let matching: Vec<_> = tolerations
            .iter()
            .filter(|t| crate::scheduler::plugins::tolerates(t, taint))
            .collect();
        // No toleration: the default; a toleration without seconds: forever.
        let seconds = if matching.is_empty() {
            Some(default)
        } else {
            matching
                .iter()
                .map(|t| t.toleration_seconds)
                .try_fold(i64::MIN, |acc, s| s.map(|s| acc.max(s)))
        };
        let Some(seconds) = seconds else { continue };
        let deadline = since + chrono::Duration::seconds(seconds.max(0));
        let now = ctx.now();
        if deadline > now {
            let wait = (deadline - now).to_std().unwrap_or_default();
            next = Some(next.map_or(wait, |n| n.min(wait)));
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        ctx.client
            .delete::<Pod>(
                pod.metadata.namespace.as_deref(),
                &name,
                pod.metadata.uid.as_deref(),
                None,
            )
            .await?;
        ctx.recorder.record(
            COMPONENT,
            reference(&*pod),
            Kind::Normal,
            "TaintManagerEviction",
            format!(
                "Marking for deletion Pod {}/{name}",
                pod.metadata.namespace.as_deref().unwrap_or("")
            ),
        );
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(conditions: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": taints},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn pressure_conditions_bring_and_take_their_no_schedule_taints() {
        let now = chrono::Utc::now();
        let other = json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"});
        let under = node(
            json!([{"type": "MemoryPressure", "status": "True"}, {"type": "Ready", "status": "True"}]),
            json!([other]),
        );
        let next = pressure_taints(&under, now).expect("a taint to add");
        let keys: Vec<&str> = next.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["dedicated", "node.kubernetes.io/memory-pressure"]);
        assert!(next.iter().all(|t| t.effect == "NoSchedule"));
        // Right already: nothing to write.
        let tainted = node(
            json!([{"type": "MemoryPressure", "status": "True"}]),
            serde_json::to_value(&next).unwrap(),
        );
        assert!(pressure_taints(&tainted, now).is_none());
        // The pressure gone: the taint goes, the other stays.
        let relieved = node(
            json!([{"type": "MemoryPressure", "status": "False"}]),
            serde_json::to_value(&next).unwrap(),
        );
        let after = pressure_taints(&relieved, now).expect("a taint to remove");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].key, "dedicated");
    }
}
