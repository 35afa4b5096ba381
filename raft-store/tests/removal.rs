//! A removed master learns that it was removed (from the configs it
//! applies, or from a peer's answer), a member a lagging peer does not
//! know yet is not told so, and a learner is promoted only once in sync.
//! Three or four stores in one process, with the default timeouts.

mod common;
use common::{config, free_port, leader_of, start, three};

use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_store::mvcc::{Op, PutRequest, TxnRequest};
use raft_store::{Command, Store, StoreError};

/// Write `key` through `store`, retrying while no leader is known (a
/// leader just elected on a loaded machine may not be serving yet).
async fn write_through(store: &Store, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.write(put(key)).await {
            Ok(_) => return,
            Err(StoreError::NoLeader) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("write {key}: {e:?}"),
        }
    }
}

fn put(key: &str) -> Command {
    Command::Txn(TxnRequest::single(Op::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })))
}

/// Wait for `store` to know it was removed; returns how long that took.
async fn removed_within(store: &Store, within: Duration) -> Duration {
    let started = Instant::now();
    let mut removed = store.removed();
    tokio::time::timeout(within, removed.wait_for(|r| *r))
        .await
        .unwrap_or_else(|_| panic!("{} never learned it was removed", store.config().name))
        .expect("removal watch");
    started.elapsed()
}

/// Shut `store` down and let go of it: its RocksDB lock goes with the
/// last handle, and a restart in this process needs it.
async fn stop(store: Arc<Store>) {
    store.shutdown().await;
    drop(store);
}

/// The members' ids as `store` lists them.
fn member_ids(store: &Store) -> Vec<u64> {
    store.members().iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_voter_removed_learns_it_and_the_others_go_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_configs, stores) = three(dir.path()).await;
    let all: Vec<&Arc<Store>> = stores.iter().collect();
    let leader = leader_of(&all).await;
    write_through(&stores[leader], "/before").await;
    let victim = (leader + 1) % 3;
    let victim_id = stores[victim].id();
    assert!(!stores[victim].is_removed());

    stores[leader]
        .remove_member(victim_id)
        .await
        .expect("member remove");
    let took = removed_within(&stores[victim], Duration::from_secs(10)).await;
    println!("removed() fired {took:?} after the removal was committed");

    // The removed one no longer claims the old membership, refuses to
    // serve, and stays out of elections.
    assert!(!member_ids(&stores[victim]).contains(&victim_id));
    assert_eq!(stores[victim].members().len(), 2);
    assert!(matches!(
        stores[victim].write(put("/from-removed")).await,
        Err(StoreError::Removed)
    ));
    assert!(matches!(
        stores[victim].read_barrier().await,
        Err(StoreError::Removed)
    ));

    // The other two keep a leader, list two members and take writes.
    let rest: Vec<&Arc<Store>> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| &stores[i])
        .collect();
    let term = stores[leader].term();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stores[leader].is_leader() && stores[leader].term() == term,
        "the leader of term {term} was disturbed (now term {})",
        stores[leader].term()
    );
    for s in &rest {
        assert_eq!(member_ids(s).len(), 2, "{:?}", s.members());
        write_through(s, &format!("/after/{}", s.config().name)).await;
    }
    assert!(!stores[victim].is_leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_removed_while_down_learns_it_from_a_peer_on_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let (configs, mut stores) = three(dir.path()).await;
    let all: Vec<&Arc<Store>> = stores.iter().collect();
    let leader = leader_of(&all).await;
    let leading = stores[leader].clone();
    write_through(&leading, "/before").await;
    let victim = (leader + 1) % 3;
    let victim_id = stores[victim].id();
    stop(stores.remove(victim)).await;

    leading
        .remove_member(victim_id)
        .await
        .expect("member remove while it is down");
    write_through(&leading, "/after").await;
    let term = leading.term();

    let restarted = start(&configs[victim]).await;
    assert!(
        !restarted.is_removed(),
        "it cannot know before it hears from a peer"
    );
    let took = removed_within(&restarted, Duration::from_secs(10)).await;
    println!("removed() fired {took:?} after the restart");

    // Its campaigns were answered before they reached Raft: the leader and
    // the term are as they were.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        leading.is_leader() && leading.term() == term,
        "the leader of term {term} was disturbed (now term {})",
        leading.term()
    );
    assert!(!member_ids(&restarted).contains(&victim_id));
    for s in &stores {
        assert_eq!(member_ids(s).len(), 2);
        write_through(s, &format!("/later/{}", s.config().name)).await;
    }

    // It knows at once on its next start, from its data directory.
    stop(restarted).await;
    let again = start(&configs[victim]).await;
    assert!(again.is_removed());
    assert!(matches!(
        again.write(put("/x")).await,
        Err(StoreError::Removed)
    ));
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_removes_itself_learns_it_from_the_config_it_applies() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_configs, stores) = three(dir.path()).await;
    let all: Vec<&Arc<Store>> = stores.iter().collect();
    let leader = leader_of(&all).await;
    let leader_id = stores[leader].id();
    stores[leader]
        .remove_member(leader_id)
        .await
        .expect("member remove of the leader");
    let took = removed_within(&stores[leader], Duration::from_secs(10)).await;
    println!("removed() fired {took:?} after the leader's removal was committed");
    let rest: Vec<&Arc<Store>> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| &stores[i])
        .collect();
    let next = leader_of(&rest).await;
    write_through(rest[next], "/after").await;
    for s in &rest {
        assert!(!s.is_removed());
        assert!(!member_ids(s).contains(&leader_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_promoted_in_sync_and_a_lagging_peer_does_not_call_it_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let (configs, mut stores) = three(dir.path()).await;
    let all: Vec<&Arc<Store>> = stores.iter().collect();
    let leader = leader_of(&all).await;
    let leading = stores[leader].clone();
    for i in 0..50 {
        write_through(&leading, &format!("/k/{i}")).await;
    }
    // The lagging peer: down while the new member is added and promoted.
    let lagging = (leader + 1) % 3;
    let lagging_id = stores[lagging].id();
    stop(stores.remove(lagging)).await;

    let new_cfg = config("d", dir.path(), free_port());
    let new_id = leading
        .add_member(new_cfg.peer_url.clone(), true)
        .await
        .expect("member add --learner");
    assert_eq!(new_id, new_cfg.member_id());

    // etcd's answers: a learner that has matched nothing is not in sync;
    // a voter cannot be promoted; nor can an unknown member.
    match leading.promote_member(new_id).await {
        Err(StoreError::LearnerNotReady {
            matched,
            leader: at,
            ..
        }) => assert!(matched < at, "matched {matched}, leader's {at}"),
        other => panic!("promoting a learner that never ran: {other:?}"),
    }
    assert!(matches!(
        leading.promote_member(lagging_id).await,
        Err(StoreError::NotLearner(id)) if id == lagging_id
    ));
    assert!(matches!(
        leading.promote_member(0x1234).await,
        Err(StoreError::MemberNotFound(0x1234))
    ));

    // Started, it catches up and is promoted.
    let new = start(&new_cfg).await;
    let started = Instant::now();
    loop {
        match leading.promote_member(new_id).await {
            Ok(()) => break,
            Err(StoreError::LearnerNotReady { .. })
                if started.elapsed() < Duration::from_secs(15) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("promoting the caught-up learner: {e}"),
        }
    }
    println!("promoted {:?} after the learner started", started.elapsed());
    assert!(!new.is_removed());
    assert!(new
        .members()
        .iter()
        .any(|m| m.id == new_id && !m.is_learner));

    // The lagging peer comes back fenced off by its "full" disk, so it
    // stays behind: its membership does not have the new member.
    let mut fenced = configs[lagging].clone();
    fenced.min_free_bytes = u64::MAX / 2;
    let behind = start(&fenced).await;
    assert!(behind.space_low());
    assert!(!member_ids(&behind).contains(&new_id));

    // The new member campaigns: its vote request reaches the lagging peer,
    // which must not tell it it was removed.
    new.raft().trigger().elect().await.expect("campaign");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !new.is_removed(),
        "a peer that lags told the new member it was removed"
    );
    assert!(!member_ids(&behind).contains(&new_id));

    // And the group of four (three of them up) goes on.
    stores.push(new);
    let up: Vec<&Arc<Store>> = stores.iter().collect();
    let now = leader_of(&up).await;
    write_through(up[now], "/after").await;
    assert!(up.iter().all(|s| !s.is_removed()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_learner_learns_it_by_asking_its_peers() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_configs, stores) = three(dir.path()).await;
    let all: Vec<&Arc<Store>> = stores.iter().collect();
    let leader = leader_of(&all).await;
    write_through(&stores[leader], "/before").await;
    let cfg = config("d", dir.path(), free_port());
    let learner = start(&cfg).await;
    let id = stores[leader]
        .add_member(cfg.peer_url.clone(), true)
        .await
        .expect("member add --learner");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !member_ids(&learner).contains(&id) {
        assert!(Instant::now() < deadline, "the learner never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A learner in good standing hears from the leader and asks nobody.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!learner.is_removed());

    // A learner never campaigns: it finds out by asking once the leader
    // has gone quiet.
    stores[leader]
        .remove_member(id)
        .await
        .expect("member remove");
    let took = removed_within(&learner, Duration::from_secs(15)).await;
    println!("the removed learner knew {took:?} after its removal was committed");
    assert!(!member_ids(&learner).contains(&id));
    assert!(stores.iter().all(|s| !s.is_removed()));
    write_through(&stores[leader], "/after").await;
}
