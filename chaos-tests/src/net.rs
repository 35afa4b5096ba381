//! The test network: one network namespace per master, all plugged into a
//! bridge that lives in a namespace of its own (the "hub"), so the host's
//! firewall (Docker's FORWARD policy, br_netfilter) never sees the traffic.
//! The harness itself stays in the root namespace and reaches every master
//! through one more veth into the hub.
//!
//! Faults are nftables rules inside the masters' namespaces: dropping what a
//! master receives from chosen peers (partitions, one-way loss) or a random
//! share of it (packet loss). Client traffic from the harness is never cut.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Names every resource of one harness run after its pid, so a run can find
/// and remove what a crashed earlier run left behind.
const PREFIX: &str = "skc";
const TABLE: &str = "skiff_chaos";

pub struct Net {
    tag: String,
    hub: String,
    host_if: String,
    pub gateway: Ipv4Addr,
    subnet: [u8; 3],
    hosts: Vec<Host>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// Run a command; its stderr becomes the error.
pub fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `nft -f -` inside a namespace.
fn nft(ns: &str, script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// Create the hub, the harness's link to it and `n` master namespaces.
    pub fn create(n: usize) -> Result<Net> {
        remove_stale();
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}");
        let subnet = [10, 213, (pid % 250 + 1) as u8];
        let mut net = Net {
            hub: format!("{tag}-hub"),
            host_if: format!("{tag}h"),
            gateway: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 1),
            subnet,
            tag,
            hosts: Vec::new(),
        };
        net.build(n).inspect_err(|_| net.destroy())?;
        Ok(net)
    }

    fn build(&mut self, n: usize) -> Result<()> {
        let hub = self.hub.clone();
        run(&["ip", "netns", "add", &hub])?;
        run(&["ip", "-n", &hub, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        let host_if = self.host_if.clone();
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "host", "netns", &hub,
        ])?;
        run(&[
            "ip", "-n", &hub, "link", "set", "host", "master", "br0", "up",
        ])?;
        let gw = format!("{}/24", self.gateway);
        run(&["ip", "addr", "add", &gw, "dev", &host_if])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        for i in 0..n {
            self.add_host(i)?;
        }
        Ok(())
    }

    fn add_host(&mut self, i: usize) -> Result<()> {
        let ns = format!("{}-m{i}", self.tag);
        let port = format!("m{i}");
        let ip = Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], 10 + i as u8);
        let hub = self.hub.clone();
        run(&["ip", "netns", "add", &ns])?;
        run(&[
            "ip", "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        run(&[
            "ip", "-n", &hub, "link", "set", &port, "master", "br0", "up",
        ])?;
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        nft(
            &ns,
            &format!(
                "table inet {TABLE} {{\n chain input {{ type filter hook input priority 0; policy accept; }}\n}}\n"
            ),
        )?;
        self.hosts.push(Host { ns, ip });
        Ok(())
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Replace every fault rule: master `i` drops what it receives from each
    /// address in `deny[i]`, and (if `loss_percent` > 0) that share of all
    /// traffic from other masters.
    pub fn apply(&self, deny: &[Vec<usize>], loss_percent: u32) -> Result<()> {
        for (i, host) in self.hosts.iter().enumerate() {
            let mut script = format!("flush chain inet {TABLE} input\n");
            for &j in deny.get(i).map(|d| d.as_slice()).unwrap_or(&[]) {
                script += &format!(
                    "add rule inet {TABLE} input ip saddr {} drop\n",
                    self.hosts[j].ip
                );
            }
            if loss_percent > 0 {
                script += &format!(
                    "add rule inet {TABLE} input ip saddr != {} meta l4proto tcp numgen random mod 100 < {loss_percent} drop\n",
                    self.gateway
                );
            }
            nft(&host.ns, &script)?;
        }
        Ok(())
    }

    /// Remove every fault rule.
    pub fn heal(&self) -> Result<()> {
        self.apply(&[], 0)
    }

    pub fn destroy(&self) {
        for h in &self.hosts {
            let _ = run(&["ip", "netns", "del", &h.ns]);
        }
        let _ = run(&["ip", "link", "del", &self.host_if]);
        let _ = run(&["ip", "netns", "del", &self.hub]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Delete namespaces and links left by harness runs whose process is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let list = String::from_utf8_lossy(&out.stdout);
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
                for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = run(&["kill", "-9", p]);
                }
            }
            let _ = run(&["ip", "netns", "del", name]);
            let _ = run(&["ip", "link", "del", &format!("{PREFIX}{pid}h")]);
        }
    }
}
