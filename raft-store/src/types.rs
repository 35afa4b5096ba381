//! The Raft type configuration and the commands that travel through the log.
//!
//! Everything replicated is a [`Command`]; applying one yields a [`Response`].
//! The key-value operations mirror etcd's v3 semantics but are our own types,
//! so the store does not depend on any wire format.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::mvcc::{OpResult, TxnRequest};

/// A master's identity in the Raft group and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Human name (`--name`), empty until the member has started and published it.
    pub name: String,
    /// URL the other masters use for Raft RPCs, e.g. `http://127.0.0.11:2380`.
    pub peer_url: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_url)
    }
}

openraft::declare_raft_types!(
    /// Type configuration of the Skiff store's Raft group.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = Member,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// A replicated state change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Put, DeleteRange and Txn all travel as a transaction.
    Txn(TxnRequest),
    /// Forget history older than `revision`.
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// Several commands proposed together (one log entry, one fsync); each
    /// is applied as if proposed alone, in order. Shared, so that copies of
    /// the entry (the log's cache, replication, applying) cost no copying.
    Batch(Arc<Vec<Command>>),
    /// `cmd`, applied only if the entry carrying it was appended by the
    /// leadership named here (`term`, `leader`); otherwise refused with
    /// [`ApplyError::Fenced`]. Leader-only work (controllers, scheduler)
    /// proposes through this, so a deposed leader whose writes reach the
    /// new leader by forwarding cannot commit them.
    Fenced {
        term: u64,
        leader: NodeId,
        cmd: Box<Command>,
    },
    /// A member announces its name and client URLs once it has started.
    Publish {
        id: NodeId,
        name: String,
        client_urls: Vec<String>,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Txn(t) => write!(
                f,
                "txn({} compares, {}/{} ops)",
                t.compare.len(),
                t.success.len(),
                t.failure.len()
            ),
            Command::Compact { revision } => write!(f, "compact({revision})"),
            Command::LeaseGrant { id, ttl } => write!(f, "lease-grant({id:x}, {ttl}s)"),
            Command::LeaseRevoke { id } => write!(f, "lease-revoke({id:x})"),
            Command::Publish { id, name, .. } => write!(f, "publish({id:x}, {name})"),
            Command::Batch(cmds) => write!(f, "batch({})", cmds.len()),
            Command::Fenced { term, leader, cmd } => {
                write!(f, "fenced({term}, {leader:x}, {cmd})")
            }
        }
    }
}

/// The outcome of applying one command. Deterministic on every master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Store revision after the command was applied.
    pub revision: i64,
    pub outcome: Result<Outcome, ApplyError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    Txn {
        succeeded: bool,
        results: Vec<OpResult>,
    },
    Compacted,
    LeaseGranted {
        id: i64,
        ttl: i64,
    },
    LeaseRevoked,
    Published,
    /// One result per command of a [`Command::Batch`], in order.
    Batch(Vec<Response>),
    /// Membership entries and blanks carry no application result.
    None,
}

impl Command {
    /// Rough size in bytes, to bound batches.
    pub fn approx_size(&self) -> usize {
        match self {
            Command::Txn(t) => 64 + t.approx_size(),
            Command::Batch(cmds) => cmds.iter().map(Command::approx_size).sum(),
            Command::Fenced { cmd, .. } => 16 + cmd.approx_size(),
            _ => 64,
        }
    }
}

/// Why a command was refused by the state machine. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("key not found")]
    KeyNotFound,
    /// A [`Command::Fenced`] reached the log under another leadership.
    #[error("proposed under a leadership that has ended")]
    Fenced,
}
