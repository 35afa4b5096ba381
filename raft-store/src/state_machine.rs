//! The Raft state machine: applies committed commands to the MVCC store in
//! RocksDB, one write batch per entry (with `last_applied` in the same batch),
//! and publishes each new revision to the watch hub.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::db::{cf, CF_LEASES, CF_MEMBERS, CF_SM};
use crate::error::{Result, StoreError};
use crate::lease::{LeaseRecord, Lessor, MIN_TTL};
use crate::mvcc::codec::{self, meta};
use crate::mvcc::index::Index;
use crate::mvcc::read::View;
use crate::mvcc::write::{reads_after, Writer};
use crate::mvcc::{Op, TxnRequest};
use crate::snapshot;
use crate::types::{
    ApplyError, Command, Entry, LogId, NodeId, Outcome, Response, Snapshot, SnapshotMeta,
    StorageError, StoredMembership, TypeConfig,
};
use crate::watch::{RevisionBatch, WatchHub};

/// Attributes a member publishes about itself through the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttrs {
    pub name: String,
    pub client_urls: Vec<String>,
}

impl MemberAttrs {
    fn published(name: &str, client_urls: &[String]) -> Self {
        MemberAttrs {
            name: name.to_string(),
            client_urls: client_urls.to_vec(),
        }
    }
}

/// State shared between the state machine, readers and watchers.
pub struct Shared {
    pub db: Arc<DB>,
    /// Which versions of which keys exist; see [`crate::mvcc::index`].
    pub index: RwLock<Index>,
    /// Applied store revision. Updated after the batch is written and before
    /// it is published, so watchers never see a revision that is not on disk.
    pub revision: AtomicI64,
    pub compacted: AtomicI64,
    pub applied_index: AtomicU64,
    pub hub: WatchHub,
    pub leases: Lessor,
    pub members: Mutex<BTreeMap<NodeId, MemberAttrs>>,
    /// The last membership config applied (committed), as stored with the
    /// applied state; see [`crate::removal`] for what watches it.
    pub membership: watch::Sender<StoredMembership>,
    pub snapshot_dir: PathBuf,
    /// Held while a snapshot is built, dumped or installed: openraft builds
    /// snapshots in a task of their own, concurrently with serving and
    /// installing them, and all three touch the same files.
    pub snapshot_lock: Mutex<()>,
}

impl Shared {
    pub fn new(db: Arc<DB>, snapshot_dir: PathBuf) -> Result<Arc<Self>> {
        let shared = Arc::new(Shared {
            db,
            index: RwLock::new(Index::default()),
            revision: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            applied_index: AtomicU64::new(0),
            hub: WatchHub::default(),
            leases: Lessor::default(),
            members: Mutex::new(BTreeMap::new()),
            membership: watch::channel(StoredMembership::default()).0,
            snapshot_dir,
            snapshot_lock: Mutex::new(()),
        });
        shared.reload()?;
        Ok(shared)
    }

    /// Rebuild the key index and refresh the other in-memory mirrors from
    /// RocksDB (start-up).
    pub fn reload(&self) -> Result<()> {
        let index = Index::load(&self.db)?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
        self.reload_mirrors()
    }

    /// Refresh everything in memory but the key index from RocksDB (after a
    /// snapshot install, which rebuilds the index itself).
    pub fn reload_mirrors(&self) -> Result<()> {
        {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            self.revision.store(index.revision, Ordering::Release);
            self.compacted.store(index.compacted, Ordering::Release);
        }
        let applied = read_applied(&self.db)?;
        self.applied_index
            .store(applied.map(|l| l.index).unwrap_or(0), Ordering::Release);
        let leases = read_table::<LeaseRecord>(&self.db, CF_LEASES)?;
        self.leases
            .reset(leases.into_iter().map(|(id, rec)| (id as i64, rec)));
        let members: BTreeMap<NodeId, MemberAttrs> =
            read_table(&self.db, CF_MEMBERS)?.into_iter().collect();
        *self.members.lock().unwrap_or_else(|p| p.into_inner()) = members;
        let membership: Option<StoredMembership> = read_meta(&self.db, meta::MEMBERSHIP)?;
        self.membership.send_replace(membership.unwrap_or_default());
        Ok(())
    }

    pub fn member_attrs(&self) -> BTreeMap<NodeId, MemberAttrs> {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Every record of a family keyed by a big-endian u64.
fn read_table<T: for<'de> Deserialize<'de>>(
    db: &DB,
    family: &'static str,
) -> Result<Vec<(u64, T)>> {
    let mut out = Vec::new();
    for item in db.iterator_cf(cf(db, family), rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        let id = u64::from_be_bytes(
            k.as_ref()
                .try_into()
                .map_err(|_| StoreError::corrupt(family, "bad key"))?,
        );
        out.push((
            id,
            codec::decode(&v).map_err(|e| StoreError::corrupt(family, e))?,
        ));
    }
    Ok(out)
}

pub fn read_meta<T: for<'de> Deserialize<'de>>(db: &DB, key: &[u8]) -> Result<Option<T>> {
    match db.get_cf(cf(db, CF_SM), key)? {
        Some(v) => Ok(Some(
            codec::decode(&v).map_err(|e| StoreError::corrupt("sm meta", e))?,
        )),
        None => Ok(None),
    }
}

/// The last log id applied, stored as an `Option<LogId>` (what openraft
/// reports; `None` before the first entry).
pub fn read_applied(db: &DB) -> Result<Option<LogId>> {
    Ok(read_meta::<Option<LogId>>(db, meta::APPLIED)?.flatten())
}

/// Whether applying `entry` has no bound on its work: it deletes a range
/// (a prefix may hold any number of keys) or revokes a lease (with its keys).
fn may_take_long(entry: &Entry) -> bool {
    fn op(op: &Op) -> bool {
        match op {
            Op::Delete(d) => !d.range.is_single(),
            Op::Txn(t) => txn(t),
            Op::Range(_) | Op::Put(_) => false,
        }
    }
    fn txn(t: &TxnRequest) -> bool {
        t.success.iter().chain(&t.failure).any(op)
    }
    fn cmd(c: &Command) -> bool {
        match c {
            Command::Txn(t) => txn(t),
            Command::Batch(cmds) => cmds.iter().any(cmd),
            Command::Fenced { cmd: c, .. } => cmd(c),
            Command::LeaseRevoke { .. } => true,
            // Compaction only records its point here; `jobs::compactor`
            // drops the old versions in the background.
            Command::Compact { .. } | Command::LeaseGrant { .. } | Command::Publish { .. } => false,
        }
    }
    match &entry.payload {
        EntryPayload::Normal(c) => cmd(c),
        EntryPayload::Blank | EntryPayload::Membership(_) => false,
    }
}

/// `block_in_place` needs a multi-threaded runtime (unit tests run on a
/// current-thread one, where blocking the one thread is all there is).
fn can_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    pub fn new(shared: Arc<Shared>) -> Self {
        StateMachine { shared }
    }

    /// Apply one entry. Its commands are written in runs, one RocksDB write
    /// batch per run, and each batch records how far the entry has been
    /// applied (`applied` at the end, a cursor before), so a crash part-way
    /// through resumes after the last run written. An entry is usually one
    /// run; see [`StateMachine::apply_run`] for what starts another.
    fn apply_entry(&self, entry: &Entry) -> Result<Response> {
        let db = &*self.shared.db;
        let log_id = entry.log_id;
        let (cmds, membership) = match &entry.payload {
            EntryPayload::Blank => (&[][..], None),
            EntryPayload::Membership(m) => (
                &[][..],
                Some(StoredMembership::new(Some(log_id), m.clone())),
            ),
            EntryPayload::Normal(Command::Batch(cmds)) => (cmds.as_slice(), None),
            EntryPayload::Normal(cmd) => (std::slice::from_ref(cmd), None),
        };
        // Only an entry of several commands can be split into runs, and so
        // have a cursor to resume from.
        let cursor = match cmds.len() {
            0 | 1 => None,
            _ => read_meta::<(u64, usize)>(db, meta::CURSOR)?,
        };
        let mut done = match cursor {
            Some((index, done)) if index == log_id.index => done,
            _ => 0,
        };
        let mut responses = Vec::with_capacity(cmds.len());
        // Applied before a crash; nobody is waiting for their results.
        let revision = self.shared.revision.load(Ordering::Acquire);
        responses.resize_with(done, || Response {
            revision,
            outcome: Ok(Outcome::None),
        });
        loop {
            done = self.apply_run(cmds, done, log_id, membership.as_ref(), &mut responses)?;
            if done == cmds.len() {
                break;
            }
        }
        let revision = self.shared.revision.load(Ordering::Acquire);
        match &entry.payload {
            EntryPayload::Normal(Command::Batch(_)) => Ok(Response {
                revision,
                outcome: Ok(Outcome::Batch(responses)),
            }),
            _ => Ok(responses.pop().unwrap_or(Response {
                revision,
                outcome: Ok(Outcome::None),
            })),
        }
    }

    /// Apply `cmds[from..]` up to the end of a run in one write batch, then
    /// update the in-memory mirrors and publish each revision's events.
    /// Returns where the run ended.
    ///
    /// Commands other than transactions (leases, compaction, member
    /// attributes) read and write outside the writer's overlay, so each is a
    /// run of its own; so is a transaction that reads a revision made earlier
    /// in the run, which it can only read from disk.
    fn apply_run(
        &self,
        cmds: &[Command],
        from: usize,
        log_id: LogId,
        membership: Option<&StoredMembership>,
        responses: &mut Vec<Response>,
    ) -> Result<usize> {
        let db = &*self.shared.db;
        let view = View::new(db, &self.shared.index);
        let base = view.revision();
        let mut batch = WriteBatch::default();
        let mut published = Vec::new();
        let mut applied = Vec::new();
        let mut end = from;
        let mut writer = Writer::new(db, &view, &mut batch, base);
        if !self.shared.hub.wants_prev_values() {
            writer = writer.without_prev_values();
        }
        while let Some(cmd) = cmds.get(end) {
            let alone = match txn_of(cmd) {
                Some(t) => end > from && reads_after(t, base),
                None => true,
            };
            if end > from {
                if alone {
                    break;
                }
                writer.next_command();
            }
            let outcome = match self.execute(cmd, log_id, &view, &mut writer) {
                Ok(outcome) => {
                    applied.push(cmd);
                    Ok(outcome)
                }
                // A refused command writes nothing.
                Err(StoreError::Rejected(e)) => {
                    writer.undo_command();
                    Err(e)
                }
                Err(e) => return Err(e),
            };
            let revision = writer.revision();
            if writer.changed() {
                published.push(RevisionBatch {
                    revision,
                    events: std::mem::take(&mut writer.events),
                    applied_at: Instant::now(),
                    prev_values: writer.prev_values(),
                });
            }
            responses.push(Response { revision, outcome });
            end += 1;
            if alone {
                break;
            }
        }
        let revision = writer.revision();
        let changes = writer.take_changes();
        drop(writer);
        // The index lock is taken below, to publish the run.
        drop(view);
        let sm = cf(db, CF_SM);
        if revision != base {
            batch.put_cf(sm, meta::REVISION, revision.to_be_bytes());
        }
        if end == cmds.len() {
            if let Some(m) = membership {
                batch.put_cf(sm, meta::MEMBERSHIP, codec::encode(m));
            }
            batch.put_cf(sm, meta::APPLIED, codec::encode(&Some(log_id)));
        } else {
            batch.put_cf(sm, meta::CURSOR, codec::encode(&(log_id.index, end)));
        }
        let mut opts = WriteOptions::default();
        // Made durable by the next flush; until then the Raft log holds the
        // entry (see `db`).
        opts.disable_wal(true);
        // etcd's backend commit: the applied state handed to the engine.
        let committing = Instant::now();
        db.write_opt(batch, &opts)?;
        metrics::histogram!("etcd_disk_backend_commit_duration_seconds")
            .record(committing.elapsed().as_secs_f64());
        {
            let mut index = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
            for change in changes {
                index.apply(change);
            }
            index.revision = revision;
        }
        self.shared.revision.store(revision, Ordering::Release);
        if end == cmds.len() {
            if let Some(m) = membership {
                self.shared.membership.send_replace(m.clone());
            }
        }
        for cmd in applied {
            self.after_apply(cmd);
        }
        for batch in published {
            self.shared.hub.publish(batch);
        }
        Ok(end)
    }

    fn execute(
        &self,
        cmd: &Command,
        log_id: LogId,
        view: &View<'_>,
        w: &mut Writer<'_>,
    ) -> Result<Outcome> {
        let db = &*self.shared.db;
        match cmd {
            Command::Fenced { term, leader, cmd } => {
                let by = log_id.leader_id;
                if (by.term, by.node_id) != (*term, *leader) {
                    return Err(ApplyError::Fenced.into());
                }
                self.execute(cmd, log_id, view, w)
            }
            Command::Txn(t) => match w.txn(t)? {
                crate::mvcc::OpResult::Txn { succeeded, results } => {
                    Ok(Outcome::Txn { succeeded, results })
                }
                _ => Err(StoreError::Invalid("txn returned a non-txn result".into())),
            },
            Command::Compact { revision } => {
                let current = view.revision();
                if *revision <= view.compacted() {
                    return Err(ApplyError::Compacted.into());
                }
                if *revision > current {
                    return Err(ApplyError::FutureRevision.into());
                }
                w_batch_put(
                    w,
                    cf(db, CF_SM),
                    meta::COMPACTED,
                    revision.to_be_bytes().to_vec(),
                );
                Ok(Outcome::Compacted)
            }
            Command::LeaseGrant { id, ttl } => {
                if db
                    .get_cf(cf(db, CF_LEASES), codec::u64_key(*id as u64))?
                    .is_some()
                {
                    return Err(ApplyError::LeaseExists.into());
                }
                let ttl = (*ttl).max(MIN_TTL);
                w_batch_put(
                    w,
                    cf(db, CF_LEASES),
                    &codec::u64_key(*id as u64),
                    codec::encode(&LeaseRecord { ttl }),
                );
                Ok(Outcome::LeaseGranted { id: *id, ttl })
            }
            Command::LeaseRevoke { id } => {
                if db
                    .get_cf(cf(db, CF_LEASES), codec::u64_key(*id as u64))?
                    .is_none()
                {
                    return Err(ApplyError::LeaseNotFound.into());
                }
                w.revoke_lease(*id)?;
                Ok(Outcome::LeaseRevoked)
            }
            Command::Batch(_) => Err(StoreError::Invalid("nested command batch".into())),
            Command::Publish {
                id,
                name,
                client_urls,
            } => {
                let attrs = MemberAttrs::published(name, client_urls);
                w_batch_put(
                    w,
                    cf(db, CF_MEMBERS),
                    &codec::u64_key(*id),
                    codec::encode(&attrs),
                );
                Ok(Outcome::Published)
            }
        }
    }

    /// In-memory effects of an applied command, after its batch is on disk.
    fn after_apply(&self, cmd: &Command) {
        match cmd {
            Command::Compact { revision } => {
                self.shared
                    .index
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .compacted = *revision;
                self.shared.compacted.store(*revision, Ordering::Release)
            }
            Command::LeaseGrant { id, ttl } => self.shared.leases.granted(*id, (*ttl).max(MIN_TTL)),
            Command::LeaseRevoke { id } => self.shared.leases.revoked(*id),
            Command::Publish {
                id,
                name,
                client_urls,
            } => {
                let attrs = MemberAttrs::published(name, client_urls);
                self.shared
                    .members
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(*id, attrs);
            }
            Command::Fenced { cmd, .. } => self.after_apply(cmd),
            Command::Txn(_) | Command::Batch(_) => {}
        }
    }
}

/// The transaction a command carries, if it is one.
fn txn_of(cmd: &Command) -> Option<&TxnRequest> {
    match cmd {
        Command::Txn(t) => Some(t),
        Command::Fenced { cmd, .. } => txn_of(cmd),
        _ => None,
    }
}

fn w_batch_put(w: &mut Writer<'_>, family: &rocksdb::ColumnFamily, key: &[u8], value: Vec<u8>) {
    w.batch_mut().put_cf(family, key, value);
}

fn io_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = snapshot::Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let db = &*self.shared.db;
        let applied = read_applied(db).map_err(io_err)?;
        let membership: Option<StoredMembership> =
            read_meta(db, meta::MEMBERSHIP).map_err(io_err)?;
        Ok((applied, membership.unwrap_or_default()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let started = Instant::now();
            let resp = if may_take_long(&entry) && can_block_in_place() {
                // Off the runtime's worker for as long as it takes, so
                // heartbeats and client requests go on meanwhile: with one
                // worker (a 1-core machine) deleting a 350k-key prefix here
                // stalled the leader past its followers' election timeout.
                tokio::task::block_in_place(|| self.apply_entry(&entry))
            } else {
                self.apply_entry(&entry)
            }
            .map_err(io_err)?;
            self.shared
                .applied_index
                .store(entry.log_id.index, Ordering::Release);
            metrics::histogram!("skiff_store_apply_seconds")
                .record(started.elapsed().as_secs_f64());
            out.push(resp);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        snapshot::Builder::new(self.shared.clone())
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        snapshot::begin_receiving(&self.shared.snapshot_dir)
            .await
            .map_err(io_err)
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        snapshot::install(&self.shared, meta, *data)
            .await
            .map_err(io_err)?;
        self.shared.reload_mirrors().map_err(io_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        snapshot::current(&self.shared).await.map_err(io_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for snapshot::Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.build().await.map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    /// Entries applied, then the mirrors reloaded (as after a restart or a
    /// snapshot install): the applied index is the real one. It once read
    /// the stored `Option<LogId>` as a `LogId`, which came out about 256
    /// times too large and let linearizable reads skip waiting for the apply.
    #[tokio::test]
    async fn reload_keeps_the_applied_index() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = crate::db::open(&dir.path().join("db")).expect("db");
        let shared = Shared::new(db, dir.path().join("snapshots")).expect("shared");
        let mut sm = StateMachine::new(shared.clone());
        let entries = (1..=3).map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 7), i),
            payload: EntryPayload::Blank,
        });
        sm.apply(entries).await.expect("apply");
        assert_eq!(shared.applied_index.load(Ordering::Acquire), 3);
        shared.reload().expect("reload");
        assert_eq!(shared.applied_index.load(Ordering::Acquire), 3);
        let (applied, _) = sm.applied_state().await.expect("applied state");
        assert_eq!(applied.map(|l| l.index), Some(3));
    }
}
