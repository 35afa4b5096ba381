//! Cluster IPs and node ports for Services.
//!
//! Each address or port a Service holds is a claim key in the store
//! (`/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`),
//! created in the same transaction as the Service and deleted with it, so
//! two Services can never hold the same one, whichever masters they were
//! written through. A free value is picked at random among those not
//! claimed; if another write claims it first the transaction fails and
//! another is picked.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use rand::Rng;
use serde_json::{json, Value};

use crate::registry::Claims;

const IP_CLAIMS: &str = "/registry/ranges/serviceips/";
const PORT_CLAIMS: &str = "/registry/ranges/servicenodeports/";

/// The address and port ranges Services draw from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges {
    network: u32,
    prefix: u8,
    pub node_ports: RangeInclusive<u16>,
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges {
            network: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
            prefix: 12,
            node_ports: 30000..=32767,
        }
    }
}

impl Ranges {
    /// `cidr` like `10.96.0.0/12`; `ports` like `30000-32767`.
    pub fn parse(cidr: &str, ports: &str) -> Result<Self, String> {
        let (ip, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a CIDR like 10.96.0.0/12"))?;
        let ip = Ipv4Addr::from_str(ip).map_err(|e| format!("{cidr:?}: {e}"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("{cidr:?}: the prefix length must be 8 to 30"))?;
        let mask = u32::MAX << (32 - prefix);
        let (lo, hi) = ports
            .split_once('-')
            .ok_or_else(|| format!("{ports:?} is not a range like 30000-32767"))?;
        let (lo, hi): (u16, u16) = match (lo.trim().parse(), hi.trim().parse()) {
            (Ok(l), Ok(h)) if l <= h => (l, h),
            _ => return Err(format!("{ports:?} is not a range like 30000-32767")),
        };
        Ok(Ranges {
            network: u32::from(ip) & mask,
            prefix,
            node_ports: lo..=hi,
        })
    }

    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(self.network);
        // Neither the network address nor the broadcast address.
        offset > 0 && offset < self.size() - 1
    }

    /// The first address of the range: the `kubernetes` Service's, never
    /// given to another Service unless asked for by address.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

fn ip_claim(ip: &str) -> String {
    format!("{IP_CLAIMS}{ip}")
}

fn port_claim(port: i64) -> String {
    format!("{PORT_CLAIMS}{port}")
}

fn needs_node_ports(svc: &Value) -> bool {
    matches!(
        svc.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    )
}

fn cluster_ip(svc: &Value) -> Option<&str> {
    svc.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn ports_mut(svc: &mut Value) -> impl Iterator<Item = &mut Value> {
    svc.pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Every claim `svc` holds.
pub fn claims_of(svc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(ip) = cluster_ip(svc).filter(|ip| *ip != "None") {
        out.insert(ip_claim(ip));
    }
    for p in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(port) = p.get("nodePort").and_then(Value::as_i64) {
            out.insert(port_claim(port));
        }
    }
    out
}

/// Whether [`assign`] must know the claims already held: `new` leaves an
/// address or port to the server, or asks for one `old` does not hold.
pub fn needs_taken(old: Option<&Value>, new: &Value) -> bool {
    if new.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return false;
    }
    let unassigned_ip = cluster_ip(new).is_none();
    let unassigned_port = needs_node_ports(new)
        && new
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .is_some_and(|ports| ports.iter().any(|p| p.get("nodePort").is_none()));
    unassigned_ip || unassigned_port || !diff(old, Some(new)).take.is_empty()
}

/// What a write from `old` to `new` takes and gives back.
pub fn diff(old: Option<&Value>, new: Option<&Value>) -> Claims {
    let before = old.map(claims_of).unwrap_or_default();
    let after = new.map(claims_of).unwrap_or_default();
    Claims {
        take: after.difference(&before).cloned().collect(),
        release: before.difference(&after).cloned().collect(),
    }
}

fn invalid_field(field: &str, message: String) -> (String, String) {
    (field.to_string(), message)
}

/// Check the addresses and ports a new Service asks for, and fill in those
/// it leaves to the server. `taken` are the claims held now (a hint: the
/// store transaction is what guarantees uniqueness).
pub fn assign(
    ranges: &Ranges,
    svc: &mut Value,
    taken: &BTreeSet<String>,
) -> Result<(), Vec<(String, String)>> {
    let mut errors = Vec::new();
    let spec_type = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if spec_type == "ExternalName" {
        return Ok(());
    }
    match cluster_ip(svc).map(str::to_string) {
        Some(ip) if ip == "None" => {}
        Some(ip) => match Ipv4Addr::from_str(&ip) {
            Ok(addr) if ranges.contains(addr) => {
                if taken.contains(&ip_claim(&ip)) {
                    errors.push(invalid_field(
                        "spec.clusterIPs",
                        format!("[\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"),
                    ));
                }
            }
            _ => errors.push(invalid_field(
                "spec.clusterIPs",
                format!(
                    "[\"{ip}\"]: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                    ranges.cidr()
                ),
            )),
        },
        None => match free_ip(ranges, taken) {
            Some(ip) => {
                svc["spec"]["clusterIP"] = json!(ip);
                svc["spec"]["clusterIPs"] = json!([ip]);
            }
            None => errors.push(invalid_field(
                "spec.clusterIPs",
                format!("failed to allocate a serviceIP: range {} is full", ranges.cidr()),
            )),
        },
    }
    if let Some(ip) = cluster_ip(svc).map(str::to_string) {
        svc["spec"]["clusterIPs"] = json!([ip]);
    }
    let wants_ports = needs_node_ports(svc);
    let mut used = BTreeSet::new();
    for (i, p) in ports_mut(svc).enumerate() {
        let field = format!("spec.ports[{i}].nodePort");
        match p.get("nodePort").and_then(Value::as_i64) {
            Some(port) if !wants_ports => errors.push(invalid_field(
                &field,
                format!("{port}: may not be used when `type` is '{spec_type}'"),
            )),
            Some(port) => {
                let in_range = u16::try_from(port).is_ok_and(|p| ranges.node_ports.contains(&p));
                if !in_range {
                    errors.push(invalid_field(
                        &field,
                        format!(
                            "{port}: provided port is not in the valid range. The range of valid ports is {}-{}",
                            ranges.node_ports.start(),
                            ranges.node_ports.end()
                        ),
                    ));
                } else if taken.contains(&port_claim(port)) || !used.insert(port) {
                    errors.push(invalid_field(
                        &field,
                        format!("{port}: provided port is already allocated"),
                    ));
                }
            }
            None if wants_ports => match free_port(ranges, taken, &used) {
                Some(port) => {
                    used.insert(port);
                    p["nodePort"] = json!(port);
                }
                None => errors.push(invalid_field(
                    &field,
                    "failed to allocate a nodePort: range is full".into(),
                )),
            },
            None => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A free address, never the first (the `kubernetes` Service's).
fn free_ip(ranges: &Ranges, taken: &BTreeSet<String>) -> Option<String> {
    let usable = ranges.size() - 3;
    let first = ranges.network + 2;
    let mut rng = rand::thread_rng();
    // Random probes find a free address quickly unless the range is nearly
    // full; then walk it from a random start.
    for _ in 0..64 {
        let ip = Ipv4Addr::from(first + rng.gen_range(0..usable)).to_string();
        if !taken.contains(&ip_claim(&ip)) {
            return Some(ip);
        }
    }
    let start = rng.gen_range(0..usable);
    (0..usable)
        .map(|i| Ipv4Addr::from(first + (start + i) % usable).to_string())
        .find(|ip| !taken.contains(&ip_claim(ip)))
}

fn free_port(ranges: &Ranges, taken: &BTreeSet<String>, used: &BTreeSet<i64>) -> Option<i64> {
    let (lo, hi) = (
        *ranges.node_ports.start() as i64,
        *ranges.node_ports.end() as i64,
    );
    let span = hi - lo + 1;
    let start = rand::thread_rng().gen_range(0..span);
    (0..span)
        .map(|i| lo + (start + i) % span)
        .find(|p| !used.contains(p) && !taken.contains(&port_claim(*p)))
}

/// On update: keep what the Service holds unless the change says otherwise.
/// The cluster IP cannot change; a port keeps its node port when the
/// update leaves it out; a Service that stops being a NodePort gives its
/// node ports back. New node ports are then assigned by [`assign`].
pub fn carry_over(old: &Value, new: &mut Value) -> Result<(), Vec<(String, String)>> {
    let old_ip = cluster_ip(old).map(str::to_string);
    match (old_ip, cluster_ip(new).map(str::to_string)) {
        (Some(o), None) => {
            new["spec"]["clusterIP"] = json!(o);
            new["spec"]["clusterIPs"] = json!([o]);
        }
        (Some(o), Some(n)) if o != n => {
            return Err(vec![invalid_field(
                "spec.clusterIPs[0]",
                format!("\"{n}\": may not change once set"),
            )])
        }
        _ => {}
    }
    if !needs_node_ports(new) {
        for p in ports_mut(new) {
            if let Some(o) = p.as_object_mut() {
                o.remove("nodePort");
            }
        }
        return Ok(());
    }
    let old_ports: Vec<(i64, String, i64)> = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.get("port")?.as_i64()?,
                p.get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_string(),
                p.get("nodePort")?.as_i64()?,
            ))
        })
        .collect();
    for p in ports_mut(new) {
        if p.get("nodePort").is_some() {
            continue;
        }
        let port = p.get("port").and_then(Value::as_i64);
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if let Some((_, _, np)) = old_ports
            .iter()
            .find(|(op, opr, _)| Some(*op) == port && opr == proto)
        {
            p["nodePort"] = json!(np);
        }
    }
    Ok(())
}

/// The claims of `new` that it does not yet hold under `old`: the only ones
/// [`assign`] must check against the claims already held.
pub fn held_elsewhere(old: &Value, taken: BTreeSet<String>) -> BTreeSet<String> {
    let own = claims_of(old);
    taken.difference(&own).cloned().collect()
}

pub fn claim_prefixes() -> [&'static str; 2] {
    [IP_CLAIMS, PORT_CLAIMS]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": spec})
    }

    #[test]
    fn assigns_an_ip_in_range_and_node_ports_when_asked() {
        let r = Ranges::parse("10.96.0.0/28", "30000-30001").expect("ranges");
        let mut s = svc(json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}));
        assign(&r, &mut s, &BTreeSet::new()).expect("assigned");
        let ip: Ipv4Addr = s["spec"]["clusterIP"]
            .as_str()
            .expect("ip")
            .parse()
            .expect("v4");
        assert!(r.contains(ip));
        let mut ports: Vec<i64> = s["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| p["nodePort"].as_i64().expect("nodePort"))
            .collect();
        ports.sort();
        assert_eq!(ports, [30000, 30001]);
        assert_eq!(claims_of(&s).len(), 3);
    }

    #[test]
    fn refuses_taken_out_of_range_and_exhausted() {
        let r = Ranges::parse("10.96.0.0/29", "30000-30000").expect("ranges");
        let taken: BTreeSet<String> = [ip_claim("10.96.0.3"), port_claim(30000)].into();
        let mut s =
            svc(json!({"type": "NodePort", "clusterIP": "10.96.0.3", "ports": [{"port": 80}]}));
        let errs = assign(&r, &mut s, &taken).expect_err("taken");
        assert!(errs[0].1.contains("already allocated"), "{errs:?}");
        assert!(errs[1].1.contains("range is full"), "{errs:?}");
        let mut s = svc(json!({"clusterIP": "10.0.0.1"}));
        let errs = assign(&r, &mut s, &taken).expect_err("out of range");
        assert!(errs[0].1.contains("not in the valid range"), "{errs:?}");
        // Six usable addresses, the first kept for `kubernetes`; every one
        // but 10.96.0.3 free, all found, never 10.96.0.1.
        let mut seen = BTreeSet::new();
        let mut taken = taken;
        for _ in 0..4 {
            let mut s = svc(json!({}));
            assign(&r, &mut s, &taken).expect("free address");
            let ip = s["spec"]["clusterIP"].as_str().expect("ip").to_string();
            assert!(seen.insert(ip.clone()));
            assert_ne!(ip, "10.96.0.1");
            taken.insert(ip_claim(&ip));
        }
        assert!(assign(&r, &mut svc(json!({})), &taken).is_err(), "full");
    }

    #[test]
    fn updates_keep_what_is_held_and_give_back_what_is_dropped() {
        let old = svc(json!({"type": "NodePort", "clusterIP": "10.96.0.9",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}));
        let mut new = svc(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        carry_over(&old, &mut new).expect("carried");
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.9");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        assert_eq!(diff(Some(&old), Some(&new)), Claims::default());
        assert!(!needs_taken(Some(&old), &new), "nothing new to claim");
        assert!(needs_taken(None, &svc(json!({"ports": [{"port": 80}]}))));
        let mut plain =
            svc(json!({"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}));
        carry_over(&old, &mut plain).expect("carried");
        let d = diff(Some(&old), Some(&plain));
        assert_eq!(d.release, vec![port_claim(30080)]);
        let mut moved = svc(json!({"clusterIP": "10.96.0.10"}));
        assert!(carry_over(&old, &mut moved).is_err(), "immutable");
    }
}
