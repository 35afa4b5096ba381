//! `skiff-bench dns`: the agent's cluster DNS server, in this process on
//! loopback, answering for N Services: queries per second and latency,
//! from clients that each keep one query in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use node_agent::desired::Desired;
use node_agent::dns;
use proto::agent::{Object, Snapshot};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::percentile;

pub struct Options {
    pub services: usize,
    pub clients: usize,
    pub duration: Duration,
}

fn object(kind: &str, v: serde_json::Value) -> Object {
    Object {
        kind: kind.into(),
        json: serde_json::to_vec(&v).expect("json").into(),
    }
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let desired = Arc::new(Desired::default());
    let mut objects = Vec::new();
    for i in 0..opts.services {
        let vip = format!("10.96.{}.{}", (i / 250) % 250, i % 250 + 1);
        objects.push(object(
            "Service",
            json!({"metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
                   "spec": {"clusterIP": vip, "ports": [{"name": "http", "port": 80}]}}),
        ));
    }
    desired.replace(Snapshot {
        revision: 1,
        objects,
    });
    let server = dns::Server::new(
        dns::Settings {
            domain: "cluster.local".into(),
            upstream: vec![],
        },
        desired,
    );
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    // Bind to learn a free port, then serve there.
    let port = std::net::UdpSocket::bind(addr)?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = CancellationToken::new();
    dns::serve(server, addr, stop.clone()).await?;

    let deadline = Instant::now() + opts.duration;
    let mut tasks = Vec::new();
    for c in 0..opts.clients {
        let services = opts.services;
        tasks.push(tokio::spawn(async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await?;
            sock.connect(addr).await?;
            let mut times = Vec::new();
            let mut failed = 0usize;
            let mut i = c;
            let mut buf = vec![0u8; 1500];
            while Instant::now() < deadline {
                i = (i * 7919 + 17) % services.max(1);
                let mut m = Message::new();
                m.set_id((i % 65536) as u16)
                    .set_message_type(MessageType::Query)
                    .set_op_code(OpCode::Query)
                    .set_recursion_desired(true);
                let name = Name::from_ascii(format!("svc-{i}.bench.svc.cluster.local."))?;
                m.add_query(Query::query(name, RecordType::A));
                let bytes = m.to_vec()?;
                let started = Instant::now();
                sock.send(&bytes).await?;
                match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        let reply = Message::from_vec(&buf[..n])?;
                        if reply.response_code() == ResponseCode::NoError
                            && reply.answers().len() == 1
                        {
                            times.push(started.elapsed());
                        } else {
                            failed += 1;
                        }
                    }
                    _ => failed += 1,
                }
            }
            Ok::<_, anyhow::Error>((times, failed))
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (times, f) = t.await??;
        all.extend(times);
        failed += f;
    }
    stop.cancel();
    all.sort();
    println!(
        "Cluster DNS ({} Services, {} clients each with one query in flight, {:?}, UDP on loopback):",
        opts.services, opts.clients, opts.duration
    );
    println!(
        "  {:.0} queries/s answered; p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms; {failed} failed or unanswered",
        all.len() as f64 / opts.duration.as_secs_f64(),
        percentile(&all, 50),
        percentile(&all, 99),
        percentile(&all, 100)
    );
    Ok(())
}
