//! Reads over a consistent RocksDB snapshot: point lookups and ranges at the
//! current revision (from `latest`) or at a past one (from `index`), compare
//! evaluation, and history replay for watchers.

use rocksdb::{ReadOptions, DB};

use super::codec::{self, meta, Latest, Stored};
use super::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, RangeRequest,
    RangeResponse,
};
use super::{SortOrder, SortTarget};
use crate::db::{cf, CF_HISTORY, CF_INDEX, CF_LATEST, CF_SM};
use crate::error::{Result, StoreError};
use crate::types::ApplyError;

pub type Snap<'a> = rocksdb::SnapshotWithThreadMode<'a, DB>;

/// A point-in-time view of the state machine.
pub struct View<'a> {
    db: &'a DB,
    snap: Snap<'a>,
}

impl<'a> View<'a> {
    pub fn new(db: &'a DB) -> Self {
        View {
            db,
            snap: db.snapshot(),
        }
    }

    fn meta_i64(&self, key: &[u8]) -> Result<i64> {
        match self.snap.get_cf(cf(self.db, CF_SM), key)? {
            Some(v) => Ok(i64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::corrupt("sm meta", "bad i64"))?,
            )),
            None => Ok(0),
        }
    }

    /// The store revision: bumped once by every command that changes a key.
    pub fn revision(&self) -> Result<i64> {
        self.meta_i64(meta::REVISION)
    }

    /// History before this revision may be gone.
    pub fn compacted(&self) -> Result<i64> {
        self.meta_i64(meta::COMPACTED)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.snap.get_cf(cf(self.db, CF_LATEST), key)? {
            Some(v) => Ok(Some(self.resolve(key, &v)?)),
            None => Ok(None),
        }
    }

    /// The value a `latest` record points at.
    fn resolve(&self, key: &[u8], latest: &[u8]) -> Result<KeyValue> {
        let l: Latest = codec::decode(latest).map_err(|e| StoreError::corrupt("latest", e))?;
        self.version(key, l.mod_revision, l.sub)?
            .ok_or_else(|| StoreError::corrupt("latest", "points at a missing version"))
    }

    /// One exact version from `index`.
    fn version(&self, key: &[u8], rev: i64, sub: u32) -> Result<Option<KeyValue>> {
        match self
            .snap
            .get_cf(cf(self.db, CF_INDEX), codec::index_key(key, rev, sub))?
        {
            Some(v) => Ok(Some(decode_stored(&v)?.into_kv(key.to_vec()))),
            None => Ok(None),
        }
    }

    /// The version of `key` visible at `rev` (None if absent or deleted then).
    pub fn get_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        let mut it = self.snap.raw_iterator_cf(cf(self.db, CF_INDEX));
        it.seek_for_prev(codec::index_key(key, rev, u32::MAX));
        if !it.valid() {
            it.status()?;
            return Ok(None);
        }
        let (k, v) = match it.item() {
            Some(kv) => kv,
            None => return Ok(None),
        };
        let (found, _, _) =
            codec::parse_index_key(k).ok_or_else(|| StoreError::corrupt("index", "bad key"))?;
        if found != key {
            return Ok(None);
        }
        let stored = decode_stored(v)?;
        Ok(match stored.kind {
            EventKind::Put => Some(stored.into_kv(found)),
            EventKind::Delete => None,
        })
    }

    /// Visit live keys in `range` in key order until `visit` returns false.
    pub fn scan(
        &self,
        range: &KeyRange,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        if range.is_single() {
            if let Some(v) = self.snap.get_cf(cf(self.db, CF_LATEST), &range.key)? {
                visit(&range.key, &v)?;
            }
            return Ok(());
        }
        let mut opts = ReadOptions::default();
        if let Some(end) = range.end() {
            opts.set_iterate_upper_bound(end.to_vec());
        }
        let mut it = self.snap.raw_iterator_cf_opt(cf(self.db, CF_LATEST), opts);
        it.seek(&range.key);
        while let Some((k, v)) = it.item() {
            if !visit(k, v)? {
                return Ok(());
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Live keys in `range`, in key order.
    pub fn range_latest(&self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        self.scan(range, |k, v| {
            out.push(self.resolve(k, v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Keys in `range` as they were at `rev`, in key order.
    pub fn range_at(&self, range: &KeyRange, rev: i64) -> Result<Vec<KeyValue>> {
        let mut opts = ReadOptions::default();
        if let (false, Some(end)) = (range.is_single(), range.end()) {
            opts.set_iterate_upper_bound(codec::escape_key(end));
        }
        let mut it = self.snap.raw_iterator_cf_opt(cf(self.db, CF_INDEX), opts);
        it.seek(codec::escape_key(&range.key));
        let mut out = Vec::new();
        // The newest version at or before `rev` of the key being walked.
        let mut current: Option<(Vec<u8>, Option<Stored>)> = None;
        while let Some((k, v)) = it.item() {
            let (key, krev, _) =
                codec::parse_index_key(k).ok_or_else(|| StoreError::corrupt("index", "bad key"))?;
            if range.is_single() && key != range.key {
                break;
            }
            if current.as_ref().map(|(ck, _)| ck != &key).unwrap_or(true) {
                if let Some((ck, Some(s))) = current.take() {
                    if s.kind == EventKind::Put {
                        out.push(s.into_kv(ck));
                    }
                }
                current = Some((key, None));
            }
            if krev <= rev {
                if let Some((_, slot)) = current.as_mut() {
                    *slot = Some(decode_stored(v)?);
                }
            }
            it.next();
        }
        it.status()?;
        if let Some((ck, Some(s))) = current {
            if s.kind == EventKind::Put {
                out.push(s.into_kv(ck));
            }
        }
        Ok(out)
    }

    /// Serve a range request, checking its revision against the compaction
    /// point and the current revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let current = self.revision()?;
        let rev = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        if rev > current {
            return Err(ApplyError::FutureRevision.into());
        }
        if req.revision > 0 && rev < self.compacted()? {
            return Err(ApplyError::Compacted.into());
        }
        let plain = req.sort_order == SortOrder::None
            || (req.sort_order == SortOrder::Ascend && req.sort_target == SortTarget::Key);
        let filtered = req.min_mod_revision > 0
            || req.max_mod_revision > 0
            || req.min_create_revision > 0
            || req.max_create_revision > 0;
        if rev == current && plain && !filtered {
            // Fast path: decode at most `limit` values, count the rest.
            let limit = if req.limit > 0 {
                req.limit as usize
            } else {
                usize::MAX
            };
            let mut resp = RangeResponse::default();
            self.scan(&req.range, |k, v| {
                resp.count += 1;
                if !req.count_only && resp.kvs.len() < limit {
                    let mut kv = self.resolve(k, v)?;
                    if req.keys_only {
                        kv.value.clear();
                    }
                    resp.kvs.push(kv);
                }
                Ok(true)
            })?;
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
        let mut it = self.snap.raw_iterator_cf_opt(cf(self.db, CF_HISTORY), opts);
        it.seek(codec::rev_key(from, 0));
        let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
        while let Some((k, v)) = it.item() {
            let (rev, sub) =
                codec::parse_rev_key(k).ok_or_else(|| StoreError::corrupt("history", "bad key"))?;
            let key = v.to_vec();
            let stored = match self
                .snap
                .get_cf(cf(self.db, CF_INDEX), codec::index_key(&key, rev, sub))?
            {
                Some(s) => decode_stored(&s)?,
                None => {
                    return Err(StoreError::corrupt(
                        "history",
                        "points at a missing version",
                    ))
                }
            };
            let prev = if prev_kv {
                self.get_at(&key, rev - 1)?
            } else {
                None
            };
            let kind = stored.kind;
            let event = Event {
                kind,
                kv: stored.into_kv(key),
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

pub fn decode_stored(v: &[u8]) -> Result<Stored> {
    codec::decode(v).map_err(|e| StoreError::corrupt("kv", e))
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
