//! The key index, kept in memory: for every key, the revisions at which it
//! changed, oldest first, and what a read needs of its live version without
//! fetching the value. Values live in RocksDB under their revision (see
//! [`super::codec`]), so writing a version appends at the end of that family
//! instead of inserting a long random key, and a lookup by key costs no disk
//! read. etcd keeps the same split (its `treeIndex` over bolt).
//!
//! The index is rebuilt from RocksDB when a master starts and when it
//! installs a snapshot, and is changed only by the state machine, after the
//! write batch holding the same changes is in RocksDB: a reader that finds a
//! version here always finds its record there.

use std::collections::BTreeMap;
use std::ops::Bound;

use rocksdb::DB;

use super::codec::{self, meta, Record};
use super::{EventKind, KeyRange};
use crate::db::{cf, CF_REVS, CF_SM};
use crate::error::{Result, StoreError};

/// One change of a key: where its record is, and whether it deleted the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub rev: i64,
    pub sub: u32,
    pub deleted: bool,
}

/// The fields of a live key that the index answers on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// A key's versions, oldest first, and its live state.
#[derive(Debug, Clone, Default)]
pub struct KeyEntry {
    versions: Vec<Version>,
    live: Option<Meta>,
}

impl KeyEntry {
    /// The live version, if the key exists now.
    pub fn live(&self) -> Option<(Version, Meta)> {
        let meta = self.live?;
        Some((*self.versions.last()?, meta))
    }

    /// The newest version at or before `rev`, unless that version deleted the key.
    pub fn at(&self, rev: i64) -> Option<Version> {
        let n = self.versions.partition_point(|v| v.rev <= rev);
        let v = *self.versions.get(n.checked_sub(1)?)?;
        (!v.deleted).then_some(v)
    }
}

/// A change the state machine made, to be reflected in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    pub version: Version,
    /// The key's live state after the change; `None` for a delete.
    pub live: Option<Meta>,
}

#[derive(Debug, Default)]
pub struct Index {
    keys: BTreeMap<Vec<u8>, KeyEntry>,
    /// The store revision the index is at.
    pub revision: i64,
    /// Reads before this revision are refused.
    pub compacted: i64,
}

impl Index {
    /// Rebuild from RocksDB: every record, in revision order.
    pub fn load(db: &DB) -> Result<Self> {
        let mut index = Index {
            revision: meta_i64(db, meta::REVISION)?,
            compacted: meta_i64(db, meta::COMPACTED)?,
            ..Index::default()
        };
        let mut it = db.raw_iterator_cf(cf(db, CF_REVS));
        it.seek_to_first();
        while let Some((k, v)) = it.item() {
            let (rev, sub) =
                codec::parse_rev_key(k).ok_or_else(|| StoreError::corrupt("revs", "bad key"))?;
            let record = Record::decode(v)?;
            let deleted = record.kind == EventKind::Delete;
            index.apply(Change {
                key: record.key.to_vec(),
                version: Version { rev, sub, deleted },
                live: (!deleted).then_some(Meta {
                    create_revision: record.create_revision,
                    mod_revision: rev,
                    version: record.version,
                    lease: record.lease,
                }),
            });
            it.next();
        }
        it.status()?;
        Ok(index)
    }

    pub fn get(&self, key: &[u8]) -> Option<&KeyEntry> {
        self.keys.get(key)
    }

    /// Keys in `range` (live or not) with their entries, in key order.
    pub fn range<'a>(
        &'a self,
        range: &KeyRange,
    ) -> Box<dyn Iterator<Item = (&'a [u8], &'a KeyEntry)> + 'a> {
        if range.is_single() {
            return Box::new(
                self.keys
                    .get_key_value(range.key.as_slice())
                    .map(|(k, e)| (k.as_slice(), e))
                    .into_iter(),
            );
        }
        let end = match range.end() {
            Some(end) if end <= range.key.as_slice() => return Box::new(std::iter::empty()),
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        Box::new(
            self.keys
                .range::<[u8], _>((Bound::Included(range.key.as_slice()), end))
                .map(|(k, e)| (k.as_slice(), e)),
        )
    }

    pub fn apply(&mut self, change: Change) {
        let entry = self.keys.entry(change.key).or_default();
        entry.versions.push(change.version);
        entry.live = change.live;
    }

    /// Forget versions that no read at or after `rev` can see, for keys from
    /// `from` on, stopping after `max_keys` keys. Returns the forgotten
    /// versions (their records can go) and the key to continue from.
    ///
    /// A version goes when a newer one at or before `rev` supersedes it; a
    /// deletion before `rev` that is a key's last word goes too, with the key.
    /// (A deletion at `rev` itself stays, so a watch from `rev` still sees it.)
    pub fn compact(
        &mut self,
        rev: i64,
        from: Option<&[u8]>,
        max_keys: usize,
    ) -> (Vec<(i64, u32)>, Option<Vec<u8>>) {
        let start = match from {
            Some(k) => Bound::Included(k),
            None => Bound::Unbounded,
        };
        let mut doomed = Vec::new();
        let mut emptied = Vec::new();
        let mut next = None;
        for (n, (key, entry)) in self
            .keys
            .range_mut::<[u8], _>((start, Bound::Unbounded))
            .enumerate()
        {
            if n == max_keys {
                next = Some(key.clone());
                break;
            }
            let visible = entry.versions.partition_point(|v| v.rev <= rev);
            let mut keep_from = visible.saturating_sub(1);
            if let Some(v) = entry.versions.get(keep_from) {
                if v.deleted && v.rev < rev && keep_from + 1 == visible {
                    keep_from = visible;
                }
            }
            if keep_from > 0 {
                doomed.extend(entry.versions.drain(..keep_from).map(|v| (v.rev, v.sub)));
            }
            if entry.versions.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.keys.remove(&key);
        }
        (doomed, next)
    }
}

fn meta_i64(db: &DB, key: &[u8]) -> Result<i64> {
    match db.get_cf(cf(db, CF_SM), key)? {
        Some(v) => Ok(i64::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| StoreError::corrupt("sm meta", "bad i64"))?,
        )),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: &mut Index, key: &str, rev: i64) {
        let version = index
            .get(key.as_bytes())
            .and_then(|e| e.live())
            .map(|(_, m)| m.version);
        index.apply(Change {
            key: key.into(),
            version: Version {
                rev,
                sub: 0,
                deleted: false,
            },
            live: Some(Meta {
                create_revision: rev,
                mod_revision: rev,
                version: version.unwrap_or(0) + 1,
                lease: 0,
            }),
        });
    }

    fn delete(index: &mut Index, key: &str, rev: i64) {
        index.apply(Change {
            key: key.into(),
            version: Version {
                rev,
                sub: 0,
                deleted: true,
            },
            live: None,
        });
    }

    #[test]
    fn versions_answer_reads_at_past_revisions() {
        let mut index = Index::default();
        put(&mut index, "a", 2);
        put(&mut index, "a", 4);
        delete(&mut index, "a", 6);
        let e = index.get(b"a").expect("entry");
        assert_eq!(e.at(1), None);
        assert_eq!(e.at(3).map(|v| v.rev), Some(2));
        assert_eq!(e.at(5).map(|v| v.rev), Some(4));
        assert_eq!(e.at(6), None);
        assert_eq!(e.live(), None);
        // Created again: a new generation, from version 1.
        put(&mut index, "a", 8);
        let (v, m) = index.get(b"a").and_then(|e| e.live()).expect("live");
        assert_eq!((v.rev, m.version), (8, 1));
        assert_eq!(index.get(b"a").and_then(|e| e.at(7)), None);
    }

    #[test]
    fn compaction_keeps_what_reads_from_the_point_on_see() {
        let mut index = Index::default();
        put(&mut index, "a", 1);
        put(&mut index, "a", 3);
        put(&mut index, "a", 5);
        put(&mut index, "b", 2);
        delete(&mut index, "b", 3);
        put(&mut index, "c", 1);
        delete(&mut index, "c", 4);
        let (mut doomed, next) = index.compact(4, None, 100);
        doomed.sort();
        assert_eq!(next, None);
        // a@1 superseded by a@3 (still visible at 4); b@2 and its deletion
        // at 3 gone with the key; c's deletion at 4 itself stays.
        assert_eq!(doomed, vec![(1, 0), (1, 0), (2, 0), (3, 0)]);
        let a = index.get(b"a").expect("a");
        assert_eq!(a.at(4).map(|v| v.rev), Some(3));
        assert!(index.get(b"b").is_none());
        assert_eq!(index.get(b"c").map(|e| e.at(4)), Some(None));
        let (doomed, _) = index.compact(5, None, 100);
        assert_eq!(doomed, vec![(3, 0), (4, 0)]);
        assert!(index.get(b"c").is_none());
    }

    #[test]
    fn compaction_resumes_where_it_stopped() {
        let mut index = Index::default();
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            put(&mut index, key, i as i64 + 1);
            put(&mut index, key, i as i64 + 10);
        }
        let (first, next) = index.compact(20, None, 2);
        assert_eq!(first.len(), 2);
        assert_eq!(next.as_deref(), Some(&b"c"[..]));
        let (rest, next) = index.compact(20, next.as_deref(), 2);
        assert_eq!((rest, next), (vec![(3, 0)], None));
    }
}
