//! HTTP endpoint for Prometheus (`/metrics`) and liveness (`/health`).
//!
//! `/metrics` holds the recorder's series (every one described, by
//! `describe`) and, on the Raft leader, the object state series of
//! [`crate::kube_state`]. docs/metrics.md lists them.

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

/// Install the recorder and give every series its help text. Histograms
/// named for etcd's or kube-apiserver's take their buckets, so that
/// dashboards' `le` thresholds exist.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .context("histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Suffix("_batch".into()),
            &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
        )
        .context("histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full("apiserver_request_duration_seconds".into()),
            crate::api::REQUEST_DURATION_BUCKETS,
        )
        .context("histogram buckets")?;
    for name in raft_store::metrics::ETCD_DISK_HISTOGRAMS {
        builder = builder
            .set_buckets_for_metric(
                Matcher::Full((*name).into()),
                raft_store::metrics::ETCD_DISK_BUCKETS,
            )
            .context("histogram buckets")?;
    }
    let handle = builder
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    Ok(handle)
}

/// Help text and units for every series a master exports (each module
/// describes its own).
fn describe() {
    raft_store::metrics::describe();
    crate::api::describe_metrics();
    crate::agents::describe_metrics();
    crate::controllers::runtime::describe_metrics();
    crate::scheduler::describe_metrics();
    crate::pki::describe_metrics();
    metrics::describe_gauge!(
        "skiff_store_db_size_bytes",
        metrics::Unit::Bytes,
        "Size of the store's RocksDB files on disk."
    );
    // The etcd v3 API's (etcd/).
    metrics::describe_counter!(
        "skiff_grpc_requests_total",
        metrics::Unit::Count,
        "etcd v3 API calls answered, by method and gRPC status code."
    );
    metrics::describe_histogram!(
        "skiff_grpc_request_seconds",
        metrics::Unit::Seconds,
        "Time to answer an etcd v3 API call, by method."
    );
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
    /// What opens encrypted objects for the kube-state series.
    encryption: Arc<crate::encryption::Encryption>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    store: Arc<Store>,
    encryption: Arc<crate::encryption::Encryption>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/health", get(health))
        .with_state(AppState {
            metrics,
            store,
            encryption,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The recorder's series, then (on the leader) kube-state-metrics' series
/// computed from the store now.
async fn render(State(s): State<AppState>) -> String {
    if let Ok(status) = s.store.status() {
        metrics::gauge!("skiff_store_db_size_bytes").set(status.db_size as f64);
        metrics::gauge!("etcd_mvcc_db_total_size_in_bytes").set(status.db_size as f64);
    }
    let mut text = s.metrics.render();
    match crate::kube_state::scrape(&s.store, &s.encryption).await {
        Ok(objects) if !objects.is_empty() => {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&objects);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("kube-state metrics: reading the store: {e}"),
    }
    text
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
