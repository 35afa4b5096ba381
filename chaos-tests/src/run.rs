//! One scenario: start a cluster, run the workloads, inject faults on a
//! schedule, heal, then check everything and report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::checker;
use crate::client::{self, REQUEST_TIMEOUT};
use crate::cluster::{self, Cluster};
use crate::history::{History, Record, Status};
use crate::nemesis::{self, Fault, Kind};
use crate::workload::{self, watch::Watchers, Ctx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Register,
    Set,
    Watch,
}

impl Workload {
    pub fn parse_list(s: &str) -> Result<Vec<Workload>> {
        let mut out = Vec::new();
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let ws: &[Workload] = match w {
                "register" => &[Workload::Register],
                "set" | "append" | "durability" => &[Workload::Set],
                "watch" => &[Workload::Watch],
                "all" => &[Workload::Register, Workload::Set, Workload::Watch],
                _ => anyhow::bail!("unknown workload {w:?} (register, set, watch, all)"),
            };
            for w in ws {
                if !out.contains(w) {
                    out.push(*w);
                }
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub cluster: cluster::Options,
    pub nemeses: Vec<Kind>,
    pub workloads: Vec<Workload>,
    pub time: Duration,
    pub seed: u64,
    pub clients: usize,
    /// Healthy time between faults.
    pub quiet: Duration,
    /// How long each fault stays in force.
    pub hold: Duration,
    /// Inject every nemesis once, in order, instead of at random.
    pub each_once: bool,
    /// Where a failed run's history goes.
    pub out: PathBuf,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub ops: usize,
    pub faults: Vec<Fault>,
    pub violations: Vec<String>,
    pub lines: Vec<String>,
}

pub async fn run(s: &Scenario) -> Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut cluster = Cluster::start(s.cluster.clone()).await?;
    let endpoints: Vec<Channel> = (0..cluster.len())
        .map(|i| cluster::channel(&cluster.client_url(i), REQUEST_TIMEOUT, Some(&cluster.tls)))
        .collect::<Result<_>>()?;
    let deadline = Instant::now() + s.time;
    let history = History::default();
    let ctx = Arc::new(Ctx::new(history.clone(), endpoints.clone()));
    let watchers = Arc::new(Watchers::default());

    let mut tasks = Vec::new();
    let mut client_id = 0u64;
    for w in &s.workloads {
        for _ in 0..s.clients {
            let r = StdRng::seed_from_u64(rng.gen());
            let ctx = ctx.clone();
            tasks.push(match w {
                Workload::Register => tokio::spawn(workload::register::client(ctx, client_id, r)),
                Workload::Set => tokio::spawn(workload::set::client(ctx, client_id, r)),
                Workload::Watch => tokio::spawn(workload::watch::writer(ctx, client_id, r)),
            });
            client_id += 1;
        }
    }
    let mut watch_tasks = Vec::new();
    if s.workloads.contains(&Workload::Watch) {
        for _ in 0..3 {
            let r = StdRng::seed_from_u64(rng.gen());
            watch_tasks.push(tokio::spawn(workload::watch::watcher(
                watchers.clone(),
                endpoints.clone(),
                r,
            )));
        }
    }

    // The nemesis schedule.
    let mut out = Outcome::default();
    // With --each-once the run lasts until every nemesis has had its turn;
    // otherwise faults keep coming while a whole cycle still fits.
    let mut queue: Vec<Kind> = s.nemeses.clone();
    let cycle = s.quiet + s.hold + Duration::from_secs(2);
    loop {
        let kind = if s.each_once {
            if queue.is_empty() {
                break;
            }
            queue.remove(0)
        } else if !s.nemeses.is_empty() && Instant::now() + cycle < deadline {
            *s.nemeses.choose(&mut rng).expect("nemeses")
        } else {
            break;
        };
        tokio::time::sleep(s.quiet).await;
        let from = history.now();
        let fault = inject_and_heal(&mut cluster, kind, s.hold, &endpoints, &mut rng).await?;
        println!(
            "  {:<18} {:<50} new leader {:>6}  writable after {:>6} ({:>6} after heal)",
            kind.name(),
            fault.detail,
            secs(fault.new_leader),
            secs(fault.since_fault),
            secs(fault.recovered)
        );
        if kind == Kind::RollingRestart {
            // What the clients saw while the masters restarted one by one
            // (a client does not retry: it records the error and moves on
            // to another master).
            let to = history.now();
            let during: Vec<Record> = history
                .records()
                .into_iter()
                .filter(|r| r.call >= from && r.call <= to)
                .collect();
            let (streaks, longest) = failure_streaks(&during);
            println!(
                "    requests during it ({:.2}s): {}; {streaks} times a client's retry on another master failed too (longest run of failures {longest})",
                (to - from) as f64 / 1e9,
                counts(&during)
            );
        }
        for p in &fault.problems {
            println!("    ! {p}");
        }
        out.violations.extend(fault.problems.iter().cloned());
        out.faults.push(fault);
        for (name, status) in cluster.crashed() {
            out.violations
                .push(format!("{name} exited by itself: {status}"));
            let i = cluster
                .masters
                .iter()
                .position(|m| m.name == name)
                .expect("master");
            cluster.spawn(i)?;
        }
    }
    tokio::time::sleep_until(deadline.max(Instant::now() + s.quiet).into()).await;
    ctx.stop();
    for t in tasks {
        t.await?;
    }
    // Everything is healed; let the cluster settle, then read the final state.
    cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .context("no leader after the run")?;
    let records = history.records();
    out.ops = records.len();

    if s.workloads.contains(&Workload::Register) {
        let regs = under(&records, workload::register::PREFIX);
        let report = checker::register::check(&regs);
        out.lines.push(format!(
            "register: {} ops ({}), {} keys checked: {} not linearizable, {} undecided",
            regs.len(),
            counts(&regs),
            report.keys,
            report.violations.len(),
            report.unknown.len()
        ));
        for (key, why) in report.violations {
            out.violations.push(format!("register {key}: {why}"));
        }
    }
    if s.workloads.contains(&Workload::Set) {
        let adds = under(&records, workload::set::PREFIX);
        let present: Vec<u64> = final_read(&endpoints, workload::set::PREFIX)
            .await?
            .into_iter()
            .map(|(_, v, _)| v)
            .collect();
        let report = checker::set::check(&adds, &present);
        out.lines.push(format!(
            "set: {} adds ({}); {} acknowledged, {} lost, {} phantom; unknown outcome: {} present, {} absent",
            adds.len(),
            counts(&adds),
            report.acknowledged,
            report.lost.len(),
            report.phantom.len(),
            report.unknown_present,
            report.unknown_absent
        ));
        if !report.lost.is_empty() {
            out.violations.push(format!(
                "set: {} acknowledged adds lost, e.g. {:?}",
                report.lost.len(),
                &report.lost[..report.lost.len().min(5)]
            ));
        }
        if !report.phantom.is_empty() {
            out.violations.push(format!(
                "set: {} values present that were never added, e.g. {:?}",
                report.phantom.len(),
                &report.phantom[..report.phantom.len().min(5)]
            ));
        }
    }
    if s.workloads.contains(&Workload::Watch) {
        let puts = under(&records, workload::watch::PREFIX);
        let fin = final_read(&endpoints, workload::watch::PREFIX).await?;
        let last = fin.iter().map(|(_, _, rev)| *rev).max().unwrap_or(0);
        watchers.stop_at.store(last.max(1), Ordering::Release);
        for t in watch_tasks {
            t.await?;
        }
        let state: BTreeMap<String, u64> = fin.into_iter().map(|(k, v, _)| (k, v)).collect();
        // The check covers the run up to the final read: a write whose
        // outcome was unknown may still land after it, and a watcher still
        // following then sees it.
        let mut logs = watchers.logs.lock().expect("watch logs").clone();
        for log in &mut logs {
            for events in &mut log.responses {
                events.retain(|e| e.revision <= last);
            }
            log.responses.retain(|events| !events.is_empty());
        }
        let problems = checker::watch::check(&puts, &logs, &state);
        let events: usize = logs
            .iter()
            .map(|l| l.responses.iter().map(Vec::len).sum::<usize>())
            .sum();
        out.lines.push(format!(
            "watch: {} txns ({}); {} watchers received {} events over {} streams; {} problems",
            puts.len(),
            counts(&puts),
            logs.len(),
            events,
            logs.iter().map(|l| l.reconnects).sum::<u64>(),
            problems.len()
        ));
        out.violations
            .extend(problems.into_iter().map(|p| format!("watch: {p}")));
        if !out.violations.is_empty() {
            let path = s
                .out
                .join(format!("chaos-{}-{}-watch.json", names(&s.nemeses), s.seed));
            std::fs::write(&path, serde_json::to_vec(&logs)?)?;
        }
    }
    for (name, status) in cluster.crashed() {
        out.violations
            .push(format!("{name} exited by itself: {status}"));
    }
    if !out.violations.is_empty() {
        let path = s.out.join(format!(
            "chaos-{}-{}-history.jsonl",
            names(&s.nemeses),
            s.seed
        ));
        history.save(&path)?;
        out.lines
            .push(format!("history saved to {}", path.display()));
        if s.cluster.keep {
            out.lines.push(format!(
                "master logs kept in {}",
                s.cluster.root.join("logs").display()
            ));
        }
    }
    cluster.shutdown();
    Ok(out)
}

async fn inject_and_heal(
    cluster: &mut Cluster,
    kind: Kind,
    hold: Duration,
    endpoints: &[Channel],
    rng: &mut StdRng,
) -> Result<Fault> {
    let start = Instant::now();
    let injected = nemesis::inject(kind, cluster, rng)
        .await
        .with_context(|| format!("injecting {}", kind.name()))?;
    let mut fault = injected.fault;
    // Probe for writability from the moment the fault is in force.
    let probe = {
        let endpoints = endpoints.to_vec();
        tokio::spawn(async move { first_write(&endpoints, hold + Duration::from_secs(30)).await })
    };
    tokio::time::sleep(hold.saturating_sub(start.elapsed())).await;
    nemesis::heal(injected.active, cluster)
        .await
        .with_context(|| format!("healing {}", kind.name()))?;
    let healed = Instant::now();
    fault.since_fault = probe.await?.map(|at| at - start);
    if let Some(at) = first_write(endpoints, Duration::from_secs(30)).await {
        fault.recovered = Some(at - healed);
    } else {
        fault.problems.push(format!(
            "no write succeeded within 30 s of healing {}",
            kind.name()
        ));
    }
    Ok(fault)
}

/// Write through every master at once, round after round, until one write
/// is acknowledged; returns when.
async fn first_write(endpoints: &[Channel], limit: Duration) -> Option<Instant> {
    let start = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < limit {
        let tries = endpoints
            .iter()
            .map(|ch| Box::pin(client::put(ch, "chaos/probe", round)));
        if futures::future::select_ok(tries).await.is_ok() {
            return Some(Instant::now());
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A linearizable scan that retries across masters until one answers.
async fn final_read(endpoints: &[Channel], prefix: &str) -> Result<Vec<(String, u64, i64)>> {
    let mut last = None;
    for attempt in 0..60 {
        match client::scan(&endpoints[attempt % endpoints.len()], prefix).await {
            Ok(kvs) => return Ok(kvs),
            Err(e) => last = Some(client::describe(&e)),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("final read of {prefix} failed: {last:?}")
}

fn names(kinds: &[Kind]) -> String {
    match kinds {
        [k] => k.name().to_string(),
        _ => "mixed".into(),
    }
}

/// One workload's records.
fn under(records: &[Record], prefix: &str) -> Vec<Record> {
    records
        .iter()
        .filter(|r| r.key.starts_with(prefix))
        .cloned()
        .collect()
}

/// Per client, in call order: how many times a failed request was followed
/// by another failure (a client moves to another master after a failure,
/// so that is a retry that failed too), and the longest run of failures.
fn failure_streaks(records: &[Record]) -> (usize, usize) {
    let mut by_client: BTreeMap<u64, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_client.entry(r.client).or_default().push(r);
    }
    let (mut again, mut longest) = (0, 0);
    for ops in by_client.values_mut() {
        ops.sort_by_key(|r| r.call);
        let mut run = 0;
        for r in ops.iter() {
            if r.status == Status::Ok {
                run = 0;
            } else {
                if run > 0 {
                    again += 1;
                }
                run += 1;
                longest = longest.max(run);
            }
        }
    }
    (again, longest)
}

/// "ok N, fail N, unknown N (the most common errors)".
fn counts(records: &[Record]) -> String {
    let n = |s| records.iter().filter(|r| r.status == s).count();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status != Status::Ok) {
        *reasons
            .entry(r.error.as_deref().unwrap_or("?"))
            .or_default() += 1;
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    let top: Vec<String> = reasons
        .iter()
        .take(3)
        .map(|(e, c)| format!("{c}x {e}"))
        .collect();
    format!(
        "ok {}, fail {}, unknown {}{}",
        n(Status::Ok),
        n(Status::Fail),
        n(Status::Info),
        if top.is_empty() {
            String::new()
        } else {
            format!(" [{}]", top.join("; "))
        }
    )
}

pub fn secs(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2}s", d.as_secs_f64()),
        None => "-".into(),
    }
}
