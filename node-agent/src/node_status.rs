//! The node's own status: capacity and allocatable from the host (through
//! the runtime), its addresses, nodeInfo with the engine's version, and
//! conditions; reported when it changes and every minute regardless, with
//! a Lease renewal every quarter of the lease's duration (ten seconds for
//! the default 40, as the kubelet: the heartbeat the node lifecycle
//! controller watches). When the masters' copy of the Node (which comes
//! with the node's desired state) is not Ready while the node is, say,
//! after the controller marked it Unknown through a lapse, the status is
//! reported again at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use proto::agent::NodeReport;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::desired::Desired;
use crate::pressure;
use crate::reports::Reports;
use crate::runtime::{Info, Runtime};

const STATUS_REFRESH: Duration = Duration::from_secs(60);
/// Reports forced by the masters' view come at most this often.
const FORCED_AT_MOST: Duration = Duration::from_secs(1);
const STATUS_CHECK: Duration = Duration::from_secs(10);

pub struct NodeFacts {
    pub name: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub max_pods: u32,
    pub lease_duration: Duration,
    /// The port of the agent's own HTTP server (/metrics, /healthz),
    /// reported as the node's kubelet endpoint: scrapers' node discovery
    /// (Prometheus' and vmagent's `role: node`) takes it for the node's
    /// port. 0: none.
    pub http_port: u16,
    /// Hard eviction thresholds: crossing one shows as pressure.
    pub eviction_hard: Vec<pressure::Threshold>,
    /// Where the node's memory, disk and pid readings come from.
    pub sources: pressure::Sources,
}

/// The Ready condition's status in a NodeStatus as JSON.
fn ready_of(status: &Value) -> Option<&str> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?["status"]
        .as_str()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The pressure conditions, as the kubelet words them, from the
/// thresholds crossed.
fn pressure_conditions(crossed: &[pressure::Crossed]) -> Vec<Value> {
    let under = |condition: &str| {
        let signals: Vec<&str> = crossed
            .iter()
            .filter(|c| pressure::condition_of(c.threshold.signal) == condition)
            .map(|c| c.threshold.signal.name())
            .collect();
        (!signals.is_empty()).then(|| signals.join(", "))
    };
    let one = |condition: &str, ok: (&str, &str), short: (&str, &str)| match under(condition) {
        None => json!({"type": condition, "status": "False", "reason": ok.0, "message": ok.1}),
        Some(signals) => json!({
            "type": condition, "status": "True", "reason": short.0,
            "message": format!("{} (below the eviction threshold: {signals})", short.1),
        }),
    };
    vec![
        one(
            "MemoryPressure",
            (
                "KubeletHasSufficientMemory",
                "the agent has sufficient memory available",
            ),
            (
                "KubeletHasInsufficientMemory",
                "the agent has insufficient memory available",
            ),
        ),
        one(
            "DiskPressure",
            ("KubeletHasNoDiskPressure", "the agent has no disk pressure"),
            ("KubeletHasDiskPressure", "the agent has disk pressure"),
        ),
        one(
            "PIDPressure",
            (
                "KubeletHasSufficientPID",
                "the agent has sufficient PID available",
            ),
            (
                "KubeletHasInsufficientPID",
                "the agent has insufficient PID available",
            ),
        ),
    ]
}

/// The status without its heartbeat times (compared to tell a change).
/// When the runtime does not answer, the node is not Ready, saying why,
/// and what it last knew of the runtime stands for the rest.
async fn status<R: Runtime>(
    rt: &R,
    facts: &NodeFacts,
    known: &mut Option<Info>,
) -> (Value, Vec<pressure::Crossed>) {
    let runtime_down = match rt.info().await {
        Ok(info) => {
            *known = Some(info);
            None
        }
        Err(e) => Some(e.to_string()),
    };
    let info = known.clone().unwrap_or_default();
    let sources = facts.sources.clone();
    let readings = tokio::task::spawn_blocking(move || pressure::read(&sources))
        .await
        .unwrap_or_default();
    let crossed = pressure::crossed(&facts.eviction_hard, &readings);
    let mut conditions = pressure_conditions(&crossed);
    conditions.push(match &runtime_down {
        None => json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "the skiff agent is posting ready status"}),
        Some(e) => json!({
            "type": "Ready", "status": "False", "reason": "KubeletNotReady",
            "message": format!("container runtime is down: {e}"),
        }),
    });
    let memory_ki = info.memory_bytes / 1024;
    let resources = json!({
        "cpu": info.cpus.to_string(),
        "memory": format!("{memory_ki}Ki"),
        "pods": facts.max_pods.to_string(),
    });
    let status = json!({
        "capacity": resources,
        "allocatable": resources,
        "addresses": [
            {"type": "InternalIP", "address": facts.address},
            {"type": "Hostname", "address": facts.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.http_port}},
        "nodeInfo": {
            "machineID": read_trimmed("/etc/machine-id"),
            "systemUUID": read_trimmed("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": info.kernel,
            "osImage": info.os_image,
            "containerRuntimeVersion": format!("docker://{}", info.version),
            "kubeletVersion": concat!("v1.32.0-skiff-", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": std::env::consts::OS,
            "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
        },
        "conditions": conditions,
    });
    (status, crossed)
}

/// Heartbeat times on every condition, and when each last changed status
/// (`transitions`: type -> (status, since); the agent's start for the first).
fn with_times(
    mut status: Value,
    transitions: &mut HashMap<String, (String, String)>,
    started: &str,
) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        let kind = c["type"].as_str().unwrap_or("").to_string();
        let state = c["status"].as_str().unwrap_or("").to_string();
        let seen = transitions
            .entry(kind)
            .or_insert_with(|| (state.clone(), started.to_string()));
        if seen.0 != state {
            *seen = (state, now.clone());
        }
        c["lastHeartbeatTime"] = json!(now);
        c["lastTransitionTime"] = json!(seen.1);
    }
    status
}

/// Report the node's status until `stop`; the thresholds crossed go to
/// `pressure` (for eviction) at every look.
pub async fn run<R: Runtime>(
    rt: R,
    facts: Arc<NodeFacts>,
    reports: Arc<Reports>,
    desired: Arc<Desired>,
    pressure: tokio::sync::watch::Sender<Vec<pressure::Crossed>>,
    stop: CancellationToken,
) {
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut last: Option<Value> = None;
    let mut known: Option<Info> = None;
    let mut transitions = HashMap::new();
    let mut last_sent = tokio::time::Instant::now();
    let mut check = tokio::time::interval(STATUS_CHECK);
    let mut lease = tokio::time::interval(facts.lease_duration / 4);
    let mut changes = desired.subscribe();
    let mut forced_at: Option<tokio::time::Instant> = None;
    loop {
        let mut force = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = lease.tick() => {
                reports.renew_lease(facts.lease_duration.as_secs().try_into().unwrap_or(i32::MAX));
                continue;
            }
            _ = check.tick() => {}
            r = changes.changed() => {
                if r.is_err() { return }
                let seen = desired.get("Node", "", &facts.name);
                let mine = last.as_ref().and_then(ready_of);
                let theirs = seen.as_deref().and_then(|n| ready_of(&n["status"]));
                let due = forced_at.is_none_or(|t| t.elapsed() >= FORCED_AT_MOST);
                if seen.is_none() || mine.is_none() || theirs == mine || !due {
                    continue;
                }
                tracing::info!(node = %facts.name, masters = ?theirs, ours = ?mine, "the masters' Ready differs; reporting again");
                forced_at = Some(tokio::time::Instant::now());
                force = true;
            }
        }
        let (s, crossed) = status(&rt, &facts, &mut known).await;
        pressure.send_if_modified(|was| {
            let changed = *was != crossed;
            *was = crossed;
            changed
        });
        if force || last.as_ref() != Some(&s) || last_sent.elapsed() >= STATUS_REFRESH {
            if last.as_ref().and_then(ready_of) != ready_of(&s) {
                tracing::info!(node = %facts.name, ready = ?ready_of(&s), conditions = %s["conditions"], "node condition changed");
            }
            let timed = with_times(s.clone(), &mut transitions, &started);
            reports.node(NodeReport {
                status_json: serde_json::to_vec(&timed).unwrap_or_default(),
                labels: facts.labels.clone().into_iter().collect(),
                seq: 0,
            });
            last = Some(s);
            last_sent = tokio::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::agent::from_agent;

    use super::*;
    use crate::runtime::fake::FakeRuntime;

    /// The status reported names the agent's HTTP port as the node's
    /// kubelet endpoint (it had none: scrapers' node discovery saw port 0),
    /// and Kubernetes' own types read it there.
    #[tokio::test]
    async fn the_status_names_the_agents_http_port_as_the_kubelet_endpoint() {
        let facts = Arc::new(NodeFacts {
            name: "n1".into(),
            address: "10.0.0.1".into(),
            labels: BTreeMap::new(),
            max_pods: 110,
            lease_duration: Duration::from_secs(40),
            http_port: 10255,
            eviction_hard: Vec::new(),
            sources: pressure::Sources {
                nodefs: std::env::temp_dir(),
                imagefs: None,
            },
        });
        let reports = Arc::new(Reports::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            FakeRuntime::default(),
            facts,
            reports.clone(),
            Arc::new(Desired::default()),
            tokio::sync::watch::channel(Vec::new()).0,
            stop.clone(),
        ));
        let status = loop {
            let frames = tokio::time::timeout(Duration::from_secs(5), reports.next())
                .await
                .expect("a node report within 5 s");
            let node = frames.into_iter().find_map(|f| match f.message {
                Some(from_agent::Message::Node(n)) => Some(n.status_json),
                _ => None,
            });
            if let Some(s) = node {
                break s;
            }
        };
        stop.cancel();
        task.await.unwrap();
        let status: Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(
            status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10255,
            "{status}"
        );
        let typed: k8s_openapi::api::core::v1::NodeStatus = serde_json::from_value(status).unwrap();
        assert_eq!(
            typed
                .daemon_endpoints
                .and_then(|d| d.kubelet_endpoint)
                .map(|e| e.port),
            Some(10255)
        );
    }
}
