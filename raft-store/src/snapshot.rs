//! Snapshots.
//!
//! Building one is cheap: a RocksDB checkpoint (hard links to the immutable
//! table files) taken at a consistent point. Only when a lagging follower
//! needs it is the checkpoint dumped into a transferable file, which openraft
//! sends in chunks. Installing loads such a file into the state-machine
//! column families.
//!
//! File layout: records `family: u8, key_len: u32, key, value_len: u32,
//! value`, ending with the family byte 0xff. Beside it, `snapshot.meta` holds
//! the current snapshot's metadata and `snapshot.data.id` names the snapshot
//! the data file was dumped from. Everything is written under a temporary
//! name, synced, then renamed.

use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::{WriteBatch, DB};
use tokio::io::AsyncWriteExt;

use crate::db::{cf, CF_RAFT, CF_SM, SM_FAMILIES};
use crate::error::{Result, StoreError};
use crate::mvcc::codec::{self, meta};
use crate::state_machine::Shared;
use crate::types::{LogId, Snapshot, SnapshotMeta, StoredMembership};

const DATA: &str = "snapshot.data";
const DATA_ID: &str = "snapshot.data.id";
const META: &str = "snapshot.meta";
const CHECKPOINT: &str = "checkpoint";
const INCOMING: &str = "incoming.data";
pub(crate) const END: u8 = 0xff;
/// Marker in the `raft` family while a snapshot is being loaded: if it is
/// found at start-up, the load was interrupted and is done again.
pub const INSTALLING: &[u8] = b"installing_snapshot";

pub struct Builder {
    shared: Arc<Shared>,
}

impl Builder {
    pub fn new(shared: Arc<Shared>) -> Self {
        Builder { shared }
    }

    pub async fn build(&mut self) -> Result<Snapshot> {
        let shared = self.shared.clone();
        let started = std::time::Instant::now();
        let meta = tokio::task::spawn_blocking(move || {
            let _guard = shared.snapshot_lock.lock().expect("snapshot lock");
            checkpoint(&shared.db, &shared.snapshot_dir)
        })
        .await
        .map_err(|e| StoreError::Raft(e.to_string()))??;
        metrics::counter!("skiff_store_snapshots_total").increment(1);
        let took = started.elapsed();
        metrics::histogram!("skiff_store_snapshot_build_seconds").record(took.as_secs_f64());
        tracing::info!(last = ?meta.last_log_id, ?took, "snapshot built");
        // openraft keeps only the metadata of a snapshot it asked us to build;
        // the data is produced by `current` when a follower needs it.
        let placeholder = tokio::fs::File::open(self.shared.snapshot_dir.join(META)).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(placeholder),
        })
    }
}

/// Take a checkpoint of the database and make it the current snapshot.
fn checkpoint(db: &DB, dir: &Path) -> Result<SnapshotMeta> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{CHECKPOINT}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    rocksdb::checkpoint::Checkpoint::new(db)?.create_checkpoint(&tmp)?;
    let meta = {
        let ckpt = open_read_only(&tmp)?;
        let snap = ckpt.snapshot();
        let applied: Option<LogId> = match snap.get_cf(cf(&ckpt, CF_SM), meta::APPLIED)? {
            Some(v) => {
                codec::decode::<Option<LogId>>(&v).map_err(|e| StoreError::corrupt("sm meta", e))?
            }
            None => None,
        };
        let membership: StoredMembership = match snap.get_cf(cf(&ckpt, CF_SM), meta::MEMBERSHIP)? {
            Some(v) => codec::decode(&v).map_err(|e| StoreError::corrupt("sm meta", e))?,
            None => StoredMembership::default(),
        };
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let snapshot_id = match applied {
            Some(l) => format!("{}-{}-{millis}", l.leader_id.term, l.index),
            None => format!("0-0-{millis}"),
        };
        SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        }
    };
    let current = dir.join(CHECKPOINT);
    if current.exists() {
        fs::remove_dir_all(&current)?;
    }
    fs::rename(&tmp, &current)?;
    write_meta(dir, &meta)?;
    Ok(meta)
}

fn open_read_only(path: &Path) -> Result<DB> {
    let mut opts = rocksdb::Options::default();
    // Open table files as they are read, not all at once (which reads every
    // file's index and filter): building a snapshot reads two keys.
    opts.set_max_open_files(64);
    opts.set_skip_stats_update_on_db_open(true);
    opts.set_skip_checking_sst_file_sizes_on_db_open(true);
    Ok(DB::open_cf_for_read_only(
        &opts,
        path,
        crate::db::all_families(),
        false,
    )?)
}

/// Dump the state-machine families of `db` into `path`.
fn dump(db: &DB, path: &Path) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    write_state(db, &db.snapshot(), &mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// Every record of the state-machine families as `snap` sees them, then
/// the end marker.
pub(crate) fn write_state(
    db: &DB,
    snap: &rocksdb::SnapshotWithThreadMode<'_, DB>,
    out: &mut impl Write,
) -> Result<()> {
    for (i, family) in SM_FAMILIES.iter().enumerate() {
        let mut it = snap.raw_iterator_cf(cf(db, family));
        it.seek_to_first();
        while let Some((k, v)) = it.item() {
            write_record(out, i as u8, k, v)?;
            it.next();
        }
        it.status()?;
    }
    out.write_all(&[END])?;
    Ok(())
}

/// One record of the file: the family's index in [`SM_FAMILIES`], the key
/// and the value, each with its length.
pub(crate) fn write_record(
    out: &mut impl Write,
    family: u8,
    key: &[u8],
    value: &[u8],
) -> std::io::Result<()> {
    out.write_all(&[family])?;
    out.write_all(&(key.len() as u32).to_be_bytes())?;
    out.write_all(key)?;
    out.write_all(&(value.len() as u32).to_be_bytes())?;
    out.write_all(value)
}

/// One record of a snapshot: its column family's name, key and value.
pub(crate) type Record = (&'static str, Vec<u8>, Vec<u8>);

/// The next record; `None` at the end marker.
pub(crate) fn read_record(r: &mut impl Read) -> Result<Option<Record>> {
    let mut family = [0u8; 1];
    r.read_exact(&mut family)?;
    if family[0] == END {
        return Ok(None);
    }
    let name = SM_FAMILIES
        .get(family[0] as usize)
        .ok_or_else(|| StoreError::corrupt("snapshot", format!("family {}", family[0])))?;
    let key = read_chunk(r)?;
    let value = read_chunk(r)?;
    Ok(Some((name, key, value)))
}

/// Make sure `snapshot.data` holds the snapshot `id`, dumping the checkpoint if needed.
fn ensure_data(dir: &Path, id: &str) -> Result<()> {
    if fs::read_to_string(dir.join(DATA_ID))
        .map(|s| s == id)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let tmp = dir.join(format!("{DATA}.tmp"));
    {
        let ckpt = open_read_only(&dir.join(CHECKPOINT))?;
        dump(&ckpt, &tmp)?;
    }
    fs::rename(&tmp, dir.join(DATA))?;
    write_synced(dir, DATA_ID, id.as_bytes())
}

fn write_synced(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn write_meta(dir: &Path, meta: &SnapshotMeta) -> Result<()> {
    write_synced(dir, META, &codec::encode(meta))
}

/// The current snapshot with its data, dumped from the checkpoint on first use.
pub async fn current(shared: &Arc<Shared>) -> Result<Option<Snapshot>> {
    let shared = shared.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Option<(SnapshotMeta, fs::File)>> {
        let _guard = shared.snapshot_lock.lock().expect("snapshot lock");
        let dir = &shared.snapshot_dir;
        let bytes = match fs::read(dir.join(META)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta: SnapshotMeta =
            codec::decode(&bytes).map_err(|e| StoreError::corrupt("snapshot meta", e))?;
        ensure_data(dir, &meta.snapshot_id)?;
        // An open file keeps its content even if a later build replaces it.
        let file = fs::File::open(dir.join(DATA))?;
        Ok(Some((meta, file)))
    })
    .await
    .map_err(|e| StoreError::Raft(e.to_string()))??;
    Ok(found.map(|(meta, file)| Snapshot {
        meta,
        snapshot: Box::new(tokio::fs::File::from_std(file)),
    }))
}

/// Open the file a snapshot transfer is received into.
///
/// Each call makes a new file. openraft drops the handle of a transfer it
/// abandons (the leader changed mid-stream), but a `tokio::fs::File` may
/// still have a write in flight on a blocking thread: truncating the same
/// file would let that write land in the next transfer's data. Unlinking
/// first sends it to the old, nameless file instead.
pub async fn begin_receiving(dir: &Path) -> Result<Box<tokio::fs::File>> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(INCOMING);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let file = tokio::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)
        .await?;
    Ok(Box::new(file))
}

/// Make a received snapshot the current one and load it into RocksDB.
pub async fn install(
    shared: &Arc<Shared>,
    meta: &SnapshotMeta,
    mut data: tokio::fs::File,
) -> Result<()> {
    data.flush().await?;
    data.sync_all().await?;
    drop(data);
    let dir = shared.snapshot_dir.clone();
    let shared = shared.clone();
    let meta = meta.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let _guard = shared.snapshot_lock.lock().expect("snapshot lock");
        fs::rename(dir.join(INCOMING), dir.join(DATA))?;
        write_synced(&dir, DATA_ID, meta.snapshot_id.as_bytes())?;
        write_meta(&dir, &meta)?;
        // Readers wait for the load: the index they would use describes
        // the state the load replaces.
        let mut index = shared.index.write().unwrap_or_else(|p| p.into_inner());
        load(&shared.db, &dir.join(DATA))?;
        *index = crate::mvcc::index::Index::load(&shared.db)?;
        Ok(())
    })
    .await
    .map_err(|e| StoreError::Raft(e.to_string()))??;
    metrics::counter!("skiff_store_snapshots_installed_total").increment(1);
    Ok(())
}

/// Replace the state machine's families with the snapshot file's content,
/// in one atomic write: a reader or watcher on this master sees the old
/// state or the new one, never a half-loaded store. (The batch is as large
/// as the state machine.) The marker makes a restart redo a load whose
/// files were switched but whose write did not happen (see [`recover`]).
pub fn load(db: &DB, path: &Path) -> Result<()> {
    let mut marker = WriteBatch::default();
    marker.put_cf(cf(db, CF_RAFT), INSTALLING, []);
    crate::db::write_durable(db, marker)?;
    let mut batch = WriteBatch::default();
    for family in SM_FAMILIES {
        let handle = cf(db, family);
        let mut it = db.raw_iterator_cf(handle);
        it.seek_to_first();
        while let Some(k) = it.key() {
            batch.delete_cf(handle, k);
            it.next();
        }
        it.status()?;
    }
    let mut reader = BufReader::with_capacity(1 << 20, fs::File::open(path)?);
    while let Some((name, key, value)) = read_record(&mut reader)? {
        batch.put_cf(cf(db, name), key, value);
    }
    batch.delete_cf(cf(db, CF_RAFT), INSTALLING);
    crate::db::write_durable(db, batch)?;
    Ok(())
}

fn read_chunk(r: &mut impl Read) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 64 << 20 {
        return Err(StoreError::corrupt(
            "snapshot",
            format!("record of {len} bytes"),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    // Any state-machine family will do; this one is not read at start-up.
    use crate::db::CF_LEASE_KEYS as FAMILY;

    const KEYS: usize = 20_000;

    // A transfer abandoned mid-stream must not write into the next one.
    #[tokio::test]
    async fn an_abandoned_transfer_cannot_write_into_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let mut old = begin_receiving(tmp.path()).await.unwrap();
        old.write_all(b"first transfer").await.unwrap();
        let mut new = begin_receiving(tmp.path()).await.unwrap();
        new.write_all(b"second").await.unwrap();
        new.flush().await.unwrap();
        // The old handle writes on, as a late in-flight write would.
        old.write_all(b" and more").await.unwrap();
        old.flush().await.unwrap();
        drop(old);
        assert_eq!(fs::read(tmp.path().join(INCOMING)).unwrap(), b"second");
    }

    fn fill(db: &DB, value: &[u8]) {
        let mut b = WriteBatch::default();
        for i in 0..KEYS {
            b.put_cf(cf(db, FAMILY), format!("k{i:06}"), value);
        }
        db.write(b).unwrap();
    }

    // Regression (found by the chaos harness): openraft builds snapshots in
    // a task of its own, so a build replaced the checkpoint while a
    // follower's snapshot was being dumped from it, and the leader's state
    // machine failed with missing table files.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn building_and_serving_snapshots_concurrently() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::db::open(&tmp.path().join("db")).unwrap();
        fill(&db, b"v");
        let shared = Shared::new(db.clone(), tmp.path().join("snapshots")).unwrap();
        for round in 0..20 {
            let mut builder = Builder::new(shared.clone());
            let s2 = shared.clone();
            let serve = tokio::spawn(async move { current(&s2).await.map(|s| s.is_some()) });
            builder.build().await.unwrap();
            // Each round writes more, so each checkpoint has new table files.
            db.put_cf(cf(&db, FAMILY), format!("round{round}"), b"x")
                .unwrap();
            db.flush_cf(cf(&db, FAMILY)).unwrap();
            serve.await.unwrap().unwrap();
        }
        assert!(current(&shared).await.unwrap().is_some());
    }

    // Regression (found by the chaos harness): a snapshot used to be loaded
    // in many writes, so a read on the installing master could find the
    // store empty (a linearizable read returned a missing key).
    #[test]
    fn readers_never_see_a_half_loaded_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let source = crate::db::open(&tmp.path().join("source")).unwrap();
        fill(&source, b"new");
        let file = tmp.path().join("snapshot.data");
        dump(&source, &file).unwrap();
        let db = crate::db::open(&tmp.path().join("db")).unwrap();
        fill(&db, b"old");

        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (db, done) = (db.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) || reads == 0 {
                    let snap = db.snapshot();
                    let mut it = snap.raw_iterator_cf(cf(&db, FAMILY));
                    it.seek_to_first();
                    let (mut old, mut new) = (0, 0);
                    while let Some(v) = it.value() {
                        match v {
                            b"old" => old += 1,
                            b"new" => new += 1,
                            other => panic!("unexpected value {other:?}"),
                        }
                        it.next();
                    }
                    assert!(
                        (old, new) == (KEYS, 0) || (old, new) == (0, KEYS),
                        "a reader saw {old} old and {new} new keys"
                    );
                    reads += 1;
                }
                reads
            })
        };
        for _ in 0..5 {
            load(&db, &file).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        assert!(reader.join().unwrap() > 0);
    }
}
