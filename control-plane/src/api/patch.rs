//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! Kubernetes' strategic merge patch, which merges lists of the built-in
//! types by their merge key instead of replacing them (what `kubectl apply`
//! sends for an object that exists).

use serde_json::{Map, Value};

use super::status::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            _ => None,
        }
    }
}

pub fn apply(kind: PatchType, object: &mut Value, body: &[u8]) -> ApiResult<()> {
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(object, &ops).map_err(|e| {
                ApiError::unprocessable(format!("the JSON patch could not be applied: {e}"))
            })
        }
        PatchType::Merge | PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            if kind == PatchType::Merge {
                json_patch::merge(object, &patch);
            } else {
                strategic_merge(object, &patch, "");
            }
            Ok(())
        }
    }
}

/// The merge key of a list field of the built-in types, by field name.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "conditions" => "type",
        "readinessGates" => "conditionType",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        _ => return None,
    })
}

fn strategic_merge(target: &mut Value, patch: &Value, field: &str) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut v = patch.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("$patch");
        }
        *target = v;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(existing), Value::Object(_)) if existing.is_object() => {
                strategic_merge(existing, v, k)
            }
            (Some(Value::Array(existing)), Value::Array(items)) => {
                // Service ports merge on `port`, container ports on `containerPort`.
                let key = if k == "ports"
                    && field == "spec"
                    && items.iter().any(|i| i.get("port").is_some())
                {
                    Some("port")
                } else {
                    merge_key(k)
                };
                match key {
                    Some(key) => merge_list(existing, items, key),
                    None => *existing = items.clone(),
                }
            }
            _ => {
                let mut v = v.clone();
                strip_directives(&mut v);
                t.insert(k.clone(), v);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|k, _| !k.starts_with('$'));
            o.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let Some(id) = item.get(key) else {
            existing.push(item.clone());
            continue;
        };
        let pos = existing.iter().position(|e| e.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut existing[i], item, key),
            (None, false) => {
                let mut v = item.clone();
                strip_directives(&mut v);
                existing.push(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(mut target: Value, patch: Value) -> Value {
        apply(
            PatchType::Strategic,
            &mut target,
            patch.to_string().as_bytes(),
        )
        .unwrap();
        target
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x:1", "env": [{"name": "E", "value": "1"}]},
            {"name": "b", "image": "y:1"}]}}}});
        let out = smp(
            d,
            json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "x:2"}, {"name": "b", "$patch": "delete"}]}}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 1);
        assert_eq!(cs[0]["image"], "x:2");
        assert_eq!(cs[0]["env"][0]["value"], "1", "unmentioned fields stay");
    }

    #[test]
    fn strategic_merge_replaces_plain_lists_and_deletes_nulls() {
        let out = smp(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"args": ["x", "y"]}}),
            json!({"metadata": {"labels": {"b": null}}, "spec": {"args": ["z"]}}),
        );
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"args": ["z"]}})
        );
    }

    #[test]
    fn merge_and_json_patch() {
        let mut v = json!({"a": {"b": 1, "c": [1, 2]}});
        apply(PatchType::Merge, &mut v, br#"{"a": {"c": [3], "b": null}}"#).unwrap();
        assert_eq!(v, json!({"a": {"c": [3]}}));
        apply(
            PatchType::Json,
            &mut v,
            br#"[{"op": "add", "path": "/a/d", "value": 4}]"#,
        )
        .unwrap();
        assert_eq!(v["a"]["d"], 4);
        assert!(apply(
            PatchType::Json,
            &mut v,
            br#"[{"op": "remove", "path": "/nope"}]"#
        )
        .is_err());
        assert!(apply(PatchType::Merge, &mut v, b"[1]").is_err());
    }
}
