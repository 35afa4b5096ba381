//! `pods/<name>/portforward`: kubectl 1.32 opens a WebSocket with the
//! subprotocol `SPDY/3.1+portforward.k8s.io` and speaks SPDY inside it
//! ([`super::spdy`]). Each local connection becomes two SPDY streams with
//! the same `requestID` header: an error stream (the server writes why
//! forwarding failed, if it did) and a data stream, which this master
//! carries over a stream to the pod's node (the agent connects to the
//! pod's port).

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use proto::agent::{master_request, MasterRequest, PortForwardRequest};
use tokio::sync::mpsc;

use super::spdy::{self, Frame, HeaderReader, HeaderWriter};
use super::status::{ApiError, ApiResult};
use super::Api;
use crate::agents::streams::NodeConnections;

pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// The pod a session forwards to.
#[derive(Clone)]
struct Target {
    node: String,
    namespace: String,
    pod: String,
    uid: String,
}

pub async fn serve(api: &Api, ns: &str, name: &str, request: Request) -> ApiResult<Response> {
    let pods = super::resources::find("", "v1", "pods").expect("pods are served");
    let pod = api.get(pods, Some(ns), name).await?.object;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if pod["status"]["phase"] != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to forward port because pod is not running. Current status={}",
            pod["status"]["phase"].as_str().unwrap_or("Pending")
        )));
    }
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == PROTOCOL);
    if !offered {
        return Err(ApiError::bad_request(format!(
            "port forwarding needs the WebSocket subprotocol {PROTOCOL}"
        )));
    }
    let (mut parts, _body) = request.into_parts();
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("WebSocket upgrade: {e}")))?;
    let target = Target {
        node,
        namespace: ns.to_string(),
        pod: name.to_string(),
        uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
    };
    let nodes = api.nodes.clone();
    Ok(ws
        .protocols([PROTOCOL])
        .on_upgrade(move |socket| session(socket, nodes, target)))
}

/// One forwarded connection's two streams, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
}

/// Run the SPDY session until either side ends it.
async fn session(socket: WebSocket, nodes: std::sync::Arc<NodeConnections>, target: Target) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if ws_tx.send(Message::Binary(frame)).await.is_err() {
                return;
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    });
    let mut headers_in = HeaderReader::default();
    let mut headers_out = HeaderWriter::default();
    let mut buf = Vec::new();
    // Data from the client, by stream, to the task forwarding it.
    let mut inputs: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let ended = 'session: loop {
        let m = match ws_rx.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => break format!("the WebSocket failed: {e}"),
            None => break "the WebSocket ended".to_string(),
        };
        match m {
            Message::Binary(b) => buf.extend_from_slice(&b),
            Message::Close(_) => break "the client closed the WebSocket".to_string(),
            Message::Text(_) => break "a text message (SPDY travels in binary ones)".to_string(),
            _ => continue,
        }
        loop {
            let frame = match spdy::parse(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'session e.to_string(),
            };
            match frame {
                Frame::Control {
                    kind: spdy::SYN_STREAM,
                    payload,
                    ..
                } => {
                    let Ok(id) = spdy::stream_of(&payload) else {
                        break 'session "SYN_STREAM without a stream id".to_string();
                    };
                    let headers = match payload.get(10..).map(|b| headers_in.read(b)) {
                        Some(Ok(h)) => h,
                        Some(Err(e)) => break 'session format!("SYN_STREAM headers: {e}"),
                        None => break 'session "SYN_STREAM too short".to_string(),
                    };
                    let mut reply = id.to_be_bytes().to_vec();
                    reply.extend(headers_out.write(&[]));
                    if out_tx
                        .send(spdy::control(spdy::SYN_REPLY, 0, &reply))
                        .await
                        .is_err()
                    {
                        break 'session "the WebSocket writer ended".to_string();
                    }
                    let request = headers.get("requestid").cloned().unwrap_or_default();
                    let pair = pairs.entry(request.clone()).or_default();
                    pair.port = headers
                        .get("port")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    match headers.get("streamtype").map(String::as_str) {
                        Some("error") => pair.error = Some(id),
                        Some("data") => {
                            pair.data = Some(id);
                            let (tx, rx) = mpsc::channel(64);
                            inputs.insert(id, tx);
                            // The error stream comes first; its id is known.
                            let error = pair.error;
                            let port = pair.port;
                            pairs.remove(&request);
                            tokio::spawn(forward(
                                nodes.clone(),
                                target.clone(),
                                port,
                                id,
                                error,
                                rx,
                                out_tx.clone(),
                            ));
                        }
                        _ => {}
                    }
                }
                Frame::Control {
                    kind: spdy::PING,
                    payload,
                    ..
                } => {
                    if out_tx
                        .send(spdy::control(spdy::PING, 0, &payload))
                        .await
                        .is_err()
                    {
                        break 'session "the WebSocket writer ended".to_string();
                    }
                }
                Frame::Control {
                    kind: spdy::RST_STREAM,
                    payload,
                    ..
                } => {
                    if let Ok(id) = spdy::stream_of(&payload) {
                        inputs.remove(&id);
                    }
                }
                Frame::Control {
                    kind: spdy::GOAWAY, ..
                } => break 'session "the client went away".to_string(),
                // SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do.
                Frame::Control { .. } => {}
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    if let Some(tx) = inputs.get(&stream) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            inputs.remove(&stream);
                        }
                    }
                    if flags & spdy::FLAG_FIN != 0 {
                        inputs.remove(&stream);
                    }
                }
            }
        }
    };
    tracing::info!(pod = %target.pod, "port-forward session ended: {ended}");
    drop(inputs);
    drop(out_tx);
    let _ = writer.await;
}

/// One forwarded connection: the node connects to the pod's port; bytes
/// go both ways until each side is done; a failure is written on the
/// error stream.
async fn forward(
    nodes: std::sync::Arc<NodeConnections>,
    target: Target,
    port: u16,
    data_id: u32,
    error_id: Option<u32>,
    mut input: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let req = MasterRequest {
        request: Some(master_request::Request::PortForward(PortForwardRequest {
            namespace: target.namespace.clone(),
            pod: target.pod.clone(),
            uid: target.uid.clone(),
            port: u32::from(port),
        })),
    };
    let opened = if port == 0 {
        Err("no valid port was given".to_string())
    } else {
        nodes
            .open(&target.node, req)
            .await
            .map_err(|e| e.to_string())
    };
    let (mut send, mut recv) = match opened {
        Ok(s) => {
            tracing::debug!(pod = %target.pod, port, "port-forward: connected through the node");
            s
        }
        Err(e) => {
            tracing::info!(pod = %target.pod, port, "port-forward: {e}");
            let message = format!(
                "error forwarding port {port} to pod {}/{}: {e}",
                target.namespace, target.pod
            );
            if let Some(id) = error_id {
                let _ = out.send(spdy::data(id, 0, message.as_bytes())).await;
                let _ = out.send(spdy::data(id, spdy::FLAG_FIN, &[])).await;
            }
            let _ = out.send(spdy::data(data_id, spdy::FLAG_FIN, &[])).await;
            return;
        }
    };
    let upstream = async {
        while let Some(chunk) = input.recv().await {
            if send.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
    };
    let downstream = async {
        let mut chunk = vec![0u8; spdy::MAX_DATA];
        loop {
            match recv.read(&mut chunk).await {
                Ok(None) | Err(_) => break,
                Ok(Some(n)) => {
                    if out.send(spdy::data(data_id, 0, &chunk[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = out.send(spdy::data(data_id, spdy::FLAG_FIN, &[])).await;
        if let Some(id) = error_id {
            let _ = out.send(spdy::data(id, spdy::FLAG_FIN, &[])).await;
        }
    };
    tokio::join!(upstream, downstream);
}
