//! Conversions between etcd's wire types and the store's own types.

use proto::etcd::compare::{CompareResult, CompareTarget as PbTarget, TargetUnion};
use proto::etcd::range_request::{SortOrder as PbOrder, SortTarget as PbSort};
use proto::etcd::{self as pb, mvccpb};
use raft_store::mvcc::{
    Compare, CompareOp, CompareTarget, DeleteRequest, Event, EventKind, KeyRange, KeyValue, Op,
    OpResult, PutRequest, RangeRequest, RangeResponse, SortOrder, SortTarget, TxnRequest,
};
use tonic::Status;

use super::errors;

pub fn kv(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event(e: Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv(e.kv)),
        prev_kv: e.prev_kv.map(kv),
    }
}

fn require_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(errors::empty_key());
    }
    Ok(())
}

pub fn range_request(r: pb::RangeRequest) -> Result<RangeRequest, Status> {
    require_key(&r.key)?;
    Ok(RangeRequest {
        range: KeyRange {
            key: r.key,
            range_end: r.range_end,
        },
        limit: r.limit,
        revision: r.revision,
        sort_order: match PbOrder::try_from(r.sort_order).unwrap_or(PbOrder::None) {
            PbOrder::None => SortOrder::None,
            PbOrder::Ascend => SortOrder::Ascend,
            PbOrder::Descend => SortOrder::Descend,
        },
        sort_target: match PbSort::try_from(r.sort_target).unwrap_or(PbSort::Key) {
            PbSort::Key => SortTarget::Key,
            PbSort::Version => SortTarget::Version,
            PbSort::Create => SortTarget::Create,
            PbSort::Mod => SortTarget::Mod,
            PbSort::Value => SortTarget::Value,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn range_response(r: RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_request(p: pb::PutRequest) -> Result<PutRequest, Status> {
    require_key(&p.key)?;
    if p.ignore_value && !p.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    Ok(PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    })
}

pub fn delete_request(d: pb::DeleteRangeRequest) -> Result<DeleteRequest, Status> {
    require_key(&d.key)?;
    Ok(DeleteRequest {
        range: KeyRange {
            key: d.key,
            range_end: d.range_end,
        },
        prev_kv: d.prev_kv,
    })
}

/// etcd's `--max-txn-ops` default.
pub const MAX_TXN_OPS: usize = 128;

pub fn txn_request(t: pb::TxnRequest) -> Result<TxnRequest, Status> {
    if t.compare.len() > MAX_TXN_OPS
        || t.success.len() > MAX_TXN_OPS
        || t.failure.len() > MAX_TXN_OPS
    {
        return Err(Status::invalid_argument(
            "etcdserver: too many operations in txn request",
        ));
    }
    Ok(TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(op).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(op).collect::<Result<_, _>>()?,
    })
}

fn compare(c: pb::Compare) -> Result<Compare, Status> {
    require_key(&c.key)?;
    let op = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => CompareOp::Equal,
        Ok(CompareResult::Greater) => CompareOp::Greater,
        Ok(CompareResult::Less) => CompareOp::Less,
        Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare result",
            ))
        }
    };
    // The target enum says which member of the union is meant; an absent
    // union member is its zero value.
    let union = c.target_union;
    let target = match PbTarget::try_from(c.target) {
        Ok(PbTarget::Version) => CompareTarget::Version(match union {
            Some(TargetUnion::Version(v)) => v,
            _ => 0,
        }),
        Ok(PbTarget::Create) => CompareTarget::Create(match union {
            Some(TargetUnion::CreateRevision(v)) => v,
            _ => 0,
        }),
        Ok(PbTarget::Mod) => CompareTarget::Mod(match union {
            Some(TargetUnion::ModRevision(v)) => v,
            _ => 0,
        }),
        Ok(PbTarget::Value) => CompareTarget::Value(match union {
            Some(TargetUnion::Value(v)) => v,
            _ => Vec::new(),
        }),
        Ok(PbTarget::Lease) => CompareTarget::Lease(match union {
            Some(TargetUnion::Lease(v)) => v,
            _ => 0,
        }),
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare target",
            ))
        }
    };
    Ok(Compare {
        range: KeyRange {
            key: c.key,
            range_end: c.range_end,
        },
        op,
        target,
    })
}

fn op(o: pb::RequestOp) -> Result<Op, Status> {
    use pb::request_op::Request;
    match o.request {
        Some(Request::RequestRange(r)) => Ok(Op::Range(range_request(r)?)),
        Some(Request::RequestPut(p)) => Ok(Op::Put(put_request(p)?)),
        Some(Request::RequestDeleteRange(d)) => Ok(Op::Delete(delete_request(d)?)),
        Some(Request::RequestTxn(t)) => Ok(Op::Txn(txn_request(t)?)),
        None => Err(Status::invalid_argument("etcdserver: request op is empty")),
    }
}

pub fn op_results(results: Vec<OpResult>, header: &pb::ResponseHeader) -> Vec<pb::ResponseOp> {
    results.into_iter().map(|r| op_result(r, header)).collect()
}

fn op_result(r: OpResult, header: &pb::ResponseHeader) -> pb::ResponseOp {
    use pb::response_op::Response;
    let h = Some(*header);
    let response = match r {
        OpResult::Range(r) => Response::ResponseRange(range_response(r, *header)),
        OpResult::Put { prev_kv } => Response::ResponsePut(pb::PutResponse {
            header: h,
            prev_kv: prev_kv.map(kv),
        }),
        OpResult::Delete { deleted, prev_kvs } => {
            Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                header: h,
                deleted,
                prev_kvs: prev_kvs.into_iter().map(kv).collect(),
            })
        }
        OpResult::Txn { succeeded, results } => Response::ResponseTxn(pb::TxnResponse {
            header: h,
            succeeded,
            responses: op_results(results, header),
        }),
    };
    pb::ResponseOp {
        response: Some(response),
    }
}
