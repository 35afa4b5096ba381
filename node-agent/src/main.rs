//! `node-agent`: the Skiff node agent's command line (the agent itself is
//! the library, [`node_agent`]).

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use node_agent::runtime::docker::DockerRuntime;
use node_agent::runtime::Runtime;
use node_agent::{agent, identity, join, metrics_http};
use tokio_util::sync::CancellationToken;

mod logging;

#[derive(Parser)]
#[command(name = "node-agent", version, about = "The Skiff node agent")]
struct Cli {
    #[command(flatten)]
    log: logging::Args,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join the cluster with a bootstrap token: get this node's certificate.
    Join(JoinArgs),
    /// Run the node: its session with the masters and its pods.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct JoinArgs {
    /// A master's agent address (host:port).
    #[arg(long)]
    server: String,
    /// The bootstrap token (`control-plane token create`).
    #[arg(long)]
    token: String,
    /// The cluster CA's hash, sha256:<hex> (printed by `token create
    /// --print-join-command`); a CA with another hash is refused.
    #[arg(long)]
    discovery_token_ca_cert_hash: String,
    /// This node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    #[arg(long, default_value = "/var/lib/skiff-agent")]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, default_value = "/var/lib/skiff-agent")]
    data_dir: PathBuf,
    /// The Docker engine's socket.
    #[arg(long, default_value = "unix:///var/run/docker.sock")]
    docker_host: String,
    /// The address the node reports (default: the first non-loopback IPv4
    /// address of the host, else 127.0.0.1).
    #[arg(long)]
    node_ip: Option<String>,
    /// Prometheus metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:10255")]
    listen_metrics: SocketAddr,
    /// The image each pod's sandbox runs.
    #[arg(long, default_value = "skiff-pause:local")]
    sandbox_image: String,
    /// Labels for the node (k=v, repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Crash-loop back-off: the first delay (doubling to the cap).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    backoff_base: Duration,
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    backoff_max: Duration,
    /// How long a container must run for its back-off to start over.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    backoff_reset: Duration,
    /// How often CPU and memory use is sampled (what `kubectl top` and the
    /// HorizontalPodAutoscaler see).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    stats_interval: Duration,
    /// The node Lease's duration (renewed every quarter of it); keep it
    /// well within the masters' --node-monitor-grace-period-secs.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    node_lease_duration: Duration,
    /// Hard eviction thresholds, as the kubelet's: `signal<amount` or
    /// `signal<percent%`, comma-separated; crossing one shows as the
    /// node's MemoryPressure, DiskPressure or PIDPressure condition.
    #[arg(long, default_value = node_agent::pressure::DEFAULT_EVICTION_HARD)]
    eviction_hard: String,
    /// "routed": pods take addresses from the node's podCIDR on a bridge
    /// of their own, with routes to other nodes' pods, Services in
    /// nftables and cluster DNS (the agent must own the host's network:
    /// one agent per host). "none": pods use the engine's default
    /// network, with none of that (several agents sharing one host).
    #[arg(long, value_enum, default_value = "routed")]
    network: NetworkMode,
    /// Every pod's address (the masters' --cluster-cidr): traffic from
    /// pods to anywhere outside it is masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: node_agent::proxy::rules::Cidr,
    /// The bridge device pods attach to (and the engine's network over it).
    #[arg(long, default_value = "skiff0")]
    pod_bridge: String,
    /// The nftables table the proxy owns (ip family).
    #[arg(long, default_value = "skiff-proxy")]
    proxy_table: String,
    /// The least time between two proxy syncs (changes between are
    /// programmed together).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    proxy_min_sync_period: Duration,
    /// How often the proxy checks its table is still as it left it.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    proxy_check_period: Duration,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Where cluster DNS sends names outside the cluster domain (default:
    /// the nameservers of /etc/resolv.conf).
    #[arg(long, value_delimiter = ',')]
    dns_upstream: Vec<SocketAddr>,
    /// A file holding a log filter ("debug", "info,node_agent=debug"):
    /// read at start if it exists and on every SIGHUP, so the level
    /// changes without a restart.
    #[arg(long)]
    log_level_file: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NetworkMode {
    Routed,
    None,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "node".into())
}

/// The first non-loopback IPv4 address, from the routing table's view.
fn default_ip() -> String {
    // Connecting a UDP socket sends nothing; it only picks a source address.
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("10.255.255.255:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .ok()
        .filter(|ip| ip != "0.0.0.0")
        .unwrap_or_else(|| "127.0.0.1".into())
}

async fn run(args: RunArgs, filter: logging::Filter) -> Result<()> {
    let stop = CancellationToken::new();
    let hangups = logging::reload_on_hangup(args.log_level_file.clone(), filter, stop.clone())
        .context("taking SIGHUP")?;
    tokio::spawn(hangups);
    let metrics = metrics_http::install()?;
    let listener = tokio::net::TcpListener::bind(args.listen_metrics)
        .await
        .with_context(|| format!("binding the metrics address {}", args.listen_metrics))?;
    let rt = DockerRuntime::connect(&args.docker_host).await?;
    let version = rt
        .info()
        .await
        .context("asking the Docker engine about itself")?
        .version;
    if args.node_lease_duration < Duration::from_secs(1) {
        bail!("--node-lease-duration must be at least 1s");
    }
    let mut labels = BTreeMap::new();
    for l in &args.node_labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--node-labels wants k=v, not {l:?}");
        };
        labels.insert(k.to_string(), v.to_string());
    }
    let cfg = agent::Config {
        data_dir: args.data_dir,
        host_ip: args.node_ip.unwrap_or_else(default_ip),
        sandbox_image: args.sandbox_image,
        labels,
        max_pods: args.max_pods,
        backoff_base: args.backoff_base,
        backoff_max: args.backoff_max,
        backoff_reset: args.backoff_reset,
        stats_interval: args.stats_interval,
        lease_duration: args.node_lease_duration,
        http_port: listener
            .local_addr()
            .context("the metrics listener's address")?
            .port(),
        eviction_hard: node_agent::pressure::parse_thresholds(&args.eviction_hard)?,
        links: true,
        memory_volumes: true,
        network: (args.network == NetworkMode::Routed).then(|| agent::NetworkConfig {
            pods: node_agent::network::Settings {
                network: "skiff-pods".into(),
                bridge: args.pod_bridge,
            },
            proxy: node_agent::proxy::Settings {
                table: node_agent::proxy::table::Settings {
                    table: args.proxy_table,
                    cluster_cidr: args.cluster_cidr,
                },
                min_sync: args.proxy_min_sync_period,
                check_every: args.proxy_check_period,
            },
            dns: node_agent::dns::Settings {
                domain: args.cluster_domain.clone(),
                upstream: if args.dns_upstream.is_empty() {
                    node_agent::dns::system_upstream()
                } else {
                    args.dns_upstream
                },
            },
            dns_port: 53,
            cluster_domain: args.cluster_domain,
        }),
    };
    let agent = agent::start(cfg, rt, stop.clone()).await?;
    let metrics_task = tokio::spawn(metrics_http::serve(
        listener,
        metrics,
        agent.desired.clone(),
        agent.stats.clone(),
        stop.clone(),
    ));
    tracing::info!(node = %agent.node, docker = %version, "agent running");
    shutdown_signal().await;
    tracing::info!("shutting down (pods keep running)");
    stop.cancel();
    agent.join(Duration::from_secs(5)).await;
    let _ = metrics_task.await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn main_async(cli: Cli, filter: logging::Filter) -> Result<()> {
    match cli.command {
        Command::Join(a) => {
            let node = a.node_name.clone().unwrap_or_else(host_name);
            if identity::joined(&a.data_dir) {
                bail!(
                    "{} already holds a node identity; remove it to join again",
                    a.data_dir.display()
                );
            }
            let id = join::join(join::JoinArgs {
                server: &a.server,
                token: &a.token,
                ca_hash: &a.discovery_token_ca_cert_hash,
                node_name: &node,
                data_dir: &a.data_dir,
            })
            .await?;
            println!(
                "node {node} joined the cluster; masters: {}",
                id.cluster.masters.join(", ")
            );
            println!(
                "run it with: node-agent run --data-dir {}",
                a.data_dir.display()
            );
            Ok(())
        }
        Command::Run(a) => run(*a, filter).await,
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = match logging::init(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("node-agent: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("node-agent: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli, filter)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
