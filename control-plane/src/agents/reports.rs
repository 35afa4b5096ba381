//! What a node reports, written through the API like any other write: its
//! Node's status and labels (the Node itself is made when the node joins),
//! its Lease in `kube-node-lease`, and the status of its pods. A node
//! reports only for itself and its own pods (the node authorizer's rule);
//! anything else is refused and logged.
//!
//! Node and pod reports are acknowledged (by their `seq`) once written to
//! the store, or once nothing can ever be written for them (the pod is
//! gone, or another pod holds its name now). A report that failed to be
//! written is not acknowledged, and the agent sends it again.

use axum::http::StatusCode;
use serde_json::{json, Value};

use proto::agent::{from_agent, LeaseRenewal, NodeReport, PodReport};

use super::Gateway;
use crate::api::{ApiQuery, PatchType, Resource};
use crate::controllers::node_lifecycle::LEASE_NAMESPACE;

fn resource(group: &str, version: &str, plural: &str) -> &'static Resource {
    crate::api::find_resource(group, version, plural)
        .unwrap_or_else(|| panic!("{plural} are served"))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// What became of a pod report that did not fail.
#[derive(Debug, PartialEq)]
enum Outcome {
    Written,
    /// Nothing will ever be written for it; why.
    Obsolete(String),
}

/// Write what `message` reports; the `seq` of every report that needs no
/// sending again.
pub async fn apply(gateway: &Gateway, node: &str, message: from_agent::Message) -> Vec<u64> {
    let mut acks = Vec::new();
    let (what, result) = match message {
        from_agent::Message::Node(r) => {
            let seq = r.seq;
            let result = node_report(gateway, node, r).await;
            if result.is_ok() {
                acks.push(seq);
            }
            ("node", result)
        }
        from_agent::Message::Lease(l) => ("lease", lease(gateway, node, l).await),
        from_agent::Message::Pods(p) => {
            for pod in p.pods {
                match pod_report(gateway, node, &pod).await {
                    Ok(Outcome::Written) => acks.push(pod.seq),
                    Ok(Outcome::Obsolete(why)) => {
                        tracing::info!(%node, pod = %pod.name, "pod report dropped: {why}");
                        metrics::counter!("skiff_agent_pod_reports_obsolete_total").increment(1);
                        acks.push(pod.seq);
                    }
                    Err(e) => {
                        metrics::counter!("skiff_agent_pod_reports_failed_total").increment(1);
                        tracing::info!(%node, pod = %pod.name, "pod report not written (the agent sends it again): {e}");
                    }
                }
            }
            ("pods", Ok(()))
        }
        from_agent::Message::Resync(_) => ("resync", Ok(())),
    };
    metrics::counter!("skiff_agent_reports_total", "kind" => what).increment(1);
    if let Err(e) = result {
        tracing::info!(%node, "{what} report not written: {e}");
    }
    acks
}

async fn node_report(gateway: &Gateway, node: &str, r: NodeReport) -> Result<(), String> {
    let status: Value =
        serde_json::from_slice(&r.status_json).map_err(|e| format!("status is not JSON: {e}"))?;
    let nodes = resource("", "v1", "nodes");
    let q = ApiQuery::new();
    let api = &gateway.api;
    // The Node is made when the node joins, and a report never makes it
    // again: a report on its way when the Node was deleted must not bring
    // it back (the node's connections are being closed).
    match api.get(nodes, None, node).await {
        Ok(_) => {}
        Err(e) if e.code == StatusCode::NOT_FOUND => {
            return Err(format!(
                "Node {node} does not exist (deleted?): not made again"
            ));
        }
        Err(e) => return Err(e.message),
    }
    if !r.labels.is_empty() {
        let patch = json!({"metadata": {"labels": r.labels}}).to_string();
        api.patch(
            nodes,
            None,
            node,
            None,
            PatchType::Merge,
            patch.as_bytes(),
            &q,
        )
        .await
        .map_err(|e| e.message)?;
    }
    let patch = json!({"status": status}).to_string();
    api.patch(
        nodes,
        None,
        node,
        Some("status"),
        PatchType::Merge,
        patch.as_bytes(),
        &q,
    )
    .await
    .map_err(|e| e.message)?;
    Ok(())
}

async fn lease(gateway: &Gateway, node: &str, l: LeaseRenewal) -> Result<(), String> {
    let leases = resource("coordination.k8s.io", "v1", "leases");
    let q = ApiQuery::new();
    let api = &gateway.api;
    let spec = json!({
        "holderIdentity": node,
        "leaseDurationSeconds": l.duration_seconds.max(1),
        "renewTime": now(),
    });
    let patch = json!({"spec": spec}).to_string();
    match api
        .patch(
            leases,
            Some(LEASE_NAMESPACE),
            node,
            None,
            PatchType::Merge,
            patch.as_bytes(),
            &q,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == axum::http::StatusCode::NOT_FOUND => {
            let object = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
                "spec": spec,
            });
            api.create(leases, Some(LEASE_NAMESPACE), object, &q)
                .await
                .map(|_| ())
                .map_err(|e| e.message)
        }
        Err(e) => Err(e.message),
    }
}

async fn pod_report(gateway: &Gateway, node: &str, r: &PodReport) -> Result<Outcome, String> {
    let Some(pod) = gateway.desired.pod_on(node, &r.namespace, &r.name) else {
        metrics::counter!("skiff_agent_reports_refused_total").increment(1);
        return Ok(Outcome::Obsolete(format!(
            "pod {}/{} is not bound to {node}",
            r.namespace, r.name
        )));
    };
    if pod["metadata"]["uid"].as_str() != Some(r.uid.as_str()) {
        return Ok(Outcome::Obsolete(format!(
            "pod {}/{} is another pod now",
            r.namespace, r.name
        )));
    }
    let pods = resource("", "v1", "pods");
    let q = ApiQuery::new();
    // The uid makes the write conditional: a status for a pod that was
    // replaced under the same name must not land on its successor.
    let gone = |e: crate::api::ApiError| {
        if e.code == StatusCode::NOT_FOUND || (e.code == StatusCode::CONFLICT && !e.stale) {
            Ok(Outcome::Obsolete(e.message))
        } else {
            Err(e.message)
        }
    };
    if !r.status_json.is_empty() {
        let status: Value = match serde_json::from_slice(&r.status_json) {
            Ok(s) => s,
            // Sending it again would not make it JSON.
            Err(e) => return Ok(Outcome::Obsolete(format!("status is not JSON: {e}"))),
        };
        let patch = json!({"metadata": {"uid": r.uid}, "status": status}).to_string();
        if let Err(e) = gateway
            .api
            .patch(
                pods,
                Some(&r.namespace),
                &r.name,
                Some("status"),
                PatchType::Merge,
                patch.as_bytes(),
                &q,
            )
            .await
        {
            return gone(e);
        }
    }
    if r.terminated && pod["metadata"]["deletionTimestamp"].is_string() {
        if let Err(e) = gateway
            .api
            .finish_pod_deletion(&r.namespace, &r.name, &r.uid)
            .await
        {
            return gone(e);
        }
    }
    Ok(Outcome::Written)
}
