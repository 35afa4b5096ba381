//! Streams this master opens to a node: `kubectl logs`, `exec` and
//! `attach` (and `metrics.k8s.io`'s stats) reach the node through whichever
//! master kubectl asked, since
//! every agent keeps a connection to every master. The API's handlers
//! ([`crate::api`]) open them here by node name.

use std::collections::HashMap;
use std::sync::Mutex;

use proto::agent::{frame, master_request, MasterRequest, StatsRequest, StatsSummary, StreamReply};
use quinn::{Connection, RecvStream, SendStream};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("node {0} has no connection to this master (is its agent running?)")]
    NotConnected(String),
    #[error("{message}")]
    Refused { code: u16, message: String },
    #[error("stream to node {node}: {detail}")]
    Broken { node: String, detail: String },
}

/// One open connection of a node, and the uid of the Node its certificate
/// was issued for (None: a certificate from before they named one).
struct Open {
    conn: Connection,
    node_uid: Option<String>,
}

/// Each node's open connections to this master.
#[derive(Default)]
pub struct NodeConnections {
    /// Each node's open connections, oldest first. A node holds more than
    /// one now and then (its renewal's short connection beside its link),
    /// and the one that closes must not take the other with it.
    conns: Mutex<HashMap<String, Vec<Open>>>,
}

impl NodeConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Open>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, node: &str, conn: Connection, node_uid: Option<String>) {
        let mut conns = self.lock();
        conns
            .entry(node.to_string())
            .or_default()
            .push(Open { conn, node_uid });
        metrics::gauge!("skiff_agent_connections").set(conns.len() as f64);
    }

    /// Forget `conn`; the node's other connections stay.
    pub fn remove(&self, node: &str, conn: &Connection) {
        let mut conns = self.lock();
        if let Some(list) = conns.get_mut(node) {
            list.retain(|o| o.conn.stable_id() != conn.stable_id());
            if list.is_empty() {
                conns.remove(node);
            }
        }
        metrics::gauge!("skiff_agent_connections").set(conns.len() as f64);
    }

    /// Close each of `node`'s connections whose certificate's Node uid
    /// `doomed` picks, with `code` and `reason` (which the agent logs);
    /// how many.
    pub fn close_where(
        &self,
        node: &str,
        doomed: impl Fn(Option<&str>) -> bool,
        code: u32,
        reason: &str,
    ) -> usize {
        let conns = self.lock();
        let Some(list) = conns.get(node) else {
            return 0;
        };
        let mut closed = 0;
        for o in list.iter().filter(|o| doomed(o.node_uid.as_deref())) {
            o.conn.close(code.into(), reason.as_bytes());
            closed += 1;
        }
        closed
    }

    /// Each connected node with the Node uids its connections' certificates
    /// name.
    pub fn bindings(&self) -> Vec<(String, Vec<Option<String>>)> {
        self.lock()
            .iter()
            .map(|(node, list)| {
                let mut uids: Vec<Option<String>> =
                    list.iter().map(|o| o.node_uid.clone()).collect();
                uids.dedup();
                (node.clone(), uids)
            })
            .collect()
    }

    /// The node's newest connection still open.
    fn newest(&self, node: &str) -> Option<Connection> {
        self.lock()
            .get(node)?
            .iter()
            .rev()
            .map(|o| &o.conn)
            .find(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Open a stream to `node`, send `req`, and wait for the agent's go-ahead.
    pub async fn open(
        &self,
        node: &str,
        req: MasterRequest,
    ) -> Result<(SendStream, RecvStream), StreamError> {
        let conn = self
            .newest(node)
            .ok_or_else(|| StreamError::NotConnected(node.to_string()))?;
        let broken = |detail: String| StreamError::Broken {
            node: node.to_string(),
            detail,
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| broken(e.to_string()))?;
        frame::write(&mut send, &req)
            .await
            .map_err(|e| broken(e.to_string()))?;
        match frame::read::<StreamReply, _>(&mut recv, 1 << 20).await {
            Ok(Some(r)) if r.error.is_empty() => Ok((send, recv)),
            Ok(Some(r)) => Err(StreamError::Refused {
                code: u16::try_from(r.code).unwrap_or(500),
                message: r.error,
            }),
            Ok(None) => Err(broken("the agent closed the stream".into())),
            Err(e) => Err(broken(e.to_string())),
        }
    }

    /// The node's latest CPU and memory sample.
    pub async fn stats(&self, node: &str) -> Result<StatsSummary, StreamError> {
        let req = MasterRequest {
            request: Some(master_request::Request::Stats(StatsRequest {})),
        };
        let (_send, mut recv) = self.open(node, req).await?;
        match frame::read::<StatsSummary, _>(&mut recv, 16 << 20).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(StreamError::Broken {
                node: node.to_string(),
                detail: "the agent closed the stream".into(),
            }),
            Err(e) => Err(StreamError::Broken {
                node: node.to_string(),
                detail: e.to_string(),
            }),
        }
    }
}
