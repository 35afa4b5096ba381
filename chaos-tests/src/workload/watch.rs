//! Watches across faults. Writers commit Txns that put one fresh value under
//! one to three keys (so one revision carries several events); watchers
//! follow the prefix from revision 1, hop to another master every few
//! seconds or whenever their stream breaks, and resume from the revision
//! after the last one they saw. Everything they receive is kept, response by
//! response, for `checker::watch`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::etcd::watch_client::WatchClient;
use proto::etcd::watch_request::RequestUnion;
use proto::etcd::{prefix_end, WatchCreateRequest, WatchRequest};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::{Ctx, Endpoint};
use crate::client::{self, describe};
use crate::history::{Op, Record, Status};

pub const PREFIX: &str = "watch/";
const KEYS: usize = 16;

/// One event as a watcher received it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub revision: i64,
    pub key: String,
    /// None for a delete.
    pub value: Option<u64>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct WatchLog {
    /// Responses in the order received; each holds one or more events.
    pub responses: Vec<Vec<Event>>,
    /// Problems the stream itself reported (cancellation, compaction).
    pub errors: Vec<String>,
    pub reconnects: u64,
}

/// Shared between the watchers and the run: their logs, and the revision
/// they must reach before they stop (0 until the run knows it).
#[derive(Default)]
pub struct Watchers {
    pub logs: Mutex<Vec<WatchLog>>,
    pub stop_at: AtomicI64,
}

pub async fn writer(ctx: Arc<Ctx>, client: u64, mut rng: StdRng) {
    let mut ep = Endpoint::new(client, ctx.endpoints.len());
    let names: Vec<String> = (0..KEYS).map(|k| format!("{PREFIX}k{k:02}")).collect();
    while ctx.running() {
        let n = rng.gen_range(1..=3);
        let mut keys: Vec<String> = names.choose_multiple(&mut rng, n).cloned().collect();
        keys.sort();
        let value = ctx.fresh();
        let node = ep.index;
        let call = ctx.history.now();
        let result = client::multi_put(&ctx.endpoints[node], &keys, value).await;
        let ret = ctx.history.now();
        let (status, revision, error) = match result {
            Ok(rev) => (Status::Ok, Some(rev), None),
            Err(e) => {
                ep.switch(&mut rng);
                tokio::time::sleep(Duration::from_millis(20)).await;
                (client::classify(&e), None, Some(describe(&e)))
            }
        };
        ctx.history.push(Record {
            client,
            node,
            key: keys.join(","),
            op: Op::MultiPut {
                keys,
                value,
                revision,
            },
            call,
            ret,
            status,
            error,
        });
    }
}

/// Follow the prefix until the run's final revision has been seen (or
/// `give_up` passes after the run set it).
pub async fn watcher(shared: Arc<Watchers>, endpoints: Vec<Channel>, mut rng: StdRng) {
    let mut next = 1i64;
    let mut log = WatchLog::default();
    let mut give_up: Option<Instant> = None;
    loop {
        let stop_at = shared.stop_at.load(Ordering::Acquire);
        if stop_at > 0 {
            if next > stop_at {
                break;
            }
            let g = *give_up.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
            if Instant::now() > g {
                log.errors.push(format!(
                    "never caught up to revision {stop_at} (stuck at {next})"
                ));
                break;
            }
        }
        let ch = endpoints[rng.gen_range(0..endpoints.len())].clone();
        let hop = Duration::from_millis(rng.gen_range(1000..4000));
        follow(ch, &mut next, &mut log, hop, &shared.stop_at).await;
        log.reconnects += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shared.logs.lock().expect("watch logs").push(log);
}

/// One watch stream, for at most `hop`; returns when it ends, breaks or
/// goes quiet, having advanced `next` past every revision received.
async fn follow(
    ch: Channel,
    next: &mut i64,
    log: &mut WatchLog,
    hop: Duration,
    stop_at: &AtomicI64,
) {
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: prefix_end(PREFIX.as_bytes()),
            start_revision: *next,
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.send(create).await;
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let deadline = tokio::time::Instant::now() + hop;
    let opened =
        tokio::time::timeout(Duration::from_secs(2), WatchClient::new(ch).watch(requests)).await;
    let Ok(Ok(resp)) = opened else { return };
    let mut stream = resp.into_inner();
    loop {
        let until = if stop_at.load(Ordering::Acquire) > 0 {
            // Catching up at the end: stay as long as events flow.
            tokio::time::Instant::now() + Duration::from_secs(3)
        } else {
            deadline
        };
        let msg = match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => return,
        };
        if msg.canceled || msg.compact_revision > 0 {
            log.errors.push(format!(
                "watch from {} canceled: {} (compact revision {})",
                next, msg.cancel_reason, msg.compact_revision
            ));
            return;
        }
        if msg.events.is_empty() {
            continue;
        }
        let mut events = Vec::with_capacity(msg.events.len());
        for e in msg.events {
            let Some(kv) = e.kv else { continue };
            let value = if e.r#type == 1 {
                None
            } else {
                Some(
                    std::str::from_utf8(&kv.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(u64::MAX),
                )
            };
            events.push(Event {
                revision: kv.mod_revision,
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                value,
            });
        }
        if let Some(last) = events.last() {
            *next = (*next).max(last.revision + 1);
        }
        log.responses.push(events);
        let stop = stop_at.load(Ordering::Acquire);
        if stop > 0 && *next > stop {
            return;
        }
    }
}
