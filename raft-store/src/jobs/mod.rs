//! Background jobs of a master, one per file. Each runs until the store shuts
//! down; leader-only work checks leadership on every pass, so it stops the
//! moment this master is deposed (and its proposals could not commit anyway).

mod auto_compact;
mod compactor;
pub mod disk_guard;
mod lease_expiry;
mod publish;
mod raft_metrics;
pub mod removal;

use std::sync::Arc;

use crate::node::Store;

pub fn spawn_all(store: &Arc<Store>) {
    tokio::spawn(lease_expiry::run(store.clone()));
    tokio::spawn(compactor::run(store.clone()));
    tokio::spawn(auto_compact::run(store.clone()));
    tokio::spawn(disk_guard::run(store.clone()));
    tokio::spawn(publish::run(store.clone()));
    tokio::spawn(raft_metrics::run(store.clone()));
}
