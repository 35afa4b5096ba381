//! The one RocksDB instance a master keeps: the Raft log and the state
//! machine live in column families of the same database.
//!
//! Only the log goes through RocksDB's write-ahead log. The state machine
//! writes skip it: whatever it wrote since its last flush can be applied
//! again from the Raft log, which keeps every entry up to the last snapshot,
//! and a snapshot flushes the state machine first. Flushes are atomic across
//! column families, so after a crash the state machine is as it was at one
//! moment, `applied` index included, and openraft re-applies the committed
//! entries after it. Every value is thus written to the WAL once (in its log
//! entry), not twice.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

/// Raft log entries by index (big-endian u64).
pub const CF_LOGS: &str = "logs";
/// Raft metadata: vote, committed, last purged.
pub const CF_RAFT: &str = "raft";
/// State machine metadata: last applied, membership, revision, compaction point.
pub const CF_SM: &str = "sm";
/// Every version of every key, by the revision that made it.
pub const CF_REVS: &str = "revs";
/// Leases by id.
pub const CF_LEASES: &str = "leases";
/// (lease id, key) pairs: the keys attached to each lease.
pub const CF_LEASE_KEYS: &str = "lease_keys";
/// Member attributes published through the log (name, client URLs).
pub const CF_MEMBERS: &str = "members";

/// Column families that make up the state machine, and so the snapshot.
pub const SM_FAMILIES: [&str; 5] = [CF_SM, CF_REVS, CF_LEASES, CF_LEASE_KEYS, CF_MEMBERS];

/// Column families of the Raft log itself.
pub const LOG_FAMILIES: [&str; 2] = [CF_LOGS, CF_RAFT];

/// Every column family of the database.
pub fn all_families() -> impl Iterator<Item = &'static str> {
    LOG_FAMILIES.into_iter().chain(SM_FAMILIES)
}

/// The pace of flushes and compactions (see [`open`]).
const BACKGROUND_WRITE_BYTES_PER_SEC: i64 = 64 << 20;

pub fn open(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.increase_parallelism(2);
    // The WAL is written to its file only when the log-sync thread (or a
    // write that must be durable) flushes it: applying a command then costs
    // no system call, and every fsync carries all writes made before it.
    opts.set_manual_wal_flush(true);
    // The state machine is written without the WAL (see above).
    opts.set_atomic_flush(true);
    // A flush or compaction writes tens of megabytes; left dirty until the
    // table file's final fsync, they reach the disk in one burst, and the
    // log's fsync queued behind it took up to 250 ms, past the leader's
    // 100 ms AppendEntries timeout. Writing them back every megabyte as they
    // are produced keeps the log's fsyncs short.
    opts.set_bytes_per_sync(1 << 20);
    // Even written back as they go, a flush's or compaction's tens of
    // megabytes fill the disk's queue, and every log fsync waits behind them:
    // while the three masters flushed at the same snapshot point, fsyncs
    // took 25-45 ms instead of 0.5, and writes queued for 100-300 ms. Paced
    // at this rate (refilled every 10 ms), they leave room for the fsyncs.
    // It is several times what the heaviest load here needs (about 15 MB/s
    // of flushes per master at `check perf --load=xl`, plus compaction).
    opts.set_ratelimiter(BACKGROUND_WRITE_BYTES_PER_SEC, 10_000, 10);
    let cache = rocksdb::Cache::new_lru_cache(128 << 20);
    let families = all_families().map(|name| {
        let mut cf_opts = Options::default();
        cf_opts.set_write_buffer_size(64 << 20);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // Point lookups of absent keys (leases, members) skip files quickly.
        table.set_bloom_filter(10.0, false);
        cf_opts.set_block_based_table_factory(&table);
        // Leveled compaction (the default): the log and `revs` are written
        // in key order, so their table files do not overlap and move down
        // the levels without being rewritten.
        ColumnFamilyDescriptor::new(name, cf_opts)
    });
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, families)?))
}

/// Handle of a column family created by [`open`].
pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created by db::open")
}

/// Approximate bytes on disk of the whole database.
pub fn size_on_disk(db: &DB) -> u64 {
    const SIZES: [&str; 2] = [
        "rocksdb.total-sst-files-size",
        "rocksdb.size-all-mem-tables",
    ];
    all_families()
        .flat_map(|name| SIZES.map(|p| db.property_int_value_cf(cf(db, name), p).ok().flatten()))
        .flatten()
        .sum()
}

/// Compact every column family (reclaims space after deletes).
pub fn compact_all(db: &DB) {
    for name in all_families() {
        db.compact_range_cf(cf(db, name), None::<&[u8]>, None::<&[u8]>);
    }
}

/// Write `batch` and make it (and everything written before it) durable.
pub fn write_durable(db: &DB, batch: rocksdb::WriteBatch) -> Result<(), rocksdb::Error> {
    db.write(batch)?;
    db.flush_wal(true)
}
