//! etcd v3 calls the workloads make, and how their errors are classified:
//! an error is a definite failure only when the request cannot have been
//! applied (it was refused before being proposed, or never sent); anything
//! else (a timeout, a lost leader, a dropped connection) leaves the outcome
//! unknown.

use std::time::Duration;

use proto::etcd::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcd::kv_client::KvClient;
use proto::etcd::request_op::Request as TxnOp;
use proto::etcd::{prefix_end, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::transport::Channel;
use tonic::{Code, Status as GrpcStatus};

use crate::history::Status;

/// Every request gets this long before its outcome is unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

pub fn classify(e: &GrpcStatus) -> Status {
    match e.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::ResourceExhausted => Status::Fail,
        // The connection was never made: nothing was sent.
        Code::Unavailable
            if e.message().contains("error trying to connect")
                || e.message().contains("tcp connect error")
                || e.message().contains("Connection refused") =>
        {
            Status::Fail
        }
        _ => Status::Info,
    }
}

pub fn describe(e: &GrpcStatus) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

fn parse(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A linearizable read of one key holding a number; returns the value and
/// the store revision of the read.
pub async fn get(ch: &Channel, key: &str) -> Result<(Option<u64>, i64), GrpcStatus> {
    let resp = KvClient::new(ch.clone())
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let rev = resp.header.map(|h| h.revision).unwrap_or(0);
    match resp.kvs.first() {
        None => Ok((None, rev)),
        Some(kv) => parse(&kv.value)
            .map(|v| (Some(v), rev))
            .ok_or_else(|| GrpcStatus::data_loss(format!("{key} holds a non-number"))),
    }
}

/// Every key under `prefix` with its value and mod revision (a linearizable read).
pub async fn scan(ch: &Channel, prefix: &str) -> Result<Vec<(String, u64, i64)>, GrpcStatus> {
    let resp = KvClient::new(ch.clone())
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    for kv in resp.kvs {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        let v = parse(&kv.value)
            .ok_or_else(|| GrpcStatus::data_loss(format!("{key} holds a non-number")))?;
        out.push((key, v, kv.mod_revision));
    }
    Ok(out)
}

/// Put; returns the revision it committed at.
pub async fn put(ch: &Channel, key: &str, value: u64) -> Result<i64, GrpcStatus> {
    let resp = KvClient::new(ch.clone())
        .put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_string().into_bytes(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp.header.map(|h| h.revision).unwrap_or(0))
}

/// If `key` holds `from` (None: does not exist), set it to `to`. Returns
/// whether it swapped.
pub async fn cas(ch: &Channel, key: &str, from: Option<u64>, to: u64) -> Result<bool, GrpcStatus> {
    let compare = match from {
        Some(v) => Compare {
            key: key.as_bytes().to_vec(),
            target: CompareTarget::Value as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::Value(v.to_string().into_bytes())),
            ..Default::default()
        },
        None => Compare {
            key: key.as_bytes().to_vec(),
            target: CompareTarget::Version as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::Version(0)),
            ..Default::default()
        },
    };
    let resp = KvClient::new(ch.clone())
        .txn(TxnRequest {
            compare: vec![compare],
            success: vec![put_op(key, to)],
            failure: vec![],
        })
        .await?
        .into_inner();
    Ok(resp.succeeded)
}

fn put_op(key: &str, value: u64) -> RequestOp {
    RequestOp {
        request: Some(TxnOp::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_string().into_bytes(),
            ..Default::default()
        })),
    }
}

/// One Txn putting `value` under each key; returns its revision.
pub async fn multi_put(ch: &Channel, keys: &[String], value: u64) -> Result<i64, GrpcStatus> {
    let resp = KvClient::new(ch.clone())
        .txn(TxnRequest {
            compare: vec![],
            success: keys.iter().map(|k| put_op(k, value)).collect(),
            failure: vec![],
        })
        .await?
        .into_inner();
    Ok(resp.header.map(|h| h.revision).unwrap_or(0))
}
