//! The store's Prometheus series: what each means, and its unit.
//!
//! Two families. `skiff_*` are the store's own. `etcd_*` are the series
//! etcd exports, with etcd's names, types and buckets, for the facts that
//! are the same here (leadership, proposals, WAL fsync, backend commit,
//! database size), so dashboards and alerts written for etcd read Skiff's
//! store unchanged. Each is recorded where the fact is: leadership and
//! applied index in `jobs/raft_metrics`, commits and fsyncs in
//! [`crate::log_store`], backend commits in [`crate::state_machine`],
//! pending and failed proposals in `proposer`.

use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// etcd's buckets for its disk latencies (`etcd_disk_*_duration_seconds`):
/// 1 ms doubling up to about 8 s.
pub const ETCD_DISK_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// etcd's disk latency histograms, which take [`ETCD_DISK_BUCKETS`].
pub const ETCD_DISK_HISTOGRAMS: &[&str] = &[
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_backend_commit_duration_seconds",
];

/// Give every series of the store its help text and unit. Call once, after
/// the recorder is installed (descriptions sent before it are lost).
pub fn describe() {
    describe_etcd();
    describe_counter!(
        "skiff_tls_handshake_failures_total",
        Unit::Count,
        "TLS handshakes that failed or timed out on the store's ports, by port (peer, client)."
    );
    describe_gauge!(
        "skiff_raft_term",
        Unit::Count,
        "The Raft term this member is in."
    );
    describe_gauge!(
        "skiff_raft_leader_id",
        Unit::Count,
        "The member id of the Raft leader this member knows (0: none)."
    );
    describe_gauge!(
        "skiff_raft_is_leader",
        Unit::Count,
        "1 if this member is the Raft leader, 0 otherwise."
    );
    describe_gauge!(
        "skiff_raft_applied_index",
        Unit::Count,
        "The index of the last Raft log entry applied to this member's state machine."
    );
    describe_gauge!(
        "skiff_raft_last_log_index",
        Unit::Count,
        "The index of the last entry in this member's Raft log."
    );
    describe_gauge!(
        "skiff_raft_commit_index",
        Unit::Count,
        "The index of the last Raft log entry this member knows to be committed."
    );
    describe_counter!(
        "skiff_raft_leader_changes_total",
        Unit::Count,
        "Times this member saw the Raft leader change (the first leader seen is not counted)."
    );
    describe_gauge!(
        "skiff_store_revision",
        Unit::Count,
        "The store revision (etcd's) applied on this member."
    );
    describe_gauge!(
        "skiff_store_leases",
        Unit::Count,
        "Leases alive in the store (set by the leader's expiry loop)."
    );
    describe_counter!(
        "skiff_store_leases_expired_total",
        Unit::Count,
        "Leases this member revoked, as leader, because their TTL ran out."
    );
    describe_gauge!(
        "skiff_store_watchers",
        Unit::Count,
        "Watchers open on this member's watch hub."
    );
    describe_histogram!(
        "skiff_store_apply_seconds",
        Unit::Seconds,
        "Time to apply one Raft log entry to the state machine."
    );
    describe_counter!(
        "skiff_store_proposals_redirected_total",
        Unit::Count,
        "Write batches sent again to the next leader because the leader refused them unproposed (it was handing over) or could not be reached."
    );
    describe_histogram!(
        "skiff_store_proposal_batch",
        Unit::Count,
        "Writes carried by one Raft log entry (concurrent writes are batched)."
    );
    describe_histogram!(
        "skiff_store_read_index_batch",
        Unit::Count,
        "Linearizable reads served by one confirmation of leadership."
    );
    describe_histogram!(
        "skiff_store_wal_fsync_seconds",
        Unit::Seconds,
        "Time to sync RocksDB's write-ahead log for a group of Raft log appends."
    );
    describe_histogram!(
        "skiff_store_wal_fsync_batch",
        Unit::Count,
        "Raft log appends acknowledged by one WAL sync."
    );
    describe_histogram!(
        "skiff_store_log_append_seconds",
        Unit::Seconds,
        "Time to write a group of entries to the Raft log (before the WAL sync)."
    );
    describe_histogram!(
        "skiff_store_log_purge_seconds",
        Unit::Seconds,
        "Time to purge the Raft log up to a snapshot."
    );
    describe_counter!(
        "skiff_store_snapshots_total",
        Unit::Count,
        "Snapshots of the state machine this member built."
    );
    describe_histogram!(
        "skiff_store_snapshot_build_seconds",
        Unit::Seconds,
        "Time to build a snapshot of the state machine."
    );
    describe_counter!(
        "skiff_store_snapshots_installed_total",
        Unit::Count,
        "Snapshots received from the leader and installed on this member."
    );
    describe_gauge!(
        "skiff_disk_free_bytes",
        Unit::Bytes,
        "Free space on the file system holding the data directory."
    );
    describe_gauge!(
        "skiff_disk_space_low",
        Unit::Count,
        "1 while this member refuses writes and stays out of elections because its data disk is nearly full."
    );
}

fn describe_etcd() {
    describe_gauge!(
        "etcd_server_has_leader",
        Unit::Count,
        "Whether or not a leader exists. 1 is existence, 0 is not."
    );
    describe_gauge!(
        "etcd_server_is_leader",
        Unit::Count,
        "Whether or not this member is a leader. 1 if is, 0 otherwise."
    );
    describe_counter!(
        "etcd_server_leader_changes_seen_total",
        Unit::Count,
        "The number of leader changes seen (the first leader seen included, as etcd)."
    );
    describe_counter!(
        "etcd_server_proposals_committed_total",
        Unit::Count,
        "The total number of consensus proposals committed (the Raft commit index)."
    );
    describe_counter!(
        "etcd_server_proposals_applied_total",
        Unit::Count,
        "The total number of consensus proposals applied (the Raft applied index)."
    );
    describe_gauge!(
        "etcd_server_proposals_pending",
        Unit::Count,
        "The current number of pending proposals to commit: writes made through this member not yet applied."
    );
    describe_counter!(
        "etcd_server_proposals_failed_total",
        Unit::Count,
        "The total number of failed proposals seen (no leader, a forward or a commit that failed)."
    );
    describe_gauge!(
        "etcd_server_id",
        Unit::Count,
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."
    );
    describe_histogram!(
        "etcd_disk_wal_fsync_duration_seconds",
        Unit::Seconds,
        "The latency distributions of fsync called by WAL (RocksDB's WAL sync of Raft log appends)."
    );
    describe_histogram!(
        "etcd_disk_backend_commit_duration_seconds",
        Unit::Seconds,
        "The latency distributions of commit called by backend (the state machine's write of an applied batch)."
    );
    describe_gauge!(
        "etcd_mvcc_db_total_size_in_bytes",
        Unit::Bytes,
        "Total size of the underlying database physically allocated in bytes (RocksDB's files)."
    );
}
