//! HTTP endpoint for Prometheus (`/metrics`) and liveness (`/health`).

use std::future::Future;
use std::net::SocketAddr;
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

/// The URL other hosts scrape this master's `/metrics` at: the listen
/// address, or, when that is a wildcard (0.0.0.0, ::), `host` (the
/// address this master advertises elsewhere) with the listen port.
pub fn advertised_url(listen: SocketAddr, host: Option<&str>) -> String {
    let host = match (listen.ip().is_unspecified(), host) {
        (true, Some(h)) if !h.is_empty() => h.to_string(),
        (true, _) => "127.0.0.1".to_string(),
        (false, _) => match listen.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        },
    };
    format!("http://{host}:{}/metrics", listen.port())
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

#[cfg(test)]
mod tests {
    use super::advertised_url;

    #[test]
    fn a_wildcard_listen_address_is_advertised_as_the_masters_host() {
        let at = |s: &str| s.parse().expect("address");
        assert_eq!(
            advertised_url(at("10.0.0.5:2381"), Some("ignored")),
            "http://10.0.0.5:2381/metrics"
        );
        assert_eq!(
            advertised_url(at("0.0.0.0:2381"), Some("10.0.0.6")),
            "http://10.0.0.6:2381/metrics"
        );
        assert_eq!(
            advertised_url(at("0.0.0.0:9000"), None),
            "http://127.0.0.1:9000/metrics"
        );
        assert_eq!(
            advertised_url(at("[fd00::1]:2381"), None),
            "http://[fd00::1]:2381/metrics"
        );
    }
}
