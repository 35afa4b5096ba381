//! The node's service proxy (kube-proxy's job, in nftables): it follows
//! the Services and EndpointSlices in the node's desired state and keeps
//! one nftables table of its own in step with them.
//!
//! - [`model`]: Services and EndpointSlices as service ports with their
//!   ready endpoints;
//! - [`rules`]: nftables sets, chains and rules as data;
//! - [`table`]: the service ports as one nftables table, and the
//!   transaction from what was last written to what is wanted;
//! - [`netlink`]: a transaction written to the kernel in one batch.
//!
//! Syncs are at least `min_sync` apart (changes in between are taken
//! together). The first sync writes the whole table; later ones only what
//! changed. Every `check_every` the proxy makes sure the table is still
//! there as it left it; a table someone flushed or deleted is written
//! whole again. The table is left in place when the agent stops, so
//! services keep working across an agent restart.

pub mod model;
pub mod netlink;
pub mod rules;
pub mod table;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio_util::sync::CancellationToken;

use crate::desired::{Desired, Typed};

/// After a failed sync, the next waits this long.
const FAILED_SYNC_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Settings {
    pub table: table::Settings,
    pub min_sync: Duration,
    pub check_every: Duration,
}

fn generation(desired: &Desired) -> (u64, u64) {
    (
        desired.generation("Service"),
        desired.generation("EndpointSlice"),
    )
}

/// Follow the node's services until `stop`.
pub async fn run(node: String, desired: Arc<Desired>, settings: Settings, stop: CancellationToken) {
    let mut changes = desired.subscribe();
    let mut check = tokio::time::interval(settings.check_every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What the kernel holds, as last written.
    let mut table = table::Table::new(settings.table.clone());
    let mut services = Typed::<Service>::new("Service");
    let mut slices = Typed::<EndpointSlice>::new("EndpointSlice");
    let mut seen = None;
    // No sync before this (min_sync after one, longer after a failure).
    let mut not_before = Instant::now();
    let mut retry: Option<Instant> = None;
    loop {
        let retry_at = retry.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            _ = check.tick() => {
                if table.is_written() {
                    match intact(&settings.table.table).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(table = %settings.table.table, "the proxy's table was changed behind its back; writing it whole");
                            metrics::counter!("skiff_proxy_resyncs_total", "reason" => "drift").increment(1);
                            table.reset();
                        }
                        Err(e) => tracing::warn!("checking the proxy's table: {e}"),
                    }
                }
            }
            _ = tokio::time::sleep_until(retry_at.into()) => { retry = None; }
        }
        if !desired.synced() {
            continue;
        }
        if table.is_written() && seen == Some(generation(&desired)) {
            continue;
        }
        if not_before > Instant::now() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(not_before.into()) => {}
            }
        }
        let generation = generation(&desired);
        let started = Instant::now();
        let ports = model::build(
            &services.refresh(&desired),
            &slices.refresh(&desired),
            &node,
        );
        let tx = table.sync(&ports);
        let kind = if tx.full { "full" } else { "partial" };
        not_before = Instant::now() + settings.min_sync;
        if tx.is_empty() {
            seen = Some(generation);
            continue;
        }
        match netlink::apply(tx).await {
            Ok(()) => {
                let took = started.elapsed();
                metrics::histogram!("skiff_proxy_sync_duration_seconds", "kind" => kind)
                    .record(took.as_secs_f64());
                metrics::gauge!("skiff_proxy_chains").set(table.chains() as f64);
                metrics::gauge!("skiff_proxy_rules").set(table.rules() as f64);
                metrics::gauge!("skiff_proxy_elements").set(table.elements() as f64);
                metrics::gauge!("skiff_proxy_service_ports").set(ports.len() as f64);
                metrics::gauge!("skiff_proxy_last_sync_timestamp_seconds").set(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0),
                );
                tracing::debug!(
                    kind,
                    ports = ports.len(),
                    ms = took.as_millis() as u64,
                    "proxy rules synced"
                );
                seen = Some(generation);
            }
            Err(e) => {
                metrics::counter!("skiff_proxy_sync_errors_total").increment(1);
                tracing::warn!("proxy sync failed ({e}); writing the table whole in a moment");
                table.reset();
                not_before = Instant::now() + FAILED_SYNC_PAUSE;
                retry = Some(not_before);
            }
        }
    }
}

/// Whether the table still holds what was written: its base chain still
/// jumps to the services (a flushed or deleted table does not).
async fn intact(table: &str) -> Result<bool, netlink::NetlinkError> {
    Ok(netlink::count_rules(table, "nat-prerouting").await? > 0)
}

/// Help text and units of the service proxy's series.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        "skiff_proxy_sync_duration_seconds",
        Unit::Seconds,
        "Time to write the service rules to nftables, by kind of sync."
    );
    describe_counter!(
        "skiff_proxy_resyncs_total",
        Unit::Count,
        "Times the whole table was written again, by reason (drift: changed behind the proxy's back)."
    );
    describe_counter!(
        "skiff_proxy_sync_errors_total",
        Unit::Count,
        "Writes of the service rules that failed."
    );
    describe_gauge!(
        "skiff_proxy_chains",
        Unit::Count,
        "Chains in the proxy's nftables table."
    );
    describe_gauge!(
        "skiff_proxy_rules",
        Unit::Count,
        "Rules in the proxy's nftables table."
    );
    describe_gauge!(
        "skiff_proxy_elements",
        Unit::Count,
        "Set and map elements in the proxy's nftables table."
    );
    describe_gauge!(
        "skiff_proxy_service_ports",
        Unit::Count,
        "Service ports the proxy serves."
    );
    describe_gauge!(
        "skiff_proxy_last_sync_timestamp_seconds",
        Unit::Seconds,
        "When the service rules were last written (Unix time)."
    );
}
