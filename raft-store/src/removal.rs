//! How a master learns that it was removed from the cluster, as etcd's
//! members do.
//!
//! A member is removed by a committed membership config that no longer
//! names it. It finds out in one of two ways:
//!
//! - it applies such a config itself, having been in an earlier one it
//!   applied, and wrote it in its current leadership (a leader that
//!   removes itself; see [`removed_itself`]);
//! - a peer tells it so: a Raft message from a sender that is not in the
//!   peer's applied membership, when the sender's log cannot hold that
//!   membership yet ([`peer_knows_removed`]), is answered with
//!   [`removed_status`], and the sender's network client marks its store
//!   removed. This is how a voter removed while running (openraft stops
//!   replicating to it the moment the config without it is appended, so it
//!   never sees that config) or while it was down learns it: it campaigns.
//!
//! Once removed, a member stops campaigning and sending heartbeats and the
//! store refuses every request with [`crate::StoreError::Removed`]. The fact is
//! kept in a marker file in the data directory, so a restarted removed
//! member knows at once (like etcd, a removed member's data directory must
//! be wiped before it is added again).

use std::path::PathBuf;
use std::sync::OnceLock;

use openraft::Vote;
use tokio::sync::watch;

use crate::types::{LogId, NodeId, Raft, StoredMembership};

/// What a peer answers a removed member's Raft message with (a
/// `FAILED_PRECONDITION` status carrying exactly this message), etcd's words.
pub const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";

/// The marker file, in the data directory, of a member that knows it was removed.
pub const MARKER_FILE: &str = "removed";

/// The status a peer answers a removed member's Raft message with.
pub fn removed_status() -> tonic::Status {
    tonic::Status::failed_precondition(REMOVED_MESSAGE)
}

/// Whether a peer's answer says the sender was removed.
pub fn is_removed_status(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition && status.message() == REMOVED_MESSAGE
}

/// How far the log of a Raft message's sender can reach.
#[derive(Debug, Clone, Copy)]
pub enum SenderLog {
    /// A candidate's last log id (a vote request).
    Last(Option<LogId>),
    /// A leader's term (append entries, install snapshot): every entry in
    /// its log has this term or an older one.
    LeaderOfTerm(u64),
}

/// Whether a peer whose applied membership is `applied` can tell `sender`
/// that it was removed.
///
/// Not being in the peer's membership is not enough: the peer may lag. A
/// member added by a config the peer has not applied yet is not in the
/// peer's membership either, and must not be told it was removed. The
/// guard is that the sender's log cannot contain the peer's config:
///
/// - A legitimate new member only sends Raft messages once it is a voter,
///   i.e. once its own log holds the config that made it one; that config
///   comes after every config that does not name it and that the peer has
///   applied, so its last log id is beyond the peer's config and it is not
///   told. A legitimate leader's term is newer than every entry it did not
///   write, and if it wrote the peer's config it is not beyond it either.
/// - A removed member's log stops short of the config that removed it:
///   openraft stops replicating to a member as soon as the leader appends
///   the config without it, and a member that was down missed it. Its last
///   log id is therefore older than the config (log ids compare by term,
///   then index, so a stale leader's uncommitted entries of an old term
///   count as older too), and it is told.
///
/// A peer that has applied no membership yet tells nobody anything.
pub fn peer_knows_removed(applied: &StoredMembership, sender: NodeId, log: SenderLog) -> bool {
    let Some(config_at) = applied.log_id() else {
        return false;
    };
    if applied.nodes().any(|(id, _)| *id == sender) {
        return false;
    }
    match log {
        SenderLog::Last(last) => last.as_ref() < Some(config_at),
        SenderLog::LeaderOfTerm(term) => term < config_at.leader_id.term,
    }
}

/// Whether applying config `now` after `before` tells member `id`, whose
/// vote is `vote`, that it removed itself: it was in the earlier applied
/// config, is not in this one, and wrote this one as the leader it still
/// is (same term, itself).
///
/// A member that was in no earlier config (a fresh member, or a new
/// learner that installed a snapshot taken before it was added) is not
/// removed. Nor is one that replays someone's removal from the log: a
/// member id comes from its peer URL, so a master removed and added back
/// empty at the same URL replays the config that removed its earlier
/// self (and it may even have written it, as the leader of an earlier
/// term); in its current term it was not removed.
pub fn removed_itself(
    before: &StoredMembership,
    now: &StoredMembership,
    id: NodeId,
    vote: &Vote<NodeId>,
) -> bool {
    let named = |m: &StoredMembership| m.nodes().any(|(n, _)| *n == id);
    let Some(at) = now.log_id() else {
        return false;
    };
    let mine = vote.leader_id().voted_for() == Some(id)
        && at.leader_id.node_id == id
        && at.leader_id.term == vote.leader_id().get_term();
    named(before) && !named(now) && mine
}

/// A member's knowledge that it was removed: a flag to watch, the marker
/// file, and the Raft instance to silence.
pub struct Removal {
    id: NodeId,
    name: String,
    marker: PathBuf,
    removed: watch::Sender<bool>,
    raft: OnceLock<Raft>,
}

impl Removal {
    /// The removal state of member `id`, read from the marker file in `data_dir`.
    pub fn new(id: NodeId, name: &str, data_dir: &std::path::Path) -> Self {
        let marker = data_dir.join(MARKER_FILE);
        let known = marker.exists();
        if known {
            tracing::error!(
                id = format_args!("{id:x}"),
                name,
                marker = %marker.display(),
                "this member was removed from the cluster (recorded before this start); it takes no part in the cluster: wipe the data directory before adding it again"
            );
        }
        Removal {
            id,
            name: name.to_string(),
            marker,
            removed: watch::channel(known).0,
            raft: OnceLock::new(),
        }
    }

    pub fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }

    /// A receiver that turns true once this member knows it was removed.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// Hand over the Raft instance once it exists (silenced at once if
    /// this member is already known to be removed).
    pub fn attach(&self, raft: Raft) {
        let raft = self.raft.get_or_init(|| raft);
        if self.is_removed() {
            silence(raft);
        }
    }

    /// Record that this member was removed (`how` says how it learned it).
    /// Only the first call logs and acts.
    pub fn mark(&self, how: &str) {
        let first = self
            .removed
            .send_if_modified(|r| !std::mem::replace(r, true));
        if !first {
            return;
        }
        tracing::error!(
            id = format_args!("{:x}", self.id),
            name = %self.name,
            "this member was removed from the cluster ({how}); it stops campaigning and serving: wipe its data directory before adding it again"
        );
        if let Err(e) = std::fs::write(&self.marker, format!("{REMOVED_MESSAGE}: {how}\n")) {
            tracing::warn!(marker = %self.marker.display(), "recording the removal: {e}");
        }
        if let Some(raft) = self.raft.get() {
            silence(raft);
        }
    }
}

/// No more campaigns or heartbeats from a removed member.
fn silence(raft: &Raft) {
    raft.runtime_config().elect(false);
    raft.runtime_config().heartbeat(false);
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::types::Member;

    fn config(term: u64, index: u64, voters: &[NodeId]) -> StoredMembership {
        let nodes: BTreeMap<NodeId, Member> =
            voters.iter().map(|id| (*id, Member::default())).collect();
        let set: BTreeSet<NodeId> = voters.iter().copied().collect();
        StoredMembership::new(
            Some(LogId::new(CommittedLeaderId::new(term, 0), index)),
            Membership::new(vec![set], nodes),
        )
    }

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 0), index))
    }

    #[test]
    fn a_candidate_whose_log_stops_before_the_config_is_told() {
        let m = config(3, 20, &[1, 2]);
        assert!(peer_knows_removed(&m, 3, SenderLog::Last(log(3, 12))));
        assert!(peer_knows_removed(&m, 3, SenderLog::Last(None)));
        // Uncommitted entries of an older term, past the config's index.
        assert!(peer_knows_removed(&m, 3, SenderLog::Last(log(2, 40))));
        assert!(peer_knows_removed(&m, 3, SenderLog::LeaderOfTerm(2)));
    }

    #[test]
    fn a_member_the_peer_does_not_know_yet_is_not_told() {
        // The peer lags at config 20; member 4 was added at 25 and promoted
        // at 27, so its log reaches past 27 and its terms are newer.
        let m = config(3, 20, &[1, 2, 3]);
        assert!(!peer_knows_removed(&m, 4, SenderLog::Last(log(3, 27))));
        assert!(!peer_knows_removed(&m, 4, SenderLog::Last(log(4, 28))));
        assert!(!peer_knows_removed(&m, 4, SenderLog::LeaderOfTerm(4)));
        // The leader that wrote the config itself.
        assert!(!peer_knows_removed(&m, 4, SenderLog::LeaderOfTerm(3)));
        // Members, and a peer with no membership, tell nothing.
        assert!(!peer_knows_removed(&m, 3, SenderLog::Last(None)));
        assert!(!peer_knows_removed(
            &StoredMembership::default(),
            9,
            SenderLog::Last(None)
        ));
    }

    #[test]
    fn a_leader_removed_itself_by_the_config_it_wrote_in_its_term() {
        let written_by = |term: u64, leader: NodeId, voters: &[NodeId]| {
            let nodes: BTreeMap<NodeId, Member> =
                voters.iter().map(|id| (*id, Member::default())).collect();
            let set: BTreeSet<NodeId> = voters.iter().copied().collect();
            StoredMembership::new(
                Some(LogId::new(CommittedLeaderId::new(term, leader), 9)),
                Membership::new(vec![set], nodes),
            )
        };
        let empty = StoredMembership::default();
        let with = config(1, 5, &[1, 2, 3]);
        let without = written_by(2, 3, &[1, 2]);
        let leading = Vote::new_committed(2, 3);
        assert!(removed_itself(&with, &without, 3, &leading));
        assert!(!removed_itself(
            &with,
            &without,
            1,
            &Vote::new_committed(2, 1)
        ));
        // A new learner installing a snapshot from before it was added.
        assert!(!removed_itself(&empty, &without, 3, &leading));
        // Member 3 added back empty replays its earlier self's removal,
        // written when it led term 2; it now follows term 4.
        assert!(!removed_itself(
            &with,
            &without,
            3,
            &Vote::new_committed(4, 1)
        ));
        // Removed by another leader: peers tell it (`peer_knows_removed`).
        let by_other = written_by(2, 1, &[1, 2]);
        assert!(!removed_itself(
            &with,
            &by_other,
            3,
            &Vote::new_committed(2, 1)
        ));
    }
}
