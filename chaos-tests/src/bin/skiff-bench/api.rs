//! `skiff-bench api`: the Kubernetes API under write load and under many
//! watchers.
//!
//! Writes: each client creates a ConfigMap and then updates it, over and
//! over, through HTTPS against the masters (round-robin), paced to a target
//! rate. The same load (a create-if-absent transaction, then an update
//! guarded by the mod revision) then goes straight to the store through the
//! etcd API, and the ratio of the two is the API's overhead.
//!
//! Watchers: N watches on pods in one namespace, spread over the masters;
//! then pods are written one at a time and, for each, the time until the
//! last watcher has seen it is recorded. Masters' resident memory is read
//! from /proc before and after.

use crate::percentile;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use futures::StreamExt;
use proto::etcd::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcd::kv_client::KvClient;
use proto::etcd::request_op::Request;
use proto::etcd::{Compare, PutRequest, RequestOp, TxnRequest};
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::masters::{self, Proc};

pub struct Options {
    pub kubeconfig: std::path::PathBuf,
    pub servers: Vec<String>,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub rate: u64,
    pub duration: Duration,
    pub watchers: usize,
}

/// An HTTPS client with the kubeconfig's CA and client certificate.
pub(crate) fn https_client(kubeconfig: &std::path::Path) -> anyhow::Result<reqwest::Client> {
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let field = |path: &[&str]| -> anyhow::Result<Vec<u8>> {
        let mut v = &doc;
        for p in path {
            v = match p.parse::<usize>() {
                Ok(i) => &v[i],
                Err(_) => &v[*p],
            };
        }
        let b64 = v
            .as_str()
            .with_context(|| format!("{} has no {}", kubeconfig.display(), path.join(".")))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
    };
    let ca = field(&["clusters", "0", "cluster", "certificate-authority-data"])?;
    let mut identity = field(&["users", "0", "user", "client-certificate-data"])?;
    identity.extend(field(&["users", "0", "user", "client-key-data"])?);
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .identity(reqwest::Identity::from_pem(&identity)?)
        .build()?)
}

struct Figures {
    writes: usize,
    failed: usize,
    /// Failures by reason (HTTP status or gRPC error), most common first.
    reasons: Vec<(String, usize)>,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Figures {
    fn print(&mut self, label: &str) {
        self.latencies.sort();
        println!(
            "{label:<6} writes={} failed={} writes/s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            self.writes,
            self.failed,
            self.writes as f64 / self.secs,
            percentile(&self.latencies, 50),
            percentile(&self.latencies, 99),
            self.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
        for (reason, n) in &self.reasons {
            println!("       failed {n}x: {reason}");
        }
    }

    fn per_sec(&self) -> f64 {
        self.writes as f64 / self.secs
    }
}

/// Run `clients` loops of `op(client, i)` for `duration`, paced to `rate`
/// calls per second overall (0: unpaced).
async fn drive<F, Fut>(clients: usize, rate: u64, duration: Duration, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let interval = (rate > 0).then(|| Duration::from_secs_f64(clients as f64 / rate as f64));
    let failed: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // Clients start spread over one interval.
            let mut next =
                started + interval.map_or(Duration::ZERO, |i| i * c as u32 / clients as u32);
            let mut i = 0u64;
            while Instant::now() < deadline {
                if let Some(step) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += step;
                }
                let t = Instant::now();
                match op(c, i).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(reason) => {
                        if let Ok(mut f) = failed.lock() {
                            *f.entry(reason).or_default() += 1;
                        }
                    }
                }
                i += 1;
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    let mut reasons: Vec<(String, usize)> = failed
        .lock()
        .map(|f| f.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    Figures {
        writes: latencies.len(),
        failed: reasons.iter().map(|r| r.1).sum(),
        reasons,
        secs: started.elapsed().as_secs_f64(),
        latencies,
    }
}

fn configmap(name: &str, i: u64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "bench"},
        "data": {"i": i.to_string(), "payload": "x".repeat(200)},
    })
}

/// The namespace the benchmarks write in.
/// DELETE every URL, 32 at a time, ignoring failures (a benchmark's
/// clean-up).
pub(crate) async fn delete_all(http: &reqwest::Client, urls: impl Iterator<Item = String>) {
    futures::stream::iter(urls)
        .map(|url| async move {
            let _ = http.delete(url).send().await;
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

pub(crate) const NAMESPACE: &str = "bench";

/// The resourceVersion of a list at `url`: where a watch of it starts.
pub(crate) async fn list_revision(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let list: Value = http
        .get(format!("{url}?limit=1"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    list["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no resourceVersion in the list at {url}"))
}

pub(crate) async fn ensure_namespace(http: &reqwest::Client, server: &str) -> anyhow::Result<()> {
    create_namespace(http, server, NAMESPACE).await
}

/// Create namespace `name` unless it exists.
pub(crate) async fn create_namespace(
    http: &reqwest::Client,
    server: &str,
    name: &str,
) -> anyhow::Result<()> {
    let r = http
        .post(format!("{server}/api/v1/namespaces"))
        .json(&json!({"metadata": {"name": name}}))
        .send()
        .await?;
    if !(r.status().is_success() || r.status().as_u16() == 409) {
        bail!("creating namespace {name}: {}", r.text().await?);
    }
    Ok(())
}

/// Through the API: even calls create `cm-<run>-<client>-<n>`, odd ones
/// update it.
async fn api_writes(opts: &Options, http: &reqwest::Client) -> Figures {
    let servers = Arc::new(opts.servers.clone());
    let http = http.clone();
    drive(opts.clients, opts.rate, opts.duration, move |c, i| {
        let http = http.clone();
        let servers = servers.clone();
        async move {
            let server = &servers[(c + i as usize) % servers.len()];
            let name = format!("cm-{}-{c}-{}", std::process::id(), i / 2);
            let base = format!("{server}/api/v1/namespaces/bench/configmaps");
            let req = if i % 2 == 0 {
                http.post(&base).json(&configmap(&name, i))
            } else {
                http.put(format!("{base}/{name}"))
                    .json(&configmap(&name, i))
            };
            match req.send().await {
                // Read the body: an HTTP/2 client that drops unread
                // responses resets their streams, and after 1024 such resets
                // on one connection h2 gives up on it ("too many internal
                // resets").
                Ok(r) if r.status().is_success() => {
                    r.bytes().await.map(drop).map_err(|e| e.to_string())
                }
                Ok(r) => {
                    let code = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    Err(format!("{code} {}", body["reason"].as_str().unwrap_or("")))
                }
                Err(e) => {
                    // The innermost cause says what happened to the connection.
                    let mut cause: &dyn std::error::Error = &e;
                    while let Some(next) = cause.source() {
                        cause = next;
                    }
                    Err(format!("transport: {cause}"))
                }
            }
        }
    })
    .await
}

/// Straight to the store: the same creates and updates as transactions.
async fn store_writes(opts: &Options) -> anyhow::Result<Figures> {
    let channels: Vec<Channel> = opts
        .endpoints
        .iter()
        .map(|e| crate::etcd_client::channel(e, None))
        .collect::<anyhow::Result<_>>()?;
    let channels = Arc::new(channels);
    // Each client remembers its key's last revision, as a cache would.
    let revisions: Arc<Mutex<HashMap<usize, i64>>> = Arc::default();
    Ok(drive(opts.clients, opts.rate, opts.duration, move |c, i| {
        let mut kv = KvClient::new(channels[(c + i as usize) % channels.len()].clone());
        let revisions = revisions.clone();
        async move {
            let key = format!(
                "/registry/core/configmaps/benchstore/cm-{}-{c}-{}",
                std::process::id(),
                i / 2
            )
            .into_bytes();
            let value = serde_json::to_vec(&configmap("x", i)).unwrap_or_default();
            let (target, union) = if i % 2 == 0 {
                (CompareTarget::Create, TargetUnion::CreateRevision(0))
            } else {
                let rev = revisions
                    .lock()
                    .map(|r| r.get(&c).copied().unwrap_or(0))
                    .unwrap_or(0);
                (CompareTarget::Mod, TargetUnion::ModRevision(rev))
            };
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: target as i32,
                    key: key.clone(),
                    target_union: Some(union),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key,
                        value,
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            };
            match kv.txn(txn).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if let (Some(h), Ok(mut m)) = (r.header, revisions.lock()) {
                        m.insert(c, h.revision);
                    }
                    if r.succeeded {
                        Ok(())
                    } else {
                        Err("compare failed".into())
                    }
                }
                Err(e) => Err(e.message().to_string()),
            }
        }
    })
    .await)
}

fn total_rss_mib(procs: &[Proc]) -> String {
    let each: Vec<String> = procs
        .iter()
        .map(|p| format!("{:.0}", p.rss_kib().unwrap_or(0) as f64 / 1024.0))
        .collect();
    format!("[{}] MiB", each.join(", "))
}

async fn watchers(opts: &Options, kubeconfig: &std::path::Path) -> anyhow::Result<()> {
    let procs = masters::serving_api(&opts.servers);
    println!("masters RSS before watchers: {}", total_rss_mib(&procs));
    // A pod whose name is known before any watch starts sets the start point.
    let http = https_client(kubeconfig)?;
    let rv = list_revision(
        &http,
        &format!("{}/api/v1/namespaces/bench/pods", opts.servers[0]),
    )
    .await?;
    // name -> (time written, watchers that have seen it, time the last did).
    type Seen = HashMap<String, (usize, Option<Instant>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let ready = Arc::new(AtomicUsize::new(0));
    // One HTTP/2 connection per 100 watchers.
    let mut clients = Vec::new();
    for _ in 0..opts.watchers.div_ceil(100) {
        clients.push(https_client(kubeconfig)?);
    }
    let mut tasks = Vec::new();
    for w in 0..opts.watchers {
        let http = clients[w / 100].clone();
        let url = format!(
            "{}/api/v1/namespaces/bench/pods?watch=true&resourceVersion={rv}",
            opts.servers[w % opts.servers.len()]
        );
        let (seen, ready, total) = (seen.clone(), ready.clone(), opts.watchers);
        tasks.push(tokio::spawn(async move {
            let Ok(resp) = http.get(&url).send().await else {
                return;
            };
            ready.fetch_add(1, Ordering::Relaxed);
            let mut body = resp.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    let Some(name) = event["object"]["metadata"]["name"].as_str() else {
                        continue;
                    };
                    if let Ok(mut s) = seen.lock() {
                        let entry = s.entry(name.to_string()).or_insert((0, None));
                        entry.0 += 1;
                        if entry.0 == total {
                            entry.1 = Some(Instant::now());
                        }
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Relaxed) < opts.watchers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = ready.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "watchers open: {open}; masters RSS with them: {}",
        total_rss_mib(&procs)
    );
    let mut lags = Vec::new();
    let run = std::process::id();
    for i in 0..20 {
        let name = format!("pod-{run}-{i}");
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        });
        let written = Instant::now();
        let r = http
            .post(format!(
                "{}/api/v1/namespaces/bench/pods",
                opts.servers[i % opts.servers.len()]
            ))
            .json(&pod)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("creating pod {name}: {}", r.text().await?);
        }
        let wait_until = Instant::now() + Duration::from_secs(10);
        loop {
            let done = seen
                .lock()
                .ok()
                .and_then(|s| s.get(&name).and_then(|e| e.1));
            if let Some(t) = done {
                lags.push(t - written);
                break;
            }
            if Instant::now() > wait_until {
                let got = seen
                    .lock()
                    .ok()
                    .and_then(|s| s.get(&name).map(|e| e.0))
                    .unwrap_or(0);
                println!("pod {name}: only {got} of {open} watchers saw it within 10 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lags.sort();
    println!(
        "watch fan-out: {} writes, delay from write to the last of {open} watchers: p50_ms={:.1} max_ms={:.1}",
        lags.len(),
        percentile(&lags, 50),
        lags.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let http = https_client(&opts.kubeconfig)?;
    ensure_namespace(&http, &opts.servers[0]).await?;
    println!(
        "{} clients, target {} writes/s, {:?}, {} masters",
        opts.clients,
        if opts.rate == 0 {
            "unpaced".to_string()
        } else {
            opts.rate.to_string()
        },
        opts.duration,
        opts.servers.len()
    );
    let mut api = api_writes(&opts, &http).await;
    api.print("api");
    let mut store = store_writes(&opts).await?;
    store.print("store");
    println!(
        "api/store: writes/s ratio {:.2}, p99 ratio {:.2}",
        api.per_sec() / store.per_sec().max(1e-9),
        percentile(&api.latencies, 99) / percentile(&store.latencies, 99).max(1e-9)
    );
    if opts.watchers > 0 {
        watchers(&opts, &opts.kubeconfig).await?;
    }
    Ok(())
}
