//! `/metrics` (Prometheus), `/healthz`, and `/debug/desired` (what the
//! node holds: each object's kind, namespace, name and resourceVersion, and
//! the revision) on the agent.
//!
//! `/metrics` holds the recorder's series, every one described (each
//! module describes its own, `describe` calls them all), then the
//! containers' cAdvisor series from the latest stats sample
//! ([`crate::stats`]). docs/metrics.md lists them.

use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::desired::Desired;
use crate::stats::Latest;

/// Latency buckets (seconds) for every duration histogram.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Install the recorder and give every series its help text.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    Ok(handle)
}

/// Help text and units for every series of the agent.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    crate::pods::describe_metrics();
    crate::dns::describe_metrics();
    crate::proxy::describe_metrics();
    crate::session::describe_metrics();
    describe_gauge!(
        "skiff_agent_desired_revision",
        Unit::Count,
        "The store revision of the desired state this node holds."
    );
    describe_gauge!(
        "skiff_agent_reports_unacknowledged",
        Unit::Count,
        "Node and pod reports sent and not yet acknowledged as written by a master."
    );
    describe_counter!(
        "skiff_agent_pod_reports_resent_total",
        Unit::Count,
        "Pod reports sent again because no acknowledgement came in time."
    );
    describe_histogram!(
        "skiff_agent_runtime_call_seconds",
        Unit::Seconds,
        "Time of a call to the container engine, by operation."
    );
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    desired: Arc<Desired>,
    stats: Arc<Latest>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let mut text = handle.render();
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&stats.render_cadvisor());
                std::future::ready(text)
            }),
        )
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
