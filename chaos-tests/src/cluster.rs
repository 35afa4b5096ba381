//! The masters under test: real `control-plane` processes, one per network
//! namespace, each with its own data directory (on a small tmpfs when the
//! disk-full fault is in play). The harness starts, kills, pauses and
//! restarts them, and finds the leader by asking each one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use proto::etcd::maintenance_client::MaintenanceClient;
use proto::etcd::StatusRequest;
use raft_store::network::tls::Connector;
use tonic::transport::{Channel, Endpoint};

use crate::net::{run, Host, Net};

pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
const METRICS_PORT: u16 = 2381;

#[derive(Debug, Clone)]
pub struct Options {
    pub masters: usize,
    /// The `control-plane` binary.
    pub bin: PathBuf,
    /// The binary a rolling restart starts each master with (a rolling
    /// upgrade from `bin`); `None`: `bin` again.
    pub upgrade_bin: Option<PathBuf>,
    /// Mount a tmpfs of this many MiB on every data directory.
    pub tmpfs_mb: Option<u64>,
    pub election_timeout_ms: u64,
    pub min_free_mb: u64,
    /// Where data directories and logs go.
    pub root: PathBuf,
    /// Leave the data directories and logs behind.
    pub keep: bool,
}

pub struct Master {
    pub name: String,
    pub host: Host,
    pub data: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    pub paused: bool,
    /// Start with `--initial-cluster-state existing` (it was added back by
    /// `member add`, with an empty data directory).
    pub joining: bool,
    /// The Raft member id, learned from its first status answer.
    pub id: Option<u64>,
    /// A rolling restart moved it to `upgrade_bin`: later starts use that.
    pub upgraded: bool,
    channel: Channel,
}

pub struct Cluster {
    pub masters: Vec<Master>,
    pub opts: Options,
    /// The etcd API's client certificate.
    pub tls: Connector,
    mounts: Vec<PathBuf>,
    // Dropped last: the namespaces outlive the processes in them.
    pub net: Net,
}

/// A lazily connecting channel to a master's etcd API at `url`, with the
/// client certificate in `tls` for `https://` URLs.
pub fn channel(url: &str, timeout: Duration, tls: Option<&Connector>) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_millis(300))
        .timeout(timeout)
        .tcp_nodelay(true);
    Ok(raft_store::network::tls::channel(endpoint, tls)?)
}

/// The cluster CA and the etcd client certificate, made by `control-plane
/// init` in `dir` (the masters get `--pki-dir dir`).
pub fn make_pki(bin: &std::path::Path, dir: &std::path::Path) -> Result<Connector> {
    let out = Command::new(bin)
        .args(["init", "certs", "--pki-dir"])
        .arg(dir)
        .output()
        .context("running control-plane init")?;
    if !out.status.success() {
        bail!(
            "control-plane init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    client_tls(dir)
}

/// The etcd client certificate in the PKI directory `dir`.
pub fn client_tls(dir: &std::path::Path) -> Result<Connector> {
    let config = raft_store::network::tls::client_config(
        &dir.join("ca.crt"),
        &dir.join("etcd-client.crt"),
        &dir.join("etcd-client.key"),
    )?;
    Ok(Connector::new(std::sync::Arc::new(config)))
}

impl Cluster {
    /// Build the network, start every master and wait for a leader.
    pub async fn start(opts: Options) -> Result<Cluster> {
        if !opts.bin.exists() {
            bail!(
                "{} not found (build it: cargo build --release -p control-plane)",
                opts.bin.display()
            );
        }
        if let Some(up) = opts.upgrade_bin.as_ref().filter(|p| !p.exists()) {
            bail!("--upgrade-bin {} not found", up.display());
        }
        remove_stale_mounts();
        let net = Net::create(opts.masters)?;
        std::fs::create_dir_all(opts.root.join("logs"))?;
        let tls = make_pki(&opts.bin, &opts.root.join("pki"))?;
        let mut cluster = Cluster {
            masters: Vec::new(),
            mounts: Vec::new(),
            opts,
            tls,
            net,
        };
        for (i, host) in cluster.net.hosts().to_vec().into_iter().enumerate() {
            let data = cluster.opts.root.join(format!("m{i}"));
            std::fs::create_dir_all(&data)?;
            if let Some(mb) = cluster.opts.tmpfs_mb {
                run(&[
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={mb}m"),
                    "tmpfs",
                    &data.to_string_lossy(),
                ])?;
                cluster.mounts.push(data.clone());
            }
            let url = format!("https://{}:{CLIENT_PORT}", host.ip);
            cluster.masters.push(Master {
                name: format!("m{i}"),
                log: cluster.opts.root.join("logs").join(format!("m{i}.log")),
                data,
                host,
                child: None,
                paused: false,
                joining: false,
                id: None,
                upgraded: false,
                channel: channel(&url, Duration::from_millis(500), Some(&cluster.tls))?,
            });
        }
        for i in 0..cluster.masters.len() {
            cluster.spawn(i)?;
        }
        cluster
            .wait_leader(Duration::from_secs(20))
            .await
            .context("no leader elected after start")?;
        for i in 0..cluster.masters.len() {
            cluster.status(i).await;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.masters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.masters.is_empty()
    }

    pub fn client_url(&self, i: usize) -> String {
        format!("https://{}:{CLIENT_PORT}", self.masters[i].host.ip)
    }

    pub fn peer_url(&self, i: usize) -> String {
        format!("https://{}:{PEER_PORT}", self.masters[i].host.ip)
    }

    fn initial_cluster(&self) -> String {
        (0..self.len())
            .map(|i| format!("{}={}", self.masters[i].name, self.peer_url(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Start master `i`'s process (it must not be running).
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let initial = self.initial_cluster();
        let peer_url = self.peer_url(i);
        let m = &mut self.masters[i];
        if m.child.is_some() {
            bail!("{} is already running", m.name);
        }
        let ip = m.host.ip;
        let bin = match (&self.opts.upgrade_bin, m.upgraded) {
            (Some(up), true) => up,
            _ => &self.opts.bin,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &m.host.ns])
            .arg(bin)
            .args(["run", "--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .arg(format!("--listen-client={ip}:{CLIENT_PORT}"))
            .arg(format!("--listen-peer={ip}:{PEER_PORT}"))
            .arg(format!("--listen-metrics={ip}:{METRICS_PORT}"))
            .arg(format!("--advertise-peer-url={peer_url}"))
            .arg(format!("--initial-cluster={initial}"))
            .arg(format!(
                "--initial-cluster-state={}",
                if m.joining { "existing" } else { "new" }
            ))
            .arg("--initial-cluster-token=chaos")
            .arg("--pki-dir")
            .arg(self.opts.root.join("pki"))
            .arg("--store-only")
            .arg(format!(
                "--election-timeout-ms={}",
                self.opts.election_timeout_ms
            ))
            .arg(format!("--min-free-space-mb={}", self.opts.min_free_mb))
            // Small snapshot intervals so that faults also exercise snapshots.
            .args(["--snapshot-count=2000", "--snapshot-catchup-entries=500"])
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", m.name))?;
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.masters[i].child.is_some()
    }

    fn pid(&self, i: usize) -> Option<Pid> {
        self.masters[i]
            .child
            .as_ref()
            .map(|c| Pid::from_raw(c.id() as i32))
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.masters[i];
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        m.paused = false;
    }

    /// SIGTERM, as `systemctl stop` does, and wait up to `timeout` for the
    /// master to exit; kill -9 after that. Returns how long it took to exit
    /// by itself, or `None` if it had to be killed.
    pub async fn terminate(&mut self, i: usize, timeout: Duration) -> Option<Duration> {
        let pid = self.pid(i)?;
        self.resume(i);
        let start = Instant::now();
        let _ = kill(pid, Signal::SIGTERM);
        let m = &mut self.masters[i];
        let child = m.child.as_mut()?;
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = child.try_wait() {
                m.child = None;
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.kill(i);
        None
    }

    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.pid(i) {
            let _ = kill(pid, Signal::SIGSTOP);
            self.masters[i].paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.pid(i) {
            let _ = kill(pid, Signal::SIGCONT);
        }
        self.masters[i].paused = false;
    }

    /// Did a running master exit on its own (a crash)?
    pub fn crashed(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for m in &mut self.masters {
            if let Some(child) = &mut m.child {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push((m.name.clone(), status.to_string()));
                    m.child = None;
                }
            }
        }
        out
    }

    pub fn channel(&self, i: usize) -> Channel {
        self.masters[i].channel.clone()
    }

    /// Ask master `i` for its status; remembers its member id.
    pub async fn status(&mut self, i: usize) -> Option<proto::etcd::StatusResponse> {
        if self.masters[i].child.is_none() || self.masters[i].paused {
            return None;
        }
        let mut c = MaintenanceClient::new(self.masters[i].channel.clone());
        let resp = c.status(StatusRequest {}).await.ok()?.into_inner();
        if let Some(h) = &resp.header {
            self.masters[i].id = Some(h.member_id);
        }
        Some(resp)
    }

    /// The master that says it is the leader (the highest term wins if
    /// a deposed leader has not noticed yet).
    pub async fn leader(&mut self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for i in 0..self.len() {
            if let Some(s) = self.status(i).await {
                let me = s.header.as_ref().map(|h| h.member_id);
                if me == Some(s.leader) && best.is_none_or(|(t, _)| s.raft_term > t) {
                    best = Some((s.raft_term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    pub async fn wait_leader(&mut self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.leader().await {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Stop every process and release mounts (also done on drop).
    pub fn shutdown(&mut self) {
        for i in 0..self.len() {
            self.resume(i);
            self.kill(i);
        }
        for m in self.mounts.drain(..) {
            let _ = run(&["umount", "-l", &m.to_string_lossy()]);
        }
        if !self.opts.keep {
            let _ = std::fs::remove_dir_all(&self.opts.root);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Unmount the data-disk tmpfs mounts of harness runs whose process is gone
/// (their roots are named `skiff-chaos-<pid>-<seed>`).
fn remove_stale_mounts() {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    for target in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        let Some(rest) = target.split("/skiff-chaos-").nth(1) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["umount", "-l", target]);
        }
    }
}
