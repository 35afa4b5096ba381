//! What the server sets on objects: identity and timestamps on create,
//! the fields an update may not change, `generation`, the status
//! subresource split, and the defaults users see in `-o yaml`.

use rand::Rng;
use serde_json::{json, Map, Value};

use super::job_selector;
use super::resources::{check_name, Resource};
use super::status::{ApiError, ApiResult};

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn uid() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    // Version 4, variant 1.
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        (b[8] & 0x3) | 0x8,
        &h[17..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn meta(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

pub fn name_of(object: &Value) -> &str {
    meta(object)
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// Checks shared by create and update: an object, of this kind, in this
/// namespace, with a valid name, that decodes as its type.
fn check(r: &Resource, namespace: Option<&str>, object: &mut Value) -> ApiResult<()> {
    if !object.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of a {} must be a JSON object",
            r.kind
        )));
    }
    let api_version = r.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        None => object["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        None => object["kind"] = json!(r.kind),
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )))
        }
    }
    let m = meta_mut(object);
    if r.namespaced {
        let ns = namespace.unwrap_or("default");
        match m.get("namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {
                m.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        m.remove("namespace");
    }
    let name = name_of(object).to_string();
    if name.is_empty() {
        return Err(ApiError::invalid(
            r,
            "",
            &[(
                "metadata.name".into(),
                "Required value: name or generateName is required".into(),
            )],
        ));
    }
    if let Err(msg) = check_name(r.names, &name) {
        return Err(ApiError::invalid(
            r,
            &name,
            &[("metadata.name".into(), msg)],
        ));
    }
    let missing = required_missing(r, object);
    if !missing.is_empty() {
        let causes: Vec<(String, String)> = missing
            .into_iter()
            .map(|f| (f.to_string(), "Required value".to_string()))
            .collect();
        return Err(ApiError::invalid(r, &name, &causes));
    }
    (r.check)(object).map_err(|e| {
        // A required field that is absent is a validation failure (422);
        // a field of the wrong type is a decoding failure (400).
        if let Some(field) = e
            .strip_prefix("missing field `")
            .and_then(|f| f.split('`').next())
        {
            return ApiError::invalid(r, &name, &[(field.to_string(), "Required value".into())]);
        }
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            r.kind, r.version, r.kind
        ))
    })
}

/// Required fields that are absent (the typed decoding fills many of them
/// with defaults, so they are checked here).
fn required_missing(r: &Resource, object: &Value) -> Vec<&'static str> {
    let absent = |p: &str| object.pointer(p).is_none_or(Value::is_null);
    let mut out = Vec::new();
    let workload = matches!(
        r.kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
    );
    if workload || r.kind == "Job" {
        if absent("/spec") {
            return vec!["spec"];
        }
        if workload && absent("/spec/selector") {
            out.push("spec.selector");
        }
        if absent("/spec/template") {
            out.push("spec.template");
        }
    }
    let pod_spec = match r.kind {
        "Pod" => object.get("spec"),
        _ if workload || r.kind == "Job" => object.pointer("/spec/template/spec"),
        _ => None,
    };
    if r.kind == "Pod" || (workload && !absent("/spec/template")) {
        let containers = pod_spec
            .and_then(|s| s.get("containers"))
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty());
        match containers {
            None => out.push(if r.kind == "Pod" {
                "spec.containers"
            } else {
                "spec.template.spec.containers"
            }),
            Some(cs) => {
                if cs.iter().any(|c| {
                    c.get("name")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                }) {
                    out.push("containers[].name");
                }
                if cs.iter().any(|c| {
                    c.get("image")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                }) {
                    out.push("containers[].image");
                }
            }
        }
    }
    out
}

/// Prepare a new object for storage.
pub fn for_create(r: &Resource, namespace: Option<&str>, mut object: Value) -> ApiResult<Value> {
    if object.is_object() {
        let m = meta_mut(&mut object);
        let named = m
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !named {
            if let Some(prefix) = m.get("generateName").and_then(Value::as_str) {
                let name = format!("{prefix}{}", random_suffix());
                m.insert("name".into(), json!(name));
            }
        }
    }
    check(r, namespace, &mut object)?;
    check_quantities(r, &object)?;
    fold_string_data(r, &mut object);
    let m = meta_mut(&mut object);
    m.insert("uid".into(), json!(uid()));
    m.insert("creationTimestamp".into(), json!(now()));
    m.remove("resourceVersion");
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.insert("generation".into(), json!(1));
    if r.has("status") {
        if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
    }
    omit_empty_meta(&mut object);
    defaults(r, &mut object);
    if r.kind == "Job" {
        // Needs the uid, which is only now known.
        job_selector::on_create(r, &mut object)?;
    }
    Ok(object)
}

/// The parts of an object that are not metadata or status: a change there
/// bumps `generation`.
fn spec_of(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            o.remove(k);
        }
    }
    v
}

/// Prepare a replacement of `old` (a whole-object update, or a status
/// update when `sub` is "status").
pub fn for_update(
    r: &Resource,
    namespace: Option<&str>,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
) -> ApiResult<Value> {
    check(r, namespace, &mut new)?;
    check_quantities(r, &new)?;
    fold_string_data(r, &mut new);
    if name_of(&new) != name_of(old) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            name_of(&new),
            name_of(old)
        )));
    }
    let mut out = if sub == Some("status") {
        // Only the status changes; everything else stays as stored.
        let mut o = old.clone();
        o["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        o
    } else {
        if r.has("status") {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        new
    };
    // Fields only the server sets.
    let old_meta = meta(old).cloned().unwrap_or_default();
    // A uid in the request is a precondition, as in Kubernetes: a write
    // meant for an object that was deleted and made again under the same
    // name (a node's status for a pod replaced meanwhile) must not land on
    // the new one.
    let stored_uid = old_meta.get("uid").and_then(Value::as_str).unwrap_or("");
    if let Some(wanted) = meta(&out)
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty() && *u != stored_uid)
    {
        return Err(ApiError::uid_precondition(
            r,
            name_of(old),
            wanted,
            stored_uid,
        ));
    }
    let m = meta_mut(&mut out);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(k) {
            Some(v) => m.insert(k.into(), v.clone()),
            None => m.remove(k),
        };
    }
    if sub != Some("status") && spec_of(&out) != spec_of(old) {
        let g = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        meta_mut(&mut out).insert("generation".into(), json!(g + 1));
    }
    omit_empty_meta(&mut out);
    defaults(r, &mut out);
    if r.kind == "Pod" && r.group.is_empty() && sub != Some("status") {
        check_pod_update(r, old, &out)?;
    }
    if r.kind == "Job" && sub != Some("status") {
        job_selector::on_update(r, old, &out)?;
    }
    Ok(out)
}

/// Drop empty lists and maps from the metadata, as Kubernetes' `omitempty`
/// does: an orphaned object shows no `ownerReferences: []`, a finished
/// deletion no `finalizers: []`.
fn omit_empty_meta(object: &mut Value) {
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "managedFields",
        ] {
            let empty = match m.get(k) {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(o)) => o.is_empty(),
                Some(Value::Null) => true,
                _ => false,
            };
            if empty {
                m.remove(k);
            }
        }
    }
}

fn set_default(v: &mut Value, key: &str, default: Value) {
    if let Some(o) = v.as_object_mut() {
        if o.get(key).is_none_or(Value::is_null) {
            o.insert(key.into(), default);
        }
    }
}

/// Kubernetes' defaults for the fields users meet most.
fn defaults(r: &Resource, object: &mut Value) {
    match r.kind {
        "Namespace" => {
            set_default(object, "spec", json!({"finalizers": ["kubernetes"]}));
            set_default(object, "status", json!({"phase": "Active"}));
        }
        "Pod" => {
            if let Some(spec) = object.get_mut("spec") {
                pod_spec_defaults(spec);
            }
            set_default(
                object,
                "status",
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
        "Deployment" => {
            if let Some(spec) = object.get_mut("spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                );
                if let Some(pod) = spec.pointer_mut("/template/spec") {
                    pod_spec_defaults(pod);
                }
            }
        }
        "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => {
            if let Some(spec) = object.get_mut("spec") {
                if r.kind != "DaemonSet" && r.kind != "Job" {
                    set_default(spec, "replicas", json!(1));
                }
                match r.kind {
                    "DaemonSet" => {
                        set_default(spec, "revisionHistoryLimit", json!(10));
                        set_default(
                            spec,
                            "updateStrategy",
                            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                        );
                    }
                    "StatefulSet" => {
                        set_default(spec, "revisionHistoryLimit", json!(10));
                        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                        set_default(
                            spec,
                            "updateStrategy",
                            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                        );
                    }
                    _ => {}
                }
                if let Some(pod) = spec.pointer_mut("/template/spec") {
                    pod_spec_defaults(pod);
                }
            }
        }
        "Service" => {
            if let Some(spec) = object.get_mut("spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// A Secret's `stringData` is write-only: it is folded into `data`
/// (base64), where it wins over a key of the same name, as Kubernetes does.
fn fold_string_data(r: &Resource, object: &mut Value) {
    use base64::Engine;
    if r.kind != "Secret" {
        return;
    }
    let Some(strings) = object.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Some(strings) = strings.as_object() else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (k, v) in strings {
        let text = v.as_str().unwrap_or_default();
        object["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Where a kind keeps its pod spec.
fn pod_spec_of<'a>(r: &Resource, object: &'a Value) -> Option<(&'static str, &'a Value)> {
    match r.kind {
        "Pod" => Some(("spec", &object["spec"])),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => {
            Some(("spec.template.spec", &object["spec"]["template"]["spec"]))
        }
        "CronJob" => Some((
            "spec.jobTemplate.spec.template.spec",
            &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        )),
        _ => None,
    }
}

/// Every resource quantity of a pod spec must parse (exactly; see
/// `proto::quantity`) and not be negative: 422 otherwise, and nothing stored.
fn check_quantities(r: &Resource, object: &Value) -> ApiResult<()> {
    let Some((path, spec)) = pod_spec_of(r, object) else {
        return Ok(());
    };
    let mut causes = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            for which in ["limits", "requests"] {
                for (res, q) in c["resources"][which].as_object().into_iter().flatten() {
                    let field = format!("{path}.{list}[{i}].resources.{which}[{res}]");
                    let text = match q {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        other => other.to_string(),
                    };
                    match proto::quantity::Quantity::parse(&text) {
                        Ok(parsed) if parsed.is_negative() => causes.push((
                            field,
                            format!("{text:?}: must be greater than or equal to 0"),
                        )),
                        Ok(_) => {}
                        Err(e) => causes.push((field, format!("{text:?}: {e}"))),
                    }
                }
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r, name_of(object), &causes))
    }
}

/// Kubernetes' rule for changing a pod: of its spec, only the images,
/// `activeDeadlineSeconds`, `terminationGracePeriodSeconds` and added
/// tolerations may change (the node it runs on is set by a binding).
fn check_pod_update(r: &Resource, old: &Value, new: &Value) -> ApiResult<()> {
    let fixed = |pod: &Value| {
        let mut spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        for list in ["containers", "initContainers"] {
            for c in spec[list].as_array_mut().into_iter().flatten() {
                if let Some(c) = c.as_object_mut() {
                    c.remove("image");
                }
            }
        }
        if let Some(o) = spec.as_object_mut() {
            for k in [
                "activeDeadlineSeconds",
                "terminationGracePeriodSeconds",
                "tolerations",
            ] {
                o.remove(k);
            }
        }
        spec
    };
    let tolerations = |pod: &Value| {
        pod.pointer("/spec/tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (before, after) = (tolerations(old), tolerations(new));
    let field = |pod: &Value, f: &str| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_i64);
    // A deadline may be set or shortened, never lengthened or removed.
    let deadline = match (
        field(old, "activeDeadlineSeconds"),
        field(new, "activeDeadlineSeconds"),
    ) {
        (before, after) if before == after => true,
        (None, Some(n)) => n > 0,
        (Some(b), Some(n)) => n > 0 && n <= b,
        _ => false,
    };
    // The grace period only from a negative value to 1.
    let grace = match (
        field(old, "terminationGracePeriodSeconds"),
        field(new, "terminationGracePeriodSeconds"),
    ) {
        (before, after) if before == after => true,
        (Some(b), Some(1)) => b < 0,
        _ => false,
    };
    if fixed(old) == fixed(new) && before.iter().all(|t| after.contains(t)) && deadline && grace {
        return Ok(());
    }
    Err(ApiError::invalid(
        r,
        name_of(old),
        &[(
            "spec".into(),
            "pod updates may not change fields other than `spec.containers[*].image`,\
             `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` \
             (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` \
             (allow it to be set to 1 if it was previously negative)"
                .into(),
        )],
    ))
}

fn pod_spec_defaults(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers {
            let image = c.get("image").and_then(Value::as_str).unwrap_or("");
            let tag = image
                .rsplit('/')
                .next()
                .and_then(|last| last.split_once(':'))
                .map(|(_, t)| t);
            let policy = if matches!(tag, None | Some("latest")) {
                "Always"
            } else {
                "IfNotPresent"
            };
            set_default(c, "imagePullPolicy", json!(policy));
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "resources", json!({}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;

    #[test]
    fn a_pod_changes_only_its_images_deadlines_and_added_tolerations() {
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "busybox:1", "command": ["sleep"]}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
        }});
        let mut images = pod.clone();
        images["spec"]["containers"][0]["image"] = json!("busybox:2");
        images["spec"]["activeDeadlineSeconds"] = json!(30);
        images["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "b", "operator": "Exists"}));
        assert!(check_pod_update(pods, &pod, &images).is_ok());
        let mut command = pod.clone();
        command["spec"]["containers"][0]["command"] = json!(["true"]);
        let e = check_pod_update(pods, &pod, &command).unwrap_err();
        assert_eq!(e.code, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.message.contains("pod updates may not change fields"),
            "{}",
            e.message
        );
        let mut dropped = pod.clone();
        dropped["spec"]["tolerations"] = json!([]);
        assert!(check_pod_update(pods, &pod, &dropped).is_err());
        let mut longer = images.clone();
        longer["spec"]["activeDeadlineSeconds"] = json!(60);
        assert!(check_pod_update(pods, &images, &longer).is_err());
        let mut grace = pod.clone();
        grace["spec"]["terminationGracePeriodSeconds"] = json!(5);
        assert!(check_pod_update(pods, &pod, &grace).is_err());
    }

    #[test]
    fn create_sets_identity_and_defaults() {
        let r = find("apps", "v1", "deployments").unwrap();
        let body = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": {"replicas": 9}});
        let o = for_create(r, Some("default"), body).unwrap();
        assert_eq!(o["kind"], "Deployment");
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_eq!(o["metadata"]["generation"], 1);
        assert_eq!(o["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert!(
            o.get("status").is_none(),
            "status is not writable on create"
        );
        assert_eq!(o["spec"]["replicas"], 1);
        assert_eq!(o["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(o["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            o["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
    }

    #[test]
    fn empty_metadata_lists_are_omitted() {
        let r = find("", "v1", "configmaps").unwrap();
        let old = for_create(
            r,
            Some("d"),
            json!({"metadata": {"name": "c", "labels": {}, "finalizers": ["x"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "p", "uid": "u"}]}}),
        )
        .unwrap();
        assert!(old["metadata"].get("labels").is_none());
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!([]);
        new["metadata"]["ownerReferences"] = json!([]);
        new["metadata"]["annotations"] = json!({"a": "b"});
        let o = for_update(r, Some("d"), &old, new, None).unwrap();
        assert!(o["metadata"].get("finalizers").is_none(), "{o}");
        assert!(o["metadata"].get("ownerReferences").is_none(), "{o}");
        assert_eq!(o["metadata"]["annotations"]["a"], "b");
    }

    #[test]
    fn update_keeps_status_and_bumps_generation_on_spec_change() {
        let r = find("apps", "v1", "deployments").unwrap();
        let mut old = for_create(
            r,
            Some("d"),
            json!({"metadata": {"name": "w"}, "spec": {"replicas": 1, "selector": {},
                "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}),
        )
        .unwrap();
        old["status"] = json!({"replicas": 1});
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        new["status"] = json!({"replicas": 100});
        // A uid is a precondition: another object's is refused, not
        // overwritten (and not worth retrying).
        let mut forged = new.clone();
        forged["metadata"]["uid"] = json!("forged");
        let e = for_update(r, Some("d"), &old, forged, None).unwrap_err();
        assert_eq!(e.code, axum::http::StatusCode::CONFLICT);
        assert!(!e.stale);
        assert!(
            e.message.contains("UID in precondition: forged"),
            "{}",
            e.message
        );
        let o = for_update(r, Some("d"), &old, new, None).unwrap();
        assert_eq!(o["status"]["replicas"], 1);
        assert_eq!(o["metadata"]["generation"], 2);
        assert_eq!(o["metadata"]["uid"], old["metadata"]["uid"]);
        let mut st = o.clone();
        st["status"] = json!({"replicas": 3});
        st["spec"]["replicas"] = json!(7);
        let o2 = for_update(r, Some("d"), &o, st, Some("status")).unwrap();
        assert_eq!(o2["status"]["replicas"], 3);
        assert_eq!(
            o2["spec"]["replicas"], 3,
            "a status write leaves the spec alone"
        );
    }

    #[test]
    fn bad_objects_are_refused() {
        let r = find("", "v1", "configmaps").unwrap();
        let e = for_create(r, Some("d"), json!({"metadata": {"name": "Bad_Name"}})).unwrap_err();
        assert_eq!(e.code.as_u16(), 422);
        let e = for_create(r, Some("d"), json!({"metadata": {}})).unwrap_err();
        assert_eq!(e.code.as_u16(), 422);
        let e = for_create(
            r,
            Some("d"),
            json!({"kind": "Secret", "metadata": {"name": "a"}}),
        )
        .unwrap_err();
        assert_eq!(e.code.as_u16(), 400);
        let e = for_create(
            r,
            Some("d"),
            json!({"metadata": {"name": "a", "namespace": "other"}}),
        )
        .unwrap_err();
        assert_eq!(e.code.as_u16(), 400);
        let e =
            for_create(r, Some("d"), json!({"metadata": {"name": "a"}, "data": []})).unwrap_err();
        assert_eq!(e.code.as_u16(), 400);
    }
}
