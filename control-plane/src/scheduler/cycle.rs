//! State computed once per scheduling attempt and shared by the plugins:
//! for required anti-affinity, the topology values already taken.

use std::collections::HashSet;

use super::pod_info::{NodeInfo, PodInfo};
use crate::controllers::ownership::selects;

#[derive(Debug, Default)]
pub struct Cycle {
    /// (topology key, values of it where a selected pod runs)
    pub anti_affinity: Vec<(String, HashSet<String>)>,
}

impl Cycle {
    pub fn new<'a>(pod: &PodInfo, nodes: impl Iterator<Item = &'a NodeInfo> + Clone) -> Self {
        let mut anti_affinity = Vec::new();
        for a in &pod.anti_affinity {
            let term = &a.term;
            let namespaces: Vec<&str> = match term.namespaces.as_deref() {
                Some(ns) if !ns.is_empty() => ns.iter().map(String::as_str).collect(),
                _ => vec![pod.namespace.as_str()],
            };
            let Some(selector) = term.label_selector.as_ref() else {
                continue;
            };
            let taken: HashSet<String> = nodes
                .clone()
                .filter(|n| {
                    n.pods.values().any(|p| {
                        namespaces.contains(&p.namespace.as_str())
                            && selects(selector, Some(&p.labels))
                    })
                })
                .filter_map(|n| n.labels.get(&term.topology_key).cloned())
                .collect();
            anti_affinity.push((term.topology_key.clone(), taken));
        }
        Cycle { anti_affinity }
    }
}
