//! ReplicaSet: keep `spec.replicas` active pods matching the template, and
//! report how many exist, are ready and are available.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;

use super::events::reference;
use super::ownership::{
    controlled_by, controller_of, deletion_rank, is_active, is_available, is_ready, route_pods_to,
    selects,
};
use super::pods::{self, adopt, create_pods, delete_pod, revision_of};
use super::runtime::{key_of, split_key, Action, Change, WorkQueue};
use super::{Ctx, Result};

const COMPONENT: &str = "replicaset-controller";

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("replicaset");
    let q = queue.clone();
    ctx.replicasets
        .on_change(move |c: &Change<'_, ReplicaSet>| q.add(key_of(&c.object().metadata)));
    route_pods_to(&ctx.pods, &ctx.replicasets, &queue, |rs| {
        rs.spec.as_ref().map(|s| &s.selector)
    });
    queue
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(rs) = ctx.replicasets.get(&key) else {
        return Ok(Action::Done);
    };
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let (ns, _) = split_key(&key);
    let ns = ns.unwrap_or("default");
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::Done);
    };
    let uid = rs.metadata.uid.as_deref();
    let mut pods: Vec<Arc<Pod>> = Vec::new();
    for pod in ctx.pods.list_in(ns) {
        if controlled_by(&pod.metadata, uid) {
            pods.push(pod);
        } else if controller_of(&pod.metadata).is_none()
            && is_active(&pod)
            && selects(&spec.selector, pod.metadata.labels.as_ref())
        {
            pods.push(adopt(&ctx, &*rs, &pod).await?);
        }
    }
    let mut active: Vec<Arc<Pod>> = pods.iter().filter(|p| is_active(p)).cloned().collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let owner = reference(&*rs);
    let mut last_write = 0;
    if active.len() < want {
        let new = (0..want - active.len()).map(|_| pod_from_template(&rs));
        last_write = create_pods(&ctx, COMPONENT, &owner, new.collect(), &mut 0).await?;
    } else if active.len() > want {
        active.sort_by_key(|p| deletion_rank(p));
        for pod in &active[..active.len() - want] {
            last_write = last_write.max(delete_pod(&ctx, COMPONENT, &owner, pod).await?);
        }
    }
    if last_write > 0 {
        ctx.pods.caught_up(last_write).await?;
    }
    update_status(&ctx, &rs).await?;
    // Pods become available minReadySeconds after they are ready: look again then.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let waiting = active
        .iter()
        .any(|p| is_ready(p) && !is_available(p, min_ready, ctx.now()));
    Ok(if waiting {
        Action::After(std::time::Duration::from_secs(min_ready.max(1) as u64))
    } else {
        Action::Done
    })
}

/// A new pod from `rs`'s template.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.as_ref());
    pods::from_template(rs, template, &[], None)
}

/// Write the counts as the cache now has them, if they changed.
async fn update_status(ctx: &Ctx, rs: &ReplicaSet) -> Result<()> {
    let uid = rs.metadata.uid.as_deref();
    let ns = rs.metadata.namespace.as_deref().unwrap_or("default");
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let now = ctx.now();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_in(ns)
        .into_iter()
        .filter(|p| controlled_by(&p.metadata, uid) && is_active(p))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
    let status = ReplicaSetStatus {
        replicas: pods.len() as i32,
        fully_labeled_replicas: Some(count(&|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        })),
        ready_replicas: Some(count(&|p| is_ready(p))),
        available_replicas: Some(count(&|p| is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    if rs.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut next = rs.clone();
    next.status = Some(status);
    let written = ctx.client.replace_status(&next).await?;
    ctx.replicasets
        .caught_up(revision_of(&written.metadata))
        .await
}
