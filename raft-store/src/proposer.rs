//! Group commit on the leader: concurrent writes are proposed together as
//! one log entry ([`Command::Batch`]), so they share one replication round
//! and one fsync. A few batches are kept in flight; while they are, new
//! writes queue up and form the next batch, so batches grow with load and
//! a lone write goes out at once.

use std::sync::Arc;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{Result, StoreError};
use crate::types::{Command, Outcome, Raft, Response};

/// Batches proposed but not yet applied.
const MAX_IN_FLIGHT: usize = 4;
/// Upper bounds of one batch.
const MAX_COMMANDS: usize = 1024;
const MAX_BYTES: usize = 4 << 20;

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Response>>,
}

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(16 * MAX_COMMANDS);
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    /// Propose `cmd` (this master must be the leader) and wait for its result.
    pub async fn propose(&self, cmd: Command) -> Result<Response> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { cmd, reply })
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut bytes = first.cmd.approx_size();
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS && bytes < MAX_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.cmd.approx_size();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("skiff_store_proposal_batch").record(batch.len() as f64);
        let (mut cmds, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        let cmd = if cmds.len() == 1 {
            cmds.remove(0)
        } else {
            Command::Batch(cmds)
        };
        match raft.client_write_ff(cmd).await {
            Ok(pending) => {
                tokio::spawn(async move {
                    let result = pending.await;
                    drop(slot);
                    let result = match result {
                        Ok(Ok(r)) => Ok(r.data),
                        Ok(Err(ClientWriteError::ForwardToLeader(_))) => Err(StoreError::NoLeader),
                        Ok(Err(e)) => Err(StoreError::Raft(e.to_string())),
                        // The leader stepped down before the entry was applied.
                        Err(_) => Err(StoreError::NoLeader),
                    };
                    deliver(result, replies);
                });
            }
            Err(e) => deliver(Err(StoreError::Raft(e.to_string())), replies),
        }
    }
}

fn deliver(result: Result<Response>, mut replies: Vec<oneshot::Sender<Result<Response>>>) {
    match result {
        Ok(Response {
            outcome: Ok(Outcome::Batch(results)),
            ..
        }) if replies.len() > 1 => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(r));
            }
        }
        Ok(r) if replies.len() == 1 => {
            let _ = replies.remove(0).send(Ok(r));
        }
        Ok(other) => {
            for reply in replies {
                let _ = reply.send(Err(StoreError::Raft(format!(
                    "unexpected batch result {other:?}"
                ))));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let no_leader = matches!(e, StoreError::NoLeader);
            for reply in replies {
                let err = if no_leader {
                    StoreError::NoLeader
                } else {
                    StoreError::Raft(msg.clone())
                };
                let _ = reply.send(Err(err));
            }
        }
    }
}
