//! Object state as kube-state-metrics exports it (`kube_pod_status_phase`,
//! `kube_node_status_condition`, `kube_deployment_status_replicas_available`,
//! ...), so its dashboards and alerts work on Skiff unchanged.
//!
//! The series are computed at scrape time from the store, not kept as
//! gauges: a deleted object's series are gone with it, at the next scrape.
//! Only the Raft leader serves them (the other masters serve none), as a
//! cluster runs one kube-state-metrics: the sums over the cluster stay
//! right without de-duplicating three masters' copies, and after a
//! failover the new leader serves them from its own, complete, store. The
//! leader reads its own applied state (a serializable read): no quorum
//! round trip per scrape.

use std::fmt::Write;

use crate::encryption::Encryption;
use raft_store::mvcc::{KeyRange, RangeRequest};
use raft_store::{Store, StoreError};
use serde_json::Value;

const PHASES: &[&str] = &["Pending", "Running", "Succeeded", "Failed", "Unknown"];
const CONDITION_STATUSES: &[(&str, &str)] =
    &[("True", "true"), ("False", "false"), ("Unknown", "unknown")];

/// The exposition text of every series, or "" on a master that is not the
/// leader.
pub async fn scrape(store: &Store, encryption: &Encryption) -> Result<String, StoreError> {
    if !store.is_leader() {
        return Ok(String::new());
    }
    let pods = list(store, encryption, "/registry/core/pods/").await?;
    let deployments = list(store, encryption, "/registry/apps/deployments/").await?;
    let nodes = list(store, encryption, "/registry/core/nodes/").await?;
    Ok(render(&pods, &deployments, &nodes))
}

async fn list(
    store: &Store,
    encryption: &Encryption,
    prefix: &str,
) -> Result<Vec<Value>, StoreError> {
    let req = RangeRequest {
        range: KeyRange::prefix(prefix.as_bytes().to_vec()),
        ..Default::default()
    };
    let (resp, _) = store.range(&req, true).await?;
    let decode = |kv: &raft_store::mvcc::KeyValue| -> Result<Value, String> {
        let key = String::from_utf8_lossy(&kv.key);
        let plain = encryption
            .open(&key, &kv.value)
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&plain).map_err(|e| e.to_string())
    };
    Ok(resp
        .kvs
        .iter()
        .filter_map(|kv| match decode(kv) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), "kube-state metrics: undecodable object: {e}");
                None
            }
        })
        .collect())
}

/// One metric family being written: its header, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.name);
        self.out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.out, "}} {value}");
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> &'v str {
    path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or("")
}

/// The series for these objects (pure: the unit tests call it).
pub fn render(pods: &[Value], deployments: &[Value], nodes: &[Value]) -> String {
    let mut out = String::new();
    let meta = |o: &Value| {
        (
            str_at(o, &["metadata", "namespace"]).to_string(),
            str_at(o, &["metadata", "name"]).to_string(),
            str_at(o, &["metadata", "uid"]).to_string(),
        )
    };

    let mut f = Family::new(
        &mut out,
        "kube_pod_status_phase",
        "gauge",
        "The pods current phase (1 for the phase it is in, 0 for the others).",
    );
    for p in pods {
        let phase = str_at(p, &["status", "phase"]);
        if phase.is_empty() {
            continue;
        }
        let (ns, name, uid) = meta(p);
        for candidate in PHASES {
            let value = if *candidate == phase { 1.0 } else { 0.0 };
            f.sample(
                &[
                    ("namespace", &ns),
                    ("pod", &name),
                    ("uid", &uid),
                    ("phase", candidate),
                ],
                value,
            );
        }
    }

    let mut f = Family::new(
        &mut out,
        "kube_pod_container_status_restarts_total",
        "counter",
        "The number of container restarts per container.",
    );
    for p in pods {
        let (ns, name, uid) = meta(p);
        for c in p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            f.sample(
                &[
                    ("namespace", &ns),
                    ("pod", &name),
                    ("uid", &uid),
                    ("container", str_at(c, &["name"])),
                ],
                c["restartCount"].as_f64().unwrap_or(0.0),
            );
        }
    }

    // Only a container that is waiting has a sample, at 1, labelled with
    // why it waits (CrashLoopBackOff, ContainerCreating, ImagePullBackOff...),
    // as kube-state-metrics v2 reports it: a reason it no longer has is gone.
    let mut f = Family::new(
        &mut out,
        "kube_pod_container_status_waiting_reason",
        "gauge",
        "Why a container is waiting (1 for the reason it is waiting for now; no sample when it is not waiting).",
    );
    for p in pods {
        let (ns, name, uid) = meta(p);
        for c in p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let reason = str_at(c, &["state", "waiting", "reason"]);
            if reason.is_empty() {
                continue;
            }
            f.sample(
                &[
                    ("namespace", &ns),
                    ("pod", &name),
                    ("uid", &uid),
                    ("container", str_at(c, &["name"])),
                    ("reason", reason),
                ],
                1.0,
            );
        }
    }

    let mut f = Family::new(
        &mut out,
        "kube_deployment_status_replicas_available",
        "gauge",
        "The number of available replicas per deployment.",
    );
    for d in deployments {
        let (ns, name, _) = meta(d);
        f.sample(
            &[("namespace", &ns), ("deployment", &name)],
            d["status"]["availableReplicas"].as_f64().unwrap_or(0.0),
        );
    }
    let mut f = Family::new(
        &mut out,
        "kube_deployment_spec_replicas",
        "gauge",
        "Number of desired pods for a deployment.",
    );
    for d in deployments {
        let (ns, name, _) = meta(d);
        f.sample(
            &[("namespace", &ns), ("deployment", &name)],
            d["spec"]["replicas"].as_f64().unwrap_or(1.0),
        );
    }

    let mut f = Family::new(
        &mut out,
        "kube_node_status_condition",
        "gauge",
        "The condition of a cluster node (1 for the status it has, 0 for the others).",
    );
    for n in nodes {
        let (_, name, _) = meta(n);
        for c in n["status"]["conditions"].as_array().into_iter().flatten() {
            let (kind, status) = (str_at(c, &["type"]), str_at(c, &["status"]));
            for (stored, label) in CONDITION_STATUSES {
                let value = if *stored == status { 1.0 } else { 0.0 };
                f.sample(
                    &[("node", &name), ("condition", kind), ("status", label)],
                    value,
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn series_follow_kube_state_metrics() {
        let pods = [
            json!({
                "metadata": {"namespace": "default", "name": "web-\"1\"", "uid": "u1"},
                "status": {"phase": "Running",
                    "containerStatuses": [{"name": "httpd", "restartCount": 3,
                        "state": {"running": {"startedAt": "2026-12-07T15:00:00Z"}}}]}
            }),
            json!({
                "metadata": {"namespace": "shop", "name": "crash", "uid": "u2"},
                "status": {"phase": "Running",
                    "containerStatuses": [{"name": "app", "restartCount": 2,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}}]}
            }),
        ];
        let deployments = [json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"replicas": 3},
            "status": {"availableReplicas": 2}
        })];
        let nodes = [json!({
            "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        })];
        let text = render(&pods, &deployments, &nodes);
        for line in [
            "# TYPE kube_pod_status_phase gauge",
            r#"kube_pod_status_phase{namespace="default",pod="web-\"1\"",uid="u1",phase="Running"} 1"#,
            r#"kube_pod_status_phase{namespace="default",pod="web-\"1\"",uid="u1",phase="Pending"} 0"#,
            r#"kube_pod_container_status_restarts_total{namespace="default",pod="web-\"1\"",uid="u1",container="httpd"} 3"#,
            "# TYPE kube_pod_container_status_waiting_reason gauge",
            r#"kube_pod_container_status_waiting_reason{namespace="shop",pod="crash",uid="u2",container="app",reason="CrashLoopBackOff"} 1"#,
            r#"kube_deployment_status_replicas_available{namespace="default",deployment="web"} 2"#,
            r#"kube_deployment_spec_replicas{namespace="default",deployment="web"} 3"#,
            r#"kube_node_status_condition{node="n1",condition="Ready",status="true"} 1"#,
            r#"kube_node_status_condition{node="n1",condition="Ready",status="unknown"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // A running container has no waiting sample.
        assert!(
            !text.contains(r#"kube_pod_container_status_waiting_reason{namespace="default""#),
            "{text}"
        );
        // No objects, no samples; the headers alone are valid exposition.
        let empty = render(&[], &[], &[]);
        assert!(empty.lines().all(|l| l.starts_with('#')), "{empty}");
    }
}
