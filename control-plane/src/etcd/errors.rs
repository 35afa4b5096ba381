//! etcd's gRPC errors: the same codes and messages etcd's server sends, which
//! etcd clients match on (for example to retry on "no leader").

use raft_store::{ApplyError, StoreError};
use tonic::Status;

pub fn empty_key() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

pub fn too_large() -> Status {
    Status::invalid_argument("etcdserver: request is too large")
}

pub fn lease_not_found() -> Status {
    Status::not_found("etcdserver: requested lease not found")
}

pub fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

/// What a member that knows it was removed from the cluster answers every
/// request with. etcd itself stops such a member (its clients see "server
/// stopped", then a closed port), both UNAVAILABLE, which etcd's clients
/// retry on another endpoint; the message says why.
pub fn removed() -> Status {
    Status::unavailable("etcdserver: the member has been permanently removed from the cluster")
}

pub fn member_not_learner() -> Status {
    Status::failed_precondition("etcdserver: can only promote a learner member")
}

pub fn learner_not_ready() -> Status {
    Status::failed_precondition(
        "etcdserver: can only promote a learner member which is in sync with leader",
    )
}

pub fn apply(e: ApplyError) -> Status {
    match e {
        ApplyError::Compacted => {
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
        }
        ApplyError::FutureRevision => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        ApplyError::LeaseNotFound => lease_not_found(),
        ApplyError::LeaseExists => Status::failed_precondition("etcdserver: lease already exists"),
        ApplyError::DuplicateKey => {
            Status::invalid_argument("etcdserver: duplicate key given in txn request")
        }
        ApplyError::KeyNotFound => Status::invalid_argument("etcdserver: key not found"),
        // The etcd API never proposes fenced commands.
        ApplyError::Fenced => Status::unavailable("etcdserver: leader changed"),
    }
}

pub fn store(e: StoreError) -> Status {
    match e {
        StoreError::Rejected(a) => apply(a),
        StoreError::NoLeader => Status::unavailable("etcdserver: no leader"),
        StoreError::Forward { .. } | StoreError::Raft(_) => {
            tracing::debug!("request failed: {e}");
            Status::unavailable("etcdserver: request timed out")
        }
        StoreError::NoSpace => {
            Status::resource_exhausted("etcdserver: mvcc: database space exceeded")
        }
        StoreError::Stopped => Status::unavailable("etcdserver: server stopped"),
        StoreError::MemberNotFound(_) => member_not_found(),
        StoreError::Removed => removed(),
        StoreError::NotLearner(_) => member_not_learner(),
        StoreError::LearnerNotReady { .. } => {
            tracing::debug!("promotion refused: {e}");
            learner_not_ready()
        }
        StoreError::Invalid(m) if m.contains("peerURL exists") => {
            Status::failed_precondition("etcdserver: Peer URLs already exists")
        }
        StoreError::Invalid(m) => Status::invalid_argument(format!("etcdserver: {m}")),
        e @ (StoreError::Db(_) | StoreError::Corrupt { .. } | StoreError::Io(_)) => {
            tracing::error!("storage failure: {e}");
            Status::internal(format!("etcdserver: {e}"))
        }
    }
}
