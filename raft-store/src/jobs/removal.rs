//! Notice this member's removal: in the membership configs it applies (a
//! leader that removes itself applies the config without it that it
//! wrote), and by asking its peers when no
//! leader has been heard from for a while (a removed learner never
//! campaigns, so no peer would tell it otherwise). A campaigning removed
//! voter is told by the peers it asks for votes (`network::server`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::node::Store;
use crate::removal::removed_itself;
use crate::types::StoredMembership;

/// `applied` was subscribed before Raft started, so no config applied
/// since then is missed.
pub async fn run(store: Arc<Store>, mut applied: watch::Receiver<StoredMembership>) {
    let mut stop = store.shutdown_signal();
    let mut before = applied.borrow_and_update().clone();
    loop {
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = applied.borrow_and_update().clone();
        let vote = store.raft().metrics().borrow().vote;
        if removed_itself(&before, &now, store.id(), &vote) {
            let at = now.log_id().map(|l| l.to_string()).unwrap_or_default();
            store.removal().mark(&format!(
                "it applied the membership config at {at}, which no longer names it"
            ));
            return;
        }
        before = now;
    }
}

/// How long without a leader's append before asking the peers: many
/// heartbeats (100 ms) and election timeouts (at most 900 ms by default).
const QUIET: Duration = Duration::from_secs(3);

/// Ask the peers whether this member was removed once no leader has been
/// heard from for [`QUIET`], and again every [`QUIET`] while that lasts.
pub async fn ask_when_quiet(store: Arc<Store>) {
    let mut stop = store.shutdown_signal();
    let mut removed = store.removed();
    let mut asked = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = removed.wait_for(|r| *r) => return,
            _ = stop.wait_for(|s| *s) => return,
        }
        if store.is_leader() || store.since_leader_contact() < QUIET || asked.elapsed() < QUIET {
            continue;
        }
        asked = std::time::Instant::now();
        store.ask_peers_if_removed().await;
    }
}
