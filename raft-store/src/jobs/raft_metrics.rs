//! Export Raft's own metrics (term, leader, indexes) as Prometheus gauges,
//! as Skiff's series and as etcd's (`etcd_server_*`, see [`crate::metrics`]).

use std::sync::Arc;

use openraft::ServerState;

use crate::node::Store;

pub async fn run(store: Arc<Store>) {
    let mut metrics = store.raft().metrics();
    let mut stop = store.shutdown_signal();
    let mut last_leader = None;
    metrics::gauge!("etcd_server_id", "server_id" => format!("{:x}", store.id())).set(1.0);
    // Present from the start, at zero, rather than from the first event.
    metrics::gauge!("etcd_server_proposals_pending").increment(0.0);
    metrics::counter!("etcd_server_proposals_failed_total").increment(0);
    loop {
        {
            let m = metrics.borrow_and_update();
            metrics::gauge!("skiff_raft_term").set(m.current_term as f64);
            metrics::gauge!("skiff_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
            let is_leader = if m.state == ServerState::Leader {
                1.0
            } else {
                0.0
            };
            metrics::gauge!("skiff_raft_is_leader").set(is_leader);
            metrics::gauge!("etcd_server_is_leader").set(is_leader);
            metrics::gauge!("etcd_server_has_leader").set(if m.current_leader.is_some() {
                1.0
            } else {
                0.0
            });
            let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
            metrics::gauge!("skiff_raft_applied_index").set(applied as f64);
            metrics::counter!("etcd_server_proposals_applied_total").absolute(applied);
            metrics::gauge!("skiff_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("skiff_store_revision").set(store.revision() as f64);
            if m.current_leader.is_some() && m.current_leader != last_leader {
                metrics::counter!("etcd_server_leader_changes_seen_total").increment(1);
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
