//! A work queue of object keys, as client-go's: a key is queued at most
//! once; a key being worked on is not handed to a second worker, and if it
//! is added meanwhile it comes back once the first is done; failures are
//! retried with per-key exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    order: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    /// Added while active: queue again when done.
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
}

pub struct WorkQueue {
    name: &'static str,
    state: Mutex<State>,
    ready: Notify,
}

impl WorkQueue {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(WorkQueue {
            name,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.lock();
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.order.push_back(key);
            metrics::gauge!("skiff_controller_queue_depth", "controller" => self.name)
                .set(s.order.len() as f64);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Add `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let me: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = me.upgrade() {
                q.add(key);
            }
        });
    }

    /// Add `key` again after its next backoff delay (5 ms doubling to 30 s).
    pub fn retry(self: &Arc<Self>, key: &str) {
        let n = {
            let mut s = self.lock();
            let n = s.failures.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        self.add_after(key, backoff(n));
    }

    /// Forget `key`'s failures.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The next key to work on; the caller must call [`WorkQueue::done`].
    pub async fn next(&self) -> String {
        loop {
            {
                let mut s = self.lock();
                if let Some(key) = s.order.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    metrics::gauge!("skiff_controller_queue_depth", "controller" => self.name)
                        .set(s.order.len() as f64);
                    if !s.order.is_empty() {
                        // Wake another worker for the rest.
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            self.ready.notified().await;
        }
    }

    pub fn done(&self, key: &str) {
        let again = {
            let mut s = self.lock();
            s.active.remove(key);
            s.dirty.remove(key)
        };
        if again {
            self.add(key);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    BASE_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once_and_comes_back_if_added_while_active() {
        let q = WorkQueue::new("test");
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.next().await;
        assert_eq!(a, "a");
        q.add("a");
        assert_eq!(q.len(), 1, "an active key waits for done");
        q.done(&a);
        assert_eq!(q.next().await, "b");
        assert_eq!(q.next().await, "a");
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(4), Duration::from_millis(40));
        assert_eq!(backoff(40), MAX_DELAY);
    }
}
