//! The proxy's nftables table, in the shape of kube-proxy's nftables mode:
//! a verdict map from (address, protocol, port) to a chain per service
//! port, which picks an endpoint with `numgen random` and DNATs to it
//! (through a chain of the endpoint's own when ClientIP affinity must
//! remember the client). Lookup is one map lookup whatever the number of
//! services; a pod reaching itself through its Service is masqueraded by
//! one rule over a set of endpoint addresses.
//!
//! A [`Ruleset`] is the whole table as data. [`full`] writes it from
//! nothing; [`incremental`] writes only what differs from the ruleset last
//! written. Both are one `nft -f` transaction: the kernel applies all of it
//! or none.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::model::{Endpoint, ServicePort};

/// Marked packets are masqueraded on their way out.
const MASQUERADE_MARK: &str = "0x4000";

/// Where the table lives and what it treats as inside the cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    pub table: String,
    /// Pod addresses (the cluster CIDR); traffic from them keeps its
    /// source, traffic from them to anywhere else is masqueraded.
    pub cluster_cidr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Chain {
    /// `type nat hook prerouting priority dstnat; policy accept;` for a base chain.
    hook: Option<&'static str>,
    rules: Vec<String>,
}

/// The table's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    table: String,
    /// Sets and maps: name → definition (`{ type ...; }`).
    sets: BTreeMap<String, String>,
    chains: BTreeMap<String, Chain>,
    /// Set or map → element key → value (`goto chain`, or "" in a set).
    elements: BTreeMap<String, BTreeMap<String, String>>,
}

impl Ruleset {
    pub fn chains(&self) -> usize {
        self.chains.len()
    }

    pub fn rules(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    pub fn elements(&self) -> usize {
        self.elements.values().map(BTreeMap::len).sum()
    }

    fn set(&mut self, name: &str, def: &str) {
        self.sets.insert(name.to_string(), def.to_string());
    }

    fn chain(&mut self, name: &str, hook: Option<&'static str>, rules: Vec<String>) {
        self.chains.insert(name.to_string(), Chain { hook, rules });
    }

    fn element(&mut self, set: &str, key: String, value: String) {
        self.elements
            .entry(set.to_string())
            .or_default()
            .insert(key, value);
    }
}

fn endpoint_id(sp_id: &str, e: &Endpoint) -> String {
    format!("{sp_id}__{}/{}", e.ip, e.port)
}

/// Rules that take one of `actions` (never empty; each ends the chain: a
/// DNAT or a goto) at random, each alike: the k-th of n is taken with
/// probability 1/(n-k) when those before it were not, so each is taken
/// 1/n of the time, as kube-proxy's iptables rules do. (An anonymous
/// `numgen ... vmap` or `dnat ... map` per service does it in one rule, but
/// nft's time to load anonymous sets grows with the square of their
/// number: 2,000 take 0.7 s, 10,000 over a minute.)
fn pick(actions: &[String]) -> Vec<String> {
    let n = actions.len();
    actions
        .iter()
        .enumerate()
        .map(|(k, a)| {
            if k + 1 == n {
                a.clone()
            } else {
                format!("numgen random mod {} 0 {a}", n - k)
            }
        })
        .collect()
}

/// The whole table for these service ports.
pub fn ruleset(settings: &Settings, ports: &[ServicePort]) -> Ruleset {
    let cidr = &settings.cluster_cidr;
    let mut r = Ruleset {
        table: settings.table.clone(),
        ..Default::default()
    };
    r.set(
        "service-ips",
        "{ type ipv4_addr . inet_proto . inet_service : verdict ; }",
    );
    r.set(
        "service-nodeports",
        "{ type inet_proto . inet_service : verdict ; }",
    );
    r.set(
        "no-endpoint-services",
        "{ type ipv4_addr . inet_proto . inet_service ; }",
    );
    r.set(
        "no-endpoint-nodeports",
        "{ type inet_proto . inet_service ; }",
    );
    r.set("cluster-ips", "{ type ipv4_addr ; }");
    r.set("hairpin", "{ type ipv4_addr . ipv4_addr ; }");
    let jump = |c: &str| vec![format!("jump {c}")];
    r.chain(
        "nat-prerouting",
        Some("type nat hook prerouting priority -100 ; policy accept ;"),
        jump("services"),
    );
    r.chain(
        "nat-output",
        Some("type nat hook output priority -100 ; policy accept ;"),
        jump("services"),
    );
    r.chain(
        "nat-postrouting",
        Some("type nat hook postrouting priority 100 ; policy accept ;"),
        vec![
            "jump masquerading".into(),
            // A pod that reached itself through a Service.
            "ip saddr . ip daddr @hairpin masquerade".into(),
            // Pods reaching outside the cluster leave with the node's address.
            format!("ip saddr {cidr} ip daddr != {cidr} fib daddr type != local masquerade"),
        ],
    );
    for (name, hook) in [
        (
            "filter-input",
            "type filter hook input priority -110 ; policy accept ;",
        ),
        (
            "filter-forward",
            "type filter hook forward priority -110 ; policy accept ;",
        ),
        (
            "filter-output",
            "type filter hook output priority -110 ; policy accept ;",
        ),
    ] {
        r.chain(
            name,
            Some(hook),
            vec!["ct state new jump endpoints-check".into()],
        );
    }
    r.chain(
        "endpoints-check",
        None,
        vec![
            // A service with no ready endpoint refuses at once.
            "ip daddr . meta l4proto . th dport @no-endpoint-services reject".into(),
            "fib daddr type local meta l4proto . th dport @no-endpoint-nodeports reject".into(),
        ],
    );
    r.chain(
        "mark-for-masquerade",
        None,
        vec![format!("meta mark set meta mark | {MASQUERADE_MARK}")],
    );
    r.chain(
        "masquerading",
        None,
        vec![
            format!("meta mark & {MASQUERADE_MARK} == 0 return"),
            format!("meta mark set meta mark ^ {MASQUERADE_MARK}"),
            "masquerade fully-random".into(),
        ],
    );
    r.chain(
        "services",
        None,
        vec![
            // From outside the pod network (the node itself) to a cluster
            // IP: masquerade, so that the reply comes back this way.
            format!("ip saddr != {cidr} ip daddr @cluster-ips jump mark-for-masquerade"),
            "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"
                .into(),
        ],
    );
    for sp in ports {
        service_port(&mut r, cidr, sp);
    }
    r
}

fn service_port(r: &mut Ruleset, cidr: &str, sp: &ServicePort) {
    let id = sp.id();
    let proto = sp.protocol.nft();
    let external = sp.node_port.is_some() || !sp.external_ips.is_empty();
    if sp.endpoints.is_empty() {
        for ip in sp.cluster_ip.iter().chain(&sp.external_ips) {
            r.element(
                "no-endpoint-services",
                format!("{ip} . {proto} . {}", sp.port),
                String::new(),
            );
        }
        if let Some(np) = sp.node_port {
            r.element(
                "no-endpoint-nodeports",
                format!("{proto} . {np}"),
                String::new(),
            );
        }
        return;
    }
    let svc_chain = format!("svc-{id}");
    // What sends a connection to each endpoint: a DNAT in the service's
    // chain, or, with ClientIP affinity, a chain of the endpoint's own that
    // also remembers the client.
    let mut actions = Vec::new();
    let mut local_actions = Vec::new();
    let mut svc_rules = Vec::new();
    if let Some(vip) = sp.cluster_ip {
        r.element("cluster-ips", vip.to_string(), String::new());
    }
    for e in &sp.endpoints {
        // A pod reaching itself through the Service is masqueraded.
        r.element("hairpin", format!("{} . {}", e.ip, e.ip), String::new());
        let dnat = format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port);
        let action = match sp.affinity {
            None => dnat,
            Some(timeout) => {
                let eid = endpoint_id(&id, e);
                let (sep, set) = (format!("sep-{eid}"), format!("aff-{eid}"));
                r.set(
                    &set,
                    &format!("{{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}"),
                );
                svc_rules.push(format!("ip saddr @{set} goto {sep}"));
                r.chain(
                    &sep,
                    None,
                    vec![format!("update @{set} {{ ip saddr }}"), dnat],
                );
                format!("goto {sep}")
            }
        };
        if e.local {
            local_actions.push(action.clone());
        }
        actions.push(action);
    }
    svc_rules.extend(pick(&actions));
    r.chain(&svc_chain, None, svc_rules);
    if let Some(vip) = sp.cluster_ip {
        r.element(
            "service-ips",
            format!("{vip} . {proto} . {}", sp.port),
            format!("goto {svc_chain}"),
        );
    }
    if !external {
        return;
    }
    let ext_chain = format!("ext-{id}");
    let ext_rules = if sp.local_external {
        // Pods and the node itself may use any endpoint; from outside,
        // only this node's, keeping the client's address.
        let mut rules = vec![
            format!("ip saddr {cidr} goto {svc_chain}"),
            "fib saddr type local jump mark-for-masquerade".into(),
            format!("fib saddr type local goto {svc_chain}"),
        ];
        if local_actions.is_empty() {
            rules.push("drop".into());
        } else {
            rules.extend(pick(&local_actions));
        }
        rules
    } else {
        vec![
            "jump mark-for-masquerade".into(),
            format!("goto {svc_chain}"),
        ]
    };
    r.chain(&ext_chain, None, ext_rules);
    for ip in &sp.external_ips {
        r.element(
            "service-ips",
            format!("{ip} . {proto} . {}", sp.port),
            format!("goto {ext_chain}"),
        );
    }
    if let Some(np) = sp.node_port {
        r.element(
            "service-nodeports",
            format!("{proto} . {np}"),
            format!("goto {ext_chain}"),
        );
    }
}

fn element_text(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_string()
    } else {
        format!("{key} : {value}")
    }
}

/// Elements per `add element` command: nft reads long lists faster than
/// many commands.
const ELEMENTS_PER_COMMAND: usize = 2000;

fn add_elements<'a>(
    out: &mut String,
    table: &str,
    set: &str,
    items: impl Iterator<Item = (&'a String, &'a String)>,
) {
    let items: Vec<String> = items.map(|(k, v)| element_text(k, v)).collect();
    for chunk in items.chunks(ELEMENTS_PER_COMMAND) {
        let _ = writeln!(
            out,
            "add element ip {table} {set} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// A definition with values is a map, else a set.
fn set_keyword(def: &str) -> &'static str {
    if def.contains(": verdict") {
        "map"
    } else {
        "set"
    }
}

fn add_chain(out: &mut String, table: &str, name: &str, c: &Chain) {
    match c.hook {
        Some(h) => {
            let _ = writeln!(out, "add chain ip {table} {name} {{ {h} }}");
        }
        None => {
            let _ = writeln!(out, "add chain ip {table} {name}");
        }
    }
}

fn add_rules(out: &mut String, table: &str, name: &str, c: &Chain) {
    for rule in &c.rules {
        let _ = writeln!(out, "add rule ip {table} {name} {rule}");
    }
}

/// The transaction that makes the table exactly `want`, whatever is there.
pub fn full(want: &Ruleset) -> String {
    let t = &want.table;
    let mut out = String::new();
    // `add` first so that `delete` cannot fail on a missing table.
    let _ = writeln!(out, "add table ip {t}");
    let _ = writeln!(out, "delete table ip {t}");
    let _ = writeln!(out, "add table ip {t}");
    for (name, def) in &want.sets {
        let _ = writeln!(out, "add {} ip {t} {name} {def}", set_keyword(def));
    }
    for (name, c) in &want.chains {
        add_chain(&mut out, t, name, c);
    }
    for (name, c) in &want.chains {
        add_rules(&mut out, t, name, c);
    }
    for (set, items) in &want.elements {
        add_elements(&mut out, t, set, items.iter());
    }
    out
}

/// The transaction that turns `have` (last written) into `want`: new sets
/// and chains, changed chains rewritten, elements added and removed, and
/// what is gone removed last, once nothing refers to it. Empty when
/// nothing changed.
pub fn incremental(have: &Ruleset, want: &Ruleset) -> String {
    let t = &want.table;
    let mut out = String::new();
    for (name, def) in &want.sets {
        match have.sets.get(name) {
            Some(d) if d == def => {}
            _ => {
                let _ = writeln!(out, "add {} ip {t} {name} {def}", set_keyword(def));
            }
        }
    }
    for (name, c) in &want.chains {
        if !have.chains.contains_key(name) {
            add_chain(&mut out, t, name, c);
        }
    }
    for (name, c) in &want.chains {
        match have.chains.get(name) {
            Some(h) if h == c => {}
            Some(_) => {
                let _ = writeln!(out, "flush chain ip {t} {name}");
                add_rules(&mut out, t, name, c);
            }
            None => add_rules(&mut out, t, name, c),
        }
    }
    let empty = BTreeMap::new();
    let sets: BTreeSet<&String> = have.elements.keys().chain(want.elements.keys()).collect();
    for set in &sets {
        let old = have.elements.get(*set).unwrap_or(&empty);
        let new = want.elements.get(*set).unwrap_or(&empty);
        let gone: Vec<&String> = old
            .iter()
            .filter(|(k, v)| new.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        for chunk in gone.chunks(ELEMENTS_PER_COMMAND) {
            let keys: Vec<&str> = chunk.iter().map(|k| k.as_str()).collect();
            let _ = writeln!(out, "delete element ip {t} {set} {{ {} }}", keys.join(", "));
        }
        add_elements(
            &mut out,
            t,
            set,
            new.iter().filter(|(k, v)| old.get(*k) != Some(v)),
        );
    }
    let gone: Vec<&String> = have
        .chains
        .keys()
        .filter(|n| !want.chains.contains_key(*n))
        .collect();
    for name in &gone {
        let _ = writeln!(out, "flush chain ip {t} {name}");
    }
    for name in &gone {
        let _ = writeln!(out, "delete chain ip {t} {name}");
    }
    for name in have.sets.keys().filter(|n| !want.sets.contains_key(*n)) {
        let _ = writeln!(
            out,
            "delete {} ip {t} {name}",
            set_keyword(&have.sets[name])
        );
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("nft refused the transaction: {0}")]
    Refused(String),
}

/// Run one transaction with `nft -f -`.
pub async fn apply(script: &str) -> Result<(), NftError> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let script = script.to_owned();
    // Written beside the wait, so a full stderr pipe cannot stall either.
    let writer = tokio::spawn(async move {
        stdin.write_all(script.as_bytes()).await?;
        stdin.shutdown().await
    });
    let out = child.wait_with_output().await?;
    if let Ok(Err(e)) = writer.await {
        if out.status.success() {
            return Err(NftError::Spawn(e));
        }
    }
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(NftError::Refused(
            err.lines().take(6).collect::<Vec<_>>().join(" | "),
        ))
    }
}

/// Whether the table still holds what was written: its base chain still
/// jumps to the services (a flushed or deleted table does not).
pub async fn intact(table: &str) -> Result<bool, NftError> {
    let out = tokio::process::Command::new("nft")
        .args(["list", "chain", "ip", table, "nat-prerouting"])
        .stderr(std::process::Stdio::null())
        .output()
        .await?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("jump services"))
}

#[cfg(test)]
mod tests {
    use super::super::model::Protocol;
    use super::*;

    fn sp(name: &str, eps: &[&str], node_port: Option<u16>) -> ServicePort {
        ServicePort {
            namespace: "d".into(),
            name: name.into(),
            port_name: String::new(),
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ip: Some("10.96.0.20".parse().unwrap()),
            external_ips: vec![],
            node_port,
            affinity: None,
            local_external: false,
            endpoints: eps
                .iter()
                .map(|ip| Endpoint {
                    ip: ip.parse().unwrap(),
                    port: 8080,
                    local: false,
                })
                .collect(),
        }
    }

    fn settings() -> Settings {
        Settings {
            table: "t".into(),
            cluster_cidr: "10.244.0.0/16".into(),
        }
    }

    #[test]
    fn an_endpoint_change_rewrites_one_chain_and_one_element() {
        let a = ruleset(
            &settings(),
            &[sp("web", &["10.244.1.5", "10.244.2.7"], None)],
        );
        let b = ruleset(&settings(), &[sp("web", &["10.244.1.5"], None)]);
        let script = incremental(&a, &b);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(
            lines,
            [
                "flush chain ip t svc-d/web/tcp/p80",
                "add rule ip t svc-d/web/tcp/p80 meta l4proto tcp dnat to 10.244.1.5:8080",
                "delete element ip t hairpin { 10.244.2.7 . 10.244.2.7 }",
            ]
        );
        assert_eq!(incremental(&b, &b), "");
        let two = &a.chains["svc-d/web/tcp/p80"].rules;
        assert_eq!(
            two,
            &[
                "numgen random mod 2 0 meta l4proto tcp dnat to 10.244.1.5:8080",
                "meta l4proto tcp dnat to 10.244.2.7:8080",
            ]
        );
    }

    #[test]
    fn affinity_goes_through_a_chain_per_endpoint_that_remembers_the_client() {
        let mut web = sp("web", &["10.244.1.5", "10.244.2.7"], None);
        web.affinity = Some(60);
        let r = ruleset(&settings(), &[web]);
        let svc = &r.chains["svc-d/web/tcp/p80"].rules;
        assert_eq!(
            svc[0],
            "ip saddr @aff-d/web/tcp/p80__10.244.1.5/8080 goto sep-d/web/tcp/p80__10.244.1.5/8080"
        );
        assert_eq!(
            svc[2],
            "numgen random mod 2 0 goto sep-d/web/tcp/p80__10.244.1.5/8080"
        );
        assert_eq!(
            r.chains["sep-d/web/tcp/p80__10.244.2.7/8080"].rules,
            [
                "update @aff-d/web/tcp/p80__10.244.2.7/8080 { ip saddr }",
                "meta l4proto tcp dnat to 10.244.2.7:8080"
            ]
        );
        assert!(r.sets["aff-d/web/tcp/p80__10.244.1.5/8080"].contains("timeout 60s"));
    }

    #[test]
    fn a_service_losing_its_endpoints_moves_to_the_reject_set() {
        let a = ruleset(&settings(), &[sp("web", &["10.244.1.5"], Some(30080))]);
        let b = ruleset(&settings(), &[sp("web", &[], Some(30080))]);
        let script = incremental(&a, &b);
        assert!(script.contains("delete element ip t service-ips { 10.96.0.20 . tcp . 80 }"));
        assert!(script.contains("add element ip t no-endpoint-services { 10.96.0.20 . tcp . 80 }"));
        assert!(script.contains("add element ip t no-endpoint-nodeports { tcp . 30080 }"));
        // Elements go before the chains they pointed at.
        let del_el = script
            .find("delete element ip t service-nodeports")
            .unwrap();
        let del_chain = script.find("delete chain ip t ext-d/web/tcp/p80").unwrap();
        assert!(del_el < del_chain);
        assert!(full(&b).starts_with("add table ip t\ndelete table ip t\nadd table ip t\n"));
    }
}
