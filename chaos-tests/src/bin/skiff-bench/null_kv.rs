//! `skiff-bench null-kv --listen a:2379,b:2379,c:2379`: an etcd KV endpoint
//! that stores nothing and answers at once. A Put only bumps a revision, a
//! Range finds nothing, a DeleteRange deletes nothing.
//!
//! It is the calibration for `deploy/bench-etcd`: `etcdctl check perf`
//! against it measures the most writes per second the client itself can
//! issue on this machine, the ceiling any store's figure sits under.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use proto::etcd::kv_server::{Kv, KvServer};
use proto::etcd::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct NullKv {
    revision: Arc<AtomicI64>,
    /// How long a Put takes to answer, as if it were committed somewhere.
    put_delay: Duration,
}

impl NullKv {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 1,
            member_id: 1,
            revision,
            raft_term: 1,
        })
    }

    fn current(&self) -> Option<ResponseHeader> {
        self.header(self.revision.load(Ordering::Relaxed))
    }
}

#[tonic::async_trait]
impl Kv for NullKv {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(RangeResponse {
            header: self.current(),
            ..Default::default()
        }))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        if !self.put_delay.is_zero() {
            tokio::time::sleep(self.put_delay).await;
        }
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Response::new(PutResponse {
            header: self.header(revision),
            prev_kv: None,
        }))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(DeleteRangeResponse {
            header: self.current(),
            ..Default::default()
        }))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented(
            "null-kv serves Range, Put and DeleteRange only",
        ))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented(
            "null-kv serves Range, Put and DeleteRange only",
        ))
    }
}

/// Serve the null KV service on every address until interrupted.
pub async fn run(listen: &[String], put_delay: Duration) -> anyhow::Result<()> {
    let kv = NullKv {
        put_delay,
        ..NullKv::default()
    };
    let mut servers = tokio::task::JoinSet::new();
    for addr in listen {
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("bad address {addr:?}"))?;
        let service = KvServer::new(kv.clone());
        servers.spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service)
                .serve(addr)
                .await
                .with_context(|| format!("serving on {addr}"))
        });
    }
    eprintln!("null-kv: serving on {}", listen.join(","));
    tokio::select! {
        done = servers.join_next() => match done {
            Some(result) => result?,
            None => Ok(()),
        },
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
