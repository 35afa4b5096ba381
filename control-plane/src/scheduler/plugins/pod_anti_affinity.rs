//! Required pod anti-affinity: no node in a topology domain (same value of
//! the term's topology key) that already runs a pod the term selects.

use super::super::cycle::Cycle;
use super::super::pod_info::{NodeInfo, PodInfo};
use super::Filter;

pub struct PodAntiAffinity;

impl Filter for PodAntiAffinity {
    fn filter(&self, _pod: &PodInfo, node: &NodeInfo, cycle: &Cycle) -> Result<(), String> {
        for (key, taken) in &cycle.anti_affinity {
            if node.labels.get(key).is_some_and(|v| taken.contains(v)) {
                return Err("node(s) didn't match pod anti-affinity rules".into());
            }
        }
        Ok(())
    }
}
