//! Physically drop history older than the compaction point. Compaction itself
//! is a replicated command (it moves the point on every master at the same
//! revision); this job reclaims the space locally, in small batches, and never
//! touches anything a read at or after the compaction point can see.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rocksdb::{WriteBatch, WriteOptions};

use crate::db::{cf, CF_REVS};
use crate::error::Result;
use crate::mvcc::codec;
use crate::node::Store;
use crate::state_machine::Shared;

/// Keys examined per hold of the index lock, so that applying and reading
/// wait for at most one slice of the work.
const KEYS_PER_STEP: usize = 10_000;

pub async fn run(store: Arc<Store>) {
    let mut stop = store.shutdown_signal();
    let mut done = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let target = store.shared().compacted.load(Ordering::Acquire);
        if target <= done {
            continue;
        }
        let shared = store.shared().clone();
        match tokio::task::spawn_blocking(move || compact(&shared, target)).await {
            Ok(Ok(removed)) => {
                tracing::info!(revision = target, removed, "compacted history");
                done = target;
            }
            Ok(Err(e)) => tracing::warn!("compacting to {target}: {e}"),
            Err(e) => tracing::warn!("compactor task: {e}"),
        }
    }
}

/// Remove versions superseded at or before `rev`, and keys deleted before it.
/// Each slice of keys leaves the index first, then RocksDB: a reader holding
/// a view from before still finds every record it names.
pub fn compact(shared: &Shared, rev: i64) -> Result<usize> {
    let db = &*shared.db;
    let mut removed = 0;
    let mut from: Option<Vec<u8>> = None;
    loop {
        let (doomed, next) = shared
            .index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .compact(rev, from.as_deref(), KEYS_PER_STEP);
        let mut batch = WriteBatch::default();
        for (r, sub) in &doomed {
            batch.delete_cf(cf(db, CF_REVS), codec::rev_key(*r, *sub));
        }
        // Like the state machine's own writes, without the WAL: durable with
        // the next (atomic) flush, which then also holds the compaction
        // command that allowed them; lost in a crash, they are done again.
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        db.write_opt(batch, &opts)?;
        removed += doomed.len();
        match next {
            Some(key) => from = Some(key),
            None => return Ok(removed),
        }
    }
}
