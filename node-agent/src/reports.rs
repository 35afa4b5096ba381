//! What the agent has to tell the masters, waiting for the session to send
//! it: the node's status, Lease renewals, and pod statuses, each sent when
//! it changes.
//!
//! Node and pod reports carry a `seq`, and the master acknowledges each
//! once it is written to the store (or can never be: the pod is gone). A
//! report not acknowledged is sent again, after a back-off that grows
//! while it stays unacknowledged, so a status the master failed to write
//! is not lost. A pod's final report (its containers are gone) is
//! forgotten once acknowledged. A new session sends every report again
//! (the master it reaches may have missed what the last one was told).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use proto::agent::{from_agent, FromAgent, LeaseRenewal, NodeReport, PodReport, PodReports};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Pod reports per frame at most.
const BATCH: usize = 100;
/// How long a sent report waits for its acknowledgement before it is sent
/// again, at first and at most (doubling in between).
const RESEND_FIRST: Duration = Duration::from_secs(3);
const RESEND_MAX: Duration = Duration::from_secs(30);

/// Where a report is in being sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// To be sent as soon as the session can.
    Due,
    /// Sent; to be sent again if not acknowledged by then.
    Sent {
        again_at: Instant,
    },
    Acknowledged,
}

/// A report and where it is in being sent.
#[derive(Debug)]
struct Entry<T> {
    /// The report, its `seq` set.
    report: T,
    state: State,
    /// How long to wait for the acknowledgement of the next send.
    wait: Duration,
}

impl<T> Entry<T> {
    fn new(report: T) -> Self {
        Entry {
            report,
            state: State::Due,
            wait: RESEND_FIRST,
        }
    }

    fn is_due(&self, now: Instant) -> bool {
        match self.state {
            State::Due => true,
            State::Sent { again_at } => again_at <= now,
            State::Acknowledged => false,
        }
    }

    /// When it will be due, if it is waiting to be sent or acknowledged.
    fn due_at(&self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Due => Some(now),
            State::Sent { again_at } => Some(again_at),
            State::Acknowledged => None,
        }
    }

    fn waiting(&self) -> bool {
        self.state != State::Acknowledged
    }

    /// Sent now: due again unless acknowledged in time.
    fn sent(&mut self, now: Instant) {
        self.state = State::Sent {
            again_at: now + self.wait,
        };
        self.wait = (self.wait * 2).min(RESEND_MAX);
    }

    fn send_now(&mut self) {
        self.state = State::Due;
        self.wait = RESEND_FIRST;
    }
}

#[derive(Default)]
struct Pending {
    next_seq: u64,
    node: Option<Entry<NodeReport>>,
    lease_due: bool,
    /// The Lease's duration, as the renewal says it.
    lease_seconds: i32,
    pods: HashMap<String, Entry<PodReport>>,
    /// The pod (uid) each unacknowledged seq is for.
    by_seq: HashMap<u64, String>,
}

impl Pending {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Reports sent or to be sent, not yet acknowledged.
    fn unacknowledged(&self) -> usize {
        self.pods.values().filter(|e| e.waiting()).count()
            + self.node.as_ref().map_or(0, |n| n.waiting() as usize)
    }

    fn publish(&self) {
        metrics::gauge!("skiff_agent_reports_unacknowledged").set(self.unacknowledged() as f64);
    }

    /// The earliest time a report is due, if any is waiting.
    fn earliest_due(&self, now: Instant) -> Option<Instant> {
        let node = self.node.iter().filter_map(|n| n.due_at(now));
        node.chain(self.pods.values().filter_map(|p| p.due_at(now)))
            .min()
    }
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

    pub fn node(&self, mut r: NodeReport) {
        let mut p = self.lock();
        if let Some(n) = &p.node {
            r.seq = n.report.seq;
            if n.report == r {
                return;
            }
        }
        r.seq = p.seq();
        p.node = Some(Entry::new(r));
        drop(p);
        self.notify.notify_one();
    }

    /// Renew the node's Lease for `seconds`.
    pub fn renew_lease(&self, seconds: i32) {
        let mut p = self.lock();
        p.lease_due = true;
        p.lease_seconds = seconds;
        drop(p);
        self.notify.notify_one();
    }

    /// The pod's status (its `seq` is set here).
    pub fn pod(&self, mut r: PodReport) {
        let mut p = self.lock();
        if let Some(old) = p.pods.get(&r.uid) {
            r.seq = old.report.seq;
            if old.report == r {
                return;
            }
            let stale = old.report.seq;
            p.by_seq.remove(&stale);
        }
        let seq = p.seq();
        r.seq = seq;
        tracing::debug!(pod = %r.name, uid = %r.uid, seq, terminated = r.terminated, "pod report");
        p.by_seq.insert(seq, r.uid.clone());
        p.pods.insert(r.uid.clone(), Entry::new(r));
        drop(p);
        self.notify.notify_one();
    }

    /// The pod is gone: nothing more to say of it.
    pub fn forget_pod(&self, uid: &str) {
        let mut p = self.lock();
        if let Some(e) = p.pods.remove(uid) {
            p.by_seq.remove(&e.report.seq);
        }
    }

    /// The master is done with these reports. A pod's final report is
    /// forgotten; any other stays, to be sent again to the next session.
    pub fn acknowledged(&self, seqs: &[u64]) {
        let mut p = self.lock();
        for seq in seqs {
            if let Some(n) = p.node.as_mut().filter(|n| n.report.seq == *seq) {
                n.state = State::Acknowledged;
                continue;
            }
            let Some(uid) = p.by_seq.remove(seq) else {
                continue; // an older version of a report since replaced
            };
            let last = p.pods.get(&uid).is_some_and(|e| e.report.terminated);
            tracing::debug!(%uid, seq, last, "pod report acknowledged");
            if last {
                p.pods.remove(&uid);
            } else if let Some(e) = p.pods.get_mut(&uid) {
                e.state = State::Acknowledged;
            }
        }
        p.publish();
    }

    /// How many reports wait for an acknowledgement or a send.
    pub fn unacknowledged(&self) -> usize {
        self.lock().unacknowledged()
    }

    /// A new session: everything is news to it.
    pub fn resend_all(&self) {
        let mut p = self.lock();
        p.lease_due = true;
        let Pending {
            node, pods, by_seq, ..
        } = &mut *p;
        if let Some(n) = node.as_mut() {
            n.send_now();
        }
        for e in pods.values_mut() {
            e.send_now();
            by_seq.insert(e.report.seq, e.report.uid.clone());
        }
        drop(p);
        self.notify.notify_one();
    }

    /// The next frames to send, waiting until there are some.
    pub async fn next(&self) -> Vec<FromAgent> {
        loop {
            let notified = self.notify.notified();
            let (frames, due) = self.take(Instant::now());
            if !frames.is_empty() {
                return frames;
            }
            match due {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The frames due at `now`, and when the next report will be due.
    fn take(&self, now: Instant) -> (Vec<FromAgent>, Option<Instant>) {
        let mut p = self.lock();
        let mut out = Vec::new();
        let frame = |m| FromAgent { message: Some(m) };
        if let Some(n) = p.node.as_mut().filter(|n| n.is_due(now)) {
            n.sent(now);
            out.push(frame(from_agent::Message::Node(n.report.clone())));
        }
        if p.lease_due && p.node.is_some() {
            p.lease_due = false;
            out.push(frame(from_agent::Message::Lease(LeaseRenewal {
                duration_seconds: p.lease_seconds,
            })));
        }
        // In a stable order, so that a large backlog goes out evenly.
        let due: BTreeSet<String> = p
            .pods
            .iter()
            .filter(|(_, e)| e.is_due(now))
            .map(|(uid, _)| uid.clone())
            .collect();
        let resent = due
            .iter()
            .filter(|uid| p.pods.get(*uid).is_some_and(|e| e.wait > RESEND_FIRST))
            .count();
        if resent > 0 {
            metrics::counter!("skiff_agent_pod_reports_resent_total").increment(resent as u64);
        }
        let mut due = due.into_iter().peekable();
        while due.peek().is_some() {
            let pods: Vec<PodReport> = due
                .by_ref()
                .take(BATCH)
                .filter_map(|uid| {
                    let e = p.pods.get_mut(&uid)?;
                    e.sent(now);
                    Some(e.report.clone())
                })
                .collect();
            out.push(frame(from_agent::Message::Pods(PodReports { pods })));
        }
        p.publish();
        (out, p.earliest_due(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, status: &str, terminated: bool) -> PodReport {
        PodReport {
            namespace: "default".into(),
            name: format!("p-{uid}"),
            uid: uid.into(),
            status_json: status.as_bytes().to_vec(),
            terminated,
            seq: 0,
        }
    }

    fn sent_pods(frames: &[FromAgent]) -> Vec<PodReport> {
        frames
            .iter()
            .filter_map(|f| match &f.message {
                Some(from_agent::Message::Pods(p)) => Some(p.pods.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn an_unacknowledged_report_is_sent_again_until_acknowledged() {
        let r = Reports::default();
        let mut now = Instant::now();
        r.pod(pod("a", "{}", false));
        let first = sent_pods(&r.take(now).0);
        assert_eq!(first.len(), 1);
        // Not due again before its wait is over...
        assert!(sent_pods(&r.take(now).0).is_empty());
        now += RESEND_FIRST;
        // ...then sent again, same report, same seq.
        let again = sent_pods(&r.take(now).0);
        assert_eq!(again, first);
        // The wait doubles.
        now += RESEND_FIRST;
        assert!(sent_pods(&r.take(now).0).is_empty());
        now += RESEND_FIRST;
        assert_eq!(sent_pods(&r.take(now).0).len(), 1);
        r.acknowledged(&[first[0].seq]);
        assert_eq!(r.unacknowledged(), 0);
        now += RESEND_MAX;
        assert!(sent_pods(&r.take(now).0).is_empty());
    }

    #[test]
    fn a_newer_report_replaces_an_unacknowledged_one() {
        let r = Reports::default();
        let now = Instant::now();
        r.pod(pod("a", "{\"phase\":\"Pending\"}", false));
        let old = sent_pods(&r.take(now).0);
        r.pod(pod("a", "{\"phase\":\"Running\"}", false));
        let new = sent_pods(&r.take(now).0);
        assert_eq!(new.len(), 1);
        assert!(new[0].seq > old[0].seq);
        // The old one's acknowledgement does not settle the new one.
        r.acknowledged(&[old[0].seq]);
        assert_eq!(r.unacknowledged(), 1);
        r.acknowledged(&[new[0].seq]);
        assert_eq!(r.unacknowledged(), 0);
        // The same report again is no news.
        r.pod(pod("a", "{\"phase\":\"Running\"}", false));
        assert!(sent_pods(&r.take(now).0).is_empty());
    }

    #[test]
    fn a_final_report_is_forgotten_once_acknowledged() {
        let r = Reports::default();
        let now = Instant::now();
        r.pod(pod("a", "{}", false));
        r.pod(pod("b", "{}", true));
        let sent = sent_pods(&r.take(now).0);
        let seqs: Vec<u64> = sent.iter().map(|p| p.seq).collect();
        r.acknowledged(&seqs);
        // A new session hears the live pod's status again, not the deleted one's.
        r.resend_all();
        let resent = sent_pods(&r.take(now).0);
        assert_eq!(
            resent.iter().map(|p| p.uid.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
    }

    #[test]
    fn the_node_report_is_acknowledged_too() {
        let r = Reports::default();
        let mut now = Instant::now();
        r.node(NodeReport {
            status_json: b"{}".to_vec(),
            ..Default::default()
        });
        let sent = r.take(now).0;
        let seq = match &sent[0].message {
            Some(from_agent::Message::Node(n)) => n.seq,
            other => panic!("not a node report: {other:?}"),
        };
        assert!(seq > 0);
        now += RESEND_FIRST;
        assert_eq!(r.take(now).0.len(), 1, "sent again");
        r.acknowledged(&[seq]);
        now += RESEND_MAX;
        assert!(r.take(now).0.is_empty());
    }
}
