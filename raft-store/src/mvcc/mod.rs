//! The MVCC key-value model: one global revision, per-key create/mod revision
//! and version, as etcd defines them.
//!
//! - [`codec`]: how versions are laid out in RocksDB, by revision.
//! - [`index`]: which versions of which keys exist, in memory.
//! - [`read`]: ranges at the current or a past revision, compare evaluation.
//! - [`write`]: applying a transaction into one RocksDB write batch.

pub mod codec;
pub mod index;
pub mod read;
pub mod write;

use serde::{Deserialize, Serialize};

/// One version of a key, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change to one key at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// For a delete: the key, with `mod_revision` set to the deleting revision.
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// A key range as etcd expresses it: empty `range_end` means the single key,
/// `[0]` means every key `>= key`, anything else is the half-open `[key, range_end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

impl KeyRange {
    pub fn single(key: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            key: key.into(),
            range_end: Vec::new(),
        }
    }

    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        KeyRange { key, range_end }
    }

    pub fn is_single(&self) -> bool {
        self.range_end.is_empty()
    }

    /// Whether `k` falls in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return k == self.key.as_slice();
        }
        if k < self.key.as_slice() {
            return false;
        }
        self.range_end == [0] || k < self.range_end.as_slice()
    }

    /// Upper bound, exclusive; `None` means unbounded.
    pub fn end(&self) -> Option<&[u8]> {
        if self.range_end == [0] {
            None
        } else {
            Some(&self.range_end)
        }
    }
}

pub use proto::etcd::prefix_end;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// 0 = no limit.
    pub limit: i64,
    /// 0 = current revision.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub range: KeyRange,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRequest),
    Txn(TxnRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Range(RangeResponse),
    Put {
        prev_kv: Option<KeyValue>,
    },
    Delete {
        deleted: i64,
        prev_kvs: Vec<KeyValue>,
    },
    Txn {
        succeeded: bool,
        results: Vec<OpResult>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    Greater,
    Less,
    NotEqual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub range: KeyRange,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl TxnRequest {
    /// A transaction that always runs `op`.
    pub fn single(op: Op) -> Self {
        TxnRequest {
            compare: Vec::new(),
            success: vec![op],
            failure: Vec::new(),
        }
    }

    pub fn approx_size(&self) -> usize {
        fn ops(ops: &[Op]) -> usize {
            ops.iter()
                .map(|op| match op {
                    Op::Put(p) => p.key.len() + p.value.len(),
                    Op::Delete(d) => d.range.key.len() + d.range.range_end.len(),
                    Op::Range(r) => r.range.key.len() + r.range.range_end.len(),
                    Op::Txn(t) => t.approx_size(),
                })
                .sum()
        }
        let compares: usize = self.compare.iter().map(|c| c.range.key.len() + 16).sum();
        compares + ops(&self.success) + ops(&self.failure)
    }

    /// Whether any branch writes (read-only transactions need not go through Raft).
    pub fn is_read_only(&self) -> bool {
        fn ro(ops: &[Op]) -> bool {
            ops.iter().all(|op| match op {
                Op::Range(_) => true,
                Op::Txn(t) => t.is_read_only(),
                _ => false,
            })
        }
        ro(&self.success) && ro(&self.failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn key_range_contains() {
        let r = KeyRange::prefix("foo");
        assert!(r.contains(b"foo") && r.contains(b"foo/bar"));
        assert!(!r.contains(b"fop") && !r.contains(b"fo"));
        let all = KeyRange {
            key: vec![0],
            range_end: vec![0],
        };
        assert!(all.contains(b"anything"));
        assert!(KeyRange::single("a").contains(b"a"));
        assert!(!KeyRange::single("a").contains(b"ab"));
    }
}
