//! Restarting masters of a three-master group in one process.

mod common;
use common::free_port;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raft_store::mvcc::{Op, PutRequest, TxnRequest};
use raft_store::{Command, Config, Member, Store};

fn config(name: &str, dir: &std::path::Path, port: u16) -> Config {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    // The default heartbeat (100 ms) and election timeout (500-900 ms): a
    // timeout close to the heartbeat lets a loaded machine's scheduling
    // delays depose a leader these tests expect to keep its place.
    Config::new(name, dir.join(name), addr)
}

/// Start a store, retrying while a store shut down in this process still
/// holds the RocksDB lock.
async fn start(cfg: &Config) -> Arc<Store> {
    for _ in 0..50 {
        if let Ok(s) = Store::start(cfg.clone()).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("store {} never started", cfg.name);
}

async fn leader_of(stores: &[Arc<Store>]) -> usize {
    for _ in 0..100 {
        if let Some(i) = stores.iter().position(|s| s.is_leader()) {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader elected");
}

/// Three masters in `dir`, started and initialized as one group.
async fn three(dir: &std::path::Path) -> (Vec<Config>, Vec<Arc<Store>>) {
    let configs: Vec<Config> = ["a", "b", "c"]
        .iter()
        .map(|n| config(n, dir, free_port()))
        .collect();
    let mut stores = Vec::new();
    for cfg in &configs {
        stores.push(start(cfg).await);
    }
    let members: BTreeMap<_, _> = configs
        .iter()
        .map(|c| {
            let m = Member {
                name: c.name.clone(),
                peer_url: c.peer_url.clone(),
            };
            (c.member_id(), m)
        })
        .collect();
    for s in &stores {
        s.initialize(members.clone()).await.expect("init");
    }
    (configs, stores)
}

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
