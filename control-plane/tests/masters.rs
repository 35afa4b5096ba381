//! Masters as an operator adds and removes them, kubeadm's way, with real
//! processes, the real etcdctl and the real kubectl: `init` on the first,
//! `join --control-plane` with the printed token, CA hash and certificate
//! key on the others, `leave` to take one out.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{eventually, kubectl};

const BIN: &str = env!("CARGO_BIN_EXE_control-plane");

struct Host {
    name: String,
    ip: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Host {
    fn new(root: &Path, base: &str, i: usize) -> Host {
        let name = format!("m{i}");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        Host {
            name,
            ip: format!("{base}.{i}"),
            dir,
            child: None,
        }
    }

    fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// The flags every master takes: its name, directories and addresses.
    fn flags(&self) -> Vec<String> {
        let ip = &self.ip;
        [
            "--name",
            &self.name,
            "--pki-dir",
            &self.pki().display().to_string(),
            "--data-dir",
            &self.dir.join("data").display().to_string(),
            "--listen-client",
            &format!("{ip}:2379"),
            "--listen-peer",
            &format!("{ip}:2380"),
            "--listen-metrics",
            &format!("{ip}:2381"),
            "--listen-api",
            &format!("{ip}:6443"),
            "--listen-agents",
            &format!("{ip}:6444"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn start(&mut self, verb: &[&str]) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout"))
            .unwrap();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(verb)
            .args(self.flags())
            .env("RUST_LOG", "info")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting control-plane");
        self.child = Some(child);
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The exit status, once the process has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok()?
    }

    fn endpoint(&self) -> String {
        format!("https://{}:2379", self.ip)
    }

    fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("kubeconfig");
        let out = Command::new(BIN)
            .args(["kubeconfig", "--pki-dir"])
            .arg(self.pki())
            .args(["--server", &format!("https://{}:6443", self.ip)])
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcdctl with the first master's etcd client certificate.
fn etcdctl(pki: &Path, endpoints: &str, args: &[&str]) -> (bool, String, String) {
    let tls = [
        format!("--cacert={}", pki.join("ca.crt").display()),
        format!("--cert={}", pki.join("etcd-client.crt").display()),
        format!("--key={}", pki.join("etcd-client.key").display()),
    ];
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    common::etcdctl(endpoints, &all)
}

/// Members as `etcdctl member list` prints them: (name, is learner).
fn members(pki: &Path, endpoint: &str) -> Option<Vec<(String, bool)>> {
    let (ok, out, _) = etcdctl(pki, endpoint, &["member", "list"]);
    ok.then(|| {
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(", ").collect();
                (f.len() >= 6).then(|| (f[2].to_string(), f[5].trim() == "true"))
            })
            .collect()
    })
}

/// The value after `flag` in the join command `init` printed.
fn flag_value(text: &str, flag: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| *w == flag)
        .unwrap_or_else(|| panic!("no {flag} in:\n{text}"));
    words[i + 1].to_string()
}

struct JoinCommand {
    server: String,
    token: String,
    hash: String,
    key: String,
}

impl JoinCommand {
    fn args(&self, key: &str) -> Vec<String> {
        [
            "join",
            &self.server,
            "--token",
            &self.token,
            "--discovery-token-ca-cert-hash",
            &self.hash,
            "--control-plane",
            "--certificate-key",
            key,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_init_join_and_leave_as_with_kubeadm() {
    let root = tempfile::tempdir().unwrap();
    let base = format!("127.{}.250", 20 + std::process::id() % 200);
    let mut hosts: Vec<Host> = (1..=4).map(|i| Host::new(root.path(), &base, i)).collect();

    // The first master: init serves and prints the join commands.
    let started = Instant::now();
    hosts[0].start(&["init"]);
    let printed = eventually(
        "init to print the join commands",
        Duration::from_secs(60),
        || {
            let out = hosts[0].stdout();
            async move { out.contains("--certificate-key").then_some(out) }
        },
    )
    .await;
    println!(
        "init printed its join commands after {:?}",
        started.elapsed()
    );
    let join = JoinCommand {
        server: flag_value(&printed, "join"),
        token: flag_value(&printed, "--token"),
        hash: flag_value(&printed, "--discovery-token-ca-cert-hash"),
        key: flag_value(&printed, "--certificate-key"),
    };
    assert_eq!(join.server, format!("{}:6444", hosts[0].ip));
    assert!(printed.contains(&format!("node-agent join --server {}", join.server)));
    let pki = hosts[0].pki();
    let admin = pki.join("admin.kubeconfig");
    let (ok, _, err) = kubectl(
        &admin,
        &["create", "configmap", "before", "--from-literal=k=v"],
    );
    assert!(ok, "{err}");

    // A wrong certificate key opens nothing and adds no member.
    let wrong: String = join.key.chars().rev().collect();
    let out = Command::new(BIN)
        .args(join.args(&wrong))
        .args(hosts[1].flags())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("do not open with this certificate key"),
        "{err}"
    );
    assert_eq!(members(&pki, &hosts[0].endpoint()).unwrap().len(), 1);
    // Nor does a wrong CA hash: the joiner refuses the master.
    let mut bad_hash = join.args(&join.key);
    bad_hash[5] = format!("sha256:{}", "0".repeat(64));
    let out = Command::new(BIN)
        .args(&bad_hash)
        .args(hosts[1].flags())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to trust it"));
    std::fs::remove_dir_all(hosts[1].dir.join("data")).ok();
    std::fs::remove_dir_all(hosts[1].pki()).ok();

    // Two more masters join; each is a voter once caught up.
    for i in 1..=2 {
        let args = join.args(&join.key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t = Instant::now();
        hosts[i].start(&args);
        let name = hosts[i].name.clone();
        eventually(&format!("{name} a voter"), Duration::from_secs(60), || {
            let m = members(&pki, &hosts[0].endpoint());
            let name = name.clone();
            async move {
                m.filter(|m| m.iter().any(|(n, learner)| *n == name && !learner))
                    .map(|_| ())
            }
        })
        .await;
        println!("{name} joined and was promoted in {:?}", t.elapsed());
    }
    let list = members(&pki, &hosts[0].endpoint()).unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    // The joined masters serve the API with the cluster's data.
    let kc = hosts[2].kubeconfig();
    let (ok, out, err) = kubectl(
        &kc,
        &["get", "configmap", "before", "-o", "jsonpath={.data.k}"],
    );
    assert!(ok && out == "v", "{out} {err}");

    // m3 leaves: it exits, and the others list two.
    let out = Command::new(BIN)
        .args(["leave", "--name", "m3", "--pki-dir"])
        .arg(&pki)
        .args(["--endpoints", &hosts[0].endpoint()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = hosts[2].exited() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let log = hosts[2].log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let others: Vec<String> = hosts[..2]
                .iter()
                .flat_map(|h| {
                    h.log()
                        .lines()
                        .filter(|l| l.contains("removed") || l.contains("membership"))
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!(
                "m3 did not exit within 30 s of leaving; its last lines (newest first): \
                 {tail:#?}\nm1 and m2 on removal: {others:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        status.success(),
        "a removed master exits cleanly: {status:?}"
    );
    assert!(
        hosts[2].log().contains("removed from the cluster"),
        "{}",
        hosts[2].log()
    );
    let list = members(&pki, &hosts[0].endpoint()).unwrap();
    assert_eq!(list.len(), 2, "{list:?}");

    // A fourth joins with the same token and key; then the first dies and
    // the others go on.
    let args = join.args(&join.key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    hosts[3].start(&args);
    eventually("m4 a voter", Duration::from_secs(60), || {
        let m = members(&pki, &hosts[0].endpoint());
        async move {
            m.filter(|m| m.len() == 3 && m.iter().all(|(_, learner)| !learner))
                .map(|_| ())
        }
    })
    .await;
    hosts[0].kill();
    let kc = hosts[3].kubeconfig();
    eventually(
        "the API through m4 with m1 down",
        Duration::from_secs(30),
        || {
            let r = kubectl(&kc, &["create", "configmap", "after", "--from-literal=k=w"]);
            async move { r.0.then_some(()) }
        },
    )
    .await;
    let (ok, out, _) = kubectl(
        &hosts[1].kubeconfig(),
        &["get", "configmap", "after", "-o", "jsonpath={.data.k}"],
    );
    assert!(ok && out == "w", "{out}");
}
