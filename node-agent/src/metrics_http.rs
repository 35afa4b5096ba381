//! `/metrics` (Prometheus), `/healthz`, and `/debug/desired` (what the
//! node holds: each object's kind, namespace, name and resourceVersion, and
//! the revision) on the agent.

use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::desired::Desired;

pub fn install() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    desired: Arc<Desired>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/debug/desired",
            get(move || {
                let held: Vec<_> = desired
                    .held()
                    .into_iter()
                    .map(|r| {
                        json!({"kind": r.kind, "namespace": r.namespace, "name": r.name,
                            "resourceVersion": r.resource_version})
                    })
                    .collect();
                std::future::ready(axum::Json(
                    json!({"revision": desired.revision(), "objects": held}),
                ))
            }),
        );
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
}
