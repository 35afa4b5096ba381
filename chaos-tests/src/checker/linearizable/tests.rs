//! Tests of the linearizability checker, including histories that must fail
//! and a brute-force reference checker.

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
            matches!(got, Verdict::Linearizable) == expected && !matches!(got, Verdict::Unknown),
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
