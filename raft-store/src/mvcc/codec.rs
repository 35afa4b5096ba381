//! RocksDB layout of the MVCC state.
//!
//! | column family | key                                  | value                    |
//! |---------------|--------------------------------------|--------------------------|
//! | `latest`      | user key                             | [`Latest`] (live keys)   |
//! | `index`       | `esc(key) ++ rev ++ sub`             | [`Stored`] or tombstone  |
//! | `history`     | `rev ++ sub`                         | the user key             |
//!
//! Values are stored once, in `index`: `latest` says which version of a key
//! is live and `history` which key changed at a revision, both by reference.
//! Writing each value once (beside its Raft log entry) keeps RocksDB's
//! flush and compaction work, the dominant cost under write load, small.
//!
//! `esc` is an order-preserving, prefix-free escaping of the user key, so that
//! one key's versions sort together and key ranges map to encoded ranges.
//! Revisions are big-endian so that byte order is numeric order.

use serde::{Deserialize, Serialize};

use super::{EventKind, KeyValue};

/// A key's version as stored; the key itself lives in the RocksDB key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub kind: EventKind,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl Stored {
    pub fn from_kv(kind: EventKind, kv: &KeyValue) -> Self {
        Stored {
            kind,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
            value: kv.value.clone(),
        }
    }

    pub fn into_kv(self, key: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value,
            lease: self.lease,
        }
    }
}

/// The live version of a key: where its value is in `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    pub mod_revision: i64,
    pub sub: u32,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    bincode::serialize(value).unwrap_or_default()
}

/// The inverse of [`encode`]; bytes left over are an error, so a value
/// read back as the wrong type fails instead of decoding as garbage.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, bincode::Error> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .deserialize(bytes)
}

/// Escape a user key: `0x00` becomes `0x00 0xff`, and the key ends with `0x00 0x00`.
pub fn escape_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + 12);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// Inverse of [`escape_key`] on the prefix of an index key; returns the user
/// key and the number of bytes consumed.
pub fn unescape_key(encoded: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        let b = encoded[i];
        if b == 0 {
            match encoded.get(i + 1)? {
                0xff => out.push(0),
                0 => return Some((out, i + 2)),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    None
}

pub fn rev_key(rev: i64, sub: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&(rev as u64).to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

pub fn parse_rev_key(k: &[u8]) -> Option<(i64, u32)> {
    if k.len() != 12 {
        return None;
    }
    let rev = u64::from_be_bytes(k[..8].try_into().ok()?) as i64;
    let sub = u32::from_be_bytes(k[8..].try_into().ok()?);
    Some((rev, sub))
}

pub fn index_key(key: &[u8], rev: i64, sub: u32) -> Vec<u8> {
    let mut k = escape_key(key);
    k.extend_from_slice(&rev_key(rev, sub));
    k
}

/// Split an index key into user key, revision and sub-revision.
pub fn parse_index_key(k: &[u8]) -> Option<(Vec<u8>, i64, u32)> {
    let (key, used) = unescape_key(k)?;
    let (rev, sub) = parse_rev_key(&k[used..])?;
    Some((key, rev, sub))
}

pub fn u64_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_preserves_order_and_round_trips() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0a", b"a", b"a\0", b"a\0\xff", b"ab", b"b",
        ];
        let enc: Vec<Vec<u8>> = keys.iter().map(|k| index_key(k, 7, 1)).collect();
        for w in enc.windows(2) {
            assert!(w[0] < w[1], "{:?} !< {:?}", w[0], w[1]);
        }
        for (k, e) in keys.iter().zip(&enc) {
            assert_eq!(parse_index_key(e), Some((k.to_vec(), 7, 1)));
        }
    }

    #[test]
    fn versions_of_one_key_sort_by_revision() {
        assert!(index_key(b"k", 2, 0) < index_key(b"k", 10, 0));
        assert!(index_key(b"k", 10, 5) < index_key(b"k\0", 1, 0));
    }
}

/// Keys of the `sm` column family.
pub mod meta {
    pub const APPLIED: &[u8] = b"applied";
    pub const MEMBERSHIP: &[u8] = b"membership";
    pub const REVISION: &[u8] = b"revision";
    pub const COMPACTED: &[u8] = b"compacted";
    /// (log index, commands done) while a batched entry is being applied.
    pub const CURSOR: &[u8] = b"cursor";
}
