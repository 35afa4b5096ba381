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

/// Each node's latest connection to this master.
#[derive(Default)]
pub struct NodeConnections {
    conns: Mutex<HashMap<String, Connection>>,
}

impl NodeConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, node: &str, conn: Connection) {
        self.lock().insert(node.to_string(), conn);
        metrics::gauge!("skiff_agent_connections").set(self.lock().len() as f64);
    }

    /// Forget `conn` (unless the node has connected again since).
    pub fn remove(&self, node: &str, conn: &Connection) {
        let mut conns = self.lock();
        if conns
            .get(node)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            conns.remove(node);
        }
        metrics::gauge!("skiff_agent_connections").set(conns.len() as f64);
    }

    /// Open a stream to `node`, send `req`, and wait for the agent's go-ahead.
    pub async fn open(
        &self,
        node: &str,
        req: MasterRequest,
    ) -> Result<(SendStream, RecvStream), StreamError> {
        let conn = self
            .lock()
            .get(node)
            .cloned()
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
