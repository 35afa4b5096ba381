//! Runs one controller: workers take keys from its queue and call its
//! reconcile function; errors are retried with backoff, and a reconcile may
//! ask to be called again later (a deadline, a delay it waits out).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::queue::WorkQueue;
use crate::controllers::Error;

/// What a reconcile wants next for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next change.
    Done,
    /// Look again after this long (also after any change before then).
    After(Duration),
}

/// Start `workers` workers for `queue`; they stop when `cancel` fires.
pub fn spawn<F, Fut>(queue: Arc<WorkQueue>, workers: usize, reconcile: F, cancel: CancellationToken)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                let key = tokio::select! {
                    _ = cancel.cancelled() => return,
                    k = queue.next() => k,
                };
                let name = queue.name();
                let started = Instant::now();
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = reconcile(key.clone()) => r,
                };
                metrics::histogram!("skiff_controller_reconcile_seconds", "controller" => name)
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok(Action::Done) => queue.forget(&key),
                    Ok(Action::After(d)) => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), d);
                    }
                    Err(e) => {
                        metrics::counter!("skiff_controller_reconcile_errors_total", "controller" => name)
                            .increment(1);
                        tracing::debug!(controller = name, key, "reconcile failed: {e}");
                        queue.retry(&key);
                    }
                }
                queue.done(&key);
            }
        });
    }
}
