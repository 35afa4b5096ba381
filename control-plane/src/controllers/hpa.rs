//! HorizontalPodAutoscaler (autoscaling/v2) on CPU utilization: every sync
//! period, the pods of the scale target report their CPU use; the target is
//! resized so that the average utilization (use over request) comes to the
//! goal, within minReplicas and maxReplicas, ignoring differences within
//! 10%, and scaling down no lower than the highest recommendation of the
//! stabilization window (default 300 s).
//!
//! Usage is what the pods' nodes measured (the masters' `metrics.k8s.io`
//! source, [`crate::api::Api::pods_cpu`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, MetricStatus, MetricValueStatus,
    ResourceMetricStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use serde_json::json;

use super::events::{reference, Kind};
use super::ownership::{is_active, selects};
use super::runtime::{key_of, Action, Change, WorkQueue};
use super::{Ctx, Error, Result};

const COMPONENT: &str = "horizontal-pod-autoscaler";
const TOLERANCE: f64 = 0.1;

/// Recent recommendations per autoscaler, for scale-down stabilization.
#[derive(Default)]
pub struct Recommendations {
    by_hpa: Mutex<HashMap<String, VecDeque<(Instant, i32)>>>,
}

impl Recommendations {
    /// Record `desired`; the highest recommendation within `window`.
    fn stabilized(&self, key: &str, desired: i32, window: Duration) -> i32 {
        let mut all = self.by_hpa.lock().unwrap_or_else(|p| p.into_inner());
        let recent = all.entry(key.to_string()).or_default();
        let now = Instant::now();
        recent.push_back((now, desired));
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > window)
        {
            recent.pop_front();
        }
        recent.iter().map(|(_, r)| *r).max().unwrap_or(desired)
    }
}

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("horizontal-pod-autoscaler");
    let q = queue.clone();
    ctx.hpas
        .on_change(move |c: &Change<'_, HorizontalPodAutoscaler>| {
            if let Change::Applied { old: None, new } = c {
                q.add(key_of(&new.metadata));
            }
        });
    queue
}

/// The scale target's (replicas, selector).
fn target(ctx: &Ctx, ns: &str, kind: &str, name: &str) -> Option<(i32, LabelSelector)> {
    let key = format!("{ns}/{name}");
    match kind {
        "Deployment" => ctx.deployments.get(&key).and_then(|d| {
            let s = d.spec.as_ref()?;
            Some((s.replicas.unwrap_or(1), s.selector.clone()))
        }),
        "ReplicaSet" => ctx.replicasets.get(&key).and_then(|d| {
            let s = d.spec.as_ref()?;
            Some((s.replicas.unwrap_or(1), s.selector.clone()))
        }),
        "StatefulSet" => ctx.statefulsets.get(&key).and_then(|d| {
            let s = d.spec.as_ref()?;
            Some((s.replicas.unwrap_or(1), s.selector.clone()))
        }),
        _ => None,
    }
}

/// The utilization goal (percent of request) of the autoscaler's CPU metric.
fn cpu_goal(hpa: &HorizontalPodAutoscaler) -> Option<i32> {
    hpa.spec
        .as_ref()?
        .metrics
        .iter()
        .flatten()
        .filter(|m| m.type_ == "Resource")
        .filter_map(|m| m.resource.as_ref())
        .find(|r| r.name == "cpu")
        .and_then(|r| r.target.average_utilization)
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let period = ctx.settings.hpa_sync_period;
    let Some(hpa) = ctx.hpas.get(&key) else {
        return Ok(Action::Done);
    };
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let spec = hpa
        .spec
        .clone()
        .ok_or_else(|| Error::Invalid("no spec".into()))?;
    let target_ref = &spec.scale_target_ref;
    let Some((current, selector)) = target(&ctx, &ns, &target_ref.kind, &target_ref.name) else {
        return Ok(Action::After(period));
    };
    let goal = cpu_goal(&hpa).unwrap_or(80).max(1);
    // Pods with both a request and a measured usage.
    let mut requests = Vec::new();
    for pod in ctx.pods.list_in(&ns) {
        if !is_active(&pod) || !selects(&selector, pod.metadata.labels.as_ref()) {
            continue;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let request = crate::scheduler::pod_info::PodInfo::new(&pod)
            .requests
            .milli_cpu;
        if let (Some(node), Some(uid), true) = (node, pod.metadata.uid.clone(), request > 0) {
            requests.push((node, uid, request));
        }
    }
    let placed: Vec<(String, String)> = requests
        .iter()
        .map(|(node, uid, _)| (node.clone(), uid.clone()))
        .collect();
    let usage = ctx.client.api().pods_cpu(&placed).await;
    let (mut used, mut requested, mut counted) = (0.0, 0.0, 0);
    for (_, uid, request) in &requests {
        if let Some(nanocores) = usage.get(uid) {
            used += *nanocores as f64 / 1e9;
            requested += *request as f64 / 1000.0;
            counted += 1;
        }
    }
    let min = spec.min_replicas.unwrap_or(1).max(1);
    let max = spec.max_replicas.max(min);
    let now = Time(ctx.now());
    let mut status = hpa.status.clone().unwrap_or_default();
    let utilization = (requested > 0.0).then(|| (used / requested * 100.0).round() as i32);
    let mut desired = current;
    if let Some(util) = utilization {
        let ratio = util as f64 / goal as f64;
        if (ratio - 1.0).abs() > TOLERANCE {
            desired = (ratio * counted as f64).ceil() as i32;
        }
    }
    let window = spec
        .behavior
        .as_ref()
        .and_then(|b| b.scale_down.as_ref())
        .and_then(|s| s.stabilization_window_seconds)
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(Duration::from_secs(300));
    let desired = ctx
        .recommendations
        .stabilized(&key, desired, window)
        .min(desired.max(current))
        .clamp(min, max);
    if desired != current {
        let patch = json!({"spec": {"replicas": desired}});
        let name = target_ref.name.as_str();
        match target_ref.kind.as_str() {
            "Deployment" => ctx
                .client
                .patch::<Deployment>(Some(&ns), name, None, &patch)
                .await
                .map(|_| ())?,
            "ReplicaSet" => ctx
                .client
                .patch::<ReplicaSet>(Some(&ns), name, None, &patch)
                .await
                .map(|_| ())?,
            _ => ctx
                .client
                .patch::<StatefulSet>(Some(&ns), name, None, &patch)
                .await
                .map(|_| ())?,
        }
        let why = if desired > current { "above" } else { "below" };
        ctx.recorder.record(
            COMPONENT,
            reference(&*hpa),
            Kind::Normal,
            "SuccessfulRescale",
            format!("New size: {desired}; reason: cpu resource utilization (percentage of request) {why} target"),
        );
        status.last_scale_time = Some(now.clone());
    }
    status.current_replicas = Some(current);
    status.desired_replicas = desired;
    status.observed_generation = hpa.metadata.generation;
    status.current_metrics = utilization.map(|u| {
        vec![MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: "cpu".into(),
                current: MetricValueStatus {
                    average_utilization: Some(u),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }]
    });
    let active = utilization.is_some();
    status.conditions = Some(vec![
        HorizontalPodAutoscalerCondition {
            type_: "AbleToScale".into(),
            status: "True".into(),
            reason: Some("ReadyForNewScale".into()),
            message: Some("recommended size matches current size".into()),
            last_transition_time: Some(now.clone()),
        },
        HorizontalPodAutoscalerCondition {
            type_: "ScalingActive".into(),
            status: if active { "True" } else { "False" }.into(),
            reason: Some(
                if active {
                    "ValidMetricFound"
                } else {
                    "FailedGetResourceMetric"
                }
                .into(),
            ),
            message: Some(if active {
                "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)".into()
            } else {
                "did not receive metrics for any ready pod of the target".into()
            }),
            last_transition_time: Some(now),
        },
    ]);
    let changed = hpa.status.as_ref().map(|s| {
        (s.current_replicas, s.desired_replicas, &s.current_metrics)
            != (
                status.current_replicas,
                status.desired_replicas,
                &status.current_metrics,
            )
    });
    if changed != Some(false) || desired != current {
        let mut next = (*hpa).clone();
        next.status = Some(status);
        ctx.client.replace_status(&next).await?;
    }
    Ok(Action::After(period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stabilization_keeps_the_highest_recent_recommendation() {
        let r = Recommendations::default();
        let w = Duration::from_secs(300);
        assert_eq!(r.stabilized("a", 5, w), 5);
        assert_eq!(r.stabilized("a", 2, w), 5);
        assert_eq!(r.stabilized("a", 2, Duration::ZERO), 2);
    }
}
