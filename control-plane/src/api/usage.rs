//! `metrics.k8s.io/v1beta1`: the nodes' and pods' CPU and memory use, in
//! the shapes metrics-server serves (so `kubectl top` works). Nothing is
//! stored: each request asks the nodes it covers for their latest sample
//! over their connections to this master (every agent keeps one to every
//! master); a node that does not answer in time is left out, as
//! metrics-server leaves out nodes it could not scrape.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use proto::agent::{StatsSummary, Usage};
use serde_json::{json, Value};

use super::handlers::{Filter, Query};
use super::resources;
use super::status::{ApiError, ApiResult};
use super::Api;
use crate::agents::streams::NodeConnections;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// How long a node has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nodes,
    Pods,
}

/// `/apis/metrics.k8s.io/v1beta1/[namespaces/<ns>/]{nodes|pods}[/<name>]`.
#[derive(Debug, PartialEq, Eq)]
pub struct UsagePath<'a> {
    pub kind: Kind,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The path below `/apis/metrics.k8s.io/v1beta1/`, if it names something.
pub fn parse<'a>(rest: &[&'a str]) -> Option<UsagePath<'a>> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(*ns), tail),
        _ => (None, rest),
    };
    let (kind, name) = match rest {
        ["nodes"] => (Kind::Nodes, None),
        ["nodes", n] => (Kind::Nodes, Some(*n)),
        ["pods"] => (Kind::Pods, None),
        ["pods", n] => (Kind::Pods, Some(*n)),
        _ => return None,
    };
    if kind == Kind::Nodes && namespace.is_some() || name.is_some_and(str::is_empty) {
        return None;
    }
    Some(UsagePath {
        kind,
        namespace,
        name,
    })
}

pub fn resource_list() -> Value {
    let entry = |name: &str, singular: &str, kind: &str, namespaced: bool| {
        json!({"name": name, "singularName": singular, "namespaced": namespaced,
            "kind": kind, "verbs": ["get", "list"]})
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            entry("nodes", "", "NodeMetrics", false),
            entry("pods", "", "PodMetrics", true),
        ],
    })
}

impl NodeConnections {
    /// The latest sample of each of `nodes` that answers in time.
    pub async fn samples(&self, nodes: BTreeSet<String>) -> HashMap<String, StatsSummary> {
        let asks = nodes.into_iter().map(|node| async move {
            match tokio::time::timeout(ASK_TIMEOUT, self.stats(&node)).await {
                Ok(Ok(s)) => Some((node, s)),
                Ok(Err(e)) => {
                    tracing::debug!(%node, "no stats: {e}");
                    None
                }
                Err(_) => {
                    tracing::debug!(%node, "no stats: the node did not answer in time");
                    None
                }
            }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.cloned().unwrap_or_default();
    json!({
        "cpu": format!("{}n", u.cpu_nanocores.max(0)),
        "memory": format!("{}Ki", u.memory_bytes.max(0) / 1024),
    })
}

fn window(s: &StatsSummary) -> String {
    format!("{:.3}s", s.window_ms as f64 / 1000.0)
}

/// The metadata metrics-server gives an item: the object's name,
/// namespace and labels, created now.
fn item_metadata(object: &Value) -> Value {
    let m = &object["metadata"];
    let mut out = json!({
        "name": m["name"],
        "creationTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if m["namespace"].is_string() {
        out["namespace"] = m["namespace"].clone();
    }
    if m["labels"].is_object() {
        out["labels"] = m["labels"].clone();
    }
    out
}

impl Api {
    async fn objects(&self, plural: &str, ns: Option<&str>, q: &Query) -> ApiResult<Vec<Value>> {
        let r = resources::find("", "v1", plural).expect("core resource");
        let filter = Filter::from_query(q)?;
        let mut unfiltered = Query::new();
        if let Some(rv) = q.get("resourceVersion") {
            unfiltered.insert("resourceVersion".into(), rv.clone());
        }
        let list = self.list(r, ns, &unfiltered).await?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| filter.matches(o))
            .cloned()
            .collect())
    }

    /// NodeMetrics of the nodes that match `q`'s selectors.
    async fn node_usage(&self, q: &Query) -> ApiResult<Vec<Value>> {
        let nodes = self.objects("nodes", None, q).await?;
        let names = nodes
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let samples = self.nodes.samples(names).await;
        Ok(nodes
            .iter()
            .filter_map(|n| {
                let s = samples.get(n["metadata"]["name"].as_str()?)?;
                Some(json!({
                    "metadata": item_metadata(n),
                    "timestamp": s.timestamp,
                    "window": window(s),
                    "usage": usage_json(s.node.as_ref()),
                }))
            })
            .collect())
    }

    /// PodMetrics of the running pods (in `ns`, or all) that match `q`'s
    /// selectors.
    async fn pod_usage(&self, ns: Option<&str>, q: &Query) -> ApiResult<Vec<Value>> {
        let pods = self.objects("pods", ns, q).await?;
        let nodes = pods
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .collect();
        let samples = self.nodes.samples(nodes).await;
        let by_uid: HashMap<&str, (&StatsSummary, &proto::agent::PodUsage)> = samples
            .values()
            .flat_map(|s| s.pods.iter().map(move |p| (p.uid.as_str(), (s, p))))
            .collect();
        Ok(pods
            .iter()
            .filter_map(|p| {
                let (s, usage) = by_uid.get(p["metadata"]["uid"].as_str()?)?;
                let containers: Vec<Value> = usage
                    .containers
                    .iter()
                    .map(|c| json!({"name": c.name, "usage": usage_json(c.usage.as_ref())}))
                    .collect();
                Some(json!({
                    "metadata": item_metadata(p),
                    "timestamp": s.timestamp,
                    "window": window(s),
                    "containers": containers,
                }))
            })
            .collect())
    }

    /// Each running pod's CPU use in nanocores, by uid, from the nodes of
    /// `pods` (their `(node, uid)`): what the HorizontalPodAutoscaler reads.
    pub async fn pods_cpu(&self, pods: &[(String, String)]) -> HashMap<String, i64> {
        let nodes = pods.iter().map(|(n, _)| n.clone()).collect();
        let samples = self.nodes.samples(nodes).await;
        let wanted: BTreeSet<&str> = pods.iter().map(|(_, uid)| uid.as_str()).collect();
        samples
            .values()
            .flat_map(|s| s.pods.iter())
            .filter(|p| wanted.contains(p.uid.as_str()))
            .map(|p| {
                let cpu = p
                    .containers
                    .iter()
                    .filter_map(|c| c.usage.as_ref().map(|u| u.cpu_nanocores))
                    .sum();
                (p.uid.clone(), cpu)
            })
            .collect()
    }
}

/// Answer a GET under `metrics.k8s.io/v1beta1`.
pub async fn serve(api: &Api, path: UsagePath<'_>, q: &Query) -> ApiResult<Value> {
    // One object named: only it is read, and only its node asked.
    let mut q = q.clone();
    if let Some(name) = path.name {
        q.insert("fieldSelector".into(), format!("metadata.name={name}"));
    }
    let q = &q;
    let (items, kind, plural) = match path.kind {
        Kind::Nodes => (api.node_usage(q).await?, "NodeMetrics", "nodes"),
        Kind::Pods => (
            api.pod_usage(path.namespace, q).await?,
            "PodMetrics",
            "pods",
        ),
    };
    let api_version = format!("{GROUP}/{VERSION}");
    match path.name {
        None => Ok(json!({
            "kind": format!("{kind}List"),
            "apiVersion": api_version,
            "metadata": {},
            "items": items,
        })),
        Some(name) => {
            let mut item = items
                .into_iter()
                .find(|i| i["metadata"]["name"] == name)
                .ok_or_else(|| ApiError::not_found_named(&format!("{plural}.{GROUP}"), name))?;
            item["kind"] = json!(kind);
            item["apiVersion"] = json!(api_version);
            Ok(item)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = parse(&["namespaces", "default", "pods", "web"]).unwrap();
        assert_eq!(
            (p.kind, p.namespace, p.name),
            (Kind::Pods, Some("default"), Some("web"))
        );
        assert_eq!(parse(&["nodes"]).unwrap().kind, Kind::Nodes);
        assert!(parse(&["namespaces", "default", "nodes"]).is_none());
        assert!(parse(&["services"]).is_none());
        assert!(parse(&["pods", ""]).is_none());
    }
}
