//! A pod's status, computed from what the runtime shows and what the
//! worker knows (waiting reasons, probe results), in the shape the kubelet
//! reports it: phase, conditions, IPs, start time, and each container's
//! state, last state, restart count, readiness and image.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

use crate::runtime::{ContainerInfo, State};

fn ts(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

/// What the status shows of one container.
pub struct ContainerView<'a> {
    pub spec: &'a Container,
    pub latest: Option<&'a ContainerInfo>,
    pub previous: Option<&'a ContainerInfo>,
    /// Why it is not running, when the worker knows better than the runtime.
    pub waiting: Option<(String, String)>,
    pub ready: bool,
    pub started: bool,
    /// Termination messages of the latest and previous instances.
    pub message: Option<String>,
    pub previous_message: Option<String>,
}

fn terminated(c: &ContainerInfo, message: Option<&String>) -> Value {
    let reason = if c.oom_killed {
        "OOMKilled"
    } else if c.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut t = json!({
        "exitCode": c.exit_code,
        "reason": reason,
        "startedAt": ts(c.started_at),
        "finishedAt": ts(c.finished_at),
        "containerID": format!("docker://{}", c.id),
    });
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        t["message"] = json!(m);
    } else if !c.error.is_empty() {
        t["message"] = json!(c.error);
    }
    json!({"terminated": t})
}

impl ContainerView<'_> {
    /// Not running now, but has run before (counts as stopped for the phase).
    fn stopped(&self) -> bool {
        matches!(self.latest, Some(l) if l.state == State::Exited)
    }

    fn running(&self) -> bool {
        self.waiting.is_none() && matches!(self.latest, Some(l) if l.state == State::Running)
    }

    fn failed(&self) -> bool {
        matches!(self.latest, Some(l) if l.state == State::Exited && l.exit_code != 0)
    }

    pub fn to_json(&self) -> Value {
        let image = self.spec.image.clone().unwrap_or_default();
        let (state, last) = match (self.latest, &self.waiting) {
            (Some(l), Some((reason, message))) if l.state == State::Exited => (
                json!({"waiting": {"reason": reason, "message": message}}),
                terminated(l, self.message.as_ref()),
            ),
            (_, Some((reason, message))) => (
                json!({"waiting": {"reason": reason, "message": message}}),
                self.previous
                    .map(|p| terminated(p, self.previous_message.as_ref()))
                    .unwrap_or(json!({})),
            ),
            (Some(l), None) => {
                let state = match l.state {
                    State::Running => json!({"running": {"startedAt": ts(l.started_at)}}),
                    State::Exited => terminated(l, self.message.as_ref()),
                    _ => json!({"waiting": {"reason": "ContainerCreating"}}),
                };
                (
                    state,
                    self.previous
                        .map(|p| terminated(p, self.previous_message.as_ref()))
                        .unwrap_or(json!({})),
                )
            }
            (None, None) => (
                json!({"waiting": {"reason": "ContainerCreating"}}),
                json!({}),
            ),
        };
        let mut v = json!({
            "name": self.spec.name,
            "image": image,
            "imageID": self.latest.map(|l| l.image_id.clone()).unwrap_or_default(),
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.latest.map(|l| l.attempt()).unwrap_or(0),
            "state": state,
            "lastState": last,
        });
        if let Some(l) = self.latest {
            v["containerID"] = json!(format!("docker://{}", l.id));
        }
        v
    }
}

/// The condition, keeping its last transition time while its status holds.
fn condition(previous: &Value, kind: &str, ok: bool, now: &str, reason: Option<&str>) -> Value {
    let status = if ok { "True" } else { "False" };
    let prev = previous["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind);
    let since = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut c =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let (false, Some(r)) = (ok, reason) {
        c["reason"] = json!(r);
    }
    c
}

/// The reason an evicted pod's status gives.
pub const EVICTED: &str = "Evicted";

pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub init: Vec<ContainerView<'a>>,
    pub app: Vec<ContainerView<'a>>,
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: &'a str,
    pub start_time: Option<String>,
    /// A reason the pod cannot run at all (say, an unsupported volume).
    pub failure: Option<(String, String)>,
    /// The status this node last made for the pod, whose conditions keep
    /// their transition times while they hold (None: the status as stored,
    /// say after the agent restarts). Not the stored status always: that
    /// echoes the node's writes late, and transition times taken from an
    /// older echo would differ from the last report at every pass.
    pub previous: Option<&'a Value>,
}

pub fn phase(v: &PodView<'_>) -> &'static str {
    // Evicted under pressure: over, whatever its restart policy.
    if v.failure.as_ref().is_some_and(|(r, _)| r == EVICTED) {
        return "Failed";
    }
    let policy = v
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let init_done = v
        .init
        .iter()
        .all(|c| matches!(c.latest, Some(l) if l.state == State::Exited && l.exit_code == 0));
    if policy == "Never" && v.init.iter().any(|c| c.failed()) {
        return "Failed";
    }
    if !init_done {
        return "Pending";
    }
    let (mut waiting, mut running, mut stopped, mut failed) = (0, 0, 0, 0);
    for c in &v.app {
        if c.running() {
            running += 1;
        } else if c.stopped() {
            stopped += 1;
            if c.failed() {
                failed += 1;
            }
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == v.app.len() && stopped > 0 {
        return match (policy, failed > 0) {
            ("Always", _) => "Running",
            ("OnFailure", true) => "Running",
            ("Never", true) => "Failed",
            _ => "Succeeded",
        };
    }
    "Pending"
}

pub fn pod_status(v: &PodView<'_>) -> Value {
    let previous = match v.previous {
        Some(p) => p.clone(),
        None => serde_json::to_value(v.pod.status.clone().unwrap_or_default()).unwrap_or_default(),
    };
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let phase = phase(v);
    let initialized = v
        .init
        .iter()
        .all(|c| matches!(c.latest, Some(l) if l.state == State::Exited && l.exit_code == 0));
    let containers_ready = !v.app.is_empty() && v.app.iter().all(|c| c.ready);
    let finished = matches!(phase, "Succeeded" | "Failed");
    let ready_reason = if finished {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition(&previous, "PodReadyToStartContainers", v.sandbox_ready, &now, None),
            condition(&previous, "Initialized", initialized, &now, Some("ContainersNotInitialized")),
            condition(&previous, "Ready", containers_ready, &now, Some(ready_reason)),
            condition(&previous, "ContainersReady", containers_ready, &now, Some(ready_reason)),
            condition(&previous, "PodScheduled", true, &now, None),
        ],
        "hostIP": v.host_ip,
        "hostIPs": [{"ip": v.host_ip}],
        "containerStatuses": v.app.iter().map(ContainerView::to_json).collect::<Vec<_>>(),
        "qosClass": qos_class(v.pod),
    });
    if !v.init.is_empty() {
        status["initContainerStatuses"] = json!(v
            .init
            .iter()
            .map(ContainerView::to_json)
            .collect::<Vec<_>>());
    }
    if let Some(ip) = &v.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(t) = &v.start_time {
        status["startTime"] = json!(t);
    }
    if let Some((reason, message)) = &v.failure {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    status
}

/// Guaranteed, Burstable or BestEffort, from the containers' resources.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match (limits.get(res), requests.get(res)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_since(status: &Value) -> (String, String) {
        let c = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or_default();
        (
            c["status"].as_str().unwrap_or("").to_string(),
            c["lastTransitionTime"].as_str().unwrap_or("").to_string(),
        )
    }

    #[test]
    fn transition_times_follow_the_last_report_not_a_late_echo() {
        let container = Container {
            name: "c".into(),
            ..Default::default()
        };
        // As stored: Ready since long ago (an echo of an older write).
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]},
        }))
        .unwrap();
        let view = |previous| PodView {
            pod: &pod,
            init: Vec::new(),
            app: vec![ContainerView {
                spec: &container,
                latest: None,
                previous: None,
                waiting: None,
                ready: false,
                started: false,
                message: None,
                previous_message: None,
            }],
            sandbox_ready: true,
            pod_ip: None,
            host_ip: "10.0.0.1",
            start_time: None,
            failure: None,
            previous,
        };
        // The node's own last report said not Ready since 12:00: kept,
        // whatever the stored copy says.
        let last = json!({"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": "2026-12-07T12:00:00Z"}
        ]});
        let again = pod_status(&view(Some(&last)));
        assert_eq!(
            ready_since(&again),
            ("False".to_string(), "2026-12-07T12:00:00Z".to_string())
        );
        // With no report of its own yet, the stored status is the reference:
        // Ready went False now.
        let first = pod_status(&view(None));
        let (status, since) = ready_since(&first);
        assert_eq!(status, "False");
        assert_ne!(since, "2026-01-01T00:00:00Z");
        assert_ne!(since, "2026-12-07T12:00:00Z");
    }
}
