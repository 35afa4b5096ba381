//! Linearizability checker for a single register (one key) with read, write and
//! compare-and-set, using the Wing–Gong search with Lowe's memoization (the "WGL" algorithm
//! popularised by Knossos and porcupine).
//!
//! # Model
//!
//! The register holds an `Option<u64>` (`None` = the key is absent) and starts as `initial`.
//!
//! * `Read { value }` is legal iff the register holds `value`; it changes nothing.
//! * `Write { value }` is always legal and sets the register to `Some(value)`.
//! * `Cas { from, to, ok: Some(true) }` is legal iff the register holds `from`; it then holds `to`.
//! * `Cas { ok: Some(false), .. }` is legal iff the register does *not* hold `from`; no change.
//! * A `Cas` whose outcome is unknown (`ret: None`, or `ok: None`) is always legal: it sets the
//!   register to `to` if it held `from` and changes nothing otherwise.
//!
//! An operation with `ret: None` never answered. It may have taken effect at any instant after
//! its call, or never; "never" is the same as "at the very end" because nothing has to come
//! after it. Such operations get a return event at +infinity. A read that never answered
//! tells us nothing and is ignored. A `ret` earlier than `call` is treated as `ret == call`.
//!
//! # Tie-breaking at equal timestamps
//!
//! Events are ordered by time; at equal timestamps **call events come before return events**.
//! So if A returns at `t` and B is invoked at `t`, A and B are treated as *concurrent* and may
//! be linearized in either order. This is the permissive choice: with coarse clocks you cannot
//! tell which happened first, and a checker must not report a violation that could be explained
//! by clock granularity. Only `a.ret < b.call` (strictly) forces A before B.
//!
//! # Search
//!
//! The classic WGL search over a doubly linked list of call/return events (dancing links), with
//! an explicit stack instead of recursion, so histories with tens of thousands of operations are
//! fine. The candidates at every point are the calls before the first return in the list; when
//! the search meets a return event of an operation it has not placed yet, it backtracks.
//!
//! Lowe's memoization: each configuration (set of linearized operations, register state) is
//! entered at most once. The set is a bitset (`Vec<u64>`); configurations are stored in a hash
//! table keyed by an incrementally maintained Zobrist hash, with the bitset stored compactly
//! (leading all-ones words are replaced by a count, trailing zero words dropped) in one arena,
//! so the memory per entry stays small even for long histories.
//!
//! `budget` counts loop iterations of the search; when exceeded the result is
//! [`Verdict::Unknown`].
//!
//! # Operations that never answered
//!
//! Operations with a return at +infinity are what makes plain WGL blow up: each of them can be
//! linearized at every later point, and the memo table tells apart every subset of them, so a
//! few dozen timeouts make the search exponential. These exact (verdict-preserving) reductions
//! keep this in check:
//!
//! 1. **Deadline from observers.** If value `v` is produced by exactly one operation `p` (a
//!    write of `v`, or a CAS to `v`), `v` is not the initial value, and another operation
//!    observes `v` (a read of `Some(v)`, or a successful CAS from `Some(v)`), then `p` must be
//!    linearized before that observer, hence before the observer's return. `p`'s return is
//!    moved to the earliest such observer return (an unknown-outcome CAS observed this way
//!    also becomes a successful CAS). With unique write values, every write that was seen by
//!    anyone stops being "pending forever".
//! 2. **Dropping unobservable pending operations.** A pending write / unknown CAS whose value
//!    nobody observes can be moved to the end of any valid linearization, unless a failed CAS
//!    or an unknown-outcome CAS kept in the search could be linearized after it (only those can
//!    tell "the register held an unobserved value" apart from "it held something else"). Such
//!    operations invoked after all of those returned are removed before the search.
//! 3. **Pending operations only when they help.** The remaining pending operations ("free"
//!    operations: always legal, return at +infinity) are kept out of the event list. They are
//!    tried after the ordinary candidates, only if they change the register, only if some
//!    current candidate could need their effect (a failed / unknown CAS from the current
//!    state, or an operation looking for the new value), and the operation linearized right
//!    after one of them must behave differently than it would have without it. Any valid
//!    linearization can be rewritten into that normal form (a useless free operation can be
//!    moved later, or to the end), so no verdict changes; the memo key includes the pending
//!    obligation.
//! 4. **Junk writes are interchangeable.** Pending writes of values that no operation reads or
//!    compares against behave identically, so only the earliest unused one is ever tried.
//!
//! The test suite checks all of this against a brute-force reference on millions of small
//! random histories. Histories with many timeouts whose values *are* compared against by
//! failed CASes can still make the search expensive; the budget then yields `Unknown`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// One operation on one register (one key), as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Which client issued it (for error reports only).
    pub client: u64,
    /// When it was invoked, any monotonic unit (nanoseconds since start).
    pub call: u64,
    /// When its response arrived; `None` if it never returned (timeout / connection lost: the
    /// outcome is unknown, it may have taken effect at any time after `call`, or never).
    pub ret: Option<u64>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A read that observed `value` (`None` = the key did not exist). Reads always have `ret: Some`.
    Read { value: Option<u64> },
    /// A write (put) of `value`.
    Write { value: u64 },
    /// Compare-and-set: if the register holds `from` (`None` = key absent), set it to `to`.
    /// `ok`: Some(true) = the compare succeeded and it was applied; Some(false) = the compare
    /// failed (it observed a value != from, and changed nothing); None = outcome unknown
    /// (only meaningful when ret is None; treat ret:None as unknown regardless of `ok`).
    Cas {
        from: Option<u64>,
        to: u64,
        ok: Option<bool>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable. `longest_prefix` = the largest number of ops the search managed to
    /// linearize; `stuck_at` = indices (into the input slice) of ops that were candidates when the
    /// search got stuck at its deepest point, for the report.
    Violation {
        longest_prefix: usize,
        stuck_at: Vec<usize>,
    },
    /// The search exceeded `budget` steps; the result is unknown.
    Unknown,
}

/// Check one key's history. The register starts as `initial` (None = absent).
/// `budget` bounds the number of search steps (e.g. 5_000_000) so a pathological history can't hang.
///
/// In a [`Verdict::Violation`], `longest_prefix` counts the operations placed by the search
/// (operations removed by the exact reductions described in the module docs are not counted),
/// and `stuck_at` lists, sorted, the input indices of the operations with a response that were
/// not yet placed and whose call precedes the earliest such response, i.e. the candidates at
/// the deepest point. Operations without a response are left out of `stuck_at`: they can always
/// be placed, so they are never the reason the search is stuck.
pub fn check(history: &[Op], initial: Option<u64>, budget: u64) -> Verdict {
    Search::new(prepare(history, initial)).run(initial, budget)
}

// ---------------------------------------------------------------------------------------------
// Preprocessing
// ---------------------------------------------------------------------------------------------

/// The effect of an operation, with the "unknown outcome" cases made explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eff {
    Read(Option<u64>),
    Write(u64),
    CasOk { from: Option<u64>, to: u64 },
    CasFail { from: Option<u64> },
    CasMaybe { from: Option<u64>, to: u64 },
}

impl Eff {
    /// The state after applying the operation in state `s`, or `None` if it is illegal there.
    fn step(self, s: Option<u64>) -> Option<Option<u64>> {
        match self {
            Eff::Read(v) => (s == v).then_some(s),
            Eff::Write(v) => Some(Some(v)),
            Eff::CasOk { from, to } => (s == from).then_some(Some(to)),
            Eff::CasFail { from } => (s != from).then_some(s),
            Eff::CasMaybe { from, to } => Some(if s == from { Some(to) } else { s }),
        }
    }

    /// The value this operation may write.
    fn produces(self) -> Option<u64> {
        match self {
            Eff::Write(v) => Some(v),
            Eff::CasOk { to, .. } | Eff::CasMaybe { to, .. } => Some(to),
            Eff::Read(_) | Eff::CasFail { .. } => None,
        }
    }

    /// The value `v` such that this operation is only legal if the register holds `Some(v)`.
    fn observes(self) -> Option<u64> {
        match self {
            Eff::Read(Some(v)) | Eff::CasOk { from: Some(v), .. } => Some(v),
            _ => None,
        }
    }
}

/// An operation after preprocessing.
#[derive(Debug, Clone, Copy)]
struct Prep {
    /// Index into the caller's slice.
    orig: usize,
    call: u64,
    /// `None` = return at +infinity.
    ret: Option<u64>,
    eff: Eff,
}

fn prepare(history: &[Op], initial: Option<u64>) -> Vec<Prep> {
    let mut ops = Vec::with_capacity(history.len());
    for (orig, op) in history.iter().enumerate() {
        let ret = op.ret.map(|r| r.max(op.call));
        let eff = match (&op.kind, ret) {
            // A read that never answered constrains nothing.
            (Kind::Read { .. }, None) => continue,
            (&Kind::Read { value }, Some(_)) => Eff::Read(value),
            (&Kind::Write { value }, _) => Eff::Write(value),
            (
                &Kind::Cas {
                    from,
                    to,
                    ok: Some(true),
                },
                Some(_),
            ) => Eff::CasOk { from, to },
            (
                &Kind::Cas {
                    from,
                    ok: Some(false),
                    ..
                },
                Some(_),
            ) => Eff::CasFail { from },
            (&Kind::Cas { from, to, .. }, _) => Eff::CasMaybe { from, to },
        };
        ops.push(Prep {
            orig,
            call: op.call,
            ret,
            eff,
        });
    }
    apply_observer_deadlines(&mut ops, initial);
    drop_unobservable_pending(&mut ops);
    ops
}

/// Reduction 1 (see module docs): the unique producer of an observed value must be linearized
/// before the observer, so it must be linearized before the observer returns.
fn apply_observer_deadlines(ops: &mut [Prep], initial: Option<u64>) {
    // value -> Some(index) if exactly one operation may produce it, None if several do.
    let mut producer: HashMap<u64, Option<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(v) = op.eff.produces() {
            producer
                .entry(v)
                .and_modify(|p| *p = None)
                .or_insert(Some(i));
        }
    }
    let mut deadline: Vec<Option<u64>> = vec![None; ops.len()];
    for (i, op) in ops.iter().enumerate() {
        let (Some(v), Some(r)) = (op.eff.observes(), op.ret) else {
            continue;
        };
        if initial == Some(v) {
            continue;
        }
        if let Some(&Some(p)) = producer.get(&v) {
            if p != i {
                deadline[p] = Some(deadline[p].map_or(r, |d| d.min(r)));
            }
        }
    }
    for (op, d) in ops.iter_mut().zip(deadline) {
        let Some(d) = d else { continue };
        op.ret = Some(op.ret.map_or(d, |r| r.min(d)).max(op.call));
        // It certainly took effect (nothing else can produce the observed value).
        if let Eff::CasMaybe { from, to } = op.eff {
            op.eff = Eff::CasOk { from, to };
        }
    }
}

/// Reduction 2 (see module docs).
///
/// Let `D` be pending writes / unknown CASes whose value nobody observes. Take a valid
/// linearization and delete the operations of `D` from it (they are always legal at the end).
/// Just after a maximal run of deleted operations, the register may now hold the state from
/// before the run instead of an unobserved value `v`; the next operation `o` was legal with
/// `v`, so it is not a read of `v` nor a successful CAS from `v`. If it is a write, both orders
/// end in the same state. Only a failed CAS or an unknown-outcome CAS kept in the search could
/// tell the difference, and such an `o` would have to be linearized after a deleted operation,
/// which is impossible if it returned before that operation was invoked.
fn drop_unobservable_pending(ops: &mut Vec<Prep>) {
    let observed: HashSet<u64> = ops.iter().filter_map(|o| o.eff.observes()).collect();
    let mut drop: Vec<bool> = ops
        .iter()
        .map(|o| o.ret.is_none() && o.eff.produces().is_some_and(|v| !observed.contains(&v)))
        .collect();
    if !drop.contains(&true) {
        return;
    }
    loop {
        // Latest return among the operations that can tell the difference.
        let mut infinite = false;
        let mut latest: Option<u64> = None;
        for (op, &d) in ops.iter().zip(&drop) {
            let sensitive = match op.eff {
                Eff::CasFail { .. } => true,
                Eff::CasMaybe { .. } => !d,
                _ => false,
            };
            if sensitive {
                match op.ret {
                    None => infinite = true,
                    Some(r) => latest = Some(latest.map_or(r, |l| l.max(r))),
                }
            }
        }
        let mut changed = false;
        for (op, d) in ops.iter().zip(drop.iter_mut()) {
            if *d && (infinite || latest.is_some_and(|l| op.call <= l)) {
                *d = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let kept = ops
        .iter()
        .zip(&drop)
        .filter(|&(_, &d)| !d)
        .map(|(o, _)| *o)
        .collect();
    *ops = kept;
}

// ---------------------------------------------------------------------------------------------
// Memo table
// ---------------------------------------------------------------------------------------------

/// Hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const NIL: usize = usize::MAX;

struct CacheEntry {
    next: usize,
    start: usize,
    len: usize,
    state: Option<u64>,
    obligation: Option<Option<u64>>,
}

/// Set of visited configurations: (encoded bitset, state, obligation).
#[derive(Default)]
struct Cache {
    heads: HashMap<u64, usize, BuildHasherDefault<PassThrough>>,
    entries: Vec<CacheEntry>,
    arena: Vec<u64>,
}

impl Cache {
    /// Inserts the configuration; returns false if it was already present.
    fn insert(
        &mut self,
        hash: u64,
        key: &[u64],
        state: Option<u64>,
        obligation: Option<Option<u64>>,
    ) -> bool {
        let head = self.heads.get(&hash).copied().unwrap_or(NIL);
        let mut i = head;
        while i != NIL {
            let e = &self.entries[i];
            if e.state == state
                && e.obligation == obligation
                && self.arena[e.start..e.start + e.len] == *key
            {
                return false;
            }
            i = e.next;
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(key);
        self.entries.push(CacheEntry {
            next: head,
            start,
            len: key.len(),
            state,
            obligation,
        });
        self.heads.insert(hash, self.entries.len() - 1);
        true
    }
}

fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn state_code(s: Option<u64>) -> u64 {
    match s {
        None => 0x6a09_e667_f3bc_c909,
        Some(v) => mix64(v ^ 0x3c6e_f372_fe94_f82b),
    }
}

fn config_hash(bits: u64, state: Option<u64>, obligation: Option<Option<u64>>) -> u64 {
    let o = match obligation {
        None => 0,
        Some(a) => mix64(state_code(a).wrapping_add(0xa54f_f53a_5f1d_36f1)),
    };
    mix64(bits ^ state_code(state).rotate_left(23) ^ o)
}

// ---------------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------------

const HEAD: usize = 0;

/// Where the search is looking for the next operation to linearize.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// At an entry of the event list.
    List(usize),
    /// Trying free operations: `stage` 0 = unknown CASes from the current state, 1 = the one
    /// representative "junk" write, 2 = writes of values someone looks for, 3 = other writes;
    /// `pos` indexes the stage's list. `bound` is the time of the first return event in the
    /// list: only operations invoked at or before it are candidates. `keyed`: no candidate
    /// failed / unknown CAS is from the current state, so only free operations whose value
    /// someone looks for can help.
    Free {
        stage: u8,
        pos: usize,
        bound: u64,
        keyed: bool,
    },
}

impl Cursor {
    /// Where to continue after the free operation under this cursor has been tried. (List
    /// cursors are advanced by following the list; they are returned unchanged.)
    fn advance(self) -> Cursor {
        match self {
            Cursor::List(e) => Cursor::List(e),
            Cursor::Free {
                stage: 1,
                bound,
                keyed,
                ..
            } => Cursor::Free {
                stage: 2,
                pos: 0,
                bound,
                keyed,
            },
            Cursor::Free {
                stage,
                pos,
                bound,
                keyed,
            } => Cursor::Free {
                stage,
                pos: pos + 1,
                bound,
                keyed,
            },
        }
    }
}

struct Frame {
    op: usize,
    state: Option<u64>,
    obligation: Option<Option<u64>>,
    /// Where the operation was taken; the search resumes just after it.
    at: Cursor,
}

struct Search {
    /// Operations with a (finite) return first, then free ones; each part sorted by call.
    ops: Vec<Prep>,
    n_fixed: usize,

    // Event list over the fixed operations; entry 0 is the head sentinel.
    next: Vec<usize>,
    prev: Vec<usize>,
    entry_op: Vec<usize>,
    entry_is_call: Vec<bool>,
    entry_time: Vec<u64>,
    call_entry: Vec<usize>,
    ret_entry: Vec<usize>,

    /// Free unknown CASes by `from` (they only matter when the state is `from`).
    free_cas: HashMap<Option<u64>, Vec<usize>>,
    /// Free writes of values that no operation reads or compares against ("junk"): they are
    /// interchangeable, so only the first one not yet linearized is ever tried.
    free_junk: Vec<usize>,
    /// Free writes of values that some read / successful or unknown CAS looks for.
    free_wanted: Vec<usize>,
    /// The other free writes (their values only appear as the `from` of failed CASes).
    free_other: Vec<usize>,
    /// Values that some operation reads or compares against.
    referenced: HashSet<u64>,
    /// Failed / unknown CASes by their `from` (they care whether the state is *not* `from`).
    state_route: HashMap<Option<u64>, Vec<usize>>,
    /// Reads, successful CASes and unknown CASes by the value they look for.
    value_route: HashMap<u64, Vec<usize>>,

    zobrist: Vec<u64>,
    fixed_bits: Vec<u64>,
    /// Number of leading all-ones words of `fixed_bits`, and one past its last non-zero word.
    fixed_lead: usize,
    fixed_end: usize,
    free_bits: Vec<u64>,
    bits_hash: u64,
    /// Current register state.
    state: Option<u64>,
    /// `Some(s)`: the last operation was a free one that changed the state from `s`; the next
    /// operation must behave differently than it would have in state `s`.
    obligation: Option<Option<u64>>,
    cache: Cache,
    scratch: Vec<u64>,
}

impl Search {
    fn new(prep: Vec<Prep>) -> Search {
        let (mut ops, mut free): (Vec<Prep>, Vec<Prep>) =
            prep.into_iter().partition(|o| o.ret.is_some());
        ops.sort_by_key(|o| (o.call, o.orig));
        free.sort_by_key(|o| (o.call, o.orig));
        let n_fixed = ops.len();
        ops.extend(free);
        let n = ops.len();

        // (time, is_return, op): calls sort before returns at equal times (see module docs).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n_fixed);
        for (j, op) in ops[..n_fixed].iter().enumerate() {
            events.push((op.call, false, j));
            events.push((op.ret.unwrap_or(u64::MAX), true, j));
        }
        events.sort_unstable();
        let n_entries = events.len() + 1;
        let next: Vec<usize> = (1..=n_entries)
            .map(|e| if e < n_entries { e } else { NIL })
            .collect();
        let prev: Vec<usize> = (0..n_entries)
            .map(|e| if e == 0 { NIL } else { e - 1 })
            .collect();
        let mut entry_op = vec![NIL; n_entries];
        let mut entry_is_call = vec![false; n_entries];
        let mut entry_time = vec![0; n_entries];
        let mut call_entry = vec![NIL; n_fixed];
        let mut ret_entry = vec![NIL; n_fixed];
        for (k, &(t, is_ret, j)) in events.iter().enumerate() {
            let e = k + 1;
            entry_op[e] = j;
            entry_is_call[e] = !is_ret;
            entry_time[e] = t;
            if is_ret {
                ret_entry[j] = e;
            } else {
                call_entry[j] = e;
            }
        }

        let mut state_route: HashMap<Option<u64>, Vec<usize>> = HashMap::new();
        let mut value_route: HashMap<u64, Vec<usize>> = HashMap::new();
        for (j, op) in ops.iter().enumerate() {
            match op.eff {
                Eff::CasFail { from } => state_route.entry(from).or_default().push(j),
                Eff::CasMaybe { from, .. } => {
                    state_route.entry(from).or_default().push(j);
                    if let Some(v) = from {
                        value_route.entry(v).or_default().push(j);
                    }
                }
                Eff::Read(Some(v)) | Eff::CasOk { from: Some(v), .. } => {
                    value_route.entry(v).or_default().push(j)
                }
                Eff::Read(None) | Eff::CasOk { .. } | Eff::Write(_) => {}
            }
        }
        for list in state_route.values_mut().chain(value_route.values_mut()) {
            list.sort_by_key(|&j| ops[j].call);
        }
        let referenced: HashSet<u64> = ops
            .iter()
            .filter_map(|o| match o.eff {
                Eff::Read(v)
                | Eff::CasOk { from: v, .. }
                | Eff::CasFail { from: v }
                | Eff::CasMaybe { from: v, .. } => v,
                Eff::Write(_) => None,
            })
            .collect();
        let mut free_cas: HashMap<Option<u64>, Vec<usize>> = HashMap::new();
        let mut free_junk = Vec::new();
        let mut free_wanted = Vec::new();
        let mut free_other = Vec::new();
        // Free operations are sorted by call, so every list is too.
        for (j, op) in ops.iter().enumerate().skip(n_fixed) {
            match op.eff {
                Eff::CasMaybe { from, .. } => free_cas.entry(from).or_default().push(j),
                Eff::Write(v) if !referenced.contains(&v) => free_junk.push(j),
                Eff::Write(v) if value_route.contains_key(&v) => free_wanted.push(j),
                _ => free_other.push(j),
            }
        }

        let zobrist = (0..n as u64)
            .map(|j| mix64(j.wrapping_add(0x9e37_79b9_7f4a_7c15)))
            .collect();
        Search {
            n_fixed,
            next,
            prev,
            entry_op,
            entry_is_call,
            entry_time,
            call_entry,
            ret_entry,
            free_cas,
            free_junk,
            free_wanted,
            free_other,
            referenced,
            state_route,
            value_route,
            zobrist,
            fixed_bits: vec![0; n_fixed.div_ceil(64)],
            fixed_lead: 0,
            fixed_end: 0,
            free_bits: vec![0; (n - n_fixed).div_ceil(64)],
            bits_hash: 0,
            state: None,
            obligation: None,
            cache: Cache::default(),
            scratch: Vec::new(),
            ops,
        }
    }

    fn is_lin(&self, j: usize) -> bool {
        bit(&self.fixed_bits, &self.free_bits, self.n_fixed, j)
    }

    fn flip(&mut self, j: usize) {
        if j < self.n_fixed {
            let k = j / 64;
            let f = &mut self.fixed_bits;
            f[k] ^= 1 << (j % 64);
            if f[k] >> (j % 64) & 1 == 1 {
                self.fixed_end = self.fixed_end.max(k + 1);
                while self.fixed_lead < f.len() && f[self.fixed_lead] == u64::MAX {
                    self.fixed_lead += 1;
                }
            } else {
                self.fixed_lead = self.fixed_lead.min(k);
                while self.fixed_end > 0 && f[self.fixed_end - 1] == 0 {
                    self.fixed_end -= 1;
                }
            }
        } else {
            let k = j - self.n_fixed;
            self.free_bits[k / 64] ^= 1 << (k % 64);
        }
        self.bits_hash ^= self.zobrist[j];
    }

    /// Removes a fixed operation's call and return entries from the list.
    fn lift(&mut self, j: usize) {
        for e in [self.call_entry[j], self.ret_entry[j]] {
            let (p, n) = (self.prev[e], self.next[e]);
            self.next[p] = n;
            if n != NIL {
                self.prev[n] = p;
            }
        }
    }

    /// Undoes `lift` (must be called in LIFO order).
    fn unlift(&mut self, j: usize) {
        for e in [self.ret_entry[j], self.call_entry[j]] {
            let (p, n) = (self.prev[e], self.next[e]);
            self.next[p] = e;
            if n != NIL {
                self.prev[n] = e;
            }
        }
    }

    /// The state after linearizing `j` now and the obligation it leaves, if allowed.
    fn transition(&self, j: usize) -> Option<(Option<u64>, Option<Option<u64>>)> {
        let eff = self.ops[j].eff;
        let after = eff.step(self.state)?;
        if let Some(before) = self.obligation {
            // The previous (free) operation moved the state from `before` to `self.state`.
            // If this operation did the same thing in `before` (same result, or no change in
            // both), that free operation was useless here: skip this order.
            if let Some(alt) = eff.step(before) {
                if alt == after || (alt == before && after == self.state) {
                    return None;
                }
            }
        }
        if j < self.n_fixed {
            Some((after, None))
        } else if after == self.state {
            // A free operation that changes nothing can be moved to the end.
            None
        } else {
            Some((after, Some(self.state)))
        }
    }

    /// Whether some operation in `list` other than `exclude` is a candidate (not linearized,
    /// invoked at or before `bound`).
    fn live(&self, list: Option<&Vec<usize>>, bound: u64, exclude: usize) -> bool {
        list.is_some_and(|l| {
            l.iter()
                .take_while(|&&k| self.ops[k].call <= bound)
                .any(|&k| k != exclude && !self.is_lin(k))
        })
    }

    /// Whether the free operation `j`, moving the state to `after`, could be needed by a
    /// candidate: only a failed / unknown CAS from the current state, or an operation looking
    /// for the new value, can behave differently because of it.
    fn useful(&self, j: usize, after: Option<u64>, cur: Cursor) -> bool {
        let Cursor::Free { bound, keyed, .. } = cur else {
            return true;
        };
        (!keyed && self.live(self.state_route.get(&self.state), bound, j))
            || after.is_some_and(|v| self.live(self.value_route.get(&v), bound, j))
    }

    /// The next free operation to try at or after `cur` (a `Cursor::Free`), with the cursor
    /// pointing at it; `None` when the free operations are exhausted.
    fn free_slot(&self, mut cur: Cursor) -> (Cursor, Option<usize>) {
        // A junk write only helps a failed / unknown CAS from the current state, and not at
        // all if the state already is a junk value.
        let junk_state = self.state.is_some_and(|v| !self.referenced.contains(&v));
        while let Cursor::Free {
            stage,
            pos,
            bound,
            keyed,
        } = cur
        {
            // Without a failed / unknown CAS from the current state among the candidates, only
            // a free write whose value some candidate looks for can help.
            let list = match stage {
                0 => self.free_cas.get(&self.state),
                1 if !keyed && !junk_state => Some(&self.free_junk),
                2 => Some(&self.free_wanted),
                3 if !keyed => Some(&self.free_other),
                _ => None,
            };
            let found = list
                .and_then(|l| l.get(pos))
                .copied()
                .filter(|&j| self.ops[j].call <= bound);
            match found {
                // Junk writes are interchangeable: skip the ones already used, then try only
                // the first unused one.
                Some(j) if stage == 1 && self.is_lin(j) => {
                    cur = Cursor::Free {
                        stage,
                        pos: pos + 1,
                        bound,
                        keyed,
                    }
                }
                Some(j) => return (cur, Some(j)),
                None if stage < 3 => {
                    cur = Cursor::Free {
                        stage: stage + 1,
                        pos: 0,
                        bound,
                        keyed,
                    }
                }
                None => return (cur, None),
            }
        }
        unreachable!("free_slot on a list cursor")
    }

    /// Encodes the linearized set compactly into `self.scratch`.
    fn encode(&mut self) {
        let s = &mut self.scratch;
        s.clear();
        let f = &self.fixed_bits;
        let (lead, end) = (self.fixed_lead, self.fixed_end.max(self.fixed_lead));
        debug_assert_eq!(lead, f.iter().take_while(|&&w| w == u64::MAX).count());
        debug_assert_eq!(
            self.fixed_end,
            f.iter().rposition(|&w| w != 0).map_or(0, |p| p + 1)
        );
        s.push(lead as u64);
        s.push((end - lead) as u64);
        s.extend_from_slice(&f[lead..end]);
        let free_end = self
            .free_bits
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |p| p + 1);
        s.extend_from_slice(&self.free_bits[..free_end]);
    }

    /// Marks `j` linearized if the resulting configuration is new; otherwise leaves it unmarked.
    fn visit(&mut self, j: usize, state: Option<u64>, obligation: Option<Option<u64>>) -> bool {
        self.flip(j);
        let h = config_hash(self.bits_hash, state, obligation);
        self.encode();
        if self.cache.insert(h, &self.scratch, state, obligation) {
            true
        } else {
            self.flip(j);
            false
        }
    }

    fn run(mut self, initial: Option<u64>, budget: u64) -> Verdict {
        self.state = initial;
        let mut stack: Vec<Frame> = Vec::new();
        let mut best = 0;
        let mut best_fixed = self.fixed_bits.clone();
        let mut best_free = self.free_bits.clone();
        let mut steps: u64 = 0;
        let mut cur = Cursor::List(self.next[HEAD]);
        loop {
            if self.next[HEAD] == NIL {
                return Verdict::Linearizable;
            }
            if steps >= budget {
                return Verdict::Unknown;
            }
            steps += 1;

            // Pick the operation under the cursor, if it may be linearized now.
            let mut take = None;
            match cur {
                Cursor::List(e) => {
                    if !self.entry_is_call[e] {
                        // First return event: the ordinary candidates are exhausted; try the
                        // free operations invoked before it, then backtrack.
                        let bound = self.entry_time[e];
                        let keyed = !self.live(self.state_route.get(&self.state), bound, NIL);
                        cur = Cursor::Free {
                            stage: 0,
                            pos: 0,
                            bound,
                            keyed,
                        };
                        continue;
                    }
                    let j = self.entry_op[e];
                    match self.transition(j) {
                        Some((s, o)) if self.visit(j, s, o) => take = Some((j, s, o)),
                        _ => cur = Cursor::List(self.next[e]),
                    }
                }
                Cursor::Free { .. } => match self.free_slot(cur) {
                    (at, Some(j)) => {
                        cur = at;
                        let t = if self.is_lin(j) {
                            None
                        } else {
                            self.transition(j)
                        };
                        match t {
                            Some((s, o)) if self.useful(j, s, cur) && self.visit(j, s, o) => {
                                take = Some((j, s, o))
                            }
                            _ => cur = cur.advance(),
                        }
                    }
                    (_, None) => {
                        // Nothing left to try here: backtrack.
                        let Some(f) = stack.pop() else {
                            return self.violation(best, &best_fixed, &best_free);
                        };
                        self.flip(f.op);
                        if f.op < self.n_fixed {
                            self.unlift(f.op);
                        }
                        self.state = f.state;
                        self.obligation = f.obligation;
                        cur = match f.at {
                            Cursor::List(e) => Cursor::List(self.next[e]),
                            at => at.advance(),
                        };
                    }
                },
            }

            if let Some((j, s, o)) = take {
                stack.push(Frame {
                    op: j,
                    state: self.state,
                    obligation: self.obligation,
                    at: cur,
                });
                self.state = s;
                self.obligation = o;
                if j < self.n_fixed {
                    self.lift(j);
                }
                if stack.len() > best {
                    best = stack.len();
                    best_fixed.clone_from(&self.fixed_bits);
                    best_free.clone_from(&self.free_bits);
                }
                cur = Cursor::List(self.next[HEAD]);
            }
        }
    }

    fn violation(&self, best: usize, fixed: &[u64], free: &[u64]) -> Verdict {
        let placed = |j: usize| bit(fixed, free, self.n_fixed, j);
        let first_ret = (0..self.n_fixed)
            .filter(|&j| !placed(j))
            .filter_map(|j| self.ops[j].ret)
            .min();
        let mut stuck_at: Vec<usize> = (0..self.n_fixed)
            .filter(|&j| !placed(j) && first_ret.is_none_or(|r| self.ops[j].call <= r))
            .map(|j| self.ops[j].orig)
            .collect();
        stuck_at.sort_unstable();
        Verdict::Violation {
            longest_prefix: best,
            stuck_at,
        }
    }
}

fn bit(fixed: &[u64], free: &[u64], n_fixed: usize, j: usize) -> bool {
    if j < n_fixed {
        fixed[j / 64] >> (j % 64) & 1 == 1
    } else {
        let k = j - n_fixed;
        free[k / 64] >> (k % 64) & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const BUDGET: u64 = 5_000_000;

    // ---- helpers -----------------------------------------------------------------------------

    fn op(client: u64, call: u64, ret: Option<u64>, kind: Kind) -> Op {
        Op {
            client,
            call,
            ret,
            kind,
        }
    }
    fn r(client: u64, call: u64, ret: u64, value: Option<u64>) -> Op {
        op(client, call, Some(ret), Kind::Read { value })
    }
    fn w(client: u64, call: u64, ret: u64, value: u64) -> Op {
        op(client, call, Some(ret), Kind::Write { value })
    }
    fn w_pending(client: u64, call: u64, value: u64) -> Op {
        op(client, call, None, Kind::Write { value })
    }
    fn cas(client: u64, call: u64, ret: u64, from: Option<u64>, to: u64, ok: bool) -> Op {
        op(
            client,
            call,
            Some(ret),
            Kind::Cas {
                from,
                to,
                ok: Some(ok),
            },
        )
    }
    fn cas_pending(client: u64, call: u64, from: Option<u64>, to: u64) -> Op {
        op(client, call, None, Kind::Cas { from, to, ok: None })
    }

    fn is_lin(h: &[Op], initial: Option<u64>) -> bool {
        match check(h, initial, BUDGET) {
            Verdict::Linearizable => true,
            Verdict::Violation { .. } => false,
            Verdict::Unknown => panic!("budget exceeded on {h:?}"),
        }
    }

    /// Asserts the verdict, and that the brute-force reference agrees (for small histories).
    fn assert_lin(h: &[Op], initial: Option<u64>, expected: bool) {
        assert_eq!(is_lin(h, initial), expected, "check() on {h:?}");
        if h.len() <= 12 {
            assert_eq!(brute(h, initial), expected, "brute() on {h:?}");
        }
    }

    /// Straightforward reference: depth-first search over all orders that respect real time,
    /// with pending operations optionally left out (= never happened), memoizing failures.
    fn brute(h: &[Op], initial: Option<u64>) -> bool {
        assert!(h.len() <= 20);
        let must: u32 = h
            .iter()
            .enumerate()
            .filter(|(_, o)| o.ret.is_some())
            .fold(0, |m, (i, _)| m | 1 << i);
        let mut failed = HashSet::new();
        brute_rec(h, 0, initial, must, &mut failed)
    }

    fn brute_rec(
        h: &[Op],
        mask: u32,
        state: Option<u64>,
        must: u32,
        failed: &mut HashSet<(u32, Option<u64>)>,
    ) -> bool {
        if mask & must == must {
            return true;
        }
        if !failed.insert((mask, state)) {
            return false;
        }
        for (i, o) in h.iter().enumerate() {
            if mask & 1 << i != 0 || (o.ret.is_none() && matches!(o.kind, Kind::Read { .. })) {
                continue;
            }
            let blocked = h.iter().enumerate().any(|(k, p)| {
                k != i && mask & 1 << k == 0 && p.ret.is_some_and(|r| r.max(p.call) < o.call)
            });
            if blocked {
                continue;
            }
            let next = match o.kind {
                Kind::Read { value } => (state == value).then_some(state),
                Kind::Write { value } => Some(Some(value)),
                Kind::Cas { from, to, ok } => match if o.ret.is_some() { ok } else { None } {
                    Some(true) => (state == from).then_some(Some(to)),
                    Some(false) => (state != from).then_some(state),
                    None => Some(if state == from { Some(to) } else { state }),
                },
            };
            if let Some(s) = next {
                if brute_rec(h, mask | 1 << i, s, must, failed) {
                    return true;
                }
            }
        }
        false
    }

    /// xorshift64* pseudo-random numbers.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(mix64(seed) | 1)
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn percent(&mut self, p: u64) -> bool {
            self.below(100) < p
        }
    }

    struct Sim {
        clients: usize,
        ops: usize,
        read_pct: u64,
        write_pct: u64,
        pending_pct: u64,
        /// Every write / CAS uses a fresh value; otherwise values are drawn from 1..=range.
        unique: bool,
        range: u64,
        max_gap: u64,
        max_dur: u64,
        pending_reads: bool,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Tag {
        Read,
        Write,
        Cas,
    }

    /// Simulates a linearizable register: every operation takes effect atomically at a random
    /// instant inside its interval (a pending one anywhere after its call, or never).
    fn simulate(rng: &mut Rng, sim: &Sim, initial: Option<u64>) -> Vec<Op> {
        struct Plan {
            client: usize,
            call: u64,
            ret: u64,
            lin: u64,
            pending: bool,
            happens: bool,
            tag: Tag,
        }
        let mut clock: Vec<u64> = (0..sim.clients)
            .map(|_| rng.below(sim.max_gap + 1))
            .collect();
        let mut plans = Vec::with_capacity(sim.ops);
        for i in 0..sim.ops {
            let client = i % sim.clients;
            let call = clock[client] + rng.below(sim.max_gap + 1);
            let dur = 1 + rng.below(sim.max_dur);
            let x = rng.below(100);
            let tag = if x < sim.read_pct {
                Tag::Read
            } else if x < sim.read_pct + sim.write_pct {
                Tag::Write
            } else {
                Tag::Cas
            };
            let pending = rng.percent(sim.pending_pct) && (tag != Tag::Read || sim.pending_reads);
            let lin = if pending {
                call + rng.below(3 * dur + 1)
            } else {
                call + rng.below(dur + 1)
            };
            let happens = !pending || rng.percent(50);
            clock[client] = call + dur;
            plans.push(Plan {
                client,
                call,
                ret: call + dur,
                lin,
                pending,
                happens,
                tag,
            });
        }
        let mut order: Vec<usize> = (0..plans.len()).collect();
        order.sort_by_key(|&i| (plans[i].lin, i));
        let mut state = initial;
        let mut counter = 0;
        let mut seen: Vec<u64> = Vec::new();
        let mut out: Vec<Option<Op>> = vec![None; plans.len()];
        for i in order {
            let p = &plans[i];
            let mut fresh = |rng: &mut Rng| {
                if sim.unique {
                    counter += 1;
                    counter
                } else {
                    1 + rng.below(sim.range)
                }
            };
            let kind = match p.tag {
                Tag::Read if p.pending => Kind::Read {
                    value: Some(rng.below(1000)),
                },
                Tag::Read => Kind::Read { value: state },
                Tag::Write => {
                    let v = fresh(rng);
                    seen.push(v);
                    if p.happens {
                        state = Some(v);
                    }
                    Kind::Write { value: v }
                }
                Tag::Cas => {
                    let from = if rng.percent(50) || seen.is_empty() {
                        state
                    } else if rng.percent(10) {
                        None
                    } else {
                        Some(seen[rng.below(seen.len() as u64) as usize])
                    };
                    let to = fresh(rng);
                    seen.push(to);
                    let ok = p.happens && state == from;
                    if ok {
                        state = Some(to);
                    }
                    Kind::Cas {
                        from,
                        to,
                        ok: if p.pending { None } else { Some(ok) },
                    }
                }
            };
            out[i] = Some(Op {
                client: p.client as u64,
                call: p.call,
                ret: (!p.pending).then_some(p.ret),
                kind,
            });
        }
        out.into_iter().map(Option::unwrap).collect()
    }

    /// The smallest budget with which `check` reaches a verdict (binary search).
    fn steps_needed(h: &[Op], initial: Option<u64>) -> u64 {
        let (mut lo, mut hi) = (0u64, 1u64);
        while check(h, initial, hi) == Verdict::Unknown {
            lo = hi;
            hi *= 2;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if check(h, initial, mid) == Verdict::Unknown {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    fn big_sim(ops: usize) -> Sim {
        Sim {
            clients: 5,
            ops,
            read_pct: 50,
            write_pct: 30,
            pending_pct: 3,
            unique: true,
            range: 0,
            max_gap: 40,
            max_dur: 200,
            pending_reads: false,
        }
    }

    fn random_history(rng: &mut Rng, n: usize, range: u64, pending_pct: u64) -> Vec<Op> {
        let val = |rng: &mut Rng| {
            let x = rng.below(range + 1);
            (x > 0).then_some(x)
        };
        (0..n)
            .map(|i| {
                let call = rng.below(12);
                let ret = (!rng.percent(pending_pct)).then(|| call + rng.below(6));
                let kind = match rng.below(3) {
                    0 => Kind::Read { value: val(rng) },
                    1 => Kind::Write {
                        value: 1 + rng.below(range),
                    },
                    _ => Kind::Cas {
                        from: val(rng),
                        to: 1 + rng.below(range),
                        ok: match rng.below(10) {
                            0 => None,
                            1..=5 => Some(true),
                            _ => Some(false),
                        },
                    },
                };
                op(i as u64, call, ret, kind)
            })
            .collect()
    }

    fn mutate(rng: &mut Rng, h: &mut [Op], range: u64) {
        let i = rng.below(h.len() as u64) as usize;
        let v = 1 + rng.below(range + 3);
        match (&mut h[i].kind, rng.below(4)) {
            (_, 0) => {
                let c = h[i].call;
                h[i].call = c.saturating_sub(rng.below(5));
            }
            (Kind::Read { value }, _) => *value = (v <= range + 1).then_some(v),
            (Kind::Write { value }, _) => *value = v,
            (Kind::Cas { ok: Some(ok), .. }, 1) => *ok = !*ok,
            (Kind::Cas { from, .. }, _) => *from = (v <= range + 1).then_some(v),
        }
    }

    // ---- 1. empty ----------------------------------------------------------------------------

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check(&[], None, BUDGET), Verdict::Linearizable);
        assert_eq!(check(&[], Some(3), 0), Verdict::Linearizable);
    }

    // ---- 2. sequential -----------------------------------------------------------------------

    #[test]
    fn sequential_write_then_read() {
        assert_lin(&[w(0, 0, 1, 1), r(1, 2, 3, Some(1))], None, true);
        let h = [w(0, 0, 1, 1), r(1, 2, 3, Some(2))];
        assert_lin(&h, None, false);
        assert_eq!(
            check(&h, None, BUDGET),
            Verdict::Violation {
                longest_prefix: 1,
                stuck_at: vec![1]
            }
        );
    }

    #[test]
    fn initial_value_is_respected() {
        assert_lin(&[r(0, 0, 1, Some(7))], Some(7), true);
        assert_lin(&[r(0, 0, 1, None)], Some(7), false);
        assert_lin(&[r(0, 0, 1, None)], None, true);
        assert_lin(&[r(0, 0, 1, Some(7))], None, false);
    }

    // ---- 3. stale read -----------------------------------------------------------------------

    #[test]
    fn stale_read_is_a_violation() {
        let h = [w(0, 0, 10, 1), w(1, 20, 30, 2), r(2, 40, 50, Some(1))];
        assert_lin(&h, None, false);
        // Same, but the read overlaps the second write: fine.
        let h = [w(0, 0, 10, 1), w(1, 20, 30, 2), r(2, 25, 50, Some(1))];
        assert_lin(&h, None, true);
    }

    // ---- 4. concurrent write and read --------------------------------------------------------

    #[test]
    fn concurrent_read_may_see_old_or_new() {
        let base = w(0, 0, 10, 1);
        assert_lin(
            &[base.clone(), w(0, 20, 40, 2), r(1, 25, 35, Some(1))],
            None,
            true,
        );
        assert_lin(
            &[base.clone(), w(0, 20, 40, 2), r(1, 25, 35, Some(2))],
            None,
            true,
        );
        // Read spanning the write entirely.
        assert_lin(
            &[base.clone(), w(0, 20, 30, 2), r(1, 15, 35, Some(1))],
            None,
            true,
        );
        assert_lin(&[base, w(0, 20, 30, 2), r(1, 15, 35, Some(2))], None, true);
        // Read concurrent with the very first write may see the key absent.
        assert_lin(&[w(0, 0, 10, 1), r(1, 5, 6, None)], None, true);
    }

    #[test]
    fn equal_timestamps_are_concurrent() {
        // The write returns at 10 and the read is invoked at 10: concurrent (permissive).
        assert_lin(&[w(0, 0, 10, 1), r(1, 10, 12, None)], None, true);
        // One tick later they are ordered.
        assert_lin(&[w(0, 0, 10, 1), r(1, 11, 12, None)], None, false);
        // Zero-length operations.
        assert_lin(
            &[w(0, 5, 5, 1), r(1, 5, 5, None), r(1, 5, 5, Some(1))],
            None,
            true,
        );
        assert_lin(&[w(0, 5, 5, 1), r(1, 6, 6, None)], None, false);
    }

    // ---- 5. value never written --------------------------------------------------------------

    #[test]
    fn read_of_unwritten_value_is_a_violation() {
        let h = [w(0, 0, 10, 1), w(1, 5, 15, 2), r(2, 0, 20, Some(3))];
        assert_lin(&h, None, false);
        assert_lin(&[r(0, 0, 20, Some(3))], None, false);
    }

    // ---- 6. compare-and-set ------------------------------------------------------------------

    #[test]
    fn two_successful_cas_from_same_value_is_a_violation() {
        let h = [cas(0, 0, 10, None, 1, true), cas(1, 20, 30, None, 1, true)];
        assert_lin(&h, None, false);
        // Even when they overlap.
        let h = [cas(0, 0, 10, None, 1, true), cas(1, 5, 30, None, 2, true)];
        assert_lin(&h, None, false);
        // One succeeds, one fails: fine (in either real-time order when concurrent).
        let h = [cas(0, 0, 10, None, 1, true), cas(1, 20, 30, None, 1, false)];
        assert_lin(&h, None, true);
        let h = [cas(0, 0, 10, None, 1, false), cas(1, 5, 30, None, 2, true)];
        assert_lin(&h, None, true);
        // ...but not if the failing one finished before the successful one started.
        let h = [cas(0, 0, 10, None, 1, false), cas(1, 20, 30, None, 2, true)];
        assert_lin(&h, None, false);
    }

    #[test]
    fn cas_chain() {
        let h = [
            w(0, 0, 1, 1),
            cas(1, 2, 3, Some(1), 2, true),
            cas(2, 4, 5, Some(1), 3, false),
            cas(0, 6, 7, Some(2), 3, true),
            r(1, 8, 9, Some(3)),
        ];
        assert_lin(&h, None, true);
        let mut bad = h.clone();
        bad[2] = cas(2, 4, 5, Some(2), 3, false);
        assert_lin(&bad, None, false);
    }

    // ---- 7. lost write -----------------------------------------------------------------------

    #[test]
    fn lost_write_is_a_violation() {
        assert_lin(&[w(0, 0, 10, 1), r(1, 20, 30, None)], None, false);
        assert_lin(&[w(0, 0, 10, 1), r(1, 20, 30, Some(5))], Some(5), false);
    }

    // ---- 8. indeterminate write --------------------------------------------------------------

    #[test]
    fn indeterminate_write_may_or_may_not_happen() {
        // Observed later.
        let h = [
            w(0, 0, 10, 1),
            w_pending(1, 20, 2),
            r(2, 30, 40, Some(1)),
            r(2, 50, 60, Some(2)),
            r(0, 70, 80, Some(2)),
        ];
        assert_lin(&h, None, true);
        // Never observed.
        let h = [
            w(0, 0, 10, 1),
            w_pending(1, 20, 2),
            r(2, 30, 40, Some(1)),
            r(2, 50, 60, Some(1)),
            r(0, 1000, 1001, Some(1)),
        ];
        assert_lin(&h, None, true);
        // Observed, then un-observed without another write: violation.
        let h = [
            w(0, 0, 10, 1),
            w_pending(1, 20, 2),
            r(2, 50, 60, Some(2)),
            r(0, 70, 80, Some(1)),
        ];
        assert_lin(&h, None, false);
        // A pending read is ignored, whatever it claims.
        let h = [
            w(0, 0, 10, 1),
            op(1, 20, None, Kind::Read { value: Some(99) }),
        ];
        assert_lin(&h, None, true);
    }

    #[test]
    fn indeterminate_cas() {
        let h = [
            w(0, 0, 10, 1),
            cas_pending(1, 20, Some(1), 2),
            r(2, 30, 40, Some(2)),
        ];
        assert_lin(&h, None, true);
        let h = [
            w(0, 0, 10, 1),
            cas_pending(1, 20, Some(1), 2),
            r(2, 30, 40, Some(1)),
        ];
        assert_lin(&h, None, true);
        // Its compare cannot succeed: 5 is never there.
        let h = [
            w(0, 0, 10, 1),
            cas_pending(1, 20, Some(5), 2),
            r(2, 30, 40, Some(2)),
        ];
        assert_lin(&h, None, false);
        // ok is ignored when ret is None.
        let h = [
            w(0, 0, 10, 1),
            op(
                1,
                20,
                None,
                Kind::Cas {
                    from: Some(1),
                    to: 2,
                    ok: Some(false),
                },
            ),
            r(2, 30, 40, Some(2)),
        ];
        assert_lin(&h, None, true);
        // ok: None with a response is also treated as unknown.
        let h = [
            w(0, 0, 10, 1),
            op(
                1,
                20,
                Some(25),
                Kind::Cas {
                    from: Some(1),
                    to: 2,
                    ok: None,
                },
            ),
            r(2, 30, 40, Some(2)),
        ];
        assert_lin(&h, None, true);
        let h = [
            w(0, 0, 10, 1),
            op(
                1,
                20,
                Some(25),
                Kind::Cas {
                    from: Some(1),
                    to: 2,
                    ok: None,
                },
            ),
            r(2, 30, 40, Some(1)),
        ];
        // A compare that would succeed must apply: it returned, so it took effect.
        assert_lin(&h, None, false);
    }

    #[test]
    fn pending_write_explains_failed_cas() {
        // The CAS from 1 can only fail if the pending write of 7 landed before it.
        let h = [
            w(0, 0, 1, 1),
            w_pending(1, 2, 7),
            cas(2, 3, 4, Some(1), 2, false),
            w(0, 5, 6, 3),
            r(2, 7, 8, Some(3)),
        ];
        assert_lin(&h, None, true);
        // Without the pending write it is a violation.
        assert_lin(
            &[h[0].clone(), h[2].clone(), h[3].clone(), h[4].clone()],
            None,
            false,
        );
        // If the pending write was invoked after the CAS returned, it can't help.
        let mut late = h.clone();
        late[1] = w_pending(1, 5, 7);
        assert_lin(&late, None, false);
        // A pending CAS can explain it too, and an unknown CAS can be enabled by a pending write.
        let h = [
            w(0, 0, 1, 1),
            w_pending(1, 2, 7),
            cas_pending(3, 2, Some(7), 8),
            cas(2, 3, 4, Some(7), 9, false),
            r(2, 5, 6, Some(8)),
        ];
        assert_lin(&h, None, true);
    }

    #[test]
    fn pending_write_enabling_pending_cas_is_kept() {
        // The read of 7 at [2, 3] needs the pending CAS 5 -> 7, which needs the pending write
        // of 5 before it. Nobody reads 5, and 7 is written twice (so no deadline applies), but
        // the pending write must not be dropped.
        let h = [
            w_pending(0, 0, 5),
            cas_pending(1, 1, Some(5), 7),
            r(2, 2, 3, Some(7)),
            w(3, 100, 101, 7),
        ];
        assert_lin(&h, None, true);
        // Same with a write of 5 that did return: fine either way.
        let mut done = h.clone();
        done[0] = w(0, 0, 1, 5);
        assert_lin(&done, None, true);
        // Without the write of 5 the read is impossible.
        assert_lin(&h[1..], None, false);
    }

    #[test]
    fn pending_writes_are_not_interchangeable_when_a_cas_compares_against_one() {
        // The failed CAS from 1 at [4, 10] needs a pending write first; the failed CAS from 5
        // at [11, 15] then needs the state not to be 5, so that pending write must be the one
        // of 8. The later failed CAS from 1 at [18, 25] then needs the pending write of 5.
        // Using 5 first (it was invoked first) leads nowhere.
        let h = [
            w(0, 0, 1, 1),
            w_pending(1, 2, 5),
            w_pending(2, 3, 8),
            cas(3, 4, 10, Some(1), 2, false),
            cas(4, 11, 15, Some(5), 3, false),
            w(0, 16, 17, 1),
            cas(3, 18, 25, Some(1), 4, false),
        ];
        assert_lin(&h, None, true);
        // Without the pending write of 5 the last CAS cannot fail.
        let mut h2 = h.to_vec();
        h2.remove(1);
        assert_lin(&h2, None, false);
    }

    // ---- 9. indeterminate write seen too early -----------------------------------------------

    #[test]
    fn indeterminate_write_read_before_invocation_is_a_violation() {
        let h = [w(0, 0, 10, 1), r(2, 20, 30, Some(2)), w_pending(1, 40, 2)];
        assert_lin(&h, None, false);
        let h = [
            r(2, 20, 30, Some(2)),
            w_pending(1, 40, 2),
            r(2, 50, 60, Some(2)),
        ];
        assert_lin(&h, None, false);
        // Read overlapping the invocation is fine.
        let h = [w(0, 0, 10, 1), r(2, 20, 45, Some(2)), w_pending(1, 40, 2)];
        assert_lin(&h, None, true);
    }

    // ---- 10. non-monotonic reads -------------------------------------------------------------

    #[test]
    fn non_monotonic_reads_are_a_violation() {
        let h = [
            w(0, 0, 10, 1),
            w(0, 20, 30, 2),
            r(1, 40, 50, Some(2)),
            r(1, 60, 70, Some(1)),
        ];
        assert_lin(&h, None, false);
        // Two different readers, still ordered in real time.
        let h = [
            w(0, 0, 10, 1),
            w(0, 20, 30, 2),
            r(1, 15, 50, Some(2)),
            r(2, 60, 70, Some(1)),
        ];
        assert_lin(&h, None, false);
        // Overlapping reads during the second write can disagree.
        let h = [
            w(0, 0, 10, 1),
            w(0, 20, 100, 2),
            r(1, 40, 50, Some(2)),
            r(2, 45, 70, Some(1)),
        ];
        assert_lin(&h, None, true);
    }

    // ---- 11. generated history ---------------------------------------------------------------

    #[test]
    fn generated_2000_op_history() {
        let mut rng = Rng::new(2000);
        let h = simulate(&mut rng, &big_sim(2000), None);
        let pending = h.iter().filter(|o| o.ret.is_none()).count();
        let cas_ops = h
            .iter()
            .filter(|o| matches!(o.kind, Kind::Cas { .. }))
            .count();
        let overlapping = h
            .windows(2)
            .filter(|p| p[1].call < p[0].ret.unwrap_or(u64::MAX))
            .count();
        assert!(pending > 20 && cas_ops > 200 && overlapping > 500);

        let t = Instant::now();
        let v = check(&h, None, BUDGET);
        println!(
            "2000-op history ({pending} pending, {cas_ops} CAS): {v:?} in {:?}",
            t.elapsed()
        );
        assert_eq!(v, Verdict::Linearizable);
        let steps = steps_needed(&h, None);
        println!("  search steps needed: {steps}");
        assert!(steps < 100_000, "{steps}");

        // Stale read: a read invoked after write W2 returned, W2 invoked after W1 returned,
        // sees W1's (unique) value. Nothing else ever writes it, so this is certainly a
        // violation.
        let done_write = |o: &Op| matches!(o.kind, Kind::Write { .. }) && o.ret.is_some();
        let mut reads: Vec<usize> = (0..h.len())
            .filter(|&i| matches!(h[i].kind, Kind::Read { .. }))
            .collect();
        reads.sort_by_key(|&i| h[i].call);
        let ri = reads[reads.len() * 3 / 4];
        let latest_before = |t: u64| {
            (0..h.len())
                .filter(|&i| done_write(&h[i]) && h[i].ret.unwrap() < t)
                .max_by_key(|&i| h[i].ret)
                .unwrap()
        };
        let w2 = latest_before(h[ri].call);
        let w1 = latest_before(h[w2].call);
        let Kind::Write { value: stale } = h[w1].kind else {
            unreachable!()
        };
        let mut bad = h.clone();
        bad[ri].kind = Kind::Read { value: Some(stale) };
        let t = Instant::now();
        let v = check(&bad, None, BUDGET);
        println!(
            "2000-op history with a stale read: {v:?} in {:?}",
            t.elapsed()
        );
        match v {
            Verdict::Violation { stuck_at, .. } => assert!(stuck_at.contains(&ri)),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn generated_histories_read_write_only_and_large() {
        // Read/write only (pending writes can be dropped statically), 2000 ops.
        let mut rng = Rng::new(7);
        let sim = Sim {
            write_pct: 50,
            pending_pct: 5,
            ..big_sim(2000)
        };
        let h = simulate(&mut rng, &sim, None);
        let t = Instant::now();
        let v = check(&h, None, BUDGET);
        println!("2000-op read/write history: {v:?} in {:?}", t.elapsed());
        assert_eq!(v, Verdict::Linearizable);

        // 20,000 ops with CAS and pending operations.
        let h = simulate(&mut rng, &big_sim(20_000), None);
        let t = Instant::now();
        let v = check(&h, None, 50_000_000);
        println!("20000-op history: {v:?} in {:?}", t.elapsed());
        assert_eq!(v, Verdict::Linearizable);
        let steps = steps_needed(&h, None);
        println!("  search steps needed: {steps}");
        assert!(steps < 1_000_000, "{steps}");
    }

    #[test]
    fn generated_histories_with_many_seeds() {
        for seed in 0..30 {
            let mut rng = Rng::new(seed);
            let sim = Sim {
                clients: 2 + seed as usize % 6,
                pending_pct: seed % 8,
                ..big_sim(500)
            };
            let h = simulate(&mut rng, &sim, Some(0));
            assert_eq!(
                check(&h, Some(0), BUDGET),
                Verdict::Linearizable,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn matches_brute_force_on_small_random_histories() {
        let mut rng = Rng::new(42);
        let (mut lin, mut viol) = (0, 0);
        for case in 0..60_000 {
            let range = 1 + rng.below(3);
            let initial = if rng.percent(50) {
                None
            } else {
                Some(1 + rng.below(range))
            };
            let n = 1 + rng.below(9) as usize;
            let pending_pct = [10, 25, 50][rng.below(3) as usize];
            let h = if rng.percent(65) {
                let sim = Sim {
                    clients: 1 + rng.below(4) as usize,
                    ops: n,
                    read_pct: 40,
                    write_pct: 25,
                    pending_pct,
                    unique: rng.percent(40),
                    range,
                    max_gap: 3,
                    max_dur: 6,
                    pending_reads: rng.percent(20),
                };
                let mut h = simulate(&mut rng, &sim, initial);
                for _ in 0..rng.below(3) {
                    mutate(&mut rng, &mut h, range);
                }
                h
            } else {
                random_history(&mut rng, n, range, pending_pct)
            };
            let expected = brute(&h, initial);
            let got = check(&h, initial, u64::MAX);
            assert!(
                matches!(got, Verdict::Linearizable) == expected
                    && !matches!(got, Verdict::Unknown),
                "case {case}: initial {initial:?}, expected linearizable={expected}, \
                 got {got:?} for {h:#?}"
            );
            if expected {
                lin += 1;
            } else {
                viol += 1;
            }
        }
        println!("brute-force agreement: {lin} linearizable, {viol} violations");
        assert!(lin > 10_000 && viol > 10_000);
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut rng = Rng::new(99);
        let mut h = simulate(&mut rng, &big_sim(300), None);
        h.reverse();
        assert_eq!(check(&h, None, BUDGET), Verdict::Linearizable);
        h.swap(10, 200);
        assert_eq!(check(&h, None, BUDGET), Verdict::Linearizable);
    }

    // ---- 12. budget --------------------------------------------------------------------------

    #[test]
    fn budget_exhaustion_is_unknown() {
        let mut rng = Rng::new(5);
        let h = simulate(&mut rng, &big_sim(200), None);
        assert_eq!(check(&h, None, 10), Verdict::Unknown);
        assert_eq!(check(&h, None, 0), Verdict::Unknown);
        assert_eq!(check(&h, None, BUDGET), Verdict::Linearizable);
    }

    // ---- scale and pathological shapes -------------------------------------------------------

    #[test]
    fn long_sequential_history_no_recursion() {
        let mut h = Vec::new();
        for i in 0..20_000u64 {
            let t = 4 * i;
            if i % 2 == 0 {
                h.push(w(0, t, t + 1, i));
            } else {
                h.push(r(1, t, t + 1, Some(i - 1)));
            }
        }
        assert_eq!(check(&h, None, BUDGET), Verdict::Linearizable);
        let last = h.len() - 1;
        h[last].kind = Kind::Read { value: Some(0) };
        assert_eq!(
            check(&h, None, BUDGET),
            Verdict::Violation {
                longest_prefix: last,
                stuck_at: vec![last]
            }
        );
    }

    #[test]
    fn many_unobserved_pending_writes_with_failed_cas_stay_cheap() {
        // 40 pending writes that never land (and non-unique values so nothing is dropped or
        // given a deadline), then a long run of successful and failed CASes. A naive WGL
        // search explores every subset of the pending writes.
        let mut h = vec![w(0, 0, 1, 1)];
        for i in 0..40 {
            h.push(w_pending(10 + i, 2 + i, 1000 + i % 3));
        }
        let mut t = 100;
        let mut cur = 1;
        for i in 0..500 {
            let next = 2 + i;
            h.push(cas(1, t, t + 5, Some(cur), next, true));
            h.push(cas(2, t + 1, t + 6, Some(cur), next + 10_000, false));
            h.push(r(3, t + 2, t + 7, Some(next)));
            cur = next;
            t += 10;
        }
        let start = Instant::now();
        let v = check(&h, None, 1_000_000);
        println!(
            "{} ops with 40 pending writes: {v:?} in {:?}",
            h.len(),
            start.elapsed()
        );
        assert_eq!(v, Verdict::Linearizable);
        // Make the last read impossible: the search must still finish within budget.
        let last = h.len() - 1;
        h[last].kind = Kind::Read { value: Some(3) };
        let start = Instant::now();
        let v = check(&h, None, 5_000_000);
        println!(
            "...with a stale read at the end: {v:?} in {:?}",
            start.elapsed()
        );
        assert!(matches!(v, Verdict::Violation { .. }), "{v:?}");
    }

    #[test]
    fn high_concurrency_small_history() {
        // 12 fully overlapping writes and a read of each value afterwards in reverse order:
        // a violation that requires exploring many interleavings.
        let mut h: Vec<Op> = (0..12).map(|i| w(i, 0, 100, i)).collect();
        h.push(r(20, 200, 210, Some(3)));
        h.push(r(21, 220, 230, Some(4)));
        assert_lin(&h, None, false);
        h.pop();
        assert_lin(&h, None, true);
    }
}
