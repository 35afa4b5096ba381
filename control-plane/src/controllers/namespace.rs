//! Namespace: a namespace marked Terminating (by its deletion) is emptied,
//! every object in it deleted, and then deleted itself.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;

use super::runtime::{key_of, Action, Change, WorkQueue};
use super::{Ctx, Result};

pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("namespace");
    let q = queue.clone();
    ctx.namespaces.on_change(move |c: &Change<'_, Namespace>| {
        if let Change::Applied { new, .. } = c {
            if new.metadata.deletion_timestamp.is_some() {
                q.add(key_of(&new.metadata));
            }
        }
    });
    queue
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(ns) = ctx.namespaces.get(&key) else {
        return Ok(Action::Done);
    };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::Done);
    }
    ctx.client.api().empty_namespace(&key).await?;
    tracing::info!(namespace = key, "deleted");
    Ok(Action::Done)
}
