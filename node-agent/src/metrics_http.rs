//! `/metrics` (Prometheus), `/healthz`, and `/debug/desired` (what the
//! node holds: each object's kind, namespace, name and resourceVersion, and
//! the revision) on the agent.

use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::desired::Desired;

/// Latency buckets (seconds) for every duration histogram.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub fn install() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .context("histogram buckets")?
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
