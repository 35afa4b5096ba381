//! The cluster's CA certificate in every namespace: ConfigMap
//! `kube-root-ca.crt` (key `ca.crt`), which the token volume of every pod
//! projects, so that a client in the pod can verify the API's certificate.
//! Made with the namespace, made again if deleted, put back if changed.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::client::resource_of;
use super::runtime::{key_of, Action, Change, PartialObjectMetadata, WorkQueue};
use super::{Ctx, Result};
use crate::api::ROOT_CA_CONFIGMAP;

const KEY: &str = "ca.crt";

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("root_ca");
    let q = queue.clone();
    ctx.namespaces.on_change(move |c: &Change<'_, Namespace>| {
        if let Change::Applied { new, .. } = c {
            q.add(key_of(&new.metadata));
        }
    });
    let q = queue.clone();
    if let Some(configmaps) = ctx.metadata_of("configmaps") {
        configmaps.on_change(move |c: &Change<'_, PartialObjectMetadata>| {
            let meta = match c {
                Change::Applied { new, .. } => &new.metadata,
                Change::Deleted(old) => &old.metadata,
            };
            if meta.name.as_deref() == Some(ROOT_CA_CONFIGMAP) {
                q.add(meta.namespace.clone().unwrap_or_default());
            }
        });
    }
    queue
}

pub async fn reconcile(ctx: Arc<Ctx>, namespace: String) -> Result<Action> {
    let Some(pem) = ctx.settings.root_ca.clone() else {
        return Ok(Action::Done);
    };
    let Some(ns) = ctx.namespaces.get(&namespace) else {
        return Ok(Action::Done);
    };
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let api = ctx.client.api();
    match api
        .get(
            resource_of::<ConfigMap>(),
            Some(&namespace),
            ROOT_CA_CONFIGMAP,
        )
        .await
    {
        Ok(found) if found.object["data"][KEY].as_str() == Some(pem.as_str()) => {}
        Ok(_) => {
            ctx.client
                .patch::<ConfigMap>(
                    Some(&namespace),
                    ROOT_CA_CONFIGMAP,
                    None,
                    &json!({"data": {KEY: pem}}),
                )
                .await?;
            tracing::info!(namespace, "{ROOT_CA_CONFIGMAP} put back");
        }
        Err(e) if e.reason == "NotFound" => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_CONFIGMAP.into()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                data: Some([(KEY.to_string(), pem)].into()),
                ..Default::default()
            };
            match ctx.client.create(&cm).await {
                Ok(_) => tracing::debug!(namespace, "{ROOT_CA_CONFIGMAP} created"),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Action::Done)
}
