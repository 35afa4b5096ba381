//! A leader that is stopped gracefully hands its leadership to the most
//! caught-up voter first, so the cluster is without a leader for about one
//! election timeout rather than waiting for its followers to notice the
//! silence (openraft 0.9 has no leadership transfer of its own).
//!
//! The steps:
//!
//! 1. The leader stops taking writes and read indexes: they are refused as
//!    "not the leader" before anything is proposed, and the masters that
//!    forwarded them send them again to the next leader
//!    ([`crate::proposer`]).
//! 2. It stops sending heartbeats and waits until the chosen voter has
//!    every entry of its log.
//! 3. It waits out the followers' leader lease (the longest election
//!    timeout since they last heard from it): until then a voter refuses
//!    to vote for anyone, as Raft's leader stickiness wants.
//! 4. It asks the chosen voter to campaign ([`crate::network::forward::Forwarded::Campaign`]),
//!    again if a try fails, until another master leads or it gives up.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::StoreError;
use crate::network::forward::{Forwarded, Reply};
use crate::node::Store;
use crate::types::NodeId;

/// How long the chosen voter gets to catch up with the leader's log.
const CATCH_UP: Duration = Duration::from_secs(1);
/// A margin over the leader lease, for the last append still on its way.
const LEASE_MARGIN: Duration = Duration::from_millis(150);
/// Campaign requests before the leader stops anyway.
const TRIES: usize = 4;
/// How long one campaign gets to make another master the leader.
const CAMPAIGN_WAIT: Duration = Duration::from_millis(700);

/// What became of a handoff.
#[derive(Debug, PartialEq)]
pub enum Handoff {
    /// This master did not lead, or led alone: nothing to hand over.
    NotLeading,
    /// `to` leads now.
    Done { to: NodeId, took: Duration },
    /// No voter took over (the stop goes on; the followers elect one
    /// once they miss the heartbeats).
    Failed(String),
}

impl Store {
    /// As the leader, hand leadership to another voter before stopping
    /// (see the module). This master takes no writes afterwards.
    pub async fn hand_off(&self) -> Handoff {
        let started = Instant::now();
        let metrics = self.raft().metrics().borrow().clone();
        if !self.is_leader() || self.is_removed() {
            return Handoff::NotLeading;
        }
        let voters: Vec<NodeId> = metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id())
            .collect();
        if voters.is_empty() {
            return Handoff::NotLeading;
        }
        self.router().set_stepping_down();
        self.raft().runtime_config().heartbeat(false);
        let Some(target) = self.caught_up_voter(&voters).await else {
            return Handoff::Failed("no voter caught up with the leader's log".into());
        };
        tokio::time::sleep(self.config().election_timeout.1 + LEASE_MARGIN).await;
        let Some(url) = metrics
            .membership_config
            .membership()
            .get_node(&target)
            .map(|m| m.peer_url.clone())
        else {
            return Handoff::Failed(format!("voter {target:x} has no peer URL"));
        };
        let mut last = String::new();
        for _ in 0..TRIES {
            let asked = self
                .peers()
                .forward_with_timeout(target, &url, &Forwarded::Campaign, CAMPAIGN_WAIT)
                .await;
            match asked {
                Ok(Reply::Done) => {}
                Ok(other) => last = format!("unexpected reply {other:?}"),
                // Not reachable (stopped too, as when every master is
                // stopped in turn): asking again would not help.
                Err(StoreError::NoLeader) => {
                    return Handoff::Failed(format!("voter {target:x} is not reachable"));
                }
                Err(e) => last = e.to_string(),
            }
            let moved = self
                .raft()
                .wait(Some(CAMPAIGN_WAIT))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != self.id()),
                    "another leader",
                )
                .await;
            if let Ok(m) = moved {
                let to = m.current_leader.unwrap_or(target);
                return Handoff::Done {
                    to,
                    took: started.elapsed(),
                };
            }
            if last.is_empty() {
                last = format!("{target:x} campaigned but did not win");
            }
        }
        Handoff::Failed(last)
    }

    /// The voter with the most of this leader's log, once it has all of it
    /// (nothing new is appended while stepping down).
    async fn caught_up_voter(&self, voters: &[NodeId]) -> Option<NodeId> {
        let deadline = Instant::now() + CATCH_UP;
        let mut rx = self.raft().metrics();
        loop {
            let best = {
                let m = rx.borrow_and_update();
                let last = m.last_log_index;
                let replication = m.replication.as_ref()?;
                voters
                    .iter()
                    .filter_map(|v| {
                        let matched = replication.get(v)?.as_ref().map(|l| l.index);
                        Some((matched, *v))
                    })
                    .max()
                    .filter(|(matched, _)| *matched >= last)
                    .map(|(_, v)| v)
            };
            if best.is_some() {
                return best;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }
}
