//! Nodes with no agent behind them, registered through the API: each is a
//! Node object (Ready, 4 cpu, 8Gi, 110 pods) and a Lease in
//! kube-node-lease renewed every 300 ms, and every pod bound to one is
//! reported Running and Ready, as a kubelet would. A node can be stopped
//! (it falls silent: no more heartbeats or pod updates).
//!
//! Pod labels steer the fake kubelet: `skiff.test/hold: "true"` leaves a
//! pod unstarted (not ready); `skiff.test/phase: Succeeded|Failed` makes
//! it finish that way instead of running. A pod marked for deletion on a
//! live node is deleted for good, as its kubelet would once its containers
//! had stopped.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

/// An HTTPS client for the API with the kubeconfig's CA and client certificate.
#[derive(Clone)]
pub struct Kube {
    http: reqwest::Client,
    server: String,
}

impl Kube {
    pub fn new(kubeconfig: &Path) -> Kube {
        let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig yaml");
        let b64 = |v: &serde_yaml::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 field"))
                .expect("base64")
        };
        let ca = b64(&doc["clusters"][0]["cluster"]["certificate-authority-data"]);
        let mut id = b64(&doc["users"][0]["user"]["client-certificate-data"]);
        id.extend(b64(&doc["users"][0]["user"]["client-key-data"]));
        let server = doc["clusters"][0]["cluster"]["server"]
            .as_str()
            .expect("server")
            .to_string();
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
            .identity(reqwest::Identity::from_pem(&id).expect("identity"))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("https client");
        Kube { http, server }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, (u16, String)> {
        let resp = req.send().await.map_err(|e| (0, e.to_string()))?;
        let code = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&code) {
            Ok(body)
        } else {
            Err((code, body["message"].as_str().unwrap_or("").to_string()))
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, (u16, String)> {
        self.send(self.http.get(format!("{}{path}", self.server)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, (u16, String)> {
        self.send(self.http.post(format!("{}{path}", self.server)).json(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, (u16, String)> {
        self.send(self.http.put(format!("{}{path}", self.server)).json(body))
            .await
    }

    pub async fn merge_patch(&self, path: &str, body: &Value) -> Result<Value, (u16, String)> {
        self.send(
            self.http
                .patch(format!("{}{path}", self.server))
                .header("content-type", "application/merge-patch+json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, (u16, String)> {
        self.send(self.http.delete(format!("{}{path}", self.server)))
            .await
    }

    pub async fn delete_with(&self, path: &str, body: &Value) -> Result<Value, (u16, String)> {
        self.send(
            self.http
                .delete(format!("{}{path}", self.server))
                .json(body),
        )
        .await
    }

    /// The items of a list.
    pub async fn items(&self, path: &str) -> Vec<Value> {
        self.get(path)
            .await
            .ok()
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    }
}

/// A stable address for a pod, from its uid.
fn pod_ip(uid: &str) -> String {
    let h = uid.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("10.244.{}.{}", (h >> 8) % 250, h % 250 + 2)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub struct FakeNodes {
    kube: Kube,
    alive: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeNodes {
    /// Register `names` and start heartbeating them.
    pub async fn start(kube: &Kube, names: &[&str]) -> FakeNodes {
        let alive = Arc::new(Mutex::new(HashSet::new()));
        let nodes = FakeNodes {
            kube: kube.clone(),
            alive: alive.clone(),
            task: tokio::spawn(heartbeat(kube.clone(), alive)),
        };
        for name in names {
            nodes.add(name, "4").await;
        }
        nodes
    }

    /// Register one more node with `cpu` cores.
    pub async fn add(&self, name: &str, cpu: &str) {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        });
        self.kube
            .post("/api/v1/nodes", &node)
            .await
            .expect("registering a node");
        let status = json!({"status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
        }});
        self.kube
            .merge_patch(&format!("/api/v1/nodes/{name}/status"), &status)
            .await
            .expect("node status");
        self.alive.lock().unwrap().insert(name.to_string());
    }

    /// The node falls silent.
    pub fn stop(&self, name: &str) {
        self.alive.lock().unwrap().remove(name);
    }
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn heartbeat(kube: Kube, alive: Arc<Mutex<HashSet<String>>>) {
    loop {
        let names: Vec<String> = alive.lock().unwrap().iter().cloned().collect();
        for name in &names {
            let path =
                format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now()},
            });
            if kube.put(&path, &lease).await.is_err() {
                let _ = kube
                    .post(
                        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                        &lease,
                    )
                    .await;
            }
        }
        for pod in kube.items("/api/v1/pods").await {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
            let labels = &pod["metadata"]["labels"];
            let finish = labels["skiff.test/phase"].as_str();
            let want = finish.unwrap_or("Running");
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = pod["metadata"]["name"].as_str().unwrap_or("");
            if names.iter().any(|n| n == node) && pod["metadata"]["deletionTimestamp"].is_string() {
                // As a kubelet does once the containers are gone.
                let confirm = json!({"gracePeriodSeconds": 0,
                    "preconditions": {"uid": pod["metadata"]["uid"]}});
                let _ = kube
                    .delete_with(&format!("/api/v1/namespaces/{ns}/pods/{name}"), &confirm)
                    .await;
                continue;
            }
            if !names.iter().any(|n| n == node)
                || pod["status"]["phase"] == want
                || labels["skiff.test/hold"] == "true"
                || pod["metadata"]["deletionTimestamp"].is_string()
            {
                continue;
            }
            let t = now();
            let ready = if finish.is_some() { "False" } else { "True" };
            let status = json!({"status": {
                "phase": want,
                "podIP": pod_ip(pod["metadata"]["uid"].as_str().unwrap_or(name)),
                "startTime": t,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                    {"type": "ContainersReady", "status": ready, "lastTransitionTime": t},
                    {"type": "Ready", "status": ready, "lastTransitionTime": t},
                ],
            }});
            let _ = kube
                .merge_patch(
                    &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
                    &status,
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
