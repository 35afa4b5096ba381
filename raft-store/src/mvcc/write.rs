//! Applying commands' key-value changes into a RocksDB write batch.
//!
//! One [`Writer`] covers a run of commands written in one batch. Every change
//! of one command shares one new revision; the sub-revision orders changes
//! within it. Reads made while applying (txn compares, ranges inside a txn,
//! previous values) see the changes of the command itself and of the
//! commands before it in the run through an overlay, as etcd's write
//! transactions do. A command refused part-way is undone: its batch records,
//! overlay entries, index changes and events are dropped.
//!
//! The value a put replaces or a delete removes is read only when something
//! will use it: the request asks for it (`prev_kv`), or a watcher may want it
//! ([`Writer::without_prev_values`] says none does). Otherwise its events
//! carry the previous key's metadata with an empty value, so that deleting a
//! large prefix does not load every value it removes into memory.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use rocksdb::{WriteBatch, DB};

use super::codec::{self, Record};
use super::index::{Change, Meta, Version};
use super::read::{compare_one, finish_range, View};
use super::{
    CompareTarget, DeleteRequest, Event, EventKind, KeyRange, KeyValue, Op, OpResult, PutRequest,
    TxnRequest,
};
use crate::db::{cf, CF_LEASES, CF_LEASE_KEYS, CF_REVS};
use crate::error::Result;
use crate::types::ApplyError;

/// Where a command's records start in the batch.
#[derive(Debug, Clone, Copy)]
struct Mark {
    bytes: usize,
    count: usize,
    changes: usize,
}

pub struct Writer<'a> {
    db: &'a DB,
    view: &'a View<'a>,
    batch: &'a mut WriteBatch,
    /// The revision the current command writes at.
    rev: i64,
    /// Changes made by the current command so far; also its next sub-revision.
    sub: u32,
    /// Live state of every key changed by this run of commands.
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    /// What the current command replaced in `overlay`, to undo it.
    undo: Vec<(Vec<u8>, Option<Option<KeyValue>>)>,
    /// The batch as it was before the current command.
    mark: Mark,
    /// Changes of the whole run, for the index once the batch is written.
    changes: Vec<Change>,
    /// The current command's events.
    pub events: Vec<Event>,
    /// Whether events carry the previous values of the keys they change.
    prev_values: bool,
}

impl<'a> Writer<'a> {
    /// A writer whose first command writes at `base_revision + 1`.
    pub fn new(
        db: &'a DB,
        view: &'a View<'a>,
        batch: &'a mut WriteBatch,
        base_revision: i64,
    ) -> Self {
        let mark = mark(batch, 0);
        Writer {
            db,
            view,
            batch,
            rev: base_revision + 1,
            sub: 0,
            overlay: BTreeMap::new(),
            undo: Vec::new(),
            mark,
            changes: Vec::new(),
            events: Vec::new(),
            prev_values: true,
        }
    }

    /// Leave previous values out of events (metadata stays) unless a
    /// request asks for them: no watcher will read them.
    pub fn without_prev_values(mut self) -> Self {
        self.prev_values = false;
        self
    }

    /// Whether this writer's events carry previous values.
    pub fn prev_values(&self) -> bool {
        self.prev_values
    }

    /// Move on to the next command of the run: it writes at the revision
    /// after the current one's if that changed anything.
    pub fn next_command(&mut self) {
        if self.changed() {
            self.rev += 1;
        }
        self.sub = 0;
        self.undo.clear();
        self.events.clear();
        self.mark = mark(self.batch, self.changes.len());
    }

    /// Drop everything the current command wrote (it was refused).
    pub fn undo_command(&mut self) {
        truncate(self.batch, self.mark);
        self.changes.truncate(self.mark.changes);
        for (key, before) in self.undo.drain(..).rev() {
            match before {
                Some(v) => self.overlay.insert(key, v),
                None => self.overlay.remove(&key),
            };
        }
        self.events.clear();
        self.sub = 0;
    }

    /// Whether the current command changed anything (and so the revision moves).
    pub fn changed(&self) -> bool {
        self.sub > 0
    }

    /// The store revision once the current command is applied.
    pub fn revision(&self) -> i64 {
        if self.changed() {
            self.rev
        } else {
            self.rev - 1
        }
    }

    /// A live key; its value is left empty unless `values`.
    fn get_with(&self, key: &[u8], values: bool) -> Result<Option<KeyValue>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None if values => self.view.get(key),
            None => Ok(self.view.get_key_only(key)),
        }
    }

    fn live(&self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        self.live_with(range, true)
    }

    /// Live keys in `range` including this run's changes, in key order;
    /// values are left empty (unless changed in this run) unless `values`.
    fn live_with(&self, range: &KeyRange, values: bool) -> Result<Vec<KeyValue>> {
        if range.is_single() {
            return Ok(self.get_with(&range.key, values)?.into_iter().collect());
        }
        let stored = if values {
            self.view.range_latest(range)?
        } else {
            self.view.range_latest_keys(range)
        };
        let end = match range.end() {
            // An inverted range holds nothing (and BTreeMap::range would panic).
            Some(end) if end <= range.key.as_slice() => return Ok(stored),
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let mut changed = self
            .overlay
            .range::<[u8], _>((Bound::Included(range.key.as_slice()), end))
            .peekable();
        if changed.peek().is_none() {
            return Ok(stored);
        }
        let mut merged: BTreeMap<Vec<u8>, KeyValue> =
            stored.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        for (k, v) in changed {
            match v {
                Some(kv) => merged.insert(k.clone(), kv.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_values().collect())
    }

    fn lease_exists(&self, id: i64) -> Result<bool> {
        Ok(self
            .db
            .get_cf(cf(self.db, CF_LEASES), codec::u64_key(id as u64))?
            .is_some())
    }

    fn set_live(&mut self, key: &[u8], value: Option<KeyValue>) {
        let before = self.overlay.insert(key.to_vec(), value);
        self.undo.push((key.to_vec(), before));
    }

    fn record(&mut self, kind: EventKind, kv: &KeyValue, prev: Option<KeyValue>) {
        let sub = self.sub;
        self.sub += 1;
        self.batch.put_cf(
            cf(self.db, CF_REVS),
            codec::rev_key(self.rev, sub),
            codec::encode(&Record::of(kind, kv)),
        );
        let deleted = kind == EventKind::Delete;
        self.changes.push(Change {
            key: kv.key.clone(),
            version: Version {
                rev: self.rev,
                sub,
                deleted,
            },
            live: (!deleted).then_some(Meta {
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                lease: kv.lease,
            }),
        });
        self.set_live(&kv.key, (!deleted).then(|| kv.clone()));
        self.events.push(Event {
            kind,
            kv: kv.clone(),
            prev_kv: prev,
        });
    }

    fn attach(&mut self, lease: i64, key: &[u8]) {
        self.batch
            .put_cf(cf(self.db, CF_LEASE_KEYS), lease_key(lease, key), []);
    }

    fn detach(&mut self, lease: i64, key: &[u8]) {
        self.batch
            .delete_cf(cf(self.db, CF_LEASE_KEYS), lease_key(lease, key));
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<OpResult> {
        let prev = self.get_with(
            &req.key,
            self.prev_values || req.prev_kv || req.ignore_value,
        )?;
        let value = if req.ignore_value {
            prev.as_ref().ok_or(ApplyError::KeyNotFound)?.value.clone()
        } else {
            req.value.clone()
        };
        let lease = if req.ignore_lease {
            prev.as_ref().ok_or(ApplyError::KeyNotFound)?.lease
        } else {
            req.lease
        };
        if lease != 0 && !self.lease_exists(lease)? {
            return Err(ApplyError::LeaseNotFound.into());
        }
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map(|p| p.create_revision).unwrap_or(self.rev),
            mod_revision: self.rev,
            version: prev.as_ref().map(|p| p.version).unwrap_or(0) + 1,
            value,
            lease,
        };
        if let Some(p) = prev.as_ref().filter(|p| p.lease != 0 && p.lease != lease) {
            self.detach(p.lease, &p.key);
        }
        if lease != 0 {
            self.attach(lease, &kv.key);
        }
        self.record(EventKind::Put, &kv, prev.clone());
        Ok(OpResult::Put {
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// Delete one live key at this command's revision.
    pub fn delete_key(&mut self, prev: KeyValue) {
        if prev.lease != 0 {
            self.detach(prev.lease, &prev.key);
        }
        let tomb = KeyValue {
            key: prev.key.clone(),
            mod_revision: self.rev,
            ..KeyValue::default()
        };
        self.record(EventKind::Delete, &tomb, Some(prev));
    }

    pub fn delete(&mut self, req: &DeleteRequest) -> Result<OpResult> {
        let doomed = self.live_with(&req.range, self.prev_values || req.prev_kv)?;
        let deleted = doomed.len() as i64;
        let prev_kvs = if req.prev_kv {
            doomed.clone()
        } else {
            Vec::new()
        };
        for kv in doomed {
            self.delete_key(kv);
        }
        Ok(OpResult::Delete { deleted, prev_kvs })
    }

    pub fn txn(&mut self, t: &TxnRequest) -> Result<OpResult> {
        check_duplicates(&t.success)?;
        check_duplicates(&t.failure)?;
        let mut succeeded = true;
        for c in &t.compare {
            // Only a compare on the value needs values read.
            let values = matches!(c.target, CompareTarget::Value(_));
            let kvs = self.live_with(&c.range, values)?;
            let holds = if kvs.is_empty() {
                !matches!(c.target, CompareTarget::Value(_)) && compare_one(c, &KeyValue::default())
            } else {
                kvs.iter().all(|kv| compare_one(c, kv))
            };
            if !holds {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.op(op)?);
        }
        Ok(OpResult::Txn { succeeded, results })
    }

    fn op(&mut self, op: &Op) -> Result<OpResult> {
        match op {
            Op::Put(p) => self.put(p),
            Op::Delete(d) => self.delete(d),
            Op::Txn(t) => self.txn(t),
            Op::Range(r) => {
                if r.revision > 0 && r.revision < self.rev {
                    Ok(OpResult::Range(self.view.range(r)?))
                } else {
                    Ok(OpResult::Range(finish_range(self.live(&r.range)?, r)))
                }
            }
        }
    }

    /// Delete every key attached to `lease` and the lease itself.
    pub fn revoke_lease(&mut self, lease: i64) -> Result<()> {
        for key in super::read::lease_keys(self.db, lease)? {
            if let Some(kv) = self.get_with(&key, self.prev_values)? {
                self.delete_key(kv);
            }
        }
        self.batch
            .delete_cf(cf(self.db, CF_LEASES), codec::u64_key(lease as u64));
        Ok(())
    }
}

pub fn lease_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&codec::u64_key(lease as u64));
    k.extend_from_slice(key);
    k
}

/// etcd refuses a branch that puts one key twice, or puts a key it also deletes.
fn check_duplicates(ops: &[Op]) -> Result<()> {
    let mut puts: HashSet<&[u8]> = HashSet::new();
    for op in ops {
        if let Op::Put(p) = op {
            if !puts.insert(&p.key) {
                return Err(ApplyError::DuplicateKey.into());
            }
        }
    }
    for op in ops {
        if let Op::Delete(d) = op {
            if puts.iter().any(|k| d.range.contains(k)) {
                return Err(ApplyError::DuplicateKey.into());
            }
        }
    }
    Ok(())
}

impl Writer<'_> {
    /// The batch this command writes into, for changes outside the key space
    /// (leases, compaction point, member attributes).
    pub fn batch_mut(&mut self) -> &mut WriteBatch {
        self.batch
    }

    /// The run's changes to the key index, to apply once its batch is written.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }
}

fn mark(batch: &WriteBatch, changes: usize) -> Mark {
    Mark {
        bytes: batch.size_in_bytes(),
        count: batch.len(),
        changes,
    }
}

/// Cut `batch` back to what it held at `mark`.
///
/// rust-rocksdb has no save points, so this rebuilds the batch from its
/// serialized form, which RocksDB defines as a 12-byte header (sequence
/// number: fixed64, record count: fixed32, both little-endian) followed by
/// the records in order. Only refused commands take this path.
fn truncate(batch: &mut WriteBatch, mark: Mark) {
    if batch.len() == mark.count {
        return;
    }
    let mut rep = batch.data()[..mark.bytes].to_vec();
    rep[8..12].copy_from_slice(&(mark.count as u32).to_le_bytes());
    *batch = WriteBatch::from_data(&rep);
}

/// Whether `t` (or a transaction nested in it) reads at a revision after
/// `revision`: such a read needs every earlier change on disk, not only in a
/// writer's overlay.
pub fn reads_after(t: &TxnRequest, revision: i64) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match op {
        Op::Range(r) => r.revision > revision,
        Op::Txn(inner) => reads_after(inner, revision),
        Op::Put(_) | Op::Delete(_) => false,
    })
}
