//! Bad requests get etcd's gRPC errors, change nothing, and the server keeps
//! serving. Also checks the /metrics exposition.

mod common;

use common::{put, Cluster};
use proto::etcd::lease_client::LeaseClient;
use proto::etcd::request_op::Request as Op;
use proto::etcd::{
    CompactionRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use tonic::Code;

async fn revision(c: &Cluster) -> i64 {
    let mut kv = c.kv(0).await;
    let r = kv
        .range(RangeRequest {
            key: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range");
    r.into_inner().header.expect("header").revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let c = Cluster::start(3, &[]).await;
    let mut kv = c.kv(1).await;
    put(&mut kv, "/k", "v").await.expect("put");
    put(&mut kv, "/k", "v2").await.expect("put");
    let before = revision(&c).await;

    // Empty key.
    let e = kv.put(PutRequest::default()).await.expect_err("empty key");
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "etcdserver: key is not provided")
    );
    let e = kv
        .range(RangeRequest::default())
        .await
        .expect_err("empty key");
    assert_eq!(e.code(), Code::InvalidArgument);

    // Over --max-request-bytes (1.5 MiB): etcd's "request is too large".
    let big = PutRequest {
        key: b"/big".to_vec(),
        value: vec![b'x'; 1_600_000],
        ..Default::default()
    };
    let e = kv.put(big).await.expect_err("too large");
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "etcdserver: request is too large")
    );
    // Over the gRPC limit: refused by the transport.
    let huge = PutRequest {
        key: b"/huge".to_vec(),
        value: vec![b'x'; 3_000_000],
        ..Default::default()
    };
    let e = kv.put(huge).await.expect_err("over grpc limit");
    assert_eq!(e.code(), Code::ResourceExhausted);

    // Range with end < start: empty, as etcd answers.
    let r = kv
        .range(RangeRequest {
            key: b"/z".to_vec(),
            range_end: b"/a".to_vec(),
            ..Default::default()
        })
        .await
        .expect("inverted range")
        .into_inner();
    assert!(r.kvs.is_empty() && r.count == 0);
    let d = kv
        .delete_range(proto::etcd::DeleteRangeRequest {
            key: b"/z".to_vec(),
            range_end: b"/a".to_vec(),
            prev_kv: false,
        })
        .await
        .expect("inverted delete")
        .into_inner();
    assert_eq!(d.deleted, 0);

    // Unknown lease.
    let e = kv
        .put(PutRequest {
            key: b"/l".to_vec(),
            value: b"v".to_vec(),
            lease: 12345,
            ..Default::default()
        })
        .await
        .expect_err("unknown lease");
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
    let mut leases = LeaseClient::new(c.channel(2));
    let e = leases
        .lease_revoke(LeaseRevokeRequest { id: 12345 })
        .await
        .expect_err("unknown lease");
    assert_eq!(e.code(), Code::NotFound);
    let mut ka = leases
        .lease_keep_alive(tokio_stream::iter(vec![LeaseKeepAliveRequest {
            id: 12345,
        }]))
        .await
        .expect("keep-alive stream")
        .into_inner();
    let first = ka
        .message()
        .await
        .expect("keep-alive reply")
        .expect("one reply");
    assert_eq!(
        first.ttl, 0,
        "an unknown lease keeps alive with TTL 0, as in etcd"
    );

    // Compaction, then a transaction that reads a compacted revision: refused
    // as a whole, so its put is not applied either.
    kv.compact(CompactionRequest {
        revision: before,
        physical: false,
    })
    .await
    .expect("compact");
    let e = kv
        .compact(CompactionRequest {
            revision: before - 1,
            physical: false,
        })
        .await
        .expect_err("old compact");
    assert_eq!(e.code(), Code::OutOfRange);
    let e = kv
        .compact(CompactionRequest {
            revision: before + 100,
            physical: false,
        })
        .await
        .expect_err("future");
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: b"/t".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: b"/k".to_vec(),
                    revision: 1,
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    let e = kv.txn(txn).await.expect_err("compacted read in txn");
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );
    // Duplicate keys in one txn branch.
    let dup = |k: &str| RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    };
    let e = kv
        .txn(TxnRequest {
            compare: vec![],
            success: vec![dup("/d"), dup("/d")],
            failure: vec![],
        })
        .await
        .expect_err("dup");
    assert_eq!(
        e.message(),
        "etcdserver: duplicate key given in txn request"
    );

    // Malformed gRPC: a frame whose bytes are not a protobuf message.
    let body = c.dir.path().join("garbage.bin");
    std::fs::write(&body, [0u8, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff]).expect("write body");
    let body_arg = format!("@{}", body.display());
    let pki = c.pki();
    let garbage = std::process::Command::new("curl")
        .arg("--cacert")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("etcd-client.crt"))
        .arg("--key")
        .arg(pki.join("etcd-client.key"))
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--http2",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--data-binary",
            &body_arg,
            &format!("{}/etcdserverpb.KV/Put", c.endpoint(0)),
        ])
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&garbage.stdout).to_lowercase();
    assert!(
        headers.contains("grpc-status: 13") || headers.contains("grpc-status: 3"),
        "{headers}"
    );

    // Nothing above was written, and the servers still serve.
    assert_eq!(revision(&c).await, before);
    for key in ["/big", "/huge", "/l", "/t", "/d"] {
        assert!(
            common::get(&mut kv, key).await.is_none(),
            "{key} must not exist"
        );
    }
    put(&mut kv, "/still", "serving")
        .await
        .expect("server keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(std::time::Duration::from_secs(10)).await;
    let mut kv = c.kv(leader).await;
    for i in 0..10 {
        put(&mut kv, &format!("/m/{i}"), "v").await.expect("put");
    }
    let out = std::process::Command::new("curl")
        .args(["-sf", &c.metrics_url(leader)])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "skiff_raft_term",
        "skiff_raft_leader_id",
        "skiff_raft_is_leader 1",
        "skiff_raft_commit_index",
        "skiff_raft_applied_index",
        "skiff_store_wal_fsync_seconds_bucket",
        "skiff_store_log_append_seconds_bucket",
        "skiff_store_apply_seconds_bucket",
        "skiff_store_db_size_bytes",
        "skiff_grpc_requests_total{method=\"Put\",code=\"OK\"} 10",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
}
