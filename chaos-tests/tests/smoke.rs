//! The CI smoke set: every nemesis once, on 3 masters, under the register,
//! set and watch workloads at the same time; the run must find no violation.
//! Needs root (network namespaces, nftables, tmpfs), as CI has.

use std::process::Command;

mod common;
use common::control_plane;

/// Run the harness with `args`; returns (summary numbers, stdout).
fn chaos(args: &[&str]) -> ([usize; 3], String) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chaos-tests"))
        .args(args)
        .arg("--bin")
        .arg(control_plane())
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .expect("running chaos-tests");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("chaos: "))
        .unwrap_or_else(|| panic!("no summary line; exit {:?}", out.status));
    let numbers: Vec<usize> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [ops, faults, violations] = numbers[..] else {
        panic!("unexpected summary {last:?}");
    };
    assert!(out.status.success(), "chaos run failed: {last}");
    ([ops, faults, violations], stdout)
}

#[test]
fn every_nemesis_once_on_three_masters() {
    let ([ops, faults, violations], stdout) = chaos(&[
        "--masters=3",
        "--nemesis=all",
        "--each-once",
        "--workload=register,set,watch",
        "--clients=4",
        "--quiet=1s",
        "--hold=2s",
        "--time=10s",
        "--seed=7",
    ]);
    assert_eq!(violations, 0);
    assert_eq!(faults, chaos_tests::nemesis::ALL.len());
    assert!(ops > 1000, "too few operations: {ops}");
    // Every workload reported and found nothing wrong.
    for w in ["register:", "set:", "watch:"] {
        assert!(stdout.contains(w), "no {w} report");
    }
    assert!(stdout.contains("0 not linearizable"), "{stdout}");
    assert!(stdout.contains("0 lost, 0 phantom"), "{stdout}");
    assert!(stdout.contains("; 0 problems"), "{stdout}");
}

/// Kill -9 of every master during writes, three times: every acknowledged
/// write is there afterwards, reads stay linearizable (a leader that
/// resumed leadership without an election once overwrote entries only its
/// followers held), and watches see every revision exactly once.
#[test]
fn restarting_every_master_loses_no_acknowledged_write() {
    let ([_, faults, violations], stdout) = chaos(&[
        "--masters=3",
        "--nemesis=restart-all",
        "--per-nemesis",
        "--runs=3",
        "--workload=register,set,watch",
        "--clients=4",
        "--quiet=1s",
        "--hold=2s",
        "--time=6s",
        "--seed=1011",
    ]);
    assert_eq!(faults, 3);
    assert_eq!(violations, 0);
    assert_eq!(stdout.matches(" 0 lost, 0 phantom").count(), 3, "{stdout}");
    assert_eq!(stdout.matches(" 0 not linearizable").count(), 3, "{stdout}");
}

/// The operator's rolling restart (docs/deploying.md, "Upgrading") under
/// the register and set workloads: each master in turn gets SIGTERM, is
/// started again with the same flags and must be a voter under a leader
/// before the next; followers first, the leader last. Nothing acknowledged
/// is lost, every history stays linearizable, and a request that failed
/// (sent to the master just stopped) succeeds when retried on another.
#[test]
fn a_rolling_restart_loses_nothing() {
    let ([_, faults, violations], stdout) = chaos(&[
        "--masters=3",
        "--nemesis=rolling-restart",
        "--each-once",
        "--workload=register,set",
        "--clients=4",
        "--quiet=2s",
        "--hold=1s",
        "--time=10s",
        "--seed=21",
    ]);
    assert_eq!(faults, 1);
    assert_eq!(violations, 0);
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("rolling-restart "))
        .unwrap_or_else(|| panic!("no rolling-restart line: {stdout}"));
    assert!(line.contains("3/3 restarted"), "{line}");
    let order = line.split("SIGTERM+start ").nth(1).expect("order");
    let order = order.split(':').next().expect("order");
    for m in ["m0", "m1", "m2"] {
        assert!(order.contains(m), "{m} not restarted: {line}");
    }
    // The leader hands over before it stops, and a client's retry on
    // another master gets through: no request fails twice in a row.
    let during = stdout
        .lines()
        .find(|l| l.starts_with("    requests during it ("))
        .unwrap_or_else(|| panic!("no requests line: {stdout}"));
    assert!(
        during.contains("; 0 times a client's retry on another master failed too"),
        "{during}"
    );
    assert!(stdout.contains(" 0 not linearizable"), "{stdout}");
    assert!(stdout.contains(" 0 lost, 0 phantom"), "{stdout}");
}
