//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use prost::Message;
use proto::etcd::kv_server::Kv;
use proto::etcd::{self as pb};
use raft_store::mvcc::{Op, OpResult, TxnRequest};
use raft_store::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::{convert, errors, observe, Api, MAX_GRPC_BYTES, MAX_REQUEST_BYTES};

impl Api {
    /// Replicate a transaction; returns (succeeded, results, revision).
    async fn write_txn(&self, txn: TxnRequest) -> Result<(bool, Vec<OpResult>, i64), Status> {
        let resp = self
            .store
            .write(Command::Txn(txn))
            .await
            .map_err(errors::store)?;
        match resp.outcome.map_err(errors::apply)? {
            Outcome::Txn { succeeded, results } => Ok((succeeded, results, resp.revision)),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    async fn single(&self, op: Op) -> Result<(OpResult, i64), Status> {
        let (_, mut results, rev) = self.write_txn(TxnRequest::single(op)).await?;
        let result = results
            .pop()
            .ok_or_else(|| Status::internal("empty txn result"))?;
        Ok((result, rev))
    }
}

fn check_size(len: usize) -> Result<(), Status> {
    if len > MAX_GRPC_BYTES {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {MAX_GRPC_BYTES})"
        )));
    }
    if len > MAX_REQUEST_BYTES {
        return Err(errors::too_large());
    }
    Ok(())
}

#[tonic::async_trait]
impl Kv for Api {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        observe("Range", async {
            let req = req.into_inner();
            let serializable = req.serializable;
            let range = convert::range_request(req)?;
            let (resp, rev) = self
                .store
                .range(&range, serializable)
                .await
                .map_err(errors::store)?;
            Ok(convert::range_response(resp, self.header(rev)))
        })
        .await
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        observe("Put", async {
            let req = req.into_inner();
            check_size(req.encoded_len())?;
            let put = convert::put_request(req)?;
            match self.single(Op::Put(put)).await? {
                (OpResult::Put { prev_kv }, rev) => Ok(pb::PutResponse {
                    header: Some(self.header(rev)),
                    prev_kv: prev_kv.map(convert::kv),
                }),
                _ => Err(Status::internal("unexpected put result")),
            }
        })
        .await
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        observe("DeleteRange", async {
            let del = convert::delete_request(req.into_inner())?;
            match self.single(Op::Delete(del)).await? {
                (OpResult::Delete { deleted, prev_kvs }, rev) => Ok(pb::DeleteRangeResponse {
                    header: Some(self.header(rev)),
                    deleted,
                    prev_kvs: prev_kvs.into_iter().map(convert::kv).collect(),
                }),
                _ => Err(Status::internal("unexpected delete result")),
            }
        })
        .await
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        observe("Txn", async {
            let req = req.into_inner();
            check_size(req.encoded_len())?;
            let txn = convert::txn_request(req)?;
            let (succeeded, results, rev) = if txn.is_read_only() {
                // etcd serves read-only transactions without going through Raft.
                self.store
                    .txn_read(&txn, false)
                    .await
                    .map_err(errors::store)?
            } else {
                self.write_txn(txn).await?
            };
            let header = self.header(rev);
            Ok(pb::TxnResponse {
                responses: convert::op_results(results, &header),
                header: Some(header),
                succeeded,
            })
        })
        .await
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        observe("Compact", async {
            let req = req.into_inner();
            let resp = self
                .store
                .write(Command::Compact {
                    revision: req.revision,
                })
                .await
                .map_err(errors::store)?;
            resp.outcome.map_err(errors::apply)?;
            Ok(pb::CompactionResponse {
                header: Some(self.header(resp.revision)),
            })
        })
        .await
    }
}
