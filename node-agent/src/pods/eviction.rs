//! Eviction under pressure, as the kubelet's eviction manager does it for
//! hard thresholds: while the node is short of memory, disk or process ids
//! ([`crate::pressure`]), one pod at a time is evicted, its containers
//! killed at once (a hard threshold allows no grace), and its status set to
//! Failed with reason `Evicted` and the kubelet's message. The pod object
//! stays, Failed, for its controller to replace (on a node without the
//! pressure: the node lifecycle controller taints this one NoSchedule).
//!
//! Which pod: never one the cluster cannot do without (priority class
//! `system-node-critical` or `system-cluster-critical`), nor one already
//! finished or being deleted; then, as the kubelet ranks them, BestEffort
//! before Burstable before Guaranteed (the first use more than they asked
//! for), lower priority first, and the youngest first.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::status::qos_class;
use crate::pressure::{Crossed, Limit, Signal};

/// What an evicted pod's status says, in the kubelet's words.
pub fn message(c: &Crossed) -> String {
    let limit = match c.threshold.below {
        Limit::Absolute(n) => n.to_string(),
        Limit::Share(s) => format!("{}", (s * c.reading.capacity as f64) as u64),
    };
    let resource = match c.threshold.signal {
        Signal::MemoryAvailable => "memory",
        Signal::PidAvailable => "pids",
        Signal::NodefsInodesFree | Signal::ImagefsInodesFree => "inodes",
        _ => "ephemeral-storage",
    };
    format!(
        "The node was low on resource: {resource}. Threshold quantity: {limit}, available: {}. ",
        c.reading.available
    )
}

const CRITICAL: [&str; 2] = ["system-node-critical", "system-cluster-critical"];

fn rank(pod: &Pod) -> Option<(u8, i32, std::cmp::Reverse<String>)> {
    let spec = pod.spec.as_ref()?;
    if spec
        .priority_class_name
        .as_deref()
        .is_some_and(|c| CRITICAL.contains(&c))
    {
        return None;
    }
    let done = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Failed" || p == "Succeeded");
    if done || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let qos = match qos_class(pod) {
        "BestEffort" => 0,
        "Burstable" => 1,
        _ => 2,
    };
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_rfc3339())
        .unwrap_or_default();
    Some((qos, spec.priority.unwrap_or(0), std::cmp::Reverse(created)))
}

/// The uid of the pod to evict first among `pods`, if any may be.
pub fn victim(pods: &[Arc<Value>]) -> Option<String> {
    pods.iter()
        .filter_map(|v| {
            let pod: Pod = serde_json::from_value((**v).clone()).ok()?;
            let r = rank(&pod)?;
            Some((r, pod.metadata.uid?))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, uid)| uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, extra: Value) -> Arc<Value> {
        let mut p = json!({
            "metadata": {"name": uid, "uid": uid, "creationTimestamp": "2026-12-07T10:00:00Z"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running"},
        });
        json_patch(&mut p, extra);
        Arc::new(p)
    }

    fn json_patch(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    json_patch(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn best_effort_and_low_priority_go_first_critical_never() {
        let guaranteed = pod(
            "g",
            json!({"spec": {"containers": [{"name": "c", "resources": {
                "limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}}),
        );
        let burstable = pod(
            "b",
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"memory": "1Mi"}}}]}}),
        );
        let best_effort_high = pod("e-high", json!({"spec": {"priority": 1000}}));
        let best_effort_low = pod("e-low", json!({"spec": {"priority": 10}}));
        let critical = pod(
            "crit",
            json!({"spec": {"priorityClassName": "system-node-critical"}}),
        );
        let all = vec![
            guaranteed.clone(),
            burstable.clone(),
            best_effort_high.clone(),
            best_effort_low,
            critical.clone(),
        ];
        assert_eq!(victim(&all).as_deref(), Some("e-low"));
        assert_eq!(
            victim(&[guaranteed.clone(), burstable, best_effort_high.clone()]).as_deref(),
            Some("e-high")
        );
        assert_eq!(
            victim(&[guaranteed.clone(), critical.clone()]).as_deref(),
            Some("g")
        );
        assert_eq!(victim(&[critical]), None);
    }

    #[test]
    fn finished_and_deleted_pods_are_not_evicted() {
        let failed = pod("f", json!({"status": {"phase": "Failed"}}));
        let deleting = pod(
            "d",
            json!({"metadata": {"deletionTimestamp": "2026-12-07T10:00:00Z"}}),
        );
        assert_eq!(victim(&[failed, deleting]), None);
    }

    #[test]
    fn the_message_is_the_kubelets() {
        use crate::pressure::{Reading, Threshold};
        let c = Crossed {
            threshold: Threshold {
                signal: Signal::MemoryAvailable,
                below: Limit::Absolute(100 << 20),
            },
            reading: Reading {
                available: 50 << 20,
                capacity: 8 << 30,
            },
        };
        assert_eq!(
            message(&c),
            "The node was low on resource: memory. Threshold quantity: 104857600, available: 52428800. "
        );
    }
}
