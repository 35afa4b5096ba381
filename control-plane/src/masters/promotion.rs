//! A joined master is a learner until it has caught up with the leader;
//! then it asks to be promoted to a voter, as `etcdctl member promote`
//! would (the leader refuses while the learner lags). The wish is a file
//! in the data directory, so a master restarted before its promotion
//! still asks, and nothing asks for a learner added by hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use raft_store::Store;

const MARKER: &str = "promote-when-caught-up";

fn marker(data_dir: &Path) -> PathBuf {
    data_dir.join(MARKER)
}

/// Record that this master is to become a voter once caught up.
pub fn request(data_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(marker(data_dir), b"")
}

/// Whether a promotion is pending.
pub fn pending(data_dir: &Path) -> bool {
    marker(data_dir).exists()
}

/// Ask for the promotion until this master is a voter.
pub async fn run(store: Arc<Store>, data_dir: PathBuf) {
    let started = std::time::Instant::now();
    let mut refusals = 0u64;
    loop {
        match store.status() {
            Ok(s) if !s.is_learner => {
                tracing::info!(
                    after_ms = started.elapsed().as_millis() as u64,
                    "this master is a voter"
                );
                if let Err(e) = std::fs::remove_file(marker(&data_dir)) {
                    tracing::warn!("removing the promotion marker: {e}");
                }
                return;
            }
            Ok(s) if s.leader.is_some() => {
                if let Err(e) = store.promote_member(s.id).await {
                    refusals += 1;
                    // Refused while catching up: say so now and then.
                    if refusals % 20 == 1 {
                        tracing::info!(applied = s.applied_index, "not promoted yet: {e}");
                    }
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
