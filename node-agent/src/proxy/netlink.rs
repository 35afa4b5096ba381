//! Writing the proxy's table to the kernel over netlink (nf_tables): a
//! [`Transaction`] becomes one batch of messages that the kernel applies
//! whole or not at all. Talking to the kernel directly spares the `nft`
//! program's parsing (about 2 s for 30,000 rules) and its reading the table
//! back before every change.
//!
//! Registers, expressions and attribute numbers are those of
//! `linux/netfilter/nf_tables.h`; rules are encoded as `nft` encodes them,
//! so `nft list` shows them as [`Rule`]'s `Display` prints them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use super::rules::{Action, Datum, Element, Field, Key, Match, Rule, SetDef, Verdict};
use super::table::{Op, Transaction};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_IPV4: u8 = 2;

/// nf_tables message types.
mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const DELCHAIN: u16 = 5;
    pub const NEWRULE: u16 = 6;
    pub const GETRULE: u16 = 7;
    pub const DELRULE: u16 = 8;
    pub const NEWSET: u16 = 9;
    pub const DELSET: u16 = 11;
    pub const NEWSETELEM: u16 = 12;
    pub const DELSETELEM: u16 = 14;
}

// Attributes of tables, chains, rules, sets and elements.
const TABLE_NAME: u16 = 1;
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
const CHAIN_HOOK: u16 = 4;
const CHAIN_POLICY: u16 = 5;
const CHAIN_TYPE: u16 = 7;
const HOOK_HOOKNUM: u16 = 1;
const HOOK_PRIORITY: u16 = 2;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_EXPRESSIONS: u16 = 4;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const SET_TABLE: u16 = 1;
const SET_NAME: u16 = 2;
const SET_FLAGS: u16 = 3;
const SET_KEY_TYPE: u16 = 4;
const SET_KEY_LEN: u16 = 5;
const SET_DATA_TYPE: u16 = 6;
const SET_ID: u16 = 10;
const SET_TIMEOUT: u16 = 11;
const SET_ELEM_LIST_TABLE: u16 = 1;
const SET_ELEM_LIST_SET: u16 = 2;
const SET_ELEM_LIST_ELEMENTS: u16 = 3;
const SET_ELEM_KEY: u16 = 1;
const SET_ELEM_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;

const SET_F_MAP: u32 = 0x8;
const SET_F_TIMEOUT: u32 = 0x10;
const SET_F_EVAL: u32 = 0x20;
/// The data type of a verdict map's values.
const DATA_TYPE_VERDICT: u32 = 0xffff_ff00;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// The verdict register, and the first of the 32-bit data registers
/// (the fields of a concatenation go in the ones after it).
const REG_VERDICT: u32 = 0;
const REG32_00: u32 = 8;

/// An element list attribute's length is 16 bits: a message's elements
/// stay under this many bytes, more go in the next message.
const ELEMENT_BYTES: usize = 60_000;

/// Room for one answer from the kernel.
const ANSWER_BYTES: usize = 1 << 18;

/// The kernel's answer to a batch comes within this.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("talking to nf_tables: {0}")]
    Io(#[from] io::Error),
    #[error("nf_tables refused `{op}`: {error}")]
    Refused { op: String, error: io::Error },
    #[error("nf_tables refused the batch: {0}")]
    Batch(io::Error),
    #[error("no answer from nf_tables in {0:?}")]
    NoAnswer(Duration),
}

/// Netlink messages being put together, with the op each came from.
struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// Each nf_tables message: its sequence number, the index of the op
    /// it came from, where it starts in `buf`.
    origin: Vec<(u32, usize, usize)>,
    next_set_id: u32,
}

impl Batch {
    fn new(seq: u32) -> Batch {
        Batch {
            buf: Vec::with_capacity(1 << 16),
            seq,
            origin: Vec::new(),
            next_set_id: 1,
        }
    }

    /// Start a message; returns where it starts, for [`Batch::end`].
    fn begin(&mut self, kind: u16, flags: u16, res_id: u16) -> usize {
        let start = self.buf.len();
        self.seq = self.seq.wrapping_add(1);
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by end
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id
                                                         // nfgenmsg: family, version, resource id.
        self.buf.push(NFPROTO_IPV4);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    fn nft_begin(&mut self, kind: u16, flags: u16, op: usize) -> usize {
        let start = self.begin((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, 0);
        self.origin.push((self.seq, op, start));
        start
    }

    fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn str(&mut self, kind: u16, s: &str) {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(kind, &data);
    }

    fn u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn nest(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn nest_end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// `{ DATA_VALUE: bytes }` under `kind`.
    fn value(&mut self, kind: u16, bytes: &[u8]) {
        let n = self.nest(kind);
        self.attr(DATA_VALUE, bytes);
        self.nest_end(n);
    }

    /// `{ DATA_VERDICT: { code, chain } }` under `kind`.
    fn verdict(&mut self, kind: u16, v: &Verdict) {
        let (code, chain) = match v {
            Verdict::Drop => (NF_DROP, None),
            Verdict::Return => (NFT_RETURN, None),
            Verdict::Jump(c) => (NFT_JUMP, Some(c)),
            Verdict::Goto(c) => (NFT_GOTO, Some(c)),
        };
        let n = self.nest(kind);
        let d = self.nest(DATA_VERDICT);
        self.u32(VERDICT_CODE, code as u32);
        if let Some(c) = chain {
            self.str(VERDICT_CHAIN, c);
        }
        self.nest_end(d);
        self.nest_end(n);
    }

    /// One expression of a rule: `{ name, data: { ... } }`.
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Batch)) {
        let e = self.nest(LIST_ELEM);
        self.str(EXPR_NAME, name);
        let d = self.nest(EXPR_DATA);
        body(self);
        self.nest_end(d);
        self.nest_end(e);
    }
}

// Expressions, as `nft` writes them.

fn payload(b: &mut Batch, dreg: u32, base: u32, offset: u32, len: u32) {
    b.expr("payload", |b| {
        b.u32(1, dreg); // NFTA_PAYLOAD_DREG
        b.u32(2, base); // NFTA_PAYLOAD_BASE
        b.u32(3, offset); // NFTA_PAYLOAD_OFFSET
        b.u32(4, len); // NFTA_PAYLOAD_LEN
    });
}

const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;

fn cmp(b: &mut Batch, op: u32, data: &[u8]) {
    b.expr("cmp", |b| {
        b.u32(1, REG32_00); // NFTA_CMP_SREG
        b.u32(2, op); // NFTA_CMP_OP
        b.value(3, data); // NFTA_CMP_DATA
    });
}

/// reg = (reg & mask) ^ xor.
fn bitwise(b: &mut Batch, mask: &[u8], xor: &[u8]) {
    b.expr("bitwise", |b| {
        b.u32(1, REG32_00); // NFTA_BITWISE_SREG
        b.u32(2, REG32_00); // NFTA_BITWISE_DREG
        b.u32(3, mask.len() as u32); // NFTA_BITWISE_LEN
        b.value(4, mask); // NFTA_BITWISE_MASK
        b.value(5, xor); // NFTA_BITWISE_XOR
    });
}

const META_MARK: u32 = 3;
const META_L4PROTO: u32 = 16;

fn meta_load(b: &mut Batch, key: u32, dreg: u32) {
    b.expr("meta", |b| {
        b.u32(1, dreg); // NFTA_META_DREG
        b.u32(2, key); // NFTA_META_KEY
    });
}

fn immediate(b: &mut Batch, dreg: u32, data: &[u8]) {
    b.expr("immediate", |b| {
        b.u32(1, dreg); // NFTA_IMMEDIATE_DREG
        b.value(2, data); // NFTA_IMMEDIATE_DATA
    });
}

/// Load `field` into register `reg`.
fn load(b: &mut Batch, field: Field, reg: u32) {
    const NETWORK: u32 = 1;
    const TRANSPORT: u32 = 2;
    match field {
        Field::Saddr => payload(b, reg, NETWORK, 12, 4),
        Field::Daddr => payload(b, reg, NETWORK, 16, 4),
        Field::L4Proto => meta_load(b, META_L4PROTO, reg),
        Field::Dport => payload(b, reg, TRANSPORT, 2, 2),
    }
}

/// Load a key's fields into consecutive registers from REG32_00.
fn load_key(b: &mut Batch, key: Key) {
    for (i, f) in key.fields().iter().enumerate() {
        load(b, *f, REG32_00 + i as u32);
    }
}

fn lookup(b: &mut Batch, set: &str, dreg: Option<u32>) {
    b.expr("lookup", |b| {
        b.str(1, set); // NFTA_LOOKUP_SET
        b.u32(2, REG32_00); // NFTA_LOOKUP_SREG
        if let Some(d) = dreg {
            b.u32(3, d); // NFTA_LOOKUP_DREG
        }
    });
}

fn encode_match(b: &mut Batch, m: &Match) {
    let op = |is: bool| if is { CMP_EQ } else { CMP_NEQ };
    match m {
        Match::Net { field, net, is } => {
            load(b, *field, REG32_00);
            if net.prefix < 32 {
                bitwise(b, &net.mask().to_be_bytes(), &[0; 4]);
            }
            cmp(b, op(*is), &net.addr.octets());
        }
        Match::Local { field, is } => {
            const FIB_RESULT_ADDRTYPE: u32 = 3;
            const FIB_F_SADDR: u32 = 1;
            const FIB_F_DADDR: u32 = 2;
            const RTN_LOCAL: u32 = 2;
            let flags = if *field == Field::Saddr {
                FIB_F_SADDR
            } else {
                FIB_F_DADDR
            };
            b.expr("fib", |b| {
                b.u32(1, REG32_00); // NFTA_FIB_DREG
                b.u32(2, FIB_RESULT_ADDRTYPE); // NFTA_FIB_RESULT
                b.u32(3, flags); // NFTA_FIB_FLAGS
            });
            cmp(b, op(*is), &RTN_LOCAL.to_ne_bytes());
        }
        Match::In { key, set } => {
            load_key(b, *key);
            lookup(b, set, None);
        }
        Match::NewConnection => {
            const CT_STATE: u32 = 0;
            const STATE_NEW: u32 = 1 << 3;
            b.expr("ct", |b| {
                b.u32(1, REG32_00); // NFTA_CT_DREG
                b.u32(2, CT_STATE); // NFTA_CT_KEY
            });
            bitwise(b, &STATE_NEW.to_ne_bytes(), &[0; 4]);
            cmp(b, CMP_NEQ, &[0; 4]);
        }
        Match::OneIn(n) => {
            const NG_RANDOM: u32 = 1;
            b.expr("numgen", |b| {
                b.u32(1, REG32_00); // NFTA_NG_DREG
                b.u32(2, *n); // NFTA_NG_MODULUS
                b.u32(3, NG_RANDOM); // NFTA_NG_TYPE
                b.u32(4, 0); // NFTA_NG_OFFSET
            });
            cmp(b, CMP_EQ, &0u32.to_ne_bytes());
        }
        Match::L4Proto(p) => {
            meta_load(b, META_L4PROTO, REG32_00);
            cmp(b, CMP_EQ, &[p.number()]);
        }
        Match::MarkClear(m) => {
            meta_load(b, META_MARK, REG32_00);
            bitwise(b, &m.to_ne_bytes(), &[0; 4]);
            cmp(b, CMP_EQ, &[0; 4]);
        }
    }
}

fn encode_action(b: &mut Batch, a: &Action) {
    match a {
        Action::Verdict(v) => b.expr("immediate", |b| {
            b.u32(1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
            b.verdict(2, v); // NFTA_IMMEDIATE_DATA
        }),
        Action::Vmap { key, map } => {
            load_key(b, *key);
            lookup(b, map, Some(REG_VERDICT));
        }
        Action::Reject => {
            const REJECT_ICMP_UNREACH: u32 = 0;
            const ICMP_PORT_UNREACH: u8 = 3;
            b.expr("reject", |b| {
                b.u32(1, REJECT_ICMP_UNREACH); // NFTA_REJECT_TYPE
                b.attr(2, &[ICMP_PORT_UNREACH]); // NFTA_REJECT_ICMP_CODE
            });
        }
        Action::Masquerade { fully_random } => {
            const RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;
            b.expr("masq", |b| {
                if *fully_random {
                    b.u32(1, RANGE_PROTO_RANDOM_FULLY); // NFTA_MASQ_FLAGS
                }
            });
        }
        Action::Dnat(ip, port) => {
            const NAT_DNAT: u32 = 1;
            immediate(b, REG32_00, &ip.octets());
            immediate(b, REG32_00 + 1, &port.to_be_bytes());
            b.expr("nat", |b| {
                b.u32(1, NAT_DNAT); // NFTA_NAT_TYPE
                b.u32(2, u32::from(NFPROTO_IPV4)); // NFTA_NAT_FAMILY
                b.u32(3, REG32_00); // NFTA_NAT_REG_ADDR_MIN
                b.u32(5, REG32_00 + 1); // NFTA_NAT_REG_PROTO_MIN
            });
        }
        Action::MarkOr(m) => set_mark(b, &(!m).to_ne_bytes(), &m.to_ne_bytes()),
        Action::MarkXor(m) => set_mark(b, &u32::MAX.to_ne_bytes(), &m.to_ne_bytes()),
        Action::Remember { set, key } => {
            const DYNSET_OP_UPDATE: u32 = 1;
            load_key(b, *key);
            b.expr("dynset", |b| {
                b.str(1, set); // NFTA_DYNSET_SET_NAME
                b.u32(3, DYNSET_OP_UPDATE); // NFTA_DYNSET_OP
                b.u32(4, REG32_00); // NFTA_DYNSET_SREG_KEY
            });
        }
    }
}

/// `meta mark set meta mark & mask ^ xor`.
fn set_mark(b: &mut Batch, mask: &[u8], xor: &[u8]) {
    meta_load(b, META_MARK, REG32_00);
    bitwise(b, mask, xor);
    b.expr("meta", |b| {
        b.u32(2, META_MARK); // NFTA_META_KEY
        b.u32(3, REG32_00); // NFTA_META_SREG
    });
}

fn encode_rule(b: &mut Batch, table: &str, chain: &str, rule: &Rule, op: usize) {
    let m = b.nft_begin(msg::NEWRULE, NLM_F_CREATE | NLM_F_APPEND, op);
    b.str(RULE_TABLE, table);
    b.str(RULE_CHAIN, chain);
    let exprs = b.nest(RULE_EXPRESSIONS);
    for x in &rule.matches {
        encode_match(b, x);
    }
    encode_action(b, &rule.action);
    b.nest_end(exprs);
    b.end(m);
}

/// A key's bytes as the registers hold them: each field in 4 bytes.
fn key_bytes(e: &Element) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * e.0.len());
    for d in &e.0 {
        match d {
            Datum::Ip(ip) => out.extend_from_slice(&ip.octets()),
            Datum::Proto(p) => out.extend_from_slice(&[p.number(), 0, 0, 0]),
            Datum::Port(p) => {
                out.extend_from_slice(&p.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
    out
}

fn encode_set(b: &mut Batch, table: &str, name: &str, def: &SetDef, op: usize) {
    // nft's type numbers, concatenated six bits apiece.
    let type_id = |f: &Field| match f {
        Field::Saddr | Field::Daddr => 7,
        Field::L4Proto => 12,
        Field::Dport => 13,
    };
    let fields = def.key.fields();
    let key_type = fields.iter().fold(0u32, |t, f| (t << 6) | type_id(f));
    let mut flags = 0;
    if def.map {
        flags |= SET_F_MAP;
    }
    if def.timeout.is_some() {
        flags |= SET_F_TIMEOUT | SET_F_EVAL;
    }
    let m = b.nft_begin(msg::NEWSET, NLM_F_CREATE, op);
    b.str(SET_TABLE, table);
    b.str(SET_NAME, name);
    b.u32(SET_FLAGS, flags);
    b.u32(SET_KEY_TYPE, key_type);
    b.u32(SET_KEY_LEN, 4 * fields.len() as u32);
    if def.map {
        b.u32(SET_DATA_TYPE, DATA_TYPE_VERDICT);
    }
    if let Some(t) = def.timeout {
        b.attr(SET_TIMEOUT, &(u64::from(t) * 1000).to_be_bytes());
    }
    let id = b.next_set_id;
    b.next_set_id += 1;
    b.u32(SET_ID, id);
    b.end(m);
}

/// Elements of one set, in as many messages as their size needs.
fn encode_elements<'a>(
    b: &mut Batch,
    table: &str,
    set: &str,
    kind: u16,
    items: impl Iterator<Item = (&'a Element, Option<&'a Verdict>)>,
    op: usize,
) {
    let flags = if kind == msg::NEWSETELEM {
        NLM_F_CREATE
    } else {
        0
    };
    let mut open: Option<(usize, usize)> = None;
    for (key, value) in items {
        let (m, list) = match open {
            Some((m, list)) if b.buf.len() - list < ELEMENT_BYTES => (m, list),
            _ => {
                if let Some((m, list)) = open {
                    b.nest_end(list);
                    b.end(m);
                }
                let m = b.nft_begin(kind, flags, op);
                b.str(SET_ELEM_LIST_TABLE, table);
                b.str(SET_ELEM_LIST_SET, set);
                (m, b.nest(SET_ELEM_LIST_ELEMENTS))
            }
        };
        open = Some((m, list));
        let e = b.nest(LIST_ELEM);
        b.value(SET_ELEM_KEY, &key_bytes(key));
        if let Some(v) = value {
            b.verdict(SET_ELEM_DATA, v);
        }
        b.nest_end(e);
    }
    if let Some((m, list)) = open {
        b.nest_end(list);
        b.end(m);
    }
}

fn encode_op(b: &mut Batch, table: &str, op: &Op, i: usize) {
    let named = |b: &mut Batch, kind: u16, flags: u16, name_attr: u16, name: &str| {
        let m = b.nft_begin(kind, flags, i);
        b.str(CHAIN_TABLE, table);
        b.str(name_attr, name);
        b.end(m);
    };
    match op {
        Op::AddTable | Op::DeleteTable => {
            let (kind, flags) = match op {
                Op::AddTable => (msg::NEWTABLE, NLM_F_CREATE),
                _ => (msg::DELTABLE, 0),
            };
            let m = b.nft_begin(kind, flags, i);
            b.str(TABLE_NAME, table);
            b.end(m);
        }
        Op::AddSet(name, def) => encode_set(b, table, name, def, i),
        Op::DeleteSet(name) => named(b, msg::DELSET, 0, SET_NAME, name),
        Op::AddChain(name, base) => {
            let m = b.nft_begin(msg::NEWCHAIN, NLM_F_CREATE, i);
            b.str(CHAIN_TABLE, table);
            b.str(CHAIN_NAME, name);
            if let Some(base) = base {
                let hook = b.nest(CHAIN_HOOK);
                b.u32(HOOK_HOOKNUM, hook_number(base.hook));
                b.u32(HOOK_PRIORITY, base.priority as u32);
                b.nest_end(hook);
                b.u32(CHAIN_POLICY, NF_ACCEPT as u32);
                b.str(CHAIN_TYPE, if base.nat { "nat" } else { "filter" });
            }
            b.end(m);
        }
        Op::FlushChain(name) => named(b, msg::DELRULE, 0, RULE_CHAIN, name),
        Op::DeleteChain(name) => named(b, msg::DELCHAIN, 0, CHAIN_NAME, name),
        Op::AddRule(chain, rule) => encode_rule(b, table, chain, rule, i),
        Op::AddElements(set, items) => encode_elements(
            b,
            table,
            set,
            msg::NEWSETELEM,
            items.iter().map(|(k, v)| (k, v.as_ref())),
            i,
        ),
        Op::DeleteElements(set, keys) => encode_elements(
            b,
            table,
            set,
            msg::DELSETELEM,
            keys.iter().map(|k| (k, None)),
            i,
        ),
    }
}

fn hook_number(h: super::rules::Hook) -> u32 {
    use super::rules::Hook;
    match h {
        Hook::Prerouting => 0,
        Hook::Input => 1,
        Hook::Forward => 2,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

/// A netlink socket to nf_tables.
struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        use nix::sys::socket::{socket, sockopt, AddressFamily, SockFlag, SockProtocol, SockType};
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
        nix::sys::socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
        nix::sys::socket::setsockopt(&fd, sockopt::RcvBufForce, &(8 << 20))?;
        Ok(Socket(fd))
    }

    /// Send `buf` as one datagram (a batch must arrive whole).
    fn send(&self, buf: &[u8]) -> io::Result<()> {
        use nix::sys::socket::{send, setsockopt, sockopt, MsgFlags};
        setsockopt(&self.0, sockopt::SndBufForce, &(buf.len() + 4096))?;
        send(self.0.as_raw_fd(), buf, MsgFlags::empty())?;
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::sys::socket::{recv, MsgFlags};
        match recv(self.0.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(n) => Ok(n),
            Err(nix::errno::Errno::EAGAIN) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The messages in one datagram: (type, sequence number, payload).
fn messages(buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
        out.push((kind, seq, &buf[at + NLMSG_HDRLEN..at + len]));
        at += (len + 3) & !3;
    }
    out
}

/// An error message's code (0 for an acknowledgement).
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .unwrap_or(-(nix::errno::Errno::EINVAL as i32))
}

/// The batch for `tx`, sequence numbers from `seq`.
fn encode(tx: &Transaction, seq: u32) -> Batch {
    let mut b = Batch::new(seq);
    let m = b.begin(NFNL_MSG_BATCH_BEGIN, 0, NFNL_SUBSYS_NFTABLES);
    b.end(m);
    for (i, op) in tx.ops.iter().enumerate() {
        encode_op(&mut b, &tx.table, op, i);
    }
    // Only the last message is acknowledged: its answer comes after any
    // error, so the answers end with it.
    if let Some(&(_, _, at)) = b.origin.last() {
        let flags = u16::from_ne_bytes(b.buf[at + 6..at + 8].try_into().expect("2 bytes"));
        b.buf[at + 6..at + 8].copy_from_slice(&(flags | NLM_F_ACK).to_ne_bytes());
    }
    let m = b.begin(NFNL_MSG_BATCH_END, 0, NFNL_SUBSYS_NFTABLES);
    b.end(m);
    b
}

/// Apply `tx` in one batch: all of it, or (on error) none of it.
pub fn apply_blocking(tx: &Transaction) -> Result<(), NetlinkError> {
    if tx.ops.is_empty() {
        return Ok(());
    }
    let first = rand::random::<u32>() >> 1;
    let batch = encode(tx, first);
    let begin_seq = first.wrapping_add(1);
    let last_seq = batch.origin.last().map(|o| o.0).expect("a message");
    let sock = Socket::open()?;
    sock.send(&batch.buf)?;
    // An error carries the message it refuses, up to an element list's
    // 64 KiB: room for it whole.
    let mut buf = vec![0u8; ANSWER_BYTES];
    let mut refused: Option<NetlinkError> = None;
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(NetlinkError::NoAnswer(ANSWER_TIMEOUT))
            }
            Err(e) => return Err(e.into()),
        };
        for (kind, seq, payload) in messages(&buf[..n]) {
            if kind != NLMSG_ERROR {
                continue;
            }
            let code = error_code(payload);
            if code != 0 && refused.is_none() {
                let error = io::Error::from_raw_os_error(-code);
                refused = Some(match batch.origin.iter().find(|o| o.0 == seq) {
                    Some((_, op, _)) => NetlinkError::Refused {
                        op: describe(tx, *op),
                        error,
                    },
                    None => NetlinkError::Batch(error),
                });
            }
            if seq == last_seq || (code != 0 && seq == begin_seq) {
                return refused.map_or(Ok(()), Err);
            }
        }
    }
}

/// Run blocking socket work off the async threads.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetlinkError> + Send + 'static,
) -> Result<T, NetlinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NetlinkError::Io(io::Error::other(e)))?
}

/// Apply `tx` in one batch (see [`apply_blocking`]).
pub async fn apply(tx: Transaction) -> Result<(), NetlinkError> {
    off_thread(move || apply_blocking(&tx)).await
}

/// How many rules `chain` of `table` holds (see [`rule_count`]).
pub async fn count_rules(table: &str, chain: &str) -> Result<usize, NetlinkError> {
    let (table, chain) = (table.to_string(), chain.to_string());
    off_thread(move || rule_count(&table, &chain)).await
}

/// One op as `nft` would write it, shortened.
fn describe(tx: &Transaction, op: usize) -> String {
    let one = Transaction {
        table: tx.table.clone(),
        full: false,
        ops: vec![tx.ops[op].clone()],
    };
    let mut s = one.to_string().trim_end().to_string();
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" ...");
    }
    s
}

/// How many rules `chain` of `table` holds (0 when there is no such
/// chain or table).
pub fn rule_count(table: &str, chain: &str) -> Result<usize, NetlinkError> {
    let sock = Socket::open()?;
    let mut b = Batch::new(rand::random::<u32>() >> 1);
    let m = b.nft_begin(msg::GETRULE, NLM_F_DUMP, 0);
    b.str(RULE_TABLE, table);
    b.str(RULE_CHAIN, chain);
    b.end(m);
    sock.send(&b.buf)?;
    let mut buf = vec![0u8; ANSWER_BYTES];
    let mut rules = 0;
    loop {
        let n = sock.recv(&mut buf)?;
        for (kind, seq, payload) in messages(&buf[..n]) {
            if seq != b.seq {
                continue;
            }
            match kind {
                NLMSG_DONE => return Ok(rules),
                NLMSG_ERROR => {
                    let code = error_code(payload);
                    if code == -(nix::errno::Errno::ENOENT as i32) || code == 0 {
                        return Ok(rules);
                    }
                    return Err(NetlinkError::Batch(io::Error::from_raw_os_error(-code)));
                }
                k if k == (NFNL_SUBSYS_NFTABLES << 8) | msg::NEWRULE => rules += 1,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Endpoint, Protocol, ServicePort};
    use super::super::table::{Settings, Table};
    use super::*;

    fn web(affinity: Option<u32>, node_port: Option<u16>, local: bool) -> ServicePort {
        ServicePort {
            namespace: "d".into(),
            name: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ip: Some("10.96.0.20".parse().unwrap()),
            external_ips: vec!["192.0.2.7".parse().unwrap()],
            node_port,
            affinity,
            local_external: local,
            endpoints: ["10.244.1.5", "10.244.2.7", "10.244.2.8"]
                .iter()
                .map(|ip| Endpoint {
                    ip: ip.parse().unwrap(),
                    port: 8080,
                    local: ip.starts_with("10.244.1."),
                })
                .collect(),
        }
    }

    /// Run `f` on a thread of its own in a new, empty network namespace.
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            // Only this thread, made for it, moves to the new namespace.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            f()
        })
        .join()
        .expect("the namespace's thread")
    }

    fn nft_list(table: &str) -> String {
        let out = std::process::Command::new("nft")
            .args(["list", "table", "ip", table])
            .output()
            .expect("nft");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every rule written over netlink reads back through `nft` as it
    /// prints; changes apply; a bad op refuses the whole batch.
    #[test]
    fn the_kernel_holds_what_was_written_and_nft_reads_it_alike() {
        in_new_netns(|| {
            let mut t = Table::new(Settings {
                table: "t".into(),
                cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            });
            let mut other = web(None, None, false);
            other.name = "other".into();
            other.cluster_ip = Some("10.96.0.21".parse().unwrap());
            other.external_ips.clear();
            let tx = t.sync(&[web(Some(60), Some(30080), true), other.clone()]);
            apply_blocking(&tx).unwrap();
            let listed = nft_list("t");
            let listed_rules: Vec<&str> = listed.lines().map(str::trim).collect();
            for op in &tx.ops {
                if let Op::AddRule(_, rule) = op {
                    let want = rule.to_string();
                    assert!(
                        listed_rules.contains(&want.as_str()),
                        "{want:?} not listed in\n{listed}"
                    );
                }
            }
            for want in [
                "10.96.0.20 . tcp . 80 : goto svc-d/web/tcp/http",
                "192.0.2.7 . tcp . 80 : goto ext-d/web/tcp/http",
                "tcp . 30080 : goto ext-d/web/tcp/http",
                "10.244.2.8 . 10.244.2.8",
                "type ipv4_addr . inet_proto . inet_service : verdict",
                "hook prerouting priority dstnat; policy accept;",
                "timeout 1m",
            ] {
                assert!(listed.contains(want), "{want:?} not listed in\n{listed}");
            }
            assert_eq!(rule_count("t", "nat-prerouting").unwrap(), 1);
            assert_eq!(rule_count("t", "no-such-chain").unwrap(), 0);
            assert_eq!(rule_count("no-such-table", "x").unwrap(), 0);

            // A change: one endpoint fewer, the other service gone.
            let mut fewer = web(Some(60), Some(30080), true);
            fewer.endpoints.pop();
            let tx = t.sync(&[fewer]);
            assert!(!tx.full);
            apply_blocking(&tx).unwrap();
            let listed = nft_list("t");
            assert!(!listed.contains("10.244.2.8"), "{listed}");
            assert!(!listed.contains("svc-d/other"), "{listed}");
            assert!(listed.contains("10.244.2.7 . 10.244.2.7"), "{listed}");

            // A batch with a bad op changes nothing, and says which op.
            let mut bad = t.sync(&[other]);
            let before = nft_list("t");
            bad.ops.push(Op::AddRule(
                "no-such-chain".into(),
                Rule::always(Action::Verdict(Verdict::Drop)),
            ));
            let err = apply_blocking(&bad).unwrap_err().to_string();
            assert!(err.contains("no-such-chain"), "{err}");
            assert_eq!(nft_list("t"), before);
        });
    }
}
