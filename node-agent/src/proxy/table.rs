//! The proxy's nftables table, in the shape of kube-proxy's nftables mode:
//! a verdict map from (address, protocol, port) to a chain per service
//! port, which picks an endpoint with `numgen random` and DNATs to it
//! (through a chain of the endpoint's own when ClientIP affinity must
//! remember the client). Lookup is one map lookup whatever the number of
//! services; a pod reaching itself through its Service is masqueraded by
//! one rule over a set of (endpoint, endpoint) pairs.
//!
//! A [`Table`] holds what the kernel was last given, each service port's
//! part kept apart, and turns the next list of service ports into the
//! [`Transaction`] that makes the kernel's table match it: everything at
//! first (or after [`Table::reset`]), later only the parts of the service
//! ports that changed. Elements several service ports put in one set (a
//! Service's virtual IP, an endpoint in two Services) are counted, and
//! removed with the last of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::model::{Endpoint, ServicePort};
use super::rules::{
    Action, BaseChain, Cidr, Datum, Element, Field, Hook, Key, Match, Rule, SetDef, Verdict,
};

/// Marked packets are masqueraded on their way out.
const MASQUERADE_MARK: u32 = 0x4000;

const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const CLUSTER_IPS: &str = "cluster-ips";
const HAIRPIN: &str = "hairpin";

/// Where the table lives and what it treats as inside the cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    pub table: String,
    /// Pod addresses (the cluster CIDR); traffic from them keeps its
    /// source, traffic from them to anywhere else is masqueraded.
    pub cluster_cidr: Cidr,
}

/// One change to the table; a [`Transaction`] applies a list of them at
/// once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddTable,
    DeleteTable,
    AddSet(String, SetDef),
    DeleteSet(String),
    AddChain(String, Option<BaseChain>),
    FlushChain(String),
    DeleteChain(String),
    AddRule(String, Rule),
    /// Elements, each with its verdict in a map.
    AddElements(String, Vec<(Element, Option<Verdict>)>),
    DeleteElements(String, Vec<Element>),
}

/// What one sync writes: all of it is applied, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    pub table: String,
    /// Written from nothing.
    pub full: bool,
    pub ops: Vec<Op>,
}

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// As an `nft -f` script.
impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.table;
        for op in &self.ops {
            match op {
                Op::AddTable => writeln!(f, "add table ip {t}")?,
                Op::DeleteTable => writeln!(f, "delete table ip {t}")?,
                Op::AddSet(name, def) => writeln!(f, "add {} ip {t} {name} {def}", def.keyword())?,
                Op::DeleteSet(name) => writeln!(f, "delete set ip {t} {name}")?,
                Op::AddChain(name, None) => writeln!(f, "add chain ip {t} {name}")?,
                Op::AddChain(name, Some(base)) => {
                    writeln!(f, "add chain ip {t} {name} {{ {base} }}")?
                }
                Op::FlushChain(name) => writeln!(f, "flush chain ip {t} {name}")?,
                Op::DeleteChain(name) => writeln!(f, "delete chain ip {t} {name}")?,
                Op::AddRule(chain, rule) => writeln!(f, "add rule ip {t} {chain} {rule}")?,
                Op::AddElements(set, items) => {
                    let items: Vec<String> = items
                        .iter()
                        .map(|(k, v)| match v {
                            Some(v) => format!("{k} : {v}"),
                            None => k.to_string(),
                        })
                        .collect();
                    writeln!(f, "add element ip {t} {set} {{ {} }}", items.join(", "))?
                }
                Op::DeleteElements(set, keys) => {
                    let keys: Vec<String> = keys.iter().map(Element::to_string).collect();
                    writeln!(f, "delete element ip {t} {set} {{ {} }}", keys.join(", "))?
                }
            }
        }
        Ok(())
    }
}

type ElementKey = (&'static str, Element);

/// A service port's part of the table.
#[derive(Debug, Clone)]
struct Part {
    port: ServicePort,
    sets: Vec<(String, SetDef)>,
    chains: Vec<(String, Vec<Rule>)>,
    elements: Vec<(ElementKey, Option<Verdict>)>,
}

/// The table as last written, and how to change it.
#[derive(Debug)]
pub struct Table {
    settings: Settings,
    /// Whether the kernel holds what this says (else the next sync
    /// writes it whole).
    written: bool,
    parts: HashMap<String, Part>,
    /// Each element, with how many parts want it with each value (the
    /// least value is the one written).
    elements: HashMap<ElementKey, BTreeMap<Option<Verdict>, u32>>,
    base_chains: usize,
    base_rules: usize,
}

impl Table {
    pub fn new(settings: Settings) -> Table {
        Table {
            settings,
            written: false,
            parts: HashMap::new(),
            elements: HashMap::new(),
            base_chains: 0,
            base_rules: 0,
        }
    }

    /// Whether the kernel holds what this says (a sync was made since
    /// the last reset).
    pub fn is_written(&self) -> bool {
        self.written
    }

    /// Forget what was written: the next sync writes the table whole.
    pub fn reset(&mut self) {
        self.written = false;
    }

    pub fn chains(&self) -> usize {
        self.base_chains + self.parts.values().map(|p| p.chains.len()).sum::<usize>()
    }

    pub fn rules(&self) -> usize {
        let parts: usize = self
            .parts
            .values()
            .flat_map(|p| &p.chains)
            .map(|(_, rules)| rules.len())
            .sum();
        self.base_rules + parts
    }

    pub fn elements(&self) -> usize {
        self.elements.len()
    }

    /// The transaction that makes the kernel's table serve `ports`,
    /// counted as written from here on (call [`Table::reset`] when it
    /// fails).
    pub fn sync(&mut self, ports: &[ServicePort]) -> Transaction {
        let mut ops = Vec::new();
        let full = !self.written;
        if full {
            // `add` first so that `delete` cannot fail on a missing table.
            ops.extend([Op::AddTable, Op::DeleteTable, Op::AddTable]);
            let (sets, chains) = base(&self.settings);
            self.base_chains = chains.len();
            self.base_rules = chains.iter().map(|(_, _, r)| r.len()).sum();
            for (name, def) in sets {
                ops.push(Op::AddSet(name.into(), def));
            }
            for (name, hook, _) in &chains {
                ops.push(Op::AddChain(name.to_string(), *hook));
            }
            for (name, _, rules) in chains {
                ops.extend(rules.into_iter().map(|r| Op::AddRule(name.into(), r)));
            }
            self.parts.clear();
            self.elements.clear();
            self.written = true;
        }
        // The parts that changed: (what was written, what is wanted).
        let mut changes: Vec<(Option<Part>, Option<Part>)> = Vec::new();
        let mut wanted = HashSet::with_capacity(ports.len());
        for p in ports {
            let id = p.id();
            if self.parts.get(&id).is_some_and(|old| old.port == *p) {
                wanted.insert(id);
                continue;
            }
            let new = part(&self.settings.cluster_cidr, p);
            changes.push((self.parts.remove(&id), Some(new)));
            wanted.insert(id);
        }
        let gone: Vec<String> = self
            .parts
            .keys()
            .filter(|id| !wanted.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            changes.push((self.parts.remove(&id), None));
        }
        self.apply_changes(&mut ops, changes);
        Transaction {
            table: self.settings.table.clone(),
            full,
            ops,
        }
    }

    fn apply_changes(&mut self, ops: &mut Vec<Op>, changes: Vec<(Option<Part>, Option<Part>)>) {
        let mut gone_chains = Vec::new();
        let mut gone_sets = Vec::new();
        // Elements as they were before these changes.
        let mut before: HashMap<ElementKey, Option<Option<Verdict>>> = HashMap::new();
        let mut rewritten = Vec::new();
        let (no_sets, no_chains) = (Vec::new(), Vec::new());
        for (old, new) in &changes {
            let old_sets = old.as_ref().map_or(&no_sets, |o| &o.sets);
            let new_sets = new.as_ref().map_or(&no_sets, |n| &n.sets);
            for (name, def) in new_sets {
                if !old_sets.iter().any(|(n, d)| n == name && d == def) {
                    ops.push(Op::AddSet(name.clone(), def.clone()));
                }
            }
            for (name, def) in old_sets {
                if !new_sets.iter().any(|(n, d)| n == name && d == def) {
                    gone_sets.push(name.clone());
                }
            }
            let old_chains = old.as_ref().map_or(&no_chains, |o| &o.chains);
            let new_chains = new.as_ref().map_or(&no_chains, |n| &n.chains);
            for (name, rules) in new_chains {
                match old_chains.iter().find(|(n, _)| n == name) {
                    Some((_, r)) if r == rules => {}
                    Some(_) => {
                        ops.push(Op::FlushChain(name.clone()));
                        rewritten.push((name, rules));
                    }
                    None => {
                        ops.push(Op::AddChain(name.clone(), None));
                        rewritten.push((name, rules));
                    }
                }
            }
            for (name, _) in old_chains {
                if !new_chains.iter().any(|(n, _)| n == name) {
                    gone_chains.push(name.clone());
                }
            }
            for (key, value) in old.iter().flat_map(|o| &o.elements) {
                let refs = self.elements.entry(key.clone()).or_default();
                before
                    .entry(key.clone())
                    .or_insert_with(|| refs.keys().next().cloned());
                if let Some(n) = refs.get_mut(value) {
                    *n -= 1;
                    if *n == 0 {
                        refs.remove(value);
                    }
                }
            }
            for (key, value) in new.iter().flat_map(|n| &n.elements) {
                let refs = self.elements.entry(key.clone()).or_default();
                before
                    .entry(key.clone())
                    .or_insert_with(|| refs.keys().next().cloned());
                *refs.entry(value.clone()).or_default() += 1;
            }
        }
        for (name, rules) in rewritten {
            ops.extend(rules.iter().map(|r| Op::AddRule(name.clone(), r.clone())));
        }
        // Element changes, set by set, removals first.
        let mut adds: BTreeMap<&'static str, Vec<(Element, Option<Verdict>)>> = BTreeMap::new();
        let mut dels: BTreeMap<&'static str, Vec<Element>> = BTreeMap::new();
        for (key, was) in before {
            let now = match self.elements.get(&key) {
                Some(refs) if refs.is_empty() => {
                    self.elements.remove(&key);
                    None
                }
                Some(refs) => refs.keys().next().cloned(),
                None => None,
            };
            if was == now {
                continue;
            }
            let (set, element) = key;
            if was.is_some() {
                dels.entry(set).or_default().push(element.clone());
            }
            if let Some(value) = now {
                adds.entry(set).or_default().push((element, value));
            }
        }
        for (set, mut keys) in dels {
            keys.sort();
            ops.push(Op::DeleteElements(set.into(), keys));
        }
        for (set, mut items) in adds {
            items.sort();
            ops.push(Op::AddElements(set.into(), items));
        }
        // What is gone goes last, once nothing refers to it.
        ops.extend(gone_chains.iter().map(|c| Op::FlushChain(c.clone())));
        ops.extend(gone_chains.into_iter().map(Op::DeleteChain));
        ops.extend(gone_sets.into_iter().map(Op::DeleteSet));
        for (_, new) in changes {
            if let Some(new) = new {
                self.parts.insert(new.port.id(), new);
            }
        }
    }
}

type BaseChains = Vec<(&'static str, Option<BaseChain>, Vec<Rule>)>;

fn jump(chain: &str) -> Action {
    Action::Verdict(Verdict::Jump(chain.into()))
}

fn goto(chain: &str) -> Action {
    Action::Verdict(Verdict::Goto(chain.into()))
}

fn in_cluster(cidr: Cidr, field: Field, is: bool) -> Match {
    Match::Net {
        field,
        net: cidr,
        is,
    }
}

fn local(field: Field, is: bool) -> Match {
    Match::Local { field, is }
}

/// The sets and chains every table has, whatever the services.
fn base(settings: &Settings) -> (Vec<(&'static str, SetDef)>, BaseChains) {
    let cidr = settings.cluster_cidr;
    let sets = vec![
        (SERVICE_IPS, SetDef::map(Key::DaddrProtoPort)),
        (SERVICE_NODEPORTS, SetDef::map(Key::ProtoPort)),
        (NO_ENDPOINT_SERVICES, SetDef::set(Key::DaddrProtoPort)),
        (NO_ENDPOINT_NODEPORTS, SetDef::set(Key::ProtoPort)),
        (CLUSTER_IPS, SetDef::set(Key::Daddr)),
        (HAIRPIN, SetDef::set(Key::SaddrDaddr)),
    ];
    let nat = |hook, priority| {
        Some(BaseChain {
            nat: true,
            hook,
            priority,
        })
    };
    let filter = |hook| {
        Some(BaseChain {
            nat: false,
            hook,
            priority: -110,
        })
    };
    let check = || {
        vec![Rule::new(
            vec![Match::NewConnection],
            jump("endpoints-check"),
        )]
    };
    let chains: BaseChains = vec![
        (
            "nat-prerouting",
            nat(Hook::Prerouting, -100),
            vec![Rule::always(jump("services"))],
        ),
        (
            "nat-output",
            nat(Hook::Output, -100),
            vec![Rule::always(jump("services"))],
        ),
        (
            "nat-postrouting",
            nat(Hook::Postrouting, 100),
            vec![
                Rule::always(jump("masquerading")),
                // A pod that reached itself through a Service.
                Rule::new(
                    vec![Match::In {
                        key: Key::SaddrDaddr,
                        set: HAIRPIN.into(),
                    }],
                    Action::Masquerade {
                        fully_random: false,
                    },
                ),
                // Pods reaching outside the cluster leave with the node's address.
                Rule::new(
                    vec![
                        in_cluster(cidr, Field::Saddr, true),
                        in_cluster(cidr, Field::Daddr, false),
                        local(Field::Daddr, false),
                    ],
                    Action::Masquerade {
                        fully_random: false,
                    },
                ),
            ],
        ),
        ("filter-input", filter(Hook::Input), check()),
        ("filter-forward", filter(Hook::Forward), check()),
        ("filter-output", filter(Hook::Output), check()),
        (
            "endpoints-check",
            None,
            vec![
                // A service with no ready endpoint refuses at once.
                Rule::new(
                    vec![Match::In {
                        key: Key::DaddrProtoPort,
                        set: NO_ENDPOINT_SERVICES.into(),
                    }],
                    Action::Reject,
                ),
                Rule::new(
                    vec![
                        local(Field::Daddr, true),
                        Match::In {
                            key: Key::ProtoPort,
                            set: NO_ENDPOINT_NODEPORTS.into(),
                        },
                    ],
                    Action::Reject,
                ),
            ],
        ),
        (
            "mark-for-masquerade",
            None,
            vec![Rule::always(Action::MarkOr(MASQUERADE_MARK))],
        ),
        (
            "masquerading",
            None,
            vec![
                Rule::new(
                    vec![Match::MarkClear(MASQUERADE_MARK)],
                    Action::Verdict(Verdict::Return),
                ),
                Rule::always(Action::MarkXor(MASQUERADE_MARK)),
                Rule::always(Action::Masquerade { fully_random: true }),
            ],
        ),
        (
            "services",
            None,
            vec![
                // From outside the pod network (the node itself) to a
                // cluster IP: masquerade, so that the reply comes back
                // this way.
                Rule::new(
                    vec![
                        in_cluster(cidr, Field::Saddr, false),
                        Match::In {
                            key: Key::Daddr,
                            set: CLUSTER_IPS.into(),
                        },
                    ],
                    jump("mark-for-masquerade"),
                ),
                Rule::always(Action::Vmap {
                    key: Key::DaddrProtoPort,
                    map: SERVICE_IPS.into(),
                }),
                Rule::new(
                    vec![
                        local(Field::Daddr, true),
                        Match::Net {
                            field: Field::Daddr,
                            net: Cidr {
                                addr: std::net::Ipv4Addr::new(127, 0, 0, 0),
                                prefix: 8,
                            },
                            is: false,
                        },
                    ],
                    Action::Vmap {
                        key: Key::ProtoPort,
                        map: SERVICE_NODEPORTS.into(),
                    },
                ),
            ],
        ),
    ];
    (sets, chains)
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
fn pick(actions: &[(Vec<Match>, Action)]) -> Vec<Rule> {
    let n = actions.len();
    actions
        .iter()
        .enumerate()
        .map(|(k, (matches, action))| {
            let mut m = Vec::with_capacity(matches.len() + 1);
            if k + 1 < n {
                m.push(Match::OneIn((n - k) as u32));
            }
            m.extend(matches.iter().cloned());
            Rule::new(m, action.clone())
        })
        .collect()
}

/// A service port's (VIP, protocol, port) key.
fn vip_key(ip: std::net::Ipv4Addr, sp: &ServicePort) -> Element {
    Element(vec![
        Datum::Ip(ip),
        Datum::Proto(sp.protocol),
        Datum::Port(sp.port),
    ])
}

fn node_port_key(sp: &ServicePort, np: u16) -> Element {
    Element(vec![Datum::Proto(sp.protocol), Datum::Port(np)])
}

/// One service port's sets, chains and elements.
fn part(cidr: &Cidr, sp: &ServicePort) -> Part {
    let mut p = Part {
        port: sp.clone(),
        sets: Vec::new(),
        chains: Vec::new(),
        elements: Vec::new(),
    };
    let mut element = |set: &'static str, key: Element, value: Option<Verdict>| {
        p.elements.push(((set, key), value));
    };
    let id = sp.id();
    let external = sp.node_port.is_some() || !sp.external_ips.is_empty();
    if sp.endpoints.is_empty() {
        for ip in sp.cluster_ip.iter().chain(&sp.external_ips) {
            element(NO_ENDPOINT_SERVICES, vip_key(*ip, sp), None);
        }
        if let Some(np) = sp.node_port {
            element(NO_ENDPOINT_NODEPORTS, node_port_key(sp, np), None);
        }
        return p;
    }
    let svc_chain = format!("svc-{id}");
    let ext_chain = format!("ext-{id}");
    if let Some(vip) = sp.cluster_ip {
        element(CLUSTER_IPS, Element(vec![Datum::Ip(vip)]), None);
        element(
            SERVICE_IPS,
            vip_key(vip, sp),
            Some(Verdict::Goto(svc_chain.clone())),
        );
    }
    if external {
        for ip in &sp.external_ips {
            element(
                SERVICE_IPS,
                vip_key(*ip, sp),
                Some(Verdict::Goto(ext_chain.clone())),
            );
        }
        if let Some(np) = sp.node_port {
            element(
                SERVICE_NODEPORTS,
                node_port_key(sp, np),
                Some(Verdict::Goto(ext_chain.clone())),
            );
        }
    }
    // What sends a connection to each endpoint: a DNAT in the service's
    // chain, or, with ClientIP affinity, a chain of the endpoint's own
    // that also remembers the client.
    let mut actions = Vec::new();
    let mut local_actions = Vec::new();
    let mut svc_rules = Vec::new();
    for e in &sp.endpoints {
        // A pod reaching itself through the Service is masqueraded.
        element(
            HAIRPIN,
            Element(vec![Datum::Ip(e.ip), Datum::Ip(e.ip)]),
            None,
        );
        let dnat = (
            vec![Match::L4Proto(sp.protocol)],
            Action::Dnat(e.ip, e.port),
        );
        let action = match sp.affinity {
            None => dnat,
            Some(timeout) => {
                let eid = endpoint_id(&id, e);
                // The timeout is in the set's name: a set cannot change
                // its definition in place.
                let (sep, set) = (format!("sep-{eid}"), format!("aff{timeout}-{eid}"));
                p.sets.push((
                    set.clone(),
                    SetDef {
                        key: Key::Saddr,
                        map: false,
                        timeout: Some(timeout),
                    },
                ));
                svc_rules.push(Rule::new(
                    vec![Match::In {
                        key: Key::Saddr,
                        set: set.clone(),
                    }],
                    goto(&sep),
                ));
                let remember = Rule::always(Action::Remember {
                    set,
                    key: Key::Saddr,
                });
                p.chains
                    .push((sep.clone(), vec![remember, Rule::new(dnat.0, dnat.1)]));
                (Vec::new(), goto(&sep))
            }
        };
        if e.local {
            local_actions.push(action.clone());
        }
        actions.push(action);
    }
    svc_rules.extend(pick(&actions));
    p.chains.push((svc_chain.clone(), svc_rules));
    if !external {
        return p;
    }
    let ext_rules = if sp.local_external {
        // Pods and the node itself may use any endpoint; from outside,
        // only this node's, keeping the client's address.
        let mut rules = vec![
            Rule::new(
                vec![in_cluster(*cidr, Field::Saddr, true)],
                goto(&svc_chain),
            ),
            Rule::new(vec![local(Field::Saddr, true)], jump("mark-for-masquerade")),
            Rule::new(vec![local(Field::Saddr, true)], goto(&svc_chain)),
        ];
        if local_actions.is_empty() {
            rules.push(Rule::always(Action::Verdict(Verdict::Drop)));
        } else {
            rules.extend(pick(&local_actions));
        }
        rules
    } else {
        vec![
            Rule::always(jump("mark-for-masquerade")),
            Rule::always(goto(&svc_chain)),
        ]
    };
    p.chains.push((ext_chain, ext_rules));
    p
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

    fn table() -> Table {
        Table::new(Settings {
            table: "t".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        })
    }

    fn lines(tx: &Transaction) -> Vec<String> {
        tx.to_string().lines().map(String::from).collect()
    }

    #[test]
    fn an_endpoint_change_rewrites_one_chain_and_one_element() {
        let mut t = table();
        let full = t.sync(&[sp("web", &["10.244.1.5", "10.244.2.7"], None)]);
        assert!(full.full);
        let full = lines(&full);
        assert_eq!(
            full[..3],
            ["add table ip t", "delete table ip t", "add table ip t"]
        );
        assert!(full.contains(
            &"add rule ip t svc-d/web/tcp/p80 numgen random mod 2 0 meta l4proto tcp dnat to 10.244.1.5:8080"
                .to_string()
        ));
        let change = t.sync(&[sp("web", &["10.244.1.5"], None)]);
        assert!(!change.full);
        assert_eq!(
            lines(&change),
            [
                "flush chain ip t svc-d/web/tcp/p80",
                "add rule ip t svc-d/web/tcp/p80 meta l4proto tcp dnat to 10.244.1.5:8080",
                "delete element ip t hairpin { 10.244.2.7 . 10.244.2.7 }",
            ]
        );
        assert!(t.sync(&[sp("web", &["10.244.1.5"], None)]).is_empty());
    }

    #[test]
    fn an_element_two_services_share_stays_until_both_are_gone() {
        let mut t = table();
        let mut db = sp("db", &["10.244.1.5"], None);
        db.cluster_ip = Some("10.96.0.30".parse().unwrap());
        t.sync(&[sp("web", &["10.244.1.5"], None), db.clone()]);
        let hairpin = "10.244.1.5 . 10.244.1.5";
        let one_gone = t.sync(&[db]).to_string();
        assert!(!one_gone.contains(hairpin), "{one_gone}");
        assert!(one_gone.contains("delete element ip t service-ips { 10.96.0.20 . tcp . 80 }"));
        let both_gone = t.sync(&[]).to_string();
        assert!(
            both_gone.contains(&format!("delete element ip t hairpin {{ {hairpin} }}")),
            "{both_gone}"
        );
        assert_eq!(t.elements(), 0);
        assert_eq!(t.chains(), t.base_chains);
    }

    #[test]
    fn affinity_goes_through_a_chain_per_endpoint_that_remembers_the_client() {
        let mut web = sp("web", &["10.244.1.5", "10.244.2.7"], None);
        web.affinity = Some(60);
        let tx = table().sync(&[web]).to_string();
        for line in [
            "add set ip t aff60-d/web/tcp/p80__10.244.1.5/8080 { type ipv4_addr; flags dynamic,timeout; timeout 60s; }",
            "add rule ip t svc-d/web/tcp/p80 ip saddr @aff60-d/web/tcp/p80__10.244.1.5/8080 goto sep-d/web/tcp/p80__10.244.1.5/8080",
            "add rule ip t svc-d/web/tcp/p80 numgen random mod 2 0 goto sep-d/web/tcp/p80__10.244.1.5/8080",
            "add rule ip t sep-d/web/tcp/p80__10.244.2.7/8080 update @aff60-d/web/tcp/p80__10.244.2.7/8080 { ip saddr }",
            "add rule ip t sep-d/web/tcp/p80__10.244.2.7/8080 meta l4proto tcp dnat to 10.244.2.7:8080",
        ] {
            assert!(tx.lines().any(|l| l == line), "{line} not in\n{tx}");
        }
    }

    #[test]
    fn a_service_losing_its_endpoints_moves_to_the_reject_set() {
        let mut t = table();
        t.sync(&[sp("web", &["10.244.1.5"], Some(30080))]);
        let tx = t.sync(&[sp("web", &[], Some(30080))]).to_string();
        assert!(tx.contains("delete element ip t service-ips { 10.96.0.20 . tcp . 80 }"));
        assert!(tx.contains("add element ip t no-endpoint-services { 10.96.0.20 . tcp . 80 }"));
        assert!(tx.contains("add element ip t no-endpoint-nodeports { tcp . 30080 }"));
        // Elements go before the chains they pointed at.
        let del_el = tx.find("delete element ip t service-nodeports").unwrap();
        let del_chain = tx.find("delete chain ip t ext-d/web/tcp/p80").unwrap();
        assert!(del_el < del_chain);
        // After a reset, the table is written whole.
        t.reset();
        assert!(t.sync(&[sp("web", &[], Some(30080))]).full);
    }
}
