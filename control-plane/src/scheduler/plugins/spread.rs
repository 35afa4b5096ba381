//! Spread the pods of one controller across nodes: fewer of its pods on a
//! node, higher the score.

use super::super::cycle::Cycle;
use super::super::pod_info::{NodeInfo, PodInfo};
use super::{normalize, Score};

pub struct Spread;

impl Score for Spread {
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle) -> i64 {
        pod.owner_id.map_or(0, |o| node.owned_by(o) as i64)
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize(scores, true);
    }
}
