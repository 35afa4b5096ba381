//! Serving over UDP and TCP, within the server's [`Limits`]: a fixed
//! number of UDP queries answered at once (beyond it, SERVFAIL at once,
//! counted), a fixed number of TCP connections (beyond it, closed as they
//! arrive, counted), and TCP connections closed once idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{servfail, Limits, Server};

/// The largest query a client sends over UDP (EDNS's usual buffer).
const MAX_UDP_QUERY: usize = 4096;

/// Serve `server` on `addr`, UDP and TCP (the same port: with port 0, the
/// one UDP got), until `stop`; the address served.
pub async fn serve(
    server: Arc<Server>,
    addr: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let udp = UdpSocket::bind(addr).await?;
    let addr = udp.local_addr()?;
    let tcp = TcpListener::bind(addr).await?;
    tokio::spawn(serve_udp(server.clone(), udp, stop.clone()));
    tokio::spawn(serve_tcp(server, tcp, stop));
    Ok(addr)
}

fn shed(transport: &'static str) {
    metrics::counter!("skiff_dns_shed_total", "transport" => transport).increment(1);
}

async fn serve_udp(server: Arc<Server>, sock: UdpSocket, stop: CancellationToken) {
    let sock = Arc::new(sock);
    let in_flight = Arc::new(Semaphore::new(server.limits.udp_in_flight));
    let mut buf = vec![0u8; MAX_UDP_QUERY];
    loop {
        let (n, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => { tracing::debug!("dns recv: {e}"); continue }
            },
        };
        let query = buf[..n].to_vec();
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            // Full: an answer now beats a timeout later, and queueing would
            // only grow the backlog.
            shed("udp");
            if let Some(reply) = servfail(&query) {
                let _ = sock.try_send_to(&reply, from);
            }
            continue;
        };
        let (server, sock) = (server.clone(), sock.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(mut reply) = server.handle(&query).await {
                // Too long for UDP: truncated, the client asks over TCP.
                if reply.len() > 512 {
                    if let Ok(mut m) = Message::from_vec(&reply) {
                        m.take_answers();
                        m.set_truncated(true);
                        reply = m.to_vec().unwrap_or_default();
                    }
                }
                let _ = sock.send_to(&reply, from).await;
            }
        });
    }
}

async fn serve_tcp(server: Arc<Server>, listener: TcpListener, stop: CancellationToken) {
    let open = Arc::new(Semaphore::new(server.limits.tcp_connections));
    loop {
        let (conn, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, say: give the others time to close.
                    tracing::debug!("dns accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            shed("tcp");
            drop(conn);
            continue;
        };
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            metrics::gauge!("skiff_dns_tcp_connections").increment(1.0);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection(&server, conn, &server.limits) => {}
            }
            metrics::gauge!("skiff_dns_tcp_connections").decrement(1.0);
        });
    }
}

/// Queries on one connection, one after another, each within the idle
/// time: to start, to arrive whole, and for its answer to be taken.
async fn connection(server: &Server, mut conn: TcpStream, limits: &Limits) {
    let idle = limits.tcp_idle;
    loop {
        let len = match tokio::time::timeout(idle, conn.read_u16()).await {
            Ok(Ok(l)) => l as usize,
            _ => return,
        };
        let mut query = vec![0u8; len];
        match tokio::time::timeout(idle, conn.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = server.handle(&query).await else {
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let write = async {
            conn.write_u16(len).await?;
            conn.write_all(&reply).await
        };
        match tokio::time::timeout(idle, write).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The real server on loopback; its upstreams are UDP sockets in the
    //! test that answer as a resolver would (or, to test timeouts, not).

    use std::collections::HashSet;
    use std::net::Ipv4Addr;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    use hickory_proto::op::{MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

    use super::super::Settings;
    use super::*;
    use crate::desired::Desired;

    /// The metrics as a scrape shows them (one recorder for the process).
    fn metrics() -> &'static PrometheusHandle {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        HANDLE.get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the tests' metrics recorder")
        })
    }

    fn shed_count(transport: &str) -> u64 {
        let label = format!("transport=\"{transport}\"");
        metrics()
            .render()
            .lines()
            .find(|l| l.starts_with("skiff_dns_shed_total") && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    /// `qN.example.` is 10.0.0.N, as the test's upstreams answer.
    fn address_of(name: &Name) -> Ipv4Addr {
        let n = name.to_ascii();
        let n: u8 = n
            .strip_prefix('q')
            .and_then(|r| r.split('.').next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        Ipv4Addr::new(10, 0, 0, n)
    }

    fn upstream_answer(q: &[u8]) -> Option<Vec<u8>> {
        let q = Message::from_vec(q).ok()?;
        let mut m = Message::new();
        m.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query);
        let first = q.queries().first()?.clone();
        m.add_answer(Record::from_rdata(
            first.name().clone(),
            30,
            RData::A(A(address_of(first.name()))),
        ));
        m.add_query(first);
        m.to_vec().ok()
    }

    #[derive(Clone, Copy)]
    enum Behaviour {
        /// Answer each query at once.
        Answer,
        /// Answer once `n` queries are in, last first.
        Reversed(usize),
        /// Never answer.
        Silent,
    }

    /// An upstream resolver; the source ports its queries came from.
    async fn upstream(behaviour: Behaviour) -> (SocketAddr, Arc<Mutex<HashSet<u16>>>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let ports: Arc<Mutex<HashSet<u16>>> = Arc::default();
        let seen = ports.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut held = Vec::new();
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                seen.lock().unwrap().insert(from.port());
                let Some(answer) = upstream_answer(&buf[..n]) else {
                    continue;
                };
                match behaviour {
                    Behaviour::Answer => {
                        let _ = sock.send_to(&answer, from).await;
                    }
                    Behaviour::Reversed(n) => {
                        held.push((answer, from));
                        if held.len() == n {
                            for (answer, from) in held.drain(..).rev() {
                                let _ = sock.send_to(&answer, from).await;
                            }
                        }
                    }
                    Behaviour::Silent => {}
                }
            }
        });
        (addr, ports)
    }

    async fn start(upstream: Vec<SocketAddr>, limits: Limits) -> (SocketAddr, CancellationToken) {
        metrics();
        let server = Server::with_limits(
            Settings {
                domain: "cluster.local".into(),
                upstream,
            },
            limits,
            Arc::new(Desired::default()),
        );
        let stop = CancellationToken::new();
        let addr = serve(server, "127.0.0.1:0".parse().unwrap(), stop.clone())
            .await
            .unwrap();
        (addr, stop)
    }

    async fn ask_udp(server: SocketAddr, id: u16, name: &str) -> Option<Message> {
        let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
        sock.connect(server).await.ok()?;
        sock.send(&query(id, name)).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Message::from_vec(&buf[..n]).ok()
    }

    async fn ask_tcp(conn: &mut TcpStream, id: u16, name: &str) -> Option<Message> {
        let q = query(id, name);
        conn.write_u16(q.len() as u16).await.ok()?;
        conn.write_all(&q).await.ok()?;
        let read = async {
            let len = conn.read_u16().await?;
            let mut buf = vec![0u8; len as usize];
            conn.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let buf = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()?
            .ok()?;
        Message::from_vec(&buf).ok()
    }

    /// How long until the server closes `conn` (None: open after `within`).
    async fn closed_within(conn: &mut TcpStream, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut buf = [0u8; 16];
        match tokio::time::timeout(within, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
            Ok(Ok(_)) | Err(_) => None,
        }
    }

    fn first_a(m: &Message) -> Option<Ipv4Addr> {
        m.answers().iter().find_map(|r| match r.data() {
            Some(RData::A(a)) => Some(a.0),
            _ => None,
        })
    }

    /// Forty clients at once, all with the same query id (as if each
    /// restarted its counter): all answered, each with its own answer and
    /// its own id, though the upstream answers in reverse order; and the
    /// upstream saw queries from no more sockets than the pool holds.
    /// Before, each query opened a socket of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwarding_reuses_a_few_sockets_and_matches_answers_to_queries() {
        let (up, ports) = upstream(Behaviour::Reversed(40)).await;
        let limits = Limits {
            upstream_sockets: 3,
            ..Limits::default()
        };
        let (addr, stop) = start(vec![up], limits).await;
        let asks: Vec<_> = (1..=40u8)
            .map(|i| {
                tokio::spawn(async move { (i, ask_udp(addr, 7, &format!("q{i}.example.")).await) })
            })
            .collect();
        for ask in asks {
            let (i, answer) = ask.await.unwrap();
            let answer = answer.unwrap_or_else(|| panic!("q{i} unanswered"));
            assert_eq!(answer.id(), 7, "q{i}: the client's id comes back");
            assert_eq!(answer.response_code(), ResponseCode::NoError, "q{i}");
            assert_eq!(first_a(&answer), Some(Ipv4Addr::new(10, 0, 0, i)), "q{i}");
        }
        let used = ports.lock().unwrap().len();
        assert!(used <= 3, "the upstream saw queries from {used} sockets");
        stop.cancel();
    }

    /// An upstream that does not answer is given up after the timeout and
    /// the next one asked; with none answering, SERVFAIL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unanswering_upstream_times_out_to_the_next_then_to_servfail() {
        let (silent, _) = upstream(Behaviour::Silent).await;
        let (answering, _) = upstream(Behaviour::Answer).await;
        let limits = Limits {
            upstream_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, stop) = start(vec![silent, answering], limits.clone()).await;
        let started = Instant::now();
        let answer = ask_udp(addr, 1, "q9.example.").await.unwrap();
        assert_eq!(first_a(&answer), Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert!(started.elapsed() >= Duration::from_millis(300));
        stop.cancel();

        let (addr, stop) = start(vec![silent], limits).await;
        let started = Instant::now();
        let answer = ask_udp(addr, 2, "q9.example.").await.unwrap();
        assert_eq!(answer.response_code(), ResponseCode::ServFail);
        assert!(started.elapsed() < Duration::from_secs(2));
        stop.cancel();
    }

    /// With its UDP queries in flight at the bound (two, waiting on an
    /// upstream that does not answer), the server answers a third SERVFAIL
    /// at once and counts it; once they end, it answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_queries_beyond_the_bound_are_answered_servfail_and_counted() {
        let (silent, _) = upstream(Behaviour::Silent).await;
        let limits = Limits {
            udp_in_flight: 2,
            upstream_timeout: Duration::from_secs(1),
            ..Limits::default()
        };
        let (addr, stop) = start(vec![silent], limits).await;
        let waiting: Vec<_> = (0..2u16)
            .map(|i| tokio::spawn(async move { ask_udp(addr, i, "q1.example.").await }))
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let shed_before = shed_count("udp");
        let started = Instant::now();
        let answer = ask_udp(addr, 3, "web.d.svc.cluster.local.").await.unwrap();
        assert_eq!(answer.response_code(), ResponseCode::ServFail);
        assert_eq!(answer.id(), 3);
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(shed_count("udp") > shed_before, "the shed query is counted");
        for w in waiting {
            let answer = w.await.unwrap().unwrap();
            assert_eq!(answer.response_code(), ResponseCode::ServFail);
        }
        // Room again: answered from the zone.
        let answer = ask_udp(addr, 4, "web.d.svc.cluster.local.").await.unwrap();
        assert_eq!(answer.response_code(), ResponseCode::NXDomain);
        stop.cancel();
    }

    /// With two TCP connections open (the cap), a third is closed as it
    /// arrives, and counted; once one closes, a new one is served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_connections_over_the_cap_are_closed() {
        let limits = Limits {
            tcp_connections: 2,
            ..Limits::default()
        };
        let (addr, stop) = start(vec![], limits).await;
        let name = "web.d.svc.cluster.local.";
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(ask_tcp(&mut first, 1, name).await.is_some());
        assert!(ask_tcp(&mut second, 2, name).await.is_some());
        let shed_before = shed_count("tcp");
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut third, Duration::from_secs(2))
                .await
                .is_some(),
            "a connection over the cap stays open"
        );
        assert!(
            shed_count("tcp") > shed_before,
            "the refused connection is counted"
        );
        drop(first);
        let mut served = None;
        for _ in 0..50 {
            let mut next = TcpStream::connect(addr).await.unwrap();
            served = ask_tcp(&mut next, 3, name).await;
            if served.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(served.map(|m| m.id()), Some(3));
        assert!(ask_tcp(&mut second, 4, name).await.is_some());
        stop.cancel();
    }

    /// A TCP connection is closed once idle past the limit: after its last
    /// answer, without ever asking, or stalled within a query.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_tcp_connection_is_closed_after_the_idle_timeout() {
        let idle = Duration::from_millis(300);
        let limits = Limits {
            tcp_idle: idle,
            ..Limits::default()
        };
        let (addr, stop) = start(vec![], limits).await;
        let within = Duration::from_secs(3);

        let mut asked = TcpStream::connect(addr).await.unwrap();
        assert!(ask_tcp(&mut asked, 1, "web.d.svc.cluster.local.")
            .await
            .is_some());
        let after = closed_within(&mut asked, within).await;
        assert!(
            after.is_some_and(|t| t >= idle - Duration::from_millis(50)),
            "closed after its answer: {after:?}"
        );

        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut silent, within).await.is_some());

        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
        assert!(closed_within(&mut stalled, within).await.is_some());
        stop.cancel();
    }
}
