//! `pods/<name>/eviction`: a policy/v1 (or v1beta1) Eviction deletes the
//! pod with the Eviction's `deleteOptions`, gracefully like any delete.
//! `kubectl drain` takes this path when discovery lists the subresource.
//!
//! Disruption budgets are not served yet, so no eviction is refused for
//! one (Kubernetes would answer 429 when a budget allows no disruption).

use serde_json::{json, Value};

use super::handlers::Query;
use super::status::{ApiError, ApiResult};
use super::{check_delete_options, Api};

const API_VERSIONS: [&str; 2] = ["policy/v1", "policy/v1beta1"];

/// The Eviction's delete options, once it is found well formed and naming
/// the pod `name` of namespace `ns` (400 otherwise).
fn delete_options(ns: &str, name: &str, eviction: &Value) -> ApiResult<Value> {
    if !eviction.is_object() {
        return Err(ApiError::bad_request("an Eviction must be an object"));
    }
    match eviction.get("kind").and_then(Value::as_str) {
        None | Some("Eviction") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "pods/eviction takes an Eviction, not a {other}"
            )))
        }
    }
    if let Some(v) = eviction.get("apiVersion").and_then(Value::as_str) {
        if !API_VERSIONS.contains(&v) {
            return Err(ApiError::bad_request(format!(
                "an Eviction is served as {}, not {v}",
                API_VERSIONS.join(" or ")
            )));
        }
    }
    // v1beta1's fields are v1's; the typed check takes v1's apiVersion
    // only, and the version was checked above.
    let mut typed = eviction.clone();
    if let Some(o) = typed.as_object_mut() {
        o.remove("apiVersion");
    }
    <k8s_openapi::api::policy::v1::Eviction as serde::Deserialize>::deserialize(&typed)
        .map_err(|e| ApiError::bad_request(format!("invalid Eviction: {e}")))?;
    let meta = &eviction["metadata"];
    if meta["name"].as_str() != Some(name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    if meta["namespace"]
        .as_str()
        .is_some_and(|n| !n.is_empty() && n != ns)
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let opts = match eviction.get("deleteOptions") {
        None | Some(Value::Null) => json!({}),
        Some(o) => o.clone(),
    };
    check_delete_options(&opts)?;
    Ok(opts)
}

/// Evict pod `name` of `ns`: delete it as `eviction` says. The answer is a
/// Status Success, as Kubernetes gives (with 201).
pub async fn evict(
    api: &Api,
    ns: &str,
    name: &str,
    eviction: Value,
    q: &Query,
) -> ApiResult<Value> {
    let pods = super::resources::find("", "v1", "pods").expect("pods are served");
    let result = match delete_options(ns, name, &eviction) {
        Ok(opts) => api.delete(pods, Some(ns), name, &opts, q).await,
        Err(e) => Err(e),
    };
    let outcome = if result.is_ok() { "evicted" } else { "refused" };
    metrics::counter!("skiff_pod_evictions_total", "result" => outcome).increment(1);
    match result {
        Ok(_) => {
            tracing::info!(namespace = ns, pod = name, "evicted");
            Ok(json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            }))
        }
        Err(e) => {
            tracing::debug!(
                namespace = ns,
                pod = name,
                "eviction refused: {}",
                e.message
            );
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eviction_must_name_its_pod_and_carry_valid_options() {
        let good = json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "p", "namespace": "d"},
            "deleteOptions": {"gracePeriodSeconds": 7}});
        assert_eq!(
            delete_options("d", "p", &good).unwrap(),
            json!({"gracePeriodSeconds": 7})
        );
        let bare = json!({"metadata": {"name": "p"}});
        assert_eq!(delete_options("d", "p", &bare).unwrap(), json!({}));
        let beta = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction",
            "metadata": {"name": "p"}, "deleteOptions": {"dryRun": ["All"]}});
        assert_eq!(
            delete_options("d", "p", &beta).unwrap(),
            json!({"dryRun": ["All"]})
        );
        let refused = [
            json!({"metadata": {"name": "q"}}),
            json!({"metadata": {}}),
            json!({"metadata": {"name": "p", "namespace": "e"}}),
            json!({"kind": "Pod", "metadata": {"name": "p"}}),
            json!({"apiVersion": "v1", "metadata": {"name": "p"}}),
            json!({"metadata": {"name": "p"}, "deleteOptions": {"gracePeriodSeconds": "soon"}}),
            json!("p"),
        ];
        for e in refused {
            let err = delete_options("d", "p", &e).expect_err(&e.to_string());
            assert_eq!(err.code.as_u16(), 400, "{e}: {}", err.message);
        }
    }
}
