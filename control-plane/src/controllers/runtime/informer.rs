//! An informer: a cache of one resource's objects on this master, filled by
//! a list and kept current by a watch on the local store (no polling). Its
//! handlers are told of every change after the cache has it; they only map
//! the change to work-queue keys, so they run inline.
//!
//! A watch that ends (history compacted, a read error) is followed by a fresh
//! list; the difference against the cache is reported as changes, so a
//! handler never misses one.
//!
//! An informer holds a typed object ([`Object`]) or only an object's
//! metadata ([`PartialObjectMetadata`]), for kinds no controller reads
//! whole but the garbage collector must still see.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource as K8sResource};
use raft_store::mvcc::{EventKind, KeyRange};
use raft_store::watch::WatchItem;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::Resource;
use crate::registry::Registry;

/// What a Kubernetes object type needs to be cached.
pub trait Object:
    K8sResource + Metadata<Ty = ObjectMeta> + DeserializeOwned + Clone + Send + Sync + 'static
{
}

impl<T> Object for T where
    T: K8sResource + Metadata<Ty = ObjectMeta> + DeserializeOwned + Clone + Send + Sync + 'static
{
}

/// What an informer can cache: anything that decodes from a stored object
/// and has object metadata.
pub trait Cached: DeserializeOwned + Send + Sync + 'static {
    fn meta(&self) -> &ObjectMeta;
}

impl<T: Object> Cached for T {
    fn meta(&self) -> &ObjectMeta {
        self.metadata()
    }
}

/// An object of any kind, of which only the metadata is kept.
#[derive(Debug, Clone, Deserialize)]
pub struct PartialObjectMetadata {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

impl Cached for PartialObjectMetadata {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// A handler of metadata changes: the object's metadata, and whether it
/// was deleted.
pub type MetaHandler = Box<dyn Fn(&ObjectMeta, bool) + Send + Sync>;

/// An informer of any type: to start them all, wait for them, and follow
/// the metadata of every kind (the garbage collector).
pub trait AnyInformer: Send + Sync {
    /// The resource it caches.
    fn resource(&self) -> &'static Resource;
    fn start(&self, registry: Registry, cancel: CancellationToken);
    fn synced(&self) -> BoxFuture<'_, ()>;
    /// The metadata of the cached object at `key`.
    fn meta(&self, key: &str) -> Option<ObjectMeta>;
    /// Call `f` on every change with the object's metadata, and whether
    /// it was deleted.
    fn on_meta_change(&self, f: MetaHandler);
}

impl<K: Cached> AnyInformer for Informer<K> {
    fn resource(&self) -> &'static Resource {
        self.inner.resource
    }

    fn start(&self, registry: Registry, cancel: CancellationToken) {
        tokio::spawn(self.clone().run(registry, cancel));
    }

    fn synced(&self) -> BoxFuture<'_, ()> {
        Box::pin(Informer::synced(self))
    }

    fn meta(&self, key: &str) -> Option<ObjectMeta> {
        self.get(key).map(|o| o.meta().clone())
    }

    fn on_meta_change(&self, f: MetaHandler) {
        self.on_change(move |c| f(c.object().meta(), matches!(c, Change::Deleted(_))));
    }
}

/// One change, as handlers see it.
pub enum Change<'a, K> {
    /// Created (no `old`) or modified.
    Applied {
        old: Option<&'a K>,
        new: &'a K,
    },
    Deleted(&'a K),
}

impl<K> Change<'_, K> {
    /// The object as it is now, or as it was before it was deleted.
    pub fn object(&self) -> &K {
        match self {
            Change::Applied { new, .. } => new,
            Change::Deleted(o) => o,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;

struct Inner<K> {
    resource: &'static Resource,
    prefix: String,
    cache: RwLock<HashMap<String, Arc<K>>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: watch::Sender<bool>,
    /// The store revision the cache reflects.
    revision: watch::Sender<i64>,
}

pub struct Informer<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            inner: self.inner.clone(),
        }
    }
}

/// The cache key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn key_of(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("");
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// `namespace/name` split back into its parts.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

impl<K: Object> Informer<K> {
    /// An informer over the store prefix that holds `K`.
    pub fn new() -> Self {
        Self::of(crate::controllers::client::resource_of::<K>())
    }
}

impl<K: Cached> Informer<K> {
    /// An informer over the objects of resource `r`.
    pub fn of(r: &'static Resource) -> Self {
        Informer {
            inner: Arc::new(Inner {
                resource: r,
                prefix: crate::api::prefix_of(r),
                cache: RwLock::new(HashMap::new()),
                handlers: RwLock::new(Vec::new()),
                synced: watch::channel(false).0,
                revision: watch::channel(0).0,
            }),
        }
    }

    /// Call `f` on every change, from the first list on.
    pub fn on_change(&self, f: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        self.write_handlers().push(Box::new(f));
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read_cache().get(key).cloned()
    }

    pub fn get_in(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        match namespace {
            Some(ns) => self.get(&format!("{ns}/{name}")),
            None => self.get(name),
        }
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.read_cache().values().cloned().collect()
    }

    /// The objects in one namespace.
    pub fn list_in(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read_cache()
            .values()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }

    pub fn keys(&self) -> Vec<String> {
        self.read_cache().keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read_cache().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first list is in the cache.
    pub async fn synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Wait until the cache reflects store revision `revision` (a write
    /// this master just made), so a reconcile reads its own writes.
    pub async fn caught_up(&self, revision: i64) -> Result<(), crate::controllers::Error> {
        let mut rx = self.inner.revision.subscribe();
        let reached = matches!(
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|r| *r >= revision)).await,
            Ok(Ok(_))
        );
        if reached {
            Ok(())
        } else {
            Err(crate::controllers::Error::Invalid(format!(
                "the cache of {} did not reach revision {revision}",
                self.inner.prefix
            )))
        }
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<K>>> {
        self.inner.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<K>>> {
        self.inner.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    fn write_handlers(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Handler<K>>> {
        self.inner
            .handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self, change: Change<'_, K>) {
        let handlers = self
            .inner
            .handlers
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for h in handlers.iter() {
            h(&change);
        }
    }

    /// Put an object in the cache and tell the handlers.
    fn apply(&self, object: K) {
        let key = key_of(object.meta());
        let new = Arc::new(object);
        let old = self.write_cache().insert(key, new.clone());
        self.notify(Change::Applied {
            old: old.as_deref(),
            new: &new,
        });
    }

    fn remove(&self, key: &str) {
        let old = self.write_cache().remove(key);
        if let Some(old) = old {
            self.notify(Change::Deleted(&old));
        }
    }

    /// List, then follow the watch, until `cancel`; relist when a watch ends.
    pub async fn run(self, registry: Registry, cancel: CancellationToken) {
        loop {
            let after = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.relist(&registry) => r,
            };
            let Some(after) = after else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                }
            };
            self.inner.synced.send_replace(true);
            tokio::select! {
                _ = cancel.cancelled() => return,
                why = self.follow(&registry, after) => {
                    tracing::debug!(prefix = %self.inner.prefix, "watch ended ({why}); listing again");
                }
            }
        }
    }

    /// Replace the cache with a fresh list; Some(the list's revision).
    async fn relist(&self, registry: &Registry) -> Option<i64> {
        let page = match registry.list(&self.inner.prefix, None, 0, 0).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(prefix = %self.inner.prefix, "list failed: {e}");
                return None;
            }
        };
        let mut seen = std::collections::HashSet::new();
        for item in page.items {
            match serde_json::from_value::<K>(item.object) {
                Ok(o) => {
                    let key = key_of(o.meta());
                    let same = self
                        .get(&key)
                        .is_some_and(|c| c.meta().resource_version == o.meta().resource_version);
                    seen.insert(key);
                    if !same {
                        self.apply(o);
                    }
                }
                Err(e) => {
                    tracing::warn!(prefix = %self.inner.prefix, "undecodable object skipped: {e}")
                }
            }
        }
        for key in self.keys() {
            if !seen.contains(&key) {
                self.remove(&key);
            }
        }
        self.inner.revision.send_replace(page.revision);
        Some(page.revision)
    }

    /// Apply watch events after revision `after` until the watch ends.
    async fn follow(&self, registry: &Registry, after: i64) -> String {
        let mut watcher =
            registry.watch(KeyRange::prefix(self.inner.prefix.as_bytes()), after, false);
        loop {
            match watcher.items.recv().await {
                Some(WatchItem::Events {
                    events, revision, ..
                }) => {
                    for e in events {
                        match e.kind {
                            EventKind::Put => match registry
                                .decode(&e.kv)
                                .map_err(|e| e.to_string())
                                .and_then(|s| {
                                    serde_json::from_value::<K>(s.object).map_err(|e| e.to_string())
                                }) {
                                Ok(o) => self.apply(o),
                                Err(err) => {
                                    tracing::warn!(
                                        prefix = %self.inner.prefix,
                                        "undecodable object skipped: {err}"
                                    )
                                }
                            },
                            EventKind::Delete => {
                                let key = String::from_utf8_lossy(&e.kv.key);
                                let key = key
                                    .strip_prefix(self.inner.prefix.as_str())
                                    .unwrap_or(&key)
                                    .to_string();
                                self.remove(&key);
                            }
                        }
                    }
                    self.inner.revision.send_replace(revision);
                }
                Some(WatchItem::Compacted { compact_revision }) => {
                    return format!("compacted at {compact_revision}")
                }
                Some(WatchItem::Failed(e)) => return e,
                None => return "closed".into(),
            }
        }
    }
}

impl<K: Object> Default for Informer<K> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let meta = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("demo".into()),
            ..Default::default()
        };
        assert_eq!(key_of(&meta), "demo/web");
        assert_eq!(split_key("demo/web"), (Some("demo"), "web"));
        assert_eq!(split_key("node-1"), (None, "node-1"));
    }
}
