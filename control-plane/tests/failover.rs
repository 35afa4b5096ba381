//! Real `control-plane` processes: elections, kill -9, catch-up through a
//! snapshot, and durability of every acknowledged write after killing all.

mod common;

use std::time::{Duration, Instant};

use common::{get, put, Cluster};
use proto::etcd::request_op::Request as Op;
use proto::etcd::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_then_catch_up_through_snapshot() {
    // Snapshot every 50 entries so that the restarted master must be sent one.
    let mut c = Cluster::start(
        3,
        &["--snapshot-count", "50", "--snapshot-catchup-entries", "10"],
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    let mut kv = c.kv(follower).await;
    for i in 0..20 {
        put(&mut kv, &format!("/before/{i}"), "v")
            .await
            .expect("put before kill");
    }

    c.kill(leader);
    let new_leader = c.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader, "a new leader is elected");
    let mut kv = c.kv(new_leader).await;
    // Enough writes, one at a time (one log entry each), to pass several snapshots.
    for i in 0..300 {
        put(&mut kv, &format!("/after/{i}"), &format!("{i}"))
            .await
            .expect("put after kill");
    }

    c.spawn(leader);
    let mut old = c.kv(leader).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if get(&mut old, "/after/299").await.as_deref() == Some(b"299".as_slice()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "restarted master did not catch up:\n{}",
            c.log(leader)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..20 {
        assert!(
            get(&mut old, &format!("/before/{i}")).await.is_some(),
            "/before/{i} survives"
        );
    }
    let metrics = reqwest_text(&c.metrics_url(leader)).await;
    assert!(
        metrics.contains("skiff_store_snapshots_installed_total"),
        "the restarted master caught up through a snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    // Concurrent writers; record every acknowledged key.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut kv = c.kv((leader + w) % 3).await;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..100_000 {
                let key = format!("/acked/{w}/{i}");
                match put(&mut kv, &key, "x").await {
                    Ok(_) => acked.push(key),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        c.kill(i);
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("writer"));
    }
    assert!(
        acked.len() > 100,
        "writers made progress ({} acks)",
        acked.len()
    );
    for i in 0..3 {
        c.spawn(i);
    }
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let mut kv = c.kv(leader).await;
    let resp = kv
        .range(proto::etcd::RangeRequest {
            key: b"/acked/".to_vec(),
            range_end: b"/acked0".to_vec(),
            keys_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let present: std::collections::HashSet<Vec<u8>> =
        resp.kvs.into_iter().map(|kv| kv.key).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !present.contains(k.as_bytes()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        lost.first()
    );
}

async fn reqwest_text(url: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sf", url])
        .output()
        .await
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A master with one runtime worker (what a 1-core machine gets) goes on
/// leading while it applies the deletion of a large prefix: the apply runs
/// off the worker, so heartbeats and elections timers go on meanwhile. It
/// once stalled the leader and its followers past the election timeout
/// (found with `etcdctl check perf --load=xl`, which ends by deleting its
/// 350,000 keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_large_prefix_keeps_the_leader_with_one_worker() {
    // Followers stand for election after 320-400 ms without a heartbeat.
    let c = Cluster::start_with_env(
        3,
        &["--election-timeout-ms", "400"],
        &[("TOKIO_WORKER_THREADS", "1")],
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let term = c.status(leader).await.expect("status").raft_term;
    const TXNS: usize = 3000;
    const PUTS: usize = 100;
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut kv = c.kv(leader).await;
        writers.push(tokio::spawn(async move {
            for t in (w..TXNS).step_by(8) {
                let success = (0..PUTS)
                    .map(|i| RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: format!("/big/{t:05}/{i:03}").into_bytes(),
                            value: vec![b'x'; 100],
                            ..Default::default()
                        })),
                    })
                    .collect();
                kv.txn(TxnRequest {
                    success,
                    ..Default::default()
                })
                .await
                .expect("txn of puts");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let mut kv = c.kv(leader).await;
    let started = std::time::Instant::now();
    let deleted = kv
        .delete_range(DeleteRangeRequest {
            key: b"/big/".to_vec(),
            range_end: b"/big0".to_vec(),
            ..Default::default()
        })
        .await
        .expect("delete the prefix")
        .into_inner()
        .deleted;
    let took = started.elapsed();
    assert_eq!(deleted, (TXNS * PUTS) as i64);
    let status = c.status(leader).await.expect("status after the delete");
    assert_eq!(
        (
            status.raft_term,
            c.wait_leader(Duration::from_secs(5)).await
        ),
        (term, leader),
        "an election while deleting {deleted} keys (took {took:?}):\n{}",
        c.log(leader)
    );
}

/// A write a follower forwarded to a leader that then stops answering
/// (SIGSTOP: its connections stay open) fails as soon as the follower sees
/// another leader, instead of waiting out the forward's 30 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_stopped_leader_is_abandoned_on_failover() {
    let c = Cluster::start(3, &["--election-timeout-ms", "500"]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let mut kv = c.kv(follower).await;
    // The follower's connection to the leader is up.
    put(&mut kv, "warm", "1")
        .await
        .expect("put through the follower");
    c.signal(leader, true);
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), put(&mut kv, "during", "1")).await;
    let took = started.elapsed();
    c.signal(leader, false);
    let outcome = outcome.expect("the forwarded write is still waiting after 20 s");
    assert!(
        took < Duration::from_secs(8),
        "the forwarded write took {took:?} ({outcome:?})"
    );
    // The cluster goes on under a new leader.
    let new = c.wait_leader(Duration::from_secs(20)).await;
    let mut kv = c.kv(new).await;
    put(&mut kv, "after", "1")
        .await
        .expect("put after failover");
}
