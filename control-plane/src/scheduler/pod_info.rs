//! What the scheduler needs of a pod and of a node, read once from the API
//! objects into plain numbers and lists, so that filters run without
//! parsing anything.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorTerm, Pod, PodAffinityTerm, PodSpec, PreferredSchedulingTerm, Taint,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU in millicores, memory in bytes, and a pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.pods += o.pods;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.pods -= o.pods;
    }
}

fn resources_of(map: Option<&BTreeMap<String, Quantity>>) -> Resources {
    // Exact decimal parsing (the API refuses a quantity that does not parse).
    let get = |k: &str| {
        map.and_then(|m| m.get(k))
            .and_then(|q| proto::quantity::Quantity::parse(&q.0).ok())
    };
    let clamp = |v: i128| v.clamp(0, i64::MAX as i128) as i64;
    Resources {
        milli_cpu: get("cpu").map(|q| clamp(q.millis())).unwrap_or(0),
        memory: get("memory").map(|q| clamp(q.value())).unwrap_or(0),
        pods: get("pods").map(|q| clamp(q.value())).unwrap_or(0),
    }
}

/// A required anti-affinity term, as the filter uses it.
#[derive(Debug, Clone)]
pub struct AntiAffinity {
    pub term: PodAffinityTerm,
}

#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The uid of the pod's controller (ReplicaSet, ...), for spreading.
    pub owner: Option<String>,
    /// That uid as a small number, given by the cache ([`super::core::Cache`]).
    pub owner_id: Option<u32>,
    pub requests: Resources,
    pub node_selector: BTreeMap<String, String>,
    pub required_terms: Vec<NodeSelectorTerm>,
    pub preferred_terms: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
    /// (protocol, port, host ip)
    pub host_ports: Vec<(String, i32, String)>,
    pub anti_affinity: Vec<AntiAffinity>,
}

impl PodInfo {
    pub fn new(pod: &Pod) -> Self {
        let default = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default);
        let mut requests = Resources::default();
        let mut host_ports = Vec::new();
        for c in &spec.containers {
            let r = c.resources.as_ref();
            // Without requests, limits stand in (as the API server defaults them).
            let req = r
                .and_then(|r| r.requests.as_ref())
                .or_else(|| r.and_then(|r| r.limits.as_ref()));
            requests.add(&resources_of(req));
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|hp| *hp > 0) {
                    host_ports.push((
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        hp,
                        p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                    ));
                }
            }
        }
        // An init container runs alone: the pod needs the larger of the two.
        for c in spec.init_containers.iter().flatten() {
            let r = c.resources.as_ref();
            let req = resources_of(
                r.and_then(|r| r.requests.as_ref())
                    .or_else(|| r.and_then(|r| r.limits.as_ref())),
            );
            requests.milli_cpu = requests.milli_cpu.max(req.milli_cpu);
            requests.memory = requests.memory.max(req.memory);
        }
        requests.pods = 1;
        let affinity = spec.affinity.as_ref();
        let node_aff = affinity.and_then(|a| a.node_affinity.as_ref());
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            owner: crate::controllers::ownership::controller_of(&pod.metadata)
                .map(|o| o.uid.clone()),
            owner_id: None,
            requests,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_terms: node_aff
                .and_then(|n| {
                    n.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|r| r.node_selector_terms.clone())
                .unwrap_or_default(),
            preferred_terms: node_aff
                .and_then(|n| {
                    n.preferred_during_scheduling_ignored_during_execution
                        .clone()
                })
                .unwrap_or_default(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            host_ports,
            anti_affinity: affinity
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|p| {
                    p.required_during_scheduling_ignored_during_execution
                        .clone()
                })
                .unwrap_or_default()
                .into_iter()
                .map(|term| AntiAffinity { term })
                .collect(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A node as the scheduler sees it: what it offers and what is bound to it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub unschedulable: bool,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub host_ports: Vec<(String, i32, String)>,
    /// The pods bound here (by key), with their info.
    pub pods: BTreeMap<String, PodInfo>,
    /// How many of those pods each controller (by owner id) has here; a
    /// short list, scanned on every score.
    pub owners: Vec<(u32, u32)>,
}

impl NodeInfo {
    pub fn new(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let mut allocatable = resources_of(
            status
                .and_then(|s| s.allocatable.as_ref())
                .or_else(|| status.and_then(|s| s.capacity.as_ref())),
        );
        if allocatable.pods == 0 {
            allocatable.pods = 110;
        }
        let spec = node.spec.as_ref();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ready,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            allocatable,
            ..Default::default()
        }
    }

    /// How many pods of the owner with id `owner` are here.
    pub fn owned_by(&self, owner: u32) -> u32 {
        self.owners
            .iter()
            .find(|(id, _)| *id == owner)
            .map_or(0, |(_, n)| *n)
    }

    pub fn add_pod(&mut self, pod: PodInfo) {
        self.requested.add(&pod.requests);
        if let Some(o) = pod.owner_id {
            match self.owners.iter_mut().find(|(id, _)| *id == o) {
                Some((_, n)) => *n += 1,
                None => self.owners.push((o, 1)),
            }
        }
        self.host_ports.extend(pod.host_ports.iter().cloned());
        if let Some(old) = self.pods.insert(pod.key(), pod) {
            self.forget(&old);
        }
    }

    pub fn remove_pod(&mut self, key: &str) -> bool {
        match self.pods.remove(key) {
            Some(old) => {
                self.forget(&old);
                true
            }
            None => false,
        }
    }

    fn forget(&mut self, old: &PodInfo) {
        self.requested.sub(&old.requests);
        if let Some(o) = old.owner_id {
            if let Some(i) = self.owners.iter().position(|(id, _)| *id == o) {
                self.owners[i].1 -= 1;
                if self.owners[i].1 == 0 {
                    self.owners.swap_remove(i);
                }
            }
        }
        for p in &old.host_ports {
            if let Some(i) = self.host_ports.iter().position(|x| x == p) {
                self.host_ports.swap_remove(i);
            }
        }
    }

    /// Keep what is bound, take the rest from a newer copy of the node.
    pub fn refresh(&mut self, node: &Node) {
        let pods = std::mem::take(&mut self.pods);
        let owners = std::mem::take(&mut self.owners);
        let requested = self.requested;
        let ports = std::mem::take(&mut self.host_ports);
        *self = NodeInfo::new(node);
        self.pods = pods;
        self.owners = owners;
        self.requested = requested;
        self.host_ports = ports;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_exact() {
        let q = |s: &str| Quantity(s.to_string());
        let map = BTreeMap::from([
            ("cpu".to_string(), q("2.007")),
            ("memory".to_string(), q("1.5Gi")),
            ("pods".to_string(), q("3")),
        ]);
        let r = resources_of(Some(&map));
        assert_eq!((r.milli_cpu, r.memory, r.pods), (2007, 3 << 29, 3));
    }
}
