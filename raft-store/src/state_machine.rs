//! The Raft state machine: applies committed commands to the MVCC store in
//! RocksDB, one write batch per entry (with `last_applied` in the same batch),
//! and publishes each new revision to the watch hub.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::db::{cf, CF_LEASES, CF_MEMBERS, CF_SM};
use crate::error::{Result, StoreError};
use crate::lease::{LeaseRecord, Lessor, MIN_TTL};
use crate::mvcc::codec::{self, meta};
use crate::mvcc::read::View;
use crate::mvcc::write::Writer;
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
    /// Applied store revision. Updated after the batch is written and before
    /// it is published, so watchers never see a revision that is not on disk.
    pub revision: AtomicI64,
    pub compacted: AtomicI64,
    pub applied_index: AtomicU64,
    pub hub: WatchHub,
    pub leases: Lessor,
    pub members: Mutex<BTreeMap<NodeId, MemberAttrs>>,
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
            revision: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
            applied_index: AtomicU64::new(0),
            hub: WatchHub::default(),
            leases: Lessor::default(),
            members: Mutex::new(BTreeMap::new()),
            snapshot_dir,
            snapshot_lock: Mutex::new(()),
        });
        shared.reload()?;
        Ok(shared)
    }

    /// Refresh the in-memory mirrors from RocksDB (start-up, snapshot install).
    pub fn reload(&self) -> Result<()> {
        let view = View::new(&self.db);
        self.revision.store(view.revision()?, Ordering::Release);
        self.compacted.store(view.compacted()?, Ordering::Release);
        let applied = read_applied(&self.db)?;
        self.applied_index
            .store(applied.map(|l| l.index).unwrap_or(0), Ordering::Release);
        let leases = read_table::<LeaseRecord>(&self.db, CF_LEASES)?;
        self.leases
            .reset(leases.into_iter().map(|(id, rec)| (id as i64, rec)));
        let members: BTreeMap<NodeId, MemberAttrs> =
            read_table(&self.db, CF_MEMBERS)?.into_iter().collect();
        *self.members.lock().unwrap_or_else(|p| p.into_inner()) = members;
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

pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    pub fn new(shared: Arc<Shared>) -> Self {
        StateMachine { shared }
    }

    /// Apply one entry. Each command is one RocksDB write batch that also
    /// records how far the entry has been applied, so a crash part-way
    /// through a batched entry resumes after the last command written.
    fn apply_entry(&self, entry: &Entry) -> Result<Response> {
        let db = &*self.shared.db;
        let log_id = entry.log_id;
        let finish = |b: &mut WriteBatch| {
            b.put_cf(cf(db, CF_SM), meta::APPLIED, codec::encode(&Some(log_id)))
        };
        match &entry.payload {
            EntryPayload::Blank => self.apply_command(None, log_id, finish),
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(log_id), m.clone());
                self.apply_command(None, log_id, |b| {
                    b.put_cf(cf(db, CF_SM), meta::MEMBERSHIP, codec::encode(&stored));
                    finish(b);
                })
            }
            EntryPayload::Normal(Command::Batch(cmds)) => {
                let cursor: Option<(u64, usize)> = read_meta(db, meta::CURSOR)?;
                let skip = match cursor {
                    Some((index, done)) if index == log_id.index => done,
                    _ => 0,
                };
                let mut responses = Vec::with_capacity(cmds.len());
                for (i, cmd) in cmds.iter().enumerate() {
                    if i < skip {
                        // Applied before a crash; nobody is waiting for its result.
                        responses.push(Response {
                            revision: self.shared.revision.load(Ordering::Acquire),
                            outcome: Ok(Outcome::None),
                        });
                        continue;
                    }
                    let resp = if i + 1 == cmds.len() {
                        self.apply_command(Some(cmd), log_id, finish)?
                    } else {
                        self.apply_command(Some(cmd), log_id, |b| {
                            b.put_cf(
                                cf(db, CF_SM),
                                meta::CURSOR,
                                codec::encode(&(log_id.index, i + 1)),
                            )
                        })?
                    };
                    responses.push(resp);
                }
                let revision = self.shared.revision.load(Ordering::Acquire);
                Ok(Response {
                    revision,
                    outcome: Ok(Outcome::Batch(responses)),
                })
            }
            EntryPayload::Normal(cmd) => self.apply_command(Some(cmd), log_id, finish),
        }
    }

    /// Apply one command (or none) in one write batch, then update the
    /// in-memory mirrors and publish the revision's events.
    fn apply_command(
        &self,
        cmd: Option<&Command>,
        log_id: LogId,
        finish: impl FnOnce(&mut WriteBatch),
    ) -> Result<Response> {
        let db = &*self.shared.db;
        let view = View::new(db);
        let base = view.revision()?;
        let mut batch = WriteBatch::default();
        let mut events = Vec::new();
        let mut revision = base;
        let outcome = match cmd {
            None => Ok(Outcome::None),
            Some(cmd) => {
                let mut writer = Writer::new(db, &view, &mut batch, base);
                match self.execute(cmd, log_id, &view, &mut writer) {
                    Ok(outcome) => {
                        if writer.changed() {
                            revision = writer.revision();
                        }
                        events = std::mem::take(&mut writer.events);
                        Ok(outcome)
                    }
                    // A refused command writes nothing but its log position.
                    Err(StoreError::Rejected(e)) => {
                        drop(writer);
                        batch.clear();
                        Err(e)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if revision != base {
            batch.put_cf(cf(db, CF_SM), meta::REVISION, revision.to_be_bytes());
        }
        finish(&mut batch);
        let mut opts = WriteOptions::default();
        // Durable through the shared WAL: the log append that carried this
        // entry was synced, and a later sync covers this write too.
        opts.set_sync(false);
        db.write_opt(batch, &opts)?;
        self.shared.revision.store(revision, Ordering::Release);
        let resp = Response { revision, outcome };
        if let (Some(cmd), Ok(_)) = (cmd, &resp.outcome) {
            self.after_apply(cmd);
        }
        if !events.is_empty() {
            self.shared.hub.publish(RevisionBatch {
                revision,
                events,
                applied_at: std::time::Instant::now(),
            });
        }
        Ok(resp)
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
                let current = view.revision()?;
                if *revision <= view.compacted()? {
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
            let resp = self.apply_entry(&entry).map_err(io_err)?;
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
        self.shared.reload().map_err(io_err)?;
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
