//! `skiff-bench heartbeats`: what node heartbeats cost the masters. Each
//! fake node renews its Lease in kube-node-lease every 10 s (the kubelet's
//! and our agent's interval), the renewals spread evenly over the interval.
//! The masters' CPU time (from /proc) is measured over the same span idle
//! and with the heartbeats, and the renewals' latency is recorded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use super::masters::{self, Proc};

const INTERVAL: Duration = Duration::from_secs(10);
const LEASES: &str = "apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// CPU time each master used while `f` ran, and how long it ran.
async fn cpu_during<F: std::future::Future<Output = ()>>(
    procs: &[Proc],
    f: F,
) -> (Vec<Duration>, Duration) {
    let before: Vec<Duration> = procs
        .iter()
        .map(|p| p.cpu_time().unwrap_or_default())
        .collect();
    let t0 = Instant::now();
    f.await;
    let spent = t0.elapsed();
    let used = procs
        .iter()
        .zip(before)
        .map(|(p, b)| p.cpu_time().unwrap_or_default().saturating_sub(b))
        .collect();
    (used, spent)
}

fn percent(used: &[Duration], over: Duration) -> String {
    let each: Vec<String> = used
        .iter()
        .map(|u| format!("{:.1}%", 100.0 * u.as_secs_f64() / over.as_secs_f64()))
        .collect();
    each.join(" ")
}

pub async fn run(
    kubeconfig: &std::path::Path,
    servers: &[String],
    nodes: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let http = super::api::https_client(kubeconfig)?;
    let procs = masters::serving_api(servers);
    anyhow::ensure!(!procs.is_empty(), "no master process serves {servers:?}");
    let name = |i: usize| format!("bench-heartbeat-{i}");
    let created = futures::stream::iter(0..nodes)
        .map(|i| {
            let (http, server) = (http.clone(), servers[i % servers.len()].clone());
            async move {
                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name(i)},
                    "spec": {"holderIdentity": name(i), "leaseDurationSeconds": 40, "renewTime": now()}});
                let r = http.post(format!("{server}/{LEASES}")).json(&lease).send().await;
                r.is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 409)
            }
        })
        .buffer_unordered(32)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    anyhow::ensure!(created == nodes, "only {created} of {nodes} leases created");
    println!(
        "{nodes} node leases, each renewed every {} s ({:.0} renewals/s), for {} s; masters: {} processes",
        INTERVAL.as_secs(),
        nodes as f64 / INTERVAL.as_secs_f64(),
        duration.as_secs(),
        procs.len()
    );

    let (idle, idle_for) = cpu_during(&procs, tokio::time::sleep(duration)).await;

    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let beats = async {
        let gap = INTERVAL / nodes.max(1) as u32;
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        let mut k = 0usize;
        while start.elapsed() < duration {
            tokio::time::sleep_until(start + gap * k as u32).await;
            let i = k % nodes;
            let (http, server) = (http.clone(), servers[k % servers.len()].clone());
            let (latencies, failed) = (latencies.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let patch = json!({"spec": {"renewTime": now()}});
                let ok = http
                    .patch(format!("{server}/{LEASES}/{}", name(i)))
                    .header("content-type", "application/merge-patch+json")
                    .body(patch.to_string())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    latencies.lock().expect("latencies").push(t.elapsed());
                } else {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
            k += 1;
        }
        for t in tasks {
            let _ = t.await;
        }
    };
    let (busy, busy_for) = cpu_during(&procs, beats).await;

    let mut lat = latencies.lock().expect("latencies").clone();
    lat.sort();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!("masters CPU idle:            {}", percent(&idle, idle_for));
    println!("masters CPU with heartbeats: {}", percent(&busy, busy_for));
    let extra: f64 = busy
        .iter()
        .map(|d| d.as_secs_f64() / busy_for.as_secs_f64())
        .sum::<f64>()
        - idle
            .iter()
            .map(|d| d.as_secs_f64() / idle_for.as_secs_f64())
            .sum::<f64>();
    println!(
        "renewals: ok={} failed={} p50_ms={:.1} p99_ms={:.1}; heartbeats cost {:.1}% of one core over all masters ({:.2}% per 100 nodes)",
        lat.len(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        extra * 100.0,
        extra * 100.0 * 100.0 / nodes as f64
    );

    let leases = (0..nodes).map(|i| format!("{}/{LEASES}/{}", servers[0], name(i)));
    super::api::delete_all(&http, leases).await;
    Ok(())
}
