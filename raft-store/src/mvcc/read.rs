//! Reads of one consistent state: the key index (in memory) and a RocksDB
//! snapshot taken together, for point lookups and ranges at the current or
//! a past revision, and history replay for watchers.

use std::sync::{RwLock, RwLockReadGuard};

use rocksdb::{ReadOptions, DB};

use super::codec::{self, Record};
use super::index::{Index, KeyEntry, Version};
use super::{
    Compare, CompareOp, CompareTarget, Event, KeyRange, KeyValue, RangeRequest, RangeResponse,
};
use super::{SortOrder, SortTarget};
use crate::db::{cf, CF_REVS};
use crate::error::{Result, StoreError};
use crate::types::ApplyError;

pub type Snap<'a> = rocksdb::SnapshotWithThreadMode<'a, DB>;

/// A point-in-time view of the state machine. It holds the index's read
/// lock, which the state machine needs (briefly) after each write batch, so
/// a view is for one request: take it, read, drop it.
pub struct View<'a> {
    db: &'a DB,
    index: RwLockReadGuard<'a, Index>,
    snap: Snap<'a>,
}

impl<'a> View<'a> {
    pub fn new(db: &'a DB, index: &'a RwLock<Index>) -> Self {
        let index = index.read().unwrap_or_else(|p| p.into_inner());
        // Taken under the lock: every version the index names is in it, and
        // compaction (which changes the index first) removes none of them
        // from it.
        let snap = db.snapshot();
        View { db, index, snap }
    }

    /// The store revision: bumped once by every command that changes a key.
    pub fn revision(&self) -> i64 {
        self.index.revision
    }

    /// History before this revision may be gone.
    pub fn compacted(&self) -> i64 {
        self.index.compacted
    }

    /// The record of one version.
    fn fetch(&self, key: &[u8], v: Version) -> Result<KeyValue> {
        match self
            .snap
            .get_pinned_cf(cf(self.db, CF_REVS), codec::rev_key(v.rev, v.sub))?
        {
            Some(bytes) => Ok(Record::decode(&bytes)?.into_kv(v.rev)),
            None => Err(StoreError::corrupt(
                "revs",
                format!(
                    "{} at revision {} is missing",
                    String::from_utf8_lossy(key),
                    v.rev
                ),
            )),
        }
    }

    /// A live key's metadata alone, for keys-only reads.
    fn key_only(key: &[u8], entry: &KeyEntry) -> Option<KeyValue> {
        let (_, meta) = entry.live()?;
        Some(KeyValue {
            key: key.to_vec(),
            create_revision: meta.create_revision,
            mod_revision: meta.mod_revision,
            version: meta.version,
            value: Vec::new(),
            lease: meta.lease,
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.index.get(key).and_then(|e| e.live()) {
            Some((v, _)) => Ok(Some(self.fetch(key, v)?)),
            None => Ok(None),
        }
    }

    /// A live key without its value.
    pub fn get_key_only(&self, key: &[u8]) -> Option<KeyValue> {
        Self::key_only(key, self.index.get(key)?)
    }

    /// Live keys in `range`, in key order, without their values.
    pub fn range_latest_keys(&self, range: &KeyRange) -> Vec<KeyValue> {
        self.index
            .range(range)
            .filter_map(|(k, e)| Self::key_only(k, e))
            .collect()
    }

    /// The version of `key` visible at `rev` (None if absent or deleted then).
    pub fn get_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        match self.index.get(key).and_then(|e| e.at(rev)) {
            Some(v) => Ok(Some(self.fetch(key, v)?)),
            None => Ok(None),
        }
    }

    /// Live keys in `range`, in key order.
    pub fn range_latest(&self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        self.index
            .range(range)
            .filter_map(|(k, e)| e.live().map(|(v, _)| (k, v)))
            .map(|(k, v)| self.fetch(k, v))
            .collect()
    }

    /// Keys in `range` as they were at `rev`, in key order.
    pub fn range_at(&self, range: &KeyRange, rev: i64) -> Result<Vec<KeyValue>> {
        self.index
            .range(range)
            .filter_map(|(k, e)| e.at(rev).map(|v| (k, v)))
            .map(|(k, v)| self.fetch(k, v))
            .collect()
    }

    /// Serve a range request, checking its revision against the compaction
    /// point and the current revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let current = self.revision();
        let rev = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        if rev > current {
            return Err(ApplyError::FutureRevision.into());
        }
        if req.revision > 0 && rev < self.compacted() {
            return Err(ApplyError::Compacted.into());
        }
        let plain = req.sort_order == SortOrder::None
            || (req.sort_order == SortOrder::Ascend && req.sort_target == SortTarget::Key);
        let filtered = req.min_mod_revision > 0
            || req.max_mod_revision > 0
            || req.min_create_revision > 0
            || req.max_create_revision > 0;
        if rev == current && plain && !filtered {
            // Fast path: fetch at most `limit` values, count the rest from
            // the index alone.
            let limit = if req.limit > 0 {
                req.limit as usize
            } else {
                usize::MAX
            };
            let mut resp = RangeResponse::default();
            for (k, e) in self.index.range(&req.range) {
                let Some((v, _)) = e.live() else { continue };
                resp.count += 1;
                if req.count_only || resp.kvs.len() >= limit {
                    continue;
                }
                let kv = if req.keys_only {
                    Self::key_only(k, e)
                } else {
                    Some(self.fetch(k, v)?)
                };
                resp.kvs.extend(kv);
            }
            resp.more = resp.count as usize > resp.kvs.len() && !req.count_only;
            return Ok(resp);
        }
        let kvs = if rev == current {
            self.range_latest(&req.range)?
        } else {
            self.range_at(&req.range, rev)?
        };
        Ok(finish_range(kvs, req))
    }

    /// Events with revisions in `[from, to]`, grouped by revision, in order.
    /// `prev_kv` fills each event's previous version.
    pub fn history(&self, from: i64, to: i64, prev_kv: bool) -> Result<Vec<(i64, Vec<Event>)>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(codec::rev_key(to.saturating_add(1), 0).to_vec());
        let mut it = self.snap.raw_iterator_cf_opt(cf(self.db, CF_REVS), opts);
        it.seek(codec::rev_key(from, 0));
        let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
        while let Some((k, v)) = it.item() {
            let (rev, _) =
                codec::parse_rev_key(k).ok_or_else(|| StoreError::corrupt("revs", "bad key"))?;
            let record = Record::decode(v)?;
            let prev = if prev_kv {
                self.get_at(record.key, rev - 1)?
            } else {
                None
            };
            let kind = record.kind;
            let event = Event {
                kind,
                kv: record.into_kv(rev),
                prev_kv: prev,
            };
            match out.last_mut() {
                Some((r, events)) if *r == rev => events.push(event),
                _ => out.push((rev, vec![event])),
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }
}

/// Apply filters, sort and limit to the keys of a range, as etcd does.
pub fn finish_range(mut kvs: Vec<KeyValue>, req: &RangeRequest) -> RangeResponse {
    let count = kvs.len() as i64;
    kvs.retain(|kv| {
        (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
    });
    let order = match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        // etcd sorts ascending when a target other than the key is given without an order.
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if order != SortOrder::None {
        kvs.sort_by(|a, b| match req.sort_target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        });
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.count_only {
        kvs.clear();
    }
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    RangeResponse { kvs, more, count }
}

/// Whether one key satisfies a compare.
pub fn compare_one(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.op {
        CompareOp::Equal => ord.is_eq(),
        CompareOp::NotEqual => !ord.is_eq(),
        CompareOp::Greater => ord.is_gt(),
        CompareOp::Less => ord.is_lt(),
    }
}

/// Keys attached to a lease.
pub fn lease_keys(db: &DB, lease: i64) -> Result<Vec<Vec<u8>>> {
    let prefix = codec::u64_key(lease as u64);
    let mut out = Vec::new();
    let mut it = db.raw_iterator_cf(cf(db, crate::db::CF_LEASE_KEYS));
    it.seek(prefix);
    while let Some(k) = it.key() {
        if !k.starts_with(&prefix) {
            break;
        }
        out.push(k[8..].to_vec());
        it.next();
    }
    it.status()?;
    Ok(out)
}
