//! Where every master's agent gateway is: the ConfigMap
//! `kube-system/skiff-agent-gateways`, one entry per master (name to
//! host:port), which each master writes when it starts. Agents learn the
//! list from whichever master they reach, and fail over along it.

use std::time::Duration;

use serde_json::json;

use crate::api::{Api, ApiQuery, PatchType};

const NAMESPACE: &str = "kube-system";
const NAME: &str = "skiff-agent-gateways";

fn configmaps() -> &'static crate::api::Resource {
    crate::api::find_resource("", "v1", "configmaps").expect("configmaps are served")
}

/// Record this master's gateway address, retrying until a leader takes it.
pub async fn register(api: Api, master: String, address: String) {
    let q = ApiQuery::new();
    loop {
        let patch = json!({"data": {&master: &address}}).to_string();
        let patched = api
            .patch(
                configmaps(),
                Some(NAMESPACE),
                NAME,
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
                    "metadata": {"name": NAME, "namespace": NAMESPACE},
                    "data": {&master: &address},
                });
                api.create(configmaps(), Some(NAMESPACE), cm, &q)
                    .await
                    .is_ok()
            }
            Err(_) => false,
        };
        if done {
            tracing::info!(%address, "agent gateway registered");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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
