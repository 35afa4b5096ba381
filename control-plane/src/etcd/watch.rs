//! The Watch service: one bidirectional stream carries many watchers,
//! told apart by watch id, as in etcd.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{Stream, StreamExt};
use proto::etcd::watch_create_request::FilterType;
use proto::etcd::watch_request::RequestUnion;
use proto::etcd::watch_server::Watch;
use proto::etcd::{self as pb};
use raft_store::mvcc::KeyRange;
use raft_store::watch::{WatchItem, WatchSpec};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{convert, Api};

/// How often a watcher created with `progress_notify` hears the current
/// revision when nothing else happened (etcd's default is 10 minutes).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;

struct Running {
    task: JoinHandle<()>,
    reached: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

#[tonic::async_trait]
impl Watch for Api {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut inbound = req.into_inner();
        let (out, rx) = mpsc::channel(256);
        let api = self.clone();
        tokio::spawn(async move {
            let mut watchers: HashMap<i64, Running> = HashMap::new();
            let mut next_id = 0i64;
            while let Ok(Some(msg)) = inbound.message().await {
                watchers.retain(|_, w| !w.task.is_finished());
                let sent = match msg.request_union {
                    Some(RequestUnion::CreateRequest(c)) => {
                        api.create(c, &mut watchers, &mut next_id, &out).await
                    }
                    Some(RequestUnion::CancelRequest(c)) => {
                        if let Some(w) = watchers.remove(&c.watch_id) {
                            w.task.abort();
                        }
                        let resp = pb::WatchResponse {
                            header: Some(api.current_header()),
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        };
                        out.send(Ok(resp)).await.is_ok()
                    }
                    Some(RequestUnion::ProgressRequest(_)) => {
                        let mut ok = true;
                        for (id, w) in &watchers {
                            let resp = pb::WatchResponse {
                                header: Some(api.header(w.reached.load(Ordering::Acquire))),
                                watch_id: *id,
                                ..Default::default()
                            };
                            ok &= out.send(Ok(resp)).await.is_ok();
                        }
                        ok
                    }
                    None => true,
                };
                if !sent {
                    break;
                }
            }
            for (_, w) in watchers {
                w.task.abort();
            }
        });
        Ok(Response::new(Box::pin(until_stopped(
            ReceiverStream::new(rx),
            self.stopping.clone(),
        ))))
    }
}

/// The responses, until the master stops: then etcd's "server stopped",
/// which clients answer by watching on through another endpoint.
fn until_stopped(
    responses: impl Stream<Item = Result<pb::WatchResponse, Status>> + Send + Unpin + 'static,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = Result<pb::WatchResponse, Status>> + Send {
    futures::stream::unfold(Some((responses, stopping)), |state| async move {
        let (mut responses, mut stopping) = state?;
        let stopped = async { stopping.wait_for(|s| *s).await.is_ok() };
        let next = tokio::select! {
            next = responses.next() => next,
            true = stopped => {
                return Some((Err(Status::unavailable("etcdserver: server stopped")), None));
            }
        };
        next.map(|r| (r, Some((responses, stopping))))
    })
}

impl Api {
    async fn create(
        &self,
        c: pb::WatchCreateRequest,
        watchers: &mut HashMap<i64, Running>,
        next_id: &mut i64,
        out: &Out,
    ) -> bool {
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while watchers.contains_key(next_id) {
                *next_id += 1;
            }
            *next_id
        };
        if watchers.contains_key(&id) || c.key.is_empty() {
            let reason = if c.key.is_empty() {
                "etcdserver: key is not provided"
            } else {
                "duplicate watch id"
            };
            let resp = pb::WatchResponse {
                header: Some(self.current_header()),
                watch_id: id,
                created: true,
                canceled: true,
                cancel_reason: reason.into(),
                ..Default::default()
            };
            return out.send(Ok(resp)).await.is_ok();
        }
        let spec = WatchSpec {
            range: KeyRange {
                key: c.key,
                range_end: c.range_end,
            },
            start_revision: c.start_revision,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let created = pb::WatchResponse {
            header: Some(self.current_header()),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        if out.send(Ok(created)).await.is_err() {
            return false;
        }
        let watcher = self.store.watch(spec, 64);
        let reached = watcher.reached.clone();
        let task = tokio::spawn(forward(
            self.clone(),
            id,
            watcher,
            c.progress_notify,
            out.clone(),
        ));
        watchers.insert(id, Running { task, reached });
        true
    }
}

/// Turn one watcher's items into responses on the shared stream.
async fn forward(
    api: Api,
    id: i64,
    mut watcher: raft_store::watch::Watcher,
    progress: bool,
    out: Out,
) {
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.tick().await;
    loop {
        let item = tokio::select! {
            item = watcher.items.recv() => item,
            _ = ticker.tick(), if progress => {
                let rev = watcher.reached.load(Ordering::Acquire);
                let resp = pb::WatchResponse { header: Some(api.header(rev)), watch_id: id, ..Default::default() };
                if out.send(Ok(resp)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let resp = match item {
            Some(WatchItem::Events {
                revision, events, ..
            }) => {
                ticker.reset();
                pb::WatchResponse {
                    header: Some(api.header(revision)),
                    watch_id: id,
                    events: events.into_iter().map(convert::event).collect(),
                    ..Default::default()
                }
            }
            Some(WatchItem::Compacted { compact_revision }) => pb::WatchResponse {
                header: Some(api.current_header()),
                watch_id: id,
                canceled: true,
                compact_revision,
                cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
                ..Default::default()
            },
            Some(WatchItem::Failed(reason)) => pb::WatchResponse {
                header: Some(api.current_header()),
                watch_id: id,
                canceled: true,
                cancel_reason: reason,
                ..Default::default()
            },
            None => return,
        };
        let last = resp.canceled;
        if out.send(Ok(resp)).await.is_err() || last {
            return;
        }
    }
}
