//! A node's control stream: `Accepted` and its first state (a snapshot, or
//! a delta from the revision it resumes at), then its deltas as the store
//! changes, while its reports come the other way. Deltas already queued
//! when the stream is ready to write go out merged as one (batching under
//! load without waiting to batch).

use std::sync::Arc;

use proto::agent::{frame, from_agent, to_agent, Accepted, FromAgent, Hello, ReportAcks, ToAgent};
use quinn::{RecvStream, SendStream};

use super::{desired, masters, reports, Gateway};

/// Changes merged into one delta at most.
const BATCH_CHANGES: usize = 100;

pub async fn run(
    gateway: Arc<Gateway>,
    node: String,
    hello: Hello,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    tracing::info!(%node, last_revision = hello.last_revision, "agent session opened");
    metrics::counter!("skiff_agent_sessions_opened_total").increment(1);
    let accepted = ToAgent {
        message: Some(to_agent::Message::Accepted(Accepted {
            master: gateway.settings.master.clone(),
            masters: masters::list(&gateway.api).await,
        })),
    };
    if frame::write(&mut send, &accepted).await.is_err() {
        return;
    }
    let mut attached = gateway
        .desired
        .attach(&node, hello.last_revision, &hello.held)
        .await;
    if write(&mut send, &attached.first).await.is_err() {
        gateway.desired.detach(&node, attached.id);
        return;
    }
    let max_frame = gateway.settings.max_frame;
    // Acknowledgements of written reports, from the reader to the writer.
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<Vec<u64>>();
    let reader = {
        let gateway = gateway.clone();
        let node = node.clone();
        async move {
            loop {
                match frame::read::<FromAgent, _>(&mut recv, max_frame).await {
                    Ok(Some(FromAgent {
                        message: Some(from_agent::Message::Resync(_)),
                    })) => return "the agent asked for a snapshot".to_string(),
                    Ok(Some(FromAgent { message: Some(m) })) => {
                        let written = reports::apply(&gateway, &node, m).await;
                        if !written.is_empty() {
                            let _ = acks_tx.send(written);
                        }
                    }
                    Ok(Some(FromAgent { message: None })) => {
                        metrics::counter!("skiff_agent_bad_frames_total").increment(1);
                        tracing::info!(%node, "empty frame from agent ignored");
                    }
                    Ok(None) => return "the agent closed the stream".to_string(),
                    Err(frame::FrameError::Io(e)) => return format!("the stream broke: {e}"),
                    Err(e) => {
                        metrics::counter!("skiff_agent_bad_frames_total").increment(1);
                        return format!("bad frame from the agent: {e}");
                    }
                }
            }
        }
    };
    tokio::pin!(reader);
    let reason = loop {
        tokio::select! {
            r = &mut reader => break r,
            Some(mut seqs) = acks.recv() => {
                while let Ok(more) = acks.try_recv() { seqs.extend(more) }
                let f = ToAgent { message: Some(to_agent::Message::Acks(ReportAcks { seqs })) };
                if write(&mut send, &f).await.is_err() { break "the stream failed".to_string() }
            }
            f = attached.updates.recv() => {
                let Some(f) = f else { break "cut off to resync".to_string() };
                let oldest = f.at;
                let mut changes = count(&f.frame);
                let mut frames = vec![f.frame];
                while changes < BATCH_CHANGES {
                    match attached.updates.try_recv() {
                        Ok(f) => { changes += count(&f.frame); frames.push(f.frame) }
                        Err(_) => break,
                    }
                }
                let mut failed = false;
                for f in desired::merge(frames) {
                    if write(&mut send, &f).await.is_err() { failed = true; break }
                }
                if failed { break "the stream failed".to_string() }
                metrics::histogram!("skiff_agent_stream_lag_seconds")
                    .record(oldest.elapsed().as_secs_f64());
            }
        }
    };
    tracing::info!(%node, %reason, "agent session closed");
    gateway.desired.detach(&node, attached.id);
    if reason.starts_with("bad frame") {
        let _ = send.reset(super::REFUSED);
    } else {
        let _ = send.finish();
    }
}

fn count(f: &ToAgent) -> usize {
    match &f.message {
        Some(to_agent::Message::Delta(d)) => d.upserts.len() + d.deletes.len(),
        _ => 1,
    }
}

async fn write(send: &mut SendStream, f: &ToAgent) -> Result<(), frame::FrameError> {
    metrics::counter!("skiff_agent_frames_sent_total").increment(1);
    frame::write(send, f).await
}
