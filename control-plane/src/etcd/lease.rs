//! The Lease service. Grants and revokes go through Raft; keep-alives and
//! time-to-live are answered by the leader from its in-memory deadlines.

use std::pin::Pin;

use futures::Stream;
use proto::etcd::lease_server::Lease;
use proto::etcd::{self as pb};
use raft_store::Command;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{errors, observe, Api};

/// etcd's largest TTL (`MaxLeaseTTL`).
const MAX_TTL: i64 = 9_000_000_000;

#[tonic::async_trait]
impl Lease for Api {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        observe("LeaseGrant", async {
            let req = req.into_inner();
            if req.ttl > MAX_TTL {
                return Err(Status::out_of_range("etcdserver: too large lease TTL"));
            }
            if req.id < 0 {
                return Err(Status::invalid_argument(
                    "etcdserver: lease ID must be positive",
                ));
            }
            let (id, ttl) = self
                .store
                .grant_lease(req.id, req.ttl)
                .await
                .map_err(errors::store)?;
            Ok(pb::LeaseGrantResponse {
                header: Some(self.current_header()),
                id,
                ttl,
                error: String::new(),
            })
        })
        .await
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        observe("LeaseRevoke", async {
            let id = req.into_inner().id;
            let resp = self
                .store
                .write(Command::LeaseRevoke { id })
                .await
                .map_err(errors::store)?;
            resp.outcome.map_err(errors::apply)?;
            Ok(pb::LeaseRevokeResponse {
                header: Some(self.header(resp.revision)),
            })
        })
        .await
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (out, rx) = mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let reply = match api.store.lease_keep_alive(msg.id).await {
                    // A lease that does not exist answers TTL 0, as etcd does.
                    Ok(ttl) => Ok(pb::LeaseKeepAliveResponse {
                        header: Some(api.current_header()),
                        id: msg.id,
                        ttl: ttl.unwrap_or(0),
                    }),
                    Err(e) => Err(errors::store(e)),
                };
                metrics::counter!("skiff_grpc_requests_total", "method" => "LeaseKeepAlive",
                    "code" => if reply.is_ok() { "OK" } else { "Unavailable" })
                .increment(1);
                let failed = reply.is_err();
                if out.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        observe("LeaseTimeToLive", async {
            let req = req.into_inner();
            let header = Some(self.current_header());
            match self
                .store
                .lease_time_to_live(req.id)
                .await
                .map_err(errors::store)?
            {
                Some(ttl) => {
                    let keys = if req.keys {
                        self.store.lease_keys(req.id).map_err(errors::store)?
                    } else {
                        Vec::new()
                    };
                    Ok(pb::LeaseTimeToLiveResponse {
                        header,
                        id: req.id,
                        ttl: ttl.remaining,
                        granted_ttl: ttl.granted,
                        keys,
                    })
                }
                // etcd answers TTL -1 for a lease that does not exist.
                None => Ok(pb::LeaseTimeToLiveResponse {
                    header,
                    id: req.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: vec![],
                }),
            }
        })
        .await
    }

    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        observe("LeaseLeases", async {
            let leases = self
                .store
                .lease_ids()
                .into_iter()
                .map(|id| pb::LeaseStatus { id })
                .collect();
            Ok(pb::LeaseLeasesResponse {
                header: Some(self.current_header()),
                leases,
            })
        })
        .await
    }
}
