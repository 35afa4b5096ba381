//! `skiff-bench pods`: pod startup through the whole system. Creates N pods
//! (the local busybox image, 10 creates in flight) against a running cluster
//! with a node agent, and times each from its create to Running and to
//! Ready as a watch sees them; then runs the same image N times with
//! `docker run` on the same engine (the floor: no API, no scheduler, no
//! agent), alone and as a pod runs it (a sandbox, then the app joined to its
//! network), and prints both with the ratio. With `--agent-pid`, also the
//! agent's resident memory while the pods run.

use crate::percentile;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::api::{create_namespace, delete_all, https_client, list_revision};

const NAMESPACE: &str = "bench-pods";
const IN_FLIGHT: usize = 10;

pub struct Options {
    pub kubeconfig: std::path::PathBuf,
    pub server: String,
    pub count: usize,
    pub image: String,
    /// The agent's sandbox image, for the sandbox + app floor.
    pub sandbox_image: String,
    pub agent_pid: Option<u32>,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let http = https_client(&opts.kubeconfig)?;
    let server = opts.server.trim_end_matches('/').to_string();
    create_namespace(&http, &server, NAMESPACE).await?;
    let pods_url = format!("{server}/api/v1/namespaces/{NAMESPACE}/pods");
    let rv = list_revision(&http, &pods_url).await?;

    // The watch: when each pod was first seen Running, and Ready.
    let resp = http
        .get(format!("{pods_url}?watch=true&resourceVersion={rv}"))
        .send()
        .await?
        .error_for_status()?;
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(String, bool, Instant)>();
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let Ok(e) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let o = &e["object"];
                let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                let now = Instant::now();
                if o["status"]["phase"] == "Running" {
                    let _ = tx.send((name.clone(), false, now));
                }
                let ready = o["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if ready {
                    let _ = tx.send((name, true, now));
                }
            }
        }
    });

    let run_id = std::process::id();
    let names: Vec<String> = (0..opts.count).map(|i| format!("p{run_id}-{i}")).collect();
    let started = Instant::now();
    let created: Vec<(String, Instant)> = futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let http = http.clone();
            let url = pods_url.clone();
            let image = opts.image.clone();
            async move {
                let body = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name},
                    "spec": {
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "app", "image": image, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}],
                    },
                });
                let at = Instant::now();
                let r = http.post(&url).json(&body).send().await;
                match r {
                    Ok(r) if r.status().is_success() => Ok((name, at)),
                    Ok(r) => Err(anyhow::anyhow!("creating {name}: {}", r.status())),
                    Err(e) => Err(anyhow::anyhow!("creating {name}: {e}")),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let created: HashMap<String, Instant> = created.into_iter().collect();

    let mut running: HashMap<String, Instant> = HashMap::new();
    let mut ready: HashMap<String, Instant> = HashMap::new();
    let deadline = started + Duration::from_secs(180);
    while ready.len() < opts.count {
        let next = tokio::time::timeout_at(deadline.into(), seen.recv()).await;
        let Ok(Some((name, is_ready, at))) = next else {
            bail!(
                "only {} of {} pods became Ready within 180 s",
                ready.len(),
                opts.count
            );
        };
        if !created.contains_key(&name) {
            continue;
        }
        let map = if is_ready { &mut ready } else { &mut running };
        map.entry(name).or_insert(at);
    }
    let rss = opts.agent_pid.and_then(rss_kib);
    let all_ready = ready
        .values()
        .max()
        .map_or(Duration::ZERO, |t| t.duration_since(started));
    let lat = |m: &HashMap<String, Instant>| {
        let mut v: Vec<Duration> = m
            .iter()
            .filter_map(|(n, t)| Some(t.saturating_duration_since(*created.get(n)?)))
            .collect();
        v.sort();
        v
    };
    let (to_running, to_ready) = (lat(&running), lat(&ready));
    delete_all(
        &http,
        names
            .iter()
            .map(|n| format!("{pods_url}/{n}?gracePeriodSeconds=0")),
    )
    .await;

    // The floors: the same image started by docker run, as many, as many
    // at once; and as a pod runs it, a sandbox and the app in its network.
    let floor_started = Instant::now();
    let docker = docker_floor(&opts, &format!("bench-floor-{run_id}"), None).await?;
    let docker_all = floor_started.elapsed();
    let pairs_started = Instant::now();
    let pairs = docker_floor(
        &opts,
        &format!("bench-pair-{run_id}"),
        Some(&opts.sandbox_image),
    )
    .await?;
    let pairs_all = pairs_started.elapsed();

    println!(
        "Pod startup: {} pods of {}, {IN_FLIGHT} creates in flight (ms, from create)",
        opts.count, opts.image
    );
    println!("{:<28}{:>10}{:>10}{:>10}", "", "p50", "p99", "max");
    let row = |label: &str, v: &[Duration]| {
        println!(
            "{label:<28}{:>10.0}{:>10.0}{:>10.0}",
            percentile(v, 50),
            percentile(v, 99),
            v.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
        )
    };
    row("skiff: created -> Running", &to_running);
    row("skiff: created -> Ready", &to_ready);
    row("docker run (the floor)", &docker);
    row("docker run sandbox + app", &pairs);
    println!(
        "p99 Ready / p99 docker run: {:.2}; p99 Ready / p99 sandbox + app: {:.2} (Kubernetes' SLO: p99 5 s; target: p99 under 1.5 s)",
        percentile(&to_ready, 99) / percentile(&docker, 99).max(1e-9),
        percentile(&to_ready, 99) / percentile(&pairs, 99).max(1e-9)
    );
    println!(
        "all {} started after: skiff {:.1} s (Ready), docker run {:.1} s, sandbox + app {:.1} s: ratio {:.2} to the pairs",
        opts.count,
        all_ready.as_secs_f64(),
        docker_all.as_secs_f64(),
        pairs_all.as_secs_f64(),
        all_ready.as_secs_f64() / pairs_all.as_secs_f64().max(1e-9)
    );
    if let Some(kib) = rss {
        println!(
            "agent resident memory with {} pods running: {:.1} MiB (target: under 30 MiB with 30 pods)",
            opts.count,
            kib as f64 / 1024.0
        );
    }
    Ok(())
}

async fn docker(args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Start `opts.count` containers of the image with `docker run`,
/// `IN_FLIGHT` at a time (each after a sandbox of its own, joined to its
/// network, when `sandbox` names the sandbox image): how long each took.
/// They are removed afterwards.
async fn docker_floor(
    opts: &Options,
    prefix: &str,
    sandbox: Option<&str>,
) -> anyhow::Result<Vec<Duration>> {
    let mut took: Vec<Duration> = futures::stream::iter(0..opts.count)
        .map(|i| async move {
            let name = format!("{prefix}-{i}");
            let at = Instant::now();
            let mut args = vec!["run", "-d", "--name", &name];
            let sandbox_name = format!("{name}-sandbox");
            let network = format!("container:{sandbox_name}");
            if let Some(image) = sandbox {
                docker(&["run", "-d", "--name", &sandbox_name, image]).await?;
                args.extend(["--network", &network]);
            }
            args.extend([opts.image.as_str(), "sleep", "3600"]);
            docker(&args).await?;
            Ok(at.elapsed())
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<anyhow::Result<Duration>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    took.sort();
    let _ = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker rm -f $(docker ps -aq --filter name={prefix}-) >/dev/null"
        ))
        .status()
        .await;
    Ok(took)
}
