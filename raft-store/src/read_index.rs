//! Read indexes shared by concurrent readers.
//!
//! A linearizable read needs a read index that was confirmed after the read
//! arrived. Confirming one costs the leader a heartbeat round to every
//! follower, and a follower a call to the leader, so each read paying for its
//! own would make reads cost more than writes. A [`Batcher`] runs one
//! confirmation at a time: readers that arrive while one is under way wait
//! for the next, which starts after they arrived and so serves them exactly
//! as one of their own would (etcd batches its ReadIndex requests the same
//! way).

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};

type Waiter = oneshot::Sender<Result<u64>>;

pub struct Batcher {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl Batcher {
    /// Serve read indexes from `confirm`, one call per group of readers. The
    /// task ends when the batcher is dropped.
    pub fn start<F, Fut>(mut confirm: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                while let Ok(w) = rx.try_recv() {
                    group.push(w);
                }
                metrics::histogram!("skiff_store_read_index_batch").record(group.len() as f64);
                let result = confirm().await;
                for waiter in group {
                    let _ = waiter.send(share(&result));
                }
            }
        });
        Batcher { tx }
    }

    /// A read index confirmed after this call began.
    pub async fn read_index(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

/// One result for each reader of a group. The variants a reader acts on
/// (retrying on a leader change) are kept; the rest keep their message.
fn share(result: &Result<u64>) -> Result<u64> {
    match result {
        Ok(index) => Ok(*index),
        Err(StoreError::NoLeader) => Err(StoreError::NoLeader),
        Err(StoreError::Forward { leader, detail }) => Err(StoreError::Forward {
            leader: *leader,
            detail: detail.clone(),
        }),
        Err(StoreError::Stopped) => Err(StoreError::Stopped),
        Err(StoreError::NoSpace) => Err(StoreError::NoSpace),
        Err(e) => Err(StoreError::Raft(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Readers that arrive during a confirmation share the next one, and
    /// every reader gets an index confirmed after it arrived.
    #[tokio::test]
    async fn readers_arriving_together_share_one_confirmation() {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let batcher = Arc::new(Batcher::start(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(n)
            }
        }));
        let first = {
            let b = batcher.clone();
            tokio::spawn(async move { b.read_index().await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // These arrive while confirmation 1 is under way.
        let later: Vec<_> = (0..20)
            .map(|_| {
                let b = batcher.clone();
                tokio::spawn(async move { b.read_index().await })
            })
            .collect();
        assert_eq!(first.await.expect("join").expect("index"), 1);
        for r in later {
            assert_eq!(r.await.expect("join").expect("index"), 2);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_confirmation_fails_its_group_only() {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let batcher = Batcher::start(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(StoreError::NoLeader)
                } else {
                    Ok(7)
                }
            }
        });
        assert!(matches!(
            batcher.read_index().await,
            Err(StoreError::NoLeader)
        ));
        assert_eq!(batcher.read_index().await.expect("index"), 7);
    }
}
