//! `chaos-tests`: run fault-injection scenarios against real masters.
//!
//! ```text
//! cargo run --release -p chaos-tests -- --masters 5 --nemesis partition,kill \
//!     --workload register --time 60s --seed 42
//! ```
//! prints each fault as it happens, then a summary ending in
//! `chaos: N ops, M faults, K violations`; exits 1 if any check failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chaos_tests::cluster;
use chaos_tests::nemesis::{self, Fault, Kind};
use chaos_tests::run::{self, secs, Scenario, Workload};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "chaos-tests",
    about = "Fault injection against real Skiff masters"
)]
struct Cli {
    /// Masters in the cluster under test.
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Faults, comma-separated: all, kill, partition, or single ones
    /// (kill-leader, kill-follower, kill-random, pause, partition-leader,
    /// partition-halves, partition-bridge, partition-ring, partition-one-way,
    /// loss, restart-all, membership, disk-full, rolling-restart), or none.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Workloads, comma-separated: register, set (alias durability), watch, all.
    #[arg(long, default_value = "register")]
    workload: String,
    /// How long the workload runs (at least until every fault of
    /// --each-once has been injected and healed).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    time: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Client tasks per workload.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Healthy time between faults.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    quiet: Duration,
    /// How long each fault lasts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    hold: Duration,
    /// Inject each listed nemesis exactly once, in order (the CI smoke set);
    /// the run lasts as long as that takes.
    #[arg(long)]
    each_once: bool,
    /// Repeat the scenario with seeds seed, seed+1, ...; with --per-nemesis,
    /// that many runs for each nemesis on its own.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    #[arg(long)]
    per_nemesis: bool,
    /// The master binary (default: control-plane beside this binary).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// rolling-restart starts each master with this binary instead of
    /// --bin (a rolling upgrade); later restarts of that master use it too.
    #[arg(long)]
    upgrade_bin: Option<PathBuf>,
    /// Where failed runs save their history.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Keep data directories and master logs.
    #[arg(long)]
    keep: bool,
    /// Master election timeout (ms), passed to every master.
    #[arg(long, default_value_t = 800)]
    election_timeout_ms: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(60 * n)),
        _ => Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    }
}

fn default_bin() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("binary has no directory")?;
    // Integration tests run from target/<profile>/deps.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join("control-plane");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "no control-plane binary next to {} (pass --bin)",
        me.display()
    )
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match main_inner().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos-tests: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn main_inner() -> Result<bool> {
    let cli = Cli::parse();
    if cli.masters < 3 {
        bail!("--masters must be at least 3");
    }
    let nemeses = nemesis::parse_list(&cli.nemesis)?;
    let workloads = Workload::parse_list(&cli.workload)?;
    if workloads.is_empty() {
        bail!("no workload given");
    }
    let bin = match &cli.bin {
        Some(b) => b.clone(),
        None => default_bin()?,
    };
    let needs_tmpfs = nemeses.contains(&Kind::DiskFull);
    let groups: Vec<Vec<Kind>> = if cli.per_nemesis {
        nemeses.iter().map(|k| vec![*k]).collect()
    } else {
        vec![nemeses.clone()]
    };
    std::fs::create_dir_all(&cli.out)?;
    let mut table: BTreeMap<Kind, Stats> = BTreeMap::new();
    let (mut ops, mut faults, mut violations) = (0usize, 0usize, 0usize);
    let mut failed_runs = Vec::new();
    for group in &groups {
        for r in 0..cli.runs {
            let seed = cli.seed + r;
            let scenario = Scenario {
                cluster: cluster::Options {
                    masters: cli.masters,
                    bin: bin.clone(),
                    upgrade_bin: cli.upgrade_bin.clone(),
                    tmpfs_mb: needs_tmpfs.then_some(512),
                    election_timeout_ms: cli.election_timeout_ms,
                    min_free_mb: 32,
                    root: std::env::temp_dir()
                        .join(format!("skiff-chaos-{}-{seed}", std::process::id())),
                    keep: cli.keep,
                },
                nemeses: group.clone(),
                workloads: workloads.clone(),
                time: cli.time,
                seed,
                clients: cli.clients,
                quiet: cli.quiet,
                hold: cli.hold,
                each_once: cli.each_once,
                out: cli.out.clone(),
            };
            println!(
                "run: {} masters, nemesis {}, workload {}, seed {seed}",
                cli.masters,
                group.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
                cli.workload
            );
            let outcome = run::run(&scenario).await?;
            for l in &outcome.lines {
                println!("  {l}");
            }
            for v in &outcome.violations {
                println!("  VIOLATION {v}");
            }
            ops += outcome.ops;
            faults += outcome.faults.len();
            violations += outcome.violations.len();
            if !outcome.violations.is_empty() {
                failed_runs.push(seed);
            }
            for f in &outcome.faults {
                table.entry(f.kind).or_default().add(f);
            }
            for k in group {
                table.entry(*k).or_default().runs += 1;
            }
            if let [k] = group[..] {
                table.entry(k).or_default().violations += outcome.violations.len();
            }
            if let [k] = group[..] {
                table.entry(k).or_default().ops += outcome.ops;
            }
        }
    }
    println!();
    println!(
        "{:<18} {:>5} {:>8} {:>7} {:>10} {:>10} {:>10} {:>10} {:>11}",
        "nemesis",
        "runs",
        "ops",
        "faults",
        "violations",
        "write med",
        "write max",
        "leader med",
        "leader max"
    );
    for (kind, s) in &table {
        let ops = if s.ops > 0 {
            s.ops.to_string()
        } else {
            "-".into()
        };
        println!(
            "{:<18} {:>5} {:>8} {:>7} {:>10} {:>10} {:>10} {:>10} {:>11}",
            kind.name(),
            s.runs,
            ops,
            s.faults,
            s.violations,
            secs(median(&s.write)),
            secs(s.write.iter().max().copied()),
            secs(median(&s.leader)),
            secs(s.leader.iter().max().copied()),
        );
    }
    println!("(write: fault to the first acknowledged write, during the fault or after the heal; leader: fault to a new leader;");
    println!(
        " ops and violations per nemesis only when each run has a single nemesis: --per-nemesis)"
    );
    if !failed_runs.is_empty() {
        println!("failed seeds: {failed_runs:?}");
    }
    println!("chaos: {ops} ops, {faults} faults, {violations} violations");
    Ok(violations == 0)
}

#[derive(Default)]
struct Stats {
    runs: usize,
    ops: usize,
    faults: usize,
    violations: usize,
    write: Vec<Duration>,
    leader: Vec<Duration>,
}

impl Stats {
    fn add(&mut self, f: &Fault) {
        self.faults += 1;
        self.write.extend(f.since_fault);
        self.leader.extend(f.new_leader);
    }
}

fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len().saturating_sub(1) / 2).copied()
}
