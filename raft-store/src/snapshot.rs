//! Snapshots: the state-machine column families dumped from a RocksDB
//! snapshot into a file, sent to lagging followers in chunks, and loaded back.
//!
//! File layout: a sequence of records `family: u8, key_len: u32, key,
//! value_len: u32, value`, ending with the family byte 0xff. The current
//! snapshot is `snapshot.data` beside its metadata `snapshot.meta`; both are
//! written to temporary names, synced, then renamed.

use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::{WriteBatch, DB};
use tokio::io::AsyncWriteExt;

use crate::db::{cf, CF_RAFT, SM_FAMILIES};
use crate::error::{Result, StoreError};
use crate::mvcc::codec::{self, meta};
use crate::state_machine::Shared;
use crate::types::{LogId, Snapshot, SnapshotMeta, StoredMembership};

const DATA: &str = "snapshot.data";
const META: &str = "snapshot.meta";
const INCOMING: &str = "incoming.data";
const END: u8 = 0xff;
/// Marker in the `raft` family while a snapshot is being loaded: if it is
/// found at start-up, the load was interrupted and is done again.
pub const INSTALLING: &[u8] = b"installing_snapshot";
const LOAD_BATCH: usize = 4096;

pub struct Builder {
    shared: Arc<Shared>,
}

impl Builder {
    pub fn new(shared: Arc<Shared>) -> Self {
        Builder { shared }
    }

    pub async fn build(&mut self) -> Result<Snapshot> {
        let shared = self.shared.clone();
        let meta = tokio::task::spawn_blocking(move || write_snapshot(&shared.db, &shared.snapshot_dir))
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))??;
        metrics::counter!("skiff_store_snapshots_total").increment(1);
        let file = tokio::fs::File::open(self.shared.snapshot_dir.join(DATA)).await?;
        Ok(Snapshot { meta, snapshot: Box::new(file) })
    }
}

fn write_snapshot(db: &DB, dir: &Path) -> Result<SnapshotMeta> {
    fs::create_dir_all(dir)?;
    let snap = db.snapshot();
    let sm = cf(db, crate::db::CF_SM);
    let applied: Option<LogId> = match snap.get_cf(sm, meta::APPLIED)? {
        Some(v) => codec::decode(&v).map_err(|e| StoreError::corrupt("sm meta", e))?,
        None => None,
    };
    let membership: StoredMembership = match snap.get_cf(sm, meta::MEMBERSHIP)? {
        Some(v) => codec::decode(&v).map_err(|e| StoreError::corrupt("sm meta", e))?,
        None => StoredMembership::default(),
    };
    let tmp = dir.join(format!("{DATA}.tmp"));
    let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
    for (i, family) in SM_FAMILIES.iter().enumerate() {
        let mut it = snap.raw_iterator_cf(cf(db, family));
        it.seek_to_first();
        while let Some((k, v)) = it.item() {
            out.write_all(&[i as u8])?;
            out.write_all(&(k.len() as u32).to_be_bytes())?;
            out.write_all(k)?;
            out.write_all(&(v.len() as u32).to_be_bytes())?;
            out.write_all(v)?;
            it.next();
        }
        it.status()?;
    }
    out.write_all(&[END])?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let snapshot_id = match applied {
        Some(l) => format!("{}-{}-{millis}", l.leader_id.term, l.index),
        None => format!("0-0-{millis}"),
    };
    let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id };
    fs::rename(&tmp, dir.join(DATA))?;
    write_meta(dir, &meta)?;
    Ok(meta)
}

fn write_meta(dir: &Path, meta: &SnapshotMeta) -> Result<()> {
    let tmp = dir.join(format!("{META}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&codec::encode(meta))?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(META))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

pub async fn current(dir: &Path) -> Result<Option<Snapshot>> {
    let meta_path = dir.join(META);
    let bytes = match tokio::fs::read(&meta_path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta: SnapshotMeta = codec::decode(&bytes).map_err(|e| StoreError::corrupt("snapshot meta", e))?;
    let file = tokio::fs::File::open(dir.join(DATA)).await?;
    Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
}

pub async fn begin_receiving(dir: &Path) -> Result<Box<tokio::fs::File>> {
    tokio::fs::create_dir_all(dir).await?;
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join(INCOMING))
        .await?;
    Ok(Box::new(file))
}

/// Make a received snapshot the current one and load it into RocksDB.
pub async fn install(shared: &Arc<Shared>, meta: &SnapshotMeta, mut data: tokio::fs::File) -> Result<()> {
    data.flush().await?;
    data.sync_all().await?;
    drop(data);
    let dir = shared.snapshot_dir.clone();
    let shared = shared.clone();
    let meta = meta.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        fs::rename(dir.join(INCOMING), dir.join(DATA))?;
        write_meta(&dir, &meta)?;
        load(&shared.db, &dir.join(DATA))
    })
    .await
    .map_err(|e| StoreError::Raft(e.to_string()))??;
    metrics::counter!("skiff_store_snapshots_installed_total").increment(1);
    Ok(())
}

/// Replace the state machine's families with the snapshot file's content.
/// Interrupted loads are redone at start-up (see [`recover`]).
pub fn load(db: &DB, path: &Path) -> Result<()> {
    let mut marker = WriteBatch::default();
    marker.put_cf(cf(db, CF_RAFT), INSTALLING, []);
    crate::db::write_durable(db, marker)?;
    for family in SM_FAMILIES {
        let handle = cf(db, family);
        let mut batch = WriteBatch::default();
        let mut it = db.raw_iterator_cf(handle);
        it.seek_to_first();
        while let Some(k) = it.key() {
            batch.delete_cf(handle, k);
            it.next();
        }
        it.status()?;
        db.write(batch)?;
    }
    let mut reader = BufReader::with_capacity(1 << 20, fs::File::open(path)?);
    let mut batch = WriteBatch::default();
    loop {
        let mut family = [0u8; 1];
        reader.read_exact(&mut family)?;
        if family[0] == END {
            break;
        }
        let name = SM_FAMILIES
            .get(family[0] as usize)
            .ok_or_else(|| StoreError::corrupt("snapshot", format!("family {}", family[0])))?;
        let key = read_chunk(&mut reader)?;
        let value = read_chunk(&mut reader)?;
        batch.put_cf(cf(db, name), key, value);
        if batch.len() >= LOAD_BATCH {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    db.write(batch)?;
    let mut done = WriteBatch::default();
    done.delete_cf(cf(db, CF_RAFT), INSTALLING);
    crate::db::write_durable(db, done)?;
    Ok(())
}

fn read_chunk(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 64 << 20 {
        return Err(StoreError::corrupt("snapshot", format!("record of {len} bytes")));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// At start-up: finish a snapshot load that a crash interrupted.
pub fn recover(db: &DB, dir: &Path) -> Result<()> {
    if db.get_cf(cf(db, CF_RAFT), INSTALLING)?.is_some() {
        tracing::warn!("an interrupted snapshot install is being redone");
        load(db, &dir.join(DATA))?;
    }
    Ok(())
}

pub fn dir_for(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}
