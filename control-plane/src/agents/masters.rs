//! Where every master's agent gateway is: the ConfigMap
//! `kube-system/skiff-agent-gateways`, one entry per master (name to
//! host:port), which each master writes when it starts. Agents learn the
//! list from whichever master they reach, and fail over along it.
//!
//! Where every master's `/metrics` is: the ConfigMap
//! `kube-system/skiff-master-metrics` (name to URL), written the same way,
//! read by the Prometheus service discovery ([`crate::api`]'s `http_sd`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::api::{Api, ApiQuery, PatchType};

const NAMESPACE: &str = "kube-system";
const NAME: &str = "skiff-agent-gateways";
const METRICS: &str = "skiff-master-metrics";

fn configmaps() -> &'static crate::api::Resource {
    crate::api::find_resource("", "v1", "configmaps").expect("configmaps are served")
}

/// Record this master's metrics URL (if it has one), then its gateway
/// address, each retrying until a leader takes it. The gateway comes last:
/// once every master's gateway is listed, the cluster makes no more writes
/// of its own (tests that count revisions wait for that).
pub async fn register(api: Api, master: String, address: String, metrics: Option<String>) {
    if let Some(url) = metrics {
        record(&api, METRICS, &master, &url).await;
        tracing::info!(%url, "metrics URL registered");
    }
    record(&api, NAME, &master, &address).await;
    tracing::info!(%address, "agent gateway registered");
}

/// Set `key` to `value` in ConfigMap `kube-system/<name>`, creating it if
/// need be; retried until it lands.
async fn record(api: &Api, name: &str, key: &str, value: &str) {
    let q = ApiQuery::new();
    loop {
        let patch = json!({"data": {key: value}}).to_string();
        let patched = api
            .patch(
                configmaps(),
                Some(NAMESPACE),
                name,
                None,
                PatchType::Merge,
                patch.as_bytes(),
                &q,
            )
            .await;
        let done = match patched {
            Ok(_) => true,
            Err(e) if e.code == axum::http::StatusCode::NOT_FOUND => {
                let cm = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "data": {key: value},
                });
                api.create(configmaps(), Some(NAMESPACE), cm, &q)
                    .await
                    .is_ok()
            }
            Err(_) => false,
        };
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every master's metrics URL, by master name.
pub async fn metrics_urls(api: &Api) -> BTreeMap<String, String> {
    let Ok(cm) = api.get(configmaps(), Some(NAMESPACE), METRICS).await else {
        return BTreeMap::new();
    };
    cm.object["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Every master's gateway address, sorted.
pub async fn list(api: &Api) -> Vec<String> {
    let Ok(cm) = api.get(configmaps(), Some(NAMESPACE), NAME).await else {
        return Vec::new();
    };
    let mut out: Vec<String> = cm.object["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.as_str().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}
