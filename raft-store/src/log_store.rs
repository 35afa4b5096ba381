//! The Raft log in RocksDB (`logs` and `raft` column families).
//!
//! Appends are written to RocksDB at once (so they can be read back) and
//! acknowledged to openraft only after the WAL is synced. A dedicated thread
//! does the syncing: every append waiting when it wakes is covered by one
//! fsync, which is how concurrent clients share the cost of durability.
//!
//! openraft reads every entry back soon after appending it: to apply it, and
//! on the leader to send it to each follower. The newest entries are kept in
//! memory ([`Cache`]) so those reads skip RocksDB and decoding.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};
use rocksdb::{WriteBatch, DB};

use crate::db::{cf, CF_LOGS, CF_RAFT};
use crate::mvcc::codec;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

type Vote = openraft::Vote<NodeId>;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    committed: Arc<AtomicU64>,
    /// The first index not purged. Purged entries can outlive the purge on
    /// disk (see [`RaftLogStorage::purge`]); reads start here.
    unpurged: Arc<AtomicU64>,
    flusher: mpsc::Sender<SyncWork>,
    /// The sync thread, joined by [`LogStore::close`].
    syncer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    cache: Arc<Mutex<Cache>>,
}

/// Work for the sync thread.
enum SyncWork {
    /// Acknowledge this append once the WAL is synced.
    Append(LogFlushed<TypeConfig>),
    /// Once the WAL (and with it the purge point) is synced, delete the
    /// table files that hold only entries up to this index.
    DropFiles(u64),
    /// Sync what is pending and end.
    Stop,
}

/// Bytes of encoded entries the cache holds at most.
const CACHE_BYTES: usize = 64 << 20;

/// The newest log entries, contiguous by index, as appended.
#[derive(Default)]
struct Cache {
    /// Each entry with its encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Cache {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let next = self.entries.back().map(|(e, _)| e.log_id.index + 1);
        if next.is_some_and(|n| n != entry.log_id.index) {
            self.entries.clear();
            self.bytes = 0;
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.bytes > CACHE_BYTES && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// Forget entries from `index` on.
    fn truncate(&mut self, index: u64) {
        let keep = self
            .entries
            .partition_point(|(e, _)| e.log_id.index < index);
        let dropped: usize = self.entries.drain(keep..).map(|(_, size)| size).sum();
        self.bytes -= dropped;
    }

    /// Forget entries up to and including `index`; returns them, for the
    /// caller to free where it costs nothing (thousands of entries took
    /// 5-30 ms to free).
    fn purge(&mut self, index: u64) -> VecDeque<(Entry, usize)> {
        let n = self
            .entries
            .partition_point(|(e, _)| e.log_id.index <= index);
        let kept = self.entries.split_off(n);
        let gone = std::mem::replace(&mut self.entries, kept);
        self.bytes -= gone.iter().map(|(_, size)| size).sum::<usize>();
        gone
    }

    /// The entries in `[start, end)`, if the cache holds every one there is
    /// from `start` (entries past the newest do not exist).
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let take = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_logs(&std::io::Error::other(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

fn vote_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_vote(&std::io::Error::other(e.to_string())).into()
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        let (tx, rx) = mpsc::channel::<SyncWork>();
        let flush_db = db.clone();
        let syncer = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(flush_db, rx))
            .expect("spawning the log sync thread");
        LogStore {
            db,
            committed: Arc::new(AtomicU64::new(0)),
            unpurged: Arc::new(AtomicU64::new(0)),
            flusher: tx,
            syncer: Arc::new(Mutex::new(Some(syncer))),
            cache: Arc::default(),
        }
    }

    /// Stop the sync thread once it has synced what is pending, and wait for
    /// it, so that it is not still using RocksDB while the process exits
    /// (which aborted in RocksDB's locks). Appends after this fail.
    pub fn close(&self) {
        let _ = self.flusher.send(SyncWork::Stop);
        let handle = self.syncer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest log index known to be committed.
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Forget, before Raft starts, that this master led when it stopped.
    ///
    /// openraft resumes a leader whose committed vote names itself without an
    /// election. But a leader sends entries to followers before its own copy
    /// is synced, so after kill -9 its log can lack entries a quorum of
    /// followers holds and acknowledged; resumed as leader, it would overwrite
    /// them (found by the chaos harness as lost writes and stale reads after
    /// restarting every master). Keeping the vote but not its commitment makes
    /// the master start as a follower, and an election (where a voter refuses
    /// a log shorter than its own) picks the next leader. Returns whether the
    /// vote was changed.
    pub fn step_down(&self, id: NodeId) -> Result<bool, StorageError> {
        let Some(vote) = self.get_meta::<Vote>(KEY_VOTE)? else {
            return Ok(false);
        };
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(id) {
            return Ok(false);
        }
        let uncommitted = Vote::new(vote.leader_id().get_term(), id);
        self.put_meta(KEY_VOTE, &uncommitted, true)
            .map_err(vote_err)?;
        Ok(true)
    }

    fn get_meta<T: for<'de> serde::Deserialize<'de>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self
            .db
            .get_cf(cf(&self.db, CF_RAFT), key)
            .map_err(read_err)?
        {
            Some(v) => Ok(Some(codec::decode(&v).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), rocksdb::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT), key, codec::encode(value));
        if sync {
            crate::db::write_durable(&self.db, batch)
        } else {
            self.db.write(batch)
        }
    }
}

/// Sync the WAL for every append waiting, then acknowledge them in order.
fn sync_loop(db: Arc<DB>, rx: mpsc::Receiver<SyncWork>) {
    let mut stopping = false;
    while !stopping {
        let Ok(first) = rx.recv() else { return };
        let mut waiting = Vec::new();
        let mut drop_upto = None;
        for work in std::iter::once(first).chain(rx.try_iter()) {
            match work {
                SyncWork::Append(cb) => waiting.push(cb),
                SyncWork::DropFiles(index) => drop_upto = drop_upto.max(Some(index)),
                SyncWork::Stop => stopping = true,
            }
        }
        let started = Instant::now();
        let result = db.flush_wal(true);
        let took = started.elapsed().as_secs_f64();
        metrics::histogram!("skiff_store_wal_fsync_seconds").record(took);
        metrics::histogram!("etcd_disk_wal_fsync_duration_seconds").record(took);
        metrics::histogram!("skiff_store_wal_fsync_batch").record(waiting.len() as f64);
        for cb in waiting {
            let r = result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string()));
            cb.log_io_completed(r);
        }
        if let (Some(index), Ok(())) = (drop_upto, &result) {
            drop_purged_files(&db, index);
        }
    }
}

/// Delete the log's table files that hold only entries up to `index`, at
/// once and unread; compaction would otherwise read them to drop them.
/// (RocksDB also takes files that end at the range's end, so the range ends
/// at `index` itself, the last purged entry.) A failure only leaves the
/// files to compaction.
fn drop_purged_files(db: &DB, index: u64) {
    let started = Instant::now();
    let logs = cf(db, CF_LOGS);
    match db.delete_file_in_range_cf(logs, codec::u64_key(0), codec::u64_key(index)) {
        Ok(()) => {
            tracing::debug!(upto = index, took = ?started.elapsed(), "purged log files dropped")
        }
        Err(e) => tracing::warn!(upto = index, "dropping purged log files: {e}"),
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        }
        .max(self.unpurged.load(Ordering::Acquire));
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(entries) = self.cache().get(start, end) {
            return Ok(entries);
        }
        let mut it = self.db.raw_iterator_cf(cf(&self.db, CF_LOGS));
        it.seek(codec::u64_key(start));
        let mut out = Vec::new();
        while let Some((k, v)) = it.item() {
            let index = u64::from_be_bytes(k.try_into().map_err(read_err)?);
            if !range.contains(&index) {
                break;
            }
            out.push(codec::decode::<Entry>(v).map_err(read_err)?);
            it.next();
        }
        it.status().map_err(read_err)?;
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let unpurged = last_purged.map_or(0, |l| l.index + 1);
        self.unpurged.store(unpurged, Ordering::Release);
        let mut it = self.db.raw_iterator_cf(cf(&self.db, CF_LOGS));
        it.seek_to_last();
        let last = match it.value() {
            Some(v) => Some(codec::decode::<Entry>(v).map_err(read_err)?.log_id),
            None => None,
        };
        it.status().map_err(read_err)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            // What is left on disk may be purged entries only.
            last_log_id: last.filter(|l| l.index >= unpurged).or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // The vote must be on disk before it is granted.
        self.put_meta(KEY_VOTE, vote, true).map_err(vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint for faster restarts; losing it only means re-learning it.
        let index = committed.map(|l| l.index).unwrap_or(0);
        self.committed.store(index, Ordering::Release);
        metrics::gauge!("skiff_raft_commit_index").set(index as f64);
        metrics::counter!("etcd_server_proposals_committed_total").absolute(index);
        self.put_meta(KEY_COMMITTED, &committed, false)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let mut batch = WriteBatch::default();
        let logs = cf(&self.db, CF_LOGS);
        let mut appended = Vec::new();
        for entry in entries {
            let encoded = codec::encode(&entry);
            let size = encoded.len();
            batch.put_cf(logs, codec::u64_key(entry.log_id.index), encoded);
            appended.push((entry, size));
        }
        // Readable now; durable once the sync thread has flushed the WAL,
        // which is when openraft is told (through `callback`).
        self.db.write(batch).map_err(write_err)?;
        {
            let mut cache = self.cache();
            for (entry, size) in appended {
                cache.push(entry, size);
            }
        }
        metrics::histogram!("skiff_store_log_append_seconds")
            .record(started.elapsed().as_secs_f64());
        self.flusher
            .send(SyncWork::Append(callback))
            .map_err(|_| write_err("log sync thread stopped"))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache().truncate(log_id.index);
        // Ordered before any later append in the WAL, so synced with it.
        self.db
            .delete_range_cf(
                cf(&self.db, CF_LOGS),
                codec::u64_key(log_id.index),
                codec::u64_key(u64::MAX),
            )
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let started = Instant::now();
        let evicted = self.cache().purge(log_id.index);
        if !evicted.is_empty() {
            // Thousands of entries took 5-30 ms to free, here in openraft's
            // core where every write waits.
            tokio::task::spawn_blocking(move || drop(evicted));
        }
        self.unpurged.store(log_id.index + 1, Ordering::Release);
        // The snapshot covering these entries is already synced to its file.
        // Nothing here waits for the disk: the purge point is made durable by
        // the sync thread's next fsync, and only after that are the table
        // files holding nothing but purged entries deleted (a log must not
        // claim entries whose files are gone). A crash before that fsync
        // finds the old purge point and the entries still there.
        //
        // The entries are not deleted one by one, nor by a range deletion:
        // a range tombstone spans every older file, so the log's table
        // files, otherwise disjoint, overlapped and compaction rewrote them
        // (tens of megabytes at each snapshot). Disjoint files move down the
        // levels untouched, and go whole once every entry in them is purged;
        // until then reads skip what is purged (`unpurged`).
        self.put_meta(KEY_PURGED, &log_id, false)
            .map_err(write_err)?;
        self.flusher
            .send(SyncWork::DropFiles(log_id.index))
            .map_err(|_| write_err("log sync thread stopped"))?;
        let took = started.elapsed();
        metrics::histogram!("skiff_store_log_purge_seconds").record(took.as_secs_f64());
        tracing::info!(upto = log_id.index, ?took, "log purged");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    fn log_files(db: &DB) -> usize {
        db.live_files()
            .expect("live files")
            .iter()
            .filter(|f| f.column_family_name == CF_LOGS)
            .count()
    }

    /// Purging drops the table files (below level 0) that hold only purged
    /// entries, and leaves every later entry readable, also from a file it
    /// shares with purged ones.
    #[tokio::test]
    async fn purge_drops_whole_files_and_keeps_later_entries() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = crate::db::open(&dir.path().join("db")).expect("db");
        let mut store = LogStore::new(db.clone());
        for chunk in 0..3u64 {
            let mut batch = WriteBatch::default();
            for i in chunk * 100 + 1..=chunk * 100 + 100 {
                batch.put_cf(
                    cf(&db, CF_LOGS),
                    codec::u64_key(i),
                    codec::encode(&entry(i)),
                );
            }
            db.write(batch).expect("write");
            db.flush_cf(cf(&db, CF_LOGS)).expect("flush");
            // Out of level 0 (whose files RocksDB never deletes by range),
            // as compaction moves a master's files over time.
            let (first, last) = (
                codec::u64_key(chunk * 100 + 1),
                codec::u64_key(chunk * 100 + 100),
            );
            db.compact_range_cf(cf(&db, CF_LOGS), Some(first), Some(last));
        }
        let before = log_files(&db);
        assert!(before >= 3, "{before} files");
        store.purge(entry(250).log_id).await.expect("purge");
        // The files go on the sync thread; closing waits for it.
        store.close();
        // Entries 1-100 and 101-200 were whole files; 201-300 shares one.
        assert_eq!(log_files(&db), before - 2);
        let kept = store.try_get_log_entries(201..=300).await.expect("read");
        assert_eq!(
            kept.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (251..=300).collect::<Vec<_>>()
        );
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(250));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(300));
    }

    /// Purged entries still on disk are neither read nor counted as the
    /// log's last entry.
    #[tokio::test]
    async fn purged_entries_left_on_disk_stay_invisible() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = crate::db::open(&dir.path().join("db")).expect("db");
        let mut store = LogStore::new(db.clone());
        let mut batch = WriteBatch::default();
        for i in 1..=10 {
            batch.put_cf(
                cf(&db, CF_LOGS),
                codec::u64_key(i),
                codec::encode(&entry(i)),
            );
        }
        db.write(batch).expect("write");
        store.purge(entry(10).log_id).await.expect("purge");
        store.close();
        let mut reopened = LogStore::new(db.clone());
        let state = reopened.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(10));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(10));
        assert!(reopened
            .try_get_log_entries(0..=10)
            .await
            .expect("read")
            .is_empty());
        reopened.close();
    }

    #[test]
    fn cache_serves_only_what_it_holds_contiguously() {
        let mut cache = Cache::default();
        assert_eq!(indexes(cache.get(1, 5)), None);
        for i in 5..=9 {
            cache.push(entry(i), 10);
        }
        assert_eq!(indexes(cache.get(6, 8)), Some(vec![6, 7]));
        assert_eq!(indexes(cache.get(8, u64::MAX)), Some(vec![8, 9]));
        // Older than the cache: read from RocksDB instead.
        assert_eq!(indexes(cache.get(4, 7)), None);
        // A truncated tail is gone; appends continue from there.
        cache.truncate(8);
        assert_eq!(indexes(cache.get(5, u64::MAX)), Some(vec![5, 6, 7]));
        cache.push(entry(8), 10);
        assert_eq!(indexes(cache.get(7, u64::MAX)), Some(vec![7, 8]));
        // Purged entries are gone from the front.
        let gone = cache.purge(6);
        assert_eq!(gone.len(), 2);
        assert_eq!(cache.bytes, 20);
        assert_eq!(indexes(cache.get(6, u64::MAX)), None);
        assert_eq!(indexes(cache.get(7, u64::MAX)), Some(vec![7, 8]));
        // A gap starts the cache over, so it never skips an index.
        cache.push(entry(12), 10);
        assert_eq!(indexes(cache.get(8, u64::MAX)), None);
        assert_eq!(indexes(cache.get(12, u64::MAX)), Some(vec![12]));
        // Past the byte budget the oldest entries go.
        for i in 13..13 + (CACHE_BYTES / 10) as u64 + 5 {
            cache.push(entry(i), 10);
        }
        assert!(cache.bytes <= CACHE_BYTES);
        assert_eq!(indexes(cache.get(12, 14)), None);
    }
}
