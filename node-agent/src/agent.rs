//! One agent: its session with the masters, its links to each of them,
//! its certificate renewal, its node status, its pods and its stats, all
//! on one runtime and all stopped by one token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::desired::Desired;
use crate::runtime::Runtime;
use crate::{dns, identity, network, node_status, pods, proxy, reports, session, stats, streams};

/// How an agent runs.
pub struct Config {
    /// Where `join` left the node's identity.
    pub data_dir: PathBuf,
    /// The address the node reports.
    pub host_ip: String,
    /// The image each pod's sandbox runs.
    pub sandbox_image: String,
    /// Labels beside the well-known ones (hostname, os, arch).
    pub labels: BTreeMap<String, String>,
    pub max_pods: u32,
    /// Crash-loop back-off: first delay, cap, and the run that resets it.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
    pub stats_interval: Duration,
    /// The node Lease's duration; it is renewed every quarter of it.
    pub lease_duration: Duration,
    /// The port the agent serves /metrics on (0: none), reported as the
    /// node's kubelet endpoint so that scrapers' node discovery finds it.
    pub http_port: u16,
    /// Hard eviction thresholds (`--eviction-hard`): crossing one shows
    /// as the node's MemoryPressure, DiskPressure or PIDPressure.
    pub eviction_hard: Vec<crate::pressure::Threshold>,
    /// Keep a connection to every master for the streams they open (logs,
    /// exec, stats). Off only where nobody will ask (the scale benchmark).
    pub links: bool,
    /// The pod network and the service proxy (None: pods use the engine's
    /// default network; no routes, no proxy, no cluster DNS).
    pub network: Option<NetworkConfig>,
    /// Secret, projected and downwardAPI volumes on tmpfs, as the kubelet
    /// puts them. Off only where nodes are not hosts of their own (the
    /// scale benchmark: a thousand agents in one process).
    pub memory_volumes: bool,
}

/// The node's part in the cluster network.
pub struct NetworkConfig {
    pub pods: network::Settings,
    pub proxy: proxy::Settings,
    /// The cluster's DNS domain (cluster.local).
    pub cluster_domain: String,
    /// Cluster DNS, served on the pod bridge's address.
    pub dns: dns::Settings,
    /// The port it is served on (53).
    pub dns_port: u16,
}

/// A running agent.
pub struct Agent {
    pub node: String,
    /// What the node holds, as the masters sent it.
    pub desired: Arc<Desired>,
    /// The latest CPU and memory sample of its containers.
    pub stats: Arc<stats::Latest>,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Wait (up to `within`) for every task to end after its stop token.
    pub async fn join(self, within: Duration) {
        let _ = tokio::time::timeout(within, futures::future::join_all(self.tasks)).await;
    }
}

/// Start an agent on `rt`; it runs until `stop`.
pub async fn start<R: Runtime>(cfg: Config, rt: R, stop: CancellationToken) -> Result<Agent> {
    let identity = identity::Identity::load(&cfg.data_dir)?;
    if let Err(e) = identity::tidy(&cfg.data_dir) {
        tracing::warn!("tidying the node identity: {e:#}");
    }
    let node = identity.cluster.node_name.clone();
    let info = rt
        .info()
        .await
        .context("asking the container runtime about itself")?;
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), node.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            match std::env::consts::ARCH {
                "x86_64" => "amd64".into(),
                a => a.to_string(),
            },
        ),
    ]);
    labels.extend(cfg.labels);
    let desired = Arc::new(Desired::default());
    let reports = Arc::new(reports::Reports::default());
    let latest = Arc::new(stats::Latest::default());
    let streams: session::StreamServer = {
        let (rt, node, latest) = (rt.clone(), node.clone(), latest.clone());
        Arc::new(move |send, recv| {
            tokio::spawn(streams::serve(
                rt.clone(),
                node.clone(),
                latest.clone(),
                send,
                recv,
            ));
        })
    };
    let session = Arc::new(session::Session {
        data_dir: cfg.data_dir.clone(),
        identity: Arc::new(RwLock::new(identity)),
        desired: desired.clone(),
        reports: reports.clone(),
        streams,
        endpoint: session::connect::endpoint()?,
        current: Default::default(),
    });
    let pod_network = cfg
        .network
        .as_ref()
        .map(|_| Arc::new(network::PodNetwork::default()));
    let ctx = Arc::new(pods::Context {
        node: node.clone(),
        data_dir: cfg.data_dir.clone(),
        sandbox_image: cfg.sandbox_image,
        host_ip: cfg.host_ip.clone(),
        cpus: info.cpus,
        memory: info.memory_bytes,
        backoff_base: cfg.backoff_base,
        backoff_max: cfg.backoff_max,
        backoff_reset: cfg.backoff_reset,
        lookup: desired.clone(),
        reports: reports.clone(),
        network: pod_network.clone(),
        cluster_domain: cfg
            .network
            .as_ref()
            .map(|n| n.cluster_domain.clone())
            .unwrap_or_else(|| "cluster.local".into()),
        tokens: Arc::new(pods::tokens::Tokens::new(session.clone())),
        memory_volumes: cfg.memory_volumes,
    });
    // The thresholds the node crosses, from its status to its pod manager.
    let (pressure_tx, pressure) = tokio::sync::watch::channel(Vec::new());
    let facts = Arc::new(node_status::NodeFacts {
        name: node.clone(),
        address: cfg.host_ip,
        labels,
        max_pods: cfg.max_pods,
        lease_duration: cfg.lease_duration,
        http_port: cfg.http_port,
        eviction_hard: cfg.eviction_hard.clone(),
        sources: crate::pressure::Sources {
            nodefs: cfg.data_dir.clone(),
            imagefs: None,
        },
    });
    let mut tasks = vec![
        tokio::spawn(session.clone().run(stop.clone())),
        tokio::spawn(session::renew::run(session.clone(), stop.clone())),
        tokio::spawn(node_status::run(
            rt.clone(),
            facts,
            reports.clone(),
            desired.clone(),
            pressure_tx,
            stop.clone(),
        )),
        tokio::spawn(pods::run(
            rt.clone(),
            ctx,
            desired.clone(),
            pressure,
            stop.clone(),
        )),
        tokio::spawn(stats::run(
            rt.clone(),
            node.clone(),
            cfg.stats_interval,
            latest.clone(),
            stop.clone(),
        )),
    ];
    if let (Some(net), Some(pod_network)) = (cfg.network, pod_network) {
        tasks.push(tokio::spawn(network::run(
            rt.clone(),
            node.clone(),
            net.pods,
            desired.clone(),
            pod_network.clone(),
            stop.clone(),
        )));
        tasks.push(tokio::spawn(proxy::run(
            node.clone(),
            desired.clone(),
            net.proxy,
            stop.clone(),
        )));
        tasks.push(tokio::spawn(dns::run(
            dns::Server::new(net.dns, desired.clone()),
            pod_network.clone(),
            net.dns_port,
            stop.clone(),
        )));
    }
    if cfg.links {
        tasks.push(tokio::spawn(session::links::run(session, stop)));
    }
    Ok(Agent {
        node,
        desired,
        stats: latest,
        tasks,
    })
}
