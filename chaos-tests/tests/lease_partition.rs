//! A leader cut off from its peers must not renew leases. The majority
//! elects a new leader, whose lease clocks keep running, so a keep-alive
//! the old leader acknowledged would tell a client its lease lives on while
//! the new leader expires it and deletes its keys (etcd 3.5 confirms
//! leadership before renewing for this reason). Needs root (network
//! namespaces, nftables), as CI has.

use std::time::{Duration, Instant};

use chaos_tests::cluster::{Cluster, Options};
use proto::etcd::kv_client::KvClient;
use proto::etcd::lease_client::LeaseClient;
use proto::etcd::{LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest};

mod common;

const TTL: i64 = 4;

/// One keep-alive on a fresh stream to `channel`: the TTL it answered, or
/// None if it answered with an error or not within `wait`.
async fn keep_alive(channel: tonic::transport::Channel, id: i64, wait: Duration) -> Option<i64> {
    let mut leases = LeaseClient::new(channel);
    let request = tokio_stream::iter([LeaseKeepAliveRequest { id }]);
    let answer = async {
        let mut replies = leases.lease_keep_alive(request).await.ok()?.into_inner();
        replies.message().await.ok()?.map(|r| r.ttl)
    };
    tokio::time::timeout(wait, answer).await.ok().flatten()
}

async fn key_exists(channel: tonic::transport::Channel, key: &str) -> Option<bool> {
    let mut kv = KvClient::new(channel);
    let resp = kv
        .range(RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
        .ok()?;
    Some(resp.into_inner().count > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_does_not_renew_leases() {
    let root = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(Options {
        masters: 3,
        bin: common::control_plane(),
        upgrade_bin: None,
        tmpfs_mb: None,
        election_timeout_ms: 800,
        min_free_mb: 32,
        root: root.path().join("cluster"),
        keep: false,
    })
    .await
    .expect("cluster");
    let old = c
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("leader");
    let old_term = c.status(old).await.expect("status").raft_term;

    let mut leases = LeaseClient::new(c.channel(old));
    let id = leases
        .lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    KvClient::new(c.channel(old))
        .put(PutRequest {
            key: "guarded".into(),
            value: "v".into(),
            lease: id,
            ..Default::default()
        })
        .await
        .expect("put");
    // Renewing works while the leader has its quorum.
    assert_eq!(
        keep_alive(c.channel(old), id, Duration::from_secs(3)).await,
        Some(TTL)
    );

    // Isolate the leader from both peers; clients still reach everyone.
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let mut deny = vec![Vec::new(); 3];
    for &o in &others {
        deny[old].push(o);
        deny[o].push(old);
    }
    c.net.apply(&deny, 0).expect("partition");

    // Keep renewing through the old leader for longer than the TTL. Not one
    // renewal may succeed: it cannot reach a quorum to confirm it leads.
    let until = Instant::now() + Duration::from_secs(2 * TTL as u64);
    let mut tries = 0;
    while Instant::now() < until {
        let ttl = keep_alive(c.channel(old), id, Duration::from_secs(2)).await;
        assert!(
            ttl.is_none_or(|t| t <= 0),
            "the isolated leader renewed the lease (TTL {ttl:?}, try {tries})"
        );
        tries += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(tries >= 3, "only {tries} keep-alives were tried");

    // The majority elected a new leader, which let the lease expire and
    // deleted its key.
    let mut new = None;
    for &o in &others {
        if let Some(s) = c.status(o).await {
            if s.raft_term > old_term && s.header.as_ref().map(|h| h.member_id) == Some(s.leader) {
                new = Some(o);
            }
        }
    }
    let new = new.expect("the majority elected a new leader");
    let deadline = Instant::now() + Duration::from_secs(10);
    while key_exists(c.channel(new), "guarded").await != Some(false) {
        assert!(
            Instant::now() < deadline,
            "the new leader did not expire the lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.net.heal().expect("heal");
    c.shutdown();
}
