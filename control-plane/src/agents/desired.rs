//! What each node should hold, from one watch for all of them.
//!
//! The gateway keeps every pod, ConfigMap, Secret and ServiceAccount in
//! memory, fed by one typed watch ([`crate::api::WatchScope`]) over all of
//! them. A node's desired state is the pods bound to it and the objects
//! those pods reference (the node authorizer's rule: nothing else). Each
//! connected node has a [`Session`] recording what it was last sent; after
//! every store revision the nodes it touches get a delta of the
//! difference, stamped with that revision and the one their previous frame
//! named.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prost::bytes::Bytes;
use proto::agent::{to_agent, Delta, Object, ObjectRef, Snapshot, ToAgent};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::api::{Api, Change, EventType, Filter, Resource, WatchEvent, WatchScope};

/// Frames buffered for one node before it is cut off to resync.
const SESSION_BUFFER: usize = 1024;

/// The kinds a node receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    ConfigMap,
    Secret,
    ServiceAccount,
    /// The node's own Node (its spec, and its status as the masters see it).
    Node,
    /// Every Service (the node's proxy and DNS serve them all).
    Service,
    /// Every EndpointSlice.
    EndpointSlice,
    /// Every node's name, podCIDR and addresses (its routes to other
    /// nodes' pods): a Node cut down to what does not change with its
    /// heartbeat, versioned by its content.
    PeerNode,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Pod,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::ServiceAccount,
        Kind::Node,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::PeerNode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Node => "Node",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::PeerNode => "PeerNode",
        }
    }

    /// The resource it is watched as (None: derived from another kind).
    pub fn resource(self) -> Option<&'static Resource> {
        let (group, version, plural) = match self {
            Kind::Pod => ("", "v1", "pods"),
            Kind::ConfigMap => ("", "v1", "configmaps"),
            Kind::Secret => ("", "v1", "secrets"),
            Kind::ServiceAccount => ("", "v1", "serviceaccounts"),
            Kind::Node => ("", "v1", "nodes"),
            Kind::Service => ("", "v1", "services"),
            Kind::EndpointSlice => ("discovery.k8s.io", "v1", "endpointslices"),
            Kind::PeerNode => return None,
        };
        Some(
            crate::api::find_resource(group, version, plural)
                .unwrap_or_else(|| panic!("{plural} are served")),
        )
    }

    /// Sent to every node alike, as it changes (not per node).
    pub fn is_broadcast(self) -> bool {
        matches!(self, Kind::Service | Kind::EndpointSlice | Kind::PeerNode)
    }

    fn of(r: &Resource) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            k.resource()
                .is_some_and(|kr| kr.group == r.group && kr.plural == r.plural)
        })
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A Node as other nodes see it: name, podCIDRs and addresses, with a
/// resourceVersion that changes only when they do.
fn peer_view(node: &Value) -> Value {
    let mut v = serde_json::json!({
        "metadata": {"name": node["metadata"]["name"]},
        "spec": {
            "podCIDR": node["spec"]["podCIDR"],
            "podCIDRs": node["spec"]["podCIDRs"],
        },
        "status": {"addresses": node["status"]["addresses"]},
    });
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    v["metadata"]["resourceVersion"] = Value::String(format!("p{:016x}", h.finish()));
    v
}

/// An object's identity: kind, namespace, name.
pub type Key = (Kind, String, String);

fn key_of(kind: Kind, o: &Value) -> Key {
    let meta = &o["metadata"];
    (
        kind,
        meta["namespace"].as_str().unwrap_or("").to_string(),
        meta["name"].as_str().unwrap_or("").to_string(),
    )
}

fn rv_of(o: &Value) -> &str {
    o["metadata"]["resourceVersion"].as_str().unwrap_or("")
}

fn node_of(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

/// The ConfigMaps, Secrets and ServiceAccount a pod refers to.
pub fn references(pod: &Value) -> BTreeSet<Key> {
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut out = BTreeSet::new();
    let mut add = |kind: Kind, name: &Value| {
        if let Some(n) = name.as_str().filter(|n| !n.is_empty()) {
            out.insert((kind, ns.clone(), n.to_string()));
        }
    };
    let spec = &pod["spec"];
    add(
        Kind::ServiceAccount,
        spec.get("serviceAccountName")
            .filter(|v| v.is_string())
            .unwrap_or(&Value::String("default".into())),
    );
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add(Kind::Secret, &s["name"]);
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(Kind::ConfigMap, &v["configMap"]["name"]);
        add(Kind::Secret, &v["secret"]["secretName"]);
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(Kind::ConfigMap, &s["configMap"]["name"]);
            add(Kind::Secret, &s["secret"]["name"]);
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add(Kind::ConfigMap, &e["valueFrom"]["configMapKeyRef"]["name"]);
                add(Kind::Secret, &e["valueFrom"]["secretKeyRef"]["name"]);
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(Kind::ConfigMap, &e["configMapRef"]["name"]);
                add(Kind::Secret, &e["secretRef"]["name"]);
            }
        }
    }
    out
}

/// One connected node.
struct Session {
    tx: mpsc::Sender<Queued>,
    /// What the node holds: each object and its resourceVersion.
    sent: HashMap<Key, String>,
    /// The revision of the last frame sent.
    last: i64,
    /// Distinguishes a session from the one that replaced it.
    id: u64,
}

#[derive(Default)]
struct Inner {
    objects: HashMap<Key, Arc<Value>>,
    /// Each object's JSON, encoded once and shared by every frame that
    /// carries it.
    json: HashMap<Key, Bytes>,
    /// The keys of the objects every node gets.
    broadcast: BTreeSet<Key>,
    pods_by_node: HashMap<String, BTreeSet<Key>>,
    revision: i64,
    sessions: HashMap<String, Session>,
    next_id: u64,
}

impl Inner {
    /// Everything `node` should hold: its own objects and the broadcast ones.
    fn desired_all(&self, node: &str) -> BTreeMap<Key, Arc<Value>> {
        let mut out = self.desired(node);
        for k in &self.broadcast {
            if let Some(o) = self.objects.get(k) {
                out.insert(k.clone(), o.clone());
            }
        }
        out
    }

    /// The node's own Node, its pods and what they reference, as it should
    /// hold them (the broadcast kinds apart).
    fn desired(&self, node: &str) -> BTreeMap<Key, Arc<Value>> {
        let mut out = BTreeMap::new();
        let own = (Kind::Node, String::new(), node.to_string());
        if let Some(n) = self.objects.get(&own) {
            out.insert(own, n.clone());
        }
        for pod_key in self.pods_by_node.get(node).into_iter().flatten() {
            let Some(pod) = self.objects.get(pod_key) else {
                continue;
            };
            for r in references(pod) {
                if let Some(o) = self.objects.get(&r) {
                    out.insert(r, o.clone());
                }
            }
            out.insert(pod_key.clone(), pod.clone());
        }
        out
    }

    fn put(&mut self, key: Key, object: Value) {
        if key.0 == Kind::Pod {
            self.unindex_pod(&key);
            if let Some(node) = node_of(&object) {
                self.pods_by_node
                    .entry(node.to_string())
                    .or_default()
                    .insert(key.clone());
            }
        }
        if key.0.is_broadcast() {
            self.broadcast.insert(key.clone());
        }
        self.json.insert(
            key.clone(),
            Bytes::from(serde_json::to_vec(&object).unwrap_or_default()),
        );
        self.objects.insert(key, Arc::new(object));
    }

    fn remove(&mut self, key: &Key) {
        if key.0 == Kind::Pod {
            self.unindex_pod(key);
        }
        self.broadcast.remove(key);
        self.json.remove(key);
        self.objects.remove(key);
    }

    fn unindex_pod(&mut self, key: &Key) {
        let old = self
            .objects
            .get(key)
            .and_then(|o| node_of(o).map(str::to_string));
        if let Some(node) = old {
            if let Some(set) = self.pods_by_node.get_mut(&node) {
                set.remove(key);
                if set.is_empty() {
                    self.pods_by_node.remove(&node);
                }
            }
        }
    }

    /// The delta that brings `node`'s session to its desired state at
    /// `revision`, or None if it holds that already. Records it as sent.
    fn delta_for(
        &mut self,
        node: &str,
        revision: i64,
        touched: bool,
        broadcast: &(Vec<Object>, Vec<ObjectRef>),
    ) -> Option<Delta> {
        let (mut upserts, mut deletes) = (Vec::new(), Vec::new());
        if touched {
            let desired = self.desired(node);
            let session = self.sessions.get_mut(node)?;
            (upserts, deletes) = diff(&self.json, &session.sent, &desired);
            if !upserts.is_empty() || !deletes.is_empty() {
                session.sent = desired
                    .iter()
                    .map(|(k, o)| (k.clone(), rv_of(o).to_string()))
                    .collect();
            }
        }
        upserts.extend(broadcast.0.iter().cloned());
        deletes.extend(broadcast.1.iter().cloned());
        let session = self.sessions.get_mut(node)?;
        if upserts.is_empty() && deletes.is_empty() {
            return None;
        }
        let delta = Delta {
            revision,
            follows: session.last,
            upserts,
            deletes,
        };
        session.last = revision;
        Some(delta)
    }

    /// Send a frame to a node's session; a node that cannot keep up is
    /// cut off (it reconnects and resumes).
    fn send(&mut self, node: &str, frame: to_agent::Message) {
        let Some(session) = self.sessions.get(node) else {
            return;
        };
        let frame = ToAgent {
            message: Some(frame),
        };
        let queued = Queued {
            at: Instant::now(),
            frame,
        };
        if session.tx.try_send(queued).is_err() {
            tracing::warn!(
                node,
                "agent session cannot keep up (or ended); cutting it off"
            );
            metrics::counter!("skiff_agent_sessions_cut_total").increment(1);
            self.sessions.remove(node);
        }
    }
}

/// The frame carrying an object: its JSON as encoded when it was stored.
fn object_frame(json: &HashMap<Key, Bytes>, key: &Key, o: &Value) -> Object {
    Object {
        kind: key.0.name().to_string(),
        json: json
            .get(key)
            .cloned()
            .unwrap_or_else(|| Bytes::from(serde_json::to_vec(o).unwrap_or_default())),
    }
}

fn object_ref(key: &Key) -> ObjectRef {
    ObjectRef {
        kind: key.0.name().to_string(),
        namespace: key.1.clone(),
        name: key.2.clone(),
        resource_version: String::new(),
    }
}

/// What changes `held` into `desired`: objects to send, and to delete.
fn diff(
    json: &HashMap<Key, Bytes>,
    held: &HashMap<Key, String>,
    desired: &BTreeMap<Key, Arc<Value>>,
) -> (Vec<Object>, Vec<ObjectRef>) {
    let upserts = desired
        .iter()
        .filter(|(k, o)| held.get(*k).map(String::as_str) != Some(rv_of(o)))
        .map(|(k, o)| object_frame(json, k, o))
        .collect();
    let mut deletes: Vec<ObjectRef> = held
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .map(object_ref)
        .collect();
    deletes.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    (upserts, deletes)
}

/// The desired state of every node, and the sessions it feeds.
pub struct Desired {
    inner: Mutex<Inner>,
    /// The revision the cache has reached (0 until the first list).
    reached: watch::Sender<i64>,
}

/// A frame for a node, and when the change it carries reached this master
/// (for the stream-lag histogram).
pub struct Queued {
    pub at: Instant,
    pub frame: ToAgent,
}

/// A node's attachment: the first frame, then the updates.
pub struct Attached {
    pub first: ToAgent,
    pub updates: mpsc::Receiver<Queued>,
    pub id: u64,
}

impl Desired {
    pub fn new() -> Arc<Desired> {
        Arc::new(Desired {
            inner: Mutex::new(Inner::default()),
            reached: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follow the store for as long as the gateway runs.
    pub async fn run(self: Arc<Self>, api: Api) {
        loop {
            let reason = self.follow(&api).await;
            tracing::warn!("agent gateway watch ended ({reason}); listing again");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    async fn follow(&self, api: &Api) -> String {
        let mut events = api.watch_events(WatchScope {
            resources: Kind::ALL
                .iter()
                .filter_map(|k| Some((k.resource()?, None)))
                .collect(),
            filter: Filter::everything(),
            after: 0,
            progress_every: None,
            previous: false,
        });
        while let Some(event) = events.recv().await {
            match event {
                WatchEvent::Changes {
                    revision,
                    changes,
                    initial,
                    ..
                } => self.apply(revision, changes, initial),
                WatchEvent::Progress(_) => {}
                WatchEvent::Gone { compacted } => return format!("compacted at {compacted}"),
                WatchEvent::Failed(e) => return e,
            }
        }
        "closed".into()
    }

    /// Apply one revision's changes (or, `initial`, a whole new list) and
    /// send each affected node its delta.
    fn apply(&self, revision: i64, changes: Vec<Change>, initial: bool) {
        let mut inner = self.lock();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        // Each broadcast object changed here, and its version before.
        let mut before: BTreeMap<Key, String> = BTreeMap::new();
        if initial {
            for k in &inner.broadcast {
                let rv = inner.objects.get(k).map(|o| rv_of(o).to_string());
                before.insert(k.clone(), rv.unwrap_or_default());
            }
            inner.objects.clear();
            inner.json.clear();
            inner.broadcast.clear();
            inner.pods_by_node.clear();
            touched.extend(inner.sessions.keys().cloned());
        }
        for c in changes {
            let Some(kind) = Kind::of(c.resource) else {
                continue;
            };
            let key = key_of(kind, &c.object);
            let mut derived = None;
            if kind == Kind::Node {
                touched.insert(key.2.clone());
                let peer = (Kind::PeerNode, String::new(), key.2.clone());
                derived = Some((peer, peer_view(&c.object)));
            } else if kind == Kind::Pod {
                if let Some(old) = inner.objects.get(&key).and_then(|o| node_of(o)) {
                    touched.insert(old.to_string());
                }
                if let Some(new) = node_of(&c.object) {
                    touched.insert(new.to_string());
                }
            } else if !initial && !kind.is_broadcast() {
                // Nodes holding it, or whose pods want it.
                for (node, s) in &inner.sessions {
                    if s.sent.contains_key(&key) {
                        touched.insert(node.clone());
                    }
                }
                if c.kind != EventType::Deleted {
                    for (node, pods) in &inner.pods_by_node {
                        if inner.sessions.contains_key(node)
                            && pods
                                .iter()
                                .filter_map(|p| inner.objects.get(p))
                                .any(|p| references(p).contains(&key))
                        {
                            touched.insert(node.clone());
                        }
                    }
                }
            }
            let mut updates = vec![(key, c.object)];
            updates.extend(derived);
            for (key, object) in updates {
                if key.0.is_broadcast() && !before.contains_key(&key) {
                    let rv = inner.objects.get(&key).map(|o| rv_of(o).to_string());
                    before.insert(key.clone(), rv.unwrap_or_default());
                }
                match c.kind {
                    EventType::Deleted => inner.remove(&key),
                    EventType::Added | EventType::Modified => inner.put(key, object),
                }
            }
        }
        inner.revision = revision;
        let mut broadcast = (Vec::new(), Vec::new());
        for (key, was) in before {
            match inner.objects.get(&key) {
                Some(o) if rv_of(o) != was => broadcast.0.push(object_frame(&inner.json, &key, o)),
                None if !was.is_empty() => broadcast.1.push(object_ref(&key)),
                _ => {}
            }
        }
        let nodes: Vec<String> = if broadcast.0.is_empty() && broadcast.1.is_empty() {
            touched.iter().cloned().collect()
        } else {
            inner.sessions.keys().cloned().collect()
        };
        for node in nodes {
            let own = touched.contains(&node);
            if let Some(delta) = inner.delta_for(&node, revision, own, &broadcast) {
                metrics::counter!("skiff_agent_deltas_total").increment(1);
                inner.send(&node, to_agent::Message::Delta(delta));
            }
        }
        drop(inner);
        self.reached.send_replace(revision);
    }

    /// Attach `node`'s new session, replacing any it had. It gets a
    /// snapshot, or, when it says what it holds at `last_revision` and this
    /// master has applied that revision, a delta from there.
    pub async fn attach(&self, node: &str, last_revision: i64, held: &[ObjectRef]) -> Attached {
        let mut reached = self.reached.subscribe();
        let want = last_revision.max(1);
        // Wait (briefly) until the cache has caught up with the agent.
        let caught_up = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            reached.wait_for(|r| *r >= want),
        )
        .await
        .is_ok();
        let mut inner = self.lock();
        let (tx, updates) = mpsc::channel(SESSION_BUFFER);
        inner.next_id += 1;
        let id = inner.next_id;
        let revision = inner.revision;
        let desired = inner.desired_all(node);
        let resume = last_revision > 0 && caught_up && last_revision <= revision;
        let first = if resume {
            let held: HashMap<Key, String> = held
                .iter()
                .filter_map(|r| {
                    Some((
                        (Kind::parse(&r.kind)?, r.namespace.clone(), r.name.clone()),
                        r.resource_version.clone(),
                    ))
                })
                .collect();
            let (upserts, deletes) = diff(&inner.json, &held, &desired);
            to_agent::Message::Delta(Delta {
                revision,
                follows: last_revision,
                upserts,
                deletes,
            })
        } else {
            to_agent::Message::Snapshot(Snapshot {
                revision,
                objects: desired
                    .iter()
                    .map(|(k, o)| object_frame(&inner.json, k, o))
                    .collect(),
            })
        };
        metrics::counter!("skiff_agent_attach_total", "kind" => if resume { "resume" } else { "snapshot" })
            .increment(1);
        inner.sessions.insert(
            node.to_string(),
            Session {
                tx,
                sent: desired
                    .iter()
                    .filter(|(k, _)| !k.0.is_broadcast())
                    .map(|(k, o)| (k.clone(), rv_of(o).to_string()))
                    .collect(),
                last: revision,
                id,
            },
        );
        metrics::gauge!("skiff_agent_sessions").set(inner.sessions.len() as f64);
        Attached {
            first: ToAgent {
                message: Some(first),
            },
            updates,
            id,
        }
    }

    /// Forget `node`'s session `id` (unless a newer one replaced it).
    pub fn detach(&self, node: &str, id: u64) {
        let mut inner = self.lock();
        if inner.sessions.get(node).is_some_and(|s| s.id == id) {
            inner.sessions.remove(node);
        }
        metrics::gauge!("skiff_agent_sessions").set(inner.sessions.len() as f64);
    }

    /// The pod `ns/name` if it is bound to `node` (the node authorizer's
    /// question for pod status reports).
    pub fn pod_on(&self, node: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let inner = self.lock();
        let pod = inner
            .objects
            .get(&(Kind::Pod, ns.to_string(), name.to_string()))?;
        (node_of(pod) == Some(node)).then(|| pod.clone())
    }

    /// Whether `node` may read the object: it is one of its pods or
    /// referenced by one (the node authorizer's rule).
    pub fn node_may_read(&self, node: &str, key: &Key) -> bool {
        let inner = self.lock();
        inner.desired(node).contains_key(key)
    }
}

/// Merge queued frames into one: deltas in order become one delta from the
/// first's `follows` to the last's revision (later changes win).
pub fn merge(frames: Vec<ToAgent>) -> Vec<ToAgent> {
    let mut out: Vec<ToAgent> = Vec::new();
    for f in frames {
        let merged = match (out.last_mut().and_then(|l| l.message.as_mut()), &f.message) {
            (Some(to_agent::Message::Delta(a)), Some(to_agent::Message::Delta(b))) => {
                let key = |kind: &str, ns: &str, name: &str| {
                    (kind.to_string(), ns.to_string(), name.to_string())
                };
                let obj_key = |o: &Object| {
                    let v: Value = serde_json::from_slice(&o.json).unwrap_or_default();
                    key(
                        &o.kind,
                        v["metadata"]["namespace"].as_str().unwrap_or(""),
                        v["metadata"]["name"].as_str().unwrap_or(""),
                    )
                };
                let mut state: BTreeMap<(String, String, String), Option<Object>> = BTreeMap::new();
                for o in a.upserts.drain(..).chain(b.upserts.iter().cloned()) {
                    state.insert(obj_key(&o), Some(o));
                }
                for d in a.deletes.drain(..) {
                    state
                        .entry(key(&d.kind, &d.namespace, &d.name))
                        .or_insert(None);
                }
                for d in &b.deletes {
                    state.insert(key(&d.kind, &d.namespace, &d.name), None);
                }
                for (k, v) in state {
                    match v {
                        Some(o) => a.upserts.push(o),
                        None => a.deletes.push(ObjectRef {
                            kind: k.0,
                            namespace: k.1,
                            name: k.2,
                            resource_version: String::new(),
                        }),
                    }
                }
                a.revision = b.revision;
                true
            }
            _ => false,
        };
        if !merged {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, rv: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "builder",
                "volumes": [{"name": "v", "secret": {"secretName": "s1"}}],
                "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "k"}}}]}],
            }
        })
    }

    fn object(name: &str, rv: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}})
    }

    #[test]
    fn a_node_gets_its_pods_and_what_they_reference_and_nothing_else() {
        let refs = references(&pod("p", "n1", "1"));
        let names: Vec<_> = refs.iter().map(|k| (k.0, k.2.as_str())).collect();
        assert_eq!(
            names,
            [
                (Kind::ConfigMap, "cm1"),
                (Kind::Secret, "s1"),
                (Kind::ServiceAccount, "builder")
            ]
        );

        let mut inner = Inner::default();
        inner.put((Kind::Pod, "ns".into(), "p".into()), pod("p", "n1", "1"));
        inner.put((Kind::Pod, "ns".into(), "q".into()), pod("q", "n2", "2"));
        inner.put((Kind::Secret, "ns".into(), "s1".into()), object("s1", "3"));
        inner.put(
            (Kind::Secret, "ns".into(), "other".into()),
            object("other", "4"),
        );
        let d = inner.desired("n1");
        let keys: Vec<_> = d.keys().map(|k| (k.0, k.2.as_str())).collect();
        assert_eq!(keys, [(Kind::Pod, "p"), (Kind::Secret, "s1")]);

        // A pod moving away leaves the node with nothing.
        inner.put((Kind::Pod, "ns".into(), "p".into()), pod("p", "n2", "5"));
        assert!(inner.desired("n1").is_empty());
        assert_eq!(inner.desired("n2").len(), 3);
    }

    #[test]
    fn queued_deltas_merge_into_one() {
        let frame = |revision, follows, up: Vec<Value>, del: Vec<&str>| ToAgent {
            message: Some(to_agent::Message::Delta(Delta {
                revision,
                follows,
                upserts: up
                    .iter()
                    .map(|o| object_frame(&HashMap::new(), &key_of(Kind::Pod, o), o))
                    .collect(),
                deletes: del
                    .iter()
                    .map(|n| object_ref(&(Kind::Pod, "ns".into(), n.to_string())))
                    .collect(),
            })),
        };
        let merged = merge(vec![
            frame(5, 3, vec![object("a", "5"), object("b", "5")], vec![]),
            frame(7, 5, vec![object("a", "7")], vec!["b"]),
            frame(9, 7, vec![object("b", "9")], vec!["c"]),
        ]);
        assert_eq!(merged.len(), 1);
        let Some(to_agent::Message::Delta(d)) = &merged[0].message else {
            panic!("not a delta")
        };
        assert_eq!((d.revision, d.follows), (9, 3));
        let up: Vec<Value> = d
            .upserts
            .iter()
            .map(|o| serde_json::from_slice(&o.json).unwrap())
            .collect();
        assert_eq!(
            up.iter()
                .map(|o| (o["metadata"]["name"].as_str().unwrap(), rv_of(o)))
                .collect::<Vec<_>>(),
            [("a", "7"), ("b", "9")]
        );
        assert_eq!(
            d.deletes
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["c"]
        );
    }
}
