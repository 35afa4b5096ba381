//! Node hosts for networking tests: each node a host of its own (its own
//! network namespace, address and Docker engine) on a link shared with
//! the masters, made by `deploy/node-host` as the dev cluster makes them.
//! Names and addresses come from this process's id, so that two test
//! binaries never share them; dropping a host or the link removes it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/node-host")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(script())
        .args(args)
        .output()
        .expect("deploy/node-host");
    assert!(
        out.status.success(),
        "deploy/node-host {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `program` run inside node host `name`'s network namespace.
pub fn in_host(name: &str, program: &Path) -> Command {
    let mut c = Command::new(script());
    c.args(["exec", name]).arg(program);
    c
}

/// The link the nodes and masters share: a bridge on this host.
pub struct Lan {
    pub bridge: String,
    /// "10.251.7": the first three octets of its /24.
    pub prefix: String,
}

impl Lan {
    /// A link of this test process's own, with `masters` addresses
    /// (.11, .12, ...) for the masters to listen for agents on.
    pub fn up(tag: &str, masters: usize) -> Lan {
        let id = std::process::id();
        let bridge = format!("sk{tag}{}", id % 100_000);
        let prefix = format!("10.251.{}", id % 250);
        let extra: Vec<String> = (1..=masters)
            .map(|i| format!("{prefix}.{}", 10 + i))
            .collect();
        let mut args = vec!["lan-up", &bridge];
        let cidr = format!("{prefix}.0/24");
        args.push(&cidr);
        args.extend(extra.iter().map(String::as_str));
        run(&args);
        Lan { bridge, prefix }
    }

    pub fn master_ips(&self, n: usize) -> Vec<String> {
        (1..=n)
            .map(|i| format!("{}.{}", self.prefix, 10 + i))
            .collect()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["lan-down", &self.bridge])
            .status();
    }
}

/// One node host: a namespace with an address on the link and its own
/// Docker engine.
pub struct NodeHost {
    pub name: String,
    pub ip: String,
    pub docker_host: String,
    dir: PathBuf,
}

impl NodeHost {
    /// Host number `n` (1..) on `lan`, its engine's files under `dir`.
    pub fn up(lan: &Lan, tag: &str, n: u32, dir: &Path) -> NodeHost {
        let name = format!("h{tag}{}{n}", std::process::id() % 100_000);
        let ip = format!("{}.{}", lan.prefix, 100 + n);
        let dir = dir.join(&name);
        let docker_host = run(&[
            "up",
            &name,
            "--lan",
            &lan.bridge,
            "--address",
            &format!("{ip}/24"),
            "--dir",
            &dir.display().to_string(),
        ]);
        NodeHost {
            name,
            ip,
            docker_host,
            dir,
        }
    }

    /// `program` run in this host's network namespace.
    pub fn command(&self, program: &Path) -> Command {
        in_host(&self.name, program)
    }

    /// Run `args` in this host's namespace: (succeeded, stdout, stderr).
    pub fn exec(&self, args: &[&str]) -> (bool, String, String) {
        let out = in_host(&self.name, Path::new(args[0]))
            .args(&args[1..])
            .output()
            .expect("deploy/node-host exec");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for NodeHost {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["down", &self.name, "--dir"])
            .arg(&self.dir)
            .status();
    }
}
