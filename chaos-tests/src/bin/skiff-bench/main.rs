//! `skiff-bench`: load generators for any etcd v3 endpoint (Skiff or etcd),
//! used by `deploy/bench-etcd` to run the same load against both.
//!
//! `skiff-bench read --endpoints a:2379,b:2379 --clients 64 --duration 10s`
//! fills a small key space, then has each client issue linearizable reads
//! (etcd's default) round-robin over the endpoints, and prints one line:
//! `reads/s=<n> p99_ms=<n> max_ms=<n>`.
//!
//! `skiff-bench null-kv --listen a:2379,...` serves an etcd KV API that
//! stores nothing, to measure what the load generator itself can reach (see
//! `null_kv.rs`).
//!
//! `skiff-bench pods` times pod startup through a node agent beside
//! `docker run` (see `pods.rs`);
//! `skiff-bench api` loads the Kubernetes API (see `api.rs`);
//! `skiff-bench failover` kills and stops the leader under load (see
//! `failover.rs`); `skiff-bench propagation` runs many agents on the fake
//! runtime against a cluster (see `propagation.rs`); `skiff-bench proxy`
//! times Service rule programming in nftables beside iptables-restore
//! (see `proxy.rs`); `skiff-bench dns` loads the cluster DNS server (see
//! `dns.rs`).

mod api;
mod dns;
mod etcd_client;
mod failover;
mod heartbeats;
mod masters;
mod null_kv;
mod pods;
mod propagation;
mod proxy;
mod scheduler;

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use proto::etcd::kv_client::KvClient;
use proto::etcd::{PutRequest, RangeRequest};
use tonic::transport::Channel;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Concurrent linearizable single-key reads.
    Read {
        #[arg(long)]
        endpoints: String,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value = "10s")]
        duration: String,
        #[arg(long, default_value_t = 1000)]
        keys: usize,
        /// Serve reads from any member's applied state (etcd's --consistency=s).
        #[arg(long)]
        serializable: bool,
    },
    /// Pod startup through the API, scheduler and a node agent, beside
    /// `docker run` of the same image. Defaults come from `source
    /// .skiff/dev/cluster.env`.
    Pods {
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: std::path::PathBuf,
        /// https://host:port,... (the first is used).
        #[arg(long, env = "SKIFF_API_SERVERS")]
        servers: String,
        #[arg(long, default_value_t = 50)]
        count: usize,
        #[arg(long, default_value = "busybox:local")]
        image: String,
        /// The sandbox image the agent runs (for the sandbox + app floor).
        #[arg(long, default_value = "skiff-pause:local")]
        sandbox_image: String,
        /// The node agent's pid, to report its resident memory.
        #[arg(long)]
        agent_pid: Option<u32>,
    },
    /// Many node agents (fake runtime) in this process against a cluster:
    /// the masters' memory and CPU with them connected, and the time from
    /// an API write to the agent holding it. Defaults come from `source
    /// .skiff/dev/cluster.env`.
    Propagation {
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: std::path::PathBuf,
        /// https://host:port,... (every master).
        #[arg(long, env = "SKIFF_API_SERVERS")]
        servers: String,
        /// host:port,... where the masters take agents (the first is used;
        /// default: the first API server's host, port 6444).
        #[arg(long, env = "SKIFF_AGENT_SERVERS")]
        agent_servers: Option<String>,
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Pods written, one at a time, each timed to its agent.
        #[arg(long, default_value_t = 200)]
        probes: usize,
        /// The span the masters' CPU is measured over, idle and loaded.
        #[arg(long, default_value = "20s")]
        settle: String,
        /// Agents keep only their session, no link to every master.
        #[arg(long)]
        no_links: bool,
    },
    /// Service rules: the agent's nftables syncs beside iptables-restore of
    /// kube-proxy's rules, and connection latency through a VIP (needs
    /// root; runs in a network namespace of its own).
    Proxy {
        /// Numbers of Services, comma-separated.
        #[arg(long, default_value = "1000,10000")]
        services: String,
        #[arg(long, default_value_t = 3)]
        endpoints: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Connections timed for the latency comparison.
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        /// The peer's restore command (iptables-restore here is the
        /// nf_tables backend; iptables-legacy-restore the older one).
        #[arg(long, default_value = "iptables-legacy-restore")]
        iptables_restore: String,
        /// A peer run taking longer than this is stopped.
        #[arg(long, default_value = "60s")]
        peer_cap: String,
    },
    /// The agent's cluster DNS server on loopback: queries/s and latency.
    Dns {
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value = "10s")]
        duration: String,
    },
    /// An etcd KV endpoint that stores nothing: the client's ceiling.
    NullKv {
        /// host:port,... to listen on.
        #[arg(long)]
        listen: String,
        /// Answer each Put after this long (e.g. 10ms), without using CPU.
        #[arg(long, default_value = "0ms")]
        put_delay: String,
    },
    /// Kubernetes API writes (beside the same load straight to the store)
    /// and watch fan-out. Defaults come from `source .skiff/dev/cluster.env`.
    Api {
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: std::path::PathBuf,
        /// https://host:port,... (every master).
        #[arg(long, env = "SKIFF_API_SERVERS")]
        servers: String,
        /// host:port,... of the etcd API, for the store-direct comparison.
        #[arg(long, env = "SKIFF_ETCD_ENDPOINTS")]
        endpoints: String,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Target writes per second over all clients (0: as fast as they go).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value = "10s")]
        duration: String,
        /// Watchers on pods for the fan-out measurement (0: skip it).
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
    },
    /// The scheduling algorithm in process on fake nodes: pods bound per
    /// second and p99 latency for 10,000 and 50,000 pods.
    Scheduler {
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Also end to end through the API of the cluster in KUBECONFIG:
        /// this many fake nodes and a Deployment of --replicas.
        #[arg(long)]
        e2e_nodes: Option<usize>,
        #[arg(long, default_value_t = 10_000)]
        replicas: usize,
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<std::path::PathBuf>,
        #[arg(long, env = "SKIFF_API_SERVERS")]
        servers: Option<String>,
    },
    /// What node heartbeats (Lease renewals every 10 s) cost the masters:
    /// their CPU with and without, and the renewals' latency.
    Heartbeats {
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: std::path::PathBuf,
        #[arg(long, env = "SKIFF_API_SERVERS")]
        servers: String,
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value = "30s")]
        duration: String,
    },
    /// kill -9 the Raft leader under steady API writes: time to the first
    /// accepted write and until the new leader's controllers act; then
    /// SIGSTOP it for 5 s. Defaults come from `.skiff/dev/cluster.env`.
    Failover {
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: std::path::PathBuf,
        #[arg(long, env = "SKIFF_API_SERVERS")]
        servers: String,
        #[arg(long, env = "SKIFF_ETCD_ENDPOINTS")]
        endpoints: String,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Steady writes per second during the rounds.
        #[arg(long, default_value_t = 200)]
        rate: u64,
    },
}

/// The `p`th percentile of sorted durations, in milliseconds.
pub fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        _ => anyhow::bail!("bad duration unit in {s:?}"),
    })
}

/// Many agents hold many sockets: the soft open-file limit goes to the hard one.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let split = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
    match Cli::parse().command {
        Cmd::Scheduler {
            nodes,
            e2e_nodes,
            replicas,
            kubeconfig,
            servers,
        } => {
            scheduler::run(nodes);
            if let Some(n) = e2e_nodes {
                let kubeconfig = kubeconfig.context("--e2e-nodes needs KUBECONFIG")?;
                let servers = servers.context("--e2e-nodes needs SKIFF_API_SERVERS")?;
                let server = split(&servers).remove(0);
                scheduler::run_e2e(&kubeconfig, &server, n, replicas).await?;
            }
        }
        Cmd::Pods {
            kubeconfig,
            servers,
            count,
            image,
            sandbox_image,
            agent_pid,
        } => {
            pods::run(pods::Options {
                kubeconfig,
                server: servers.split(',').next().unwrap_or_default().to_string(),
                count,
                image,
                sandbox_image,
                agent_pid,
            })
            .await?
        }
        Cmd::Proxy {
            services,
            endpoints,
            rounds,
            connections,
            iptables_restore,
            peer_cap,
        } => {
            let sizes = split(&services)
                .iter()
                .map(|s| {
                    s.parse::<usize>()
                        .with_context(|| format!("--services: {s}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            proxy::run(&proxy::Options {
                iptables_restore,
                peer_cap: parse_duration(&peer_cap)?,
                sizes,
                endpoints: endpoints.max(1),
                rounds: rounds.max(1),
                connections: connections.max(1),
            })
            .await?;
        }
        Cmd::Dns {
            services,
            clients,
            duration,
        } => {
            dns::run(dns::Options {
                services: services.max(1),
                clients: clients.max(1),
                duration: parse_duration(&duration)?,
            })
            .await?;
        }
        Cmd::Propagation {
            kubeconfig,
            servers,
            agent_servers,
            agents,
            probes,
            settle,
            no_links,
        } => {
            raise_open_files();
            propagation::run(propagation::Options {
                kubeconfig,
                servers: split(&servers),
                gateway: agent_servers.and_then(|s| split(&s).into_iter().next()),
                agents,
                probes,
                settle: parse_duration(&settle)?,
                links: !no_links,
            })
            .await?
        }
        Cmd::NullKv { listen, put_delay } => {
            null_kv::run(&split(&listen), parse_duration(&put_delay)?).await?
        }
        Cmd::Heartbeats {
            kubeconfig,
            servers,
            nodes,
            duration,
        } => {
            heartbeats::run(
                &kubeconfig,
                &split(&servers),
                nodes,
                parse_duration(&duration)?,
            )
            .await?;
        }
        Cmd::Failover {
            kubeconfig,
            servers,
            endpoints,
            rounds,
            rate,
        } => {
            failover::run(failover::Options {
                kubeconfig,
                servers: split(&servers),
                endpoints: split(&endpoints),
                rounds,
                rate,
            })
            .await?;
        }
        Cmd::Api {
            kubeconfig,
            servers,
            endpoints,
            clients,
            rate,
            duration,
            watchers,
        } => {
            api::run(api::Options {
                kubeconfig,
                servers: split(&servers),
                endpoints: split(&endpoints),
                clients,
                rate,
                duration: parse_duration(&duration)?,
                watchers,
            })
            .await?;
        }
        Cmd::Read {
            endpoints,
            clients,
            duration,
            keys,
            serializable,
        } => {
            let duration = parse_duration(&duration)?;
            let channels: Vec<Channel> = endpoints
                .split(',')
                .map(|e| etcd_client::channel(e, None))
                .collect::<anyhow::Result<_>>()?;
            let mut kv = KvClient::new(channels[0].clone());
            for i in 0..keys {
                let req = PutRequest {
                    key: format!("/bench/read/{i}").into(),
                    value: vec![b'v'; 256],
                    ..Default::default()
                };
                kv.put(req).await.context("filling the key space")?;
            }
            let deadline = Instant::now() + duration;
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let mut kv = KvClient::new(channels[c % channels.len()].clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = c;
                    while Instant::now() < deadline {
                        let req = RangeRequest {
                            key: format!("/bench/read/{}", i % keys).into(),
                            serializable,
                            ..Default::default()
                        };
                        let t = Instant::now();
                        if kv.range(req).await.is_ok() {
                            lat.push(t.elapsed());
                        }
                        i += clients;
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await?);
            }
            let secs = started.elapsed().as_secs_f64();
            all.sort();
            let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
            let max = all.last().copied().unwrap_or_default();
            println!(
                "reads/s={:.0} p99_ms={:.2} max_ms={:.2}",
                all.len() as f64 / secs,
                p99.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
