//! What the agent has to tell the masters, waiting for the session to send
//! it: the node's status, Lease renewals, and pod statuses, each sent when
//! it changes. A new session sends everything again (the master it reaches
//! may have missed what the last one was told).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use proto::agent::{from_agent, FromAgent, LeaseRenewal, NodeReport, PodReport, PodReports};
use tokio::sync::Notify;

/// Pod reports per frame at most.
const BATCH: usize = 100;

#[derive(Default)]
struct Pending {
    node: Option<NodeReport>,
    node_dirty: bool,
    lease_due: bool,
    /// The Lease's duration, as the renewal says it.
    lease_seconds: i32,
    pods: HashMap<String, PodReport>,
    dirty: BTreeSet<String>,
}

#[derive(Default)]
pub struct Reports {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Reports {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn node(&self, r: NodeReport) {
        let mut p = self.lock();
        if p.node.as_ref() != Some(&r) {
            p.node = Some(r);
            p.node_dirty = true;
            drop(p);
            self.notify.notify_one();
        }
    }

    /// Renew the node's Lease for `seconds`.
    pub fn renew_lease(&self, seconds: i32) {
        let mut p = self.lock();
        p.lease_due = true;
        p.lease_seconds = seconds;
        drop(p);
        self.notify.notify_one();
    }

    pub fn pod(&self, r: PodReport) {
        let mut p = self.lock();
        if p.pods.get(&r.uid) != Some(&r) {
            p.dirty.insert(r.uid.clone());
            p.pods.insert(r.uid.clone(), r);
            drop(p);
            self.notify.notify_one();
        }
    }

    /// The pod is gone: nothing more to say of it.
    pub fn forget_pod(&self, uid: &str) {
        let mut p = self.lock();
        p.pods.remove(uid);
        p.dirty.remove(uid);
    }

    /// A new session: everything is news to it.
    pub fn resend_all(&self) {
        let mut p = self.lock();
        p.node_dirty = p.node.is_some();
        p.lease_due = true;
        let uids: Vec<String> = p.pods.keys().cloned().collect();
        p.dirty.extend(uids);
        drop(p);
        self.notify.notify_one();
    }

    /// The next frames to send, waiting until there are some.
    pub async fn next(&self) -> Vec<FromAgent> {
        loop {
            let notified = self.notify.notified();
            let frames = self.take();
            if !frames.is_empty() {
                return frames;
            }
            notified.await;
        }
    }

    fn take(&self) -> Vec<FromAgent> {
        let mut p = self.lock();
        let mut out = Vec::new();
        let frame = |m| FromAgent { message: Some(m) };
        if p.node_dirty {
            p.node_dirty = false;
            if let Some(n) = p.node.clone() {
                out.push(frame(from_agent::Message::Node(n)));
            }
        }
        if p.lease_due && p.node.is_some() {
            p.lease_due = false;
            out.push(frame(from_agent::Message::Lease(LeaseRenewal {
                duration_seconds: p.lease_seconds,
            })));
        }
        while !p.dirty.is_empty() {
            let uids: Vec<String> = p.dirty.iter().take(BATCH).cloned().collect();
            let mut pods = Vec::with_capacity(uids.len());
            for uid in uids {
                p.dirty.remove(&uid);
                if let Some(r) = p.pods.get(&uid) {
                    pods.push(r.clone());
                }
            }
            out.push(frame(from_agent::Message::Pods(PodReports { pods })));
        }
        out
    }
}
