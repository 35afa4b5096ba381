//! Restarting masters of a three-master group in one process.

mod common;
use common::{leader_of, start, three};

use std::time::Duration;

use raft_store::mvcc::{Op, PutRequest, TxnRequest};
use raft_store::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_wins_an_election_before_it_leads_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let (configs, stores) = three(dir.path()).await;
    let leader = leader_of(&stores).await;
    stores[leader]
        .write(Command::Txn(TxnRequest::single(Op::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))))
        .await
        .expect("put");
    let term = stores[leader].term();
    for s in &stores {
        s.shutdown().await;
    }
    drop(stores);

    // Alone, the former leader cannot win an election, so it must not lead:
    // its log may lack entries that only the other two hold.
    let alone = start(&configs[leader]).await;
    // Two of its longest election timeouts.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(
        !alone.is_leader(),
        "the former leader of term {term} resumed leadership without an election"
    );
    assert!(alone.term() >= term);

    // With the others back it is an ordinary member again.
    let mut stores = vec![alone];
    for (i, cfg) in configs.iter().enumerate() {
        if i != leader {
            stores.push(start(cfg).await);
        }
    }
    let now = leader_of(&stores).await;
    assert!(stores[now].term() > term, "a new election was held");
    for s in &stores {
        s.shutdown().await;
    }
}

/// A follower fenced off by a full disk stops hearing the leader, so its
/// election timer runs out while it is fenced. Back with space it may
/// campaign at once, but it must not depose the leader the other follower
/// still follows: the leader keeps its term and its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_back_from_a_full_disk_leaves_the_leader_alone() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_, stores) = three(dir.path()).await;
    let leader = leader_of(&stores).await;
    let term = stores[leader].term();
    let follower = (leader + 1) % stores.len();
    stores[follower].set_space_low(true);
    // Several election timeouts (500-900 ms) pass without a word from the leader.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(stores[leader].is_leader() && stores[leader].term() == term);
    stores[follower].set_space_low(false);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        stores[leader].is_leader(),
        "the leader of term {term} was deposed (now term {})",
        stores[leader].term()
    );
    assert_eq!(stores[leader].term(), term);
    assert_eq!(stores[follower].current_leader(), Some(stores[leader].id()));
    for s in &stores {
        s.shutdown().await;
    }
}
