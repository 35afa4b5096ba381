//! A cluster of real `control-plane` processes for multi-process tests.
//!
//! Each cluster gets its own loopback addresses (127.<a>.<b>.<i>), so tests
//! can run in parallel with the default ports and never collide.

#![allow(dead_code)]

pub mod agents;
pub mod fake_nodes;
pub mod hosts;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use proto::etcd::kv_client::KvClient;
use proto::etcd::maintenance_client::MaintenanceClient;
use proto::etcd::{PutRequest, RangeRequest, StatusRequest};
use tonic::transport::{Channel, Endpoint};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Master {
    pub name: String,
    pub ip: String,
    /// Where its API listens (its own address, or its address on the
    /// node hosts' link).
    pub api_ip: String,
    pub child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

pub struct Cluster {
    pub masters: Vec<Master>,
    pub dir: tempfile::TempDir,
    /// Environment variables every master is started with.
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Start `n` masters; `extra` flags go to every one.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with_env(n, extra, &[]).await
    }

    /// Start `n` masters with `extra` flags and `env` in their environment.
    pub async fn start_with_env(n: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        Cluster::start_full(n, extra, env, None).await
    }

    /// Start `n` masters, master i listening for agents on `agent_ips[i]`
    /// (an address node hosts in their own namespaces can reach).
    pub async fn start_with_agents_on(n: usize, extra: &[&str], agent_ips: &[String]) -> Cluster {
        Cluster::start_full(n, extra, &[], Some(agent_ips)).await
    }

    async fn start_full(
        n: usize,
        extra: &[&str],
        env: &[(&str, &str)],
        agent_ips: Option<&[String]>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        let init = Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .args(["init", "certs", "--pki-dir"])
            .arg(&pki)
            .output()
            .expect("control-plane init");
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let slot = NEXT.fetch_add(1, Ordering::SeqCst);
        let a = 20 + (std::process::id() % 200);
        let base = format!("127.{a}.{}", slot + 1);
        let initial: Vec<String> = (1..=n)
            .map(|i| format!("m{i}=https://{base}.{i}:2380"))
            .collect();
        let initial = initial.join(",");
        let masters = (1..=n)
            .map(|i| {
                let ip = format!("{base}.{i}");
                let data = dir.path().join(format!("m{i}"));
                let mut args: Vec<String> = vec![
                    "run".into(),
                    "--name".into(),
                    format!("m{i}"),
                    "--data-dir".into(),
                    data.display().to_string(),
                    "--listen-client".into(),
                    format!("{ip}:2379"),
                    "--listen-peer".into(),
                    format!("{ip}:2380"),
                    "--listen-metrics".into(),
                    format!("{ip}:2381"),
                    "--initial-cluster".into(),
                    initial.clone(),
                    "--listen-api".into(),
                    // Where agents are hosts of their own, pods reach the
                    // API (the kubernetes Service) where the agents do.
                    format!(
                        "{}:6443",
                        agent_ips.map(|a| a[i - 1].as_str()).unwrap_or(&ip)
                    ),
                    "--listen-agents".into(),
                    format!(
                        "{}:6444",
                        agent_ips.map(|a| a[i - 1].as_str()).unwrap_or(&ip)
                    ),
                    "--pki-dir".into(),
                    pki.display().to_string(),
                ];
                args.extend(extra.iter().map(|s| s.to_string()));
                Master {
                    name: format!("m{i}"),
                    api_ip: agent_ips.map(|a| a[i - 1].clone()).unwrap_or(ip.clone()),
                    ip,
                    child: None,
                    args,
                    log: dir.path().join(format!("m{i}.log")),
                }
            })
            .collect();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut c = Cluster { masters, dir, env };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_leader(Duration::from_secs(20)).await;
        c.wait_bootstrapped().await;
        c
    }

    /// Wait until the masters have written the built-in namespaces, the
    /// bootstrap RBAC roles, the default service accounts and each its
    /// agent gateway's address, the only writes an idle cluster makes: a
    /// test that counts revisions starts after them.
    pub async fn wait_bootstrapped(&self) {
        let gateways = b"/registry/core/configmaps/kube-system/skiff-agent-gateways".to_vec();
        let n = self.masters.iter().filter(|m| m.child.is_some()).count();
        eventually(
            "every master's agent gateway address",
            Duration::from_secs(30),
            || {
                let key = gateways.clone();
                async move {
                    let mut kv = self.kv(0).await;
                    let r = kv
                        .range(RangeRequest {
                            key,
                            ..Default::default()
                        })
                        .await
                        .ok()?;
                    let cm: serde_json::Value =
                        serde_json::from_slice(&r.into_inner().kvs.first()?.value).ok()?;
                    (cm["data"].as_object()?.len() >= n).then_some(())
                }
            },
        )
        .await;
        let prefix = b"/registry/core/namespaces/".to_vec();
        let mut end = prefix.clone();
        *end.last_mut().expect("prefix") += 1;
        eventually("the built-in namespaces", Duration::from_secs(30), || {
            let (prefix, end) = (prefix.clone(), end.clone());
            async move {
                let mut kv = self.kv(0).await;
                let r = kv
                    .range(RangeRequest {
                        key: prefix,
                        range_end: end,
                        count_only: true,
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                (r.into_inner().count >= 4).then_some(())
            }
        })
        .await;
        // The bootstrap RBAC objects (the last binding written last), and
        // the built-in namespaces' default service accounts.
        let mut keys = vec![
            "/registry/rbac.authorization.k8s.io/clusterrolebindings/system:kube-dns".to_string(),
        ];
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            keys.push(format!("/registry/core/serviceaccounts/{ns}/default"));
            keys.push(format!("/registry/core/configmaps/{ns}/kube-root-ca.crt"));
        }
        keys.push("/registry/core/services/default/kubernetes".into());
        for key in keys {
            eventually(&key, Duration::from_secs(30), || {
                let key = key.clone().into_bytes();
                async move {
                    let mut kv = self.kv(0).await;
                    let r = kv
                        .range(RangeRequest {
                            key,
                            ..Default::default()
                        })
                        .await
                        .ok()?;
                    (!r.into_inner().kvs.is_empty()).then_some(())
                }
            })
            .await;
        }
        // The kubernetes Service's endpoints: every running master (none
        // where the API listens on loopback, unreachable from pods).
        if self.masters[0].api_ip.starts_with("127.") {
            return;
        }
        let slice = b"/registry/discovery.k8s.io/endpointslices/default/kubernetes".to_vec();
        eventually(
            "every master in the kubernetes Service's endpoints",
            Duration::from_secs(30),
            || {
                let key = slice.clone();
                async move {
                    let mut kv = self.kv(0).await;
                    let r = kv
                        .range(RangeRequest {
                            key,
                            ..Default::default()
                        })
                        .await
                        .ok()?;
                    let s: serde_json::Value =
                        serde_json::from_slice(&r.into_inner().kvs.first()?.value).ok()?;
                    (s["endpoints"].as_array()?.len() >= n).then_some(())
                }
            },
        )
        .await;
    }

    /// Start one more master that joins the running cluster (after `member add`).
    pub fn add_master(&mut self) -> usize {
        let i = self.masters.len() + 1;
        let base = self.masters[0]
            .ip
            .rsplit_once('.')
            .map(|(b, _)| b.to_string())
            .unwrap_or_default();
        let ip = format!("{base}.{i}");
        let mut initial: Vec<String> = self
            .masters
            .iter()
            .map(|m| format!("{}=https://{}:2380", m.name, m.ip))
            .collect();
        initial.push(format!("m{i}=https://{ip}:2380"));
        let data = self.dir.path().join(format!("m{i}"));
        let args: Vec<String> = [
            "run",
            "--name",
            &format!("m{i}"),
            "--data-dir",
            &data.display().to_string(),
            "--listen-client",
            &format!("{ip}:2379"),
            "--listen-peer",
            &format!("{ip}:2380"),
            "--listen-metrics",
            &format!("{ip}:2381"),
            "--initial-cluster",
            &initial.join(","),
            "--initial-cluster-state",
            "existing",
            "--listen-api",
            &format!("{ip}:6443"),
            "--listen-agents",
            &format!("{ip}:6444"),
            "--pki-dir",
            &self.dir.path().join("pki").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.masters.push(Master {
            name: format!("m{i}"),
            api_ip: ip.clone(),
            ip,
            child: None,
            args,
            log: self.dir.path().join(format!("m{i}.log")),
        });
        self.spawn(i - 1);
        i - 1
    }

    pub fn spawn(&mut self, i: usize) {
        let m = &mut self.masters[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .args(&m.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning control-plane");
        m.child = Some(child);
    }

    /// The flags master `i` is started with, to start it differently next
    /// time (a restored member gets its new cluster token).
    pub fn args_mut(&mut self, i: usize) -> &mut Vec<String> {
        &mut self.masters[i].args
    }

    /// kill -9 one master.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.masters[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`stop`) or SIGCONT one master: a stopped process keeps its
    /// sockets open and answers nothing.
    pub fn signal(&self, i: usize, stop: bool) {
        let pid = self.masters[i].child.as_ref().expect("running").id();
        let sig = if stop { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig} {pid}");
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("https://{}:2379", self.masters[i].ip)
    }

    pub fn endpoints(&self) -> String {
        self.masters
            .iter()
            .map(|m| format!("https://{}:2379", m.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The PKI directory `control-plane init` wrote (the CA, the admin
    /// kubeconfig, etcdctl's client certificate).
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// etcdctl's TLS flags for this cluster (`--cacert --cert --key`).
    pub fn etcdctl_tls(&self) -> Vec<String> {
        let pki = self.pki();
        vec![
            format!("--cacert={}", pki.join("ca.crt").display()),
            format!("--cert={}", pki.join("etcd-client.crt").display()),
            format!("--key={}", pki.join("etcd-client.key").display()),
        ]
    }

    /// Run the real etcdctl against every master, with the client
    /// certificate; returns (success, stdout, stderr).
    pub fn etcdctl(&self, args: &[&str]) -> (bool, String, String) {
        let tls = self.etcdctl_tls();
        let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        etcdctl(&self.endpoints(), &all)
    }

    /// A lazily connecting gRPC channel to master `i`'s etcd API, with the
    /// etcd client certificate.
    pub fn channel(&self, i: usize) -> Channel {
        self.channel_to(Endpoint::from_shared(self.endpoint(i)).expect("url"))
    }

    /// [`Cluster::channel`] for an endpoint configured by the caller.
    pub fn channel_to(&self, endpoint: Endpoint) -> Channel {
        let pki = self.pki();
        let config = raft_store::network::tls::client_config(
            &pki.join("ca.crt"),
            &pki.join("etcd-client.crt"),
            &pki.join("etcd-client.key"),
        )
        .expect("etcd client TLS configuration");
        let connector = raft_store::network::tls::Connector::new(std::sync::Arc::new(config));
        raft_store::network::tls::channel(endpoint, Some(&connector)).expect("channel")
    }

    pub fn api_url(&self, i: usize) -> String {
        format!("https://{}:6443", self.masters[i].api_ip)
    }

    /// A kubeconfig file for the admin against master `i`.
    pub fn kubeconfig(&self, i: usize) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{i}"));
        let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .args(["kubeconfig", "--pki-dir"])
            .arg(self.dir.path().join("pki"))
            .args(["--server", &self.api_url(i)])
            .output()
            .expect("control-plane kubeconfig");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&path, &out.stdout).expect("writing kubeconfig");
        path
    }

    /// A kubeconfig against master 0 for `user` in `groups`, with a
    /// certificate from the cluster CA.
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> PathBuf {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_control-plane"));
        cmd.args(["kubeconfig", "--pki-dir"])
            .arg(self.dir.path().join("pki"))
            .args(["--server", &self.api_url(0), "--user", user]);
        for g in groups {
            cmd.args(["--group", g]);
        }
        let out = cmd.output().expect("control-plane kubeconfig");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.dir.path().join(format!("kubeconfig-{user}"));
        std::fs::write(&path, &out.stdout).expect("writing kubeconfig");
        path
    }

    pub fn metrics_url(&self, i: usize) -> String {
        format!("http://{}:2381/metrics", self.masters[i].ip)
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.masters[i].log).unwrap_or_default()
    }

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        // Lazy: connects (and reconnects) on use, so it works across restarts.
        KvClient::new(self.channel(i)).max_decoding_message_size(64 << 20)
    }

    pub async fn status(&self, i: usize) -> Option<proto::etcd::StatusResponse> {
        let ch = self.channel_to(
            Endpoint::from_shared(self.endpoint(i))
                .ok()?
                .connect_timeout(Duration::from_millis(300)),
        );
        let mut m = MaintenanceClient::new(ch);
        tokio::time::timeout(Duration::from_secs(1), m.status(StatusRequest {}))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }

    /// Index of the master that every running master agrees is leader.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            let mut ids = Vec::new();
            for (i, m) in self.masters.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                if let Some(s) = self.status(i).await {
                    leaders.push(s.leader);
                    ids.push((i, s.header.map(|h| h.member_id).unwrap_or(0)));
                } else {
                    leaders.push(0);
                }
            }
            if let Some(&l) = leaders.first() {
                if l != 0 && leaders.iter().all(|x| *x == l) {
                    if let Some((i, _)) = ids.iter().find(|(_, id)| *id == l) {
                        return *i;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("no leader within {within:?}; log of m1:\n{}", self.log(0));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.masters.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            print_log_tails(self.dir.path());
        }
        unmount_under(self.dir.path());
    }
}

/// Unmount what agents mounted under `dir` (pods' secret and token
/// volumes are tmpfs mounts), so that the directory can be removed.
pub fn unmount_under(dir: &std::path::Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| std::path::Path::new(m).starts_with(dir))
        .collect();
    under.sort_by(|a, b| b.cmp(a));
    for m in under {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
}

/// On a failed test, the last lines of every process's log (masters and
/// agents), so that CI output says what the processes saw.
fn print_log_tails(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for path in logs {
        let text = strip_ansi(&std::fs::read_to_string(&path).unwrap_or_default());
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
            .collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        eprintln!("---- {} (last {} lines) ----", path.display(), tail.len());
        for line in tail {
            eprintln!("{line}");
        }
    }
}

/// Put with retries across failovers; returns the revision once acknowledged.
pub async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> Result<i64, tonic::Status> {
    let req = PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    };
    kv.put(req)
        .await
        .map(|r| r.into_inner().header.map(|h| h.revision).unwrap_or(0))
}

pub async fn get(kv: &mut KvClient<Channel>, key: &str) -> Option<Vec<u8>> {
    let req = RangeRequest {
        key: key.into(),
        ..Default::default()
    };
    kv.range(req)
        .await
        .ok()?
        .into_inner()
        .kvs
        .pop()
        .map(|kv| kv.value)
}

pub fn etcdctl(endpoints: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .output()
        .expect("running etcdctl (apt-get install etcd-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run the real kubectl with `kubeconfig`; returns (success, stdout, stderr).
pub fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    kubectl_stdin(kubeconfig, args, None)
}

pub fn kubectl_stdin(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let cache = kubeconfig.with_extension("cache");
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("kubectl stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Poll `f` every 200 ms until it gives a value; fail after `within`.
pub async fn eventually<F, Fut, T>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The text without terminal colour sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
