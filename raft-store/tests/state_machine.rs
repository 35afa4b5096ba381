//! The state machine through a single-master store (real Raft, real RocksDB):
//! revisions, transactions, compaction, lease expiry, watches.

mod common;
use common::free_port;

use std::collections::BTreeMap;
use std::time::Duration;

use raft_store::mvcc::{
    Compare, CompareOp, CompareTarget, DeleteRequest, KeyRange, Op, OpResult, PutRequest,
    RangeRequest, TxnRequest,
};
use raft_store::mvcc::{Event, EventKind, KeyValue};
use raft_store::watch::{RevisionBatch, WatchItem, WatchSpec};
use raft_store::{ApplyError, Command, Config, Member, Outcome, Store, StoreError};

fn config(dir: &std::path::Path, port: u16) -> Config {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut cfg = Config::new("solo", dir.to_path_buf(), addr);
    cfg.election_timeout = (Duration::from_millis(150), Duration::from_millis(300));
    cfg
}

async fn single(dir: &std::path::Path, port: u16) -> std::sync::Arc<Store> {
    single_with(config(dir, port)).await
}

/// Start a one-master cluster and wait until it leads.
async fn single_with(cfg: Config) -> std::sync::Arc<Store> {
    // A store shut down in this process releases RocksDB once its tasks end.
    let mut attempt = 0;
    let store = loop {
        match Store::start(cfg.clone()).await {
            Ok(s) => break s,
            Err(_) if attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("start: {e}"),
        }
    };
    let members = BTreeMap::from([(
        store.id(),
        Member {
            name: "solo".into(),
            peer_url: store.config().peer_url.clone(),
        },
    )]);
    store.initialize(members).await.expect("init");
    for _ in 0..100 {
        if store.is_leader() {
            return store;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("single master never became leader");
}

async fn put(s: &Store, k: &str, v: &str) -> i64 {
    let op = Op::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    });
    s.write(Command::Txn(TxnRequest::single(op)))
        .await
        .expect("put")
        .revision
}

async fn txn(s: &Store, t: TxnRequest) -> Result<(bool, Vec<OpResult>), ApplyError> {
    match s.write(Command::Txn(t)).await.expect("write").outcome? {
        Outcome::Txn { succeeded, results } => Ok((succeeded, results)),
        other => panic!("unexpected {other:?}"),
    }
}

fn get(s: &Store, k: &str, rev: i64) -> Result<Option<raft_store::mvcc::KeyValue>, StoreError> {
    let req = RangeRequest {
        range: KeyRange::single(k),
        revision: rev,
        ..Default::default()
    };
    Ok(s.view().range(&req)?.kvs.pop())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_versions_and_history() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = single(dir.path(), free_port()).await;
    assert_eq!(put(&s, "a", "1").await, 1);
    assert_eq!(put(&s, "b", "1").await, 2);
    assert_eq!(put(&s, "a", "2").await, 3);
    let a = get(&s, "a", 0).expect("get").expect("a");
    assert_eq!(
        (
            a.create_revision,
            a.mod_revision,
            a.version,
            a.value.as_slice()
        ),
        (1, 3, 2, b"2".as_slice())
    );
    assert_eq!(get(&s, "a", 2).expect("get").expect("a@2").value, b"1");
    // Delete, then re-create: the version restarts.
    let del = Op::Delete(DeleteRequest {
        range: KeyRange::single("a"),
        prev_kv: true,
    });
    let (_, res) = txn(&s, TxnRequest::single(del)).await.expect("delete");
    assert!(
        matches!(&res[0], OpResult::Delete { deleted: 1, prev_kvs } if prev_kvs[0].value == b"2")
    );
    assert!(get(&s, "a", 0).expect("get").is_none());
    assert_eq!(put(&s, "a", "3").await, 5);
    let a = get(&s, "a", 0).expect("get").expect("a");
    assert_eq!((a.create_revision, a.version), (5, 1));
    // Deleting nothing does not move the revision.
    let none = Op::Delete(DeleteRequest {
        range: KeyRange::single("nope"),
        prev_kv: false,
    });
    let r = s
        .write(Command::Txn(TxnRequest::single(none)))
        .await
        .expect("noop delete");
    assert_eq!(r.revision, 5);
    // A future revision is refused.
    assert!(matches!(
        get(&s, "a", 99),
        Err(StoreError::Rejected(ApplyError::FutureRevision))
    ));
    s.shutdown().await;
}

fn put_op(k: &str, v: &str, lease: i64) -> Op {
    Op::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        lease,
        ..Default::default()
    })
}

/// Commands batched into one log entry are written together but behave as
/// if proposed one by one: each sees the ones before it, gets its own
/// revision, and one refused part-way leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_commands_apply_in_order_and_refusals_leave_no_trace() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = single(dir.path(), free_port()).await;
    let base = put(&s, "x", "0").await;
    let version_is = |k: &str, v: i64| Compare {
        range: KeyRange::single(k),
        op: CompareOp::Equal,
        target: CompareTarget::Version(v),
    };
    let cmds = vec![
        // base + 1
        Command::Txn(TxnRequest::single(put_op("a", "1", 0))),
        // base + 2: sees `a` from the command before.
        Command::Txn(TxnRequest {
            compare: vec![version_is("a", 1)],
            success: vec![put_op("b", "2", 0)],
            failure: vec![],
        }),
        // Refused after its first put: no revision, no `c`.
        Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![put_op("c", "3", 0), put_op("d", "4", 424242)],
            failure: vec![],
        }),
        // base + 3: reads `a` at the revision made two commands back.
        Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                Op::Range(RangeRequest {
                    range: KeyRange::single("a"),
                    revision: base + 1,
                    ..Default::default()
                }),
                put_op("a", "5", 0),
            ],
            failure: vec![],
        }),
        // base + 4: deletes what the batch made, seeing `a` at version 2.
        Command::Txn(TxnRequest {
            compare: vec![version_is("a", 2)],
            success: vec![Op::Delete(DeleteRequest {
                range: KeyRange {
                    key: b"a".to_vec(),
                    range_end: b"c".to_vec(),
                },
                prev_kv: true,
            })],
            failure: vec![],
        }),
    ];
    let resp = s
        .write(Command::Batch(std::sync::Arc::new(cmds)))
        .await
        .expect("batch");
    let Ok(Outcome::Batch(results)) = resp.outcome else {
        panic!("unexpected {resp:?}");
    };
    let revisions: Vec<i64> = results.iter().map(|r| r.revision).collect();
    assert_eq!(
        revisions,
        [base + 1, base + 2, base + 2, base + 3, base + 4],
        "{results:?}"
    );
    assert!(matches!(
        &results[1].outcome,
        Ok(Outcome::Txn {
            succeeded: true,
            ..
        })
    ));
    assert!(matches!(
        &results[2].outcome,
        Err(ApplyError::LeaseNotFound)
    ));
    match &results[3].outcome {
        Ok(Outcome::Txn { results, .. }) => match &results[0] {
            OpResult::Range(r) => assert_eq!(r.kvs[0].value, b"1"),
            other => panic!("unexpected {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
    match &results[4].outcome {
        Ok(Outcome::Txn {
            succeeded: true,
            results,
        }) => assert!(
            matches!(&results[0], OpResult::Delete { deleted: 2, prev_kvs } if prev_kvs[0].value == b"5"),
            "{results:?}"
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(resp.revision, base + 4);
    assert!(get(&s, "c", 0).expect("get c").is_none());
    assert_eq!(
        get(&s, "b", base + 2).expect("get b").expect("b").value,
        b"2"
    );
    // Watchers see each revision once, in order, and nothing of the refusal.
    let mut w = s.watch(
        WatchSpec {
            range: KeyRange::prefix(""),
            start_revision: base + 1,
            ..Default::default()
        },
        16,
    );
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(5), w.items.recv()).await {
            Ok(Some(WatchItem::Events {
                revision, events, ..
            })) => {
                let keys: Vec<String> = events
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.kv.key).into_owned())
                    .collect();
                seen.push((revision - base, keys.join(",")));
            }
            other => panic!("watch ended: {other:?}"),
        }
    }
    let expected: Vec<(i64, String)> = [(1, "a"), (2, "b"), (3, "a"), (4, "a,b")]
        .iter()
        .map(|(r, k)| (*r, k.to_string()))
        .collect();
    assert_eq!(seen, expected);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_and_branches() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = single(dir.path(), free_port()).await;
    put(&s, "k", "v1").await;
    let cas = |expect_mod: i64, value: &str| TxnRequest {
        compare: vec![Compare {
            range: KeyRange::single("k"),
            op: CompareOp::Equal,
            target: CompareTarget::Mod(expect_mod),
        }],
        success: vec![Op::Put(PutRequest {
            key: "k".into(),
            value: value.into(),
            ..Default::default()
        })],
        failure: vec![Op::Range(RangeRequest {
            range: KeyRange::single("k"),
            ..Default::default()
        })],
    };
    let (ok, _) = txn(&s, cas(1, "v2")).await.expect("cas");
    assert!(ok);
    let (ok, res) = txn(&s, cas(1, "v3")).await.expect("stale cas");
    assert!(!ok);
    assert!(matches!(&res[0], OpResult::Range(r) if r.kvs[0].value == b"v2"));
    // Value compare on a missing key is false; version 0 compare is true.
    let missing = TxnRequest {
        compare: vec![Compare {
            range: KeyRange::single("absent"),
            op: CompareOp::Equal,
            target: CompareTarget::Version(0),
        }],
        success: vec![Op::Put(PutRequest {
            key: "absent".into(),
            value: b"now".to_vec(),
            ..Default::default()
        })],
        failure: vec![],
    };
    assert!(txn(&s, missing).await.expect("create-if-absent").0);
    // Reads inside a txn see the txn's own earlier writes.
    let rw = TxnRequest {
        compare: vec![],
        success: vec![
            Op::Put(PutRequest {
                key: "p/1".into(),
                value: b"x".to_vec(),
                ..Default::default()
            }),
            Op::Range(RangeRequest {
                range: KeyRange::prefix("p/"),
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    let (_, res) = txn(&s, rw).await.expect("rw");
    assert!(matches!(&res[1], OpResult::Range(r) if r.count == 1));
    let dup = TxnRequest {
        compare: vec![],
        success: vec![
            Op::Put(PutRequest {
                key: "d".into(),
                ..Default::default()
            }),
            Op::Put(PutRequest {
                key: "d".into(),
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    assert_eq!(
        txn(&s, dup).await.expect_err("duplicate"),
        ApplyError::DuplicateKey
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_watch_from_revision() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = single(dir.path(), free_port()).await;
    for i in 1..=10 {
        put(&s, "w/key", &i.to_string()).await;
    }
    put(&s, "other", "x").await; // rev 11

    // Watch from revision 3 with prev_kv: ordered, gap-free, with previous values.
    let spec = WatchSpec {
        range: KeyRange::prefix("w/"),
        start_revision: 3,
        prev_kv: true,
        ..Default::default()
    };
    let mut w = s.watch(spec, 16);
    for rev in 3..=10 {
        match w.items.recv().await.expect("event") {
            WatchItem::Events {
                revision, events, ..
            } => {
                assert_eq!(revision, rev);
                assert_eq!(events[0].kv.value, rev.to_string().into_bytes());
                assert_eq!(
                    events[0].prev_kv.as_ref().expect("prev").value,
                    (rev - 1).to_string().into_bytes()
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Live events follow without a gap.
    put(&s, "w/key", "live").await; // rev 12
    match w.items.recv().await.expect("live") {
        WatchItem::Events { revision, .. } => assert_eq!(revision, 12),
        other => panic!("unexpected {other:?}"),
    }

    let r = s
        .write(Command::Compact { revision: 8 })
        .await
        .expect("compact");
    assert!(r.outcome.is_ok());
    assert!(matches!(
        get(&s, "w/key", 7),
        Err(StoreError::Rejected(ApplyError::Compacted))
    ));
    assert_eq!(
        get(&s, "w/key", 8)
            .expect("at compaction point")
            .expect("kv")
            .value,
        b"8"
    );
    let again = s
        .write(Command::Compact { revision: 8 })
        .await
        .expect("compact again");
    assert_eq!(
        again.outcome.expect_err("already compacted"),
        ApplyError::Compacted
    );
    let old = WatchSpec {
        range: KeyRange::prefix("w/"),
        start_revision: 5,
        ..Default::default()
    };
    assert_eq!(
        s.watch(old, 4).items.recv().await,
        Some(WatchItem::Compacted {
            compact_revision: 8
        })
    );
    // The background compactor reclaims history; reads at or after the point still work.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(&s, "w/key", 9)
            .expect("after physical compaction")
            .expect("kv")
            .value,
        b"9"
    );
    assert_eq!(
        get(&s, "other", 11).expect("other").expect("kv").value,
        b"x"
    );
    s.shutdown().await;
}

/// The values a revision replaces are read only while a watcher wants them
/// (deleting a large prefix would otherwise load every value it removes);
/// a watcher that wants them gets them either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_values_are_read_only_for_watchers_that_want_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = single(dir.path(), free_port()).await;
    for i in 1..=3 {
        put(&s, &format!("p/{i}"), &format!("value {i}")).await;
    }
    let mut raw = s.shared().hub.subscribe();
    let del = Op::Delete(DeleteRequest {
        range: KeyRange::prefix("p/"),
        prev_kv: false,
    });
    txn(&s, TxnRequest::single(del)).await.expect("delete"); // rev 4
    let batch = raw.recv().await.expect("revision 4");
    assert_eq!((batch.revision, batch.prev_values), (4, false));
    assert_eq!(batch.events.len(), 3);
    for e in &batch.events {
        let prev = e.prev_kv.as_ref().expect("the previous key's metadata");
        assert_eq!((prev.version, prev.value.as_slice()), (1, b"".as_slice()));
    }

    // A watcher that wants them reads that revision's from RocksDB...
    let spec = WatchSpec {
        range: KeyRange::prefix("p/"),
        start_revision: 4,
        prev_kv: true,
        ..Default::default()
    };
    let mut w = s.watch(spec, 16);
    let prev_values = |item: WatchItem| match item {
        WatchItem::Events {
            revision, events, ..
        } => (
            revision,
            events
                .into_iter()
                .map(|e| String::from_utf8(e.prev_kv.expect("prev").value).expect("utf8"))
                .collect::<Vec<_>>(),
        ),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        prev_values(w.items.recv().await.expect("revision 4")),
        (
            4,
            vec!["value 1".into(), "value 2".into(), "value 3".into()]
        )
    );

    // ...and while it runs, revisions are applied with them.
    put(&s, "p/1", "again").await; // rev 5
    put(&s, "p/1", "live").await; // rev 6
    let batch = raw.recv().await.expect("revision 5");
    assert!(batch.prev_values);
    let batch = raw.recv().await.expect("revision 6");
    assert!(batch.prev_values);
    assert_eq!(
        batch.events[0].prev_kv.as_ref().expect("prev").value,
        b"again"
    );
    // (revision 5 created the key again: nothing before it)
    match w.items.recv().await.expect("revision 5") {
        WatchItem::Events {
            revision, events, ..
        } => assert_eq!((revision, events[0].prev_kv.is_none()), (5, true)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        prev_values(w.items.recv().await.expect("revision 6")),
        (6, vec!["again".into()])
    );

    // A revision applied without them just before the watcher started (here
    // stood in for by one published by hand, whose previous value reads
    // "unread") is not passed on as it is: the watcher waits until the
    // revision is on disk and reads it there.
    s.shared().hub.publish(RevisionBatch {
        revision: 7,
        events: vec![Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: b"p/1".to_vec(),
                value: b"from the log".to_vec(),
                mod_revision: 7,
                ..Default::default()
            },
            prev_kv: Some(KeyValue {
                key: b"p/1".to_vec(),
                value: b"unread".to_vec(),
                ..Default::default()
            }),
        }],
        applied_at: std::time::Instant::now(),
        prev_values: false,
    });
    put(&s, "p/1", "seventh").await; // rev 7, applied with previous values
    assert_eq!(
        prev_values(w.items.recv().await.expect("revision 7")),
        (7, vec!["live".into()])
    );
    s.shutdown().await;
}

/// With a compaction interval, the leader compacts to the revision that was
/// current one interval before: older revisions answer Compacted, later ones
/// (and the live state) are all still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_compacted_periodically() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(dir.path(), free_port());
    cfg.compaction_interval = Some(Duration::from_millis(500));
    let s = single_with(cfg).await;
    assert_eq!(put(&s, "k", "1").await, 1);
    assert_eq!(put(&s, "k", "2").await, 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !matches!(
        get(&s, "k", 1),
        Err(StoreError::Rejected(ApplyError::Compacted))
    ) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "revision 1 still readable: {:?}",
            get(&s, "k", 1)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Compacted to 2 (the revision one interval back), not beyond.
    assert_eq!(get(&s, "k", 2).expect("rev 2").expect("kv").value, b"2");
    assert_eq!(put(&s, "k", "3").await, 3);
    assert_eq!(get(&s, "k", 0).expect("live").expect("kv").value, b"3");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_through_the_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = single(dir.path(), free_port()).await;
    let (id, ttl) = s.grant_lease(0, 2).await.expect("grant");
    assert_eq!(ttl, 2);
    let op = Op::Put(PutRequest {
        key: "eph".into(),
        value: b"v".to_vec(),
        lease: id,
        ..Default::default()
    });
    s.write(Command::Txn(TxnRequest::single(op)))
        .await
        .expect("put with lease")
        .outcome
        .expect("ok");
    assert_eq!(s.lease_keys(id).expect("keys"), vec![b"eph".to_vec()]);
    // Kept alive for a while, it survives past its TTL.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(s.lease_keep_alive(id).await.expect("keep-alive"), Some(2));
    }
    assert!(get(&s, "eph", 0).expect("get").is_some());
    let mut w = s.watch(
        WatchSpec {
            range: KeyRange::single("eph"),
            ..Default::default()
        },
        4,
    );
    // Left alone, it expires and its key is deleted at a new revision.
    match tokio::time::timeout(Duration::from_secs(5), w.items.recv())
        .await
        .expect("expiry in time")
    {
        Some(WatchItem::Events { events, .. }) => {
            assert_eq!(events[0].kind, raft_store::mvcc::EventKind::Delete)
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(s.lease_time_to_live(id).await.expect("ttl").is_none());
    let bad = Op::Put(PutRequest {
        key: "x".into(),
        lease: id,
        ..Default::default()
    });
    let r = s
        .write(Command::Txn(TxnRequest::single(bad)))
        .await
        .expect("write");
    assert_eq!(
        r.outcome.expect_err("expired lease"),
        ApplyError::LeaseNotFound
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_from_snapshot_and_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    {
        let mut cfg = config(dir.path(), port);
        cfg.snapshot_entries = 20;
        cfg.keep_entries = 0;
        let s = single_with(cfg).await;
        for i in 0..75 {
            put(&s, &format!("k{i:03}"), &i.to_string()).await;
        }
        s.shutdown().await;
    }
    let s = single(dir.path(), port).await;
    assert!(
        dir.path().join("snapshots/snapshot.meta").exists(),
        "a snapshot was taken"
    );
    let all = RangeRequest {
        range: KeyRange::prefix("k"),
        count_only: true,
        ..Default::default()
    };
    assert_eq!(s.view().range(&all).expect("range").count, 75);
    assert_eq!(s.revision(), 75);
    s.shutdown().await;
}
