//! A connection to every master, besides the control session, so that any
//! master kubectl asks can open a stream to this node (logs, exec,
//! attach, stats). Each link reconnects on its own when its master comes back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{connect, Session, CONNECT_TIMEOUT, REFUSED_RETRY};

const LINK_RETRY: Duration = Duration::from_secs(1);
const RESCAN: Duration = Duration::from_secs(10);

/// Keep a link to each known master until `stop`.
pub async fn run(session: Arc<Session>, stop: CancellationToken) {
    let mut links: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        let masters = session.identity().cluster.masters;
        for m in &masters {
            if !links.contains_key(m) {
                let token = stop.child_token();
                tokio::spawn(link(session.clone(), m.clone(), token.clone()));
                links.insert(m.clone(), token);
            }
        }
        links.retain(|m, token| {
            let keep = masters.contains(m);
            if !keep {
                token.cancel();
            }
            keep
        });
        tokio::select! {
            _ = tokio::time::sleep(RESCAN) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn link(session: Arc<Session>, master: String, stop: CancellationToken) {
    loop {
        let attempt = async {
            let tls = session.identity().client_tls()?;
            let conn = connect::connect(&session.endpoint, &master, tls, CONNECT_TIMEOUT).await?;
            tracing::debug!(%master, "stream link up");
            while let Ok((send, recv)) = conn.accept_bi().await {
                (session.streams)(send, recv);
            }
            if let Some(reason) = connect::refusal(&conn) {
                let master = master.clone();
                return Err(connect::NotAMember { master, reason }.into());
            }
            Ok::<_, anyhow::Error>(())
        };
        let mut wait = LINK_RETRY;
        tokio::select! {
            r = attempt => if let Err(e) = r {
                // The session says so in the log; the link only waits.
                if connect::refusal_in(&e).is_some() {
                    wait = REFUSED_RETRY;
                }
                tracing::debug!(%master, "stream link: {e:#}")
            },
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}
