//! A node must be Ready and not cordoned, unless the pod tolerates that
//! (DaemonSet pods tolerate both).

use super::super::cycle::Cycle;
use super::super::pod_info::{NodeInfo, PodInfo};
use super::Filter;

pub struct NodeUnschedulable;

const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

impl Filter for NodeUnschedulable {
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle) -> Result<(), String> {
        let tolerates = |key: &str| {
            pod.tolerations.iter().any(|t| match t.key.as_deref() {
                Some(k) => k == key,
                None => t.operator.as_deref() == Some("Exists"),
            })
        };
        if !node.ready && !tolerates(NOT_READY_TAINT) {
            return Err("node(s) were not ready".into());
        }
        if node.unschedulable && !tolerates(UNSCHEDULABLE_TAINT) {
            return Err("node(s) were unschedulable".into());
        }
        Ok(())
    }
}
