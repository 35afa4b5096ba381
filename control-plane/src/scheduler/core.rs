//! The scheduling algorithm over the cache, with no I/O: filter nodes (a
//! sample of them when there are many, as kube-scheduler does), score the
//! feasible ones, pick the best, and assume the pod there. The live loop
//! ([`super`]) and the benchmark both drive this.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Node;

use super::cycle::Cycle;
use super::plugins::{self, Filter, Score};
use super::pod_info::{NodeInfo, PodInfo};

/// Nodes and the pods bound (or assumed bound) to them.
#[derive(Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Pod key to node name.
    placed: HashMap<String, String>,
    /// Controller uids as small numbers, so that spreading compares
    /// numbers, not strings.
    owner_ids: HashMap<String, u32>,
}

impl Cache {
    pub fn upsert_node(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.index.get(&name) {
            Some(&i) => self.nodes[i].refresh(node),
            None => {
                self.index.insert(name, self.nodes.len());
                self.nodes.push(NodeInfo::new(node));
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        let gone = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            self.index.insert(self.nodes[i].name.clone(), i);
        }
        for key in gone.pods.keys() {
            self.placed.remove(key);
        }
    }

    /// Record `pod` on `node` (bound, or assumed while its binding is written).
    pub fn place(&mut self, mut pod: PodInfo, node: &str) {
        let key = pod.key();
        if let Some(uid) = &pod.owner {
            let next = self.owner_ids.len() as u32;
            pod.owner_id = Some(*self.owner_ids.entry(uid.clone()).or_insert(next));
        }
        if self.placed.get(&key).map(String::as_str) == Some(node) {
            return;
        }
        self.remove_pod(&key);
        if let Some(&i) = self.index.get(node) {
            self.nodes[i].add_pod(pod);
            self.placed.insert(key, node.to_string());
        }
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some(node) = self.placed.remove(key) {
            if let Some(&i) = self.index.get(&node) {
                self.nodes[i].remove_pod(key);
            }
        }
    }

    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.placed.get(key).map(String::as_str)
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

pub struct Scheduler {
    pub cache: Cache,
    filters: Vec<Box<dyn Filter>>,
    scores: Vec<(Box<dyn Score>, i64)>,
    next_start: usize,
}

/// Feasible nodes to find before scoring: all of a small cluster, an
/// adaptive share of a large one (kube-scheduler's percentageOfNodesToScore).
fn feasible_to_find(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let pct = (50 - nodes as i64 / 125).max(5) as usize;
    (nodes * pct / 100).max(100)
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            cache: Cache::default(),
            filters: plugins::filters(),
            scores: plugins::scores(),
            next_start: 0,
        }
    }
}

impl Scheduler {
    /// Choose a node for `pod` and assume it there; Err(the reasons,
    /// as `kubectl describe` shows them) if none fits.
    pub fn schedule(&mut self, mut pod: PodInfo) -> Result<String, String> {
        let n = self.cache.nodes.len();
        // An owner with no pod placed yet has no id, and none to spread from.
        pod.owner_id = pod
            .owner
            .as_ref()
            .and_then(|o| self.cache.owner_ids.get(o).copied());
        if n == 0 {
            return Err("no nodes available to schedule pods".into());
        }
        let cycle = Cycle::new(&pod, self.cache.nodes.iter());
        let want = feasible_to_find(n);
        let mut feasible: Vec<usize> = Vec::with_capacity(want);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let start = self.next_start % n;
        let mut examined = 0;
        for step in 0..n {
            let i = (start + step) % n;
            examined += 1;
            let node = &self.cache.nodes[i];
            match self
                .filters
                .iter()
                .try_for_each(|f| f.filter(&pod, node, &cycle))
            {
                Ok(()) => {
                    feasible.push(i);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(reason) => *reasons.entry(reason).or_default() += 1,
            }
        }
        self.next_start = (start + examined) % n;
        if feasible.is_empty() {
            let parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
            return Err(format!("0/{n} nodes are available: {}.", parts.join(", ")));
        }
        let best = if feasible.len() == 1 {
            feasible[0]
        } else {
            let mut total = vec![0i64; feasible.len()];
            let mut raw = vec![0i64; feasible.len()];
            for (score, weight) in &self.scores {
                for (j, &i) in feasible.iter().enumerate() {
                    raw[j] = score.score(&pod, &self.cache.nodes[i], &cycle);
                }
                score.normalize(&mut raw);
                for (t, r) in total.iter_mut().zip(&raw) {
                    *t += r * weight;
                }
            }
            let (j, _) = total
                .iter()
                .enumerate()
                .max_by_key(|(j, t)| (**t, std::cmp::Reverse(*j)))
                .expect("feasible is not empty");
            feasible[j]
        };
        let name = self.cache.nodes[best].name.clone();
        self.cache.place(pod, &name);
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements, Taint,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cpu: &str, taint: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: taint.map(|k| {
                    vec![Taint {
                        key: k.into(),
                        effect: "NoSchedule".into(),
                        value: None,
                        time_added: None,
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity(cpu.into())),
                    ("memory".to_string(), Quantity("8Gi".into())),
                    ("pods".to_string(), Quantity("110".into())),
                ])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pod(name: &str, cpu: &str) -> PodInfo {
        PodInfo::new(&Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu.into()))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        })
    }

    #[test]
    fn fits_where_there_is_room_and_explains_where_not() {
        let mut s = Scheduler::default();
        s.cache.upsert_node(&node("a", "1", None));
        s.cache.upsert_node(&node("b", "4", Some("dedicated")));
        s.cache.upsert_node(&node("c", "500m", None));
        assert_eq!(s.schedule(pod("p1", "800m")).as_deref(), Ok("a"));
        let err = s.schedule(pod("p2", "800m")).unwrap_err();
        assert_eq!(
            err,
            "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: }."
        );
        s.cache.remove_pod("default/p1");
        assert_eq!(s.schedule(pod("p2", "800m")).as_deref(), Ok("a"));
    }

    #[test]
    fn least_allocated_spreads_pods() {
        let mut s = Scheduler::default();
        s.cache.upsert_node(&node("a", "2", None));
        s.cache.upsert_node(&node("b", "2", None));
        let first = s.schedule(pod("p1", "500m")).unwrap();
        let second = s.schedule(pod("p2", "500m")).unwrap();
        assert_ne!(first, second);
    }
}
