//! Resource requests against what the node has left, and the two
//! resource scores: least allocated (spread the load) and balanced
//! allocation (keep cpu and memory use alike).

use super::super::cycle::Cycle;
use super::super::pod_info::{NodeInfo, PodInfo};
use super::{Filter, Score};

pub struct Fit;

impl Filter for Fit {
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle) -> Result<(), String> {
        let (a, r, p) = (&node.allocatable, &node.requested, &pod.requests);
        if r.pods + 1 > a.pods {
            return Err("Too many pods".into());
        }
        if p.milli_cpu > 0 && r.milli_cpu + p.milli_cpu > a.milli_cpu {
            return Err("Insufficient cpu".into());
        }
        if p.memory > 0 && r.memory + p.memory > a.memory {
            return Err("Insufficient memory".into());
        }
        Ok(())
    }
}

/// The fraction of (cpu, memory) in use with the pod, 0..=1.
fn usage(pod: &PodInfo, node: &NodeInfo) -> (f64, f64) {
    let frac = |used: i64, cap: i64| {
        if cap <= 0 {
            1.0
        } else {
            (used as f64 / cap as f64).min(1.0)
        }
    };
    (
        frac(
            node.requested.milli_cpu + pod.requests.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        frac(
            node.requested.memory + pod.requests.memory,
            node.allocatable.memory,
        ),
    )
}

pub struct LeastAllocated;

impl Score for LeastAllocated {
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle) -> i64 {
        let (cpu, mem) = usage(pod, node);
        (((1.0 - cpu) + (1.0 - mem)) * 50.0) as i64
    }
}

pub struct BalancedAllocation;

impl Score for BalancedAllocation {
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle) -> i64 {
        let (cpu, mem) = usage(pod, node);
        ((1.0 - (cpu - mem).abs()) * 100.0) as i64
    }
}
