//! Streams a master opens to this node: a pod's logs, an exec in one of its
//! containers, an attach to one, the latest stats sample. Each starts with a `MasterRequest`, gets a
//! `StreamReply` (go ahead, or why not), then carries `StreamFrame`s on
//! Kubernetes' channel numbers.

use std::sync::Arc;

use futures::StreamExt;
use proto::agent::{
    frame, master_request, ExecRequest, LogsRequest, MasterRequest, PortForwardRequest,
    StreamFrame, StreamReply,
};
use quinn::{RecvStream, SendStream};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::runtime::{ContainerInfo, LogOptions, Runtime, State, SANDBOX};
use crate::stats::Latest;

const STDOUT: u32 = 1;
const STDERR: u32 = 2;
const STATUS: u32 = 3;
const RESIZE: u32 = 4;
const CLOSE: u32 = 255;

pub async fn serve<R: Runtime>(
    rt: R,
    node: String,
    stats: Arc<Latest>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let req = match frame::read::<MasterRequest, _>(&mut recv, 1 << 20).await {
        Ok(Some(r)) => r,
        _ => return,
    };
    let result = match req.request {
        Some(master_request::Request::Logs(l)) => logs(&rt, &node, l, &mut send).await,
        Some(master_request::Request::Exec(e)) => exec(&rt, &node, e, false, send, recv).await,
        Some(master_request::Request::Attach(e)) => exec(&rt, &node, e, true, send, recv).await,
        Some(master_request::Request::Stats(_)) => summary(&stats, &mut send).await,
        Some(master_request::Request::PortForward(p)) => {
            port_forward(&rt, &node, p, send, recv).await
        }
        None => Err(refuse(&mut send, 400, "empty request".into()).await),
    };
    if let Err(e) = result {
        tracing::debug!("stream ended: {e}");
    }
}

/// How long connecting to a pod's port may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connect to the pod's port (at its sandbox's address) and carry the
/// connection's bytes both ways, each direction ending on its own.
async fn port_forward<R: Runtime>(
    rt: &R,
    node: &str,
    p: PortForwardRequest,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), String> {
    let sandbox = match rt.list(node, Some(&p.uid)).await {
        Ok(all) => all
            .into_iter()
            .find(|c| c.container_name() == SANDBOX && c.state == State::Running),
        Err(e) => return Err(refuse(&mut send, 500, e.to_string()).await),
    };
    let Some(sandbox) = sandbox else {
        let m = format!(
            "pod {}/{} has no running sandbox on this node",
            p.namespace, p.pod
        );
        return Err(refuse(&mut send, 400, m).await);
    };
    let ip = sandbox.ip.clone().unwrap_or_else(|| "127.0.0.1".into());
    let addr = format!("{ip}:{}", p.port);
    let tcp =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                let m = format!("failed to connect to {addr} inside the pod: {e}");
                return Err(refuse(&mut send, 500, m).await);
            }
            Err(_) => {
                let m = format!("failed to connect to {addr} inside the pod: timed out");
                return Err(refuse(&mut send, 500, m).await);
            }
        };
    let _ = tcp.set_nodelay(true);
    tracing::debug!(pod = %p.pod, %addr, "port-forward: connected");
    frame::write(&mut send, &StreamReply::default())
        .await
        .map_err(|e| e.to_string())?;
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let up = async {
        let sent = tokio::io::copy(&mut recv, &mut to_pod).await;
        let _ = to_pod.shutdown().await;
        sent
    };
    let down = async {
        let got = tokio::io::copy(&mut from_pod, &mut send).await;
        let _ = send.finish();
        got
    };
    let (sent, got) = tokio::join!(up, down);
    tracing::debug!(pod = %p.pod, %addr, ?sent, ?got, "port-forward: done");
    Ok(())
}

/// The latest stats sample, if there is one yet.
async fn summary(stats: &Latest, send: &mut SendStream) -> Result<(), String> {
    let Some(s) = stats.get() else {
        return Err(refuse(send, 503, "no stats sampled yet".into()).await);
    };
    frame::write(send, &StreamReply::default())
        .await
        .map_err(|e| e.to_string())?;
    frame::write(send, &s).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    Ok(())
}

async fn refuse(send: &mut SendStream, code: i32, error: String) -> String {
    let _ = frame::write(
        send,
        &StreamReply {
            error: error.clone(),
            code,
        },
    )
    .await;
    let _ = send.finish();
    error
}

/// The container's latest instance (or the one before, for `--previous`).
async fn find<R: Runtime>(
    rt: &R,
    node: &str,
    uid: &str,
    container: &str,
    previous: bool,
) -> Result<ContainerInfo, (i32, String)> {
    let mut all = rt
        .list(node, Some(uid))
        .await
        .map_err(|e| (500, e.to_string()))?;
    all.retain(|c| c.container_name() == container);
    all.sort_by_key(|c| std::cmp::Reverse(c.attempt()));
    let pick = if previous { all.get(1) } else { all.first() };
    pick.cloned().ok_or_else(|| {
        if previous {
            (
                400,
                format!("previous terminated container \"{container}\" not found"),
            )
        } else {
            (
                400,
                format!("container \"{container}\" is waiting to start"),
            )
        }
    })
}

async fn logs<R: Runtime>(
    rt: &R,
    node: &str,
    l: LogsRequest,
    send: &mut SendStream,
) -> Result<(), String> {
    let c = match find(rt, node, &l.uid, &l.container, l.previous).await {
        Ok(c) => c,
        Err((code, m)) => return Err(refuse(send, code, m).await),
    };
    frame::write(send, &StreamReply::default())
        .await
        .map_err(|e| e.to_string())?;
    let since = (l.since_seconds > 0).then(|| chrono::Utc::now().timestamp() - l.since_seconds);
    let opts = LogOptions {
        follow: l.follow && !l.previous,
        tail: u64::try_from(l.tail_lines).ok(),
        since,
        timestamps: l.timestamps,
    };
    let mut logs = rt.logs(&c.id, &opts);
    let mut sent = 0i64;
    while let Some(chunk) = logs.next().await {
        let mut data = chunk.map_err(|e| e.to_string())?;
        if l.limit_bytes > 0 {
            let left = (l.limit_bytes - sent).max(0) as usize;
            data.truncate(left);
        }
        sent += data.len() as i64;
        let f = StreamFrame {
            channel: STDOUT,
            data,
        };
        if frame::write(send, &f).await.is_err() {
            break;
        }
        if l.limit_bytes > 0 && sent >= l.limit_bytes {
            break;
        }
    }
    let _ = send.finish();
    Ok(())
}

fn status_json(exit: Option<i64>) -> Vec<u8> {
    let v = match exit {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        None => json!({"metadata": {}, "status": "Success"}),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

async fn exec<R: Runtime>(
    rt: &R,
    node: &str,
    e: ExecRequest,
    attach: bool,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), String> {
    let c = match find(rt, node, &e.uid, &e.container, false).await {
        Ok(c) if c.state == State::Running => c,
        Ok(_) => {
            return Err(refuse(
                &mut send,
                400,
                format!("container {} is not running", e.container),
            )
            .await)
        }
        Err((code, m)) => return Err(refuse(&mut send, code, m).await),
    };
    let session = if attach {
        rt.attach(&c.id, e.stdin).await
    } else {
        rt.exec_session(&c.id, e.command.clone(), e.tty, e.stdin)
            .await
    };
    let mut session = match session {
        Ok(s) => s,
        Err(err) => return Err(refuse(&mut send, 500, err.to_string()).await),
    };
    frame::write(&mut send, &StreamReply::default())
        .await
        .map_err(|e| e.to_string())?;
    let resize = session.resize;
    let mut input = session.input;
    let inbound = async move {
        loop {
            match frame::read::<StreamFrame, _>(&mut recv, frame::MAX_FRAME).await {
                Ok(Some(f)) if f.channel == 0 => {
                    if input.write_all(&f.data).await.is_err() {
                        break;
                    }
                    let _ = input.flush().await;
                }
                Ok(Some(f)) if f.channel == RESIZE => {
                    let v: serde_json::Value = serde_json::from_slice(&f.data).unwrap_or_default();
                    let (w, h) = (
                        v["Width"].as_u64().unwrap_or(80),
                        v["Height"].as_u64().unwrap_or(24),
                    );
                    resize(w as u16, h as u16).await;
                }
                Ok(Some(f)) if f.channel == CLOSE => {
                    let _ = input.shutdown().await;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    let _ = input.shutdown().await;
                    break;
                }
            }
        }
    };
    let outbound = async {
        while let Some(chunk) = session.output.next().await {
            let Ok((ch, data)) = chunk else { break };
            let channel = if ch == 2 { STDERR } else { STDOUT };
            if frame::write(&mut send, &StreamFrame { channel, data })
                .await
                .is_err()
            {
                return;
            }
        }
        let exit = session.exit_code.await;
        let _ = frame::write(
            &mut send,
            &StreamFrame {
                channel: STATUS,
                data: status_json(exit),
            },
        )
        .await;
        let _ = send.finish();
    };
    let inbound = tokio::spawn(inbound);
    outbound.await;
    inbound.abort();
    Ok(())
}
