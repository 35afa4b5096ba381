//! StatefulSet: pods with stable names, `<set>-0` to `<set>-<replicas-1>`,
//! each with `hostname` = its name and `subdomain` = `serviceName`, so the
//! governing headless Service gives each a DNS name.
//!
//! OrderedReady (the default) creates ordinal i only once 0..i are Running
//! and Ready, and scales down from the highest ordinal, one pod at a time,
//! each gone before the next goes; Parallel creates and deletes them all at
//! once. RollingUpdate walks from the highest ordinal down to `partition`,
//! deleting one pod of an older revision at a time while every other pod
//! is ready; the pod comes back from the current template. OnDelete leaves
//! old pods until someone deletes them.
//!
//! A revision is `<set>-<template hash>`, in the pods' `controller-revision-hash`
//! label and in `status.currentRevision`/`updateRevision`. Not supported:
//! `volumeClaimTemplates` (no PersistentVolumeClaims are made; the field is
//! ignored), `rollingUpdate.maxUnavailable` (always one at a time),
//! `spec.ordinals.start`, and ControllerRevision objects: only the current
//! template is kept, so a pod below the partition that is deleted comes
//! back at the new revision, and `kubectl rollout history/undo` have
//! nothing to show.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;

use super::daemonset::REVISION_LABEL;
use super::deployment::template_hash;
use super::events::{reference, Kind};
use super::ownership::{
    controlled_by, controller_of, is_active, is_available, is_ready, route_pods_to, selects,
};
use super::pods::{self, adopt, delete_pod, revision_of};
use super::runtime::{key_of, Action, Change, WorkQueue};
use super::{Ctx, Result};

const COMPONENT: &str = "statefulset-controller";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("statefulset");
    let q = queue.clone();
    ctx.statefulsets
        .on_change(move |c: &Change<'_, StatefulSet>| q.add(key_of(&c.object().metadata)));
    route_pods_to(&ctx.pods, &ctx.statefulsets, &queue, |sts| {
        sts.spec.as_ref().map(|s| &s.selector)
    });
    queue
}

/// The ordinal of pod `pod` of set `set` (`web-3` of `web`: 3).
pub fn ordinal_of(set: &str, pod: &str) -> Option<usize> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    let i: usize = n.parse().ok()?;
    (i.to_string() == n).then_some(i)
}

fn revision_label(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
}

/// Running and Ready: what OrderedReady waits for.
fn healthy(pod: &Pod) -> bool {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    running && is_ready(pod) && pod.metadata.deletion_timestamp.is_none()
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Pod `ordinal` of `sts`, at `revision`.
fn pod_for(sts: &StatefulSet, ordinal: usize, revision: &str) -> Pod {
    let set = sts.metadata.name.as_deref().unwrap_or("set");
    let name = format!("{set}-{ordinal}");
    let index = ordinal.to_string();
    let labels = [
        (POD_NAME_LABEL, name.as_str()),
        (POD_INDEX_LABEL, index.as_str()),
        (REVISION_LABEL, revision),
    ];
    let template = sts.spec.as_ref().map(|s| &s.template);
    let mut pod = pods::from_template(sts, template, &labels, Some(name.clone()));
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    let service = sts.spec.as_ref().map_or("", |s| s.service_name.as_str());
    if !service.is_empty() {
        spec.subdomain = Some(service.to_string());
    }
    pod
}

/// What a reconcile works from.
struct View {
    sts: Arc<StatefulSet>,
    replicas: usize,
    parallel: bool,
    /// RollingUpdate's partition; None under OnDelete.
    partition: Option<usize>,
    update_revision: String,
    /// The set's pods by ordinal.
    pods: BTreeMap<usize, Arc<Pod>>,
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(sts) = ctx.statefulsets.get(&key) else {
        return Ok(Action::Done);
    };
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let Some(spec) = sts.spec.as_ref() else {
        return Ok(Action::Done);
    };
    let name = sts.metadata.name.clone().unwrap_or_default();
    let ns = sts
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut pods = BTreeMap::new();
    for pod in ctx.pods.list_in(&ns) {
        let Some(ordinal) = ordinal_of(&name, pod.metadata.name.as_deref().unwrap_or("")) else {
            continue;
        };
        if controlled_by(&pod.metadata, sts.metadata.uid.as_deref()) {
            pods.insert(ordinal, pod);
        } else if controller_of(&pod.metadata).is_none()
            && is_active(&pod)
            && selects(&spec.selector, pod.metadata.labels.as_ref())
        {
            pods.insert(ordinal, adopt(&ctx, &*sts, &pod).await?);
        }
    }
    let strategy = spec.update_strategy.as_ref();
    let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0) as usize;
    let view = View {
        replicas: spec.replicas.unwrap_or(1).max(0) as usize,
        parallel: spec.pod_management_policy.as_deref() == Some("Parallel"),
        partition: (!on_delete).then_some(partition),
        update_revision: format!("{name}-{}", template_hash(&spec.template)),
        pods,
        sts: sts.clone(),
    };
    let last_write = step(&ctx, &view).await?;
    if last_write > 0 {
        ctx.pods.caught_up(last_write).await?;
    }
    let waiting = update_status(&ctx, &sts, &view.update_revision).await?;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    Ok(if waiting {
        Action::After(std::time::Duration::from_secs(min_ready.max(1) as u64))
    } else {
        Action::Done
    })
}

/// One pass towards the spec; the revision of the last write (0: none).
/// Under OrderedReady it stops at the first pod it has to wait for.
async fn step(ctx: &Ctx, v: &View) -> Result<i64> {
    let mut last = 0;
    let ordered = !v.parallel;
    // Create what is missing, replace what finished, in ordinal order.
    for ordinal in 0..v.replicas {
        match v.pods.get(&ordinal) {
            None => {
                last = last.max(create_pod(ctx, v, ordinal).await?);
                if ordered {
                    return Ok(last);
                }
            }
            Some(p) if !terminating(p) && !is_active(p) => {
                // Failed or Succeeded: it comes back on the next pass.
                last = last.max(delete_pod(ctx, COMPONENT, &reference(&*v.sts), p).await?);
                if ordered {
                    return Ok(last);
                }
            }
            Some(p) if ordered && !healthy(p) => return Ok(last),
            Some(_) => {}
        }
    }
    // Scale down from the highest ordinal.
    let condemned: Vec<(&usize, &Arc<Pod>)> = v.pods.range(v.replicas..).rev().collect();
    for (ordinal, p) in &condemned {
        if terminating(p) {
            if ordered {
                return Ok(last);
            }
            continue;
        }
        // OrderedReady deletes only while every other pod is healthy.
        let others_unhealthy = v.pods.iter().any(|(o, q)| o != *ordinal && !healthy(q));
        if ordered && others_unhealthy {
            return Ok(last);
        }
        last = last.max(delete_pod(ctx, COMPONENT, &reference(&*v.sts), p).await?);
        if ordered {
            return Ok(last);
        }
    }
    if !condemned.is_empty() {
        return Ok(last);
    }
    // Roll out the update revision from the top, one pod at a time, while
    // all the others are ready.
    let Some(partition) = v.partition else {
        return Ok(last);
    };
    let all_healthy = (0..v.replicas).all(|o| v.pods.get(&o).is_some_and(|p| healthy(p)));
    if !all_healthy {
        return Ok(last);
    }
    for ordinal in (partition..v.replicas).rev() {
        let Some(p) = v.pods.get(&ordinal) else {
            break;
        };
        if revision_label(p) != Some(v.update_revision.as_str()) {
            last = last.max(delete_pod(ctx, COMPONENT, &reference(&*v.sts), p).await?);
            break;
        }
    }
    Ok(last)
}

async fn create_pod(ctx: &Ctx, v: &View, ordinal: usize) -> Result<i64> {
    let pod = pod_for(&v.sts, ordinal, &v.update_revision);
    let name = pod.metadata.name.clone().unwrap_or_default();
    let set = v.sts.metadata.name.clone().unwrap_or_default();
    match ctx.client.create(&pod).await {
        Ok(created) => {
            ctx.recorder.record(
                COMPONENT,
                reference(&*v.sts),
                Kind::Normal,
                "SuccessfulCreate",
                format!("create Pod {name} in StatefulSet {set} successful"),
            );
            Ok(revision_of(&created.metadata))
        }
        Err(e) => {
            ctx.recorder.record(
                COMPONENT,
                reference(&*v.sts),
                Kind::Warning,
                "FailedCreate",
                format!("create Pod {name} in StatefulSet {set} failed error: {e}"),
            );
            Err(e)
        }
    }
}

/// The status the cache shows for `sts`.
fn compute_status(
    sts: &StatefulSet,
    pods: &[Arc<Pod>],
    update_revision: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> StatefulSetStatus {
    let previous = sts.status.as_ref();
    let current_revision = previous
        .and_then(|s| s.current_revision.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| update_revision.to_string());
    let min_ready = sts
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let live: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    let replicas = live.len() as i32;
    let ready = count(&|p| healthy(p));
    let updated = count(&|p| revision_label(p) == Some(update_revision));
    let mut s = StatefulSetStatus {
        observed_generation: sts.metadata.generation,
        replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(count(&|p| healthy(p) && is_available(p, min_ready, now))),
        current_replicas: Some(count(&|p| {
            revision_label(p) == Some(current_revision.as_str())
        })),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update_revision.to_string()),
        collision_count: previous.and_then(|s| s.collision_count),
        conditions: previous.and_then(|s| s.conditions.clone()),
    };
    // Every pod at the update revision and ready: the update is complete.
    if updated == replicas && ready == replicas {
        s.current_revision = s.update_revision.clone();
        s.current_replicas = Some(updated);
    }
    s
}

/// Write the counts as the cache now has them, if they changed; whether a
/// ready pod is still waiting out `minReadySeconds`.
async fn update_status(ctx: &Ctx, sts: &StatefulSet, update_revision: &str) -> Result<bool> {
    let ns = sts.metadata.namespace.as_deref().unwrap_or("default");
    let name = sts.metadata.name.as_deref().unwrap_or("");
    let uid = sts.metadata.uid.as_deref();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_in(ns)
        .into_iter()
        .filter(|p| {
            controlled_by(&p.metadata, uid)
                && ordinal_of(name, p.metadata.name.as_deref().unwrap_or("")).is_some()
        })
        .collect();
    let status = compute_status(sts, &pods, update_revision, ctx.now());
    let waiting = status.available_replicas < status.ready_replicas;
    if sts.status.as_ref() != Some(&status) {
        let mut next = sts.clone();
        next.status = Some(status);
        let written = ctx.client.replace_status(&next).await?;
        ctx.statefulsets
            .caught_up(revision_of(&written.metadata))
            .await?;
    }
    Ok(waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn sts() -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(2),
                service_name: "nginx".into(),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                        ..Default::default()
                    }),
                    spec: Some(Default::default()),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn ready_pod(set: &StatefulSet, ordinal: usize, revision: &str) -> Arc<Pod> {
        let mut p = pod_for(set, ordinal, revision);
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn ordinals_parse_only_exact_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-api-1"), None);
    }

    #[test]
    fn pods_get_stable_identity() {
        let p = pod_for(&sts(), 1, "web-abc");
        assert_eq!(p.metadata.name.as_deref(), Some("web-1"));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-1");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        assert_eq!(labels["app"], "web");
        assert!(controlled_by(&p.metadata, Some("u1")));
    }

    #[test]
    fn status_completes_the_update_once_every_pod_is_new_and_ready() {
        let mut set = sts();
        set.status = Some(StatefulSetStatus {
            current_revision: Some("web-old".into()),
            ..Default::default()
        });
        let now = chrono::Utc::now();
        let mixed = [ready_pod(&set, 0, "web-old"), ready_pod(&set, 1, "web-new")];
        let s = compute_status(&set, &mixed, "web-new", now);
        assert_eq!(s.current_revision.as_deref(), Some("web-old"));
        assert_eq!(
            (s.replicas, s.ready_replicas, s.updated_replicas),
            (2, Some(2), Some(1))
        );
        assert_eq!(s.current_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(3));
        let done = [ready_pod(&set, 0, "web-new"), ready_pod(&set, 1, "web-new")];
        let s = compute_status(&set, &done, "web-new", now);
        assert_eq!(s.current_revision.as_deref(), Some("web-new"));
        assert_eq!(s.current_replicas, Some(2));
    }
}
