//! Pods on this node: one worker per pod ([`worker`]), started and told of
//! changes by the manager here, which follows the node's desired state and
//! the runtime's events, and relists the runtime now and then as a safety
//! net. On start the manager adopts the containers it finds (workers take
//! over the ones still wanted and unchanged); containers of pods the node
//! no longer holds are removed ([`orphans`], off the manager's loop), but
//! only once the first snapshot has arrived, so an agent that restarts
//! while no master is reachable leaves its pods running.
//!
//! - [`spec`]: a pod's spec as runtime configuration; [`volumes`]: volumes
//!   on the node; [`probes`]: health probes; [`status`]: the pod status.

pub mod eviction;
pub mod orphans;
pub mod probes;
pub mod spec;
pub mod status;
pub mod tokens;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::desired::Desired;
use crate::reports::Reports;
use crate::runtime::Runtime;
use worker::{Message, Worker};

const RELIST: Duration = Duration::from_secs(10);

/// What every worker shares.
pub struct Context {
    pub node: String,
    pub data_dir: PathBuf,
    pub sandbox_image: String,
    pub host_ip: String,
    pub cpus: u64,
    pub memory: u64,
    /// Crash-loop back-off: first delay, cap, and how long a container must
    /// run for its back-off to start over.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
    pub lookup: Arc<dyn spec::Lookup + Send + Sync>,
    pub reports: Arc<Reports>,
    /// The node's pod network (None: pods use the engine's default
    /// network, and there is no cluster DNS).
    pub network: Option<Arc<crate::network::PodNetwork>>,
    /// The cluster's DNS domain (cluster.local).
    pub cluster_domain: String,
    /// Service account tokens for projected volumes.
    pub tokens: Arc<tokens::Tokens>,
    /// Secret, projected and downwardAPI volumes on tmpfs.
    pub memory_volumes: bool,
}

/// Run the node's pods until `stop`; while `pressure` names thresholds
/// the node crosses, evict a pod every [`EVICTION_INTERVAL`].
pub async fn run<R: Runtime>(
    rt: R,
    ctx: Arc<Context>,
    desired: Arc<Desired>,
    pressure: watch::Receiver<Vec<crate::pressure::Crossed>>,
    stop: CancellationToken,
) {
    let mut workers: HashMap<String, mpsc::Sender<Message>> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let (owned, owned_rx) = watch::channel(HashSet::new());
    // The remover stops with the manager, whichever way the manager ends.
    let orphans_stop = stop.child_token();
    let _orphans_stop = orphans_stop.clone().drop_guard();
    let orphans = orphans::spawn(
        orphans::Remover {
            rt: rt.clone(),
            node: ctx.node.clone(),
            data_dir: ctx.data_dir.clone(),
            desired: desired.clone(),
            owned: owned_rx,
            grace: orphans::GRACE,
        },
        orphans_stop,
    );
    let mut changes = desired.subscribe();
    let mut events = rt.events(&ctx.node);
    let mut relist = tokio::time::interval(RELIST);
    let mut evictions = tokio::time::interval(EVICTION_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = evictions.tick() => {
                evict_one(&desired, &workers, &pressure.borrow());
                continue;
            }
            r = changes.changed() => { if r.is_err() { return } }
            e = events.next() => match e {
                Some(Ok(uid)) => {
                    if let Some(w) = workers.get(&uid) { let _ = w.try_send(Message::Poke); }
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!("runtime events: {e}; following them again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    events = rt.events(&ctx.node);
                    continue;
                }
                None => { events = rt.events(&ctx.node); continue }
            },
            _ = relist.tick() => {
                sync(&rt, &ctx, &desired, &mut workers, &done_tx).await;
                publish_owned(&owned, &workers);
                orphans.kick();
                for w in workers.values() { let _ = w.try_send(Message::Poke); }
                continue;
            }
            Some(uid) = done_rx.recv() => { workers.remove(&uid); }
        }
        sync(&rt, &ctx, &desired, &mut workers, &done_tx).await;
        publish_owned(&owned, &workers);
        metrics::gauge!("skiff_agent_pod_workers").set(workers.len() as f64);
    }
}

/// While a hard eviction threshold is crossed, the kubelet's
/// housekeeping period: one pod evicted per period.
const EVICTION_INTERVAL: Duration = Duration::from_secs(10);

/// Evict one pod if the node is under pressure ([`eviction`]).
fn evict_one(
    desired: &Desired,
    workers: &HashMap<String, mpsc::Sender<Message>>,
    crossed: &[crate::pressure::Crossed],
) {
    let Some(first) = crossed.first() else { return };
    let running: Vec<_> = desired
        .pods()
        .into_iter()
        .filter(|p| {
            p["metadata"]["uid"]
                .as_str()
                .is_some_and(|uid| workers.contains_key(uid))
        })
        .collect();
    let Some(uid) = eviction::victim(&running) else {
        return;
    };
    let message = eviction::message(first);
    tracing::info!(pod_uid = %uid, signal = first.threshold.signal.name(), %message, "evicting a pod");
    metrics::counter!("skiff_agent_evictions_total", "signal" => first.threshold.signal.name())
        .increment(1);
    if let Some(w) = workers.get(&uid) {
        let _ = w.try_send(Message::Evict(message));
    }
}

/// Tell the orphan remover which pods have a worker (their containers are
/// the workers' to remove), when that changed.
fn publish_owned(
    owned: &watch::Sender<HashSet<String>>,
    workers: &HashMap<String, mpsc::Sender<Message>>,
) {
    owned.send_if_modified(|set| {
        if set.len() == workers.len() && workers.keys().all(|uid| set.contains(uid)) {
            return false;
        }
        *set = workers.keys().cloned().collect();
        true
    });
}

/// Start workers for new pods, pass on changed specs, and tell the workers
/// of pods no longer held to finish.
async fn sync<R: Runtime>(
    rt: &R,
    ctx: &Arc<Context>,
    desired: &Desired,
    workers: &mut HashMap<String, mpsc::Sender<Message>>,
    done: &mpsc::UnboundedSender<String>,
) {
    let pods = desired.pods();
    let mut wanted = HashSet::new();
    for v in pods {
        let uid = v["metadata"]["uid"].as_str().unwrap_or("").to_string();
        if uid.is_empty() {
            continue;
        }
        wanted.insert(uid.clone());
        match workers.get(&uid) {
            Some(w) => {
                if w.try_send(Message::Update(v.clone())).is_err() {
                    tracing::debug!(%uid, "worker busy; it will see the spec on its next pass");
                }
            }
            None => {
                let pod: Pod = match serde_json::from_value((*v).clone()) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(%uid, "pod cannot be decoded: {e}");
                        continue;
                    }
                };
                let (tx, rx) = mpsc::channel(16);
                let w = Worker::new(rt.clone(), ctx.clone(), pod);
                tokio::spawn(w.run(rx, done.clone()));
                workers.insert(uid, tx);
            }
        }
    }
    if !desired.synced() {
        return;
    }
    for (uid, w) in workers.iter() {
        if !wanted.contains(uid) {
            let _ = w.try_send(Message::Gone);
        }
    }
    count_phases(desired);
}

fn count_phases(desired: &Desired) {
    let mut by_phase: HashMap<String, u64> = HashMap::new();
    for p in desired.pods() {
        let phase = p["status"]["phase"]
            .as_str()
            .unwrap_or("Pending")
            .to_string();
        *by_phase.entry(phase).or_default() += 1;
    }
    for phase in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
        metrics::gauge!("skiff_agent_pods", "phase" => phase)
            .set(by_phase.get(phase).copied().unwrap_or(0) as f64);
    }
}

/// Help text and units of the pod manager's series.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(
        "skiff_agent_pods",
        Unit::Count,
        "Pods bound to this node, by phase."
    );
    describe_gauge!(
        "skiff_agent_pod_workers",
        Unit::Count,
        "Pod workers running on this node (one per pod it runs or stops)."
    );
    describe_counter!(
        "skiff_agent_evictions_total",
        Unit::Count,
        "Pods evicted by this node under resource pressure, by the signal whose threshold was crossed."
    );
    describe_counter!(
        "skiff_agent_container_starts_total",
        Unit::Count,
        "Containers started."
    );
    describe_counter!(
        "skiff_agent_container_restarts_total",
        Unit::Count,
        "Containers started again after they ended (restart policy)."
    );
    describe_counter!(
        "skiff_agent_probe_results_total",
        Unit::Count,
        "Probe runs, by probe (liveness, readiness, startup) and result."
    );
    describe_gauge!(
        "skiff_agent_orphan_pods_removing",
        Unit::Count,
        "Orphaned pods (no longer bound here) whose containers are being removed."
    );
    describe_counter!(
        "skiff_agent_orphans_removed_total",
        Unit::Count,
        "Orphaned containers removed."
    );
}
