//! Announce this master's name and client URLs through the log, so that
//! `member list` shows them on every master (members added with `member add`
//! are known only by their peer URL until they do this).

use std::sync::Arc;
use std::time::Duration;

use crate::node::Store;
use crate::state_machine::MemberAttrs;
use crate::types::Command;

pub async fn run(store: Arc<Store>) {
    let mut stop = store.shutdown_signal();
    let want = MemberAttrs {
        name: store.config().name.clone(),
        client_urls: store.config().client_urls.clone(),
    };
    loop {
        if store.shared().member_attrs().get(&store.id()) == Some(&want) {
            return;
        }
        let cmd = Command::Publish {
            id: store.id(),
            name: want.name.clone(),
            client_urls: want.client_urls.clone(),
        };
        match store.write(cmd).await {
            Ok(_) => return,
            Err(e) => tracing::debug!("publishing member attributes: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
