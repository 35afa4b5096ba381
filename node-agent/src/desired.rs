//! What this node should hold, as the masters last said: its pods and the
//! objects they reference, at a store revision. A snapshot replaces it; a
//! delta applies only on top of the revision it follows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use proto::agent::{Delta, ObjectRef, Snapshot};
use serde_json::Value;
use tokio::sync::watch;

/// kind, namespace, name.
pub type Key = (String, String, String);

#[derive(Default)]
struct Held {
    revision: i64,
    objects: BTreeMap<Key, Arc<Value>>,
    /// A snapshot has arrived since the agent started: until then, what
    /// the node holds is unknown, and no pod may be removed for not being
    /// wanted.
    synced: bool,
    /// Per kind, how many times its objects changed.
    generations: BTreeMap<String, u64>,
}

/// A delta that does not follow the revision held.
#[derive(Debug, thiserror::Error)]
#[error("delta follows revision {follows}, but this node holds revision {held}")]
pub struct Gap {
    pub follows: i64,
    pub held: i64,
}

pub struct Desired {
    held: Mutex<Held>,
    changed: watch::Sender<u64>,
}

fn key_of(kind: &str, o: &Value) -> Key {
    (
        kind.to_string(),
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        o["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

impl Default for Desired {
    fn default() -> Self {
        Desired {
            held: Mutex::new(Held::default()),
            changed: watch::channel(0).0,
        }
    }
}

impl Desired {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn replace(&self, s: Snapshot) {
        let mut held = self.lock();
        held.objects.clear();
        for g in held.generations.values_mut() {
            *g += 1;
        }
        for o in s.objects {
            *held.generations.entry(o.kind.clone()).or_default() += 1;
            match serde_json::from_slice::<Value>(&o.json) {
                Ok(v) => {
                    held.objects.insert(key_of(&o.kind, &v), Arc::new(v));
                }
                Err(e) => tracing::warn!(kind = %o.kind, "undecodable object in snapshot: {e}"),
            }
        }
        held.revision = s.revision;
        held.synced = true;
        drop(held);
        metrics::gauge!("skiff_agent_desired_revision").set(s.revision as f64);
        self.bump();
    }

    pub fn apply(&self, d: Delta) -> Result<(), Gap> {
        let mut held = self.lock();
        if d.follows != held.revision {
            return Err(Gap {
                follows: d.follows,
                held: held.revision,
            });
        }
        for o in d.upserts {
            *held.generations.entry(o.kind.clone()).or_default() += 1;
            match serde_json::from_slice::<Value>(&o.json) {
                Ok(v) => {
                    held.objects.insert(key_of(&o.kind, &v), Arc::new(v));
                }
                Err(e) => tracing::warn!(kind = %o.kind, "undecodable object in delta: {e}"),
            }
        }
        for r in d.deletes {
            *held.generations.entry(r.kind.clone()).or_default() += 1;
            held.objects.remove(&(r.kind, r.namespace, r.name));
        }
        held.revision = d.revision;
        held.synced = true;
        drop(held);
        metrics::gauge!("skiff_agent_desired_revision").set(d.revision as f64);
        self.bump();
        Ok(())
    }

    /// Ask for a snapshot next time: the revision held is no longer trusted.
    pub fn forget_revision(&self) {
        let mut held = self.lock();
        held.revision = 0;
    }

    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    pub fn synced(&self) -> bool {
        self.lock().synced
    }

    /// What the node holds, for resuming with another master.
    pub fn held(&self) -> Vec<ObjectRef> {
        self.lock()
            .objects
            .iter()
            .map(|((kind, ns, name), o)| ObjectRef {
                kind: kind.clone(),
                namespace: ns.clone(),
                name: name.clone(),
                resource_version: o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            })
            .collect()
    }

    /// A number that changes whenever an object of `kind` does.
    pub fn generation(&self, kind: &str) -> u64 {
        self.lock().generations.get(kind).copied().unwrap_or(0)
    }

    /// Every object of `kind` the node holds.
    pub fn list(&self, kind: &str) -> Vec<Arc<Value>> {
        let from = (kind.to_string(), String::new(), String::new());
        self.lock()
            .objects
            .range(from..)
            .take_while(|((k, _, _), _)| k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The objects of `kind` in namespace `ns`.
    pub fn list_in(&self, kind: &str, ns: &str) -> Vec<Arc<Value>> {
        let from = (kind.to_string(), ns.to_string(), String::new());
        self.lock()
            .objects
            .range(from..)
            .take_while(|((k, n, _), _)| k == kind && n == ns)
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn pods(&self) -> Vec<Arc<Value>> {
        self.lock()
            .objects
            .iter()
            .filter(|((kind, _, _), _)| kind == "Pod")
            .map(|(_, o)| o.clone())
            .collect()
    }

    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.lock()
            .objects
            .get(&(kind.to_string(), ns.to_string(), name.to_string()))
            .cloned()
    }
}

/// The objects of one kind, decoded into their type; an object is
/// decoded again only when it changed (a changed object is a new `Arc`).
pub struct Typed<K> {
    kind: &'static str,
    /// By the address of the object decoded, which is kept alive here so
    /// that the address is not reused.
    decoded: HashMap<usize, (Arc<Value>, Arc<K>)>,
}

impl<K: serde::de::DeserializeOwned> Typed<K> {
    pub fn new(kind: &'static str) -> Typed<K> {
        Typed {
            kind,
            decoded: HashMap::new(),
        }
    }

    /// Every object of the kind now held (those that do not decode are
    /// left out).
    pub fn refresh(&mut self, desired: &Desired) -> Vec<Arc<K>> {
        let objects = desired.list(self.kind);
        let mut decoded = HashMap::with_capacity(objects.len());
        let mut out = Vec::with_capacity(objects.len());
        for o in objects {
            let at = Arc::as_ptr(&o) as usize;
            let k = match self.decoded.remove(&at) {
                Some((_, k)) => k,
                None => match serde_json::from_value::<K>(o.as_ref().clone()) {
                    Ok(k) => Arc::new(k),
                    Err(e) => {
                        tracing::debug!(kind = self.kind, "undecodable object: {e}");
                        continue;
                    }
                },
            };
            out.push(k.clone());
            decoded.insert(at, (o, k));
        }
        self.decoded = decoded;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::agent::Object;
    use serde_json::json;

    fn pod(name: &str, rv: &str) -> Object {
        Object {
            kind: "Pod".into(),
            json: serde_json::to_vec(
                &json!({"metadata": {"name": name, "namespace": "d", "resourceVersion": rv}}),
            )
            .unwrap()
            .into(),
        }
    }

    #[test]
    fn deltas_apply_only_on_the_revision_they_follow() {
        let d = Desired::default();
        assert!(!d.synced());
        d.replace(Snapshot {
            revision: 10,
            objects: vec![pod("a", "9")],
        });
        let gap = d
            .apply(Delta {
                revision: 14,
                follows: 12,
                upserts: vec![pod("b", "14")],
                deletes: vec![],
            })
            .unwrap_err();
        assert_eq!((gap.follows, gap.held), (12, 10));
        assert_eq!(d.pods().len(), 1);
        d.apply(Delta {
            revision: 12,
            follows: 10,
            upserts: vec![pod("b", "12")],
            deletes: vec![ObjectRef {
                kind: "Pod".into(),
                namespace: "d".into(),
                name: "a".into(),
                resource_version: String::new(),
            }],
        })
        .unwrap();
        assert_eq!(d.revision(), 12);
        let held = d.held();
        assert_eq!(held.len(), 1);
        assert_eq!(
            (held[0].name.as_str(), held[0].resource_version.as_str()),
            ("b", "12")
        );
    }
}
