//! Group commit. Concurrent writes on a master are gathered into one batch:
//! on the leader a batch becomes one log entry ([`Command::Batch`]), sharing
//! one replication round and one fsync; on a follower it travels to the
//! leader in one forwarding call. A few batches are kept in flight; while
//! they are, new writes queue up and form the next batch, so batches grow
//! with load and a lone write goes out at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{Result, StoreError};
use crate::network::client::Peers;
use crate::network::forward::{Forwarded, Reply};
use crate::types::{Command, NodeId, Outcome, Raft, Response};

/// Batches sent but not yet answered.
const MAX_IN_FLIGHT: usize = 4;
/// How long a batch forwarded to the leader may take, unless the leader
/// changes first.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bounds of one batch.
const MAX_COMMANDS: usize = 1024;
const MAX_BYTES: usize = 4 << 20;

/// Finds the leader and hands it batches of commands.
#[derive(Clone)]
pub struct Router {
    pub id: NodeId,
    pub raft: Raft,
    pub peers: Peers,
    /// How long to wait for a leader to be known.
    pub patience: Duration,
    /// Set on a leader handing over its leadership ([`crate::handoff`]):
    /// it proposes nothing more.
    pub stepping_down: Arc<AtomicBool>,
}

/// How long a batch that no leader took waits for one that will: a leader
/// that died is replaced after its followers' lease and an election
/// timeout (1.4 to 1.8 s by default), and nothing was proposed meanwhile,
/// so sending it again is safe.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(5);

impl Router {
    /// The leader's id and peer URL, waiting a while for one to emerge.
    pub async fn leader(&self) -> Result<(NodeId, String)> {
        let metrics = self
            .raft
            .wait(Some(self.patience))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await
            .map_err(|_| StoreError::NoLeader)?;
        let leader = metrics.current_leader.ok_or(StoreError::NoLeader)?;
        let url = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|m| m.peer_url.clone())
            .ok_or(StoreError::NoLeader)?;
        Ok((leader, url))
    }

    pub fn set_stepping_down(&self) {
        self.stepping_down.store(true, Ordering::Release);
    }

    pub fn is_stepping_down(&self) -> bool {
        self.stepping_down.load(Ordering::Acquire)
    }

    /// Commit `cmds` through the leader, wherever it is; one result each.
    /// A batch the leader refused before proposing it (it no longer leads,
    /// or is handing over), or that never reached it (it is down), goes to
    /// the next leader, as long as some writer still waits for it
    /// (`abandoned` says when none does: a write its client gave up on is
    /// not made later behind its back).
    async fn submit(
        &self,
        cmds: Vec<Command>,
        abandoned: impl Fn() -> bool,
    ) -> Result<Vec<Response>> {
        let deadline = tokio::time::Instant::now() + FAILOVER_PATIENCE;
        let mut cmds = cmds;
        loop {
            let (leader, url) = self.leader().await?;
            let result = if leader == self.id {
                self.commit_from(&mut cmds).await
            } else {
                self.forward(leader, &url, &mut cmds).await
            };
            match result {
                Err(StoreError::NoLeader)
                    if !cmds.is_empty()
                        && !abandoned()
                        && tokio::time::Instant::now() < deadline =>
                {
                    metrics::counter!("skiff_store_proposals_redirected_total").increment(1);
                    let left = deadline - tokio::time::Instant::now();
                    let _ = self
                        .raft
                        .wait(Some(left))
                        .metrics(
                            |m| m.current_leader.is_some_and(|l| l != leader),
                            "another leader",
                        )
                        .await;
                }
                other => return other,
            }
        }
    }

    /// [`Router::commit`], keeping the commands for another try if this
    /// master is handing over its leadership.
    /// (Refused by openraft itself, the commands are gone: `cmds` is left
    /// empty and the refusal goes to the writers.)
    async fn commit_from(&self, cmds: &mut Vec<Command>) -> Result<Vec<Response>> {
        if self.is_stepping_down() {
            return Err(StoreError::NoLeader);
        }
        self.commit(std::mem::take(cmds)).await
    }

    /// Hand `cmds` to `leader`; they are kept if it refused them unproposed.
    async fn forward(
        &self,
        leader: NodeId,
        url: &str,
        cmds: &mut Vec<Command>,
    ) -> Result<Vec<Response>> {
        // A large write (deleting a big prefix) may take the leader many
        // seconds, so the call is given long; but if this master stops
        // seeing `leader` as the leader (it stopped, or lost its quorum),
        // the call is abandoned at once so the next batch finds the new one.
        let wait = self
            .raft
            .wait(Some(FORWARD_TIMEOUT + Duration::from_secs(1)));
        let deposed = wait.metrics(|m| m.current_leader != Some(leader), "leader changed");
        let request = Forwarded::WriteBatch(std::mem::take(cmds));
        let call = self
            .peers
            .forward_with_timeout(leader, url, &request, FORWARD_TIMEOUT);
        let result = tokio::select! {
            reply = call => match reply {
                Ok(Reply::WriteBatch(r)) => Ok(r),
                Ok(other) => Err(StoreError::Raft(format!("unexpected reply {other:?}"))),
                Err(e) => Err(e),
            },
            _ = deposed => Err(StoreError::Forward {
                leader,
                detail: "the leader changed before it answered".into(),
            }),
        };
        if matches!(result, Err(StoreError::NoLeader)) {
            if let Forwarded::WriteBatch(kept) = request {
                *cmds = kept;
            }
        }
        result
    }

    /// As the leader: append `cmds` as one entry and wait until it is applied.
    pub async fn commit(&self, mut cmds: Vec<Command>) -> Result<Vec<Response>> {
        let n = cmds.len();
        let cmd = if n == 1 {
            cmds.remove(0)
        } else {
            Command::Batch(Arc::new(cmds))
        };
        let resp = self.raft.client_write(cmd).await.map_err(|e| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => StoreError::NoLeader,
            other => StoreError::Raft(other.to_string()),
        })?;
        match resp.data {
            Response {
                outcome: Ok(Outcome::Batch(results)),
                ..
            } if n > 1 => Ok(results),
            single if n == 1 => Ok(vec![single]),
            other => Err(StoreError::Raft(format!(
                "unexpected batch result {other:?}"
            ))),
        }
    }
}

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<Response>>,
}

/// One proposal counted as pending (`etcd_server_proposals_pending`) from
/// its submission until it is answered or abandoned.
struct PendingCount;

impl PendingCount {
    fn start() -> Self {
        metrics::gauge!("etcd_server_proposals_pending").increment(1.0);
        PendingCount
    }
}

impl Drop for PendingCount {
    fn drop(&mut self) {
        metrics::gauge!("etcd_server_proposals_pending").decrement(1.0);
    }
}

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    pub fn start(router: Router) -> Self {
        let (tx, rx) = mpsc::channel(16 * MAX_COMMANDS);
        tokio::spawn(run(Arc::new(router), rx));
        Proposer { tx }
    }

    /// Commit `cmd` through the leader and wait for its result.
    pub async fn propose(&self, cmd: Command) -> Result<Response> {
        let _pending = PendingCount::start();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { cmd, reply })
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

async fn run(router: Arc<Router>, mut rx: mpsc::Receiver<Pending>) {
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
        let (cmds, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        let router = router.clone();
        tokio::spawn(async move {
            let result = router
                .submit(cmds, || replies.iter().all(|r| r.is_closed()))
                .await;
            drop(slot);
            deliver(result, replies);
        });
    }
}

fn deliver(result: Result<Vec<Response>>, replies: Vec<oneshot::Sender<Result<Response>>>) {
    match result {
        Ok(results) if results.len() == replies.len() => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(r));
            }
        }
        Ok(results) => {
            metrics::counter!("etcd_server_proposals_failed_total").increment(replies.len() as u64);
            let msg = format!("{} results for {} commands", results.len(), replies.len());
            for reply in replies {
                let _ = reply.send(Err(StoreError::Raft(msg.clone())));
            }
        }
        Err(e) => {
            // Every command of the batch shares the fate of the call.
            metrics::counter!("etcd_server_proposals_failed_total").increment(replies.len() as u64);
            let msg = e.to_string();
            for reply in replies {
                let err = match &e {
                    StoreError::NoLeader => StoreError::NoLeader,
                    StoreError::Forward { leader, .. } => StoreError::Forward {
                        leader: *leader,
                        detail: msg.clone(),
                    },
                    _ => StoreError::Raft(msg.clone()),
                };
                let _ = reply.send(Err(err));
            }
        }
    }
}
