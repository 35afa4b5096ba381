//! The replicated store behind every Skiff master: etcd's data model on
//! openraft and RocksDB, embedded in the master process.
//!
//! Map of the crate:
//! - [`types`]: the Raft type configuration and the replicated [`Command`]s.
//! - [`db`]: the RocksDB instance and its column families.
//! - [`log_store`]: the Raft log (appends acknowledged after a WAL sync).
//! - [`mvcc`]: the key-value model with revisions: layout, the in-memory
//!   key index, reads, writes.
//! - [`state_machine`]: applies commands; [`snapshot`] dumps and loads it.
//! - [`backup`]: the state machine as a backup file (`etcdctl snapshot
//!   save`) and a new data directory made from one (`control-plane restore`).
//! - [`lease`]: lease deadlines; [`watch`]: the watch hub and watchers.
//! - [`network`]: peer RPCs over tonic (Raft messages, forwarding).
//! - [`node`]: [`Store`], a master's handle tying it all together;
//!   `proposer` batches concurrent writes into one log entry, `read_index`
//!   concurrent linearizable reads into one leadership confirmation.
//! - [`removal`]: how a master learns it was removed from the cluster.
//! - `jobs`: background work (lease expiry, compaction, metrics, publishing).
//! - [`metrics`]: what each Prometheus series means (Skiff's and etcd's).

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
// tonic::Status and openraft::StorageError are the error types the gRPC and
// openraft traits require; boxing them at every call site buys nothing.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod db;
pub mod error;
pub mod handoff;
mod jobs;
pub mod lease;
pub mod log_store;
pub mod metrics;
pub mod mvcc;
pub mod network;
pub mod node;
mod proposer;
mod read_index;
pub mod removal;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod watch;

pub use error::StoreError;
pub use node::{member_id, Config, MemberInfo, PeerTls, Status, Store};
pub use types::{ApplyError, Command, Member, NodeId, Outcome, Response};
