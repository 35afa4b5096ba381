//! Backups: the state machine as one file, which `etcdctl snapshot save`
//! receives from any master, and a new data directory made from such a file
//! (`control-plane restore`, as `etcdutl snapshot restore`).
//!
//! File layout: [`MAGIC`], the format version (u32, big-endian), the length
//! of the header (u32) and the header ([`BackupInfo`], bincode); then the
//! state-machine records in the layout of Raft snapshots (see
//! [`crate::snapshot`]), ending with its end marker, and zeros up to a
//! multiple of 512 bytes (which etcdctl checks for); then the SHA-256 of
//! everything before it, as etcd appends one to its snapshots, so that a
//! truncated or damaged file is refused before anything is written.
//!
//! Taking a backup holds no lock: it reads a RocksDB snapshot (one point in
//! the sequence of applied write batches, so revision, keys and leases
//! agree) while the state machine goes on applying. The bytes are handed
//! out in chunks through a bounded channel, so a slow reader holds back
//! only itself, and memory stays at a few chunks whatever the store's size.
//!
//! Restoring keeps every key with its history, revisions and versions, the
//! leases, the revision and the compaction point; it replaces what belongs
//! to the old cluster: the Raft membership (a new one from
//! `--initial-cluster`, under a new cluster token, so a new cluster id) and
//! the members' published names and URLs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use openraft::Membership;
use rocksdb::{WriteBatch, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::db::{cf, CF_LEASES, CF_MEMBERS, CF_SM};
use crate::error::StoreError;
use crate::mvcc::codec::{self, meta};
use crate::mvcc::index::Index;
use crate::node::{cluster_id, member_id};
use crate::snapshot;
use crate::state_machine::Shared;
use crate::types::{LogId, Member, NodeId, StoredMembership};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"SKIFFBAK";
/// The layout this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes per chunk handed to the reader (one gRPC message each; etcd's
/// clients take messages of any size, other gRPC clients 4 MiB).
pub const CHUNK: usize = 256 << 10;
const DIGEST_LEN: usize = 32;
/// The file before its digest is padded to a multiple of this (see
/// [`Chunker::finish`]).
const PAGE: u64 = 512;
/// Magic, version, header length, and at least the end marker.
const MIN_LEN: u64 = (MAGIC.len() + 4 + 4 + 1 + DIGEST_LEN) as u64;
/// Bytes of records written per RocksDB batch while restoring.
const RESTORE_BATCH_BYTES: usize = 8 << 20;

/// What a backup file says about itself, ahead of its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The cluster and the master it was taken from.
    pub cluster_id: u64,
    pub member_id: NodeId,
    /// The store revision and the compaction point it holds.
    pub revision: i64,
    pub compacted: i64,
    /// The Raft log index its master had applied.
    pub applied_index: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a Skiff snapshot file (an etcd snapshot is restored with etcdutl, not here)")]
    NotASnapshot,
    #[error("snapshot format version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u32),
    #[error("the snapshot file is truncated: {0} bytes")]
    Truncated(u64),
    #[error(
        "the snapshot file is damaged or truncated: its SHA-256 is {actual}, \
         its trailer says {expected}"
    )]
    ChecksumMismatch { expected: String, actual: String },
    #[error("the snapshot file is malformed: {0}")]
    Malformed(String),
    #[error("data dir {0} is not empty: restore only writes a new one")]
    DataDirNotEmpty(PathBuf),
    #[error("{0} exists, left by an interrupted restore: remove it first")]
    Leftover(PathBuf),
    #[error("bad initial cluster: {0}")]
    BadCluster(String),
    #[error(
        "the snapshot comes from cluster {0:x}, the id this --initial-cluster-token gives: \
         a restored cluster needs a token of its own, so that no old member can mistake it \
         for its own"
    )]
    SameClusterId(u64),
    /// The reader of a backup went away before its end.
    #[error("the snapshot's reader went away")]
    Cancelled,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("storage: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("io: {0}")]
    Io(#[from] io::Error),
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

/// Chunks of a backup file as they are produced; an error ends the stream.
pub type Chunks = mpsc::Receiver<Result<Vec<u8>>>;

/// Start taking a backup of the state machine: returns its description
/// and a stream of its bytes. The point it holds is fixed before this
/// returns; dropping the receiver stops the work.
pub async fn start(
    shared: Arc<Shared>,
    cluster_id: u64,
    member_id: NodeId,
) -> Result<(BackupInfo, Chunks)> {
    let (info_tx, info_rx) = oneshot::channel();
    // A couple of chunks ahead of the reader, no more.
    let (tx, rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let db = &*shared.db;
        let snap = db.snapshot();
        let info = match describe(db, &snap, cluster_id, member_id) {
            Ok(info) => info,
            Err(e) => {
                let _ = info_tx.send(Err(e));
                return;
            }
        };
        let _ = info_tx.send(Ok(info.clone()));
        let sink = tx.clone();
        let out = Chunker::new(move |chunk| sink.blocking_send(Ok(chunk)).is_ok());
        match write(db, &snap, &info, out) {
            Ok(bytes) => tracing::info!(
                revision = info.revision,
                bytes,
                took = ?started.elapsed(),
                "snapshot sent"
            ),
            Err(BackupError::Cancelled) => {
                tracing::warn!(revision = info.revision, "snapshot abandoned by its reader")
            }
            Err(e) => {
                tracing::warn!("snapshot failed: {e}");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let info = info_rx.await.map_err(|_| BackupError::Cancelled)??;
    Ok((info, rx))
}

/// The header of a backup of what `snap` sees.
fn describe(
    db: &DB,
    snap: &rocksdb::SnapshotWithThreadMode<'_, DB>,
    cluster_id: u64,
    member_id: NodeId,
) -> Result<BackupInfo> {
    let read_i64 = |key: &[u8]| -> Result<i64> {
        match snap.get_cf(cf(db, CF_SM), key)? {
            Some(v) => Ok(i64::from_be_bytes(v.as_slice().try_into().map_err(
                |_| StoreError::corrupt("sm meta", "a revision is not 8 bytes"),
            )?)),
            None => Ok(0),
        }
    };
    let applied = match snap.get_cf(cf(db, CF_SM), meta::APPLIED)? {
        Some(v) => codec::decode::<Option<LogId>>(&v)
            .map_err(|e| StoreError::corrupt("sm meta", e))?
            .map(|l| l.index)
            .unwrap_or(0),
        None => 0,
    };
    Ok(BackupInfo {
        cluster_id,
        member_id,
        revision: read_i64(meta::REVISION)?,
        compacted: read_i64(meta::COMPACTED)?,
        applied_index: applied,
        taken_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    })
}

/// Write a whole backup file of what `snap` sees into `out`; returns its size.
fn write(
    db: &DB,
    snap: &rocksdb::SnapshotWithThreadMode<'_, DB>,
    info: &BackupInfo,
    mut out: Chunker<impl FnMut(Vec<u8>) -> bool>,
) -> Result<u64> {
    let header = codec::encode(info);
    let prelude = (|| -> io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_be_bytes())?;
        out.write_all(&(header.len() as u32).to_be_bytes())?;
        out.write_all(&header)
    })();
    let body = prelude
        .map_err(StoreError::from)
        .and_then(|()| snapshot::write_state(db, snap, &mut out));
    match body {
        Ok(()) => out.finish(),
        Err(_) if out.cancelled => Err(BackupError::Cancelled),
        Err(e) => Err(e.into()),
    }
}

/// Hashes what is written through it and hands it on in chunks of [`CHUNK`]
/// bytes; [`Chunker::finish`] appends the digest. The sink answers false
/// when nobody reads any more.
struct Chunker<F: FnMut(Vec<u8>) -> bool> {
    sink: F,
    digest: ring::digest::Context,
    buf: Vec<u8>,
    total: u64,
    cancelled: bool,
}

impl<F: FnMut(Vec<u8>) -> bool> Chunker<F> {
    fn new(sink: F) -> Self {
        Chunker {
            sink,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            buf: Vec::with_capacity(CHUNK),
            total: 0,
            cancelled: false,
        }
    }

    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if !(self.sink)(chunk) {
            self.cancelled = true;
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "reader gone"));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<u64> {
        // etcd's clients (3.4.23 on) refuse a snapshot whose size is not a
        // multiple of bbolt's 512-byte pages plus the digest: zeros after
        // the end marker make it one.
        let pad = (PAGE - self.total % PAGE) % PAGE;
        self.write_all(&vec![0; pad as usize])
            .map_err(|_| BackupError::Cancelled)?;
        let digest = self.digest.clone().finish();
        self.buf.extend_from_slice(digest.as_ref());
        self.total += digest.as_ref().len() as u64;
        let last = std::mem::take(&mut self.buf);
        self.send(last).map_err(|_| BackupError::Cancelled)?;
        Ok(self.total)
    }
}

impl<F: FnMut(Vec<u8>) -> bool> Write for Chunker<F> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.digest.update(bytes);
        self.total += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = CHUNK - self.buf.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(now);
            rest = later;
            if self.buf.len() == CHUNK {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
                self.send(full)?;
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Check a backup file whole (its checksum first, then its header) and
/// return its description. Reads the file once; writes nothing.
pub fn verify(path: &Path) -> Result<BackupInfo> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut magic = [0u8; MAGIC.len()];
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == MAGIC => {}
        Ok(()) => return Err(BackupError::NotASnapshot),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(BackupError::NotASnapshot)
        }
        Err(e) => return Err(e.into()),
    }
    if len < MIN_LEN {
        return Err(BackupError::Truncated(len));
    }
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(&magic);
    // Everything but the trailer is hashed; the magic is read already.
    let hashed = len - DIGEST_LEN as u64;
    let mut body = BufReader::with_capacity(1 << 20, &mut file).take(hashed - magic.len() as u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    if body.limit() != 0 {
        return Err(BackupError::Truncated(len));
    }
    let mut reader = body.into_inner();
    let mut trailer = [0u8; DIGEST_LEN];
    reader.read_exact(&mut trailer)?;
    let actual = digest.finish();
    if actual.as_ref() != trailer {
        return Err(BackupError::ChecksumMismatch {
            expected: hex(&trailer),
            actual: hex(actual.as_ref()),
        });
    }
    let mut reader = BufReader::new(fs::File::open(path)?);
    let (info, _) = read_prelude(&mut reader)?;
    Ok(info)
}

/// Magic, version and header from the start of a file; returns the header
/// and the prelude's length.
fn read_prelude(r: &mut impl Read) -> Result<(BackupInfo, u64)> {
    let mut magic = [0u8; MAGIC.len()];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(BackupError::NotASnapshot);
    }
    let mut word = [0u8; 4];
    r.read_exact(&mut word)?;
    let version = u32::from_be_bytes(word);
    if version != VERSION {
        return Err(BackupError::UnsupportedVersion(version));
    }
    r.read_exact(&mut word)?;
    let header_len = u32::from_be_bytes(word) as usize;
    if header_len > 1 << 20 {
        return Err(BackupError::Malformed(format!(
            "a header of {header_len} bytes"
        )));
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header)?;
    let info =
        codec::decode(&header).map_err(|e| BackupError::Malformed(format!("header: {e}")))?;
    Ok((info, (MAGIC.len() + 8 + header_len) as u64))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The members of the restored cluster and the one being restored.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// This member's name; one of `initial_cluster`'s.
    pub name: String,
    /// (name, peer URL) of every member, as `--initial-cluster`.
    pub initial_cluster: Vec<(String, String)>,
    /// The restored cluster's token: its member ids and cluster id derive from it.
    pub cluster_token: String,
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    pub info: BackupInfo,
    pub cluster_id: u64,
    pub member_id: NodeId,
    /// Records written (every version of every key, leases, attachments).
    pub records: u64,
    pub leases: u64,
}

/// Write a new data directory at `data_dir` whose state machine holds the
/// backup's data under a new Raft membership: `control-plane run` on each
/// restored member then forms the new cluster. Refuses a non-empty
/// `data_dir`; checks the whole file before writing anything, and writes
/// into a directory beside `data_dir` that is renamed into place only once
/// complete, so a failure leaves nothing behind.
pub fn restore(path: &Path, data_dir: &Path, config: &RestoreConfig) -> Result<Restored> {
    if let Ok(mut entries) = fs::read_dir(data_dir) {
        if entries.next().is_some() {
            return Err(BackupError::DataDirNotEmpty(data_dir.to_path_buf()));
        }
    } else if data_dir.exists() {
        return Err(BackupError::DataDirNotEmpty(data_dir.to_path_buf()));
    }
    let members = membership(config)?;
    let me = member_id(
        &config
            .initial_cluster
            .iter()
            .find(|(n, _)| *n == config.name)
            .map(|(_, url)| url.clone())
            .ok_or_else(|| {
                BackupError::BadCluster(format!("{:?} is not one of its members", config.name))
            })?,
        &config.cluster_token,
    );
    let new_cluster = cluster_id(&config.cluster_token);
    let info = verify(path)?;
    if info.cluster_id == new_cluster {
        return Err(BackupError::SameClusterId(new_cluster));
    }
    let name = data_dir
        .file_name()
        .ok_or_else(|| BackupError::BadCluster(format!("bad data dir {}", data_dir.display())))?;
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let staging = parent.join(format!(".{}.restoring", name.to_string_lossy()));
    if staging.exists() {
        return Err(BackupError::Leftover(staging));
    }
    fs::create_dir(&staging)?;
    let written = load(path, &staging, &info, &members);
    let (records, leases) = match written {
        Ok(counts) => counts,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // An empty directory is replaced by the rename; anything else fails it.
    if let Err(e) = fs::rename(&staging, data_dir) {
        let _ = fs::remove_dir_all(&staging);
        return Err(e.into());
    }
    fs::File::open(&parent)?.sync_all()?;
    Ok(Restored {
        info,
        cluster_id: new_cluster,
        member_id: me,
        records,
        leases,
    })
}

/// The new cluster's membership: every member a voter, ids from the token.
fn membership(config: &RestoreConfig) -> Result<StoredMembership> {
    if config.initial_cluster.is_empty() {
        return Err(BackupError::BadCluster("no members".into()));
    }
    let mut nodes = BTreeMap::new();
    for (name, url) in &config.initial_cluster {
        let id = member_id(url, &config.cluster_token);
        let member = Member {
            name: name.clone(),
            peer_url: url.clone(),
        };
        if nodes.insert(id, member).is_some() {
            return Err(BackupError::BadCluster(format!("{url} is listed twice")));
        }
    }
    let names: BTreeSet<&String> = config.initial_cluster.iter().map(|(n, _)| n).collect();
    if names.len() != config.initial_cluster.len() {
        return Err(BackupError::BadCluster("a name is listed twice".into()));
    }
    let voters: BTreeSet<NodeId> = nodes.keys().copied().collect();
    // The log position a freshly initialized cluster's membership has: to
    // openraft the restored member looks like one that has applied its
    // cluster's first entry, so it neither initializes again nor waits for
    // entries before it.
    Ok(StoredMembership::new(
        Some(LogId::default()),
        Membership::new(vec![voters], nodes),
    ))
}

/// Load the backup's records into a new database under `dir`; returns the
/// records and leases written.
fn load(
    path: &Path,
    dir: &Path,
    info: &BackupInfo,
    members: &StoredMembership,
) -> Result<(u64, u64)> {
    let len = fs::metadata(path)?.len();
    let db = crate::db::open(&dir.join("db"))?;
    let mut reader =
        BufReader::with_capacity(1 << 20, fs::File::open(path)?).take(len - DIGEST_LEN as u64);
    let (_, _) = read_prelude(&mut reader)?;
    let malformed = |e: StoreError| match e {
        StoreError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            BackupError::Malformed("records end before the end marker".into())
        }
        other => BackupError::Malformed(other.to_string()),
    };
    let (mut records, mut leases) = (0u64, 0u64);
    let mut batch = WriteBatch::default();
    let mut pending = 0usize;
    while let Some((family, key, value)) = snapshot::read_record(&mut reader).map_err(malformed)? {
        let skip = match family {
            // The old cluster's Raft position, membership and half-applied
            // entry: the new cluster has its own.
            CF_SM => [meta::APPLIED, meta::MEMBERSHIP, meta::CURSOR].contains(&key.as_slice()),
            // Published by each member of the new cluster when it starts.
            CF_MEMBERS => true,
            _ => false,
        };
        if skip {
            continue;
        }
        if family == CF_LEASES {
            leases += 1;
        }
        records += 1;
        pending += key.len() + value.len();
        batch.put_cf(cf(&db, family), key, value);
        if pending >= RESTORE_BATCH_BYTES {
            db.write(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    let mut padding = Vec::new();
    reader.read_to_end(&mut padding)?;
    if padding.len() as u64 >= PAGE || padding.iter().any(|b| *b != 0) {
        return Err(BackupError::Malformed(format!(
            "{} bytes after the end marker",
            padding.len()
        )));
    }
    let sm = cf(&db, CF_SM);
    batch.put_cf(sm, meta::APPLIED, codec::encode(members.log_id()));
    batch.put_cf(sm, meta::MEMBERSHIP, codec::encode(members));
    db.write(batch)?;
    db.flush_wal(true)?;
    let index = Index::load(&db)?;
    if (index.revision, index.compacted) != (info.revision, info.compacted) {
        return Err(BackupError::Malformed(format!(
            "the header says revision {} (compacted {}), the records {} ({})",
            info.revision, info.compacted, index.revision, index.compacted
        )));
    }
    drop(index);
    drop(db);
    Ok((records, leases))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::CF_REVS;

    /// A database with a revision, a compaction point, history, a lease, a
    /// member's attributes and the old cluster's Raft position.
    fn source(dir: &Path) -> Arc<DB> {
        let db = crate::db::open(&dir.join("source")).expect("db");
        let sm = cf(&db, CF_SM);
        db.put_cf(sm, meta::REVISION, 7i64.to_be_bytes())
            .expect("put");
        db.put_cf(sm, meta::COMPACTED, 3i64.to_be_bytes())
            .expect("put");
        let applied = Some(LogId::new(openraft::CommittedLeaderId::new(4, 1), 99));
        db.put_cf(sm, meta::APPLIED, codec::encode(&applied))
            .expect("put");
        for rev in 1..=7i64 {
            let kv = crate::mvcc::KeyValue {
                key: format!("k{}", rev % 3).into_bytes(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: vec![b'v'; 1000],
                lease: 0,
            };
            let record = codec::Record::of(crate::mvcc::EventKind::Put, &kv);
            db.put_cf(
                cf(&db, CF_REVS),
                codec::rev_key(rev, 0),
                codec::encode(&record),
            )
            .expect("put");
        }
        db.put_cf(cf(&db, CF_LEASES), codec::u64_key(5), b"lease")
            .expect("put");
        db.put_cf(cf(&db, CF_MEMBERS), codec::u64_key(1), b"old member")
            .expect("put");
        db
    }

    fn backup_bytes(db: &DB) -> Vec<u8> {
        let snap = db.snapshot();
        let info = describe(db, &snap, 42, 1).expect("describe");
        let mut chunks = Vec::new();
        let out = Chunker::new(|chunk: Vec<u8>| {
            chunks.push(chunk);
            true
        });
        let total = write(db, &snap, &info, out).expect("write");
        assert!(chunks.iter().all(|c| c.len() <= CHUNK));
        let bytes = chunks.concat();
        assert_eq!(bytes.len() as u64, total);
        bytes
    }

    fn config(token: &str) -> RestoreConfig {
        RestoreConfig {
            name: "m2".into(),
            initial_cluster: (1..=3)
                .map(|i| (format!("m{i}"), format!("https://10.0.0.{i}:2380")))
                .collect(),
            cluster_token: token.into(),
        }
    }

    #[test]
    fn a_restored_store_keeps_the_data_and_gets_a_new_membership() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = source(tmp.path());
        let file = tmp.path().join("backup.db");
        fs::write(&file, backup_bytes(&db)).expect("write");
        let info = verify(&file).expect("verify");
        assert_eq!(
            (info.revision, info.compacted, info.applied_index),
            (7, 3, 99)
        );

        let target = tmp.path().join("restored");
        let restored = restore(&file, &target, &config("new")).expect("restore");
        assert_eq!(restored.cluster_id, cluster_id("new"));
        assert_eq!(restored.leases, 1);
        let db = crate::db::open(&target.join("db")).expect("reopen");
        let index = Index::load(&db).expect("index");
        assert_eq!((index.revision, index.compacted), (7, 3));
        assert_eq!(
            db.get_cf(cf(&db, CF_LEASES), codec::u64_key(5))
                .expect("get"),
            Some(b"lease".to_vec())
        );
        assert!(db
            .iterator_cf(cf(&db, CF_MEMBERS), rocksdb::IteratorMode::Start)
            .next()
            .is_none());
        let members: StoredMembership = crate::state_machine::read_meta(&db, meta::MEMBERSHIP)
            .expect("read")
            .expect("set");
        let voters: Vec<NodeId> = members.membership().voter_ids().collect();
        assert_eq!(voters.len(), 3);
        assert!(voters.contains(&restored.member_id));
        assert_eq!(
            crate::state_machine::read_applied(&db).expect("applied"),
            Some(LogId::default())
        );
    }

    #[test]
    fn damaged_truncated_or_foreign_files_are_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().expect("tmp");
        let bytes = backup_bytes(&source(tmp.path()));
        let target = tmp.path().join("restored");
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        let cases: [(&str, Vec<u8>); 4] = [
            ("damaged", flipped),
            ("truncated", bytes[..bytes.len() - 100].to_vec()),
            ("short", bytes[..20].to_vec()),
            ("foreign", b"an etcd bbolt file, say".to_vec()),
        ];
        for (name, content) in cases {
            let file = tmp.path().join(name);
            fs::write(&file, content).expect("write");
            let err = restore(&file, &target, &config("new")).expect_err(name);
            match (name, &err) {
                ("damaged" | "truncated", BackupError::ChecksumMismatch { .. })
                | ("short", BackupError::Truncated(_))
                | ("foreign", BackupError::NotASnapshot) => {}
                _ => panic!("{name}: {err}"),
            }
            assert!(!target.exists(), "{name}");
        }
        // The source's own token gives its cluster id.
        let file = tmp.path().join("good");
        fs::write(&file, &bytes).expect("write");
        let same = config("old");
        let source_id = cluster_id("old");
        let bytes = {
            let db = crate::db::open(&tmp.path().join("other")).expect("db");
            let snap = db.snapshot();
            let info = BackupInfo {
                cluster_id: source_id,
                ..describe(&db, &snap, 0, 0).expect("describe")
            };
            let mut out = Vec::new();
            let sink = Chunker::new(|c: Vec<u8>| {
                out.extend(c);
                true
            });
            write(&db, &snap, &info, sink).expect("write");
            out
        };
        let other = tmp.path().join("other.db");
        fs::write(&other, bytes).expect("write");
        assert!(matches!(
            restore(&other, &target, &same),
            Err(BackupError::SameClusterId(_))
        ));
        // A data dir in use is refused.
        fs::create_dir_all(target.join("db")).expect("mkdir");
        assert!(matches!(
            restore(&file, &target, &config("new")),
            Err(BackupError::DataDirNotEmpty(_))
        ));
    }
}
