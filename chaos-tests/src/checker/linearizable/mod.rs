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
mod tests;
