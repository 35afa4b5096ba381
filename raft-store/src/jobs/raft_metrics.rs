//! Export Raft's own metrics (term, leader, indexes) as Prometheus gauges.

use std::sync::Arc;

use openraft::ServerState;

use crate::node::Store;

pub async fn run(store: Arc<Store>) {
    let mut metrics = store.raft().metrics();
    let mut stop = store.shutdown_signal();
    let mut last_leader = None;
    loop {
        {
            let m = metrics.borrow_and_update();
            metrics::gauge!("skiff_raft_term").set(m.current_term as f64);
            metrics::gauge!("skiff_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
            metrics::gauge!("skiff_raft_is_leader").set(if m.state == ServerState::Leader {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("skiff_raft_applied_index")
                .set(m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
            metrics::gauge!("skiff_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("skiff_store_revision").set(store.revision() as f64);
            if m.current_leader.is_some() && m.current_leader != last_leader {
                if last_leader.is_some() {
                    metrics::counter!("skiff_raft_leader_changes_total").increment(1);
                }
                last_leader = m.current_leader;
            }
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
