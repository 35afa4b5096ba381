//! Where pods reach the API: each master keeps its API address in the
//! store under [`PREFIX`]`<name>`, on a store lease of [`TTL`] it renews
//! every third of that, as kube-apiserver's lease endpoint reconciler
//! does. A master that stops renewing drops out within [`TTL`], and the
//! `kubernetes` Service's endpoints ([`crate::controllers::kubernetes_service`])
//! are the addresses found here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::registry::{Registry, RegistryError};

/// Outside the Kubernetes tree.
pub const PREFIX: &str = "/skiff/masterleases/";
/// Seconds a master's address outlives its last renewal.
pub const TTL: i64 = 15;

/// Keep `address` listed as master `name`'s API until the process ends.
pub async fn keep(registry: Registry, name: String, address: SocketAddr) {
    let key = format!("{PREFIX}{name}");
    let value = json!({"name": name, "address": address.to_string()});
    let renew = Duration::from_secs((TTL / 3) as u64);
    loop {
        let lease = match registry.store().grant_lease(0, TTL).await {
            Ok((id, _)) => id,
            Err(e) => {
                tracing::debug!("granting the API address lease: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = registry.put_leased(&key, &value, lease).await {
            tracing::debug!("recording the API address: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tracing::info!(%address, "API address recorded for the kubernetes Service");
        // Renew until the lease is lost (expired while the store had no
        // leader, say); then record the address again on a new one.
        loop {
            tokio::time::sleep(renew).await;
            match registry.store().lease_keep_alive(lease).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => tracing::debug!("renewing the API address lease: {e}"),
            }
        }
    }
}

/// Every live master's API address, by master name.
pub async fn list(registry: &Registry) -> Result<BTreeMap<String, SocketAddr>, RegistryError> {
    let page = registry.list(PREFIX, None, 0, 0).await?;
    Ok(page
        .items
        .iter()
        .filter_map(|s| {
            let address = s.object["address"].as_str()?.parse().ok()?;
            let name = s.object["name"].as_str()?;
            Some((name.to_string(), address))
        })
        .collect())
}
