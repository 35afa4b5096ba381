//! Requests a follower forwards to the leader, and the replies.

use serde::{Deserialize, Serialize};

use crate::lease::LeaseTtl;
use crate::types::{Command, LogId, NodeId, Response};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwarded {
    /// Commands a follower gathered; the leader appends them as one entry.
    WriteBatch(Vec<Command>),
    /// The leader confirms its leadership and returns the index to wait for.
    ReadIndex,
    LeaseKeepAlive(i64),
    LeaseTimeToLive(i64),
    AddMember {
        peer_url: String,
        learner: bool,
    },
    RemoveMember(NodeId),
    PromoteMember(NodeId),
    /// Asked of any peer, not the leader: was member `id`, whose log ends
    /// at `last_log_id`, removed? Answered with the "permanently removed"
    /// status if so (see [`crate::removal`]).
    AmIRemoved {
        id: NodeId,
        last_log_id: Option<LogId>,
    },
    /// Asked by a leader that is stopping, of the voter it chose: start an
    /// election now (see [`crate::handoff`]). Answered by the peer service.
    Campaign,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    WriteBatch(Vec<Response>),
    /// The log index a reader must have applied.
    ReadIndex(u64),
    /// The lease's TTL, or None if it does not exist.
    LeaseKeepAlive(Option<i64>),
    LeaseTimeToLive(Option<(i64, i64)>),
    Member(NodeId),
    Done,
}

/// Why a forwarded request failed on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not (or no longer) the leader.
    NotLeader,
    MemberNotFound(NodeId),
    Invalid(String),
    Other(String),
    /// Promoting a member that is not a learner.
    NotLearner(NodeId),
    /// Promoting a learner that is not in sync: its matched index, the leader's.
    LearnerNotReady(NodeId, u64, u64),
}

impl From<LeaseTtl> for Reply {
    fn from(t: LeaseTtl) -> Self {
        Reply::LeaseTimeToLive(Some((t.granted, t.remaining)))
    }
}
