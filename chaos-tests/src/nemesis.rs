//! Faults. Each nemesis is injected into the running cluster and later
//! healed; `inject` returns what must be undone, so faults compose and a run
//! can always heal everything at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proto::etcd::cluster_client::ClusterClient;
use proto::etcd::{MemberAddRequest, MemberListRequest, MemberRemoveRequest};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::client;
use crate::cluster::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    KillLeader,
    KillFollower,
    KillRandom,
    Pause,
    PartitionLeader,
    PartitionHalves,
    PartitionBridge,
    PartitionRing,
    PartitionOneWay,
    Loss,
    RestartAll,
    Membership,
    DiskFull,
    RollingRestart,
}

pub const ALL: [Kind; 14] = [
    Kind::KillLeader,
    Kind::KillFollower,
    Kind::KillRandom,
    Kind::Pause,
    Kind::PartitionLeader,
    Kind::PartitionHalves,
    Kind::PartitionBridge,
    Kind::PartitionRing,
    Kind::PartitionOneWay,
    Kind::Loss,
    Kind::RestartAll,
    Kind::Membership,
    Kind::DiskFull,
    Kind::RollingRestart,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::KillLeader => "kill-leader",
            Kind::KillFollower => "kill-follower",
            Kind::KillRandom => "kill-random",
            Kind::Pause => "pause",
            Kind::PartitionLeader => "partition-leader",
            Kind::PartitionHalves => "partition-halves",
            Kind::PartitionBridge => "partition-bridge",
            Kind::PartitionRing => "partition-ring",
            Kind::PartitionOneWay => "partition-one-way",
            Kind::Loss => "loss",
            Kind::RestartAll => "restart-all",
            Kind::Membership => "membership",
            Kind::DiskFull => "disk-full",
            Kind::RollingRestart => "rolling-restart",
        }
    }
}

/// Parse `kill,partition,...`: single names, or the groups `kill`,
/// `partition` and `all`.
pub fn parse_list(s: &str) -> Result<Vec<Kind>> {
    let mut out = Vec::new();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let group: Vec<Kind> = match word {
            "all" => ALL.to_vec(),
            "none" => Vec::new(),
            "kill" => vec![Kind::KillLeader, Kind::KillFollower, Kind::KillRandom],
            "partition" => ALL
                .iter()
                .copied()
                .filter(|k| k.name().starts_with("partition"))
                .collect(),
            "durability" => vec![Kind::RestartAll],
            w => match ALL.iter().find(|k| k.name() == w) {
                Some(k) => vec![*k],
                None => bail!(
                    "unknown nemesis {w:?}; known: all, kill, partition, {}",
                    ALL.map(|k| k.name()).join(", ")
                ),
            },
        };
        for k in group {
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    Ok(out)
}

/// What to undo.
#[derive(Debug)]
pub enum Active {
    /// Start these masters again.
    Restart(Vec<usize>),
    Resume(usize),
    Network,
    /// Add the removed master back with an empty data directory.
    Rejoin(usize),
    /// Delete the file that filled this master's disk.
    Disk(PathBuf),
    /// Nothing: the fault healed itself (a rolling restart).
    Nothing,
}

/// One injected fault, for the report.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: Kind,
    pub detail: String,
    /// Fault to a new leader elsewhere (leader faults only).
    pub new_leader: Option<Duration>,
    /// Heal to the first acknowledged write after it.
    pub recovered: Option<Duration>,
    /// Fault to the first acknowledged write (during the fault or after the heal).
    pub since_fault: Option<Duration>,
    /// Broken promises observed while the fault was in force.
    pub problems: Vec<String>,
}

pub struct Injected {
    pub active: Active,
    pub fault: Fault,
}

fn others(n: usize, i: usize) -> Vec<usize> {
    (0..n).filter(|&j| j != i).collect()
}

/// Rules cutting every pair in `pairs` both ways.
fn cut(n: usize, pairs: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut deny = vec![Vec::new(); n];
    for &(a, b) in pairs {
        deny[a].push(b);
        deny[b].push(a);
    }
    deny
}

fn between(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    a.iter()
        .flat_map(|&x| b.iter().map(move |&y| (x, y)))
        .collect()
}

fn names(c: &Cluster, ix: &[usize]) -> String {
    ix.iter()
        .map(|&i| c.masters[i].name.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

async fn leader(c: &mut Cluster) -> Result<usize> {
    c.wait_leader(Duration::from_secs(10))
        .await
        .context("no leader before the fault")
}

/// Poll until a master other than `old` says it leads.
async fn new_leader(c: &mut Cluster, old: usize, since: Instant) -> Option<Duration> {
    while since.elapsed() < Duration::from_secs(15) {
        if let Some(l) = c.leader().await {
            if l != old {
                return Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

pub async fn inject(kind: Kind, c: &mut Cluster, rng: &mut StdRng) -> Result<Injected> {
    let n = c.len();
    let l = leader(c).await?;
    let follower = *others(n, l).choose(rng).expect("at least two masters");
    let start = Instant::now();
    let mut problems = Vec::new();
    // Set when the fault takes the leader out: then the time to a new one is measured.
    let mut hit = None;
    // Or measured by the fault itself.
    let mut measured_leader = None;
    let (active, detail) = match kind {
        Kind::KillLeader | Kind::KillFollower | Kind::KillRandom => {
            let i = match kind {
                Kind::KillLeader => l,
                Kind::KillFollower => follower,
                _ => rng.gen_range(0..n),
            };
            hit = Some(i);
            c.kill(i);
            (
                Active::Restart(vec![i]),
                format!("kill -9 {}", c.masters[i].name),
            )
        }
        Kind::Pause => {
            let i = if rng.gen_bool(0.5) { l } else { follower };
            hit = Some(i);
            c.pause(i);
            (Active::Resume(i), format!("SIGSTOP {}", c.masters[i].name))
        }
        Kind::PartitionLeader => {
            hit = Some(l);
            c.net.apply(&cut(n, &between(&[l], &others(n, l))), 0)?;
            (
                Active::Network,
                format!("isolate leader {}", c.masters[l].name),
            )
        }
        Kind::PartitionHalves => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let (minority, majority) = order.split_at(n / 2);
            c.net.apply(&cut(n, &between(minority, majority)), 0)?;
            (
                Active::Network,
                format!("{} | {}", names(c, minority), names(c, majority)),
            )
        }
        Kind::PartitionBridge => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let (left, rest) = order.split_at(n / 2);
            let (bridge, right) = rest.split_at(1);
            c.net.apply(&cut(n, &between(left, right)), 0)?;
            (
                Active::Network,
                format!(
                    "{} | {} | {} (the middle one sees both sides)",
                    names(c, left),
                    names(c, bridge),
                    names(c, right)
                ),
            )
        }
        Kind::PartitionRing => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let mut pairs = Vec::new();
            for a in 0..n {
                for b in a + 1..n {
                    let d = b - a;
                    if d != 1 && d != n - 1 {
                        pairs.push((order[a], order[b]));
                    }
                }
            }
            c.net.apply(&cut(n, &pairs), 0)?;
            (
                Active::Network,
                format!("ring {} (each sees its two neighbours)", names(c, &order)),
            )
        }
        Kind::PartitionOneWay => {
            hit = Some(l);
            let mut deny = vec![Vec::new(); n];
            deny[l] = others(n, l);
            c.net.apply(&deny, 0)?;
            (
                Active::Network,
                format!(
                    "leader {} hears nobody; everyone hears it",
                    c.masters[l].name
                ),
            )
        }
        Kind::Loss => {
            c.net.apply(&[], 20)?;
            (
                Active::Network,
                "20% of packets between masters dropped (nftables; no netem on this kernel)".into(),
            )
        }
        Kind::RestartAll => {
            for i in 0..n {
                c.kill(i);
            }
            (
                Active::Restart((0..n).collect()),
                "kill -9 every master".into(),
            )
        }
        Kind::Membership => {
            let i = if rng.gen_bool(0.5) { l } else { follower };
            hit = Some(i);
            let id = c.masters[i]
                .id
                .context("member id of the master to remove is unknown")?;
            let via = others(n, i)[0];
            ClusterClient::new(c.channel(via))
                .member_remove(MemberRemoveRequest { id })
                .await
                .with_context(|| format!("member remove {}", c.masters[i].name))?;
            c.kill(i);
            // Its data goes: it comes back as a new, empty member.
            for entry in std::fs::read_dir(&c.masters[i].data)? {
                let p = entry?.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
            (
                Active::Rejoin(i),
                format!(
                    "member remove {} (then add it back empty)",
                    c.masters[i].name
                ),
            )
        }
        Kind::DiskFull => {
            let i = if rng.gen_bool(0.5) { l } else { follower };
            hit = Some(i);
            let (filler, detail) = fill_disk(c, i)?;
            // The guard polls every 100 ms; then writes there must be refused cleanly.
            tokio::time::sleep(Duration::from_millis(600)).await;
            match client::put(&c.channel(i), "chaos/disk-probe", 1).await {
                Err(e) if e.message().contains("database space exceeded") => {}
                Err(e) => problems.push(format!(
                    "write to the full master {} failed with {} instead of NOSPACE",
                    c.masters[i].name,
                    client::describe(&e)
                )),
                Ok(_) => problems.push(format!(
                    "write to the full master {} was accepted",
                    c.masters[i].name
                )),
            }
            (Active::Disk(filler), detail)
        }
        Kind::RollingRestart => {
            let r = rolling_restart(c, &mut problems).await?;
            measured_leader = r.new_leader;
            (Active::Nothing, r.detail)
        }
    };
    let new_leader = if hit == Some(l) {
        new_leader(c, l, start).await
    } else {
        measured_leader
    };
    Ok(Injected {
        active,
        fault: Fault {
            kind,
            detail,
            new_leader,
            recovered: None,
            since_fault: None,
            problems,
        },
    })
}

/// How long a master gets to drain and exit after SIGTERM (it drains for
/// up to 5 s, then syncs and closes its store) before kill -9.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a restarted master gets to answer and be a voter under a leader.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(20);

struct Rolled {
    detail: String,
    /// The leader's SIGTERM to another master leading.
    new_leader: Option<Duration>,
}

/// The operator's rolling restart (docs/deploying.md, "Upgrading"): one
/// master at a time, followers first and the current leader last, so the
/// cluster elects a new leader once; SIGTERM, wait for the exit, start it
/// again with the same flags (with `--upgrade-bin`: that binary), and wait
/// until it answers, the cluster has a leader and the member list has it
/// as a voter before the next. The leader is asked anew before each step,
/// as it may have moved.
async fn rolling_restart(c: &mut Cluster, problems: &mut Vec<String>) -> Result<Rolled> {
    let n = c.len();
    let mut left: Vec<usize> = (0..n).collect();
    let mut order = Vec::new();
    let (mut drain_max, mut healthy_max) = (Duration::ZERO, Duration::ZERO);
    let mut new_leader_at = None;
    while !left.is_empty() {
        let l = c.wait_leader(Duration::from_secs(10)).await;
        let i = left
            .iter()
            .copied()
            .find(|&j| Some(j) != l)
            .unwrap_or(left[0]);
        left.retain(|&j| j != i);
        let was_leader = Some(i) == l;
        let name = c.masters[i].name.clone();
        let stopped = Instant::now();
        match c.terminate(i, STOP_TIMEOUT).await {
            Some(d) => drain_max = drain_max.max(d),
            None => problems.push(format!(
                "{name} did not exit within {}s of SIGTERM (killed)",
                STOP_TIMEOUT.as_secs()
            )),
        }
        if was_leader {
            // The time to a new leader, while the old one is down (the
            // operator's binary swap); it comes back as a follower.
            new_leader_at = new_leader(c, i, stopped).await;
        }
        c.masters[i].upgraded = c.opts.upgrade_bin.is_some();
        c.spawn(i)?;
        let restarted = Instant::now();
        match wait_voter(c, i, HEALTHY_TIMEOUT).await {
            Ok(()) => healthy_max = healthy_max.max(restarted.elapsed()),
            Err(e) => problems.push(format!("{name} after its restart: {e:#}")),
        }
        order.push(if was_leader {
            format!("{name}(leader)")
        } else {
            name
        });
    }
    let with = match &c.opts.upgrade_bin {
        Some(p) => format!(" onto {}", p.display()),
        None => String::new(),
    };
    Ok(Rolled {
        detail: format!(
            "SIGTERM+start {}{with}: {}/{n} restarted, exit max {:.2}s, voter max {:.2}s",
            order.join(","),
            order.len(),
            drain_max.as_secs_f64(),
            healthy_max.as_secs_f64()
        ),
        new_leader: new_leader_at,
    })
}

/// Wait until master `i` answers Status, some master leads, and the
/// leader's member list has `i` as a voter.
async fn wait_voter(c: &mut Cluster, i: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match step_voter(c, i).await {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("not a healthy voter within {}s: {last}", timeout.as_secs())
}

async fn step_voter(c: &mut Cluster, i: usize) -> Result<()> {
    let s = c.status(i).await.context("it does not answer Status")?;
    if s.leader == 0 {
        bail!("it knows no leader");
    }
    let id = s.header.map(|h| h.member_id).context("no member id")?;
    let l = c.leader().await.context("no master says it leads")?;
    let members = ClusterClient::new(c.channel(l))
        .member_list(MemberListRequest::default())
        .await
        .map_err(|e| anyhow::anyhow!("member list: {}", client::describe(&e)))?
        .into_inner()
        .members;
    match members.iter().find(|m| m.id == id) {
        Some(m) if !m.is_learner => Ok(()),
        Some(_) => bail!("it is a learner"),
        None => bail!("it is not in the member list"),
    }
}

/// Leave a few MiB free on master `i`'s tmpfs, below its guard threshold.
fn fill_disk(c: &Cluster, i: usize) -> Result<(PathBuf, String)> {
    let dir = &c.masters[i].data;
    let st = nix::sys::statvfs::statvfs(dir)?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let leave = (c.opts.min_free_mb << 20) / 2;
    if c.opts.tmpfs_mb.is_none() {
        bail!("disk-full needs the data directories on tmpfs");
    }
    let size = free.saturating_sub(leave);
    let path = dir.join("chaos-filler");
    let f = std::fs::File::create(&path)?;
    nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        nix::fcntl::FallocateFlags::empty(),
        0,
        size as i64,
    )
    .context("fallocate")?;
    Ok((
        path,
        format!(
            "fill {}'s disk ({} MiB free of {} MiB)",
            c.masters[i].name,
            leave >> 20,
            c.opts.tmpfs_mb.unwrap_or(0)
        ),
    ))
}

pub async fn heal(active: Active, c: &mut Cluster) -> Result<()> {
    match active {
        Active::Restart(ix) => {
            for i in ix {
                c.spawn(i)?;
            }
        }
        Active::Resume(i) => c.resume(i),
        Active::Network => c.net.heal()?,
        Active::Rejoin(i) => {
            let url = c.peer_url(i);
            let via = others(c.len(), i)[0];
            // A membership change can be refused while the previous one
            // settles; keep trying for a while.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let r = ClusterClient::new(c.channel(via))
                    .member_add(MemberAddRequest {
                        peer_ur_ls: vec![url.clone()],
                        is_learner: false,
                    })
                    .await;
                match r {
                    Ok(_) => break,
                    Err(e) if Instant::now() < deadline => {
                        tracing_note(&format!("member add retry: {}", client::describe(&e)));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => bail!("member add {url}: {}", client::describe(&e)),
                }
            }
            c.masters[i].joining = true;
            c.spawn(i)?;
        }
        Active::Disk(filler) => std::fs::remove_file(&filler)?,
        Active::Nothing => {}
    }
    Ok(())
}

fn tracing_note(m: &str) {
    if std::env::var_os("CHAOS_VERBOSE").is_some() {
        eprintln!("  {m}");
    }
}
