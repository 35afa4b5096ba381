//! A host port can be bound once per node (per protocol and address).

use super::super::cycle::Cycle;
use super::super::pod_info::{NodeInfo, PodInfo};
use super::Filter;

pub struct HostPorts;

fn clash(a: &(String, i32, String), b: &(String, i32, String)) -> bool {
    let wildcard = |ip: &str| ip == "0.0.0.0" || ip.is_empty();
    a.0 == b.0 && a.1 == b.1 && (a.2 == b.2 || wildcard(&a.2) || wildcard(&b.2))
}

impl Filter for HostPorts {
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle) -> Result<(), String> {
        let taken = pod
            .host_ports
            .iter()
            .any(|p| node.host_ports.iter().any(|q| clash(p, q)));
        if taken {
            Err("node(s) didn't have free ports for the requested pod ports".into())
        } else {
            Ok(())
        }
    }
}
