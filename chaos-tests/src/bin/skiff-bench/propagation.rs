//! `skiff-bench propagation`: many node agents on the fake runtime, in this
//! process, each joined with a bootstrap token (its own key and
//! certificate) and holding its own QUIC session, against a running
//! cluster. Measured: the masters' memory and CPU while the agents are
//! connected and heartbeating (beside the same span before they joined),
//! and the time from a pod's write through the API to the agent of its
//! node holding it, p50 and p99.

use crate::percentile;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use node_agent::agent::{self, Agent};
use node_agent::runtime::fake::FakeRuntime;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::api::{create_namespace, delete_all, https_client};
use super::masters::{self, Proc};

const NAMESPACE: &str = "bench-propagation";
const JOINS_IN_FLIGHT: usize = 16;

pub struct Options {
    pub kubeconfig: std::path::PathBuf,
    pub servers: Vec<String>,
    /// Where agents join and connect (default: the first API server's
    /// host, port 6444).
    pub gateway: Option<String>,
    pub agents: usize,
    pub probes: usize,
    /// How long the steady state is measured for.
    pub settle: Duration,
    /// Agents also keep a link to every master (for logs, exec, stats).
    pub links: bool,
}

fn node_name(i: usize) -> String {
    format!("bench-agent-{i}")
}

/// Each master's CPU use (percent of one core) over `span`, and RSS.
async fn masters_over(procs: &[Proc], span: Duration) -> Vec<(f64, u64)> {
    let before: Vec<Duration> = procs
        .iter()
        .map(|p| p.cpu_time().unwrap_or_default())
        .collect();
    tokio::time::sleep(span).await;
    procs
        .iter()
        .zip(before)
        .map(|(p, b)| {
            let used = p.cpu_time().unwrap_or_default().saturating_sub(b);
            (
                100.0 * used.as_secs_f64() / span.as_secs_f64(),
                p.rss_kib().unwrap_or(0),
            )
        })
        .collect()
}

fn describe(figures: &[(f64, u64)]) -> String {
    figures
        .iter()
        .map(|(cpu, rss)| format!("{cpu:.1}% CPU {:.1} MiB", *rss as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A fresh bootstrap token; returns (token, CA hash).
async fn token(kubeconfig: &Path) -> anyhow::Result<(String, String)> {
    use control_plane::tokens::{self, Token};
    let client = control_plane::rest_client::RestClient::from_kubeconfig(kubeconfig)?;
    let t = Token::generate();
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    client
        .post(
            &format!("/api/v1/namespaces/{}/secrets", tokens::NAMESPACE),
            &t.to_secret(Some(expires), "skiff-bench propagation"),
        )
        .await
        .context("creating a bootstrap token")?;
    Ok((t.to_string(), control_plane::pki::ca_hash(&client.ca_pem)?))
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let http = https_client(&opts.kubeconfig)?;
    let server = opts.servers[0].trim_end_matches('/').to_string();
    let procs = masters::serving_api(&opts.servers);
    anyhow::ensure!(
        !procs.is_empty(),
        "no master process serves {:?}",
        opts.servers
    );
    let gateway = match &opts.gateway {
        Some(g) => g.clone(),
        None => {
            let host = server
                .trim_start_matches("https://")
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .context("the API server has no port")?;
            format!("{host}:6444")
        }
    };
    let idle = masters_over(&procs, opts.settle).await;

    // Join every agent through the real flow, then start them.
    let (token, ca_hash) = token(&opts.kubeconfig).await?;
    let dir = tempfile::tempdir()?;
    let t0 = Instant::now();
    let joined: Vec<anyhow::Result<usize>> = futures::stream::iter(0..opts.agents)
        .map(|i| {
            let (gateway, token, ca_hash) = (&gateway, &token, &ca_hash);
            let data_dir = dir.path().join(i.to_string());
            async move {
                node_agent::join::join(node_agent::join::JoinArgs {
                    server: gateway,
                    token,
                    ca_hash,
                    node_name: &node_name(i),
                    data_dir: &data_dir,
                })
                .await
                .with_context(|| format!("joining {}", node_name(i)))?;
                Ok(i)
            }
        })
        .buffer_unordered(JOINS_IN_FLIGHT)
        .collect()
        .await;
    for j in &joined {
        if let Err(e) = j {
            anyhow::bail!("{e:#}");
        }
    }
    let joined_in = t0.elapsed();
    let stop = CancellationToken::new();
    let mut agents: Vec<Agent> = Vec::with_capacity(opts.agents);
    for i in 0..opts.agents {
        let cfg = agent::Config {
            data_dir: dir.path().join(i.to_string()),
            host_ip: "127.0.0.1".into(),
            sandbox_image: "fake".into(),
            labels: BTreeMap::from([("skiff.io/bench".to_string(), "propagation".to_string())]),
            max_pods: 110,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
            stats_interval: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            http_port: 0,
            eviction_hard: Vec::new(),
            links: opts.links,
            network: None,
            memory_volumes: false,
        };
        agents.push(agent::start(cfg, FakeRuntime::default(), stop.child_token()).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while agents.iter().any(|a| !a.desired.synced()) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} agents have their first snapshot after 2 minutes",
            agents.iter().filter(|a| a.desired.synced()).count(),
            opts.agents
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connected_in = t0.elapsed();
    println!(
        "{} agents (fake runtime{}): joined in {:.1} s, all holding their snapshot after {:.1} s",
        opts.agents,
        if opts.links {
            ", a link to every master"
        } else {
            ", session only"
        },
        joined_in.as_secs_f64(),
        connected_in.as_secs_f64()
    );
    let busy = masters_over(&procs, opts.settle).await;

    // Propagation: one pod at a time, to agents spread over the set.
    create_namespace(&http, &server, NAMESPACE).await?;
    let pods_url = format!("{server}/api/v1/namespaces/{NAMESPACE}/pods");
    let mut latencies = Vec::with_capacity(opts.probes);
    let mut writes = Vec::with_capacity(opts.probes);
    for k in 0..opts.probes {
        let i = k * opts.agents / opts.probes.max(1);
        let desired = agents[i].desired.clone();
        let name = format!("probe-{k}");
        let mut changes = desired.subscribe();
        let held = {
            let name = name.clone();
            tokio::spawn(async move {
                loop {
                    if desired.get("Pod", NAMESPACE, &name).is_some() {
                        return Some(Instant::now());
                    }
                    if changes.changed().await.is_err() {
                        return None;
                    }
                }
            })
        };
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node_name(i),
                "containers": [{"name": "app", "image": "fake"}]}});
        let sent = Instant::now();
        http.post(&pods_url)
            .json(&pod)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("creating {name}"))?;
        writes.push(sent.elapsed());
        match tokio::time::timeout(Duration::from_secs(10), held).await {
            Ok(Ok(Some(at))) => latencies.push(at.duration_since(sent)),
            _ => anyhow::bail!("{} never received {name}", node_name(i)),
        }
    }
    latencies.sort();
    writes.sort();
    println!(
        "write to agent holding it ({} pods, one at a time): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms   (the API write alone: p50 {:.1} ms, p99 {:.1} ms)",
        latencies.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        percentile(&writes, 50),
        percentile(&writes, 99),
    );
    println!(
        "masters over {} s, before the agents: {}",
        opts.settle.as_secs(),
        describe(&idle)
    );
    println!(
        "masters over {} s, {} agents connected and heartbeating: {}",
        opts.settle.as_secs(),
        opts.agents,
        describe(&busy)
    );
    let max_rss = busy.iter().map(|(_, r)| *r).max().unwrap_or(0) as f64 / 1024.0;
    println!("targets: p99 under 50 ms; each master under 300 MiB (largest: {max_rss:.1} MiB)");

    // Clean up: the pods (their agents confirm), then the agents, their
    // nodes and leases.
    delete_all(
        &http,
        (0..opts.probes).map(|k| format!("{pods_url}/probe-{k}?gracePeriodSeconds=0")),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    for a in agents {
        a.join(Duration::from_secs(1)).await;
    }
    delete_all(
        &http,
        (0..opts.agents).flat_map(|i| {
            [
                format!("{server}/api/v1/nodes/{}", node_name(i)),
                format!(
                    "{server}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
                    node_name(i)
                ),
            ]
        }),
    )
    .await;
    Ok(())
}
