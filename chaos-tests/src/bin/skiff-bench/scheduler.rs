//! `skiff-bench scheduler`: the real scheduling algorithm and cache
//! (`control_plane::scheduler::core`), in process, on fake nodes: pods
//! bound per second and the p99 of one pod's scheduling, for 10,000 and
//! 50,000 pending pods on 5,000 nodes, beside kube-scheduler's published
//! floors for the same sizes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use control_plane::scheduler::core::Scheduler;
use control_plane::scheduler::pod_info::PodInfo;
use k8s_openapi::api::core::v1::{
    Container, Node, NodeCondition, NodeStatus, Pod, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

fn node(i: usize) -> Node {
    let q = |s: &str| Quantity(s.into());
    let alloc = BTreeMap::from([
        ("cpu".to_string(), q("32")),
        ("memory".to_string(), q("128Gi")),
        ("pods".to_string(), q("110")),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(format!("node-{i}")),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), format!("node-{i}")),
                (
                    "topology.kubernetes.io/zone".to_string(),
                    format!("zone-{}", i % 3),
                ),
            ])),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            allocatable: Some(alloc.clone()),
            capacity: Some(alloc),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn pod(i: usize) -> Pod {
    let owner = format!("rs-{}", i % 100);
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i}")),
            namespace: Some("bench".into()),
            labels: Some(BTreeMap::from([("app".to_string(), owner.clone())])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: owner.clone(),
                uid: owner,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".to_string(), Quantity("100m".into())),
                        ("memory".to_string(), Quantity("128Mi".into())),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Schedule `pods` pending pods on `nodes` nodes; (pods/s, p99, unschedulable).
fn measure(nodes: usize, pods: usize) -> (f64, Duration, usize) {
    let mut s = Scheduler::default();
    for i in 0..nodes {
        s.cache.upsert_node(&node(i));
    }
    let pending: Vec<Pod> = (0..pods).map(pod).collect();
    let mut latencies = Vec::with_capacity(pods);
    let mut failed = 0;
    let started = Instant::now();
    for p in &pending {
        let t = Instant::now();
        if s.schedule(PodInfo::new(p)).is_err() {
            failed += 1;
        }
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    (pods as f64 / total.as_secs_f64(), p99, failed)
}

pub fn run(nodes: usize) {
    println!("in-process scheduler, {nodes} nodes (32 cpu, 128Gi, 110 pods each), pods requesting 100m / 128Mi from 100 ReplicaSets");
    for (pods, floor) in [(10_000usize, 680.0), (50_000, 810.0)] {
        let (rate, p99, failed) = measure(nodes, pods);
        println!(
            "{pods} pods: bound/s={rate:.0} p99_ms={:.3} unschedulable={failed}; kube-scheduler CI floor {floor:.0}/s: ratio {:.1}; target 10000/s",
            p99.as_secs_f64() * 1000.0,
            rate / floor
        );
    }
}

/// End to end through the API of a running cluster: register `nodes` fake
/// nodes, create a Deployment of `replicas`, and time until every pod is
/// bound (counted from a watch on pods).
pub async fn run_e2e(
    kubeconfig: &std::path::Path,
    server: &str,
    nodes: usize,
    replicas: usize,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use serde_json::json;

    let http = super::api::https_client(kubeconfig)?;
    super::api::ensure_namespace(&http, server).await?;
    let ns = super::api::NAMESPACE;
    println!(
        "through the API at {server}: {nodes} fake nodes, a Deployment of {replicas} replicas"
    );
    let started = Instant::now();
    let registered = futures::stream::iter(0..nodes)
        .map(|i| {
            let http = http.clone();
            async move {
                let name = format!("bench-node-{i}");
                let node = json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "skiff.bench/fake": "true"}}});
                let _ = http.post(format!("{server}/api/v1/nodes")).json(&node).send().await;
                let status = json!({"status": {
                    "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                http.patch(format!("{server}/api/v1/nodes/{name}/status"))
                    .header("content-type", "application/merge-patch+json")
                    .body(status.to_string())
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .buffer_unordered(32)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    println!(
        "registered {registered} nodes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        registered == nodes,
        "only {registered} of {nodes} nodes registered"
    );

    // Follow pods from now on.
    let rv =
        crate::api::list_revision(&http, &format!("{server}/api/v1/namespaces/{ns}/pods")).await?;
    let watch = http
        .get(format!(
            "{server}/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion={rv}&timeoutSeconds=600"
        ))
        .send()
        .await?;
    let name = format!("sched-e2e-{}", std::process::id());
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": {"skiff.bench/fake": "true"},
                    "containers": [{"name": "c", "image": "busybox",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}});
    let t0 = Instant::now();
    let r = http
        .post(format!("{server}/apis/apps/v1/namespaces/{ns}/deployments"))
        .json(&d)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "creating the deployment: {}",
        r.text().await?
    );
    let mut bound = std::collections::HashSet::new();
    let mut created = std::collections::HashSet::new();
    let mut first_created = None;
    let mut stream = watch.bytes_stream();
    let mut buf = Vec::new();
    let deadline = t0 + Duration::from_secs(600);
    while bound.len() < replicas {
        let chunk = match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => anyhow::bail!("watch ended with {} of {replicas} bound", bound.len()),
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            let pod = &ev["object"];
            if pod["metadata"]["labels"]["app"] != name.as_str() {
                continue;
            }
            let pname = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
            if created.insert(pname.clone()) && first_created.is_none() {
                first_created = Some(t0.elapsed());
            }
            if pod["spec"]["nodeName"].is_string() {
                bound.insert(pname);
            }
        }
    }
    let total = t0.elapsed();
    println!(
        "{replicas} pods created and bound in {:.1} s: bound/s={:.0} (first pod after {:.0} ms); kube-scheduler CI floor 680/s: ratio {:.1}",
        total.as_secs_f64(),
        replicas as f64 / total.as_secs_f64(),
        first_created.unwrap_or_default().as_secs_f64() * 1000.0,
        replicas as f64 / total.as_secs_f64() / 680.0
    );
    // Clean up: the deployment (its pods follow) and the nodes.
    let _ = http
        .delete(format!(
            "{server}/apis/apps/v1/namespaces/{ns}/deployments/{name}"
        ))
        .send()
        .await;
    let nodes = (0..nodes).map(|i| format!("{server}/api/v1/nodes/bench-node-{i}"));
    super::api::delete_all(&http, nodes).await;
    Ok(())
}
