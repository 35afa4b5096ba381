//! Leader-only: revoke leases whose TTL ran out, through Raft.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::node::Store;
use crate::types::{ApplyError, Command};
use crate::StoreError;

const TICK: Duration = Duration::from_millis(100);

pub async fn run(store: Arc<Store>) {
    let mut stop = store.shutdown_signal();
    let mut was_leader = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let leader = store.is_leader();
        if leader && !was_leader {
            // A new leader gives every lease its full TTL again (as etcd does).
            store.shared().leases.promote();
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        for id in store.shared().leases.expired(Instant::now()) {
            match store.write(Command::LeaseRevoke { id }).await {
                Ok(r) => match r.outcome {
                    Ok(_) | Err(ApplyError::LeaseNotFound) => {
                        metrics::counter!("skiff_store_leases_expired_total").increment(1);
                        tracing::debug!("lease {id:x} expired");
                    }
                    Err(e) => tracing::warn!("revoking expired lease {id:x}: {e}"),
                },
                Err(StoreError::NoLeader) => break,
                Err(e) => tracing::warn!("revoking expired lease {id:x}: {e}"),
            }
        }
        metrics::gauge!("skiff_store_leases").set(store.shared().leases.len() as f64);
    }
}
