//! A leader stopped gracefully hands its leadership over, and writes made
//! meanwhile through the other masters wait for the new leader rather
//! than fail.

mod common;
use common::{leader_of, three};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_store::handoff::Handoff;
use raft_store::mvcc::{KeyRange, Op, PutRequest, RangeRequest, TxnRequest};
use raft_store::{Command, Store};

fn put(key: String) -> Command {
    Command::Txn(TxnRequest::single(Op::Put(PutRequest {
        key: key.into_bytes(),
        value: b"v".to_vec(),
        ..Default::default()
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_over_and_no_write_fails() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_configs, stores) = three(dir.path()).await;
    let leader = leader_of(&stores).await;
    let old_term = stores[leader].term();

    // Writers on both followers, all through the handoff.
    let running = Arc::new(AtomicBool::new(true));
    let ok = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for (i, s) in stores.iter().enumerate().filter(|(i, _)| *i != leader) {
        let (s, running, ok): (Arc<Store>, _, _) = (s.clone(), running.clone(), ok.clone());
        writers.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut n = 0;
            while running.load(Ordering::Acquire) {
                n += 1;
                match s.write(put(format!("w{i}/{n:06}"))).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            failed
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "no write went through before the handoff");

    let started = Instant::now();
    let outcome = stores[leader].hand_off().await;
    let took = started.elapsed();
    let Handoff::Done { to, .. } = outcome else {
        panic!("no handoff: {outcome:?}");
    };
    assert_ne!(to, stores[leader].id());
    println!("leadership handed over in {took:?}");
    // The leader lease (the longest election timeout, 900 ms) and a margin.
    assert!(took < Duration::from_secs(3), "the handoff took {took:?}");
    let new = stores
        .iter()
        .position(|s| s.id() == to)
        .expect("the new leader is one of the three");
    assert!(stores[new].is_leader());
    assert!(stores[new].term() > old_term);

    // Writes go on through the new leader.
    let at = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Release);
    let mut failures = Vec::new();
    for w in writers {
        failures.extend(w.await.expect("writer"));
    }
    assert!(
        failures.is_empty(),
        "{} writes failed during the handoff: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > at,
        "no write after the handoff"
    );

    // Every acknowledged write is there, on the new leader.
    let written = ok.load(Ordering::Relaxed);
    let (resp, _) = stores[new]
        .range(
            &RangeRequest {
                range: KeyRange {
                    key: b"w".to_vec(),
                    range_end: b"x".to_vec(),
                },
                count_only: true,
                ..Default::default()
            },
            false,
        )
        .await
        .expect("range");
    assert_eq!(resp.count as u64, written);

    // The old leader, stopping now, is not missed.
    stores[leader].shutdown().await;
    stores[new]
        .write(put("after".into()))
        .await
        .expect("a write after the old leader stopped");
    for s in &stores {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_has_nothing_to_hand_over() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_configs, stores) = three(dir.path()).await;
    let leader = leader_of(&stores).await;
    let follower = (leader + 1) % 3;
    assert_eq!(stores[follower].hand_off().await, Handoff::NotLeading);
    assert!(stores[leader].is_leader());
    for s in &stores {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_voters_are_gone_stops_without_waiting_long() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_configs, stores) = three(dir.path()).await;
    // A leader settled in its term: its write went through.
    let leader = loop {
        let l = leader_of(&stores).await;
        if stores[l].write(put("settled".into())).await.is_ok() && stores[l].is_leader() {
            break l;
        }
    };
    for (i, s) in stores.iter().enumerate() {
        if i != leader {
            s.shutdown().await;
        }
    }
    let started = Instant::now();
    let outcome = stores[leader].hand_off().await;
    let took = started.elapsed();
    assert!(matches!(outcome, Handoff::Failed(_)), "{outcome:?}");
    // The lease wait and one refused campaign request.
    assert!(took < Duration::from_secs(2), "gave up only after {took:?}");
    stores[leader].shutdown().await;
}
