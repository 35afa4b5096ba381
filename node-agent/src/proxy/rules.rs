//! The proxy's nftables objects as data: sets, chains and rules, each rule
//! a list of matches and one action. [`netlink`](super::netlink) writes
//! them to the kernel; `Display` prints them in `nft`'s own syntax (as
//! `nft list` shows them), for logs and tests.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::model::Protocol;

/// An IPv4 network, `10.244.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IPv4 CIDR (like 10.244.0.0/16)")]
pub struct BadCidr(String);

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(s: &str) -> Result<Cidr, BadCidr> {
        let bad = || BadCidr(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let c = Cidr { addr, prefix };
        // The network's own address, host bits cleared.
        Ok(Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & c.mask()),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A packet field a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Saddr,
    Daddr,
    L4Proto,
    Dport,
}

impl Field {
    fn nft(self) -> &'static str {
        match self {
            Field::Saddr => "ip saddr",
            Field::Daddr => "ip daddr",
            Field::L4Proto => "meta l4proto",
            Field::Dport => "th dport",
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Field::Saddr | Field::Daddr => "ipv4_addr",
            Field::L4Proto => "inet_proto",
            Field::Dport => "inet_service",
        }
    }
}

/// What a set is keyed by, and what a lookup in it reads: one field or a
/// concatenation of fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Saddr,
    Daddr,
    SaddrDaddr,
    DaddrProtoPort,
    ProtoPort,
}

impl Key {
    pub fn fields(self) -> &'static [Field] {
        match self {
            Key::Saddr => &[Field::Saddr],
            Key::Daddr => &[Field::Daddr],
            Key::SaddrDaddr => &[Field::Saddr, Field::Daddr],
            Key::DaddrProtoPort => &[Field::Daddr, Field::L4Proto, Field::Dport],
            Key::ProtoPort => &[Field::L4Proto, Field::Dport],
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self.fields().iter().map(|f| f.nft()).collect();
        f.write_str(&parts.join(" . "))
    }
}

/// One value of an element's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Datum {
    Ip(Ipv4Addr),
    Proto(Protocol),
    Port(u16),
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datum::Ip(ip) => write!(f, "{ip}"),
            Datum::Proto(p) => f.write_str(p.nft()),
            Datum::Port(p) => write!(f, "{p}"),
        }
    }
}

/// A set's or map's element key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element(pub Vec<Datum>);

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Datum::to_string).collect();
        f.write_str(&parts.join(" . "))
    }
}

/// Where a rule or a map element sends the packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Drop => f.write_str("drop"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

/// A set, or a map to verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    pub key: Key,
    /// A verdict map.
    pub map: bool,
    /// Filled by rules, each element kept this many seconds after its
    /// last update.
    pub timeout: Option<u32>,
}

impl SetDef {
    pub fn set(key: Key) -> SetDef {
        SetDef {
            key,
            map: false,
            timeout: None,
        }
    }

    pub fn map(key: Key) -> SetDef {
        SetDef {
            key,
            map: true,
            timeout: None,
        }
    }

    pub fn keyword(&self) -> &'static str {
        if self.map {
            "map"
        } else {
            "set"
        }
    }
}

impl fmt::Display for SetDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types: Vec<&str> = self.key.fields().iter().map(|f| f.type_name()).collect();
        write!(f, "{{ type {}", types.join(" . "))?;
        if self.map {
            f.write_str(" : verdict")?;
        }
        if let Some(t) = self.timeout {
            write!(f, "; flags dynamic,timeout; timeout {t}s")?;
        }
        f.write_str("; }")
    }
}

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn nft(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// Where a base chain hangs: `type nat hook prerouting priority -100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub nat: bool,
    pub hook: Hook,
    pub priority: i32,
}

impl fmt::Display for BaseChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.nat { "nat" } else { "filter" };
        write!(
            f,
            "type {kind} hook {} priority {}; policy accept;",
            self.hook.nft(),
            self.priority
        )
    }
}

/// What a rule tests; a rule applies when all its matches hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `ip saddr 10.244.0.0/16`, or `!=` when not `is`.
    Net { field: Field, net: Cidr, is: bool },
    /// `fib daddr type local`, or `!=` when not `is`.
    Local { field: Field, is: bool },
    /// `ip daddr . meta l4proto . th dport @set`.
    In { key: Key, set: String },
    /// `ct state new`.
    NewConnection,
    /// `numgen random mod n 0`: true once in n, at random.
    OneIn(u32),
    /// `meta l4proto tcp`.
    L4Proto(Protocol),
    /// `meta mark & 0x4000 == 0`.
    MarkClear(u32),
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |is: bool| if is { "" } else { "!= " };
        match self {
            Match::Net { field, net, is } => write!(f, "{} {}{net}", field.nft(), not(*is)),
            Match::Local { field, is } => {
                let which = if *field == Field::Saddr {
                    "saddr"
                } else {
                    "daddr"
                };
                write!(f, "fib {which} type {}local", not(*is))
            }
            Match::In { key, set } => write!(f, "{key} @{set}"),
            Match::NewConnection => f.write_str("ct state new"),
            Match::OneIn(n) => write!(f, "numgen random mod {n} 0"),
            Match::L4Proto(p) => write!(f, "meta l4proto {}", p.nft()),
            Match::MarkClear(m) => write!(f, "meta mark & 0x{m:08x} == 0x00000000"),
        }
    }
}

/// What a rule does once its matches hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Verdict(Verdict),
    /// `ip daddr . meta l4proto . th dport vmap @map`.
    Vmap {
        key: Key,
        map: String,
    },
    /// Refuse at once (ICMP port unreachable).
    Reject,
    Masquerade {
        fully_random: bool,
    },
    /// `dnat to 10.244.1.5:8080`.
    Dnat(Ipv4Addr, u16),
    /// `meta mark set meta mark | 0x4000`.
    MarkOr(u32),
    /// `meta mark set meta mark ^ 0x4000`.
    MarkXor(u32),
    /// `update @set { ip saddr }`: remember the key, restarting its timeout.
    Remember {
        set: String,
        key: Key,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Verdict(v) => write!(f, "{v}"),
            Action::Vmap { key, map } => write!(f, "{key} vmap @{map}"),
            Action::Reject => f.write_str("reject"),
            Action::Masquerade { fully_random } => {
                f.write_str("masquerade")?;
                if *fully_random {
                    f.write_str(" fully-random")?;
                }
                Ok(())
            }
            Action::Dnat(ip, port) => write!(f, "dnat to {ip}:{port}"),
            Action::MarkOr(m) => write!(f, "meta mark set meta mark | 0x{m:08x}"),
            Action::MarkXor(m) => write!(f, "meta mark set meta mark ^ 0x{m:08x}"),
            Action::Remember { set, key } => write!(f, "update @{set} {{ {key} }}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
}

impl Rule {
    pub fn new(matches: Vec<Match>, action: Action) -> Rule {
        Rule { matches, action }
    }

    /// A rule that always takes `action`.
    pub fn always(action: Action) -> Rule {
        Rule::new(Vec::new(), action)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        write!(f, "{}", self.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_to_their_network() {
        let c: Cidr = "10.244.3.7/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert_eq!(c.mask(), 0xffff_0000);
        assert!("10.244.0.0".parse::<Cidr>().is_err());
        assert!("10.244.0.0/33".parse::<Cidr>().is_err());
        assert!("none/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn rules_print_as_nft_does() {
        let r = Rule::new(
            vec![
                Match::Net {
                    field: Field::Saddr,
                    net: "10.244.0.0/16".parse().unwrap(),
                    is: false,
                },
                Match::In {
                    key: Key::Daddr,
                    set: "cluster-ips".into(),
                },
            ],
            Action::Verdict(Verdict::Jump("mark-for-masquerade".into())),
        );
        assert_eq!(
            r.to_string(),
            "ip saddr != 10.244.0.0/16 ip daddr @cluster-ips jump mark-for-masquerade"
        );
    }
}
