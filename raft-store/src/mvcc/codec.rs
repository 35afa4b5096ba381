//! RocksDB layout of the MVCC state.
//!
//! | column family | key          | value                                  |
//! |---------------|--------------|----------------------------------------|
//! | `revs`        | `rev ++ sub` | [`Record`]: the key and its version    |
//!
//! Every change of a key is one record under the revision that made it, so
//! writes append in revision order, and a watch replays history by walking
//! the family. Which version of a key is live, and which one a read at a past
//! revision sees, is the in-memory [`super::index`]'s business.
//!
//! Revisions are big-endian so that byte order is numeric order.

use serde::{Deserialize, Serialize};

use super::{EventKind, KeyValue};
use crate::error::{Result, StoreError};

/// One change of one key as stored; its revision is the RocksDB key. A
/// deletion has only `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<'a> {
    pub kind: EventKind,
    #[serde(with = "serde_bytes", borrow)]
    pub key: &'a [u8],
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    #[serde(with = "serde_bytes", borrow)]
    pub value: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn of(kind: EventKind, kv: &'a KeyValue) -> Self {
        Record {
            kind,
            key: &kv.key,
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            value: &kv.value,
        }
    }

    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        decode(bytes).map_err(|e| StoreError::corrupt("revs", e))
    }

    /// The key-value this record made at `rev`.
    pub fn into_kv(self, rev: i64) -> KeyValue {
        KeyValue {
            key: self.key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: rev,
            version: self.version,
            value: self.value.to_vec(),
            lease: self.lease,
        }
    }
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    bincode::serialize(value).unwrap_or_default()
}

/// The inverse of [`encode`]; bytes left over are an error, so a value
/// read back as the wrong type fails instead of decoding as garbage.
pub fn decode<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
) -> std::result::Result<T, bincode::Error> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .deserialize(bytes)
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

pub fn u64_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_sort_numerically_and_round_trip() {
        assert!(rev_key(2, 9) < rev_key(10, 0));
        assert!(rev_key(10, 0) < rev_key(10, 1));
        assert!(rev_key(255, 0) < rev_key(256, 0));
        assert_eq!(parse_rev_key(&rev_key(1 << 40, 7)), Some((1 << 40, 7)));
    }

    #[test]
    fn records_round_trip_and_reject_trailing_bytes() {
        let kv = KeyValue {
            key: b"k\0".to_vec(),
            create_revision: 3,
            mod_revision: 5,
            version: 2,
            value: b"v".to_vec(),
            lease: 9,
        };
        let bytes = encode(&Record::of(EventKind::Put, &kv));
        assert_eq!(Record::decode(&bytes).expect("decode").into_kv(5), kv);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Record::decode(&longer).is_err());
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
