//! Watch: one typed stream of watch events ([`Api::watch_events`]), and its
//! rendering as the REST API's `{"type": ..., "object": ...}` lines.
//!
//! The typed stream starts from a resourceVersion, or from the current
//! objects (a list, sent as one batch of ADDED events) when none is given;
//! it applies label and field selectors (an object entering or leaving them
//! is ADDED or DELETED for the watcher), reports progress for bookmarks, and
//! ends with [`WatchEvent::Gone`] when the requested revision has been
//! compacted. The REST watch and the agent gateway both read it.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::Response;
use raft_store::mvcc::{EventKind, KeyRange};
use raft_store::watch::WatchItem;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::handlers::{parse_rv_param, prefix, Filter, Query};
use super::resources::Resource;
use super::status::{ApiError, ApiResult};
use super::table::{self, Include};
use super::Api;
use crate::registry::{set_resource_version, Registry};

const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// Batches buffered between a watch and its reader.
const STREAM_BUFFER: usize = 64;

/// What happened to an object, as a watcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One object's change.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: EventType,
    pub resource: &'static Resource,
    /// The object after the change; for a deletion, as it last was (or,
    /// for a watch without previous values, only its name, namespace and
    /// the deleting revision).
    pub object: Value,
}

/// An item of a typed watch stream.
#[derive(Debug)]
pub enum WatchEvent {
    /// The changes of one store revision, or, with `initial`, the objects
    /// that existed at `revision` when the watch started without one.
    Changes {
        revision: i64,
        changes: Vec<Change>,
        initial: bool,
        /// When this master applied the revision, if followed live.
        applied_at: Option<Instant>,
    },
    /// Every change at or below this revision has been sent.
    Progress(i64),
    /// The start revision is older than the compaction point; the stream ends.
    Gone { compacted: i64 },
    /// Reading failed; the stream ends.
    Failed(String),
}

/// What a typed watch covers.
pub struct WatchScope {
    /// The resources (each in a namespace, or in all of them).
    pub resources: Vec<(&'static Resource, Option<String>)>,
    pub filter: Filter,
    /// Report changes after this revision; 0 starts with the current objects.
    pub after: i64,
    /// Report progress this often (for bookmarks).
    pub progress_every: Option<Duration>,
    /// Whether deletions carry the deleted object and selectors see
    /// objects leave them; costs the store a read of every replaced value.
    pub previous: bool,
}

impl Api {
    /// Start a typed watch. The stream ends when the receiver is dropped.
    pub fn watch_events(&self, scope: WatchScope) -> mpsc::Receiver<WatchEvent> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let api = self.clone();
        // The initial list is read and sent by the task, after the caller
        // holds the receiver: a list larger than the buffer cannot block
        // the caller before it starts reading.
        tokio::spawn(async move { api.run_watch(scope, tx).await });
        rx
    }

    async fn run_watch(self, scope: WatchScope, tx: mpsc::Sender<WatchEvent>) {
        let mut after = scope.after;
        if after == 0 {
            match self.initial(&scope).await {
                Ok((revision, changes)) => {
                    after = revision;
                    let first = WatchEvent::Changes {
                        revision,
                        changes,
                        initial: true,
                        applied_at: None,
                    };
                    if tx.send(first).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(WatchEvent::Failed(e.message)).await;
                    return;
                }
            }
        }
        let prefixes: Vec<String> = scope
            .resources
            .iter()
            .map(|(r, ns)| prefix(r, ns.as_deref()))
            .collect();
        let range = KeyRange::prefix(common_prefix(&prefixes).into_bytes());
        let mut watcher = self.registry.watch(range, after, scope.previous);
        let mut tick = tokio::time::interval(scope.progress_every.unwrap_or(BOOKMARK_EVERY));
        tick.tick().await;
        loop {
            let item = tokio::select! {
                item = watcher.items.recv() => item,
                _ = tick.tick(), if scope.progress_every.is_some() => {
                    let rv = watcher.reached.load(std::sync::atomic::Ordering::Acquire);
                    if tx.send(WatchEvent::Progress(rv)).await.is_err() { return }
                    continue;
                }
                _ = tx.closed() => return,
            };
            let event = match item {
                Some(WatchItem::Events {
                    revision,
                    events,
                    applied_at,
                }) => {
                    let changes: Vec<Change> = events
                        .iter()
                        .filter_map(|e| {
                            let key = std::str::from_utf8(&e.kv.key).ok()?;
                            let i = prefixes.iter().position(|p| key.starts_with(p))?;
                            translate(&self.registry, &scope, scope.resources[i].0, e)
                        })
                        .collect();
                    if changes.is_empty() {
                        continue;
                    }
                    WatchEvent::Changes {
                        revision,
                        changes,
                        initial: false,
                        applied_at,
                    }
                }
                Some(WatchItem::Compacted { compact_revision }) => WatchEvent::Gone {
                    compacted: compact_revision,
                },
                Some(WatchItem::Failed(e)) => WatchEvent::Failed(e),
                None => return,
            };
            let end = !matches!(event, WatchEvent::Changes { .. });
            if tx.send(event).await.is_err() || end {
                return;
            }
        }
    }

    /// The objects in scope now, all read at one revision.
    async fn initial(&self, scope: &WatchScope) -> ApiResult<(i64, Vec<Change>)> {
        let mut revision = 0;
        let mut changes = Vec::new();
        for (r, ns) in &scope.resources {
            let list = self.list_at(r, ns.as_deref(), revision).await?;
            revision = list.revision;
            changes.extend(
                list.items
                    .into_iter()
                    .map(|s| s.object)
                    .filter(|o| scope.filter.matches(o))
                    .map(|object| Change {
                        kind: EventType::Added,
                        resource: r,
                        object,
                    }),
            );
        }
        Ok((revision, changes))
    }

    /// Every object of `r` (in `ns`) at `revision` (0: now).
    async fn list_at(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        revision: i64,
    ) -> ApiResult<crate::registry::Page> {
        self.registry
            .list(&prefix(r, ns), None, revision, 0)
            .await
            .map_err(|e| ApiError::from_registry(e, r, ""))
    }
}

/// The longest common prefix, cut back to a `/` boundary.
fn common_prefix(prefixes: &[String]) -> String {
    let Some(first) = prefixes.first() else {
        return "/registry/".into();
    };
    let mut len = first.len();
    for p in &prefixes[1..] {
        len = first
            .bytes()
            .zip(p.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    let cut = first[..len].rfind('/').map(|i| i + 1).unwrap_or(0);
    first[..cut].to_string()
}

/// One store event as a watch event, seen through the selectors: an object
/// that starts or stops matching is ADDED or DELETED for this watcher.
fn translate(
    registry: &Registry,
    scope: &WatchScope,
    resource: &'static Resource,
    e: &raft_store::mvcc::Event,
) -> Option<Change> {
    let change = |kind, object| {
        Some(Change {
            kind,
            resource,
            object,
        })
    };
    let filter = &scope.filter;
    let old = e.prev_kv.as_ref().and_then(|kv| registry.decode(kv).ok());
    match e.kind {
        EventKind::Delete if scope.previous => {
            let mut o = old?.object;
            if !filter.matches(&o) {
                return None;
            }
            set_resource_version(&mut o, e.kv.mod_revision);
            change(EventType::Deleted, o)
        }
        EventKind::Delete => change(EventType::Deleted, deleted_stub(resource, e)?),
        EventKind::Put => {
            let new = match registry.decode(&e.kv) {
                Ok(s) => s.object,
                Err(err) => {
                    tracing::warn!("watch: {err}; the event is skipped");
                    return None;
                }
            };
            let matched = filter.matches(&new);
            if !scope.previous {
                let kind = if e.kv.version == 1 {
                    EventType::Added
                } else {
                    EventType::Modified
                };
                return matched.then_some(()).and_then(|_| change(kind, new));
            }
            let old_matched = old.as_ref().is_some_and(|o| filter.matches(&o.object));
            match (old.is_some(), old_matched, matched) {
                (false, _, true) | (true, false, true) => change(EventType::Added, new),
                (true, true, true) => change(EventType::Modified, new),
                (true, true, false) => change(EventType::Deleted, new),
                _ => None,
            }
        }
    }
}

/// A deleted object known only by its key: name, namespace, revision.
fn deleted_stub(resource: &Resource, e: &raft_store::mvcc::Event) -> Option<Value> {
    let key = std::str::from_utf8(&e.kv.key).ok()?;
    let mut parts = key.rsplit('/');
    let name = parts.next()?;
    let mut meta = json!({"name": name, "resourceVersion": e.kv.mod_revision.to_string()});
    if resource.namespaced {
        meta["namespace"] = json!(parts.next()?);
    }
    Some(json!({"apiVersion": resource.api_version(), "kind": resource.kind, "metadata": meta}))
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// How events' objects are written: as they are, or as one-row Tables
/// (`kubectl get -w`), the first of which carries the column headers.
struct Render {
    resource: &'static Resource,
    table: Option<Include>,
    headers_sent: bool,
    /// Objects as another version sees them (a view's watch).
    down: Option<fn(Value) -> Value>,
}

impl Render {
    fn line(&mut self, kind: &str, object: &Value) -> Bytes {
        let Some(include) = self.table else {
            return match self.down {
                Some(down) if object["kind"] != "Status" => line(kind, &down(object.clone())),
                _ => line(kind, object),
            };
        };
        let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
        let now = table::Now(chrono::Utc::now());
        let t = table::render(
            self.resource,
            std::slice::from_ref(object),
            meta,
            include,
            !self.headers_sent,
            now,
        );
        self.headers_sent = true;
        line(kind, &t)
    }
}

impl Api {
    /// The REST watch: the typed stream rendered as JSON lines.
    pub async fn watch(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        q: &Query,
        table: Option<Include>,
    ) -> ApiResult<Response> {
        self.watch_as(r, ns, q, table, None).await
    }

    /// The REST watch, each object first passed through `down` if given.
    pub async fn watch_as(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        q: &Query,
        table: Option<Include>,
        down: Option<fn(Value) -> Value>,
    ) -> ApiResult<Response> {
        let render = Render {
            resource: r,
            table,
            headers_sent: false,
            down,
        };
        let filter = Filter::from_query(q)?;
        let after = parse_rv_param(q)?;
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs);
        let events = self.watch_events(WatchScope {
            resources: vec![(r, ns.map(str::to_string))],
            filter,
            after,
            progress_every: bookmarks.then_some(BOOKMARK_EVERY),
            previous: true,
        });
        let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(STREAM_BUFFER);
        tokio::spawn(follow(render, events, tx, timeout));
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .map_err(|e| ApiError::internal(e.to_string()))
    }
}

async fn follow(
    mut render: Render,
    mut events: mpsc::Receiver<WatchEvent>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    timeout: Option<Duration>,
) {
    let r = render.resource;
    metrics::gauge!("apiserver_registered_watchers").increment(1.0);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = tx.closed() => break,
        };
        let (lines, applied_at, end) = match event {
            Some(WatchEvent::Changes {
                changes,
                applied_at,
                ..
            }) => (
                changes
                    .iter()
                    .map(|c| render.line(c.kind.as_str(), &c.object))
                    .collect::<Vec<_>>(),
                applied_at,
                false,
            ),
            Some(WatchEvent::Progress(rv)) => {
                let mark = json!({
                    "kind": r.kind,
                    "apiVersion": r.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                });
                (vec![line("BOOKMARK", &mark)], None, false)
            }
            Some(WatchEvent::Gone { compacted }) => {
                let status = ApiError::gone(format!(
                    "too old resource version (compacted at {compacted})"
                ))
                .body();
                (vec![line("ERROR", &status)], None, true)
            }
            Some(WatchEvent::Failed(e)) => (
                vec![line("ERROR", &ApiError::internal(e).body())],
                None,
                true,
            ),
            None => break,
        };
        for l in lines {
            metrics::counter!("apiserver_watch_events_total", "resource" => r.plural).increment(1);
            if tx.send(Ok(l)).await.is_err() {
                metrics::gauge!("apiserver_registered_watchers").decrement(1.0);
                return;
            }
            // From this master applying the change to handing it to the
            // watcher's connection.
            if let Some(t) = applied_at {
                metrics::histogram!("apiserver_watch_event_lag_seconds", "resource" => r.plural)
                    .record(t.elapsed().as_secs_f64());
            }
        }
        if end {
            break;
        }
    }
    metrics::gauge!("apiserver_registered_watchers").decrement(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_cuts_at_a_slash() {
        let p = |v: &[&str]| common_prefix(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&["/registry/core/pods/"]), "/registry/core/pods/");
        assert_eq!(
            p(&["/registry/core/pods/", "/registry/core/persistentvolumes/"]),
            "/registry/core/"
        );
        assert_eq!(
            p(&["/registry/core/secrets/", "/registry/apps/deployments/"]),
            "/registry/"
        );
    }
}
