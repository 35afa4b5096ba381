//! The receiving side of master-to-master RPCs.

use std::sync::Arc;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use openraft::Vote;
use proto::raft::raft_peer_server::RaftPeer;
use proto::raft::Payload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::forward::{ForwardError, Forwarded, Reply};
use crate::error::StoreError;
use crate::mvcc::codec;
use crate::node::Store;
use crate::removal::{peer_knows_removed, removed_status, SenderLog};
use crate::types::{NodeId, TypeConfig};

pub struct PeerService {
    store: Arc<Store>,
}

impl PeerService {
    pub fn new(store: Arc<Store>) -> Self {
        PeerService { store }
    }
}

fn decode<T: DeserializeOwned>(req: Request<Payload>) -> Result<T, Status> {
    codec::decode(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

fn reply<T: Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    Ok(Response::new(Payload {
        data: codec::encode(v),
    }))
}

impl PeerService {
    /// A master whose disk is nearly full acts as if cut off from its peers.
    fn ensure_space(&self) -> Result<(), Status> {
        if self.store.space_low() {
            Err(Status::unavailable("no space left on the data disk"))
        } else {
            Ok(())
        }
    }

    /// Answer a Raft message from a member that was removed, and cannot
    /// know it yet, with etcd's "permanently removed" (see
    /// [`peer_knows_removed`] for why a member this master does not know
    /// yet is not told so). Checked before the disk: a master fenced off
    /// by a full disk still knows its membership.
    fn refuse_removed(&self, vote: &Vote<NodeId>, log: SenderLog) -> Result<(), Status> {
        match vote.leader_id().voted_for() {
            Some(sender) => self.refuse_removed_id(sender, log),
            None => Ok(()),
        }
    }

    /// Start an election at a stopping leader's request (`crate::handoff`).
    async fn campaign(&self) -> Result<Reply, ForwardError> {
        if self.store.is_removed() || self.store.space_low() {
            return Err(ForwardError::Other("this master cannot lead".into()));
        }
        let m = self.store.raft().metrics().borrow().clone();
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.store.id())
        {
            return Err(ForwardError::Other("this master is not a voter".into()));
        }
        tracing::info!(
            leader = ?m.current_leader,
            "the leader is stopping and asked this master to take over: campaigning"
        );
        self.store
            .raft()
            .trigger()
            .elect()
            .await
            .map_err(|e| ForwardError::Other(e.to_string()))?;
        Ok(Reply::Done)
    }

    fn refuse_removed_id(&self, sender: NodeId, log: SenderLog) -> Result<(), Status> {
        let applied = self.store.shared().membership.borrow();
        if peer_knows_removed(&applied, sender, log) {
            tracing::warn!(
                sender = format_args!("{sender:x}"),
                config = %applied.log_id().map(|l| l.to_string()).unwrap_or_default(),
                "a removed member sent a Raft message: telling it it was removed"
            );
            return Err(removed_status());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        let term = rpc.vote.leader_id().get_term();
        self.refuse_removed(&rpc.vote, SenderLog::LeaderOfTerm(term))?;
        self.ensure_space()?;
        let result = self.store.raft().append_entries(rpc).await;
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.store.heard_from_leader();
        }
        reply(&result)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(req)?;
        self.refuse_removed(&rpc.vote, SenderLog::Last(rpc.last_log_id))?;
        self.ensure_space()?;
        reply(&self.store.raft().vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        let term = rpc.vote.leader_id().get_term();
        self.refuse_removed(&rpc.vote, SenderLog::LeaderOfTerm(term))?;
        self.ensure_space()?;
        let result = self.store.raft().install_snapshot(rpc).await;
        if result.is_ok() {
            self.store.heard_from_leader();
        }
        reply(&result)
    }

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let fwd: Forwarded = decode(req)?;
        // Any peer answers this one, from its own applied membership.
        if let Forwarded::AmIRemoved { id, last_log_id } = fwd {
            self.refuse_removed_id(id, SenderLog::Last(last_log_id))?;
            return reply::<Result<Reply, ForwardError>>(&Ok(Reply::Done));
        }
        if let Forwarded::Campaign = fwd {
            let result = self.campaign().await;
            return reply::<Result<Reply, ForwardError>>(&result);
        }
        let result = self.store.serve_forwarded(fwd).await.map_err(|e| match e {
            StoreError::NoLeader => ForwardError::NotLeader,
            StoreError::MemberNotFound(id) => ForwardError::MemberNotFound(id),
            StoreError::Invalid(m) => ForwardError::Invalid(m),
            StoreError::NotLearner(id) => ForwardError::NotLearner(id),
            StoreError::LearnerNotReady {
                id,
                matched,
                leader,
            } => ForwardError::LearnerNotReady(id, matched, leader),
            // A leader that is out of disk is on its way out: retry elsewhere.
            StoreError::NoSpace => ForwardError::NotLeader,
            other => ForwardError::Other(other.to_string()),
        });
        reply::<Result<Reply, ForwardError>>(&result)
    }
}
