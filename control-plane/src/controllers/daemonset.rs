//! DaemonSet: one pod per eligible node. A node is eligible when it matches
//! the template's nodeSelector and required node affinity and the pod
//! tolerates its NoSchedule and NoExecute taints (counting the tolerations
//! every daemon pod gets, so a not-ready or cordoned node keeps its pod).
//!
//! Each pod is pinned to its node by required node affinity (`matchFields
//! metadata.name In [node]`) and the scheduler binds it there, so resources
//! and host ports are still checked. A pod on a node that no longer
//! qualifies is deleted (one whose only problem is a new NoSchedule taint
//! stays, as in Kubernetes). Pods carry `controller-revision-hash`, the
//! template's hash; RollingUpdate replaces pods of an older hash while no
//! more than `maxUnavailable` nodes lack an available pod, OnDelete leaves
//! them until someone deletes them. `maxSurge` is not supported: an old pod
//! goes before its replacement is created. No ControllerRevisions are
//! written, so `kubectl rollout history/undo` have nothing to show.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::deployment::{scaled, template_hash};
use super::events::reference;
use super::ownership::{
    controlled_by, controller_of, is_active, is_available, is_ready, route_pods_to, selects,
};
use super::pods::{self, adopt, create_pods, delete_pod, revision_of};
use super::runtime::{key_of, split_key, Action, Change, WorkQueue};
use super::{Ctx, Result};
use crate::scheduler::plugins::{term_matches, tolerates};

const COMPONENT: &str = "daemonset-controller";
/// The pod label naming the template revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("daemonset");
    let q = queue.clone();
    ctx.daemonsets
        .on_change(move |c: &Change<'_, DaemonSet>| q.add(key_of(&c.object().metadata)));
    route_pods_to(&ctx.pods, &ctx.daemonsets, &queue, |ds| {
        ds.spec.as_ref().map(|s| &s.selector)
    });
    // Which nodes qualify depends on their labels, taints and cordon.
    let q = queue.clone();
    let sets = ctx.daemonsets.clone();
    ctx.nodes.on_change(move |c: &Change<'_, Node>| {
        let relevant = match c {
            Change::Applied {
                old: Some(old),
                new,
            } => old.metadata.labels != new.metadata.labels || old.spec != new.spec,
            _ => true,
        };
        if relevant {
            for key in sets.keys() {
                q.add(key);
            }
        }
    });
    queue
}

/// Whether daemon pods go on `node`: (a new one may be placed, an existing
/// one may stay).
pub fn placement(template: &PodSpec, node: &Node) -> (bool, bool) {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or("");
    let selector_ok = template
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let terms = template
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or(&[]);
    let affinity_ok = terms.is_empty() || terms.iter().any(|t| term_matches(t, labels, name));
    if !(selector_ok && affinity_ok) {
        return (false, false);
    }
    let tolerations = daemon_tolerations(template.tolerations.as_deref().unwrap_or(&[]));
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let untolerated = |effect: &str| {
        taints
            .iter()
            .filter(|t| t.effect == effect)
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    (!no_execute && !untolerated("NoSchedule"), !no_execute)
}

/// `own` plus what every daemon pod tolerates: an unready or unreachable
/// node (never evicted), node pressure, and a cordon.
pub fn daemon_tolerations(own: &[Toleration]) -> Vec<Toleration> {
    const ADDED: &[(&str, &str)] = &[
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    let mut out = own.to_vec();
    for (key, effect) in ADDED {
        let present = own
            .iter()
            .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect));
        if !present {
            out.push(Toleration {
                key: Some(key.to_string()),
                operator: Some("Exists".into()),
                effect: Some(effect.to_string()),
                ..Default::default()
            });
        }
    }
    out
}

/// The node a daemon pod is for: where it is bound, else the node its
/// affinity names.
fn node_of(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref())
        .filter(|v| v.len() == 1)
        .map(|v| v[0].as_str())
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
}

/// The pod for `node`, from `ds`'s template.
fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let mut pod = pods::from_template(ds, template, &[(REVISION_LABEL, hash)], None);
    let spec = pod.spec.get_or_insert_with(Default::default);
    // The node was already checked against the template's terms; the
    // pinned name replaces them (preferred terms stay).
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
    spec.tolerations = Some(daemon_tolerations(
        spec.tolerations.as_deref().unwrap_or(&[]),
    ));
    pod
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(ds) = ctx.daemonsets.get(&key) else {
        return Ok(Action::Done);
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::Done);
    };
    let (ns, _) = split_key(&key);
    let ns = ns.unwrap_or("default");
    let hash = template_hash(&spec.template);
    let template = spec.template.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = ctx.now();

    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    let mut delete: Vec<Arc<Pod>> = Vec::new();
    for pod in ctx.pods.list_in(ns) {
        let pod = if controlled_by(&pod.metadata, ds.metadata.uid.as_deref()) {
            pod
        } else if controller_of(&pod.metadata).is_none()
            && is_active(&pod)
            && selects(&spec.selector, pod.metadata.labels.as_ref())
        {
            adopt(&ctx, &*ds, &pod).await?
        } else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            by_node
                .entry(node_of(&pod).unwrap_or("").into())
                .or_default()
                .push(pod);
        } else if !is_active(&pod) {
            // Finished (a daemon should not): replace it.
            delete.push(pod);
        } else {
            match node_of(&pod) {
                Some(n) => by_node.entry(n.to_string()).or_default().push(pod),
                None => delete.push(pod),
            }
        }
    }

    let mut create: Vec<String> = Vec::new();
    // Nodes that keep a pod and have one: (whether a replacement may be
    // placed there, the pod).
    let mut running: Vec<(bool, Arc<Pod>)> = Vec::new();
    let mut unavailable = 0;
    let mut nodes = ctx.nodes.list();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for node in &nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (place, stay) = placement(&template, node);
        let pods = by_node.remove(&name).unwrap_or_default();
        let terminating = pods.iter().any(|p| p.metadata.deletion_timestamp.is_some());
        let mut live: Vec<Arc<Pod>> = pods
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if !(place || (stay && !live.is_empty())) {
            delete.extend(live);
            continue;
        }
        if place && !live.iter().any(|p| is_available(p, min_ready, now)) {
            unavailable += 1;
        }
        match live.len() {
            // A pod still terminating here is waited for.
            0 if place && !terminating => create.push(name),
            0 => {}
            1 => running.push((place, live.remove(0))),
            _ => {
                // Keep the best one: current hash, ready, oldest.
                live.sort_by_key(|p| {
                    (
                        hash_of(p) != Some(hash.as_str()),
                        !is_ready(p),
                        p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    )
                });
                let keep = live.remove(0);
                delete.extend(live);
                running.push((place, keep));
            }
        }
    }
    // Nodes that are gone.
    for pods in by_node.into_values() {
        delete.extend(
            pods.into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none()),
        );
    }

    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    if rolling {
        let desired = running.iter().filter(|(place, _)| *place).count() + create.len();
        let max_unavailable = max_unavailable(&ds, desired as i32);
        let old = running
            .iter()
            .filter(|(place, p)| *place && hash_of(p) != Some(hash.as_str()));
        // Old pods that are not available cost nothing to replace.
        let (down, up): (Vec<_>, Vec<_>) = old.partition(|(_, p)| !is_available(p, min_ready, now));
        delete.extend(down.into_iter().map(|(_, p)| p.clone()));
        for (_, p) in up {
            if unavailable >= max_unavailable {
                break;
            }
            unavailable += 1;
            delete.push(p.clone());
        }
    }

    let owner = reference(&*ds);
    let new = create.iter().map(|n| pod_for(&ds, n, &hash)).collect();
    let mut last_write = create_pods(&ctx, COMPONENT, &owner, new, &mut 0).await?;
    for pod in &delete {
        last_write = last_write.max(delete_pod(&ctx, COMPONENT, &owner, pod).await?);
    }
    if last_write > 0 {
        ctx.pods.caught_up(last_write).await?;
    }
    let waiting = update_status(&ctx, &ds, &hash).await?;
    Ok(if waiting {
        Action::After(std::time::Duration::from_secs(min_ready.max(1) as u64))
    } else {
        Action::Done
    })
}

/// `maxUnavailable` (default 1) of `desired` nodes, rounded up, at least 1.
fn max_unavailable(ds: &DaemonSet, desired: i32) -> i32 {
    let v = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    scaled(Some(&v), desired, "1", true).max(1)
}

/// Write the counts as the cache now has them, if they changed; whether a
/// ready pod is still waiting out `minReadySeconds`.
async fn update_status(ctx: &Ctx, ds: &DaemonSet, hash: &str) -> Result<bool> {
    let uid = ds.metadata.uid.as_deref();
    let ns = ds.metadata.namespace.as_deref().unwrap_or("default");
    let spec = ds.spec.as_ref();
    let template = spec
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let now = ctx.now();
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for pod in ctx.pods.list_in(ns) {
        if controlled_by(&pod.metadata, uid) && is_active(&pod) {
            if let Some(n) = node_of(&pod) {
                by_node.entry(n.to_string()).or_default().push(pod.clone());
            }
        }
    }
    let mut s = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut available, mut updated) = (0, 0);
    let mut waiting = false;
    for node in ctx.nodes.list() {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let pods = by_node.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let (place, _) = placement(&template, &node);
        if !place {
            if !pods.is_empty() {
                s.number_misscheduled += 1;
            }
            continue;
        }
        s.desired_number_scheduled += 1;
        if pods.is_empty() {
            continue;
        }
        s.current_number_scheduled += 1;
        if pods.iter().any(|p| is_ready(p)) {
            s.number_ready += 1;
        }
        if pods.iter().any(|p| is_available(p, min_ready, now)) {
            available += 1;
        } else if pods.iter().any(|p| is_ready(p)) {
            waiting = true;
        }
        if pods.iter().any(|p| hash_of(p) == Some(hash)) {
            updated += 1;
        }
    }
    s.number_available = Some(available);
    s.number_unavailable = Some(s.desired_number_scheduled - available);
    s.updated_number_scheduled = Some(updated);
    if ds.status.as_ref() != Some(&s) {
        let mut next = ds.clone();
        next.status = Some(s);
        let written = ctx.client.replace_status(&next).await?;
        ctx.daemonsets
            .caught_up(revision_of(&written.metadata))
            .await?;
    }
    Ok(waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn placement_follows_selector_affinity_and_taints() {
        let mut t = PodSpec {
            node_selector: Some(BTreeMap::from([("role".into(), "edge".into())])),
            ..Default::default()
        };
        assert_eq!(
            placement(&t, &node("a", &[("role", "edge")], &[])),
            (true, true)
        );
        assert_eq!(
            placement(&t, &node("a", &[("role", "core")], &[])),
            (false, false)
        );
        // The added tolerations cover not-ready and cordoned nodes.
        let sick = node(
            "a",
            &[("role", "edge")],
            &[
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ],
        );
        assert_eq!(placement(&t, &sick), (true, true));
        // A foreign NoSchedule taint: no new pod, but an old one stays.
        let gpu = node("a", &[("role", "edge")], &[("gpu", "NoSchedule")]);
        assert_eq!(placement(&t, &gpu), (false, true));
        let evict = node("a", &[("role", "edge")], &[("gpu", "NoExecute")]);
        assert_eq!(placement(&t, &evict), (false, false));
        t.tolerations = Some(vec![Toleration {
            key: Some("gpu".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert_eq!(placement(&t, &evict), (true, true));
        // Required node affinity by name.
        t.node_selector = None;
        t.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: None,
                        match_fields: Some(vec![NodeSelectorRequirement {
                            key: "metadata.name".into(),
                            operator: "In".into(),
                            values: Some(vec!["b".into()]),
                        }]),
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(placement(&t, &node("a", &[], &[])), (false, false));
        assert_eq!(placement(&t, &node("b", &[], &[])), (true, true));
    }

    #[test]
    fn a_daemon_pod_is_pinned_to_its_node_and_tolerates_node_trouble() {
        let ds = DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::apps::v1::DaemonSetSpec {
                template: k8s_openapi::api::core::v1::PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "agent".into())])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        tolerations: Some(vec![Toleration {
                            key: Some("node.kubernetes.io/not-ready".into()),
                            operator: Some("Exists".into()),
                            effect: Some("NoExecute".into()),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        };
        let pod = pod_for(&ds, "n7", "abc");
        assert_eq!(node_of(&pod), Some("n7"));
        assert_eq!(hash_of(&pod), Some("abc"));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["app"], "agent");
        assert!(controlled_by(&pod.metadata, Some("u1")));
        let tolerations = pod.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        let keys: Vec<&str> = tolerations
            .iter()
            .filter_map(|t| t.key.as_deref())
            .collect();
        assert_eq!(
            keys.iter()
                .filter(|k| **k == "node.kubernetes.io/not-ready")
                .count(),
            1,
            "no duplicate of the template's own toleration"
        );
        assert!(keys.contains(&"node.kubernetes.io/unreachable"));
        assert!(keys.contains(&"node.kubernetes.io/unschedulable"));
    }

    #[test]
    fn max_unavailable_defaults_to_one_and_rounds_percentages_up() {
        let mut ds = DaemonSet::default();
        assert_eq!(max_unavailable(&ds, 10), 1);
        ds.spec = Some(k8s_openapi::api::apps::v1::DaemonSetSpec {
            update_strategy: Some(k8s_openapi::api::apps::v1::DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(k8s_openapi::api::apps::v1::RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::String("25%".into())),
                    max_surge: None,
                }),
            }),
            ..Default::default()
        });
        assert_eq!(max_unavailable(&ds, 10), 3);
        assert_eq!(max_unavailable(&ds, 0), 1);
    }
}
