//! The sending side of master-to-master RPCs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use proto::raft::raft_peer_client::RaftPeerClient;
use proto::raft::Payload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::forward::{ForwardError, Forwarded, Reply};
use super::tls::{self, Connector, TlsError};
use crate::error::StoreError;
use crate::mvcc::codec;
use crate::removal::{is_removed_status, Removal, REMOVED_MESSAGE};
use crate::types::{Member, NodeId, TypeConfig};

/// Connections to the other masters, one lazily-connected channel each,
/// over mutual TLS when the peer URLs are `https://`.
#[derive(Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<Connector>,
    /// Marked when a peer answers a Raft message saying this member was removed.
    removal: Arc<Removal>,
}

impl Peers {
    pub fn new(tls: Option<Connector>, removal: Arc<Removal>) -> Self {
        Peers {
            channels: Default::default(),
            tls,
            removal,
        }
    }

    pub fn client(&self, url: &str) -> Result<RaftPeerClient<Channel>, TlsError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(url) {
            return Ok(RaftPeerClient::new(ch.clone()).max_decoding_message_size(usize::MAX));
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| TlsError::Url(url.into(), e.to_string()))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5));
        let ch = tls::channel(endpoint, self.tls.as_ref())?;
        channels.insert(url.to_string(), ch.clone());
        Ok(RaftPeerClient::new(ch).max_decoding_message_size(usize::MAX))
    }

    /// Hand a request to the leader at `url`.
    pub async fn forward(
        &self,
        leader: NodeId,
        url: &str,
        req: &Forwarded,
    ) -> Result<Reply, StoreError> {
        // A leader that is stopped (not dead) keeps its connections open and
        // never answers: give up, so the caller can find the next leader.
        let timeout = match req {
            Forwarded::ReadIndex | Forwarded::LeaseKeepAlive(_) | Forwarded::LeaseTimeToLive(_) => {
                Duration::from_secs(1)
            }
            _ => Duration::from_secs(5),
        };
        self.forward_with_timeout(leader, url, req, timeout).await
    }

    /// [`Peers::forward`], giving up after `timeout`.
    pub async fn forward_with_timeout(
        &self,
        leader: NodeId,
        url: &str,
        req: &Forwarded,
        timeout: Duration,
    ) -> Result<Reply, StoreError> {
        let fail = |detail: String| StoreError::Forward { leader, detail };
        let mut client = self.client(url).map_err(|e| fail(e.to_string()))?;
        let mut request = tonic::Request::new(Payload {
            data: codec::encode(req),
        });
        request.set_timeout(timeout);
        let resp = client.forward(request).await.map_err(|s| {
            // Only the answer to `Forwarded::AmIRemoved` can say so.
            if is_removed_status(&s) {
                self.removal.mark(&format!(
                    "peer {leader:x} at {url} answered: {REMOVED_MESSAGE}"
                ));
            }
            if never_delivered(&s) {
                // Nothing reached the leader: as if it had refused.
                tracing::debug!("leader {leader:x} at {url} unreachable: {}", s.message());
                return StoreError::NoLeader;
            }
            fail(s.message().to_string())
        })?;
        let reply: Result<Reply, ForwardError> =
            codec::decode(&resp.into_inner().data).map_err(|e| fail(e.to_string()))?;
        match reply {
            Ok(r) => Ok(r),
            Err(ForwardError::NotLeader) => Err(StoreError::NoLeader),
            Err(ForwardError::MemberNotFound(id)) => Err(StoreError::MemberNotFound(id)),
            Err(ForwardError::Invalid(m)) => Err(StoreError::Invalid(m)),
            Err(ForwardError::NotLearner(id)) => Err(StoreError::NotLearner(id)),
            Err(ForwardError::LearnerNotReady(id, matched, leader)) => {
                Err(StoreError::LearnerNotReady {
                    id,
                    matched,
                    leader,
                })
            }
            Err(ForwardError::Other(m)) => Err(fail(m)),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        PeerConnection {
            target,
            url: node.peer_url.clone(),
            peers: self.clone(),
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    url: String,
    peers: Peers,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self
            .peers
            .client(&self.url)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(Payload {
            data: codec::encode(req),
        });
        request.set_timeout(option.hard_ttl());
        let result = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        let payload = result.map_err(|status| {
            if is_removed_status(&status) {
                self.peers.removal.mark(&format!(
                    "peer {:x} at {} answered: {REMOVED_MESSAGE}",
                    self.target, self.url
                ));
            }
            match status.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
                _ => RPCError::Network(NetworkError::new(&status)),
            }
        })?;
        let decoded: Result<Resp, RaftError<NodeId, E>> = codec::decode(&payload.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(Method::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// Whether a call failed before anything was sent: the connection to the
/// peer could not be made.
fn never_delivered(status: &tonic::Status) -> bool {
    let m = status.message();
    status.code() == tonic::Code::Unavailable
        && (m.contains("error trying to connect")
            || m.contains("tcp connect error")
            || m.contains("Connection refused"))
}
