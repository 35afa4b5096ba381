//! Leader-only work: while this master is the Raft leader it runs the
//! controllers and the scheduler ([`crate::controllers::start`]); the
//! moment it is not (or its term changes), it cancels them. Their writes are
//! fenced to the leadership that started them, so a deposed leader that has
//! not noticed yet cannot commit anything.

use std::sync::Arc;

use openraft::ServerState;
use raft_store::Store;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::controllers::Settings;
use crate::registry::Fence;

pub async fn run(store: Arc<Store>, api: Api, settings: Settings, stop: CancellationToken) {
    let mut metrics = store.raft().metrics();
    let mut running: Option<(Fence, CancellationToken)> = None;
    metrics::gauge!("skiff_controllers_running").set(0.0);
    loop {
        let leading = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader).then_some(Fence {
                term: m.current_term,
                leader: store.id(),
            })
        };
        if running.as_ref().map(|(f, _)| *f) != leading {
            if let Some((fence, token)) = running.take() {
                token.cancel();
                tracing::info!(term = fence.term, "leadership ended: controllers stopped");
            }
            if let Some(fence) = leading {
                metrics::counter!("skiff_controllers_starts_total").increment(1);
                tracing::info!(term = fence.term, "leading: starting controllers");
                let token = stop.child_token();
                tokio::spawn(crate::controllers::start(
                    api.clone(),
                    fence,
                    settings.clone(),
                    token.clone(),
                ));
                running = Some((fence, token));
            }
            metrics::gauge!("skiff_controllers_running").set(if running.is_some() {
                1.0
            } else {
                0.0
            });
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = metrics.changed() => if changed.is_err() { break },
        }
    }
    if let Some((_, token)) = running {
        token.cancel();
    }
}
