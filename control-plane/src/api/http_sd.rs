//! `/skiff/v1/http-sd`: what Prometheus should scrape, as a Prometheus HTTP
//! service-discovery document (`http_sd_configs`: a JSON list of
//! `{"targets": [...], "labels": {...}}`), for Prometheus builds without
//! `kubernetes_sd_configs` (Debian's, for one).
//!
//! It lists every master's `/metrics` (the Raft members, at the URLs they
//! registered, see [`crate::agents::masters`]), every node agent's (a Node's
//! InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port`, the
//! agent's `--listen-metrics` port), and every pod annotated
//! `prometheus.io/scrape: "true"` (at `prometheus.io/port`,
//! `prometheus.io/path`, `prometheus.io/scheme`). Labels are those
//! Kubernetes service discovery gives (`__meta_kubernetes_namespace`,
//! `__meta_kubernetes_pod_name`, `__meta_kubernetes_node_name`, ...), plus
//! `__meta_skiff_role` (`master`, `node` or `pod`) to pick a job by;
//! `?role=` keeps one of them.
//!
//! The path is a non-resource URL, as `/metrics` or `/healthz` are on
//! kube-apiserver: it sits on the API port behind the same authentication
//! (a client certificate or a bearer token), and nodes are refused, as for
//! `metrics.k8s.io`. It is not under `/apis/`, where every path is a
//! resource that discovery describes; and it is versioned, so the document
//! can change shape later.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::handlers::Query;
use super::status::{ApiError, ApiResult};
use super::Api;

/// One target group of the document.
pub type Group = Value;

/// A master, as the service discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub name: String,
    pub id: u64,
    pub learner: bool,
    /// Where its `/metrics` is (from its registration), if it said.
    pub metrics_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Node,
    Pod,
}

impl Role {
    fn parse(s: &str) -> ApiResult<Role> {
        match s {
            "master" => Ok(Role::Master),
            "node" => Ok(Role::Node),
            "pod" => Ok(Role::Pod),
            other => Err(ApiError::bad_request(format!(
                "unknown role {other:?}: expected master, node or pod"
            ))),
        }
    }
}

/// Answer a request for the document.
pub async fn serve(api: &Api, q: &Query) -> ApiResult<Value> {
    let only = q
        .get("role")
        .filter(|r| !r.is_empty())
        .map(|r| Role::parse(r))
        .transpose()?;
    let wants = |r: Role| only.is_none_or(|o| o == r);
    let mut groups = Vec::new();
    if wants(Role::Master) {
        let urls = crate::agents::masters::metrics_urls(api).await;
        let masters: Vec<Master> = api
            .registry()
            .store()
            .members()
            .into_iter()
            .map(|m| Master {
                metrics_url: urls.get(&m.name).cloned(),
                name: m.name,
                id: m.id,
                learner: m.is_learner,
            })
            .collect();
        groups.extend(masters.iter().filter_map(master_group));
    }
    let everything = Query::new();
    if wants(Role::Node) {
        let nodes = api.list(resource("nodes"), None, &everything).await?;
        groups.extend(items(&nodes).filter_map(node_group));
    }
    if wants(Role::Pod) {
        let pods = api.list(resource("pods"), None, &everything).await?;
        groups.extend(items(&pods).flat_map(pod_groups));
    }
    Ok(Value::Array(groups))
}

fn resource(plural: &str) -> &'static super::Resource {
    super::find_resource("", "v1", plural).expect("core resources are served")
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list["items"].as_array().into_iter().flatten()
}

/// Prometheus' label name rule: anything but `[a-zA-Z0-9_]` becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `<prefix>_<name>` and `<prefix>present_<name>` for each label or
/// annotation, as Kubernetes SD gives them.
fn map_labels(labels: &mut BTreeMap<String, String>, prefix: &str, map: &Value) {
    for (k, v) in map.as_object().into_iter().flatten() {
        let name = sanitize(k);
        labels.insert(
            format!("{prefix}_{name}"),
            v.as_str().unwrap_or_default().to_string(),
        );
        labels.insert(format!("{prefix}present_{name}"), "true".into());
    }
}

fn group(target: String, labels: BTreeMap<String, String>) -> Group {
    json!({"targets": [target], "labels": labels})
}

/// A master's target, if it registered where its metrics are.
pub fn master_group(m: &Master) -> Option<Group> {
    let url = m.metrics_url.as_deref()?;
    let (scheme, rest) = url.split_once("://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let labels = BTreeMap::from([
        ("__meta_skiff_role".to_string(), "master".to_string()),
        ("__meta_skiff_master_name".into(), m.name.clone()),
        ("__meta_skiff_master_id".into(), format!("{:x}", m.id)),
        ("__meta_skiff_master_learner".into(), m.learner.to_string()),
        ("__scheme__".into(), scheme.to_string()),
        ("__metrics_path__".into(), path.to_string()),
    ]);
    Some(group(host.to_string(), labels))
}

/// A node agent's target: its InternalIP (else its first address) and the
/// port of its HTTP server; none if the Node does not say either.
pub fn node_group(node: &Value) -> Option<Group> {
    let name = node["metadata"]["name"].as_str()?;
    let addresses = node["status"]["addresses"].as_array()?;
    let address = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.first())?["address"]
        .as_str()?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0 && *p <= u16::MAX as u64)?;
    let mut labels = BTreeMap::from([
        ("__meta_skiff_role".to_string(), "node".to_string()),
        ("__meta_kubernetes_node_name".into(), name.to_string()),
        // Kubernetes SD names a node's target by the node.
        ("instance".into(), name.to_string()),
        ("__scheme__".into(), "http".into()),
        ("__metrics_path__".into(), "/metrics".into()),
    ]);
    for a in addresses {
        if let (Some(t), Some(v)) = (a["type"].as_str(), a["address"].as_str()) {
            labels
                .entry(format!("__meta_kubernetes_node_address_{}", sanitize(t)))
                .or_insert_with(|| v.to_string());
        }
    }
    if let Some(id) = node["spec"]["providerID"].as_str() {
        labels.insert("__meta_kubernetes_node_provider_id".into(), id.to_string());
    }
    map_labels(
        &mut labels,
        "__meta_kubernetes_node_label",
        &node["metadata"]["labels"],
    );
    map_labels(
        &mut labels,
        "__meta_kubernetes_node_annotation",
        &node["metadata"]["annotations"],
    );
    Some(group(join_host_port(address, port), labels))
}

fn join_host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A pod's targets, if it asks to be scraped (`prometheus.io/scrape:
/// "true"`) and has an address: the `prometheus.io/port` if given, else
/// one target per declared TCP container port, else port 80.
pub fn pod_groups(pod: &Value) -> Vec<Group> {
    let meta = &pod["metadata"];
    let annotation = |k: &str| meta["annotations"][k].as_str();
    if annotation("prometheus.io/scrape") != Some("true") {
        return Vec::new();
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    let Some(ip) = pod["status"]["podIP"].as_str().filter(|ip| !ip.is_empty()) else {
        return Vec::new();
    };
    if matches!(phase, "Succeeded" | "Failed") {
        return Vec::new();
    }
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let mut labels = BTreeMap::from([
        ("__meta_skiff_role".to_string(), "pod".to_string()),
        (
            "__meta_kubernetes_namespace".into(),
            meta["namespace"].as_str().unwrap_or("default").to_string(),
        ),
        (
            "__meta_kubernetes_pod_name".into(),
            meta["name"].as_str().unwrap_or_default().to_string(),
        ),
        (
            "__meta_kubernetes_pod_uid".into(),
            meta["uid"].as_str().unwrap_or_default().to_string(),
        ),
        (
            "__meta_kubernetes_pod_node_name".into(),
            pod["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        ("__meta_kubernetes_pod_ip".into(), ip.to_string()),
        (
            "__meta_kubernetes_pod_host_ip".into(),
            pod["status"]["hostIP"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        ("__meta_kubernetes_pod_phase".into(), phase.to_string()),
        ("__meta_kubernetes_pod_ready".into(), ready.to_string()),
        (
            "__scheme__".into(),
            annotation("prometheus.io/scheme")
                .unwrap_or("http")
                .to_string(),
        ),
        (
            "__metrics_path__".into(),
            annotation("prometheus.io/path")
                .unwrap_or("/metrics")
                .to_string(),
        ),
    ]);
    if let Some(owner) = meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"] == true)
    {
        for (k, field) in [("kind", "kind"), ("name", "name")] {
            labels.insert(
                format!("__meta_kubernetes_pod_controller_{k}"),
                owner[field].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    map_labels(&mut labels, "__meta_kubernetes_pod_label", &meta["labels"]);
    map_labels(
        &mut labels,
        "__meta_kubernetes_pod_annotation",
        &meta["annotations"],
    );
    if let Some(port) = annotation("prometheus.io/port") {
        return vec![group(join_host_port(ip, port), labels)];
    }
    let mut out = Vec::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            let Some(number) = p["containerPort"].as_u64() else {
                continue;
            };
            if p["protocol"].as_str().is_some_and(|p| p != "TCP") {
                continue;
            }
            let mut labels = labels.clone();
            let mut put = |k: &str, v: &str| {
                labels.insert(format!("__meta_kubernetes_pod_container_{k}"), v.into());
            };
            put("name", c["name"].as_str().unwrap_or_default());
            put("port_name", p["name"].as_str().unwrap_or_default());
            put("port_number", &number.to_string());
            put("port_protocol", "TCP");
            out.push(group(join_host_port(ip, number), labels));
        }
    }
    if out.is_empty() {
        out.push(group(join_host_port(ip, 80), labels));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(g: &Group) -> &str {
        g["targets"][0].as_str().expect("one target")
    }

    #[test]
    fn a_master_is_listed_at_the_url_it_registered() {
        let m = Master {
            name: "m2".into(),
            id: 0xab,
            learner: false,
            metrics_url: Some("https://10.0.0.12:2381/custom/metrics".into()),
        };
        let g = master_group(&m).expect("a target");
        assert_eq!(target(&g), "10.0.0.12:2381");
        assert_eq!(g["labels"]["__scheme__"], "https");
        assert_eq!(g["labels"]["__metrics_path__"], "/custom/metrics");
        assert_eq!(g["labels"]["__meta_skiff_master_name"], "m2");
        assert_eq!(g["labels"]["__meta_skiff_master_id"], "ab");
        assert_eq!(g["labels"]["__meta_skiff_role"], "master");
        let unregistered = Master {
            metrics_url: None,
            ..m
        };
        assert_eq!(master_group(&unregistered), None);
    }

    #[test]
    fn a_node_is_listed_at_its_internal_ip_and_kubelet_port() {
        let node = json!({
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "n1"},
                    {"type": "InternalIP", "address": "10.0.0.101"},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}},
            },
        });
        let g = node_group(&node).expect("a target");
        assert_eq!(target(&g), "10.0.0.101:10255");
        let l = &g["labels"];
        assert_eq!(l["__meta_kubernetes_node_name"], "n1");
        assert_eq!(l["instance"], "n1");
        assert_eq!(l["__meta_kubernetes_node_address_InternalIP"], "10.0.0.101");
        assert_eq!(
            l["__meta_kubernetes_node_label_kubernetes_io_hostname"],
            "n1"
        );
        assert_eq!(
            l["__meta_kubernetes_node_labelpresent_kubernetes_io_hostname"],
            "true"
        );
        let mut no_port = node.clone();
        no_port["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] = json!(0);
        assert_eq!(node_group(&no_port), None, "port 0 is no target");
    }

    fn pod(annotations: Value, ports: Value) -> Value {
        json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u1",
                "labels": {"app": "web"},
                "annotations": annotations,
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7f", "controller": true}],
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "httpd", "ports": ports}]},
            "status": {
                "phase": "Running", "podIP": "10.244.1.5", "hostIP": "10.0.0.101",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        })
    }

    #[test]
    fn an_annotated_pod_is_listed_with_kubernetes_sd_labels() {
        let p = pod(
            json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9100",
                   "prometheus.io/path": "/stats"}),
            json!([{"containerPort": 8080}]),
        );
        let groups = pod_groups(&p);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(target(g), "10.244.1.5:9100");
        let l = &g["labels"];
        assert_eq!(l["__meta_kubernetes_namespace"], "shop");
        assert_eq!(l["__meta_kubernetes_pod_name"], "web-1");
        assert_eq!(l["__meta_kubernetes_pod_node_name"], "n1");
        assert_eq!(l["__meta_kubernetes_pod_ready"], "true");
        assert_eq!(l["__meta_kubernetes_pod_label_app"], "web");
        assert_eq!(l["__meta_kubernetes_pod_controller_kind"], "ReplicaSet");
        assert_eq!(
            l["__meta_kubernetes_pod_annotation_prometheus_io_port"],
            "9100"
        );
        assert_eq!(l["__metrics_path__"], "/stats");
        assert_eq!(l["__meta_skiff_role"], "pod");
    }

    #[test]
    fn without_a_port_annotation_each_tcp_container_port_is_a_target() {
        let p = pod(
            json!({"prometheus.io/scrape": "true"}),
            json!([{"containerPort": 8080, "name": "http"},
                   {"containerPort": 53, "protocol": "UDP"},
                   {"containerPort": 9090}]),
        );
        let targets: Vec<String> = pod_groups(&p).iter().map(|g| target(g).into()).collect();
        assert_eq!(targets, ["10.244.1.5:8080", "10.244.1.5:9090"]);
        assert_eq!(
            pod_groups(&p)[0]["labels"]["__meta_kubernetes_pod_container_port_name"],
            "http"
        );
        let bare = pod(json!({"prometheus.io/scrape": "true"}), json!([]));
        assert_eq!(target(&pod_groups(&bare)[0]), "10.244.1.5:80");
    }

    #[test]
    fn pods_not_asking_or_not_running_are_left_out() {
        let not_asking = pod(json!({"prometheus.io/scrape": "false"}), json!([]));
        assert!(pod_groups(&not_asking).is_empty());
        let mut done = pod(json!({"prometheus.io/scrape": "true"}), json!([]));
        done["status"]["phase"] = json!("Succeeded");
        assert!(pod_groups(&done).is_empty());
        let mut pending = pod(json!({"prometheus.io/scrape": "true"}), json!([]));
        pending["status"]["podIP"] = json!("");
        assert!(pod_groups(&pending).is_empty());
    }

    #[test]
    fn an_unknown_role_is_refused() {
        assert!(Role::parse("pods").is_err());
        assert_eq!(Role::parse("node").ok(), Some(Role::Node));
    }
}
