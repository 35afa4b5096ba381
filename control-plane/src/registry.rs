//! Kubernetes objects over the replicated store. Objects are JSON under
//! `/registry/<group>/<resource>/<namespace>/<name>` (`core` for the core
//! group; no namespace segment for cluster-scoped resources). The stored
//! JSON has no `resourceVersion`: it is the key's mod revision, put back on
//! every read. Writes are store transactions that compare the key's
//! revisions, which is what makes updates optimistic (409 on a stale one).

use std::sync::Arc;

use crate::encryption::Encryption;
use raft_store::mvcc::{
    Compare, CompareOp, CompareTarget, DeleteRequest, KeyRange, KeyValue, Op, OpResult, PutRequest,
    RangeRequest, TxnRequest,
};
use raft_store::watch::{WatchSpec, Watcher};
use raft_store::{ApplyError, Command, Outcome, Store, StoreError};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// The object changed since the revision the caller had.
    #[error("conflict")]
    Conflict,
    /// The requested revision has been compacted away.
    #[error("revision {0} has been compacted")]
    Gone(i64),
    /// A claim the write needed (see [`Claims`]) is held by another object.
    #[error("{0} is already claimed")]
    Claimed(String),
    /// The write was proposed under a Raft leadership that has ended
    /// (see [`Fence`]); nothing was written.
    #[error("leadership ended: write refused")]
    Fenced,
    #[error("stored object {key} cannot be read: {detail}")]
    Corrupt { key: String, detail: String },
    /// The object could not be encrypted for storing.
    #[error("{0}")]
    Sealing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// An object as read: its JSON (with `metadata.resourceVersion` filled in)
/// and the revision it was last modified at.
#[derive(Debug, Clone)]
pub struct Stored {
    pub object: Value,
    pub revision: i64,
}

/// One page of a list.
pub struct Page {
    pub items: Vec<Stored>,
    /// The store revision the page was read at (the list's resourceVersion).
    pub revision: i64,
    /// The key to continue from, if more remain.
    pub next: Option<String>,
}

/// Keys an object's write takes or gives back in the same transaction: a
/// Service's cluster IP and node ports, so that no two objects ever hold
/// the same one. A claim's value is the key of the object holding it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Claims {
    pub take: Vec<String>,
    pub release: Vec<String>,
}

impl Claims {
    fn guards(&self) -> impl Iterator<Item = Compare> + '_ {
        self.take
            .iter()
            .map(|k| compare(k, CompareTarget::Create(0)))
    }

    fn ops(&self, owner: &str) -> impl Iterator<Item = Op> + '_ {
        let owner = owner.as_bytes().to_vec();
        let takes = self.take.iter().map(move |k| {
            Op::Put(PutRequest {
                key: k.as_bytes().to_vec(),
                value: owner.clone(),
                ..Default::default()
            })
        });
        let releases = self.release.iter().map(|k| {
            Op::Delete(DeleteRequest {
                range: KeyRange::single(k.as_str()),
                prev_kv: false,
            })
        });
        takes.chain(releases)
    }

    /// Failure-branch reads: one count per claim taken, after the object's.
    fn probes(&self) -> impl Iterator<Item = Op> + '_ {
        self.take.iter().map(|k| count(k))
    }

    /// The first claim another object holds, from the failure-branch counts.
    fn held(&self, results: &[OpResult]) -> Option<RegistryError> {
        self.take
            .iter()
            .zip(results.iter().skip(1))
            .find(|(_, r)| matches!(r, OpResult::Range(r) if r.count > 0))
            .map(|(k, _)| RegistryError::Claimed(k.clone()))
    }
}

/// A Raft leadership: the term and the leader. Writes made through a
/// fenced registry commit only while that leadership lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub term: u64,
    pub leader: u64,
}

#[derive(Clone)]
pub struct Registry {
    store: Arc<Store>,
    fence: Option<Fence>,
    /// What seals objects before they are stored ([`crate::encryption`]).
    encryption: Arc<Encryption>,
}

impl Registry {
    pub fn new(store: Arc<Store>) -> Self {
        Registry {
            store,
            fence: None,
            encryption: Arc::default(),
        }
    }

    /// This registry, sealing what it writes and opening what it reads
    /// as `encryption` says.
    pub fn encrypting(mut self, encryption: Arc<Encryption>) -> Self {
        self.encryption = encryption;
        self
    }

    /// This registry, with every write fenced to `fence`: the writes of
    /// the leader-only loops.
    pub fn fenced(&self, fence: Fence) -> Self {
        Registry {
            store: self.store.clone(),
            fence: Some(fence),
            encryption: self.encryption.clone(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn decode(&self, kv: &KeyValue) -> Result<Stored> {
        let key = String::from_utf8_lossy(&kv.key);
        let plain = self
            .encryption
            .open(&key, &kv.value)
            .map_err(|e| RegistryError::Corrupt {
                key: key.to_string(),
                detail: e.to_string(),
            })?;
        let mut object: Value =
            serde_json::from_slice(&plain).map_err(|e| RegistryError::Corrupt {
                key: key.to_string(),
                detail: e.to_string(),
            })?;
        set_resource_version(&mut object, kv.mod_revision);
        Ok(Stored {
            object,
            revision: kv.mod_revision,
        })
    }

    /// A linearizable read of one object.
    pub async fn get(&self, key: &str) -> Result<Stored> {
        let req = RangeRequest {
            range: KeyRange::single(key),
            ..Default::default()
        };
        let (resp, _) = self.store.range(&req, false).await?;
        resp.kvs
            .first()
            .map(|kv| self.decode(kv))
            .unwrap_or(Err(RegistryError::NotFound))
    }

    /// Up to `limit` objects (0: all) under `prefix`, from `start` (a key,
    /// for continuing a list) at `revision` (0: now, linearizable).
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> Result<Page> {
        let range = KeyRange::prefix(prefix.as_bytes().to_vec());
        let req = RangeRequest {
            range: KeyRange {
                key: start.map(|s| s.as_bytes().to_vec()).unwrap_or(range.key),
                range_end: range.range_end,
            },
            limit,
            revision,
            ..Default::default()
        };
        let (resp, now) = self.store.range(&req, false).await.map_err(|e| match e {
            StoreError::Rejected(ApplyError::Compacted) => RegistryError::Gone(revision),
            other => other.into(),
        })?;
        let items = resp
            .kvs
            .iter()
            .map(|kv| self.decode(kv))
            .collect::<Result<Vec<_>>>()?;
        let next = match (resp.more, resp.kvs.last()) {
            (true, Some(last)) => {
                let mut k = last.key.clone();
                k.push(0);
                Some(String::from_utf8_lossy(&k).into_owned())
            }
            _ => None,
        };
        Ok(Page {
            items,
            revision: if revision > 0 { revision } else { now },
            next,
        })
    }

    async fn txn(&self, txn: TxnRequest) -> Result<(bool, Vec<OpResult>, i64)> {
        let cmd = match self.fence {
            None => Command::Txn(txn),
            Some(f) => Command::Fenced {
                term: f.term,
                leader: f.leader,
                cmd: Box::new(Command::Txn(txn)),
            },
        };
        let resp = self.store.write(cmd).await?;
        let outcome = match resp.outcome {
            Err(ApplyError::Fenced) => {
                metrics::counter!("skiff_controller_fenced_writes_total").increment(1);
                return Err(RegistryError::Fenced);
            }
            other => other.map_err(StoreError::from)?,
        };
        if let Some(f) = self.fence {
            // Which leadership committed leader-only writes: the failover
            // benchmark shows from these that no two masters' controllers
            // ever committed in the same term.
            metrics::counter!("skiff_controller_commits_total", "term" => f.term.to_string())
                .increment(1);
        }
        match outcome {
            Outcome::Txn { succeeded, results } => Ok((succeeded, results, resp.revision)),
            other => Err(StoreError::Raft(format!("unexpected outcome {other:?}")).into()),
        }
    }

    /// Put `object` at `key` with its claims if `guard` holds. Ok(revision),
    /// or Err(the failure-branch counts: the object's, then each claim's).
    async fn put_claiming(
        &self,
        key: &str,
        object: &Value,
        guard: Compare,
        claims: &Claims,
    ) -> Result<Result<i64, Vec<OpResult>>> {
        let txn = TxnRequest {
            compare: std::iter::once(guard).chain(claims.guards()).collect(),
            success: std::iter::once(put(&self.encryption, key, object)?)
                .chain(claims.ops(key))
                .collect(),
            failure: std::iter::once(count(key)).chain(claims.probes()).collect(),
        };
        Ok(match self.txn(txn).await? {
            (true, _, rev) => Ok(rev),
            (false, results, _) => Err(results),
        })
    }

    /// Put `object` at `key`, whatever is there, attached to the store
    /// lease `lease`: the key goes when the lease expires. Returns the
    /// revision.
    pub async fn put_leased(&self, key: &str, object: &Value, lease: i64) -> Result<i64> {
        let mut op = put(&self.encryption, key, object)?;
        if let Op::Put(p) = &mut op {
            p.lease = lease;
        }
        let txn = TxnRequest {
            compare: Vec::new(),
            success: vec![op],
            failure: Vec::new(),
        };
        Ok(self.txn(txn).await?.2)
    }

    /// Store a new object with its claims; fails if the key exists or a
    /// claim is held. Returns its revision.
    pub async fn create(&self, key: &str, object: &Value, claims: &Claims) -> Result<i64> {
        let guard = compare(key, CompareTarget::Create(0));
        match self.put_claiming(key, object, guard, claims).await? {
            Ok(rev) => Ok(rev),
            Err(results) => Err(claims
                .held(&results)
                .unwrap_or(RegistryError::AlreadyExists)),
        }
    }

    /// Replace an object that exists, if it is still at `expected` (when
    /// given), adjusting its claims. Returns the new revision.
    pub async fn update(
        &self,
        key: &str,
        object: &Value,
        expected: Option<i64>,
        claims: &Claims,
    ) -> Result<i64> {
        match self
            .put_claiming(key, object, guard(key, expected), claims)
            .await?
        {
            Ok(rev) => Ok(rev),
            Err(results) => Err(claims
                .held(&results)
                .unwrap_or_else(|| missing_or_conflict(&results))),
        }
    }

    /// Delete an object, if it is still at `expected` (when given), giving
    /// back its claims. Returns the object as it was and the deleting revision.
    pub async fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
        claims: &Claims,
    ) -> Result<(Stored, i64)> {
        let txn = TxnRequest {
            compare: vec![guard(key, expected)],
            success: std::iter::once(Op::Delete(DeleteRequest {
                range: KeyRange::single(key),
                prev_kv: true,
            }))
            .chain(claims.ops(key))
            .collect(),
            failure: vec![count(key)],
        };
        match self.txn(txn).await? {
            (true, mut results, rev) => match results.swap_remove(0) {
                OpResult::Delete { mut prev_kvs, .. } if !prev_kvs.is_empty() => {
                    Ok((self.decode(&prev_kvs.remove(0))?, rev))
                }
                _ => Err(RegistryError::NotFound),
            },
            (false, results, _) => Err(missing_or_conflict(&results)),
        }
    }

    /// The keys under `prefix` (claims, for choosing a free one).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let req = RangeRequest {
            range: KeyRange::prefix(prefix.as_bytes().to_vec()),
            keys_only: true,
            ..Default::default()
        };
        let (resp, _) = self.store.range(&req, false).await?;
        Ok(resp
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect())
    }

    /// Watch `range` from the revision after `after` (0: from now).
    /// Watch `range` after revision `after` (0: from the next change);
    /// `previous`: deletions and updates carry the value they replaced,
    /// which costs the store a read of it on every write while it runs.
    pub fn watch(&self, range: KeyRange, after: i64, previous: bool) -> Watcher {
        self.store.watch(
            WatchSpec {
                range,
                start_revision: if after > 0 { after + 1 } else { 0 },
                prev_kv: previous,
                ..Default::default()
            },
            256,
        )
    }
}

/// The object is at `expected`, or (without one) exists.
fn guard(key: &str, expected: Option<i64>) -> Compare {
    match expected {
        Some(rev) => compare(key, CompareTarget::Mod(rev)),
        None => Compare {
            range: KeyRange::single(key),
            op: CompareOp::Greater,
            target: CompareTarget::Version(0),
        },
    }
}

fn count(key: &str) -> Op {
    Op::Range(RangeRequest {
        range: KeyRange::single(key),
        count_only: true,
        ..Default::default()
    })
}

fn compare(key: &str, target: CompareTarget) -> Compare {
    Compare {
        range: KeyRange::single(key),
        op: CompareOp::Equal,
        target,
    }
}

/// The write of `object` at `key`, sealed as `encryption` says.
fn put(encryption: &Encryption, key: &str, object: &Value) -> Result<Op> {
    let mut stored = object.clone();
    if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let value = encryption
        .seal(key, serde_json::to_vec(&stored).unwrap_or_default())
        .map_err(|e| RegistryError::Sealing(e.to_string()))?;
    Ok(Op::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value,
        ..Default::default()
    }))
}

/// A failed guard: the count in the failure branch tells whether the object
/// is gone or was changed.
fn missing_or_conflict(results: &[OpResult]) -> RegistryError {
    match results.first() {
        Some(OpResult::Range(r)) if r.count == 0 => RegistryError::NotFound,
        _ => RegistryError::Conflict,
    }
}

pub fn set_resource_version(object: &mut Value, revision: i64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}
