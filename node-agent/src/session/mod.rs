//! The agent's session with the masters: connect to one (any will do),
//! take the node's desired state on one long-lived control stream, send
//! reports back on it, and when the master dies or is cut off, move to
//! another (shuffled, with jittered backoff). Pods keep running meanwhile.
//!
//! - [`connect`]: QUIC connections and one-shot requests.
//! - [`renew`]: the node certificate, renewed before it expires.
//! - [`links`]: a connection to every master, for the streams masters open
//!   (logs, exec, attach).

pub mod connect;
pub mod links;
pub mod renew;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use proto::agent::{
    agent_request, frame, to_agent, AgentRequest, FromAgent, Hello, ResyncRequest, ToAgent,
};
use quinn::Connection;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::desired::Desired;
use crate::identity::Identity;
use crate::reports::Reports;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long to wait after a master said the node is not a member: nothing
/// will change that but a new join, so there is no hurry (a Node deleted
/// by mistake cannot be brought back for this certificate either).
pub(crate) const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// What serves a stream a master opens on any of the agent's connections
/// (logs, exec, attach, port-forward, stats: [`crate::streams`]).
pub type StreamServer = Arc<dyn Fn(quinn::SendStream, quinn::RecvStream) + Send + Sync>;

pub struct Session {
    pub data_dir: PathBuf,
    pub identity: Arc<RwLock<Identity>>,
    pub desired: Arc<Desired>,
    pub reports: Arc<Reports>,
    /// Streams masters open, on the session's connection as on the links
    /// (a master holds whichever of a node's connections came last).
    pub streams: StreamServer,
    pub endpoint: quinn::Endpoint,
    /// The control session's connection while it is up: one-shot requests
    /// (tokens) go on it rather than on a connection of their own.
    pub current: std::sync::Mutex<Option<Connection>>,
}

impl Session {
    pub fn node_name(&self) -> String {
        self.identity().cluster.node_name
    }

    pub(crate) fn identity(&self) -> Identity {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Connect to some master, trying each (in random order) once.
    pub async fn connect_any(&self) -> Result<(String, Connection)> {
        let id = self.identity();
        let mut masters = id.cluster.masters.clone();
        masters.shuffle(&mut rand::thread_rng());
        let mut last = None;
        for m in masters {
            match connect::connect(&self.endpoint, &m, id.client_tls()?, CONNECT_TIMEOUT).await {
                Ok(c) => return Ok((m, c)),
                Err(e) => {
                    tracing::info!(master = %m, "cannot connect: {e:#}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no masters known")))
    }

    fn set_current(&self, conn: Option<Connection>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    /// The control session's connection if it is up, else a new one.
    async fn any_connection(&self) -> Result<Connection> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|c| c.close_reason().is_none());
        match current {
            Some(c) => Ok(c),
            None => Ok(self.connect_any().await?.1),
        }
    }

    /// Keep a session up until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let attempt = async {
                let (master, conn) = self.connect_any().await?;
                tracing::info!(%master, "connected");
                metrics::counter!("skiff_agent_session_connects_total").increment(1);
                backoff = BACKOFF_MIN;
                let accepting = {
                    let (conn, streams) = (conn.clone(), self.streams.clone());
                    tokio::spawn(async move {
                        while let Ok((send, recv)) = conn.accept_bi().await {
                            streams(send, recv);
                        }
                    })
                };
                self.set_current(Some(conn.clone()));
                let r = self.serve(&conn).await;
                self.set_current(None);
                accepting.abort();
                if let Some(reason) = connect::refusal(&conn) {
                    return Err(connect::NotAMember { master, reason }.into());
                }
                conn.close(0u32.into(), b"session ended");
                r.with_context(|| format!("session with {master}"))
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = stop.cancelled() => return,
            };
            let mut refused = false;
            if let Err(e) = result {
                if connect::refusal_in(&e).is_some() {
                    refused = true;
                    tracing::error!(
                        data_dir = %self.data_dir.display(),
                        "{e:#}. This node is no longer a member of the cluster: its pods \
                         keep running, but it takes no more changes. To bring the machine \
                         back, remove its data directory and join it again with a bootstrap \
                         token (node-agent join). Trying again in {}s",
                        REFUSED_RETRY.as_secs()
                    );
                } else {
                    tracing::warn!("{e:#}; reconnecting");
                }
            }
            metrics::counter!("skiff_agent_session_reconnects_total").increment(1);
            let jitter = rand::thread_rng().gen_range(0.5..1.5);
            let wait = if refused {
                REFUSED_RETRY
            } else {
                backoff.mul_f64(jitter)
            };
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn serve(&self, conn: &Connection) -> Result<()> {
        let (mut send, mut recv) = conn.open_bi().await.context("opening the control stream")?;
        let hello = Hello {
            last_revision: if self.desired.synced() {
                self.desired.revision()
            } else {
                0
            },
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            held: if self.desired.synced() {
                self.desired.held()
            } else {
                Vec::new()
            },
        };
        frame::write(
            &mut send,
            &AgentRequest {
                request: Some(agent_request::Request::Hello(hello)),
            },
        )
        .await?;
        self.reports.resend_all();
        let reader = async {
            loop {
                let Some(f) = frame::read::<ToAgent, _>(&mut recv, frame::MAX_FRAME).await? else {
                    bail!("the master closed the control stream");
                };
                match f.message {
                    Some(to_agent::Message::Accepted(a)) => {
                        tracing::info!(master = %a.master, masters = ?a.masters, "session accepted");
                        self.learn_masters(a.masters);
                    }
                    Some(to_agent::Message::Snapshot(s)) => {
                        tracing::info!(
                            revision = s.revision,
                            objects = s.objects.len(),
                            "snapshot"
                        );
                        self.desired.replace(s);
                    }
                    Some(to_agent::Message::Delta(d)) => {
                        if let Err(gap) = self.desired.apply(d) {
                            tracing::warn!("{gap}; asking for a snapshot");
                            metrics::counter!("skiff_agent_gaps_total").increment(1);
                            return Ok::<_, anyhow::Error>(true);
                        }
                    }
                    Some(to_agent::Message::Acks(a)) => self.reports.acknowledged(&a.seqs),
                    Some(to_agent::Message::Refused(why)) => {
                        bail!("the master refused the session: {why}")
                    }
                    None => {}
                }
            }
        };
        let writer = async {
            loop {
                for f in self.reports.next().await {
                    frame::write(&mut send, &f).await?;
                }
            }
            #[allow(unreachable_code)]
            Ok::<_, anyhow::Error>(())
        };
        let gap = tokio::select! {
            r = reader => r?,
            r = writer => { r?; false }
            e = conn.closed() => bail!("connection lost: {e}"),
        };
        if gap {
            // Ask for a snapshot on the next session: forget the revision.
            let _ = frame::write(
                &mut send,
                &FromAgent {
                    message: Some(proto::agent::from_agent::Message::Resync(ResyncRequest {})),
                },
            )
            .await;
            self.desired.forget_revision();
            bail!("resynchronising");
        }
        Ok(())
    }

    fn learn_masters(&self, masters: Vec<String>) {
        if masters.is_empty() {
            return;
        }
        let mut id = self.identity.write().unwrap_or_else(|e| e.into_inner());
        if id.cluster.masters != masters {
            id.cluster.masters = masters;
            if let Err(e) = id.save_cluster(&self.data_dir) {
                tracing::warn!("saving the masters' addresses: {e:#}");
            }
        }
    }
}

/// Help text and units of the session's series (and its renewals').
pub fn describe_metrics() {
    use metrics::{describe_counter, Unit};
    describe_counter!(
        "skiff_agent_session_connects_total",
        Unit::Count,
        "Sessions to a master opened."
    );
    describe_counter!(
        "skiff_agent_session_reconnects_total",
        Unit::Count,
        "Sessions that ended and were opened again."
    );
    describe_counter!(
        "skiff_agent_gaps_total",
        Unit::Count,
        "Deltas that did not follow the revision held (a snapshot was asked for)."
    );
    describe_counter!(
        "skiff_agent_certificate_renewals_total",
        Unit::Count,
        "Node certificates renewed."
    );
    describe_counter!(
        "skiff_agent_tokens_fetched_total",
        Unit::Count,
        "Service account tokens fetched from the masters for pods' projected volumes."
    );
}

impl crate::pods::tokens::Issuer for Session {
    fn issue(
        &self,
        request: proto::agent::TokenRequest,
    ) -> futures::future::BoxFuture<'_, Result<proto::agent::TokenResponse, String>> {
        Box::pin(async move {
            let conn = self.any_connection().await.map_err(|e| format!("{e:#}"))?;
            connect::request(
                &conn,
                AgentRequest {
                    request: Some(agent_request::Request::Token(request)),
                },
                frame::MAX_FRAME,
            )
            .await
            .map_err(|e| format!("{e:#}"))
        })
    }
}
