//! `skiff-bench proxy`: how long the agent's proxy takes to program
//! Services in nftables, beside `iptables-restore` of the rules kube-proxy's
//! iptables mode writes for the same Services, in the same run; and what a
//! connection through a virtual IP costs beside one straight to the
//! endpoint.
//!
//! It runs in a network namespace of its own (it makes one and runs itself
//! again inside it), so nothing on this host is touched. For each size:
//! - a full sync: the whole table from nothing (ours: one netlink
//!   transaction; iptables: one `iptables-restore` of the nat table);
//! - one endpoint change: ours writes only the difference; kube-proxy's
//!   iptables mode before 1.27 restored every chain of its own on every
//!   change, and from 1.27 (MinimizeIPTablesRestore) only the changed
//!   chains, but KUBE-SERVICES (one rule per Service) in full: both shown.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use node_agent::proxy::model::{Endpoint, Protocol, ServicePort};
use node_agent::proxy::{netlink, table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::percentile;

pub struct Options {
    /// The peer: iptables-restore, iptables-legacy-restore, ...
    pub iptables_restore: String,
    /// A peer run taking longer is stopped and reported as more than this.
    pub peer_cap: Duration,
    pub sizes: Vec<usize>,
    pub endpoints: usize,
    pub rounds: usize,
    pub connections: usize,
}

const INSIDE: &str = "SKIFF_BENCH_NETNS";
const TABLE: &str = "skiff-bench";
const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Where the latency server listens (a device in the namespace).
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const SERVER_PORT: u16 = 8080;

/// Make a namespace, run this same command inside it, remove it.
pub async fn run(opts: &Options) -> anyhow::Result<()> {
    if std::env::var_os(INSIDE).is_some() {
        return inside(opts).await;
    }
    let args: Vec<String> = std::env::args().collect();
    let ns = format!("skbench{}", std::process::id());
    let status = Command::new("ip").args(["netns", "add", &ns]).status()?;
    anyhow::ensure!(status.success(), "ip netns add {ns} (root is needed)");
    let exe = std::env::current_exe()?;
    let result = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .arg(&exe)
        .args(&args[1..])
        .env(INSIDE, &ns)
        .status();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    anyhow::ensure!(result?.success(), "the benchmark failed inside {ns}");
    Ok(())
}

fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn ip_of(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(n)
}

/// `n` Services of `e` endpoints each (plus, first, the latency target).
fn services(n: usize, e: usize) -> Vec<ServicePort> {
    let vip_base = u32::from(Ipv4Addr::new(10, 96, 0, 0));
    let pod_base = u32::from(Ipv4Addr::new(10, 244, 0, 0));
    let mut out = vec![ServicePort {
        namespace: "bench".into(),
        name: "target".into(),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        cluster_ip: Some(Ipv4Addr::new(10, 111, 255, 254)),
        external_ips: vec![],
        node_port: None,
        affinity: None,
        local_external: false,
        endpoints: vec![Endpoint {
            ip: SERVER,
            port: SERVER_PORT,
            local: true,
        }],
    }];
    for i in 0..n as u32 {
        out.push(ServicePort {
            namespace: "bench".into(),
            name: format!("svc-{i}"),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            cluster_ip: Some(ip_of(vip_base + 1 + i)),
            external_ips: vec![],
            node_port: None,
            affinity: None,
            local_external: false,
            endpoints: (0..e as u32)
                .map(|j| Endpoint {
                    ip: ip_of(pod_base + 1 + i * e as u32 + j),
                    port: 8080,
                    local: false,
                })
                .collect(),
        });
    }
    out
}

fn chain_hash(s: &str) -> String {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    format!("{:016X}", h.finish())
}

/// kube-proxy iptables-mode rules for `ports`: the KUBE-SERVICES chain,
/// and a KUBE-SVC chain and KUBE-SEP chains per port. `only` limits the
/// SVC/SEP chains written to those ports (the minimized restore); the
/// KUBE-SERVICES chain is always written whole.
fn iptables_rules(ports: &[ServicePort], only: Option<&[usize]>, base: bool) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    chains.push_str(":KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n");
    if base {
        rules.push_str(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        );
        rules.push_str(
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        );
        rules.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    }
    rules.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    rules.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    rules.push_str("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n");
    rules.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    for (i, sp) in ports.iter().enumerate() {
        let id = sp.id();
        let svc = format!("KUBE-SVC-{}", chain_hash(&id));
        let vip = sp.cluster_ip.expect("a cluster IP");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{id} cluster IP\" -d {vip}/32 -p tcp -m tcp --dport {} -j {svc}",
            sp.port
        );
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A {svc} -m comment --comment \"{id} cluster IP\" ! -s {CLUSTER_CIDR} -d {vip}/32 -p tcp -m tcp --dport {} -j KUBE-MARK-MASQ",
            sp.port
        );
        let n = sp.endpoints.len();
        for (k, e) in sp.endpoints.iter().enumerate() {
            let sep = format!(
                "KUBE-SEP-{}",
                chain_hash(&format!("{id}/{}:{}", e.ip, e.port))
            );
            let _ = writeln!(chains, ":{sep} - [0:0]");
            if k + 1 < n {
                let p = 1.0 / (n - k) as f64;
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{id} -> {}:{}\" -m statistic --mode random --probability {p:.11} -j {sep}",
                    e.ip, e.port
                );
            } else {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{id} -> {}:{}\" -j {sep}",
                    e.ip, e.port
                );
            }
            let _ = writeln!(
                rules,
                "-A {sep} -m comment --comment \"{id}\" -s {}/32 -j KUBE-MARK-MASQ",
                e.ip
            );
            let _ = writeln!(
                rules,
                "-A {sep} -m comment --comment \"{id}\" -m tcp -p tcp -j DNAT --to-destination {}:{}",
                e.ip, e.port
            );
        }
    }
    format!("*nat\n{chains}{rules}COMMIT\n")
}

/// One `iptables-restore` run; None if it ran past the cap (stopped).
fn iptables_restore(opts: &Options, text: &str, noflush: bool) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    let mut cmd = Command::new(&opts.iptables_restore);
    if noflush {
        cmd.arg("--noflush");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} (package iptables)", opts.iptables_restore))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())?;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > opts.peer_cap {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            opts.iptables_restore,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(Some(started.elapsed()))
}

/// Time `rounds` peer runs; stop at the first past the cap.
fn peer_rounds(
    opts: &Options,
    mut each: impl FnMut(usize) -> anyhow::Result<Option<Duration>>,
) -> anyhow::Result<Vec<Option<Duration>>> {
    let mut out = Vec::new();
    for r in 0..opts.rounds {
        let t = each(r)?;
        out.push(t);
        if t.is_none() {
            break;
        }
    }
    Ok(out)
}

/// Change one endpoint of port `i` (a pod replaced by another).
fn change_endpoint(ports: &mut [ServicePort], i: usize, round: usize) {
    let e = &mut ports[i].endpoints[0];
    e.ip = Ipv4Addr::new(10, 245, (round / 250) as u8, (round % 250) as u8 + 1);
}

/// Print one line; its p50 in ms (None: a run went past the cap).
fn line(what: &str, times: &[Option<Duration>], cap: Duration) -> Option<f64> {
    if times.iter().any(Option::is_none) {
        println!(
            "  {what:<58} more than {:.0} s (stopped)",
            cap.as_secs_f64()
        );
        return None;
    }
    let mut times: Vec<Duration> = times.iter().flatten().copied().collect();
    times.sort();
    let p50 = percentile(&times, 50);
    println!(
        "  {what:<58} p50 {p50:>9.1} ms  max {:>9.1} ms",
        percentile(&times, 100)
    );
    Some(p50)
}

fn ratio(peer: Option<f64>, ours: Option<f64>, cap: Duration) -> String {
    match (peer, ours) {
        (Some(p), Some(o)) => format!("{:.1}x", p / o),
        (None, Some(o)) => format!("more than {:.0}x", cap.as_secs_f64() * 1e3 / o),
        _ => "-".into(),
    }
}

async fn inside(opts: &Options) -> anyhow::Result<()> {
    sh("ip", &["link", "set", "lo", "up"])?;
    // A veth pair (this kernel has no dummy devices) holds the address.
    sh(
        "ip",
        &[
            "link", "add", "bench0", "type", "veth", "peer", "name", "bench1",
        ],
    )?;
    sh(
        "ip",
        &["addr", "add", &format!("{SERVER}/32"), "dev", "bench0"],
    )?;
    sh("ip", &["link", "set", "bench0", "up"])?;
    sh("ip", &["link", "set", "bench1", "up"])?;
    sh("ip", &["route", "add", "default", "dev", "bench0"])?;
    let settings = table::Settings {
        table: TABLE.into(),
        cluster_cidr: CLUSTER_CIDR.parse()?,
    };
    println!(
        "Service rule programming: {} endpoints per Service, {} rounds each (in a network namespace of its own)",
        opts.endpoints, opts.rounds
    );
    for &n in &opts.sizes {
        let mut ports = services(n, opts.endpoints);
        println!("{n} Services:");
        // Ours: the whole table.
        let mut ours_full = Vec::new();
        let mut sample = table::Table::new(settings.clone());
        for _ in 0..opts.rounds {
            sample.reset();
            let started = Instant::now();
            netlink::apply(sample.sync(&ports)).await?;
            ours_full.push(Some(started.elapsed()));
        }
        // Ours: one endpoint change.
        let mut ours_change = Vec::new();
        for r in 0..opts.rounds {
            let i = 1 + (r * 7919) % n;
            change_endpoint(&mut ports, i, r);
            let started = Instant::now();
            netlink::apply(sample.sync(&ports)).await?;
            ours_change.push(Some(started.elapsed()));
        }
        sh("nft", &["delete", "table", "ip", TABLE])?;
        // The peer: the whole nat table, then a change restored whole (as
        // kube-proxy before 1.27) and minimized (1.27 and later).
        let ipt_full = peer_rounds(opts, |_| {
            let started = Instant::now();
            let text = iptables_rules(&ports, None, true);
            Ok(iptables_restore(opts, &text, false)?.map(|_| started.elapsed()))
        })?;
        let full_ok = ipt_full.iter().all(Option::is_some);
        let mut ipt_change = Vec::new();
        let mut ipt_min = Vec::new();
        if full_ok {
            let mut round = opts.rounds;
            ipt_change = peer_rounds(opts, |r| {
                let i = 1 + (r * 7919 + 13) % n;
                round += 1;
                change_endpoint(&mut ports, i, round);
                let started = Instant::now();
                let text = iptables_rules(&ports, None, false);
                Ok(iptables_restore(opts, &text, true)?.map(|_| started.elapsed()))
            })?;
            ipt_min = peer_rounds(opts, |r| {
                let i = 1 + (r * 7919 + 29) % n;
                round += 1;
                change_endpoint(&mut ports, i, round);
                let started = Instant::now();
                let text = iptables_rules(&ports, Some(&[i]), false);
                Ok(iptables_restore(opts, &text, true)?.map(|_| started.elapsed()))
            })?;
        }
        let rules: usize = iptables_rules(&ports, None, true)
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count();
        println!(
            "  (ours: {} chains, {} rules, {} map elements; {}: {rules} rules)",
            sample.chains(),
            sample.rules(),
            sample.elements(),
            opts.iptables_restore
        );
        let cap = opts.peer_cap;
        let peer = &opts.iptables_restore;
        let a = line(
            "skiff full sync (netlink, one transaction)",
            &ours_full,
            cap,
        );
        let b = line(&format!("{peer} full sync"), &ipt_full, cap);
        let c = line(
            "skiff one endpoint change (only the difference)",
            &ours_change,
            cap,
        );
        let (d, e) = if full_ok {
            (
                line(
                    &format!("{peer}, one change, all chains (< 1.27)"),
                    &ipt_change,
                    cap,
                ),
                line(
                    &format!("{peer}, one change, minimized (>= 1.27)"),
                    &ipt_min,
                    cap,
                ),
            )
        } else {
            println!("  (no change timed for {peer}: its full sync did not finish)");
            (None, None)
        };
        println!(
            "  ratio {peer}/skiff at p50: full sync {}; one change {} (all chains), {} (minimized)",
            ratio(b, a, cap),
            ratio(d, c, cap),
            ratio(e, c, cap)
        );
        let verdict = |v: Option<f64>, limit: f64| match v {
            Some(v) if v < limit => "met",
            _ => "missed",
        };
        println!(
            "  targets at this size: one change under 200 ms ({}), full sync under 1 s ({})",
            verdict(c, 200.0),
            verdict(a, 1000.0),
        );
        // Empty the peer's nat table for the next size.
        let _ = iptables_restore(opts, "*nat\nCOMMIT\n", false)?;
    }
    latency(opts, &settings).await
}

/// Connection latency through a virtual IP (10,000 other Services in the
/// table) beside straight to the endpoint.
async fn latency(opts: &Options, settings: &table::Settings) -> anyhow::Result<()> {
    let n = opts.sizes.iter().copied().max().unwrap_or(1000);
    let ports = services(n, opts.endpoints);
    let mut t = table::Table::new(settings.clone());
    netlink::apply(t.sync(&ports)).await?;
    let listener = tokio::net::TcpListener::bind((SERVER, SERVER_PORT)).await?;
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if c.read(&mut buf).await.is_ok() {
                    let _ = c.write_all(b"pong").await;
                }
            });
        }
    });
    let vip = ports[0].cluster_ip.expect("vip");
    println!(
        "Connection latency ({} connections one after another, {n} Services in the table):",
        opts.connections
    );
    let mut out = Vec::new();
    for (what, addr) in [
        ("straight to the endpoint", SERVER),
        ("through the virtual IP", vip),
    ] {
        let port = if addr == SERVER { SERVER_PORT } else { 80 };
        let mut times = Vec::with_capacity(opts.connections);
        for _ in 0..opts.connections {
            let started = Instant::now();
            let mut c = tokio::net::TcpStream::connect((addr, port)).await?;
            c.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await?;
            times.push(started.elapsed());
        }
        times.sort();
        let (p50, p99) = (percentile(&times, 50), percentile(&times, 99));
        println!(
            "  connect + request + reply {what:<26} p50 {:>7.0} us  p99 {:>7.0} us",
            p50 * 1e3,
            p99 * 1e3
        );
        out.push((p50, p99));
    }
    println!(
        "  through the VIP / straight: {:.2} at p50, {:.2} at p99",
        out[1].0 / out[0].0,
        out[1].1 / out[0].1
    );
    sh("nft", &["delete", "table", "ip", TABLE])?;
    Ok(())
}
