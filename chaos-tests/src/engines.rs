//! What the nodes' Docker engines ran: each engine's container events
//! (`docker events`), recorded from the moment [`Recorder::start`] is
//! called until [`Recorder::stop`], for checkers that judge what ran where
//! and when ([`crate::checker::at_most_one`]). Containers already running
//! at the start count as started then.
//!
//! The engines are the real ones the node agents drive; timestamps are the
//! engines' own (`timeNano`), all on this machine's clock.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The labels the node agent puts on every container of a pod.
const LABEL_UID: &str = "io.kubernetes.pod.uid";
const LABEL_NAME: &str = "io.kubernetes.pod.name";
const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Die,
}

/// The pod a container belongs to, from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOf {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodOf {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn from_labels(labels: &Value) -> Option<PodOf> {
        let get = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_string);
        Some(PodOf {
            namespace: get(LABEL_NAMESPACE)?,
            name: get(LABEL_NAME)?,
            uid: get(LABEL_UID)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The engine's name, as given to the recorder.
    pub engine: String,
    pub container: String,
    pub action: Action,
    pub time_nano: i64,
    /// None for containers that are not a pod's.
    pub pod: Option<PodOf>,
}

/// One `docker events` line as a ContainerEvent, if it is a start or a die.
fn parse(engine: &str, line: &str) -> Option<ContainerEvent> {
    let v: Value = serde_json::from_str(line).ok()?;
    let action = match v["Action"].as_str()? {
        "start" => Action::Start,
        "die" => Action::Die,
        _ => return None,
    };
    Some(ContainerEvent {
        engine: engine.to_string(),
        container: v["Actor"]["ID"].as_str()?.to_string(),
        action,
        time_nano: v["timeNano"].as_i64()?,
        pod: PodOf::from_labels(&v["Actor"]["Attributes"]),
    })
}

fn now_nano() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

struct Follower {
    child: Child,
    reader: JoinHandle<()>,
}

/// Follows the container events of several engines.
pub struct Recorder {
    events: Arc<Mutex<Vec<ContainerEvent>>>,
    followers: Vec<Follower>,
}

impl Recorder {
    /// Start following `engines`: (name, Docker host such as
    /// `unix:///run/skiff/n1/docker.sock`).
    pub fn start(engines: &[(String, String)]) -> Result<Recorder> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let since = format!("{:.3}", now_nano() as f64 / 1e9);
        let mut followers = Vec::new();
        for (name, host) in engines {
            let mut child = Command::new("docker")
                .args(["-H", host, "events", "--since", &since])
                .args(["--filter", "type=container", "--format", "{{json .}}"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("docker events on {host}"))?;
            let out = child.stdout.take().context("docker events' output")?;
            let (engine, sink) = (name.clone(), events.clone());
            let reader = std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    if let Some(e) = parse(&engine, &line) {
                        sink.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                    }
                }
            });
            followers.push(Follower { child, reader });
            // What runs already counts as started now.
            let started = now_nano();
            for (id, pod) in running(host)? {
                events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(ContainerEvent {
                        engine: name.clone(),
                        container: id,
                        action: Action::Start,
                        time_nano: started,
                        pod,
                    });
            }
        }
        Ok(Recorder { events, followers })
    }

    /// The events so far.
    pub fn events(&self) -> Vec<ContainerEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stop following; every event recorded.
    pub fn stop(mut self) -> Vec<ContainerEvent> {
        self.stop_followers();
        self.events()
    }

    fn stop_followers(&mut self) {
        for mut f in self.followers.drain(..) {
            let _ = f.child.kill();
            let _ = f.child.wait();
            let _ = f.reader.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop_followers();
    }
}

/// The running containers of `host`'s engine, with their pods.
fn running(host: &str) -> Result<Vec<(String, Option<PodOf>)>> {
    let out = Command::new("docker")
        .args(["-H", host, "ps", "--no-trunc", "--format", "{{.ID}}"])
        .output()
        .context("docker ps")?;
    if !out.status.success() {
        bail!(
            "docker ps on {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = Command::new("docker")
        .args(["-H", host, "inspect", "--format", "{{json .Config.Labels}}"])
        .args(&ids)
        .output()
        .context("docker inspect")?;
    let labels: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    Ok(ids
        .into_iter()
        .zip(
            labels
                .iter()
                .map(PodOf::from_labels)
                .chain(std::iter::repeat(None)),
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_events_line_is_parsed() {
        let line = r#"{"status":"start","id":"734b","Type":"container","Action":"start","Actor":{"ID":"734b","Attributes":{"io.kubernetes.pod.name":"one-0","io.kubernetes.pod.namespace":"default","io.kubernetes.pod.uid":"u1","name":"x"}},"time":1796632603,"timeNano":1796632603050927335}"#;
        let e = parse("n1", line).expect("an event");
        assert_eq!(e.action, Action::Start);
        assert_eq!(e.time_nano, 1796632603050927335);
        assert_eq!(e.pod.expect("a pod's").full_name(), "default/one-0");
        let attach = line.replace("\"Action\":\"start\"", "\"Action\":\"attach\"");
        assert!(parse("n1", &attach).is_none());
    }
}
