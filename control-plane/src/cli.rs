//! Command line: `control-plane run` starts a master.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use raft_store::handoff::Handoff;
use raft_store::{member_id, Member, Store};

#[derive(Parser)]
#[command(name = "control-plane", version, about = "The Skiff master")]
pub struct Cli {
    #[command(flatten)]
    pub log: crate::logging::Args,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a master: the replicated store, the etcd v3 API and (with a PKI
    /// directory) the Kubernetes API.
    Run(Box<RunArgs>),
    /// Start the first master of a new cluster, as `kubeadm init`: the
    /// cluster CA (unless it exists), the admin kubeconfig, then serve, and
    /// once serving, a bootstrap token, the control-plane certificates sealed
    /// for joining masters, and the join commands. Restart it with `run`.
    Init(Box<InitArgs>),
    /// Join a running cluster as a master (`--control-plane`): the
    /// certificates from a master with a bootstrap token and the certificate
    /// key `init` printed, a learner in the store, then serve (promoted to a
    /// voter once caught up). Restart it with `run`.
    Join(Box<JoinArgs>),
    /// Take a master out of the cluster (by name); it exits once it learns.
    Leave(LeaveArgs),
    /// Print a kubeconfig with a fresh client certificate from the cluster CA.
    Kubeconfig(KubeconfigArgs),
    /// Manage bootstrap tokens, with which node agents join (as kubeadm's).
    Token(TokenArgs),
    /// Check and renew the certificates kept in the PKI directory (as
    /// `kubeadm certs`); masters renew their own while they run.
    Certs(CertsArgs),
    /// Write a new member's data directory from a snapshot file (`etcdctl
    /// snapshot save`), as `etcdutl snapshot restore`.
    Restore(crate::restore::RestoreArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The kubeconfig to reach the cluster with (default $KUBECONFIG).
    #[arg(long, env = "KUBECONFIG", global = true)]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it.
    Create {
        /// How long the token lets nodes join ("24h", "30m"; "0" never expires).
        #[arg(long, default_value = "24h")]
        ttl: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Print the whole `node-agent join` command, not just the token.
        #[arg(long)]
        print_join_command: bool,
        /// The agent address the join command names (default: the API
        /// server's host, port 6444).
        #[arg(long)]
        agent_server: Option<String>,
    },
    /// List the tokens, their expiry and description.
    List,
    /// Delete tokens (by id or whole token); nodes can no longer join with them.
    Delete {
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

#[derive(clap::Args)]
struct CertsArgs {
    /// The PKI directory (`init --pki-dir`, `init certs --pki-dir`).
    #[arg(long, global = true, default_value = "pki")]
    pki_dir: PathBuf,
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// List each certificate with its expiry and the time left.
    CheckExpiration,
    /// Issue a certificate again with a fresh key and a new year of
    /// validity: `all`, `admin.kubeconfig` or `etcd-client`.
    Renew { which: String },
    /// Seal the control-plane certificates under a new certificate key for
    /// joining masters (two hours), replacing an earlier upload, and print
    /// the key (kubeadm's `init phase upload-certs --upload-certs`).
    Upload {
        /// The kubeconfig to reach the cluster with (default: the PKI
        /// directory's admin.kubeconfig).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct InitArgs {
    #[command(subcommand)]
    phase: Option<InitPhase>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum InitPhase {
    /// Only the files: the cluster CA (unless it exists), the admin
    /// kubeconfig and the etcd client certificate, for masters started
    /// with `run --initial-cluster` (copy ca.crt and ca.key to each one's
    /// --pki-dir), as `kubeadm init phase certs`.
    Certs {
        #[arg(long)]
        pki_dir: PathBuf,
        /// The API server the kubeconfig points at.
        #[arg(long, default_value = "https://127.0.0.1:6443")]
        server: String,
    },
}

#[derive(clap::Args)]
struct JoinArgs {
    /// A master's agent address (host:port), as `init` printed it.
    server: String,
    /// A bootstrap token (`control-plane token create`).
    #[arg(long)]
    token: String,
    /// The cluster CA's public key hash, `sha256:<hex>`, as `init` printed it.
    #[arg(long)]
    discovery_token_ca_cert_hash: String,
    /// Join as a master (nodes join with `node-agent join`).
    #[arg(long)]
    control_plane: bool,
    /// The key that opens the uploaded control-plane certificates (64 hex
    /// digits), as `init` or `certs upload` printed it.
    #[arg(long, env = "SKIFF_CERTIFICATE_KEY", hide_env_values = true)]
    certificate_key: String,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct LeaveArgs {
    /// The master to take out.
    #[arg(long)]
    name: String,
    /// The cluster CA (its key issues the client certificate this uses).
    #[arg(long, default_value = "pki")]
    pki_dir: PathBuf,
    /// Masters' etcd client URLs to ask, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "https://127.0.0.1:2379")]
    endpoints: Vec<String>,
}

#[derive(clap::Args)]
struct KubeconfigArgs {
    #[arg(long)]
    pki_dir: PathBuf,
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    server: String,
    /// The user (certificate CN); default the cluster admin.
    #[arg(long)]
    user: Option<String>,
    /// Groups (certificate O), repeatable.
    #[arg(long)]
    group: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClusterState {
    /// Form a new cluster from --initial-cluster (ignored if the data dir holds one).
    New,
    /// Join a running cluster that already lists this member (`etcdctl member add`).
    Existing,
}

#[derive(clap::Args)]
struct RunArgs {
    /// This master's name (default: the host's name); with
    /// --initial-cluster, its entry there.
    #[arg(long, default_value_t = host_name())]
    name: String,
    /// Where the Raft log, the state machine and snapshots live.
    #[arg(long, default_value = "skiff-data")]
    data_dir: PathBuf,
    /// etcd v3 gRPC API.
    #[arg(long, default_value = "127.0.0.1:2379")]
    listen_client: SocketAddr,
    /// Raft RPCs between masters.
    #[arg(long, default_value = "127.0.0.1:2380")]
    listen_peer: SocketAddr,
    /// HTTP: /metrics (Prometheus) and /health.
    #[arg(long, default_value = "127.0.0.1:2381")]
    listen_metrics: SocketAddr,
    /// Peer URL other masters use (default: https://<listen-peer>, or
    /// http:// with --plaintext-store).
    #[arg(long)]
    advertise_peer_url: Option<String>,
    /// Client URL shown in `member list` (default: https://<listen-client>,
    /// or http:// with --plaintext-store).
    #[arg(long)]
    advertise_client_url: Option<String>,
    /// Serve the Raft peer port and the etcd API in plaintext, with no
    /// client authentication: for experiments only. Without it both use
    /// mutual TLS under the cluster CA (--pki-dir): peers must present a
    /// master's certificate, etcd clients one in system:masters (such as
    /// the etcd-client.crt that `init` writes).
    #[arg(long)]
    plaintext_store: bool,
    /// Serve only the store (the etcd API, the peer port and metrics): no
    /// Kubernetes API, agent gateway, scheduler or controllers. Skiff as a
    /// drop-in etcd, as the chaos harness and the store benchmarks run it.
    #[arg(long)]
    store_only: bool,
    /// How long this master's own certificate (API, agents, etcd API,
    /// peers) is valid; it is renewed in place at two thirds of that.
    #[arg(long, default_value = "8760h", value_parser = humantime::parse_duration)]
    master_cert_validity: Duration,
    /// Initial members as name=peer-url,... (like etcd's --initial-cluster).
    #[arg(long, default_value = "")]
    initial_cluster: String,
    #[arg(long, value_enum, default_value = "new")]
    initial_cluster_state: ClusterState,
    /// Hashed into member and cluster ids; the same on every master.
    /// Recorded in the data directory at its first start, and kept from
    /// then on (`join` takes the cluster's).
    #[arg(long, default_value = "skiff")]
    initial_cluster_token: String,
    /// Leader heartbeat interval.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// A follower stands for election after hearing nothing from the leader
    /// for between 0.8 and 1 times this. (openraft first waits out the
    /// leader's lease, half of it, then a random 0.3 to 0.5 of it.)
    #[arg(long, default_value_t = 800)]
    election_timeout_ms: u64,
    /// Applied entries between snapshots (the log is purged behind each).
    #[arg(long, default_value_t = 10_000)]
    snapshot_count: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a
    /// little (like etcd's --experimental-snapshot-catchup-entries).
    #[arg(long, default_value_t = 1_000)]
    snapshot_catchup_entries: u64,
    /// Stop taking writes (and leave the quorum) while the data dir's file
    /// system has less than this many MiB free; rejoin at 1.5 times it.
    #[arg(long, default_value_t = 64)]
    min_free_space_mb: u64,
    /// Every this many seconds, the leader compacts history to the revision
    /// of one interval before, as kube-apiserver does against etcd
    /// (--etcd-compaction-interval); 0 keeps all history, as etcd does.
    #[arg(long, default_value_t = 300)]
    compaction_interval_secs: u64,
    /// Kubernetes API (HTTPS); served when --pki-dir holds the cluster CA.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen_api: SocketAddr,
    /// The cluster CA (ca.crt, ca.key) and optional tokens.csv; see `init`.
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    /// Kubernetes' EncryptionConfiguration file: which resources are
    /// encrypted in the store, and with which keys (aesgcm, secretbox,
    /// identity). Every master must be given the same file.
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// Extra names or addresses for this master's serving certificate.
    #[arg(long, value_delimiter = ',')]
    api_host: Vec<String>,
    /// The address pods reach this master's API at, listed as an endpoint
    /// of the `kubernetes` Service (default: the address of --listen-api,
    /// else the first address in --api-host).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Addresses for Services' cluster IPs (IPv4 CIDR).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Addresses for pods, cut into one block per node (its podCIDR);
    /// "none": nodes get no podCIDR.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The prefix length of each node's block of --cluster-cidr.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Ports for NodePort Services.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// A node whose heartbeat (its Lease in kube-node-lease) is older than
    /// this goes Ready=Unknown and is tainted unreachable.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period_secs: u64,
    /// How long pods stay on an unreachable or not-ready node when they do
    /// not say (by a toleration) themselves.
    #[arg(long, default_value_t = 300)]
    default_eviction_timeout_secs: u64,
    /// How often each HorizontalPodAutoscaler re-evaluates its target.
    #[arg(long, default_value_t = 15)]
    horizontal_pod_autoscaler_sync_period_secs: u64,
    /// Node agents (QUIC over UDP); served when --pki-dir holds the cluster CA.
    #[arg(long, default_value = "127.0.0.1:6444")]
    listen_agents: SocketAddr,
    /// The address agents reach this master's gateway at (default
    /// --listen-agents).
    #[arg(long)]
    advertise_agents: Option<String>,
    /// How long a node's certificate is valid; agents renew it at two
    /// thirds of that.
    #[arg(long, default_value = "8760h", value_parser = humantime::parse_duration)]
    node_cert_validity: Duration,
    /// Seconds added to the clock the controllers read (tests: fire a
    /// CronJob without waiting for its minute).
    #[arg(long, default_value_t = 0, hide = true)]
    controller_clock_offset_secs: i64,
}

/// The machine's host name, as kubeadm names a node by default.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The cluster token this data directory's member id was made with: the
/// one recorded at its first start, which later starts keep (a restart with
/// another --initial-cluster-token would otherwise come up as another
/// member). Recorded now if the directory has none.
fn cluster_token(args: &RunArgs) -> anyhow::Result<String> {
    let path = args.data_dir.join("cluster-token");
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            let t = t.trim().to_string();
            if t != args.initial_cluster_token {
                tracing::info!(
                    recorded = %t,
                    "using the cluster token recorded in the data directory, not --initial-cluster-token"
                );
            }
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&args.data_dir)?;
            crate::pki::write_private(&path, &args.initial_cluster_token)?;
            Ok(args.initial_cluster_token.clone())
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

pub(crate) fn parse_initial_cluster(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (name, url) = pair
                .split_once('=')
                .with_context(|| format!("bad --initial-cluster entry {pair:?}"))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("peer URL {url:?} must start with http:// or https://");
            }
            Ok((name.trim().to_string(), url.trim().to_string()))
        })
        .collect()
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => run(*args).await,
            Command::Init(args) => match args.phase {
                Some(InitPhase::Certs { pki_dir, server }) => {
                    let path = crate::pki::init(&pki_dir, &server)?;
                    println!("cluster CA in {}", pki_dir.display());
                    println!("admin kubeconfig: {}", path.display());
                    Ok(())
                }
                None => init(args.run).await,
            },
            Command::Join(args) => join(*args).await,
            Command::Leave(args) => {
                crate::masters::leave::leave(&args.pki_dir, &args.name, &args.endpoints).await
            }
            Command::Token(args) => token(args).await,
            Command::Certs(args) => certs(args).await,
            Command::Restore(args) => crate::restore::run(args),
            Command::Kubeconfig(args) => {
                let ca = crate::pki::Ca::load(&args.pki_dir)?;
                let who = match args.user {
                    Some(user) => crate::pki::Identity {
                        user,
                        groups: args.group,
                    },
                    None => crate::pki::Identity::admin(),
                };
                print!("{}", crate::pki::kubeconfig(&ca, &args.server, &who)?);
                Ok(())
            }
        }
    }
}

async fn certs(args: CertsArgs) -> anyhow::Result<()> {
    use crate::pki::files;
    match args.command {
        CertsCommand::CheckExpiration => {
            let rows = files::expiries(&args.pki_dir)?;
            print!(
                "{}",
                files::expiry_table(&rows, time::OffsetDateTime::now_utc())
            );
            println!(
                "\nEach master issues its own certificate at start and renews it at two \
                 thirds of its lifetime; see the skiff_certificate_expiry_timestamp_seconds \
                 gauge on its /metrics."
            );
        }
        CertsCommand::Renew { which } => {
            for what in files::Renewable::parse(&which)? {
                files::renew(&args.pki_dir, what)?;
                println!("{} renewed", what.name());
            }
        }
        CertsCommand::Upload { kubeconfig } => {
            let kubeconfig =
                kubeconfig.unwrap_or_else(|| args.pki_dir.join(crate::pki::ADMIN_KUBECONFIG));
            let client = crate::rest_client::RestClient::from_kubeconfig(&kubeconfig)?;
            let key = crate::pki::sealed::upload(&client, &args.pki_dir).await?;
            println!("{key}");
        }
    }
    Ok(())
}

/// A data directory that already holds a store.
fn holds_store(dir: &std::path::Path) -> bool {
    dir.join("db").exists()
}

/// Where this master's API is reached, for its kubeconfig.
fn api_url(args: &RunArgs) -> String {
    let host = match args.listen_api.ip() {
        ip if ip.is_unspecified() => args
            .api_host
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into()),
        ip => ip.to_string(),
    };
    format!("https://{host}:{}", args.listen_api.port())
}

/// Where agents and joining masters reach this master's gateway.
fn agent_address(args: &RunArgs) -> String {
    match &args.advertise_agents {
        Some(a) => a.clone(),
        None if args.listen_agents.ip().is_unspecified() => format!(
            "{}:{}",
            args.api_host
                .first()
                .map(String::as_str)
                .unwrap_or("127.0.0.1"),
            args.listen_agents.port()
        ),
        None => args.listen_agents.to_string(),
    }
}

async fn init(mut args: RunArgs) -> anyhow::Result<()> {
    let Some(pki_dir) = args.pki_dir.clone() else {
        bail!("init needs --pki-dir: the cluster CA and the admin kubeconfig go there");
    };
    if args.plaintext_store || args.store_only {
        bail!("init makes a whole cluster: without --plaintext-store and --store-only");
    }
    let fresh = !holds_store(&args.data_dir);
    let kubeconfig = crate::pki::init(&pki_dir, &api_url(&args))?;
    if fresh {
        if !args.initial_cluster.is_empty() {
            bail!("init forms a cluster of this one master: add the others with join, not --initial-cluster");
        }
        let (peer_url, _) = store_urls(&args, &[]);
        args.initial_cluster = format!("{}={peer_url}", args.name);
        args.initial_cluster_state = ClusterState::New;
        let joining = crate::masters::init::Joining {
            kubeconfig,
            pki_dir,
            agent_server: agent_address(&args),
        };
        tokio::spawn(async move {
            if let Err(e) = crate::masters::init::announce(joining).await {
                tracing::error!("making the join token and certificates: {e:#}");
            }
        });
    } else {
        tracing::info!(
            data_dir = %args.data_dir.display(),
            "the data directory holds a cluster already: serving it (`control-plane token \
             create --print-join-command` and `control-plane certs upload` make join credentials)"
        );
    }
    run(args).await
}

async fn join(args: JoinArgs) -> anyhow::Result<()> {
    let mut run_args = args.run;
    if !args.control_plane {
        bail!("only masters join with control-plane join --control-plane; nodes join with `node-agent join`");
    }
    let Some(pki_dir) = run_args.pki_dir.clone() else {
        bail!("join needs --pki-dir: the cluster CA goes there");
    };
    if run_args.plaintext_store || run_args.store_only {
        bail!("a joining master uses TLS and serves the whole API: without --plaintext-store and --store-only");
    }
    if !run_args.initial_cluster.is_empty() {
        bail!("join takes the members from the cluster: without --initial-cluster");
    }
    if holds_store(&run_args.data_dir) {
        bail!(
            "{} already holds a store: this master has joined (start it with `control-plane \
             run`), or clear the directory to join afresh",
            run_args.data_dir.display()
        );
    }
    let key = crate::pki::sealed::CertificateKey::parse(&args.certificate_key)?;
    let fetched = crate::masters::join::fetch_certificates(
        &args.server,
        &args.token,
        &args.discovery_token_ca_cert_hash,
        &key,
        &pki_dir,
    )
    .await?;
    run_args.initial_cluster_token = fetched.cluster_token;
    let (peer_url, _) = store_urls(&run_args, &[]);
    crate::masters::join::add_learner(&pki_dir, &run_args.name, &peer_url, &fetched.client_urls)
        .await?;
    crate::masters::promotion::request(&run_args.data_dir)?;
    run_args.initial_cluster_state = ClusterState::Existing;
    run(run_args).await
}

async fn token(args: TokenArgs) -> anyhow::Result<()> {
    use crate::tokens;
    let kubeconfig = args
        .kubeconfig
        .context("no kubeconfig: pass --kubeconfig or set KUBECONFIG")?;
    let client = crate::rest_client::RestClient::from_kubeconfig(&kubeconfig)?;
    let secrets = format!("/api/v1/namespaces/{}/secrets", tokens::NAMESPACE);
    match args.command {
        TokenCommand::Create {
            ttl,
            description,
            print_join_command,
            agent_server,
        } => {
            let ttl = match ttl.trim() {
                "0" => None,
                t => {
                    Some(humantime::parse_duration(t).with_context(|| format!("bad --ttl {t:?}"))?)
                }
            };
            let token = crate::masters::init::create_token(&client, ttl, &description).await?;
            if print_join_command {
                let server = match agent_server {
                    Some(s) => s,
                    None => {
                        let host = client
                            .server()
                            .trim_start_matches("https://")
                            .rsplit_once(':')
                            .map(|(h, _)| h.to_string())
                            .unwrap_or_else(|| client.server().to_string());
                        format!("{host}:6444")
                    }
                };
                println!(
                    "node-agent join --server {server} --token {token} --discovery-token-ca-cert-hash {}",
                    crate::pki::ca_hash(&client.ca_pem)?
                );
            } else {
                println!("{token}");
            }
            Ok(())
        }
        TokenCommand::List => {
            let list = client.get(&secrets).await?;
            println!("{:<24}{:<22}DESCRIPTION", "TOKEN", "EXPIRES");
            for s in list["items"].as_array().into_iter().flatten() {
                if s["type"].as_str() != Some(tokens::SECRET_TYPE) {
                    continue;
                }
                let Some(id) = s["metadata"]["name"]
                    .as_str()
                    .and_then(tokens::id_of_secret)
                else {
                    continue;
                };
                let expires = match tokens::expiry(s) {
                    Ok(Some(at)) if at <= chrono::Utc::now() => "<expired>".to_string(),
                    Ok(Some(at)) => at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    Ok(None) => "<forever>".to_string(),
                    Err(_) => "<invalid>".to_string(),
                };
                let description = tokens::field(s, "description").unwrap_or_default();
                println!(
                    "{:<24}{:<22}{}",
                    format!("{id}.<secret>"),
                    expires,
                    description
                );
            }
            Ok(())
        }
        TokenCommand::Delete { tokens: given } => {
            for t in given {
                let id = t.split('.').next().unwrap_or("").to_string();
                if id.len() != 6 {
                    bail!("{t:?} is neither a token id nor a token");
                }
                client
                    .delete(&format!("{secrets}/{}", tokens::secret_name(&id)))
                    .await
                    .with_context(|| format!("deleting token {id}"))?;
                println!("bootstrap token {id:?} deleted");
            }
            Ok(())
        }
    }
}

/// This master's peer and client URLs, from its flags and its entry in
/// the initial cluster.
fn store_urls(args: &RunArgs, initial: &[(String, String)]) -> (String, String) {
    let scheme = if args.plaintext_store {
        "http"
    } else {
        "https"
    };
    let peer_url = match (
        &args.advertise_peer_url,
        initial.iter().find(|(n, _)| *n == args.name),
    ) {
        (Some(u), _) => u.clone(),
        (None, Some((_, u))) => u.clone(),
        (None, None) => format!("{scheme}://{}", args.listen_peer),
    };
    let client_url = args
        .advertise_client_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{}", args.listen_client));
    (peer_url, client_url)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let initial = parse_initial_cluster(&args.initial_cluster)?;
    let scheme = if args.plaintext_store {
        "http"
    } else {
        "https"
    };
    let (peer_url, client_url) = store_urls(&args, &initial);
    for (what, url) in initial
        .iter()
        .map(|(_, u)| ("--initial-cluster", u))
        .chain([("peer URL", &peer_url), ("client URL", &client_url)])
    {
        if !url.starts_with(&format!("{scheme}://")) {
            bail!(
                "{what} {url:?} must be {scheme}://: the store's ports {}",
                if args.plaintext_store {
                    "are plaintext (--plaintext-store)"
                } else {
                    "use TLS (only --plaintext-store serves them in plaintext)"
                }
            );
        }
    }
    let ca = match &args.pki_dir {
        Some(dir) => Some(std::sync::Arc::new(
            crate::pki::Ca::load(dir).with_context(|| {
                format!(
                    "no cluster CA in {} (run `control-plane init certs --pki-dir {}`)",
                    dir.display(),
                    dir.display()
                )
            })?,
        )),
        None if args.plaintext_store => None,
        None => bail!(
            "the etcd API and the peer port need the cluster CA for TLS: pass --pki-dir \
             (see `control-plane init`), or --plaintext-store for an experiment without TLS"
        ),
    };
    let ranges = crate::api::ServiceRanges::parse(
        &args.service_cluster_ip_range,
        &args.service_node_port_range,
    )
    .map_err(|e| anyhow::anyhow!("service ranges: {e}"))?;
    let encryption = std::sync::Arc::new(match &args.encryption_provider_config {
        Some(path) => crate::encryption::Encryption::load(path)?,
        None => Default::default(),
    });
    let master_cert = match &ca {
        Some(ca) => Some(crate::pki::MasterCert::issue(
            ca.clone(),
            &args.name,
            master_hosts(&args, &peer_url, &client_url, &ranges),
            args.master_cert_validity,
        )?),
        None => None,
    };
    let store_tls = match (&ca, &master_cert, args.plaintext_store) {
        (Some(ca), Some(cert), false) => {
            use crate::pki::verify::Allowed;
            Some((
                std::sync::Arc::new(crate::pki::store_server_tls(
                    ca,
                    cert.clone(),
                    Allowed::Administrators,
                )?),
                raft_store::PeerTls {
                    server: std::sync::Arc::new(crate::pki::store_server_tls(
                        ca,
                        cert.clone(),
                        Allowed::Masters,
                    )?),
                    client: std::sync::Arc::new(crate::pki::peer_client_tls(ca, cert.clone())?),
                },
            ))
        }
        _ => {
            tracing::warn!("--plaintext-store: the etcd API and the peer port are plaintext, with no authentication");
            None
        }
    };
    let metrics = crate::metrics_http::install()?;

    let mut config = raft_store::Config::new(&args.name, args.data_dir.clone(), args.listen_peer);
    config.peer_url = peer_url;
    config.client_urls = vec![client_url];
    let token = cluster_token(&args)?;
    config.cluster_token = token.clone();
    config.heartbeat = Duration::from_millis(args.heartbeat_ms);
    if args.election_timeout_ms * 3 / 10 <= args.heartbeat_ms {
        bail!("--election-timeout-ms must be more than 3.3 times --heartbeat-ms");
    }
    config.election_timeout = (
        Duration::from_millis(args.election_timeout_ms * 3 / 10),
        Duration::from_millis(args.election_timeout_ms / 2),
    );
    config.snapshot_entries = args.snapshot_count;
    config.keep_entries = args.snapshot_catchup_entries;
    config.min_free_bytes = args.min_free_space_mb << 20;
    config.compaction_interval = (args.compaction_interval_secs > 0)
        .then(|| Duration::from_secs(args.compaction_interval_secs));
    let (client_tls, peer_tls) = store_tls.unzip();
    config.peer_tls = peer_tls;
    let client_listener = tokio::net::TcpListener::bind(args.listen_client)
        .await
        .with_context(|| format!("binding the client address {}", args.listen_client))?;
    let metrics_listener = tokio::net::TcpListener::bind(args.listen_metrics)
        .await
        .with_context(|| format!("binding the metrics address {}", args.listen_metrics))?;
    let node_cidrs = match args.cluster_cidr.as_str() {
        "none" => None,
        c => Some(
            c.parse()
                .and_then(|c| {
                    crate::controllers::node_ipam::NodeCidrs::new(c, args.node_cidr_mask_size)
                })
                .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?,
        ),
    };
    let kube = match (&args.pki_dir, &ca, &master_cert) {
        _ if args.store_only => None,
        (Some(dir), Some(ca), Some(cert)) => {
            let tls = crate::pki::api_server_tls(ca, cert.clone())?;
            let agent_tls = crate::pki::agent_server_tls(ca, cert.clone())?;
            let tokens = crate::api::load_tokens(&dir.join("tokens.csv"))?;
            let listener = tokio::net::TcpListener::bind(args.listen_api)
                .await
                .with_context(|| format!("binding the API address {}", args.listen_api))?;
            let agents = crate::agents::endpoint(agent_tls, args.listen_agents)?;
            Some((listener, tls, tokens, agents, ca.clone()))
        }
        _ => {
            tracing::warn!("no --pki-dir: the Kubernetes API is not served");
            None
        }
    };
    if let Some(cert) = &master_cert {
        tokio::spawn(cert.clone().keep_renewed());
    }
    let store = Store::start(config).await.context("starting the store")?;

    if args.initial_cluster_state == ClusterState::New && !initial.is_empty() {
        if !initial.iter().any(|(n, _)| *n == args.name) {
            bail!("--name {} is not in --initial-cluster", args.name);
        }
        let members: BTreeMap<_, _> = initial
            .iter()
            .map(|(name, url)| {
                (
                    member_id(url, &token),
                    Member {
                        name: name.clone(),
                        peer_url: url.clone(),
                    },
                )
            })
            .collect();
        store
            .initialize(members)
            .await
            .context("forming the cluster")?;
    }

    if crate::masters::promotion::pending(&args.data_dir) {
        tokio::spawn(crate::masters::promotion::run(
            store.clone(),
            args.data_dir.clone(),
        ));
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let etcd = tokio::spawn(crate::etcd::serve(
        store.clone(),
        client_listener,
        client_tls,
        stop_rx.clone(),
    ));
    let http = tokio::spawn(crate::metrics_http::serve(
        metrics_listener,
        metrics,
        store.clone(),
        encryption.clone(),
        stopped(stop_rx.clone()),
    ));
    let leader_stop = tokio_util::sync::CancellationToken::new();
    let settings = crate::controllers::Settings {
        node_monitor_grace: Duration::from_secs(args.node_monitor_grace_period_secs),
        default_eviction_timeout: Duration::from_secs(args.default_eviction_timeout_secs),
        hpa_sync_period: Duration::from_secs(
            args.horizontal_pod_autoscaler_sync_period_secs.max(1),
        ),
        clock_offset: chrono::Duration::seconds(args.controller_clock_offset_secs),
        node_cidrs,
        root_ca: ca.as_ref().map(|c| c.pem().to_string()),
        kubernetes_service: Some(crate::controllers::kubernetes_service::Settings {
            cluster_ip: ranges.kubernetes_ip(),
            api_port: args.listen_api.port(),
        }),
    };
    let k8s = kube.map(|(listener, tls, tokens, agents, ca)| {
        let registry = crate::registry::Registry::new(store.clone()).encrypting(encryption);
        let policy = crate::rbac_cache::RbacCache::start(&registry, leader_stop.clone());
        let graph = crate::agents::node_graph::StoreGraph::new(registry.clone());
        let chain = crate::auth::Chain::new(
            crate::auth::rbac::Rbac::new(policy),
            std::sync::Arc::new(graph),
        );
        let api =
            crate::api::Api::new(registry, tokens, ranges.clone(), std::sync::Arc::new(chain));
        let gateway = std::sync::Arc::new(crate::agents::Gateway {
            api: api.clone(),
            ca,
            settings: crate::agents::Settings {
                master: args.name.clone(),
                advertise: args
                    .advertise_agents
                    .clone()
                    .unwrap_or_else(|| args.listen_agents.to_string()),
                // Behind a wildcard, others reach this master where its API is.
                metrics_url: Some(crate::metrics_http::advertised_url(
                    args.listen_metrics,
                    Some(args.listen_api.ip().to_string())
                        .filter(|_| !args.listen_api.ip().is_unspecified())
                        .or_else(|| args.api_host.first().cloned())
                        .as_deref(),
                )),
                node_cert_validity: args.node_cert_validity,
                max_frame: proto::agent::frame::MAX_FRAME,
            },
            desired: crate::agents::desired::Desired::new(),
            connections: api.node_connections(),
        });
        tokio::spawn(crate::agents::serve(
            gateway,
            agents,
            stopped(stop_rx.clone()),
        ));
        crate::api::spawn_bootstrap(api.clone());
        match advertised_api(&args) {
            Some(address) => {
                tokio::spawn(crate::masters::api_endpoint::keep(
                    api.registry().clone(),
                    args.name.clone(),
                    address,
                ));
            }
            None => tracing::warn!(
                listen = %args.listen_api,
                "no address pods reach this master's API at (the API listens on loopback or on every \
                 address): it is not listed in the kubernetes Service; pass --advertise-address"
            ),
        }
        tokio::spawn(crate::leader::run(
            store.clone(),
            api.clone(),
            settings,
            leader_stop.clone(),
        ));
        tokio::spawn(crate::api::serve(
            api,
            listener,
            tls,
            stopped(stop_rx.clone()),
        ))
    });
    tracing::info!(
        name = %args.name,
        client = %args.listen_client,
        peer = %args.listen_peer,
        metrics = %args.listen_metrics,
        "master serving"
    );

    let mut removed = store.removed();
    // `wait_for`'s guard is a read lock on the flag: it must not be held
    // across the await below, or a second `mark` blocks its worker thread
    // on the write lock (a deadlock seen when both peers said so at once).
    let learned = async { removed.wait_for(|r| *r).await.is_ok() };
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        true = learned => {
            tracing::error!(
                name = %args.name,
                "this master was removed from the cluster: it stops serving and exits (wipe its \
                 data directory before it joins again)"
            );
            // As etcd: a moment in which clients get the explicit error
            // rather than a refused connection. The exit status is 0: the
            // removal was an operator's, and a supervisor restarting on
            // failure should leave the master down.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    leader_stop.cancel();
    let _ = stop_tx.send(true);
    let drain = async {
        let _ = etcd.await;
        let _ = http.await;
        if let Some(k8s) = k8s {
            let _ = k8s.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!("servers did not drain within 5s");
    }
    match store.hand_off().await {
        Handoff::NotLeading => {}
        Handoff::Done { to, took } => tracing::info!(
            to = format_args!("{to:x}"),
            took_ms = took.as_millis() as u64,
            "leadership handed over"
        ),
        Handoff::Failed(why) => tracing::warn!(
            "could not hand over the leadership ({why}); the others elect a leader once they miss its heartbeats"
        ),
    }
    store.shutdown().await;
    Ok(())
}

/// Every name and address this master answers on, for its certificate.
/// Where pods reach this master's API (see --advertise-address). A
/// loopback address is never one by default: in a pod it is the pod.
fn advertised_api(args: &RunArgs) -> Option<std::net::SocketAddr> {
    let reachable = |ip: &std::net::IpAddr| !ip.is_unspecified() && !ip.is_loopback();
    let ip = args
        .advertise_address
        .or_else(|| Some(args.listen_api.ip()).filter(reachable))
        .or_else(|| {
            args.api_host
                .iter()
                .filter_map(|h| h.parse().ok())
                .find(reachable)
        })?;
    Some(std::net::SocketAddr::new(ip, args.listen_api.port()))
}

/// Every name and address this master answers on, and those pods use for
/// the API: the `kubernetes` Service's cluster IP and DNS names.
fn master_hosts(
    args: &RunArgs,
    peer_url: &str,
    client_url: &str,
    ranges: &crate::api::ServiceRanges,
) -> Vec<String> {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    hosts.push(ranges.kubernetes_ip().to_string());
    hosts.extend(
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from),
    );
    hosts.extend(args.advertise_address.map(|a| a.to_string()));
    let listening = [
        args.listen_api,
        args.listen_client,
        args.listen_peer,
        args.listen_agents,
    ];
    hosts.extend(
        listening
            .iter()
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| a.ip().to_string()),
    );
    let url_host = |url: &str| {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    };
    hosts.push(url_host(peer_url));
    hosts.push(url_host(client_url));
    if let Some(a) = &args.advertise_agents {
        hosts.push(url_host(a));
    }
    hosts.extend(args.api_host.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| !h.is_empty() && seen.insert(h.clone()));
    hosts
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
