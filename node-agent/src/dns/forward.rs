//! Queries for names outside the cluster domain, sent to the node's
//! resolvers over a few UDP sockets per upstream, each reused by every
//! query and carrying many at once.
//!
//! A query goes out under an id of the socket's choosing (clients' ids
//! collide: every resolver library starts somewhere), unused among the
//! socket's pending queries and random, so that a forged answer must
//! guess it; one task per socket reads the answers and hands each to the
//! query whose id and question it carries, with the client's id put back.
//! A query unanswered within the timeout is given up and the next
//! upstream asked. A socket whose reads fail is replaced on its next use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The largest UDP answer: anything an upstream sends fits.
const MAX_ANSWER: usize = 65535;

pub struct Forwarder {
    upstreams: Vec<Upstream>,
    timeout: Duration,
    opened: Arc<AtomicU64>,
    /// Ends the sockets' reader tasks when the forwarder goes.
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

struct Upstream {
    addr: SocketAddr,
    /// Filled on first use; a broken socket is replaced on its next.
    sockets: tokio::sync::Mutex<Vec<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

/// One upstream socket and the queries waiting for an answer on it.
struct Conn {
    sock: UdpSocket,
    pending: Mutex<HashMap<u16, Pending>>,
    broken: AtomicBool,
}

struct Pending {
    client_id: u16,
    queries: Vec<Query>,
    answer: oneshot::Sender<Vec<u8>>,
}

/// A pending query's entry, taken out however the wait ends (answered,
/// timed out, or the asker gone), so ids are never left taken.
struct Waiting<'a> {
    conn: &'a Conn,
    id: u16,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.conn.pending().remove(&self.id);
    }
}

impl Conn {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Forwarder {
    pub fn new(upstream: Vec<SocketAddr>, sockets: usize, timeout: Duration) -> Forwarder {
        let stop = CancellationToken::new();
        Forwarder {
            upstreams: upstream
                .into_iter()
                .map(|addr| Upstream {
                    addr,
                    sockets: tokio::sync::Mutex::new(vec![None; sockets.max(1)]),
                    next: AtomicUsize::new(0),
                })
                .collect(),
            timeout,
            opened: Arc::default(),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        }
    }

    /// Upstream sockets opened so far (replacements included).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Ask the upstreams in turn; the first answer, with the client's id.
    pub async fn forward(&self, query: &[u8], queries: &[Query]) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let client_id = u16::from_be_bytes([query[0], query[1]]);
        for upstream in &self.upstreams {
            let conn = match self.conn(upstream).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(upstream = %upstream.addr, "dns upstream socket: {e}");
                    continue;
                }
            };
            let (tx, rx) = oneshot::channel();
            let id = {
                let mut pending = conn.pending();
                let id = loop {
                    let id: u16 = rand::random();
                    if !pending.contains_key(&id) {
                        break id;
                    }
                };
                pending.insert(
                    id,
                    Pending {
                        client_id,
                        queries: queries.to_vec(),
                        answer: tx,
                    },
                );
                id
            };
            let _waiting = Waiting { conn: &conn, id };
            let mut out = query.to_vec();
            out[..2].copy_from_slice(&id.to_be_bytes());
            if let Err(e) = conn.sock.send(&out).await {
                tracing::debug!(upstream = %upstream.addr, "dns forward: {e}");
                continue;
            }
            match tokio::time::timeout(self.timeout, rx).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(_)) | Err(_) => {
                    metrics::counter!("skiff_dns_upstream_timeouts_total").increment(1);
                }
            }
        }
        None
    }

    /// A socket to `upstream`, in turn, opened if need be.
    async fn conn(&self, upstream: &Upstream) -> std::io::Result<Arc<Conn>> {
        let mut sockets = upstream.sockets.lock().await;
        let i = upstream.next.fetch_add(1, Ordering::Relaxed) % sockets.len();
        if let Some(c) = &sockets[i] {
            if !c.broken.load(Ordering::Relaxed) {
                return Ok(c.clone());
            }
        }
        let bind: SocketAddr = if upstream.addr.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let sock = UdpSocket::bind(bind).await?;
        // Connected: the kernel drops datagrams from anyone else.
        sock.connect(upstream.addr).await?;
        let conn = Arc::new(Conn {
            sock,
            pending: Mutex::default(),
            broken: AtomicBool::new(false),
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("skiff_dns_upstream_sockets_opened_total").increment(1);
        tokio::spawn(read_answers(conn.clone(), self.stop.clone()));
        sockets[i] = Some(conn.clone());
        Ok(conn)
    }
}

/// Hand each answer on `conn` to the query it answers.
async fn read_answers(conn: Arc<Conn>, stop: CancellationToken) {
    let mut buf = vec![0u8; MAX_ANSWER];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            r = conn.sock.recv(&mut buf) => match r {
                Ok(n) => n,
                // An ICMP unreachable from the upstream, reported on the
                // connected socket: its queries time out; the socket is fine.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    tracing::debug!("dns upstream socket failed (replaced on next use): {e}");
                    conn.broken.store(true, Ordering::Relaxed);
                    return;
                }
            },
        };
        let Ok(answer) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let pending = {
            let mut pending = conn.pending();
            match pending.get(&answer.id()) {
                // The id alone could be a stale or forged answer's.
                Some(p) if p.queries == answer.queries() => pending.remove(&answer.id()),
                _ => None,
            }
        };
        if let Some(p) = pending {
            let mut out = buf[..n].to_vec();
            out[..2].copy_from_slice(&p.client_id.to_be_bytes());
            let _ = p.answer.send(out);
        }
    }
}
