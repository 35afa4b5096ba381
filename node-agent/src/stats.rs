//! CPU and memory use of the node and its pods, sampled every interval
//! (the kubelet's summary API, which metrics-server reads). A container's
//! CPU is the rate of its cumulative CPU time between two samples, so a
//! container appears from its second sample on; memory is its working set.
//! The node's own use comes from the host (`/proc/stat`, `/proc/meminfo`).
//! Masters ask for the latest sample over the node's link
//! ([`crate::streams`]) to serve `metrics.k8s.io`.
//!
//! The same readings are served on the agent's `/metrics` as cAdvisor's
//! series ([`Latest::render_cadvisor`]: `container_cpu_usage_seconds_total`,
//! `container_memory_working_set_bytes`, with `namespace`, `pod`,
//! `container` and `image` labels), from the latest sample only, so a
//! container gone is gone from them at the next sample.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use proto::agent::{ContainerUsage, PodUsage, StatsSummary, Usage};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::runtime::{self, ContainerInfo, Runtime, State, SANDBOX};

/// Stats calls in flight at once.
const PARALLEL: usize = 8;

/// The latest summary, for whoever asks.
#[derive(Default)]
pub struct Latest {
    summary: Mutex<Option<StatsSummary>>,
    readings: Mutex<Vec<ContainerReading>>,
}

/// One running container's cumulative readings at the latest sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerReading {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub image: String,
    /// CPU time used since the container started.
    pub cpu_ns: u64,
    pub memory_working_set: u64,
}

impl Latest {
    pub fn get(&self) -> Option<StatsSummary> {
        self.summary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, s: StatsSummary) {
        *self.summary.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    fn set_readings(&self, r: Vec<ContainerReading>) {
        *self.readings.lock().unwrap_or_else(|e| e.into_inner()) = r;
    }

    /// The latest readings as cAdvisor's series, in the exposition format.
    pub fn render_cadvisor(&self) -> String {
        let readings = self
            .readings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        render_cadvisor(&readings)
    }
}

/// cAdvisor's two series the ecosystem's dashboards use most.
fn render_cadvisor(readings: &[ContainerReading]) -> String {
    use std::fmt::Write;
    let labels = |r: &ContainerReading| {
        let esc = |v: &str| {
            v.replace('\\', r"\\")
                .replace('"', "\\\"")
                .replace('\n', r"\n")
        };
        format!(
            "container=\"{}\",image=\"{}\",namespace=\"{}\",pod=\"{}\"",
            esc(&r.container),
            esc(&r.image),
            esc(&r.namespace),
            esc(&r.pod)
        )
    };
    let mut out = String::new();
    out.push_str(
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n",
    );
    out.push_str("# TYPE container_cpu_usage_seconds_total counter\n");
    for r in readings {
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{{}}} {}",
            labels(r),
            r.cpu_ns as f64 / 1e9
        );
    }
    out.push_str("# HELP container_memory_working_set_bytes Current working set in bytes.\n");
    out.push_str("# TYPE container_memory_working_set_bytes gauge\n");
    for r in readings {
        let _ = writeln!(
            out,
            "container_memory_working_set_bytes{{{}}} {}",
            labels(r),
            r.memory_working_set
        );
    }
    out
}

/// A cumulative CPU counter (nanoseconds) read at an instant.
#[derive(Clone, Copy)]
struct Reading {
    at: Instant,
    cpu_ns: u64,
}

/// Nanocores between two readings of one counter.
fn rate(before: Reading, now: Reading) -> Option<i64> {
    let elapsed = now.at.checked_duration_since(before.at)?.as_nanos();
    if elapsed == 0 || now.cpu_ns < before.cpu_ns {
        return None;
    }
    let used = u128::from(now.cpu_ns - before.cpu_ns);
    i64::try_from(used * 1_000_000_000 / elapsed).ok()
}

/// The host's busy CPU time in nanoseconds (every CPU), from `/proc/stat`.
fn host_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle
    // and iowait. /proc/stat counts in USER_HZ, 100 on Linux.
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy * 10_000_000)
}

/// The host's memory in use: total less available, from `/proc/meminfo`.
fn host_memory_bytes() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |name: &str| -> Option<i64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kib("MemTotal:")? - kib("MemAvailable:")?) * 1024)
}

/// Sample every `interval` until `stop`.
pub async fn run<R: Runtime>(
    rt: R,
    node: String,
    interval: Duration,
    latest: Arc<Latest>,
    stop: CancellationToken,
) {
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match rt.list(&node, None).await {
            Ok(containers) => {
                let (summary, readings) = sampler.sample(&rt, containers).await;
                latest.set_readings(readings);
                if let Some(s) = summary {
                    latest.set(s);
                }
            }
            Err(e) => tracing::debug!("stats: listing containers: {e}"),
        }
    }
}

#[derive(Default)]
struct Sampler {
    node: Option<Reading>,
    containers: HashMap<String, Reading>,
}

impl Sampler {
    /// One sample: the summary once there is a previous reading to rate
    /// against, and every running container's cumulative readings.
    async fn sample<R: Runtime>(
        &mut self,
        rt: &R,
        containers: Vec<ContainerInfo>,
    ) -> (Option<StatsSummary>, Vec<ContainerReading>) {
        let running: Vec<ContainerInfo> = containers
            .into_iter()
            .filter(|c| c.state == State::Running && c.container_name() != SANDBOX)
            .collect();
        let usages: Vec<(ContainerInfo, Instant, runtime::Result<runtime::Usage>)> =
            futures::stream::iter(running)
                .map(|c| async move {
                    let u = rt.stats(&c.id).await;
                    (c, Instant::now(), u)
                })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
        let now = Instant::now();
        let node_now = host_cpu_ns().map(|cpu_ns| Reading { at: now, cpu_ns });
        let window = self.node.map(|r| now.duration_since(r.at));
        let node_cpu = self.node.zip(node_now).and_then(|(a, b)| rate(a, b));
        self.node = node_now;

        let mut pods: HashMap<String, PodUsage> = HashMap::new();
        let mut seen = HashMap::new();
        let mut readings = Vec::new();
        for (c, at, usage) in usages {
            let usage = match usage {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(container = %c.id, "stats: {e}");
                    continue;
                }
            };
            let reading = Reading {
                at,
                cpu_ns: usage.cpu_ns,
            };
            readings.push(ContainerReading {
                namespace: c.label(runtime::LABEL_POD_NAMESPACE).to_string(),
                pod: c.label(runtime::LABEL_POD_NAME).to_string(),
                container: c.container_name().to_string(),
                image: c.image_id.clone(),
                cpu_ns: usage.cpu_ns,
                memory_working_set: usage.memory_working_set,
            });
            let cpu = self.containers.get(&c.id).and_then(|r| rate(*r, reading));
            seen.insert(c.id.clone(), reading);
            let Some(cpu) = cpu else { continue };
            let pod = pods
                .entry(c.pod_uid().to_string())
                .or_insert_with(|| PodUsage {
                    namespace: c.label(runtime::LABEL_POD_NAMESPACE).to_string(),
                    name: c.label(runtime::LABEL_POD_NAME).to_string(),
                    uid: c.pod_uid().to_string(),
                    containers: Vec::new(),
                });
            pod.containers.push(ContainerUsage {
                name: c.container_name().to_string(),
                usage: Some(Usage {
                    cpu_nanocores: cpu,
                    memory_bytes: i64::try_from(usage.memory_working_set).unwrap_or(i64::MAX),
                }),
            });
        }
        // Containers gone since are forgotten.
        self.containers = seen;
        readings.sort_by(|a, b| {
            (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
        });
        let Some(window) = window else {
            return (None, readings);
        };
        let mut pods: Vec<PodUsage> = pods.into_values().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for p in &mut pods {
            p.containers.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let summary = StatsSummary {
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            node: Some(Usage {
                cpu_nanocores: node_cpu.unwrap_or(0),
                memory_bytes: host_memory_bytes().unwrap_or(0),
            }),
            pods,
        };
        (Some(summary), readings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_nanocores_over_the_elapsed_time() {
        let t0 = Instant::now();
        let a = Reading { at: t0, cpu_ns: 0 };
        let b = Reading {
            at: t0 + Duration::from_secs(2),
            cpu_ns: 1_000_000_000,
        };
        // One second of CPU over two seconds: half a core.
        assert_eq!(rate(a, b), Some(500_000_000));
        // A counter that went backwards (a restarted container) is no rate.
        assert_eq!(rate(b, a), None);
        assert!(host_cpu_ns().is_some_and(|n| n > 0));
        assert!(host_memory_bytes().is_some_and(|m| m > 0));
    }

    #[test]
    fn cadvisor_series_carry_the_pod_labels() {
        let text = render_cadvisor(&[ContainerReading {
            namespace: "default".into(),
            pod: "web-1".into(),
            container: "httpd".into(),
            image: "sha256:abc".into(),
            cpu_ns: 1_500_000_000,
            memory_working_set: 4096,
        }]);
        let labels = r#"container="httpd",image="sha256:abc",namespace="default",pod="web-1""#;
        assert!(
            text.contains(&format!(
                "container_cpu_usage_seconds_total{{{labels}}} 1.5\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "container_memory_working_set_bytes{{{labels}}} 4096\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("# TYPE container_cpu_usage_seconds_total counter\n"),
            "{text}"
        );
    }
}
