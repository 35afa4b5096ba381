//! Which nodes are members of the cluster. A node is one while its Node
//! object exists, and a node certificate works only for the Node it was
//! issued for: the uid it names ([`crate::pki::node_cert`]). So a node
//! whose Node is deleted is cut off at once, and a certificate issued
//! before a deletion stays void when a Node of the same name is created
//! again (by a new join, with another uid).
//!
//! - A connection is admitted only for a member ([`Membership::check`]),
//!   and a renewal is refused for anything else (`join::renew`).
//! - One watch of the Nodes keeps this master's view; when a Node is
//!   deleted, the connections its certificates hold are closed with
//!   [`close::NOT_A_MEMBER`] and the reason, which the agent logs.
//! - The view may lag the store by what this master has not applied yet:
//!   it admits at once, but it refuses or cuts off only after a
//!   linearizable read agrees (a node that joined through another master
//!   a moment ago is a member before this master has seen its Node).
//! - Every [`SWEEP`], and whenever the watch starts again, every connection
//!   is checked against the view (level-triggered: a missed deletion is
//!   repaired there).
//!
//! A certificate issued before certificates named a Node (None) is taken
//! for its name alone until its first renewal binds it to the Node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use proto::agent::close;

use super::streams::NodeConnections;
use crate::api::{Api, EventType, Filter, Resource, WatchEvent, WatchScope};

/// How often every connection is checked against the Nodes.
const SWEEP: Duration = Duration::from_secs(10);

fn nodes() -> &'static Resource {
    crate::api::find_resource("", "v1", "nodes").expect("nodes are served")
}

/// Whether a certificate naming Node uid `cert_uid` may act for a node
/// whose Node has uid `node_uid` (None: there is no such Node).
pub fn admits(node_uid: Option<&str>, cert_uid: Option<&str>) -> bool {
    match (node_uid, cert_uid) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(now), Some(issued_for)) => now == issued_for,
    }
}

/// Why a certificate is not admitted, for the agent's log.
pub fn refusal(node: &str, node_uid: Option<&str>, cert_uid: Option<&str>) -> String {
    match node_uid {
        None => format!(
            "node {node} is not a member of the cluster: its Node was deleted; \
             this certificate will not work again: join the node again with a bootstrap token"
        ),
        Some(now) => format!(
            "node {node}'s certificate was issued for an earlier Node of that name (uid {}); \
             the Node was deleted and created again (uid {now}); this certificate will not \
             work again: join the node again with a bootstrap token",
            cert_uid.unwrap_or("none")
        ),
    }
}

/// What the store says of a node's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A member; its Node's uid.
    Member(String),
    /// Not a member; why.
    NotMember(String),
    /// The store could not be read; why.
    CannotCheck(String),
}

/// Whether a certificate for `node` naming Node uid `cert_uid` is a
/// member's, by a linearizable read of its Node.
pub async fn check_in_store(api: &Api, node: &str, cert_uid: Option<&str>) -> Verdict {
    match api.get(nodes(), None, node).await {
        Ok(s) => {
            let uid = s.object["metadata"]["uid"].as_str().unwrap_or("");
            if admits(Some(uid), cert_uid) {
                Verdict::Member(uid.to_string())
            } else {
                Verdict::NotMember(refusal(node, Some(uid), cert_uid))
            }
        }
        Err(e) if e.code == StatusCode::NOT_FOUND => {
            Verdict::NotMember(refusal(node, None, cert_uid))
        }
        Err(e) => Verdict::CannotCheck(e.message),
    }
}

pub struct Membership {
    api: Api,
    connections: Arc<NodeConnections>,
    /// Each Node's uid, as this master's watch last saw it.
    view: Mutex<HashMap<String, String>>,
}

impl Membership {
    pub fn new(api: Api, connections: Arc<NodeConnections>) -> Membership {
        describe_metrics();
        Membership {
            api,
            connections,
            view: Mutex::new(HashMap::new()),
        }
    }

    fn seen(&self, node: &str) -> Option<String> {
        self.view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }

    /// Whether a certificate for `node` naming Node uid `cert_uid` is a
    /// member's: from this master's view when it says so, else from a
    /// linearizable read.
    pub async fn check(&self, node: &str, cert_uid: Option<&str>) -> Verdict {
        if let Some(uid) = self.seen(node).filter(|u| admits(Some(u), cert_uid)) {
            return Verdict::Member(uid);
        }
        check_in_store(&self.api, node, cert_uid).await
    }

    /// Close `node`'s connections whose certificates' Node uids `doomed`
    /// picks (they are not a member's).
    fn cut_off(&self, node: &str, doomed: impl Fn(Option<&str>) -> bool, reason: &str) {
        let closed = self
            .connections
            .close_where(node, doomed, close::NOT_A_MEMBER, reason);
        if closed > 0 {
            tracing::info!(%node, closed, %reason, "node connections closed");
            metrics::counter!("skiff_agent_connections_cut_off_total").increment(closed as u64);
        }
    }

    /// Keep the view and cut off non-members, for as long as the master runs.
    pub async fn run(self: Arc<Self>) {
        let watch = async {
            loop {
                let reason = self.follow().await;
                tracing::warn!("node membership watch ended ({reason}); listing again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let sweeps = async {
            loop {
                tokio::time::sleep(SWEEP).await;
                self.sweep().await;
            }
        };
        tokio::join!(watch, sweeps);
    }

    async fn follow(&self) -> String {
        let mut events = self.api.watch_events(WatchScope {
            resources: vec![(nodes(), None)],
            filter: Filter::everything(),
            after: 0,
            progress_every: None,
            previous: false,
        });
        while let Some(event) = events.recv().await {
            match event {
                WatchEvent::Changes {
                    changes, initial, ..
                } => {
                    let mut deleted = Vec::new();
                    {
                        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
                        if initial {
                            view.clear();
                        }
                        for c in changes {
                            let name = c.object["metadata"]["name"].as_str().unwrap_or("");
                            match c.kind {
                                EventType::Added | EventType::Modified => {
                                    let uid = c.object["metadata"]["uid"].as_str().unwrap_or("");
                                    view.insert(name.to_string(), uid.to_string());
                                }
                                EventType::Deleted => {
                                    let uid = view.remove(name);
                                    deleted.push((name.to_string(), uid));
                                }
                            }
                        }
                    }
                    // The deleted Node's own certificates (and those from
                    // before certificates named one) go; a certificate
                    // for a Node created again since stays.
                    for (node, uid) in deleted {
                        let reason = refusal(&node, None, None);
                        let issued_for_it = |u: Option<&str>| u.is_none() || u == uid.as_deref();
                        self.cut_off(&node, issued_for_it, &reason);
                    }
                    if initial {
                        self.sweep().await;
                    }
                }
                WatchEvent::Progress(_) => {}
                WatchEvent::Gone { compacted } => return format!("compacted at {compacted}"),
                WatchEvent::Failed(e) => return e,
            }
        }
        "closed".into()
    }

    /// Check every connection against the view; cut off those the store
    /// confirms are not a member's.
    async fn sweep(&self) {
        for (node, uids) in self.connections.bindings() {
            let seen = self.seen(&node);
            for cert_uid in uids {
                if admits(seen.as_deref(), cert_uid.as_deref()) {
                    continue;
                }
                if let Verdict::NotMember(reason) = self.check(&node, cert_uid.as_deref()).await {
                    self.cut_off(&node, |u| u == cert_uid.as_deref(), &reason);
                }
            }
        }
    }
}

/// Help text of the series this module and the refusals it decides count.
fn describe_metrics() {
    use metrics::{describe_counter, Unit};
    describe_counter!(
        "skiff_agent_connections_refused_total",
        Unit::Count,
        "Agent connections refused: the node is not a member (its Node was deleted or made again), or the master could not check."
    );
    describe_counter!(
        "skiff_agent_connections_cut_off_total",
        Unit::Count,
        "Open agent connections closed because their node's Node was deleted."
    );
    describe_counter!(
        "skiff_agent_renewals_refused_total",
        Unit::Count,
        "Node certificate renewals refused (the node is not a member, or a bad request)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_works_only_for_the_node_it_was_issued_for() {
        assert!(admits(Some("u1"), Some("u1")));
        assert!(!admits(Some("u2"), Some("u1")), "a Node created again");
        assert!(!admits(None, Some("u1")), "a deleted Node");
        assert!(!admits(None, None));
        assert!(admits(Some("u1"), None), "a certificate from before uids");
        assert!(refusal("n1", None, Some("u1")).contains("deleted"));
        let again = refusal("n1", Some("u2"), Some("u1"));
        assert!(
            again.contains("created again") && again.contains("u1"),
            "{again}"
        );
    }
}
