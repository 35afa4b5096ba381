//! Scheduler plugins: each filter says whether a pod may go on a node (and
//! if not, the reason `kubectl describe pod` shows), each score ranks the
//! nodes that pass. A rule is added by adding a file and a line in
//! [`filters`] or [`scores`]; the loop never changes.

mod fit;
mod host_ports;
mod node_affinity;
mod node_unschedulable;
mod pod_anti_affinity;
mod spread;
mod taint_toleration;

pub use node_affinity::term_matches;
pub use taint_toleration::tolerates;

use super::cycle::Cycle;
use super::pod_info::{NodeInfo, PodInfo};

pub trait Filter: Send + Sync {
    /// Ok, or why the pod cannot go on the node (counted per reason).
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, cycle: &Cycle) -> Result<(), String>;
}

pub trait Score: Send + Sync {
    /// A score for the node, higher is better.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, cycle: &Cycle) -> i64;

    /// Scale the raw scores of the feasible nodes to 0..=100.
    fn normalize(&self, _scores: &mut [i64]) {}
}

pub fn filters() -> Vec<Box<dyn Filter>> {
    vec![
        Box::new(node_unschedulable::NodeUnschedulable),
        Box::new(node_affinity::NodeAffinity),
        Box::new(taint_toleration::TaintToleration),
        Box::new(fit::Fit),
        Box::new(host_ports::HostPorts),
        Box::new(pod_anti_affinity::PodAntiAffinity),
    ]
}

/// Scores with their weights.
pub fn scores() -> Vec<(Box<dyn Score>, i64)> {
    vec![
        (Box::new(fit::LeastAllocated), 1),
        (Box::new(fit::BalancedAllocation), 1),
        (Box::new(spread::Spread), 2),
        (Box::new(node_affinity::PreferredAffinity), 2),
    ]
}

/// Scale `scores` so the largest is 100 (`reverse`: the smallest).
pub fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max <= 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = 100);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = if reverse {
            100 * (max - *s) / max
        } else {
            100 * *s / max
        };
    }
}
