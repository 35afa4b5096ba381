//! Errors of the store library.

use crate::types::{ApplyError, NodeId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state machine refused the request; nothing was written.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    #[error("storage: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// No leader is known right now (election in progress or no quorum).
    #[error("no leader")]
    NoLeader,
    /// The leader could not be reached to forward the request.
    #[error("forwarding to leader {leader}: {detail}")]
    Forward { leader: NodeId, detail: String },
    /// The request may or may not have been applied (leader lost mid-way).
    #[error("raft: {0}")]
    Raft(String),
    #[error("bad request: {0}")]
    Invalid(String),
    #[error("member {0:x} not found")]
    MemberNotFound(NodeId),
    /// This master's data disk is (nearly) full; it takes no writes until space returns.
    #[error("no space left on the data disk")]
    NoSpace,
    #[error("the store is shutting down")]
    Stopped,
    /// This member was removed from the cluster (see [`crate::removal`]).
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    /// Only a learner can be promoted.
    #[error("member {0:x} is not a learner")]
    NotLearner(NodeId),
    /// The learner's log is too far behind the leader's to promote it.
    #[error("learner {id:x} is not in sync with the leader (matched index {matched}, leader's {leader})")]
    LearnerNotReady {
        id: NodeId,
        matched: u64,
        leader: u64,
    },
}

impl StoreError {
    pub fn corrupt(what: &'static str, e: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what,
            detail: e.to_string(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
