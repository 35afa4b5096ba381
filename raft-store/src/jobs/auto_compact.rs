//! Leader-only: compact history periodically, as kube-apiserver does against
//! etcd: every interval, to the revision that was current one interval ago.
//! Reads and watches therefore reach back at least one interval, and the
//! in-memory key index and the `revs` family stop growing with every write.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::node::Store;
use crate::types::{ApplyError, Command};
use crate::StoreError;

pub async fn run(store: Arc<Store>) {
    let Some(interval) = store.config().compaction_interval else {
        return;
    };
    let mut stop = store.shutdown_signal();
    // The revision at the previous tick, while this master led throughout.
    let mut seen: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !store.is_leader() {
            seen = None;
            continue;
        }
        let target = seen.replace(store.revision());
        let compacted = store.shared().compacted.load(Ordering::Acquire);
        let Some(target) = target.filter(|t| *t > compacted) else {
            continue;
        };
        match store.write(Command::Compact { revision: target }).await {
            Ok(r) => match r.outcome {
                Ok(_) => tracing::info!(revision = target, "compacted periodically"),
                // Someone compacted further in the meantime.
                Err(ApplyError::Compacted) => {}
                Err(e) => tracing::warn!("periodic compaction to {target}: {e}"),
            },
            Err(StoreError::NoLeader) => seen = None,
            Err(e) => tracing::warn!("periodic compaction to {target}: {e}"),
        }
    }
}
