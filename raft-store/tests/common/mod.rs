//! Helpers shared by the store's integration tests.
#![allow(dead_code)] // each test binary uses its own share of them

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raft_store::{Config, Member, Store};

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A store named `name` in `dir`, with the default heartbeat and election
/// timeout (shorter ones flake on a loaded machine).
pub fn config(name: &str, dir: &std::path::Path, port: u16) -> Config {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    Config::new(name, dir.join(name), addr)
}

/// Start a store, retrying while a store shut down in this process still
/// holds the RocksDB lock.
pub async fn start(cfg: &Config) -> Arc<Store> {
    for _ in 0..50 {
        if let Ok(s) = Store::start(cfg.clone()).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("store {} never started", cfg.name);
}

/// The index of the leader among `stores`, once there is one (10 s at most).
pub async fn leader_of<S: AsRef<Store>>(stores: &[S]) -> usize {
    for _ in 0..200 {
        if let Some(i) = stores.iter().position(|s| s.as_ref().is_leader()) {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader elected");
}

/// Three masters in `dir`, started and initialized as one group.
pub async fn three(dir: &std::path::Path) -> (Vec<Config>, Vec<Arc<Store>>) {
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
