//! Watch: a stream of `{"type": ..., "object": ...}` lines, from a
//! resourceVersion (or from a fresh list when none is given), with
//! bookmarks, a timeout, and an ERROR event carrying 410 Gone when the
//! requested revision has been compacted.

use std::convert::Infallible;
use std::time::Duration;

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
}

impl Render {
    fn line(&mut self, kind: &str, object: &Value) -> Bytes {
        let Some(include) = self.table else {
            return line(kind, object);
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
    pub async fn watch(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        q: &Query,
        table: Option<Include>,
    ) -> ApiResult<Response> {
        let mut render = Render {
            resource: r,
            table,
            headers_sent: false,
        };
        let filter = Filter::from_query(q)?;
        let mut after = parse_rv_param(q)?;
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs);
        let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
        // No resourceVersion: start with the current objects, as ADDED events.
        if after == 0 {
            let list = self.list(r, ns, &Query::new()).await?;
            for item in list["items"].as_array().into_iter().flatten() {
                if filter.matches(item) {
                    let _ = tx.send(Ok(render.line("ADDED", item))).await;
                }
            }
            after = list["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        let watcher = self
            .registry
            .watch(KeyRange::prefix(prefix(r, ns).into_bytes()), after);
        tokio::spawn(follow(render, filter, watcher, tx, bookmarks, timeout));
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .map_err(|e| ApiError::internal(e.to_string()))
    }
}

async fn follow(
    mut render: Render,
    filter: Filter,
    mut watcher: raft_store::watch::Watcher,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    bookmarks: bool,
    timeout: Option<Duration>,
) {
    let r = render.resource;
    metrics::gauge!("apiserver_registered_watchers").increment(1.0);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut tick = tokio::time::interval(BOOKMARK_EVERY);
    tick.tick().await;
    loop {
        let item = tokio::select! {
            item = watcher.items.recv() => item,
            _ = tick.tick(), if bookmarks => {
                let rv = watcher.reached.load(std::sync::atomic::Ordering::Acquire);
                let mark = json!({
                    "kind": r.kind,
                    "apiVersion": r.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                });
                if tx.send(Ok(line("BOOKMARK", &mark))).await.is_err() { break }
                continue;
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = tx.closed() => break,
        };
        let (lines, applied_at) = match item {
            Some(WatchItem::Events {
                events, applied_at, ..
            }) => (
                events
                    .iter()
                    .filter_map(|e| translate(&filter, e))
                    .map(|(kind, object)| render.line(kind, &object))
                    .collect::<Vec<_>>(),
                applied_at,
            ),
            Some(WatchItem::Compacted { compact_revision }) => {
                let status = ApiError::gone(format!(
                    "too old resource version (compacted at {compact_revision})"
                ))
                .body();
                let _ = tx.send(Ok(line("ERROR", &status))).await;
                break;
            }
            Some(WatchItem::Failed(e)) => {
                let _ = tx
                    .send(Ok(line("ERROR", &ApiError::internal(e).body())))
                    .await;
                break;
            }
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
    }
    metrics::gauge!("apiserver_registered_watchers").decrement(1.0);
}

/// One store event as a watch event, seen through the selectors: an object
/// that starts or stops matching is ADDED or DELETED for this watcher.
fn translate(filter: &Filter, e: &raft_store::mvcc::Event) -> Option<(&'static str, Value)> {
    let old = e.prev_kv.as_ref().and_then(|kv| Registry::decode(kv).ok());
    let old_matched = old.as_ref().is_some_and(|o| filter.matches(&o.object));
    match e.kind {
        EventKind::Delete => {
            let mut o = old?.object;
            set_resource_version(&mut o, e.kv.mod_revision);
            old_matched.then_some(("DELETED", o))
        }
        EventKind::Put => {
            let new = Registry::decode(&e.kv).ok()?.object;
            let matched = filter.matches(&new);
            match (old.is_some(), old_matched, matched) {
                (false, _, true) => Some(("ADDED", new)),
                (true, true, true) => Some(("MODIFIED", new)),
                (true, false, true) => Some(("ADDED", new)),
                (true, true, false) => Some(("DELETED", new)),
                _ => None,
            }
        }
    }
}
