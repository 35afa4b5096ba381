//! Owner references, label selectors and pod states: the vocabulary the
//! workload controllers share.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::{Metadata, Resource};

use super::runtime::{key_of, Change, Informer, Object, WorkQueue};

/// The owner reference a controller puts on what it creates.
pub fn controller_ref<K: Resource + Metadata<Ty = ObjectMeta>>(owner: &K) -> OwnerReference {
    let m = owner.metadata();
    OwnerReference {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference marked `controller`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: Option<&str>) -> bool {
    uid.is_some_and(|uid| controller_of(meta).is_some_and(|o| o.uid == uid))
}

/// Send each pod change to the queue of the `K` that should look at it:
/// a controlled pod to its controller (when that is a `K`), an orphan to
/// every `K` in its namespace whose selector (`selector_of`) matches it,
/// since any of them may adopt it.
pub fn route_pods_to<K: Object>(
    pods: &Informer<Pod>,
    owners: &Informer<K>,
    queue: &Arc<WorkQueue>,
    selector_of: fn(&K) -> Option<&LabelSelector>,
) {
    let q = queue.clone();
    let owners = owners.clone();
    pods.on_change(move |c: &Change<'_, Pod>| {
        let meta = &c.object().metadata;
        let ns = meta.namespace.as_deref().unwrap_or("");
        match controller_of(meta) {
            Some(o) if o.kind == K::KIND => q.add(format!("{ns}/{}", o.name)),
            Some(_) => {}
            None => {
                for owner in owners.list_in(ns) {
                    if selector_of(&owner).is_some_and(|s| selects(s, meta.labels.as_ref())) {
                        q.add(key_of(owner.metadata()));
                    }
                }
            }
        }
    });
}

/// Whether `labels` satisfy `selector`. An empty selector matches nothing,
/// as for workload controllers (it would otherwise adopt every pod).
pub fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let ml = selector.match_labels.as_ref();
    let me = selector.match_expressions.as_ref();
    if ml.is_none_or(|m| m.is_empty()) && me.is_none_or(|m| m.is_empty()) {
        return false;
    }
    let labels_ok = ml
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = me.into_iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// A pod that still runs or will: not finished, not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod's Ready condition became True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<DateTime<Utc>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        })
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    ready_since(pod).is_some_and(|since| {
        min_ready_seconds <= 0 || since + chrono::Duration::seconds(min_ready_seconds as i64) <= now
    })
}

/// Deletion order when scaling down: the pods that matter least first
/// (unscheduled, then pending, then not ready, then the newest).
pub fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<Option<DateTime<Utc>>>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    (
        scheduled as u8,
        matches!(phase, Some("Running")) as u8,
        is_ready(pod) as u8,
        std::cmp::Reverse(pod.metadata.creation_timestamp.as_ref().map(|t| t.0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selects(&sel, Some(&labels(&[("app", "web")]))));
        assert!(selects(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "fe")]))
        ));
        assert!(!selects(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "db")]))
        ));
        assert!(!selects(&sel, Some(&labels(&[("app", "api")]))));
        assert!(!selects(
            &LabelSelector::default(),
            Some(&labels(&[("app", "web")]))
        ));
    }
}
