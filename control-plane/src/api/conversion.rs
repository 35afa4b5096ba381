//! Versions served over another version's stored objects: a request to
//! the view is converted to the stored version, served there, and its
//! answer converted back. autoscaling/v1 HorizontalPodAutoscalers (what
//! `kubectl autoscale` sends) are stored as autoscaling/v2.

use std::future::Future;
use std::pin::Pin;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::handlers::{json_response, Query};
use super::path::ObjectPath;
use super::resources::{self, Resource};
use super::status::{ApiError, ApiResult};
use super::{decode_body, patch, Api};

/// How one served version maps onto the stored one.
#[derive(Clone, Copy)]
pub struct View {
    /// The version the objects are stored as (same group and plural).
    pub stored: &'static str,
    /// A body of this version as the stored version, keeping what only the
    /// stored version can say from `previous` (the stored object it
    /// replaces, if any).
    pub up: fn(Value, Option<&Value>) -> Value,
    /// A stored object as this version.
    pub down: fn(Value) -> Value,
}

/// Patches retried on a concurrent change, at most this often.
const PATCH_ATTEMPTS: usize = 5;

fn stored_resource(r: &'static Resource, view: &View) -> &'static Resource {
    resources::find(r.group, view.stored, r.plural)
        .unwrap_or_else(|| panic!("{} {} has no stored version", r.plural, view.stored))
}

/// Serve a request to `o` (a view) through its stored version.
pub async fn serve(
    api: &Api,
    method: &Method,
    headers: &HeaderMap,
    o: ObjectPath<'_>,
    q: &Query,
    body: &[u8],
    view: View,
) -> ApiResult<Response> {
    let r = o.resource;
    let stored = stored_resource(r, &view);
    let ns = if r.namespaced { o.namespace } else { None };
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), o.name) {
        ("GET", None) if watching => {
            let table = super::table_wanted(headers, q);
            api.watch_as(stored, ns, q, table, Some(view.down)).await
        }
        ("PATCH", Some(name)) => {
            let kind = super::patch_type(headers)?;
            let mut last = None;
            for _ in 0..PATCH_ATTEMPTS {
                let current = api.get(stored, ns, name).await?;
                let mut patched = (view.down)(current.object.clone());
                patch::apply(kind, &mut patched, body)?;
                (r.check)(&patched).map_err(ApiError::bad_request)?;
                let mut next = (view.up)(patched, Some(&current.object));
                next["metadata"]["resourceVersion"] = json!(current.revision.to_string());
                match api.update(stored, ns, name, o.sub, next, q).await {
                    Ok(v) => return Ok(json_response(StatusCode::OK, &(view.down)(v))),
                    Err(e) if e.code == StatusCode::CONFLICT => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or_else(|| ApiError::conflict(r, name)))
        }
        ("POST" | "PUT", _) => {
            let decoded = decode_body(headers, body)?;
            (r.check)(&decoded).map_err(ApiError::bad_request)?;
            let previous = match o.name {
                Some(name) => Some(api.get(stored, ns, name).await?.object),
                None => None,
            };
            let up = serde_json::to_vec(&(view.up)(decoded, previous.as_ref()))
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let mut json_headers = headers.clone();
            json_headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let answer = at_stored(api, method, &json_headers, stored, &o, q, &up).await?;
            down_response(answer, r, stored, view).await
        }
        _ => {
            let answer = at_stored(api, method, headers, stored, &o, q, body).await?;
            down_response(answer, r, stored, view).await
        }
    }
}

type Answer<'a> = Pin<Box<dyn Future<Output = ApiResult<Response>> + Send + 'a>>;

/// The same request to the stored version (boxed: it is the API's own
/// handler, which called here).
fn at_stored<'a>(
    api: &'a Api,
    method: &'a Method,
    headers: &'a HeaderMap,
    stored: &'static Resource,
    o: &ObjectPath<'a>,
    q: &'a Query,
    body: &'a [u8],
) -> Answer<'a> {
    let o = ObjectPath {
        resource: stored,
        namespace: o.namespace,
        name: o.name,
        sub: o.sub,
    };
    Box::pin(super::object(api, method, headers, o, q, body))
}

/// A JSON answer of the stored version, as the view's: the object, or each
/// item of a list. Anything else (a Status, a Table) goes as it is.
async fn down_response(
    answer: Response,
    r: &Resource,
    stored: &Resource,
    view: View,
) -> ApiResult<Response> {
    let status = answer.status();
    let is_json = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !is_json {
        return Ok(answer);
    }
    let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut v: Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
    let list_kind = format!("{}List", stored.kind);
    if v["kind"] == stored.kind {
        v = (view.down)(v);
    } else if v["kind"] == list_kind.as_str() {
        v["apiVersion"] = json!(r.api_version());
        v["kind"] = json!(format!("{}List", r.kind));
        if let Some(items) = v["items"].as_array_mut() {
            for item in items.iter_mut() {
                *item = (view.down)(item.take());
            }
        }
    }
    Ok(json_response(status, &v))
}

/// The HorizontalPodAutoscaler's autoscaling/v1 view.
pub const HPA_V1: View = View {
    stored: "v2",
    up: hpa_up,
    down: hpa_down,
};

fn is_cpu_utilization(metric: &Value) -> bool {
    metric["type"] == "Resource"
        && metric["resource"]["name"] == "cpu"
        && metric["resource"]["target"]["type"] == "Utilization"
}

/// Copy `keys` of `from` that are set into `to`.
fn carry(to: &mut Map<String, Value>, from: &Value, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k).filter(|v| !v.is_null()) {
            to.insert((*k).to_string(), v.clone());
        }
    }
}

fn hpa_up(v1: Value, previous: Option<&Value>) -> Value {
    let mut spec = Map::new();
    carry(
        &mut spec,
        &v1["spec"],
        &["scaleTargetRef", "minReplicas", "maxReplicas"],
    );
    // Whatever v1 cannot say stays as it was: other metrics, behavior.
    let mut metrics: Vec<Value> = previous
        .and_then(|p| p["spec"]["metrics"].as_array())
        .into_iter()
        .flatten()
        .filter(|m| !is_cpu_utilization(m))
        .cloned()
        .collect();
    if let Some(goal) = v1["spec"]["targetCPUUtilizationPercentage"].as_i64() {
        metrics.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": goal}}}),
        );
    }
    if !metrics.is_empty() {
        spec.insert("metrics".into(), json!(metrics));
    }
    if let Some(p) = previous {
        carry(&mut spec, &p["spec"], &["behavior"]);
    }
    let mut out = json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": v1["metadata"],
        "spec": spec,
    });
    match previous {
        Some(p) if p["status"].is_object() => out["status"] = p["status"].clone(),
        _ if v1["status"].is_object() => {
            let mut status = Map::new();
            carry(
                &mut status,
                &v1["status"],
                &[
                    "observedGeneration",
                    "lastScaleTime",
                    "currentReplicas",
                    "desiredReplicas",
                ],
            );
            out["status"] = Value::Object(status);
        }
        _ => {}
    }
    out
}

fn hpa_down(v2: Value) -> Value {
    let mut spec = Map::new();
    carry(
        &mut spec,
        &v2["spec"],
        &["scaleTargetRef", "minReplicas", "maxReplicas"],
    );
    let goal = v2["spec"]["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| is_cpu_utilization(m))
        .and_then(|m| m["resource"]["target"]["averageUtilization"].as_i64());
    if let Some(goal) = goal {
        spec.insert("targetCPUUtilizationPercentage".into(), json!(goal));
    }
    let mut status = Map::new();
    carry(
        &mut status,
        &v2["status"],
        &[
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ],
    );
    let current = v2["status"]["currentMetrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
        .and_then(|m| m["resource"]["current"]["averageUtilization"].as_i64());
    if let Some(c) = current {
        status.insert("currentCPUUtilizationPercentage".into(), json!(c));
    }
    let mut out = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": v2["metadata"],
        "spec": spec,
    });
    if !status.is_empty() || v2["status"].is_object() {
        out["status"] = Value::Object(status);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_round_trips_and_keeps_what_v1_cannot_say() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        let v2 = hpa_up(v1.clone(), None);
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert_eq!(hpa_down(v2.clone()), v1);

        let mut stored = v2;
        stored["spec"]["behavior"] = json!({"scaleDown": {"stabilizationWindowSeconds": 0}});
        stored["status"] = json!({"currentReplicas": 2, "desiredReplicas": 3,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 120}}}]});
        let seen = hpa_down(stored.clone());
        assert_eq!(seen["status"]["currentCPUUtilizationPercentage"], 120);
        let mut edited = seen;
        edited["spec"]["maxReplicas"] = json!(5);
        let back = hpa_up(edited, Some(&stored));
        assert_eq!(back["spec"]["maxReplicas"], 5);
        assert_eq!(
            back["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            0
        );
        assert_eq!(back["status"], stored["status"]);
    }
}
