//! A master removed with the real etcdctl learns that it was removed, and
//! its etcd API says so (etcd's "permanently removed") rather than "no
//! leader".
//!
//! With `control-plane run` processes the removed master stops once it
//! knows, so its answers are checked on the etcd API served in this
//! process over three stores, with the same real etcdctl.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{etcdctl, eventually, Cluster};
use raft_store::{Config, Member, Store};

const REMOVED: &str = "etcdserver: the member has been permanently removed from the cluster";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_removed_with_etcdctl_learns_it_and_the_others_go_on() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let victim = (leader + 1) % 3;
    let id = c
        .status(victim)
        .await
        .and_then(|s| s.header)
        .expect("status of the master to remove")
        .member_id;
    let others = (0..3)
        .filter(|i| *i != victim)
        .map(|i| c.endpoint(i))
        .collect::<Vec<_>>()
        .join(",");
    let tls = c.etcdctl_tls();
    let run = |args: &[&str]| {
        let all: Vec<&str> = tls
            .iter()
            .map(String::as_str)
            .chain(args.to_vec())
            .collect();
        etcdctl(&others, &all)
    };

    let (ok, out, err) = run(&["member", "remove", &format!("{id:x}")]);
    assert!(ok && out.contains("removed from cluster"), "{out}{err}");
    let removed_at = Instant::now();
    eventually(
        "the removed master to log its removal",
        Duration::from_secs(20),
        || {
            let known = c
                .log(victim)
                .contains("this member was removed from the cluster");
            async move { known.then_some(()) }
        },
    )
    .await;
    println!(
        "the removed master knew within {:?} of member remove",
        removed_at.elapsed()
    );

    // The two left agree on two members and take writes.
    let (ok, list, err) = run(&["member", "list"]);
    assert!(ok, "{err}");
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        !list.contains(&format!(", {}, ", c.masters[victim].name)),
        "{list}"
    );
    let (ok, out, err) = run(&["put", "/after-remove", "yes"]);
    assert!(ok && out == "OK\n", "{out}{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Three stores in this process, each with the etcd API on a plaintext port.
async fn three_served(dir: &std::path::Path) -> Vec<(Arc<Store>, String)> {
    let configs: Vec<Config> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let addr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            Config::new(n, dir.join(n), addr)
        })
        .collect();
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
    let mut served = Vec::new();
    for cfg in configs {
        let store = Store::start(cfg).await.expect("store");
        store.initialize(members.clone()).await.expect("init");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(control_plane::etcd::serve(
            store.clone(),
            listener,
            None,
            store.shutdown_signal(),
        ));
        served.push((store, url));
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_against_a_removed_member_says_it_was_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let served = three_served(dir.path()).await;
    let leader = eventually("a leader", Duration::from_secs(15), || {
        let l = served.iter().position(|(s, _)| s.is_leader());
        async move { l }
    })
    .await;
    let victim = (leader + 1) % 3;
    let (store, url) = &served[victim];
    let (ok, out, err) = etcdctl(url, &["put", "/before", "x"]);
    assert!(ok, "{out}{err}");

    let others = served
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, (_, u))| u.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let (ok, out, err) = etcdctl(&others, &["member", "remove", &format!("{:x}", store.id())]);
    assert!(ok && out.contains("removed from cluster"), "{out}{err}");
    let removed_at = Instant::now();
    let mut removed = store.removed();
    tokio::time::timeout(Duration::from_secs(10), removed.wait_for(|r| *r))
        .await
        .expect("the removed member never learned it")
        .expect("removal watch");
    println!(
        "removed() fired {:?} after member remove",
        removed_at.elapsed()
    );

    // A write, a read and the member list: etcd's error, not "no leader".
    for args in [
        &["put", "/from-removed", "x"][..],
        &["get", "/before"][..],
        &["member", "list"][..],
    ] {
        let started = Instant::now();
        let (ok, out, err) = etcdctl(url, args);
        assert!(!ok && err.contains(REMOVED), "etcdctl {args:?}: {out}{err}");
        println!(
            "etcdctl {args:?} against it, {:?}: {}",
            started.elapsed(),
            err.lines().last().unwrap_or_default()
        );
    }
    let (ok, list, err) = etcdctl(&others, &["member", "list"]);
    assert!(ok && list.lines().count() == 2, "{list}{err}");
    for (s, _) in &served {
        s.shutdown().await;
    }
}
