//! `skiff-bench failover`: how fast a 3-master cluster recovers its leader
//! duties. Under steady API writes it kills the Raft leader with SIGKILL
//! and measures (a) the time to the first write accepted after the kill and
//! (b) the time until the new leader's controllers act: the probe
//! Deployment's ReplicaSet replaces a pod deleted right after the kill. The
//! killed master is restarted with its own command line before the next
//! round. Then it stops the leader with SIGSTOP for 5 s and resumes it, and
//! shows from the masters' `skiff_controller_commits_total{term}` counters
//! that every term's controller writes came from one master only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use proto::etcd::maintenance_client::MaintenanceClient;
use proto::etcd::StatusRequest;
use serde_json::{json, Value};

use super::masters::{self, Proc};

use super::api::{ensure_namespace, https_client, NAMESPACE};

pub struct Options {
    pub kubeconfig: PathBuf,
    pub servers: Vec<String>,
    pub endpoints: Vec<String>,
    pub rounds: usize,
    pub rate: u64,
}

/// Every server but the `l`th.
fn all_but(servers: &[String], l: usize) -> Vec<String> {
    let mut rest = servers.to_vec();
    rest.remove(l);
    rest
}

/// The control-plane process serving the etcd endpoint `endpoint`.
fn find_master(endpoint: &str) -> Option<Proc> {
    let address = endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    masters::find("--listen-client", address)
}

fn respawn(p: &Proc) -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new(&p.args[0]);
    cmd.args(&p.args[1..])
        .current_dir(p.cwd.as_ref().context("the master's working directory")?)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    if let Some(path) = &p.stderr {
        cmd.stderr(std::fs::OpenOptions::new().append(true).open(path)?);
    } else {
        cmd.stderr(std::process::Stdio::null());
    }
    cmd.spawn().context("restarting the master")?;
    Ok(())
}

async fn status(endpoint: &str) -> Option<proto::etcd::StatusResponse> {
    let ch = crate::etcd_client::channel(endpoint, Some(Duration::from_millis(300))).ok()?;
    tokio::time::timeout(
        Duration::from_millis(500),
        MaintenanceClient::new(ch).status(StatusRequest {}),
    )
    .await
    .ok()?
    .ok()
    .map(|r| r.into_inner())
}

/// The endpoint index of the leader all live masters agree on.
async fn leader(endpoints: &[String]) -> Option<usize> {
    let mut ids = Vec::new();
    let mut leaders = Vec::new();
    for e in endpoints {
        let s = status(e).await?;
        ids.push(s.header.map(|h| h.member_id).unwrap_or(0));
        leaders.push(s.leader);
    }
    let l = *leaders.first()?;
    if l == 0 || leaders.iter().any(|x| *x != l) {
        return None;
    }
    ids.iter().position(|id| *id == l)
}

async fn wait_leader(endpoints: &[String], within: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(i) = leader(endpoints).await {
            return Ok(i);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no agreed leader within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes accepted, by completion time.
#[derive(Default)]
struct Accepted {
    /// (started, finished) of every successful write.
    writes: Vec<(Instant, Instant)>,
}

/// Steady ConfigMap writes spread over the API servers, until `stop`.
fn steady_writes(
    http: reqwest::Client,
    servers: Vec<String>,
    rate: u64,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Accepted>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let clients = 16u64;
    let gap = Duration::from_secs_f64(clients as f64 / rate.max(1) as f64);
    (0..clients)
        .map(|c| {
            let (http, servers, stop, log) = (http.clone(), servers.clone(), stop.clone(), log.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let server = &servers[((c + n) as usize) % servers.len()];
                    n += 1;
                    let started = Instant::now();
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("failover-{c}-{n}")}, "data": {"n": n.to_string()}});
                    let ok = http
                        .post(format!("{server}/api/v1/namespaces/{NAMESPACE}/configmaps"))
                        .timeout(Duration::from_secs(3))
                        .json(&body)
                        .send()
                        .await
                        .ok()
                        .map(|r| r.status().is_success());
                    if ok == Some(true) {
                        log.lock().unwrap().writes.push((started, Instant::now()));
                    }
                    tokio::time::sleep(gap.saturating_sub(started.elapsed())).await;
                }
            })
        })
        .collect()
}

const PROBE: &str = "failover-probe";

async fn probe_pods(http: &reqwest::Client, servers: &[String]) -> Option<Vec<Value>> {
    for s in servers {
        let url = format!("{s}/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3D{PROBE}");
        if let Ok(r) = http
            .get(url)
            .timeout(Duration::from_millis(500))
            .send()
            .await
        {
            if let Ok(v) = r.json::<Value>().await {
                if let Some(items) = v["items"].as_array() {
                    return Some(items.clone());
                }
            }
        }
    }
    None
}

async fn ensure_probe(http: &reqwest::Client, servers: &[String]) -> anyhow::Result<()> {
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": PROBE},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": PROBE}},
            "template": {"metadata": {"labels": {"app": PROBE}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let _ = http
        .post(format!(
            "{}/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
            servers[0]
        ))
        .json(&d)
        .send()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if probe_pods(http, servers)
            .await
            .is_some_and(|p| p.len() == 1)
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the probe deployment made no pod (are controllers running?)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Delete the probe pod through any master (retrying while there is no
/// leader), then wait for a replacement; the time from `t0` to it.
async fn replaced_after(
    http: &reqwest::Client,
    servers: &[String],
    t0: Instant,
) -> Option<Duration> {
    let deadline = t0 + Duration::from_secs(30);
    // Reads wait for a leader: while none is elected, keep asking.
    let old = loop {
        match probe_pods(http, servers).await {
            Some(pods) if !pods.is_empty() => break pods,
            _ if Instant::now() > deadline => return None,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let old_uid = old.first()?["metadata"]["uid"].as_str()?.to_string();
    let name = old.first()?["metadata"]["name"].as_str()?.to_string();
    'delete: loop {
        for s in servers {
            let url = format!("{s}/api/v1/namespaces/{NAMESPACE}/pods/{name}");
            if let Ok(r) = http
                .delete(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if r.status().is_success() || r.status().as_u16() == 404 {
                    break 'delete;
                }
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    loop {
        if let Some(pods) = probe_pods(http, servers).await {
            if pods
                .iter()
                .any(|p| p["metadata"]["uid"].as_str() != Some(&old_uid))
            {
                return Some(t0.elapsed());
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn summary(label: &str, mut v: Vec<Duration>) {
    v.sort();
    if v.is_empty() {
        println!("{label}: no samples");
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: n={} min_ms={:.0} median_ms={:.0} max_ms={:.0}",
        v.len(),
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    );
}

/// `skiff_controller_commits_total` by term, from one master's /metrics.
async fn commits_by_term(http: &reqwest::Client, metrics_url: &str) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let Ok(r) = http
        .get(metrics_url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        return out;
    };
    let text = r.text().await.unwrap_or_default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("skiff_controller_commits_total{"))
    {
        let term = line
            .split("term=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|t| t.parse().ok());
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(t), Some(v)) = (term, value) {
            out.insert(t, v as u64);
        }
    }
    out
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.endpoints.len() >= 3,
        "failover needs 3 or more masters"
    );
    let http = https_client(&opts.kubeconfig)?;
    let plain = reqwest::Client::new();
    ensure_namespace(&http, &opts.servers[0]).await?;
    ensure_probe(&http, &opts.servers).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Accepted::default()));
    let writers = steady_writes(
        http.clone(),
        opts.servers.clone(),
        opts.rate,
        stop.clone(),
        log.clone(),
    );
    println!(
        "{} masters, steady API writes at {}/s, {} kill -9 rounds",
        opts.endpoints.len(),
        opts.rate,
        opts.rounds
    );
    let (mut first_write, mut controllers_act) = (Vec::new(), Vec::new());
    for round in 1..=opts.rounds {
        let l = wait_leader(&opts.endpoints, Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let proc = find_master(&opts.endpoints[l])
            .with_context(|| format!("no process serves {}", opts.endpoints[l]))?;
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(proc.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let survivors = all_but(&opts.servers, l);
        let acted = replaced_after(&http, &survivors, t0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let accepted = log
            .lock()
            .unwrap()
            .writes
            .iter()
            .filter(|(start, _)| *start >= t0)
            .map(|(_, end)| *end - t0)
            .min();
        println!(
            "round {round}: killed {} (pid {}): first write after {:.0} ms, controllers acted after {}",
            opts.endpoints[l],
            proc.pid,
            accepted.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN),
            acted.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)).unwrap_or("-".into()),
        );
        first_write.extend(accepted);
        controllers_act.extend(acted);
        respawn(&proc)?;
        // Wait for the restarted master to rejoin before the next kill.
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(&opts.endpoints[l]).await.is_none() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not come back",
                opts.endpoints[l]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    summary("(a) kill -9 leader -> first accepted write", first_write);
    summary(
        "(b) kill -9 leader -> new leader's controllers act",
        controllers_act,
    );
    println!(
        "anchors: etcd election timeout 1000 ms; Kubernetes controller-manager lease 15000 ms"
    );

    // SIGSTOP the leader for 5 s, with controller work going on.
    let l = wait_leader(&opts.endpoints, Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let proc = find_master(&opts.endpoints[l]).context("leader process")?;
    let metrics_urls: Vec<String> = opts
        .endpoints
        .iter()
        .map(|e| {
            find_master(e)
                .and_then(|p| {
                    p.arg("--listen-metrics")
                        .map(|m| format!("http://{m}/metrics"))
                })
                .unwrap_or_default()
        })
        .collect();
    let pid = nix::unistd::Pid::from_raw(proc.pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
    let t0 = Instant::now();
    let survivors = all_but(&opts.servers, l);
    let acted = replaced_after(&http, &survivors, t0).await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed())).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
    // The resumed master's controllers may still think they lead for a
    // moment: make them busy (another pod to replace), then look.
    let _ = replaced_after(&http, &opts.servers, Instant::now()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    println!(
        "SIGSTOP {} for 5 s: controllers of the new leader acted after {}",
        opts.endpoints[l],
        acted
            .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
            .unwrap_or("-".into())
    );
    println!("controller writes committed, by Raft term and master (each write is fenced to its leader's term):");
    let mut owners: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (i, url) in metrics_urls.iter().enumerate() {
        for (term, n) in commits_by_term(&plain, url).await {
            owners
                .entry(term)
                .or_default()
                .push(format!("{}={n}", opts.endpoints[i]));
        }
    }
    let refused = plain
        .get(&metrics_urls[l])
        .send()
        .await
        .ok()
        .map(|r| r.text())
        .into_iter()
        .next();
    let refused = match refused {
        Some(text) => text
            .await
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("skiff_controller_fenced_writes_total"))
            .and_then(|l| l.rsplit(' ').next().map(str::to_string))
            .unwrap_or_else(|| "0".into()),
        None => "?".into(),
    };
    println!("  writes of the resumed master's stale controllers refused by the fence: {refused}");
    let mut overlap = false;
    for (term, who) in &owners {
        overlap |= who.len() > 1;
        println!("  term {term}: {}", who.join(", "));
    }
    println!(
        "{}",
        if overlap {
            "OVERLAP: two masters committed controller writes in one term"
        } else {
            "no term has controller writes from two masters: no two masters' controllers committed at the same time"
        }
    );
    Ok(())
}
