//! The watch hub: every applied revision is broadcast once; each watcher is
//! a task that replays history from RocksDB until it reaches the live edge,
//! then follows the broadcast.
//!
//! Guarantees, per watcher: events in revision order, none twice, none
//! skipped, all events of one revision in one batch. A watcher that falls
//! behind the broadcast buffer (or whose master installed a snapshot) goes
//! back to replaying from RocksDB, starting after the last revision it sent.
//!
//! Revisions are applied with the values they replace only while some
//! watcher asks for previous values (the hub counts them). A watcher that
//! asks for them and meets a revision applied without them (it started while
//! that revision was being applied) reads that revision from RocksDB too.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, mpsc};

use crate::mvcc::read::View;
use crate::mvcc::{Event, EventKind, KeyRange};
use crate::state_machine::Shared;

/// All events of one revision.
#[derive(Debug, Clone)]
pub struct RevisionBatch {
    pub revision: i64,
    pub events: Vec<Event>,
    /// When this master applied the revision (for watch lag).
    pub applied_at: Instant,
    /// Whether the events' `prev_kv` carry values (see the module docs).
    pub prev_values: bool,
}

/// Revisions kept in the broadcast buffer before slow watchers fall back to
/// reading history from disk.
const BROADCAST_CAPACITY: usize = 8192;
/// Revisions read from disk per step of a replay.
const REPLAY_STEP: i64 = 1024;

pub struct WatchHub {
    tx: broadcast::Sender<Arc<RevisionBatch>>,
    /// Running watchers that asked for previous values.
    prev_kv_watchers: AtomicUsize,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub {
            tx: broadcast::channel(BROADCAST_CAPACITY).0,
            prev_kv_watchers: AtomicUsize::new(0),
        }
    }
}

/// Counts one watcher in [`WatchHub::prev_kv_watchers`] while it lives.
struct PrevKvWatcher(Arc<Shared>);

impl PrevKvWatcher {
    fn count(shared: Arc<Shared>) -> Self {
        shared.hub.prev_kv_watchers.fetch_add(1, Ordering::SeqCst);
        PrevKvWatcher(shared)
    }
}

impl Drop for PrevKvWatcher {
    fn drop(&mut self) {
        self.0.hub.prev_kv_watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WatchHub {
    /// Whether revisions applied now should carry previous values: some
    /// running watcher asked for them.
    pub fn wants_prev_values(&self) -> bool {
        self.prev_kv_watchers.load(Ordering::SeqCst) > 0
    }

    pub fn publish(&self, batch: RevisionBatch) {
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(Arc::new(batch));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RevisionBatch>> {
        self.tx.subscribe()
    }
}

#[derive(Debug, Clone, Default)]
pub struct WatchSpec {
    pub range: KeyRange,
    /// First revision to report; 0 means "from the next change".
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchSpec {
    fn wants(&self, e: &Event) -> bool {
        self.range.contains(&e.kv.key)
            && match e.kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            }
    }

    /// Whether this watcher must read `batch` from RocksDB: it wants previous
    /// values that the batch was applied without.
    fn needs_history(&self, batch: &RevisionBatch) -> bool {
        self.prev_kv
            && !batch.prev_values
            && batch
                .events
                .iter()
                .any(|e| e.prev_kv.is_some() && self.wants(e))
    }

    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| self.wants(e))
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Events {
        revision: i64,
        events: Vec<Event>,
        /// When this master applied the revision, if it was followed live
        /// (replays from history have no such time).
        applied_at: Option<Instant>,
    },
    /// The start revision is older than the compaction point; the watch ends.
    Compacted { compact_revision: i64 },
    /// Reading history failed; the watch ends.
    Failed(String),
}

/// A running watcher.
pub struct Watcher {
    pub items: mpsc::Receiver<WatchItem>,
    /// Every event at or below this revision has been handed to `items`:
    /// the revision a progress notification may report.
    pub reached: Arc<AtomicI64>,
}

/// Start a watcher; it ends when its receiver is dropped.
pub fn spawn(shared: Arc<Shared>, spec: WatchSpec, buffer: usize) -> Watcher {
    let (tx, rx) = mpsc::channel(buffer.max(1));
    let reached = Arc::new(AtomicI64::new(0));
    let progress = reached.clone();
    // Counted before the watcher reads anything, so every revision applied
    // after it starts carries the values it asked for.
    let counted = spec.prev_kv.then(|| PrevKvWatcher::count(shared.clone()));
    tokio::spawn(async move {
        let _counted = counted;
        metrics::gauge!("skiff_store_watchers").increment(1.0);
        run(shared, spec, tx, progress).await;
        metrics::gauge!("skiff_store_watchers").decrement(1.0);
    });
    Watcher { items: rx, reached }
}

async fn run(
    shared: Arc<Shared>,
    spec: WatchSpec,
    tx: mpsc::Sender<WatchItem>,
    reached: Arc<AtomicI64>,
) {
    let mut live = shared.hub.subscribe();
    let mut next = if spec.start_revision > 0 {
        spec.start_revision
    } else {
        shared.revision.load(Ordering::Acquire) + 1
    };
    loop {
        reached.store(next - 1, Ordering::Release);
        let current = shared.revision.load(Ordering::Acquire);
        if next <= current {
            let compacted = shared.compacted.load(Ordering::Acquire);
            if next < compacted {
                let _ = tx
                    .send(WatchItem::Compacted {
                        compact_revision: compacted,
                    })
                    .await;
                return;
            }
            let upto = current.min(next + REPLAY_STEP - 1);
            let history = {
                let view = View::new(&shared.db, &shared.index);
                view.history(next, upto, spec.prev_kv)
            };
            let batches = match history {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(WatchItem::Failed(e.to_string())).await;
                    return;
                }
            };
            for (revision, events) in batches {
                let events = spec.select(&events);
                if !events.is_empty()
                    && tx
                        .send(WatchItem::Events {
                            revision,
                            events,
                            applied_at: None,
                        })
                        .await
                        .is_err()
                {
                    return;
                }
            }
            next = upto + 1;
            continue;
        }
        let batch = tokio::select! {
            r = live.recv() => r,
            _ = tx.closed() => return,
        };
        match batch {
            Ok(b) if b.revision < next => {}
            Ok(b) if b.revision == next && !spec.needs_history(&b) => {
                let events = spec.select(&b.events);
                if !events.is_empty()
                    && tx
                        .send(WatchItem::Events {
                            revision: b.revision,
                            events,
                            applied_at: Some(b.applied_at),
                        })
                        .await
                        .is_err()
                {
                    return;
                }
                next = b.revision + 1;
            }
            // A gap (snapshot installed), a lag, or a revision applied without
            // the previous values this watcher wants: replay from disk.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
