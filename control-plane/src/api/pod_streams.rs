//! `pods/<name>/log`, `exec` and `attach`: the pod's node is asked over a
//! stream of its agent's connection to this master
//! ([`crate::agents::streams`]). Logs come back as a plain text body; exec
//! and attach run over a WebSocket with Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, as kubectl 1.32 speaks it, or `v4`): each binary
//! message is one channel byte (0 stdin, 1 stdout, 2 stderr, 3 the final
//! Status, 4 terminal size; v5's 255 closes a channel) and its data.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use proto::agent::{frame, master_request, ExecRequest, LogsRequest, MasterRequest, StreamFrame};
use serde_json::Value;

use super::handlers::Query;
use super::status::{ApiError, ApiResult};
use super::Api;
use crate::agents::streams::StreamError;

pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn pods() -> &'static super::Resource {
    super::resources::find("", "v1", "pods").expect("pods are served")
}

fn stream_error(e: StreamError) -> ApiError {
    match e {
        StreamError::Refused { code, message } => match code {
            400 => ApiError::bad_request(message),
            404 => ApiError::not_found_path(&message),
            _ => ApiError::internal(message),
        },
        other => ApiError::unavailable(other.to_string()),
    }
}

/// The pod, its node, and the container a request means (the only one, or
/// the default-container annotation's, when none is named).
async fn target(
    api: &Api,
    ns: &str,
    name: &str,
    container: Option<&str>,
) -> ApiResult<(Value, String, String)> {
    let pod = api.get(pods(), Some(ns), name).await?.object;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let names: Vec<&str> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match container.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        None => {
            let app: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            let annotated = pod["metadata"]["annotations"]
                ["kubectl.kubernetes.io/default-container"]
                .as_str()
                .filter(|c| app.contains(c));
            match (annotated, app.as_slice()) {
                (Some(c), _) => c.to_string(),
                (None, [only]) => only.to_string(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        app.join(" ")
                    )))
                }
            }
        }
    };
    Ok((pod, node, container))
}

fn flag(q: &Query, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

fn number(q: &Query, k: &str) -> ApiResult<Option<i64>> {
    q.get(k)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid {k} {v:?}")))
        })
        .transpose()
}

pub async fn logs(api: &Api, ns: &str, name: &str, q: &Query) -> ApiResult<Response> {
    let (pod, node, container) =
        target(api, ns, name, q.get("container").map(String::as_str)).await?;
    let req = LogsRequest {
        namespace: ns.to_string(),
        pod: name.to_string(),
        uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        container,
        follow: flag(q, "follow"),
        tail_lines: number(q, "tailLines")?.unwrap_or(-1),
        since_seconds: number(q, "sinceSeconds")?.unwrap_or(0),
        timestamps: flag(q, "timestamps"),
        previous: flag(q, "previous"),
        limit_bytes: number(q, "limitBytes")?.unwrap_or(0),
    };
    let (_send, mut recv) = api
        .nodes
        .open(
            &node,
            MasterRequest {
                request: Some(master_request::Request::Logs(req)),
            },
        )
        .await
        .map_err(stream_error)?;
    let stream = async_stream(move |tx| async move {
        loop {
            match frame::read::<StreamFrame, _>(&mut recv, frame::MAX_FRAME).await {
                Ok(Some(f)) if f.channel == 1 || f.channel == 2 => {
                    if tx.send(Ok(Bytes::from(f.data))).await.is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A body stream fed by a task.
fn async_stream<F, Fut>(f: F) -> tokio_stream::wrappers::ReceiverStream<Result<Bytes, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// What an exec or attach that is no WebSocket upgrade (kubectl falls
/// back to SPDY when the upgrade is refused) is told: why the container
/// cannot be reached, as the upgrade was told, else that SPDY is not
/// served; so the fallback does not hide the reason.
pub async fn refuse_spdy(api: &Api, ns: &str, name: &str, container: Option<&str>) -> ApiError {
    match target(api, ns, name, container).await {
        Err(e) => e,
        Ok(_) => ApiError::bad_request(
            "exec and attach need a WebSocket upgrade (v5.channel.k8s.io); SPDY is not served",
        ),
    }
}

pub async fn exec(
    api: &Api,
    ns: &str,
    name: &str,
    attach: bool,
    raw_query: &str,
    request: Request,
) -> ApiResult<Response> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw_query)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let one = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let on = |k: &str| one(k).is_some_and(|v| v == "true" || v == "1");
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if !attach && command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let (pod, node, container) = target(api, ns, name, one("container")).await?;
    let req = ExecRequest {
        namespace: ns.to_string(),
        pod: name.to_string(),
        uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        container,
        command,
        stdin: on("stdin"),
        stdout: on("stdout"),
        stderr: on("stderr"),
        tty: on("tty"),
    };
    let (mut parts, _body) = request.into_parts();
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("WebSocket upgrade: {e}")))?;
    let message = if attach {
        master_request::Request::Attach(req)
    } else {
        master_request::Request::Exec(req)
    };
    let (send, recv) = api
        .nodes
        .open(
            &node,
            MasterRequest {
                request: Some(message),
            },
        )
        .await
        .map_err(stream_error)?;
    Ok(ws
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| bridge(socket, send, recv)))
}

/// Carry channel frames between kubectl's WebSocket and the agent's stream.
async fn bridge(socket: WebSocket, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let to_agent = async {
        while let Some(Ok(m)) = ws_rx.next().await {
            let data = match m {
                Message::Binary(b) => b,
                Message::Text(t) => t.into_bytes(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, rest)) = data.split_first() else {
                continue;
            };
            let f = StreamFrame {
                channel: channel as u32,
                data: rest.to_vec(),
            };
            if frame::write(&mut send, &f).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
    };
    let from_agent = async {
        while let Ok(Some(f)) = frame::read::<StreamFrame, _>(&mut recv, frame::MAX_FRAME).await {
            let mut out = Vec::with_capacity(f.data.len() + 1);
            out.push(f.channel as u8);
            out.extend_from_slice(&f.data);
            if ws_tx.send(Message::Binary(out)).await.is_err() {
                break;
            }
        }
        // A normal close: kubectl reads a close without a code as an error.
        let close = axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        };
        let _ = ws_tx.send(Message::Close(Some(close))).await;
    };
    tokio::pin!(to_agent);
    tokio::pin!(from_agent);
    tokio::select! {
        _ = &mut to_agent => {
            // kubectl is done sending; the output may still be coming.
            (&mut from_agent).await;
        }
        _ = &mut from_agent => {}
    }
}
