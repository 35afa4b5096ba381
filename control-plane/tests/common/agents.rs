//! Real node agents for multi-process tests: `node-agent join` with a token
//! from `control-plane token create`, then `node-agent run` against the
//! machine's Docker engine. Each test's nodes have names of their own (from
//! the cluster's loopback addresses), so their containers never mix with
//! another test's; dropping an agent removes its containers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{strip_ansi, Cluster};

static AGENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Hard eviction thresholds in absolute amounts. The kubelet's defaults are
/// shares of the disk (nodefs 10%, imagefs 15%), and this host's disk is
/// shared with whatever else runs on it: at 86% full every test node would
/// report DiskPressure, be tainted and evict its pods. Tests that exercise
/// pressure pass their own `--eviction-hard`.
pub const TEST_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<1Gi,nodefs.inodesFree<1%,imagefs.available<1Gi";

/// `node-agent`, built beside `control-plane` by the workspace build.
pub fn agent_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_control-plane")).with_file_name("node-agent");
    assert!(
        p.exists(),
        "{} is missing: build the whole workspace (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// The local images every agent test runs (`deploy/images` builds them).
pub fn require_images() {
    for image in ["busybox:local", "skiff-pause:local"] {
        let ok = Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running docker");
        assert!(ok.success(), "image {image} is missing: run deploy/images");
    }
}

/// A join command's parts: server, token, CA hash.
pub struct JoinCommand {
    pub server: String,
    pub token: String,
    pub ca_hash: String,
}

/// `control-plane token create --print-join-command`, with extra flags.
pub fn create_token(cluster: &Cluster, extra: &[&str]) -> JoinCommand {
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["token", "create", "--print-join-command", "--kubeconfig"])
        .arg(cluster.kubeconfig(0))
        .args(extra)
        .output()
        .expect("control-plane token create");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).expect(flag);
        words[i + 1].to_string()
    };
    JoinCommand {
        server: after("--server"),
        token: after("--token"),
        ca_hash: after("--discovery-token-ca-cert-hash"),
    }
}

pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    pub metrics: String,
    /// The address the node reports as its InternalIP (`--node-ip`); for
    /// an agent on this host, 127.0.0.1 unless a test sets it.
    pub node_ip: String,
    child: Option<Child>,
    log: PathBuf,
    extra: Vec<String>,
    /// The node host it runs in (None: this host, sharing its network
    /// and engine with other agents).
    host: Option<(String, String, String)>,
}

impl Cluster {
    /// A node name unique to this cluster.
    pub fn node_name(&self, short: &str) -> String {
        let base = self.masters[0].ip.replace('.', "-");
        format!("{short}-{base}")
    }

    /// `node-agent join` for node `short` through `cmd` (the agent binary,
    /// here or in a node host): its name and data dir, or Err(stderr).
    fn run_join(
        &self,
        mut cmd: Command,
        short: &str,
        join: &JoinCommand,
    ) -> Result<(String, PathBuf), String> {
        let name = self.node_name(short);
        let dir = self.dir.path().join(format!("agent-{short}"));
        let out = cmd
            .args(["join", "--server", &join.server, "--token", &join.token])
            .args(["--discovery-token-ca-cert-hash", &join.ca_hash])
            .args(["--node-name", &name, "--data-dir"])
            .arg(&dir)
            .output()
            .expect("node-agent join");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok((name, dir))
    }

    /// Run `node-agent join` for node `short`; Err(stderr) if refused.
    pub fn join(&self, short: &str, join: &JoinCommand) -> Result<Agent, String> {
        let (name, dir) = self.run_join(Command::new(agent_bin()), short, join)?;
        let ip = self.masters[0]
            .ip
            .rsplit_once('.')
            .expect("ip")
            .0
            .to_string();
        let n = 100 + AGENTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 150;
        Ok(Agent {
            metrics: format!("{ip}.{n}:10255"),
            node_ip: "127.0.0.1".into(),
            log: self.dir.path().join(format!("agent-{short}.log")),
            name,
            dir,
            child: None,
            extra: Vec::new(),
            host: None,
        })
    }

    /// Join node `short` from inside `host` (its own namespace and
    /// engine); its agent runs there, on the routed pod network.
    pub fn join_in(
        &self,
        short: &str,
        join: &JoinCommand,
        host: &super::hosts::NodeHost,
    ) -> Result<Agent, String> {
        let (name, dir) = self.run_join(host.command(&agent_bin()), short, join)?;
        Ok(Agent {
            metrics: format!("{}:10255", host.ip),
            node_ip: host.ip.clone(),
            log: self.dir.path().join(format!("agent-{short}.log")),
            name,
            dir,
            child: None,
            extra: Vec::new(),
            host: Some((host.name.clone(), host.ip.clone(), host.docker_host.clone())),
        })
    }
}

impl Agent {
    /// Start `node-agent run` (again), with `extra` flags from now on.
    pub fn run(&mut self, extra: &[&str]) {
        if !extra.is_empty() {
            self.extra = extra.iter().map(|s| s.to_string()).collect();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let mut cmd = match &self.host {
            Some((name, ip, docker)) => {
                let mut c = super::hosts::in_host(name, &agent_bin());
                c.args(["run", "--node-ip", ip, "--docker-host", docker]);
                c
            }
            None => {
                let mut c = Command::new(agent_bin());
                // These nodes share this host's network and engine.
                c.args(["run", "--node-ip", &self.node_ip, "--network", "none"]);
                c
            }
        };
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-metrics", &self.metrics])
            .args(["--backoff-base", "1s", "--backoff-max", "4s"]);
        if !self.extra.iter().any(|a| a == "--eviction-hard") {
            cmd.args(["--eviction-hard", TEST_EVICTION_HARD]);
        }
        let child = cmd
            .args(&self.extra)
            .env("RUST_LOG", "info,node_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning node-agent");
        self.child = Some(child);
    }

    /// kill -9 the agent (its containers keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The running agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent is running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A kubeconfig with this node's own certificate, against `server`.
    pub fn kubeconfig(&self, server: &str, at: &Path) -> PathBuf {
        identity_kubeconfig(
            &self.dir,
            server,
            &at.join(format!("{}.kubeconfig", self.name)),
        )
    }

    /// What the node holds, from its `/debug/desired`.
    pub async fn desired(&self) -> serde_json::Value {
        let url = format!("http://{}/debug/desired", self.metrics);
        match reqwest::get(&url).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// The master its control session is on (from its log), as "mN".
    pub fn session_master(&self) -> Option<String> {
        let log = strip_ansi(&self.log());
        let line = log.lines().rev().find(|l| l.contains("session accepted"))?;
        let rest = &line[line.find("master=")? + "master=".len()..];
        Some(rest.split_whitespace().next()?.to_string())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=skiff.io/node={}", self.name))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// Containers of a pod on the node's engine: (id, labels JSON).
pub fn docker_containers(label: &str) -> Vec<(String, serde_json::Value)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{json .Labels}}",
            "--filter",
        ])
        .arg(format!("label={label}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, labels) = l.split_once(' ')?;
            // `docker ps` prints labels as one "k=v,k=v" string.
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str::<String>(labels)
                    .ok()?
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                    .collect();
            Some((id.to_string(), serde_json::Value::Object(map)))
        })
        .collect()
}

pub const SETTLE: Duration = Duration::from_secs(60);

/// The node's Ready condition status ("True", "False", "Unknown"), or ""
/// if kubectl cannot tell.
pub fn node_ready(kc: &Path, node: &str) -> String {
    super::kubectl(
        kc,
        &[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ],
    )
    .1
}

/// Held by each test that runs agents: one at a time, since each runs
/// three masters, agents and containers on two cores, and tests that
/// measure real CPU use need the machine not to be saturated by another.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Write to `path` a kubeconfig for the API at `server` with the node
/// identity in data directory `dir`, as it is now (the files are copied in).
pub fn identity_kubeconfig(dir: &Path, server: &str, path: &Path) -> PathBuf {
    use base64::Engine;
    let b64 = |f: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.join(f)).expect("identity file"))
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        b64("ca.crt"),
        b64("node.crt"),
        b64("node.key")
    );
    std::fs::write(path, text).expect("node kubeconfig");
    path.to_path_buf()
}
