//! ServiceAccounts: every namespace has a `default` service account, made
//! when the namespace is and again if it is deleted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::runtime::{key_of, Action, Change, PartialObjectMetadata, WorkQueue};
use super::{Ctx, Result};

const DEFAULT: &str = "default";

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("serviceaccounts");
    let q = queue.clone();
    ctx.namespaces.on_change(move |c: &Change<'_, Namespace>| {
        if let Change::Applied { new, .. } = c {
            q.add(key_of(&new.metadata));
        }
    });
    let q = queue.clone();
    if let Some(accounts) = ctx.metadata_of("serviceaccounts") {
        accounts.on_change(move |c: &Change<'_, PartialObjectMetadata>| {
            if let Change::Deleted(old) = c {
                if old.metadata.name.as_deref() == Some(DEFAULT) {
                    q.add(old.metadata.namespace.clone().unwrap_or_default());
                }
            }
        });
    }
    queue
}

pub async fn reconcile(ctx: Arc<Ctx>, namespace: String) -> Result<Action> {
    let Some(ns) = ctx.namespaces.get(&namespace) else {
        return Ok(Action::Done);
    };
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match ctx.client.create(&account).await {
        Ok(_) => tracing::info!(namespace, "default service account created"),
        Err(e) if e.is_conflict() => {}
        Err(e) => return Err(e),
    }
    Ok(Action::Done)
}
