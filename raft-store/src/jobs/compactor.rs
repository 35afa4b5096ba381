//! Physically drop history older than the compaction point. Compaction itself
//! is a replicated command (it moves the point on every master at the same
//! revision); this job reclaims the space locally, in small batches, and never
//! touches anything a read at or after the compaction point can see.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rocksdb::{WriteBatch, DB};

use crate::db::{cf, CF_HISTORY, CF_INDEX};
use crate::error::{Result, StoreError};
use crate::mvcc::codec;
use crate::mvcc::read::decode_stored;
use crate::mvcc::EventKind;
use crate::node::Store;

const BATCH: usize = 10_000;

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
        let db = store.shared().db.clone();
        match tokio::task::spawn_blocking(move || compact(&db, target)).await {
            Ok(Ok(removed)) => {
                tracing::info!(revision = target, removed, "compacted history");
                done = target;
            }
            Ok(Err(e)) => tracing::warn!("compacting to {target}: {e}"),
            Err(e) => tracing::warn!("compactor task: {e}"),
        }
    }
}

/// Remove versions superseded at or before `rev`, and tombstones at or before it.
pub fn compact(db: &DB, rev: i64) -> Result<usize> {
    let mut removed = 0;
    db.delete_range_cf(
        cf(db, CF_HISTORY),
        codec::rev_key(0, 0),
        codec::rev_key(rev, 0),
    )?;
    let index = cf(db, CF_INDEX);
    let mut batch = WriteBatch::default();
    let mut it = db.raw_iterator_cf(index);
    it.seek_to_first();
    // The newest version at or before `rev` of the key being walked.
    let mut pending: Option<(Vec<u8>, Vec<u8>, EventKind)> = None;
    while let Some((k, v)) = it.item() {
        let (key, krev, _) =
            codec::parse_index_key(k).ok_or_else(|| StoreError::corrupt("index", "bad key"))?;
        let same_key = pending
            .as_ref()
            .map(|(pk, _, _)| *pk == key)
            .unwrap_or(false);
        if let Some((_, raw, kind)) = pending.take() {
            // A newer version of the same key at or before `rev` supersedes it;
            // a tombstone that is the last word on its key goes too.
            if (same_key && krev <= rev) || (!same_key && kind == EventKind::Delete) {
                batch.delete_cf(index, raw);
                removed += 1;
            }
        }
        if krev <= rev {
            pending = Some((key, k.to_vec(), decode_stored(v)?.kind));
        }
        if batch.len() >= BATCH {
            db.write(std::mem::take(&mut batch))?;
        }
        it.next();
    }
    it.status()?;
    if let Some((_, raw, EventKind::Delete)) = pending {
        batch.delete_cf(index, raw);
        removed += 1;
    }
    db.write(batch)?;
    Ok(removed)
}
