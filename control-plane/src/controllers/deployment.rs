//! Deployment: one ReplicaSet per pod template, named for the template's
//! hash. A template change starts a rollout: the new set scales up and the
//! old ones down, within `maxSurge` and `maxUnavailable` (RollingUpdate), or
//! the old ones go first (Recreate). Revisions are the sets'
//! `deployment.kubernetes.io/revision` annotations, which is what `kubectl
//! rollout history` and `rollout undo` read and write.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::events::{reference, Kind};
use super::ownership::{controlled_by, controller_of, controller_ref};
use super::pods::revision_of;
use super::runtime::{key_of, Action, Change, WorkQueue};
use super::{Ctx, Error, Result};

const COMPONENT: &str = "deployment-controller";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
pub const HASH_LABEL: &str = "pod-template-hash";

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("deployment");
    let q = queue.clone();
    ctx.deployments
        .on_change(move |c: &Change<'_, Deployment>| q.add(key_of(&c.object().metadata)));
    let q = queue.clone();
    ctx.replicasets
        .on_change(move |c: &Change<'_, ReplicaSet>| {
            let meta = &c.object().metadata;
            if let Some(o) = controller_of(meta).filter(|o| o.kind == "Deployment") {
                let ns = meta.namespace.as_deref().unwrap_or("");
                q.add(format!("{ns}/{}", o.name));
            }
        });
    queue
}

/// The template's hash, as the `pod-template-hash` label: FNV-1a over the
/// template's JSON without that label, in the alphabet Kubernetes uses for
/// generated names.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    let bytes = serde_json::to_vec(&t).unwrap_or_default();
    let mut h: u32 = 0x811c9dc5;
    for b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut v = h as u64;
    while v > 0 || out.is_empty() {
        out.push(ALPHABET[(v % ALPHABET.len() as u64) as usize] as char);
        v /= ALPHABET.len() as u64;
    }
    out
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status
        .as_ref()
        .map(|s| {
            (
                s.replicas,
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
            )
        })
        .unwrap_or((0, 0, 0))
}

/// An int-or-percent of `total`, rounded up or down.
pub(crate) fn scaled(v: Option<&IntOrString>, total: i32, default: &str, round_up: bool) -> i32 {
    let v = v
        .cloned()
        .unwrap_or_else(|| IntOrString::String(default.into()));
    match v {
        IntOrString::Int(i) => i.max(0),
        IntOrString::String(s) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = pct * total as f64 / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

/// (maxSurge, maxUnavailable) for `replicas`, never both zero.
fn surge_and_unavailable(d: &Deployment, replicas: i32) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), replicas, "25%", true);
    let unavailable = scaled(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        "25%",
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(replicas))
    }
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(d) = ctx.deployments.get(&key) else {
        return Ok(Action::Done);
    };
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::Done);
    };
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let uid = d.metadata.uid.as_deref();
    let mut sets: Vec<Arc<ReplicaSet>> = ctx
        .replicasets
        .list_in(&ns)
        .into_iter()
        .filter(|rs| controlled_by(&rs.metadata, uid) && rs.metadata.deletion_timestamp.is_none())
        .collect();
    sets.sort_by_key(|rs| revision(rs));
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(&spec.template);
    let current = sets.iter().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| template_hash(t) == hash)
    });
    let paused = spec.paused == Some(true);
    let max_revision = sets.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let new = match current {
        Some(rs) => {
            // A set that comes back (rollback) gets the next revision.
            let is_latest = revision(rs) == max_revision;
            sync_new_annotations(
                &ctx,
                &d,
                rs,
                replicas,
                (!is_latest).then_some(max_revision + 1),
            )
            .await?
        }
        None if paused => None,
        None => Some(create_new_set(&ctx, &d, &hash, max_revision + 1, &sets).await?),
    };
    // The deployment carries its current revision, as `rollout history` shows.
    if let Some(n) = &new {
        let rev = revision(n).to_string();
        let have = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if have != Some(&rev) {
            let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
            let written: Deployment = ctx
                .client
                .patch(
                    Some(&ns),
                    d.metadata.name.as_deref().unwrap_or(""),
                    None,
                    &patch,
                )
                .await?;
            ctx.deployments
                .caught_up(revision_of(&written.metadata))
                .await?;
            // The change brings this deployment back, read afresh.
            return Ok(Action::Done);
        }
    }
    let old: Vec<Arc<ReplicaSet>> = sets
        .iter()
        .filter(|rs| {
            new.as_ref()
                .map(|n| n.metadata.uid != rs.metadata.uid)
                .unwrap_or(true)
        })
        .cloned()
        .collect();
    if paused {
        if let Some(n) = &new {
            if old.iter().all(|o| spec_replicas(o) == 0) && spec_replicas(n) != replicas {
                scale(&ctx, &d, n, replicas).await?;
            }
        }
    } else if let Some(n) = &new {
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        if recreate {
            rollout_recreate(&ctx, &d, n, &old, replicas).await?;
        } else {
            rollout_rolling(&ctx, &d, n, &old, replicas).await?;
        }
        cleanup_history(&ctx, &d, &old).await?;
    }
    let status = compute_status(&ctx, &d, new.as_deref(), &sets, replicas, paused);
    if d.status.as_ref() != Some(&status) {
        let mut next = (*d).clone();
        next.status = Some(status);
        ctx.client.replace_status(&next).await?;
    }
    // Progress deadlines and availability are judged again after a while.
    let settled = d.status.as_ref().is_some_and(|s| {
        s.updated_replicas == Some(replicas) && s.available_replicas == Some(replicas)
    });
    Ok(if settled {
        Action::Done
    } else {
        Action::After(std::time::Duration::from_secs(5))
    })
}

/// Keep the new set's annotations in step with the deployment (and give it
/// `revision` when it comes back from the past).
async fn sync_new_annotations(
    ctx: &Ctx,
    d: &Deployment,
    rs: &Arc<ReplicaSet>,
    replicas: i32,
    revision: Option<i64>,
) -> Result<Option<Arc<ReplicaSet>>> {
    let mut want = rs.metadata.annotations.clone().unwrap_or_default();
    annotate_set(&mut want, d, revision, replicas);
    if Some(&want) == rs.metadata.annotations.as_ref() {
        return Ok(Some(rs.clone()));
    }
    let mut next = (**rs).clone();
    next.metadata.annotations = Some(want);
    let written = ctx.client.replace(&next).await?;
    ctx.replicasets
        .caught_up(revision_of(&written.metadata))
        .await?;
    Ok(Some(Arc::new(written)))
}

/// The annotations a Deployment keeps on its ReplicaSets: the revision
/// (when given), the desired and the most replicas, and the change cause.
fn annotate_set(
    into: &mut BTreeMap<String, String>,
    d: &Deployment,
    revision: Option<i64>,
    replicas: i32,
) {
    let (surge, _) = surge_and_unavailable(d, replicas);
    if let Some(r) = revision {
        into.insert(REVISION.into(), r.to_string());
    }
    into.insert(DESIRED.into(), replicas.to_string());
    into.insert(MAX_REPLICAS.into(), (replicas + surge).to_string());
    let cause = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGE_CAUSE));
    if let Some(cause) = cause {
        into.insert(CHANGE_CAUSE.into(), cause.clone());
    }
}

async fn create_new_set(
    ctx: &Ctx,
    d: &Deployment,
    hash: &str,
    revision: i64,
    existing: &[Arc<ReplicaSet>],
) -> Result<Arc<ReplicaSet>> {
    let spec = d
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid("no spec".into()))?;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let mut template = spec.template.clone();
    let tm = template.metadata.get_or_insert_with(Default::default);
    tm.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut labels = tm.labels.clone().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    let mut annotations = BTreeMap::new();
    annotate_set(&mut annotations, d, Some(revision), replicas);
    // A first set, or Recreate with nothing old left running, starts at
    // full size; a rolling update starts at zero and grows within maxSurge.
    let start = if existing.iter().all(|rs| spec_replicas(rs) == 0) && existing.is_empty() {
        replicas
    } else {
        0
    };
    let name = format!(
        "{}-{hash}",
        d.metadata.name.as_deref().unwrap_or("deployment")
    );
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: d.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(start),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    let created = ctx.client.create(&rs).await?;
    ctx.replicasets
        .caught_up(revision_of(&created.metadata))
        .await?;
    ctx.recorder.record(
        COMPONENT,
        reference(d),
        Kind::Normal,
        "ScalingReplicaSet",
        format!("Scaled up replica set {name} to {start} from 0"),
    );
    Ok(Arc::new(created))
}

/// Set `rs`'s replicas to `to`, with the event `kubectl describe` shows.
async fn scale(ctx: &Ctx, d: &Deployment, rs: &ReplicaSet, to: i32) -> Result<()> {
    let from = spec_replicas(rs);
    if from == to {
        return Ok(());
    }
    let name = rs.metadata.name.clone().unwrap_or_default();
    let patch = json!({"metadata": {"resourceVersion": rs.metadata.resource_version}, "spec": {"replicas": to}});
    let written: ReplicaSet = ctx
        .client
        .patch(rs.metadata.namespace.as_deref(), &name, None, &patch)
        .await?;
    ctx.replicasets
        .caught_up(revision_of(&written.metadata))
        .await?;
    let dir = if to > from { "up" } else { "down" };
    ctx.recorder.record(
        COMPONENT,
        reference(d),
        Kind::Normal,
        "ScalingReplicaSet",
        format!("Scaled {dir} replica set {name} to {to} from {from}"),
    );
    Ok(())
}

/// Recreate: every old pod goes before the new set grows.
async fn rollout_recreate(
    ctx: &Ctx,
    d: &Deployment,
    new: &ReplicaSet,
    old: &[Arc<ReplicaSet>],
    replicas: i32,
) -> Result<()> {
    for rs in old {
        scale(ctx, d, rs, 0).await?;
    }
    let old_running = old.iter().any(|rs| status_of(rs).0 > 0);
    if !old_running {
        scale(ctx, d, new, replicas).await?;
    }
    Ok(())
}

/// RollingUpdate: grow the new set within maxSurge, shrink old ones while
/// at least `replicas - maxUnavailable` pods stay available.
async fn rollout_rolling(
    ctx: &Ctx,
    d: &Deployment,
    new: &ReplicaSet,
    old: &[Arc<ReplicaSet>],
    replicas: i32,
) -> Result<()> {
    let (surge, unavailable) = surge_and_unavailable(d, replicas);
    let new_count = spec_replicas(new);
    let all: i32 = new_count + old.iter().map(|rs| spec_replicas(rs)).sum::<i32>();
    // Scale the new set.
    if new_count > replicas {
        scale(ctx, d, new, replicas).await?;
        return Ok(());
    }
    let new_count = if new_count < replicas {
        let room = (replicas + surge - all).max(0);
        let to = new_count + room.min(replicas - new_count);
        scale(ctx, d, new, to).await?;
        to
    } else {
        new_count
    };
    // Scale old sets down.
    let min_available = replicas - unavailable;
    let new_unavailable = (new_count - status_of(new).2).max(0);
    let all = new_count + old.iter().map(|rs| spec_replicas(rs)).sum::<i32>();
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return Ok(());
    }
    // Pods that are not available cost nothing to remove: take them first.
    let mut remaining: Vec<(Arc<ReplicaSet>, i32)> = old
        .iter()
        .map(|rs| (rs.clone(), spec_replicas(rs)))
        .collect();
    for (rs, count) in remaining.iter_mut() {
        let unhealthy = (*count - status_of(rs).2).max(0).min(budget);
        if unhealthy > 0 {
            *count -= unhealthy;
            budget -= unhealthy;
        }
    }
    let available: i32 = status_of(new).2
        + remaining
            .iter()
            .map(|(rs, c)| status_of(rs).2.min(*c))
            .sum::<i32>();
    let mut take = (available - min_available).max(0).min(budget);
    for (rs, count) in remaining.iter_mut() {
        let n = (*count).min(take);
        *count -= n;
        take -= n;
        let _ = rs;
    }
    for (rs, count) in remaining {
        if count != spec_replicas(&rs) {
            scale(ctx, d, &rs, count).await?;
        }
    }
    Ok(())
}

/// Delete old, empty sets beyond `revisionHistoryLimit` (oldest first).
async fn cleanup_history(ctx: &Ctx, d: &Deployment, old: &[Arc<ReplicaSet>]) -> Result<()> {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let empty: Vec<&Arc<ReplicaSet>> = old
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0)
        .collect();
    if empty.len() <= limit {
        return Ok(());
    }
    for rs in &empty[..empty.len() - limit] {
        ctx.client
            .delete::<ReplicaSet>(
                rs.metadata.namespace.as_deref(),
                rs.metadata.name.as_deref().unwrap_or(""),
                rs.metadata.uid.as_deref(),
                None,
            )
            .await?;
    }
    Ok(())
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: Time,
    previous: Option<&DeploymentCondition>,
) -> DeploymentCondition {
    let status = if status { "True" } else { "False" }.to_string();
    let transition = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    let update = match previous {
        Some(p) if p.status == status && p.reason.as_deref() == Some(reason) => {
            p.last_update_time.clone()
        }
        _ => Some(now),
    };
    DeploymentCondition {
        type_: type_.into(),
        status,
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: transition,
        last_update_time: update,
    }
}

fn compute_status(
    ctx: &Ctx,
    d: &Deployment,
    new: Option<&ReplicaSet>,
    sets: &[Arc<ReplicaSet>],
    replicas: i32,
    paused: bool,
) -> DeploymentStatus {
    let sum = |f: fn(&ReplicaSet) -> i32| sets.iter().map(|rs| f(rs)).sum::<i32>();
    let total = sum(|rs| status_of(rs).0);
    let ready = sum(|rs| status_of(rs).1);
    let available = sum(|rs| status_of(rs).2);
    let updated = new.map(|n| status_of(n).0).unwrap_or(0);
    let (_, max_unavailable) = surge_and_unavailable(d, replicas);
    let now = Time(ctx.now());
    let prev = d.status.as_ref().and_then(|s| s.conditions.as_ref());
    let prev_of = |t: &str| prev.and_then(|c| c.iter().find(|c| c.type_ == t));
    let available_ok = available >= replicas - max_unavailable;
    let avail_cond = condition(
        "Available",
        available_ok,
        if available_ok {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available_ok {
            "Deployment has minimum availability.".into()
        } else {
            "Deployment does not have minimum availability.".into()
        },
        now.clone(),
        prev_of("Available"),
    );
    let new_name = new
        .and_then(|n| n.metadata.name.clone())
        .unwrap_or_default();
    let complete = new.is_some()
        && updated == replicas
        && total == replicas
        && available >= replicas
        && new.map(|n| status_of(n).2).unwrap_or(0) >= replicas;
    let previous = prev_of("Progressing");
    let deadline = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600) as i64;
    let stalled = previous.is_some_and(|p| {
        p.reason.as_deref() != Some("NewReplicaSetAvailable")
            && p.last_update_time
                .as_ref()
                .is_some_and(|t| t.0 + chrono::Duration::seconds(deadline) < now.0)
    });
    let progressing = if paused {
        condition(
            "Progressing",
            false,
            "DeploymentPaused",
            "Deployment is paused".into(),
            now,
            previous,
        )
    } else if complete {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            now,
            previous,
        )
    } else if stalled {
        condition(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            now,
            previous,
        )
    } else {
        // Progress resets the deadline: a moving rollout keeps its lease.
        let moved = d.status.as_ref().is_none_or(|s| {
            s.updated_replicas != Some(updated) || s.available_replicas != Some(available)
        });
        let mut c = condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
            now.clone(),
            previous,
        );
        if moved {
            c.last_update_time = Some(now);
        }
        c
    };
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        conditions: Some(vec![avail_cond, progressing]),
        collision_count: d.status.as_ref().and_then(|s| s.collision_count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_its_own_label_and_follows_the_template() {
        let mut t = PodTemplateSpec::default();
        let h = template_hash(&t);
        t.metadata = Some(ObjectMeta {
            labels: Some(BTreeMap::from([(HASH_LABEL.to_string(), "x".to_string())])),
            ..Default::default()
        });
        t.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .clear();
        assert_eq!(template_hash(&t), template_hash(&t.clone()));
        t.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("app".into(), "web".into());
        assert_ne!(template_hash(&t), h);
    }

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        let d = Deployment::default();
        assert_eq!(surge_and_unavailable(&d, 10), (3, 2));
        assert_eq!(surge_and_unavailable(&d, 1), (1, 0));
    }
}
