//! The scheduler, run by the Raft leader beside the controllers. Pending
//! pods (no `spec.nodeName`) wait in a queue; one loop takes them in turn,
//! runs the algorithm ([`core`]: [`plugins`] filters and scores over the
//! node cache) and assumes the pod on the chosen node at once, so the next
//! pod sees it there; the binding is written in the background. A pod that
//! fits nowhere gets `PodScheduled=False` with the reasons and waits until
//! a node changes or a pod goes away.

pub mod core;
pub mod cycle;
pub mod plugins;
pub mod pod_info;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use self::core::Scheduler;
use crate::controllers::events::{reference, Kind};
use crate::controllers::ownership::is_active;
use crate::controllers::runtime::{key_of, Change, WorkQueue};
use crate::controllers::Ctx;
use pod_info::PodInfo;

const COMPONENT: &str = "default-scheduler";
/// Bindings written at once.
const BINDING_WRITES: usize = 256;
/// Unschedulable pods are tried again at least this often.
const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(30);

pub struct Handle {
    queue: Arc<WorkQueue>,
    core: Arc<Mutex<Scheduler>>,
    unschedulable: Arc<Mutex<HashSet<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn ours(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n.is_empty() || n == COMPONENT)
}

/// Queue every pod that was waiting for the cluster to change.
fn flush(unschedulable: &Mutex<HashSet<String>>, queue: &WorkQueue) {
    for key in lock(unschedulable).drain() {
        queue.add(key);
    }
}

pub fn register(ctx: &Arc<Ctx>) -> Handle {
    let handle = Handle {
        queue: WorkQueue::new("scheduler"),
        core: Arc::new(Mutex::new(Scheduler::default())),
        unschedulable: Arc::new(Mutex::new(HashSet::new())),
    };
    let (core, queue, waiting) = (
        handle.core.clone(),
        handle.queue.clone(),
        handle.unschedulable.clone(),
    );
    ctx.nodes.on_change(move |c: &Change<'_, Node>| {
        match c {
            Change::Applied { new, .. } => lock(&core).cache.upsert_node(new),
            Change::Deleted(old) => lock(&core)
                .cache
                .remove_node(old.metadata.name.as_deref().unwrap_or("")),
        }
        flush(&waiting, &queue);
    });
    let (core, queue, waiting) = (
        handle.core.clone(),
        handle.queue.clone(),
        handle.unschedulable.clone(),
    );
    ctx.pods.on_change(move |c: &Change<'_, Pod>| {
        let pod = c.object();
        let key = key_of(&pod.metadata);
        let live = matches!(c, Change::Applied { .. }) && is_active(pod);
        match (live, node_name(pod)) {
            (true, Some(node)) => {
                lock(&core).cache.place(PodInfo::new(pod), node);
                lock(&waiting).remove(&key);
            }
            (true, None) => {
                if ours(pod) && !lock(&waiting).contains(&key) {
                    queue.add(key);
                }
            }
            (false, _) => {
                lock(&core).cache.remove_pod(&key);
                lock(&waiting).remove(&key);
                // Room was freed.
                flush(&waiting, &queue);
            }
        }
    });
    handle
}

pub fn spawn(ctx: Arc<Ctx>, handle: Handle, cancel: CancellationToken) {
    let binds = Arc::new(Semaphore::new(BINDING_WRITES));
    let (queue, waiting) = (handle.queue.clone(), handle.unschedulable.clone());
    let stop = cancel.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY_UNSCHEDULABLE) => flush(&waiting, &queue),
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let key = tokio::select! {
                _ = cancel.cancelled() => return,
                k = handle.queue.next() => k,
            };
            metrics::gauge!("skiff_scheduler_pending_pods")
                .set((handle.queue.len() + lock(&handle.unschedulable).len()) as f64);
            schedule_one(&ctx, &handle, &key, &binds, &cancel).await;
            handle.queue.done(&key);
        }
    });
}

async fn schedule_one(
    ctx: &Arc<Ctx>,
    handle: &Handle,
    key: &str,
    binds: &Arc<Semaphore>,
    cancel: &CancellationToken,
) {
    let Some(pod) = ctx.pods.get(key) else { return };
    if node_name(&pod).is_some() || !is_active(&pod) || !ours(&pod) {
        return;
    }
    if lock(&handle.core).cache.node_of(key).is_some() {
        return; // assumed; its binding is being written
    }
    let started = Instant::now();
    let result = lock(&handle.core).schedule(PodInfo::new(&pod));
    match result {
        Ok(node) => {
            let Ok(permit) = binds.clone().acquire_owned().await else {
                return;
            };
            let (ctx, core, queue) = (ctx.clone(), handle.core.clone(), handle.queue.clone());
            let key = key.to_string();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let name = pod.metadata.name.as_deref().unwrap_or("");
                let bound = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = ctx.client.bind(ns, name, &node) => r,
                };
                match bound {
                    Ok(()) => {
                        metrics::counter!("skiff_scheduler_schedule_attempts_total", "result" => "scheduled").increment(1);
                        metrics::histogram!("skiff_scheduler_scheduling_duration_seconds")
                            .record(started.elapsed().as_secs_f64());
                        ctx.recorder.record(
                            COMPONENT,
                            reference(&*pod),
                            Kind::Normal,
                            "Scheduled",
                            format!("Successfully assigned {ns}/{name} to {node}"),
                        );
                    }
                    Err(e) => {
                        metrics::counter!("skiff_scheduler_schedule_attempts_total", "result" => "error").increment(1);
                        tracing::debug!(pod = key, node, "binding failed: {e}");
                        lock(&core).cache.remove_pod(&key);
                        queue.retry(&key);
                    }
                }
            });
        }
        Err(message) => {
            metrics::counter!("skiff_scheduler_schedule_attempts_total", "result" => "unschedulable").increment(1);
            lock(&handle.unschedulable).insert(key.to_string());
            report_unschedulable(ctx, &pod, message).await;
        }
    }
}

/// PodScheduled=False with the reasons, and a FailedScheduling event, once
/// per distinct message.
async fn report_unschedulable(ctx: &Ctx, pod: &Pod, message: String) {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(&message)) {
        return;
    }
    ctx.recorder.record(
        COMPONENT,
        reference(pod),
        Kind::Warning,
        "FailedScheduling",
        message.clone(),
    );
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastTransitionTime": ctx.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }]}});
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if let Err(e) = ctx
        .client
        .patch::<Pod>(ns, name, Some("status"), &patch)
        .await
    {
        tracing::debug!(pod = name, "could not report unschedulable: {e}");
    }
}

/// Help text and units of the scheduler's series.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "skiff_scheduler_pending_pods",
        Unit::Count,
        "Pods waiting to be scheduled."
    );
    describe_counter!(
        "skiff_scheduler_schedule_attempts_total",
        Unit::Count,
        "Attempts to schedule a pod, by result (scheduled, unschedulable, error)."
    );
    describe_histogram!(
        "skiff_scheduler_scheduling_duration_seconds",
        Unit::Seconds,
        "Time to choose a node for a pod and bind it."
    );
}
