//! Keep a full disk from wrecking a master. When the free space of the data
//! directory drops below `Config::min_free_bytes` the master fences itself:
//! it refuses client writes (etcd's NOSPACE), stops campaigning and sending
//! heartbeats (so a leader is replaced by one that can still write), and
//! refuses the peer RPCs that would append to its log. It keeps serving
//! serializable reads. Once free space is back above one and a half times the
//! threshold it rejoins, and the leader catches it up as after a partition.

use std::sync::Arc;
use std::time::Duration;

use crate::node::Store;

const PERIOD: Duration = Duration::from_millis(100);

pub async fn run(store: Arc<Store>) {
    let mut stop = store.shutdown_signal();
    loop {
        check(&store);
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Fence this master off, or let it back in, by the free space now. Also
/// run once before the peer port opens, so that a master started on a full
/// disk takes in nothing before it is fenced.
pub fn check(store: &Store) {
    let low = store.config().min_free_bytes;
    let high = low.saturating_add(low / 2);
    match free_bytes(&store.config().data_dir) {
        Ok(free) => {
            metrics::gauge!("skiff_disk_free_bytes").set(free as f64);
            if !store.space_low() && free < low {
                tracing::error!(free, threshold = low, "data disk nearly full: refusing writes and leaving the quorum until space returns");
                store.set_space_low(true);
            } else if store.space_low() && free >= high {
                tracing::warn!(free, "data disk has space again: rejoining");
                store.set_space_low(false);
            }
        }
        Err(e) => tracing::warn!("statvfs on the data dir: {e}"),
    }
}

/// Bytes available to this (unprivileged or not) process on the data dir's file system.
pub fn free_bytes(dir: &std::path::Path) -> nix::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}
