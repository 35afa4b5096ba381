//! HTTP endpoint for Prometheus (`/metrics`) and liveness (`/health`).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use raft_store::Store;

/// Latency buckets (seconds) shared by every duration histogram.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub fn install() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .context("histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Suffix("_batch".into()),
            &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
        )
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    store: Arc<Store>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/health", get(health))
        .with_state(AppState { metrics, store });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn render(State(s): State<AppState>) -> String {
    if let Ok(status) = s.store.status() {
        metrics::gauge!("skiff_store_db_size_bytes").set(status.db_size as f64);
    }
    s.metrics.render()
}

/// Healthy when this master knows a leader (it can serve reads and writes).
async fn health(State(s): State<AppState>) -> (StatusCode, &'static str) {
    match s.store.current_leader() {
        Some(_) => (StatusCode::OK, "{\"health\":\"true\"}\n"),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"health\":\"false\",\"reason\":\"no leader\"}\n",
        ),
    }
}
