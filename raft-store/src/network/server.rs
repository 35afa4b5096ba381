//! The receiving side of master-to-master RPCs.

use std::sync::Arc;

use proto::raft::raft_peer_server::RaftPeer;
use proto::raft::Payload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::forward::{ForwardError, Forwarded, Reply};
use crate::error::StoreError;
use crate::mvcc::codec;
use crate::node::Store;

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
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.ensure_space()?;
        let rpc = decode(req)?;
        reply(&self.store.raft().append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.ensure_space()?;
        let rpc = decode(req)?;
        reply(&self.store.raft().vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.ensure_space()?;
        let rpc = decode(req)?;
        reply(&self.store.raft().install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let fwd: Forwarded = decode(req)?;
        let result = self.store.serve_forwarded(fwd).await.map_err(|e| match e {
            StoreError::NoLeader => ForwardError::NotLeader,
            StoreError::MemberNotFound(id) => ForwardError::MemberNotFound(id),
            StoreError::Invalid(m) => ForwardError::Invalid(m),
            // A leader that is out of disk is on its way out: retry elsewhere.
            StoreError::NoSpace => ForwardError::NotLeader,
            other => ForwardError::Other(other.to_string()),
        });
        reply::<Result<Reply, ForwardError>>(&result)
    }
}
