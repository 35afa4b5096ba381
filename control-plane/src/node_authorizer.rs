//! What a node may do through the Kubernetes API, as Kubernetes' node
//! authorizer decides: read Secrets, ConfigMaps and ServiceAccounts only
//! where a pod bound to it refers to them, write only its own Node, Lease
//! and pods. The agent gateway applies the same rule to what it streams
//! (`agents::desired`) and to what it accepts (`agents::reports`).

use serde_json::Value;

use crate::agents::desired::{references, Kind};
use crate::api::{Api, ApiError, ApiQuery, Resource};

/// A request's verb, resource, namespace and name, as authorization sees it.
pub struct Request<'a> {
    pub verb: &'a str,
    pub resource: &'a Resource,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub subresource: Option<&'a str>,
}

fn forbidden(node: &str, req: &Request<'_>) -> ApiError {
    let what = match (req.namespace, req.name) {
        (Some(ns), Some(n)) => format!("{} {ns}/{n}", req.resource.plural),
        (None, Some(n)) => format!("{} {n}", req.resource.plural),
        (Some(ns), None) => format!("{} in namespace {ns}", req.resource.plural),
        (None, None) => req.resource.plural.to_string(),
    };
    ApiError::forbidden(format!(
        "node {node:?} may not {} {what}: no relationship found between the node and this object",
        req.verb
    ))
}

const READS: [&str; 3] = ["get", "list", "watch"];

/// Allow or refuse `req` by node `node`.
pub async fn authorize(api: &Api, node: &str, req: &Request<'_>) -> Result<(), ApiError> {
    let read = READS.contains(&req.verb);
    let allowed = match req.resource.plural {
        "secrets" | "configmaps" | "serviceaccounts" => {
            req.verb == "get" && referenced(api, node, req).await?
        }
        "nodes" => read || req.name == Some(node) && req.verb != "delete",
        "pods" => read || bound_here(api, node, req).await?,
        "leases" => {
            read || req.namespace == Some("kube-node-lease") && req.name.is_none_or(|n| n == node)
        }
        "events" => read || req.verb == "create",
        _ => read,
    };
    if allowed {
        Ok(())
    } else {
        Err(forbidden(node, req))
    }
}

async fn pods_on(api: &Api, node: &str) -> Result<Vec<Value>, ApiError> {
    let pods = crate::api::find_resource("", "v1", "pods").expect("pods are served");
    let mut q = ApiQuery::new();
    q.insert("fieldSelector".into(), format!("spec.nodeName={node}"));
    let list = api.list(pods, None, &q).await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

async fn referenced(api: &Api, node: &str, req: &Request<'_>) -> Result<bool, ApiError> {
    let (Some(ns), Some(name)) = (req.namespace, req.name) else {
        return Ok(false);
    };
    let kind = match req.resource.plural {
        "secrets" => Kind::Secret,
        "configmaps" => Kind::ConfigMap,
        _ => Kind::ServiceAccount,
    };
    let key = (kind, ns.to_string(), name.to_string());
    Ok(pods_on(api, node)
        .await?
        .iter()
        .any(|p| references(p).contains(&key)))
}

async fn bound_here(api: &Api, node: &str, req: &Request<'_>) -> Result<bool, ApiError> {
    let (Some(ns), Some(name)) = (req.namespace, req.name) else {
        return Ok(false);
    };
    if !matches!(req.verb, "update" | "patch" | "delete") {
        return Ok(false);
    }
    let pods = crate::api::find_resource("", "v1", "pods").expect("pods are served");
    Ok(match api.get(pods, Some(ns), name).await {
        Ok(p) => p.object["spec"]["nodeName"].as_str() == Some(node),
        Err(_) => false,
    })
}
