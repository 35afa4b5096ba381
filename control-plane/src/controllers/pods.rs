//! What the workload controllers do to their pods: adopt an orphan, create
//! in slow-start batches, delete, each with the event `kubectl describe`
//! shows on the owner.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde_json::json;

use super::events::Kind;
use super::ownership::controller_ref;
use super::{Ctx, Result};

/// Pods created at once at most. Creation starts with one and doubles
/// while it succeeds, so a bad template costs one failed create, not a
/// thousand.
const BURST: usize = 500;

/// A new pod of `owner`'s from its `template`: the template's labels (with
/// `labels` added) and annotations, `owner` as its controller, and `name`,
/// or a name generated from the owner's.
pub fn from_template<K: Resource + Metadata<Ty = ObjectMeta>>(
    owner: &K,
    template: Option<&PodTemplateSpec>,
    labels: &[(&str, &str)],
    name: Option<String>,
) -> Pod {
    let template = template.cloned().unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut all = tm.labels.unwrap_or_default();
    for (k, v) in labels {
        all.insert(k.to_string(), v.to_string());
    }
    let meta = owner.metadata();
    Pod {
        metadata: ObjectMeta {
            generate_name: name
                .is_none()
                .then(|| format!("{}-", meta.name.as_deref().unwrap_or("pod"))),
            name,
            namespace: meta.namespace.clone(),
            labels: (!all.is_empty()).then_some(all),
            annotations: tm.annotations,
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The revision an object was written at.
pub fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Make `owner` the controller of `pod`, an orphan it selects. The patch
/// carries the pod's resourceVersion: a pod changed since is not taken.
pub async fn adopt<K>(ctx: &Ctx, owner: &K, pod: &Pod) -> Result<Arc<Pod>>
where
    K: Resource + Metadata<Ty = ObjectMeta>,
{
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(owner));
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.metadata.resource_version,
    }});
    let adopted: Pod = ctx
        .client
        .patch(
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref().unwrap_or(""),
            None,
            &patch,
        )
        .await?;
    Ok(Arc::new(adopted))
}

/// Create `pods` for `owner` in doubling batches, counting each one made
/// in `created`; the highest revision written. The first failure is
/// recorded as a FailedCreate event and returned, and stops creation.
pub async fn create_pods(
    ctx: &Ctx,
    component: &'static str,
    owner: &ObjectReference,
    pods: Vec<Pod>,
    created: &mut usize,
) -> Result<i64> {
    let mut batch = 1;
    let mut last = 0;
    let mut rest = pods.into_iter().peekable();
    while rest.peek().is_some() {
        let creates: Vec<_> = rest
            .by_ref()
            .take(batch)
            .map(|pod| async move { ctx.client.create(&pod).await })
            .collect();
        let mut failed = None;
        for r in futures::future::join_all(creates).await {
            match r {
                Ok(pod) => {
                    *created += 1;
                    last = last.max(revision_of(&pod.metadata));
                    let name = pod.metadata.name.as_deref().unwrap_or("");
                    ctx.recorder.record(
                        component,
                        owner.clone(),
                        Kind::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    );
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            ctx.recorder.record(
                component,
                owner.clone(),
                Kind::Warning,
                "FailedCreate",
                format!("Error creating: {e}"),
            );
            return Err(e);
        }
        batch = (batch * 2).min(BURST);
    }
    Ok(last)
}

/// Delete `pod` (if it is still the same pod), with the event on its
/// owner; returns the revision of the deletion, so that the caller can wait
/// for its cache to see it (a second reconcile must not count it again).
pub async fn delete_pod(
    ctx: &Ctx,
    component: &'static str,
    owner: &ObjectReference,
    pod: &Pod,
) -> Result<i64> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let revision = ctx
        .client
        .delete::<Pod>(
            pod.metadata.namespace.as_deref(),
            name,
            pod.metadata.uid.as_deref(),
            None,
        )
        .await?;
    if revision == 0 {
        return Ok(0); // already gone
    }
    let message = match (owner.kind.as_deref(), owner.name.as_deref()) {
        (Some("StatefulSet"), Some(set)) => {
            format!("delete Pod {name} in StatefulSet {set} successful")
        }
        _ => format!("Deleted pod: {name}"),
    };
    ctx.recorder.record(
        component,
        owner.clone(),
        Kind::Normal,
        "SuccessfulDelete",
        message,
    );
    Ok(revision)
}
