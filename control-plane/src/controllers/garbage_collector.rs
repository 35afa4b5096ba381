//! Garbage collector: objects whose owners are all gone are deleted
//! (background cascade); an owner deleted in the foreground waits, under its
//! `foregroundDeletion` finalizer, until its blocking dependents are gone;
//! an owner deleted with `orphan` first releases its dependents.
//!
//! It follows every served kind, through the controllers' typed caches or,
//! for kinds no controller reads (ConfigMaps, Secrets, ...), caches of
//! metadata only, and indexes them by uid and by owner uid. The cache decides
//! what to look at; before deleting anything, a linearizable read confirms
//! that the owner really is gone (the owner's cache may lag the dependent's).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{json, Value};

use super::client::Client;
use super::runtime::{key_of, Action, AnyInformer, WorkQueue};
use super::{Ctx, Result};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// One kind the collector follows: its informer, typed or of metadata only.
struct Tracked(Box<dyn AnyInformer>);

impl Tracked {
    fn kind(&self) -> &'static str {
        self.0.resource().kind
    }

    fn meta(&self, key: &str) -> Option<ObjectMeta> {
        self.0.meta(key)
    }

    async fn delete(&self, c: &Client, m: &ObjectMeta, policy: &str) -> Result<()> {
        c.delete_in(
            self.0.resource(),
            m.namespace.as_deref(),
            m.name.as_deref().unwrap_or(""),
            m.uid.as_deref(),
            Some(policy),
        )
        .await
        .map(drop)
    }

    async fn patch(&self, c: &Client, m: &ObjectMeta, patch: Value) -> Result<()> {
        c.patch_in(
            self.0.resource(),
            m.namespace.as_deref(),
            m.name.as_deref().unwrap_or(""),
            None,
            &patch,
        )
        .await
        .map(drop)
    }
}

/// A cached object: its kind's index in `kinds` and its key.
type Ref = (usize, String);

#[derive(Default)]
struct Index {
    by_uid: HashMap<String, Ref>,
    dependents: HashMap<String, HashSet<Ref>>,
    /// The owner uids each object was indexed under, to unindex it.
    owners_of: HashMap<Ref, Vec<String>>,
}

impl Index {
    /// Forget `me` as a dependent of the owners it had.
    fn unlink(&mut self, me: &Ref) {
        for o in self.owners_of.remove(me).into_iter().flatten() {
            if let Some(set) = self.dependents.get_mut(&o) {
                set.remove(me);
                if set.is_empty() {
                    self.dependents.remove(&o);
                }
            }
        }
    }
}

pub struct Collector {
    kinds: Vec<Tracked>,
    index: Mutex<Index>,
}

impl Collector {
    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dependents_of(&self, uid: &str) -> Vec<Ref> {
        self.lock()
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn queue_key((kind, key): &Ref) -> String {
    format!("{kind}|{key}")
}

fn parse_key(s: &str) -> Option<Ref> {
    let (k, key) = s.split_once('|')?;
    Some((k.parse().ok()?, key.to_string()))
}

/// Track `informer`'s kind: keep the index and queue what may need work.
fn track(
    kinds: &mut Vec<Tracked>,
    informer: Box<dyn AnyInformer>,
    collector: &Arc<std::sync::OnceLock<Arc<Collector>>>,
    queue: &Arc<WorkQueue>,
) {
    let idx = kinds.len();
    let cell = collector.clone();
    let q = queue.clone();
    informer.on_meta_change(Box::new(move |meta: &ObjectMeta, deleted: bool| {
        let Some(gc) = cell.get() else { return };
        let key = key_of(meta);
        let uid = meta.uid.clone().unwrap_or_default();
        let owners: Vec<String> = meta
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.clone())
            .collect();
        let me = (idx, key);
        let mut index = gc.lock();
        index.unlink(&me);
        if deleted {
            index.by_uid.remove(&uid);
            // Its dependents may now be orphans.
            let deps: Vec<Ref> = index
                .dependents
                .get(&uid)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            // Its owners, if waiting in the foreground, look again.
            let owners: Vec<Ref> = owners
                .iter()
                .filter_map(|o| index.by_uid.get(o).cloned())
                .collect();
            drop(index);
            for d in deps.iter().chain(&owners) {
                q.add(queue_key(d));
            }
            return;
        }
        index.by_uid.insert(uid, me.clone());
        for o in &owners {
            index
                .dependents
                .entry(o.clone())
                .or_default()
                .insert(me.clone());
        }
        if !owners.is_empty() {
            index.owners_of.insert(me.clone(), owners.clone());
        }
        // A dependent changed: an owner waiting in the foreground looks again.
        let waiting: Vec<Ref> = owners
            .iter()
            .filter_map(|o| index.by_uid.get(o).cloned())
            .collect();
        drop(index);
        let marked = meta.deletion_timestamp.is_some()
            && meta
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == FOREGROUND || f == ORPHAN);
        if marked || !owners.is_empty() {
            q.add(queue_key(&me));
        }
        for owner in &waiting {
            q.add(queue_key(owner));
        }
    }));
    kinds.push(Tracked(informer));
}

/// Follow every served kind: the typed caches the controllers share, and
/// caches of metadata only for the rest.
pub fn register(ctx: &Arc<Ctx>) -> Arc<WorkQueue> {
    let queue = WorkQueue::new("garbage-collector");
    let cell = Arc::new(std::sync::OnceLock::new());
    let mut kinds = Vec::new();
    for informer in ctx.informers() {
        track(&mut kinds, informer, &cell, &queue);
    }
    let _ = cell.set(Arc::new(Collector {
        kinds,
        index: Mutex::new(Index::default()),
    }));
    let _ = ctx.collector.set(cell.get().cloned().expect("just set"));
    queue
}

pub async fn reconcile(ctx: Arc<Ctx>, key: String) -> Result<Action> {
    let Some(gc) = ctx.collector.get() else {
        return Ok(Action::Done);
    };
    let Some((kind, key)) = parse_key(&key) else {
        return Ok(Action::Done);
    };
    let Some(tracked) = gc.kinds.get(kind) else {
        return Ok(Action::Done);
    };
    let Some(meta) = tracked.meta(&key) else {
        return Ok(Action::Done);
    };
    let finalizers: Vec<&str> = meta
        .finalizers
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if meta.deletion_timestamp.is_some() && finalizers.contains(&FOREGROUND) {
        return foreground(&ctx, gc, tracked, &meta).await;
    }
    if meta.deletion_timestamp.is_some() && finalizers.contains(&ORPHAN) {
        return orphan(&ctx, gc, tracked, &meta).await;
    }
    let owners = meta.owner_references.as_deref().unwrap_or(&[]);
    if owners.is_empty() || meta.deletion_timestamp.is_some() {
        return Ok(Action::Done);
    }
    for o in owners {
        if owner_exists(&ctx, gc, &meta, o).await? {
            return Ok(Action::Done);
        }
    }
    tracing::debug!(kind = tracked.kind(), key, "owners gone: deleting");
    tracked.delete(&ctx.client, &meta, "Background").await?;
    Ok(Action::Done)
}

/// Whether the owner `o` of `meta` exists: from the cache if it is there,
/// else from a linearizable read (the cache may lag, or not hold the kind).
async fn owner_exists(
    ctx: &Ctx,
    gc: &Collector,
    meta: &ObjectMeta,
    o: &OwnerReference,
) -> Result<bool> {
    if gc.lock().by_uid.contains_key(&o.uid) {
        return Ok(true);
    }
    let (group, version) = match o.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", o.api_version.as_str()),
    };
    let Some(r) = crate::api::find_kind(group, version, &o.kind) else {
        // A kind this server does not serve cannot be an owner here.
        return Ok(false);
    };
    let ns = if r.namespaced {
        meta.namespace.as_deref()
    } else {
        None
    };
    match ctx.client.api().get(r, ns, &o.name).await {
        Ok(s) => Ok(s.object.pointer("/metadata/uid").and_then(Value::as_str) == Some(&o.uid)),
        Err(e) if e.reason == "NotFound" => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn without_finalizer(meta: &ObjectMeta, f: &str) -> Value {
    let rest: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|x| *x != f)
        .collect();
    json!({"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}})
}

/// Foreground: delete the dependents; once none blocks, let the owner go.
async fn foreground(
    ctx: &Ctx,
    gc: &Collector,
    tracked: &Tracked,
    meta: &ObjectMeta,
) -> Result<Action> {
    let uid = meta.uid.clone().unwrap_or_default();
    let mut blocking = 0;
    for (kind, key) in gc.dependents_of(&uid) {
        let Some(t) = gc.kinds.get(kind) else {
            continue;
        };
        let Some(dep) = t.meta(&key) else { continue };
        let blocks = dep
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
        if blocks {
            blocking += 1;
        }
        if dep.deletion_timestamp.is_none() {
            t.delete(&ctx.client, &dep, "Foreground").await?;
        }
    }
    if blocking == 0 {
        tracked
            .patch(&ctx.client, meta, without_finalizer(meta, FOREGROUND))
            .await?;
    }
    Ok(Action::Done)
}

/// Orphan: remove the owner from its dependents, then let it go.
async fn orphan(ctx: &Ctx, gc: &Collector, tracked: &Tracked, meta: &ObjectMeta) -> Result<Action> {
    let uid = meta.uid.clone().unwrap_or_default();
    for (kind, key) in gc.dependents_of(&uid) {
        let Some(t) = gc.kinds.get(kind) else {
            continue;
        };
        let Some(dep) = t.meta(&key) else { continue };
        let refs: Vec<_> = dep
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.uid != uid)
            .collect();
        let patch =
            json!({"metadata": {"ownerReferences": refs, "resourceVersion": dep.resource_version}});
        t.patch(&ctx.client, &dep, patch).await?;
    }
    tracked
        .patch(&ctx.client, meta, without_finalizer(meta, ORPHAN))
        .await?;
    Ok(Action::Done)
}
